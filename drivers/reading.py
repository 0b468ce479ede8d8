"""What every driver produces: a :class:`Reading` of one vital sign from one device.

The codes, units and quality flags are the same strings as the wire contract
(``edge_agent.protocol.VitalCode``, ``VITALS[...].ucum``, ``QualityFlag``, ``TimeSource``); the drivers
package may not import the edge agent, so they are repeated here and a test keeps them equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Final, Protocol


class Vital(StrEnum):
    HEART_RATE = "heart_rate"
    RESPIRATORY_RATE = "respiratory_rate"
    SPO2 = "spo2"
    SYSTOLIC_BP = "systolic_bp"
    DIASTOLIC_BP = "diastolic_bp"
    MEAN_ARTERIAL_PRESSURE = "mean_arterial_pressure"
    BODY_TEMPERATURE = "body_temperature"
    BODY_WEIGHT = "body_weight"
    BLOOD_GLUCOSE = "blood_glucose"


UNITS: Final[Mapping[Vital, str]] = {
    Vital.HEART_RATE: "/min",
    Vital.RESPIRATORY_RATE: "/min",
    Vital.SPO2: "%",
    Vital.SYSTOLIC_BP: "mm[Hg]",
    Vital.DIASTOLIC_BP: "mm[Hg]",
    Vital.MEAN_ARTERIAL_PRESSURE: "mm[Hg]",
    Vital.BODY_TEMPERATURE: "Cel",
    Vital.BODY_WEIGHT: "kg",
    Vital.BLOOD_GLUCOSE: "mg/dL",
}
"""UCUM unit of each vital; every Reading carries exactly this unit."""


class Quality(StrEnum):
    """Quality flags a device can attach to a reading (the wire contract's ``QualityFlag`` values)."""

    PROBE_OFF = "probe_off"
    LOW_PERFUSION = "low_perfusion"
    MOTION = "motion"
    NO_SENSOR_CONTACT = "no_sensor_contact"
    IMPLAUSIBLE = "implausible"
    DEVICE_ERROR = "device_error"


class TimeSource(StrEnum):
    DEVICE = "device"
    """``measured_at`` is the device's own timestamp."""
    GATEWAY = "gateway"
    """``measured_at`` is when the gateway received the frame."""


MAX_DEVICE_CLOCK_AHEAD: Final = timedelta(minutes=5)
"""A device timestamp further than this ahead of the gateway's receive time is not trusted."""


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one vital sign from one device, in the wire contract's unit.

    ``measured_at`` is an aware datetime in UTC; ``time_source`` says whose clock it came from.
    ``quality`` holds :class:`Quality` values (plain strings compare equal to them).
    """

    vital: Vital
    value: float
    unit: str
    measured_at: datetime
    time_source: TimeSource
    device_id: str
    quality: frozenset[str] = field(default_factory=frozenset)
    perfusion_index: float | None = None

    def __post_init__(self) -> None:
        if self.unit != UNITS[self.vital]:
            raise ValueError(f"unit of {self.vital} must be {UNITS[self.vital]!r}, not {self.unit!r}")
        if not math.isfinite(self.value):
            raise ValueError(f"value of {self.vital} must be finite, not {self.value}")
        if self.measured_at.tzinfo is None or self.measured_at.utcoffset() is None:
            raise ValueError("measured_at must be timezone-aware")
        if self.measured_at.utcoffset() != timedelta(0):
            object.__setattr__(self, "measured_at", self.measured_at.astimezone(UTC))
        unknown = set(self.quality) - {str(flag) for flag in Quality}
        if unknown:
            raise ValueError(f"unknown quality flags: {', '.join(sorted(unknown))}")
        if self.perfusion_index is not None and not math.isfinite(self.perfusion_index):
            raise ValueError("perfusion_index must be finite")


def measurement_time(
    device_timestamp: datetime | None, received_at: datetime, device_tz: tzinfo | None = UTC
) -> tuple[datetime, TimeSource]:
    """When a measurement was taken, and whose clock says so.

    ``device_timestamp`` is the device's wall-clock time as sent (naive: Bluetooth SIG Date Time and the
    serial formats carry no zone), interpreted in ``device_tz``; ``None`` means the gateway's local time
    zone, with the daylight-saving rule of that date (the transports' default: people set a device's clock
    to the time on their wall). Without a device timestamp, or when it lies more than
    :data:`MAX_DEVICE_CLOCK_AHEAD` ahead of ``received_at`` (a clock that was never set or drifted), the
    gateway's receive time is used instead.
    """
    if received_at.tzinfo is None or received_at.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    received_utc = received_at.astimezone(UTC)
    if device_timestamp is None:
        return received_utc, TimeSource.GATEWAY
    try:
        if device_timestamp.tzinfo is None:
            if device_tz is None:
                device_timestamp = device_timestamp.astimezone()  # naive -> the system's local zone
            else:
                device_timestamp = device_timestamp.replace(tzinfo=device_tz)
        device_utc = device_timestamp.astimezone(UTC)
    except (OverflowError, ValueError, OSError):  # e.g. 9999-12-31 23:00 in a zone west of UTC
        return received_utc, TimeSource.GATEWAY
    if device_utc - received_utc > MAX_DEVICE_CLOCK_AHEAD:
        return received_utc, TimeSource.GATEWAY
    return device_utc, TimeSource.DEVICE


def reading(
    vital: Vital,
    value: float | None,
    *,
    measured_at: tuple[datetime, TimeSource],
    device_id: str,
    quality: frozenset[str] = frozenset(),
    perfusion_index: float | None = None,
) -> list[Reading]:
    """A one-element list with the reading, or an empty list when the device sent no value."""
    if value is None or not math.isfinite(value):
        return []
    at, source = measured_at
    return [
        Reading(
            vital=vital,
            value=float(value),
            unit=UNITS[vital],
            measured_at=at,
            time_source=source,
            device_id=device_id,
            quality=quality,
            perfusion_index=perfusion_index,
        )
    ]


class Measurement(Protocol):
    """A parsed device measurement: converts to the readings the edge agent consumes."""

    def to_readings(
        self, device_id: str, received_at: datetime, *, device_tz: tzinfo | None = UTC
    ) -> list[Reading]: ...
