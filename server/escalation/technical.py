"""Technical alarms: the equipment, not the patient. Kept apart from clinical alerts (category
``technical``, subject ``gateway:<id>``), one open alarm per gateway, condition and device.

==========================  ==================================================  =========================
condition                   raised when                                         cleared (auto-resolved)
==========================  ==================================================  =========================
gateway_offline             death (the MQTT will) of the current session, or    birth or heartbeat of a
                            no birth/heartbeat for 1.5 x its interval           live session
device_disconnected         disconnected (event or heartbeat) and still so      connected again
                            after the grace; never for intermittent kinds
device_silent               heartbeat shows no reading for longer than the      a heartbeat shows a recent
                            kind's expected gap                                 reading
battery_low                 battery <= low % (medium priority <= critical %)    battery >= clear %
probe_off                   probe-off event or reading flagged probe off / no   a reading from the device
                            sensor contact, still so after the grace            without those flags
outbox_backlog              oldest unsent age >= limit, or backlog grew over    age < limit / 2 and no
                            N heartbeats to >= minimum                          longer growing
outbox_eviction             the gateway evicted observations (data lost);       never: a person resolves
                            further evictions update the count                  it
clock_unsynchronized        heartbeat says clock unsynchronised for the grace   heartbeat says synchronised
==========================  ==================================================  =========================

Gateway-status rules: a status from a session older than the newest seen is ignored; after a death
nothing more from that session counts (the will was composed at connect time, so its ``sent_at`` is
old); within a session, a status not newer than the last one applied (a retained redelivery) is ignored.
Historical (replayed) device events are ignored: they describe the past. An eviction is data loss
whenever it happened, so it alarms even when historical.

A person may resolve an alarm whose condition is still present (a known, handled problem): it is then not
raised again until the condition has cleared once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from edge_agent.protocol import (
    BatteryLevel,
    DeviceConnected,
    DeviceDisconnected,
    DeviceState,
    GatewayStatus,
    Observation,
    OutboxEviction,
    ProbeOff,
    QualityFlag,
)
from server.escalation.config import PRIORITY_RANK, TechnicalCondition, TechnicalPriority
from server.escalation.lifecycle import Step, minutes, open_alert, resolve, worsen
from server.escalation.state import Alert, DeviceTrack, GatewayTrack

PROBE_FLAGS = frozenset({QualityFlag.PROBE_OFF, QualityFlag.NO_SENSOR_CONTACT})


def gateway_subject(gateway_id: str) -> str:
    return f"gateway:{gateway_id}"


def gateway_track(step: Step, gateway_id: str) -> GatewayTrack:
    track = step.state.gateways.get(gateway_id)
    if track is None:
        track = step.state.gateways[gateway_id] = GatewayTrack(gateway_id=gateway_id)
    return track


def device_track(gateway: GatewayTrack, device_id: str) -> DeviceTrack:
    track = gateway.devices.get(device_id)
    if track is None:
        track = gateway.devices[device_id] = DeviceTrack(device_id=device_id)
    return track


def _key(condition: TechnicalCondition, device_id: str | None) -> str:
    return f"{condition}|{device_id or ''}"


def raise_alarm(
    step: Step,
    gateway: GatewayTrack,
    condition: TechnicalCondition,
    reason: str,
    *,
    device_id: str | None = None,
    patient_id: str | None = None,
    priority: TechnicalPriority | None = None,
    count: int = 0,
    due_at: datetime | None = None,
) -> Alert | None:
    """Raise the alarm, or raise the priority of the open one. Returns the open alarm (None if suppressed)."""
    subject = gateway_subject(gateway.gateway_id)
    wanted: TechnicalPriority = priority or step.policy.technical_priority[condition]
    alert = step.state.open_alert(subject, condition, device_id)
    if alert is not None:
        if PRIORITY_RANK[wanted] > PRIORITY_RANK[alert.priority]:
            worsen(step, alert, priority=wanted, tier=alert.tier, ceiling=alert.ceiling, reason=reason)
        return alert
    if _key(condition, device_id) in gateway.suppressed:
        return None
    gateway.alerts_opened += 1
    return open_alert(
        step,
        category="technical",
        condition=condition.value,
        subject=subject,
        number=gateway.alerts_opened,
        priority=wanted,
        tier=1,
        ceiling=step.policy.technical_ceiling,
        reason=reason,
        gateway_id=gateway.gateway_id,
        device_id=device_id,
        patient_id=patient_id,
        count=count,
        due_at=due_at,
    )


def clear_alarm(
    step: Step,
    gateway: GatewayTrack,
    condition: TechnicalCondition,
    reason: str,
    *,
    device_id: str | None = None,
) -> None:
    """The condition is gone: auto-resolve the open alarm and lift a person's suppression."""
    key = _key(condition, device_id)
    if key in gateway.suppressed:
        gateway.suppressed.remove(key)
    alert = step.state.open_alert(gateway_subject(gateway.gateway_id), condition, device_id)
    if alert is not None:
        resolve(step, alert, reason)


