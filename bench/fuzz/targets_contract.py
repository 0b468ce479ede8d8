"""Targets for the wire contract (edge_agent/protocol.py): ``decode`` and ``decode_gateway_message`` for
every gateway channel, the command-center payloads, and gateway topic parsing.

Oracle: decoding returns a model or raises ``ProtocolError`` naming the model, with (location, reason)
problems for a schema violation; every valid document decodes, on its own topic too; a decoded message
survives encode -> decode unchanged with every timestamp in UTC; a topic either parses into parts that
build the same topic again or is refused with a message quoting it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hypothesis import strategies as st
from pydantic import BaseModel

from bench.fuzz import wire_documents as docs
from bench.fuzz.harness import Target, no_setup, require
from bench.fuzz.mutation import hostile_json_bytes
from edge_agent.errors import ProtocolError
from edge_agent.protocol import (
    COMMAND_NAMES,
    PAYLOAD_FOR_CHANNEL,
    AlertEvent,
    GatewayChannel,
    PatientState,
    WireModel,
    cc_patient_topic,
    decode,
    decode_gateway_message,
    encode,
    gateway_topic,
    parse_gateway_topic,
)

FANOUT = 20


@dataclass(frozen=True)
class Payload:
    model: str
    topic: str | None
    document: Any
    raw: bytes
    valid: bool

    def __repr__(self) -> str:
        return (
            f"Payload(model={self.model!r}, topic={self.topic!r}, raw={self.raw[:3000]!r}, "
            f"valid={self.valid})"
        )


MODELS: dict[str, type[WireModel]] = {model.__name__: model for model in PAYLOAD_FOR_CHANNEL.values()}
MODELS |= {"AlertEvent": AlertEvent, "PatientState": PatientState}


def _topic(channel: str, document: dict[str, Any]) -> str:
    command = document["body"]["command"] if channel == "cmd" else None
    return gateway_topic(document["gateway_id"], channel, command)


def _encoded(document: Any) -> bytes:
    import json

    return json.dumps(document).encode()


def channel_payloads(channel: str) -> st.SearchStrategy[Payload]:
    model = PAYLOAD_FOR_CHANNEL[GatewayChannel(channel)].__name__
    builder = docs.BUILDERS[channel]
    return (
        st.sampled_from(docs.GATEWAYS)
        .flatmap(builder)
        .map(lambda d: Payload(model, _topic(channel, d), d, _encoded(d), True))
    )


cc_payloads = st.one_of(
    docs.alert_event().map(lambda d: Payload("AlertEvent", None, d, _encoded(d), True)),
    docs.patient_state().map(lambda d: Payload("PatientState", None, d, _encoded(d), True)),
)


def derive_payload(payload: Payload, rnd: random.Random) -> Payload:
    topic = payload.topic
    if topic is not None and rnd.random() < 0.1:  # the right payload on another gateway's topic
        where = parse_gateway_topic(topic)
        topic = gateway_topic(rnd.choice(docs.GATEWAYS), where.channel, where.command)
        return Payload(payload.model, topic, payload.document, payload.raw, False)
    return Payload(payload.model, topic, payload.document, hostile_json_bytes(payload.document, rnd), False)


def _all_utc(value: Any, where: str = "") -> None:
    if isinstance(value, datetime):
        require(docs.utc(value), f"{where} is not UTC: {value!r}")
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _all_utc(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _all_utc(item, f"{where}.{index}")
    elif isinstance(value, dict):
        for key, item in value.items():
            _all_utc(item, f"{where}.{key}")


def _refusal(exc: ProtocolError, model: str) -> None:
    message = str(exc)
    require(model in message, f"ProtocolError does not name {model}: {message[:300]}")
    if message.startswith("invalid "):
        require(exc.problems, "schema violation without problems")
        for where, why in exc.problems:
            require(
                isinstance(where, str) and where and isinstance(why, str) and why, f"problem {(where, why)}"
            )


def payload_check(payload: Payload) -> str:
    model = MODELS[payload.model]
    try:
        message: WireModel | None = decode(model, payload.raw)
    except ProtocolError as exc:
        _refusal(exc, payload.model)
        require(not payload.valid, f"valid document refused: {exc}")
        message = None
    else:
        again = decode(model, encode(message))
        require(again == message, "encode -> decode changed the message")
        _all_utc(message)
    if payload.topic is None:
        return "accepted" if message is not None else "ProtocolError"
    try:
        _, on_topic = decode_gateway_message(payload.topic, payload.raw)
    except ProtocolError as exc:
        require(not payload.valid, f"valid document refused on its topic {payload.topic}: {exc}")
        if message is None:
            _refusal(exc, payload.model)
            return "ProtocolError"
        problems = dict(exc.problems)
        require(
            set(problems) <= {"gateway_id", "body.command"},
            f"decoded alone but refused on the topic for another reason: {exc}",
        )
        return "ProtocolError (topic mismatch)"
    require(message is not None and on_topic == message, "decode and decode_gateway_message disagree")
    return "accepted"


# --------------------------------------------------------------------------------------------------
# Topics


@dataclass(frozen=True)
class TopicCase:
    topic: str
    identifier: str


@st.composite
def topic_cases(draw: st.DrawFn) -> TopicCase:
    channel = draw(st.sampled_from(list(GatewayChannel)))
    identifier = draw(docs.ids | st.text(max_size=70))
    command = draw(st.sampled_from(COMMAND_NAMES)) if channel is GatewayChannel.CMD else None
    suffix = f"{channel.value}/{command}" if command else channel.value
    topic = draw(st.sampled_from([f"wardwatch/v1/gw/{identifier}/{suffix}"]) | st.text(max_size=80))
    return TopicCase(topic, identifier)


TOPIC_NOISE = ("/", "+", "#", "\x00", " ", "é", "\udcff", "//", "cmd", "obs", "wardwatch/v1/gw/", "$share/g/")


def derive_topic(case: TopicCase, rnd: random.Random) -> TopicCase:
    text = case.topic
    for _ in range(rnd.randint(1, 3)):
        index = rnd.randint(0, len(text))
        operation = rnd.randrange(4)
        if operation == 0:
            text = text[:index] + rnd.choice(TOPIC_NOISE) + text[index:]
        elif operation == 1:
            text = text[:index] + text[index + rnd.randint(1, 5) :]
        elif operation == 2:
            text = text[:index]
        else:
            levels = text.split("/")
            position = rnd.randrange(len(levels))
            levels[position] = rnd.choice([*COMMAND_NAMES, *(c.value for c in GatewayChannel), "", "x" * 65])
            text = "/".join(levels)
    identifier = case.identifier if rnd.random() < 0.5 else text.split("/")[-1]
    return TopicCase(text, identifier)


def topic_check(case: TopicCase) -> str:
    labels = []
    try:
        where = parse_gateway_topic(case.topic)
    except ProtocolError as exc:
        message = str(exc)
        require(repr(case.topic) in message or "gateway id in topic" in message, f"unhelpful: {message}")
        labels.append("topic refused")
    else:
        require(str(where) == case.topic, f"parsed {where} does not build {case.topic!r} again")
        labels.append("topic parsed")
    for channel in (GatewayChannel.OBS, GatewayChannel.CMD):
        try:
            built = gateway_topic(
                case.identifier, channel, "set_oxygen" if channel is GatewayChannel.CMD else None
            )
        except ProtocolError as exc:
            require(repr(case.identifier) in str(exc), f"unhelpful: {exc}")
            continue
        parsed = parse_gateway_topic(built)
        require(
            parsed.gateway_id == case.identifier and parsed.channel is channel, f"{built} parsed as {parsed}"
        )
    try:
        cc = cc_patient_topic(case.identifier)
    except ProtocolError as exc:
        require(repr(case.identifier) in str(exc), f"unhelpful: {exc}")
        labels.append("id refused")
    else:
        require(cc.split("/")[-2] == case.identifier and cc.count("/") == 5, f"cc topic {cc!r}")
        labels.append("id accepted")
    return ", ".join(labels)


def targets() -> list[Target]:
    found = [
        Target(
            f"contract_{channel.replace('-', '_')}",
            "contract",
            channel_payloads(channel),
            no_setup(payload_check),
            doc=f"decode / decode_gateway_message for …/{channel}: valid, mutated JSON, arbitrary bytes",
            derive=derive_payload,
            fanout=FANOUT,
        )
        for channel in docs.BUILDERS
    ]
    found.append(
        Target(
            "contract_cc",
            "contract",
            cc_payloads,
            no_setup(payload_check),
            doc="decode AlertEvent and PatientState (command-center topics)",
            derive=derive_payload,
            fanout=FANOUT,
        )
    )
    found.append(
        Target(
            "contract_topics",
            "contract",
            topic_cases(),
            no_setup(topic_check),
            doc="parse_gateway_topic, gateway_topic and cc_patient_topic on valid, mutated and random text",
            derive=derive_topic,
            fanout=FANOUT,
        )
    )
    return found
