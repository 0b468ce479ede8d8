"""Regressions found by the fuzzer (bench/fuzz, issue 9) in the agent's command handling."""

from __future__ import annotations

import uuid

from edge_agent.protocol import gateway_topic
from edge_agent.uplink import Uplink, _claimed_id


async def _never_called(command: object) -> tuple[bool, str]:
    raise AssertionError("a malformed command must not reach the handler")


async def test_a_deeply_nested_command_is_refused_not_a_crash() -> None:
    # json.loads raised RecursionError in _claimed_id, which escaped the command loop: the command was
    # never acknowledged, so the broker delivered it again after every reconnect (a poison message).
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _claimed_id(deep) == uuid.UUID(int=0)
    assert _claimed_id(b'{"message_id": "' + b"[" * 5 + b'"}') == uuid.UUID(int=0)
    uplink = Uplink(
        outbox=None,  # type: ignore[arg-type]
        gateway_id="gw-1",
        software_version="test",
        connection=None,  # type: ignore[arg-type]
        commands=_never_called,  # type: ignore[arg-type]
    )
    command_id, ok, detail = await uplink._apply(gateway_topic("gw-1", "cmd", "set_oxygen"), deep)
    assert (command_id, ok) == (uuid.UUID(int=0), False)
    assert detail.startswith("rejected: invalid Command: (payload): Invalid JSON: recursion limit exceeded")


def test_an_acknowledgement_never_carries_nul() -> None:
    from edge_agent.protocol import CommandAck, decode, encode

    uplink = Uplink(
        outbox=None,  # type: ignore[arg-type]
        gateway_id="gw-1",
        software_version="test",
        connection=None,  # type: ignore[arg-type]
        commands=_never_called,  # type: ignore[arg-type]
    )
    # A refusal quotes the payload's unknown key, which may hold NUL; the contract's text may not.
    ack = uplink._acknowledgement(uuid.UUID(int=0), False, "rejected: invalid Command: a\x00b: Extra inputs")
    assert ack.detail == "rejected: invalid Command: a\\x00b: Extra inputs"
    assert decode(CommandAck, encode(ack)) == ack
