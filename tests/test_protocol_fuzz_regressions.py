"""Regressions found by the fuzzer (bench/fuzz, issue 9) in the wire contract."""

from __future__ import annotations

import json

import pytest

from edge_agent.errors import ProtocolError
from edge_agent.protocol import Receipt, decode


@pytest.mark.parametrize(
    "stamp", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "9999-12-31T23:59:59.999999-14:00"]
)
def test_a_timestamp_outside_the_calendar_in_utc_is_a_protocol_error(stamp: str) -> None:
    payload = json.dumps({"gateway_id": "gw-1", "seqs": [1], "stored_at": stamp})
    with pytest.raises(ProtocolError) as caught:  # was a bare OverflowError out of decode()
        decode(Receipt, payload)
    assert dict(caught.value.problems)["stored_at"].endswith(
        "outside the years 1..9999 once converted to UTC"
    )


def test_the_calendar_edges_that_stay_inside_still_decode() -> None:
    payload = json.dumps({"gateway_id": "gw-1", "seqs": [1], "stored_at": "9999-12-31T23:59:59+05:00"})
    assert decode(Receipt, payload).stored_at.year == 9999


def test_counters_stored_in_64_bit_columns_are_bounded() -> None:
    from edge_agent.protocol import GatewayStatus

    status = {
        "gateway_id": "gw-1",
        "state": "birth",
        "session": 2**64,  # passed the contract, then failed in the database (SQLite OverflowError)
        "sent_at": "2026-01-01T00:00:00Z",
        "software_version": "0.1.0",
        "heartbeat_interval_s": 30,
    }
    with pytest.raises(
        ProtocolError, match="session: Input should be less than or equal to 9223372036854775807"
    ):
        decode(GatewayStatus, json.dumps(status))
    with pytest.raises(ProtocolError, match="backlog"):
        decode(GatewayStatus, json.dumps(status | {"session": 1, "backlog": 2**63}))
    assert decode(GatewayStatus, json.dumps(status | {"session": 2**63 - 1})).session == 2**63 - 1


def test_free_text_may_not_hold_nul() -> None:
    from edge_agent.protocol import CommandAck

    ack = {
        "message_id": "018f6f2c-7c2b-7cde-8f00-000000000001",
        "gateway_id": "gw-1",
        "command_id": "018f6f2c-7c2b-7cde-8f00-000000000002",
        "ok": False,
        "detail": "bad\u0000key",  # PostgreSQL cannot store NUL: ingest retried it for ever
        "acked_at": "2026-01-01T00:00:00Z",
    }
    with pytest.raises(ProtocolError, match="detail: String should match pattern"):
        decode(CommandAck, json.dumps(ack))
    assert (
        decode(CommandAck, json.dumps(ack | {"detail": "tab\tnewline\n é ✓"})).detail == "tab\tnewline\n é ✓"
    )
