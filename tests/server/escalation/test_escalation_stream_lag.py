"""The policy under a stream lag: a worker behind the gateways' traffic postpones the timers that only news
from a gateway can stop (heartbeat deadline, device and clock grace periods) by its lag, up to the
policy's cap, and nothing else."""

from __future__ import annotations

from datetime import datetime, timedelta

from escalation_builders import T0, assessment, at, device, event, status
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol import DeviceDisconnected
from server.escalation import (
    AlertChange,
    EscalationPolicy,
    EscalationState,
    PolicyInput,
    Tick,
    decide,
)

POLICY = EscalationPolicy()


class Worker:
    """Feeds the policy as a worker with a given stream lag would."""

    def __init__(self, policy: EscalationPolicy = POLICY) -> None:
        self.policy = policy
        self.state = EscalationState()
        self.changes: list[AlertChange] = []
        self.next_due_at: datetime | None = None

    def feed(self, item: PolicyInput, now: datetime, lag_s: float = 0) -> list[AlertChange]:
        decision = decide(self.state, item, now=now, policy=self.policy, stream_lag=timedelta(seconds=lag_s))
        self.state, self.next_due_at = decision.state, decision.next_due_at
        self.changes += decision.changes
        return decision.changes

    def offline(self) -> list[tuple[str, datetime, datetime | None]]:
        return [(c.action, c.at, c.due_at) for c in self.changes if c.condition == "gateway_offline"]


def test_a_heartbeat_deadline_waits_for_the_lag_and_then_fires_with_its_own_due_time() -> None:
    worker = Worker()
    worker.feed(status("birth", at(0), interval=30), at(0))
    assert worker.next_due_at == at(0, 45)  # ahead: looked at when it comes, with the lag of that time

    assert worker.feed(Tick(), at(0, 45), lag_s=20) == []
    assert worker.next_due_at == at(0, 65)  # passed: postponed by the lag
    assert worker.feed(Tick(), at(0, 64), lag_s=20) == []
    (raised,) = worker.feed(Tick(), at(0, 65), lag_s=20)
    assert (raised.action, raised.condition, raised.at, raised.due_at) == (
        "raised",
        "gateway_offline",
        at(0, 65),
        at(0, 45),
    )


def test_the_heartbeat_still_queued_behind_the_lag_arrives_before_the_deadline_fires() -> None:
    """A worker falling behind by 20 s between two heartbeats: without the lag the second heartbeat,
    sent on time, arrives after its deadline and the gateway flaps offline and back."""
    for lag_s, expected in ((0, ["raised", "resolved"]), (20, [])):
        worker = Worker()
        worker.feed(status("birth", at(0), interval=30), at(0, 1))  # processed 1 s after it was sent
        worker.feed(Tick(), at(0, 46), lag_s=lag_s)  # the deadline passes while the heartbeat waits
        worker.feed(status("heartbeat", at(0, 30), interval=30), at(0, 51), lag_s=lag_s)
        assert [action for action, _, _ in worker.offline()] == expected, lag_s


def test_the_lag_is_capped_by_the_policy() -> None:
    worker = Worker(EscalationPolicy(max_stream_lag_s=60))
    worker.feed(status("birth", at(0), interval=30), at(0))
    assert worker.feed(Tick(), at(0, 45), lag_s=3600) == []
    assert worker.next_due_at == at(0, 45 + 60)
    (raised,) = worker.feed(Tick(), at(0, 105), lag_s=3600)
    assert raised.condition == "gateway_offline"

    never = Worker(EscalationPolicy(max_stream_lag_s=0))
    never.feed(status("birth", at(0), interval=30), at(0))
    (raised,) = never.feed(Tick(), at(0, 45), lag_s=600)
    assert raised.due_at == at(0, 45)


def test_a_negative_lag_counts_as_none() -> None:
    worker = Worker()
    worker.feed(status("birth", at(0), interval=30), at(0))
    (raised,) = worker.feed(Tick(), at(0, 45), lag_s=-30)
    assert raised.at == at(0, 45)


def test_device_grace_periods_are_postponed_too() -> None:
    worker = Worker()
    worker.feed(status("birth", at(0), interval=3600, devices=[device("ox-1")]), at(0))
    disconnected = DeviceDisconnected(kind="device_disconnected", device_id="ox-1", reason="link lost")
    worker.feed(event(disconnected, at(0)), at(0))  # 120 s grace
    assert worker.feed(Tick(), at(2), lag_s=30) == []
    (raised,) = worker.feed(Tick(), at(2, 30), lag_s=30)
    assert (raised.condition, raised.device_id, raised.due_at) == ("device_disconnected", "ox-1", at(2))


def test_alert_escalation_keeps_the_servers_clock() -> None:
    """Nothing in the gateways' traffic stops an unacknowledged alert from escalating."""
    worker = Worker()
    worker.feed(assessment(at(0), 7), at(0))  # high: tiers 1+2 now, tier 3 after 5 min
    (escalated,) = worker.feed(Tick(), at(5), lag_s=300)
    assert (escalated.action, escalated.tier, escalated.due_at) == ("escalated", 3, at(5))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 120), st.sampled_from(["heartbeat", "tick"]), st.integers(0, 900)),
        min_size=1,
        max_size=25,
    )
)
def test_a_lag_never_raises_an_offline_alarm_earlier_than_without_it(
    steps: list[tuple[int, str, int]],
) -> None:
    """The same inputs at the same times with and without a lag: every offline alarm the lagging worker
    raises, the other raised no later (a wrong estimate can only delay an alarm)."""
    with_lag, without = Worker(), Worker()
    for worker in (with_lag, without):
        worker.feed(status("birth", T0, interval=30), T0)
    now = T0
    for gap_s, kind, lag_s in steps:
        now += timedelta(seconds=gap_s)
        item = status("heartbeat", now, interval=30) if kind == "heartbeat" else Tick()
        with_lag.feed(item, now, lag_s=lag_s)
        without.feed(item, now)
    raised_with = [at_ for action, at_, _ in with_lag.offline() if action == "raised"]
    raised_without = [at_ for action, at_, _ in without.offline() if action == "raised"]
    assert len(raised_with) <= len(raised_without)
    for late, early in zip(raised_with, raised_without, strict=False):
        assert late >= early
