"""``wardwatch sim``: the simulators' command group.

Registered as the ``sim`` entry point of ``wardwatch.commands``. Each simulator adds its own subcommand
through a function in :data:`SUBCOMMANDS` (``register(subparsers)``, the same shape as a top-level
command); to add one, write its register function and append an entry here, e.g.
``"home": "simulators.home_cli:register_subcommand"``. Subcommand modules are imported only when
``wardwatch`` builds its parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Final, TypeAlias

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Register: TypeAlias = Callable[[SubParsers], None]

SUBCOMMANDS: Final[Mapping[str, str]] = {
    "fleet": "simulators.fleet.command:register_subcommand",
    "home": "simulators.home_cli:register_subcommand",
}
"""Subcommand name -> ``module:function`` that adds it to the ``sim`` subparsers."""


def _load(target: str) -> Register:
    module_name, _, function = target.partition(":")
    register: Register = getattr(import_module(module_name), function)
    return register


def register_command(subparsers: SubParsers) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="simulators: load from a fleet of gateways, simulated homes",
        description="Simulators that speak the real protocols, for development, demos and load tests.",
    )
    simulators = parser.add_subparsers(title="simulators", metavar="SIMULATOR", required=True)
    for name in sorted(SUBCOMMANDS):
        _load(SUBCOMMANDS[name])(simulators)
