"""A private Mosquitto for tests: own process, own free loopback port, own config file.

Tests never rely on a broker that happens to listen on 1883. Under CI=true a missing ``mosquitto``
binary fails the test; on a developer machine it skips with the package to install.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto")


def find_mosquitto() -> str:
    for candidate in MOSQUITTO_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    message = "mosquitto is not installed (Debian package 'mosquitto'; make test installs it as root)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class MosquittoBroker:
    """One mosquitto process. ``extra_config`` is appended to a plain loopback listener by default."""

    workdir: Path
    port: int = field(default_factory=free_port)
    extra_config: str = ""
    listener_config: str | None = None
    persistence: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def config_text(self) -> str:
        listener = self.listener_config or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        persistence = (
            f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
            if self.persistence
            else "persistence false\n"
        )
        # Run as root, mosquitto drops to the 'mosquitto' user, which cannot read pytest's private
        # temporary directories; a test broker stays the user that started it.
        user = "user root\n" if os.geteuid() == 0 else ""
        return (
            f"per_listener_settings false\n{user}{listener}{persistence}"
            f"log_dest file {self.log_path}\nlog_type all\nconnection_messages true\n"
            f"max_inflight_messages 100\nmax_queued_messages 100000\n{self.extra_config}\n"
        )

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "mosquitto.conf"
        config.write_text(self.config_text())
        with (self.workdir / "stderr.log").open("ab") as stderr:
            self.process = subprocess.Popen(
                [find_mosquitto(), "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (self.workdir / "stderr.log").read_text(errors="replace")
                raise RuntimeError(
                    f"mosquitto exited with {self.process.returncode}: {err}\n{self.log_text()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)  # polling a socket for readiness; mosquitto has no ready signal
        self.stop()
        raise RuntimeError(f"mosquitto did not accept connections on {self.port} within {timeout} s")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as in a crash: no clean shutdown, no final persistence save."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
