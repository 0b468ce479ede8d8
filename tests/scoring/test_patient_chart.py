"""The streaming per-patient chart: quality filter, rolling median, staleness, settings, trend and
emit-on-change."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from drivers.reading import Reading, TimeSource, Vital
from edge_agent.protocol import (
    NEWS2_PARAMETERS,
    VITALS,
    Assessment,
    AssessmentContent,
    Consciousness,
    Observation,
    QualityFlag,
    Risk,
    VitalCode,
    decode,
    encode,
    new_message_id,
)
from edge_agent.protocol import TimeSource as WireTimeSource
from edge_agent.scoring.stream import (
    DEFAULT_STALENESS_S,
    ChartSettings,
    ExclusionReason,
    PatientChart,
    exclusion_reason,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
NORMAL = {
    VitalCode.RESPIRATORY_RATE: 16.0,
    VitalCode.SPO2: 97.0,
    VitalCode.SYSTOLIC_BP: 120.0,
    VitalCode.HEART_RATE: 70.0,
    VitalCode.BODY_TEMPERATURE: 37.0,
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def obs(
    vital: VitalCode,
    value: float,
    measured: datetime,
    *,
    quality: list[QualityFlag] | None = None,
    perfusion_index: float | None = None,
) -> Observation:
    return Observation(
        patient_id="pt-7",
        vital=vital,
        value=value,
        unit=VITALS[vital].ucum,
        measured_at=measured,
        time_source=WireTimeSource.DEVICE,
        device_id="ox-1",
        quality=quality or [],
        perfusion_index=perfusion_index,
    )


def full_set(chart: PatientChart, when: datetime, **changes: float) -> AssessmentContent | None:
    """Feed one reading of every NEWS2 vital at ``when``; return the last assessment emitted."""
    emitted = None
    for vital, value in NORMAL.items():
        result = chart.observe(obs(vital, changes.get(str(vital), value), when), now=when)
        emitted = result or emitted
    return emitted


def test_the_first_reading_emits_and_an_identical_one_does_not() -> None:
    chart = PatientChart("pt-7")
    first = chart.observe(obs(VitalCode.SPO2, 97, at(0)), now=at(0))
    assert first is not None
    assert first.components == {
        "respiration": None,
        "spo2": 0,
        "air_or_oxygen": 0,
        "systolic_bp": None,
        "pulse": None,
        "consciousness": 0,
        "temperature": None,
    }
    assert (first.total, first.risk, first.complete) == (0, Risk.LOW, False)
    assert chart.observe(obs(VitalCode.SPO2, 97, at(1)), now=at(1)) is None
    assert chart.observe(obs(VitalCode.SPO2, 96, at(2)), now=at(2)) is None  # same component score (0)
    assert chart.last_assessment is first


def test_a_complete_set_and_a_changed_component() -> None:
    chart = PatientChart("pt-7")
    complete = full_set(chart, at(0))
    assert complete is not None
    assert complete.complete
    assert complete.total == 0
    assert set(complete.components) == set(NEWS2_PARAMETERS)
    changed = chart.observe(obs(VitalCode.RESPIRATORY_RATE, 25, at(60)), now=at(60))
    assert changed is not None
    assert (changed.components["respiration"], changed.total, changed.risk) == (3, 3, Risk.LOW_MEDIUM)
    assert changed.assessed_at == at(60)


def test_input_ages_are_reported_for_every_input() -> None:
    chart = PatientChart("pt-7", settings_at=at(-100))
    full_set(chart, at(0))
    assessment = chart.assess(now=at(30))
    assert assessment.input_ages_s == {
        "respiratory_rate": 30.0,
        "spo2": 30.0,
        "systolic_bp": 30.0,
        "heart_rate": 30.0,
        "body_temperature": 30.0,
        "on_oxygen": 130.0,
        "consciousness": 130.0,
    }
    never = PatientChart("pt-8").assess(now=at(0))
    assert set(never.input_ages_s.values()) == {None}


def test_a_value_goes_stale_at_its_window_and_reassess_reports_it() -> None:
    chart = PatientChart("pt-7")
    full_set(chart, at(0), spo2=90)  # SpO2 90 scores 3
    window = DEFAULT_STALENESS_S[VitalCode.SPO2]
    assert chart.reassess(now=at(window)) is None  # exactly at the window: still current
    stale = chart.reassess(now=at(window + 1))
    assert stale is not None
    assert stale.components["spo2"] is None
    assert stale.components["pulse"] is None  # same continuous window
    assert stale.input_ages_s["spo2"] == window + 1  # the age is still reported
    assert (stale.total, stale.complete, stale.risk) == (0, False, Risk.LOW)
    assert chart.reassess(now=at(window + 2)) is None  # nothing changed since
    spot = chart.reassess(now=at(DEFAULT_STALENESS_S[VitalCode.SYSTOLIC_BP] + 1))
    assert spot is not None
    assert spot.components["systolic_bp"] is None
    assert spot.components["temperature"] is None


def test_a_fresh_reading_brings_a_stale_vital_back() -> None:
    chart = PatientChart("pt-7")
    full_set(chart, at(0))
    chart.reassess(now=at(3600))
    back = chart.observe(obs(VitalCode.SPO2, 97, at(3600)), now=at(3600))
    assert back is not None
    assert back.components["spo2"] == 0


def test_set_staleness_applies_at_once() -> None:
    chart = PatientChart("pt-7")
    full_set(chart, at(0))
    assert chart.reassess(now=at(120)) is None
    shorter = chart.set_staleness({VitalCode.BODY_TEMPERATURE: 60}, now=at(120))
    assert shorter is not None
    assert shorter.components["temperature"] is None
    assert chart.settings.staleness_s[VitalCode.BODY_TEMPERATURE] == 60
    assert chart.settings.staleness_s[VitalCode.SPO2] == DEFAULT_STALENESS_S[VitalCode.SPO2]
    with pytest.raises(ValidationError):
        chart.set_staleness({VitalCode.SPO2: 0}, now=at(121))


@pytest.mark.parametrize(
    ("quality", "perfusion_index", "reason"),
    [
        ([QualityFlag.PROBE_OFF], None, ExclusionReason.PROBE_OFF),
        ([QualityFlag.LOW_PERFUSION], None, ExclusionReason.LOW_PERFUSION),
        ([QualityFlag.NO_SENSOR_CONTACT], None, ExclusionReason.NO_SENSOR_CONTACT),
        ([QualityFlag.IMPLAUSIBLE], None, ExclusionReason.IMPLAUSIBLE),
        ([QualityFlag.DEVICE_ERROR], None, ExclusionReason.DEVICE_ERROR),
        ([], 0.59, ExclusionReason.LOW_PERFUSION),
        ([], 0.6, None),
        ([QualityFlag.MOTION], 2.0, None),  # motion is left to the rolling median
    ],
)
def test_quality_filter(
    quality: list[QualityFlag], perfusion_index: float | None, reason: ExclusionReason | None
) -> None:
    reading = obs(VitalCode.SPO2, 80, at(0), quality=quality, perfusion_index=perfusion_index)
    assert exclusion_reason(reading, settings=ChartSettings(), now=at(0)) is reason
    chart = PatientChart("pt-7", settings=ChartSettings(median_window_s=0))
    full_set(chart, at(0))
    result = chart.observe(reading, now=at(1))
    if reason is None:
        assert result is not None
        assert result.components["spo2"] == 3
    else:
        assert result is None  # not scored: the picture is unchanged
        assert chart.excluded[reason] == 1
        assert chart.latest[VitalCode.SPO2].value == 97


@pytest.mark.parametrize(
    ("vital", "value", "excluded"),
    [
        (VitalCode.HEART_RATE, 19, True),
        (VitalCode.HEART_RATE, 20, False),
        (VitalCode.HEART_RATE, 251, True),
        (VitalCode.SPO2, 49, True),
        (VitalCode.SPO2, 50, False),
        (VitalCode.RESPIRATORY_RATE, 2, True),
        (VitalCode.SYSTOLIC_BP, 39, True),
        (VitalCode.BODY_TEMPERATURE, 24.9, True),
        (VitalCode.BODY_TEMPERATURE, 45, False),
    ],
)
def test_physiologically_impossible_values_are_not_scored(
    vital: VitalCode, value: float, excluded: bool
) -> None:
    reason = exclusion_reason(obs(vital, value, at(0)), settings=ChartSettings(), now=at(0))
    assert reason is (ExclusionReason.IMPLAUSIBLE if excluded else None)


def test_a_reading_from_the_future_is_not_scored_but_small_skew_is_tolerated() -> None:
    chart = PatientChart("pt-7")
    assert chart.observe(obs(VitalCode.SYSTOLIC_BP, 85, at(301)), now=at(0)) is not None  # first: all missing
    assert chart.excluded[ExclusionReason.FUTURE_TIMESTAMP] == 1
    assert VitalCode.SYSTOLIC_BP not in chart.latest
    skewed = chart.observe(obs(VitalCode.SYSTOLIC_BP, 85, at(300)), now=at(0))
    assert skewed is not None
    assert skewed.components["systolic_bp"] == 3
    assert skewed.input_ages_s["systolic_bp"] == 0.0  # never negative


def test_one_artefact_sample_cannot_raise_an_alert() -> None:
    chart = PatientChart("pt-7")
    full_set(chart, at(0))
    for second in range(1, 30):
        assert chart.observe(obs(VitalCode.SPO2, 97, at(second)), now=at(second)) is None
        assert chart.observe(obs(VitalCode.HEART_RATE, 70, at(second)), now=at(second)) is None
    assert chart.observe(obs(VitalCode.SPO2, 70, at(30)), now=at(30)) is None  # a single artefact
    assert chart.observe(obs(VitalCode.HEART_RATE, 190, at(30)), now=at(30)) is None
    assert chart.latest[VitalCode.SPO2].value == 97


def test_a_sustained_desaturation_is_scored_once_it_is_the_median() -> None:
    chart = PatientChart("pt-7", settings=ChartSettings(median_window_s=10))
    full_set(chart, at(0))
    for second in range(1, 11):
        chart.observe(obs(VitalCode.SPO2, 97, at(second)), now=at(second))
    emitted = []
    for second in range(11, 30):
        result = chart.observe(obs(VitalCode.SPO2, 88, at(second)), now=at(second))
        if result is not None:
            emitted.append((second, result.components["spo2"]))
    # Window [t-10, t] holds 11 samples; 88 becomes the median when it is 6 of them: at t = 16.
    assert emitted == [(16, 3)]
    assert chart.latest[VitalCode.SPO2].measured_at == at(29)


def test_late_samples_join_the_median_but_do_not_move_the_latest_time() -> None:
    chart = PatientChart("pt-7", settings=ChartSettings(median_window_s=60))
    chart.observe(obs(VitalCode.SPO2, 90, at(100)), now=at(100))
    chart.observe(obs(VitalCode.SPO2, 98, at(90)), now=at(101))  # arrives late, within the window
    chart.observe(obs(VitalCode.SPO2, 98, at(95)), now=at(101))
    assert chart.latest[VitalCode.SPO2].value == 98
    assert chart.latest[VitalCode.SPO2].measured_at == at(100)
    chart.observe(obs(VitalCode.SPO2, 50, at(10)), now=at(101))  # older than the window: ignored
    assert chart.latest[VitalCode.SPO2].value == 98


def test_an_older_spot_reading_does_not_replace_a_newer_one() -> None:
    chart = PatientChart("pt-7")
    chart.observe(obs(VitalCode.SYSTOLIC_BP, 120, at(600)), now=at(600))
    assert chart.observe(obs(VitalCode.SYSTOLIC_BP, 85, at(0)), now=at(601)) is None
    assert chart.latest[VitalCode.SYSTOLIC_BP].value == 120


def test_settings_are_commands() -> None:
    chart = PatientChart("pt-7")
    full_set(chart, at(0), spo2=96)
    scale_2 = chart.set_spo2_scale(2, now=at(10))
    assert scale_2 is not None
    assert (scale_2.spo2_scale, scale_2.components["spo2"]) == (2, 0)  # 96 on air, Scale 2
    oxygen = chart.set_on_oxygen(True, now=at(20))
    assert oxygen is not None
    assert oxygen.on_oxygen
    assert (oxygen.components["spo2"], oxygen.components["air_or_oxygen"], oxygen.total) == (2, 2, 4)
    assert oxygen.input_ages_s["on_oxygen"] == 0.0
    confused = chart.set_consciousness(Consciousness.CONFUSION, now=at(30))
    assert confused is not None
    assert (confused.consciousness, confused.components["consciousness"], confused.total) == ("C", 3, 7)
    assert confused.risk is Risk.HIGH
    assert chart.set_consciousness("V", now=at(31)) is not None  # same score, new setting: reported
    assert chart.set_consciousness("V", now=at(32)) is None
    assert chart.set_spo2_scale(2, now=at(33)) is None
    with pytest.raises(ValueError, match="spo2_scale"):
        chart.set_spo2_scale(3, now=at(34))  # type: ignore[arg-type]


def test_a_setting_change_is_reported_even_without_readings() -> None:
    chart = PatientChart("pt-7")
    assert chart.reassess(now=at(0)) is not None
    changed = chart.set_spo2_scale(2, now=at(1))
    assert changed is not None
    assert changed.spo2_scale == 2


def test_trend_rising_within_the_window_and_clearing_after_it() -> None:
    chart = PatientChart("pt-7", settings=ChartSettings(trend_window_s=3600, trend_rise=2))
    full_set(chart, at(0))
    one = chart.observe(obs(VitalCode.BODY_TEMPERATURE, 38.5, at(600)), now=at(600))  # +1
    assert one is not None
    assert not one.trend_rising
    two = chart.observe(obs(VitalCode.RESPIRATORY_RATE, 21, at(1200)), now=at(1200))  # +2 more: 3 in 20 min
    assert two is not None
    assert (two.total, two.trend_rising) == (3, True)
    assert chart.reassess(now=at(3600)) is None  # the total 0 was in effect until 600 s: still in window
    # At 4200 the baseline 0 has left the window, but 1 (in effect 600..1200) is still in it: 3 - 1 = 2.
    assert chart.reassess(now=at(4200)) is None
    cleared = chart.reassess(now=at(1200 + 3601))
    assert cleared is not None
    assert not cleared.trend_rising


def test_a_vital_coming_back_from_stale_is_not_a_rise() -> None:
    chart = PatientChart("pt-7", settings=ChartSettings(trend_window_s=12 * 3600))
    full_set(chart, at(0), systolic_bp=95)  # SBP scores 2
    stale = chart.reassess(now=at(13 * 3600))  # spot window 12 h: every vital stale
    assert stale is not None
    assert stale.total == 0
    back = full_set(chart, at(13 * 3600), systolic_bp=95)
    assert back is not None
    assert back.total == 2
    assert not back.trend_rising


def test_non_news2_vitals_are_ignored_and_unknown_ones_refused() -> None:
    chart = PatientChart("pt-7")
    assert chart.observe(obs(VitalCode.BODY_WEIGHT, 80, at(0)), now=at(0)) is None
    assert chart.last_assessment is None


def test_naive_now_is_refused() -> None:
    chart = PatientChart("pt-7")
    with pytest.raises(ValueError, match="timezone-aware"):
        chart.reassess(now=datetime(2026, 3, 1, 8, 0))


def test_a_driver_reading_is_accepted_as_it_is() -> None:
    chart = PatientChart("pt-7")
    reading = Reading(
        vital=Vital.SPO2,
        value=85.0,
        unit="%",
        measured_at=at(0),
        time_source=TimeSource.DEVICE,
        device_id="ox-1",
        quality=frozenset(),
        perfusion_index=3.1,
    )
    assessment = chart.observe(reading, now=at(0))
    assert assessment is not None
    assert assessment.components["spo2"] == 3
    probe_off = Reading(
        vital=Vital.SPO2,
        value=60.0,
        unit="%",
        measured_at=at(1),
        time_source=TimeSource.DEVICE,
        device_id="ox-1",
        quality=frozenset({"probe_off"}),
    )
    assert chart.observe(probe_off, now=at(1)) is None
    assert chart.excluded[ExclusionReason.PROBE_OFF] == 1


def test_the_assessment_is_the_wire_message_without_its_head() -> None:
    chart = PatientChart(
        "pt-7", on_oxygen=True, spo2_scale=2, consciousness=Consciousness.VOICE, settings_at=at(0)
    )
    content = full_set(chart, at(5), spo2=93)
    assert content is not None
    message = Assessment(
        message_id=new_message_id(),
        gateway_id="gw-1",
        seq=12,
        sent_at=at(6),
        **content.model_dump(),
    )
    decoded = decode(Assessment, encode(message))
    assert decoded == message
    assert decoded.components["spo2"] == 1
    assert decoded.consciousness is Consciousness.VOICE
    assert isinstance(decoded.message_id, uuid.UUID)
