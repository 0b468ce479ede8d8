"""The asyncio MQTT adapter against a real Mosquitto: acknowledgements, refusals, redelivery, loss."""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from support.broker import MosquittoBroker, free_port

from edge_agent.mqtt import (
    ConnectFailed,
    ConnectionLost,
    Message,
    MqttClient,
    MqttSettings,
    PublishRefused,
    Will,
)


def settings(broker: MosquittoBroker, client_id: str, **options: object) -> MqttSettings:
    return MqttSettings.from_url(broker.url, client_id=client_id, **options)


async def test_publish_waits_for_puback_and_subscriber_receives(
    broker: MosquittoBroker, topic_prefix: str
) -> None:
    async with (
        MqttClient(settings(broker, f"{topic_prefix}-sub".replace("/", "-"))) as sub,
        MqttClient(settings(broker, f"{topic_prefix}-pub".replace("/", "-"))) as pub,
    ):
        await sub.subscribe(f"{topic_prefix}/#")
        for index in range(50):
            await pub.publish(f"{topic_prefix}/n", str(index).encode(), qos=1)
        received = []
        async for message in sub.messages():
            received.append(int(message.payload))
            if len(received) == 50:
                break
    assert received == list(range(50))


async def test_qos0_publishes_leave_no_bookkeeping_behind(broker: MosquittoBroker, topic_prefix: str) -> None:
    """paho reports QoS 0 publishes too; nothing waits for those reports, so none may be kept (a
    long-lived publisher would grow by one entry per message)."""
    async with (
        MqttClient(settings(broker, f"{topic_prefix}-sub".replace("/", "-"))) as sub,
        MqttClient(settings(broker, f"{topic_prefix}-pub".replace("/", "-"))) as pub,
    ):
        await sub.subscribe(f"{topic_prefix}/#")
        for index in range(200):
            await pub.publish(f"{topic_prefix}/n", str(index).encode(), qos=0)
        await pub.publish(f"{topic_prefix}/n", b"last", qos=1)  # after its PUBACK the others are out
        async for message in sub.messages():
            if message.payload == b"last":
                break
        assert pub._early_publish_results == {}
        assert pub._unawaited_mids == set()


async def test_publishes_larger_than_the_socket_takes_at_once_go_out_whole_and_in_order(
    broker: MosquittoBroker, topic_prefix: str
) -> None:
    """Queued packets are written at the end of the loop turn; one the socket cannot take whole is
    finished when the socket drains (the loop watches it only then, and stops watching afterwards)."""
    big = [bytes([n]) * (8 * 1024 * 1024) for n in range(3)]
    async with (
        MqttClient(settings(broker, f"{topic_prefix}-sub".replace("/", "-"))) as sub,
        MqttClient(settings(broker, f"{topic_prefix}-pub".replace("/", "-"))) as pub,
    ):
        await sub.subscribe(f"{topic_prefix}/#")
        sent = [payload for pair in zip(big, [b"a", b"b", b"c"], strict=True) for payload in pair]
        await asyncio.gather(*(pub.publish(f"{topic_prefix}/n", payload, qos=1) for payload in sent))
        received = []
        async for message in sub.messages():
            received.append(message.payload)
            if len(received) == len(sent):
                break
        assert pub._writer_fd is None  # nothing left to write: the socket is no longer watched
    assert [(len(p), p[:1]) for p in received] == [(len(p), p[:1]) for p in sent]
    assert received == sent


async def test_unacknowledged_message_is_redelivered_to_the_persistent_session(
    broker: MosquittoBroker, topic_prefix: str
) -> None:
    consumer_id = f"consumer-{topic_prefix[-12:]}"
    consumer = settings(broker, consumer_id, manual_ack=True, clean_start=False)
    async with MqttClient(consumer) as sub:
        await sub.subscribe(f"{topic_prefix}/data")
        async with MqttClient(settings(broker, f"producer-{topic_prefix[-12:]}")) as pub:
            await pub.publish(f"{topic_prefix}/data", b"precious")
        first = await anext(aiter(sub.messages()))
        assert first.payload == b"precious"
        # crash before storing: no ack, connection gone
    async with MqttClient(consumer) as again:
        assert again.session_present
        redelivered = await anext(aiter(again.messages()))
        assert redelivered.payload == b"precious"
        redelivered.ack()
    async with MqttClient(consumer) as third:
        # acknowledged now: nothing comes back; a fresh publish is the next thing seen
        async with MqttClient(settings(broker, f"producer2-{topic_prefix[-12:]}")) as pub:
            await pub.publish(f"{topic_prefix}/data", b"next")
        following = await anext(aiter(third.messages()))
        assert following.payload == b"next"
        following.ack()


