"""NEWS2 (Royal College of Physicians, 2017), scored for whole arrays of observation sets at once.

::

    res = news2(respiratory_rate=rr, spo2=sat, systolic_bp=sbp, pulse=hr, temperature=temp,
                on_oxygen=o2, alert=alert, spo2_scale=1)
    res.total        int64, sum of the components that are present
    res.components   int8 (..., 7) in NEWS2_PARAMETERS order, -1 where the input is missing
    res.risk         object array of Risk ("low", "low-medium", "medium", "high")
    res.risk_level   int8 0..3, the same risk as an ordered number
    res.complete     bool, all seven components present

Every input is a scalar or an array; they broadcast against each other like numpy operands and the results
have the broadcast shape (``components`` adds a trailing axis of 7). A scalar call gives 0-d arrays, so
``int(res.total)`` and ``str(res.risk)`` work.

Missing inputs:

* a vital sign that is NaN (or ``None``) scores -1 in ``components``, adds nothing to ``total`` and makes the
  set incomplete. The risk is still computed from the components that are present, so an incomplete set
  can be high risk but never looks complete.
* ``on_oxygen`` and ``alert`` are booleans; pass NaN or ``None`` (in a float or object array, or as a
  scalar) where they were not recorded. Unknown oxygen makes the air/oxygen component missing, and on
  SpO2 Scale 2 also the SpO2 component when SpO2 >= 93 % (there the score depends on the oxygen: 0 on air,
  1-3 on oxygen). WardWatch never guesses it: the agent always knows it from the patient's settings.
* ``spo2_scale`` must be 1 or 2 everywhere; anything else raises ``ValueError``.

Band edges are the chart's printed steps cut at the half-step (see :mod:`edge_agent.scoring._bands`):
36.05 C scores 0, 35.05 C scores 1, a pulse of 40.5 scores 1. +inf and -inf score as the extreme bands.
docs/scoring.md has the chart with its source.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

from edge_agent.protocol import NEWS2_PARAMETERS, Risk
from edge_agent.scoring._bands import (
    FALSE,
    MISSING,
    TRUE,
    UNKNOWN,
    Bands,
    CombinedBands,
    ScoreArray,
    as_vital,
    flat,
    tri_state,
)

__all__ = [
    "AIR_OR_OXYGEN_SCORES",
    "CONSCIOUSNESS_SCORES",
    "HIGH_RISK_TOTAL",
    "MEDIUM_RISK_TOTAL",
    "PULSE",
    "RESPIRATION",
    "RISKS",
    "SPO2_SCALE_1",
    "SPO2_SCALE_2_ON_AIR",
    "SPO2_SCALE_2_ON_OXYGEN",
    "SYSTOLIC_BP",
    "TEMPERATURE",
    "News2Result",
    "News2Set",
    "news2",
    "news2_one",
    "risk_from_total",
]

# The RCP NEWS2 chart (2017), chart 1 and chart 2, as half-step cut points.
RESPIRATION: Final = Bands("respiration", cuts=(8.5, 11.5, 20.5, 24.5), scores=(3, 1, 0, 2, 3))
"""Respiration rate per minute: <=8: 3, 9-11: 1, 12-20: 0, 21-24: 2, >=25: 3."""
SPO2_SCALE_1: Final = Bands("spo2 scale 1", cuts=(91.5, 93.5, 95.5), scores=(3, 2, 1, 0))
"""SpO2 Scale 1 (%): <=91: 3, 92-93: 2, 94-95: 1, >=96: 0."""
SPO2_SCALE_2_ON_AIR: Final = Bands("spo2 scale 2 on air", cuts=(83.5, 85.5, 87.5), scores=(3, 2, 1, 0))
"""SpO2 Scale 2 on air (%): <=83: 3, 84-85: 2, 86-87: 1, 88-92 and >=93 on air: 0."""
SPO2_SCALE_2_ON_OXYGEN: Final = Bands(
    "spo2 scale 2 on oxygen",
    cuts=(83.5, 85.5, 87.5, 92.5, 94.5, 96.5),
    scores=(3, 2, 1, 0, 1, 2, 3),
)
"""SpO2 Scale 2 on oxygen (%): <=83: 3, 84-85: 2, 86-87: 1, 88-92: 0, 93-94: 1, 95-96: 2, >=97: 3."""
SYSTOLIC_BP: Final = Bands("systolic bp", cuts=(90.5, 100.5, 110.5, 219.5), scores=(3, 2, 1, 0, 3))
"""Systolic blood pressure (mmHg): <=90: 3, 91-100: 2, 101-110: 1, 111-219: 0, >=220: 3."""
PULSE: Final = Bands("pulse", cuts=(40.5, 50.5, 90.5, 110.5, 130.5), scores=(3, 1, 0, 1, 2, 3))
"""Pulse per minute: <=40: 3, 41-50: 1, 51-90: 0, 91-110: 1, 111-130: 2, >=131: 3."""
TEMPERATURE: Final = Bands("temperature", cuts=(35.05, 36.05, 38.05, 39.05), scores=(3, 1, 0, 1, 2))
"""Temperature (C): <=35.0: 3, 35.1-36.0: 1, 36.1-38.0: 0, 38.1-39.0: 1, >=39.1: 2."""

AIR_OR_OXYGEN_SCORES: Final = (0, 2)
"""Air: 0, oxygen: 2 (index by ``on_oxygen``)."""
CONSCIOUSNESS_SCORES: Final = (3, 0)
"""Not alert (new confusion, voice, pain, unresponsive): 3, alert: 0 (index by ``alert``)."""

MEDIUM_RISK_TOTAL: Final = 5
HIGH_RISK_TOTAL: Final = 7
SINGLE_PARAMETER_RED: Final = 3
RISKS: Final = (Risk.LOW, Risk.LOW_MEDIUM, Risk.MEDIUM, Risk.HIGH)
"""Risk by ``risk_level``."""

# SpO2 table per row: scale 1; scale 2 on air; scale 2 on oxygen; scale 2 with oxygen unknown.
_SPO2_TABLES: Final = CombinedBands.build(
    [SPO2_SCALE_1, SPO2_SCALE_2_ON_AIR, SPO2_SCALE_2_ON_OXYGEN, (SPO2_SCALE_2_ON_AIR, SPO2_SCALE_2_ON_OXYGEN)]
)
_SPO2_SINGLE_TABLE: Final[dict[tuple[int, int], Bands | None]] = {
    (1, FALSE): SPO2_SCALE_1,
    (1, TRUE): SPO2_SCALE_1,
    (1, UNKNOWN): SPO2_SCALE_1,
    (2, FALSE): SPO2_SCALE_2_ON_AIR,
    (2, TRUE): SPO2_SCALE_2_ON_OXYGEN,
    (2, UNKNOWN): None,
}
_AIR_OR_OXYGEN_TABLE: Final = np.array((*AIR_OR_OXYGEN_SCORES, MISSING), dtype=np.int8)
_CONSCIOUSNESS_TABLE: Final = np.array((*CONSCIOUSNESS_SCORES, MISSING), dtype=np.int8)
_RISK_OBJECTS: Final = np.array(RISKS, dtype=object)
_ROW: Final = {name: index for index, name in enumerate(NEWS2_PARAMETERS)}
_VITAL_BANDS: Final = {
    "respiration": RESPIRATION,
    "systolic_bp": SYSTOLIC_BP,
    "pulse": PULSE,
    "temperature": TEMPERATURE,
}


@dataclass(frozen=True, eq=False)
class News2Result:
    """NEWS2 for every observation set; all arrays share the broadcast shape of the inputs."""

    total: NDArray[np.int64]
    components: ScoreArray
    """Shape ``(..., 7)`` in :data:`~edge_agent.protocol.NEWS2_PARAMETERS` order; -1 where missing."""
    risk_level: ScoreArray
    """0 low, 1 low-medium, 2 medium, 3 high; ``RISKS[level]`` is the Risk."""
    complete: NDArray[np.bool_]

    @cached_property
    def risk(self) -> NDArray[np.object_]:
        """:class:`~edge_agent.protocol.Risk` members (``str()`` gives "low", "low-medium", ...).

        Built on first access from ``risk_level`` (an object array costs about 7 ns a row to make).
        """
        levels = self.risk_level.reshape(-1).astype(np.intp)
        risk: NDArray[np.object_] = _RISK_OBJECTS.take(levels).reshape(self.risk_level.shape)
        return risk


def risk_from_total(total: int, *, any_single_three: bool) -> Risk:
    """The RCP 2017 trigger thresholds for one observation set."""
    if total >= HIGH_RISK_TOTAL:
        return Risk.HIGH
    if total >= MEDIUM_RISK_TOTAL:
        return Risk.MEDIUM
    return Risk.LOW_MEDIUM if any_single_three else Risk.LOW


def news2(
    *,
    respiratory_rate: ArrayLike,
    spo2: ArrayLike,
    systolic_bp: ArrayLike,
    pulse: ArrayLike,
    temperature: ArrayLike,
    on_oxygen: ArrayLike | None,
    alert: ArrayLike | None,
    spo2_scale: ArrayLike = 1,
) -> News2Result:
    """Score NEWS2 for one or many observation sets (see the module docstring for the conventions)."""
    vitals = {
        "respiration": as_vital(respiratory_rate, "respiratory_rate"),
        "spo2": as_vital(spo2, "spo2"),
        "systolic_bp": as_vital(systolic_bp, "systolic_bp"),
        "pulse": as_vital(pulse, "pulse"),
        "temperature": as_vital(temperature, "temperature"),
    }
    oxygen = tri_state(on_oxygen, "on_oxygen")
    alertness = tri_state(alert, "alert")
    scale = np.asarray(spo2_scale)
    if scale.dtype == np.bool_ or not np.all((scale == 1) | (scale == 2)):
        raise ValueError("spo2_scale must be 1 or 2")

    try:
        shape = np.broadcast_shapes(
            *(array.shape for array in vitals.values()), oxygen.shape, alertness.shape, scale.shape
        )
    except ValueError as exc:
        raise ValueError(f"the inputs cannot be broadcast to one shape: {exc}") from None
    size = int(np.prod(shape, dtype=np.int64))

    components = np.empty((len(NEWS2_PARAMETERS), size), dtype=np.int8)
    for name, bands in _VITAL_BANDS.items():
        components[_ROW[name]] = bands.score(flat(vitals[name], shape))

    spo2_values = flat(vitals["spo2"], shape)
    single: Bands | None = None
    if scale.ndim == 0 and (int(scale) == 1 or oxygen.ndim == 0):
        single = _SPO2_SINGLE_TABLE[(int(scale), int(oxygen) if oxygen.ndim == 0 else UNKNOWN)]
    if single is not None:
        components[_ROW["spo2"]] = single.score(spo2_values)
    else:
        # Table 0: scale 1; 1 + oxygen code (air, oxygen, unknown): scale 2.
        table = np.equal(flat(scale, shape), 2).view(np.int8) * (np.int8(1) + flat(oxygen, shape))
        components[_ROW["spo2"]] = _SPO2_TABLES.score(spo2_values, table)

    for name, table, codes in (
        ("air_or_oxygen", _AIR_OR_OXYGEN_TABLE, oxygen),
        ("consciousness", _CONSCIOUSNESS_TABLE, alertness),
    ):
        components[_ROW[name]] = table[codes] if codes.ndim == 0 else table.take(flat(codes, shape))

    missing = np.less(components, 0).sum(axis=0, dtype=np.int8)
    total_small = components.sum(axis=0, dtype=np.int8)
    total_small += missing  # each missing component added -1
    any_three = components.max(axis=0) == SINGLE_PARAMETER_RED
    risk_level = np.greater_equal(total_small, MEDIUM_RISK_TOTAL).view(np.int8) * np.int8(2)
    risk_level += np.greater_equal(total_small, HIGH_RISK_TOTAL).view(np.int8)
    np.maximum(risk_level, any_three.view(np.int8), out=risk_level)

    return News2Result(
        total=total_small.astype(np.int64).reshape(shape),
        components=components.T.reshape((*shape, len(NEWS2_PARAMETERS))),
        risk_level=risk_level.reshape(shape),
        complete=(missing == 0).reshape(shape),
    )


@dataclass(frozen=True, slots=True)
class News2Set:
    """NEWS2 of one observation set (see :func:`news2_one`)."""

    total: int
    components: tuple[int | None, ...]
    """In :data:`~edge_agent.protocol.NEWS2_PARAMETERS` order; None where missing."""
    risk: Risk
    complete: bool


def news2_one(
    *,
    respiratory_rate: float,
    spo2: float,
    systolic_bp: float,
    pulse: float,
    temperature: float,
    on_oxygen: bool | None,
    alert: bool | None,
    spo2_scale: int = 1,
) -> News2Set:
    """NEWS2 of one observation set in plain Python, from the same tables as :func:`news2`.

    About a hundred times cheaper than a one-row :func:`news2` call; the streaming chart uses it for every
    reading. NaN is missing; ``None`` for ``on_oxygen`` or ``alert`` is unknown. Tests check that both
    functions agree on every input.
    """
    if spo2_scale not in (1, 2) or isinstance(spo2_scale, bool):
        raise ValueError("spo2_scale must be 1 or 2")
    if spo2_scale == 1:
        spo2_score = SPO2_SCALE_1.score_one(spo2)
    elif on_oxygen is None:
        on_air, with_oxygen = SPO2_SCALE_2_ON_AIR.score_one(spo2), SPO2_SCALE_2_ON_OXYGEN.score_one(spo2)
        spo2_score = on_air if on_air == with_oxygen else MISSING
    else:
        spo2_score = (SPO2_SCALE_2_ON_OXYGEN if on_oxygen else SPO2_SCALE_2_ON_AIR).score_one(spo2)
    by_name = {
        "respiration": RESPIRATION.score_one(respiratory_rate),
        "spo2": spo2_score,
        "air_or_oxygen": MISSING if on_oxygen is None else AIR_OR_OXYGEN_SCORES[bool(on_oxygen)],
        "systolic_bp": SYSTOLIC_BP.score_one(systolic_bp),
        "pulse": PULSE.score_one(pulse),
        "consciousness": MISSING if alert is None else CONSCIOUSNESS_SCORES[bool(alert)],
        "temperature": TEMPERATURE.score_one(temperature),
    }
    components = tuple(None if by_name[name] == MISSING else by_name[name] for name in NEWS2_PARAMETERS)
    present = [score for score in components if score is not None]
    total = sum(present)
    return News2Set(
        total=total,
        components=components,
        risk=risk_from_total(total, any_single_three=SINGLE_PARAMETER_RED in present),
        complete=len(present) == len(NEWS2_PARAMETERS),
    )
