"""The WardWatch wire contract: MQTT topics and the JSON payloads that travel on them.

The edge agent produces this contract, so it lives here; the server and the simulators import it.
docs/protocol.md explains the semantics (QoS, retained flags, sessions, sequence numbers, dedup) and
``wardwatch schema`` writes the JSON Schema of every payload to docs/schema/.

Topics::

    wardwatch/v1/gw/{gateway_id}/status          retained birth / heartbeat / death (the MQTT will)
    wardwatch/v1/gw/{gateway_id}/obs             observation batches              QoS 1
    wardwatch/v1/gw/{gateway_id}/score           NEWS2 assessments                QoS 1
    wardwatch/v1/gw/{gateway_id}/event           device and local-alert events    QoS 1
    wardwatch/v1/gw/{gateway_id}/cmd/{name}      server -> gateway commands       QoS 1
    wardwatch/v1/gw/{gateway_id}/cmd-ack         gateway -> server acknowledgements QoS 1
    wardwatch/v1/gw/{gateway_id}/receipt         server -> gateway: stored seqs     QoS 1
    wardwatch/v1/cc/alerts                        alert lifecycle for the command center
    wardwatch/v1/cc/patients/{patient_id}/state         per-patient current state (retained)

Every payload model is strict: unknown fields are rejected (so a ``name`` or ``mrn`` can never ride
along), values are range-checked, timestamps must carry a UTC offset and are normalised to UTC.
:func:`decode` turns raw bytes into a model or raises :class:`~edge_agent.errors.ProtocolError` whose
message says which field is wrong and why.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Final, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic import AwareDatetime as _AwareDatetime

from edge_agent.errors import ProtocolError

PROTOCOL_VERSION: Final = 1
TOPIC_ROOT: Final = f"wardwatch/v{PROTOCOL_VERSION}"
GATEWAY_ROOT: Final = f"{TOPIC_ROOT}/gw"
COMMAND_CENTER_ROOT: Final = f"{TOPIC_ROOT}/cc"

MAX_PAYLOAD_BYTES: Final = 256 * 1024
"""Largest payload accepted on any topic; the broker should be configured with the same limit."""
MAX_OBSERVATIONS_PER_BATCH: Final = 1000

# Identifiers travel inside topics, so they must never contain '/', '+', '#' or whitespace.
_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
GatewayId = Annotated[str, StringConstraints(pattern=_ID_PATTERN)]
"""A gateway's identity; equal to the CN of its client certificate."""
PatientId = Annotated[str, StringConstraints(pattern=_ID_PATTERN)]
"""A pseudonym issued by the programme. Never a name, MRN or other direct identifier."""
DeviceId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
# Free text may hold any character but NUL, which PostgreSQL cannot store in text or JSON.
ShortText = Annotated[str, StringConstraints(max_length=500, pattern=r"^[^\x00]*$")]
Label = Annotated[str, StringConstraints(max_length=64, pattern=r"^[^\x00]*$")]
"""Short free text (device kinds, software versions, alert conditions, actors)."""


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except (
        OverflowError
    ):  # e.g. 0001-01-01T00:00+05:00 or 9999-12-31T23:59-05:00: before 1 AD or after 9999 in UTC
        raise ValueError("timestamp is outside the years 1..9999 once converted to UTC") from None


UtcDatetime = Annotated[_AwareDatetime, AfterValidator(_to_utc)]
"""A timestamp with an explicit offset, normalised to UTC. Naive timestamps are rejected."""


def _is_uuid7(value: uuid.UUID) -> uuid.UUID:
    if value.version != 7:
        raise ValueError(f"must be a version-7 UUID, got version {value.version}")
    return value


MessageId = Annotated[uuid.UUID, AfterValidator(_is_uuid7)]


def new_message_id(*, now_ms: int | None = None) -> uuid.UUID:
    """A fresh UUIDv7 (RFC 9562): 48-bit Unix milliseconds, then random bits.

    Time-ordered ids keep the server's unique index append-mostly.
    """
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand_a = int.from_bytes(os.urandom(2), "big") & 0xFFF
    rand_b = int.from_bytes(os.urandom(8), "big") & 0x3FFF_FFFF_FFFF_FFFF
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


