"""Table-driven escalation timelines with explicit times.

Each scenario is a list of (time, input) steps and the exact list of alert changes expected, written as
``"H:MM:SS action condition priority tier [by actor]"`` with times relative to T0. Clinician actions name
the condition of the open alert they act on; the runner finds its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from escalation_builders import (
    T0,
    Run,
    assessment,
    at,
    device,
    event,
    spo2_reading,
    status,
)

from edge_agent.protocol import (
    BatteryLevel,
    DeviceConnected,
    DeviceDisconnected,
    LocalAlert,
    OutboxEviction,
    ProbeOff,
    QualityFlag,
    Risk,
)
from server.escalation import (
    Acknowledge,
    AlertChange,
    Escalate,
    EscalationPolicy,
    PolicyInput,
    Resolve,
    Role,
    Snooze,
    Tick,
)


@dataclass(frozen=True)
class Act:
    """A clinician's action on the open alert with this condition (and device)."""

    kind: str
    condition: str = "news2"
    actor: str = "nurse-1"
    role: Role = Role.NURSE
    note: str | None = None
    duration_s: float = 600
    device_id: str | None = None


Step = tuple[datetime, PolicyInput | Act]
TICK = Tick()


def _stamp(change: AlertChange) -> str:
    offset = int((change.at - T0).total_seconds())
    hours, rest = divmod(offset, 3600)
    clock = f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
    text = f"{clock} {change.action} {change.condition} {change.priority} t{change.tier}"
    return text + (f" by {change.actor}" if change.actor else "")


def _resolve_act(run: Run, act: Act) -> PolicyInput:
    matches = [
        alert
        for alert in run.state.alerts.values()
        if alert.condition == act.condition and (act.device_id is None or alert.device_id == act.device_id)
    ]
    assert len(matches) == 1, f"expected one open {act.condition} alert, found {len(matches)}"
    alert_id = matches[0].alert_id
    common = {"alert_id": alert_id, "actor": act.actor, "role": act.role, "note": act.note}
    match act.kind:
        case "acknowledge":
            return Acknowledge(**common)
        case "escalate":
            return Escalate(**common)
        case "snooze":
            return Snooze(**common, duration_s=act.duration_s)
        case "resolve":
            return Resolve(**common)
    raise AssertionError(act.kind)


def play(steps: list[Step], policy: EscalationPolicy | None = None) -> tuple[Run, list[str]]:
    run = Run(policy=policy or EscalationPolicy())
    for when, item in steps:
        run.feed(_resolve_act(run, item) if isinstance(item, Act) else item, when)
    return run, [_stamp(change) for change in run.changes]


