"""An outbox that fills while the uplink is down: the oldest readings go first, and the command center hears.

Real processes: an agent process with a counting device and a tiny outbox quota, Mosquitto (down while
the outbox fills, then up), a server worker on PostgreSQL. Pass rule, counted like a ledger: the readings
that never arrive are exactly the oldest ones the device handed over, as many as the gateway's
``outbox_eviction`` events say it evicted; everything else is stored exactly once; and the server raises
a technical ``outbox_eviction`` alarm for the gateway.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from support.broker import MosquittoBroker
from support.crash_agent import index_of
from support.postgres import fresh_database
from support.processes import Proc, wait_until

WARDWATCH = str(Path(sys.executable).parent / "wardwatch")
SUPPORT = Path(__file__).resolve().parents[1] / "support"
QUOTA_MB = 0.25
RATE = 2000  # readings per second: the quota fills within seconds


def outbox_empty(path: Path) -> bool:
    with sqlite3.connect(path) as db:
        items = db.execute("SELECT count(*) FROM item").fetchone()[0]
        messages = db.execute("SELECT count(*) FROM message").fetchone()[0]
    return bool(items == 0 and messages == 0)


@pytest.mark.slow
async def test_a_full_outbox_evicts_the_oldest_readings_and_raises_a_technical_alarm(
    tmp_path: Path, broker_factory: Callable[..., MosquittoBroker]
) -> None:
    broker = broker_factory(persistence=True)
    broker.kill()  # the home's uplink is down from the start
    base = datetime.now(UTC).replace(microsecond=0)
    gateway_id = "gw-evict"
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'gateway_id = "{gateway_id}"\nheartbeat_interval_s = 2\n'
        f'[broker]\nurl = "{broker.url}"\nallow_plaintext = true\n'
        f'[[patients]]\nid = "pt-evict"\n'
        f'[[devices]]\nid = "hr-evict"\nkind = "ble_heart_rate"\npatient = "pt-evict"\n'
        f'address = "AA:BB:CC:DD:EE:99"\n'
        f'[outbox]\npath = "{tmp_path / "outbox.db"}"\nquota_mb = {QUOTA_MB}\n'
    )
    ledger = tmp_path / "device.ledger"
    command = [sys.executable, str(SUPPORT / "crash_agent.py"), "--config", str(config)]
    command += ["--ledger", str(ledger), "--rate", str(RATE), "--base", base.isoformat()]
    agent = Proc(
        "agent",
        [*command, "--receipt-timeout", "10"],
        {**os.environ, "PYTHONPATH": str(SUPPORT)},
        log_file=tmp_path / "agent.log",
    )
    async with fresh_database() as (url, dsn):
        worker = Proc(
            "worker",
            [WARDWATCH, "server"],
            {
                **os.environ,
                "WARDWATCH_SERVER_DATABASE__URL": url,
                "WARDWATCH_SERVER_BROKER__URL": broker.url,
                "WARDWATCH_SERVER_HTTP_ENABLED": "false",
                "WARDWATCH_SERVER_STATE_DIR": str(tmp_path / "server"),
                "WARDWATCH_SERVER_WORKER_ID": "worker-evict",
            },
            log_file=tmp_path / "worker.log",
        )
        try:
            await agent.start(ready=" running: ")
            await agent.wait_for_line("outbox over its quota", limit_s=60)
            (tmp_path / "device.stop").touch()  # the device stops; what it handed over is the ledger
            broker.start()
            await worker.start(ready="ready")

            async def drained() -> bool:
                agent.check_running()
                worker.check_running()
                return outbox_empty(tmp_path / "outbox.db")

            await wait_until(drained, 90, "the gateway's outbox emptied by the server's receipts")
            handed = {int(line) for line in ledger.read_text().splitlines() if line.strip()}
            connection = await asyncpg.connect(dsn)
            try:
                # A receipt follows the commit; the engine decides after it, so the alarm can come later.
                async def alarmed() -> bool:
                    worker.check_running()
                    return bool(
                        await connection.fetchval(
                            "SELECT count(*) FROM alerts "
                            "WHERE gateway_id = $1 AND condition = 'outbox_eviction'",
                            gateway_id,
                        )
                    )

                await wait_until(alarmed, 30, "the server raised the outbox_eviction alarm")
                rows = await connection.fetch(
                    "SELECT measured_at FROM observations WHERE gateway_id = $1", gateway_id
                )
                events = await connection.fetch(
                    "SELECT detail FROM gateway_events WHERE gateway_id = $1 AND kind = 'outbox_eviction'",
                    gateway_id,
                )
                alarms = await connection.fetch(
                    "SELECT category, priority, resolved_at FROM alerts "
                    "WHERE gateway_id = $1 AND condition = 'outbox_eviction'",
                    gateway_id,
                )
            finally:
                await connection.close()
        finally:
            for proc in (agent, worker):
                await proc.kill()

    stored = Counter(index_of(row["measured_at"], base) for row in rows)
    details = [d if isinstance(d, dict) else json.loads(d) for d in (row["detail"] for row in events)]
    evicted = sum(int(detail["evicted_observations"]) for detail in details)
    missing = sorted(handed - set(stored))
    summary = (
        f"handed over {len(handed)}, stored {sum(stored.values())} ({len(stored)} distinct), "
        f"missing {len(missing)} (first {missing[:5]}, last {missing[-5:]}), evicted per events {evicted} "
        f"in {len(details)} events"
    )
    assert evicted > 0, summary
    assert missing == list(range(len(missing))), f"not the oldest readings that went: {summary}"
    assert len(missing) == evicted, summary
    assert set(stored) <= handed, summary
    assert max(stored.values()) == 1, f"stored twice: {summary}"
    assert len(stored) > len(missing), summary  # the newest readings survived the outage
    assert [(a["category"], a["resolved_at"]) for a in alarms] == [("technical", None)], alarms
