"""Clinicians' actions that the policy refuses, the configuration's validation, the wire form and the
state's serialisation."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from escalation_builders import Run, assessment, at, event, status
from pydantic import ValidationError

from edge_agent.protocol import AlertEvent, BatteryLevel, Risk, new_message_id
from server.escalation import (
    Acknowledge,
    ActionRefusedError,
    AlertNotOpenError,
    ClinicalResponse,
    Escalate,
    EscalationPolicy,
    EscalationState,
    Resolve,
    Role,
    Snooze,
    Tick,
    alert_subject,
    decide,
    subject_of,
    to_alert_event,
)


def _open(total: int) -> tuple[Run, uuid.UUID]:
    run = Run()
    run.feed(assessment(at(0), total), at(0))
    return run, run.state.alerts[run.only_alert()].alert_id


def _refused(run: Run, item: Any, reason: str, when: datetime | None = None) -> None:
    before = run.state.model_dump(mode="json")
    with pytest.raises(ActionRefusedError) as caught:
        decide(run.state, item, now=when or at(1), policy=run.policy)
    assert caught.value.reason == reason
    assert run.state.model_dump(mode="json") == before, "a refused action must change nothing"


def test_a_high_alert_cannot_be_snoozed() -> None:
    run, alert_id = _open(7)
    _refused(
        run, Snooze(alert_id=alert_id, actor="dr-1", role=Role.PHYSICIAN, duration_s=60), "snooze_not_allowed"
    )


def test_an_emergency_alert_cannot_be_snoozed() -> None:
    run, alert_id = _open(5)
    run.tick(at(45))
    assert run.state.alerts[str(alert_id)].priority == "emergency"
    item = Snooze(alert_id=alert_id, actor="n-1", role=Role.NURSE, duration_s=60)
    _refused(run, item, "snooze_not_allowed", at(46))


def test_a_snooze_is_bounded() -> None:
    run, alert_id = _open(5)
    _refused(run, Snooze(alert_id=alert_id, actor="n-1", role=Role.NURSE, duration_s=3601), "snooze_too_long")
    run.feed(Snooze(alert_id=alert_id, actor="n-1", role=Role.NURSE, duration_s=3600), at(1))
    assert run.state.alerts[str(alert_id)].snoozed_until == at(61)


@pytest.mark.parametrize("note", [None, "", "   \n"])
def test_resolving_needs_a_note(note: str | None) -> None:
    run, alert_id = _open(5)
    _refused(run, Resolve(alert_id=alert_id, actor="n-1", role=Role.NURSE, note=note), "note_required")


@pytest.mark.parametrize("role", [Role.INTEGRATION, Role.ADMIN])
def test_only_clinicians_act_on_clinical_alerts(role: Role) -> None:
    run, alert_id = _open(7)
    for item in (
        Acknowledge(alert_id=alert_id, actor="svc", role=role),
        Escalate(alert_id=alert_id, actor="svc", role=role),
        Resolve(alert_id=alert_id, actor="svc", role=role, note="closing"),
    ):
        _refused(run, item, "role_not_allowed")


def test_admins_act_on_technical_alarms_but_integrations_never() -> None:
    run = Run()
    run.feed(event(BatteryLevel(kind="battery", device_id="ox-1", battery_pct=5), at(0)), at(0))
    alert_id = run.state.alerts[run.only_alert()].alert_id
    _refused(run, Acknowledge(alert_id=alert_id, actor="svc", role=Role.INTEGRATION), "role_not_allowed")
    (change,) = run.feed(Acknowledge(alert_id=alert_id, actor="tech-1", role=Role.ADMIN), at(1))
    assert (change.action, change.actor, change.category) == ("acknowledged", "tech-1", "technical")


def test_acknowledging_twice_is_refused_but_a_snoozed_alert_can_be_acknowledged() -> None:
    run, alert_id = _open(5)
    run.feed(Acknowledge(alert_id=alert_id, actor="n-1", role=Role.NURSE), at(1))
    _refused(run, Acknowledge(alert_id=alert_id, actor="n-2", role=Role.NURSE), "already_acknowledged", at(2))
    run.feed(Snooze(alert_id=alert_id, actor="n-1", role=Role.NURSE, duration_s=600), at(3))
    (change,) = run.feed(Acknowledge(alert_id=alert_id, actor="n-2", role=Role.NURSE), at(4))
    alert = run.state.alerts[str(alert_id)]
    assert (change.action, alert.ack_state, alert.snoozed_until) == ("acknowledged", "acknowledged", None)


def test_escalating_past_the_top_tier_is_refused() -> None:
    run, alert_id = _open(7)
    for minute in (1, 2):
        run.feed(Escalate(alert_id=alert_id, actor="dr-1", role=Role.PHYSICIAN), at(minute))
    assert run.state.alerts[str(alert_id)].tier == 4
    assert run.state.alerts[str(alert_id)].priority == "emergency"
    _refused(run, Escalate(alert_id=alert_id, actor="dr-1", role=Role.PHYSICIAN), "top_tier_reached", at(3))


def test_actions_on_unknown_or_resolved_alerts() -> None:
    run, alert_id = _open(5)
    with pytest.raises(AlertNotOpenError):
        decide(
            run.state,
            Acknowledge(alert_id=uuid.uuid4(), actor="n", role=Role.NURSE),
            now=at(1),
            policy=run.policy,
        )
    run.feed(Resolve(alert_id=alert_id, actor="n-1", role=Role.NURSE, note="seen"), at(1))
    with pytest.raises(AlertNotOpenError):
        decide(
            run.state,
            Acknowledge(alert_id=alert_id, actor="n", role=Role.NURSE),
            now=at(2),
            policy=run.policy,
        )


def test_every_accepted_action_is_exactly_one_attributed_event() -> None:
    run, alert_id = _open(5)
    actions = [
        (
            Acknowledge(alert_id=alert_id, actor="n-1", role=Role.NURSE, note="calling the patient"),
            "acknowledged",
        ),
        (Snooze(alert_id=alert_id, actor="n-1", role=Role.NURSE, duration_s=60), "snoozed"),
        (Escalate(alert_id=alert_id, actor="n-2", role=Role.NURSE), "escalated"),
        (Resolve(alert_id=alert_id, actor="dr-1", role=Role.PHYSICIAN, note="reviewed at home"), "resolved"),
    ]
    for minute, (item, action) in enumerate(actions, start=1):
        changes = run.feed(item, at(0, minute))
        assert [(c.action, c.actor) for c in changes] == [(action, item.actor)]
    assert run.changes[-1].reason == "reviewed at home"


def test_now_must_be_aware_and_time_never_runs_backwards() -> None:
    run, _ = _open(5)
    with pytest.raises(ValueError, match="aware"):
        decide(run.state, Tick(), now=datetime(2026, 1, 5, 9, 0), policy=run.policy)
    later = decide(run.state, Tick(), now=at(10), policy=run.policy)
    earlier = decide(later.state, Tick(), now=at(5), policy=run.policy)
    assert earlier.state.clock == at(10)
    other_zone = at(20).astimezone(timezone(timedelta(hours=2)))
    assert decide(earlier.state, Tick(), now=other_zone, policy=run.policy).state.clock == at(20)


def test_decide_never_changes_the_state_it_is_given() -> None:
    run, _ = _open(5)
    before = run.state.model_dump(mode="json")
    decision = decide(run.state, Tick(), now=at(50), policy=run.policy)
    assert decision.changes
    assert run.state.model_dump(mode="json") == before


def test_ticking_twice_at_the_same_time_fires_nothing_twice() -> None:
    run, _ = _open(7)
    first = decide(run.state, Tick(), now=at(30), policy=run.policy)
    again = decide(first.state, Tick(), now=at(30), policy=run.policy)
    assert [c.action for c in first.changes] == ["escalated", "escalated", "updated"]  # tiers 3, 4, reminder
    assert again.changes == []


def test_state_round_trips_through_json() -> None:
    run = Run(roundtrip=False)
    run.feed(assessment(at(0), 7), at(0))
    run.feed(status("birth", at(0), interval=30), at(0))
    run.feed(event(BatteryLevel(kind="battery", device_id="ox-1", battery_pct=5), at(0)), at(0))
    run.tick(at(2))
    text = run.state.model_dump_json()
    restored = EscalationState.model_validate_json(text)
    assert restored == run.state
    after_a = decide(run.state, Tick(), now=at(30), policy=run.policy).changes
    after_b = decide(restored, Tick(), now=at(30), policy=run.policy).changes
    assert after_a == after_b


def test_every_change_has_a_valid_wire_form() -> None:
    run = Run()
    run.feed(assessment(at(0), 7, patient="p-9", gateway="gw-9"), at(0))
    run.feed(event(BatteryLevel(kind="battery", device_id="ox-7", battery_pct=5), at(0)), at(0))
    raised_news2, raised_battery = run.changes
    wire = to_alert_event(raised_news2, message_id=new_message_id())
    assert isinstance(wire, AlertEvent)
    assert (wire.category, wire.condition, wire.patient_id, wire.gateway_id, wire.priority, wire.tier) == (
        "clinical",
        "news2",
        "p-9",
        "gw-9",
        "high",
        2,
    )
    assert (wire.risk, wire.total, wire.actor, wire.at) == (Risk.HIGH, 7, None, at(0))
    battery = to_alert_event(raised_battery, message_id=new_message_id())
    assert battery.category == "technical"
    assert "ox-7" in battery.reason
    AlertEvent.model_validate_json(battery.model_dump_json())


def test_alert_ids_are_deterministic() -> None:
    first, _ = _open(5)
    second, _ = _open(5)
    assert list(first.state.alerts) == list(second.state.alerts)


# ---- configuration ---------------------------------------------------------------------------------


def test_default_policy_matches_the_documented_numbers() -> None:
    policy = EscalationPolicy()
    assert policy.ack_timeout_s["high"] == 300
    assert policy.ack_timeout_s["medium"] == 900
    assert policy.clinical_response[Risk.HIGH] == ClinicalResponse(priority="high", tier=2)
    assert policy.heartbeat_grace_factor == 1.5
    assert EscalationPolicy.model_validate(policy.model_dump(mode="json")) == policy


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"clinical_ceiling": {"low": 1, "medium": 4, "high": 1}}, "clinical_ceiling"),
        ({"battery_low_pct": 40}, "battery levels"),
        ({"clinical_response": {"medium": {"priority": "medium", "tier": 1}}}, "missing"),
        (
            {
                "clinical_response": {
                    "low": {"priority": "low", "tier": 1},
                    "low-medium": {"priority": "low", "tier": 1},
                    "medium": {"priority": "medium", "tier": 1},
                    "high": {"priority": "high", "tier": 2},
                }
            },
            "must not contain 'low'",
        ),
        (
            {
                "clinical_response": {
                    "low-medium": {"priority": "medium", "tier": 2},
                    "medium": {"priority": "low", "tier": 1},
                    "high": {"priority": "high", "tier": 2},
                }
            },
            "must not lower",
        ),
        ({"ack_timeout_s": {"high": 60}}, "ack_timeout_s needs exactly"),
        ({"ack_timeout_s": {"low": 0, "medium": 1, "high": 1, "emergency": 1}}, "greater than 0"),
        ({"technical_priority": {"gateway_offline": "high"}}, "technical_priority needs exactly"),
        ({"snooze_max_s": -5}, "greater than 0"),
        ({"snooze_minutes": 5}, "Extra inputs are not permitted"),
    ],
)
def test_invalid_policies_are_refused_with_a_reason(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        EscalationPolicy.model_validate(settings)


def test_a_tighter_policy_changes_the_timeline() -> None:
    policy = EscalationPolicy(
        ack_timeout_s={"low": 600, "medium": 300, "high": 60, "emergency": 60},
        clinical_ceiling={"low": 2, "medium": 2, "high": 3},
    )
    run = Run(policy=policy)
    run.feed(assessment(at(0), 7), at(0))
    run.tick(at(10))
    assert [(c.action, c.tier, c.due_at) for c in run.changes] == [
        ("raised", 2, None),
        ("escalated", 3, at(1)),
        ("updated", 3, at(2)),  # at its ceiling: a reminder, only one after a long gap
    ]


def test_every_input_names_the_subject_whose_state_it_touches() -> None:
    run = Run()
    inputs = [
        assessment(at(0), 7, patient="p-3", gateway="gw-3"),
        status("death", at(0), gateway="gw-4"),
        event(BatteryLevel(kind="battery", device_id="ox-1", battery_pct=5), at(0), gateway="gw-5"),
    ]
    for item in inputs:
        subject = subject_of(item)
        changes = run.feed(item, at(0))
        assert {
            alert_subject(c.category, patient_id=c.patient_id, gateway_id=c.gateway_id) for c in changes
        } == {subject}
        assert {
            a.subject for a in run.state.alerts.values() if a.alert_id in {c.alert_id for c in changes}
        } == {subject}
    assert subject_of(Tick()) is None
    with pytest.raises(ValueError, match="patient id"):
        alert_subject("clinical", patient_id=None, gateway_id="gw-1")
