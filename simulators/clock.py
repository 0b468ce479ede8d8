"""Simulated time that can run faster than real time, shared by devices, agent and server.

::

    simulated = sim_start + speed × (real − real_anchor)

A :class:`ClockSpec` is those three numbers. It is immutable and pure: :meth:`ClockSpec.sim_time` and
:meth:`ClockSpec.real_time` convert between the two time lines without looking at any clock. A
:class:`SimClock` pairs a spec with an injectable real-time source (``time.time`` by default) and an
injectable sleep, so tests drive it with a fake and nothing ever waits for real.

Several processes agree on simulated time by agreeing on the spec: the parent writes
``spec.to_string()`` into the environment variable ``WARDWATCH_SIM_CLOCK`` (or a ``--sim-clock``
option) and each child builds ``SimClock.from_env()``. The anchor is Unix time (not a monotonic clock,
which differs between processes), so the children must share the host's wall clock — they do on one
machine. A single :class:`SimClock` never goes backwards, even if the wall clock is stepped back.

``--speed F`` on a command line (:func:`add_clock_arguments`) makes ``F`` simulated seconds pass per real
second; a scenario of 48 h takes 48 min at ``--speed 60``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

ENV_VAR: Final = "WARDWATCH_SIM_CLOCK"
MAX_SPEED: Final = 1_000_000.0
MIN_REAL_SLEEP_S: Final = 0.001
"""Shortest real wait in ``sleep_until``: an early wake-up (timer granularity, a wall clock that differs
from the event loop's monotonic clock) makes progress instead of spinning on ever smaller remainders."""

RealTimeSource = Callable[[], float]
"""Returns real time in seconds since the Unix epoch (``time.time``)."""
RealSleep = Callable[[float], Awaitable[None]]
"""Waits that many real seconds (``asyncio.sleep``)."""


class ClockError(ValueError):
    """A clock specification or speed that cannot be used; the message says which part and why."""


class Clock(Protocol):
    """What a component needs from time: the current instant, and a way to wait for a later one."""

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


def check_speed(speed: float) -> float:
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not math.isfinite(speed):
        raise ClockError(f"speed must be a finite number, got {speed!r}")
    if not 0 < speed <= MAX_SPEED:
        raise ClockError(f"speed must be > 0 and <= {MAX_SPEED:g}, got {speed:g}")
    return float(speed)


def _aware_utc(when: datetime, what: str) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ClockError(f"{what} must be timezone-aware, got {when.isoformat()}")
    return when.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class ClockSpec:
    """Simulated time is ``sim_start`` at real Unix time ``real_anchor`` and advances ``speed`` times as
    fast as real time."""

    sim_start: datetime
    speed: float = 1.0
    real_anchor: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sim_start", _aware_utc(self.sim_start, "sim_start"))
        object.__setattr__(self, "speed", check_speed(self.speed))
        if not math.isfinite(self.real_anchor):
            raise ClockError("real_anchor must be a finite Unix time")

    def sim_elapsed(self, real: float) -> float:
        """Simulated seconds since ``sim_start`` at real Unix time ``real`` (negative before the anchor)."""
        return self.speed * (real - self.real_anchor)

    def sim_time(self, real: float) -> datetime:
        """The simulated instant at real Unix time ``real``."""
        elapsed = self.sim_elapsed(real)
        try:
            return self.sim_start + timedelta(seconds=elapsed)
        except OverflowError:
            raise ClockError(f"simulated time {elapsed:g} s from {self.sim_start} is out of range") from None

    def real_time(self, sim: datetime) -> float:
        """The real Unix time at which simulated time reaches ``sim``."""
        elapsed = (_aware_utc(sim, "sim") - self.sim_start).total_seconds()
        return self.real_anchor + elapsed / self.speed

    def real_duration(self, sim_seconds: float) -> float:
        """Real seconds that ``sim_seconds`` of simulated time take."""
        return sim_seconds / self.speed

    def rebased(self, *, speed: float, real: float) -> ClockSpec:
        """The same time line from real time ``real`` on, at a new speed: no jump at ``real``."""
        return ClockSpec(sim_start=self.sim_time(real), speed=speed, real_anchor=real)

    def to_string(self) -> str:
        """``start=<ISO 8601>;speed=<F>;anchor=<Unix seconds>``, for an environment variable or option."""
        start = self.sim_start.isoformat().replace("+00:00", "Z")
        return f"start={start};speed={self.speed!r};anchor={self.real_anchor!r}"

    @classmethod
    def from_string(cls, text: str) -> ClockSpec:
        fields: dict[str, str] = {}
        for part in text.strip().split(";"):
            key, sep, value = part.partition("=")
            if not sep or key.strip() not in ("start", "speed", "anchor") or key.strip() in fields:
                raise ClockError(
                    f"clock spec {text!r}: expected start=<ISO time>;speed=<number>;anchor=<Unix seconds>"
                )
            fields[key.strip()] = value.strip()
        if set(fields) != {"start", "speed", "anchor"}:
            missing = ", ".join(sorted({"start", "speed", "anchor"} - set(fields)))
            raise ClockError(f"clock spec {text!r} lacks {missing}")
        try:
            start = datetime.fromisoformat(fields["start"].replace("Z", "+00:00"))
            speed = float(fields["speed"])
            anchor = float(fields["anchor"])
        except ValueError as exc:
            raise ClockError(f"clock spec {text!r}: {exc}") from None
        return cls(sim_start=start, speed=speed, real_anchor=anchor)


class SimClock:
    """Simulated time for one process: a :class:`ClockSpec` read through an injectable real-time source.

    ``now()`` never returns an instant earlier than one it returned before.
    """

    def __init__(
        self,
        spec: ClockSpec,
        *,
        real_time: RealTimeSource = time.time,
        real_sleep: RealSleep = asyncio.sleep,
    ) -> None:
        self._spec = spec
        self._real_time = real_time
        self._real_sleep = real_sleep
        self._latest: datetime | None = None

    @classmethod
    def starting_now(
        cls,
        *,
        speed: float = 1.0,
        sim_start: datetime | None = None,
        real_time: RealTimeSource = time.time,
        real_sleep: RealSleep = asyncio.sleep,
    ) -> SimClock:
        """A clock whose simulated time is ``sim_start`` (default: the real now) at this real instant."""
        real = real_time()
        start = datetime.fromtimestamp(real, UTC) if sim_start is None else sim_start
        spec = ClockSpec(sim_start=start, speed=speed, real_anchor=real)
        return cls(spec, real_time=real_time, real_sleep=real_sleep)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        real_time: RealTimeSource = time.time,
        real_sleep: RealSleep = asyncio.sleep,
    ) -> SimClock:
        """The clock described by ``WARDWATCH_SIM_CLOCK``, or real time (speed 1) when it is unset."""
        text = (os.environ if environ is None else environ).get(ENV_VAR)
        if not text:
            return cls.starting_now(real_time=real_time, real_sleep=real_sleep)
        try:
            spec = ClockSpec.from_string(text)
        except ClockError as exc:
            raise ClockError(f"{ENV_VAR}: {exc}") from None
        return cls(spec, real_time=real_time, real_sleep=real_sleep)

    @property
    def spec(self) -> ClockSpec:
        return self._spec

    @property
    def speed(self) -> float:
        return self._spec.speed

    def environ(self) -> dict[str, str]:
        """The environment entry that gives a child process this same clock."""
        return {ENV_VAR: self._spec.to_string()}

    def now(self) -> datetime:
        current = self._spec.sim_time(self._real_time())
        if self._latest is not None and current < self._latest:
            return self._latest
        self._latest = current
        return current

    def elapsed(self) -> float:
        """Simulated seconds since the spec's ``sim_start``."""
        return (self.now() - self._spec.sim_start).total_seconds()

    def set_speed(self, speed: float) -> None:
        """Change speed from now on, without a jump in simulated time."""
        self._spec = self._spec.rebased(speed=speed, real=self._real_time())

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of simulated time."""
        if not math.isfinite(seconds):
            raise ClockError(f"cannot sleep {seconds!r} simulated seconds")
        await self.sleep_until(self.now() + timedelta(seconds=max(0.0, seconds)))

    async def sleep_until(self, when: datetime) -> None:
        """Wait until simulated time reaches ``when`` (returns at once if it has).

        Re-checks after each real wait, so a speed change or a short real sleep cannot wake it early;
        each real wait is at least ``MIN_REAL_SLEEP_S``.
        """
        when = _aware_utc(when, "when")
        while True:
            remaining = (when - self.now()).total_seconds()
            if remaining <= 0:
                return
            await self._real_sleep(max(self._spec.real_duration(remaining), MIN_REAL_SLEEP_S))


def parse_speed(text: str) -> float:
    """argparse ``type=`` for ``--speed``: a positive number of simulated seconds per real second."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed must be a number, got {text!r}") from None
    try:
        return check_speed(value)
    except ClockError as exc:
        raise argparse.ArgumentTypeError(f"--speed: {exc}") from None


def parse_sim_start(text: str) -> datetime:
    """argparse ``type=`` for ``--sim-start``: an ISO 8601 instant with an offset (``Z`` allowed)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sim-start must be an ISO 8601 time, got {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("--sim-start needs a UTC offset, e.g. 2026-01-05T08:00:00Z")
    return value.astimezone(UTC)


def add_clock_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--speed`` and ``--sim-start`` to a command that runs in simulated time."""
    parser.add_argument(
        "--speed",
        type=parse_speed,
        default=1.0,
        metavar="F",
        help="simulated seconds per real second (default 1: real time; 60: an hour a minute)",
    )
    parser.add_argument(
        "--sim-start",
        type=parse_sim_start,
        default=None,
        metavar="ISO",
        help="simulated time at launch, e.g. 2026-01-05T08:00:00Z (default: the real time now)",
    )


def clock_from_arguments(
    args: argparse.Namespace,
    *,
    real_time: RealTimeSource = time.time,
    real_sleep: RealSleep = asyncio.sleep,
) -> SimClock:
    """The clock chosen by :func:`add_clock_arguments`'s options, anchored at this real instant."""
    return SimClock.starting_now(
        speed=args.speed, sim_start=args.sim_start, real_time=real_time, real_sleep=real_sleep
    )
