"""Valid wire-contract payloads as plain JSON documents, built from the contract's rules written out
here (not from the pydantic models), for every gateway channel and the command-center topics. The fuzz
targets start from these and mutate them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

VITAL_RANGES = {
    "heart_rate": ("/min", 0, 300),
    "respiratory_rate": ("/min", 0, 120),
    "spo2": ("%", 0, 100),
    "systolic_bp": ("mm[Hg]", 0, 300),
    "diastolic_bp": ("mm[Hg]", 0, 300),
    "mean_arterial_pressure": ("mm[Hg]", 0, 300),
    "body_temperature": ("Cel", 20, 45),
    "body_weight": ("kg", 0, 500),
    "blood_glucose": ("mg/dL", 0, 2000),
}
QUALITY = ("probe_off", "low_perfusion", "motion", "no_sensor_contact", "implausible", "device_error")
NEWS2 = ("respiration", "spo2", "air_or_oxygen", "systolic_bp", "pulse", "consciousness", "temperature")
RISKS = ("low", "low-medium", "medium", "high")
GATEWAYS = ("gw-fuzz-0", "gw-fuzz-1", "gw-fuzz-2")
PATIENTS = ("pt-0001", "pt-0002", "pt-9f3a")

ids = st.sampled_from(["gw-fuzz-0", "a", "Z9", "x.y_z-1", "0" * 64]) | st.from_regex(
    r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z"
)
device_ids = st.sampled_from(["oxi-1", "aa:bb:cc:dd:ee:ff", "bp.2"]) | st.from_regex(
    r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}\Z"
)


def uuid7(value: int) -> str:
    """A version-7 UUID with these (up to 122) bits, laid out by RFC 9562 (independent of the agent's)."""
    ms, rand_a, rand_b = value >> 74 & (2**48 - 1), value >> 62 & 0xFFF, value & (2**62 - 1)
    return str(uuid.UUID(int=ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b))


uuid7s = st.integers(0, 2**122 - 1).map(uuid7)
any_uuids = st.integers(0, 2**128 - 1).map(lambda v: str(uuid.UUID(int=v)))


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
    offset = draw(st.sampled_from([0, 0, 60, -300, 330, 840, -720]) | st.integers(-1439, 1439))
    text = moment.replace(tzinfo=timezone(timedelta(minutes=offset))).isoformat()
    return text.replace("+00:00", "Z") if draw(st.booleans()) else text


seqs = st.integers(0, 2**63 - 1) | st.integers(0, 50)


def free_text(max_size: int) -> st.SearchStrategy[str]:
    """Free text as the contract allows it: any character but NUL (and no lone surrogates: not UTF-8)."""
    return st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=max_size)


ages = st.none() | st.floats(0, 1e7, allow_nan=False)


@st.composite
def observation(draw: st.DrawFn, patient: str | None = None) -> dict[str, Any]:
    vital = draw(st.sampled_from(sorted(VITAL_RANGES)))
    unit, low, high = VITAL_RANGES[vital]
    item: dict[str, Any] = {
        "patient_id": patient or draw(st.sampled_from(PATIENTS) | ids),
        "vital": vital,
        "value": draw(st.floats(low, high, allow_nan=False) | st.integers(low, high)),
        "unit": unit,
        "measured_at": draw(timestamps()),
        "time_source": draw(st.sampled_from(["device", "gateway"])),
        "device_id": draw(device_ids),
    }
    if draw(st.booleans()):
        item["quality"] = draw(st.lists(st.sampled_from(QUALITY), unique=True, max_size=3))
    if draw(st.booleans()):
        item["perfusion_index"] = draw(st.none() | st.floats(0, 100))
    if draw(st.booleans()):
        item["historical"] = draw(st.booleans())
    return item


@st.composite
def head(draw: st.DrawFn, gateway: str) -> dict[str, Any]:
    return {
        "message_id": draw(uuid7s),
        "gateway_id": gateway,
        "seq": draw(seqs),
        "sent_at": draw(timestamps()),
    }


