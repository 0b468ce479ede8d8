"""The escalation policy's configuration: timeouts, tiers, hold periods and technical thresholds.

Every value is keyword-only and validated (pydantic), so a server refuses to start with a policy that
could not work (a ceiling below the initial tier, a battery "clear" level below its "low" level, …).
The defaults are the ones documented in docs/escalation.md; a programme tunes them in ``server.toml``
under ``[escalation]``.

Tiers are cumulative: tier *n* notifies the roles of tiers 1..*n*.

=====  ==========================  ==========================
tier   clinical alerts             technical alarms
=====  ==========================  ==========================
1      command-center nurse        command-center nurse
2      physician on duty           technical support on call
3      clinical lead (senior)      (not used by default)
4      emergency dispatch          (not used by default)
=====  ==========================  ==========================
"""

from __future__ import annotations

from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_agent.protocol import Risk

Priority = Literal["low", "medium", "high", "emergency"]
PRIORITIES: Final[tuple[Priority, ...]] = ("low", "medium", "high", "emergency")
PRIORITY_RANK: Final[dict[str, int]] = {name: rank for rank, name in enumerate(PRIORITIES)}
SNOOZABLE: Final[frozenset[str]] = frozenset({"low", "medium"})
"""Only low and medium alerts may be snoozed; high and emergency never."""

TOP_TIER: Final = 4
EMERGENCY_TIER: Final = 4
"""The emergency-dispatch tier; a clinical alert that reaches it gets priority ``emergency``."""

CONTINUOUS_DEVICE_KINDS: Final = (
    "ble_heart_rate",
    "ble_plx_continuous",
    "masimo",
    "contec",
    "respiration_patch",
)
"""Device kinds (the agent's ``device_kind``) that stream readings while connected."""
SPOT_CHECK_DEVICE_KINDS: Final = frozenset(
    {"ble_blood_pressure", "ble_thermometer", "ble_plx_spot", "ble_scale", "ble_glucose"}
)
"""Device kinds that connect only to deliver a spot measurement."""

RISK_RANK: Final[dict[Risk, int]] = {Risk.LOW: 0, Risk.LOW_MEDIUM: 1, Risk.MEDIUM: 2, Risk.HIGH: 3}

CLINICAL_CONDITION: Final = "news2"
"""The one clinical condition: NEWS2 deterioration. One open alert per patient for it."""


class TechnicalCondition(StrEnum):
    GATEWAY_OFFLINE = "gateway_offline"
    DEVICE_DISCONNECTED = "device_disconnected"
    DEVICE_SILENT = "device_silent"
    BATTERY_LOW = "battery_low"
    PROBE_OFF = "probe_off"
    OUTBOX_BACKLOG = "outbox_backlog"
    OUTBOX_EVICTION = "outbox_eviction"
    CLOCK_UNSYNCHRONIZED = "clock_unsynchronized"


class Role(StrEnum):
    """The API's roles (bearer tokens). Only people act on alerts; ``integration`` only reads."""

    NURSE = "nurse"
    PHYSICIAN = "physician"
    ADMIN = "admin"
    INTEGRATION = "integration"


Seconds = Annotated[float, Field(gt=0, le=7 * 24 * 3600)]


