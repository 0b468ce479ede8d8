"""Code systems, profiles and identifier systems of the FHIR export, as tables.

Standard terminologies are used where one has the concept (LOINC for vital signs, UCUM for units, SNOMED
CT for the NEWS2 total score, HL7 code systems for categories and flag priority); where none does, a
WardWatch code system under ``urn:wardwatch:fhir:`` carries the project's own codes, so a receiver can
tell at a glance which codes are local. docs/fhir.md gives the same tables in prose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from edge_agent.protocol import VITALS, QualityFlag, Risk, VitalCode

FHIR_VERSION: Final = "4.0.1"
"""The FHIR release these resources are written for. They are validated with ``fhir.resources.R4B``
(4.3.0): R4B kept R4's Observation, Patient, Device, Flag, Bundle and OperationOutcome unchanged, and
no R4B-only element is produced."""

LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
SNOMED: Final = "http://snomed.info/sct"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
FLAG_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/flag-category"
FLAG_PRIORITY_EXTENSION: Final = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_PRIORITY_CODES: Final = "http://hl7.org/fhir/flag-priority-code"

LOCAL: Final = "urn:wardwatch:fhir:"
"""Prefix of every WardWatch-defined system, code system and extension URL."""

# Identifier systems (the values are the project's own ids, never a direct identifier of a person).
PATIENT_PSEUDONYM_SYSTEM: Final = LOCAL + "patient-pseudonym"
DEVICE_SYSTEM: Final = LOCAL + "device"
GATEWAY_SYSTEM: Final = LOCAL + "gateway"
OBSERVATION_SYSTEM: Final = LOCAL + "observation"
"""``<message id>/<position>``: the reading's identity in the wire contract."""
ASSESSMENT_SYSTEM: Final = LOCAL + "assessment"
ALERT_SYSTEM: Final = LOCAL + "alert"

# Local code systems.
NEWS2_PARAMETER_CODES: Final = LOCAL + "CodeSystem/news2-parameter"
NEWS2_RISK_CODES: Final = LOCAL + "CodeSystem/news2-risk"
ACVPU_CODES: Final = LOCAL + "CodeSystem/acvpu"
SIGNAL_QUALITY_CODES: Final = LOCAL + "CodeSystem/signal-quality"
DEVICE_KIND_CODES: Final = LOCAL + "CodeSystem/device-kind"
ALERT_CONDITION_CODES: Final = LOCAL + "CodeSystem/alert-condition"
ALERT_CATEGORY_CODES: Final = LOCAL + "CodeSystem/alert-category"

# Extensions (all simple, none is a modifier).
SIGNAL_QUALITY_EXTENSION: Final = LOCAL + "StructureDefinition/signal-quality"
"""valueCoding, repeated once per quality flag the gateway attached to the reading."""
TIME_SOURCE_EXTENSION: Final = LOCAL + "StructureDefinition/time-source"
"""valueCode ``device`` or ``gateway``: whose clock stamped effectiveDateTime."""
HISTORICAL_EXTENSION: Final = LOCAL + "StructureDefinition/historical"
"""valueBoolean: the gateway replayed this from its backlog rather than sending it live."""
PERFUSION_INDEX_EXTENSION: Final = LOCAL + "StructureDefinition/perfusion-index"
"""valueDecimal, percent, where the oximeter reports it."""
TREND_RISING_EXTENSION: Final = LOCAL + "StructureDefinition/news2-trend-rising"
ALERT_STATE_EXTENSION: Final = LOCAL + "StructureDefinition/alert-state"
ALERT_PRIORITY_EXTENSION: Final = LOCAL + "StructureDefinition/alert-priority"
ALERT_TIER_EXTENSION: Final = LOCAL + "StructureDefinition/alert-tier"

VITAL_SIGNS_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/vitalsigns"
BLOOD_PRESSURE_PROFILE: Final = "http://hl7.org/fhir/StructureDefinition/bp"
BLOOD_PRESSURE_PANEL: Final = ("85354-9", "Blood pressure panel with all children optional")
PULSE_OXIMETRY_PARENT: Final = ("2708-6", "Oxygen saturation in Arterial blood")
"""The R4 oxygensat profile requires 2708-6; the pulse-oximetry code 59408-5 is sent beside it."""


@dataclass(frozen=True, slots=True)
class VitalMapping:
    """How one vital of the wire contract becomes an Observation."""

    vital: VitalCode
    category: str
    """observation-category code."""
    profile: str | None
    """Core vital-signs profile the Observation claims (None: no core profile fits)."""
    extra_codings: tuple[tuple[str, str], ...] = ()
    """LOINC codings sent before the reading's own (code, display)."""


