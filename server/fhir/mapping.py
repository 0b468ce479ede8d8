"""Stored WardWatch records in, FHIR R4 resources out: pure functions, no database, no clock.

Every function returns a ``fhir.resources.R4B`` model, so what leaves here has been validated by the
FHIR models (types, cardinalities, id and code patterns). The inputs are described by small protocols
that the storage rows (``server.storage.models``) satisfy, so tests can pass plain objects as well.

Resource ids are derived from the records' own identities, so the same reading gets the same id from
any server process, any backend and any export:

- Observation (one vital)  ``<message id>-<position>``
- Observation (BP panel)   ``<message id>-<position>-bp`` of its systolic reading (else diastolic)
- Observation (NEWS2)      ``news2-<message id>``
- Patient                  the pseudonym when it is a valid FHIR id, else ``pt-<40 hex of SHA-256>``
- Device                   ``dev-<40 hex of SHA-256>`` of ``gateway/device`` (the gateway itself:
                           ``gateway``), because device ids repeat across homes
- Flag                     the alert's UUID
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.resource import Resource

from edge_agent.protocol import VITALS, QualityFlag, Risk, VitalCode
from server.fhir import codes

FHIR_ID: Final = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


# --------------------------------------------------------------------------------------------------
# What the mapping reads (storage rows satisfy these)


class ObservationRecord(Protocol):
    @property
    def message_id(self) -> uuid.UUID: ...
    @property
    def position(self) -> int: ...
    @property
    def gateway_id(self) -> str: ...
    @property
    def patient_id(self) -> str: ...
    @property
    def vital(self) -> str: ...
    @property
    def value(self) -> float: ...
    @property
    def unit(self) -> str: ...
    @property
    def measured_at(self) -> datetime: ...
    @property
    def time_source(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def quality(self) -> list[str]: ...
    @property
    def perfusion_index(self) -> float | None: ...
    @property
    def historical(self) -> bool: ...
    @property
    def received_at(self) -> datetime: ...


class AssessmentRecord(Protocol):
    @property
    def message_id(self) -> uuid.UUID: ...
    @property
    def patient_id(self) -> str: ...
    @property
    def assessed_at(self) -> datetime: ...
    @property
    def total(self) -> int: ...
    @property
    def risk(self) -> str: ...
    @property
    def components(self) -> dict[str, int | None]: ...
    @property
    def complete(self) -> bool: ...
    @property
    def spo2_scale(self) -> int: ...
    @property
    def on_oxygen(self) -> bool: ...
    @property
    def consciousness(self) -> str: ...
    @property
    def trend_rising(self) -> bool: ...
    @property
    def historical(self) -> bool: ...
    @property
    def received_at(self) -> datetime: ...


class PatientRecord(Protocol):
    @property
    def patient_id(self) -> str: ...
    @property
    def display_name(self) -> str | None: ...


class AlertRecord(Protocol):
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def category(self) -> str: ...
    @property
    def condition(self) -> str: ...
    @property
    def patient_id(self) -> str | None: ...
    @property
    def state(self) -> str: ...
    @property
    def priority(self) -> str: ...
    @property
    def tier(self) -> int: ...
    @property
    def reason(self) -> str: ...
    @property
    def raised_at(self) -> datetime: ...
    @property
    def resolved_at(self) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A home device as the export knows it: from the gateway's status (kind) and from the readings."""

    gateway_id: str
    device_id: str
    patient_id: str | None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    gateway_id: str
    patient_id: str | None
    software_version: str | None = None


# --------------------------------------------------------------------------------------------------
# Ids and small pieces


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def patient_fhir_id(patient_id: str) -> str:
    """The Patient's FHIR id: the pseudonym itself when FHIR allows it (no ``_``), else a digest."""
    return patient_id if FHIR_ID.match(patient_id) else f"pt-{_digest(patient_id)}"


