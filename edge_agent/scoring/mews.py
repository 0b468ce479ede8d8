"""MEWS, the Modified Early Warning Score (Subbe et al., QJM 2001;94:521-526), vectorised like NEWS2.

=================  =====  =====  ======  =======  =======  =======  =====
score               3      2      1       0        1        2        3
=================  =====  =====  ======  =======  =======  =======  =====
systolic BP mmHg   <=70   71-80  81-100  101-199           >=200
pulse /min                <=40   41-50   51-100   101-110  111-129  >=130
respiration /min          <9             9-14     15-20    21-29    >=30
temperature C             <35            35-38.4           >=38.5
AVPU                                     A        V        P        U
=================  =====  =====  ======  =======  =======  =======  =====

The published table leaves exactly 70 mmHg and exactly 40 /min unassigned ("<70", "<40"); WardWatch scores
them with the band below (3 and 2), as most reproductions of the table do. MEWS has no "new confusion"
level; WardWatch scores ACVPU "C" like "V" (1), the lowest not-alert level. A total of 5 or more was
associated with death and ICU admission in Subbe's validation (``at_risk``).

Half-step cut points as in NEWS2 (70.5, 80.5, ... mmHg; 34.95 and 38.45 C). NaN, ``None`` or an empty
string is missing: -1 in ``components``, nothing added to ``total``, ``complete`` False.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge_agent.protocol import Consciousness
from edge_agent.scoring._bands import MISSING, Bands, ScoreArray, as_vital, flat

__all__ = [
    "AVPU_SCORES",
    "MEWS_AT_RISK",
    "MEWS_PARAMETERS",
    "PULSE",
    "RESPIRATION",
    "SYSTOLIC_BP",
    "TEMPERATURE",
    "MewsResult",
    "mews",
]

MEWS_PARAMETERS: Final = ("systolic_bp", "pulse", "respiration", "temperature", "consciousness")
SYSTOLIC_BP: Final = Bands("mews systolic bp", cuts=(70.5, 80.5, 100.5, 199.5), scores=(3, 2, 1, 0, 2))
PULSE: Final = Bands("mews pulse", cuts=(40.5, 50.5, 100.5, 110.5, 129.5), scores=(2, 1, 0, 1, 2, 3))
RESPIRATION: Final = Bands("mews respiration", cuts=(8.5, 14.5, 20.5, 29.5), scores=(2, 0, 1, 2, 3))
TEMPERATURE: Final = Bands("mews temperature", cuts=(34.95, 38.45), scores=(2, 0, 2))
AVPU_SCORES: Final = {
    Consciousness.ALERT: 0,
    Consciousness.CONFUSION: 1,
    Consciousness.VOICE: 1,
    Consciousness.PAIN: 2,
    Consciousness.UNRESPONSIVE: 3,
}
MEWS_AT_RISK: Final = 5


@dataclass(frozen=True, eq=False)
class MewsResult:
    total: NDArray[np.int64]
    components: ScoreArray
    """Shape ``(..., 5)`` in :data:`MEWS_PARAMETERS` order; -1 where missing."""
    at_risk: NDArray[np.bool_]
    """total >= 5."""
    complete: NDArray[np.bool_]


def _consciousness_scores(value: ArrayLike | None) -> ScoreArray:
    array = np.asarray(value, dtype=object)
    scores = np.full(array.shape, MISSING, dtype=np.int8)
    known = np.zeros(array.shape, dtype=np.bool_)
    for level, score in AVPU_SCORES.items():
        match = np.asarray(array == str(level), dtype=np.bool_)
        scores[match] = score
        known |= match
    absent = np.asarray((array == None) | (array == ""), dtype=np.bool_)  # noqa: E711 - elementwise
    if not np.all(known | absent):
        unknown = sorted({repr(item) for item in array[~(known | absent)].reshape(-1)[:5]})
        raise ValueError(f"consciousness must be one of A, C, V, P, U (or None), got {', '.join(unknown)}")
    return scores


def mews(
    *,
    systolic_bp: ArrayLike,
    pulse: ArrayLike,
    respiratory_rate: ArrayLike,
    temperature: ArrayLike,
    consciousness: ArrayLike | None,
) -> MewsResult:
    """MEWS for one or many observation sets; ``consciousness`` is ACVPU letters or Consciousness."""
    vitals = (
        (SYSTOLIC_BP, as_vital(systolic_bp, "systolic_bp")),
        (PULSE, as_vital(pulse, "pulse")),
        (RESPIRATION, as_vital(respiratory_rate, "respiratory_rate")),
        (TEMPERATURE, as_vital(temperature, "temperature")),
    )
    avpu = _consciousness_scores(consciousness)
    try:
        shape = np.broadcast_shapes(*(values.shape for _, values in vitals), avpu.shape)
    except ValueError as exc:
        raise ValueError(f"the inputs cannot be broadcast to one shape: {exc}") from None
    size = int(np.prod(shape, dtype=np.int64))
    components = np.empty((len(MEWS_PARAMETERS), size), dtype=np.int8)
    for row, (bands, values) in enumerate(vitals):
        components[row] = bands.score(flat(values, shape))
    components[len(vitals)] = flat(avpu, shape)
    missing = np.less(components, 0).sum(axis=0, dtype=np.int8)
    total = components.sum(axis=0, dtype=np.int8) + missing
    return MewsResult(
        total=total.astype(np.int64).reshape(shape),
        components=components.T.reshape((*shape, len(MEWS_PARAMETERS))),
        at_risk=(total >= MEWS_AT_RISK).reshape(shape),
        complete=(missing == 0).reshape(shape),
    )
