"""Hypothesis: random interleavings of assessments, gateway status, device events, clinicians' actions and
time, checked against the policy's promises after every step.

- never two open alerts for one subject, condition and device;
- nothing that is due is left unfired, and every open alert has a next due time unless it waits at its
  ceiling unacknowledged;
- every timer change fires at or after its due time, exactly once, and escalations only climb;
- nothing happens to an alert after it was resolved; a high alert is never resolved by the policy;
- every accepted action is exactly one event attributed to its actor; a refused one changes nothing;
- the state survives JSON; ticking again at the same time fires nothing;
- the changes do not depend on when the scheduler ticked (a punctual scheduler fires every timer at its
  exact due time, a lazy one later but with the same due times and outcome).
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime, timedelta

from escalation_builders import T0, Run, assessment, device, event, spo2_reading, status
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from edge_agent.protocol import (
    BatteryLevel,
    DeviceConnected,
    DeviceDisconnected,
    LocalAlert,
    OutboxEviction,
    ProbeOff,
    QualityFlag,
    Risk,
    new_message_id,
)
from server.escalation import (
    Acknowledge,
    AlertChange,
    Escalate,
    EscalationError,
    EscalationPolicy,
    EscalationState,
    PolicyInput,
    Resolve,
    Role,
    Snooze,
    Tick,
    alert_subject,
    decide,
    subject_of,
    to_alert_event,
)
from server.escalation.config import SNOOZABLE
from server.escalation.lifecycle import REMINDER_PREFIX

PATIENTS = ("p-1", "p-2")
GATEWAYS = ("gw-1", "gw-2")
DEVICES = ("ox-1", "cuff-1")
KINDS = {"ox-1": "ble_plx_continuous", "cuff-1": "ble_blood_pressure"}


# ---- strategies for gateway traffic (actions are drawn in the machine, where the alert ids are) -------


@st.composite
def traffic(draw: st.DrawFn, now: datetime) -> PolicyInput:
    gateway = draw(st.sampled_from(GATEWAYS))
    patient = draw(st.sampled_from(PATIENTS))
    device_id = draw(st.sampled_from(DEVICES))
    kind = draw(st.integers(0, 9))
    if kind <= 2:
        lag = draw(st.sampled_from([0, 0, 0, 30, 900]))
        return assessment(
            now - timedelta(seconds=lag),
            draw(st.integers(0, 20)),
            patient=patient,
            gateway=gateway,
            single_three=draw(st.booleans()),
        )
    if kind == 3:
        when = now - timedelta(seconds=draw(st.sampled_from([0, 0, 60])))
        return status(
            draw(st.sampled_from(["birth", "heartbeat", "heartbeat", "death"])),
            when,
            gateway=gateway,
            session=draw(st.integers(1, 3)),
            interval=draw(st.sampled_from([10, 30, 600])),
            devices=[
                device(
                    d,
                    kind=KINDS[d],
                    connected=draw(st.booleans()),
                    battery=draw(st.none() | st.integers(0, 100)),
                    last_reading_at=draw(
                        st.none() | st.just(when - timedelta(seconds=draw(st.integers(0, 4000))))
                    ),
                )
                for d in DEVICES
            ],
            backlog=draw(st.integers(0, 5000)),
            oldest_unsent_age_s=draw(st.none() | st.floats(0, 2000)),
            clock_synchronized=draw(st.none() | st.booleans()),
        )
    historical = draw(st.booleans())
    details = [
        DeviceConnected(kind="device_connected", device_id=device_id, device_kind=KINDS[device_id]),
        DeviceDisconnected(kind="device_disconnected", device_id=device_id, reason="link lost"),
        BatteryLevel(kind="battery", device_id=device_id, battery_pct=draw(st.integers(0, 100))),
        ProbeOff(kind="probe_off", device_id=device_id, patient_id=patient),
        OutboxEviction(
            kind="outbox_eviction",
            evicted_observations=draw(st.integers(1, 500)),
            oldest_evicted_at=now - timedelta(hours=2),
            newest_evicted_at=now - timedelta(hours=1),
        ),
        LocalAlert(
            kind="local_alert",
            patient_id=patient,
            risk=Risk.HIGH,
            total=draw(st.integers(7, 20)),
            uplink_down_s=600,
        ),
    ]
    if kind == 4:
        flags = draw(st.sampled_from([[], [QualityFlag.PROBE_OFF], [QualityFlag.NO_SENSOR_CONTACT]]))
        return spo2_reading(now, device_id=device_id, patient=patient, gateway=gateway, quality=flags)
    return event(draw(st.sampled_from(details)), now, gateway=gateway, historical=historical)


ACTION_VERB = {
    "acknowledge": "acknowledged",
    "escalate": "escalated",
    "snooze": "snoozed",
    "resolve": "resolved",
}


class Ledger:
    """Everything that happened to every alert, to check promises that span many steps."""

    def __init__(self) -> None:
        self.opened: set[uuid.UUID] = set()
        self.closed: set[uuid.UUID] = set()
        self.ever_high: set[uuid.UUID] = set()
        self.timer_fires: Counter[tuple[uuid.UUID, str, datetime, int]] = Counter()
        self.tier: dict[uuid.UUID, int] = {}

    def record(self, changes: list[AlertChange]) -> None:
        for change in changes:
            alert = change.alert_id
            if change.action == "raised":
                assert alert not in self.opened, "an alert was raised twice"
                self.opened.add(alert)
            else:
                assert alert in self.opened, f"{change.action} for an alert never raised"
                assert alert not in self.closed, f"{change.action} after the alert was resolved"
            if change.priority in {"high", "emergency"}:
                self.ever_high.add(alert)
            if change.action == "resolved":
                self.closed.add(alert)
                if change.actor is None and change.category == "clinical":
                    assert alert not in self.ever_high, "the policy resolved a high alert by itself"
            if change.due_at is not None:
                assert change.due_at <= change.at, "a timer fired before it was due"
                key = (alert, change.action, change.due_at, change.tier)
                self.timer_fires[key] += 1
                assert self.timer_fires[key] == 1, f"a timer fired twice: {key}"
                if change.action == "escalated":
                    assert change.tier > self.tier.get(alert, 0), "a timer escalation did not climb"
            self.tier[alert] = max(self.tier.get(alert, 0), change.tier)
            to_alert_event(change, message_id=new_message_id())  # every change has a valid wire form


class EscalationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.policy = EscalationPolicy()
        self.state = EscalationState()
        self.now = T0
        self.ledger = Ledger()

    def _feed(self, item: PolicyInput) -> list[AlertChange]:
        decision = decide(self.state, item, now=self.now, policy=self.policy)
        self.ledger.record(decision.changes)
        self.state = EscalationState.model_validate_json(decision.state.model_dump_json())
        assert self.state == decision.state, "the state does not survive JSON"
        assert decision.next_due_at == self.state.next_due_at()
        again = decide(self.state, Tick(), now=self.now, policy=self.policy)
        assert again.changes == [], "ticking again at the same time fired something"
        return decision.changes

    @rule(seconds=st.sampled_from([1, 5, 30, 45, 60, 299, 300, 301, 900, 1800, 3600, 4 * 3600]))
    def time_passes(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def punctual_tick(self) -> None:
        """A scheduler that calls back exactly at the next due time: nothing fires late."""
        due = self.state.next_due_at()
        if due is None:
            return
        self.now = due
        for change in self._feed(Tick()):
            if change.due_at is not None:
                assert change.at == change.due_at, change

    @rule(data=st.data())
    def gateway_traffic(self, data: st.DataObject) -> None:
        self._feed(data.draw(traffic(self.now)))

    @precondition(lambda self: bool(self.state.alerts))
    @rule(
        data=st.data(),
        verb=st.sampled_from(list(ACTION_VERB)),
        role=st.sampled_from(list(Role)),
        note=st.none() | st.sampled_from(["", "seen, calling the patient"]),
        duration_s=st.sampled_from([60, 1800, 3600, 7200]),
    )
    def clinician_acts(
        self, data: st.DataObject, verb: str, role: Role, note: str | None, duration_s: float
    ) -> None:
        alert = data.draw(st.sampled_from(sorted(self.state.alerts.values(), key=lambda a: str(a.alert_id))))
        common = {"alert_id": alert.alert_id, "actor": "clin-1", "role": role, "note": note}
        item: PolicyInput
        match verb:
            case "acknowledge":
                item = Acknowledge(**common)
            case "escalate":
                item = Escalate(**common)
            case "snooze":
                item = Snooze(**common, duration_s=duration_s)
            case _:
                item = Resolve(**common)
        before = self.state.model_dump(mode="json")
        try:
            changes = self._feed(item)
        except EscalationError:
            assert self.state.model_dump(mode="json") == before
            return
        mine = [c for c in changes if c.actor is not None]
        assert [(c.action, c.actor, c.alert_id) for c in mine] == [
            (ACTION_VERB[verb], "clin-1", alert.alert_id)
        ]
        assert changes[-1] is mine[0], "the action's event comes after the timers it found due"
        if verb == "snooze":
            assert mine[0].priority in SNOOZABLE
        if verb == "resolve":
            assert note, "resolved without a note"

    @invariant()
    def one_open_alert_per_subject_and_condition(self) -> None:
        keys = [(a.subject, a.condition, a.device_id) for a in self.state.alerts.values()]
        assert len(keys) == len(set(keys))

    @invariant()
    def nothing_due_is_left_unfired_and_nothing_is_forgotten(self) -> None:
        due = self.state.next_due_at()
        assert due is None or self.state.clock is None or due > self.state.clock
        for alert in self.state.alerts.values():
            match alert.ack_state:
                case "unacknowledged":
                    assert alert.escalation_due_at is not None, alert
                case "acknowledged":
                    assert alert.renotify_due_at is not None and alert.escalation_due_at is None
                case "snoozed":
                    assert alert.snoozed_until is not None and alert.priority in SNOOZABLE


EscalationMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestEscalationMachine = EscalationMachine.TestCase


# ---- the scheduler's timing does not change the outcome ---------------------------------------------


def _normalise(changes: list[AlertChange]) -> list[tuple[object, ...]]:
    """What must not depend on the scheduler. Reminders at the ceiling are left out: a punctual scheduler
    sends every one, a late one only the latest (no burst of reminders after an outage)."""
    return [
        (
            c.category,
            c.condition,
            c.patient_id,
            c.gateway_id,
            c.device_id,
            c.action,
            c.priority,
            c.tier,
            c.due_at,
        )
        for c in changes
        if not c.reason.startswith(REMINDER_PREFIX)
    ]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_outcome_does_not_depend_on_when_the_scheduler_ticks(data: st.DataObject) -> None:
    now = T0
    script: list[tuple[datetime, PolicyInput]] = []
    for _ in range(data.draw(st.integers(1, 25))):
        now += timedelta(seconds=data.draw(st.sampled_from([0, 10, 46, 61, 300, 901, 1800, 3600])))
        script.append((now, data.draw(traffic(now))))
    end = now + timedelta(hours=6)

    lazy = Run(roundtrip=False)
    for when, item in script:
        lazy.feed(item, when)
    lazy.tick(end)

    punctual = Run(roundtrip=False)
    for when, item in [*script, (end, Tick())]:
        while (due := punctual.state.next_due_at()) is not None and due <= when:
            for change in punctual.tick(due):
                assert change.due_at is None or change.at == change.due_at, "a punctual tick fired late"
        punctual.feed(item, when)

    assert _normalise(punctual.changes) == _normalise(lazy.changes)
    assert punctual.state.model_dump(exclude={"alerts", "clock"}) == lazy.state.model_dump(
        exclude={"alerts", "clock"}
    )


# ---- one state per subject behaves exactly like one state for everything ----------------------------


class Partitioned:
    """Keeps one EscalationState per subject, as storage with a row per subject would."""

    def __init__(self, policy: EscalationPolicy) -> None:
        self.policy = policy
        self.rows: dict[str, EscalationState] = {}
        self.changes: list[AlertChange] = []

    def feed(self, item: PolicyInput, now: datetime, alert_row: str | None = None) -> None:
        subject = subject_of(item) or alert_row
        targets = [subject] if subject is not None else sorted(self.rows)
        for key in targets:
            decision = decide(self.rows.get(key, EscalationState()), item, now=now, policy=self.policy)
            self.rows[key] = EscalationState.model_validate_json(decision.state.model_dump_json())
            self.changes.extend(decision.changes)


def _by_subject(changes: list[AlertChange]) -> dict[str, list[tuple[object, ...]]]:
    """Changes per subject. A whole state fires every subject's due timers on any input, a row per subject
    only when that row is touched or ticked: so timer changes are compared by due time, not firing time,
    and reminders at the ceiling (one per late tick) are left out."""
    grouped: dict[str, list[tuple[object, ...]]] = {}
    for change in changes:
        if change.reason.startswith(REMINDER_PREFIX):
            continue
        key = alert_subject(change.category, patient_id=change.patient_id, gateway_id=change.gateway_id)
        fired = change.due_at if change.due_at is not None else change.at
        grouped.setdefault(key, []).append(
            (change.alert_id, change.action, change.priority, change.tier, fired)
        )
    return grouped


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_one_state_per_subject_gives_the_same_changes_as_one_state_for_all(data: st.DataObject) -> None:
    whole = Run(roundtrip=False)
    split = Partitioned(whole.policy)
    now = T0
    for _ in range(data.draw(st.integers(1, 20))):
        now += timedelta(seconds=data.draw(st.sampled_from([0, 10, 46, 61, 300, 901, 3600])))
        choice = data.draw(st.integers(0, 4))
        item: PolicyInput
        row = None
        if choice == 0 and whole.state.alerts:
            alert = data.draw(
                st.sampled_from(sorted(whole.state.alerts.values(), key=lambda a: str(a.alert_id)))
            )
            role = data.draw(st.sampled_from([Role.NURSE, Role.ADMIN]))
            item = data.draw(
                st.sampled_from(
                    [
                        Acknowledge(alert_id=alert.alert_id, actor="c-1", role=role),
                        Escalate(alert_id=alert.alert_id, actor="c-1", role=role),
                        Snooze(alert_id=alert.alert_id, actor="c-1", role=role, duration_s=900),
                        Resolve(alert_id=alert.alert_id, actor="c-1", role=role, note="seen"),
                    ]
                )
            )
            row = alert.subject
        elif choice == 1:
            item = Tick()
        else:
            item = data.draw(traffic(now))
        try:
            whole.feed(item, now)
        except EscalationError:
            before = {key: state.model_dump() for key, state in split.rows.items()}
            try:
                split.feed(item, now, alert_row=row)
            except EscalationError:
                assert {key: state.model_dump() for key, state in split.rows.items()} == before
                continue
            raise AssertionError("the partitioned states accepted what the whole state refused") from None
        split.feed(item, now, alert_row=row)
    end = now + timedelta(hours=12)
    whole.tick(end)
    split.feed(Tick(), end)
    assert _by_subject(split.changes) == _by_subject(whole.changes)
    merged_alerts = {key: alert for state in split.rows.values() for key, alert in state.alerts.items()}
    assert merged_alerts == whole.state.alerts