CLINICAL: dict[str, tuple[list[Step], list[str]]] = {
    "medium unacknowledged climbs every 15 min to emergency dispatch, then reminds it every 5 min": (
        [(at(0), assessment(at(0), 5)), *[(at(m), TICK) for m in (14, 15, 29, 30, 45, 60, 600)]],
        [
            "0:00:00 raised news2 medium t1",
            "0:15:00 escalated news2 medium t2",
            "0:30:00 escalated news2 medium t3",
            "0:45:00 escalated news2 emergency t4",
            "1:00:00 updated news2 emergency t4",
            "10:00:00 updated news2 emergency t4",
        ],
    ),
    "high goes to tier 2 at once and climbs every 5 min": (
        [(at(0), assessment(at(0), 7)), *[(at(m), TICK) for m in (5, 10, 15, 60)]],
        [
            "0:00:00 raised news2 high t2",
            "0:05:00 escalated news2 high t3",
            "0:10:00 escalated news2 emergency t4",
            "0:15:00 updated news2 emergency t4",
            "1:00:00 updated news2 emergency t4",
        ],
    ),
    "low-medium (a single 3) is tier 1 low priority, 30 min steps, ceiling tier 3": (
        [(at(0), assessment(at(0), 3, single_three=True)), *[(at(m), TICK) for m in (30, 60, 90, 600)]],
        [
            "0:00:00 raised news2 low t1",
            "0:30:00 escalated news2 low t2",
            "1:00:00 escalated news2 low t3",
            "1:30:00 updated news2 low t3",
            "10:00:00 updated news2 low t3",
        ],
    ),
    "a late scheduler catches up through every missed tier, each with its own due time": (
        [(at(0), assessment(at(0), 5)), (at(40), TICK)],
        [
            "0:00:00 raised news2 medium t1",
            "0:40:00 escalated news2 medium t2",
            "0:40:00 escalated news2 medium t3",
        ],
    ),
    "acknowledged in time: no escalation; re-notified after 4 h, then escalates again": (
        [
            (at(0), assessment(at(0), 5)),
            (at(10), Act("acknowledge")),
            (at(15), TICK),
            (at(250), TICK),
            (at(265), TICK),
        ],
        [
            "0:00:00 raised news2 medium t1",
            "0:10:00 acknowledged news2 medium t1 by nurse-1",
            "4:10:00 updated news2 medium t1",
            "4:25:00 escalated news2 medium t2",
        ],
    ),
    "one alert per patient: repeated medium updates only on a new peak": (
        [(at(0), assessment(at(0), 5)), (at(1), assessment(at(1), 5)), (at(2), assessment(at(2), 6))],
        ["0:00:00 raised news2 medium t1", "0:02:00 updated news2 medium t1"],
    ),
    "worsening to high re-arms an acknowledged medium alert at tier 2 with the 5 min clock": (
        [
            (at(0), assessment(at(0), 5)),
            (at(2), Act("acknowledge")),
            (at(4), assessment(at(4), 8)),
            (at(9), TICK),
        ],
        [
            "0:00:00 raised news2 medium t1",
            "0:02:00 acknowledged news2 medium t1 by nurse-1",
            "0:04:00 escalated news2 high t2",
            "0:09:00 escalated news2 high t3",
        ],
    ),
    "worsening re-escalates but never lowers a tier reached by timeout": (
        [(at(0), assessment(at(0), 5)), (at(31), assessment(at(31), 7)), (at(36), TICK)],
        [
            "0:00:00 raised news2 medium t1",
            "0:31:00 escalated news2 medium t2",
            "0:31:00 escalated news2 medium t3",
            "0:31:00 escalated news2 high t3",
            "0:36:00 escalated news2 emergency t4",
        ],
    ),
    "a worsening never delays an escalation that is already running": (
        [(at(0), assessment(at(0), 5)), (at(30), TICK), (at(44), assessment(at(44), 7)), (at(45), TICK)],
        [
            "0:00:00 raised news2 medium t1",
            "0:30:00 escalated news2 medium t2",
            "0:30:00 escalated news2 medium t3",
            "0:44:00 escalated news2 high t3",
            "0:45:00 escalated news2 emergency t4",
        ],
    ),
    "a total rise of 2 within the band re-arms an acknowledged alert": (
        [
            (at(0), assessment(at(0), 7)),
            (at(1), Act("acknowledge", role=Role.PHYSICIAN, actor="dr-2")),
            (at(2), assessment(at(2), 8)),
            (at(3), assessment(at(3), 9)),
            (at(8), TICK),
        ],
        [
            "0:00:00 raised news2 high t2",
            "0:01:00 acknowledged news2 high t2 by dr-2",
            "0:03:00 updated news2 high t2",
            "0:08:00 escalated news2 high t3",
        ],
    ),
    "medium back to low for the hold period resolves by itself": (
        [
            (at(0), assessment(at(0), 5)),
            (at(5), Act("acknowledge")),
            (at(10), assessment(at(10), 2)),
            (at(30), assessment(at(30), 1)),
            (at(39), assessment(at(39), 2)),
            (at(40), assessment(at(40), 2)),
        ],
        [
            "0:00:00 raised news2 medium t1",
            "0:05:00 acknowledged news2 medium t1 by nurse-1",
            "0:10:00 updated news2 medium t1",
            "0:40:00 resolved news2 medium t1",
        ],
    ),
    "a rise during the hold restarts it": (
        [
            (at(0), assessment(at(0), 5)),
            (at(1), Act("acknowledge")),
            (at(10), assessment(at(10), 2)),
            (at(20), assessment(at(20), 5)),
            (at(21), assessment(at(21), 2)),
            (at(45), assessment(at(45), 2)),
            (at(51), assessment(at(51), 2)),
        ],
        [
            "0:00:00 raised news2 medium t1",
            "0:01:00 acknowledged news2 medium t1 by nurse-1",
            "0:10:00 updated news2 medium t1",
            "0:20:00 updated news2 medium t1",
            "0:21:00 updated news2 medium t1",
            "0:51:00 resolved news2 medium t1",
        ],
    ),
    "a high alert back to low is only suggested for resolution, once; a clinician resolves it": (
        [
            (at(0), assessment(at(0), 7)),
            (at(1), Act("acknowledge", role=Role.PHYSICIAN, actor="dr-2")),
            (at(10), assessment(at(10), 1)),
            (at(40), assessment(at(40), 1)),
            (at(50), assessment(at(50), 0)),
            (at(55), Act("resolve", role=Role.PHYSICIAN, actor="dr-2", note="recovered, reviewed by video")),
        ],
        [
            "0:00:00 raised news2 high t2",
            "0:01:00 acknowledged news2 high t2 by dr-2",
            "0:10:00 updated news2 high t2",
            "0:40:00 updated news2 high t2",
            "0:55:00 resolved news2 high t2 by dr-2",
        ],
    ),
    "an unacknowledged high alert keeps escalating even when the patient is low again": (
        [(at(0), assessment(at(0), 7)), (at(1), assessment(at(1), 0)), (at(5), TICK)],
        ["0:00:00 raised news2 high t2", "0:01:00 updated news2 high t2", "0:05:00 escalated news2 high t3"],
    ),
    "resolved by a clinician at medium: same level stays quiet, a rise raises a new alert": (
        [
            (at(0), assessment(at(0), 5)),
            (at(2), Act("resolve", note="known COPD baseline, plan agreed")),
            (at(3), assessment(at(3), 6)),
            (at(4), assessment(at(4), 7)),
        ],
        [
            "0:00:00 raised news2 medium t1",
            "0:02:00 resolved news2 medium t1 by nurse-1",
            "0:04:00 raised news2 high t2",
        ],
    ),
    "resolved by a clinician at medium: after the re-notify interval (4 h) the same level raises again": (
        [
            (at(0), assessment(at(0), 5)),
            (at(2), Act("resolve", note="reviewed, plan agreed")),
            (at(241), assessment(at(241), 5)),
            (at(242), assessment(at(242), 5)),
        ],
        [
            "0:00:00 raised news2 medium t1",
            "0:02:00 resolved news2 medium t1 by nurse-1",
            "4:02:00 raised news2 medium t1",
        ],
    ),
    "resolved by a clinician, then low, then medium again: a new episode raises": (
        [
            (at(0), assessment(at(0), 5)),
            (at(2), Act("resolve", note="reviewed")),
            (at(3), assessment(at(3), 2)),
            (at(4), assessment(at(4), 5)),
        ],
        [
            "0:00:00 raised news2 medium t1",
            "0:02:00 resolved news2 medium t1 by nurse-1",
            "0:04:00 raised news2 medium t1",
        ],
    ),
    "snooze holds a medium alert, which is re-armed at the end and escalates 15 min later": (
        [
            (at(0), assessment(at(0), 5)),
            (at(5), Act("snooze", duration_s=1800)),
            (at(34), TICK),
            (at(35), TICK),
            (at(50), TICK),
        ],
        [
            "0:00:00 raised news2 medium t1",
            "0:05:00 snoozed news2 medium t1 by nurse-1",
            "0:35:00 updated news2 medium t1",
            "0:50:00 escalated news2 medium t2",
        ],
    ),
    "worsening ends a snooze at once": (
        [
            (at(0), assessment(at(0), 5)),
            (at(5), Act("snooze", duration_s=1800)),
            (at(6), assessment(at(6), 7)),
        ],
        [
            "0:00:00 raised news2 medium t1",
            "0:05:00 snoozed news2 medium t1 by nurse-1",
            "0:06:00 escalated news2 high t2",
        ],
    ),
    "escalate by hand goes one tier up and restarts the clock": (
        [
            (at(0), assessment(at(0), 5)),
            (at(3), Act("escalate", note="patient sounds breathless")),
            (at(17), TICK),
            (at(18), TICK),
        ],
        [
            "0:00:00 raised news2 medium t1",
            "0:03:00 escalated news2 medium t2 by nurse-1",
            "0:18:00 escalated news2 medium t3",
        ],
    ),
    "an out-of-order (older) assessment is ignored": (
        [(at(0), assessment(at(0), 5)), (at(1), assessment(at(-5), 8))],
        ["0:00:00 raised news2 medium t1"],
    ),
    "a gateway clock running ahead cannot hide later assessments": (
        [(at(0), assessment(at(600), 2)), (at(1), assessment(at(1), 7))],
        ["0:01:00 raised news2 high t2"],
    ),
    "a mislabelled assessment cannot hide a high total": (
        [(at(0), assessment(at(0), 7, risk=Risk.LOW))],
        ["0:00:00 raised news2 high t2"],
    ),
    "a gateway's local alert during an outage raises like an assessment": (
        [
            (
                at(0),
                event(
                    LocalAlert(
                        kind="local_alert", patient_id="p-1", risk=Risk.HIGH, total=8, uplink_down_s=600
                    ),
                    at(0),
                ),
            )
        ],
        ["0:00:00 raised news2 high t2"],
    ),
    "two patients have their own alerts": (
        [(at(0), assessment(at(0), 5, patient="p-1")), (at(0), assessment(at(0), 7, patient="p-2"))],
        ["0:00:00 raised news2 medium t1", "0:00:00 raised news2 high t2"],
    ),
}

