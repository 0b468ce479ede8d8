"""An asyncio MQTT 5 client over paho-mqtt, shaped like aiomqtt 2.x but honest about acknowledgements.

One :class:`MqttClient` is one connection: ``async with`` connects, leaving disconnects; after the
connection is lost the object is spent and the owner opens a new one (never reuse a client after a
disconnect). paho's network loop is driven from the event loop's own socket callbacks, so no thread and
no locking is involved.

Why not aiomqtt: aiomqtt 2.x resolves a QoS 1 publish when any PUBACK arrives and ignores its MQTT 5
reason code, so a publish the broker refused (0x87 not authorized, 0x97 quota exceeded ...) looks
delivered. Here :meth:`MqttClient.publish` raises :class:`PublishRefused` for every failure reason code
(>= 0x80), and resolves only for success codes (0x00 success, 0x10 no matching subscribers).

MQTT 3.1.1 (``MqttSettings(protocol_version="3.1.1")``) is there for brokers that speak nothing newer, such
as the demo's embedded amqtt: no properties are sent, a PUBACK carries no reason code (so every PUBACK is a
success), a refused subscription is the SUBACK return code 0x80, and the session is persistent
(``clean_session=False``) exactly when MQTT 5 would keep one: ``clean_start=False`` and a non-zero
``session_expiry_s``. How long the broker keeps it is then the broker's own setting.

Incoming messages can be acknowledged manually (``manual_ack=True``): the PUBACK is sent only when the
consumer calls :meth:`Message.ack`, i.e. after it has durably stored the message. Such a client holds
itself to its ``receive_maximum``: while that many QoS 1/2 messages are unacknowledged it stops reading
the socket (TCP back-pressure; the broker keeps the rest queued) and reads on once one is acknowledged.
The broker is supposed to enforce it, but Mosquitto 2.0.11 does not once PUBACKs flow (measured: 9,120
unacknowledged messages in flight against a receive maximum of 100), and a consumer would otherwise
buffer whatever backlog the broker holds. While a SUBACK or PUBACK is awaited it reads on past the
maximum, since the response can only be read after the messages sent before it (a persistent session's
queue comes right after CONNACK, ahead of the SUBACK of a re-subscription).

Exceptions (all subclasses of :class:`~edge_agent.errors.AgentError`)::

    MqttError
    ├── ConnectFailed        TCP/TLS failure or a CONNACK refusal; .reason_code when the broker answered
    ├── ConnectionLost       the connection ended; pending publishes fail with it
    ├── PublishRefused       PUBACK with a failure reason code; .reason_code, .topic
    └── SubscribeRefused     SUBACK refused a filter; .reason_code, .topic_filter
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import ssl
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_agent.errors import AgentError

log = logging.getLogger(__name__)


class MqttError(AgentError):
    """Base class of the MQTT adapter's errors."""


