"""NEWS2 against the RCP 2017 chart as printed: every band edge of every parameter, Scale 2, missing values,
risk rules, whole observation sets and the array API."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from edge_agent.protocol import NEWS2_PARAMETERS, Risk
from edge_agent.scoring import news2

NORMAL: dict[str, Any] = {
    "respiratory_rate": 16.0,
    "spo2": 98.0,
    "systolic_bp": 120.0,
    "pulse": 70.0,
    "temperature": 37.0,
    "on_oxygen": False,
    "alert": True,
}

# The chart as printed: (lowest, highest, score), inclusive, at the chart's resolution.
CHART: dict[str, Any] = {
    "respiratory_rate": (
        "respiration",
        1,
        [(None, 8, 3), (9, 11, 1), (12, 20, 0), (21, 24, 2), (25, None, 3)],
    ),
    "systolic_bp": (
        "systolic_bp",
        1,
        [(None, 90, 3), (91, 100, 2), (101, 110, 1), (111, 219, 0), (220, None, 3)],
    ),
    "pulse": (
        "pulse",
        1,
        [(None, 40, 3), (41, 50, 1), (51, 90, 0), (91, 110, 1), (111, 130, 2), (131, None, 3)],
    ),
    "temperature": (
        "temperature",
        0.1,
        [(None, 35.0, 3), (35.1, 36.0, 1), (36.1, 38.0, 0), (38.1, 39.0, 1), (39.1, None, 2)],
    ),
    "spo2": ("spo2", 1, [(None, 91, 3), (92, 93, 2), (94, 95, 1), (96, None, 0)]),
}


def edge_cases() -> Iterator[tuple[str, float, int]]:
    """Both sides of every printed edge, and both sides of the half-step between them."""
    for vital, (_, step, bands) in CHART.items():
        for (_, below_high, below_score), (above_low, _, above_score) in itertools.pairwise(bands):
            assert below_high is not None and above_low is not None
            half = round(below_high + step / 2, 2)
            yield vital, below_high, below_score
            yield vital, above_low, above_score
            yield vital, half, above_score  # half-up: the half-step belongs to the band above
            yield vital, math.nextafter(half, -math.inf), below_score


def score_of(vital: str, value: float, **overrides: Any) -> np.ndarray:
    inputs: dict[str, Any] = {**NORMAL, **overrides, vital: value}
    return news2(**inputs).components


@pytest.mark.parametrize(("vital", "value", "expected"), list(edge_cases()))
def test_both_sides_of_every_band_edge(vital: str, value: float, expected: int) -> None:
    component = CHART[vital][0]
    components = score_of(vital, value)
    assert components[NEWS2_PARAMETERS.index(component)] == expected
    others = [score for name, score in zip(NEWS2_PARAMETERS, components, strict=True) if name != component]
    assert others == [0] * 6


@pytest.mark.parametrize(
    ("value", "expected"),
    [(36.05, 0), (35.05, 1), (36.04, 1), (35.04, 3), (38.05, 1), (38.04, 0), (39.05, 2), (39.04, 1)],
)
def test_temperature_rounds_half_up_not_like_np_round(value: float, expected: int) -> None:
    assert np.round(36.05, 1) == 36.0  # the trap the cut points avoid
    assert score_of("temperature", value)[6] == expected


def test_pulse_40_5_scores_1() -> None:
    assert score_of("pulse", 40.5)[4] == 1
    assert score_of("pulse", 40.49)[4] == 3


# SpO2 Scale 2, whole percent, as printed: (air, oxygen).
SCALE_2 = {
    **{value: (3, 3) for value in range(70, 84)},
    84: (2, 2),
    85: (2, 2),
    86: (1, 1),
    87: (1, 1),
    **{value: (0, 0) for value in range(88, 93)},
    93: (0, 1),
    94: (0, 1),
    95: (0, 2),
    96: (0, 2),
    97: (0, 3),
    98: (0, 3),
    99: (0, 3),
    100: (0, 3),
}


@pytest.mark.parametrize("on_oxygen", [False, True])
def test_scale_2_on_air_and_on_oxygen(on_oxygen: bool) -> None:
    values = np.array(sorted(SCALE_2), dtype=float)
    result = news2(**{**NORMAL, "spo2": values, "on_oxygen": on_oxygen, "spo2_scale": 2})
    expected = [SCALE_2[int(value)][on_oxygen] for value in values]
    assert result.components[:, 1].tolist() == expected
    assert set(result.components[:, 2].tolist()) == {2 if on_oxygen else 0}  # the +2 for oxygen as well
    assert result.total.tolist() == [score + (2 if on_oxygen else 0) for score in expected]


def test_scale_2_half_steps() -> None:
    values = [83.49, 83.5, 87.49, 87.5, 92.49, 92.5, 96.49, 96.5]
    result = news2(**{**NORMAL, "spo2": values, "on_oxygen": True, "spo2_scale": 2})
    assert result.components[:, 1].tolist() == [3, 2, 1, 0, 0, 1, 2, 3]


def test_scale_per_row() -> None:
    result = news2(
        **{
            **NORMAL,
            "spo2": [93, 93, 93, 90],
            "on_oxygen": [False, False, True, True],
            "spo2_scale": [1, 2, 2, 2],
        }
    )
    assert result.components[:, 1].tolist() == [2, 0, 1, 0]
    assert result.components[:, 2].tolist() == [0, 0, 2, 2]


# Whole sets from the dhos-scoring-engine test data (polaris-foundation/dhos-scoring-engine).
@pytest.mark.parametrize(
    ("inputs", "total", "risk"),
    [
        ({"respiratory_rate": 25, "pulse": 111}, 5, Risk.MEDIUM),
        (
            {
                "respiratory_rate": 9,
                "pulse": 100,
                "spo2": 86,
                "spo2_scale": 2,
                "on_oxygen": True,
                "systolic_bp": 105,
                "alert": True,
                "temperature": 38.5,
            },
            7,
            Risk.HIGH,
        ),
        (
            {
                "respiratory_rate": 8,
                "pulse": 40,
                "spo2": 91,
                "on_oxygen": True,
                "systolic_bp": 90,
                "alert": False,
                "temperature": 35.0,
            },
            20,
            Risk.HIGH,
        ),
        ({}, 0, Risk.LOW),
    ],
)
def test_whole_observation_sets(inputs: dict[str, Any], total: int, risk: Risk) -> None:
    result = news2(**{**NORMAL, **inputs})
    assert int(result.total) == total
    assert result.risk == risk
    assert str(result.risk) == str(risk)
    assert bool(result.complete)


@pytest.mark.parametrize(
    ("inputs", "total", "risk"),
    [
        ({"respiratory_rate": 8}, 3, Risk.LOW_MEDIUM),  # a single red score
        ({"alert": False}, 3, Risk.LOW_MEDIUM),
        ({"pulse": 111, "temperature": 39.1}, 4, Risk.LOW),  # 2 + 2, no single 3
        ({"respiratory_rate": 8, "pulse": 95}, 4, Risk.LOW_MEDIUM),
        ({"respiratory_rate": 8, "pulse": 111}, 5, Risk.MEDIUM),
        ({"respiratory_rate": 22, "pulse": 111, "temperature": 38.5}, 5, Risk.MEDIUM),
        ({"respiratory_rate": 22, "pulse": 111, "temperature": 39.5}, 6, Risk.MEDIUM),
        ({"respiratory_rate": 22, "pulse": 111, "temperature": 39.5, "systolic_bp": 105}, 7, Risk.HIGH),
    ],
)
def test_risk_thresholds(inputs: dict[str, Any], total: int, risk: Risk) -> None:
    result = news2(**{**NORMAL, **inputs})
    assert int(result.total) == total
    assert result.risk.item() is risk
    assert int(result.risk_level) == [Risk.LOW, Risk.LOW_MEDIUM, Risk.MEDIUM, Risk.HIGH].index(risk)


@pytest.mark.parametrize("vital", ["respiratory_rate", "spo2", "systolic_bp", "pulse", "temperature"])
@pytest.mark.parametrize("missing", [math.nan, None])
def test_a_missing_vital_scores_minus_one_and_makes_the_set_incomplete(
    vital: str, missing: float | None
) -> None:
    result = news2(**{**NORMAL, "respiratory_rate": 8, vital: missing})
    component = CHART[vital][0]
    assert result.components[NEWS2_PARAMETERS.index(component)] == -1
    assert not result.complete
    assert int(result.total) == (0 if vital == "respiratory_rate" else 3)


def test_an_incomplete_set_still_carries_its_risk() -> None:
    result = news2(**{**NORMAL, "spo2": 85, "pulse": math.nan, "temperature": math.nan})
    assert int(result.total) == 3
    assert result.risk == Risk.LOW_MEDIUM
    assert not result.complete


def test_unknown_oxygen() -> None:
    values = [85, 90, 93, 97]
    scale_1 = news2(**{**NORMAL, "spo2": values, "on_oxygen": None})
    assert scale_1.components[:, 1].tolist() == [3, 3, 2, 0]  # Scale 1 does not depend on oxygen
    assert scale_1.components[:, 2].tolist() == [-1] * 4
    scale_2 = news2(**{**NORMAL, "spo2": values, "on_oxygen": [None, math.nan, None, None], "spo2_scale": 2})
    # <= 92 scores the same on air and on oxygen; >= 93 depends on the oxygen, so it is missing.
    assert scale_2.components[:, 1].tolist() == [2, 0, -1, -1]
    assert not scale_2.complete.any()
    scalar = news2(**{**NORMAL, "spo2": 97, "on_oxygen": None, "spo2_scale": 2})
    assert scalar.components[1] == -1


def test_unknown_consciousness() -> None:
    result = news2(**{**NORMAL, "alert": [True, False, None]})
    assert result.components[:, 5].tolist() == [0, 3, -1]
    assert result.complete.tolist() == [True, True, False]


def test_infinities_score_as_the_extreme_bands() -> None:
    result = news2(**{**NORMAL, "pulse": [math.inf, -math.inf]})
    assert result.components[:, 4].tolist() == [3, 3]


def test_shapes_broadcast_like_numpy() -> None:
    scalar = news2(**NORMAL)
    assert scalar.total.shape == ()
    assert scalar.components.shape == (7,)
    assert str(scalar.risk) == "low"
    grid = news2(**{**NORMAL, "pulse": np.array([[40, 70, 140]]), "temperature": np.array([[35.0], [37.0]])})
    assert grid.total.shape == (2, 3)
    assert grid.components.shape == (2, 3, 7)
    assert grid.total.tolist() == [[6, 3, 6], [3, 0, 3]]
    assert grid.risk.tolist() == [
        [Risk.MEDIUM, Risk.LOW_MEDIUM, Risk.MEDIUM],
        [Risk.LOW_MEDIUM, Risk.LOW, Risk.LOW_MEDIUM],
    ]
    assert [str(item) for item in grid.risk.reshape(-1)] == [
        "medium",
        "low-medium",
        "medium",
        "low-medium",
        "low",
        "low-medium",
    ]
    empty = news2(**{**NORMAL, "pulse": np.array([])})
    assert empty.total.shape == (0,)
    assert empty.components.shape == (0, 7)


def test_result_arrays_are_independent_of_the_inputs() -> None:
    pulse = np.array([70.0, 140.0])
    alert = np.array([True, False])
    result = news2(**{**NORMAL, "pulse": pulse, "alert": alert})
    assert result.total.tolist() == [0, 6]
    assert pulse.tolist() == [70.0, 140.0]
    assert alert.tolist() == [True, False]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"spo2_scale": 3}, "spo2_scale must be 1 or 2"),
        ({"spo2_scale": [1, 2, math.nan]}, "spo2_scale must be 1 or 2"),
        ({"spo2_scale": True}, "spo2_scale must be 1 or 2"),
        ({"on_oxygen": 0.5}, "on_oxygen must be True/False"),
        ({"alert": "yes"}, "alert must be booleans"),
        ({"alert": ["yes", None]}, "alert must be booleans"),
        ({"pulse": "fast"}, "pulse must be numbers"),
        ({"pulse": [1, 2], "temperature": [1, 2, 3]}, "cannot be broadcast"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        news2(**{**NORMAL, **overrides})
