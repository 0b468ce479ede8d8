"""The private broker fixture really starts a broker, isolates tests and can be killed and restarted."""

from __future__ import annotations

import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from support.broker import MosquittoBroker


def _roundtrip(broker: MosquittoBroker, topic: str, payload: bytes) -> bytes:
    received: list[bytes] = []
    subscribed = threading.Event()
    arrived = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_subscribe = lambda *_: subscribed.set()

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        received.append(message.payload)
        arrived.set()

    client.on_message = on_message
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        assert subscribed.wait(10)
        client.publish(topic, payload, qos=1).wait_for_publish(10)
        assert arrived.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    return received[0]


def test_broker_carries_a_message(broker: MosquittoBroker, topic_prefix: str) -> None:
    assert broker.port != 1883
    assert _roundtrip(broker, f"{topic_prefix}/ping", b"hello") == b"hello"


def test_owned_broker_survives_kill_and_restart(broker_factory: Callable[..., MosquittoBroker]) -> None:
    owned = broker_factory()
    assert _roundtrip(owned, "x/y", b"1") == b"1"
    owned.kill()
    assert owned.process is not None and owned.process.returncode == -9
    owned.start()
    assert _roundtrip(owned, "x/y", b"2") == b"2"
