"""``wardwatch agent [check] --config gateway.toml``: run the edge agent, or only validate its config."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from edge_agent.config import GatewayConfig, load_config
from edge_agent.errors import ConfigError

log = logging.getLogger(__name__)


async def _serve(config: GatewayConfig) -> None:
    from edge_agent.devices import real_device
    from edge_agent.service import Agent
    from edge_agent.systemd import Notifier

    notifier = Notifier()
    agent = Agent(config, device_factory=real_device, notifier=notifier)
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    try:
        await agent.run()
    except asyncio.CancelledError:
        notifier.stopping()
        log.info("agent stopped")


def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from edge_agent.devices import unsupported_devices

    unsupported = unsupported_devices(list(config.devices))
    if unsupported:
        for device in unsupported:
            print(
                f"{args.config}: devices: {device.id}: kind {device.kind} has no driver on a real gateway"
                "\n  fix: remove it, or run this configuration under `wardwatch sim home`",
                file=sys.stderr,
            )
        return 2
    unreadable = [
        (name, path)
        for name in ("ca_file", "cert_file", "key_file")
        if (path := getattr(config.broker, name)) is not None and not os.access(path, os.R_OK)
    ]
    for name, path in unreadable:
        print(
            f"{args.config}: broker.{name}: {path} does not exist or is not readable by this user"
            "\n  fix: install the file (docs/operations.md, Certificates) or correct the path",
            file=sys.stderr,
        )
    if unreadable:
        return 2
    if args.action == "check":
        print(
            f"{args.config}: OK: gateway {config.gateway_id}, {len(config.patients)} patient(s), "
            f"{len(config.devices)} device(s), broker {config.broker.url}"
        )
        return 0
    asyncio.run(_serve(config))
    return 0


def register_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "agent",
        help="run the edge agent (or `agent check` to validate its configuration)",
        description="Run the WardWatch edge agent on a home gateway, or validate its configuration.",
    )
    parser.add_argument("action", nargs="?", choices=["run", "check"], default="run")
    parser.add_argument("--config", required=True, help="path to gateway.toml")
    parser.set_defaults(run=_run)
