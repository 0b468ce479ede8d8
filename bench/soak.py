"""Soak: many simulated homes against several server workers on PostgreSQL, sampled over time.

Run by hand (``make soak`` runs the full size); results go to docs/scaling.md:

    .venv/bin/python bench/soak.py --homes 1000 --minutes 30 --workers 2

Starts its own Mosquitto on a free loopback port, a fresh PostgreSQL database on the machine's server,
``--workers`` ``wardwatch server`` processes sharing the ingest through ``$share/…``, and
``wardwatch sim fleet`` with ``--homes`` gateways (one MQTT connection each, 6 observations per second per
home by default). Every ``--sample-s`` seconds it records each worker's RSS and CPU, the rows stored per
second, and the fleet's publish-to-PUBACK and end-to-end latency. At the end it checks that every
observation the fleet had acknowledged is stored exactly once, and reports memory growth after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

WARDWATCH = str(Path(sys.executable).with_name("wardwatch"))
ADMIN_DSN = os.environ.get("WARDWATCH_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_sample(pid: int) -> tuple[float, float]:
    """(RSS in MiB, CPU seconds used so far) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss_kb / 1024, cpu


async def start_mosquitto(scratch: Path) -> tuple[asyncio.subprocess.Process, int]:
    """A Mosquitto on a free loopback port (no persistence, generous queues); (process, port)."""
    port = free_port()
    conf = scratch / "mosquitto.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"{user}listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_inflight_messages 100\nmax_queued_messages 1000000\nmax_connections -1\n"
    )
    broker = await asyncio.create_subprocess_exec(
        shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf), stderr=asyncio.subprocess.DEVNULL
    )
    for _ in range(200):
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        await asyncio.sleep(0.05)
    return broker, port


async def create_database(label: str) -> tuple[asyncpg.Connection, str, str]:
    """A new database on the machine's PostgreSQL: (admin connection, name, DSN). Drop it with
    ``DROP DATABASE … WITH (FORCE)`` on the admin connection."""
    admin = await asyncpg.connect(ADMIN_DSN)
    database = f"wardwatch_{label}_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{database}"')
    base = ADMIN_DSN.rsplit("/", 1)[0]
    return admin, database, f"{base}/{database}"


async def stop_stack(
    processes: list[asyncio.subprocess.Process | None], admin: asyncpg.Connection, database: str
) -> None:
    """Stop what start_mosquitto/start_workers (and a fleet) started and drop the run's database."""
    for process in processes:
        if process is not None and process.returncode is None:
            process.terminate()
            await process.wait()
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await admin.close()


def profiled(output: Path) -> list[str]:
    """The prefix that runs a command (a script path and its arguments) under cProfile into ``output``."""
    return [sys.executable, "-m", "cProfile", "-o", str(output)]


