"""Fault injection with real processes, counted like a ledger.

Real parts only: Mosquitto with persistence, edge-agent processes reading counting devices, two server
workers on PostgreSQL sharing the ingest through ``$share/…``. While the devices produce, the test
kill -9s agents, kill -9s Mosquitto, kills a server worker mid-stream (started again at once, or never),
takes the database down just after (every connection cut, new ones refused for a while), and freezes a
gateway (SIGSTOP) so that only its missing heartbeats can tell.

Pass rule:
- every reading a device handed over is stored exactly once (expected == stored; a reading a device
  re-sends after its agent was killed between commit and hand-over is counted separately and must
  not exceed one per kill);
- no message is stored twice (the server's dedup by message id);
- every timed escalation fired once per due time, no later than 5 s after it was due;
- a frozen gateway is declared offline within 1.5 × its heartbeat interval (plus the engine's tick);
- no process dies that the test did not kill.

A failing run prints the ledger's differences. ``make soak`` sets WARDWATCH_RELIABILITY=full for
larger counts; ``make test`` runs the reduced counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from support.broker import MosquittoBroker
from support.crash_agent import index_of
from support.postgres import ADMIN_DSN, fresh_database
from support.processes import Proc, wait_until

FULL = os.environ.get("WARDWATCH_RELIABILITY") == "full"
GATEWAYS = 3
AGENT_KILLS = 10 if FULL else 3
RATE = 400 if FULL else 150  # readings per second per gateway
HEARTBEAT_S = 2.0
ACK_TIMEOUT_S = 3
RECEIPT_TIMEOUT_S = 10.0
"""The gateways send unconfirmed messages again after this long (60 s by default)."""
INGEST_SESSION_EXPIRY_S = 5
"""How long the broker keeps a worker's ingest session after it disconnected (60 s by default)."""
DATABASE_DOWN_S = 3.0
"""How long the database refuses connections after cutting them all (as while PostgreSQL restarts)."""
WARDWATCH = str(Path(sys.executable).parent / "wardwatch")
SUPPORT = Path(__file__).resolve().parents[1] / "support"


@dataclass
class Ledger:
    """Readings the devices handed over versus readings the server stored."""

    base: datetime
    expected: dict[str, set[int]] = field(default_factory=dict)
    stored: dict[str, Counter[int]] = field(default_factory=dict)
    duplicate_messages: int = 0

    def differences(self) -> str:
        lines = []
        for gateway, expected in sorted(self.expected.items()):
            stored = self.stored.get(gateway, Counter())
            missing = sorted(expected - set(stored))
            unexpected = sorted(set(stored) - expected)
            repeated = sorted(index for index, count in stored.items() if count > 1)
            lines.append(
                f"{gateway}: handed over {len(expected)}, stored {sum(stored.values())} "
                f"({len(stored)} distinct); missing {len(missing)} {missing[:10]}; "
                f"not handed over {len(unexpected)} {unexpected[:10]}; "
                f"stored twice {len(repeated)} {repeated[:10]}"
            )
        lines.append(f"messages stored twice: {self.duplicate_messages}")
        return "\n".join(lines)


