"""Ingest: one gateway message in, stored exactly once (or dead-lettered), an outcome out.

:meth:`Ingestor.ingest` is the whole job for one MQTT message and knows nothing about MQTT: the caller
(``server.ingest_mqtt``) acknowledges the message to the broker only after ``ingest`` returns, which is
after the transaction holding the message committed. :meth:`Ingestor.ingest_many` does the same for
several messages in one transaction (one commit for many, which is what throughput depends on).

For each message:

1. **Validate** with the wire contract (``decode_gateway_message``). Anything that fails — a topic that
   is not a gateway topic, a payload over the size limit, invalid JSON, a schema violation, a payload
   whose ``gateway_id`` is not the topic's, a message on a channel the server does not consume — is written
   to ``dead_letters`` with its reason, counted, logged, and returned as an outcome. It never raises.
2. **Dedup** (obs, score, event, cmd-ack): insert the ``message_id`` into ``received_messages`` with
   ``ON CONFLICT DO NOTHING`` in the same transaction as the content. A replay inserts nothing and stores
   nothing; two workers racing on one message serialise on the unique key and exactly one stores it.
3. **Sequence** (obs, score, event): under the gateway's row lock, advance its highest ``seq``; a jump
   records the skipped range in ``sequence_gaps``; a late arrival inside an open gap fills (shrinks or
   splits) it. Nothing waits for a gap: every message is stored when it arrives.
4. **Store** the content (observations, assessment, event, command acknowledgement), or for ``status``
   apply the session rule: a status from an older session than the stored one is ignored; a death of the
   current (or a newer) session marks the gateway offline; birth and heartbeat mark it online.

Database trouble is not the message's fault: lock timeouts, deadlocks and lost connections are retried
(``ingest.storage_attempts``), then :class:`~server.storage.errors.StorageUnavailable` is raised so the
caller does NOT acknowledge and the broker delivers the message again. A message the database rejects as
data (a constraint or value error) is dead-lettered as ``storage_rejected``, one that hits a bug in this
code as ``internal_error`` (with the traceback in the log), so one bad message never blocks the rest.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from typing import Any, Final, Literal, TypeVar

from sqlalchemy.exc import DataError, DBAPIError, DisconnectionError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent.errors import ProtocolError
from edge_agent.protocol import (
    Assessment,
    CommandAck,
    Event,
    GatewayChannel,
    GatewayStatus,
    GatewayTopic,
    ObservationBatch,
    SequencedMessage,
    WireModel,
    decode_gateway_message,
    gateway_filter,
    parse_gateway_topic,
)
from server.settings import IngestSettings
from server.storage import repository
from server.storage.errors import StorageUnavailable
from server.storage.repository import GatewayRow, SeqRange

logger = logging.getLogger(__name__)
T = TypeVar("T")

MAX_MESSAGES_PER_TRANSACTION: Final = 500
"""ingest_many splits longer lists (bulk statements stay far below the drivers' parameter limits)."""

INGEST_CHANNELS: Final = (
    GatewayChannel.STATUS,
    GatewayChannel.OBS,
    GatewayChannel.SCORE,
    GatewayChannel.EVENT,
    GatewayChannel.CMD_ACK,
)
"""The channels the server consumes (``cmd`` is what it publishes)."""


def subscription_filters(share_group: str | None) -> list[str]:
    """``$share/<group>/wardwatch/v1/gw/+/<channel>`` for each consumed channel (plain without a group)."""
    prefix = f"$share/{share_group}/" if share_group else ""
    return [prefix + gateway_filter(channel) for channel in INGEST_CHANNELS]


class DeadLetterReason(StrEnum):
    BAD_TOPIC = "bad_topic"
    """Not ``wardwatch/v1/gw/<valid id>/<channel>``."""
    UNEXPECTED_CHANNEL = "unexpected_channel"
    """A channel the server publishes rather than consumes (``cmd``)."""
    OVERSIZE = "oversize"
    INVALID_JSON = "invalid_json"
    SCHEMA_VIOLATION = "schema_violation"
    GATEWAY_MISMATCH = "gateway_mismatch"
    """The payload's ``gateway_id`` is not the gateway in the topic (a gateway speaking for another)."""
    UNKNOWN_COMMAND = "unknown_command"
    """A command acknowledgement for a command this server never sent to that gateway."""
    STORAGE_REJECTED = "storage_rejected"
    """Valid by the contract but refused by the database (a constraint or value error)."""
    INTERNAL_ERROR = "internal_error"
    """Storing it hit a bug in the server (logged with its traceback); kept here to replay after a fix."""


class OutcomeKind(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    """Already stored (a replay); nothing written."""
    STALE = "stale"
    """A status older than the gateway's current state (older session, or superseded); ignored."""
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True, kw_only=True)
class IngestOutcome:
    kind: OutcomeKind
    topic: str
    received_at: datetime
    gateway_id: str | None = None
    channel: GatewayChannel | None = None
    message: WireModel | None = None
    """The decoded message (None for dead letters). STORED outcomes feed the escalation engine."""
    reason: DeadLetterReason | None = None
    detail: str = ""
    gap_opened: SeqRange | None = None
    gap_filled: bool = False
    connectivity: Literal["online", "offline"] | None = None
    """Set when a status changed whether the gateway is online."""
    probe_watch: bool = False
    """For a stored message: the gateway's ``probe_watch`` when its row was locked (the escalation
    policy follows a probe that is off on one of its devices)."""


@dataclass(slots=True)
class IngestCounters:
    """Monotonic counters since start-up, for /metrics."""

    received: int = 0
    stored: Counter[str] = field(default_factory=Counter)
    """By channel."""
    observations_stored: int = 0
    duplicates: int = 0
    stale_statuses: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    """By reason."""
    gaps_opened: int = 0
    missing_messages: int = 0
    """Sequence numbers reported missing by opened gaps."""
    gaps_filled: int = 0
    """Late messages that filled a number in an open gap."""
    out_of_order: int = 0
    storage_retries: int = 0
    storage_failures: int = 0

    def snapshot(self) -> dict[str, int]:
        """Flat name -> value, e.g. ``dead_letters.invalid_json``; every reason and channel present."""
        values = {
            "received": self.received,
            "observations_stored": self.observations_stored,
            "duplicates": self.duplicates,
            "stale_statuses": self.stale_statuses,
            "gaps_opened": self.gaps_opened,
            "missing_messages": self.missing_messages,
            "gaps_filled": self.gaps_filled,
            "out_of_order": self.out_of_order,
            "storage_retries": self.storage_retries,
            "storage_failures": self.storage_failures,
        }
        for channel in INGEST_CHANNELS:
            values[f"stored.{channel.value}"] = self.stored[channel.value]
        for reason in DeadLetterReason:
            values[f"dead_letters.{reason.value}"] = self.dead_letters[reason.value]
        return values


class _Rejected(Exception):
    """The message cannot be stored for this reason: dead-letter it (raised inside a transaction, it
    rolls the transaction back first)."""

    def __init__(self, reason: DeadLetterReason, detail: str, gateway_id: str | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.gateway_id = gateway_id


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A message that passed validation, with its place in the batch."""

    index: int
    topic: str
    payload: bytes
    where: GatewayTopic
    message: WireModel


def _outcome(item: _Accepted, received_at: datetime, kind: OutcomeKind, **extra: Any) -> IngestOutcome:
    return IngestOutcome(
        kind=kind,
        topic=item.topic,
        received_at=received_at,
        gateway_id=item.where.gateway_id,
        channel=item.where.channel,
        message=item.message,
        **extra,
    )


_MISMATCH_PROBLEMS: Final = frozenset({"gateway_id", "body.command"})


def _classify(error: ProtocolError) -> DeadLetterReason:
    if any(where == "(payload)" and why.startswith("Invalid JSON") for where, why in error.problems):
        return DeadLetterReason.INVALID_JSON
    if error.problems and all(
        where in _MISMATCH_PROBLEMS and why.startswith("must equal") for where, why in error.problems
    ):
        return DeadLetterReason.GATEWAY_MISMATCH
    return DeadLetterReason.SCHEMA_VIOLATION


def _refused_as_data(error: DBAPIError) -> bool:
    """The database refused the values (SQLSTATE class 22 data exception or 23 integrity violation)."""
    code = getattr(error.orig, "sqlstate", None)
    return isinstance(code, str) and code[:2] in ("22", "23")


def _storage_trouble(error: BaseException) -> bool:
    """Errors of the database rather than of the message: locks, deadlocks, serialization failures,
    lost or refused connections, an exhausted pool, a missing schema. Worth retrying; never the
    message's fault."""
    if isinstance(error, IntegrityError | DataError):
        return False
    return isinstance(error, DBAPIError | PoolTimeoutError | DisconnectionError | OSError | TimeoutError)


def _storable_text(text: str) -> str:
    """Text a database column accepts: no NUL (PostgreSQL refuses it), no lone surrogates."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


CANCEL_GRACE_S: Final = 30.0


async def _to_the_end(transaction: Coroutine[Any, Any, T]) -> T:
    """Await a transaction; if the caller is cancelled meanwhile, let it commit or roll back first.

    A transaction cut off mid-statement leaves its connection to be invalidated, and on SQLite a
    connection that is not closed keeps the database's write lock: every other writer then waited out
    its busy timeout (seen when a worker stopped: the escalation engine's writes failed for 10-17 s). A
    transaction that ends anyway is harmless: its messages were not acknowledged, so they come again and
    are recognised as duplicates. A transaction that has not ended within ``CANCEL_GRACE_S`` (a lock wait
    on a busy database) is cancelled after all."""
    task = asyncio.ensure_future(transaction)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task], timeout=CANCEL_GRACE_S)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: how it ended no longer matters to a cancelled caller
        task.cancel()
        raise


def utc_now() -> datetime:
    return datetime.now(UTC)


class Ingestor:
    """Stores gateway messages. Safe to share between tasks; several processes may run one each."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        settings: IngestSettings | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
        retry_delay_s: float = 0.05,
    ) -> None:
        self._sessions = sessions
        self.settings = settings or IngestSettings()
        self._clock = clock
        self._retry_delay_s = retry_delay_s
        self.counters = IngestCounters()

    async def ingest(self, topic: str, payload: bytes, received_at: datetime | None = None) -> IngestOutcome:
        """Validate, dedup and store one message; return what happened.

        Never raises for a bad message. Raises StorageUnavailable when the database could not be used
        (do not acknowledge the message then)."""
        (outcome,) = await self.ingest_many([(topic, payload)], received_at)
        return outcome

    async def ingest_many(
        self, messages: Sequence[tuple[str, bytes]], received_at: datetime | None = None
    ) -> list[IngestOutcome]:
        """Like :meth:`ingest` for several ``(topic, payload)`` messages, stored in ONE transaction (one
        commit, one fsync), with outcomes in the order given.

        The effect is that of ingesting them one by one in that order (per gateway; different gateways'
        messages are stored gateway by gateway so that concurrent workers lock gateways in the same
        order). If the database rejects any of them, the others are stored one by one and only that one
        is dead-lettered. StorageUnavailable means none of them may be acknowledged."""
        received_at = received_at if received_at is not None else self._clock()
        results: list[IngestOutcome | None] = [None] * len(messages)
        accepted: list[_Accepted] = []
        for index, (topic, payload) in enumerate(messages):
            self.counters.received += 1
            verdict = self._validate(topic, payload)
            if isinstance(verdict, _Rejected):
                results[index] = await self._dead_letter(
                    topic, verdict.gateway_id, payload, verdict.reason, verdict.detail, received_at
                )
            else:
                where, message = verdict
                accepted.append(_Accepted(index, topic, payload, where, message))
        for start in range(0, len(accepted), MAX_MESSAGES_PER_TRANSACTION):
            chunk = accepted[start : start + MAX_MESSAGES_PER_TRANSACTION]
            if len(chunk) > 1:
                ordered = sorted(chunk, key=lambda item: item.where.gateway_id)
                try:
                    outcomes = await self._transaction(
                        f"{len(ordered)} messages",
                        partial(self._apply_all, items=ordered, received_at=received_at),
                    )
                except _Rejected as rejected:
                    logger.info("%s in a batch; storing its messages one by one", rejected.reason.value)
                else:
                    for item, outcome in zip(ordered, outcomes, strict=True):
                        results[item.index] = outcome
                        self._count(outcome)
                    continue
            for item in chunk:
                results[item.index] = await self._store_one(item, received_at)
        done = [outcome for outcome in results if outcome is not None]
        assert len(done) == len(messages)
        return done

    async def _store_one(self, item: _Accepted, received_at: datetime) -> IngestOutcome:
        try:
            outcome = await self._transaction(
                f"a message from {item.where.gateway_id}", partial(self._apply_item, item, received_at)
            )
        except _Rejected as rejected:
            outcome = await self._dead_letter(
                item.topic,
                item.where.gateway_id,
                item.payload,
                rejected.reason,
                rejected.detail,
                received_at,
            )
        else:
            self._count(outcome)
        return outcome

    def _validate(self, topic: str, payload: bytes) -> tuple[GatewayTopic, WireModel] | _Rejected:
        try:
            where = parse_gateway_topic(topic)
        except ProtocolError as exc:
            return _Rejected(DeadLetterReason.BAD_TOPIC, str(exc))
        if where.channel not in INGEST_CHANNELS:
            detail = f"the server does not consume the {where.channel.value} channel"
            return _Rejected(DeadLetterReason.UNEXPECTED_CHANNEL, detail, where.gateway_id)
        limit = self.settings.max_payload_bytes
        if len(payload) > limit:
            detail = f"payload is {len(payload)} bytes; the limit is {limit}"
            return _Rejected(DeadLetterReason.OVERSIZE, detail, where.gateway_id)
        try:
            return decode_gateway_message(topic, payload)
        except ProtocolError as exc:
            return _Rejected(_classify(exc), str(exc), where.gateway_id)
        except Exception as exc:  # a decoder bug must not stop ingest (the fuzzer found one: OverflowError)
            logger.exception("decoding a message on %.200r failed on a server bug", topic)
            return _Rejected(
                DeadLetterReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", where.gateway_id
            )

    # -- transactions ---------------------------------------------------------------------------------

    async def _transaction(self, label: str, apply: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``apply`` in a transaction, retrying database trouble; raise _Rejected for what the
        database refuses as data or what fails on a server bug, StorageUnavailable when out of attempts."""
        attempts = self.settings.storage_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await _to_the_end(self._attempt(apply))
            except _Rejected:
                raise
            except (IntegrityError, DataError) as exc:
                raise _Rejected(DeadLetterReason.STORAGE_REJECTED, f"database refused: {exc.orig}") from exc
            except Exception as exc:
                if isinstance(exc, DBAPIError) and _refused_as_data(exc):
                    # e.g. asyncpg's "invalid byte sequence" (22021) arrives as a plain DBAPIError:
                    # retrying it would make the message a poison message that blocks ingest.
                    raise _Rejected(
                        DeadLetterReason.STORAGE_REJECTED, f"database refused: {exc.orig}"
                    ) from exc
                if not _storage_trouble(exc):
                    logger.exception("storing %s failed on a server bug", label)
                    raise _Rejected(DeadLetterReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}") from exc
                if attempt == attempts:
                    self.counters.storage_failures += 1
                    raise StorageUnavailable(
                        f"storing {label} failed {attempts} times: {exc}", attempts=attempts
                    ) from exc
                self.counters.storage_retries += 1
                logger.warning(
                    "storing %s failed (attempt %d of %d), retrying: %s", label, attempt, attempts, exc
                )
                await asyncio.sleep(self._retry_delay_s * 2 ** (attempt - 1) * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, apply: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async with self._sessions() as session, session.begin():
            return await apply(session)

    async def _apply_all(
        self, session: AsyncSession, items: list[_Accepted], received_at: datetime
    ) -> list[IngestOutcome]:
        """Store ``items`` in this transaction; outcomes in the same order.

        obs, score and event messages are written in bulk (one statement per table for the whole
        batch); statuses afterwards, all of the batch's in one statement (a thousand gateways' heartbeats
        are tens a second), and command acknowledgements, which are rare, one at a time."""
        # Locks are always taken in one order: gateways (by id), then message ids, then patients. So
        # workers storing overlapping batches wait for each other instead of deadlocking.
        outcomes: dict[int, IngestOutcome] = {}
        first_copy: dict[uuid.UUID, _Accepted] = {}  # obs, score and event messages by id
        for item in items:
            message = item.message
            if not isinstance(message, SequencedMessage):
                continue
            if message.message_id in first_copy:  # the same message twice in one batch
                outcomes[item.index] = _outcome(item, received_at, OutcomeKind.DUPLICATE)
            else:
                first_copy[message.message_id] = item
        gateways, claimed_ids = await repository.lock_gateways_and_claim(
            session,
            (item.where.gateway_id for item in items),
            [
                {
                    "message_id": message_id,
                    "gateway_id": item.where.gateway_id,
                    "channel": item.where.channel.value,
                    "seq": item.message.seq,  # type: ignore[attr-defined]
                    "received_at": received_at,
                }
                for message_id, item in first_copy.items()
            ],
            received_at=received_at,
        )
        outcomes.update(await self._apply_sequenced(session, first_copy, claimed_ids, gateways, received_at))
        status_writes: dict[str, dict[str, object]] = {}  # gateway -> columns, written together below
        for item in items:
            if isinstance(item.message, GatewayStatus):
                outcomes[item.index] = _apply_status(item, item.message, gateways, status_writes, received_at)
            elif isinstance(item.message, CommandAck):
                outcomes[item.index] = await self._apply_ack(session, item, item.message, received_at)
        await repository.update_gateways(session, status_writes)
        return [outcomes[item.index] for item in items]

    async def _apply_item(
        self, item: _Accepted, received_at: datetime, session: AsyncSession
    ) -> IngestOutcome:
        (outcome,) = await self._apply_all(session, [item], received_at)
        return outcome

    async def _apply_sequenced(
        self,
        session: AsyncSession,
        first_copy: dict[uuid.UUID, _Accepted],
        claimed_ids: set[uuid.UUID],
        gateways: dict[str, GatewayRow],
        received_at: datetime,
    ) -> dict[int, IngestOutcome]:
        """Sequence-track and store the obs/score/event messages whose ids this transaction claimed
        (``first_copy``: one item per id; the others were stored before: duplicates)."""
        outcomes: dict[int, IngestOutcome] = {}
        claimed = [item for message_id, item in first_copy.items() if message_id in claimed_ids]
        for message_id, item in first_copy.items():
            if message_id not in claimed_ids:
                outcomes[item.index] = _outcome(item, received_at, OutcomeKind.DUPLICATE)
        if not claimed:
            return outcomes

        by_gateway: dict[str, list[_Accepted]] = {}
        for item in claimed:
            by_gateway.setdefault(item.where.gateway_id, []).append(item)
        results: dict[int, repository.SequenceResult] = {}
        new_highest: dict[str, int] = {}
        new_gaps: list[tuple[str, SeqRange]] = []
        for gateway_id, group in by_gateway.items():
            seqs = [item.message.seq for item in group]  # type: ignore[attr-defined]
            gateway = gateways[gateway_id]
            plan = repository.advance_sequence(gateway.highest_seq, seqs)
            if plan is not None:  # every number above the last: nothing to look up
                new_highest[gateway_id], skipped = plan
                new_gaps += [(gateway_id, gap) for gap in skipped]
                current = -1 if gateway.highest_seq is None else gateway.highest_seq
                for item, seq in zip(group, seqs, strict=True):
                    opened = SeqRange(current + 1, seq - 1) if seq > current + 1 else None
                    results[item.index] = repository.SequenceResult(highest_seq=seq, opened=opened)
                    current = seq
                continue
            for item, seq in zip(group, seqs, strict=True):  # a late number: fill its gap one by one
                result = await repository.track_sequence(session, gateway, seq, received_at=received_at)
                gateway = replace(gateway, highest_seq=result.highest_seq)
                results[item.index] = result

        reported_by: dict[str, str] = {}
        observations, assessments, events = [], [], []
        for item in claimed:
            message = item.message
            gateway_id = item.where.gateway_id
            if isinstance(message, ObservationBatch):
                observations.append(message)
                for reading in message.observations:
                    reported_by.setdefault(reading.patient_id, gateway_id)
            elif isinstance(message, Assessment):
                assessments.append(message)
                reported_by.setdefault(message.patient_id, gateway_id)
            elif isinstance(message, Event):
                events.append(message)
                patient = repository.event_patient(message)
                if patient is not None:
                    reported_by.setdefault(patient, gateway_id)
        await repository.write_content(
            session,
            highest=new_highest,
            gaps=new_gaps,
            reported_by=reported_by,
            observations=observations,
            assessments=assessments,
            events=events,
            received_at=received_at,
        )

        for item in claimed:
            sequence = results[item.index]
            outcomes[item.index] = _outcome(
                item,
                received_at,
                OutcomeKind.STORED,
                gap_opened=sequence.opened,
                gap_filled=sequence.filled,
                detail="out of order" if sequence.out_of_order else "",
                probe_watch=gateways[item.where.gateway_id].probe_watch,
            )
        return outcomes

    async def _apply_ack(
        self, session: AsyncSession, item: _Accepted, ack: CommandAck, received_at: datetime
    ) -> IngestOutcome:
        claimed = await repository.claim_message(
            session,
            message_id=ack.message_id,
            gateway_id=ack.gateway_id,
            channel=item.where.channel.value,
            seq=None,
            received_at=received_at,
        )
        if not claimed:
            return _outcome(item, received_at, OutcomeKind.DUPLICATE)
        applied = await repository.acknowledge_command(session, ack, received_at=received_at)
        if applied is None:
            raise _Rejected(
                DeadLetterReason.UNKNOWN_COMMAND,
                f"acknowledgement for command {ack.command_id}, which was never sent to {ack.gateway_id}",
            )
        if not applied:
            detail = f"command {ack.command_id} was already acknowledged"
            return _outcome(item, received_at, OutcomeKind.DUPLICATE, detail=detail)
        return _outcome(item, received_at, OutcomeKind.STORED)

    async def _dead_letter(
        self,
        topic: str,
        gateway_id: str | None,
        payload: bytes,
        reason: DeadLetterReason,
        detail: str,
        received_at: datetime,
    ) -> IngestOutcome:
        attempts = self.settings.storage_attempts
        for attempt in range(1, attempts + 1):
            try:
                async with self._sessions() as session, session.begin():
                    await repository.record_dead_letter(
                        session,
                        topic=_storable_text(topic),
                        gateway_id=gateway_id,
                        reason=reason.value,
                        detail=_storable_text(detail),
                        payload=payload,
                        keep_bytes=self.settings.dead_letter_payload_bytes,
                        received_at=received_at,
                    )
                break
            except Exception as exc:
                if not _storage_trouble(exc):
                    raise
                if attempt == attempts:
                    self.counters.storage_failures += 1
                    raise StorageUnavailable(
                        f"recording a dead letter failed {attempts} times: {exc}", attempts=attempts
                    ) from exc
                self.counters.storage_retries += 1
                await asyncio.sleep(self._retry_delay_s * 2 ** (attempt - 1) * (0.5 + random.random()))
        self.counters.dead_letters[reason.value] += 1
        logger.warning(
            "dead letter (%s) on topic %.200r from %s, %d bytes: %.500s",
            reason.value,
            topic,
            gateway_id or "unknown gateway",
            len(payload),
            detail,
        )
        return IngestOutcome(
            kind=OutcomeKind.DEAD_LETTER,
            topic=topic,
            received_at=received_at,
            gateway_id=gateway_id,
            reason=reason,
            detail=detail,
        )

    def _count(self, outcome: IngestOutcome) -> None:
        counters = self.counters
        if outcome.kind is OutcomeKind.DUPLICATE:
            counters.duplicates += 1
            return
        if outcome.kind is OutcomeKind.STALE:
            counters.stale_statuses += 1
            logger.info("ignored stale status from %s: %s", outcome.gateway_id, outcome.detail)
            return
        assert outcome.channel is not None
        counters.stored[outcome.channel.value] += 1
        if isinstance(outcome.message, ObservationBatch):
            counters.observations_stored += len(outcome.message.observations)
        if outcome.gap_opened is not None:
            counters.gaps_opened += 1
            counters.missing_messages += outcome.gap_opened.last - outcome.gap_opened.first + 1
            # INFO, not WARNING: with concurrent transactions and several workers a later message is
            # often stored first and its gap filled a moment later; what stays open is in sequence_gaps
            # and in /metrics (gaps_opened - gaps_filled).
            logger.info(
                "gateway %s: sequence numbers %s not yet received", outcome.gateway_id, outcome.gap_opened
            )
        if outcome.gap_filled:
            counters.gaps_filled += 1
        if outcome.detail == "out of order":
            counters.out_of_order += 1
        if outcome.connectivity is not None:
            logger.info("gateway %s is %s", outcome.gateway_id, outcome.connectivity)


def _apply_status(
    item: _Accepted,
    status: GatewayStatus,
    gateways: dict[str, GatewayRow],
    writes: dict[str, dict[str, object]],
    received_at: datetime,
) -> IngestOutcome:
    """Apply a status to its gateway, locked by this transaction: ``gateways`` holds the row as this
    transaction has left it so far (updated here, so a second status of the same gateway in the batch
    sees the first), and ``writes`` the columns to write for it (a later status's values over an earlier
    one's, as if each had been written in turn: a batch's heartbeats are one statement, not one each)."""
    gateway = gateways[status.gateway_id]
    stale = _stale_reason(gateway, status)
    if stale is not None:
        return _outcome(item, received_at, OutcomeKind.STALE, detail=stale)
    online = status.state != "death"
    values: dict[str, object] = {
        "online": online,
        "session": status.session,
        "status_state": status.state,
        "status_sent_at": status.sent_at,
        "status_received_at": received_at,
        "software_version": status.software_version,
        "heartbeat_interval_s": status.heartbeat_interval_s,
        "backlog": status.backlog,
        "oldest_unsent_age_s": status.oldest_unsent_age_s,
        "clock_synchronized": status.clock_synchronized,
        "devices": [device.model_dump(mode="json") for device in status.devices],
    }
    if online:
        values["offline_since"] = None
    elif gateway.online or gateway.status_state is None:
        values["offline_since"] = received_at
    writes.setdefault(status.gateway_id, {}).update(values)
    gateways[status.gateway_id] = replace(
        gateway,
        online=online,
        session=status.session,
        status_state=status.state,
        status_sent_at=status.sent_at,
    )
    connectivity: Literal["online", "offline"] | None = None
    if online != gateway.online or gateway.status_state is None:
        connectivity = "online" if online else "offline"
    return _outcome(item, received_at, OutcomeKind.STORED, connectivity=connectivity)


def _stale_reason(gateway: GatewayRow, status: GatewayStatus) -> str | None:
    """Why this status must not change the stored state, or None when it applies.

    Order of sessions first (a newer session always wins; an older one never does). Within the current
    session a death is final, and a birth or heartbeat applies only if sent after the stored one (with
    several workers, messages of one gateway can be stored out of order)."""
    if gateway.session is None or status.session > gateway.session:
        return None
    if status.session < gateway.session:
        return f"session {status.session} is older than the current session {gateway.session}"
    if gateway.status_state == "death":
        return f"session {status.session} already ended with a death"
    if status.state == "death":
        return None
    if gateway.status_sent_at is not None and status.sent_at <= gateway.status_sent_at:
        return f"{status.state} sent at {status.sent_at.isoformat()} is not newer than the stored status"
    return None
