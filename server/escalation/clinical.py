"""Clinical rules: NEWS2 assessments raise, worsen, improve and resolve the patient's one ``news2`` alert.

=====================================  ===================================================================
NEWS2 (effective risk band)            effect on the patient's ``news2`` alert
=====================================  ===================================================================
low, no alert open                     nothing
low-medium / medium / high, none open  ``raised`` with that band's priority and tier (high: tier 2 at once)
band above the one last notified       ``escalated`` (or ``updated``): priority and tier raised, an
                                       acknowledged or snoozed alert re-armed, the escalation clock restarts
total >= notified total + rise         an acknowledged or snoozed alert is re-armed (``updated``)
(same band)
higher total while unacknowledged      ``updated`` (the board shows the new peak)
band falls (not to low)                ``updated``; priority and tier never drop
low                                    ``updated`` once ("back to low"); the hold period starts
low for the hold period                never high: ``resolved`` by the policy; was high: ``updated`` once
                                       with "resolution suggested" (only a clinician resolves it)
resolved by a clinician while not low  no new alert at that band or below until a rise, a low assessment,
                                       or the re-notify interval of the alert's priority has passed
=====================================  ===================================================================

The effective risk band is the higher of the gateway's ``risk`` and the band recomputed from ``total``
and the components (>= 7 high, 5-6 medium, a single 3 low-medium), so a mislabelled assessment cannot
hide a deterioration. Assessments older than the newest one applied for the patient are ignored; one
dated in the future (a gateway clock running ahead) counts as dated ``now``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Final

from edge_agent.protocol import Risk
from server.escalation.config import CLINICAL_CONDITION, RISK_RANK
from server.escalation.lifecycle import Step, minutes, open_alert, rearm, resolve, worsen
from server.escalation.state import PatientTrack

COMPONENT_LABELS: Final[dict[str, str]] = {
    "respiration": "RR",
    "spo2": "SpO2",
    "air_or_oxygen": "O2",
    "systolic_bp": "SBP",
    "pulse": "HR",
    "consciousness": "ACVPU",
    "temperature": "Temp",
}


def patient_subject(patient_id: str) -> str:
    return f"patient:{patient_id}"


def risk_from_score(total: int, components: Mapping[str, int | None]) -> Risk:
    """The NEWS2 risk band of a total and its components (RCP 2017 thresholds)."""
    if total >= 7:
        return Risk.HIGH
    if total >= 5:
        return Risk.MEDIUM
    if any(score == 3 for score in components.values()):
        return Risk.LOW_MEDIUM
    return Risk.LOW


def effective_risk(reported: Risk, total: int, components: Mapping[str, int | None]) -> Risk:
    derived = risk_from_score(total, components)
    return derived if RISK_RANK[derived] > RISK_RANK[reported] else reported


def describe(risk: Risk, total: int, components: Mapping[str, int | None]) -> str:
    scoring = [f"{COMPONENT_LABELS.get(name, name)} {score}" for name, score in components.items() if score]
    missing = [COMPONENT_LABELS.get(name, name) for name, score in components.items() if score is None]
    text = f"NEWS2 {total} ({risk})"
    if scoring:
        text += ": " + ", ".join(scoring)
    if missing:
        text += "; missing " + ", ".join(missing)
    return text


def apply_assessment(
    step: Step,
    *,
    patient_id: str,
    gateway_id: str,
    assessed_at: datetime,
    risk: Risk,
    total: int,
    components: Mapping[str, int | None],
    source: str = "",
) -> None:
    """Apply one NEWS2 assessment (or a gateway's local alert, which carries no components)."""
    track = step.state.patients.setdefault(patient_id, PatientTrack())
    # A gateway clock running ahead must not make every later assessment look old: the future is now.
    assessed_at = min(assessed_at, step.now)
    if track.last_assessed_at is not None and assessed_at <= track.last_assessed_at:
        return  # older than what we already acted on: out-of-order delivery or replayed backlog
    track.last_assessed_at = assessed_at
    track.gateway_id = gateway_id
    risk = effective_risk(risk, total, components)
    track.risk, track.total = risk, total
    subject = patient_subject(patient_id)
    alert = step.state.open_alert(subject, CLINICAL_CONDITION)
    text = describe(risk, total, components) + (f" {source}" if source else "")

    if risk is Risk.LOW:
        track.resolved_baseline = None
        track.resolved_baseline_until = None
        if track.low_since is None:
            track.low_since = assessed_at
        if alert is None:
            return
        band_changed = alert.risk is not Risk.LOW
        alert.risk, alert.total = risk, total
        held = assessed_at - track.low_since
        hold = timedelta(seconds=step.policy.resolution_hold_s)
        if held >= hold:
            if not alert.ever_high:
                resolve(
                    step, alert, f"{text}: low for {minutes(held.total_seconds())}; resolved by the policy"
                )
            elif not alert.resolution_suggested:
                alert.resolution_suggested = True
                step.emit(
                    alert,
                    "updated",
                    f"{text}: low for {minutes(held.total_seconds())}; resolution suggested "
                    "(a high alert is resolved only by a clinician)",
                )
        elif band_changed:
            step.emit(
                alert, "updated", f"{text}: back to low; resolution after {minutes(hold.total_seconds())}"
            )
        return

    track.low_since = None
    response = step.policy.clinical_response[risk]
    ceiling = step.policy.clinical_ceiling[response.priority]
    if alert is None:
        if (
            track.resolved_baseline is not None
            and RISK_RANK[risk] <= RISK_RANK[track.resolved_baseline]
            and (track.resolved_baseline_until is None or step.now < track.resolved_baseline_until)
        ):
            return  # a clinician resolved it at this level: a rise, a new episode or time raises again
        track.resolved_baseline = None
        track.resolved_baseline_until = None
        track.alerts_opened += 1
        open_alert(
            step,
            category="clinical",
            condition=CLINICAL_CONDITION,
            subject=subject,
            number=track.alerts_opened,
            priority=response.priority,
            tier=response.tier,
            ceiling=ceiling,
            reason=text,
            patient_id=patient_id,
            gateway_id=gateway_id,
            risk=risk,
            total=total,
        )
        return

    previous_risk = alert.risk
    alert.risk, alert.total = risk, total
    alert.gateway_id = gateway_id
    alert.resolution_suggested = False
    notified_risk = alert.notified_risk or Risk.LOW
    notified_total = alert.notified_total if alert.notified_total is not None else 0
    if RISK_RANK[risk] > RISK_RANK[notified_risk]:
        worsen(
            step,
            alert,
            priority=response.priority,
            tier=response.tier,
            ceiling=ceiling,
            reason=f"{text}: worse than the {notified_risk} last notified",
        )
    elif alert.ack_state != "unacknowledged" and total >= notified_total + step.policy.rearm_total_rise:
        who = alert.acknowledged_by or "a clinician"
        rearm(
            step,
            alert,
            anchor=step.now,
            reason=f"{text}: rose from {notified_total} since {alert.ack_state} by {who}",
        )
    elif alert.ack_state == "unacknowledged" and total > notified_total:
        alert.notified_total = total
        step.emit(alert, "updated", f"{text}: higher than {notified_total}")
    elif previous_risk is not risk:
        step.emit(alert, "updated", f"{text}: was {previous_risk}")