class ConnectFailed(MqttError):
    def __init__(self, message: str, *, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class ConnectionLost(MqttError):
    def __init__(self, message: str, *, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class PublishRefused(MqttError):
    def __init__(self, message: str, *, reason_code: int, topic: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.topic = topic


class SubscribeRefused(MqttError):
    def __init__(self, message: str, *, reason_code: int, topic_filter: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.topic_filter = topic_filter


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """Mutual TLS: the CA that signed the broker, and this client's certificate and key."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A client context (TLS 1.2+, broker verified against ``ca_file``); ConnectFailed names the file
        that cannot be used."""
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailed(f"cannot use CA file {self.ca_file}: {exc.strerror or exc}") from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            try:
                context.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
            except (OSError, ssl.SSLError) as exc:
                raise ConnectFailed(
                    f"cannot use client certificate {self.cert_file} with key {self.key_file}: "
                    f"{exc.strerror or exc}"
                ) from exc
        return context


@dataclass(frozen=True, slots=True, kw_only=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


MqttVersion = Literal["5", "3.1.1"]
"""The MQTT protocol versions the adapter speaks: 5 everywhere, 3.1.1 for brokers without MQTT 5."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    host: str
    port: int
    client_id: str
    tls: TlsFiles | None = None
    username: str | None = None
    password: str | None = None
    keepalive_s: int = 30
    clean_start: bool = False
    session_expiry_s: int = 7 * 24 * 3600
    """How long the broker keeps this client's session (subscriptions, queued QoS 1) while it is away."""
    will: Will | None = None
    manual_ack: bool = False
    receive_maximum: int = 100
    """Most unacknowledged QoS 1 messages the broker may have in flight to us (back-pressure; with
    ``manual_ack`` the client also enforces it by not reading past it)."""
    max_inflight: int = 100
    connect_timeout_s: float = 10.0
    protocol_version: MqttVersion = "5"
    """MQTT 5, or 3.1.1 for a broker without MQTT 5 (see the module docstring for what changes)."""

    def __post_init__(self) -> None:
        if not 1 <= self.receive_maximum <= 65535:
            raise ValueError(f"receive_maximum must be 1..65535 (MQTT 5), got {self.receive_maximum}")

    @property
    def persistent_session(self) -> bool:
        """Whether the broker keeps this client's session after a disconnect (3.1.1: clean_session=False)."""
        return not self.clean_start and self.session_expiry_s > 0

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MqttSettings:
        """``mqtt://host:1883`` or ``mqtts://host:8883``; ``mqtts`` requires ``tls=TlsFiles(...)``."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"broker URL {url!r} must start with mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"broker URL {url!r} has no host")
        if parts.scheme == "mqtts" and options.get("tls") is None:
            raise ValueError(f"broker URL {url!r} is mqtts:// but no TLS files were given")
        if parts.scheme == "mqtt" and options.get("tls") is not None:
            raise ValueError(f"broker URL {url!r} is plain mqtt:// but TLS files were given; use mqtts://")
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        return cls(host=parts.hostname, port=port, **options)


@dataclass(slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    _client: MqttClient = field(repr=False)
    _acked: bool = field(default=False, repr=False)

    def ack(self) -> None:
        """Send the PUBACK (manual-ack clients only); idempotent. After a disconnect it is a no-op:
        the broker redelivers the message to the next session."""
        if self._acked or self.qos == 0:
            return
        self._acked = True
        self._client._ack(self.mid, self.qos)


class _NoTopicCallbacks:
    """Stands in for paho's per-topic callback matcher: this adapter registers no per-topic callback, so
    every message goes to ``on_message``, and looking one up allocates nothing."""

    def iter_match(self, topic: str) -> Iterator[Any]:
        return iter(())

    def __setitem__(self, topic: str, callback: object) -> None:
        raise TypeError("MqttClient delivers every message through messages(); no per-topic callbacks")


_NO_TOPIC_CALLBACKS: Final = _NoTopicCallbacks()

_SUCCESS_PUBACK = frozenset({0x00, 0x10})
_PACKETS_PER_READ = 256
_RECEIVE_BUFFER = 64 * 1024
"""Bytes taken off the socket in one recv(); paho's reads of a packet are served from them."""


class MqttClient:
    """One MQTT 5 (or 3.1.1) connection. ``async with MqttClient(settings) as client: ...``."""

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings
        self._v5 = settings.protocol_version == "5"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
            clean_session=None if self._v5 else not settings.persistent_session,
            manual_ack=settings.manual_ack,
        )
        self._connected: asyncio.Future[None] | None = None
        self._closed: asyncio.Event | None = None
        self._close_reason: MqttError | None = None
        self._publishes: dict[int, tuple[asyncio.Future[None], str]] = {}
        self._early_publish_results: dict[int, ReasonCode] = {}
        self._unawaited_mids: set[int] = set()
        """QoS 0 publishes whose on_publish has not come yet (nothing waits for it; it must not be kept)."""
        self._subscribes: dict[int, tuple[asyncio.Future[list[ReasonCode]], list[str]]] = {}
        self._messages: asyncio.Queue[Message | None] = asyncio.Queue()
        self._misc_task: asyncio.Task[None] | None = None
        self._fd: int | None = None
        self._readable: select.poll | None = None
        """Asks whether the socket has more to read without blocking (poll, not select: select() fails
        for a descriptor at or above FD_SETSIZE, 1024, which a process with many connections reaches)."""
        self._inbox = b""
        self._inbox_at = 0
        """Received bytes that paho has not read yet begin at ``_inbox[_inbox_at]``."""
        self._writer_fd: int | None = None
        """The socket while the loop watches it for writing (it was full)."""
        self._write_scheduled = False
        self._unacked = 0
        """QoS 1/2 messages received and not yet acknowledged (manual acknowledgement only)."""
        self._reading_paused = False
        self._loop_thread: int | None = None
        self.session_present = False
        self._configure()

    # -- lifetime -------------------------------------------------------------------------------------

    def _configure(self) -> None:
        client, settings = self._paho, self.settings
        if settings.tls is not None:
            client.tls_set_context(settings.tls.context())
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.will is not None:
            will = settings.will
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.max_inflight_messages_set(settings.max_inflight)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        # paho looks up per-topic callbacks (message_callback_add, which this adapter never uses) for
        # every message it receives. Its matcher builds a closure that refers to itself on each call: a
        # reference cycle of some six objects per message that only the cyclic garbage collector
        # frees: at a server worker's thousand messages a second, nine tenths of what it found
        # (docs/benchmarks.md, seventh round).
        client._on_message_filtered = _NO_TOPIC_CALLBACKS  # type: ignore[assignment]
        # paho reads a packet's fixed header a byte per call, each a recv() system call: three or four
        # per message. It reads through this instead, which takes what the socket holds in one call.
        client._sock_recv = self._receive  # type: ignore[method-assign]

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connected = self._loop.create_future()
        self._closed = asyncio.Event()
        settings = self.settings
        properties: Properties | None = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = settings.session_expiry_s
            properties.ReceiveMaximum = settings.receive_maximum
        try:
            async with asyncio.timeout(settings.connect_timeout_s):
                # paho's connect() opens the TCP socket and does the TLS handshake synchronously.
                await self._loop.run_in_executor(None, self._blocking_connect, properties)
                self._misc_task = asyncio.create_task(
                    self._misc_loop(), name=f"mqtt-misc-{settings.client_id}"
                )
                await self._connected
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            await self._teardown()
            raise ConnectFailed(f"cannot connect to {settings.host}:{settings.port}: {exc}") from exc
        except MqttError:
            await self._teardown()
            raise
        return self

    def _blocking_connect(self, properties: Properties | None) -> None:
        settings = self.settings
        if not self._v5:  # clean_session was given to paho.Client; 3.1.1 has no properties
            self._paho.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
            return
        self._paho.connect(
            settings.host,
            settings.port,
            keepalive=settings.keepalive_s,
            clean_start=settings.clean_start,
            properties=properties,
        )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._closed is not None and not self._closed.is_set():
            self._paho.disconnect()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self._closed.wait()
        await self._teardown()

    async def _teardown(self) -> None:
        if self._misc_task is not None:
            self._misc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc_task
            self._misc_task = None
        self._detach_socket()
        sock = self._paho.socket()
        if sock is not None:  # a connect that timed out or was refused: paho would leave it to the GC
            sock.close()
        if self._closed is not None and not self._closed.is_set():
            self._fail_pending(ConnectionLost("client closed"))
            self._closed.set()

    @property
    def is_connected(self) -> bool:
        connected = self._connected
        return (
            connected is not None
            and connected.done()
            and connected.exception() is None
            and self._closed is not None
            and not self._closed.is_set()
        )

    async def wait_closed(self) -> MqttError:
        """Wait until the connection ends and return why."""
        assert self._closed is not None, "not entered"
        await self._closed.wait()
        return self._close_reason or ConnectionLost("closed")

    # -- operations -----------------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish; for QoS 1, return only after a PUBACK with a success reason code."""
        self._ensure_open()
        info = self._paho.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS and info.rc != paho.MQTT_ERR_QUEUE_SIZE:
            raise ConnectionLost(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        if qos == 0:
            if self._early_publish_results.pop(info.mid, None) is None:
                self._unawaited_mids.add(info.mid)
            return
        assert self._loop is not None
        early = self._early_publish_results.pop(info.mid, None)
        if early is not None:
            self._check_puback(early, topic)
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._publishes[info.mid] = (future, topic)
        self._read_for_response()
        try:
            await future
        finally:
            self._publishes.pop(info.mid, None)

    async def subscribe(self, *topic_filters: str, qos: int = 1) -> None:
        self._ensure_open()
        assert self._loop is not None
        # paho takes SubscribeOptions under MQTT 5 and a plain QoS under 3.1.1 (whose SUBACK 0x80 it reports
        # as a failure reason code, so the check below holds for both).
        if self._v5:
            options = SubscribeOptions(qos=qos)
            result, mid = self._paho.subscribe([(topic_filter, options) for topic_filter in topic_filters])
        else:
            result, mid = self._paho.subscribe([(topic_filter, qos) for topic_filter in topic_filters])
        if result != paho.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionLost(f"subscribe failed: {paho.error_string(result)}")
        future: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._subscribes[mid] = (future, list(topic_filters))
        self._read_for_response()
        try:
            codes = await future
        finally:
            self._subscribes.pop(mid, None)
        for topic_filter, code in zip(topic_filters, codes, strict=False):
            if code.is_failure:
                raise SubscribeRefused(
                    f"broker refused subscription to {topic_filter}: {code}",
                    reason_code=code.value,
                    topic_filter=topic_filter,
                )

    async def messages(self) -> AsyncIterator[Message]:
        """Incoming messages until the connection ends; then raises the reason it ended."""
        while True:
            message = await self._messages.get()
            if message is None:
                raise self._close_reason or ConnectionLost("connection closed")
            yield message

    def _ensure_open(self) -> None:
        if self._closed is None:
            raise MqttError("client used outside `async with`")
        if self._closed.is_set():
            raise self._close_reason or ConnectionLost("connection closed")

    def _ack(self, mid: int, qos: int) -> None:
        if self._closed is not None and not self._closed.is_set() and self.settings.manual_ack:
            self._paho.ack(mid, qos)
            self._unacked -= 1
            if self._reading_paused and self._unacked < self.settings.receive_maximum:
                self._resume_reading()

    @staticmethod
    def _check_puback(code: ReasonCode, topic: str) -> None:
        if code.value not in _SUCCESS_PUBACK:
            raise PublishRefused(
                f"broker refused publish to {topic}: {code} (0x{code.value:02x})",
                reason_code=code.value,
                topic=topic,
            )

    # -- paho callbacks (run inside the event loop) ---------------------------------------------------

    def _on_connect(
        self, _c: paho.Client, _u: Any, flags: Any, code: ReasonCode, _p: Properties | None
    ) -> None:
        assert self._connected is not None
        if self._connected.done():
            return
        if code.is_failure:
            self._connected.set_exception(
                ConnectFailed(f"broker refused the connection: {code}", reason_code=code.value)
            )
            return
        self.session_present = bool(getattr(flags, "session_present", False))
        self._connected.set_result(None)

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _flags: Any, code: ReasonCode, _p: Properties | None
    ) -> None:
        reason = ConnectionLost(f"connection lost: {code}", reason_code=code.value)
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(
                ConnectFailed(f"connection closed during connect: {code}", reason_code=code.value)
            )
        self._fail_pending(reason)
        if self._closed is not None:
            self._closed.set()

    def _fail_pending(self, reason: MqttError) -> None:
        if self._close_reason is None:
            self._close_reason = reason
        for future, _topic in list(self._publishes.values()):
            if not future.done():
                future.set_exception(reason)
        for subscribed, _filters in list(self._subscribes.values()):
            if not subscribed.done():
                subscribed.set_exception(reason)
        self._messages.put_nowait(None)

    def _on_publish(
        self, _c: paho.Client, _u: Any, mid: int, code: ReasonCode, _p: Properties | None
    ) -> None:
        if mid in self._unawaited_mids:
            self._unawaited_mids.discard(mid)
            return
        pending = self._publishes.get(mid)
        if pending is None:
            self._early_publish_results[mid] = code
            return
        future, topic = pending
        if future.done():
            return
        try:
            self._check_puback(code, topic)
        except PublishRefused as refused:
            future.set_exception(refused)
        else:
            future.set_result(None)

    def _on_subscribe(
        self, _c: paho.Client, _u: Any, mid: int, codes: list[ReasonCode], _p: Properties | None
    ) -> None:
        pending = self._subscribes.get(mid)
        if pending is not None and not pending[0].done():
            pending[0].set_result(codes)

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        if self.settings.manual_ack and message.qos > 0:
            self._unacked += 1
        self._messages.put_nowait(
            Message(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                retain=bool(message.retain),
                mid=message.mid,
                _client=self,
            )
        )

    # paho calls the socket callbacks from the executor thread during connect() and from the event loop
    # afterwards. Work is done at once on the loop's thread (paho closes the socket right after
    # on_socket_close returns) and handed to the loop otherwise.
    def _in_loop(self, callback: Callable[..., object], *args: Any) -> None:
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            callback(*args)
        else:
            self._loop.call_soon_threadsafe(callback, *args)

    def _on_socket_open(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._in_loop(self._attach_socket, sock.fileno())

    def _attach_socket(self, fd: int) -> None:
        assert self._loop is not None
        self._fd = fd
        self._readable = select.poll()
        self._readable.register(fd, select.POLLIN)
        self._loop.add_reader(fd, self._read_ready)

    def _receive(self, bufsize: int) -> bytes:
        """paho's socket read (``Client._sock_recv``), served from what one recv() took: up to
        ``bufsize`` bytes, b"" at the end of the stream, BlockingIOError when nothing is there."""
        data, at = self._inbox, self._inbox_at
        if at >= len(data):
            sock = self._paho.socket()
            if sock is None:
                raise ConnectionError("the socket is closed")
            try:
                data = self._fill(sock)
            except ssl.SSLWantReadError as err:
                raise BlockingIOError from err
            except ssl.SSLWantWriteError as err:
                self._paho._call_socket_register_write()
                raise BlockingIOError from err
            if not data:
                return data
            at = 0
        chunk = data[at : at + bufsize]
        self._inbox, self._inbox_at = data, at + len(chunk)
        return chunk

    def _fill(self, sock: Any) -> bytes:
        data: bytes = sock.recv(_RECEIVE_BUFFER)
        return data

    def _read_ready(self) -> None:
        """Read what the socket has: paho's loop_read() takes one packet per call (when nothing of its own
        is in flight), so a busy subscriber would otherwise get one message per event-loop turn.
        Bounded, so other tasks still run."""
        for _ in range(_PACKETS_PER_READ):
            if self._unacked >= self.settings.receive_maximum and not self._awaiting_response():
                self._pause_reading()  # loop_read() takes one packet: this is exact
                return
            if self._paho.loop_read() != paho.MQTT_ERR_SUCCESS:
                return
            if self._inbox_at < len(self._inbox):
                continue  # received and not read yet: poll() cannot see it
            sock = self._paho.socket()
            if sock is None:
                return
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                continue  # decrypted bytes wait in the TLS layer; poll() cannot see them
            if self._readable is None or not self._readable.poll(0):
                return
        # Bounded: the rest next turn. Bytes in the socket wake the loop again; bytes already taken off
        # it (or decrypted by TLS) would not.
        sock = self._paho.socket()
        if self._loop is not None and (
            self._inbox_at < len(self._inbox) or (isinstance(sock, ssl.SSLSocket) and sock.pending())
        ):
            self._loop.call_soon(self._read_ready)

    def _awaiting_response(self) -> bool:
        """Whether a SUBACK or PUBACK is awaited: it can only be read after the messages before it."""
        return bool(self._subscribes or self._publishes)

    def _read_for_response(self) -> None:
        """Read on past the receive maximum until the awaited response is in. A broker hands a
        persistent session's queued messages over right after CONNACK, before the SUBACK of a
        re-subscription; with reading paused at the receive maximum the SUBACK was never read, the
        consumer never started, nothing was acknowledged: ingest hung after every restart of a worker
        whose backlog exceeded its receive maximum. The excess is bounded by what the broker sent
        before the response (it sends no more until acknowledgements flow)."""
        if self._reading_paused:
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._reading_paused = True

    def _resume_reading(self) -> None:
        if self._reading_paused and self._fd is not None and self._loop is not None:
            self._reading_paused = False
            self._loop.add_reader(self._fd, self._read_ready)
            self._loop.call_soon(self._read_ready)  # bytes may wait in the TLS layer, unseen by poll()

    def _on_socket_close(self, _c: paho.Client, _u: Any, _sock: Any) -> None:
        self._in_loop(self._detach_socket)

    def _detach_socket(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd = None
        self._readable = None
        self._inbox, self._inbox_at = b"", 0
        self._writer_fd = None
        self._reading_paused = False

    def _on_socket_register_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._in_loop(self._register_write, sock.fileno())

    # paho asks for the socket to be watched for writing whenever it queues a packet. Watching it (an
    # epoll change to add, another to remove, a loop turn in between) cost more than the send itself for
    # a client publishing a message at a time; the queue is written at the end of this loop turn instead
    # (one write for everything queued meanwhile), and the socket is watched only when it is full.
    def _register_write(self, fd: int) -> None:
        assert self._loop is not None
        if (fd == self._fd or self._fd is None) and not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write_queued, fd)

    def _write_queued(self, fd: int) -> None:
        assert self._loop is not None
        self._write_scheduled = False
        if fd != self._fd and self._fd is not None:
            return  # that socket is gone
        self._paho.loop_write()
        if self._paho.want_write() and self._writer_fd is None:  # the socket took only part
            self._writer_fd = fd
            self._loop.add_writer(fd, self._paho.loop_write)

    def _on_socket_unregister_write(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self._in_loop(self._unregister_write, sock.fileno())

    def _unregister_write(self, _fd: int) -> None:
        assert self._loop is not None
        if self._writer_fd is not None:
            self._loop.remove_writer(self._writer_fd)
            self._writer_fd = None

    async def _misc_loop(self) -> None:
        while True:
            await asyncio.sleep(1)  # paho's keepalive / retry bookkeeping runs once a second
            if self._paho.loop_misc() == paho.MQTT_ERR_NO_CONN:
                return
