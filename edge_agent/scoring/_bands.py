"""Score bands as data: ascending cut points and the score of each band, looked up for whole arrays.

A chart prints whole-number (or 0.1 C) ranges such as "51-90" and "91-110". A measured value between two
printed steps is rounded half-up to the chart's resolution, which is the same as cutting at the half-step:
the cut point between 90 and 91 is 90.5, and a value *equal* to a cut point belongs to the band above.
Comparing against the cut points is exact for every float; ``np.round`` is not (``np.round(36.05, 1)`` is
36.0 because 36.05 is stored as 36.04999...).

:func:`band_index` is ``np.searchsorted(cuts, values, side="right")`` with one extra bin for NaN (missing).
It sums one comparison per cut point instead of calling ``np.searchsorted``, which for the three to six cut
points of a clinical chart is about five times faster on large arrays (see docs/benchmarks.md); the tests
check that both give the same bins.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

MISSING: Final = -1
"""The score recorded for a parameter whose input is missing (NaN)."""

FloatArray = NDArray[np.float64]
ScoreArray = NDArray[np.int8]
_T = TypeVar("_T", bound=np.generic)

FALSE: Final = 0
TRUE: Final = 1
UNKNOWN: Final = 2
"""Codes of a tri-state input such as ``on_oxygen`` or ``alert``."""


def band_index(values: FloatArray, cuts: FloatArray) -> NDArray[np.int8]:
    """How many cut points are <= each value; ``len(cuts) + 1`` where the value is NaN.

    ``values`` must be one-dimensional float64; ``cuts`` ascending, at most 120 of them.
    """
    index = np.isnan(values).view(np.int8)  # a fresh array that we own
    np.multiply(index, len(cuts) + 1, out=index)
    above = np.empty(values.shape, dtype=np.bool_)
    for cut in cuts:
        np.greater_equal(values, cut, out=above)
        np.add(index, above.view(np.int8), out=index)
    return index


@dataclass(frozen=True)
class Bands:
    """One parameter of a chart: ``scores[i]`` is the score between ``cuts[i-1]`` and ``cuts[i]``.

    ``cuts`` are the half-step cut points (a value equal to a cut point scores in the band above);
    ``scores`` has one more item than ``cuts``. NaN scores :data:`MISSING`.
    """

    name: str
    cuts: tuple[float, ...]
    scores: tuple[int, ...]
    _cuts: FloatArray = field(init=False, repr=False, compare=False)
    _steps: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.scores) != len(self.cuts) + 1:
            raise ValueError(f"{self.name}: {len(self.cuts)} cut points need {len(self.cuts) + 1} scores")
        if any(b <= a for a, b in zip(self.cuts, self.cuts[1:], strict=False)):
            raise ValueError(f"{self.name}: cut points must be strictly ascending")
        object.__setattr__(self, "_cuts", np.array(self.cuts, dtype=np.float64))
        steps = tuple(after - before for before, after in zip(self.scores, self.scores[1:], strict=False))
        object.__setattr__(self, "_steps", steps)

    def score(self, values: FloatArray) -> ScoreArray:
        """The score of each value (int8), :data:`MISSING` where the value is NaN.

        Equivalent to ``scores[searchsorted(cuts, values, side="right")]``, computed as the first band's
        score plus the step at every cut point the value has reached: one comparison and one or more int8
        additions per cut point, and no index array (see docs/benchmarks.md for why).
        """
        result = np.full(values.shape, self.scores[0], dtype=np.int8)
        reached = np.empty(values.shape, dtype=np.bool_)
        steps = reached.view(np.int8)
        for cut, step in zip(self.cuts, self._steps, strict=True):
            np.greater_equal(values, cut, out=reached)  # False for NaN
            add = np.add if step > 0 else np.subtract
            for _ in range(abs(step)):
                add(result, steps, out=result)
        missing = np.isnan(values)
        if missing.any():
            result[missing] = MISSING
        return result

    def score_one(self, value: float) -> int:
        """The score of a single value (:data:`MISSING` for NaN), in plain Python for per-reading use."""
        if math.isnan(value):
            return MISSING
        return self.scores[bisect_right(self.cuts, value)]


@dataclass(frozen=True)
class CombinedBands:
    """Several band tables over the same input, chosen per row by a table number.

    All tables share the union of their cut points, so one :func:`band_index` pass serves every row;
    the score is then read from a flat ``(tables, bins)`` lookup.
    """

    tables: Sequence[Sequence[int]]
    cuts: FloatArray

    @classmethod
    def build(cls, tables: Sequence[Bands | Sequence[Bands]]) -> CombinedBands:
        """Each entry is one table; a sequence of tables means "the score they agree on, else missing"."""
        groups = [entry if isinstance(entry, Sequence) else (entry,) for entry in tables]
        union = sorted({cut for group in groups for bands in group for cut in bands.cuts})
        representatives = [union[0] - 1.0, *union]  # a value inside each bin of the union
        rows = []
        for group in groups:
            row = []
            for value in representatives:
                candidates = {bands.score_one(value) for bands in group}
                row.append(candidates.pop() if len(candidates) == 1 else MISSING)
            rows.append((*row, MISSING))  # the NaN bin
        return cls(tables=rows, cuts=np.array(union, dtype=np.float64))

    def score(self, values: FloatArray, table: NDArray[np.int8]) -> ScoreArray:
        """The score of each value under the table numbered by ``table`` (same shape as ``values``)."""
        width = len(self.cuts) + 2
        position = band_index(values, self.cuts)
        if len(self.tables) * width <= np.iinfo(np.int8).max:
            position += table * np.int8(width)  # stays int8: one small index array
        else:  # pragma: no cover - no chart has that many cut points
            position = position.astype(np.intp) + table.astype(np.intp) * width
        result: ScoreArray = self._lookup.take(position)
        return result

    @property
    def _lookup(self) -> ScoreArray:
        return np.array(self.tables, dtype=np.int8).reshape(-1)


# --------------------------------------------------------------------------------------------------
# Input conversion shared by the scores


def as_vital(value: ArrayLike, name: str) -> FloatArray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers (NaN or None where missing): {exc}") from None
    return array


def tri_state(value: ArrayLike | None, name: str) -> NDArray[np.int8]:
    """0 false, 1 true, 2 unknown (NaN or None)."""
    array = np.asarray(value)
    if array.dtype == np.bool_:
        return array.view(np.int8)
    try:
        if array.dtype == np.object_:
            items = [np.nan if item is None else item for item in array.reshape(-1)]
            numbers = np.array(items, dtype=np.float64).reshape(array.shape)
        else:
            numbers = array.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be booleans (NaN or None where unknown)") from None
    unknown = np.isnan(numbers)
    if not np.all(unknown | (numbers == 0) | (numbers == 1)):
        raise ValueError(f"{name} must be True/False (or 1/0), NaN or None where unknown")
    codes: NDArray[np.int8] = np.where(unknown, UNKNOWN, numbers).astype(np.int8)
    return codes


def flat(array: NDArray[_T], shape: tuple[int, ...]) -> NDArray[_T]:
    """``array`` broadcast to ``shape`` and made one-dimensional (no copy when it already has it)."""
    if array.shape == shape:
        return array.reshape(-1)
    return np.broadcast_to(array, shape).reshape(-1)