def suppress_after_manual_resolve(gateway: GatewayTrack, alert: Alert) -> None:
    """Called when a person resolved a technical alarm: do not raise it again while the condition lasts."""
    if alert.condition == TechnicalCondition.OUTBOX_EVICTION:
        return  # each new eviction is new data loss
    condition = TechnicalCondition(alert.condition)
    if _still_present(gateway, condition, alert.device_id):
        key = _key(condition, alert.device_id)
        if key not in gateway.suppressed:
            gateway.suppressed.append(key)


def _still_present(gateway: GatewayTrack, condition: TechnicalCondition, device_id: str | None) -> bool:
    device = gateway.devices.get(device_id) if device_id else None
    match condition:
        case TechnicalCondition.GATEWAY_OFFLINE:
            return gateway.online is False
        case TechnicalCondition.DEVICE_DISCONNECTED:
            return device is not None and device.connected is False
        case TechnicalCondition.PROBE_OFF:
            return device is not None and device.probe_off_since is not None
        case TechnicalCondition.CLOCK_UNSYNCHRONIZED:
            return gateway.clock_synchronized is False
        case _:
            # battery, silence, backlog: re-evaluated on every heartbeat; treat as present until cleared
            return True


# ---- gateway status -------------------------------------------------------------------------------


def apply_status(step: Step, status: GatewayStatus) -> None:
    gateway = gateway_track(step, status.gateway_id)
    if gateway.session is not None and status.session < gateway.session:
        return  # a stale session
    if gateway.dead_session is not None and status.session <= gateway.dead_session:
        return  # after the will of this session nothing from it counts
    if (
        status.session == gateway.session
        and gateway.last_status_sent_at is not None
        and status.sent_at <= gateway.last_status_sent_at
        and status.state != "death"
    ):
        return  # a retained or reordered copy of something already applied
    gateway.session = status.session
    gateway.last_status_sent_at = status.sent_at
    gateway.heartbeat_interval_s = status.heartbeat_interval_s

    if status.state == "death":
        gateway.online = False
        gateway.dead_session = status.session
        gateway.heartbeat_deadline = None
        gateway.clock_unsync_confirm_at = None
        _forget_device_timers(gateway)
        raise_alarm(
            step,
            gateway,
            TechnicalCondition.GATEWAY_OFFLINE,
            f"gateway {status.gateway_id} went offline (death of session {status.session})",
        )
        return

    was_offline = gateway.online is False
    gateway.online = True
    grace = step.policy.heartbeat_grace_factor * status.heartbeat_interval_s
    gateway.heartbeat_deadline = step.now + timedelta(seconds=grace)
    clear_alarm(
        step,
        gateway,
        TechnicalCondition.GATEWAY_OFFLINE,
        f"gateway {status.gateway_id} back online ({status.state} of session {status.session})"
        if was_offline
        else f"gateway {status.gateway_id} heard from again ({status.state} of session {status.session})",
    )
    _apply_devices(step, gateway, status.devices, status.sent_at)
    _apply_backlog(step, gateway, status)
    _apply_clock(step, gateway, status.clock_synchronized)


def _forget_device_timers(gateway: GatewayTrack) -> None:
    """While the gateway is away nothing is known about its devices: pending grace periods start again
    from the first news after it is back (open alarms stay open)."""
    for device in gateway.devices.values():
        device.disconnect_confirm_at = None
        device.probe_confirm_at = None
        device.probe_off_since = None


def fire_heartbeat_deadline(step: Step, gateway: GatewayTrack) -> None:
    due = gateway.heartbeat_deadline
    assert due is not None
    gateway.heartbeat_deadline = None
    gateway.online = False
    interval = gateway.heartbeat_interval_s or 0.0
    _forget_device_timers(gateway)
    gateway.clock_unsync_confirm_at = None
    raise_alarm(
        step,
        gateway,
        TechnicalCondition.GATEWAY_OFFLINE,
        f"gateway {gateway.gateway_id} offline: no heartbeat for "
        f"{step.policy.heartbeat_grace_factor:g} x its {minutes(interval)} interval",
        due_at=due,
    )


def _apply_devices(
    step: Step, gateway: GatewayTrack, devices: Iterable[DeviceState], sent_at: datetime
) -> None:
    for state in devices:
        device = device_track(gateway, state.device_id)
        device.kind = state.device_kind
        _set_connected(step, gateway, device, state.connected)
        if state.battery_pct is not None:
            _apply_battery(step, gateway, device, state.battery_pct)
        _apply_silence(step, gateway, device, state.last_reading_at, sent_at)


