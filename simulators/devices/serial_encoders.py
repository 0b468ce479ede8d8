"""Encoders for the serial oximeters: Masimo "ASCII 1" lines and Contec CMS50D+ live packets."""

from __future__ import annotations

from datetime import datetime


def masimo_line(
    timestamp: datetime,
    *,
    spo2: int | None,
    bpm: int | None,
    pi: float | None,
    alarm: int = 0,
    exceptions: int = 0x000800,
    serial_number: str = "0000056661",
) -> bytes:
    """One Rad-8 style ASCII 1 line with its CR LF. Missing values are dashes, as the device prints them."""
    spo2_text = "---" if spo2 is None else f"{spo2:03d}"
    bpm_text = "---" if bpm is None else f"{bpm:03d}"
    pi_text = "--.--" if pi is None else f"{pi:05.2f}"
    return (
        f"{timestamp:%m/%d/%y %H:%M:%S} SN={serial_number} SPO2={spo2_text}% BPM={bpm_text} "
        f"PI={pi_text}% SPCO=--.-% SPMET=--.-% DESAT=-- PIDELTA=+-- "
        f"ALARM={alarm:04X} EXC={exceptions:06X}\r\n"
    ).encode("ascii")


def contec_packet(
    *,
    spo2: int | None,
    pulse: int | None,
    finger_out: bool = False,
    searching: bool = False,
    probe_error: bool = False,
    spo2_dropping: bool = False,
    beep: bool = False,
    signal_strength: int = 8,
    pleth: int = 64,
    bar_graph: int = 5,
) -> bytes:
    """One 5-byte CMS50D+ live packet. No value: SpO2 127, pulse 255 (what the oximeter sends)."""
    spo2_raw = 127 if spo2 is None else spo2
    pulse_raw = 255 if pulse is None else pulse
    byte0 = 0x80 | (signal_strength & 0x0F)
    byte0 |= 0x10 if finger_out else 0
    byte0 |= 0x20 if spo2_dropping else 0
    byte0 |= 0x40 if beep else 0
    byte2 = (bar_graph & 0x0F) | (0x10 if probe_error else 0) | (0x20 if searching else 0)
    byte2 |= 0x40 if pulse_raw & 0x80 else 0
    return bytes([byte0, pleth & 0x7F, byte2, pulse_raw & 0x7F, spo2_raw & 0x7F])
