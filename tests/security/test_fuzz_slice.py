"""A small slice of the fuzz run (bench/fuzz, issue 9) on every target, so the harness cannot rot.

The full run is ``.venv/bin/python -m bench.fuzz --cases 100000`` (docs/benchmarks.md, "Fuzzing");
here each target runs a few hundred cases (the database targets a few dozen), with a random seed that a
failure prints together with the command that repeats it.
"""

from __future__ import annotations

import logging
import os
import random

import pytest
from hypothesis import strategies as st

from bench.fuzz import run
from bench.fuzz.harness import Result, Target, no_setup, require, run_target

TARGETS = {target.name: target for target in run.all_targets()}
SLICE = {"ingest_sqlite": 40, "ingest_postgresql": 20, "agent_commands": 100, "masimo_stream": 100}
DEFAULT_SLICE = 200


def _failure_report(result: Result, cases: int) -> str:
    failure = result.minimal_failure or result.first_failure
    assert failure is not None
    return (
        f"{result.target} failed on {failure.case}\n{failure.error}\nrepeat: .venv/bin/python -m bench.fuzz "
        f"--target {result.target} --cases {cases} --seed {result.seed}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_holds_its_oracle_on_a_slice(name: str) -> None:
    target = TARGETS[name]
    cases = SLICE.get(name, DEFAULT_SLICE)
    if name == "ingest_postgresql":
        _require_postgres()
    result = run_target(target, cases, random.SystemRandom().randrange(2**32))
    assert result.failures == 0, _failure_report(result, cases)
    assert result.cases >= cases and sum(result.outcomes.values()) >= cases


def _require_postgres() -> None:
    import asyncio

    from bench.fuzz.targets_ingest import POSTGRES_ADMIN_URL, _admin

    try:
        asyncio.run(_admin(POSTGRES_ADMIN_URL, "SELECT 1"))
    except Exception as exc:  # unreachable, refused: no PostgreSQL here
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is not usable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_a_failing_oracle_is_reported_with_a_shrunk_case() -> None:
    def check(data: bytes) -> str:
        require(b"\x07" not in data, "found the byte 7")
        return "accepted"

    broken = Target("broken", "test", st.binary(max_size=40), no_setup(check))
    result = run_target(broken, 2000, seed=1)
    assert result.failures >= 1
    assert result.minimal_failure is not None and result.minimal_failure.case == repr(b"\x07")
    assert "OracleViolation: found the byte 7" in result.minimal_failure.error


def test_an_unexpected_exception_in_a_derived_case_is_a_failure() -> None:
    def check(data: bytes) -> str:
        if len(data) > 30:
            raise IndexError("a parser bug")
        return "accepted"

    def derive(data: bytes, rnd: random.Random) -> bytes:
        return data + bytes(rnd.randrange(40))

    target = Target("derived", "test", st.binary(max_size=4), no_setup(check), derive=derive, fanout=5)
    result = run_target(target, 500, seed=2)
    assert result.failures >= 1 and result.first_failure is not None
    assert "IndexError: a parser bug" in result.first_failure.error


def test_the_runner_exits_non_zero_only_on_failure(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["--cases", "40", "--target", "ieee11073", "contract_topics", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "ieee11073" in out and "contract_topics" in out and "2 targets, 0 failed" in out
    assert run.main(["--list"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(TARGETS)
    with pytest.raises(SystemExit, match="unknown target"):
        run.main(["--target", "no_such_target"])
    assert logging.root.manager.disable == logging.NOTSET  # the runner's silence ends with it
