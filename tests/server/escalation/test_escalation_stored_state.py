"""A state stored by this version (escalation_state_v1.json) must load and continue in every later one:
workers persist it between calls, so a model change that cannot read it would strand open alerts.

If the state model changes on purpose, keep this file loading (defaults for new fields) rather than
regenerating it."""

from __future__ import annotations

import json
from pathlib import Path

from escalation_builders import at

from server.escalation import EscalationPolicy, EscalationState, Tick, decide

STORED = Path(__file__).with_name("escalation_state_v1.json")


def test_a_stored_state_loads_and_continues_where_it_stopped() -> None:
    state = EscalationState.model_validate(json.loads(STORED.read_text()))
    assert state.clock == at(2)
    assert sorted((a.condition, a.patient_id, a.ack_state) for a in state.alerts.values()) == [
        ("battery_low", None, "unacknowledged"),
        ("news2", "p-1", "unacknowledged"),
        ("news2", "p-2", "acknowledged"),
    ]
    assert state.next_due_at() == at(2, 45)  # the heartbeat deadline of gw-1

    decision = decide(state, Tick(), now=at(6), policy=EscalationPolicy())
    assert [(c.action, c.condition, c.priority, c.tier, c.due_at) for c in decision.changes] == [
        ("raised", "gateway_offline", "medium", 1, at(2, 45)),
        ("escalated", "news2", "high", 3, at(6)),
    ]
    assert decision.next_due_at == at(11)