def device_fhir_id(gateway_id: str, device_id: str) -> str:
    return f"dev-{_digest(f'device:{gateway_id}/{device_id}')}"


def gateway_fhir_id(gateway_id: str) -> str:
    return f"dev-{_digest(f'gateway:{gateway_id}')}"


def observation_fhir_id(message_id: uuid.UUID, position: int) -> str:
    return f"{message_id}-{position}"


def assessment_fhir_id(message_id: uuid.UUID) -> str:
    return f"news2-{message_id}"


def fhir_instant(moment: datetime) -> str:
    """ISO 8601 in UTC with ``Z``; microseconds only when the moment has a fraction of a second (kept
    whole, so the paging cursor made from a resource's time is exact)."""
    utc = moment.astimezone(UTC)
    spec = "microseconds" if utc.microsecond else "seconds"
    return utc.isoformat(timespec=spec).replace("+00:00", "Z")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display is not None:
        coding["display"] = display
    return coding


def _category(code: str) -> list[dict[str, Any]]:
    return [{"coding": [_coding(codes.OBSERVATION_CATEGORY, code, codes.CATEGORY_DISPLAY[code])]}]


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": codes.UCUM, "code": unit}


def _reference(kind: str, fhir_id: str) -> dict[str, str]:
    return {"reference": f"{kind}/{fhir_id}"}


def _vital_code(vital: VitalCode) -> dict[str, Any]:
    loinc, display = codes.loinc_of(vital)
    mapping = codes.VITAL_MAPPINGS[vital]
    codings = [_coding(codes.LOINC, code, text) for code, text in mapping.extra_codings]
    codings.append(_coding(codes.LOINC, loinc, display))
    return {"coding": codings, "text": display}


def _quality_extensions(flags: Iterable[str]) -> list[dict[str, Any]]:
    extensions = []
    for flag in flags:
        quality = QualityFlag(flag)
        extensions.append(
            {
                "url": codes.SIGNAL_QUALITY_EXTENSION,
                "valueCoding": _coding(
                    codes.SIGNAL_QUALITY_CODES, quality.value, codes.SIGNAL_QUALITY_DISPLAY[quality]
                ),
            }
        )
    return extensions


def _quality_note(flags: Sequence[str]) -> list[dict[str, str]]:
    if not flags:
        return []
    listed = ", ".join(codes.SIGNAL_QUALITY_DISPLAY[QualityFlag(flag)].lower() for flag in flags)
    return [{"text": f"Signal quality flagged by the gateway: {listed}."}]


def _provenance_extensions(time_source: str, historical: bool) -> list[dict[str, Any]]:
    return [
        {"url": codes.TIME_SOURCE_EXTENSION, "valueCode": time_source},
        {"url": codes.HISTORICAL_EXTENSION, "valueBoolean": historical},
    ]


# --------------------------------------------------------------------------------------------------
# Observations


def vital_observation(row: ObservationRecord) -> Observation:
    """One reading as an Observation following its core vital-signs profile.

    Systolic and diastolic readings are never exported alone; pass them to :func:`observations`
    (or :func:`blood_pressure_panel`)."""
    vital = VitalCode(row.vital)
    if vital in (VitalCode.SYSTOLIC_BP, VitalCode.DIASTOLIC_BP):
        raise ValueError(f"{vital} belongs in a blood pressure panel, not an Observation of its own")
    mapping = codes.VITAL_MAPPINGS[vital]
    extensions = _provenance_extensions(row.time_source, row.historical) + _quality_extensions(row.quality)
    if row.perfusion_index is not None:
        extensions.append({"url": codes.PERFUSION_INDEX_EXTENSION, "valueDecimal": row.perfusion_index})
    document: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_fhir_id(row.message_id, row.position),
        "extension": extensions,
        "identifier": [{"system": codes.OBSERVATION_SYSTEM, "value": f"{row.message_id}/{row.position}"}],
        "status": "final",
        "category": _category(mapping.category),
        "code": _vital_code(vital),
        "subject": _reference("Patient", patient_fhir_id(row.patient_id)),
        "effectiveDateTime": fhir_instant(row.measured_at),
        "issued": fhir_instant(row.received_at),
        "valueQuantity": _quantity(row.value, VITALS[vital].ucum),
        "device": _reference("Device", device_fhir_id(row.gateway_id, row.device_id)),
    }
    if mapping.profile is not None:
        document["meta"] = {"profile": [mapping.profile]}
    note = _quality_note(row.quality)
    if note:
        document["note"] = note
    return Observation.model_validate(document)


