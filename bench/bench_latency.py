"""End-to-end latency: a home's message -> stored -> receipt, and an assessment -> its alert on the cc topic.

Run by hand; results go to docs/benchmarks.md ("Server ingest and end-to-end latency (issue 7)"):

    .venv/bin/python bench/bench_latency.py --homes 1000 --minutes 3 --workers 1 --runs 3

Each run starts its own Mosquitto on a free loopback port, a fresh PostgreSQL database and ``--workers``
``wardwatch server`` processes (the helpers of ``bench/soak.py``), then ``wardwatch sim fleet`` with
``--homes`` gateways at the fleet's default cadence (6 readings per second per home in one batch a second)
for ``--minutes``. A fraction of the homes (``--deteriorating``, split between the sepsis and bleed
scenarios) starts at ``--scenario-hour`` of their scenario, where NEWS2 is 5 and rising, so the escalation
engine raises and updates alerts throughout the run; the others are stable. Homes send an assessment every
``--score-interval`` seconds.

Two probes measure, on the machine's one clock. One in this process subscribes to every gateway's score,
event and receipt topics (not to the observation batches, five in six messages: parsing them here would
take CPU from the server on a machine this size); the other, a process of its own (this script with
``--alert-probe PORT NICE``, at ``--probe-nice``), to the score topics and ``wardwatch/v1/cc/alerts``
only, so that an alert is timed when it arrives rather than after the thousand receipts a second the
first probe parses:

* **alert**: an assessment's ``sent_at`` (the simulated gateway's clock when it handed the message to its
  MQTT client) -> the ``raised``/``updated`` clinical alert it caused arriving on the cc topic. The cause is
  the patient's latest assessment with the alert's total seen before the alert.
* **stored**: an assessment's or event's ``sent_at`` -> ``stored_at`` in the receipt the worker sent
  (when the last message the receipt lists was committed).
* **receipt**: the same messages' ``sent_at`` -> the receipt for them arriving at a gateway's topic
  (receipts are batched every 0.2 s).

Messages sent during the first ``--warmup-s`` seconds are matched but not counted: the start-up, which by
default lasts until one assessment interval after the connection ramp (plus 10 s for the fleet's own
start): every home's birth and device events, its first assessment, and with it every deteriorating
patient's first alert, a burst of ``raised`` alerts that steady operation does not see. Alerts of the
start-up are reported apart (``alert_startup``). Everything is bounded: the run stops after ``--minutes``
plus the fleet's drain, and the probe keeps only unmatched messages (a receipt removes what it matched).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict, deque
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
from soak import (
    WARDWATCH,
    create_database,
    proc_sample,
    profiled,
    start_mosquitto,
    start_workers,
    stop_stack,
)

from edge_agent.mqtt import MqttClient, MqttSettings
from edge_agent.protocol import CC_ALERT_TOPIC, GatewayChannel, gateway_filter, parse_gateway_topic
from simulators.fleet.latency import LatencyHistogram


class Probe:
    """Matches receipts and alerts to the messages that caused them."""

    def __init__(self, *, receipts: bool = True) -> None:
        self.receipts = receipts
        """Whether this probe follows receipts (the other keeps only the scores alerts are matched to)."""
        self.record_after = float("inf")
        """Latencies of messages sent before this (Unix seconds: the fleet's start-up) are not recorded."""
        self.sent_at: dict[tuple[str, int], float] = {}
        """(gateway, seq) -> sent_at (Unix seconds) of messages without a receipt yet."""
        self.scores: dict[str, deque[tuple[int, float, str, int]]] = defaultdict(lambda: deque(maxlen=16))
        """patient -> recent (total, sent_at, gateway, seq) of its assessments."""
        self.alert = LatencyHistogram()
        self.alert_startup = LatencyHistogram()
        """Alerts caused by assessments sent before ``record_after``."""
        self.alert_causes: list[tuple[str, int, float, float, float]] = []
        """(gateway, seq, sent_at, decided at, arrival) of each recorded alert's assessment: the run joins
        them with the assessments' ``received_at`` (when ingest took the message) before its database
        goes."""
        self.stored = LatencyHistogram()
        self.receipt = LatencyHistogram()
        self.alerts_seen = 0
        self.alerts_unmatched = 0
        self.all_receipted = asyncio.Event()
        """Set whenever every message seen so far has its receipt."""

    def take(self, topic: str, payload: bytes, received: float) -> None:
        body = json.loads(payload)
        if topic == CC_ALERT_TOPIC:
            self._alert(body, received)
            return
        where = parse_gateway_topic(topic)
        if where.channel is GatewayChannel.RECEIPT:
            stored_at = datetime.fromisoformat(body["stored_at"]).timestamp()
            for seq in body["seqs"]:
                sent = self.sent_at.pop((where.gateway_id, seq), None)
                if sent is None:
                    continue  # an observation batch (not followed) or sent before the probe listened
                if sent >= self.record_after:
                    self.receipt.record(max(0.0, received - sent))
                    self.stored.record(max(0.0, stored_at - sent))
            if not self.sent_at:
                self.all_receipted.set()
            return
        sent = datetime.fromisoformat(body["sent_at"]).timestamp()
        if self.receipts:
            self.sent_at[(where.gateway_id, body["seq"])] = sent
            self.all_receipted.clear()
        if where.channel is GatewayChannel.SCORE:
            self.scores[body["patient_id"]].append((body["total"], sent, where.gateway_id, body["seq"]))

    def _alert(self, body: dict[str, Any], received: float) -> None:
        if body["category"] != "clinical" or body["action"] not in ("raised", "updated"):
            return
        self.alerts_seen += 1
        for total, sent, gateway, seq in reversed(self.scores.get(body.get("patient_id") or "", ())):
            if total == body.get("total") and sent <= received:
                if sent < self.record_after:
                    self.alert_startup.record(received - sent)
                    return
                self.alert.record(received - sent)
                decided = datetime.fromisoformat(body["at"]).timestamp()  # the engine's clock
                self.alert_causes.append((gateway, seq, sent, decided, received))
                return
        self.alerts_unmatched += 1


async def probe_loop(port: int, probe: Probe, ready: asyncio.Event) -> None:
    if probe.receipts:
        name, filters = "bench-latency-probe", [gateway_filter(c) for c in RECEIPT_PROBE_CHANNELS]
    else:
        name, filters = "bench-latency-alert-probe", [gateway_filter(GatewayChannel.SCORE), CC_ALERT_TOPIC]
    settings = MqttSettings(host="127.0.0.1", port=port, client_id=name, clean_start=True)
    async with MqttClient(settings) as client:
        await client.subscribe(*filters, qos=0)
        ready.set()
        async for message in client.messages():
            probe.take(message.topic, message.payload, time.time())


RECEIPT_PROBE_CHANNELS = (GatewayChannel.SCORE, GatewayChannel.EVENT, GatewayChannel.RECEIPT)


async def alert_probe_main(port: int, nice: int) -> None:
    """The alert probe's process: says ``ready`` once subscribed, reads the time to record from (a line
    on stdin), and prints its results as one JSON line when stdin closes. It runs at niceness ``nice``
    if it may (a negative one needs the privilege): it stands for the command center's consumer, which
    has a machine of its own, and an arrival it timestamps only once the kernel gives it a CPU back is
    latency of this machine's scheduler, not of the server."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    probe = Probe(receipts=False)
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    listening = asyncio.create_task(probe_loop(port, probe, ready), name="alert probe")
    await ready.wait()
    print("ready", flush=True)
    probe.record_after = float((await stdin.readline()).decode())
    await stdin.read()  # until the parent closes it
    listening.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listening
    result = {
        "alert": probe.alert.summary().as_dict(),
        "alert_startup": probe.alert_startup.summary().as_dict(),
        "alert_causes": probe.alert_causes,
        "alerts_seen": probe.alerts_seen,
        "alerts_unmatched": probe.alerts_unmatched,
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
    }
    print(json.dumps(result), flush=True)


async def start_alert_probe(port: int, nice: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--alert-probe", str(port), str(nice),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = await process.stdout.readline()
    if line.strip() != b"ready":
        process.kill()
        raise RuntimeError(f"the alert probe did not start: {line!r}")
    return process


async def alert_probe_results(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    output = await asyncio.wait_for(process.stdout.read(), 30)
    await process.wait()
    result: dict[str, Any] = json.loads(output.decode().splitlines()[-1])
    return result


async def one_run(args: argparse.Namespace) -> dict[str, Any]:
    scratch = Path(tempfile.mkdtemp(prefix="wardwatch-latency-"))
    broker, port = await start_mosquitto(scratch)
    admin, database, dsn = await create_database("latency")
    workers: list[asyncio.subprocess.Process] = []
    fleet = alert_probe = None
    probe = Probe()
    try:
        workers = await start_workers(
            args.workers, dsn, port, scratch, name="latency", profile_dir=args.profile
        )
        cpu_before = [proc_sample(w.pid)[1] for w in workers]
        ready = asyncio.Event()
        alert_probe = await start_alert_probe(port, args.probe_nice)
        async with asyncio.TaskGroup() as group:
            listening = group.create_task(probe_loop(port, probe, ready), name="latency probe")
            await ready.wait()
            summary_path = scratch / "fleet.json"
            share = args.deteriorating / 2
            prefix = [] if args.profile is None else profiled(args.profile / "fleet.prof")
            if args.fleet_nice:
                prefix = ["nice", "-n", str(args.fleet_nice), *prefix]
            fleet = await asyncio.create_subprocess_exec(
                *prefix, WARDWATCH, "sim", "fleet", "--homes", str(args.homes), "--broker", f"mqtt://127.0.0.1:{port}",
                "--duration", str(args.minutes * 60), "--score-interval", str(args.score_interval),
                "--scenario", f"stable={1 - args.deteriorating}", "--scenario", f"sepsis={share}",
                "--scenario", f"bleed={share}", "--scenario-hour", str(args.scenario_hour),
                "--json-summary", str(summary_path), "--connect-rate", str(args.connect_rate),
                stdout=asyncio.subprocess.DEVNULL, stderr=(scratch / "fleet.log").open("wb"),
            )  # fmt: skip
            started = time.monotonic()
            machine_before = machine_cpu()
            others_before = {"mosquitto": cpu_by_pid([broker.pid]), "postgresql": cpu_by_pid(postgres_pids())}
            probe.record_after = time.time() + args.warmup_s
            assert alert_probe.stdin is not None
            alert_probe.stdin.write(f"{probe.record_after!r}\n".encode())
            await alert_probe.stdin.drain()
            fleet_cpu: list[tuple[float, float]] = []  # (seconds since start, CPU seconds), last sample
            sampling = group.create_task(sample_cpu(fleet.pid, started, fleet_cpu), name="fleet CPU")
            await fleet.wait()
            sampling.cancel()
            elapsed = time.monotonic() - started
            machine_busy, machine_all = (b - a for a, b in zip(machine_before, machine_cpu(), strict=True))
            others_after = {"mosquitto": cpu_by_pid([broker.pid]), "postgresql": cpu_by_pid(postgres_pids())}
            others_pct = {}
            for name, after in others_after.items():
                used = sum(cpu - others_before[name].get(pid, 0.0) for pid, cpu in after.items())
                others_pct[name] = round(100 * used / elapsed, 1)
            cpu = [proc_sample(w.pid)[1] - before for w, before in zip(workers, cpu_before, strict=True)]
            with contextlib.suppress(TimeoutError):  # receipts for the last messages
                await asyncio.wait_for(probe.all_receipted.wait(), args.drain_s)
            listening.cancel()
        alerts = await alert_probe_results(alert_probe)
        technical = await technical_alarms(dsn)
        alert_stages = await alert_stages_of(dsn, alerts["alert_causes"])
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    finally:
        await stop_stack([alert_probe, fleet, *workers, broker], admin, database)
    return {
        "alert": alerts["alert"],
        "alert_startup": alerts["alert_startup"],
        "alert_stages": alert_stages,
        "stored": probe.stored.summary().as_dict(),
        "receipt": probe.receipt.summary().as_dict(),
        "alerts_seen": alerts["alerts_seen"],
        "technical_alarms": technical,
        "alerts_unmatched": alerts["alerts_unmatched"],
        "alert_probe_nice": alerts["nice"],
        "messages_without_receipt": len(probe.sent_at),
        "fleet": {
            "observations": summary.get("observations"),
            "latency": summary.get("latency"),
            "exit_code": fleet.returncode if fleet else None,
        },
        "worker_cpu_pct": [round(100 * c / elapsed, 1) for c in cpu],
        "fleet_cpu_pct": round(100 * fleet_cpu[-1][1] / fleet_cpu[-1][0], 1) if fleet_cpu else None,
        "other_cpu_pct": others_pct,
        "machine_busy_pct": round(100 * machine_busy / machine_all, 1),
    }


async def technical_alarms(dsn: str) -> dict[str, int]:
    """Technical alarms raised in the run, by condition; gateway_offline split by cause. The fleet's
    gateways all send their heartbeats until they stop, so an offline alarm for missed heartbeats is a
    false one (the server was behind), while the deaths at the fleet's end are real."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT CASE WHEN condition = 'gateway_offline' AND reason LIKE '%no heartbeat%' "
            "THEN 'gateway_offline_missed_heartbeats' WHEN condition = 'gateway_offline' "
            "THEN 'gateway_offline_death' ELSE condition END AS kind, count(*) AS n "
            "FROM alerts WHERE category = 'technical' GROUP BY kind ORDER BY kind"
        )
    finally:
        await connection.close()
    return {row["kind"]: row["n"] for row in rows}