OFFLINE_DEVICES = [device("ox-1"), device("cuff-1", kind="ble_blood_pressure")]

TECHNICAL: dict[str, tuple[list[Step], list[str]]] = {
    "no heartbeat for 1.5 x the interval: offline exactly then; a heartbeat clears it": (
        [
            (at(0), status("birth", at(0))),
            (at(0, 30), status("heartbeat", at(0, 30))),
            (at(0, 74), TICK),
            (at(0, 75), TICK),
            (at(0, 80), status("heartbeat", at(0, 80))),
        ],
        ["0:01:15 raised gateway_offline medium t1", "0:01:20 resolved gateway_offline medium t1"],
    ),
    "death raises at once; a stale death and a dead session's heartbeat are ignored; a new birth clears": (
        [
            (at(0), status("birth", at(0), session=2, interval=3600)),
            (at(1), status("death", at(0), session=1, interval=3600)),
            (at(2), status("death", at(0), session=2, interval=3600)),
            (at(3), status("heartbeat", at(1, 30), session=2, interval=3600)),
            (at(4), status("death", at(0), session=2, interval=3600)),
            (at(5), status("birth", at(5), session=3, interval=3600)),
        ],
        ["0:02:00 raised gateway_offline medium t1", "0:05:00 resolved gateway_offline medium t1"],
    ),
    "offline escalates to technical on-call and stops at tier 2, reminding it": (
        [(at(0), status("death", at(0))), (at(15), TICK), (at(120), TICK)],
        [
            "0:00:00 raised gateway_offline medium t1",
            "0:15:00 escalated gateway_offline medium t2",
            "2:00:00 updated gateway_offline medium t2",
        ],
    ),
    "a retained copy of an old heartbeat does not bring the gateway back": (
        [
            (at(0), status("birth", at(0))),
            (at(2), TICK),
            (at(3), status("birth", at(0))),
        ],
        ["0:02:00 raised gateway_offline medium t1"],
    ),
    "device disconnected past the grace alarms; reconnection clears; spot-check kinds never alarm": (
        [
            (at(0), status("birth", at(0), interval=600, devices=OFFLINE_DEVICES)),
            (
                at(1),
                event(
                    DeviceDisconnected(kind="device_disconnected", device_id="ox-1", reason="link lost"),
                    at(1),
                ),
            ),
            (
                at(1),
                event(
                    DeviceDisconnected(kind="device_disconnected", device_id="cuff-1", reason="done"), at(1)
                ),
            ),
            (at(3), TICK),
            (
                at(4),
                event(
                    DeviceConnected(
                        kind="device_connected", device_id="ox-1", device_kind="ble_plx_continuous"
                    ),
                    at(4),
                ),
            ),
        ],
        ["0:03:00 raised device_disconnected low t1", "0:04:00 resolved device_disconnected low t1"],
    ),
    "a disconnection shorter than the grace never alarms": (
        [
            (
                at(0),
                event(DeviceDisconnected(kind="device_disconnected", device_id="ox-1", reason="x"), at(0)),
            ),
            (
                at(1),
                event(
                    DeviceConnected(
                        kind="device_connected", device_id="ox-1", device_kind="ble_plx_continuous"
                    ),
                    at(1),
                ),
            ),
            (at(10), TICK),
        ],
        [],
    ),
    "battery low, critical raises priority, hysteresis before clearing": (
        [
            (at(0), event(BatteryLevel(kind="battery", device_id="ox-1", battery_pct=19), at(0))),
            (at(1), event(BatteryLevel(kind="battery", device_id="ox-1", battery_pct=18), at(1))),
            (at(2), event(BatteryLevel(kind="battery", device_id="ox-1", battery_pct=9), at(2))),
            (at(3), event(BatteryLevel(kind="battery", device_id="ox-1", battery_pct=25), at(3))),
            (at(4), event(BatteryLevel(kind="battery", device_id="ox-1", battery_pct=30), at(4))),
        ],
        [
            "0:00:00 raised battery_low low t1",
            "0:02:00 escalated battery_low medium t1",
            "0:04:00 resolved battery_low medium t1",
        ],
    ),
    "probe off past the grace alarms; a clean reading clears": (
        [
            (at(0), event(ProbeOff(kind="probe_off", device_id="ox-1", patient_id="p-1"), at(0))),
            (at(0, 30), spo2_reading(at(0, 30), quality=[QualityFlag.PROBE_OFF])),
            (at(0, 59), TICK),
            (at(1), TICK),
            (at(2), spo2_reading(at(2))),
        ],
        ["0:01:00 raised probe_off medium t1", "0:02:00 resolved probe_off medium t1"],
    ),
    "a probe that was off when the gateway went away alarms again after it is back": (
        [
            (at(0), status("birth", at(0), interval=60)),
            (at(0, 10), event(ProbeOff(kind="probe_off", device_id="ox-1", patient_id="p-1"), at(0, 10))),
            (at(0, 30), status("death", at(0), interval=60)),
            (at(5), status("birth", at(5), session=2, interval=60)),
            (at(5, 10), event(ProbeOff(kind="probe_off", device_id="ox-1", patient_id="p-1"), at(5, 10))),
            (at(6, 10), TICK),
        ],
        [
            "0:00:30 raised gateway_offline medium t1",
            "0:05:00 resolved gateway_offline medium t1",
            "0:06:10 raised probe_off medium t1",
        ],
    ),
    "a disconnected device whose kind turns out to be spot-check does not alarm": (
        [
            (
                at(0),
                event(DeviceDisconnected(kind="device_disconnected", device_id="cuff-1", reason="x"), at(0)),
            ),
            (
                at(1),
                status(
                    "birth",
                    at(1),
                    interval=3600,
                    devices=[device("cuff-1", kind="ble_blood_pressure", connected=False)],
                ),
            ),
            (at(5), TICK),
        ],
        [],
    ),
    "probe back on within the grace never alarms": (
        [
            (at(0), spo2_reading(at(0), quality=[QualityFlag.NO_SENSOR_CONTACT])),
            (at(0, 30), spo2_reading(at(0, 30))),
            (at(5), TICK),
        ],
        [],
    ),
    "outbox eviction alarms, later evictions update the count, nothing clears it but a person": (
        [
            (
                at(0),
                event(
                    OutboxEviction(
                        kind="outbox_eviction",
                        evicted_observations=100,
                        oldest_evicted_at=at(-600),
                        newest_evicted_at=at(-500),
                    ),
                    at(0),
                ),
            ),
            (
                at(1),
                event(
                    OutboxEviction(
                        kind="outbox_eviction",
                        evicted_observations=50,
                        oldest_evicted_at=at(-500),
                        newest_evicted_at=at(-450),
                    ),
                    at(1),
                    historical=True,
                ),
            ),
            (at(2), status("birth", at(2), interval=3600)),
            (
                at(3),
                Act(
                    "resolve",
                    condition="outbox_eviction",
                    role=Role.ADMIN,
                    actor="tech-1",
                    note="disk replaced",
                ),
            ),
        ],
        [
            "0:00:00 raised outbox_eviction medium t1",
            "0:01:00 updated outbox_eviction medium t1",
            "0:03:00 resolved outbox_eviction medium t1 by tech-1",
        ],
    ),
    "outbox backlog: old unsent messages alarm, draining clears": (
        [
            (at(0), status("birth", at(0), interval=600, backlog=5000, oldest_unsent_age_s=700)),
            (at(5), status("heartbeat", at(5), interval=600, backlog=4000, oldest_unsent_age_s=400)),
            (at(10), status("heartbeat", at(10), interval=600, backlog=10, oldest_unsent_age_s=5)),
        ],
        ["0:00:00 raised outbox_backlog low t1", "0:10:00 resolved outbox_backlog low t1"],
    ),
    "outbox backlog growing over 5 heartbeats alarms": (
        [
            (at(i), status("heartbeat", at(i), interval=600, backlog=1000 + 100 * i, oldest_unsent_age_s=60))
            for i in range(7)
        ],
        ["0:05:00 raised outbox_backlog low t1"],
    ),
    "gateway clock unsynchronised for 15 min alarms; synchronised clears": (
        [
            (at(0), status("birth", at(0), interval=3600, clock_synchronized=False)),
            (at(10), status("heartbeat", at(10), interval=3600, clock_synchronized=False)),
            (at(15), TICK),
            (at(20), status("heartbeat", at(20), interval=3600, clock_synchronized=True)),
        ],
        ["0:15:00 raised clock_unsynchronized low t1", "0:20:00 resolved clock_unsynchronized low t1"],
    ),
    "device silent past its kind's cadence alarms; a fresh reading clears": (
        [
            (at(0), status("birth", at(0), interval=3600, devices=[device("ox-1", last_reading_at=at(-5))])),
            (
                at(20),
                status("heartbeat", at(20), interval=3600, devices=[device("ox-1", last_reading_at=at(-5))]),
            ),
            (
                at(40),
                status("heartbeat", at(40), interval=3600, devices=[device("ox-1", last_reading_at=at(39))]),
            ),
        ],
        ["0:20:00 raised device_silent low t1", "0:40:00 resolved device_silent low t1"],
    ),
    "a person resolves an offline gateway: not raised again until it was back once": (
        [
            (at(0), status("death", at(0), session=1)),
            (
                at(1),
                Act(
                    "resolve",
                    condition="gateway_offline",
                    role=Role.ADMIN,
                    actor="tech-1",
                    note="patient in hospital",
                ),
            ),
            (at(2), status("death", at(0), session=1)),
            (at(3), status("birth", at(3), session=2)),
            (at(4), status("death", at(3), session=2)),
        ],
        [
            "0:00:00 raised gateway_offline medium t1",
            "0:01:00 resolved gateway_offline medium t1 by tech-1",
            "0:04:00 raised gateway_offline medium t1",
        ],
    ),
    "historical device events describe the past and raise nothing": (
        [
            (
                at(0),
                event(BatteryLevel(kind="battery", device_id="ox-1", battery_pct=5), at(0), historical=True),
            ),
            (
                at(0),
                event(ProbeOff(kind="probe_off", device_id="ox-1", patient_id="p-1"), at(0), historical=True),
            ),
            (at(5), TICK),
        ],
        [],
    ),
}


