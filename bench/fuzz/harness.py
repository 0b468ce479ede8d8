"""The fuzz harness: a target is a hypothesis strategy plus an oracle; the runner counts outcomes.

A target's ``check`` takes one generated case and returns a short outcome label ("accepted", the name of
the documented error class, a dead-letter reason, ...). Anything else it does is a failure: an exception
that is not the documented one, or an :class:`OracleViolation` raised by the check itself (a round trip
that does not hold, an error message that does not say what and where, a half-written message in the
database). The runner drives each target with hypothesis under the ``wardwatch-fuzz`` settings profile
(``max_examples`` = the case count, no deadline, no example database, random seed printed), shrinks a
failure where the target allows it (stateless targets), and reports cases, outcomes, failures and time.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

Check = Callable[[Any], "str | list[str]"]


class OracleViolation(AssertionError):
    """The target's oracle does not hold for this case."""


def require(condition: object, message: str) -> None:
    if not condition:
        raise OracleViolation(message)


def no_setup(check: Check) -> Callable[[], contextlib.AbstractContextManager[Check]]:
    @contextlib.contextmanager
    def opened() -> Iterator[Check]:
        yield check

    return opened


@dataclass(frozen=True)
class Target:
    name: str
    group: str
    """drivers, contract, agent or ingest: ``--target`` accepts a group name too."""
    strategy: st.SearchStrategy[Any]
    open: Callable[[], contextlib.AbstractContextManager[Check]]
    """Sets up whatever the check needs (a database, a temporary directory) and yields the check."""
    describe: Callable[[Any], str] = repr
    """Renders a case as a reproducer."""
    stateless: bool = True
    """Stateless targets are shrunk on failure; stateful ones (a database) report the failing case as is."""
    doc: str = ""
    derive: Callable[[Any, random.Random], Any] | None = None
    """Makes a further case from the example and a random source (mutations in plain Python, far cheaper
    than a hypothesis draw); with it each hypothesis example runs ``fanout`` cases: the example itself,
    then ``fanout - 1`` derived ones."""
    fanout: int = 1


@dataclass
class Failure:
    case: str
    error: str


@dataclass
class Result:
    target: str
    cases: int = 0
    examples: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    first_failure: Failure | None = None
    minimal_failure: Failure | None = None
    seconds: float = 0.0
    seed: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "cases": self.cases,
            "hypothesis_examples": self.examples,
            "outcomes": dict(self.outcomes.most_common()),
            "failures": self.failures,
            "seconds": round(self.seconds, 1),
            "seed": self.seed,
            "first_failure": None if self.first_failure is None else vars(self.first_failure),
            "minimal_failure": None if self.minimal_failure is None else vars(self.minimal_failure),
            "note": self.note,
        }


def fuzz_settings(cases: int, *, shrink: bool) -> settings:
    """The ``wardwatch-fuzz`` profile for ``cases`` examples."""
    phases = [Phase.generate, Phase.shrink] if shrink else [Phase.generate]
    return settings(
        max_examples=cases,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        phases=phases,
        report_multiple_bugs=False,
        print_blob=False,
    )


settings.register_profile("wardwatch-fuzz", fuzz_settings(100_000, shrink=True))


def run_target(target: Target, cases: int, seed: int, *, progress: int = 0) -> Result:
    """Run ``cases`` cases of ``target``; never raises for a failing case. With ``progress``, print a
    line every that many cases (long runs)."""
    result = Result(target=target.name, seed=seed)
    started = time.perf_counter()
    shown = [started]  # when progress was last printed (at most once a minute)
    with target.open() as check:

        def one_case(case: Any) -> None:
            result.cases += 1
            if progress and result.cases % progress == 0 and time.perf_counter() - shown[0] > 60:
                shown[0] = time.perf_counter()
                elapsed = shown[0] - started
                print(f"  … {target.name}: {result.cases} cases, {elapsed:.0f} s, no failure yet", flush=True)
            try:
                label = check(case)
            except Exception as exc:
                result.failures += 1
                detail = "".join(traceback.format_exception(exc, limit=-4)).rstrip()
                failure = Failure(case=_clip(target.describe(case)), error=_clip(detail, 4000))
                if result.first_failure is None:
                    result.first_failure = failure
                result.minimal_failure = failure
                raise
            if isinstance(label, str):
                result.outcomes[label] += 1
            else:  # one label per part of the case (e.g. per message of an ingest batch)
                result.outcomes.update(label)

        def one_example(example: Any) -> None:
            result.examples += 1
            if target.derive is None:
                one_case(example)
                return
            base, rnd_seed = example
            rnd = random.Random(rnd_seed)
            one_case(base)
            for _ in range(target.fanout - 1):
                one_case(target.derive(base, rnd))

        strategy = target.strategy
        examples = cases
        if target.derive is not None:
            strategy = st.tuples(target.strategy, st.integers(0, 2**64 - 1))
            examples = max(1, math.ceil(cases / target.fanout))
        test = hypothesis_seed(seed)(
            fuzz_settings(examples, shrink=target.stateless)(given(strategy)(one_example))
        )
        try:
            test()
        except Exception as exc:
            if result.failures == 0:  # hypothesis itself gave up (e.g. flaky): still a failure
                result.failures += 1
                result.first_failure = Failure(case="(none)", error=_clip(repr(exc)))
        finish = getattr(check, "finish", None)
        if finish is not None and result.failures == 0:  # a final whole-state check (ingest)
            try:
                finish()
            except Exception as exc:
                result.failures += 1
                detail = "".join(traceback.format_exception(exc, limit=-4)).rstrip()
                result.first_failure = Failure(
                    case="(final check after all cases)", error=_clip(detail, 4000)
                )
    result.seconds = time.perf_counter() - started
    return result


def _clip(text: str, limit: int = 2000) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"
