"""uplink_loss in a simulated home: the real agent loses its broker for 10 simulated hours; nothing is lost.

The home runs the agent's MQTT connection through its loopback uplink relay and cuts it from 10 h to 20 h
of the sepsis course; a real server worker (SQLite) ingests and receipts; a subscriber on the broker
watches. At 7200x the 10 h outage takes 5 real seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from sqlalchemy import select
from support.broker import MosquittoBroker

from edge_agent.config import GatewayConfig
from edge_agent.mqtt import MqttClient, MqttSettings
from edge_agent.protocol import (
    Event,
    LocalAlert,
    ObservationBatch,
    Receipt,
    decode,
    decode_gateway_message,
    gateway_filter,
    gateway_topic,
)
from edge_agent.service import Agent
from server.ingest import Ingestor
from server.ingest_mqtt import IngestConsumer
from server.receipts import ReceiptSender
from server.settings import IngestSettings
from server.storage import create_engine, migrate, session_factory
from server.storage.models import Observation
from simulators.clock import SimClock
from simulators.home import PHYSIOLOGY_KIND, SimulatedHome, run_home
from simulators.home_cli import register_subcommand
from simulators.physiology import CADENCES, DeviceKind, Patient
from simulators.physiology.patient import DEFAULT_START
from simulators.uplink import UplinkRelay, uplink_outages

SPEED = 7200.0
START_H = 9.0
SEED = 24  # the agent's chart first scores high at ~14.5 h and stays high for ~3.5 h of the outage
# The oximeter and the patch report every 5 minutes here: at 7200x a 1 Hz oximeter would send 7200 lines a
# second, more than an agent on a shared test machine keeps up with.
CADENCE_OVERRIDES = {
    **CADENCES,
    **{
        kind: replace(CADENCES[kind], period_s=300)
        for kind in (DeviceKind.PULSE_OXIMETER_CONTINUOUS, DeviceKind.RESPIRATION_MONITOR)
    },
}

Key = tuple[str, str, int]
"""(device id, vital, simulated second of the measurement since the scenario's start)"""


def uplink_config(gateway_id: str, broker_url: str, tmp_path: Path) -> GatewayConfig:
    patient = f"pt-{gateway_id}"
    hook = tmp_path / "local-alert.txt"
    return GatewayConfig.model_validate(
        {
            "gateway_id": gateway_id,
            "broker": {"url": broker_url, "allow_plaintext": True},
            "patients": [{"id": patient}],
            "devices": [
                # every device stamps its readings with its own clock, so each reading is identifiable
                {"id": "masimo-1", "kind": "masimo", "patient": patient, "path": "/dev/sim-masimo"},
                {"id": "patch-1", "kind": "respiration_patch", "patient": patient},
                {
                    "id": "cuff-1",
                    "kind": "ble_blood_pressure",
                    "patient": patient,
                    "address": "02:00:00:00:00:01",
                },
                {
                    "id": "thermo-1",
                    "kind": "ble_thermometer",
                    "patient": patient,
                    "address": "02:00:00:00:00:02",
                },
            ],
            "outbox": {"path": str(tmp_path / "outbox.db")},
            # the hook runs 5 simulated minutes into the outage (the default), checked in simulated time
            "local_alert": {
                "command": ["/bin/sh", "-c", f'echo "$WARDWATCH_PATIENT_ID $WARDWATCH_RISK" >> {hook}'],
            },
        }
    )


def expected_readings(config: GatewayConfig, patient: Patient, t0_s: float, t1_s: float) -> dict[Key, float]:
    """Every reading the home's devices make in [t0_s, t1_s), with its value."""
    expected: dict[Key, float] = {}
    for device in config.devices:
        for sample in patient.device_samples(PHYSIOLOGY_KIND[device.kind], t0_s, t1_s):
            for vital, value in sample.values.items():
                expected[(device.id, vital.value, sample.t_s)] = value
    return expected


@dataclass
class Watch:
    """What a subscriber on the broker saw, in simulated time."""

    arrivals: dict[Key, list[tuple[datetime, UUID, float]]] = field(default_factory=lambda: defaultdict(list))
    carriers: dict[Key, set[UUID]] = field(default_factory=lambda: defaultdict(set))
    seq_of: dict[UUID, int] = field(default_factory=dict)
    receipted: set[int] = field(default_factory=set)
    local_alerts: list[tuple[datetime, LocalAlert]] = field(default_factory=list)
    deliveries: int = 0


async def test_uplink_loss_cuts_the_agent_off_and_every_reading_arrives_once_afterwards(
    broker: MosquittoBroker, tmp_path: Path, gateway_id: str
) -> None:
    config = uplink_config(gateway_id, broker.url, tmp_path)
    # hour 0 is DEFAULT_START (a Monday 08:00 UTC), so the spot checks' times of day are the same every run
    clock = SimClock.starting_now(speed=SPEED, sim_start=DEFAULT_START + timedelta(hours=START_H))
    homes: list[SimulatedHome] = []
    agents: list[Agent] = []
    watch = Watch()
    database = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'server.db'}")
    await migrate(database)
    sessions = session_factory(database)
    ingestor = Ingestor(sessions, IngestSettings(share_group=None), clock=clock.now)
    receipt_topic = gateway_topic(gateway_id, "receipt")
    outage: tuple[float, float] | None = None
    expected: dict[Key, float] = {}
    try:
        async with (
            MqttClient(MqttSettings.from_url(broker.url, client_id=f"cc-{gateway_id}")) as watcher,
            MqttClient(MqttSettings.from_url(broker.url, client_id=f"rc-{gateway_id}")) as receipt_link,
            asyncio.TaskGroup() as tasks,
        ):

            async def publish_receipt(topic: str, payload: bytes) -> None:
                await receipt_link.publish(topic, payload, qos=1)

            receipts = ReceiptSender(publish_receipt, clock=clock.now)
            consumer = IngestConsumer(
                ingestor,
                MqttSettings.from_url(broker.url, client_id=f"in-{gateway_id}"),
                share_group=None,
                on_outcome=receipts.note,
                clock=clock.now,
            )
            server = [
                tasks.create_task(consumer.run(), name="ingest"),
                tasks.create_task(receipts.run(), name="receipts"),
            ]
            await consumer.connected.wait()
            await watcher.subscribe(
                gateway_filter("obs", gateway_id=gateway_id),
                gateway_filter("event", gateway_id=gateway_id),
                receipt_topic,
            )
            home = tasks.create_task(
                run_home(
                    config,
                    scenario="uplink_loss",
                    seed=SEED,
                    clock=clock,
                    start_h=START_H,
                    cadences=CADENCE_OVERRIDES,
                    on_home=homes.append,
                    on_agent=agents.append,
                ),
                name="home",
            )
            try:
                async with asyncio.timeout(60):
                    async for message in watcher.messages():
                        now = clock.now()
                        if message.topic == receipt_topic:
                            watch.receipted.update(decode(Receipt, message.payload).seqs)
                        else:
                            _, payload = decode_gateway_message(message.topic, message.payload)
                            if isinstance(payload, ObservationBatch):
                                watch.deliveries += 1
                                watch.seq_of[payload.message_id] = payload.seq
                                start = homes[0].patients[config.patients[0].id].start
                                for o in payload.observations:
                                    t = round((o.measured_at - start).total_seconds())
                                    key = (o.device_id, o.vital.value, t)
                                    watch.arrivals[key].append((now, payload.message_id, o.value))
                                    watch.carriers[key].add(payload.message_id)
                            elif isinstance(payload, Event) and isinstance(payload.detail, LocalAlert):
                                watch.local_alerts.append((now, payload.detail))
                        if not expected and homes and len(homes[0].uplink_changes) == 2:
                            # what the devices measured while the relay was actually cut
                            patient = homes[0].patients[config.patients[0].id]
                            [outage] = uplink_outages(patient)
                            cut, back = (c.at - patient.start for c in homes[0].uplink_changes)
                            t0, t1 = math.ceil(cut.total_seconds()), back.total_seconds()
                            expected = expected_readings(config, patient, t0, t1)
                        if expected and _all_arrived_and_receipted(watch, expected):
                            break
            finally:
                for task in (home, *server):
                    task.cancel()
        async with sessions() as session:
            stored = (
                await session.execute(
                    select(
                        Observation.device_id,
                        Observation.vital,
                        Observation.measured_at,
                        Observation.received_at,
                    ).where(Observation.gateway_id == gateway_id)
                )
            ).all()
    finally:
        await database.dispose()

    assert outage is not None
    home_ = homes[0]
    patient = home_.patients[config.patients[0].id]
    relay = home_.uplink
    assert isinstance(relay, UplinkRelay)
    [lost, restored] = home_.uplink_changes
    assert not lost.up and restored.up
    # on time, give or take the event loop's delays (1800 simulated seconds are 0.25 s here)
    assert outage[0] <= (lost.at - patient.start).total_seconds() < outage[0] + 1800
    assert outage[1] <= (restored.at - patient.start).total_seconds() < outage[1] + 1800
    # the agent kept trying in vain during the outage, and came back
    assert relay.refused >= 1 and relay.relayed >= 1

    # ~10 h of readings: ~120 each from the oximeter (SpO2 and pulse) and the patch, and the spot checks
    assert len(expected) > 330
    assert {key[0] for key in expected} == {"masimo-1", "patch-1", "cuff-1", "thermo-1"}
    for key, value in expected.items():
        arrivals = watch.arrivals[key]
        # made during the outage, delivered only after it, with the value the device measured
        assert min(at for at, _, _ in arrivals) >= restored.at, key
        assert all(v == pytest.approx(value) for _, _, v in arrivals), key
        # each reading was formed into exactly one message (retransmissions repeat that message)
        assert len(watch.carriers[key]) == 1, key

    # the server stored each of them exactly once, after the uplink came back
    rows: dict[Key, list[datetime]] = defaultdict(list)
    for device_id, vital, measured_at, received_at in stored:
        rows[(device_id, vital, round((measured_at - patient.start).total_seconds()))].append(received_at)
    for key in expected:
        assert len(rows[key]) == 1, key
        assert rows[key][0] >= restored.at, key

    # NEWS2 went high during the outage: the local alert ran while offline and was reported afterwards
    assert watch.local_alerts, "no local alert"
    alert_at, alert = watch.local_alerts[0]
    assert alert.risk == "high" and alert.uplink_down_s > 0
    assert alert_at >= restored.at
    assert "high" in (tmp_path / "local-alert.txt").read_text()