@pytest.mark.parametrize(("steps", "expected"), CLINICAL.values(), ids=list(CLINICAL))
def test_clinical_timeline(steps: list[Step], expected: list[str]) -> None:
    _run, changes = play(steps)
    assert changes == expected


@pytest.mark.parametrize(("steps", "expected"), TECHNICAL.values(), ids=list(TECHNICAL))
def test_technical_timeline(steps: list[Step], expected: list[str]) -> None:
    _run, changes = play(steps)
    assert changes == expected


def test_timer_changes_carry_their_due_time() -> None:
    run, _ = play([(at(0), assessment(at(0), 7)), (at(12), TICK)])
    fired = [(c.tier, c.due_at, c.at) for c in run.changes if c.action == "escalated"]
    assert fired == [(3, at(5), at(12)), (4, at(10), at(12))]


def test_offline_alarm_is_due_exactly_one_and_a_half_intervals_after_the_last_heartbeat() -> None:
    run, _ = play([(at(0), status("birth", at(0), interval=20))])
    assert run.state.next_due_at() == at(0, 30)
    run.tick(at(0, 30))
    (change,) = run.changes
    assert (change.action, change.condition, change.due_at, change.at) == (
        "raised",
        "gateway_offline",
        at(0, 30),
        at(0, 30),
    )


