"""Real processes for the reliability tests: started, killed, their stderr kept, awaited by log line."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Proc:
    name: str
    command: list[str]
    env: dict[str, str]
    log: list[str] = field(default_factory=list)
    log_file: Path | None = None
    """Where every line the process writes to stderr is kept too (all its runs), for reading a failure."""
    process: asyncio.subprocess.Process | None = None
    reader: asyncio.Task[None] | None = None
    killed: bool = False
    """Killed by the test (and not started again since): its exit is expected."""
    watchers: list[tuple[str, asyncio.Event]] = field(default_factory=list)

    async def start(self, ready: str | None = None, limit_s: float = 60) -> None:
        self.killed = False
        self.process = await asyncio.create_subprocess_exec(
            *self.command,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        seen = self.watch(ready) if ready is not None else None

        async def read() -> None:
            assert self.process is not None and self.process.stderr is not None
            kept = self.log_file.open("a") if self.log_file is not None else None
            try:
                while line := await self.process.stderr.readline():
                    text = line.decode(errors="replace")
                    self.log.append(text)
                    if kept is not None:
                        kept.write(text)
                    for wanted, event in self.watchers:
                        if wanted in text:
                            event.set()
            finally:
                if kept is not None:
                    kept.close()

        self.reader = asyncio.create_task(read(), name=f"log:{self.name}")
        if seen is not None:
            async with asyncio.timeout(limit_s):
                await seen.wait()

    def watch(self, text: str) -> asyncio.Event:
        """An event set when a line containing ``text`` is written from now on."""
        event = asyncio.Event()
        self.watchers.append((text, event))
        return event

    async def wait_for_line(self, text: str, limit_s: float) -> None:
        """Wait for a line containing ``text`` that the process already wrote or writes within the time."""
        event = self.watch(text)
        if any(text in line for line in self.log):
            return
        try:
            async with asyncio.timeout(limit_s):
                await event.wait()
        except TimeoutError:
            tail = "".join(self.log[-20:])
            raise TimeoutError(f"{self.name} did not log {text!r} within {limit_s} s:\n{tail}") from None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def kill(self) -> None:
        self.killed = True
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self.reader is not None:
            await self.reader

    def check_running(self) -> None:
        """Fail with the end of its log if the process exited by itself (nobody killed it)."""
        if self.process is not None and self.process.returncode is not None and not self.killed:
            tail = "".join(self.log[-40:])
            pytest.fail(f"{self.name} exited by itself with status {self.process.returncode}:\n{tail}")

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.reader is not None:
            await self.reader


async def wait_until(
    condition: Callable[[], object], limit_s: float, what: str, poll_s: float = 0.25
) -> None:
    """Polls state that lives in another process's database (it offers no event to await)."""
    try:
        async with asyncio.timeout(limit_s):
            while not await condition():  # type: ignore[misc]  # noqa: ASYNC110 - see docstring
                await asyncio.sleep(poll_s)
    except TimeoutError:
        raise TimeoutError(f"{what}: not within {limit_s} s") from None
