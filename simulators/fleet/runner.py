"""The fleet: N simulated gateways publishing over real MQTT connections, one per gateway.

Each :class:`SimulatedGateway` behaves like an edge agent's uplink, not like a benchmark loop:

* its own connection with client id = gateway id, a retained ``birth`` with a session number, the MQTT
  will set to the ``death`` of that session, retained ``heartbeat``s, and an explicit ``death`` when it
  stops (a clean disconnect discards the will);
* sequenced messages (obs, score, event) are numbered from 0 without gaps and kept until the broker's
  success PUBACK (``MqttClient.publish`` raises ``PublishRefused`` for a failure reason code); at most
  ``max_inflight`` are unacknowledged at once;
* when the connection is lost it reconnects with capped jittered backoff, opens the next session and
  sends the unacknowledged messages again with their original ``message_id`` and ``seq``, then the rest;
* traffic is planned on a fixed schedule (open loop): tick ``i`` is due ``(i + 1) * batch_interval`` after
  the gateway's birth whatever the broker does, so a slow broker shows up as a growing backlog and
  latency, not as a quietly lower offered load.

Gateways start at ``connect_rate`` per second. Gateway 0 connects before any other: when it cannot reach
the broker, :class:`BrokerUnreachable` is raised and nothing else is attempted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import resource
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from edge_agent.backoff import Backoff
from edge_agent.mqtt import (
    ConnectFailed,
    MqttClient,
    MqttError,
    MqttSettings,
    PublishRefused,
    TlsFiles,
    Will,
)
from edge_agent.protocol import (
    Assessment,
    AssessmentContent,
    Event,
    EventContent,
    GatewayChannel,
    GatewayStatus,
    ObservationBatch,
    encode,
    gateway_filter,
    gateway_topic,
    new_message_id,
    parse_gateway_topic,
)
from simulators.fleet.latency import LatencyHistogram
from simulators.fleet.traffic import HomeTraffic, PlannedMessage, TrafficPlan

log = logging.getLogger(__name__)

SOFTWARE_VERSION = "wardwatch-sim-fleet/1"


class FleetError(Exception):
    """The fleet could not run."""


class BrokerUnreachable(FleetError):
    """The first gateway could not connect: wrong URL, broker down, TLS or credentials refused."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetConfig:
    broker_url: str
    homes: int
    duration_s: float
    plan: TrafficPlan = field(default_factory=TrafficPlan)
    tls: TlsFiles | None = None
    username: str | None = None
    password: str | None = None
    heartbeat_interval_s: float = 30.0
    connect_rate: float = 200.0
    """Gateways started per second (a thundering herd of TLS handshakes is a test of its own)."""
    max_inflight: int = 20
    """Unacknowledged sequenced messages per gateway."""
    drain_timeout_s: float = 30.0
    """After the last tick, how long a gateway waits for outstanding PUBACKs before giving up."""
    session: int | None = None
    """First session number of every gateway; default: the current Unix time in seconds, so a new run's
    birth is never older than a previous run's death."""
    measure_e2e: bool = False
    keepalive_s: int = 30

    def __post_init__(self) -> None:
        if self.homes < 1:
            raise FleetError("--homes must be at least 1")
        if self.duration_s <= 0:
            raise FleetError("--duration must be > 0 s")
        if not 0 < self.heartbeat_interval_s <= 3600:
            raise FleetError("--heartbeat-interval must be in (0, 3600] s")
        if self.connect_rate <= 0:
            raise FleetError("--connect-rate must be > 0")
        if self.max_inflight < 1:
            raise FleetError("--max-inflight must be at least 1")
        if self.drain_timeout_s < 0:
            raise FleetError("--drain-timeout must be >= 0 s")
        if self.session is not None and self.session < 1:
            raise FleetError("--session must be >= 1")
        self.mqtt_settings("probe")  # validates the URL and TLS combination now
        if self.tls is not None:
            try:
                self.tls.context()  # … and that the TLS files can be used, before any connection
            except ConnectFailed as exc:
                raise FleetError(str(exc)) from None

    @property
    def broker_display(self) -> str:
        """The broker URL without any user name or password in it, for displays and summaries."""
        parts = urlsplit(self.broker_url)
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc = f"{netloc}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    def mqtt_settings(self, client_id: str, *, will: Will | None = None) -> MqttSettings:
        try:
            return MqttSettings.from_url(
                self.broker_url,
                client_id=client_id,
                tls=self.tls,
                username=self.username,
                password=self.password,
                keepalive_s=self.keepalive_s,
                clean_start=True,
                session_expiry_s=0,
                will=will,
                max_inflight=self.max_inflight,
            )
        except ValueError as exc:
            raise FleetError(str(exc)) from None


