"""``wardwatch server`` and ``wardwatch demo`` as real processes, against a real Mosquitto.

The worker: gateway traffic in over MQTT, the alert out on ``wardwatch/v1/cc/alerts`` and the patient's
state retained on ``wardwatch/v1/cc/patients/{id}/state``, the REST API answering, SIGTERM ending it cleanly.
The demo: its own Mosquitto, server and simulated homes for 15 s, observations stored, exit 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from server_support import rows, scalar
from support.broker import MosquittoBroker, free_port

from edge_agent import protocol
from edge_agent.mqtt import Message, MqttClient, MqttSettings
from server.escalation.config import PRIORITIES
from server.storage import create_engine, session_factory

WARDWATCH = str(Path(sys.executable).parent / "wardwatch")


def _client(broker: MosquittoBroker, name: str) -> MqttClient:
    return MqttClient(
        MqttSettings.from_url(broker.url, client_id=f"{name}-{uuid.uuid4().hex[:8]}", clean_start=True)
    )


async def _wait_for_line(stream: asyncio.StreamReader, pattern: str, seen: list[str]) -> None:
    while True:
        line = await stream.readline()
        if not line:
            raise AssertionError("the process ended before logging " + pattern + "\n" + "".join(seen[-30:]))
        text = line.decode(errors="replace")
        seen.append(text)
        if re.search(pattern, text):
            return


async def _drain(stream: asyncio.StreamReader, seen: list[str]) -> None:
    while line := await stream.readline():
        seen.append(line.decode(errors="replace"))


async def _first_matching(
    received: list[Message], arrived: asyncio.Event, accept: Callable[[Message], bool]
) -> Message:
    """The first message received so far (in any order with others) that ``accept`` takes."""
    while True:
        for message in received:
            if accept(message):
                return message
        arrived.clear()
        await arrived.wait()


@pytest.mark.slow
async def test_worker_process_ingests_escalates_publishes_and_stops_on_sigterm(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path, gateway_id: str
) -> None:
    broker = broker_factory()
    api_port = free_port()
    env = {
        **os.environ,
        "WARDWATCH_SERVER_STATE_DIR": str(tmp_path / "state"),
        "WARDWATCH_SERVER_BROKER__URL": broker.url,
        "WARDWATCH_SERVER_WORKER_ID": "test-worker",
        "WARDWATCH_SERVER_API__PORT": str(api_port),
        "WARDWATCH_SERVER_LOG_FORMAT": "json",
    }
    patient_id = "pt-process"
    async with _client(broker, "cc") as command_center, _client(broker, "gw") as gateway:
        await command_center.subscribe(protocol.CC_ALERT_TOPIC, protocol.cc_patient_topic(patient_id), qos=1)
        received: list[Message] = []
        arrived = asyncio.Event()

        async def receive() -> None:
            async for message in command_center.messages():
                received.append(message)
                arrived.set()

        process = await asyncio.create_subprocess_exec(
            WARDWATCH, "server", env=env, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        assert process.stderr is not None
        log: list[str] = []
        try:
            async with asyncio.TaskGroup() as group:
                receiver = group.create_task(receive())
                async with asyncio.timeout(30):
                    await _wait_for_line(process.stderr, r"worker test-worker ready", log)
                draining = group.create_task(_drain(process.stderr, log))
                assert all(json.loads(line)["level"] for line in log)  # structured: one JSON object a line

                now = datetime.now(UTC)
                birth = protocol.GatewayStatus(
                    gateway_id=gateway_id,
                    state="birth",
                    session=1,
                    sent_at=now,
                    software_version="test",
                    heartbeat_interval_s=600,
                )
                await gateway.publish(
                    protocol.gateway_topic(gateway_id, "status"), protocol.encode(birth), qos=1, retain=True
                )
                components: dict[str, int | None] = dict.fromkeys(protocol.NEWS2_PARAMETERS, 0)
                components.update(respiration=3, spo2=3, pulse=2)
                high = protocol.Assessment(
                    message_id=protocol.new_message_id(),
                    gateway_id=gateway_id,
                    seq=0,
                    sent_at=now,
                    patient_id=patient_id,
                    assessed_at=now,
                    total=8,
                    components=components,
                    risk=protocol.Risk.HIGH,
                    complete=True,
                    input_ages_s={},
                    spo2_scale=1,
                    on_oxygen=False,
                    consciousness=protocol.Consciousness.ALERT,
                )
                await gateway.publish(
                    protocol.gateway_topic(gateway_id, "score"), protocol.encode(high), qos=1
                )

                def complete_state(message: Message) -> bool:
                    # birth and assessment are stored concurrently: wait for the state that has both
                    if message.topic != protocol.cc_patient_topic(patient_id):
                        return False
                    state = protocol.decode(protocol.PatientState, message.payload)
                    return state.open_alerts == 1 and state.gateway_online

                try:
                    async with asyncio.timeout(15):
                        alert_message = await _first_matching(
                            received, arrived, lambda m: m.topic == protocol.CC_ALERT_TOPIC
                        )
                        state_message = await _first_matching(received, arrived, complete_state)
                except TimeoutError:
                    raise AssertionError("no alert or patient state:\n" + "".join(log[-40:])) from None
                event = protocol.decode(protocol.AlertEvent, alert_message.payload)
                assert (event.action, event.category, event.patient_id, event.priority, event.tier) == (
                    "raised",
                    "clinical",
                    patient_id,
                    "high",
                    2,
                )
                state = protocol.decode(protocol.PatientState, state_message.payload)
                assert (state.risk, state.total, state.gateway_online) == (protocol.Risk.HIGH, 8, True)

                async with httpx.AsyncClient() as http:
                    health = await http.get(f"http://127.0.0.1:{api_port}/healthz")
                    assert health.status_code == 200
                    refused = await http.get(f"http://127.0.0.1:{api_port}/api/alerts")
                    assert refused.status_code == 401

                process.send_signal(signal.SIGTERM)
                async with asyncio.timeout(15):
                    status = await process.wait()
                await draining
                receiver.cancel()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert status == 0, "".join(log[-30:])
    assert any("worker test-worker stopped" in line for line in log)
    assert any("start-up heap frozen" in line for line in log)  # the process's main froze it when ready
    database = sqlite3.connect(tmp_path / "state" / "wardwatch.db")
    try:
        actions = database.execute("SELECT action FROM alert_events").fetchall()
        delivered = database.execute("SELECT status FROM alert_deliveries").fetchall()
    finally:
        database.close()
    assert actions == [("raised",)]
    assert delivered == [("delivered",)]


@pytest.mark.slow
async def test_demo_runs_for_its_duration_stores_observations_and_exits_cleanly(tmp_path: Path) -> None:
    state_dir = tmp_path / "demo"
    process = await asyncio.create_subprocess_exec(
        WARDWATCH,
        "demo",
        "--duration",
        "15",
        "--homes",
        "2",
        "--http-port",
        "0",
        "--state-dir",
        str(state_dir),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(90):
        output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    assert re.search(r"token:\s+ww_[0-9a-f]{12}_\S+", text), text[-3000:]
    assert "scenario sepsis" in text
    summary = re.search(r"WardWatch demo stopped: (\d+) gateways, (\d+) observations", text)
    assert summary is not None, text[-3000:]
    assert int(summary.group(1)) == 2 and int(summary.group(2)) > 0
    database = sqlite3.connect(state_dir / "wardwatch.db")
    try:
        (stored,) = database.execute("SELECT count(*) FROM observations").fetchone()
        patients = {row[0] for row in database.execute("SELECT DISTINCT patient_id FROM observations")}
    finally:
        database.close()
    assert stored >= int(summary.group(2))  # batches in flight at the summary are stored before the exit
    assert patients == {"demo-pt-01", "demo-pt-02"}
    assert not list((state_dir / "mosquitto").glob("*.pid"))


async def test_server_check_names_the_file_key_and_problem(tmp_path: Path) -> None:
    good = tmp_path / "server.toml"
    good.write_text(
        'worker_id = "w1"\n[broker]\nurl = "mqtt://127.0.0.1:1883"\n'
        '[[webhooks]]\nname = "pager"\nurl = "https://pager.example/hook"\nsecret = "0123456789abcdef0123"\n'
        "[escalation]\nsnooze_max_s = 1800\n",
        encoding="utf-8",
    )
    bad = tmp_path / "bad.toml"
    bad.write_text('[broker]\nurl = "http://broker:1883"\n', encoding="utf-8")
    for path, expected_status, expected_text in (
        (good, 0, "OK: worker w1, broker mqtt://127.0.0.1:1883, 1 webhook(s)"),
        (bad, 2, f"{bad}: broker: Value error, broker.url must start with mqtt:// or mqtts://"),
    ):
        process = await asyncio.create_subprocess_exec(
            WARDWATCH,
            "server",
            "check",
            "--config",
            str(path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        assert process.returncode == expected_status
        assert expected_text in output.decode()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_two_worker_processes_on_postgresql_share_ingest_and_fire_each_escalation_once(
    broker_factory: Callable[..., MosquittoBroker], database_url: str, tmp_path: Path, gateway_id: str
) -> None:
    broker = broker_factory()
    patients = [f"pt-shared-{index}" for index in range(8)]
    workers: list[asyncio.subprocess.Process] = []
    logs: list[list[str]] = []
    drains: list[asyncio.Task[None]] = []
    try:
        for name in ("wa", "wb"):
            env = {
                **os.environ,
                "WARDWATCH_SERVER_STATE_DIR": str(tmp_path / name),
                "WARDWATCH_SERVER_DATABASE__URL": database_url,
                "WARDWATCH_SERVER_BROKER__URL": broker.url,
                "WARDWATCH_SERVER_WORKER_ID": name,
                "WARDWATCH_SERVER_INGEST__SHARE_GROUP": "wardwatch-test",
                "WARDWATCH_SERVER_HTTP_ENABLED": "false",
                "WARDWATCH_SERVER_ENGINE__TIMER_POLL_S": "0.2",
                "WARDWATCH_SERVER_ESCALATION__ACK_TIMEOUT_S": json.dumps(dict.fromkeys(PRIORITIES, 1)),
            }
            process = await asyncio.create_subprocess_exec(
                WARDWATCH, "server", env=env, stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            assert process.stderr is not None
            log: list[str] = []
            async with asyncio.timeout(30):
                await _wait_for_line(process.stderr, rf"worker {name} ready", log)
            workers.append(process)
            logs.append(log)
            drains.append(asyncio.create_task(_drain(process.stderr, log)))

        async with _client(broker, "gw") as gateway:
            now = datetime.now(UTC)
            birth = protocol.GatewayStatus(
                gateway_id=gateway_id,
                state="birth",
                session=1,
                sent_at=now,
                software_version="test",
                heartbeat_interval_s=600,
            )
            await gateway.publish(protocol.gateway_topic(gateway_id, "status"), protocol.encode(birth), qos=1)
            components: dict[str, int | None] = dict.fromkeys(protocol.NEWS2_PARAMETERS, 0)
            components.update(respiration=3, spo2=3, pulse=2)
            for seq, patient_id in enumerate(patients):
                high = protocol.Assessment(
                    message_id=protocol.new_message_id(),
                    gateway_id=gateway_id,
                    seq=seq,
                    sent_at=now,
                    patient_id=patient_id,
                    assessed_at=now,
                    total=8,
                    components=components,
                    risk=protocol.Risk.HIGH,
                    complete=True,
                    input_ages_s={},
                    spo2_scale=1,
                    on_oxygen=False,
                    consciousness=protocol.Consciousness.ALERT,
                )
                await gateway.publish(
                    protocol.gateway_topic(gateway_id, "score"), protocol.encode(high), qos=1
                )

        engine = create_engine(database_url)
        sessions = session_factory(engine)
        try:
            escalated = "SELECT count(*) FROM alert_events WHERE action = 'escalated'"
            async with asyncio.timeout(30):
                # Two processes commit independently: the database is the one place to watch.
                while await scalar(sessions, escalated) < 2 * len(patients):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)
            for process in workers:
                process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                statuses = [await process.wait() for process in workers]
            events = await rows(
                sessions, "SELECT alert_id, action, tier, detail FROM alert_events ORDER BY id"
            )
            stored = await scalar(sessions, "SELECT count(*) FROM assessments")
        finally:
            await engine.dispose()
    finally:
        for process in workers:
            if process.returncode is None:
                process.kill()
                await process.wait()
        for task in drains:
            task.cancel()
    assert statuses == [0, 0], "".join(logs[0][-20:] + logs[1][-20:])
    assert stored == len(patients)
    raised = [event for event in events if event.action == "raised"]
    assert len(raised) == len(patients)  # one alert per patient, however the messages were split
    timer_fired = [
        (event.alert_id, event.detail["due_at"]) for event in events if "due_at" in (event.detail or {})
    ]
    assert len(timer_fired) == len(set(timer_fired))  # no due time fired twice
    tiers: dict[object, list[int]] = {}
    for event in events:
        if event.action == "escalated":
            tiers.setdefault(event.alert_id, []).append(event.tier)
    assert all(sequence == [3, 4] for sequence in tiers.values()) and len(tiers) == len(patients)
    assert max(float(event.detail["late_s"]) for event in events if "late_s" in (event.detail or {})) < 5