def outbox_state(path: Path) -> str:
    """What a gateway still holds: pending items, unpublished and unconfirmed messages (for failures)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:
        items = db.execute("SELECT count(*) FROM item").fetchone()[0]
        unpublished, published = db.execute(
            "SELECT count(*) FILTER (WHERE published_at IS NULL), "
            "count(*) FILTER (WHERE published_at IS NOT NULL) FROM message"
        ).fetchone()
        seqs = [row[0] for row in db.execute("SELECT seq FROM message ORDER BY seq LIMIT 20")]
    return f"items {items}, unpublished {unpublished}, awaiting receipt {published}, seqs {seqs}"


def handed_over(path: Path) -> set[int]:
    return {int(line) for line in path.read_text().splitlines() if line.strip()} if path.exists() else set()


async def read_stored(dsn: str, ledger: Ledger) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT gateway_id, measured_at FROM observations")
        ledger.stored = {}
        for row in rows:
            ledger.stored.setdefault(row["gateway_id"], Counter())[
                index_of(row["measured_at"], ledger.base)
            ] += 1
        ledger.duplicate_messages = await connection.fetchval(
            "SELECT count(*) - count(DISTINCT (message_id, position)) FROM observations"
        )
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def stack(
    tmp_path: Path, broker_factory: Callable[..., MosquittoBroker]
) -> AsyncIterator[tuple[MosquittoBroker, list[Proc], list[Proc], str, Ledger]]:
    broker = broker_factory(persistence=True)
    base = datetime.now(UTC).replace(microsecond=0)
    async with fresh_database() as (url, dsn):
        server_env = {
            **os.environ,
            "WARDWATCH_SERVER_DATABASE__URL": url,
            "WARDWATCH_SERVER_BROKER__URL": broker.url,
            "WARDWATCH_SERVER_INGEST__SHARE_GROUP": "wardwatch-ingest",
            "WARDWATCH_SERVER_HTTP_ENABLED": "false",
            "WARDWATCH_SERVER_INGEST__SESSION_EXPIRY_S": str(INGEST_SESSION_EXPIRY_S),
            "WARDWATCH_SERVER_STATE_DIR": str(tmp_path / "server"),
            "WARDWATCH_SERVER_ESCALATION__ACK_TIMEOUT_S": json.dumps(
                {
                    "low": ACK_TIMEOUT_S,
                    "medium": ACK_TIMEOUT_S,
                    "high": ACK_TIMEOUT_S,
                    "emergency": ACK_TIMEOUT_S,
                }
            ),
        }
        workers = [
            Proc(
                f"worker-{n}",
                [WARDWATCH, "server"],
                {**server_env, "WARDWATCH_SERVER_WORKER_ID": f"worker-{n}"},
                log_file=tmp_path / f"worker-{n}.log",
            )
            for n in range(2)
        ]
        gateways = []
        for n in range(GATEWAYS):
            gateway_id = f"gw-rel-{n}"
            config = tmp_path / f"{gateway_id}.toml"
            config.write_text(
                f'gateway_id = "{gateway_id}"\nheartbeat_interval_s = {HEARTBEAT_S}\n'
                f'[broker]\nurl = "{broker.url}"\nallow_plaintext = true\nkeepalive_s = 60\n'
                f'[[patients]]\nid = "pt-rel-{n}"\n'
                f'[[devices]]\nid = "hr-{n}"\nkind = "ble_heart_rate"\npatient = "pt-rel-{n}"\n'
                f'address = "AA:BB:CC:DD:EE:0{n}"\n[outbox]\npath = "{tmp_path / gateway_id}.db"\n'
            )
            command = [sys.executable, str(SUPPORT / "crash_agent.py"), "--config", str(config)]
            command += ["--ledger", str(tmp_path / f"{gateway_id}.ledger"), "--rate", str(RATE)]
            command += ["--base", base.isoformat(), "--receipt-timeout", str(RECEIPT_TIMEOUT_S)]
            env = {**os.environ, "PYTHONPATH": str(SUPPORT)}
            gateways.append(Proc(gateway_id, command, env, log_file=tmp_path / f"{gateway_id}.log"))
        try:
            yield broker, workers, gateways, dsn, Ledger(base=base)
        finally:
            for proc in [*gateways, *workers]:
                await proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize(
    "faults",
    [
        pytest.param(frozenset({"agent", "broker", "worker", "pg"}), id="worker-restarted"),
        pytest.param(frozenset({"agent", "broker", "worker-lost", "pg"}), id="worker-lost"),
    ],
)
async def test_ledger_holds_through_agent_broker_worker_and_database_faults(
    tmp_path: Path, broker_factory: Callable[..., MosquittoBroker], faults: frozenset[str]
) -> None:
    async with stack(tmp_path, broker_factory) as (broker, workers, gateways, dsn, ledger):
        for worker in workers:
            await worker.start(ready="ready")
        for gateway in gateways:
            await gateway.start(ready=" running: ")

        async def stored_total() -> int:
            for proc in [*workers, *gateways]:
                proc.check_running()  # a worker that died keeps its share of the traffic in its session
            await read_stored(dsn, ledger)
            return sum(sum(c.values()) for c in ledger.stored.values())

        async def grown(by: int) -> Callable[[], object]:
            start = await stored_total()

            async def check() -> bool:
                return await stored_total() >= start + by

            return check

        await wait_until(await grown(RATE), 60, "first readings stored")

        # 1. kill -9 one agent during its bursts, again and again
        victim = gateways[0]
        for _ in range(AGENT_KILLS if "agent" in faults else 0):
            await victim.kill()
            await victim.start(ready=" running: ")
            await wait_until(await grown(RATE // 2), 60, "readings after an agent restart")

        # 2. kill -9 the broker during bursts; it comes back with its persisted sessions
        if "broker" in faults:
            broker.kill()
            await asyncio.sleep(1.0)  # an outage of a second: agents keep committing to their outboxes
            broker.start()
            await wait_until(await grown(RATE), 90, "readings after the broker restart")

        # 3. kill a server worker mid-stream; the other carries the shared subscription alone. The killed
        # worker comes back (its session still holds what the broker gave it meanwhile), or never does
        # (its session expires; what it held comes again from the gateways' outboxes).
        if faults & {"worker", "worker-lost"}:
            await workers[0].kill()
            await wait_until(await grown(RATE), 60, "readings with one worker")
            if "worker" in faults:
                await workers[0].start(ready="ready")

        # 4. the database restarts: every connection cut at once, and new ones refused for a while (the
        # machine's PostgreSQL serves other databases, so this database alone is taken down)
        if "pg" in faults:
            database = dsn.rsplit("/", 1)[1]
            admin = await asyncpg.connect(ADMIN_DSN)  # another database: this one is going down
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
            await asyncio.sleep(DATABASE_DOWN_S)  # the outage itself
            await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
            await admin.close()
        await wait_until(await grown(RATE), 60, "readings after the database connections were cut")

        # 5. a gateway freezes: no death, no TCP close, only its heartbeats stop
        frozen = gateways[2]
        frozen.signal(signal.SIGSTOP)
        frozen_at = datetime.now(UTC)
        detected: list[datetime] = []

        async def declared_offline() -> bool:
            connection = await asyncpg.connect(dsn)
            try:
                # An alarm raised after the freeze, or one still open from before it (the gateway's last
                # heartbeats before the freeze may have gone to the lost worker's expiring session).
                raised = await connection.fetchval(
                    "SELECT min(raised_at) FROM alerts "
                    "WHERE condition = 'gateway_offline' AND gateway_id = $1 "
                    "AND (raised_at >= $2 OR resolved_at IS NULL)",
                    frozen.name,
                    frozen_at - timedelta(seconds=1),
                )
            finally:
                await connection.close()
            if raised is not None:
                detected.append(raised)
            return raised is not None

        await wait_until(declared_offline, 30, "frozen gateway declared offline")
        frozen.signal(signal.SIGCONT)

        # the devices stop; the agents drain everything they hold
        for gateway in gateways:
            (tmp_path / f"{gateway.name}.stop").touch()
        expected = {g.name: handed_over(tmp_path / f"{g.name}.ledger") for g in gateways}

        async def drained() -> bool:
            for proc in [*workers, *gateways]:
                proc.check_running()
            ledger.expected = {g.name: handed_over(tmp_path / f"{g.name}.ledger") for g in gateways}
            await read_stored(dsn, ledger)
            return all(ledger.expected[name] <= set(ledger.stored.get(name, ())) for name in ledger.expected)

        try:
            await wait_until(drained, 120, "every handed-over reading stored", poll_s=0.5)
        except TimeoutError:
            connection = await asyncpg.connect(dsn)
            dead = await connection.fetch(
                "SELECT reason, detail, count(*) AS n FROM dead_letters GROUP BY 1, 2"
            )
            claimed = await connection.fetch(
                "SELECT r.gateway_id, r.seq, r.channel, (SELECT count(*) FROM observations o "
                "WHERE o.message_id = r.message_id) AS rows FROM received_messages r "
                "WHERE r.channel = 'obs' AND NOT EXISTS "
                "(SELECT 1 FROM observations o WHERE o.message_id = r.message_id)"
            )
            dead = [*dead, *(dict(row) for row in claimed)]
            await connection.close()
            logs = "".join(line for proc in [*gateways, *workers] for line in proc.log[-15:])
            logs += "".join(
                line for proc in workers for line in proc.log if '"WARNING"' in line or '"ERROR"' in line
            )[-6000:]
            outboxes = "\n".join(
                f"{g.name} outbox: {outbox_state(tmp_path / f'{g.name}.db')}" for g in gateways
            )
            report = f"{ledger.differences()}\n{outboxes}\ndead letters: {dead}\n{logs}"
            report += f"\nevery process's full log is in {tmp_path}"
            pytest.fail(f"not every reading arrived:\n{report}")

        connection = await asyncpg.connect(dsn)
        try:
            escalations = await connection.fetch(
                "SELECT alert_id, detail FROM alert_events WHERE action = 'escalated'"
            )
        finally:
            await connection.close()

    assert all(len(expected[name]) > RATE for name in expected), ledger.differences()
    missing = {name: ledger.expected[name] - set(ledger.stored.get(name, ())) for name in ledger.expected}
    assert not any(missing.values()), ledger.differences()
    unexpected = {name: set(ledger.stored.get(name, ())) - ledger.expected[name] for name in ledger.expected}
    assert not any(unexpected.values()), ledger.differences()
    resent = sum(count - 1 for stored in ledger.stored.values() for count in stored.values() if count > 1)
    assert resent <= AGENT_KILLS, ledger.differences()
    assert ledger.duplicate_messages == 0, ledger.differences()

    timed = []
    for row in escalations:
        detail = row["detail"] if isinstance(row["detail"], dict) else json.loads(row["detail"] or "{}")
        if "due_at" in detail:
            timed.append((row["alert_id"], detail["due_at"], float(detail["late_s"])))
    assert timed, "no escalation fired during the run"
    doubled = [key for key, count in Counter((a, due) for a, due, _ in timed).items() if count > 1]
    assert not doubled, f"escalations fired twice: {doubled[:5]}"
    late = [late_s for _, _, late_s in timed if late_s > 5]
    assert not late, f"{len(late)} escalations more than 5 s late: {sorted(late)[-5:]}"

    delay = max(0.0, (detected[0] - frozen_at).total_seconds())
    assert delay <= 1.5 * HEARTBEAT_S + 2.0, f"frozen gateway detected after {delay:.1f} s"
