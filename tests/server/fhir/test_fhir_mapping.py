"""The pure mapping: golden JSON per resource kind, validation through the R4B models, pairing of blood
pressure, NEWS2 details, identity rules, and properties over random readings."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation as FhirObservation
from fhir_support import (
    GOLDEN,
    T,
    alert,
    as_json,
    assessment,
    check_golden,
    patient,
    reading,
    validated,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol import VITALS, QualityFlag, VitalCode
from server.fhir import codes, mapping

LOINC_BP = {"85354-9", "8480-6", "8462-4", "8478-0"}


def _codes(concept: dict[str, object]) -> list[str]:
    codings = concept.get("coding", [])
    assert isinstance(codings, list)
    return [coding["code"] for coding in codings]


# --------------------------------------------------------------------------------------------------
# Golden files, one per resource kind


def test_golden_vital_sign_observation() -> None:
    row = reading(
        "spo2", 93.0, quality=["motion", "low_perfusion"], perfusion_index=0.4, device_id="oximeter-1"
    )
    check_golden("observation-vital-sign", mapping.vital_observation(row))


def test_golden_blood_pressure_panel() -> None:
    rows = [
        reading("systolic_bp", 142.0, position=0),
        reading("diastolic_bp", 91.0, position=1),
        reading("mean_arterial_pressure", 108.0, position=2),
    ]
    [panel] = mapping.observations(rows)
    check_golden("observation-blood-pressure", panel)


def test_golden_news2_observation() -> None:
    check_golden("observation-news2", mapping.news2_observation(assessment()))


def test_golden_patient() -> None:
    check_golden("patient", mapping.patient(patient(), show_identity=True))


def test_golden_device() -> None:
    info = mapping.DeviceInfo("gw-home-7", "oximeter-1", "pt-0042", "pulse_oximeter")
    check_golden("device", mapping.device(info))


def test_golden_gateway_device() -> None:
    check_golden(
        "device-gateway", mapping.gateway_device(mapping.GatewayInfo("gw-home-7", "pt-0042", "0.1.0"))
    )


def test_golden_flag() -> None:
    check_golden("flag", mapping.alert_flag(alert()))


def test_golden_searchset_bundle() -> None:
    resources = mapping.observations(
        [reading("heart_rate", 88.0), reading("respiratory_rate", 18.0, position=1)]
    )
    bundle = mapping.searchset(
        [(resource, "match") for resource in resources],
        base_url="https://ward.example.org/fhir",
        self_url="https://ward.example.org/fhir/Observation?patient=pt-0042&_count=2",
        next_url="https://ward.example.org/fhir/Observation?patient=pt-0042&_count=2&_cursor=abc",
    )
    check_golden("bundle-searchset", bundle)


def test_golden_operation_outcome() -> None:
    outcome = mapping.operation_outcome("invalid", "date='yesterday' is not a FHIR date", expression="date")
    check_golden("operationoutcome", outcome)


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda path: path.stem)
def test_every_golden_file_is_a_valid_r4_resource(path: object) -> None:
    assert hasattr(path, "read_text")
    document = json.loads(path.read_text(encoding="utf-8"))
    resource = validated(document)
    assert as_json(resource) == document  # nothing lost or added by a round trip through the model


def test_there_is_a_golden_file_for_every_resource_kind() -> None:
    kinds = {json.loads(path.read_text())["resourceType"] for path in GOLDEN.glob("*.json")}
    assert kinds == {"Observation", "Patient", "Device", "Flag", "Bundle", "OperationOutcome"}


# --------------------------------------------------------------------------------------------------
# Vital signs


@pytest.mark.parametrize(
    "vital", [v for v in VitalCode if v not in (VitalCode.SYSTOLIC_BP, VitalCode.DIASTOLIC_BP)]
)
def test_each_vital_has_its_loinc_code_ucum_unit_and_profile(vital: VitalCode) -> None:
    spec = VITALS[vital]
    document = as_json(mapping.vital_observation(reading(vital.value, spec.minimum + 1)))
    assert spec.loinc in _codes(document["code"])
    assert document["valueQuantity"] == {
        "value": spec.minimum + 1,
        "unit": spec.ucum,
        "system": "http://unitsofmeasure.org",
        "code": spec.ucum,
    }
    assert document["status"] == "final"
    assert document["subject"] == {"reference": "Patient/pt-0042"}
    assert document["device"]["reference"].startswith("Device/dev-")
    assert document["effectiveDateTime"] == "2026-03-01T08:00:00Z"
    category = document["category"][0]["coding"][0]
    assert category["system"] == "http://terminology.hl7.org/CodeSystem/observation-category"
    if vital is VitalCode.BLOOD_GLUCOSE:
        assert category["code"] == "laboratory"
        assert "meta" not in document
    else:
        assert category["code"] == "vital-signs"
        assert document["meta"]["profile"] == [codes.VITAL_MAPPINGS[vital].profile]


def test_spo2_carries_the_code_the_oxygensat_profile_requires() -> None:
    document = as_json(mapping.vital_observation(reading("spo2", 97.0)))
    assert _codes(document["code"]) == ["2708-6", "59408-5"]


def test_quality_flags_are_extensions_and_a_note_and_historical_is_kept() -> None:
    row = reading("heart_rate", 130.0, quality=["probe_off", "implausible"], historical=True)
    document = as_json(mapping.vital_observation(row))
    quality = [
        e["valueCoding"]["code"] for e in document["extension"] if e["url"] == codes.SIGNAL_QUALITY_EXTENSION
    ]
    assert quality == ["probe_off", "implausible"]
    historical = [e for e in document["extension"] if e["url"] == codes.HISTORICAL_EXTENSION]
    assert historical == [{"url": codes.HISTORICAL_EXTENSION, "valueBoolean": True}]
    assert document["note"] == [
        {"text": "Signal quality flagged by the gateway: probe off, implausible value."}
    ]
    assert "interpretation" not in document


def test_fraction_of_a_second_survives_exactly() -> None:
    row = reading("heart_rate", 70.0, measured_at=T + timedelta(microseconds=123456))
    resource = mapping.vital_observation(row)
    assert as_json(resource)["effectiveDateTime"] == "2026-03-01T08:00:00.123456Z"
    assert mapping.resource_sort_key(resource) == (T + timedelta(microseconds=123456), resource.id)


def test_systolic_alone_is_refused_by_the_single_reading_mapping() -> None:
    with pytest.raises(ValueError, match="panel"):
        mapping.vital_observation(reading("systolic_bp", 120.0))


# --------------------------------------------------------------------------------------------------
# Blood pressure pairing


def test_panel_has_systolic_diastolic_and_mean_components_with_all_identifiers() -> None:
    rows = [
        reading("diastolic_bp", 80.0, position=4),
        reading("mean_arterial_pressure", 93.0, position=5),
        reading("systolic_bp", 120.0, position=3),
    ]
    [panel] = mapping.observations(rows)
    document = as_json(panel)
    assert _codes(document["code"]) == ["85354-9"]
    assert [(_codes(c["code"])[0], c["valueQuantity"]["value"]) for c in document["component"]] == [
        ("8480-6", 120.0),
        ("8462-4", 80.0),
        ("8478-0", 93.0),
    ]
    assert document["id"] == f"{rows[2].message_id}-3-bp"
    assert {i["value"] for i in document["identifier"]} == {f"{rows[0].message_id}/{p}" for p in (3, 4, 5)}
    assert "valueQuantity" not in document


def test_readings_of_other_devices_or_times_are_not_paired() -> None:
    rows = [
        reading("systolic_bp", 120.0, position=0, device_id="cuff-1"),
        reading("diastolic_bp", 80.0, position=1, device_id="cuff-2"),
        reading("systolic_bp", 130.0, position=2, measured_at=T + timedelta(seconds=1)),
        reading("diastolic_bp", 85.0, position=3, measured_at=T + timedelta(seconds=1)),
    ]
    panels = [as_json(resource) for resource in mapping.observations(rows)]
    assert len(panels) == 3
    absent = [c for panel in panels for c in panel["component"] if "dataAbsentReason" in c]
    assert sorted(_codes(c["code"])[0] for c in absent) == ["8462-4", "8480-6"]
    paired = [panel for panel in panels if all("valueQuantity" in c for c in panel["component"])]
    assert [[c["valueQuantity"]["value"] for c in p["component"]] for p in paired] == [[130.0, 85.0]]


def test_mean_pressure_without_a_cuff_pair_stays_an_observation_of_its_own() -> None:
    [single] = mapping.observations([reading("mean_arterial_pressure", 90.0)])
    assert _codes(as_json(single)["code"]) == ["8478-0"]


def test_missing_partner_gets_a_data_absent_component() -> None:
    [panel] = mapping.observations([reading("diastolic_bp", 70.0)])
    systolic = as_json(panel)["component"][0]
    assert _codes(systolic["code"]) == ["8480-6"]
    assert systolic["dataAbsentReason"]["coding"][0]["code"] == "unknown"


# --------------------------------------------------------------------------------------------------
# NEWS2, Patient, Device, Flag


def test_news2_total_components_risk_and_status() -> None:
    document = as_json(mapping.news2_observation(assessment()))
    assert document["code"]["coding"][0] == {
        "system": "http://snomed.info/sct",
        "code": "1104051000000101",
        "display": "Royal College of Physicians NEWS2 (National Early Warning Score 2) total score",
    }
    assert document["valueInteger"] == 8
    assert document["status"] == "final"
    scores = {c["code"]["coding"][0]["code"]: c.get("valueInteger") for c in document["component"]}
    assert scores["respiration"] == 2 and scores["spo2"] == 3 and scores["spo2_scale"] == 1
    assert "50604000000104" in _codes(document["interpretation"][0])
    assert document["category"][0]["coding"][0]["code"] == "survey"


def test_incomplete_news2_is_preliminary_with_the_missing_parameter_absent() -> None:
    document = as_json(mapping.news2_observation(assessment(complete=False)))
    assert document["status"] == "preliminary"
    temperature = next(c for c in document["component"] if c["code"]["coding"][0]["code"] == "temperature")
    assert "valueInteger" not in temperature
    assert temperature["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert "temperature" in document["note"][0]["text"]


def test_patient_name_only_when_the_role_may_see_it() -> None:
    assert "name" not in as_json(mapping.patient(patient(), show_identity=False))
    assert as_json(mapping.patient(patient(), show_identity=True))["name"] == [
        {"use": "usual", "text": "Ada Example"}
    ]
    assert "name" not in as_json(mapping.patient(patient(display_name=None), show_identity=True))


def test_pseudonym_that_is_not_a_fhir_id_gets_a_stable_digest_id() -> None:
    resource = mapping.patient(patient(patient_id="ward_7.bed_2"), show_identity=False)
    assert resource.id == mapping.patient_fhir_id("ward_7.bed_2")
    assert str(resource.id).startswith("pt-") and len(str(resource.id)) == 43
    assert as_json(resource)["identifier"][0]["value"] == "ward_7.bed_2"


def test_same_device_id_in_two_homes_gives_two_devices() -> None:
    first = mapping.device_fhir_id("gw-a", "oximeter-1")
    assert first != mapping.device_fhir_id("gw-b", "oximeter-1")
    assert first != mapping.gateway_fhir_id("gw-a")
    device = as_json(mapping.device(mapping.DeviceInfo("gw-a", "aa:bb:cc:dd:ee:ff", None)))
    assert device["identifier"][0]["value"] == "gw-a/aa:bb:cc:dd:ee:ff"
    assert device["parent"] == {"reference": f"Device/{mapping.gateway_fhir_id('gw-a')}"}


def test_resolved_alert_is_an_inactive_flag_with_an_end() -> None:
    document = as_json(mapping.alert_flag(alert(state="resolved", resolved_at=T + timedelta(minutes=20))))
    assert document["status"] == "inactive"
    assert document["period"] == {"start": "2026-03-01T08:00:31Z", "end": "2026-03-01T08:20:00Z"}
    priority = next(e for e in document["extension"] if e["url"] == codes.FLAG_PRIORITY_EXTENSION)
    assert priority["valueCodeableConcept"]["coding"][0]["code"] == "PH"


def test_alert_without_patient_has_no_flag() -> None:
    row = alert()
    row.patient_id = None
    with pytest.raises(ValueError, match="no patient"):
        mapping.alert_flag(row)


# --------------------------------------------------------------------------------------------------
# Properties over random readings

_vitals = st.sampled_from(list(VitalCode))


@st.composite
def _batches(draw: st.DrawFn) -> list[object]:
    rows = []
    count = draw(st.integers(min_value=1, max_value=15))
    for position in range(count):
        vital = draw(_vitals)
        spec = VITALS[vital]
        rows.append(
            reading(
                vital.value,
                draw(st.floats(min_value=spec.minimum, max_value=spec.maximum, allow_nan=False)),
                position=position,
                message_id=draw(st.sampled_from([uuid.UUID(int=1 << 76 | 7 << 76), uuid.UUID(int=2)])),
                measured_at=T + timedelta(seconds=draw(st.integers(min_value=0, max_value=3))),
                device_id=draw(st.sampled_from(["cuff-1", "cuff-2"])),
                quality=draw(
                    st.lists(st.sampled_from([q.value for q in QualityFlag]), unique=True, max_size=2)
                ),
            )
        )
    return rows


@settings(max_examples=60, deadline=None)
@given(_batches())
def test_every_reading_lands_in_exactly_one_valid_resource(rows: list[object]) -> None:
    resources = mapping.observations(rows)  # type: ignore[arg-type]
    identifiers = [i.value for resource in resources for i in resource.identifier or []]
    assert sorted(identifiers) == sorted(f"{r.message_id}/{r.position}" for r in rows)  # type: ignore[attr-defined]
    assert len({resource.id for resource in resources}) == len(resources)
    assert [mapping.resource_sort_key(r) for r in resources] == sorted(
        mapping.resource_sort_key(r) for r in resources
    )
    for resource in resources:
        document = as_json(resource)
        assert isinstance(validated(document), FhirObservation)
        if _codes(document["code"]) == ["85354-9"]:
            component_codes = [_codes(c["code"])[0] for c in document["component"]]
            assert component_codes[:2] == ["8480-6", "8462-4"]
            assert set(component_codes) <= LOINC_BP


def test_bundle_of_nothing_is_a_valid_empty_searchset() -> None:
    bundle = mapping.searchset([], base_url="http://x/fhir", self_url="http://x/fhir/Observation?patient=p")
    assert isinstance(bundle, Bundle)
    assert as_json(bundle) == {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "self", "url": "http://x/fhir/Observation?patient=p"}],
    }
