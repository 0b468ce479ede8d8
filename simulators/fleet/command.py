"""``wardwatch sim fleet``: wire-contract load from N simulated gateways, with live progress and a summary.

Exit status: 0 when every message planned was sent and acknowledged; 1 when the broker refused some, or
some were never sent or never acknowledged; 2 for a usage error or a broker the first gateway cannot
reach; 130 after Ctrl-C (once: stop planning, drain, publish deaths; twice: abandon).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

from rich.console import Console

from edge_agent.heap import collect_young_less_often, freeze_long_lived
from edge_agent.mqtt import TlsFiles
from simulators.fleet.display import record_progress, show_progress, summary_table
from simulators.fleet.runner import BrokerUnreachable, Fleet, FleetConfig, FleetError, FleetStats
from simulators.fleet.traffic import STREAMS, TrafficError, TrafficPlan
from simulators.physiology import SCENARIOS

EXIT_OK = 0
EXIT_UNACKNOWLEDGED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _scenario_weights(values: list[str] | None) -> dict[str, float]:
    if not values:
        return {"stable": 1.0}
    weights: dict[str, float] = {}
    for value in values:
        name, _, weight = value.partition("=")
        try:
            weights[name] = float(weight) if weight else 1.0
        except ValueError:
            raise TrafficError(f"--scenario {value!r}: the weight after '=' must be a number") from None
    return weights


def config_from_args(args: argparse.Namespace) -> FleetConfig:
    """The fleet configuration, or FleetError / TrafficError naming the option that is wrong."""
    tls = None
    if args.tls_ca is not None:
        tls = TlsFiles(ca_file=args.tls_ca, cert_file=args.tls_cert, key_file=args.tls_key)
    elif args.tls_cert is not None or args.tls_key is not None:
        raise FleetError("--tls-cert and --tls-key need --tls-ca")
    plan = TrafficPlan(
        seed=args.seed,
        rate=args.rate,
        batch_interval_s=args.batch_interval,
        score_interval_s=args.score_interval,
        scenarios=_scenario_weights(args.scenario),
        scenario_hour=args.scenario_hour,
        gateway_prefix=args.gateway_prefix,
        patient_prefix=args.patient_prefix,
    )
    return FleetConfig(
        broker_url=args.broker,
        homes=args.homes,
        duration_s=args.duration,
        plan=plan,
        tls=tls,
        username=args.username,
        password=args.password,
        heartbeat_interval_s=args.heartbeat_interval,
        connect_rate=args.connect_rate,
        max_inflight=args.max_inflight,
        drain_timeout_s=args.drain_timeout,
        session=args.session,
        measure_e2e=args.measure_e2e,
    )


async def run_fleet(
    config: FleetConfig,
    *,
    first_home: int = 0,
    console: Console | None = None,
    progress_jsonl: Path | None = None,
    progress_interval_s: float = 10.0,
    freeze_after_ramp: bool = False,
) -> tuple[dict[str, object], int]:
    """Run the fleet with progress on ``console``; return the summary and the exit status. With
    ``freeze_after_ramp`` (the command, which owns its process), what is alive once every home has
    started is left out of garbage collection (``edge_agent.heap``): a thousand homes' state would
    otherwise be walked by every full collection, stalling every home's traffic."""
    console = console or Console()

    def ramped(_stats: FleetStats) -> None:
        freeze_long_lived()
        collect_young_less_often()

    fleet = Fleet(config, first_home=first_home, on_ramped=ramped if freeze_after_ramp else None)
    loop = asyncio.get_running_loop()
    interrupts = 0
    main_task = asyncio.current_task()

    def interrupted() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            fleet.request_stop()
        elif main_task is not None:
            main_task.cancel()

    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, interrupted)
            installed.append(signum)
    reporters = [asyncio.create_task(show_progress(fleet.stats, config, console), name="fleet-progress")]
    if progress_jsonl is not None:
        recorder = record_progress(fleet.stats, config, progress_jsonl, progress_interval_s)
        reporters.append(asyncio.create_task(recorder, name="fleet-progress-jsonl"))
    try:
        await fleet.run()
    except asyncio.CancelledError:
        fleet.stats.interrupted = True
        if interrupts < 2:
            raise
    finally:
        for reporter in reporters:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter  # a failure of the display or the recorder surfaces here
        for signum in installed:
            loop.remove_signal_handler(signum)
    summary = fleet.stats.summary(config)
    messages = summary["messages"]
    assert isinstance(messages, dict)
    if fleet.stats.interrupted:
        status = EXIT_INTERRUPTED
    elif messages["refused"] or messages["unacknowledged"] or messages["never_sent"]:
        status = EXIT_UNACKNOWLEDGED
    else:
        status = EXIT_OK
    return summary, status


