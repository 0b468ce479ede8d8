"""MEWS and qSOFA against their published tables, and the RCP clinical response table."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol import Consciousness, Risk
from edge_agent.scoring import clinical_response, mews, qsofa
from edge_agent.scoring.mews import MEWS_PARAMETERS
from edge_agent.scoring.response import CLINICAL_RESPONSES

MEWS_NORMAL = {
    "systolic_bp": 120.0,
    "pulse": 70.0,
    "respiratory_rate": 12.0,
    "temperature": 37.0,
    "consciousness": "A",
}


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        # Subbe et al. 2001, both sides of every edge (exactly 70 and 40 take the band below).
        ("systolic_bp", 70, 3),
        ("systolic_bp", 71, 2),
        ("systolic_bp", 80, 2),
        ("systolic_bp", 81, 1),
        ("systolic_bp", 100, 1),
        ("systolic_bp", 101, 0),
        ("systolic_bp", 199, 0),
        ("systolic_bp", 200, 2),
        ("pulse", 40, 2),
        ("pulse", 41, 1),
        ("pulse", 50, 1),
        ("pulse", 51, 0),
        ("pulse", 100, 0),
        ("pulse", 101, 1),
        ("pulse", 110, 1),
        ("pulse", 111, 2),
        ("pulse", 129, 2),
        ("pulse", 130, 3),
        ("respiratory_rate", 8, 2),
        ("respiratory_rate", 9, 0),
        ("respiratory_rate", 14, 0),
        ("respiratory_rate", 15, 1),
        ("respiratory_rate", 20, 1),
        ("respiratory_rate", 21, 2),
        ("respiratory_rate", 29, 2),
        ("respiratory_rate", 30, 3),
        ("temperature", 34.9, 2),
        ("temperature", 34.95, 0),
        ("temperature", 35.0, 0),
        ("temperature", 38.4, 0),
        ("temperature", 38.45, 2),
        ("temperature", 38.5, 2),
    ],
)
def test_mews_band_edges(name: str, value: float, expected: int) -> None:
    result = mews(**{**MEWS_NORMAL, name: value})
    parameter = {"respiratory_rate": "respiration"}.get(name, name)
    assert result.components[MEWS_PARAMETERS.index(parameter)] == expected
    assert int(result.total) == expected


def test_mews_consciousness_and_missing() -> None:
    levels = ["A", "C", "V", "P", "U", None, Consciousness.PAIN]
    result = mews(**{**MEWS_NORMAL, "consciousness": levels})
    assert result.components[:, 4].tolist() == [0, 1, 1, 2, 3, -1, 2]
    assert result.complete.tolist() == [True] * 5 + [False, True]
    gaps = mews(**{**MEWS_NORMAL, "pulse": [math.nan, 130.0]})
    assert gaps.total.tolist() == [0, 3]
    with pytest.raises(ValueError, match="A, C, V, P, U"):
        mews(**{**MEWS_NORMAL, "consciousness": ["A", "X"]})


def test_mews_at_risk_from_5() -> None:
    result = mews(**{**MEWS_NORMAL, "pulse": [130.0, 130.0], "respiratory_rate": [15.0, 21.0]})
    assert result.total.tolist() == [4, 5]
    assert result.at_risk.tolist() == [False, True]


@pytest.mark.parametrize(
    ("rate", "pressure", "alert", "criteria", "total"),
    [
        (21, 101, True, [0, 0, 0], 0),
        (22, 101, True, [1, 0, 0], 1),
        (21.49, 100.5, True, [0, 0, 0], 0),
        (21.5, 100.49, True, [1, 1, 0], 2),
        (16, 100, False, [0, 1, 1], 2),
        (30, 90, False, [1, 1, 1], 3),
        (math.nan, 90, False, [-1, 1, 1], 2),
        (30, 120, None, [1, 0, -1], 1),
    ],
)
def test_qsofa(rate: float, pressure: float, alert: bool | None, criteria: list[int], total: int) -> None:
    result = qsofa(respiratory_rate=rate, systolic_bp=pressure, alert=alert)
    assert result.criteria.tolist() == criteria
    assert int(result.total) == total
    assert bool(result.positive) == (total >= 2)
    assert bool(result.complete) == (-1 not in criteria)


def test_qsofa_arrays() -> None:
    result = qsofa(respiratory_rate=np.array([10, 25, 25]), systolic_bp=np.array([120, 120, 95]), alert=True)
    assert result.total.tolist() == [0, 1, 2]
    assert result.criteria.shape == (3, 3)


@pytest.mark.parametrize(
    ("risk", "total", "monitoring", "interval"),
    [
        (Risk.LOW, 0, "12-hourly", timedelta(hours=12)),
        (Risk.LOW, 1, "4-6-hourly", timedelta(hours=6)),
        (Risk.LOW, 4, "4-6-hourly", timedelta(hours=6)),
        (Risk.LOW_MEDIUM, 3, "1-hourly", timedelta(hours=1)),
        (Risk.MEDIUM, 5, "1-hourly", timedelta(hours=1)),
        ("medium", 6, "1-hourly", timedelta(hours=1)),
        (Risk.HIGH, 7, "continuous", None),
        (Risk.HIGH, 20, "continuous", None),
    ],
)
def test_clinical_response(risk: Risk | str, total: int, monitoring: str, interval: timedelta | None) -> None:
    response = clinical_response(risk, total)
    assert (response.monitoring, response.longest_interval) == (monitoring, interval)
    assert response.risk == Risk(risk)
    assert response.response


def test_every_risk_has_a_response() -> None:
    assert {response.risk for response in CLINICAL_RESPONSES} == set(Risk)
    with pytest.raises(ValueError, match="very high"):
        clinical_response("very high", 9)


# --------------------------------------------------------------------------------------------------
# Hypothesis: MEWS and qSOFA equal naive per-row versions of the published tables.


def rounded(value: float, resolution: str) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal(resolution), rounding=ROUND_HALF_UP)


def naive_mews(sbp: float, hr: float, rr: float, temp: float, level: str | None) -> list[int]:
    s, h, r, t = rounded(sbp, "1"), rounded(hr, "1"), rounded(rr, "1"), rounded(temp, "0.1")
    sbp_score = 3 if s <= 70 else 2 if s <= 80 else 1 if s <= 100 else 0 if s <= 199 else 2
    hr_score = 2 if h <= 40 else 1 if h <= 50 else 0 if h <= 100 else 1 if h <= 110 else 2 if h <= 129 else 3
    rr_score = 2 if r < 9 else 0 if r <= 14 else 1 if r <= 20 else 2 if r <= 29 else 3
    temp_score = 2 if t < Decimal("35.0") else 0 if t <= Decimal("38.4") else 2
    avpu = -1 if level is None else {"A": 0, "C": 1, "V": 1, "P": 2, "U": 3}[level]
    return [sbp_score, hr_score, rr_score, temp_score, avpu]


def around(*points: float) -> st.SearchStrategy[float]:
    return st.sampled_from(points).flatmap(
        lambda p: st.sampled_from([p, math.nextafter(p, -math.inf), math.nextafter(p, math.inf)])
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.floats(40, 260), around(70.5, 80.5, 100.5, 199.5)),
            st.one_of(st.floats(20, 200), around(40.5, 50.5, 100.5, 110.5, 129.5)),
            st.one_of(st.floats(3, 60), around(8.5, 14.5, 20.5, 29.5)),
            st.one_of(st.floats(30, 43), around(34.95, 38.45)),
            st.sampled_from(["A", "C", "V", "P", "U", None]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_mews_equals_naive(rows: list[tuple[float, float, float, float, str | None]]) -> None:
    columns = list(zip(*rows, strict=True))
    result = mews(
        systolic_bp=np.array(columns[0]),
        pulse=np.array(columns[1]),
        respiratory_rate=np.array(columns[2]),
        temperature=np.array(columns[3]),
        consciousness=list(columns[4]),
    )
    for index, row in enumerate(rows):
        expected = naive_mews(*row)
        assert result.components[index].tolist() == expected
        assert int(result.total[index]) == sum(score for score in expected if score >= 0)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.floats(0, 60), around(21.5), st.just(math.nan)),
    st.one_of(st.floats(40, 200), around(100.5), st.just(math.nan)),
    st.sampled_from([True, False, None]),
)
def test_qsofa_equals_naive(rate: float, pressure: float, alert: bool | None) -> None:
    expected = [
        -1 if math.isnan(rate) else int(rounded(rate, "1") >= 22),
        -1 if math.isnan(pressure) else int(rounded(pressure, "1") <= 100),
        -1 if alert is None else int(not alert),
    ]
    result = qsofa(respiratory_rate=rate, systolic_bp=pressure, alert=alert)
    assert result.criteria.tolist() == expected
    assert int(result.total) == expected.count(1)