def blood_pressure_panel(
    systolic: ObservationRecord | None,
    diastolic: ObservationRecord | None,
    mean: ObservationRecord | None = None,
) -> Observation:
    """The 85354-9 panel of one cuff measurement: systolic (8480-6) and diastolic (8462-4) components,
    mean arterial pressure (8478-0) as a third component when the cuff reported it. A missing systolic
    or diastolic becomes a component with dataAbsentReason ``unknown``, as the bp profile requires."""
    rows = [row for row in (systolic, diastolic, mean) if row is not None]
    anchor = systolic or diastolic
    if anchor is None:
        raise ValueError("a blood pressure panel needs a systolic or a diastolic reading")
    keys = {(row.patient_id, row.gateway_id, row.device_id, row.measured_at) for row in rows}
    if len(keys) != 1:
        raise ValueError("the readings of a panel must share patient, gateway, device and measured_at")
    components = []
    for vital, row in zip(codes.BLOOD_PRESSURE_VITALS, (systolic, diastolic, mean), strict=True):
        if row is None:
            if vital is VitalCode.MEAN_ARTERIAL_PRESSURE:
                continue
            components.append(
                {
                    "code": _vital_code(vital),
                    "dataAbsentReason": {
                        "coding": [_coding(codes.DATA_ABSENT_REASON, "unknown", "Unknown")],
                        "text": "the cuff did not report this value",
                    },
                }
            )
            continue
        if VitalCode(row.vital) is not vital:
            raise ValueError(f"expected a {vital} reading, got {row.vital}")
        component: dict[str, Any] = {
            "code": _vital_code(vital),
            "valueQuantity": _quantity(row.value, VITALS[vital].ucum),
        }
        quality = _quality_extensions(row.quality)
        if quality:
            component["extension"] = quality
        components.append(component)
    flags = list(dict.fromkeys(flag for row in rows for flag in row.quality))
    loinc, display = codes.BLOOD_PRESSURE_PANEL
    document: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"{observation_fhir_id(anchor.message_id, anchor.position)}-bp",
        "meta": {"profile": [codes.BLOOD_PRESSURE_PROFILE]},
        "extension": _provenance_extensions(anchor.time_source, any(row.historical for row in rows)),
        "identifier": [
            {"system": codes.OBSERVATION_SYSTEM, "value": f"{row.message_id}/{row.position}"} for row in rows
        ],
        "status": "final",
        "category": _category("vital-signs"),
        "code": {"coding": [_coding(codes.LOINC, loinc, display)], "text": "Blood pressure"},
        "subject": _reference("Patient", patient_fhir_id(anchor.patient_id)),
        "effectiveDateTime": fhir_instant(anchor.measured_at),
        "issued": fhir_instant(max(row.received_at for row in rows)),
        "device": _reference("Device", device_fhir_id(anchor.gateway_id, anchor.device_id)),
        "component": components,
    }
    note = _quality_note(flags)
    if note:
        document["note"] = note
    return Observation.model_validate(document)


def _storage_order(row: ObservationRecord) -> tuple[str, int]:
    return (str(row.message_id), row.position)