@st.composite
def observation_batch(draw: st.DrawFn, gateway: str) -> dict[str, Any]:
    return draw(head(gateway)) | {"observations": draw(st.lists(observation(), min_size=1, max_size=4))}


@st.composite
def assessment(draw: st.DrawFn, gateway: str) -> dict[str, Any]:
    components = {name: draw(st.none() | st.integers(0, 3)) for name in NEWS2}
    present = [score for score in components.values() if score is not None]
    inputs = [*VITAL_RANGES, "consciousness", "on_oxygen"]
    document = draw(head(gateway)) | {
        "patient_id": draw(st.sampled_from(PATIENTS)),
        "assessed_at": draw(timestamps()),
        "total": sum(present),
        "components": components,
        "risk": draw(st.sampled_from(RISKS)),
        "complete": len(present) == len(NEWS2),
        "input_ages_s": draw(st.dictionaries(st.sampled_from(inputs), ages, max_size=4)),
        "spo2_scale": draw(st.sampled_from([1, 2])),
        "on_oxygen": draw(st.booleans()),
        "consciousness": draw(st.sampled_from("ACVPU")),
    }
    if draw(st.booleans()):
        document["trend_rising"] = draw(st.booleans())
    return document


@st.composite
def event_detail(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(
            [
                "device_connected",
                "device_disconnected",
                "battery",
                "probe_off",
                "local_alert",
                "outbox_eviction",
            ]
        )
    )
    if kind == "device_connected":
        return {"kind": kind, "device_id": draw(device_ids), "device_kind": draw(free_text(64))}
    if kind == "device_disconnected":
        return {"kind": kind, "device_id": draw(device_ids), "reason": draw(free_text(80))}
    if kind == "battery":
        return {"kind": kind, "device_id": draw(device_ids), "battery_pct": draw(st.integers(0, 100))}
    if kind == "probe_off":
        return {"kind": kind, "device_id": draw(device_ids), "patient_id": draw(st.sampled_from(PATIENTS))}
    if kind == "local_alert":
        return {
            "kind": kind,
            "patient_id": draw(st.sampled_from(PATIENTS)),
            "risk": draw(st.sampled_from(RISKS)),
            "total": draw(st.integers(0, 20)),
            "uplink_down_s": draw(st.floats(0, 1e9)),
        }
    return {
        "kind": kind,
        "evicted_observations": draw(st.integers(1, 10**9)),
        "oldest_evicted_at": draw(timestamps()),
        "newest_evicted_at": draw(timestamps()),
    }


@st.composite
def event(draw: st.DrawFn, gateway: str) -> dict[str, Any]:
    document = draw(head(gateway)) | {"occurred_at": draw(timestamps()), "detail": draw(event_detail())}
    if draw(st.booleans()):
        document["historical"] = draw(st.booleans())
    return document


@st.composite
def status(draw: st.DrawFn, gateway: str) -> dict[str, Any]:
    document: dict[str, Any] = {
        "gateway_id": gateway,
        "state": draw(st.sampled_from(["birth", "heartbeat", "death"])),
        "session": draw(st.integers(1, 2**40)),
        "sent_at": draw(timestamps()),
        "software_version": draw(st.sampled_from(["0.1.0"]) | free_text(64)),
        "heartbeat_interval_s": draw(st.floats(0.001, 3600)),
    }
    if draw(st.booleans()):
        document["backlog"] = draw(st.integers(0, 10**9))
        document["oldest_unsent_age_s"] = draw(ages)
        document["clock_synchronized"] = draw(st.none() | st.booleans())
        document["last_error"] = draw(st.none() | free_text(100))
    if draw(st.booleans()):
        document["devices"] = [
            {
                "device_id": draw(device_ids),
                "device_kind": "masimo",
                "connected": draw(st.booleans()),
                "battery_pct": draw(st.none() | st.integers(0, 100)),
                "last_reading_at": draw(st.none() | timestamps()),
            }
            for _ in range(draw(st.integers(0, 3)))
        ]
    return document


