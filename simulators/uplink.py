"""A simulated home's internet uplink: a loopback TCP relay between the agent and its broker.

When a scenario takes the gateway's uplink down (``uplink_down`` faults, e.g. ``uplink_loss``), the
simulated home points the agent's broker URL at an :class:`UplinkRelay` instead of the broker. While the
uplink is up the relay copies bytes both ways, untouched (TLS passes through end to end). When it goes
down the relay resets every open connection, both towards the agent and towards the broker (which then
publishes the agent's will), and resets each new connection as soon as it is accepted; when it comes
back, connections go through again. The agent is the real one and unchanged: it sees what a gateway sees
when its router loses the internet — connection resets and failed connects — and must keep its readings
and reconnect on its own.

::

    async with UplinkRelay("127.0.0.1", 1883) as relay:
        agent_url = relay.url("mqtt")              # mqtt://127.0.0.1:<relay port>
        relay.set_up(False)                        # cut: open connections reset, new ones refused
        relay.set_up(True)                         # restored

:func:`follow_uplink` drives ``set_up`` from a patient's fault timeline on the simulated clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Final, Self

from simulators.clock import SimClock
from simulators.physiology import Patient
from simulators.physiology.faults import FaultKind

log = logging.getLogger(__name__)

RELAY_CHUNK: Final = 65536
LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain"})


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class UplinkChange:
    """The uplink went up (``up``) or down at simulated instant ``at``."""

    at: datetime
    up: bool


@dataclass(eq=False, slots=True)
class _Pair:
    agent: asyncio.StreamWriter
    broker: asyncio.StreamWriter

    def reset(self) -> None:
        for writer in (self.agent, self.broker):
            writer.transport.abort()  # RST, as a dead route or a router reboot looks from each end


class UplinkRelay:
    """Relays TCP connections from a loopback port to ``broker_host:broker_port`` while up.

    Counters for tests and logs: ``relayed`` connections that reached the broker, ``refused`` connections
    reset because the uplink was down, ``cut`` connections reset when it went down.
    """

    def __init__(self, broker_host: str, broker_port: int, *, listen_host: str = "127.0.0.1") -> None:
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.listen_host = listen_host
        self.up = True
        self.relayed = 0
        self.refused = 0
        self.cut = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, self.listen_host, 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        self._reset_all()
        for handler in list(self._handlers):
            handler.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers)
        await self._server.wait_closed()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the uplink relay is not listening (use it as an async context manager)")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, scheme: str, host: str | None = None) -> str:
        """The broker URL the agent uses: ``scheme://host:port`` of the relay (host: the listen address)."""
        name = host or self.listen_host
        if ":" in name:
            name = f"[{name}]"
        return f"{scheme}://{name}:{self.port}"

    def set_up(self, up: bool) -> None:
        """Bring the uplink up or take it down (resetting every open connection)."""
        if up == self.up:
            return
        self.up = up
        if not up:
            self.cut += len(self._pairs)
            self._reset_all()

    def _down(self) -> bool:
        return not self.up

    def _reset_all(self) -> None:
        for pair in list(self._pairs):
            pair.reset()
        self._pairs.clear()

    async def _accept(self, agent_reader: asyncio.StreamReader, agent_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._relay(agent_reader, agent_writer)
        finally:
            self._handlers.discard(task)

    async def _relay(self, agent_reader: asyncio.StreamReader, agent_writer: asyncio.StreamWriter) -> None:
        if self._down():
            self.refused += 1
            agent_writer.transport.abort()
            return
        try:
            broker_reader, broker_writer = await asyncio.open_connection(self.broker_host, self.broker_port)
        except OSError as exc:
            log.warning("uplink relay: broker %s:%d unreachable: %s", self.broker_host, self.broker_port, exc)
            agent_writer.transport.abort()
            return
        if self._down():  # went down while connecting
            self.refused += 1
            broker_writer.transport.abort()
            agent_writer.transport.abort()
            return
        pair = _Pair(agent_writer, broker_writer)
        self._pairs.add(pair)
        self.relayed += 1
        try:
            async with asyncio.TaskGroup() as pumps:
                pumps.create_task(_pump(agent_reader, broker_writer), name="uplink-relay:to-broker")
                pumps.create_task(_pump(broker_reader, agent_writer), name="uplink-relay:to-agent")
        finally:
            self._pairs.discard(pair)
            pair.reset()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of file or a reset; then half-close the other side."""
    with contextlib.suppress(OSError):
        while data := await reader.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


def uplink_outages(patient: Patient) -> list[tuple[float, float]]:
    """The ``[start_s, end_s)`` intervals in which the patient's gateway has no uplink."""
    return sorted((e.start_s, e.end_s) for e in patient.faults if e.kind is FaultKind.UPLINK_DOWN)


async def follow_uplink(
    patient: Patient,
    clock: SimClock,
    relay: UplinkRelay,
    *,
    on_change: list[UplinkChange] | None = None,
) -> None:
    """Keep ``relay`` up or down as the patient's scenario says, on the simulated clock, until the last
    outage is over (then return). Each change is logged and appended to ``on_change``."""
    edges = sorted({edge for outage in uplink_outages(patient) for edge in outage})
    while True:
        now = clock.now()
        t = (now - patient.start).total_seconds()
        up = patient.uplink_up(t)
        if up != relay.up:
            relay.set_up(up)
            log.warning("simulated uplink %s at scenario hour %.2f", "restored" if up else "lost", t / 3600)
            if on_change is not None:
                on_change.append(UplinkChange(now, up))
        later = [edge for edge in edges if edge > t]
        if not later:
            return
        await clock.sleep_until(patient.start + timedelta(seconds=later[0]))
