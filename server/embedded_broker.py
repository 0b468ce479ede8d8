"""An MQTT broker inside the demo's own process (amqtt), for a machine without Mosquitto.

::

    async with embedded_broker() as url:   # "mqtt://127.0.0.1:<free port>"
        ...

``wardwatch demo`` uses it when no ``mosquitto`` binary is installed and no ``--broker`` was given. It runs
on the demo's event loop, listens on 127.0.0.1 only (never another interface), admits every local client
without a password, and is gone when the ``async with`` block is left: every connection closed, every task
ended.

What it offers, and what it does not (amqtt 0.12.1; ``tests/server/test_embedded_broker.py`` checks what
WardWatch relies on, the rest was observed while writing this module):

- MQTT 3.1.1 only: every client connects with ``protocol_version="3.1.1"``. An MQTT 5 CONNECT is not
  refused with a CONNACK: amqtt waits for bytes that never come, and the client's connect times out.
- QoS 1, retained messages (the gateways' birth/death statuses, the command-center patient states), wills
  on a dropped connection, and persistent sessions (``clean_session=False``): subscriptions survive a
  reconnect and QoS 1 messages published while the client was away are delivered when it returns (with
  the retain flag set: amqtt marks them so; WardWatch's consumers do not look at it).
- No shared subscriptions: a ``$share/...`` filter matches nothing, so the demo runs one server worker
  without a share group.
- Nothing on disk: sessions and retained messages end with the demo.
- MQTT 3.1.1 has no receive maximum, so amqtt sends a subscriber everything it has at once, and it gives
  up on a QoS 1 delivery not acknowledged within a fixed 5 s: it forgets it instead of keeping it for
  redelivery (the server's ingest, which acknowledges only after storing, does receive and store it; the
  late PUBACK is ignored). A delivery in flight when the subscriber disconnects is not sent again either.
  The gateways do not depend on the broker for this: each keeps a message in its outbox until the
  server's receipt and publishes it again when none comes (``edge_agent.uplink``), and the server stores
  each message once. amqtt's log lines about these late acknowledgements are counted here instead (one
  line at shutdown).
- Throughput is far below Mosquitto's (pure Python, sharing the demo's event loop): enough for the demo's
  homes, not for load tests.

Two amqtt behaviours are corrected here: it forgets an anonymous client's session at disconnect and queues
nothing for it (:class:`LoopbackClients` admits every client by name instead), and at each connect it sends
the client the retained messages matching *any* client's subscriptions, so a gateway would receive the
other gateways' statuses as if they were commands (:class:`_Broker` sends only those matching the client's
own subscriptions). amqtt's listener also leaves the socket of a client that closed first open; this
module accepts the connections itself and closes each one when amqtt is done with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any, Final

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin
from amqtt.session import Session

logger = logging.getLogger(__name__)

HOST: Final = "127.0.0.1"
"""The only address the embedded broker listens on."""
PROTOCOL_VERSION: Final = "3.1.1"
"""What clients of the embedded broker must speak (``MqttSettings.protocol_version``)."""
_LISTENER: Final = "default"
_CLOSE_TIMEOUT_S: Final = 5.0
_LATE_ACK_LOGGERS: Final = ("amqtt.broker", "amqtt.mqtt.protocol.handler")


class _LateAcknowledgements(logging.Filter):
    """Counts amqtt's three log lines per QoS 1 delivery acknowledged after its fixed 5 s (a warning, an
    error with a traceback, and a warning when the late PUBACK arrives) instead of letting them through."""

    def __init__(self) -> None:
        super().__init__()
        self.late = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Timeout waiting for PUBACK" in message:
            if record.levelno == logging.WARNING:
                self.late += 1
            return False
        return "Received PUBACK for unknown pending message" not in message


class LoopbackClients(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """Admits every client of the loopback-only listener as a named client, not an anonymous one: amqtt
    forgets an anonymous client's session at its disconnect and queues nothing for it, which would undo the
    persistent sessions the gateways and the server's ingest rely on."""

    async def authenticate(self, *, session: Session) -> bool:
        return True


class _Broker(Broker):  # type: ignore[misc]
    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # amqtt calls this for its own SUBSCRIBE handling (the filter is the client's by then) and, at each
        # connect, for every filter of every client: only the client's own filters get retained messages.
        topic_filter = subscription[0]
        holders = self.subscriptions.get(topic_filter, ())
        if any(holder.client_id == session.client_id for holder, _qos in holders):
            await super()._publish_retained_messages_for_subscription(subscription, session)


def broker_config() -> dict[str, Any]:
    """amqtt's configuration: one listener whose connections this module accepts (on loopback), no $SYS
    topics, no anonymous sessions, sessions kept until the broker stops."""
    return {
        "listeners": {_LISTENER: {"type": "external"}},
        "plugins": {f"{__name__}.{LoopbackClients.__name__}": {}},
        "session_expiry_interval": None,
    }


@contextlib.asynccontextmanager
async def embedded_broker() -> AsyncIterator[str]:
    """Start amqtt on a free loopback port; yield its ``mqtt://`` URL; shut it down on leaving."""
    late_acknowledgements = _LateAcknowledgements()
    for name in _LATE_ACK_LOGGERS:
        logging.getLogger(name).addFilter(late_acknowledgements)
    try:
        async with _running_broker() as url:
            yield url
    finally:
        for name in _LATE_ACK_LOGGERS:
            logging.getLogger(name).removeFilter(late_acknowledgements)
        if late_acknowledgements.late:
            logger.info(
                "embedded broker: %d QoS 1 deliveries acknowledged after amqtt's 5 s limit (stored all the "
                "same; amqtt does not send those again)",
                late_acknowledgements.late,
            )


@contextlib.asynccontextmanager
async def _running_broker() -> AsyncIterator[str]:
    broker = _Broker(broker_config())
    connections: set[asyncio.Task[Any]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            await broker.external_connected(
                StreamReaderAdapter(reader), StreamWriterAdapter(writer), _LISTENER
            )
        except asyncio.CancelledError:
            # Only the shutdown below cancels a connection, and asyncio's server would log a cancelled
            # connection task as an error: the connection simply ends here.
            pass
        finally:
            connections.discard(task)
            # amqtt may have left the socket open (when the peer closed first). Not awaited: amqtt may have
            # cancelled the stream's close waiter already, and closing needs no more than a loop turn.
            writer.close()

    await broker.start()
    try:
        listener = await asyncio.start_server(serve, HOST, 0, family=socket.AF_INET)
    except BaseException:
        await broker.shutdown()
        raise
    port: int = listener.sockets[0].getsockname()[1]
    try:
        logger.info("embedded broker (amqtt, MQTT %s) on %s:%d", PROTOCOL_VERSION, HOST, port)
        yield f"mqtt://{HOST}:{port}"
    finally:
        listener.close()
        await broker.shutdown()  # ends every session, which ends their connections
        if connections:
            _, lingering = await asyncio.wait(connections, timeout=_CLOSE_TIMEOUT_S)
            for task in lingering:
                task.cancel()
            if lingering:
                await asyncio.wait(lingering)
        await listener.wait_closed()
        await asyncio.sleep(0)  # the transports closed above release their sockets on this loop turn