def observations(rows: Iterable[ObservationRecord]) -> list[Observation]:
    """Readings to Observations, pairing blood pressure: systolic, diastolic and mean arterial pressure
    from the same patient, gateway, device and ``measured_at`` form one panel (when a device reported
    the same instant twice, the n-th of each vital pair up, in the readings' storage order). A mean
    arterial pressure with neither partner stays an Observation of its own (8478-0).

    The result is in the order of (effectiveDateTime, id)."""
    singles: list[Observation] = []
    cuffs: dict[tuple[str, str, str, datetime], dict[VitalCode, list[ObservationRecord]]] = {}
    for row in rows:
        vital = VitalCode(row.vital)
        if vital in codes.BLOOD_PRESSURE_VITALS:
            key = (row.patient_id, row.gateway_id, row.device_id, row.measured_at)
            cuffs.setdefault(key, {}).setdefault(vital, []).append(row)
        else:
            singles.append(vital_observation(row))
    for by_vital in cuffs.values():
        for readings in by_vital.values():
            readings.sort(key=_storage_order)
        systolics = by_vital.get(VitalCode.SYSTOLIC_BP, [])
        diastolics = by_vital.get(VitalCode.DIASTOLIC_BP, [])
        means = by_vital.get(VitalCode.MEAN_ARTERIAL_PRESSURE, [])
        panels = max(len(systolics), len(diastolics))
        for index in range(panels):
            singles.append(
                blood_pressure_panel(
                    systolics[index] if index < len(systolics) else None,
                    diastolics[index] if index < len(diastolics) else None,
                    means[index] if index < len(means) else None,
                )
            )
        singles.extend(vital_observation(row) for row in means[panels:])
    singles.sort(key=resource_sort_key)
    return singles


def news2_observation(row: AssessmentRecord) -> Observation:
    """A NEWS2 assessment as a survey Observation: SNOMED CT total score, the seven parameter scores
    as components (dataAbsentReason where an input was missing or stale), the scoring inputs that
    change the result (SpO2 scale, supplemental oxygen, ACVPU) as components, the risk band as the
    interpretation. An incomplete score is ``preliminary``; a complete one ``final``."""
    components: list[dict[str, Any]] = []
    for name, display in codes.NEWS2_PARAMETER_DISPLAY.items():
        component: dict[str, Any] = {
            "code": {"coding": [_coding(codes.NEWS2_PARAMETER_CODES, name, display)], "text": display}
        }
        score = row.components.get(name)
        if score is None:
            component["dataAbsentReason"] = {
                "coding": [_coding(codes.DATA_ABSENT_REASON, "unknown", "Unknown")],
                "text": "input missing or stale at the time of scoring",
            }
        else:
            component["valueInteger"] = score
        components.append(component)
    components.extend(
        [
            {
                "code": {
                    "coding": [_coding(codes.NEWS2_PARAMETER_CODES, "spo2_scale", "SpO2 scale used")],
                    "text": "SpO2 scale used",
                },
                "valueInteger": row.spo2_scale,
            },
            {
                "code": {
                    "coding": [_coding(codes.NEWS2_PARAMETER_CODES, "on_oxygen", "On supplemental oxygen")],
                    "text": "On supplemental oxygen",
                },
                "valueBoolean": row.on_oxygen,
            },
            {
                "code": {
                    "coding": [
                        _coding(codes.NEWS2_PARAMETER_CODES, "acvpu", "Level of consciousness (ACVPU)")
                    ],
                    "text": "Level of consciousness (ACVPU)",
                },
                "valueCodeableConcept": {
                    "coding": [
                        _coding(codes.ACVPU_CODES, row.consciousness, codes.ACVPU_DISPLAY[row.consciousness])
                    ],
                    "text": codes.ACVPU_DISPLAY[row.consciousness],
                },
            },
        ]
    )
    risk = Risk(row.risk)
    risk_display, snomed = codes.NEWS2_RISK[risk]
    risk_codings = [_coding(codes.NEWS2_RISK_CODES, risk.value, risk_display)]
    if snomed is not None:
        risk_codings.append(_coding(codes.SNOMED, *snomed))
    code, display = codes.NEWS2_TOTAL
    document: dict[str, Any] = {
        "resourceType": "Observation",
        "id": assessment_fhir_id(row.message_id),
        "extension": [
            {"url": codes.HISTORICAL_EXTENSION, "valueBoolean": row.historical},
            {"url": codes.TREND_RISING_EXTENSION, "valueBoolean": row.trend_rising},
        ],
        "identifier": [{"system": codes.ASSESSMENT_SYSTEM, "value": str(row.message_id)}],
        "status": "final" if row.complete else "preliminary",
        "category": _category("survey"),
        "code": {"coding": [_coding(codes.SNOMED, code, display)], "text": "NEWS2 total score"},
        "subject": _reference("Patient", patient_fhir_id(row.patient_id)),
        "effectiveDateTime": fhir_instant(row.assessed_at),
        "issued": fhir_instant(row.received_at),
        "valueInteger": row.total,
        "interpretation": [{"coding": risk_codings, "text": risk_display}],
        "method": {"text": "Computed on the home gateway from its latest readings (RCP NEWS2, 2017)"},
        "component": components,
    }
    if not row.complete:
        missing = [name for name in codes.NEWS2_PARAMETER_DISPLAY if row.components.get(name) is None]
        document["note"] = [{"text": f"Incomplete NEWS2: no current value for {', '.join(missing)}."}]
    return Observation.model_validate(document)


