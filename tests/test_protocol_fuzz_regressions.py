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
