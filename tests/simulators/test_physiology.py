"""The patient model: determinism, random access, ranges, cadence, artefacts and equipment faults."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol import VITALS, Observation, QualityFlag, TimeSource, VitalCode
from simulators.physiology import (
    CADENCES,
    DEFAULT_START,
    NEWS2_KIT,
    SCENARIOS,
    Cadence,
    Course,
    DeviceKind,
    FaultEvent,
    FaultKind,
    Measurement,
    Patient,
    PhysiologyError,
    Scenario,
    ScenarioError,
    UnknownScenarioError,
    get_scenario,
)
from simulators.physiology.course import LIMITS
from simulators.physiology.faults import battery_pct, transitions
from simulators.physiology.scenarios import Expectation

HOUR = 3600
DAY = 24 * HOUR
OXIMETER = DeviceKind.PULSE_OXIMETER_CONTINUOUS
ALL_DEVICES = tuple(DeviceKind)

seeds = st.integers(min_value=0, max_value=2**63 - 1)
scenario_names = st.sampled_from(sorted(SCENARIOS))
starts = st.integers(min_value=0, max_value=24 * 60 - 1).map(lambda m: DEFAULT_START + timedelta(minutes=m))


def minutes(hours: float) -> np.ndarray:
    return np.arange(0, hours * HOUR, 60.0)


# ------------------------------------------------------------------------------------------------------
# determinism and random access


@given(seed=seeds, name=scenario_names)
@settings(max_examples=25)
def test_same_seed_gives_the_same_series(seed: int, name: str) -> None:
    times = minutes(48)
    first = Patient(name, seed=seed).vitals_series(times)
    second = Patient(name, seed=seed).vitals_series(times)
    for vital in VitalCode:
        np.testing.assert_array_equal(first[vital], second[vital])
    np.testing.assert_array_equal(first.perfusion_index, second.perfusion_index)
    assert first.consciousness == second.consciousness
    samples_a = list(Patient(name, seed=seed).samples(5 * HOUR, 5.1 * HOUR, devices=ALL_DEVICES))
    samples_b = list(Patient(name, seed=seed).samples(5 * HOUR, 5.1 * HOUR, devices=ALL_DEVICES))
    assert samples_a == samples_b
    assert samples_a


@given(seed=seeds, name=scenario_names)
@settings(max_examples=25)
def test_different_seeds_give_different_series(seed: int, name: str) -> None:
    other = seed + 1 if seed < 2**63 - 1 else seed - 1
    times = minutes(24)
    a = Patient(name, seed=seed).vitals_series(times)
    b = Patient(name, seed=other).vitals_series(times)
    for vital in (VitalCode.HEART_RATE, VitalCode.SYSTOLIC_BP, VitalCode.BODY_TEMPERATURE):
        assert not np.allclose(a[vital], b[vital])
    oximeter_a = [s.values for s in Patient(name, seed=seed).device_samples(OXIMETER, 0, 600)]
    oximeter_b = [s.values for s in Patient(name, seed=other).device_samples(OXIMETER, 0, 600)]
    assert oximeter_a != oximeter_b


def test_a_golden_value_pins_the_generator() -> None:
    """Changing the noise construction silently would change every recorded demo; make it loud."""
    vitals = Patient("stable", seed=42).vitals_at(6 * HOUR)
    values = Patient("stable", seed=42).vitals_series([6 * HOUR])
    assert vitals.heart_rate == values[VitalCode.HEART_RATE][0]
    again = Patient("stable", seed=42).vitals_at(DEFAULT_START + timedelta(hours=6))
    assert again == vitals
    # numpy's Generator streams are pinned by constraints.txt; a numpy upgrade that changes them shows here.
    assert vitals.heart_rate == pytest.approx(74.14438520974771, abs=1e-9)
    assert vitals.spo2 == pytest.approx(97.34345333423492, abs=1e-9)
    assert vitals.body_temperature == pytest.approx(37.110106957236084, abs=1e-9)
    sample = next(Patient("stable", seed=42).device_samples(OXIMETER, 6 * HOUR))
    assert sample.t_s == 6 * HOUR
    assert sample.values == {VitalCode.SPO2: 98.0, VitalCode.HEART_RATE: 75.0}
    assert sample.perfusion_index == 2.05


@given(seed=seeds, name=scenario_names)
@settings(max_examples=15)
def test_random_access_does_not_depend_on_order_or_batching(seed: int, name: str) -> None:
    patient = Patient(name, seed=seed)
    times = np.array([40 * HOUR + 17.5, 3.25, 7 * HOUR, 0.0, 47.9 * HOUR, 12345.678])
    together = patient.vitals_series(times)
    backwards = patient.vitals_series(times[::-1])
    for i, t in enumerate(times):
        single = Patient(name, seed=seed).vitals_at(float(t))
        for vital in VitalCode:
            assert single.value(vital) == together[vital][i] == backwards[vital][len(times) - 1 - i]
        assert single.consciousness == together.consciousness[i]


@given(seed=seeds, name=scenario_names, cut=st.integers(min_value=1, max_value=1799))
@settings(max_examples=15)
def test_reading_an_interval_in_two_pieces_gives_the_same_samples(seed: int, name: str, cut: int) -> None:
    patient = Patient(name, seed=seed)
    begin, end = 0.75 * DAY, 0.75 * DAY + 1800
    whole = list(patient.samples(begin, end, devices=ALL_DEVICES))
    pieces = list(patient.samples(begin, begin + cut, devices=ALL_DEVICES)) + list(
        Patient(name, seed=seed).samples(begin + cut, end, devices=ALL_DEVICES)
    )
    assert whole == pieces


def test_endless_iteration_continues_past_the_scenario() -> None:
    patient = Patient("stable", seed=1)
    stream = patient.device_samples(DeviceKind.RESPIRATION_MONITOR, 47 * HOUR)
    taken = list(itertools.islice(stream, 180))
    assert [s.t_s for s in taken] == list(range(47 * HOUR, 50 * HOUR, 60))


# ------------------------------------------------------------------------------------------------------
# ranges


@given(seed=seeds, name=scenario_names, start=starts)
@settings(max_examples=30)
def test_true_vitals_stay_within_the_wire_contract_ranges(seed: int, name: str, start: datetime) -> None:
    series = Patient(name, seed=seed, start=start).vitals_series(minutes(48))
    for vital in VitalCode:
        spec = VITALS[vital]
        low, high = LIMITS[vital]
        values = series[vital]
        assert np.all(np.isfinite(values))
        assert spec.minimum <= low <= values.min() and values.max() <= high <= spec.maximum, vital
    assert np.all(series[VitalCode.DIASTOLIC_BP] < series[VitalCode.SYSTOLIC_BP])
    assert np.all(series[VitalCode.DIASTOLIC_BP] < series[VitalCode.MEAN_ARTERIAL_PRESSURE])
    assert np.all(series[VitalCode.MEAN_ARTERIAL_PRESSURE] < series[VitalCode.SYSTOLIC_BP])
    assert np.all((series.perfusion_index > 0) & (series.perfusion_index <= 100))


@given(seed=seeds, name=scenario_names, hour=st.integers(min_value=0, max_value=47))
@settings(max_examples=30)
def test_every_sample_is_a_valid_observation(seed: int, name: str, hour: int) -> None:
    patient = Patient(name, seed=seed)
    continuous = [kind for kind in ALL_DEVICES if CADENCES[kind].continuous]
    spot = [kind for kind in ALL_DEVICES if not CADENCES[kind].continuous]
    samples = itertools.chain(
        patient.samples(hour * HOUR, hour * HOUR + 600, devices=continuous),
        patient.samples(0, 2 * DAY, devices=spot),
    )
    for sample in samples:
        for vital, value in sample.values.items():
            assert vital in CADENCES[sample.device_kind].vitals
            spec = VITALS[vital]
            assert spec.minimum <= value <= spec.maximum
        observations = sample.to_observations(patient_id="pt-0001", device_id="dev-1")
        assert len(observations) == len(sample.values)
        for observation in observations:
            assert isinstance(observation, Observation)
            assert observation.measured_at == sample.measured_at
            assert observation.time_source is TimeSource.DEVICE
            assert set(observation.quality) == set(sample.quality)


def test_values_are_reported_at_the_device_resolution() -> None:
    patient = Patient("sepsis", seed=5)
    seen = 0
    spot = [kind for kind in ALL_DEVICES if not CADENCES[kind].continuous]
    samples = itertools.chain(
        patient.samples(0, 2 * DAY, devices=spot),
        *(patient.device_samples(kind, 20 * HOUR, 21 * HOUR) for kind in ALL_DEVICES if kind not in spot),
    )
    for sample in samples:
        for measurement in CADENCES[sample.device_kind].measures:
            value = sample.values[measurement.vital]
            steps = value / measurement.resolution
            assert math.isclose(steps, round(steps), abs_tol=1e-6), (sample.device_kind, value)
            seen += 1
    assert seen > 7000


# ------------------------------------------------------------------------------------------------------
# cadence


def test_continuous_devices_sample_on_their_period() -> None:
    patient = Patient("stable", seed=3)
    oximeter = [s.t_s for s in patient.device_samples(OXIMETER, 100.5, 4000)]
    assert oximeter == list(range(101, 4000))
    respiration = [s.t_s for s in patient.device_samples(DeviceKind.RESPIRATION_MONITOR, 0, 2 * HOUR)]
    assert respiration == list(range(0, 2 * HOUR, 60))


@pytest.mark.parametrize(
    "kind",
    [kind for kind, cadence in CADENCES.items() if not cadence.continuous],
)
@given(seed=seeds, offset_h=st.integers(min_value=-12, max_value=14), start=starts)
@settings(max_examples=10)
def test_spot_devices_follow_their_local_schedule(
    kind: DeviceKind, seed: int, offset_h: int, start: datetime
) -> None:
    cadence = CADENCES[kind]
    patient = Patient("stable", seed=seed, start=start, utc_offset=timedelta(hours=offset_h))
    times = patient.schedule(kind, 0, 5 * DAY)
    assert np.all(np.diff(times) > 0)
    local = [(start + timedelta(hours=offset_h, seconds=int(t))) for t in times]
    for when in local:
        hour = when.hour + when.minute / 60 + when.second / 3600
        nearest = min(abs((hour - slot + 12) % 24 - 12) for slot in cadence.times_of_day_h)
        assert nearest * HOUR <= 2 * cadence.jitter_s + 1  # rounded to whole seconds
    # every whole local day in the interval has each of its uses exactly once
    per_day: dict[object, int] = {}
    for when in local:
        per_day[when.date()] = per_day.get(when.date(), 0) + 1
    whole_days = sorted(per_day)[1:-1]
    # 5 days hold at least 2 whole local days between the first and last date with a use (a once-a-day
    # device whose first and last uses are jittered out of the interval shows only 4 dates)
    assert len(whole_days) >= 2
    assert all(per_day[day] == len(cadence.times_of_day_h) for day in whole_days)
    samples = [s.t_s for s in patient.device_samples(kind, 0, 5 * DAY)]
    assert samples == times.tolist()


def test_spot_devices_are_jittered_not_on_the_hour() -> None:
    patient = Patient("stable", seed=11)
    times = patient.schedule(DeviceKind.BLOOD_PRESSURE, 0, 10 * DAY)
    offsets = {int(t) % 3600 for t in times}
    assert len(offsets) > len(times) // 2


def test_scenario_kit_merges_devices_in_time_order() -> None:
    patient = Patient("sepsis", seed=8)
    samples = list(patient.samples(0, DAY))
    assert [s.t_s for s in samples] == sorted(s.t_s for s in samples)
    kinds = {s.device_kind for s in samples}
    assert kinds == set(patient.scenario.devices) >= set(NEWS2_KIT)
    counts = {kind: sum(1 for s in samples if s.device_kind is kind) for kind in kinds}
    assert counts[OXIMETER] == DAY
    assert counts[DeviceKind.RESPIRATION_MONITOR] == DAY // 60
    assert counts[DeviceKind.BLOOD_PRESSURE] == 3
    assert counts[DeviceKind.THERMOMETER] == 6
    first = samples[0]
    assert first.measured_at == DEFAULT_START + timedelta(seconds=first.t_s)
    assert first.measured_at.tzinfo is UTC


# ------------------------------------------------------------------------------------------------------
# realism


def test_circadian_rhythm_lowers_pulse_pressure_and_temperature_at_night() -> None:
    night, afternoon = [], []
    for seed in range(6):
        patient = Patient("stable", seed=seed, start=datetime(2026, 1, 5, 0, 0, tzinfo=UTC))
        series = patient.vitals_series(minutes(96))
        hour_of_day = (series.t_s / HOUR) % 24
        night.append({v: series[v][(hour_of_day >= 2) & (hour_of_day < 5)].mean() for v in VitalCode})
        afternoon.append({v: series[v][(hour_of_day >= 14) & (hour_of_day < 17)].mean() for v in VitalCode})
    for vital, margin in (
        (VitalCode.HEART_RATE, 4.0),
        (VitalCode.SYSTOLIC_BP, 6.0),
        (VitalCode.BODY_TEMPERATURE, 0.25),
    ):
        assert np.mean([a[vital] for a in afternoon]) - np.mean([n[vital] for n in night]) > margin


def test_utc_offset_moves_the_rhythm_with_local_time() -> None:
    start = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    home = Patient("stable", seed=2, start=start, utc_offset=timedelta(hours=0))
    abroad = Patient("stable", seed=2, start=start - timedelta(hours=5), utc_offset=timedelta(hours=5))
    # Same local clock for the same t: the circadian parts agree (noise is indexed by t, so it agrees too).
    times = minutes(24)
    np.testing.assert_allclose(
        home.vitals_series(times)[VitalCode.HEART_RATE], abroad.vitals_series(times)[VitalCode.HEART_RATE]
    )


def test_physiological_noise_is_realistic() -> None:
    """Varies like a person (not a constant, not white noise), within the bounds of a resting adult."""
    series = Patient("stable", seed=21).vitals_series(np.arange(0, DAY, 1.0))
    hr = series[VitalCode.HEART_RATE]
    assert 2.5 < hr.std() < 10
    assert np.abs(np.diff(hr)).max() < 1.0  # smooth second to second
    spo2 = series[VitalCode.SPO2]
    assert spo2.min() > 94 and spo2.max() <= 100
    temperature = series[VitalCode.BODY_TEMPERATURE]
    assert 0.1 < temperature.max() - temperature.min() < 1.5


def test_glucose_rises_after_meals() -> None:
    patient = Patient("stable", seed=4, start=datetime(2026, 1, 5, 0, 0, tzinfo=UTC))
    series = patient.vitals_series(minutes(24))
    glucose = series[VitalCode.BLOOD_GLUCOSE]
    before_lunch = glucose[int(12.9 * 60)]
    after_lunch = glucose[int(13.9 * 60)]
    assert after_lunch - before_lunch > 20


def test_atrial_fibrillation_is_irregular_only_after_onset() -> None:
    series = Patient("af_fast", seed=9).vitals_series(np.arange(0, 8 * HOUR, 1.0))
    hr = series[VitalCode.HEART_RATE]
    before = np.abs(np.diff(hr[: 3 * HOUR]))
    after = np.abs(np.diff(hr[4 * HOUR :]))
    assert before.mean() < 0.2
    assert after.mean() > 2.0
    assert hr[: 3 * HOUR].mean() < 95 < 125 < hr[4 * HOUR :].mean()


# ------------------------------------------------------------------------------------------------------
# artefacts


def _oximeter(patient: Patient, t0: float, t1: float) -> list:  # type: ignore[type-arg]
    return list(patient.device_samples(OXIMETER, t0, t1))


@given(seed=seeds)
@settings(max_examples=5)
def test_probe_off_samples_carry_no_values_only_inside_the_interval(seed: int) -> None:
    patient = Patient("artefacts", seed=seed)
    probe_off = [e for e in patient.faults if e.kind is FaultKind.PROBE_OFF]
    assert probe_off
    for event in probe_off:
        around = _oximeter(patient, event.start_s - 120, event.end_s + 120)
        for sample in around:
            if event.active(sample.t_s):
                assert sample.values == {}
                assert sample.quality == {QualityFlag.PROBE_OFF}
                assert sample.perfusion_index is None
                assert sample.to_observations(patient_id="p1", device_id="d1") == []
            else:
                assert QualityFlag.PROBE_OFF not in sample.quality
                assert set(sample.values) == {VitalCode.SPO2, VitalCode.HEART_RATE}
    assert all(s.values for s in _oximeter(patient, 4 * HOUR, 5 * HOUR))


@given(seed=seeds)
@settings(max_examples=5)
def test_motion_gives_single_sample_outliers_inside_motion_windows(seed: int) -> None:
    patient = Patient("artefacts", seed=seed)
    event = next(e for e in patient.faults if e.kind is FaultKind.MOTION)
    samples = _oximeter(patient, event.start_s - 600, event.end_s + 600)
    truth = patient.vitals_series([s.t_s for s in samples])
    outliers = [
        i
        for i, s in enumerate(samples)
        if s.values and s.values[VitalCode.HEART_RATE] - truth[VitalCode.HEART_RATE][i] > 18
    ]
    expected = event.artefacts_per_min * (event.end_s - event.start_s) / 60
    assert 0.4 * expected < len(outliers) < 1.8 * expected
    for i in outliers:
        sample = samples[i]
        assert event.active(sample.t_s)
        assert truth[VitalCode.SPO2][i] - sample.values[VitalCode.SPO2] > 3.5
        # single: the neighbours are ordinary readings
        for j in (i - 1, i + 1):
            if j not in outliers and 0 <= j < len(samples):
                assert abs(samples[j].values[VitalCode.SPO2] - truth[VitalCode.SPO2][j]) < 4
    flagged = [i for i in outliers if QualityFlag.MOTION in samples[i].quality]
    assert 0 < len(flagged) < len(outliers)  # the scenario flags half of them
    assert all(QualityFlag.MOTION not in s.quality for k, s in enumerate(samples) if k not in outliers)


def test_low_perfusion_is_flagged_with_a_low_perfusion_index() -> None:
    patient = Patient("artefacts", seed=12)
    event = next(e for e in patient.faults if e.kind is FaultKind.LOW_PERFUSION)
    for sample in _oximeter(patient, event.start_s - 300, event.end_s + 300):
        assert sample.perfusion_index is not None
        if event.active(sample.t_s):
            assert sample.perfusion_index < 0.6
            assert QualityFlag.LOW_PERFUSION in sample.quality
        else:
            assert sample.perfusion_index > 0.6
            assert QualityFlag.LOW_PERFUSION not in sample.quality


def test_stable_scenario_has_no_artefacts() -> None:
    patient = Patient("stable", seed=13)
    for sample in patient.samples(0, 6 * HOUR):
        assert sample.quality == frozenset()
        assert sample.values


# ------------------------------------------------------------------------------------------------------
# equipment faults


def test_battery_drains_dies_and_is_replaced() -> None:
    patient = Patient("battery_drain", seed=1)
    assert patient.battery_pct(OXIMETER, 0) == 100
    assert patient.battery_pct(OXIMETER, 2 * HOUR) == 60
    assert patient.battery_pct(OXIMETER, 6 * HOUR) == pytest.approx(32.5)
    assert patient.battery_pct(OXIMETER, 10.5 * HOUR) == pytest.approx(3)
    assert patient.battery_pct(OXIMETER, 12 * HOUR) == 0
    assert patient.battery_pct(OXIMETER, 14 * HOUR) == 100
    assert not patient.device_powered(OXIMETER, 12 * HOUR)
    assert not patient.device_connected(OXIMETER, 12 * HOUR)
    assert patient.device_powered(OXIMETER, 14 * HOUR)
    times = [s.t_s for s in patient.device_samples(OXIMETER, 10.9 * HOUR, 14.1 * HOUR)]
    expected = range(math.ceil(10.9 * HOUR), math.ceil(14.1 * HOUR))
    assert times == [t for t in expected if not 11 * HOUR <= t < 14 * HOUR]
    cuff = DeviceKind.BLOOD_PRESSURE
    levels = [patient.battery_pct(cuff, h * HOUR) for h in range(49)]
    assert levels[0] == 40 and levels[48] == 25 and levels == sorted(levels, reverse=True)


def test_disconnected_devices_still_measure_but_cannot_deliver() -> None:
    patient = Patient("disconnects", seed=1)
    thermometer = DeviceKind.THERMOMETER
    assert patient.device_connected(thermometer, 11.9 * HOUR)
    assert not patient.device_connected(thermometer, 12 * HOUR)
    assert not patient.device_connected(thermometer, 19.99 * HOUR)
    assert patient.device_connected(thermometer, 20 * HOUR)
    during = [s for s in patient.device_samples(thermometer, 12 * HOUR, 20 * HOUR)]
    assert len(during) >= 1  # kept in the thermometer's memory, delivered after reconnection
    assert patient.uplink_up(12 * HOUR)


def test_uplink_loss_covers_the_deterioration() -> None:
    patient = Patient("uplink_loss", seed=1)
    assert patient.uplink_up(9.99 * HOUR)
    assert not patient.uplink_up(10 * HOUR)
    assert not patient.uplink_up(19.99 * HOUR)
    assert patient.uplink_up(20 * HOUR)
    changes = list(patient.fault_transitions(0, 48 * HOUR))
    assert [(c.t_s, c.begins) for c in changes] == [(10 * HOUR, True), (20 * HOUR, False)]
    assert changes[0].event.device_kind is None


def test_transitions_are_in_time_order_with_endings_first() -> None:
    a = FaultEvent(FaultKind.DEVICE_DISCONNECT, 10, 20, OXIMETER)
    b = FaultEvent(FaultKind.DEVICE_DISCONNECT, 20, 30, OXIMETER)
    listed = list(transitions((b, a), 0, 100))
    assert [(t.t_s, t.begins, t.event) for t in listed] == [
        (10, True, a),
        (20, False, a),
        (20, True, b),
        (30, False, b),
    ]
    assert [t.t_s for t in transitions((a, b), 15, 25)] == [20, 20]


def test_battery_without_events_is_full() -> None:
    assert battery_pct((), OXIMETER, 1e6) == 100


# ------------------------------------------------------------------------------------------------------
# errors


def test_unknown_scenario_lists_the_known_ones() -> None:
    with pytest.raises(UnknownScenarioError) as caught:
        Patient("sepsiss", seed=1)
    assert "sepsis" in str(caught.value) and "stable" in str(caught.value)
    assert isinstance(caught.value, PhysiologyError)
    assert isinstance(caught.value, KeyError)
    assert get_scenario("copd").course.spo2_scale == 2


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True])
def test_bad_seeds_are_refused(seed: object) -> None:
    with pytest.raises(ScenarioError, match="seed"):
        Patient("stable", seed=seed)  # type: ignore[arg-type]


def test_naive_start_and_negative_times_are_refused() -> None:
    with pytest.raises(ScenarioError, match="timezone"):
        Patient("stable", seed=1, start=datetime(2026, 1, 1))
    patient = Patient("stable", seed=1)
    with pytest.raises(ScenarioError, match=">= 0"):
        patient.vitals_at(-1)
    with pytest.raises(ScenarioError, match="finite"):
        patient.vitals_series([math.nan])
    with pytest.raises(ScenarioError, match="no cadence"):
        Patient("stable", seed=1, cadences={}).schedule(OXIMETER, 0, 10)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FaultEvent(FaultKind.PROBE_OFF, 10, 5, OXIMETER), "start_s < end_s"),
        (lambda: FaultEvent(FaultKind.PROBE_OFF, 0, 5), "device_kind"),
        (lambda: FaultEvent(FaultKind.UPLINK_DOWN, 0, 5, OXIMETER), "device_kind"),
        (lambda: FaultEvent(FaultKind.MOTION, 0, 5, OXIMETER), "artefacts_per_min"),
        (lambda: FaultEvent(FaultKind.LOW_PERFUSION, 0, 5, OXIMETER, perfusion_index=1.0), "perfusion"),
        (lambda: FaultEvent(FaultKind.BATTERY_DRAIN, 0, 5, OXIMETER, from_pct=10, to_pct=20), "to_pct"),
        (lambda: Course(keyframes={VitalCode.HEART_RATE: ((5, 70), (1, 80))}), "ascend"),
        (lambda: Course(keyframes={VitalCode.SPO2: ((0, 120),)}), "within"),
        (lambda: Course(keyframes={VitalCode.MEAN_ARTERIAL_PRESSURE: ((0, 90),)}), "derived"),
        (lambda: Course(consciousness=()), "consciousness"),
        (lambda: Course(hr_irregularity=((0, 90),)), "irregularity"),
        (
            lambda: Cadence(DeviceKind.THERMOMETER, (), times_of_day_h=(1.0,)),
            "measures nothing",
        ),
        (
            lambda: Cadence(
                DeviceKind.THERMOMETER,
                (Measurement(VitalCode.BODY_TEMPERATURE, 0.1, 0.1),),
                period_s=60,
                times_of_day_h=(1.0,),
            ),
            "either",
        ),
        (
            lambda: Cadence(
                DeviceKind.THERMOMETER,
                (Measurement(VitalCode.BODY_TEMPERATURE, 0.1, 0.1),),
                times_of_day_h=(1.0, 2.0),
                jitter_s=1000,
            ),
            "jitter",
        ),
        (
            lambda: Scenario(
                "x",
                "x",
                Course(),
                Expectation("x"),
                devices=(OXIMETER,),
                faults=(FaultEvent(FaultKind.PROBE_OFF, 0, 5, DeviceKind.THERMOMETER),),
            ),
            "not in its kit",
        ),
    ],
)
def test_inconsistent_definitions_are_refused(build: object, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        build()  # type: ignore[operator]