def resource_sort_key(resource: Observation) -> tuple[datetime, str]:
    """(effectiveDateTime, id): the order of Observation search results and of their paging cursor."""
    effective = resource.effectiveDateTime
    if not isinstance(effective, datetime):
        raise ValueError("Observation without an effectiveDateTime")
    return (effective.astimezone(UTC), str(resource.id))


# --------------------------------------------------------------------------------------------------
# Patient, Device, Flag


def patient(row: PatientRecord, *, show_identity: bool) -> Patient:
    """The pseudonym as the only identifier; the display name only when ``show_identity`` (callers
    pass whether the account's role may see names) and one is set."""
    document: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_fhir_id(row.patient_id),
        "identifier": [
            {
                "use": "secondary",
                "system": codes.PATIENT_PSEUDONYM_SYSTEM,
                "value": row.patient_id,
                "type": {"text": "Hospital-at-home programme pseudonym"},
            }
        ],
        "active": True,
    }
    if show_identity and row.display_name:
        document["name"] = [{"use": "usual", "text": row.display_name}]
    return Patient.model_validate(document)


def device(info: DeviceInfo) -> Device:
    """A home device (oximeter, cuff, thermometer, ...), a child of its gateway's Device."""
    document: dict[str, Any] = {
        "resourceType": "Device",
        "id": device_fhir_id(info.gateway_id, info.device_id),
        "identifier": [{"system": codes.DEVICE_SYSTEM, "value": f"{info.gateway_id}/{info.device_id}"}],
        "status": "active",
        "deviceName": [{"name": info.device_id, "type": "user-friendly-name"}],
        "parent": _reference("Device", gateway_fhir_id(info.gateway_id)),
    }
    if info.kind:
        document["type"] = {"coding": [_coding(codes.DEVICE_KIND_CODES, info.kind)], "text": info.kind}
    if info.patient_id is not None:
        document["patient"] = _reference("Patient", patient_fhir_id(info.patient_id))
    return Device.model_validate(document)


def gateway_device(info: GatewayInfo) -> Device:
    """The home gateway that read the devices and scored NEWS2."""
    document: dict[str, Any] = {
        "resourceType": "Device",
        "id": gateway_fhir_id(info.gateway_id),
        "identifier": [{"system": codes.GATEWAY_SYSTEM, "value": info.gateway_id}],
        "status": "active",
        "deviceName": [{"name": info.gateway_id, "type": "user-friendly-name"}],
        "type": {
            "coding": [_coding(codes.DEVICE_KIND_CODES, "gateway", "Home gateway")],
            "text": "Home gateway",
        },
    }
    if info.software_version:
        document["version"] = [{"value": info.software_version}]
    if info.patient_id is not None:
        document["patient"] = _reference("Patient", patient_fhir_id(info.patient_id))
    return Device.model_validate(document)