Kind = Literal["obs", "score", "event", "status"]
KINDS: tuple[Kind, ...] = ("obs", "score", "event", "status")


@dataclass(slots=True)
class GatewayLedger:
    """What one gateway sent and what the broker acknowledged."""

    sent: int = 0
    acknowledged: int = 0
    refused: int = 0
    next_seq: int = 0
    sessions: int = 0


class FleetStats:
    """Counters shared by all gateways; read by the progress display and the summary."""

    def __init__(self, homes: int) -> None:
        self.homes = homes
        self.started_monotonic = time.monotonic()
        self.gateways_started = 0
        self.connected = 0
        self.connects = 0
        self.reconnects = 0
        self.connect_failures = 0
        self.connections_lost = 0
        self.sent: Counter[str] = Counter()
        """Distinct messages handed to the broker for the first time, by kind."""
        self.acknowledged: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.retransmitted = 0
        self.observations_sent = 0
        self.observations_acknowledged = 0
        self.backlog = 0
        """Sequenced messages planned but not yet acknowledged or refused, over all gateways."""
        self.puback = LatencyHistogram()
        self.e2e = LatencyHistogram()
        self.received = 0
        self.delivery = asyncio.Event()
        """Set by the end-to-end probe at every delivery."""
        self.progress = asyncio.Event()
        """Set at every acknowledgement (for whoever waits for the run to reach a point)."""
        self.received_unmatched = 0
        self.last_errors: deque[str] = deque(maxlen=5)
        self.gateways: dict[str, GatewayLedger] = {}
        self.finished_monotonic: float | None = None
        self.interrupted = False

    @property
    def elapsed_s(self) -> float:
        end = self.finished_monotonic or time.monotonic()
        return end - self.started_monotonic

    def total(self, counter: Counter[str]) -> int:
        return sum(counter.values())

    def note_error(self, text: str) -> None:
        self.last_errors.append(text)

    def unacknowledged(self) -> int:
        return sum(ledger.sent - ledger.acknowledged - ledger.refused for ledger in self.gateways.values())

    def summary(self, config: FleetConfig) -> dict[str, object]:
        elapsed = max(self.elapsed_s, 1e-9)
        sequenced_sent = sum(self.sent[kind] for kind in ("obs", "score", "event"))
        sequenced_acked = sum(self.acknowledged[kind] for kind in ("obs", "score", "event"))
        return {
            "homes": self.homes,
            "broker": config.broker_display,
            "seed": config.plan.seed,
            "rate_per_home": config.plan.rate,
            "batch_interval_s": config.plan.batch_interval_s,
            "duration_s": config.duration_s,
            "elapsed_s": round(elapsed, 3),
            "interrupted": self.interrupted,
            "gateways": {
                "started": self.gateways_started,
                "connects": self.connects,
                "reconnects": self.reconnects,
                "connect_failures": self.connect_failures,
                "connections_lost": self.connections_lost,
            },
            "messages": {
                "sent": self.total(self.sent),
                "acknowledged": self.total(self.acknowledged),
                "refused": self.total(self.refused),
                "unacknowledged": self.unacknowledged(),
                "never_sent": sum(ledger.next_seq - ledger.sent for ledger in self.gateways.values()),
                "retransmitted": self.retransmitted,
                "sequenced_sent": sequenced_sent,
                "sequenced_acknowledged": sequenced_acked,
                "by_kind": {
                    kind: {
                        "sent": self.sent[kind],
                        "acknowledged": self.acknowledged[kind],
                        "refused": self.refused[kind],
                    }
                    for kind in KINDS
                },
            },
            "observations": {
                "sent": self.observations_sent,
                "acknowledged": self.observations_acknowledged,
            },
            "throughput": {
                "messages_per_s": round(self.total(self.acknowledged) / elapsed, 1),
                "observations_per_s": round(self.observations_acknowledged / elapsed, 1),
            },
            "latency": {
                "puback": self.puback.summary().as_dict(),
                "end_to_end": self.e2e.summary().as_dict() if config.measure_e2e else None,
            },
            "end_to_end": (
                {"received": self.received, "unmatched": self.received_unmatched}
                if config.measure_e2e
                else None
            ),
            "errors": list(self.last_errors),
            "per_gateway": {
                gateway_id: {
                    "sent": ledger.sent,
                    "acknowledged": ledger.acknowledged,
                    "refused": ledger.refused,
                    "next_seq": ledger.next_seq,
                    "sessions": ledger.sessions,
                }
                for gateway_id, ledger in sorted(self.gateways.items())
            },
        }


