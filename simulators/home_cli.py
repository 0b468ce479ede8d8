"""``wardwatch sim home --config gateway.toml --scenario sepsis``: a real agent with simulated devices."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from edge_agent.config import GatewayConfig, load_config
from edge_agent.errors import ConfigError
from simulators.clock import ClockError, SimClock, check_speed
from simulators.home import PHYSIOLOGY_KIND, run_home, uplink_relay_problem
from simulators.physiology import SCENARIOS
from simulators.physiology.faults import FaultKind


async def _serve(args: argparse.Namespace, config: GatewayConfig) -> None:
    clock = SimClock.starting_now(speed=args.speed)
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        async with asyncio.timeout(args.duration):
            await run_home(config, scenario=args.scenario, seed=args.seed, clock=clock, start_h=args.start_h)


def _run(args: argparse.Namespace) -> int:
    try:
        check_speed(args.speed)
        config = load_config(args.config)
    except (ConfigError, ClockError) as exc:
        print(exc, file=sys.stderr)
        return 2
    unsimulated = [d.id for d in config.devices if d.kind not in PHYSIOLOGY_KIND]
    if unsimulated:
        print(
            f"{args.config}: devices {', '.join(unsimulated)} have kinds with no simulator", file=sys.stderr
        )
        return 2
    outages = any(fault.kind is FaultKind.UPLINK_DOWN for fault in SCENARIOS[args.scenario].faults)
    problem = uplink_relay_problem(config.broker.url) if outages else None
    if problem is not None:
        print(f"{args.config}: {problem}", file=sys.stderr)
        return 2
    with contextlib.suppress(TimeoutError):  # --duration elapsed
        asyncio.run(_serve(args, config))
    return 0


def register_subcommand(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "home",
        help="run a real edge agent against simulated devices following a patient scenario",
        description=(
            "Run the edge agent with the given gateway.toml, its devices replaced by simulators that speak "
            "the real protocols (BLE GATT bytes, serial lines on pseudo-terminals) and follow a patient "
            "scenario on a simulated clock. A scenario that takes the uplink down (uplink_loss) cuts the "
            "agent's broker connection, which it relays through loopback, for each outage."
        ),
    )
    parser.add_argument("--config", required=True, help="gateway.toml of the simulated home")
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start-h", type=float, default=0.0, help="join the scenario this many hours in")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many real seconds")
    parser.set_defaults(run=_run)
