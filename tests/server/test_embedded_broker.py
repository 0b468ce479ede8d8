"""The demo's embedded amqtt broker, and ``wardwatch demo`` on it when mosquitto is not installed.

The broker in this process, with the real MQTT adapter speaking 3.1.1: retained messages, wills, persistent
sessions that queue QoS 1 while the client is away, only the client's own retained messages at connect,
``$share`` matching nothing, loopback only, and nothing left behind (tasks, sockets) after it stops.
The demo as a real process with the mosquitto binary hidden from its search: it says it uses the embedded
broker, stores the homes' readings, raises the deteriorating patient's alert, and exits 0 cleanly.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sqlite3
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from edge_agent.mqtt import Message, MqttClient, MqttSettings, Will
from edge_agent.protocol import CC_ALERT_TOPIC, AlertEvent, PatientState, cc_patient_topic, decode
from server.demo import MOSQUITTO_PATH_VARIABLE, find_mosquitto
from server.embedded_broker import HOST, PROTOCOL_VERSION, embedded_broker


def _settings(url: str, name: str, **options: object) -> MqttSettings:
    return MqttSettings.from_url(url, client_id=name, protocol_version=PROTOCOL_VERSION, **options)


async def _next(client: MqttClient) -> Message:
    async with asyncio.timeout(5):
        return await anext(aiter(client.messages()))


async def _nothing_within(client: MqttClient, seconds: float) -> None:
    try:
        async with asyncio.timeout(seconds):
            message = await anext(aiter(client.messages()))
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message on {message.topic}: {message.payload!r}")


@pytest.fixture
async def broker_url() -> AsyncIterator[str]:
    async with embedded_broker() as url:
        yield url


async def test_retained_birth_and_will_reach_later_subscribers_and_only_their_own(broker_url: str) -> None:
    async with MqttClient(_settings(broker_url, "gw-a")) as gateway:
        await gateway.publish("wardwatch/v1/gw/gw-a/status", b"birth", qos=1, retain=True)
    async with MqttClient(_settings(broker_url, "server", clean_start=False)) as server:
        await server.subscribe("wardwatch/v1/gw/+/status")
        retained = await _next(server)
        assert (retained.topic, retained.payload, retained.retain) == (
            "wardwatch/v1/gw/gw-a/status",
            b"birth",
            True,
        )

    # A gateway subscribed to its own commands only: amqtt 0.12 would also send it, at connect, the
    # retained statuses matching the server's filter; the embedded broker does not.
    async with MqttClient(_settings(broker_url, "gw-b", clean_start=False)) as other:
        await other.subscribe("wardwatch/v1/gw/gw-b/cmd/+")
        await _nothing_within(other, 0.5)

    will = Will(topic="wardwatch/v1/gw/gw-c/status", payload=b"death", qos=1, retain=True)
    async with MqttClient(_settings(broker_url, "watcher")) as watcher:
        await watcher.subscribe("wardwatch/v1/gw/gw-c/status")
        dying = MqttClient(_settings(broker_url, "gw-c", will=will))
        await dying.__aenter__()
        dying._paho.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]  # a crash: no DISCONNECT
        await dying.wait_closed()
        await dying.__aexit__(None, None, None)
        fired = await _next(watcher)
        assert (fired.payload, fired.retain) == (b"death", False)
    async with MqttClient(_settings(broker_url, "late")) as late:
        await late.subscribe("wardwatch/v1/gw/gw-c/status")
        kept = await _next(late)
        assert (kept.payload, kept.retain) == (b"death", True)


async def test_persistent_session_keeps_subscriptions_and_queues_qos1_while_away(broker_url: str) -> None:
    gateway = _settings(broker_url, "gw-d", clean_start=False, manual_ack=True)
    async with MqttClient(gateway) as client:
        assert not client.session_present
        await client.subscribe("wardwatch/v1/gw/gw-d/receipt")
    async with MqttClient(_settings(broker_url, "server-pub", clean_start=True)) as server:
        for seq in range(3):
            await server.publish("wardwatch/v1/gw/gw-d/receipt", f"seqs {seq}".encode(), qos=1)
    async with MqttClient(gateway) as client:
        assert client.session_present
        payloads = []
        for _ in range(3):
            message = await _next(client)
            payloads.append(message.payload)
            message.ack()
    assert payloads == [b"seqs 0", b"seqs 1", b"seqs 2"]

    # A clean session is forgotten: nothing is queued for it.
    fleeting = _settings(broker_url, "gw-e", clean_start=True)
    async with MqttClient(fleeting) as client:
        await client.subscribe("wardwatch/v1/gw/gw-e/receipt")
    async with MqttClient(_settings(broker_url, "server-pub2")) as server:
        await server.publish("wardwatch/v1/gw/gw-e/receipt", b"lost", qos=1)
    async with MqttClient(fleeting) as client:
        assert not client.session_present
        await _nothing_within(client, 0.5)


async def test_shared_subscriptions_match_nothing_and_the_listener_is_loopback_only(broker_url: str) -> None:
    parts = urlsplit(broker_url)
    assert parts.hostname == HOST == "127.0.0.1"
    async with (
        MqttClient(_settings(broker_url, "shared")) as shared,
        MqttClient(_settings(broker_url, "plain")) as plain,
        MqttClient(_settings(broker_url, "gw-f")) as gateway,
    ):
        await shared.subscribe("$share/ingest/wardwatch/v1/gw/+/obs")
        await plain.subscribe("wardwatch/v1/gw/+/obs")
        await gateway.publish("wardwatch/v1/gw/gw-f/obs", b"batch", qos=1)
        assert (await _next(plain)).payload == b"batch"
        await _nothing_within(shared, 0.3)
    # Listening on 127.0.0.1 only (read from the kernel's socket table; no traffic to other addresses).
    assert _listening_addresses(parts.port or 0) == ["127.0.0.1"]


def _listening_addresses(port: int) -> list[str]:
    """The local addresses of the TCP sockets listening on ``port`` (IPv4 and IPv6 tables)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            if len(address) == 8:
                found.append(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
            else:
                words = bytes.fromhex(address)
                raw = b"".join(words[index : index + 4][::-1] for index in range(0, 16, 4))
                found.append(socket.inet_ntop(socket.AF_INET6, raw))
    return found


async def test_stopping_leaves_no_task_and_no_open_connection() -> None:
    before = asyncio.all_tasks()
    async with embedded_broker() as url:
        persistent = MqttClient(_settings(url, "stays", clean_start=False))
        await persistent.__aenter__()
        await persistent.subscribe("a/b")
        async with MqttClient(_settings(url, "goes")) as client:
            await client.publish("a/b", b"x", qos=1)
        await _next(persistent)
        # The persistent client is still connected when the broker stops: the broker closes it.
        port = urlsplit(url).port
    reason = await asyncio.wait_for(persistent.wait_closed(), 5)
    await persistent.__aexit__(None, None, None)
    assert reason is not None
    assert asyncio.all_tasks() - before == set()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, port or 0), timeout=1).close()


