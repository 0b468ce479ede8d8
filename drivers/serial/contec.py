"""Contec CMS50D+ (and compatible CMS50 firmware) live data stream: 5-byte packets, about 60 per second.

======  =========================================================================================
byte    bits
======  =========================================================================================
0       bit 7 sync (always 1); bit 6 beep; bit 5 SpO2 dropping; bit 4 finger out / probe off;
        bits 0-3 signal strength
1       bit 7 = 0; bits 0-6 pleth waveform sample
2       bit 7 = 0; bit 6 pulse-rate bit 7; bit 5 searching for pulse; bit 4 probe error;
        bits 0-3 bar graph
3       bit 7 = 0; bits 0-6 pulse rate bits 0-6
4       bit 7 = 0; bits 0-6 SpO2 %
======  =========================================================================================

Only byte 0 has bit 7 set, so the decoder finds packet boundaries by it: bytes before a sync byte are
garbage and dropped, a packet cut short by the next sync byte is dropped, and a packet split across
reads is completed by the next :meth:`ContecDecoder.feed`. Pulse rate 255 and 0, SpO2 127, 0 and above
100 are the device's "no value" and become None.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Final

from drivers.reading import Quality, Reading, Vital, measurement_time, reading

PACKET_BYTES: Final = 5
SYNC: Final = 0x80


@dataclass(frozen=True, slots=True)
class ContecSample:
    spo2_pct: int | None
    pulse_bpm: int | None
    finger_out: bool
    searching: bool
    probe_error: bool
    spo2_dropping: bool
    beep: bool
    signal_strength: int
    pleth: int
    bar_graph: int

    def quality(self) -> frozenset[str]:
        flags: set[str] = set()
        if self.finger_out:
            flags.add(Quality.PROBE_OFF)
        if self.probe_error:
            flags.add(Quality.DEVICE_ERROR)
        if self.searching:
            flags.add(Quality.IMPLAUSIBLE)
        return frozenset(flags)

    def to_readings(
        self, device_id: str, received_at: datetime, *, device_tz: tzinfo | None = UTC
    ) -> list[Reading]:
        at = measurement_time(None, received_at, device_tz)
        quality = self.quality()
        return reading(
            Vital.SPO2, self.spo2_pct, measured_at=at, device_id=device_id, quality=quality
        ) + reading(Vital.HEART_RATE, self.pulse_bpm, measured_at=at, device_id=device_id, quality=quality)


def decode_packet(packet: bytes) -> ContecSample:
    """One aligned 5-byte packet (sync bit on byte 0 only; the decoder guarantees it)."""
    b0, b1, b2, b3, b4 = packet
    pulse = ((b2 & 0x40) << 1) | (b3 & 0x7F)
    spo2 = b4 & 0x7F
    return ContecSample(
        spo2_pct=spo2 if 0 < spo2 <= 100 else None,
        pulse_bpm=pulse if 0 < pulse < 255 else None,
        finger_out=bool(b0 & 0x10),
        searching=bool(b2 & 0x20),
        probe_error=bool(b2 & 0x10),
        spo2_dropping=bool(b0 & 0x20),
        beep=bool(b0 & 0x40),
        signal_strength=b0 & 0x0F,
        pleth=b1 & 0x7F,
        bar_graph=b2 & 0x0F,
    )


class ContecDecoder:
    """Stateful packet decoder: feed it whatever the serial port returned, get whole samples back.

    It never raises on bad input; ``discarded_bytes`` counts the bytes it had to drop to resynchronise.
    At most four bytes are kept between calls.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self.discarded_bytes = 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[ContecSample]:
        buffer = self._pending
        buffer += data
        samples: list[ContecSample] = []
        start = 0
        end = len(buffer)
        while True:
            while start < end and not buffer[start] & SYNC:
                start += 1
                self.discarded_bytes += 1
            if end - start < PACKET_BYTES:
                break
            for index in range(start + 1, start + PACKET_BYTES):
                if buffer[index] & SYNC:  # next packet began early: this one is cut short
                    self.discarded_bytes += index - start
                    start = index
                    break
            else:
                samples.append(decode_packet(bytes(buffer[start : start + PACKET_BYTES])))
                start += PACKET_BYTES
        # Bytes after ``start`` are an incomplete packet (or nothing); keep them for the next read,
        # unless a sync byte inside them shows the head is already broken (handled on the next feed).
        self._pending = bytearray(buffer[start:end])
        return samples