@st.composite
def command_body(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(["set_spo2_scale", "set_oxygen", "set_consciousness", "set_staleness"]))
    if name == "set_spo2_scale":
        return {"command": name, "scale": draw(st.sampled_from([1, 2]))}
    if name == "set_oxygen":
        return {"command": name, "on_oxygen": draw(st.booleans())}
    if name == "set_consciousness":
        return {"command": name, "consciousness": draw(st.sampled_from("ACVPU"))}
    windows = draw(
        st.dictionaries(st.sampled_from(sorted(VITAL_RANGES)), st.floats(0.001, 7 * 24 * 3600), max_size=4)
    )
    return {"command": name, "windows_s": windows}


@st.composite
def command(draw: st.DrawFn, gateway: str) -> dict[str, Any]:
    return {
        "message_id": draw(uuid7s),
        "gateway_id": gateway,
        "patient_id": draw(st.sampled_from(PATIENTS)),
        "issued_at": draw(timestamps()),
        "issued_by": draw(st.sampled_from(["nurse-17"]) | ids),
        "body": draw(command_body()),
    }


@st.composite
def command_ack(draw: st.DrawFn, gateway: str, command_ids: tuple[str, ...] = ()) -> dict[str, Any]:
    known = st.sampled_from(command_ids) if command_ids else any_uuids
    return {
        "message_id": draw(uuid7s),
        "gateway_id": gateway,
        "command_id": draw(known | any_uuids),
        "ok": draw(st.booleans()),
        "detail": draw(free_text(500)),
        "acked_at": draw(timestamps()),
    }


@st.composite
def receipt(draw: st.DrawFn, gateway: str) -> dict[str, Any]:
    return {
        "gateway_id": gateway,
        "seqs": draw(st.lists(seqs, min_size=1, max_size=20)),
        "stored_at": draw(timestamps()),
    }


@st.composite
def alert_event(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "message_id": draw(uuid7s),
        "alert_id": draw(any_uuids),
        "action": draw(
            st.sampled_from(["raised", "updated", "escalated", "acknowledged", "resolved", "snoozed"])
        ),
        "category": draw(st.sampled_from(["clinical", "technical"])),
        "condition": draw(free_text(64)),
        "patient_id": draw(st.none() | st.sampled_from(PATIENTS)),
        "gateway_id": draw(st.none() | st.sampled_from(GATEWAYS)),
        "priority": draw(st.sampled_from(["low", "medium", "high", "emergency"])),
        "tier": draw(st.integers(1, 4)),
        "risk": draw(st.none() | st.sampled_from(RISKS)),
        "total": draw(st.none() | st.integers(0, 20)),
        "reason": draw(free_text(100)),
        "actor": draw(st.none() | free_text(64)),
        "at": draw(timestamps()),
    }


@st.composite
def patient_state(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "patient_id": draw(st.sampled_from(PATIENTS)),
        "gateway_id": draw(st.sampled_from(GATEWAYS)),
        "updated_at": draw(timestamps()),
        "risk": draw(st.none() | st.sampled_from(RISKS)),
        "total": draw(st.none() | st.integers(0, 20)),
        "components": {name: draw(st.none() | st.integers(0, 3)) for name in NEWS2},
        "latest": draw(st.dictionaries(st.sampled_from(sorted(VITAL_RANGES)), st.floats(0, 300), max_size=3)),
        "open_alerts": draw(st.integers(0, 100)),
        "gateway_online": draw(st.booleans()),
    }


BUILDERS = {
    "status": status,
    "obs": observation_batch,
    "score": assessment,
    "event": event,
    "cmd": command,
    "cmd-ack": command_ack,
    "receipt": receipt,
}
"""Channel -> strategy of a valid document for that channel, given the gateway id."""


def utc(moment: datetime) -> bool:
    return moment.utcoffset() == timedelta(0) and moment.tzinfo is UTC
