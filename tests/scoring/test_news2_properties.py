"""Property tests: the vectorised scorer, the one-set scorer and the streaming chart equal a deliberately
naive per-row NEWS2 written here.

The naive version works the way a nurse reads the chart: round the measured value half-up to the chart's
resolution (decimal arithmetic on the value as written, so 36.05 is 36.05), then walk an if/elif ladder of
the printed ranges. It shares no code or tables with edge_agent.scoring.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol import VITALS, Consciousness, Observation, TimeSource, VitalCode
from edge_agent.scoring import news2
from edge_agent.scoring._bands import Bands, band_index
from edge_agent.scoring.news2 import news2_one
from edge_agent.scoring.stream import DEFAULT_STALENESS_S, ChartSettings, PatientChart


def chart_value(value: float, resolution: str) -> Decimal:
    return Decimal(repr(value)).quantize(Decimal(resolution), rounding=ROUND_HALF_UP)


def naive_respiration(rate: float) -> int:
    rate_d = chart_value(rate, "1")
    if rate_d <= 8:
        return 3
    elif rate_d <= 11:
        return 1
    elif rate_d <= 20:
        return 0
    elif rate_d <= 24:
        return 2
    else:
        return 3


def naive_spo2(saturation: float, scale: int, on_oxygen: bool | None) -> int | None:
    percent = chart_value(saturation, "1")
    if scale == 1:
        if percent <= 91:
            return 3
        elif percent <= 93:
            return 2
        elif percent <= 95:
            return 1
        else:
            return 0
    if percent <= 83:
        return 3
    elif percent <= 85:
        return 2
    elif percent <= 87:
        return 1
    elif percent <= 92:
        return 0
    elif on_oxygen is None:
        return None  # depends on the oxygen, which is unknown
    elif not on_oxygen:
        return 0
    elif percent <= 94:
        return 1
    elif percent <= 96:
        return 2
    else:
        return 3


def naive_systolic(pressure: float) -> int:
    mmhg = chart_value(pressure, "1")
    if mmhg <= 90:
        return 3
    elif mmhg <= 100:
        return 2
    elif mmhg <= 110:
        return 1
    elif mmhg <= 219:
        return 0
    else:
        return 3


def naive_pulse(rate: float) -> int:
    bpm = chart_value(rate, "1")
    if bpm <= 40:
        return 3
    elif bpm <= 50:
        return 1
    elif bpm <= 90:
        return 0
    elif bpm <= 110:
        return 1
    elif bpm <= 130:
        return 2
    else:
        return 3


def naive_temperature(celsius: float) -> int:
    degrees = chart_value(celsius, "0.1")
    if degrees <= Decimal("35.0"):
        return 3
    elif degrees <= Decimal("36.0"):
        return 1
    elif degrees <= Decimal("38.0"):
        return 0
    elif degrees <= Decimal("39.0"):
        return 1
    else:
        return 2


def naive_news2(row: dict[str, object]) -> tuple[int, list[int], str, bool]:
    def vital(name: str) -> float | None:
        value = row[name]
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)  # type: ignore[arg-type]

    oxygen = row["on_oxygen"]
    alert = row["alert"]
    rr, sat, sbp, hr, temp = (vital(name) for name in ("rr", "spo2", "sbp", "hr", "temp"))
    components: list[int | None] = [
        None if rr is None else naive_respiration(rr),
        None if sat is None else naive_spo2(sat, int(row["scale"]), oxygen),  # type: ignore[arg-type, call-overload]
        None if oxygen is None else (2 if oxygen else 0),
        None if sbp is None else naive_systolic(sbp),
        None if hr is None else naive_pulse(hr),
        None if alert is None else (0 if alert else 3),
        None if temp is None else naive_temperature(temp),
    ]
    present = [score for score in components if score is not None]
    total = sum(present)
    if total >= 7:
        risk = "high"
    elif total >= 5:
        risk = "medium"
    elif 3 in present:
        risk = "low-medium"
    else:
        risk = "low"
    return total, [-1 if score is None else score for score in components], risk, len(present) == 7


def near(*points: float) -> st.SearchStrategy[float]:
    """Values on and next to the given points, where off-by-one mistakes live."""
    return st.sampled_from(points).flatmap(
        lambda point: st.sampled_from(
            [
                point,
                math.nextafter(point, -math.inf),
                math.nextafter(point, math.inf),
                point - 0.5,
                point + 0.5,
            ]
        )
    )


def vital(low: float, high: float, *edges: float) -> st.SearchStrategy[float | None]:
    return st.one_of(
        st.floats(min_value=low, max_value=high, allow_nan=False),
        st.integers(min_value=int(low), max_value=int(high)).map(float),
        near(*edges),
        st.just(math.nan),
        st.none(),
    )


ROWS = st.fixed_dictionaries(
    {
        "rr": vital(0, 60, 8.5, 11.5, 20.5, 24.5),
        "spo2": vital(50, 100, 83.5, 85.5, 87.5, 91.5, 92.5, 93.5, 94.5, 95.5, 96.5),
        "sbp": vital(40, 300, 90.5, 100.5, 110.5, 219.5),
        "hr": vital(20, 250, 40.5, 50.5, 90.5, 110.5, 130.5),
        "temp": vital(25, 45, 35.05, 36.05, 38.05, 39.05),
        "on_oxygen": st.sampled_from([True, False, None]),
        "alert": st.sampled_from([True, False, None]),
        "scale": st.sampled_from([1, 2]),
    }
)


def as_float(values: list[object]) -> np.ndarray:
    return np.array([math.nan if value is None else value for value in values], dtype=float)


@settings(max_examples=300, deadline=None)
@given(st.lists(ROWS, min_size=1, max_size=40))
def test_vectorised_equals_naive_per_row(rows: list[dict[str, object]]) -> None:
    result = news2(
        respiratory_rate=as_float([row["rr"] for row in rows]),
        spo2=as_float([row["spo2"] for row in rows]),
        systolic_bp=as_float([row["sbp"] for row in rows]),
        pulse=as_float([row["hr"] for row in rows]),
        temperature=as_float([row["temp"] for row in rows]),
        on_oxygen=np.array([row["on_oxygen"] for row in rows], dtype=object),
        alert=np.array([row["alert"] for row in rows], dtype=object),
        spo2_scale=np.array([row["scale"] for row in rows]),
    )
    for index, row in enumerate(rows):
        total, components, risk, complete = naive_news2(row)
        assert result.components[index].tolist() == components, row
        assert result.total[index] == total
        assert str(result.risk[index]) == risk
        assert bool(result.complete[index]) == complete


@settings(max_examples=200, deadline=None)
@given(ROWS)
def test_scalar_call_equals_naive(row: dict[str, object]) -> None:
    result = news2(
        respiratory_rate=row["rr"],  # type: ignore[arg-type]
        spo2=row["spo2"],  # type: ignore[arg-type]
        systolic_bp=row["sbp"],  # type: ignore[arg-type]
        pulse=row["hr"],  # type: ignore[arg-type]
        temperature=row["temp"],  # type: ignore[arg-type]
        on_oxygen=row["on_oxygen"],  # type: ignore[arg-type]
        alert=row["alert"],  # type: ignore[arg-type]
        spo2_scale=row["scale"],  # type: ignore[arg-type]
    )
    total, components, risk, complete = naive_news2(row)
    assert (int(result.total), result.components.tolist(), str(result.risk), bool(result.complete)) == (
        total,
        components,
        risk,
        complete,
    )


CUTS = st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=8, unique=True).map(sorted)
VALUES = st.lists(
    st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-1e6, max_value=1e6)),
    max_size=50,
)


@settings(max_examples=300, deadline=None)
@given(CUTS, VALUES, st.data())
def test_band_index_is_searchsorted_right_with_a_nan_bin(
    cuts: list[float], values: list[float], data: st.DataObject
) -> None:
    extra = data.draw(st.lists(st.sampled_from(cuts), max_size=5))  # values equal to a cut point
    array = np.array(values + extra, dtype=float)
    edges = np.array(cuts)
    expected = np.where(np.isnan(array), len(cuts) + 1, np.searchsorted(edges, array, side="right"))
    assert band_index(array, edges).tolist() == expected.tolist()


@settings(max_examples=200, deadline=None)
@given(CUTS, VALUES, st.data())
def test_bands_score_is_the_table_lookup(cuts: list[float], values: list[float], data: st.DataObject) -> None:
    scores = data.draw(st.lists(st.integers(0, 3), min_size=len(cuts) + 1, max_size=len(cuts) + 1))
    bands = Bands("any", cuts=tuple(cuts), scores=tuple(scores))
    array = np.array(values, dtype=float)
    lookup = (
        np.array(scores)[np.searchsorted(np.array(cuts), array, side="right")] if len(array) else np.array([])
    )
    expected = np.where(np.isnan(array), -1, lookup)
    assert bands.score(array).tolist() == expected.tolist()


@settings(max_examples=300, deadline=None)
@given(ROWS)
def test_news2_one_equals_news2(row: dict[str, object]) -> None:
    def number(name: str) -> float:
        value = row[name]
        return math.nan if value is None else float(value)  # type: ignore[arg-type]

    inputs = {
        "respiratory_rate": number("rr"),
        "spo2": number("spo2"),
        "systolic_bp": number("sbp"),
        "pulse": number("hr"),
        "temperature": number("temp"),
        "on_oxygen": row["on_oxygen"],
        "alert": row["alert"],
        "spo2_scale": row["scale"],
    }
    one = news2_one(**inputs)  # type: ignore[arg-type]
    many = news2(**inputs)  # type: ignore[arg-type]
    assert [(-1 if score is None else score) for score in one.components] == many.components.tolist()
    assert (one.total, one.risk, one.complete) == (int(many.total), many.risk.item(), bool(many.complete))


# --------------------------------------------------------------------------------------------------
# The streaming chart never misses a change and never repeats itself.

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CHART_VITALS = {
    VitalCode.RESPIRATORY_RATE: ("rr", st.integers(3, 40)),
    VitalCode.SPO2: ("spo2", st.integers(80, 100)),
    VitalCode.SYSTOLIC_BP: ("sbp", st.integers(70, 240)),
    VitalCode.HEART_RATE: ("hr", st.integers(30, 160)),
    VitalCode.BODY_TEMPERATURE: ("temp", st.integers(340, 410).map(lambda tenths: tenths / 10)),
}
READING = st.sampled_from(sorted(CHART_VITALS)).flatmap(
    lambda vital: st.tuples(
        st.just("observe"), st.just(vital), CHART_VITALS[vital][1], st.sampled_from([0, 5, 400])
    )
)
STEP = st.tuples(
    st.sampled_from([0, 1, 30, 600, 901, 3600, 13 * 3600]),
    st.one_of(
        READING,
        st.tuples(st.just("scale"), st.sampled_from([1, 2])),
        st.tuples(st.just("oxygen"), st.booleans()),
        st.tuples(st.just("consciousness"), st.sampled_from(list(Consciousness))),
        st.tuples(st.just("reassess")),
    ),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=40))
def test_the_chart_never_misses_a_change_and_never_repeats_itself(
    steps: list[tuple[int, tuple[Any, ...]]],
) -> None:
    chart = PatientChart("pt-1", settings=ChartSettings(median_window_s=0))
    latest: dict[VitalCode, tuple[float, datetime]] = {}
    scale, oxygen, level = 1, False, Consciousness.ALERT
    now = T0
    previous = None
    for advance, (kind, *args) in steps:
        now += timedelta(seconds=advance)
        if kind == "observe":
            vital, value, lag = args
            measured = now - timedelta(seconds=lag)
            if vital not in latest or measured >= latest[vital][1]:
                latest[vital] = (float(value), measured)
            returned = chart.observe(
                Observation(
                    patient_id="pt-1",
                    vital=vital,
                    value=value,
                    unit=VITALS[vital].ucum,
                    measured_at=measured,
                    time_source=TimeSource.DEVICE,
                    device_id="dev-1",
                ),
                now=now,
            )
        elif kind == "scale":
            scale = args[0]
            returned = chart.set_spo2_scale(scale, now=now)
        elif kind == "oxygen":
            oxygen = args[0]
            returned = chart.set_on_oxygen(oxygen, now=now)
        elif kind == "consciousness":
            level = args[0]
            returned = chart.set_consciousness(level, now=now)
        else:
            returned = chart.reassess(now=now)

        if returned is not None:
            picture = (returned.components, returned.risk, returned.spo2_scale, returned.on_oxygen,
                       returned.consciousness, returned.trend_rising)  # fmt: skip
            assert picture != previous, "an assessment identical to the last one was emitted"
            previous = picture
        row: dict[str, object] = {"on_oxygen": oxygen, "alert": level is Consciousness.ALERT, "scale": scale}
        for vital, (key, _) in CHART_VITALS.items():
            fresh = vital in latest and (now - latest[vital][1]).total_seconds() <= DEFAULT_STALENESS_S[vital]
            row[key] = latest[vital][0] if fresh else None
        total, components, risk, complete = naive_news2(row)
        last = chart.last_assessment
        assert last is not None
        assert [(-1 if score is None else score) for score in last.components.values()] == components
        assert (last.total, str(last.risk), last.complete) == (total, risk, complete)