class ClinicalResponse(BaseModel):
    """What a NEWS2 risk band raises: the alert's priority and the tier notified at once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    priority: Literal["low", "medium", "high"]
    tier: int = Field(ge=1, le=TOP_TIER)


def _default_clinical_response() -> dict[Risk, ClinicalResponse]:
    return {
        Risk.LOW_MEDIUM: ClinicalResponse(priority="low", tier=1),
        Risk.MEDIUM: ClinicalResponse(priority="medium", tier=1),
        Risk.HIGH: ClinicalResponse(priority="high", tier=2),
    }


def _by_priority(low: float, medium: float, high: float, emergency: float) -> dict[Priority, float]:
    return {"low": low, "medium": medium, "high": high, "emergency": emergency}


TechnicalPriority = Literal["low", "medium", "high"]


def _default_clinical_ceiling() -> dict[Literal["low", "medium", "high"], int]:
    return {"low": 3, "medium": 4, "high": 4}


def _default_technical_priority() -> dict[TechnicalCondition, TechnicalPriority]:
    return {
        TechnicalCondition.GATEWAY_OFFLINE: "medium",
        TechnicalCondition.DEVICE_DISCONNECTED: "low",
        TechnicalCondition.DEVICE_SILENT: "low",
        TechnicalCondition.BATTERY_LOW: "low",
        TechnicalCondition.PROBE_OFF: "medium",
        TechnicalCondition.OUTBOX_BACKLOG: "low",
        TechnicalCondition.OUTBOX_EVICTION: "medium",
        TechnicalCondition.CLOCK_UNSYNCHRONIZED: "low",
    }


def _default_device_silence() -> dict[str, float]:
    return dict.fromkeys(CONTINUOUS_DEVICE_KINDS, 10 * 60.0)


class EscalationPolicy(BaseModel):
    """Keyword-only, validated, immutable. ``EscalationPolicy()`` is the documented default policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # ---- clinical -------------------------------------------------------------------------------
    clinical_response: dict[Risk, ClinicalResponse] = Field(default_factory=_default_clinical_response)
    """Risk band -> priority and initial tier. ``low`` raises nothing; every other band must be here."""

    ack_timeout_s: dict[Priority, Seconds] = Field(
        default_factory=lambda: _by_priority(30 * 60, 15 * 60, 5 * 60, 5 * 60)
    )
    """An alert not acknowledged within this time (by its current priority) goes to the next tier."""

    clinical_ceiling: dict[Literal["low", "medium", "high"], int] = Field(
        default_factory=_default_clinical_ceiling
    )
    """Highest tier automatic escalation reaches, by the alert's priority when it was raised or worsened.
    A clinician may still escalate by hand up to tier 4."""

    renotify_after_s: dict[Priority, Seconds] = Field(
        default_factory=lambda: _by_priority(8 * 3600, 4 * 3600, 3600, 30 * 60)
    )
    """An acknowledged alert that is still open after this time is re-armed: its current tier is
    notified again and the escalation clock restarts."""

    rearm_total_rise: int = Field(default=2, ge=1, le=20)
    """An acknowledged clinical alert is re-armed when NEWS2 rises this much above the highest total
    its last notification covered (a risk band rise always re-arms)."""

    resolution_hold_s: Seconds = 30 * 60
    """NEWS2 low for this long (measured between assessments) auto-resolves an alert that was never high,
    and suggests resolution of one that was (only a clinician resolves a high alert)."""

    snooze_max_s: Seconds = 60 * 60
    """Longest single snooze; only low and medium alerts may be snoozed."""

    # ---- technical ------------------------------------------------------------------------------
    technical_priority: dict[TechnicalCondition, Literal["low", "medium", "high"]] = Field(
        default_factory=_default_technical_priority
    )
    technical_ceiling: int = Field(default=2, ge=1, le=TOP_TIER)
    """Highest tier automatic escalation of a technical alarm reaches (2: technical support on call)."""

    heartbeat_grace_factor: float = Field(default=1.5, ge=1.0, le=10.0)
    """A gateway is offline when no birth or heartbeat arrived for this many heartbeat intervals."""
    max_stream_lag_s: float = Field(default=600, ge=0, le=24 * 3600)
    """The most by which a worker that is behind the gateways' traffic postpones the timers that wait
    for news from a gateway (heartbeat deadline, device and clock grace periods), so that a heartbeat
    still queued for the server is not taken as missing. 0: never postponed."""

    disconnect_grace_s: Seconds = 120
    """A device must stay disconnected this long before ``device_disconnected`` is raised."""
    intermittent_device_kinds: frozenset[str] = SPOT_CHECK_DEVICE_KINDS
    """Device kinds that connect only to deliver a spot measurement; their disconnection is normal and
    never alarms (their silence still does)."""

    device_silence_s: dict[str, Seconds] = Field(default_factory=_default_device_silence)
    """Device kind -> longest normal gap between readings, judged from the heartbeat's device list."""
    default_device_silence_s: Seconds | None = 26 * 3600
    """For kinds not in ``device_silence_s``; None leaves them unchecked."""

    battery_low_pct: int = Field(default=20, ge=1, le=99)
    battery_critical_pct: int = Field(default=10, ge=0, le=99)
    """At or below this the battery alarm goes up to medium priority."""
    battery_clear_pct: int = Field(default=30, ge=1, le=100)
    """A battery alarm clears only at or above this level (hysteresis against flapping)."""

    probe_off_grace_s: Seconds = 60
    """A probe off (or no sensor contact) for this long raises ``probe_off``."""

    backlog_age_alarm_s: Seconds = 10 * 60
    """Oldest unsent message in the gateway's outbox older than this raises ``outbox_backlog``; it clears
    when the age falls below half of it and the backlog stopped growing."""
    backlog_growth_heartbeats: int = Field(default=5, ge=2, le=1000)
    backlog_growth_min: int = Field(default=1000, ge=1)
    """A backlog that grew over this many consecutive heartbeats and holds at least ``backlog_growth_min``
    messages also raises ``outbox_backlog``."""

    clock_unsync_grace_s: Seconds = 15 * 60
    """A gateway clock reported unsynchronised for this long raises ``clock_unsynchronized``."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        missing = {Risk.LOW_MEDIUM, Risk.MEDIUM, Risk.HIGH} - set(self.clinical_response)
        if missing:
            raise ValueError(
                "clinical_response must give a response for every risk band above low; missing: "
                + ", ".join(sorted(missing))
            )
        if Risk.LOW in self.clinical_response:
            raise ValueError("clinical_response must not contain 'low': a low NEWS2 raises no alert")
        ordered = [self.clinical_response[risk] for risk in (Risk.LOW_MEDIUM, Risk.MEDIUM, Risk.HIGH)]
        for lower, higher in pairwise(ordered):
            if PRIORITY_RANK[higher.priority] < PRIORITY_RANK[lower.priority] or higher.tier < lower.tier:
                raise ValueError("clinical_response must not lower priority or tier as the risk band rises")
        for name, table in (
            ("ack_timeout_s", self.ack_timeout_s),
            ("renotify_after_s", self.renotify_after_s),
        ):
            if set(table) != set(PRIORITIES):
                raise ValueError(f"{name} needs exactly the priorities {', '.join(PRIORITIES)}")
        if set(self.clinical_ceiling) != {"low", "medium", "high"}:
            raise ValueError("clinical_ceiling needs exactly the priorities low, medium, high")
        for response in self.clinical_response.values():
            ceiling = self.clinical_ceiling[response.priority]
            if not response.tier <= ceiling <= TOP_TIER:
                raise ValueError(
                    f"clinical_ceiling[{response.priority}] = {ceiling} must be between the initial tier "
                    f"{response.tier} and {TOP_TIER}"
                )
        if set(self.technical_priority) != set(TechnicalCondition):
            raise ValueError(
                "technical_priority needs exactly the conditions "
                + ", ".join(c.value for c in TechnicalCondition)
            )
        if not self.battery_critical_pct < self.battery_low_pct < self.battery_clear_pct:
            raise ValueError(
                "battery levels must satisfy battery_critical_pct < battery_low_pct < battery_clear_pct"
            )
        return self

    def ack_timeout(self, priority: Priority) -> float:
        return self.ack_timeout_s[priority]

    def renotify_after(self, priority: Priority) -> float:
        return self.renotify_after_s[priority]
