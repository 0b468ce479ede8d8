"""One server worker process: migrations, ingest from the broker, the escalation engine, the REST API.

::

    wardwatch server --config server.toml          (or WARDWATCH_SERVER_... environment variables)

At start the database is migrated (several workers starting at once take turns on a PostgreSQL advisory
lock). Then, as named tasks of one TaskGroup:

- ``ingest``: :class:`~server.ingest_mqtt.IngestConsumer` subscribed with QoS 1 (through
  ``$share/<group>/`` when ``ingest.share_group`` is set, so several workers split the gateways'
  traffic); after each transaction commits it calls the engine's ``handle_outcomes``;
- ``broker link``: the publishing connection (alert events, patient states, commands);
- ``escalation``: the engine's timer, delivery and patient-state loops;
- ``http``: the REST API (``server.api.create_app``) under uvicorn, when that package provides it.

SIGTERM or SIGINT stops it gracefully: the HTTP server finishes the requests in flight, then the other
tasks are cancelled (a message being stored is rolled back and not acknowledged, so the broker delivers it
again), then the database pool closes. Exit status 0.

Each worker needs its own ``worker_id`` (default: the host name): it names the MQTT client ids, whose
persistent sessions keep unacknowledged messages across a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import uvicorn
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from edge_agent.heap import collect_young_less_often, freeze_long_lived
from server import web
from server.api import ApiSettings, Broadcaster, DatabaseActions, create_app
from server.engine import BrokerLink, BrokerSettings, EngineSettings, EscalationEngine, WebhookSettings
from server.escalation import EscalationPolicy
from server.ingest import Ingestor, IngestOutcome, utc_now
from server.ingest_mqtt import IngestConsumer
from server.receipts import ReceiptSender
from server.settings import ServerSettings
from server.storage import create_engine, migrate, redacted, session_factory

logger = logging.getLogger(__name__)


def default_worker_id() -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:40].strip("-.") or "worker"
    return name if name[0].isalnum() else f"w{name}"


class WorkerSettings(ServerSettings):
    """Everything one server process needs: the storage and ingest settings plus the broker, the
    escalation policy, the engine, webhooks, the API and logging. ``WorkerSettings.load(path)`` reads a
    TOML file; ``WARDWATCH_SERVER_...`` environment variables override it."""

    worker_id: str = Field(default_factory=default_worker_id, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")
    broker: BrokerSettings = BrokerSettings()
    engine: EngineSettings = EngineSettings()
    escalation: EscalationPolicy = EscalationPolicy()
    webhooks: list[WebhookSettings] = Field(default_factory=list, max_length=32)
    api: ApiSettings = ApiSettings()
    http_enabled: bool = True
    """Serve the REST API from this process."""
    log_format: Literal["json", "text"] = "json"

    @classmethod
    def load(cls, path: Path | None = None) -> WorkerSettings:
        settings = super().load(path)
        assert isinstance(settings, WorkerSettings)
        return settings


# --------------------------------------------------------------------------------------------------
# Logging (entry points configure logging; libraries only log)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        task = asyncio.current_task() if _loop_running() else None
        if task is not None:
            entry["task"] = task.get_name()
        return json.dumps(entry, ensure_ascii=False)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def configure_logging(log_format: Literal["json", "text"], level: str | int = "INFO") -> None:
    import time

    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        formatter: logging.Formatter = JsonLogFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)


# --------------------------------------------------------------------------------------------------
# The worker


@dataclass(slots=True)
class ServerRuntime:
    """What a running worker is made of (the demo and tests look inside)."""

    settings: WorkerSettings
    database: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    ingestor: Ingestor
    consumer: IngestConsumer
    escalation: EscalationEngine
    broker_link: BrokerLink
    http_port: int | None = None
    """The port the REST API listens on (None when it is not served)."""


def _build_http(
    runtime: ServerRuntime, broadcaster: Broadcaster, clock: Callable[[], datetime]
) -> uvicorn.Server:
    """A uvicorn server for the REST API, with the engine behind its alert actions."""
    settings = runtime.settings

    async def publish_command(topic: str, payload: bytes) -> None:
        await runtime.broker_link.publish(topic, payload, qos=1)

    actions = DatabaseActions(runtime.sessions, alerts=runtime.escalation, publish_command=publish_command)
    app = create_app(
        sessionmaker=runtime.sessions,
        settings=settings.api,
        actions=actions,
        publisher=broadcaster,
        ingest_counters=runtime.ingestor.counters.snapshot,
        stream_lag_s=lambda: runtime.escalation.stream_lag.current().total_seconds(),
        engine_counters=runtime.escalation.counters.snapshot,
        clock=clock,
    )
    web.mount(app)  # the command-center page at / and its trend data

    class EmbeddedServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield  # the worker owns SIGTERM/SIGINT and stops uvicorn itself

    config = uvicorn.Config(
        app,
        host=settings.api.host,
        port=settings.api.port,
        log_config=None,
        access_log=False,
        lifespan="on",
    )
    return EmbeddedServer(config)


async def run_worker(
    settings: WorkerSettings,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[ServerRuntime], None] | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> None:
    """Run one worker until ``stop`` is set. ``clock`` is the time ingest, escalation and the API live in
    (a simulated clock when homes run faster than real time, as in ``wardwatch demo --speed``)."""
    database = create_engine(
        settings.database_url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
        busy_timeout_s=settings.database.busy_timeout_s,
        echo=settings.database.echo,
    )
    try:
        if settings.database.migrate_on_start:
            await migrate(database)
        logger.info("worker %s using database %s", settings.worker_id, redacted(settings.database_url))
        sessions = session_factory(database)
        client_base = settings.broker.client_id or f"wardwatch-{settings.worker_id}"
        link = BrokerLink(settings.broker.mqtt(f"{client_base}-pub", clean_start=True))
        broadcaster = Broadcaster(queue_size=settings.api.events_queue_size)
        escalation = EscalationEngine(
            sessions,
            policy=settings.escalation,
            publisher=link,
            settings=settings.engine,
            webhooks=settings.webhooks,
            worker_id=settings.worker_id,
            broadcaster=broadcaster,
            clock=clock,
        )
        ingestor = Ingestor(sessions, settings.ingest, clock=clock)

        async def publish_receipt(topic: str, payload: bytes) -> None:
            # QoS 0: a receipt lost on the way costs a re-send of what it lists (the gateway keeps those
            # messages and publishes them again; ingest finds them stored and notes a new receipt), never
            # a reading; QoS 1 would add a PUBACK per receipt and gateway, at every hop.
            await link.publish(topic, payload, qos=0)

        receipts = ReceiptSender(publish_receipt, clock=clock)

        async def after_commit(outcomes: list[IngestOutcome]) -> None:
            for outcome in outcomes:
                await receipts.note(outcome)  # stored is stored, whatever the escalation makes of it
            await escalation.handle_outcomes(outcomes)

        consumer = IngestConsumer(
            ingestor,
            settings.broker.mqtt(
                f"{client_base}-ingest",
                connection="ingest",
                session_expiry_s=settings.ingest.session_expiry_s,
                receive_maximum=settings.ingest.receive_maximum,
            ),
            share_group=settings.ingest.share_group,
            on_outcomes=after_commit,
        )
        runtime = ServerRuntime(settings, database, sessions, ingestor, consumer, escalation, link)
        http = _build_http(runtime, broadcaster, clock) if settings.http_enabled else None
        async with asyncio.TaskGroup() as group:
            ingest = group.create_task(consumer.run(), name="ingest")
            background = [
                group.create_task(link.run(), name="broker link"),
                group.create_task(escalation.run(), name="escalation"),
                group.create_task(receipts.run(), name="receipts"),
            ]
            http_task = group.create_task(http.serve(), name="http") if http is not None else None
            ready = group.create_task(_when_ready(runtime, http, on_ready), name="readiness")
            await stop.wait()
            logger.info("worker %s stopping", settings.worker_id)
            ready.cancel()
            if http is not None and http_task is not None:
                broadcaster.close()  # ends open event streams, or uvicorn would wait for them forever
                http.should_exit = True
                await http_task
            # Ingest first (what it has not stored is not acknowledged and comes back), then let the
            # decisions for what it did store finish, then the engine's loops and the broker link.
            ingest.cancel()
            await asyncio.wait([ingest])
            await escalation.drain()
            for task in background:
                task.cancel()
        logger.info("worker %s stopped", settings.worker_id)
    finally:
        await database.dispose()


async def _when_ready(
    runtime: ServerRuntime, http: Any, on_ready: Callable[[ServerRuntime], None] | None
) -> None:
    await runtime.consumer.connected.wait()
    if http is not None:
        while not http.started:  # noqa: ASYNC110 - uvicorn offers no event for this
            await asyncio.sleep(0.05)
        sockets = [sock for server in http.servers for sock in server.sockets]
        runtime.http_port = sockets[0].getsockname()[1] if sockets else None
    logger.info(
        "worker %s ready: ingesting from %s:%d%s",
        runtime.settings.worker_id,
        runtime.consumer.mqtt.host,
        runtime.consumer.mqtt.port,
        f", API on http://{runtime.settings.api.host}:{runtime.http_port}" if runtime.http_port else "",
    )
    if on_ready is not None:
        on_ready(runtime)


async def serve_until_signalled(
    settings: WorkerSettings, *, on_ready: Callable[[ServerRuntime], None] | None = None
) -> None:
    """Run one worker until SIGTERM or SIGINT (the process's main: it freezes the start-up heap when the
    worker is ready, see ``edge_agent.heap``)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def ready(runtime: ServerRuntime) -> None:
        freeze_long_lived()  # the process's start-up is over: keep full collections short from here on
        collect_young_less_often()  # and make them, and young ones, rare
        if on_ready is not None:
            on_ready(runtime)

    try:
        await run_worker(settings, stop=stop, on_ready=ready)
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
