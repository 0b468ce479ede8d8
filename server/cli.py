"""``wardwatch server``: run one server worker; ``wardwatch server token create|list|revoke``.

::

    wardwatch server --config server.toml
    WARDWATCH_SERVER_DATABASE__URL=postgresql+asyncpg://... wardwatch server
    wardwatch server check --config server.toml      validate the configuration and exit
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import ConfigError

if TYPE_CHECKING:
    from server.process import WorkerSettings


def register_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "server",
        help="run a WardWatch server worker (ingest, escalation, REST API)",
        description=(
            "Run one server worker: migrate the database, consume gateway traffic from the broker, "
            "escalate, publish to the command center and serve the REST API. Stops cleanly on SIGTERM."
        ),
    )
    parser.add_argument("--config", type=Path, default=None, help="server.toml (default: environment only)")
    parser.add_argument(
        "--log-format", choices=["json", "text"], default=None, help="override the configured log format"
    )
    parser.set_defaults(run=_run)
    actions = parser.add_subparsers(title="server commands", metavar="ACTION", required=False)
    check = actions.add_parser("check", help="validate the configuration and exit")
    check.add_argument("--config", type=Path, default=None, help="server.toml")
    check.set_defaults(run=_run_check)
    from server.auth import register_token_command

    register_token_command(actions)


def _load(config: Path | None) -> WorkerSettings:
    from server.process import WorkerSettings

    return WorkerSettings.load(config)


def _run_check(args: argparse.Namespace) -> int:
    try:
        settings = _load(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    where = args.config or "the environment"
    print(
        f"{where}: OK: worker {settings.worker_id}, broker {settings.broker.url}, "
        f"{len(settings.webhooks)} webhook(s), API on {settings.api.host}:{settings.api.port}"
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from server.process import configure_logging, serve_until_signalled

    try:
        settings = _load(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging(args.log_format or settings.log_format, getattr(args, "log_level", "INFO"))
    asyncio.run(serve_until_signalled(settings))
    return 0
