"""The MQTT uplink: drains the outbox to the broker, announces the gateway, receives commands.

Each connection attempt (forever, with capped jittered backoff between them)::

    session = outbox.next_session()          stored before use, so it only ever increases
    CONNECT (clean_start=False, will = retained death for this session)
    publish retained birth, subscribe …/cmd/+
    TaskGroup: drain   resend what is not confirmed, then form and publish new ones; a success PUBACK
                       marks a message published, the server's receipt deletes it (it is published
                       again when no receipt comes within receipt_timeout_s)
               beat    retained heartbeat every heartbeat interval
               commands  decode, apply, acknowledge on …/cmd-ack, then PUBACK the command; and
                         receipts on …/receipt, which delete the stored messages they name

A publish the broker refuses (PUBACK reason >= 0x80) leaves its message in the outbox; the refusal is
logged, counted, shown in the heartbeat (``last_error``) and retried after ``refused_retry_s``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from edge_agent.backoff import Backoff
from edge_agent.errors import ProtocolError
from edge_agent.mqtt import MqttClient, MqttError, MqttSettings, PublishRefused, Will
from edge_agent.outbox import FormedMessage, Outbox
from edge_agent.protocol import (
    Command,
    CommandAck,
    DeviceState,
    GatewayChannel,
    GatewayStatus,
    Receipt,
    decode,
    decode_gateway_message,
    encode,
    gateway_filter,
    gateway_topic,
    new_message_id,
)

log = logging.getLogger(__name__)

StatusState = Literal["birth", "heartbeat", "death"]
CommandHandler = Callable[[Command], Awaitable[tuple[bool, str]]]
"""Applies a command; returns (ok, detail) for the acknowledgement."""


@dataclass(frozen=True, slots=True)
class GatewayHealth:
    """What the heartbeat reports besides the outbox: device states and clock synchronisation."""

    devices: list[DeviceState] = field(default_factory=list)
    clock_synchronized: bool | None = None


@dataclass(slots=True)
class UplinkState:
    connected: bool = False
    session: int = 0
    down_since: float | None = None
    """Gateway time since which the uplink has been down (None while connected)."""
    published_messages: int = 0
    receipted_messages: int = 0
    refused_publishes: int = 0
    last_error: str | None = None


@dataclass(slots=True, kw_only=True)
class UplinkOptions:
    heartbeat_interval_s: float = 30.0
    batch_delay_s: float = 0.2
    """How long to let readings accumulate after the first one arrives before forming a batch."""
    window: int = 32
    """Messages published concurrently before waiting for their PUBACKs."""
    refused_retry_s: float = 30.0
    receipts: bool = True
    """Keep each message until the server's receipt (end to end), not only until the broker's PUBACK."""
    receipt_timeout_s: float = 60.0
    """Publish again a message whose receipt has not come this long after its PUBACK."""
    backoff: Backoff = field(default_factory=lambda: Backoff(initial_s=1, maximum_s=60))
    clock: Callable[[], float] = field(default=time.time)
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    """How the heartbeat waits its interval: on the same clock as ``clock`` (a simulated home running
    faster than real time passes its clock's sleep, so the server, on that clock too, sees beats on time)."""


class Uplink:
    def __init__(
        self,
        *,
        outbox: Outbox,
        gateway_id: str,
        software_version: str,
        connection: Callable[[Will], MqttSettings],
        commands: CommandHandler,
        health: Callable[[], GatewayHealth] = GatewayHealth,
        options: UplinkOptions | None = None,
    ) -> None:
        self.outbox = outbox
        self.gateway_id = gateway_id
        self.software_version = software_version
        self._connection = connection
        self._commands = commands
        self._health = health
        self.options = options or UplinkOptions()
        self.state = UplinkState(down_since=self.options.clock())
        self.connected_event = asyncio.Event()

    async def run(self) -> None:
        """Connect, work, reconnect: forever (until cancelled)."""
        while True:
            try:
                await self._one_connection()
            except Exception as exc:
                cause = _first_leaf(exc)
                if isinstance(cause, MqttError):
                    self.state.last_error = str(cause)
                    log.warning("uplink to the broker lost or refused: %s", cause)
                else:
                    # e.g. a full disk under the outbox: report, back off, retry; never stop the uplink.
                    self.state.last_error = f"uplink failed: {cause!r}"
                    log.error("uplink failed; retrying", exc_info=cause)
            finally:
                if self.state.connected:
                    self.state.down_since = self.options.clock()
                self.state.connected = False
                self.connected_event.clear()
            delay = self.options.backoff.next_delay()
            log.info("reconnecting to the broker in %.1f s", delay)
            await asyncio.sleep(delay)

    def _status(
        self, state: str, session: int, *, backlog: int = 0, oldest_age: float | None = None
    ) -> bytes:
        health = self._health()
        status = GatewayStatus(
            gateway_id=self.gateway_id,
            state=state,
            session=session,
            sent_at=datetime.fromtimestamp(self.options.clock(), UTC),
            software_version=self.software_version,
            heartbeat_interval_s=self.options.heartbeat_interval_s,
            backlog=backlog,
            oldest_unsent_age_s=oldest_age,
            devices=health.devices,
            clock_synchronized=health.clock_synchronized,
            last_error=self.state.last_error,
        )
        return encode(status)

    async def _one_connection(self) -> None:
        session = await self.outbox.next_session()
        status_topic = gateway_topic(self.gateway_id, GatewayChannel.STATUS)
        will = Will(topic=status_topic, payload=self._status("death", session), qos=1, retain=True)
        async with MqttClient(self._connection(will)) as client:
            self.state.connected = True
            self.state.session = session
            self.state.down_since = None
            await client.publish(status_topic, await self._heartbeat_payload("birth", session), retain=True)
            await client.subscribe(gateway_filter(GatewayChannel.CMD, gateway_id=self.gateway_id))
            if self.options.receipts:
                await client.subscribe(gateway_topic(self.gateway_id, GatewayChannel.RECEIPT))
            log.info(
                "uplink connected (session %d, broker session present: %s)", session, client.session_present
            )
            self.options.backoff.reset()
            self.connected_event.set()  # connected, announced and listening for commands
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._drain(client), name="uplink-drain")
                tasks.create_task(self._beat(client, session), name="uplink-heartbeat")
                tasks.create_task(self._serve_commands(client), name="uplink-commands")

    async def _heartbeat_payload(self, state: StatusState, session: int) -> bytes:
        backlog = await self.outbox.backlog()
        oldest = None
        if backlog.oldest_stored_at is not None:
            oldest = max(0.0, self.options.clock() - backlog.oldest_stored_at)
        return self._status(state, session, backlog=backlog.total, oldest_age=oldest)

    async def _beat(self, client: MqttClient, session: int) -> None:
        topic = gateway_topic(self.gateway_id, GatewayChannel.STATUS)
        interval, clock = self.options.heartbeat_interval_s, self.options.clock
        due = clock() + interval
        while True:
            # On a fixed schedule, so the time a beat takes to build and publish does not add up (the
            # server declares the gateway offline after 1.5 intervals without one).
            await self.options.sleep(max(0.0, due - clock()))
            await client.publish(topic, await self._heartbeat_payload("heartbeat", session), retain=True)
            due = max(due + interval, clock())  # after a long stall, one beat now rather than a burst

    async def _drain(self, client: MqttClient) -> None:
        options = self.options
        # A new connection first sends everything not yet confirmed, byte for byte: what was formed by an
        # earlier connection or process, and (with receipts) what a broker acknowledged but may have lost.
        pending = await self.outbox.formed() if options.receipts else await self.outbox.unpublished()
        # Overdue receipts are looked for whenever the outbox is idle, and at least every half timeout
        # while readings keep coming (a busy gateway must not starve its re-sends).
        next_overdue_check = options.clock() + options.receipt_timeout_s / 2
        while True:
            if pending and await self._publish_all(client, pending):
                await asyncio.sleep(options.refused_retry_s)
            pending = await self.outbox.unpublished() or await self.outbox.form(max_messages=options.window)
            if options.receipts and (not pending or options.clock() >= next_overdue_check):
                next_overdue_check = options.clock() + options.receipt_timeout_s / 2
                cutoff = options.clock() - options.receipt_timeout_s
                overdue = await self.outbox.unreceipted(published_before=cutoff)
                if overdue:  # what was just formed stays unpublished and goes out on the next turn
                    pending = overdue
                    log.info(
                        "no receipt for %d messages (seq %d..%d) within %.0f s: publishing them again",
                        len(pending),
                        pending[0].seq,
                        pending[-1].seq,
                        options.receipt_timeout_s,
                    )
            if pending:
                continue
            await self._idle(options.receipt_timeout_s / 2 if options.receipts else None)
            await asyncio.sleep(options.batch_delay_s)  # let a batch accumulate (time bound)

    async def _idle(self, at_most_s: float | None) -> None:
        """New items, or ``at_most_s`` on the options' clock passed (time to look for overdue receipts)."""
        if at_most_s is None:
            await self.outbox.wait_for_items()
            return
        waits = [
            asyncio.ensure_future(self.outbox.wait_for_items()),
            asyncio.ensure_future(self.options.sleep(at_most_s)),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def _publish_all(self, client: MqttClient, messages: list[FormedMessage]) -> int:
        """Publish with up to ``window`` in flight; forget the acknowledged ones. Returns refusals."""
        refused = 0
        for start in range(0, len(messages), self.options.window):
            chunk = messages[start : start + self.options.window]
            results = await asyncio.gather(
                *(client.publish(m.topic, m.payload, qos=1) for m in chunk), return_exceptions=True
            )
            delivered = [m.seq for m, result in zip(chunk, results, strict=True) if result is None]
            if self.options.receipts:
                await self.outbox.mark_published(delivered)
            else:
                await self.outbox.acknowledge(delivered)
            self.state.published_messages += len(delivered)
            for message, result in zip(chunk, results, strict=True):
                if isinstance(result, PublishRefused):
                    refused += 1
                    self.state.refused_publishes += 1
                    self.state.last_error = f"broker refused seq {message.seq} on {message.topic}: {result}"
                    log.error("%s; the message stays in the outbox", self.state.last_error)
                elif isinstance(result, BaseException):
                    raise result
        return refused

    async def _serve_commands(self, client: MqttClient) -> None:
        """Commands (applied, then acknowledged on cmd-ack) and the server's receipts."""
        ack_topic = gateway_topic(self.gateway_id, GatewayChannel.CMD_ACK)
        receipt_topic = gateway_topic(self.gateway_id, GatewayChannel.RECEIPT)
        async for message in client.messages():
            if message.topic == receipt_topic:
                await self._take_receipt(message.payload)
                message.ack()
                continue
            ack = self._acknowledgement(*await self._apply(message.topic, message.payload))
            await client.publish(ack_topic, encode(ack))
            message.ack()

    def _acknowledgement(self, command_id: uuid.UUID, ok: bool, detail: str) -> CommandAck:
        return CommandAck(
            message_id=new_message_id(),
            gateway_id=self.gateway_id,
            command_id=command_id,
            ok=ok,
            detail=detail.replace("\x00", "\\x00")[:500],  # the contract's text holds no NUL
            acked_at=datetime.fromtimestamp(self.options.clock(), UTC),
        )

    async def _take_receipt(self, payload: bytes) -> None:
        try:
            receipt = decode(Receipt, payload)
        except ProtocolError as exc:
            self.state.last_error = f"malformed receipt: {exc}"
            log.warning("malformed receipt ignored: %s", exc)
            return
        if receipt.gateway_id != self.gateway_id:
            log.warning("receipt for gateway %s ignored", receipt.gateway_id)
            return
        await self.outbox.acknowledge(receipt.seqs)
        self.state.receipted_messages += len(receipt.seqs)

    async def _apply(self, topic: str, payload: bytes) -> tuple[uuid.UUID, bool, str]:
        try:
            _, command = decode_gateway_message(topic, payload)
        except ProtocolError as exc:
            log.warning("malformed command on %s: %s", topic, exc)
            return _claimed_id(payload), False, f"rejected: {exc}"
        if not isinstance(command, Command):
            return _claimed_id(payload), False, "rejected: not a command"
        try:
            ok, detail = await self._commands(command)
        except Exception as exc:
            log.exception("command %s failed", command.message_id)
            return command.message_id, False, f"failed: {exc}"
        log.info("command %s (%s) -> %s: %s", command.message_id, command.body.command, ok, detail)
        return command.message_id, ok, detail


def _first_leaf(error: BaseException) -> BaseException:
    """The first real exception inside (possibly nested) exception groups from a TaskGroup."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


def _claimed_id(payload: bytes) -> uuid.UUID:
    """The message id a malformed command claims to have, so the server can match the refusal."""
    try:
        claimed = json.loads(payload).get("message_id")
        return uuid.UUID(str(claimed))
    except (ValueError, AttributeError, TypeError, RecursionError):  # RecursionError: deeply nested JSON
        return uuid.UUID(int=0)