async def start_workers(
    count: int,
    dsn: str,
    port: int,
    scratch: Path,
    *,
    name: str,
    extra_env: dict[str, str] | None = None,
    profile_dir: Path | None = None,
) -> list[asyncio.subprocess.Process]:
    """``count`` ``wardwatch server`` processes on the database and broker, sharing the ingest; with
    ``profile_dir``, each under cProfile, writing ``worker-N.prof`` there when it stops."""
    env = {
        **os.environ,
        "WARDWATCH_SERVER_DATABASE__URL": dsn.replace("postgresql://", "postgresql+asyncpg://"),
        "WARDWATCH_SERVER_BROKER__URL": f"mqtt://127.0.0.1:{port}",
        "WARDWATCH_SERVER_INGEST__SHARE_GROUP": name,
        "WARDWATCH_SERVER_HTTP_ENABLED": "false",
        "WARDWATCH_SERVER_STATE_DIR": str(scratch / "server"),
        "WARDWATCH_SERVER_LOG_FORMAT": "text",
        **(extra_env or {}),
    }
    workers = []
    for n in range(count):
        log = (scratch / f"worker-{n}.log").open("wb")
        command = [WARDWATCH, "server"]
        if profile_dir is not None:
            command = [*profiled(profile_dir / f"worker-{n}.prof"), *command]
        workers.append(
            await asyncio.create_subprocess_exec(
                *command, env={**env, "WARDWATCH_SERVER_WORKER_ID": f"{name}-{n}"}, stderr=log
            )
        )
        await asyncio.sleep(3 if n == 0 else 1)  # the first one migrates the database
    return workers


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--homes", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=6, help="observations per second per home")
    parser.add_argument("--batch-interval", type=float, default=1, help="seconds between a home's batches")
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--out", type=Path, default=None, help="write the samples and summary as JSON")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="wardwatch-soak-"))
    broker, port = await start_mosquitto(scratch)
    admin, database, dsn = await create_database("soak")
    workers = []
    fleet = None
    samples: list[dict[str, Any]] = []
    try:
        workers = await start_workers(args.workers, dsn, port, scratch, name="soak")
        summary_path = scratch / "fleet.json"
        progress_path = scratch / "progress.jsonl"
        fleet = await asyncio.create_subprocess_exec(
            WARDWATCH, "sim", "fleet", "--homes", str(args.homes), "--broker", f"mqtt://127.0.0.1:{port}",
            "--rate", str(args.rate), "--batch-interval", str(args.batch_interval),
            "--duration", str(args.minutes * 60), "--measure-e2e",
            "--json-summary", str(summary_path), "--progress-jsonl", str(progress_path),
            "--progress-interval", str(args.sample_s),
            stdout=asyncio.subprocess.DEVNULL, stderr=(scratch / "fleet.log").open("wb"),
        )  # fmt: skip
        connection = await asyncpg.connect(dsn)
        started = time.monotonic()
        previous_rows, previous_cpu = 0, [proc_sample(w.pid)[1] for w in workers]
        while fleet.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fleet.wait(), args.sample_s)
            rows = await connection.fetchval("SELECT count(*) FROM observations")
            point: dict[str, Any] = {"t_s": round(time.monotonic() - started, 1), "observations": rows}
            point["stored_per_s"] = round((rows - previous_rows) / args.sample_s, 1)
            previous_rows = rows
            for n, worker in enumerate(workers):
                rss, cpu = proc_sample(worker.pid)
                point[f"worker{n}_rss_mib"] = round(rss, 1)
                point[f"worker{n}_cpu_pct"] = round(100 * (cpu - previous_cpu[n]) / args.sample_s, 1)
                previous_cpu[n] = cpu
            if progress_path.exists():
                lines = progress_path.read_text().splitlines()
                if lines:
                    point["fleet"] = json.loads(lines[-1])
            samples.append(point)
            print(json.dumps({k: v for k, v in point.items() if k != "fleet"}), flush=True)
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        for _ in range(120):  # let the workers finish what is queued
            stored = await connection.fetchval("SELECT count(*) FROM observations")
            if stored >= summary.get("observations", {}).get("acknowledged", 0):
                break
            await asyncio.sleep(1)
        stored = await connection.fetchval("SELECT count(*) FROM observations")
        duplicates = await connection.fetchval(
            "SELECT count(*) - count(DISTINCT (message_id, position)) FROM observations"
        )
        await connection.close()
        warm = [s for s in samples if s["t_s"] >= 0.25 * args.minutes * 60]
        growth = (
            {
                f"worker{n}": round(warm[-1][f"worker{n}_rss_mib"] - warm[0][f"worker{n}_rss_mib"], 1)
                for n in range(len(workers))
            }
            if len(warm) >= 2
            else {}
        )
        result = {
            "homes": args.homes,
            "minutes": args.minutes,
            "workers": args.workers,
            "rate": args.rate,
            "batch_interval_s": args.batch_interval,
            "fleet_summary": summary,
            "observations_stored": stored,
            "duplicates": duplicates,
            "rss_growth_after_warmup_mib": growth,
            "stored_per_s_median": statistics.median(s["stored_per_s"] for s in samples[1:])
            if len(samples) > 1
            else None,
            "worker_cpu_pct_median": {
                f"worker{n}": statistics.median(s[f"worker{n}_cpu_pct"] for s in samples)
                for n in range(len(workers))
            },
            "samples": samples,
        }
        print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
        if args.out:
            args.out.write_text(json.dumps(result, indent=2))
    finally:
        await stop_stack([fleet, *workers, broker], admin, database)


if __name__ == "__main__":
    asyncio.run(main())