VITAL_MAPPINGS: Final[Mapping[VitalCode, VitalMapping]] = {
    item.vital: item
    for item in (
        VitalMapping(
            VitalCode.HEART_RATE, "vital-signs", "http://hl7.org/fhir/StructureDefinition/heartrate"
        ),
        VitalMapping(
            VitalCode.RESPIRATORY_RATE, "vital-signs", "http://hl7.org/fhir/StructureDefinition/resprate"
        ),
        VitalMapping(
            VitalCode.SPO2,
            "vital-signs",
            "http://hl7.org/fhir/StructureDefinition/oxygensat",
            (PULSE_OXIMETRY_PARENT,),
        ),
        VitalMapping(VitalCode.SYSTOLIC_BP, "vital-signs", BLOOD_PRESSURE_PROFILE),
        VitalMapping(VitalCode.DIASTOLIC_BP, "vital-signs", BLOOD_PRESSURE_PROFILE),
        VitalMapping(VitalCode.MEAN_ARTERIAL_PRESSURE, "vital-signs", VITAL_SIGNS_PROFILE),
        VitalMapping(
            VitalCode.BODY_TEMPERATURE, "vital-signs", "http://hl7.org/fhir/StructureDefinition/bodytemp"
        ),
        VitalMapping(
            VitalCode.BODY_WEIGHT, "vital-signs", "http://hl7.org/fhir/StructureDefinition/bodyweight"
        ),
        # A capillary glucose is a point-of-care laboratory result, not a vital sign.
        VitalMapping(VitalCode.BLOOD_GLUCOSE, "laboratory", None),
    )
}

BLOOD_PRESSURE_VITALS: Final = (
    VitalCode.SYSTOLIC_BP,
    VitalCode.DIASTOLIC_BP,
    VitalCode.MEAN_ARTERIAL_PRESSURE,
)
"""Component order inside a blood pressure panel."""

CATEGORY_DISPLAY: Final = {
    "vital-signs": "Vital Signs",
    "laboratory": "Laboratory",
    "survey": "Survey",
}

NEWS2_TOTAL: Final = (
    "1104051000000101",
    "Royal College of Physicians NEWS2 (National Early Warning Score 2) total score",
)
"""SNOMED CT (UK edition) concept; LOINC has no NEWS2 total score code (checked against UK Core's
early warning score guidance, which uses this concept)."""

NEWS2_PARAMETER_DISPLAY: Final = {
    "respiration": "NEWS2 respiration rate score",
    "spo2": "NEWS2 oxygen saturation score",
    "air_or_oxygen": "NEWS2 air or oxygen score",
    "systolic_bp": "NEWS2 systolic blood pressure score",
    "pulse": "NEWS2 pulse rate score",
    "consciousness": "NEWS2 level of consciousness score",
    "temperature": "NEWS2 temperature score",
}

NEWS2_RISK: Final[Mapping[Risk, tuple[str, tuple[str, str] | None]]] = {
    Risk.LOW: (
        "Low clinical risk (aggregate NEWS2 0-4)",
        ("50601000000100", "National Early Warning Score 2 low risk"),
    ),
    Risk.LOW_MEDIUM: ("Low-medium clinical risk (a single parameter scores 3)", None),
    Risk.MEDIUM: (
        "Medium clinical risk (aggregate NEWS2 5-6)",
        ("50602000000101", "National Early Warning Score 2 medium risk"),
    ),
    Risk.HIGH: (
        "High clinical risk (aggregate NEWS2 7 or more)",
        ("50604000000104", "National Early Warning Score 2 high risk"),
    ),
}
"""Display of the local code, and the SNOMED CT (UK) concept where one exists (none for low-medium)."""

ACVPU_DISPLAY: Final = {
    "A": "Alert",
    "C": "New confusion",
    "V": "Responds to voice",
    "P": "Responds to pain",
    "U": "Unresponsive",
}

SIGNAL_QUALITY_DISPLAY: Final[Mapping[QualityFlag, str]] = {
    QualityFlag.PROBE_OFF: "Probe off",
    QualityFlag.LOW_PERFUSION: "Low perfusion",
    QualityFlag.MOTION: "Motion artefact",
    QualityFlag.NO_SENSOR_CONTACT: "No sensor contact",
    QualityFlag.IMPLAUSIBLE: "Implausible value",
    QualityFlag.DEVICE_ERROR: "Device reported an error",
}

FLAG_PRIORITY: Final = {
    "low": ("PL", "Low priority"),
    "medium": ("PM", "Medium priority"),
    "high": ("PH", "High priority"),
    "emergency": ("PH", "High priority"),
}
"""WardWatch alert priority to the core flag-priority codes (emergency has no higher code; the local
alert-priority extension keeps the exact value)."""

ALERT_CATEGORY: Final = {
    "clinical": (FLAG_CATEGORY, "clinical", "Clinical"),
    "technical": (ALERT_CATEGORY_CODES, "technical", "Technical (equipment)"),
}


def loinc_of(vital: VitalCode) -> tuple[str, str]:
    spec = VITALS[vital]
    return spec.loinc, spec.display
