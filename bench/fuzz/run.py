"""Fuzz every parser and ingest path: ``python -m bench.fuzz --cases 100000 [--target NAME ...]``.

Targets run one after the other in this process (one core). For each target the runner prints the
cases run, the distinct outcomes (accepted, round-trip, each error class or dead-letter reason), the
failures and the time; on a failure it prints the failing case (shrunk to a minimal one for stateless
targets) and the command that repeats the run. Exit status 1 when any target failed.

``--target`` takes target names or group names (drivers, contract, agent, ingest); ``--list`` shows
them. The ingest target uses a fresh SQLite file unless ``--database-url`` names a PostgreSQL server
database to create a scratch database in (``postgresql+asyncpg://user@host:port/postgres``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
from pathlib import Path

from bench.fuzz.harness import Result, Target, run_target


def all_targets(database_url: str | None = None) -> list[Target]:
    from bench.fuzz import targets_agent, targets_contract, targets_drivers, targets_ingest

    return [
        *targets_drivers.targets(),
        *targets_contract.targets(),
        *targets_agent.targets(),
        *targets_ingest.targets(database_url),
    ]


def select(targets: list[Target], names: list[str]) -> list[Target]:
    if not names:
        return targets
    known = {t.name for t in targets} | {t.group for t in targets}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"unknown target(s): {', '.join(unknown)}; see --list")
    return [t for t in targets if t.name in names or t.group in names]


def report(result: Result, cases: int, argv_target: str, *, stateless: bool = True) -> None:
    outcomes = ", ".join(f"{label} {count}" for label, count in result.outcomes.most_common())
    status = "ok" if result.failures == 0 else "FAILED"
    print(
        f"{result.target:<24} {status:<6} cases {result.cases:>7}  failures {result.failures}  "
        f"{result.seconds:7.1f} s  outcomes: {outcomes}",
        flush=True,
    )
    if result.note:
        print(f"    note: {result.note}")
    if result.failures:
        # Stateless targets: hypothesis shrank the failure, the last one is minimal. Stateful ones (a
        # database): the first failure is the real one, later ones may follow from it.
        failure = (result.minimal_failure if stateless else None) or result.first_failure
        assert failure is not None
        print(f"    {'minimal' if stateless else 'first'} failing case: {failure.case}")
        print("    " + failure.error.replace("\n", "\n    "))
        print(
            f"    repeat: .venv/bin/python -m bench.fuzz --target {argv_target} --cases {cases} "
            f"--seed {result.seed}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="cases per target (default 100000)")
    parser.add_argument("--target", nargs="*", default=[], help="target or group names (default: all)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random, printed)")
    parser.add_argument("--database-url", default=None, help="PostgreSQL server for the ingest target")
    parser.add_argument("--json", type=Path, default=None, help="append one JSON line per target here")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    args = parser.parse_args(argv)

    # The code under test logs every dead letter and refusal; a million log lines would only slow the run.
    # Process-wide, so it is undone on the way out (the test suite calls main() in its own process).
    logging.disable(logging.CRITICAL)
    try:
        return _run(args)
    finally:
        logging.disable(logging.NOTSET)


def _run(args: argparse.Namespace) -> int:
    targets = select(all_targets(args.database_url), args.target)
    if args.list:
        for target in targets:
            print(f"{target.name:<24} {target.group:<9} {target.doc}")
        return 0
    failed = 0
    for target in targets:
        seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
        result = run_target(target, args.cases, seed, progress=10_000 if args.cases >= 50_000 else 0)
        report(result, args.cases, target.name, stateless=target.stateless)
        failed += result.failures > 0
        if args.json is not None:
            with args.json.open("a", encoding="utf-8") as out:
                out.write(json.dumps(result.as_dict() | {"requested": args.cases, "pid": os.getpid()}) + "\n")
    print(f"{len(targets)} targets, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
