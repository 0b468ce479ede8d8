"""``wardwatch scan``: the no-adapter exit path for real, and the listing format."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from drivers.ble.gatt import sig_uuid
from drivers.scan import EXIT_NO_ADAPTER, FoundDevice, print_devices


def test_scan_without_an_adapter_prints_one_line_and_exits_2() -> None:
    wardwatch = Path(sys.executable).with_name("wardwatch")
    result = subprocess.run(
        [str(wardwatch), "scan", "--timeout", "0.5"], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode == 0:
        pytest.skip("this machine has a usable Bluetooth adapter")
    assert result.returncode == EXIT_NO_ADAPTER
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wardwatch scan: no usable Bluetooth adapter")
    assert "Traceback" not in result.stderr


def test_listing_names_the_health_services() -> None:
    out = io.StringIO()
    print_devices(
        [
            FoundDevice("AA:BB:CC:DD:EE:01", "A&D UA-651", -61, (sig_uuid(0x1810),), None),
            FoundDevice(
                "AA:BB:CC:DD:EE:02",
                None,
                -80,
                (sig_uuid(0x1822),),
                (sig_uuid(0x180F), sig_uuid(0x1822)),
            ),
        ],
        out,
    )
    lines = out.getvalue().splitlines()
    assert lines[0] == "AA:BB:CC:DD:EE:01   -61 dBm  A&D UA-651  Blood Pressure (0x1810)"
    assert lines[1] == "AA:BB:CC:DD:EE:02   -80 dBm  (no name)  Pulse Oximeter (0x1822)"
    assert lines[2].strip() == "Battery Service (0x180F)"
    assert lines[3].strip() == "Pulse Oximeter (0x1822)"


def test_listing_nothing() -> None:
    out = io.StringIO()
    print_devices([], out)
    assert out.getvalue() == "no health devices found\n"
