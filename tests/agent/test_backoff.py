from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.backoff import Backoff


@given(st.integers(0, 2**32), st.floats(0.01, 5), st.floats(5, 300))
def test_delays_grow_are_jittered_and_capped(seed: int, initial: float, maximum: float) -> None:
    backoff = Backoff(initial_s=initial, maximum_s=maximum, rng=random.Random(seed))
    delays = [backoff.next_delay() for _ in range(40)]
    for attempt, delay in enumerate(delays):
        ceiling = min(maximum, initial * 2**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= maximum


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(initial_s=1, maximum_s=60, rng=random.Random(1))
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 1


def test_nonsense_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(initial_s=0)
    with pytest.raises(ValueError, match="multiplier"):
        Backoff(multiplier=0.5)
