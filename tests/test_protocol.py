"""The wire contract: topics, strict payload models, decoding errors that say what and where."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.errors import ProtocolError
from edge_agent.protocol import (
    CC_ALERT_TOPIC,
    MAX_OBSERVATIONS_PER_BATCH,
    MAX_PAYLOAD_BYTES,
    NEWS2_PARAMETERS,
    PAYLOAD_FOR_CHANNEL,
    VITALS,
    Assessment,
    Command,
    Event,
    GatewayChannel,
    GatewayStatus,
    GatewayTopic,
    ObservationBatch,
    QualityFlag,
    TimeSource,
    VitalCode,
    cc_patient_topic,
    decode,
    decode_gateway_message,
    encode,
    gateway_filter,
    gateway_topic,
    new_message_id,
    parse_gateway_topic,
)

NOW = "2026-11-22T10:00:00Z"


def observation(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "patient_id": "pt-7f3a9c",
        "vital": "spo2",
        "value": 96,
        "unit": "%",
        "measured_at": NOW,
        "time_source": "device",
        "device_id": "oxi-1",
        "quality": [],
    }
    item.update(overrides)
    return item


def batch(*observations: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": str(new_message_id()),
        "gateway_id": "gw-0001",
        "seq": 41,
        "sent_at": NOW,
        "observations": list(observations) or [observation()],
    }
    message.update(overrides)
    return message


def raw(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def problems_of(exc: pytest.ExceptionInfo[ProtocolError]) -> dict[str, str]:
    return dict(exc.value.problems)


# -- topics -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", [c for c in GatewayChannel if c is not GatewayChannel.CMD])
def test_gateway_topics_round_trip(channel: GatewayChannel) -> None:
    topic = gateway_topic("gw-0001", channel)
    assert topic == f"wardwatch/v1/gw/gw-0001/{channel}"
    assert parse_gateway_topic(topic) == GatewayTopic("gw-0001", channel)


def test_command_topic_names_the_command() -> None:
    topic = gateway_topic("gw-0001", "cmd", "set_spo2_scale")
    assert topic == "wardwatch/v1/gw/gw-0001/cmd/set_spo2_scale"
    assert parse_gateway_topic(topic) == GatewayTopic("gw-0001", GatewayChannel.CMD, "set_spo2_scale")
    with pytest.raises(ProtocolError, match="unknown command"):
        gateway_topic("gw-0001", "cmd", "reboot")
    with pytest.raises(ProtocolError, match="cmd/"):
        parse_gateway_topic("wardwatch/v1/gw/gw-0001/cmd/reboot")


@pytest.mark.parametrize("bad_id", ["", "a/b", "gw+1", "gw#", "gw 1", "-gw", "x" * 65, "gw\n"])
def test_ids_that_would_break_topics_are_refused(bad_id: str) -> None:
    with pytest.raises(ProtocolError, match="not a valid id"):
        gateway_topic(bad_id, "obs")


@pytest.mark.parametrize(
    ("topic", "complaint"),
    [
        ("other/v1/gw/gw-1/obs", "is not under"),
        ("wardwatch/v1/gw/gw-1", "no channel"),
        ("wardwatch/v1/gw/gw-1/vitals", "unknown channel"),
        ("wardwatch/v1/gw/gw-1/obs/extra", "extra levels"),
        ("wardwatch/v1/gw/gw+1/obs", "not a valid id"),
    ],
)
def test_malformed_topics_say_what_is_wrong(topic: str, complaint: str) -> None:
    with pytest.raises(ProtocolError, match=complaint):
        parse_gateway_topic(topic)


def test_filters_and_command_center_topics() -> None:
    assert gateway_filter("obs") == "wardwatch/v1/gw/+/obs"
    assert gateway_filter() == "wardwatch/v1/gw/+/#"
    assert gateway_filter("cmd", gateway_id="gw-1") == "wardwatch/v1/gw/gw-1/cmd/+"
    assert CC_ALERT_TOPIC == "wardwatch/v1/cc/alerts"
    assert cc_patient_topic("pt-1") == "wardwatch/v1/cc/patients/pt-1/state"
    with pytest.raises(ProtocolError):
        cc_patient_topic("pt/1")


# -- message ids --------------------------------------------------------------------------------------


def test_message_ids_are_uuid7_and_time_ordered() -> None:
    first = new_message_id(now_ms=1_700_000_000_000)
    later = new_message_id(now_ms=1_700_000_000_001)
    assert first.version == 7 and first.variant == uuid.RFC_4122
    assert first < later
    assert first.int >> 80 == 1_700_000_000_000
    assert len({new_message_id() for _ in range(1000)}) == 1000


def test_a_message_id_that_is_not_uuid7_is_refused() -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(ObservationBatch, raw(batch(message_id=str(uuid.uuid4()))))
    assert "version-7" in problems_of(exc)["message_id"]


# -- observations -------------------------------------------------------------------------------------


def test_valid_batch_decodes_and_encodes_back() -> None:
    message = decode(ObservationBatch, raw(batch()))
    assert message.observations[0].vital is VitalCode.SPO2
    assert message.observations[0].time_source is TimeSource.DEVICE
    assert decode(ObservationBatch, encode(message)) == message


def test_timestamps_need_an_offset_and_are_normalised_to_utc() -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(ObservationBatch, raw(batch(observation(measured_at="2026-11-22T10:00:00"))))
    assert "timezone" in problems_of(exc)["observations.0.measured_at"]
    message = decode(ObservationBatch, raw(batch(observation(measured_at="2026-11-22T11:30:00+01:30"))))
    assert message.observations[0].measured_at == datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    assert message.observations[0].measured_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("vital", "unit", "inside", "outside"),
    [
        ("spo2", "%", 100, 100.5),
        ("heart_rate", "/min", 300, 301),
        ("heart_rate", "/min", 0, -1),
        ("body_temperature", "Cel", 45, 45.1),
        ("respiratory_rate", "/min", 120, 121),
        ("systolic_bp", "mm[Hg]", 300, 301),
    ],
)
def test_values_are_range_checked(vital: str, unit: str, inside: float, outside: float) -> None:
    decode(ObservationBatch, raw(batch(observation(vital=vital, unit=unit, value=inside))))
    with pytest.raises(ProtocolError, match=r"observations\.0: .*outside"):
        decode(ObservationBatch, raw(batch(observation(vital=vital, unit=unit, value=outside))))


def test_unit_must_be_the_vitals_ucum_unit() -> None:
    with pytest.raises(ProtocolError, match=r"unit for body_temperature must be 'Cel', got '\[degF\]'"):
        decode(
            ObservationBatch,
            raw(batch(observation(vital="body_temperature", unit="[degF]", value=98.6))),
        )


def test_numbers_must_be_json_numbers_and_finite() -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(ObservationBatch, raw(batch(observation(value="96"))))
    assert "observations.0.value" in problems_of(exc)
    with pytest.raises(ProtocolError):
        decode(ObservationBatch, b'{"observations": [{"value": NaN}]}')


def test_quality_flags_are_known_and_unique() -> None:
    message = decode(ObservationBatch, raw(batch(observation(quality=["probe_off", "low_perfusion"]))))
    assert message.observations[0].quality == [QualityFlag.PROBE_OFF, QualityFlag.LOW_PERFUSION]
    with pytest.raises(ProtocolError, match="quality"):
        decode(ObservationBatch, raw(batch(observation(quality=["probe_off", "probe_off"]))))
    with pytest.raises(ProtocolError, match="quality"):
        decode(ObservationBatch, raw(batch(observation(quality=["cosmic_rays"]))))


@pytest.mark.parametrize(
    "identifier",
    ["name", "patient_name", "address", "birth_date", "date_of_birth", "phone", "mrn", "nhs_number", "email"],
)
def test_direct_identifiers_are_rejected_everywhere(identifier: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(ObservationBatch, raw(batch(observation(**{identifier: "Jane Doe"}))))
    assert problems_of(exc)[f"observations.0.{identifier}"] == "Extra inputs are not permitted"
    with pytest.raises(ProtocolError) as exc:
        decode(ObservationBatch, raw(batch(**{identifier: "Jane Doe"})))
    assert identifier in problems_of(exc)


def test_patient_id_must_look_like_a_pseudonym_token() -> None:
    with pytest.raises(ProtocolError) as exc:
        decode(ObservationBatch, raw(batch(observation(patient_id="Jane Doe"))))
    assert "observations.0.patient_id" in problems_of(exc)


def test_batch_and_payload_sizes_are_capped() -> None:
    too_many = [observation() for _ in range(MAX_OBSERVATIONS_PER_BATCH + 1)]
    with pytest.raises(ProtocolError, match="observations"):
        decode(ObservationBatch, raw(batch(*too_many)))
    with pytest.raises(ProtocolError, match="the limit is"):
        decode(ObservationBatch, b" " * (MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(ProtocolError, match="observations"):
        decode(ObservationBatch, raw(batch(observations=[])))


def test_garbage_is_a_protocol_error_not_a_crash() -> None:
    for garbage in [b"", b"\xff\xfe", b"[]", b"null", b"{", b'{"seq": 1}']:
        with pytest.raises(ProtocolError, match="ObservationBatch"):
            decode(ObservationBatch, garbage)


@given(st.binary(max_size=512))
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    for model in PAYLOAD_FOR_CHANNEL.values():
        with contextlib.suppress(ProtocolError):
            decode(model, data)


@given(
    st.lists(
        st.builds(
            lambda vital, fraction, seconds, quality, historical: observation(
                vital=vital.value,
                unit=VITALS[vital].ucum,
                value=VITALS[vital].minimum + fraction * (VITALS[vital].maximum - VITALS[vital].minimum),
                measured_at=(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)).isoformat(),
                quality=sorted(quality),
                historical=historical,
            ),
            st.sampled_from(list(VitalCode)),
            st.floats(0, 1),
            st.integers(0, 10**8),
            st.sets(st.sampled_from([flag.value for flag in QualityFlag])),
            st.booleans(),
        ),
        min_size=1,
        max_size=20,
    ),
    st.integers(0, 2**63 - 1),
)
def test_batches_survive_encode_decode(observations: list[dict[str, Any]], seq: int) -> None:
    message = decode(ObservationBatch, raw(batch(*observations, seq=seq)))
    assert decode(ObservationBatch, encode(message)) == message
    assert [o.value for o in message.observations] == [o["value"] for o in observations]


# -- assessments, events, status, commands ------------------------------------------------------------


def assessment(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "message_id": str(new_message_id()),
        "gateway_id": "gw-0001",
        "seq": 42,
        "sent_at": NOW,
        "patient_id": "pt-7f3a9c",
        "assessed_at": NOW,
        "total": 5,
        "components": dict.fromkeys(NEWS2_PARAMETERS, 0) | {"respiration": 2, "pulse": 3},
        "risk": "medium",
        "complete": True,
        "input_ages_s": {"respiratory_rate": 30.0, "heart_rate": 1.0, "body_temperature": None},
        "spo2_scale": 1,
        "on_oxygen": False,
        "consciousness": "A",
    }
    message.update(overrides)
    return message


def test_assessment_total_must_be_the_sum_of_its_components() -> None:
    assert decode(Assessment, raw(assessment())).total == 5
    with pytest.raises(ProtocolError, match="not the sum"):
        decode(Assessment, raw(assessment(total=6)))


def test_assessment_complete_flag_matches_missing_components() -> None:
    missing = dict.fromkeys(NEWS2_PARAMETERS, 0) | {"temperature": None}
    decode(Assessment, raw(assessment(components=missing, total=0, complete=False)))
    with pytest.raises(ProtocolError, match="complete"):
        decode(Assessment, raw(assessment(components=missing, total=0, complete=True)))
    with pytest.raises(ProtocolError, match="exactly the keys"):
        decode(Assessment, raw(assessment(components={"respiration": 2}, total=2)))


def test_event_kinds_are_a_closed_set() -> None:
    head = {"message_id": str(new_message_id()), "gateway_id": "gw-1", "seq": 1, "sent_at": NOW}
    battery = {"kind": "battery", "device_id": "bp-1", "battery_pct": 12}
    event = decode(Event, raw(head | {"occurred_at": NOW, "detail": battery}))
    assert event.detail.kind == "battery"
    with pytest.raises(ProtocolError, match="detail"):
        decode(Event, raw(head | {"occurred_at": NOW, "detail": {"kind": "teleport"}}))
    with pytest.raises(ProtocolError, match="battery_pct"):
        decode(Event, raw(head | {"occurred_at": NOW, "detail": battery | {"battery_pct": 101}}))


def test_status_session_must_be_positive() -> None:
    status = {
        "gateway_id": "gw-1",
        "state": "birth",
        "session": 3,
        "sent_at": NOW,
        "software_version": "0.1.0",
        "heartbeat_interval_s": 30,
    }
    assert decode(GatewayStatus, raw(status)).session == 3
    with pytest.raises(ProtocolError, match="session"):
        decode(GatewayStatus, raw(status | {"session": 0}))


def command(body: dict[str, Any], gateway_id: str = "gw-0001") -> dict[str, Any]:
    return {
        "message_id": str(new_message_id()),
        "gateway_id": gateway_id,
        "patient_id": "pt-7f3a9c",
        "issued_at": NOW,
        "issued_by": "nurse-17",
        "body": body,
    }


def test_gateway_messages_are_checked_against_their_topic() -> None:
    topic = gateway_topic("gw-0001", "obs")
    where, message = decode_gateway_message(topic, raw(batch()))
    assert where.gateway_id == "gw-0001" and isinstance(message, ObservationBatch)
    with pytest.raises(ProtocolError, match="differs from the topic's gateway"):
        decode_gateway_message(gateway_topic("gw-0002", "obs"), raw(batch()))


def test_command_body_must_match_the_topic_name() -> None:
    body = {"command": "set_spo2_scale", "scale": 2}
    _, message = decode_gateway_message(gateway_topic("gw-0001", "cmd", "set_spo2_scale"), raw(command(body)))
    assert isinstance(message, Command) and message.body.command == "set_spo2_scale"
    with pytest.raises(ProtocolError, match="sent on the topic for 'set_oxygen'"):
        decode_gateway_message(gateway_topic("gw-0001", "cmd", "set_oxygen"), raw(command(body)))
    with pytest.raises(ProtocolError, match="scale"):
        decode(Command, raw(command({"command": "set_spo2_scale", "scale": 3})))


def test_non_utc_offsets_in_any_model_end_up_utc() -> None:
    local = datetime(2026, 11, 22, 12, 0, tzinfo=timezone(timedelta(hours=2))).isoformat()
    message = decode(Assessment, raw(assessment(assessed_at=local)))
    assert message.assessed_at == datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