def test_mosquitto_is_found_on_the_search_path_and_not_when_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(MOSQUITTO_PATH_VARIABLE, str(empty))
    assert find_mosquitto() is None
    monkeypatch.setenv(MOSQUITTO_PATH_VARIABLE, "")
    assert find_mosquitto() is None
    installed = tmp_path / "sbin"
    installed.mkdir()
    binary = installed / "mosquitto"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setenv(MOSQUITTO_PATH_VARIABLE, f"{empty}{os.pathsep}{installed}")
    assert find_mosquitto() == str(binary)
    monkeypatch.delenv(MOSQUITTO_PATH_VARIABLE)
    monkeypatch.setenv("PATH", str(installed))
    assert find_mosquitto() == str(binary)


_DEMO_RUNNER = """
import sys, threading
from edge_agent.cli import main
status = main(sys.argv[1:])
print("threads at exit:", sorted(t.name for t in threading.enumerate()), flush=True)
sys.exit(status)
"""


@pytest.mark.slow
async def test_demo_without_mosquitto_runs_on_the_embedded_broker_and_stops_cleanly(tmp_path: Path) -> None:
    state_dir = tmp_path / "demo"
    hidden = tmp_path / "no-mosquitto-here"
    hidden.mkdir()
    marker = f"wardwatch-demo-test-{uuid.uuid4().hex}"
    env = {**os.environ, MOSQUITTO_PATH_VARIABLE: str(hidden), "WARDWATCH_TEST_MARKER": marker}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-W",
        "error",
        "-c",
        _DEMO_RUNNER,
        *("demo", "--duration", "20", "--homes", "2", "--speed", "60"),
        *("--http-port", "0", "--state-dir", str(state_dir)),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            announced = await _line_matching(
                process.stdout, r"WardWatch demo broker: (mqtt://127\.0\.0\.1:\d+) \(embedded amqtt", lines
            )
            # The command center's topics, over the embedded broker: the sepsis patient's alert and state.
            cc = _settings(announced.group(1), f"cc-{marker[-8:]}")
            async with MqttClient(cc) as command_center:
                await command_center.subscribe(CC_ALERT_TOPIC, cc_patient_topic("demo-pt-01"))
                raised = await _first_cc_message(
                    command_center, lambda m: m.topic == CC_ALERT_TOPIC and b'"demo-pt-01"' in m.payload
                )
                state = await _first_cc_message(command_center, lambda m: m.topic != CC_ALERT_TOPIC)
            while line := await process.stdout.readline():
                lines.append(line.decode(errors="replace"))
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = "".join(lines)
    assert process.returncode == 0, text[-4000:]
    event = decode(AlertEvent, raised.payload)
    assert (event.action, event.category, event.patient_id) == ("raised", "clinical", "demo-pt-01")
    assert decode(PatientState, state.payload).patient_id == "demo-pt-01"
    assert "scenario sepsis" in text
    summary = re.search(r"WardWatch demo stopped: (\d+) gateways, (\d+) observations", text)
    assert summary is not None, text[-4000:]
    assert int(summary.group(1)) == 2 and int(summary.group(2)) > 0
    # Stopped cleanly: no traceback, no warning turned error, no ignored exception, only the main thread.
    for trouble in ("Traceback", "Warning", "Exception ignored"):
        assert trouble not in text, text[-4000:]
    assert "threads at exit: ['MainThread']" in text, text[-2000:]
    assert not _processes_with(marker)

    database = sqlite3.connect(state_dir / "wardwatch.db")
    try:
        readings = dict(
            database.execute("SELECT patient_id, count(*) FROM observations GROUP BY patient_id").fetchall()
        )
        alerts = database.execute(
            "SELECT category, condition FROM alerts WHERE patient_id = 'demo-pt-01'"
        ).fetchall()
        gateways = database.execute("SELECT count(*) FROM gateways").fetchone()[0]
    finally:
        database.close()
    assert set(readings) == {"demo-pt-01", "demo-pt-02"} and min(readings.values()) > 0
    assert ("clinical", "news2") in alerts, alerts  # the sepsis patient deteriorates within seconds
    assert gateways == 2
    # The server's receipts reached the gateways: most of what each formed has left its outbox.
    for outbox in sorted((state_dir / "gateways").glob("*.db")):
        database = sqlite3.connect(outbox)
        try:
            (formed,) = database.execute("SELECT value FROM counter WHERE name = 'seq'").fetchone()
            (waiting,) = database.execute("SELECT count(*) FROM message").fetchone()
        finally:
            database.close()
        assert formed > 0 and waiting < formed / 2, (outbox.name, formed, waiting)


async def _line_matching(stream: asyncio.StreamReader, pattern: str, lines: list[str]) -> re.Match[str]:
    while line := await stream.readline():
        text = line.decode(errors="replace")
        lines.append(text)
        if found := re.search(pattern, text):
            return found
    raise AssertionError(f"the demo ended before printing {pattern}:\n{''.join(lines[-40:])}")


async def _first_cc_message(client: MqttClient, accept: Callable[[Message], bool]) -> Message:
    async for message in client.messages():
        if accept(message):
            return message
    raise AssertionError("unreachable: messages() raises when the connection ends")


def _processes_with(marker: str) -> list[int]:
    """Processes whose environment carries the marker (the demo's children would inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environment:
            found.append(int(entry.name))
    return found
