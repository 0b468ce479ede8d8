"""Ingest rate of one server worker: readings persisted per second, PostgreSQL and SQLite.

Run by hand; results go to docs/benchmarks.md ("Server ingest and end-to-end latency (issue 7)"):

    .venv/bin/python bench/bench_ingest.py --homes 1000 --seconds 30 --runs 5
    .venv/bin/python bench/bench_ingest.py --mode broker --homes 1000 --seconds 30 --runs 3

A **reading** is one observation value: one element of an ``ObservationBatch``'s ``observations``, which
becomes one row of the ``observations`` table. The rate is readings stored per second of wall time; the
other messages of the mix (assessments, device events, births and heartbeats) are stored in the same
time and counted separately, not as readings.

The traffic is what ``wardwatch sim fleet`` sends with its defaults (``simulators.fleet.traffic``): per
home and per second one observation batch of 6 readings (heart rate, SpO2, respiratory rate, systolic
and diastolic pressure, temperature at 1 Hz), an assessment every 60 s, 4 device events at the start,
a birth at the start and a heartbeat every 30 s. Messages are ordered second by second across homes, as
they reach the broker. It is generated and encoded before any clock starts, and every run stores it
into a fresh database (a new PostgreSQL database, a new SQLite file).

Modes:

* ``ingestor``: :meth:`server.ingest.Ingestor.ingest_many` called directly, like the MQTT consumer calls
  it: batches of ``--batch`` messages, up to ``--concurrency`` transactions in flight (the consumer's
  defaults: 100 and 8). Measures validation, dedup, sequence tracking and storage; no broker.
* ``broker``: a private Mosquitto is loaded with the whole traffic for one persistent session first,
  then one :class:`server.ingest_mqtt.IngestConsumer` (the worker's consumer, manual PUBACK after each
  commit) drains it. The rate is taken between 10 % and 90 % of the readings acknowledged (steady state,
  no start-up or tail).

Each (mode, backend) is run ``--runs`` times; the median is reported with the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import pickle
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.mqtt import MqttClient, MqttSettings
from edge_agent.protocol import (
    Assessment,
    AssessmentContent,
    Event,
    EventContent,
    GatewayChannel,
    GatewayStatus,
    ObservationBatch,
    encode,
    gateway_topic,
    new_message_id,
)
from server.ingest import Ingestor
from server.ingest_mqtt import IngestConsumer
from server.settings import IngestSettings
from server.storage import create_engine, migrate, session_factory
from simulators.fleet.traffic import HomeTraffic, TrafficPlan

ADMIN_DSN = os.environ.get("WARDWATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
HEARTBEAT_S = 30


@dataclass(frozen=True, slots=True)
class Traffic:
    messages: list[tuple[str, bytes]]
    readings: int
    by_channel: dict[str, int]


def fleet_traffic(homes: int, seconds: int, *, seed: int = 0) -> Traffic:
    """What ``homes`` fleet gateways send in ``seconds`` (the fleet's default plan), second by second."""
    plan = TrafficPlan(seed=seed)
    start = datetime.now(UTC) - timedelta(seconds=seconds + 5)
    gateways = [HomeTraffic(plan, index, start=start) for index in range(homes)]
    next_seq = [0] * homes
    session = int(start.timestamp())
    messages: list[tuple[str, bytes]] = []
    by_channel: dict[str, int] = {}
    readings = 0

    def status(home: HomeTraffic, state: str, at: datetime) -> None:
        payload = GatewayStatus(
            gateway_id=home.gateway_id,
            state=state,  # type: ignore[arg-type]
            session=session,
            sent_at=at,
            software_version="bench",
            heartbeat_interval_s=HEARTBEAT_S,
            backlog=0,
            devices=home.devices(),
            clock_synchronized=True,
        )
        messages.append((gateway_topic(home.gateway_id, GatewayChannel.STATUS), encode(payload)))
        by_channel["status"] = by_channel.get("status", 0) + 1

    for tick in range(seconds):
        at = start + timedelta(seconds=tick + 1)
        for index, home in enumerate(gateways):
            if tick == 0:
                status(home, "birth", start)
            elif tick % HEARTBEAT_S == 0:
                status(home, "heartbeat", at)
            for planned in home.tick(tick):
                head: dict[str, Any] = {
                    "message_id": new_message_id(),
                    "gateway_id": home.gateway_id,
                    "seq": next_seq[index],
                    "sent_at": at,
                }
                next_seq[index] += 1
                message: ObservationBatch | Assessment | Event
                if planned.channel is GatewayChannel.OBS:
                    message = ObservationBatch(**head, observations=planned.body)
                    readings += len(message.observations)
                elif planned.channel is GatewayChannel.SCORE:
                    assert isinstance(planned.body, AssessmentContent)
                    message = Assessment(**head, **dict(planned.body))
                else:
                    assert isinstance(planned.body, EventContent)
                    message = Event(**head, **dict(planned.body))
                messages.append((gateway_topic(home.gateway_id, planned.channel), encode(message)))
                by_channel[planned.channel.value] = by_channel.get(planned.channel.value, 0) + 1
    return Traffic(messages, readings, by_channel)


# -- databases ----------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_database(backend: str, scratch: Path) -> AsyncIterator[str]:
    """A SQLAlchemy URL of a new, migrated, empty database; dropped (or deleted) afterwards."""
    if backend == "sqlite":
        path = scratch / f"bench-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite+aiosqlite:///{path}"
        await migrate(url)
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)
        return
    admin = await asyncpg.connect(ADMIN_DSN)
    name = f"wardwatch_bench_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    url = f"{base}/{name}"
    try:
        await migrate(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def stored_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            counts = {}
            for table in (
                "observations",
                "received_messages",
                "assessments",
                "gateway_events",
                "dead_letters",
            ):
                counts[table] = int(
                    (await connection.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                )
            duplicate_rows = await connection.execute(
                text(
                    "SELECT count(*) - count(DISTINCT message_id::text || ':' || position) FROM observations"
                )
                if url.startswith("postgresql")
                else text("SELECT count(*) - count(DISTINCT message_id || ':' || position) FROM observations")
            )
            counts["duplicate_observations"] = int(duplicate_rows.scalar_one())
            return counts
    finally:
        await engine.dispose()


def check_complete(traffic: Traffic, counts: dict[str, int]) -> None:
    sequenced = sum(n for channel, n in traffic.by_channel.items() if channel != "status")
    problems = []
    if counts["observations"] != traffic.readings:
        problems.append(f"{counts['observations']} observations stored, {traffic.readings} sent")
    if counts["received_messages"] != sequenced:
        problems.append(f"{counts['received_messages']} messages claimed, {sequenced} sent")
    if counts["dead_letters"] or counts["duplicate_observations"]:
        problems.append(
            f"{counts['dead_letters']} dead letters, {counts['duplicate_observations']} duplicates"
        )
    if problems:
        raise SystemExit("bench run did not store the traffic exactly once: " + "; ".join(problems))


# -- ingestor mode ----------------------------------------------------------------------------------


async def run_ingestor(
    traffic: Traffic, url: str, *, batch: int, concurrency: int, pool_size: int
) -> dict[str, Any]:
    engine = create_engine(url, pool_size=pool_size)
    ingestor = Ingestor(session_factory(engine))
    slots = asyncio.Semaphore(concurrency)
    batches = [traffic.messages[i : i + batch] for i in range(0, len(traffic.messages), batch)]

    async def store(chunk: list[tuple[str, bytes]]) -> None:
        try:
            await ingestor.ingest_many(chunk)
        finally:
            slots.release()

    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as group:
            for chunk in batches:
                await slots.acquire()
                group.create_task(store(chunk))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        database_cpu = await backend_cpu_s(url)
    finally:
        await engine.dispose()
    return {
        "elapsed_s": elapsed,
        "readings_per_s": traffic.readings / elapsed,
        "messages_per_s": len(traffic.messages) / elapsed,
        **cpu_rates(traffic.readings, cpu, database_cpu),
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def backend_cpu_s(url: str) -> float | None:
    """CPU seconds used so far by the PostgreSQL backends serving ``url``'s database (the pool's
    connections, opened during the run); None for SQLite, whose work is in this process."""
    if not url.startswith("postgresql"):
        return None
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        pids = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await connection.close()
    total = 0.0
    for row in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(row["pid"])
    return total


def cpu_rates(readings: int, worker_cpu_s: float, database_cpu_s: float | None) -> dict[str, float]:
    """Readings per CPU second of the worker process alone and of worker + database backends: what the
    rate would be with a core each, independent of how busy the shared machine was."""
    rates = {"worker_cpu_s": worker_cpu_s, "readings_per_worker_cpu_s": readings / worker_cpu_s}
    if database_cpu_s is not None:
        rates["database_cpu_s"] = database_cpu_s
        rates["readings_per_cpu_s_worker_and_db"] = readings / (worker_cpu_s + database_cpu_s)
    return rates


# -- broker mode ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def mosquitto(scratch: Path, queued: int) -> AsyncIterator[int]:
    port = free_port()
    conf = scratch / f"mosquitto-{port}.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"{user}listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        f"max_inflight_messages 1000\nmax_queued_messages {queued + 1000}\nmax_queued_bytes 0\n"
        "set_tcp_nodelay true\n"
    )
    broker = await asyncio.create_subprocess_exec(
        shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf), stderr=asyncio.subprocess.DEVNULL
    )
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield port
    finally:
        broker.terminate()
        await broker.wait()


async def run_broker(
    traffic: Traffic,
    url: str,
    scratch: Path,
    *,
    batch: int,
    concurrency: int,
    pool_size: int,
    receive_maximum: int,
) -> dict[str, Any]:
    async with mosquitto(scratch, len(traffic.messages)) as port:
        settings = MqttSettings(
            host="127.0.0.1", port=port, client_id=f"bench-ingest-{port}", receive_maximum=receive_maximum
        )
        engine = create_engine(url, pool_size=pool_size)
        ingestor = Ingestor(session_factory(engine))
        stored_readings = 0
        total = traffic.readings
        marks: dict[float, float] = {}
        """Fraction of the readings stored -> when."""

        async def count(outcome: Any) -> None:
            nonlocal stored_readings
            if isinstance(outcome.message, ObservationBatch) and outcome.kind == "stored":
                stored_readings += len(outcome.message.observations)
                for fraction in (0.1, 0.9):
                    if fraction not in marks and stored_readings >= fraction * total:
                        marks[fraction] = time.perf_counter()

        consumer = IngestConsumer(
            ingestor, settings, share_group=None, concurrency=concurrency, max_batch=batch, on_outcome=count
        )
        # Create the persistent session and its subscriptions, then leave: the broker queues for it.
        async with MqttClient(consumer.mqtt) as subscriber:
            await subscriber.subscribe(*consumer.filters, qos=1)
        publisher_settings = MqttSettings(
            host="127.0.0.1", port=port, client_id="bench-load", max_inflight=1000
        )
        async with MqttClient(publisher_settings) as publisher:
            window = asyncio.Semaphore(1000)

            async def publish(topic: str, payload: bytes) -> None:
                try:
                    await publisher.publish(topic, payload, qos=1)
                finally:
                    window.release()

            async with asyncio.TaskGroup() as group:
                for topic, payload in traffic.messages:
                    await window.acquire()
                    group.create_task(publish(topic, payload))
        try:
            started, cpu_started = time.perf_counter(), time.process_time()
            async with asyncio.TaskGroup() as group:
                running = group.create_task(consumer.run())
                await consumer.wait_acknowledged(len(traffic.messages))
                finished, cpu = time.perf_counter(), time.process_time() - cpu_started
                running.cancel()
            database_cpu = await backend_cpu_s(url)
        finally:
            await engine.dispose()
    steady = 0.8 * total / (marks[0.9] - marks[0.1])
    return {"elapsed_s": finished - started, "readings_per_s": steady,
            "readings_per_s_whole": total / (finished - started),
            "messages_per_s": len(traffic.messages) / (finished - started),
            **cpu_rates(total, cpu, database_cpu)}  # fmt: skip


# -- main -------------------------------------------------------------------------------------------


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("ingestor", "broker"), action="append")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), action="append")
    parser.add_argument("--homes", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=30, help="seconds of fleet traffic per home")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100, help="messages per ingest_many (consumer default)")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="transactions in flight (consumer default)"
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=5,
        help="database pool size (5: the server default when the documented runs were made; 10 now)",
    )
    parser.add_argument(
        "--receive-maximum",
        type=int,
        default=IngestSettings().receive_maximum,
        help="broker mode: the consumer's MQTT receive maximum (default: a worker's, ingest.receive_maximum; "
        "the runs documented before 2026-12-07 used 100, which leaves ~12 messages per transaction)",
    )
    parser.add_argument(
        "--traffic-cache", type=Path, help="keep the generated traffic in this file and reuse it"
    )
    parser.add_argument("--json", type=Path, help="also write every run as JSON")
    args = parser.parse_args()
    modes = args.mode or ["ingestor"]
    backends = args.backend or ["postgresql", "sqlite"]

    generated = time.perf_counter()
    cache = args.traffic_cache
    if cache is not None and cache.exists():
        traffic = pickle.loads(cache.read_bytes())  # a file this script wrote
    else:
        traffic = fleet_traffic(args.homes, args.seconds)
        if cache is not None:
            cache.write_bytes(pickle.dumps(traffic))
    print(
        f"traffic: {len(traffic.messages)} messages {traffic.by_channel}, {traffic.readings} readings "
        f"({time.perf_counter() - generated:.1f} s to generate)",
        flush=True,
    )
    scratch = Path(tempfile.mkdtemp(prefix="wardwatch-bench-ingest-"))
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    try:
        for mode in modes:
            for backend in backends:
                key = f"{mode}/{backend}"
                runs = []
                for n in range(args.runs):
                    async with fresh_database(backend, scratch) as url:
                        if mode == "ingestor":
                            run = await run_ingestor(
                                traffic, url, batch=args.batch, concurrency=args.concurrency,
                                pool_size=args.pool_size,
                            )  # fmt: skip
                        else:
                            run = await run_broker(
                                traffic, url, scratch, batch=args.batch, concurrency=args.concurrency,
                                pool_size=args.pool_size, receive_maximum=args.receive_maximum,
                            )  # fmt: skip
                        check_complete(traffic, await stored_counts(url))
                    runs.append(run)
                    print(
                        f"{key} run {n + 1}: {json.dumps({k: round(v, 1) for k, v in run.items()})}",
                        flush=True,
                    )
                rates = [run["readings_per_s"] for run in runs]
                results["runs"][key] = runs
                print(
                    f"{key}: median {statistics.median(rates):,.0f} readings/s "
                    f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {len(rates)} runs)",
                    flush=True,
                )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # gaps opened and filled by concurrent batches are normal here
    asyncio.run(main())