def test_scheduler_learns_the_next_due_time_of_each_open_alert() -> None:
    run, _ = play(
        [(at(0), assessment(at(0), 5, patient="p-1")), (at(1), assessment(at(1), 7, patient="p-2"))]
    )
    due = {
        run.state.alerts[key].patient_id: when
        for key, when in ((str(k), v) for k, v in run.state.due_times().items())
    }
    assert due == {"p-1": at(15), "p-2": at(6)}
    assert run.state.next_due_at() == at(6)


def test_acknowledged_alert_is_due_for_renotification() -> None:
    run, _ = play([(at(0), assessment(at(0), 7)), (at(2), Act("acknowledge", role=Role.PHYSICIAN))])
    alert = run.state.alerts[run.only_alert()]
    assert alert.escalation_due_at is None
    assert alert.renotify_due_at == at(2) + timedelta(hours=1)


def test_at_the_ceiling_reminders_follow_the_timeout_grid_and_an_outage_sends_one() -> None:
    run, _ = play([(at(0), assessment(at(0), 7)), (at(10), TICK)])
    alert = run.state.alerts[run.only_alert()]
    assert (alert.tier, alert.priority, alert.escalation_due_at) == (4, "emergency", at(15))
    reminders = run.tick(at(47))
    assert [(c.action, c.due_at, c.reason.startswith("still not acknowledged")) for c in reminders] == [
        ("updated", at(15), True)
    ]
    assert run.state.alerts[run.only_alert()].escalation_due_at == at(50)


def test_acknowledging_stops_the_reminders() -> None:
    run, _ = play(
        [(at(0), assessment(at(0), 7)), (at(10), TICK), (at(11), Act("acknowledge", role=Role.PHYSICIAN))]
    )
    assert run.tick(at(40)) == []
    assert run.state.alerts[run.only_alert()].renotify_due_at == at(11) + timedelta(minutes=30)
