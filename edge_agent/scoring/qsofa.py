"""qSOFA (Singer et al., JAMA 2016;315(8):801-810, Sepsis-3), vectorised like :func:`~.news2.news2`.

One point each for respiratory rate >= 22 /min, systolic blood pressure <= 100 mmHg and altered mentation
(here: not alert, i.e. new confusion, voice, pain or unresponsive; Sepsis-3 says GCS < 15). A total of 2 or
more is positive: the patient with suspected infection is at risk of a poor outcome.

Cut points are at half-steps like NEWS2 (21.5 /min, 100.5 mmHg). NaN (or ``None`` for ``alert``) is
missing: that criterion is -1 in ``criteria``, the total counts the criteria that are present, and
``positive`` is True as soon as two present criteria are met (it cannot be undone by the missing one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge_agent.scoring._bands import MISSING, Bands, ScoreArray, as_vital, flat, tri_state

__all__ = ["QSOFA_CRITERIA", "QSOFA_POSITIVE", "RESPIRATORY_RATE", "SYSTOLIC_BP", "QsofaResult", "qsofa"]

QSOFA_CRITERIA: Final = ("respiratory_rate", "systolic_bp", "altered_mentation")
RESPIRATORY_RATE: Final = Bands("qsofa respiratory rate", cuts=(21.5,), scores=(0, 1))
"""Respiratory rate >= 22 /min: 1."""
SYSTOLIC_BP: Final = Bands("qsofa systolic bp", cuts=(100.5,), scores=(1, 0))
"""Systolic blood pressure <= 100 mmHg: 1."""
QSOFA_POSITIVE: Final = 2
_MENTATION_TABLE: Final = np.array((1, 0, MISSING), dtype=np.int8)  # by alert: False, True, unknown


@dataclass(frozen=True, eq=False)
class QsofaResult:
    total: NDArray[np.int64]
    criteria: ScoreArray
    """Shape ``(..., 3)`` in :data:`QSOFA_CRITERIA` order: 1 met, 0 not met, -1 missing."""
    positive: NDArray[np.bool_]
    """total >= 2."""
    complete: NDArray[np.bool_]


def qsofa(*, respiratory_rate: ArrayLike, systolic_bp: ArrayLike, alert: ArrayLike | None) -> QsofaResult:
    """qSOFA for one or many patients; inputs broadcast like numpy operands."""
    rate = as_vital(respiratory_rate, "respiratory_rate")
    pressure = as_vital(systolic_bp, "systolic_bp")
    alertness = tri_state(alert, "alert")
    try:
        shape = np.broadcast_shapes(rate.shape, pressure.shape, alertness.shape)
    except ValueError as exc:
        raise ValueError(f"the inputs cannot be broadcast to one shape: {exc}") from None
    size = int(np.prod(shape, dtype=np.int64))
    criteria = np.empty((len(QSOFA_CRITERIA), size), dtype=np.int8)
    criteria[0] = RESPIRATORY_RATE.score(flat(rate, shape))
    criteria[1] = SYSTOLIC_BP.score(flat(pressure, shape))
    criteria[2] = _MENTATION_TABLE.take(flat(alertness, shape))
    met = np.equal(criteria, 1).sum(axis=0, dtype=np.int8)
    return QsofaResult(
        total=met.astype(np.int64).reshape(shape),
        criteria=criteria.T.reshape((*shape, len(QSOFA_CRITERIA))),
        positive=(met >= QSOFA_POSITIVE).reshape(shape),
        complete=np.all(criteria >= 0, axis=0).reshape(shape),
    )
