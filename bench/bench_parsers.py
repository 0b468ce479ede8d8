"""Frames per second of each device parser (pure parsing, then parsing plus conversion to Readings).

Run from the repository root::

    .venv/bin/python bench/bench_parsers.py --frames 200000 --runs 5

For every parser a small set of realistic frames (the golden vectors' shapes: minimal and full flag
combinations) is parsed round-robin ``--frames`` times; the figure is the median over ``--runs`` runs.
The Contec decoder is fed its byte stream in 64-byte reads (what a serial read returns at 19200 baud),
so its figure includes resynchronisation bookkeeping. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from drivers.ble import gatt
from drivers.serial import contec, masimo
from simulators.devices import gatt_encoders as enc
from simulators.devices import serial_encoders

RECEIVED = datetime(2026, 3, 30, 9, 31, tzinfo=UTC)
STAMP = datetime(2026, 3, 30, 9, 30)


def corpus() -> dict[str, tuple[Callable[[bytes], object], list[bytes]]]:
    return {
        "heart rate (0x2A37)": (
            gatt.parse_heart_rate_measurement,
            [
                enc.heart_rate_measurement(72),
                enc.heart_rate_measurement(
                    72, sensor_contact=True, energy_expended_kj=12, rr_intervals_1024=[830, 845]
                ),
            ],
        ),
        "blood pressure (0x2A35)": (
            gatt.parse_blood_pressure_measurement,
            [
                bytes.fromhex("1e8a00580078000000041114293b3c00012700"),  # Nordic "full"
                bytes.fromhex("15bdf00b009ff03c001200"),  # Nordic "some" (kPa)
                bytes.fromhex("00bdf00b009ff0"),  # Nordic "minimal"
            ],
        ),
        "temperature (0x2A1C)": (
            gatt.parse_temperature_measurement,
            [bytes.fromhex("06b00e00fedc070c050b321b04"), enc.temperature_measurement(98.6, fahrenheit=True)],
        ),
        "PLX spot-check (0x2A5E)": (
            gatt.parse_plx_spot_check,
            [
                enc.plx_spot_check(97, 72),
                enc.plx_spot_check(
                    97,
                    72,
                    timestamp=STAMP,
                    measurement_status=0x80,
                    device_status=0x20,
                    pulse_amplitude_index=3.1,
                ),
            ],
        ),
        "PLX continuous (0x2A5F)": (
            gatt.parse_plx_continuous,
            [
                enc.plx_continuous(96, 75),
                enc.plx_continuous(96, 75, fast=(95, 76), slow=(97, 74), measurement_status=0),
            ],
        ),
        "weight (0x2A9D)": (
            gatt.parse_weight_measurement,
            [
                enc.weight_measurement(70.0),
                enc.weight_measurement(70.0, timestamp=STAMP, user_id=1, bmi=22.9, height=1.75),
            ],
        ),
        "glucose (0x2A18)": (
            gatt.parse_glucose_measurement,
            [
                enc.glucose_measurement(7, STAMP, concentration="absent"),
                enc.glucose_measurement(8, STAMP, time_offset_min=-5, concentration=0.0011, sensor_status=1),
            ],
        ),
        "Masimo ASCII 1 line": (
            masimo.parse_line,
            [
                serial_encoders.masimo_line(STAMP, spo2=98, bpm=97, pi=3.6),
                serial_encoders.masimo_line(STAMP, spo2=None, bpm=None, pi=None, exceptions=0x21),
            ],
        ),
    }


def time_parser(
    parser: Callable[[bytes], object], frames: Sequence[bytes], count: int, convert: bool
) -> float:
    batch = [frames[i % len(frames)] for i in range(count)]
    start = time.perf_counter()
    if convert:
        for frame in batch:
            parser(frame).to_readings("bench", RECEIVED)  # type: ignore[attr-defined]
    else:
        for frame in batch:
            parser(frame)
    return count / (time.perf_counter() - start)


def time_contec(count: int, convert: bool) -> float:
    packets = [serial_encoders.contec_packet(spo2=95 + i % 4, pulse=60 + i % 90) for i in range(64)]
    stream = b"".join(packets[i % len(packets)] for i in range(count))
    reads = [stream[i : i + 64] for i in range(0, len(stream), 64)]
    decoder = contec.ContecDecoder()
    decoded = 0
    start = time.perf_counter()
    for chunk in reads:
        samples = decoder.feed(chunk)
        decoded += len(samples)
        if convert:
            for sample in samples:
                sample.to_readings("bench", RECEIVED)
    elapsed = time.perf_counter() - start
    assert decoded == count
    return count / elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000, help="frames per run and parser")
    parser.add_argument("--runs", type=int, default=5, help="runs per parser; the median is reported")
    args = parser.parse_args(argv)

    rows = []
    for name, (parse, frames) in corpus().items():
        for frame in frames:  # every benchmark frame must parse
            parse(frame)
        parse_only = statistics.median(
            time_parser(parse, frames, args.frames, False) for _ in range(args.runs)
        )
        with_readings = statistics.median(
            time_parser(parse, frames, args.frames, True) for _ in range(args.runs)
        )
        rows.append((name, parse_only, with_readings))
    contec_only = statistics.median(time_contec(args.frames, False) for _ in range(args.runs))
    contec_readings = statistics.median(time_contec(args.frames, True) for _ in range(args.runs))
    rows.append(("Contec CMS50D+ packet (64-byte reads)", contec_only, contec_readings))

    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.frames} frames x median of {args.runs} runs"
    )
    print()
    print("| parser | frames/s (parse) | frames/s (parse + to_readings) |")
    print("|---|---:|---:|")
    for name, parse_only, with_readings in rows:
        print(f"| {name} | {parse_only:,.0f} | {with_readings:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
