"""Capped exponential backoff with jitter, for reconnects and device restarts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True, kw_only=True)
class Backoff:
    """Delays ``initial_s * multiplier**n`` capped at ``maximum_s``, each drawn uniformly from its upper
    half (so retries from many gateways spread out but never fire at once after a broker restart)."""

    initial_s: float = 1.0
    maximum_s: float = 60.0
    multiplier: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.maximum_s:
            raise ValueError("backoff needs 0 < initial_s <= maximum_s")
        if self.multiplier < 1:
            raise ValueError("backoff multiplier must be >= 1")

    def next_delay(self) -> float:
        ceiling = min(self.maximum_s, self.initial_s * self.multiplier ** min(self.attempts, 64))
        self.attempts += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempts = 0