# --------------------------------------------------------------------------------------------------
# Vital signs: codes, LOINC, UCUM and plausible ranges as data.


class VitalCode(StrEnum):
    HEART_RATE = "heart_rate"
    RESPIRATORY_RATE = "respiratory_rate"
    SPO2 = "spo2"
    SYSTOLIC_BP = "systolic_bp"
    DIASTOLIC_BP = "diastolic_bp"
    MEAN_ARTERIAL_PRESSURE = "mean_arterial_pressure"
    BODY_TEMPERATURE = "body_temperature"
    BODY_WEIGHT = "body_weight"
    BLOOD_GLUCOSE = "blood_glucose"


@dataclass(frozen=True, slots=True)
class VitalSpec:
    code: VitalCode
    loinc: str
    display: str
    ucum: str
    minimum: float
    maximum: float


# Ranges are what a payload may carry at all (physically possible readings), not clinical bands.
VITALS: Final[Mapping[VitalCode, VitalSpec]] = {
    spec.code: spec
    for spec in (
        VitalSpec(VitalCode.HEART_RATE, "8867-4", "Heart rate", "/min", 0, 300),
        VitalSpec(VitalCode.RESPIRATORY_RATE, "9279-1", "Respiratory rate", "/min", 0, 120),
        VitalSpec(
            VitalCode.SPO2,
            "59408-5",
            "Oxygen saturation in Arterial blood by Pulse oximetry",
            "%",
            0,
            100,
        ),
        VitalSpec(VitalCode.SYSTOLIC_BP, "8480-6", "Systolic blood pressure", "mm[Hg]", 0, 300),
        VitalSpec(VitalCode.DIASTOLIC_BP, "8462-4", "Diastolic blood pressure", "mm[Hg]", 0, 300),
        VitalSpec(VitalCode.MEAN_ARTERIAL_PRESSURE, "8478-0", "Mean blood pressure", "mm[Hg]", 0, 300),
        VitalSpec(VitalCode.BODY_TEMPERATURE, "8310-5", "Body temperature", "Cel", 20, 45),
        VitalSpec(VitalCode.BODY_WEIGHT, "29463-7", "Body weight", "kg", 0, 500),
        VitalSpec(VitalCode.BLOOD_GLUCOSE, "2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 0, 2000),
    )
}


class TimeSource(StrEnum):
    DEVICE = "device"
    """The device stamped the reading with its own clock."""
    GATEWAY = "gateway"
    """The gateway stamped the reading when it arrived."""


class QualityFlag(StrEnum):
    PROBE_OFF = "probe_off"
    LOW_PERFUSION = "low_perfusion"
    MOTION = "motion"
    NO_SENSOR_CONTACT = "no_sensor_contact"
    IMPLAUSIBLE = "implausible"
    DEVICE_ERROR = "device_error"


class Consciousness(StrEnum):
    """ACVPU: alert, new confusion, responds to voice, to pain, unresponsive."""

    ALERT = "A"
    CONFUSION = "C"
    VOICE = "V"
    PAIN = "P"
    UNRESPONSIVE = "U"


class Risk(StrEnum):
    LOW = "low"
    LOW_MEDIUM = "low-medium"
    MEDIUM = "medium"
    HIGH = "high"


NEWS2_PARAMETERS: Final = (
    "respiration",
    "spo2",
    "air_or_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)


# --------------------------------------------------------------------------------------------------
# Payload models


class WireModel(BaseModel):
    """Strict base: unknown fields rejected, no silent coercion of strings into numbers."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


class SequencedMessage(WireModel):
    """Common head of the messages a gateway sends on obs, score and event.

    ``seq`` is the gateway's message counter, shared by those three topics, continuous across restarts;
    a retransmission keeps its ``message_id`` and ``seq``.
    """

    message_id: MessageId
    gateway_id: GatewayId
    seq: int = Field(ge=0, le=2**63 - 1)
    sent_at: UtcDatetime


class Observation(WireModel):
    patient_id: PatientId
    vital: VitalCode
    value: float
    unit: str
    measured_at: UtcDatetime
    time_source: TimeSource
    device_id: DeviceId
    quality: list[QualityFlag] = Field(default_factory=list, max_length=len(QualityFlag))
    perfusion_index: float | None = Field(default=None, ge=0, le=100)
    """Perfusion index in percent where the oximeter reports it."""
    historical: bool = False
    """True when the reading is replayed backlog rather than live data."""

    @model_validator(mode="after")
    def _unit_and_range_match_the_vital(self) -> Observation:
        spec = VITALS[self.vital]
        if self.unit != spec.ucum:
            raise ValueError(f"unit for {self.vital} must be {spec.ucum!r}, got {self.unit!r}")
        if not spec.minimum <= self.value <= spec.maximum:
            bounds = f"{spec.minimum:g}..{spec.maximum:g} {spec.ucum}"
            raise ValueError(f"value {self.value} for {self.vital} is outside {bounds}")
        if len(set(self.quality)) != len(self.quality):
            raise ValueError("quality flags must not repeat")
        return self


class ObservationBatch(SequencedMessage):
    observations: list[Observation] = Field(min_length=1, max_length=MAX_OBSERVATIONS_PER_BATCH)


class AssessmentContent(WireModel):
    """A NEWS2 assessment computed on the gateway (the message without its head)."""

    patient_id: PatientId
    assessed_at: UtcDatetime
    total: int = Field(ge=0, le=20)
    components: dict[str, int | None]
    """Score of each NEWS2 parameter (see NEWS2_PARAMETERS); null where the input is missing or stale."""
    risk: Risk
    complete: bool
    input_ages_s: dict[str, float | None]
    """Age in seconds of each input at ``assessed_at``; null where there is none."""
    spo2_scale: Literal[1, 2]
    on_oxygen: bool
    consciousness: Consciousness
    trend_rising: bool = False
    historical: bool = False

    @field_validator("components")
    @classmethod
    def _known_components(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        if set(value) != set(NEWS2_PARAMETERS):
            raise ValueError(f"components must have exactly the keys {', '.join(NEWS2_PARAMETERS)}")
        for name, score in value.items():
            if score is not None and not 0 <= score <= 3:
                raise ValueError(f"component {name} must be 0..3, got {score}")
        return value

    @field_validator("input_ages_s")
    @classmethod
    def _known_inputs(cls, value: dict[str, float | None]) -> dict[str, float | None]:
        unknown = set(value) - {str(code) for code in VitalCode} - {"consciousness", "on_oxygen"}
        if unknown:
            raise ValueError(f"unknown inputs: {', '.join(sorted(unknown))}")
        for name, age in value.items():
            if age is not None and (age < 0 or not math.isfinite(age)):
                raise ValueError(f"age of {name} must be a finite number >= 0")
        return value

    @model_validator(mode="after")
    def _total_is_the_sum(self) -> AssessmentContent:
        present = [score for score in self.components.values() if score is not None]
        if sum(present) != self.total:
            raise ValueError(f"total {self.total} is not the sum of the components ({sum(present)})")
        if self.complete != (len(present) == len(NEWS2_PARAMETERS)):
            raise ValueError("complete must be true exactly when every component is present")
        return self


class Assessment(SequencedMessage, AssessmentContent):
    """``…/score``: one NEWS2 assessment."""


class DeviceConnected(WireModel):
    kind: Literal["device_connected"]
    device_id: DeviceId
    device_kind: Label


class DeviceDisconnected(WireModel):
    kind: Literal["device_disconnected"]
    device_id: DeviceId
    reason: ShortText


class BatteryLevel(WireModel):
    kind: Literal["battery"]
    device_id: DeviceId
    battery_pct: int = Field(ge=0, le=100)


class ProbeOff(WireModel):
    kind: Literal["probe_off"]
    device_id: DeviceId
    patient_id: PatientId


class LocalAlert(WireModel):
    """The gateway ran its local-alert hook (uplink down and risk high)."""

    kind: Literal["local_alert"]
    patient_id: PatientId
    risk: Risk
    total: int = Field(ge=0, le=20)
    uplink_down_s: float = Field(ge=0)


class OutboxEviction(WireModel):
    """The outbox reached its disk quota and dropped the oldest raw observations."""

    kind: Literal["outbox_eviction"]
    evicted_observations: int = Field(ge=1, le=2**63 - 1)
    oldest_evicted_at: UtcDatetime
    newest_evicted_at: UtcDatetime


EventDetail = Annotated[
    DeviceConnected | DeviceDisconnected | BatteryLevel | ProbeOff | LocalAlert | OutboxEviction,
    Field(discriminator="kind"),
]


class EventContent(WireModel):
    occurred_at: UtcDatetime
    detail: EventDetail
    historical: bool = False


class Event(SequencedMessage, EventContent):
    """``…/event``: one device or local-alert event."""


class DeviceState(WireModel):
    device_id: DeviceId
    device_kind: Label
    connected: bool
    battery_pct: int | None = Field(default=None, ge=0, le=100)
    last_reading_at: UtcDatetime | None = None


class GatewayStatus(WireModel):
    """Retained on ``…/status``: ``birth`` on connect, ``heartbeat`` periodically, ``death`` as the will.

    ``session`` increases every time the agent connects (it is stored on the gateway), so a consumer
    ignores a status whose session is older than the newest it has seen.
    """

    gateway_id: GatewayId
    state: Literal["birth", "heartbeat", "death"]
    session: int = Field(ge=1, le=2**63 - 1)
    sent_at: UtcDatetime
    software_version: Label
    heartbeat_interval_s: float = Field(gt=0, le=3600)
    backlog: int = Field(default=0, ge=0, le=2**63 - 1)
    """Messages in the outbox not yet acknowledged by the broker."""
    oldest_unsent_age_s: float | None = Field(default=None, ge=0)
    devices: list[DeviceState] = Field(default_factory=list, max_length=64)
    clock_synchronized: bool | None = None
    """Whether the gateway's clock is NTP-synchronised (None when unknown)."""
    last_error: ShortText | None = None
    """The uplink's most recent error (e.g. a publish the broker refused), None when there was none."""


class SetSpo2Scale(WireModel):
    command: Literal["set_spo2_scale"]
    scale: Literal[1, 2]


class SetOxygen(WireModel):
    command: Literal["set_oxygen"]
    on_oxygen: bool


class SetConsciousness(WireModel):
    command: Literal["set_consciousness"]
    consciousness: Consciousness


class SetStaleness(WireModel):
    command: Literal["set_staleness"]
    windows_s: dict[VitalCode, float]

    @field_validator("windows_s")
    @classmethod
    def _positive_windows(cls, value: dict[VitalCode, float]) -> dict[VitalCode, float]:
        for vital, window in value.items():
            if not 0 < window <= 7 * 24 * 3600:
                raise ValueError(f"staleness window for {vital} must be > 0 and <= 7 days")
        return value


CommandBody = Annotated[
    SetSpo2Scale | SetOxygen | SetConsciousness | SetStaleness, Field(discriminator="command")
]
COMMAND_NAMES: Final = ("set_spo2_scale", "set_oxygen", "set_consciousness", "set_staleness")


class Command(WireModel):
    """Sent by the server on ``…/cmd/{name}``, where name equals ``body.command``."""

    message_id: MessageId
    gateway_id: GatewayId
    patient_id: PatientId
    issued_at: UtcDatetime
    issued_by: Annotated[str, StringConstraints(pattern=_ID_PATTERN)]
    """The clinician's account id (not a name)."""
    body: CommandBody


class CommandAck(WireModel):
    message_id: MessageId
    gateway_id: GatewayId
    command_id: uuid.UUID
    """The ``message_id`` of the command; not checked for version, so a malformed one can be answered."""
    ok: bool
    detail: ShortText
    acked_at: UtcDatetime


class Receipt(WireModel):
    """Server → gateway on ``…/receipt``: the messages with these sequence numbers are stored (or were
    already). The gateway keeps every message until its receipt arrives: a broker that acknowledged a
    message and then crashed before delivering it cannot lose it."""

    gateway_id: GatewayId
    seqs: list[Annotated[int, Field(ge=0, le=2**63 - 1)]] = Field(min_length=1, max_length=10_000)
    stored_at: UtcDatetime


class AlertEvent(WireModel):
    """Alert lifecycle for the command center, on ``wardwatch/v1/cc/alerts``."""

    message_id: MessageId
    alert_id: uuid.UUID
    action: Literal["raised", "updated", "escalated", "acknowledged", "resolved", "snoozed"]
    category: Literal["clinical", "technical"]
    condition: Label
    patient_id: PatientId | None = None
    gateway_id: GatewayId | None = None
    priority: Literal["low", "medium", "high", "emergency"]
    tier: int = Field(ge=1, le=4)
    risk: Risk | None = None
    total: int | None = Field(default=None, ge=0, le=20)
    reason: ShortText
    actor: Label | None = None
    at: UtcDatetime


class PatientState(WireModel):
    """Retained on ``wardwatch/v1/cc/patients/{patient_id}/state``: the patient's current picture."""

    patient_id: PatientId
    gateway_id: GatewayId
    updated_at: UtcDatetime
    risk: Risk | None
    total: int | None = Field(default=None, ge=0, le=20)
    components: dict[str, int | None] = Field(default_factory=dict)
    latest: dict[VitalCode, float] = Field(default_factory=dict)
    open_alerts: int = Field(ge=0, le=2**63 - 1)
    gateway_online: bool


M = TypeVar("M", bound=BaseModel)


# --------------------------------------------------------------------------------------------------
# Topics


class GatewayChannel(StrEnum):
    STATUS = "status"
    OBS = "obs"
    SCORE = "score"
    EVENT = "event"
    CMD = "cmd"
    CMD_ACK = "cmd-ack"
    RECEIPT = "receipt"


PAYLOAD_FOR_CHANNEL: Final[Mapping[GatewayChannel, type[WireModel]]] = {
    GatewayChannel.STATUS: GatewayStatus,
    GatewayChannel.OBS: ObservationBatch,
    GatewayChannel.SCORE: Assessment,
    GatewayChannel.EVENT: Event,
    GatewayChannel.CMD: Command,
    GatewayChannel.CMD_ACK: CommandAck,
    GatewayChannel.RECEIPT: Receipt,
}
_ID_CHECK = TypeAdapter(GatewayId)
_PATIENT_CHECK = TypeAdapter(PatientId)


@dataclass(frozen=True, slots=True)
class GatewayTopic:
    gateway_id: str
    channel: GatewayChannel
    command: str | None = None

    def __str__(self) -> str:
        return gateway_topic(self.gateway_id, self.channel, self.command)


def _check_id(value: str, what: str) -> str:
    try:
        return _ID_CHECK.validate_python(value)
    except ValidationError:
        raise ProtocolError(
            f"{what} {value!r} is not a valid id (letters, digits, '_', '.', '-'; at most 64)"
        ) from None


def gateway_topic(gateway_id: str, channel: GatewayChannel | str, command: str | None = None) -> str:
    """``wardwatch/v1/gw/{gateway_id}/{channel}`` (``…/cmd/{command}`` for commands)."""
    channel = GatewayChannel(channel)
    _check_id(gateway_id, "gateway id")
    if channel is GatewayChannel.CMD:
        if command not in COMMAND_NAMES:
            raise ProtocolError(f"unknown command {command!r}; known: {', '.join(COMMAND_NAMES)}")
        return f"{GATEWAY_ROOT}/{gateway_id}/cmd/{command}"
    if command is not None:
        raise ProtocolError(f"only the cmd channel takes a command name, not {channel}")
    return f"{GATEWAY_ROOT}/{gateway_id}/{channel}"


def gateway_filter(channel: GatewayChannel | str | None = None, *, gateway_id: str = "+") -> str:
    """A subscription filter, e.g. ``wardwatch/v1/gw/+/obs`` or ``wardwatch/v1/gw/gw-1/cmd/#``."""
    if gateway_id != "+":
        _check_id(gateway_id, "gateway id")
    if channel is None:
        return f"{GATEWAY_ROOT}/{gateway_id}/#"
    channel = GatewayChannel(channel)
    suffix = "cmd/+" if channel is GatewayChannel.CMD else str(channel)
    return f"{GATEWAY_ROOT}/{gateway_id}/{suffix}"


def parse_gateway_topic(topic: str) -> GatewayTopic:
    """Split a gateway topic into its parts, or raise ProtocolError saying what is wrong with it."""
    prefix = GATEWAY_ROOT + "/"
    if not topic.startswith(prefix):
        raise ProtocolError(f"topic {topic!r} is not under {prefix}")
    parts = topic[len(prefix) :].split("/")
    if len(parts) < 2:
        raise ProtocolError(f"topic {topic!r} has no channel after the gateway id")
    gateway_id = _check_id(parts[0], "gateway id in topic")
    try:
        channel = GatewayChannel(parts[1])
    except ValueError:
        raise ProtocolError(f"topic {topic!r} has unknown channel {parts[1]!r}") from None
    if channel is GatewayChannel.CMD:
        if len(parts) != 3 or parts[2] not in COMMAND_NAMES:
            raise ProtocolError(f"topic {topic!r} must be …/cmd/<one of {', '.join(COMMAND_NAMES)}>")
        return GatewayTopic(gateway_id, channel, parts[2])
    if len(parts) != 2:
        raise ProtocolError(f"topic {topic!r} has extra levels after {channel}")
    return GatewayTopic(gateway_id, channel)


CC_ALERT_TOPIC: Final = f"{COMMAND_CENTER_ROOT}/alerts"


def cc_patient_topic(patient_id: str) -> str:
    try:
        _PATIENT_CHECK.validate_python(patient_id)
    except ValidationError:
        raise ProtocolError(f"patient id {patient_id!r} is not a valid pseudonym") from None
    return f"{COMMAND_CENTER_ROOT}/patients/{patient_id}/state"


# --------------------------------------------------------------------------------------------------
# Encoding and decoding


def encode(message: BaseModel) -> bytes:
    """Compact JSON bytes for the wire."""
    return message.model_dump_json(exclude_none=False).encode()


def _describe(error: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        location = ".".join(str(part) for part in item["loc"]) or "(payload)"
        problems.append((location, item["msg"]))
    return problems


def decode(model: type[M], raw: bytes | str) -> M:
    """Validate raw JSON against ``model`` or raise ProtocolError naming each wrong field and why."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(
            f"{model.__name__} payload is {len(data)} bytes; the limit is {MAX_PAYLOAD_BYTES}"
        )
    try:
        # Strict JSON validation: numbers must be JSON numbers, booleans JSON booleans.
        return model.model_validate_json(data, strict=True)
    except ValidationError as exc:
        problems = _describe(exc)
        listing = "; ".join(f"{where}: {why}" for where, why in problems)
        raise ProtocolError(f"invalid {model.__name__}: {listing}", problems=problems) from None


def decode_gateway_message(topic: str, raw: bytes | str) -> tuple[GatewayTopic, WireModel]:
    """Decode a message received on a gateway topic, checking that the payload's gateway is the topic's."""
    where = parse_gateway_topic(topic)
    message = decode(PAYLOAD_FOR_CHANNEL[where.channel], raw)
    claimed = getattr(message, "gateway_id", None)
    if claimed != where.gateway_id:
        raise ProtocolError(
            f"payload gateway_id {claimed!r} differs from the topic's gateway {where.gateway_id!r}",
            problems=[("gateway_id", "must equal the gateway id in the topic")],
        )
    if isinstance(message, Command) and message.body.command != where.command:
        raise ProtocolError(
            f"command {message.body.command!r} sent on the topic for {where.command!r}",
            problems=[("body.command", "must equal the command name in the topic")],
        )
    return where, message


SCHEMA_MODELS: Final[tuple[type[WireModel], ...]] = (
    ObservationBatch,
    Assessment,
    Event,
    GatewayStatus,
    Command,
    CommandAck,
    Receipt,
    AlertEvent,
    PatientState,
)
"""Every payload that travels on a topic; ``wardwatch schema`` writes one JSON Schema for each."""
