"""From a ``[[devices]]`` entry of gateway.toml to a running driver (BLE over bleak, serial over pyserial)."""

from __future__ import annotations

from typing import Final

from drivers.ble import gatt
from drivers.ble.transport import BleakClientFactory, BleDevice
from drivers.serial.transport import SerialDevice
from drivers.transport import Device
from edge_agent.config import DeviceConfig

BLE_CHARACTERISTICS: Final[dict[str, tuple[str, ...]]] = {
    "ble_heart_rate": (gatt.HEART_RATE_MEASUREMENT,),
    "ble_blood_pressure": (gatt.BLOOD_PRESSURE_MEASUREMENT,),
    "ble_thermometer": (gatt.TEMPERATURE_MEASUREMENT,),
    "ble_plx_spot": (gatt.PLX_SPOT_CHECK_MEASUREMENT,),
    "ble_plx_continuous": (gatt.PLX_CONTINUOUS_MEASUREMENT,),
    "ble_scale": (gatt.WEIGHT_MEASUREMENT,),
    "ble_glucose": (gatt.GLUCOSE_MEASUREMENT,),
}
"""The measurement characteristics the agent subscribes to for each BLE device kind."""


def real_device(config: DeviceConfig) -> Device:
    """The driver for a configured device: BLE kinds through bleak, ``masimo``/``contec`` through pyserial."""
    if config.kind in BLE_CHARACTERISTICS:
        return BleDevice(
            device_id=config.id,
            client_factory=BleakClientFactory(address=config.address),
            device_kind=config.kind,
            characteristics=BLE_CHARACTERISTICS[config.kind],
        )
    if config.kind in SERIAL_KINDS:
        return SerialDevice(device_id=config.id, kind=config.kind, port=config.path, usb_id=config.usb_id)
    raise ValueError(f"device {config.id}: kind {config.kind} has no driver on a real gateway")


SERIAL_KINDS: Final = ("masimo", "contec")


def unsupported_devices(configs: list[DeviceConfig]) -> list[DeviceConfig]:
    """Configured devices that only a simulator can provide (``wardwatch agent`` refuses to start)."""
    return [c for c in configs if c.kind not in BLE_CHARACTERISTICS and c.kind not in SERIAL_KINDS]
