"""The agent service end to end in-process: fake devices, real outbox, real Mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.broker import MosquittoBroker
from support.devices import BrokenDevice, ScriptedDevice, reading

from drivers.reading import Vital
from edge_agent.backoff import Backoff
from edge_agent.config import GatewayConfig
from edge_agent.mqtt import MqttClient, MqttSettings
from edge_agent.protocol import (
    Assessment,
    Command,
    CommandAck,
    ObservationBatch,
    SetSpo2Scale,
    decode,
    decode_gateway_message,
    encode,
    gateway_filter,
    gateway_topic,
    new_message_id,
)
from edge_agent.service import Agent
from edge_agent.systemd import Notifier
from edge_agent.uplink import UplinkOptions


def config(tmp_path: Path, broker: MosquittoBroker, gateway_id: str, **extra: object) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "gateway_id": gateway_id,
            "broker": {"url": broker.url, "allow_plaintext": True},
            "patients": [{"id": "pt-1"}],
            "devices": [
                {
                    "id": "oxi-1",
                    "kind": "ble_plx_continuous",
                    "patient": "pt-1",
                    "address": "AA:BB:CC:DD:EE:01",
                },
                {
                    "id": "broken-1",
                    "kind": "ble_heart_rate",
                    "patient": "pt-1",
                    "address": "AA:BB:CC:DD:EE:02",
                },
            ],
            "outbox": {"path": str(tmp_path / "outbox.db")},
            "heartbeat_interval_s": 1,
            **extra,
        }
    )


@contextlib.asynccontextmanager
async def running(agent: Agent) -> AsyncIterator[Agent]:
    task = asyncio.create_task(agent.run(), name="agent-under-test")
    await asyncio.wait_for(agent.ready.wait(), 10)
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_agent(cfg: GatewayConfig, devices: dict[str, object]) -> Agent:
    return Agent(
        cfg,
        device_factory=lambda d: devices[d.id],  # type: ignore[return-value]
        reassess_interval_s=0.2,
        device_backoff=lambda: Backoff(initial_s=0.01, maximum_s=0.05),
        uplink_options=UplinkOptions(
            heartbeat_interval_s=1, batch_delay_s=0.01, backoff=Backoff(initial_s=0.05, maximum_s=0.2)
        ),
        notifier=Notifier(address=""),
    )


async def test_readings_flow_to_the_broker_and_a_deteriorating_patient_is_scored(
    broker: MosquittoBroker, tmp_path: Path, gateway_id: str
) -> None:
    oximeter = ScriptedDevice("oxi-1", "ble_plx_continuous")
    broken = BrokenDevice("broken-1")
    cfg = config(tmp_path, broker, gateway_id)
    agent = make_agent(cfg, {"oxi-1": oximeter, "broken-1": broken})
    now = datetime.now(UTC)
    vitals = [
        (Vital.RESPIRATORY_RATE, 26),
        (Vital.SYSTOLIC_BP, 88),
        (Vital.BODY_TEMPERATURE, 39.4),
    ] + [(Vital.SPO2, 90), (Vital.HEART_RATE, 128)] * 3
    async with MqttClient(MqttSettings.from_url(broker.url, client_id=f"cc-{gateway_id}")) as watcher:
        await watcher.subscribe(gateway_filter(gateway_id=gateway_id))
        async with running(agent):
            oximeter.feed(
                [reading(v, x, now - timedelta(seconds=10 - i), "oxi-1") for i, (v, x) in enumerate(vitals)]
            )
            observed: list[float] = []
            high: Assessment | None = None
            async for message in watcher.messages():
                _, payload = decode_gateway_message(message.topic, message.payload)
                if isinstance(payload, ObservationBatch):
                    observed += [o.value for o in payload.observations]
                elif isinstance(payload, Assessment) and payload.risk == "high":
                    high = payload
                if high is not None and high.complete and len(observed) == len(vitals):
                    break
            assert broken.attempts >= 3  # restarted again and again, never stopping the others
            assert agent.devices["broken-1"].last_error is not None
            assert agent.devices["oxi-1"].connected
    assert sorted(observed) == sorted(float(x) for _, x in vitals)
    # RR 26 -> 3, SBP 88 -> 3, T 39.4 -> 2, SpO2 90 on Scale 1 -> 3, HR 128 -> 2, air 0, alert 0
    assert high.components == {
        "respiration": 3,
        "spo2": 3,
        "air_or_oxygen": 0,
        "systolic_bp": 3,
        "pulse": 2,
        "consciousness": 0,
        "temperature": 2,
    }
    assert high.total == 13


async def test_a_command_changes_the_chart_is_stored_and_acknowledged(
    broker: MosquittoBroker, tmp_path: Path, gateway_id: str
) -> None:
    oximeter = ScriptedDevice("oxi-1", "ble_plx_continuous")
    cfg = config(tmp_path, broker, gateway_id)
    command = Command(
        message_id=new_message_id(),
        gateway_id=gateway_id,
        patient_id="pt-1",
        issued_at=datetime.now(UTC),
        issued_by="nurse-1",
        body=SetSpo2Scale(command="set_spo2_scale", scale=2),
    )
    async with MqttClient(MqttSettings.from_url(broker.url, client_id=f"srv-{gateway_id}")) as server:
        await server.subscribe(gateway_topic(gateway_id, "cmd-ack"), gateway_topic(gateway_id, "score"))
        agent = make_agent(cfg, {"oxi-1": oximeter, "broken-1": BrokenDevice("broken-1")})
        async with running(agent):
            await asyncio.wait_for(agent.uplink.connected_event.wait(), 10)  # type: ignore[union-attr]
            oximeter.feed([reading(Vital.SPO2, 89, datetime.now(UTC), "oxi-1")])
            await server.publish(gateway_topic(gateway_id, "cmd", "set_spo2_scale"), encode(command))
            ack = None
            scale_two = None
            async for message in server.messages():
                if message.topic.endswith("cmd-ack"):
                    ack = decode(CommandAck, message.payload)
                else:
                    assessment = decode(Assessment, message.payload)
                    if assessment.spo2_scale == 2:
                        scale_two = assessment
                if ack is not None and scale_two is not None:
                    break
    assert ack.ok
    assert ack.command_id == command.message_id
    assert scale_two.components["spo2"] == 0  # 89 % is on target on Scale 2
    # the setting survives a restart of the agent
    restarted = make_agent(cfg, {"oxi-1": ScriptedDevice("oxi-1"), "broken-1": BrokenDevice("broken-1")})
    async with running(restarted):
        assert restarted.charts["pt-1"].assess(now=datetime.now(UTC)).spo2_scale == 2


async def test_local_alert_runs_once_when_uplink_is_down_and_risk_is_high(
    tmp_path: Path, gateway_id: str
) -> None:
    marker = tmp_path / "alerts.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$WARDWATCH_PATIENT_ID $WARDWATCH_RISK $WARDWATCH_NEWS2" >> {marker}\n')
    hook.chmod(0o755)
    cfg = GatewayConfig.model_validate(
        {
            "gateway_id": gateway_id,
            "broker": {"url": "mqtt://127.0.0.1:1", "allow_plaintext": True},  # nothing listens: uplink down
            "patients": [{"id": "pt-1"}],
            "devices": [
                {
                    "id": "oxi-1",
                    "kind": "ble_plx_continuous",
                    "patient": "pt-1",
                    "address": "AA:BB:CC:DD:EE:01",
                }
            ],
            "outbox": {"path": str(tmp_path / "outbox.db")},
            "local_alert": {"command": [str(hook)], "after_uplink_down_s": 0.2},
        }
    )
    oximeter = ScriptedDevice("oxi-1", "ble_plx_continuous")
    agent = make_agent(cfg, {"oxi-1": oximeter})
    now = datetime.now(UTC)
    async with running(agent):
        oximeter.feed(
            [
                reading(Vital.RESPIRATORY_RATE, 30, now, "oxi-1"),
                reading(Vital.SYSTOLIC_BP, 85, now, "oxi-1"),
                reading(Vital.SPO2, 88, now, "oxi-1"),
            ]
        )
        await asyncio.wait_for(agent.local_alert_done.wait(), 10)
        agent.local_alert_done.clear()
        # several watch cycles (every 0.05 s here): it must not fire again in the same episode
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(agent.local_alert_done.wait(), 1.0)
        backlog = await agent.outbox.backlog()  # type: ignore[union-attr]
    lines = marker.read_text().splitlines()
    assert lines == ["pt-1 high 9"]
    assert backlog.items >= 3 + 1 + 1  # three readings, assessments and the local_alert event, all kept