def _all_arrived_and_receipted(watch: Watch, expected: dict[Key, float]) -> bool:
    if any(key not in watch.arrivals for key in expected):
        return False
    carriers = {message_id for key in expected for message_id in watch.carriers[key]}
    return bool(watch.local_alerts) and all(watch.seq_of[m] in watch.receipted for m in carriers)


def test_sim_home_refuses_uplink_loss_against_a_remote_tls_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        'gateway_id = "gw-1"\n'
        '[broker]\nurl = "mqtts://broker.example:8883"\n'
        f'ca_file = "{tmp_path}/ca.pem"\ncert_file = "{tmp_path}/gw.pem"\nkey_file = "{tmp_path}/gw.key"\n'
        '[[patients]]\nid = "pt-1"\n'
    )
    parser = argparse.ArgumentParser()
    register_subcommand(parser.add_subparsers())
    args = parser.parse_args(["home", "--config", str(path), "--scenario", "uplink_loss"])
    assert args.run(args) == 2
    error = capsys.readouterr().err
    assert str(path) in error and "loopback" in error and "mqtts://broker.example:8883" in error


async def test_the_relay_resets_open_connections_and_refuses_new_ones_while_the_uplink_is_down() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(100):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, UplinkRelay("127.0.0.1", port) as relay:
        assert relay.url("mqtt") == f"mqtt://127.0.0.1:{relay.port}"
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        relay.set_up(False)  # the open connection is reset
        assert await _closed(reader)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        assert await _closed(reader)  # a new one too, as soon as it is accepted
        writer.close()
        relay.set_up(True)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"pong")
        assert await reader.readexactly(4) == b"pong"
        writer.close()
        assert (relay.relayed, relay.cut, relay.refused) == (2, 1, 1)


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(5):
            return await reader.read(100) == b""
    except ConnectionResetError:
        return True