@dataclass(slots=True)
class Outgoing:
    """A sequenced message: encoded once, sent again unchanged after a reconnect."""

    seq: int
    kind: Kind
    topic: str
    payload: bytes
    message_id: str
    observations: int
    first_sent: float | None = None
    """Monotonic time of the first publish, for latency."""


class SentRegistry:
    """message id -> first publish time, for end-to-end latency (only when measured)."""

    def __init__(self) -> None:
        self.first_sent: dict[str, float] = {}


class SimulatedGateway:
    def __init__(
        self,
        config: FleetConfig,
        index: int,
        stats: FleetStats,
        *,
        session: int,
        registry: SentRegistry | None,
        stop_requested: asyncio.Event,
        traffic: HomeTraffic | None = None,
        probes_broker: bool = False,
    ) -> None:
        self.config = config
        self.index = index
        self.stats = stats
        self.session = session - 1
        self.registry = registry
        self.stop_requested = stop_requested
        self.traffic = traffic
        self.probes_broker = probes_broker
        """The fleet's first gateway: when its first connection fails, the broker counts as unreachable."""
        self.gateway_id = config.plan.gateway_id(index)
        self.ledger = stats.gateways.setdefault(self.gateway_id, GatewayLedger())
        self._unsent: deque[Outgoing] = deque()
        self._inflight: dict[int, Outgoing] = {}
        self._work = asyncio.Event()
        self._window = asyncio.Semaphore(config.max_inflight)
        self._planning_done = False
        self._drain_deadline: float | None = None
        self._timeout: asyncio.Timeout | None = None
        self._rng = random.Random(f"{config.plan.seed}/{index}/backoff")
        self.first_connection: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _status(self, state: Literal["birth", "heartbeat", "death"]) -> GatewayStatus:
        return GatewayStatus(
            gateway_id=self.gateway_id,
            state=state,
            session=self.session,
            sent_at=datetime.now(UTC),
            software_version=SOFTWARE_VERSION,
            heartbeat_interval_s=self.config.heartbeat_interval_s,
            backlog=len(self._unsent) + len(self._inflight),
            devices=self.traffic.devices() if self.traffic is not None else [],
            clock_synchronized=True,
        )

    # -- lifetime ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, send the planned traffic for the configured duration, drain, send the death."""
        # Each gateway's clock starts when it does: with the ramp-up, the fleet's batches spread evenly
        # over every second instead of arriving all at once on the second.
        start_wall = datetime.now(UTC)
        if self.traffic is None:
            self.traffic = HomeTraffic(self.config.plan, self.index, start=start_wall)
        self.traffic.start = start_wall
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._plan(), name=f"fleet-plan-{self.gateway_id}")
                group.create_task(self._connection_loop(), name=f"fleet-uplink-{self.gateway_id}")
        finally:
            abandoned = len(self._unsent) + len(self._inflight)
            self.stats.backlog -= abandoned
            if abandoned:
                # Counted per gateway in the summary; one log line per gateway would drown a big fleet.
                self.stats.note_error(f"{self.gateway_id}: {abandoned} messages never acknowledged")
                log.debug("%s: %d messages never acknowledged", self.gateway_id, abandoned)

    async def _plan(self) -> None:
        """Put each tick's messages in the send queue when the tick's interval has passed.

        Like a real gateway's devices, the plan runs whether or not the uplink is connected."""
        assert self.traffic is not None
        loop = asyncio.get_running_loop()
        plan = self.config.plan
        # Tick i is due when its interval has passed, so every measured_at is in the past when sent.
        origin = loop.time() + (self.traffic.start - datetime.now(UTC)).total_seconds()
        for i in range(plan.ticks(self.config.duration_s)):
            due = origin + (i + 1) * plan.batch_interval_s
            delay = due - loop.time()
            if delay > 0:
                # A plain sleep: a thousand gateways waiting on one shared Event would make every wake-up
                # and every timeout O(homes). A stop request is noticed within one batch interval.
                await asyncio.sleep(delay)
            if self.stop_requested.is_set():
                break
            for planned in self.traffic.tick(i):
                self._enqueue(planned)
        self._planning_done = True
        self._drain_deadline = loop.time() + self.config.drain_timeout_s
        if self._timeout is not None and not self._timeout.expired():
            self._timeout.reschedule(self._drain_deadline)
        self._work.set()

    def _enqueue(self, planned: PlannedMessage) -> None:
        head = {
            "message_id": new_message_id(),
            "gateway_id": self.gateway_id,
            "seq": self.ledger.next_seq,
            "sent_at": datetime.now(UTC),
        }
        message: ObservationBatch | Assessment | Event
        if planned.channel is GatewayChannel.OBS:
            assert isinstance(planned.body, list)
            message = ObservationBatch(**head, observations=planned.body)
        elif planned.channel is GatewayChannel.SCORE:
            assert isinstance(planned.body, AssessmentContent)
            message = Assessment(**head, **dict(planned.body))
        else:
            assert isinstance(planned.body, EventContent)
            message = Event(**head, **dict(planned.body))
        kind: Kind = (
            "obs"
            if planned.channel is GatewayChannel.OBS
            else ("score" if planned.channel is GatewayChannel.SCORE else "event")
        )
        self._unsent.append(
            Outgoing(
                seq=self.ledger.next_seq,
                kind=kind,
                topic=gateway_topic(self.gateway_id, planned.channel),
                payload=encode(message),
                message_id=str(message.message_id),
                observations=planned.observations,
            )
        )
        self.ledger.next_seq += 1
        self.stats.backlog += 1
        self._work.set()

    def _finished(self) -> bool:
        return self._planning_done and not self._unsent and not self._inflight

    async def _connection_loop(self) -> None:
        backoff = Backoff(initial_s=0.5, maximum_s=10.0, rng=self._rng)
        loop = asyncio.get_running_loop()
        while True:
            try:
                # Connecting is bounded by the adapter's own connect timeout, not cancelled midway.
                async with MqttClient(
                    self.config.mqtt_settings(self.gateway_id, will=self._will())
                ) as client:
                    if await self._connected(client):
                        return
                backoff.reset()
            except ConnectFailed as exc:
                self.stats.connect_failures += 1
                self.stats.note_error(f"{self.gateway_id}: {exc}")
                if self.probes_broker and not self.first_connection.done():
                    self.first_connection.set_exception(BrokerUnreachable(str(exc)))
                    return
                log.debug("%s: %s", self.gateway_id, exc)
            except MqttError as exc:
                self.stats.note_error(f"{self.gateway_id}: {exc}")
                log.debug("%s: %s", self.gateway_id, exc)
            if self._drain_deadline is not None and loop.time() >= self._drain_deadline:
                log.debug("%s: stopped reconnecting at the drain timeout", self.gateway_id)
                return
            try:
                async with asyncio.timeout_at(self._drain_deadline):
                    await asyncio.sleep(backoff.next_delay())
            except TimeoutError:
                return

    def _will(self) -> Will:
        """The death of the session about to start, published by the broker if the connection is lost."""
        self.session += 1
        death = encode(self._status("death"))
        return Will(topic=gateway_topic(self.gateway_id, GatewayChannel.STATUS), payload=death, retain=True)

    async def _connected(self, client: MqttClient) -> bool:
        """Traffic over one connection. True when the gateway is done (everything acknowledged, or the
        drain timeout passed) and its death was published; raises MqttError when the connection is lost."""
        self.stats.connects += 1
        self.ledger.sessions += 1
        if self.ledger.sessions > 1:
            self.stats.reconnects += 1
        self.stats.connected += 1
        try:
            await self._publish_status(client, "birth")
            if not self.first_connection.done():
                self.first_connection.set_result(None)
            gave_up = False
            lost: MqttError | None = None
            try:
                async with asyncio.timeout_at(self._drain_deadline) as draining:
                    self._timeout = draining
                    lost = await self._exchange(client)
            except TimeoutError:
                gave_up = True
                log.debug("%s: gave up waiting for PUBACKs after the drain timeout", self.gateway_id)
            finally:
                self._timeout = None
            if not gave_up:
                if lost is not None:
                    self.stats.connections_lost += 1
                    raise lost
                if not self._finished():
                    return False
            with contextlib.suppress(MqttError, TimeoutError):
                async with asyncio.timeout(5):
                    await self._publish_status(client, "death")
            return True
        finally:
            self.stats.connected -= 1
            self._requeue_inflight()

    async def _exchange(self, client: MqttClient) -> MqttError | None:
        """Send until everything is acknowledged (None) or the connection is lost (its reason)."""
        async with asyncio.TaskGroup() as group:
            sender = group.create_task(self._send(client), name=f"fleet-send-{self.gateway_id}")
            heartbeat = group.create_task(self._heartbeats(client), name=f"fleet-heartbeat-{self.gateway_id}")
            closed = group.create_task(client.wait_closed(), name=f"fleet-closed-{self.gateway_id}")
            try:
                await asyncio.wait({sender, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (sender, heartbeat, closed):
                    task.cancel()
        if closed.done() and not closed.cancelled():
            return closed.result()
        return None

    def _requeue_inflight(self) -> None:
        """Unacknowledged messages go back to the front of the queue, in sequence order."""
        if self._inflight:
            self._unsent.extendleft(sorted(self._inflight.values(), key=lambda m: m.seq, reverse=True))
            self._inflight.clear()

    async def _publish_status(
        self, client: MqttClient, state: Literal["birth", "heartbeat", "death"]
    ) -> None:
        payload = encode(self._status(state))
        self.stats.sent["status"] += 1
        try:
            await client.publish(gateway_topic(self.gateway_id, GatewayChannel.STATUS), payload, retain=True)
        except PublishRefused as exc:
            self.stats.refused["status"] += 1
            self.stats.note_error(f"{self.gateway_id}: {exc}")
            return
        except BaseException:
            # Not counted as sent: lost with the connection or abandoned, and never retransmitted.
            self.stats.sent["status"] -= 1
            raise
        self.stats.acknowledged["status"] += 1

    async def _heartbeats(self, client: MqttClient) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval_s)
            with contextlib.suppress(MqttError):
                await self._publish_status(client, "heartbeat")

    async def _send(self, client: MqttClient) -> None:
        async with asyncio.TaskGroup() as group:
            while True:
                while not self._unsent:
                    if self._finished():
                        return
                    self._work.clear()
                    await self._work.wait()
                await self._window.acquire()
                if not self._unsent:
                    self._window.release()
                    continue
                message = self._unsent.popleft()
                self._inflight[message.seq] = message
                publishing = group.create_task(self._publish(client, message))
                # Released by a done callback, not in the coroutine: a task cancelled before it started
                # never runs its finally, and the window would shrink at every reconnect.
                publishing.add_done_callback(self._published)

    def _published(self, _task: asyncio.Task[None]) -> None:
        self._window.release()
        self._work.set()

    async def _publish(self, client: MqttClient, message: Outgoing) -> None:
        now = time.monotonic()
        if message.first_sent is None:
            message.first_sent = now
            self.ledger.sent += 1
            self.stats.sent[message.kind] += 1
            self.stats.observations_sent += message.observations
            if self.registry is not None:
                self.registry.first_sent[message.message_id] = now
        else:
            self.stats.retransmitted += 1
        try:
            await client.publish(message.topic, message.payload)
        except PublishRefused as exc:
            self._inflight.pop(message.seq, None)
            if self.registry is not None:
                self.registry.first_sent.pop(message.message_id, None)
            self.ledger.refused += 1
            self.stats.refused[message.kind] += 1
            self.stats.backlog -= 1
            self.stats.note_error(f"{self.gateway_id} seq {message.seq}: {exc}")
            return
        except MqttError:
            return  # the connection loop requeues it and sends it again on the next connection
        if self._inflight.pop(message.seq, None) is None:
            return
        latency = time.monotonic() - now
        self.stats.puback.record(latency)
        self.ledger.acknowledged += 1
        self.stats.acknowledged[message.kind] += 1
        self.stats.observations_acknowledged += message.observations
        self.stats.backlog -= 1
        self.stats.progress.set()


class EndToEndProbe:
    """A subscriber that receives the fleet's sequenced messages and measures publish -> delivery.

    It runs on an event loop of its own in a thread of its own. On the fleet's loop, among a thousand
    sockets, it would read one packet per loop iteration (paho's ``loop_read`` reads one packet per call
    for a pure subscriber) and fall behind a fleet of a few hundred homes, measuring its own backlog.
    Shared state: it only adds to ``stats.received``/``received_unmatched``/``e2e`` (read by the fleet's
    loop as snapshots) and pops from ``registry.first_sent`` (single dict operations, atomic under the GIL).
    """

    def __init__(self, config: FleetConfig, stats: FleetStats, registry: SentRegistry) -> None:
        self.config = config
        self.stats = stats
        self.registry = registry
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self._stop = threading.Event()
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_task: asyncio.Task[None] | None = None
        self._notify_delivery = False

    def notify_deliveries(self) -> None:
        """From now on, set ``stats.delivery`` (on the fleet's loop) at every delivery."""
        self._notify_delivery = True

    async def run(self) -> None:
        """Receive until cancelled. The first connection's failure is raised (the broker is unreachable);
        later losses are noted and the probe reconnects (deliveries while it is away are not measured)."""
        finished: asyncio.Future[None] = self._loop.create_future()

        def report(error: BaseException | None) -> None:
            if finished.done():
                return
            if error is None:
                finished.set_result(None)
            else:
                finished.set_exception(error)

        def thread_main() -> None:
            error: BaseException | None = None
            try:
                asyncio.run(self._in_thread())
            except asyncio.CancelledError:
                pass
            except BaseException as exc:  # handed to the fleet's loop, raised there
                error = exc
            self._loop.call_soon_threadsafe(report, error)

        thread = threading.Thread(target=thread_main, name="fleet-e2e-probe", daemon=True)
        thread.start()
        try:
            await asyncio.shield(finished)
        except asyncio.CancelledError:
            self._request_stop()
            with contextlib.suppress(TimeoutError, MqttError):
                async with asyncio.timeout(10):
                    await finished
            raise

    def _request_stop(self) -> None:
        self._stop.set()
        loop, task = self._thread_loop, self._thread_task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the thread's loop has already closed
                loop.call_soon_threadsafe(task.cancel)

    async def _in_thread(self) -> None:
        self._thread_loop = asyncio.get_running_loop()
        self._thread_task = asyncio.current_task()
        if self._stop.is_set():
            return
        backoff = Backoff(initial_s=0.5, maximum_s=10.0)
        while True:
            try:
                await self._receive()
            except MqttError as exc:
                if not self.ready.done():
                    raise
                self.stats.note_error(f"end-to-end probe: {exc}")
                log.info("end-to-end probe: %s", exc)
            await asyncio.sleep(backoff.next_delay())

    def _set_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    async def _receive(self) -> None:
        settings = self.config.mqtt_settings(f"{self.config.plan.gateway_prefix}-e2e-{uuid.uuid4().hex[:8]}")
        async with MqttClient(settings) as client:
            # QoS 0: a QoS 1 subscription would put the broker's in-flight window (and the probe's
            # PUBACKs) between publish and delivery, and measure the probe rather than the path.
            await client.subscribe(
                gateway_filter(GatewayChannel.OBS),
                gateway_filter(GatewayChannel.SCORE),
                gateway_filter(GatewayChannel.EVENT),
                qos=0,
            )
            self._loop.call_soon_threadsafe(self._set_ready)
            async for message in client.messages():
                self._take(message.topic, message.payload, time.monotonic())

    def _take(self, topic: str, payload: bytes, received: float) -> None:
        try:
            where = parse_gateway_topic(topic)
            if where.gateway_id not in self.stats.gateways:
                return
            message_id = _message_id(payload)
        except (ValueError, KeyError, TypeError):
            return
        self.stats.received += 1
        if self._notify_delivery:
            self._loop.call_soon_threadsafe(self.stats.delivery.set)
        first_sent = self.registry.first_sent.pop(message_id, None)
        if first_sent is None:
            self.stats.received_unmatched += 1
            return
        self.stats.e2e.record(received - first_sent)


def raise_open_file_limit(needed: int) -> int:
    """Raise the soft RLIMIT_NOFILE (up to the hard limit) for ``needed`` sockets; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed + 64  # the event loop, logging, the executor and the probe
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raise FleetError(
            f"{needed} gateways need about {wanted} open files but the limit is {soft} (hard {hard}); "
            "raise it (ulimit -n) or run several fleet processes with --first-home"
        )
    return soft


class Fleet:
    """Runs ``config.homes`` gateways; ``async with``-free: call :meth:`run` once."""

    def __init__(
        self,
        config: FleetConfig,
        *,
        first_home: int = 0,
        on_started: Callable[[FleetStats], None] | None = None,
        on_ramped: Callable[[FleetStats], None] | None = None,
    ) -> None:
        self.config = config
        self.first_home = first_home
        self.stats = FleetStats(config.homes)
        self.stop_requested = asyncio.Event()
        self.on_started = on_started
        self.on_ramped = on_ramped
        """Called once when the ramp-up is over: every gateway started (not necessarily connected), or
        fewer when :meth:`request_stop` cut the ramp-up short."""

    def request_stop(self) -> None:
        """Stop planning new traffic; send what is queued, publish the deaths, disconnect."""
        self.stats.interrupted = True
        self.stop_requested.set()

    async def run(self) -> FleetStats:
        config = self.config
        raise_open_file_limit(config.homes + (1 if config.measure_e2e else 0))
        session = config.session if config.session is not None else int(time.time())
        registry = SentRegistry() if config.measure_e2e else None
        stats = self.stats
        homes = self.prepare_homes()
        stats.started_monotonic = time.monotonic()
        try:
            async with asyncio.TaskGroup() as group:
                if registry is not None:
                    probe = EndToEndProbe(config, stats, registry)
                    probe_task = group.create_task(probe.run(), name="fleet-e2e-probe")
                    try:
                        await self._first_of(probe.ready, probe_task)
                    except MqttError as exc:
                        raise BrokerUnreachable(str(exc)) from exc
                gateway_tasks: list[asyncio.Task[None]] = []
                interval = 1.0 / config.connect_rate
                loop = asyncio.get_running_loop()
                begin = loop.time()
                for offset in range(config.homes):
                    if self.stop_requested.is_set():
                        break
                    index = self.first_home + offset
                    gateway = SimulatedGateway(
                        config,
                        index,
                        stats,
                        session=session,
                        registry=registry,
                        stop_requested=self.stop_requested,
                        traffic=homes[offset],
                        probes_broker=offset == 0,
                    )
                    task = group.create_task(gateway.run(), name=f"fleet-gateway-{gateway.gateway_id}")
                    gateway_tasks.append(task)
                    stats.gateways_started += 1
                    if offset == 0:
                        if self.on_started is not None:
                            self.on_started(stats)
                        await self._first_of(gateway.first_connection, task)
                        begin = loop.time()
                        continue
                    delay = begin + offset * interval - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                if self.on_ramped is not None:
                    self.on_ramped(stats)
                await asyncio.gather(*gateway_tasks)
                if registry is not None:
                    # Deliveries of the last PUBACKed messages may still be on their way to the probe.
                    probe.notify_deliveries()
                    await self._await_deliveries(registry)
                    probe_task.cancel()
        except* FleetError as group_error:
            raise _first_leaf(group_error) from None
        finally:
            stats.finished_monotonic = time.monotonic()
        return stats

    def prepare_homes(self) -> list[HomeTraffic]:
        """Every home's patient and first stretch of vital signs, before any connection: evaluating the
        physiology is the costly part of a home's start, and would otherwise stall the ramp-up."""
        log.info("fleet: preparing %d homes", self.config.homes)
        placeholder = datetime.now(UTC)
        homes = []
        for offset in range(self.config.homes):
            home = HomeTraffic(self.config.plan, self.first_home + offset, start=placeholder)
            home.prepare()
            homes.append(home)
        return homes

    @staticmethod
    async def _first_of(ready: asyncio.Future[None], task: asyncio.Task[None]) -> None:
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            ready.result()
            return
        task.result()
        raise FleetError("the first gateway stopped before it connected")

    async def _await_deliveries(self, registry: SentRegistry) -> None:
        stats = self.stats
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while stats.received < stats.total(stats.acknowledged) - stats.acknowledged["status"]:
                    stats.delivery.clear()
                    await stats.delivery.wait()


def _first_leaf(group: BaseExceptionGroup[FleetError]) -> FleetError:
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


_ID_HEAD = b'{"message_id":"'


def _message_id(payload: bytes) -> str:
    """The message id of a sequenced payload; ``encode`` writes it first, so no full parse is needed."""
    if payload.startswith(_ID_HEAD) and payload[len(_ID_HEAD) + 36 : len(_ID_HEAD) + 37] == b'"':
        return payload[len(_ID_HEAD) : len(_ID_HEAD) + 36].decode()
    value = json.loads(payload)["message_id"]
    if not isinstance(value, str):
        raise ValueError("message_id is not a string")
    return value
