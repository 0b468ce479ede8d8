"""``wardwatch scan``: list nearby Bluetooth LE health devices and the services they offer.

Scans for devices advertising a Bluetooth SIG health service (heart rate, blood pressure, thermometer,
pulse oximeter, weight scale, glucose) and prints one line per device: address, RSSI, name and the
health services it advertises. ``--connect`` also connects to each one and lists its GATT services.
Without a usable Bluetooth adapter it prints one line saying so and exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TextIO

from drivers.ble.gatt import HEALTH_SERVICES
from drivers.errors import AdapterUnavailableError

EXIT_NO_ADAPTER: Final = 2


@dataclass(frozen=True, slots=True)
class FoundDevice:
    address: str
    name: str | None
    rssi: int
    services: tuple[str, ...]
    gatt_services: tuple[str, ...] | None = None


def describe_service(uuid: str) -> str:
    from bleak.uuids import uuidstr_to_str

    name = HEALTH_SERVICES.get(uuid.lower())
    if name is None:
        name = uuidstr_to_str(uuid)
    short = uuid[4:8].upper() if uuid.lower().endswith("-0000-1000-8000-00805f9b34fb") else uuid
    return f"{name} (0x{short})" if short != uuid else f"{name} ({uuid})"


async def scan(timeout_s: float, *, connect: bool = False) -> list[FoundDevice]:
    """Devices advertising a health service; AdapterUnavailableError when Bluetooth cannot be used."""
    from bleak import BleakClient, BleakScanner
    from bleak.exc import BleakError

    try:
        found = await BleakScanner.discover(
            timeout=timeout_s, return_adv=True, service_uuids=list(HEALTH_SERVICES)
        )
    except (BleakError, OSError, EOFError) as exc:
        # bleak raises BleakBluetoothNotAvailableError with no adapter, FileNotFoundError or another
        # OSError when there is no system D-Bus / BlueZ to talk to.
        if isinstance(exc, FileNotFoundError | ConnectionRefusedError):
            detail = f"cannot reach BlueZ over the system D-Bus ({exc}); is bluetoothd running?"
        else:
            detail = str(exc) or type(exc).__name__
        raise AdapterUnavailableError(detail) from exc
    devices = []
    for device, advertisement in found.values():
        services = tuple(
            sorted(uuid.lower() for uuid in advertisement.service_uuids if uuid.lower() in HEALTH_SERVICES)
        )
        if not services:
            continue
        gatt: tuple[str, ...] | None = None
        if connect:
            try:
                async with BleakClient(device) as client:
                    gatt = tuple(sorted(service.uuid for service in client.services))
            except (BleakError, OSError, EOFError, TimeoutError):
                gatt = ()
        devices.append(FoundDevice(device.address, device.name, advertisement.rssi, services, gatt))
    return sorted(devices, key=lambda d: -d.rssi)


def print_devices(devices: Sequence[FoundDevice], out: TextIO) -> None:
    if not devices:
        print("no health devices found", file=out)
        return
    for device in devices:
        services = ", ".join(describe_service(uuid) for uuid in device.services)
        print(f"{device.address}  {device.rssi:>4} dBm  {device.name or '(no name)'}  {services}", file=out)
        if device.gatt_services is not None:
            if not device.gatt_services:
                print("    (could not connect to list GATT services)", file=out)
            for uuid in device.gatt_services:
                print(f"    {describe_service(uuid)}", file=out)


def _run(args: argparse.Namespace) -> int:
    try:
        devices = asyncio.run(scan(args.timeout, connect=args.connect))
    except AdapterUnavailableError as exc:
        print(f"wardwatch scan: no usable Bluetooth adapter: {exc}", file=sys.stderr)
        return EXIT_NO_ADAPTER
    print_devices(devices, sys.stdout)
    return 0


def register_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="list nearby Bluetooth LE health devices",
        description=(
            "Scan for Bluetooth LE devices advertising a health service (heart rate, blood pressure, "
            "thermometer, pulse oximeter, weight scale, glucose) and list them with their services. "
            "Exits 2 when there is no usable Bluetooth adapter."
        ),
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to scan (default: 5)")
    parser.add_argument(
        "--connect", action="store_true", help="connect to each device found and list its GATT services"
    )
    parser.set_defaults(run=_run)