def _check_writable(option: str, path: Path | None) -> None:
    """Fail before the run, not after a half-hour soak, when an output file cannot be written."""
    if path is None:
        return
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FleetError(f"{option} {path}: the directory {directory} does not exist")
    if path.is_dir() or not os.access(path if path.exists() else directory, os.W_OK):
        raise FleetError(f"{option} {path}: cannot write there")


def _run(args: argparse.Namespace) -> int:
    prog = "wardwatch sim fleet"
    try:
        if args.progress_interval <= 0:
            raise FleetError("--progress-interval must be > 0 s")
        for option, path in (
            ("--json-summary", args.json_summary),
            ("--progress-jsonl", args.progress_jsonl),
        ):
            _check_writable(option, path)
        config = config_from_args(args)
    except (FleetError, TrafficError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    console = Console()
    try:
        fleet_run = run_fleet(
            config,
            first_home=args.first_home,
            console=console,
            progress_jsonl=args.progress_jsonl,
            progress_interval_s=args.progress_interval,
            freeze_after_ramp=True,
        )
        summary, status = asyncio.run(fleet_run)
    except BrokerUnreachable as exc:
        print(f"{prog}: error: cannot reach the broker at {config.broker_display}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FleetError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    console.print(summary_table(summary))
    if args.json_summary is not None:
        args.json_summary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return status


def register_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fleet",
        help="publish wire-contract load from N simulated gateways",
        description=(
            "Publish real wire-contract traffic (births, heartbeats, observation batches, NEWS2 "
            "assessments, device events, deaths) from N simulated gateways, one MQTT connection each, "
            "and report sent, acknowledged, rate and latency. Exit 0 when everything was acknowledged, "
            "1 when something was refused or never acknowledged, 2 for usage errors or an unreachable "
            "broker."
        ),
    )
    parser.add_argument("--homes", type=int, required=True, help="number of simulated gateways (homes)")
    parser.add_argument("--broker", required=True, help="broker URL: mqtt://host:1883 or mqtts://host:8883")
    parser.add_argument(
        "--rate",
        type=float,
        default=float(len(STREAMS)),
        help=f"observations per second per home (default {len(STREAMS)}: each of the {len(STREAMS)} vital "
        "streams at 1 Hz)",
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="seconds of traffic per home (default 60)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of patients and scenarios (default 0)")
    parser.add_argument(
        "--batch-interval", type=float, default=1.0, help="seconds between observation batches (default 1)"
    )
    parser.add_argument(
        "--score-interval",
        type=float,
        default=60.0,
        help="seconds between NEWS2 assessments per home; 0 for none (default 60)",
    )
    parser.add_argument(
        "--heartbeat-interval", type=float, default=30.0, help="seconds between heartbeats (default 30)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME[=WEIGHT]",
        help=f"patient scenario, repeatable with weights (default stable); one of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--scenario-hour", type=float, default=0.0, help="scenario hour at which traffic begins (default 0)"
    )
    parser.add_argument(
        "--gateway-prefix", default="sim-gw", help="gateway ids are PREFIX-00000 … (default sim-gw)"
    )
    parser.add_argument(
        "--patient-prefix", default="sim-pt", help="patient ids are PREFIX-00000 … (default sim-pt)"
    )
    parser.add_argument(
        "--first-home",
        type=int,
        default=0,
        help="index of the first home, to split one fleet over several processes (default 0)",
    )
    parser.add_argument(
        "--connect-rate", type=float, default=200.0, help="gateways started per second (default 200)"
    )
    parser.add_argument(
        "--max-inflight", type=int, default=20, help="unacknowledged messages per gateway (default 20)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for outstanding PUBACKs after the last batch (default 30)",
    )
    parser.add_argument(
        "--session", type=int, default=None, help="first session number (default: current Unix time)"
    )
    parser.add_argument(
        "--measure-e2e",
        action="store_true",
        help="subscribe to the fleet's topics and report publish-to-delivery latency",
    )
    parser.add_argument("--tls-ca", type=Path, help="CA certificate of the broker (with mqtts://)")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, help="client private key (mutual TLS)")
    parser.add_argument("--username", help="MQTT user name")
    parser.add_argument(
        "--password",
        default=os.environ.get("WARDWATCH_FLEET_PASSWORD"),
        help="MQTT password (default: $WARDWATCH_FLEET_PASSWORD, which keeps it out of the process list)",
    )
    parser.add_argument("--json-summary", type=Path, metavar="PATH", help="also write the summary as JSON")
    parser.add_argument(
        "--progress-jsonl",
        type=Path,
        metavar="PATH",
        help="append a JSON line of counters, rates and latency percentiles every --progress-interval",
    )
    parser.add_argument(
        "--progress-interval", type=float, default=10.0, help="seconds between progress lines (default 10)"
    )
    parser.set_defaults(run=_run)
