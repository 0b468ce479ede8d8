"""The ``wardwatch`` console command.

Subcommands are registered by the package that owns them through the ``wardwatch.commands`` entry-point
group (see pyproject.toml), so this module imports nothing from the server or the simulators. Each entry
point is a function ``register(subparsers)`` that adds one subparser and sets its ``run`` default to a
function taking the parsed arguments and returning an exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from edge_agent import __version__

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardwatch",
        description="WardWatch remote patient monitoring: edge agent, server, simulators and tools.",
    )
    parser.add_argument("--version", action="version", version=f"wardwatch {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level for messages on stderr (default: INFO)",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for entry in sorted(entry_points(group="wardwatch.commands"), key=lambda e: e.name):
        register: Register = entry.load()
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
