"""Timed fault events: what goes wrong with the equipment, when, and for how long.

The physiology model applies the signal faults itself (probe off, motion artefacts, low perfusion) to
the samples it yields. The equipment faults (battery, disconnects, uplink) are data for the device and
agent simulators: they read the events, or ask the queries below, and act them out — a BLE peripheral
stops advertising while its device is disconnected, the agent's uplink refuses to connect while the
uplink is down.

Every event covers the half-open interval ``[start_s, end_s)`` of simulated seconds since the scenario's
start.

========================  ===================================================================================
kind                      meaning
========================  ===================================================================================
``probe_off``             the sensor is off the patient: the device sends a status with no values
``motion``                the patient moves: single-sample outliers (SpO2 drop, pulse spike) at
                          ``artefacts_per_min``; the device flags only ``flagged_fraction`` of them
``low_perfusion``         cold hands: perfusion index ``perfusion_index`` % (< 0.6 is flagged), noisier SpO2
``battery_drain``         battery falls linearly from ``from_pct`` to ``to_pct``, then stays there
``battery_empty``         the device is off (no samples, not connected); afterwards the battery is full
``device_disconnect``     the device is out of range or unpaired: it keeps measuring (spot devices store the
                          readings) but cannot deliver until the event ends
``uplink_down``           the gateway cannot reach the broker (no ``device_kind``)
========================  ===================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from .cadence import DeviceKind
from .errors import ScenarioError


class FaultKind(StrEnum):
    PROBE_OFF = "probe_off"
    MOTION = "motion"
    LOW_PERFUSION = "low_perfusion"
    BATTERY_DRAIN = "battery_drain"
    BATTERY_EMPTY = "battery_empty"
    DEVICE_DISCONNECT = "device_disconnect"
    UPLINK_DOWN = "uplink_down"


SIGNAL_FAULTS: Final = frozenset({FaultKind.PROBE_OFF, FaultKind.MOTION, FaultKind.LOW_PERFUSION})
"""Faults the physiology model applies to the samples it yields."""

FULL_BATTERY_PCT: Final = 100.0


@dataclass(frozen=True, slots=True)
class FaultEvent:
    kind: FaultKind
    start_s: float
    end_s: float
    device_kind: DeviceKind | None = None
    """The device affected; None exactly for ``uplink_down``."""
    artefacts_per_min: float = 0.0
    flagged_fraction: float = 0.0
    perfusion_index: float = 0.0
    from_pct: float = 0.0
    to_pct: float = 0.0
    reason: str = ""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start_s) and math.isfinite(self.end_s) and 0 <= self.start_s < self.end_s):
            raise ScenarioError(
                f"{self.kind} fault needs 0 <= start_s < end_s, got {self.start_s}..{self.end_s}"
            )
        if (self.device_kind is None) != (self.kind is FaultKind.UPLINK_DOWN):
            raise ScenarioError(f"{self.kind} fault: device_kind must be given unless the uplink is down")
        if self.kind is FaultKind.MOTION and not (
            0 < self.artefacts_per_min <= 60 and 0 <= self.flagged_fraction <= 1
        ):
            raise ScenarioError(
                "motion fault needs 0 < artefacts_per_min <= 60 and 0 <= flagged_fraction <= 1"
            )
        if self.kind is FaultKind.LOW_PERFUSION and not 0 < self.perfusion_index < 0.6:
            raise ScenarioError(
                "low_perfusion fault needs 0 < perfusion_index < 0.6 (the flagging threshold)"
            )
        if self.kind is FaultKind.BATTERY_DRAIN and not 0 <= self.to_pct < self.from_pct <= 100:
            raise ScenarioError("battery_drain fault needs 0 <= to_pct < from_pct <= 100")

    def active(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s

    def applies_to(self, device_kind: DeviceKind | None) -> bool:
        return self.device_kind == device_kind


@dataclass(frozen=True, slots=True)
class FaultTransition:
    """A fault beginning (``begins``) or ending at ``t_s``."""

    t_s: float
    event: FaultEvent
    begins: bool


def active_fault(
    events: Iterable[FaultEvent], kind: FaultKind, t_s: float, device_kind: DeviceKind | None = None
) -> FaultEvent | None:
    """The first event of ``kind`` for ``device_kind`` that is active at ``t_s``, if any."""
    for event in events:
        if event.kind is kind and event.applies_to(device_kind) and event.active(t_s):
            return event
    return None


def battery_pct(events: Iterable[FaultEvent], device_kind: DeviceKind, t_s: float) -> float:
    """Battery level of a device at ``t_s``: full unless a battery event says otherwise."""
    level = FULL_BATTERY_PCT
    relevant = sorted(
        (e for e in events if e.device_kind == device_kind and e.start_s <= t_s),
        key=lambda e: e.start_s,
    )
    for event in relevant:
        if event.kind is FaultKind.BATTERY_DRAIN:
            if event.active(t_s):
                fraction = (t_s - event.start_s) / (event.end_s - event.start_s)
                level = event.from_pct + (event.to_pct - event.from_pct) * fraction
            else:
                level = event.to_pct
        elif event.kind is FaultKind.BATTERY_EMPTY:
            level = 0.0 if event.active(t_s) else FULL_BATTERY_PCT
    return level


def device_powered(events: Iterable[FaultEvent], device_kind: DeviceKind, t_s: float) -> bool:
    """False while the device's battery is empty: it neither measures nor connects."""
    return active_fault(events, FaultKind.BATTERY_EMPTY, t_s, device_kind) is None


def device_connected(events: Iterable[FaultEvent], device_kind: DeviceKind, t_s: float) -> bool:
    """True when the device is powered and not disconnected, i.e. it can deliver readings now."""
    events = tuple(events)
    return (
        device_powered(events, device_kind, t_s)
        and active_fault(events, FaultKind.DEVICE_DISCONNECT, t_s, device_kind) is None
    )


def uplink_up(events: Iterable[FaultEvent], t_s: float) -> bool:
    return active_fault(events, FaultKind.UPLINK_DOWN, t_s) is None


def transitions(events: Iterable[FaultEvent], t0_s: float, t1_s: float) -> Iterator[FaultTransition]:
    """Fault beginnings and endings in ``[t0_s, t1_s)``, in time order (an ending before a beginning)."""
    found = []
    for event in events:
        if t0_s <= event.start_s < t1_s:
            found.append(FaultTransition(event.start_s, event, begins=True))
        if t0_s <= event.end_s < t1_s:
            found.append(FaultTransition(event.end_s, event, begins=False))
    found.sort(key=lambda tr: (tr.t_s, tr.begins))
    yield from found
