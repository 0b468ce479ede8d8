"""deploy/mosquitto/acl on a real Mosquitto running deploy/mosquitto/mosquitto.conf: who may publish and read.

Mosquitto 2.0 grants any SUBSCRIBE and filters at delivery, and under MQTT 3.1.1 it acknowledges a denied
publish with a normal PUBACK; so "cannot" is proven by what a subscriber that may read everything
receives. Messages from one connection reach a subscriber in order, and Mosquitto queues a message to
its subscribers before it sends the publisher's PUBACK, so a permitted "sentinel" published after the
forbidden message (or after its PUBACK) arriving first proves that the forbidden one was not delivered.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from security_support import (
    COMMAND_CENTER,
    GATEWAY_A,
    GATEWAY_B,
    SERVER_INGEST,
    SERVER_PUB,
    Identity,
    Pki,
    client,
    tls_context,
)
from support.broker import MosquittoBroker

from edge_agent.mqtt import Message, MqttClient, PublishRefused
from edge_agent.protocol import (
    CC_ALERT_TOPIC,
    Command,
    SetSpo2Scale,
    cc_patient_topic,
    encode,
    gateway_filter,
    gateway_topic,
    new_message_id,
)

NOT_AUTHORIZED = 0x87
EVERYTHING = "#"


async def next_message(subscriber: MqttClient) -> Message:
    async with asyncio.timeout(10):
        async for message in subscriber.messages():
            return message
    raise AssertionError("the subscription ended")


def command_for(gateway_id: str) -> tuple[str, bytes]:
    command = Command(
        message_id=new_message_id(),
        gateway_id=gateway_id,
        patient_id="pt-1",
        issued_at=datetime.now(UTC),
        issued_by="nurse-1",
        body=SetSpo2Scale(command="set_spo2_scale", scale=2),
    )
    return gateway_topic(gateway_id, "cmd", "set_spo2_scale"), encode(command)


# -- MQTT 5 (the project's client): refusals are visible as PUBACK reason codes --------------------------


async def test_gateway_cannot_publish_as_another_gateway_mqtt5(
    secure_broker: MosquittoBroker, pki: Pki
) -> None:
    async with (
        client(secure_broker, pki[SERVER_INGEST]) as server,
        client(secure_broker, pki[GATEWAY_A]) as gateway_a,
    ):
        await server.subscribe(gateway_filter(), f"$share/ingest/{gateway_filter()}")
        for channel in ("status", "obs", "score", "event", "cmd-ack"):
            with pytest.raises(PublishRefused) as refused:
                await gateway_a.publish(gateway_topic(GATEWAY_B, channel), b"{}")
            assert refused.value.reason_code == NOT_AUTHORIZED
        for elsewhere in (CC_ALERT_TOPIC, "wardwatch/v1/other", "$SYS/broker/x", "wardwatch/v1/gw/gw-home-a"):
            with pytest.raises(PublishRefused):
                await gateway_a.publish(elsewhere, b"{}")
        # nor may it send itself (or anyone) commands
        with pytest.raises(PublishRefused):
            await gateway_a.publish(*command_for(GATEWAY_A))
        sentinel = gateway_topic(GATEWAY_A, "obs")
        await gateway_a.publish(sentinel, b"sentinel")
        first = await next_message(server)
        second = await next_message(server)
    # the plain and the $share subscription each deliver the sentinel; nothing of the refused ones
    assert (first.topic, first.payload) == (sentinel, b"sentinel")
    assert (second.topic, second.payload) == (sentinel, b"sentinel")


async def test_gateway_publishes_every_channel_of_its_own(secure_broker: MosquittoBroker, pki: Pki) -> None:
    channels = ("status", "obs", "score", "event", "cmd-ack")
    async with (
        client(secure_broker, pki[SERVER_INGEST]) as server,
        client(secure_broker, pki[GATEWAY_A]) as gateway_a,
    ):
        await server.subscribe(f"$share/ingest/{gateway_filter(gateway_id='+')}")
        for channel in channels:
            await gateway_a.publish(gateway_topic(GATEWAY_A, channel), channel.encode())
        received = [await next_message(server) for _ in channels]
    assert [m.topic for m in received] == [gateway_topic(GATEWAY_A, c) for c in channels]


async def test_gateway_reads_only_its_own_commands(secure_broker: MosquittoBroker, pki: Pki) -> None:
    async with (
        client(secure_broker, pki[SERVER_PUB]) as server,
        client(secure_broker, pki[GATEWAY_A]) as gateway_a,
    ):
        # Mosquitto grants these filters and drops, at delivery, what the ACL does not let A read.
        await gateway_a.subscribe(
            gateway_filter("cmd", gateway_id=GATEWAY_B), gateway_filter("cmd"), "wardwatch/#", EVERYTHING
        )
        await server.publish(*command_for(GATEWAY_B))  # the server may write B's commands ...
        own_topic, own_payload = command_for(GATEWAY_A)
        await server.publish(own_topic, own_payload)
        first = await next_message(gateway_a)
    assert (first.topic, first.payload) == (own_topic, own_payload)  # ... but A never sees them


async def test_server_reads_every_gateway_and_writes_commands_and_cc(
    secure_broker: MosquittoBroker, pki: Pki
) -> None:
    async with (
        client(secure_broker, pki[SERVER_INGEST]) as ingest,
        client(secure_broker, pki[SERVER_PUB]) as publisher,
        client(secure_broker, pki[GATEWAY_A]) as gateway_a,
        client(secure_broker, pki[GATEWAY_B]) as gateway_b,
        client(secure_broker, pki[COMMAND_CENTER]) as console,
    ):
        await ingest.subscribe(f"$share/wardwatch-ingest/{gateway_filter('obs')}")
        await gateway_b.subscribe(gateway_filter("cmd", gateway_id=GATEWAY_B))
        await console.subscribe("wardwatch/v1/cc/#")
        await gateway_a.publish(gateway_topic(GATEWAY_A, "obs"), b"a")
        await gateway_b.publish(gateway_topic(GATEWAY_B, "obs"), b"b")
        got = {(await next_message(ingest)).payload for _ in range(2)}
        topic, payload = command_for(GATEWAY_B)
        await publisher.publish(topic, payload)
        command = await next_message(gateway_b)
        await publisher.publish(cc_patient_topic("pt-1"), b"state", retain=True)
        await publisher.publish(CC_ALERT_TOPIC, b"alert")
        cc = [await next_message(console) for _ in range(2)]
        # the server's identity is not a gateway: the ACL's deny line takes away the pattern namespace
        with pytest.raises(PublishRefused):
            await publisher.publish(gateway_topic(SERVER_PUB, "obs"), b"{}")
    assert got == {b"a", b"b"}
    assert (command.topic, command.payload) == (topic, payload)
    assert [(m.topic, m.payload) for m in cc] == [
        (cc_patient_topic("pt-1"), b"state"),
        (CC_ALERT_TOPIC, b"alert"),
    ]


async def test_command_center_reads_cc_only(secure_broker: MosquittoBroker, pki: Pki) -> None:
    async with (
        client(secure_broker, pki[SERVER_PUB]) as server,
        client(secure_broker, pki[GATEWAY_A]) as gateway_a,
        client(secure_broker, pki[COMMAND_CENTER]) as console,
    ):
        await console.subscribe(EVERYTHING, gateway_filter(), f"$share/cc/{gateway_filter()}")
        await gateway_a.publish(gateway_topic(GATEWAY_A, "obs"), b"observations")
        await gateway_a.publish(gateway_topic(GATEWAY_A, "status"), b"birth", retain=True)
        await server.publish(*command_for(GATEWAY_A))
        await server.publish(CC_ALERT_TOPIC, b"alert")
        first = await next_message(console)
        # it may not write anything: not the cc topics, not a command, not a gateway namespace of its own
        for topic in (CC_ALERT_TOPIC, command_for(GATEWAY_A)[0], gateway_topic(COMMAND_CENTER, "obs")):
            with pytest.raises(PublishRefused) as refused:
                await console.publish(topic, b"{}")
            assert refused.value.reason_code == NOT_AUTHORIZED
    assert (first.topic, first.payload) == (CC_ALERT_TOPIC, b"alert")


# -- MQTT 3.1.1 (plain paho): a denied publish still gets a PUBACK ---------------------------------------


class Paho311:
    """A blocking MQTT 3.1.1 client over mutual TLS, with its messages collected in order."""

    def __init__(self, broker: MosquittoBroker, identity: Identity) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=identity.name, protocol=paho.MQTTv311
        )
        self.client.tls_set_context(tls_context(identity, identity.ca_file))
        self.messages: list[tuple[str, bytes]] = []
        self.arrived = threading.Condition()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.client.on_connect = lambda *_: self.connected.set()
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.connected.wait(10), "no CONNACK"

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        with self.arrived:
            self.messages.append((message.topic, bytes(message.payload)))
            self.arrived.notify_all()

    def subscribe(self, topic_filter: str) -> None:
        self.subscribed.clear()
        self.client.subscribe(topic_filter, qos=1)
        assert self.subscribed.wait(10), "no SUBACK"

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published(), f"no PUBACK for {topic}"

    def wait_for(self, count: int) -> list[tuple[str, bytes]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.messages) >= count, timeout=10)
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_gateway_cannot_publish_as_another_gateway_mqtt311(secure_broker: MosquittoBroker, pki: Pki) -> None:
    server = Paho311(secure_broker, pki[SERVER_INGEST])
    gateway_a = Paho311(secure_broker, pki[GATEWAY_A])
    try:
        server.subscribe(gateway_filter())
        forged = gateway_topic(GATEWAY_B, "obs")
        gateway_a.publish(forged, b"forged")  # PUBACKed all the same (MQTT 3.1.1 has no reason codes)
        sentinel = gateway_topic(GATEWAY_A, "obs")
        gateway_a.publish(sentinel, b"sentinel")
        received = server.wait_for(1)
    finally:
        gateway_a.close()
        server.close()
    assert received == [(sentinel, b"sentinel")]
    assert "Denied PUBLISH from gw-home-a" in secure_broker.log_text()


def test_gateway_cannot_read_another_gateways_commands_mqtt311(
    secure_broker: MosquittoBroker, pki: Pki
) -> None:
    server = Paho311(secure_broker, pki[SERVER_PUB])
    gateway_a = Paho311(secure_broker, pki[GATEWAY_A])
    try:
        gateway_a.subscribe("wardwatch/v1/gw/+/cmd/+")
        server.publish(*command_for(GATEWAY_B))
        own = command_for(GATEWAY_A)
        server.publish(*own)
        received = gateway_a.wait_for(1)
    finally:
        gateway_a.close()
        server.close()
    assert received == [own]


async def test_a_gateway_cannot_take_over_another_gateways_session(
    secure_broker: MosquittoBroker, pki: Pki
) -> None:
    """use_username_as_clientid: the client id is the certificate's CN whatever the client asks for, so
    A asking for B's client id neither disconnects B nor inherits B's session (queued commands)."""
    async with (
        client(secure_broker, pki[GATEWAY_B]) as gateway_b,
        client(secure_broker, pki[SERVER_INGEST]) as server,
    ):
        await server.subscribe(gateway_filter())
        async with client(secure_broker, pki[GATEWAY_A], client_id=GATEWAY_B) as impostor:
            await impostor.publish(gateway_topic(GATEWAY_A, "event"), b"from a")
            await gateway_b.publish(gateway_topic(GATEWAY_B, "event"), b"from b")  # B is still connected
            first, second = await next_message(server), await next_message(server)
        assert gateway_b.is_connected
    assert [(m.topic, m.payload) for m in (first, second)] == [
        (gateway_topic(GATEWAY_A, "event"), b"from a"),
        (gateway_topic(GATEWAY_B, "event"), b"from b"),
    ]
    assert f"as {GATEWAY_A} (" in secure_broker.log_text()


async def test_two_connections_with_one_certificate_cannot_coexist(
    secure_broker: MosquittoBroker, pki: Pki
) -> None:
    """Why every server connection needs its own certificate (docs/security.md): with the client id taken
    from the CN, a second connection with the same certificate takes the first one's place."""
    async with (
        client(secure_broker, pki[SERVER_INGEST], client_id="wardwatch-1-ingest") as first,
        client(secure_broker, pki[SERVER_INGEST], client_id="wardwatch-1-pub") as second,
    ):
        async with asyncio.timeout(10):
            await first.wait_closed()
        assert second.is_connected


async def test_receipts_flow_from_the_server_to_their_own_gateway_only(
    secure_broker: MosquittoBroker, pki: Pki
) -> None:
    async with (
        client(secure_broker, pki[SERVER_PUB]) as server,
        client(secure_broker, pki[GATEWAY_A]) as gateway_a,
    ):
        await gateway_a.subscribe(
            gateway_topic(GATEWAY_A, "receipt"), "wardwatch/v1/gw/+/receipt", EVERYTHING
        )
        # a gateway may not write receipts, its own (forging "stored" to drop its backlog) or another's
        for gateway in (GATEWAY_A, GATEWAY_B):
            with pytest.raises(PublishRefused) as refused:
                await gateway_a.publish(gateway_topic(gateway, "receipt"), b"{}")
            assert refused.value.reason_code == NOT_AUTHORIZED
        await server.publish(gateway_topic(GATEWAY_B, "receipt"), b"for b")
        await server.publish(gateway_topic(GATEWAY_A, "receipt"), b"for a")
        first = await next_message(gateway_a)
    assert (first.topic, first.payload) == (gateway_topic(GATEWAY_A, "receipt"), b"for a")