def _set_connected(step: Step, gateway: GatewayTrack, device: DeviceTrack, connected: bool) -> None:
    if connected:
        device.connected = True
        device.disconnect_confirm_at = None
        clear_alarm(
            step,
            gateway,
            TechnicalCondition.DEVICE_DISCONNECTED,
            f"device {device.device_id} connected again",
            device_id=device.device_id,
        )
        return
    if device.connected is False and (
        device.disconnect_confirm_at is not None
        or step.state.open_alert(
            gateway_subject(gateway.gateway_id), TechnicalCondition.DEVICE_DISCONNECTED, device.device_id
        )
    ):
        return  # already known to be disconnected
    device.connected = False
    if device.kind in step.policy.intermittent_device_kinds:
        return
    device.disconnect_confirm_at = step.now + timedelta(seconds=step.policy.disconnect_grace_s)


def fire_disconnect(step: Step, gateway: GatewayTrack, device: DeviceTrack) -> None:
    due = device.disconnect_confirm_at
    device.disconnect_confirm_at = None
    if device.kind in step.policy.intermittent_device_kinds:
        return  # its kind became known during the grace: a spot-check device, disconnection is normal
    raise_alarm(
        step,
        gateway,
        TechnicalCondition.DEVICE_DISCONNECTED,
        f"device {device.device_id} disconnected for more than {minutes(step.policy.disconnect_grace_s)}",
        device_id=device.device_id,
        patient_id=device.patient_id,
        due_at=due,
    )


def _apply_battery(step: Step, gateway: GatewayTrack, device: DeviceTrack, pct: int) -> None:
    policy = step.policy
    device.battery_pct = pct
    if pct <= policy.battery_low_pct:
        priority: TechnicalPriority | None = "medium" if pct <= policy.battery_critical_pct else None
        raise_alarm(
            step,
            gateway,
            TechnicalCondition.BATTERY_LOW,
            f"device {device.device_id} battery at {pct} %",
            device_id=device.device_id,
            patient_id=device.patient_id,
            priority=priority,
        )
    elif pct >= policy.battery_clear_pct:
        clear_alarm(
            step,
            gateway,
            TechnicalCondition.BATTERY_LOW,
            f"device {device.device_id} battery back to {pct} %",
            device_id=device.device_id,
        )


def _apply_silence(
    step: Step,
    gateway: GatewayTrack,
    device: DeviceTrack,
    last_reading_at: datetime | None,
    sent_at: datetime,
) -> None:
    limit = step.policy.device_silence_s.get(device.kind or "", step.policy.default_device_silence_s)
    if last_reading_at is None:
        if device.first_listed_at is None:
            device.first_listed_at = sent_at
        since = device.first_listed_at
    else:
        since = last_reading_at
    if limit is None:
        return
    silent_for = (sent_at - since).total_seconds()
    if silent_for > limit:
        raise_alarm(
            step,
            gateway,
            TechnicalCondition.DEVICE_SILENT,
            f"device {device.device_id} ({device.kind}) has sent no reading for {minutes(silent_for)} "
            f"(expected at least every {minutes(limit)})",
            device_id=device.device_id,
            patient_id=device.patient_id,
        )
    elif last_reading_at is not None:
        clear_alarm(
            step,
            gateway,
            TechnicalCondition.DEVICE_SILENT,
            f"device {device.device_id} sending readings again",
            device_id=device.device_id,
        )


def _apply_backlog(step: Step, gateway: GatewayTrack, status: GatewayStatus) -> None:
    policy = step.policy
    if gateway.backlog is not None and status.backlog > gateway.backlog:
        gateway.backlog_growth_streak += 1
    else:
        gateway.backlog_growth_streak = 0
    gateway.backlog = status.backlog
    age = status.oldest_unsent_age_s
    too_old = age is not None and age >= policy.backlog_age_alarm_s
    growing = (
        gateway.backlog_growth_streak >= policy.backlog_growth_heartbeats
        and status.backlog >= policy.backlog_growth_min
    )
    if too_old or growing:
        detail = f"oldest unsent {minutes(age)} old" if too_old and age is not None else "growing"
        raise_alarm(
            step,
            gateway,
            TechnicalCondition.OUTBOX_BACKLOG,
            f"gateway {gateway.gateway_id} outbox backlog {status.backlog} messages, {detail}",
        )
    elif (age is None or age < policy.backlog_age_alarm_s / 2) and gateway.backlog_growth_streak == 0:
        clear_alarm(
            step,
            gateway,
            TechnicalCondition.OUTBOX_BACKLOG,
            f"gateway {gateway.gateway_id} outbox draining ({status.backlog} messages)",
        )


