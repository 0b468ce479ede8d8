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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every registered command, or only with ``only`` (so that running one command
    does not import every other command's dependencies: the server's database stack is not needed to
    check a gateway's configuration)."""
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
    entries = sorted(entry_points(group="wardwatch.commands"), key=lambda e: e.name)
    if only is not None and any(entry.name == only for entry in entries):
        entries = [entry for entry in entries if entry.name == only]
    for entry in entries:
        register: Register = entry.load()
        register(subparsers)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The subcommand in ``argv`` (the first word that is not an option or an option's value)."""
    words = list(argv)
    while words:
        word = words.pop(0)
        if word == "--log-level":
            words = words[1:]
        elif not word.startswith("-"):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_named(arguments))
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiosqlite logs SQL parameters at DEBUG, which can include a patient's display name on the server.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLevelName(args.log_level)))
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
