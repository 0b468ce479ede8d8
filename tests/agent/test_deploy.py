"""The shipped systemd unit asks for what docs/operations.md promises."""

from __future__ import annotations

import configparser
import os
import socket
from pathlib import Path

import pytest

from edge_agent.systemd import Notifier

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "wardwatch-agent.service"


def test_unit_is_notify_with_watchdog_restart_and_sandbox() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(UNIT)
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "always"
    assert service["User"] == "wardwatch"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "wardwatch"
    assert "agent --config" in service["ExecStart"]


def test_sd_notify_datagrams_reach_the_socket(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        notifier = Notifier(address=address)
        assert notifier.ready("running 2 devices")
        assert notifier.watchdog()
        assert notifier.stopping()
        received = [listener.recv(4096).decode() for _ in range(3)]
    assert received == [
        "READY=1\nSTATUS=running 2 devices",
        "WATCHDOG=1",
        "STOPPING=1\nSTATUS=shutting down",
    ]
    assert not Notifier(address="").ready("outside systemd")


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier(address="").watchdog_interval_s == 30
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier(address="").watchdog_interval_s is None