def _apply_clock(step: Step, gateway: GatewayTrack, synchronized: bool | None) -> None:
    if synchronized is None:
        return
    gateway.clock_synchronized = synchronized
    if synchronized:
        gateway.clock_unsync_confirm_at = None
        clear_alarm(
            step,
            gateway,
            TechnicalCondition.CLOCK_UNSYNCHRONIZED,
            f"gateway {gateway.gateway_id} clock synchronised",
        )
    elif (
        gateway.clock_unsync_confirm_at is None
        and step.state.open_alert(
            gateway_subject(gateway.gateway_id), TechnicalCondition.CLOCK_UNSYNCHRONIZED
        )
        is None
    ):
        gateway.clock_unsync_confirm_at = step.now + timedelta(seconds=step.policy.clock_unsync_grace_s)


def fire_clock(step: Step, gateway: GatewayTrack) -> None:
    due = gateway.clock_unsync_confirm_at
    gateway.clock_unsync_confirm_at = None
    raise_alarm(
        step,
        gateway,
        TechnicalCondition.CLOCK_UNSYNCHRONIZED,
        f"gateway {gateway.gateway_id} clock unsynchronised for more than "
        f"{minutes(step.policy.clock_unsync_grace_s)}: device timestamps may be wrong",
        due_at=due,
    )


# ---- device events and readings -------------------------------------------------------------------


def apply_device_event(
    step: Step,
    gateway_id: str,
    detail: DeviceConnected | DeviceDisconnected | BatteryLevel | ProbeOff | OutboxEviction,
    *,
    historical: bool,
) -> None:
    gateway = gateway_track(step, gateway_id)
    if isinstance(detail, OutboxEviction):
        _apply_eviction(step, gateway, detail)
        return
    if historical:
        return
    device = device_track(gateway, detail.device_id)
    match detail:
        case DeviceConnected():
            device.kind = detail.device_kind
            _set_connected(step, gateway, device, True)
        case DeviceDisconnected():
            _set_connected(step, gateway, device, False)
        case BatteryLevel():
            _apply_battery(step, gateway, device, detail.battery_pct)
        case ProbeOff():
            device.patient_id = detail.patient_id
            _set_probe(step, gateway, device, off=True)


def _apply_eviction(step: Step, gateway: GatewayTrack, detail: OutboxEviction) -> None:
    window = (
        f"measured {detail.oldest_evicted_at:%Y-%m-%d %H:%M}..{detail.newest_evicted_at:%Y-%m-%d %H:%M} UTC"
    )
    subject = gateway_subject(gateway.gateway_id)
    alert = step.state.open_alert(subject, TechnicalCondition.OUTBOX_EVICTION)
    if alert is None:
        raise_alarm(
            step,
            gateway,
            TechnicalCondition.OUTBOX_EVICTION,
            f"gateway {gateway.gateway_id} outbox full: {detail.evicted_observations} raw observations "
            f"dropped ({window})",
            count=detail.evicted_observations,
        )
        return
    alert.count += detail.evicted_observations
    step.emit(
        alert,
        "updated",
        f"gateway {gateway.gateway_id} outbox full: {detail.evicted_observations} more raw observations "
        f"dropped ({window}); {alert.count} since the alarm was raised",
    )


def _set_probe(step: Step, gateway: GatewayTrack, device: DeviceTrack, *, off: bool) -> None:
    if off:
        if device.probe_off_since is None:
            device.probe_off_since = step.now
            device.probe_confirm_at = step.now + timedelta(seconds=step.policy.probe_off_grace_s)
        return
    device.probe_off_since = None
    device.probe_confirm_at = None
    clear_alarm(
        step,
        gateway,
        TechnicalCondition.PROBE_OFF,
        f"probe of {device.device_id} back on",
        device_id=device.device_id,
    )


def fire_probe(step: Step, gateway: GatewayTrack, device: DeviceTrack) -> None:
    due = device.probe_confirm_at
    device.probe_confirm_at = None
    raise_alarm(
        step,
        gateway,
        TechnicalCondition.PROBE_OFF,
        f"probe of {device.device_id} off (or no sensor contact) for more than "
        f"{minutes(step.policy.probe_off_grace_s)}: the patient is not being measured",
        device_id=device.device_id,
        patient_id=device.patient_id,
        due_at=due,
    )


def apply_observations(step: Step, gateway_id: str, observations: Iterable[Observation]) -> None:
    """Each device's newest live reading tells whether its probe is on."""
    newest: dict[str, Observation] = {}
    for observation in observations:
        if observation.historical:
            continue
        held = newest.get(observation.device_id)
        if held is None or observation.measured_at >= held.measured_at:
            newest[observation.device_id] = observation
    if not newest:
        return
    gateway = gateway_track(step, gateway_id)
    for device_id, observation in sorted(newest.items()):
        device = device_track(gateway, device_id)
        device.patient_id = observation.patient_id
        _set_probe(step, gateway, device, off=bool(PROBE_FLAGS.intersection(observation.quality)))
