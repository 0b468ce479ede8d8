"""Latency percentiles in bounded memory: a log-bucketed histogram.

A soak run records millions of latencies; keeping them all would make the load generator's own memory
grow for the whole run. Buckets are 1 % wide (relative) from 10 µs to 1,000 s, so any percentile is
reported within 1 % of the exact value, in a fixed 1,852-bucket array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

LOWEST_S: Final = 1e-5
HIGHEST_S: Final = 1e3
GROWTH: Final = 1.01
_LOG_GROWTH: Final = math.log(GROWTH)
BUCKETS: Final = math.ceil(math.log(HIGHEST_S / LOWEST_S) / _LOG_GROWTH) + 1


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
        }


class LatencyHistogram:
    """Counts of latencies (seconds) in 1 % buckets; percentiles by nearest rank."""

    def __init__(self) -> None:
        self._counts: npt.NDArray[np.int64] = np.zeros(BUCKETS, dtype=np.int64)
        self.count = 0
        self.max_s = 0.0

    @staticmethod
    def bucket(seconds: float) -> int:
        if seconds <= LOWEST_S:
            return 0
        return min(BUCKETS - 1, 1 + int(math.log(seconds / LOWEST_S) / _LOG_GROWTH))

    @staticmethod
    def bucket_value(index: int) -> float:
        """The value reported for a bucket: the geometric middle of its bounds (within 0.5 % of any
        value in it)."""
        if index == 0:
            return LOWEST_S
        return float(LOWEST_S * GROWTH ** (index - 0.5))

    def record(self, seconds: float) -> None:
        if not math.isfinite(seconds) or seconds < 0:
            return
        self._counts[self.bucket(seconds)] += 1
        self.count += 1
        self.max_s = max(self.max_s, seconds)

    def merge(self, other: LatencyHistogram) -> None:
        self._counts += other._counts
        self.count += other.count
        self.max_s = max(self.max_s, other.max_s)

    def copy(self) -> LatencyHistogram:
        twin = LatencyHistogram()
        twin._counts = self._counts.copy()
        twin.count = self.count
        twin.max_s = self.max_s
        return twin

    def since(self, earlier: LatencyHistogram) -> LatencyHistogram:
        """What was recorded after ``earlier`` (a :meth:`copy` of this histogram taken before)."""
        window = LatencyHistogram()
        window._counts = self._counts - earlier._counts
        window.count = self.count - earlier.count
        if window.count < 0 or bool((window._counts < 0).any()):
            raise ValueError("since() needs an earlier copy of the same histogram")
        if window.count:
            highest = int(np.flatnonzero(window._counts)[-1])
            window.max_s = min(self.max_s, self.bucket_value(highest) * math.sqrt(GROWTH))
        return window

    def clear(self) -> None:
        self._counts[:] = 0
        self.count = 0
        self.max_s = 0.0

    def percentile(self, q: float) -> float | None:
        """The nearest-rank ``q``-th percentile in seconds (0 < q <= 100), None when empty."""
        if not 0 < q <= 100:
            raise ValueError("percentile must be in (0, 100]")
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        index = int(np.searchsorted(np.cumsum(self._counts), rank))
        return min(self.bucket_value(index), self.max_s)

    def summary(self) -> LatencySummary:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return LatencySummary(
            count=self.count,
            p50_ms=ms(self.percentile(50)),
            p95_ms=ms(self.percentile(95)),
            p99_ms=ms(self.percentile(99)),
            max_ms=ms(self.max_s) if self.count else None,
        )
