"""Outbox and uplink throughput, the 24-hour backlog drain, and the agent's footprint.

Run by hand (not part of make test); results go to docs/benchmarks.md:

    .venv/bin/python bench/bench_outbox.py --runs 3

Each run starts its own Mosquitto on a free loopback port. Measures:
- commit rate: readings/s durably committed (WAL, synchronous=FULL) through Outbox.put_observations,
  with 6 concurrent producers putting 50 readings at a time (group commit);
- drain rate: readings/s from a full outbox to the broker through the Uplink (PUBACK for each message);
- the 24-hour backlog of a six-device home at 1 Hz (518,400 readings) drained end to end;
- footprint: RSS and CPU of a real agent process with six simulated devices at 1 Hz for --footprint-s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.backoff import Backoff
from edge_agent.mqtt import MqttSettings
from edge_agent.outbox import Outbox
from edge_agent.protocol import Observation
from edge_agent.uplink import Uplink, UplinkOptions

VITALS = [("heart_rate", "/min", 72.0), ("spo2", "%", 97.0), ("respiratory_rate", "/min", 16.0)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = workdir / "mosquitto.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    config.write_text(
        f"{user}listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_inflight_messages 100\nmax_queued_messages 1000000\n"
    )
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([binary, "-c", str(config)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("mosquitto did not start")


def observations(count: int, start: int = 0) -> list[Observation]:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    result = []
    for index in range(start, start + count):
        vital, unit, value = VITALS[index % len(VITALS)]
        result.append(
            Observation.model_validate(
                {
                    "patient_id": "pt-bench",
                    "vital": vital,
                    "value": value,
                    "unit": unit,
                    "measured_at": base + timedelta(seconds=index),
                    "time_source": "device",
                    "device_id": f"dev-{index % 6}",
                }
            )
        )
    return result


async def commit_rate(path: Path, total: int) -> float:
    chunk = observations(50)
    async with Outbox(path, "gw-bench") as outbox:

        async def producer(rounds: int) -> None:
            for _ in range(rounds):
                await outbox.put_observations(chunk)

        started = time.perf_counter()
        await asyncio.gather(*(producer(total // (6 * 50)) for _ in range(6)))
        elapsed = time.perf_counter() - started
    return (total // (6 * 50)) * 6 * 50 / elapsed


async def drain_rate(path: Path, port: int) -> tuple[float, int]:
    async with Outbox(path, "gw-bench") as outbox:
        pending = (await outbox.backlog()).items
        uplink = Uplink(
            outbox=outbox,
            gateway_id="gw-bench",
            software_version="bench",
            connection=lambda will: MqttSettings(
                host="127.0.0.1", port=port, client_id="gw-bench", will=will
            ),
            commands=lambda command: asyncio.sleep(0, (True, "")),  # type: ignore[arg-type,return-value]
            options=UplinkOptions(heartbeat_interval_s=60, batch_delay_s=0, backoff=Backoff(initial_s=0.05)),
        )
        started = time.perf_counter()
        task = asyncio.create_task(uplink.run())
        while (await outbox.backlog()).unsent:
            await outbox.wait_for_acknowledgement()
        elapsed = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return pending / elapsed, pending


async def fill(path: Path, total: int) -> None:
    async with Outbox(path, "gw-bench") as outbox:
        for start in range(0, total, 5000):
            await outbox.put_observations(observations(min(5000, total - start), start))


def footprint(seconds: float, port: int, workdir: Path) -> tuple[float, float]:
    config = workdir / "footprint.toml"
    devices = "".join(
        f'[[devices]]\nid = "d{i}"\nkind = "ble_heart_rate"\npatient = "pt-1"\n'
        f'address = "AA:BB:CC:DD:EE:0{i}"\n'
        for i in range(6)
    )
    config.write_text(
        f'gateway_id = "gw-foot"\n[broker]\nurl = "mqtt://127.0.0.1:{port}"\nallow_plaintext = true\n'
        f'[[patients]]\nid = "pt-1"\n{devices}[outbox]\npath = "{workdir / "foot.db"}"\n'
    )
    script = Path(__file__).with_name("footprint_agent.py")
    process = subprocess.Popen([sys.executable, str(script), str(config)])
    time.sleep(5)  # warm-up: imports, connection, first readings
    clock_ticks = os.sysconf("SC_CLK_TCK")

    def cpu_s() -> float:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / clock_ticks

    cpu_before, wall_before = cpu_s(), time.monotonic()
    time.sleep(seconds)
    cpu_used, wall = cpu_s() - cpu_before, time.monotonic() - wall_before
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
        if line.startswith("VmRSS")
    )
    process.terminate()
    process.wait(10)
    return rss_kb / 1024, 100 * cpu_used / wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--commit-readings", type=int, default=120_000)
    parser.add_argument("--drain-readings", type=int, default=120_000)
    parser.add_argument("--backlog-readings", type=int, default=6 * 24 * 3600)
    parser.add_argument("--footprint-s", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        broker, port = start_broker(workdir)
        try:
            commits, drains = [], []
            for run in range(args.runs):
                commits.append(asyncio.run(commit_rate(workdir / f"c{run}.db", args.commit_readings)))
                asyncio.run(fill(workdir / f"d{run}.db", args.drain_readings))
                drains.append(asyncio.run(drain_rate(workdir / f"d{run}.db", port))[0])
                print(f"run {run}: commit {commits[-1]:,.0f}/s  drain {drains[-1]:,.0f}/s", flush=True)
            print(f"commit rate, median of {args.runs}: {statistics.median(commits):,.0f} readings/s")
            print(f"drain rate,  median of {args.runs}: {statistics.median(drains):,.0f} readings/s")
            started = time.perf_counter()
            asyncio.run(fill(workdir / "day.db", args.backlog_readings))
            filled = time.perf_counter() - started
            rate, count = asyncio.run(drain_rate(workdir / "day.db", port))
            size_mib = (workdir / "day.db").stat().st_size / 2**20
            print(
                f"24-hour backlog: {count:,} readings stored in {filled:.1f} s, "
                f"drained in {count / rate:.1f} s ({rate:,.0f}/s); outbox file {size_mib:.0f} MiB"
            )
            rss, cpu = footprint(args.footprint_s, port, workdir)
            print(
                f"footprint, six devices at 1 Hz for {args.footprint_s:.0f} s: "
                f"RSS {rss:.1f} MiB, CPU {cpu:.2f} % of one core"
            )
        finally:
            broker.terminate()
            broker.wait(10)
    print(f"(bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    main()