def alert_flag(row: AlertRecord) -> Flag:
    """A WardWatch alert about a patient as a Flag: active until resolved, period from raised to
    resolved, priority in the core flag-priority extension, exact priority, tier and state in local
    extensions. Alerts without a patient (a gateway offline) have no FHIR form."""
    if row.patient_id is None:
        raise ValueError(f"alert {row.id} has no patient; only patient alerts are exported as Flag")
    priority_code, priority_display = codes.FLAG_PRIORITY[row.priority]
    category_system, category_code, category_display = codes.ALERT_CATEGORY[row.category]
    period: dict[str, str] = {"start": fhir_instant(row.raised_at)}
    if row.resolved_at is not None:
        period["end"] = fhir_instant(row.resolved_at)
    document: dict[str, Any] = {
        "resourceType": "Flag",
        "id": str(row.id),
        "extension": [
            {
                "url": codes.FLAG_PRIORITY_EXTENSION,
                "valueCodeableConcept": {
                    "coding": [_coding(codes.FLAG_PRIORITY_CODES, priority_code, priority_display)]
                },
            },
            {"url": codes.ALERT_PRIORITY_EXTENSION, "valueCode": row.priority},
            {"url": codes.ALERT_TIER_EXTENSION, "valueInteger": row.tier},
            {"url": codes.ALERT_STATE_EXTENSION, "valueCode": row.state},
        ],
        "identifier": [{"system": codes.ALERT_SYSTEM, "value": str(row.id)}],
        "status": "inactive" if row.state == "resolved" else "active",
        "category": [
            {"coding": [_coding(category_system, category_code, category_display)], "text": category_display}
        ],
        "code": {"coding": [_coding(codes.ALERT_CONDITION_CODES, row.condition)], "text": row.reason},
        "subject": _reference("Patient", patient_fhir_id(row.patient_id)),
        "period": period,
    }
    return Flag.model_validate(document)


def devices_seen(rows: Iterable[ObservationRecord], kinds: Mapping[tuple[str, str], str]) -> list[DeviceInfo]:
    """The distinct (gateway, device) pairs behind some readings, with the kind the gateway reported."""
    seen: dict[tuple[str, str], DeviceInfo] = {}
    for row in rows:
        key = (row.gateway_id, row.device_id)
        if key not in seen:
            seen[key] = DeviceInfo(row.gateway_id, row.device_id, row.patient_id, kinds.get(key))
    return [seen[key] for key in sorted(seen)]


# --------------------------------------------------------------------------------------------------
# Bundles and outcomes


def searchset(
    entries: Sequence[tuple[Resource, str]],
    *,
    base_url: str,
    self_url: str,
    next_url: str | None = None,
) -> Bundle:
    """A searchset Bundle of ``(resource, search mode)`` entries (mode ``match`` or ``include``), with a
    self link and, when there are more results, a next link."""
    links = [{"relation": "self", "url": self_url}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    document: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {
                "fullUrl": f"{base_url}/{resource.get_resource_type()}/{resource.id}",
                "resource": resource.model_dump(mode="json", exclude_none=True),
                "search": {"mode": mode},
            }
            for resource, mode in entries
        ],
    }
    if not document["entry"]:
        del document["entry"]
    return Bundle.model_validate(document)


def operation_outcome(code: str, diagnostics: str, *, expression: str | None = None) -> OperationOutcome:
    """One error issue: ``code`` from the FHIR issue-type value set (invalid, not-found, login, ...)."""
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression is not None:
        issue["expression"] = [expression]
    return OperationOutcome.model_validate({"resourceType": "OperationOutcome", "issue": [issue]})
