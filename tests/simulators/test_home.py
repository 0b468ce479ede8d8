"""A simulated home end to end: real agent, real drivers, simulated devices speaking real bytes."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import pytest
from support.broker import MosquittoBroker

from edge_agent.mqtt import MqttClient, MqttSettings
from edge_agent.protocol import Assessment, ObservationBatch, decode_gateway_message, gateway_filter
from edge_agent.service import Agent
from simulators.home import DeviceFaults, SimulatedBle, SimulatedHome, SimulatedSerial, home_config, run_home

NEWS2_VITALS = {"spo2", "heart_rate", "respiratory_rate", "systolic_bp", "body_temperature"}


async def test_sepsis_home_reaches_high_risk_through_the_real_drivers(
    broker: MosquittoBroker, tmp_path: Path, gateway_id: str
) -> None:
    config = home_config(gateway_id, broker_url=broker.url, scenario="sepsis", outbox_path=tmp_path / "o.db")
    agents: list[Agent] = []
    vitals: Counter[str] = Counter()
    devices: set[str] = set()
    high: Assessment | None = None
    async with MqttClient(MqttSettings.from_url(broker.url, client_id=f"cc-{gateway_id}")) as watcher:
        await watcher.subscribe(
            gateway_filter("obs", gateway_id=gateway_id), gateway_filter("score", gateway_id=gateway_id)
        )
        home = asyncio.create_task(
            run_home(config, scenario="sepsis", seed=3, speed=60, start_h=24, on_agent=agents.append)
        )
        try:
            async with asyncio.timeout(60):
                async for message in watcher.messages():
                    _, payload = decode_gateway_message(message.topic, message.payload)
                    if isinstance(payload, ObservationBatch):
                        for observation in payload.observations:
                            vitals[observation.vital.value] += 1
                            devices.add(observation.device_id)
                    elif isinstance(payload, Assessment) and payload.risk == "high" and payload.complete:
                        high = payload
                    # assessments drain before observations: wait for both
                    if (
                        high is not None
                        and len(devices) == len(config.devices)
                        and set(vitals) >= NEWS2_VITALS
                    ):
                        break
        finally:
            home.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await home
    assert high is not None
    assert high.total >= 7
    # every vital of the NEWS2 kit arrived, through the BLE PLX, cuff and thermometer bytes and the patch,
    # and the glucose meter's record (through its Record Access Control Point), stored and forwarded
    assert set(vitals) >= NEWS2_VITALS
    assert vitals["blood_glucose"] >= 1
    assert devices == {d.id for d in config.devices}
    assert agents[0].devices[config.devices[0].id].connected


async def test_serial_oximeters_on_pseudo_terminals_are_read_by_path(
    broker: MosquittoBroker, tmp_path: Path, gateway_id: str
) -> None:
    base = home_config(gateway_id, broker_url=broker.url, scenario="stable", outbox_path=tmp_path / "o.db")
    config = base.model_copy(
        update={
            "devices": [
                base.devices[0].model_copy(
                    update={"id": "masimo-1", "kind": "masimo", "address": None, "path": "x"}
                ),
                base.devices[0].model_copy(
                    update={"id": "contec-1", "kind": "contec", "address": None, "path": "y"}
                ),
            ]
        }
    )
    per_device: Counter[str] = Counter()
    async with MqttClient(MqttSettings.from_url(broker.url, client_id=f"cc-{gateway_id}")) as watcher:
        await watcher.subscribe(gateway_filter("obs", gateway_id=gateway_id))
        home = asyncio.create_task(run_home(config, scenario="stable", seed=1, speed=20))
        try:
            async with asyncio.timeout(60):
                async for message in watcher.messages():
                    _, batch = decode_gateway_message(message.topic, message.payload)
                    assert isinstance(batch, ObservationBatch)
                    for observation in batch.observations:
                        assert observation.vital.value in ("spo2", "heart_rate")
                        assert 80 <= observation.value <= 110 or observation.vital.value == "heart_rate"
                        per_device[observation.device_id] += 1
                    if min(per_device["masimo-1"], per_device["contec-1"]) >= 20:
                        break
        finally:
            home.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await home
    assert per_device.keys() == {"masimo-1", "contec-1"}


async def test_garbage_truncation_and_clock_drift_are_survived_and_counted(
    broker: MosquittoBroker, tmp_path: Path, gateway_id: str
) -> None:
    base = home_config(gateway_id, broker_url=broker.url, scenario="stable", outbox_path=tmp_path / "o.db")
    config = base.model_copy(
        update={
            "devices": [
                base.devices[0],  # BLE PLX continuous
                base.devices[0].model_copy(
                    update={"id": "masimo-1", "kind": "masimo", "address": None, "path": "x"}
                ),
            ]
        }
    )
    faults = DeviceFaults(garbage_rate=0.2, truncate_rate=0.1, clock_drift_s_per_h=-120, seed=5)
    homes: list[SimulatedHome] = []
    per_device: Counter[str] = Counter()
    async with MqttClient(MqttSettings.from_url(broker.url, client_id=f"cc-{gateway_id}")) as watcher:
        await watcher.subscribe(gateway_filter("obs", gateway_id=gateway_id))
        task = asyncio.create_task(
            run_home(
                config, scenario="stable", seed=2, speed=30, start_h=1, faults=faults, on_home=homes.append
            )
        )
        try:
            async with asyncio.timeout(60):
                async for message in watcher.messages():
                    _, batch = decode_gateway_message(message.topic, message.payload)
                    assert isinstance(batch, ObservationBatch)
                    for observation in batch.observations:
                        per_device[observation.device_id] += 1
                        # the device clock runs 2 min/h behind; the measurement stays within a few minutes
                        assert abs((observation.measured_at - batch.sent_at).total_seconds()) < 600
                    if min(per_device[d.id] for d in config.devices) >= 30:
                        break
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    ble = homes[0].devices[config.devices[0].id]
    serial = homes[0].devices["masimo-1"]
    assert isinstance(ble, SimulatedBle)
    assert isinstance(serial, SimulatedSerial)
    assert ble.transport.parse_errors > 0
    assert serial.transport is not None
    assert serial.transport.parse_errors > 0


def test_fault_rates_are_checked() -> None:
    with pytest.raises(ValueError, match="garbage_rate"):
        DeviceFaults(garbage_rate=1.5)