async def alert_stages_of(dsn: str, causes: list[list[Any]]) -> dict[str, Any]:
    """Where the recorded alerts' time went: their assessments' ``sent_at`` -> ``received_at`` (the
    gateway's MQTT client, the broker, the worker's socket) -> the decision (``at``: the ingest
    transaction, and the wait for the engine's) -> the alert's arrival at the probe."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT gateway_id, seq, received_at FROM assessments WHERE (gateway_id, seq) IN "
            "(SELECT * FROM unnest($1::text[], $2::bigint[]))",
            [c[0] for c in causes],
            [c[1] for c in causes],
        )
    finally:
        await connection.close()
    received = {(row["gateway_id"], row["seq"]): row["received_at"].timestamp() for row in rows}
    stages = {name: LatencyHistogram() for name in ("to_worker", "to_decision", "to_probe")}
    for gateway, seq, sent, decided, arrived in causes:
        if (taken := received.get((gateway, seq))) is None:
            continue
        stages["to_worker"].record(max(0.0, taken - sent))
        stages["to_decision"].record(max(0.0, decided - taken))
        stages["to_probe"].record(max(0.0, arrived - decided))
    return {name: histogram.summary().as_dict() for name, histogram in stages.items()}


def machine_cpu() -> tuple[int, int]:
    """(busy, all) jiffies of every CPU so far, from /proc/stat (busy: all but idle and iowait)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def postgres_pids() -> list[int]:
    """The machine's PostgreSQL processes (the server and every backend, this run's and others')."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """pid -> CPU seconds used so far, for those of ``pids`` still running (a process that ends between two
    samples is not counted; the workers' database connections are kept for the whole run)."""
    used = {}
    for pid in pids:
        with contextlib.suppress(OSError, StopIteration):
            used[pid] = proc_sample(pid)[1]
    return used


async def sample_cpu(pid: int, started: float, last: list[tuple[float, float]]) -> None:
    """Keep the last (seconds since ``started``, CPU seconds) of a process that will exit (its /proc
    entry goes with it), sampled every 2 s."""
    with contextlib.suppress(OSError, StopIteration):
        while True:
            await asyncio.sleep(2)
            last[:] = [(time.monotonic() - started, proc_sample(pid)[1])]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--homes", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--deteriorating", type=float, default=0.2, help="fraction of homes deteriorating")
    parser.add_argument("--scenario-hour", type=float, default=14.0)
    parser.add_argument("--score-interval", type=float, default=15.0)
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="leave out messages sent in the first seconds (default: the connection ramp, one "
        "--score-interval for every home's first assessment and first alerts, and 10 s)",
    )
    parser.add_argument(
        "--drain-s", type=float, default=60, help="wait at most this long for the last receipts"
    )
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=None,
        help="homes started per second (default: spread over one --score-interval, so the homes' scoring "
        "and heartbeat instants are spread as in a real deployment rather than all in the same second)",
    )
    parser.add_argument(
        "--fleet-nice",
        type=int,
        default=0,
        help="run the fleet at this niceness (e.g. 10), so that on a machine it shares, the simulated "
        "homes, which would each have a CPU of their own, take CPU the server and broker leave",
    )
    parser.add_argument(
        "--probe-nice",
        type=int,
        default=-10,
        help="the alert probe's niceness (default -10 where permitted; the run reports the one it got): "
        "the probe stands for a command-center consumer on a machine of its own",
    )
    parser.add_argument("--out", type=Path, help="write every run as JSON")
    parser.add_argument(
        "--profile",
        type=Path,
        help="run each worker and the fleet under cProfile, writing worker-N.prof and fleet.prof into this "
        "directory (a run's profiles replace the previous run's; cProfile costs CPU, so the latencies of "
        "such a run are not comparable)",
    )
    args = parser.parse_args()
    if not 0 < args.deteriorating < 1:
        parser.error("--deteriorating must be between 0 and 1")
    if args.connect_rate is None:
        args.connect_rate = args.homes / args.score_interval
    if args.warmup_s is None:
        args.warmup_s = args.homes / args.connect_rate + args.score_interval + 10
    runs = []
    for n in range(args.runs):
        run = await one_run(args)
        runs.append(run)
        print(f"run {n + 1}: {json.dumps(run)}", flush=True)
    summary: dict[str, Any] = {}
    for measure in ("alert", "stored", "receipt"):
        for key in ("p50_ms", "p99_ms"):
            values = [run[measure][key] for run in runs if run[measure][key] is not None]
            summary[f"{measure}_{key}_median"] = statistics.median(values) if values else None
    summary["alerts_per_run"] = [run["alert"]["count"] for run in runs]
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"args": vars(args) | {"out": str(args.out)}, "runs": runs}, indent=2))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        if sys.argv[1:2] == ["--alert-probe"]:
            asyncio.run(alert_probe_main(int(sys.argv[2]), int(sys.argv[3])))
        else:
            asyncio.run(main())