async def test_refused_publish_raises_with_the_reason_code(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("user writer\ntopic write allowed/#\n")
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    port = free_port()
    owned = broker_factory(
        port=port,
        listener_config=f"listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n",
    )
    async with MqttClient(settings(owned, "writer", username="writer")) as client:
        await client.publish("allowed/x", b"1")
        with pytest.raises(PublishRefused) as refused:
            await client.publish("forbidden/x", b"1")
    assert refused.value.reason_code == 0x87
    assert refused.value.topic == "forbidden/x"


async def test_no_broker_is_a_connect_failure() -> None:
    with pytest.raises(ConnectFailed, match="cannot connect"):
        async with MqttClient(MqttSettings(host="127.0.0.1", port=free_port(), client_id="nobody")):
            pass


async def test_a_connect_that_times_out_closes_its_socket() -> None:
    """A peer that accepts TCP but never answers CONNACK: the client gives up and closes the connection
    (it used to leave the socket to the garbage collector)."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = MqttSettings(host="127.0.0.1", port=port, client_id="silent-peer", connect_timeout_s=0.5)
    try:
        with pytest.raises(ConnectFailed):
            async with MqttClient(settings):
                pass
        reader, writer = await asyncio.wait_for(accepted.get(), 5)
        async with asyncio.timeout(5):
            while await reader.read(4096):  # the CONNECT packet, then end of stream when the client closes
                pass
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_broker_death_fails_pending_work_and_fires_the_will(
    broker: MosquittoBroker, broker_factory: Callable[..., MosquittoBroker], topic_prefix: str
) -> None:
    owned = broker_factory()
    client = MqttClient(settings(owned, "doomed"))
    async with client:
        owned.kill()
        reason = await client.wait_closed()
        assert isinstance(reason, ConnectionLost)
        with pytest.raises(ConnectionLost):
            await client.publish("a/b", b"late")
        with pytest.raises(ConnectionLost):
            await anext(aiter(client.messages()))

    will_topic = f"{topic_prefix}/status"
    async with MqttClient(settings(broker, f"watcher-{topic_prefix[-8:]}")) as watcher:
        await watcher.subscribe(will_topic)
        dying = MqttClient(
            settings(broker, f"dying-{topic_prefix[-8:]}", will=Will(topic=will_topic, payload=b"dead"))
        )
        await dying.__aenter__()
        # drop the TCP connection without DISCONNECT, as a crash would
        dying._paho.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
        message = await asyncio.wait_for(anext(aiter(watcher.messages())), 10)
        assert message.payload == b"dead"
        await dying.__aexit__(None, None, None)


# -- MQTT 3.1.1 (brokers without MQTT 5, such as the demo's embedded amqtt) -------------------------------


def _connection_line(broker: MosquittoBroker, client_id: str) -> str:
    """Mosquitto's log line for the client's newest connection: ``(p<protocol>, c<clean>, k<keepalive>)``,
    where p2 is MQTT 3.1.1 and p5 is MQTT 5."""
    lines = [line for line in broker.log_text().splitlines() if f" as {client_id} (" in line]
    assert lines, f"mosquitto logged no connection of {client_id}"
    return lines[-1]


async def test_mqtt311_persistent_session_redelivers_what_was_not_acknowledged(
    broker: MosquittoBroker, topic_prefix: str
) -> None:
    consumer_id = f"v311-consumer-{topic_prefix[-12:]}"
    consumer = settings(broker, consumer_id, manual_ack=True, clean_start=False, protocol_version="3.1.1")
    producer = settings(broker, f"v311-producer-{topic_prefix[-12:]}", protocol_version="3.1.1")
    async with MqttClient(consumer) as sub:
        assert not sub.session_present
        await sub.subscribe(f"{topic_prefix}/data")
        async with MqttClient(producer) as pub:
            await pub.publish(f"{topic_prefix}/data", b"precious")  # PUBACK without a reason code
        first = await anext(aiter(sub.messages()))
        assert first.payload == b"precious"
    assert "(p2, c0, k30" in _connection_line(broker, consumer_id)  # 3.1.1, clean_session=False
    async with MqttClient(consumer) as again:
        assert again.session_present
        redelivered = await anext(aiter(again.messages()))
        assert redelivered.payload == b"precious"
        redelivered.ack()
    async with MqttClient(consumer) as third:
        async with MqttClient(producer) as pub:
            await pub.publish(f"{topic_prefix}/data", b"next")
        following = await anext(aiter(third.messages()))
        assert following.payload == b"next"  # the acknowledged message did not come back
        following.ack()


@pytest.mark.parametrize(
    ("options", "persistent"),
    [
        ({"clean_start": True}, False),
        ({"clean_start": False, "session_expiry_s": 0}, False),  # MQTT 5 would end it at the disconnect
        ({"clean_start": False}, True),
    ],
)
async def test_mqtt311_clean_session_follows_the_mqtt5_session_settings(
    broker: MosquittoBroker, topic_prefix: str, options: dict[str, object], persistent: bool
) -> None:
    client_id = f"v311-clean-{topic_prefix[-12:]}"
    client_settings = settings(broker, client_id, protocol_version="3.1.1", **options)
    assert client_settings.persistent_session is persistent
    async with MqttClient(client_settings) as client:
        await client.subscribe(f"{topic_prefix}/x")
    async with MqttClient(client_settings) as client:
        assert client.session_present is persistent
    assert f"(p2, c{0 if persistent else 1}, k30" in _connection_line(broker, client_id)


async def test_mqtt311_retained_will_fires_when_the_connection_drops(
    broker: MosquittoBroker, topic_prefix: str
) -> None:
    will_topic = f"{topic_prefix}/status"
    will = Will(topic=will_topic, payload=b"dead", qos=1, retain=True)
    suffix = topic_prefix[-8:]
    dying = MqttClient(settings(broker, f"v311-dying-{suffix}", will=will, protocol_version="3.1.1"))
    await dying.__aenter__()
    dying._paho.socket().shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]  # a crash: no DISCONNECT
    await dying.wait_closed()
    await dying.__aexit__(None, None, None)
    # retained: a client that subscribes afterwards still gets it
    async with MqttClient(settings(broker, f"v311-late-{suffix}", protocol_version="3.1.1")) as late:
        await late.subscribe(will_topic)
        message = await asyncio.wait_for(anext(aiter(late.messages())), 10)
    assert (message.payload, message.retain) == (b"dead", True)


async def test_a_manual_ack_client_holds_itself_to_its_receive_maximum(
    broker: MosquittoBroker, topic_prefix: str
) -> None:
    """Mosquitto 2.0.11 stops honouring a client's Receive Maximum once PUBACKs flow and sends its whole
    queue; the client must not read past it, or a consumer buffers whatever backlog the broker holds."""
    consumer = settings(
        broker, f"window-{topic_prefix[-12:]}", manual_ack=True, clean_start=True, receive_maximum=5
    )
    async with MqttClient(consumer) as sub:
        await sub.subscribe(f"{topic_prefix}/data")
        async with MqttClient(settings(broker, f"window-pub-{topic_prefix[-12:]}")) as pub:
            for n in range(40):
                await pub.publish(f"{topic_prefix}/data", str(n).encode())
        window: list[Message] = []
        seen: list[bytes] = []
        most_buffered = 0
        async for message in sub.messages():
            seen.append(message.payload)
            window.append(message)
            # what the client has taken off the socket and not had acknowledged
            most_buffered = max(most_buffered, len(window) + sub._messages.qsize())
            if len(window) == 5 or len(seen) == 40:
                for held in window:
                    held.ack()  # acknowledgements are what make the broker overrun the window
                window.clear()
            if len(seen) == 40:
                break
    assert seen == [str(n).encode() for n in range(40)]
    assert most_buffered == 5


def test_receive_maximum_is_checked() -> None:
    with pytest.raises(ValueError, match="receive_maximum"):
        MqttSettings(host="127.0.0.1", port=1883, client_id="c", receive_maximum=0)


async def test_receiving_messages_leaves_no_reference_cycles(
    broker: MosquittoBroker, topic_prefix: str
) -> None:
    """paho looks up per-topic callbacks for every message it receives with a matcher that makes a
    reference cycle per call. Such garbage is freed only by the cyclic collector, whose collections stop
    the event loop of a server worker receiving a thousand messages a second; the adapter receives
    without making any."""
    count = 300
    async with (
        MqttClient(settings(broker, f"{topic_prefix}-sub".replace("/", "-"))) as sub,
        MqttClient(settings(broker, f"{topic_prefix}-pub".replace("/", "-"))) as pub,
    ):
        await sub.subscribe(f"{topic_prefix}/#")
        gc.collect()
        gc.disable()
        try:
            received = 0
            for index in range(count):
                await pub.publish(f"{topic_prefix}/n/{index % 7}", str(index).encode(), qos=0)
            await pub.publish(f"{topic_prefix}/n/last", b"last", qos=1)
            async for message in sub.messages():
                received += 1
                if message.payload == b"last":
                    break
            cyclic_garbage = gc.collect()
        finally:
            gc.enable()
    assert received == count + 1
    assert cyclic_garbage < count // 10, f"{cyclic_garbage} objects in reference cycles for {count} messages"


async def test_a_socket_above_fd_setsize_is_read_like_any_other(
    broker: MosquittoBroker, topic_prefix: str
) -> None:
    """A process with over a thousand descriptors (a fleet of gateways, a worker serving many event
    streams) gets sockets numbered 1024 and up, which select() refuses: every read of such a connection
    raised in the event loop's callback (seen as tens of thousands of tracebacks in a 1,500-home fleet)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1200, hard), hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    loop = asyncio.get_running_loop()
    errors: list[dict[str, object]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        count = 200
        async with (
            MqttClient(settings(broker, f"{topic_prefix}-sub".replace("/", "-"))) as sub,
            MqttClient(settings(broker, f"{topic_prefix}-pub".replace("/", "-"))) as pub,
        ):
            sock = sub._paho.socket()
            assert sock is not None and sock.fileno() >= 1024
            await sub.subscribe(f"{topic_prefix}/#")
            for index in range(count):
                await pub.publish(f"{topic_prefix}/n", str(index).encode(), qos=1)
            received = []
            async with asyncio.timeout(10):
                async for message in sub.messages():
                    received.append(int(message.payload))
                    if len(received) == count:
                        break
    finally:
        loop.set_exception_handler(previous)
        for fd in fillers:
            os.close(fd)
    assert received == list(range(count))
    assert errors == []


@pytest.mark.parametrize("protocol_version", ["5", "3.1.1"])
async def test_a_session_with_a_backlog_beyond_the_receive_maximum_can_subscribe_again(
    broker: MosquittoBroker, topic_prefix: str, protocol_version: str
) -> None:
    """A consumer reconnecting to its persistent session (a restarted server worker) gets the queued
    messages right after CONNACK, ahead of the SUBACK of its re-subscription. Reading paused at the
    receive maximum would leave that SUBACK unread forever: the consumer never starts, so nothing is
    acknowledged and nothing resumes the reading. The client reads on until the SUBACK is in."""
    consumer = settings(
        broker,
        f"backlog-{topic_prefix[-12:]}",
        manual_ack=True,
        clean_start=False,
        receive_maximum=5,
        protocol_version=protocol_version,
    )
    async with MqttClient(consumer) as first:
        await first.subscribe(f"{topic_prefix}/data")
    async with MqttClient(settings(broker, f"backlog-pub-{topic_prefix[-12:]}")) as pub:
        for n in range(30):  # queued for the session while the consumer is away
            await pub.publish(f"{topic_prefix}/data", str(n).encode())
    async with MqttClient(consumer) as again:
        assert again.session_present
        async with asyncio.timeout(10):
            await again.subscribe(f"{topic_prefix}/data")
            seen: list[bytes] = []
            async for message in again.messages():
                seen.append(message.payload)
                message.ack()
                if len(seen) == 30:
                    break
    assert seen == [str(n).encode() for n in range(30)]


async def test_a_burst_of_messages_is_taken_off_the_socket_in_few_reads(
    broker: MosquittoBroker, topic_prefix: str
) -> None:
    """paho reads a packet's fixed header a byte per call, three or four recv() system calls per message;
    the client takes what the socket holds in one call and serves paho's reads from it."""
    count = 300
    async with (
        MqttClient(settings(broker, f"{topic_prefix}-sub".replace("/", "-"))) as sub,
        MqttClient(settings(broker, f"{topic_prefix}-pub".replace("/", "-"))) as pub,
    ):
        await sub.subscribe(f"{topic_prefix}/#")
        reads = 0
        fill = sub._fill

        def counting(sock: socket.socket) -> bytes:
            nonlocal reads
            reads += 1
            return fill(sock)

        sub._fill = counting  # type: ignore[method-assign]
        for index in range(count):
            await pub.publish(f"{topic_prefix}/n/{index}", str(index).encode() * (index % 50), qos=0)
        received: list[tuple[str, bytes]] = []
        async with asyncio.timeout(10):
            async for message in sub.messages():
                received.append((message.topic, message.payload))
                if len(received) == count:
                    break
    assert received == [(f"{topic_prefix}/n/{i}", str(i).encode() * (i % 50)) for i in range(count)]
    assert reads <= count // 10, f"{reads} socket reads for {count} messages"
