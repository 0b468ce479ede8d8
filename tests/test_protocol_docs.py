"""Every example in docs/protocol.md is valid against the model it claims to show."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from edge_agent import protocol

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
EXAMPLE = re.compile(r"<!-- model: (\w+) -->\s*```json\n(.*?)```", re.DOTALL)
EXAMPLES = EXAMPLE.findall(DOC.read_text())


def test_the_document_has_an_example_of_every_payload() -> None:
    shown = {name for name, _ in EXAMPLES}
    assert {model.__name__ for model in protocol.SCHEMA_MODELS} <= shown


@pytest.mark.parametrize(
    ("model_name", "text"), EXAMPLES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(EXAMPLES)]
)
def test_example_validates(model_name: str, text: str) -> None:
    target = getattr(protocol, model_name)
    if isinstance(target, type):
        protocol.decode(target, text)
    else:
        TypeAdapter(target).validate_json(text, strict=True)


def test_examples_cover_every_event_and_command_kind() -> None:
    kinds = {
        TypeAdapter(protocol.EventDetail).validate_json(text).kind
        for name, text in EXAMPLES
        if name == "EventDetail"
    } | {protocol.decode(protocol.Event, text).detail.kind for name, text in EXAMPLES if name == "Event"}
    assert kinds == {
        "device_connected",
        "device_disconnected",
        "battery",
        "probe_off",
        "local_alert",
        "outbox_eviction",
    }
    commands = {
        TypeAdapter(protocol.CommandBody).validate_json(text).command
        for name, text in EXAMPLES
        if name == "CommandBody"
    } | {protocol.decode(protocol.Command, text).body.command for name, text in EXAMPLES if name == "Command"}
    assert commands == set(protocol.COMMAND_NAMES)
