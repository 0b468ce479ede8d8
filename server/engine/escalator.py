"""The escalation engine: runs the pure policy (``server.escalation.decide``) against the database.

Inputs reach it three ways, and every one goes through :meth:`EscalationEngine.submit` or ``act``:

- ingest calls :meth:`EscalationEngine.handle_outcomes` after a transaction committed (the
  ``on_outcomes`` hook of ``server.ingest_mqtt.IngestConsumer``): stored assessments, gateway statuses,
  device events and observation batches become policy inputs, decided in order per subject and
  concurrently across subjects;
- clinicians act through the API (:meth:`acknowledge`, :meth:`escalate`, :meth:`resolve`,
  :meth:`snooze`), each by an account with a role; the policy decides whether that is allowed;
- the timer loop (:meth:`run_timers`) claims subjects whose next timer is due.

For each input, in ONE transaction: lock the subject's state row, ``decide``, write the new state (and
its next due time), mirror the alerts into ``alerts``, append every change to ``alert_events`` (the
audit log) and queue one delivery per sink. After the commit the delivery loop (:meth:`run_deliveries`)
publishes each AlertEvent to ``wardwatch/v1/cc/alerts`` (QoS 1) and POSTs it to every webhook, recording
the outcome, and the patient's ``PatientState`` is published, retained. The database is the source of
truth: a worker that dies after the commit leaves pending deliveries that another worker sends.

Exactly-once firing: a timer is part of a subject's state; the worker that holds the subject's row lock
fires it and stores the state in which it has fired, in the same transaction as the audit records. On
PostgreSQL other workers skip locked rows (``FOR UPDATE SKIP LOCKED``) and re-check ``next_due_at`` of
rows committed meanwhile; on SQLite one writer at a time (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent.protocol import (
    CC_ALERT_TOPIC,
    AlertEvent,
    Assessment,
    Command,
    CommandBody,
    Event,
    GatewayChannel,
    GatewayStatus,
    ObservationBatch,
    PatientState,
    cc_patient_topic,
    encode,
    gateway_topic,
    new_message_id,
)
from server.engine import store
from server.engine.broker_link import Publisher
from server.engine.patient_state import patient_states, patients_of_gateways
from server.engine.settings import EngineSettings, WebhookSettings
from server.engine.stream_lag import StreamLag
from server.engine.tables import AlertDelivery
from server.engine.webhook import HttpxTransport, WebhookTransport, headers
from server.escalation import (
    Acknowledge,
    ActionRefusedError,
    AlertChange,
    AlertNotOpenError,
    AssessmentReceived,
    ClinicianAction,
    Decision,
    Escalate,
    EscalationError,
    EscalationPolicy,
    EventReceived,
    ObservationsReceived,
    PolicyInput,
    Resolve,
    Role,
    Snooze,
    StatusReceived,
    Tick,
    decide,
    subject_of,
)
from server.escalation.technical import PROBE_FLAGS
from server.ingest import IngestOutcome, OutcomeKind
from server.storage import repository
from server.storage.models import Alert
from server.storage.models import Assessment as AssessmentRow
from server.storage.models import Gateway as GatewayRow

logger = logging.getLogger(__name__)

STORAGE_ATTEMPTS = 4

DELIVERIES_AT_ONCE = 8
"""Deliveries the delivery loop sends concurrently."""

IMMEDIATE_PUBLISH_TIMEOUT_S = 2.0
"""How long a decision waits for its alert events' PUBACK before leaving them to the delivery loop (a
broker outage must not hold up the decisions behind it)."""

KNOWN_SUBJECTS = 20_000
"""Subjects whose last written state a worker remembers for unlocked decisions (two per home)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def _unsaved(
    written: store.LockedSubject, current: store.LockedSubject, last: Decision | None
) -> store.QuietState | None:
    """The state that decisions after ``written`` (the row as stored) reached without saving it, if any."""
    if last is None or current.version == written.version:
        return None
    return store.QuietState(written, current.state, current.version, last.next_due_at)


def _flagged(batch: ObservationBatch) -> bool:
    """A live reading in the batch carries a probe flag (probe off, no finger ...)."""
    return any(PROBE_FLAGS.intersection(item.quality) for item in batch.observations if not item.historical)


def _failure(error: BaseException) -> str:
    """How a failed delivery is recorded (``alert_deliveries.last_error``)."""
    return f"{type(error).__name__}: {error}"[:2000]


def _retryable(error: BaseException) -> bool:
    """Lock timeouts, deadlocks, serialization failures and lost connections; not bad data."""
    return isinstance(error, DBAPIError) and not isinstance(error, IntegrityError | DataError)


@dataclass(slots=True)
class EngineCounters:
    """Monotonic counters since start-up, for /metrics."""

    inputs: int = 0
    inputs_deferred: int = 0
    """Inputs whose escalation hit database trouble and were queued for retry."""
    inputs_failed: int = 0
    """Inputs whose escalation failed on a bug (logged with the traceback)."""
    timer_errors: int = 0
    actions: int = 0
    actions_refused: int = 0
    timer_subjects_fired: int = 0
    alert_events: int = 0
    deliveries_sent: int = 0
    delivery_retries: int = 0
    deliveries_failed: int = 0
    patient_states_published: int = 0
    storage_retries: int = 0
    unlocked_decisions: int = 0
    """Gateway inputs decided on a remembered state and written in one statement (PostgreSQL)."""
    unlocked_conflicts: int = 0
    """Of those, the ones whose subject another decision had moved on: decided again under its lock."""
    max_timer_lateness_s: float = 0.0

    def snapshot(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in self.__slots__}


@dataclass(slots=True)
class _Pending:
    patients: set[str] = field(default_factory=set)
    gateways: set[str] = field(default_factory=set)


class LiveEvents(Protocol):
    """``server.api.events.Broadcaster``: fan-out of live changes to the API's event streams."""

    def publish(self, kind: str, data: Mapping[str, Any]) -> object: ...


class EscalationEngine:
    """One worker's escalation engine. Several processes may run one each against one PostgreSQL."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        policy: EscalationPolicy | None = None,
        publisher: Publisher | None = None,
        settings: EngineSettings | None = None,
        webhooks: Sequence[WebhookSettings] = (),
        webhook_transport: WebhookTransport | None = None,
        clock: Callable[[], datetime] = utc_now,
        worker_id: str = "worker",
        broadcaster: LiveEvents | None = None,
    ) -> None:
        self.sessions = sessions
        self.policy = policy or EscalationPolicy()
        self.publisher = publisher
        self.settings = settings or EngineSettings()
        self.webhooks = {hook.name: hook for hook in webhooks}
        if len(self.webhooks) != len(webhooks):
            raise ValueError("webhook names must be unique")
        self._webhook_transport = webhook_transport
        self._owned_transport: HttpxTransport | None = None
        self._clock = clock
        self.worker_id = worker_id
        self.broadcaster = broadcaster
        """In-process live events for the API's event stream (``server.api.events.Broadcaster``)."""
        self.counters = EngineCounters()
        self.stream_lag = StreamLag(clock)
        """How far behind the gateways' traffic this worker's ingest is (fed by ``handle_outcomes``):
        the policy postpones the timers that wait for news from a gateway by that much."""
        self._timer_wake = asyncio.Event()
        self._timer_wake_at: datetime | None = None
        """When the timer loop looks for due subjects next, while it sleeps (None while it looks): only a
        decision whose next timer is due before then wakes it. Nearly every decision sets a timer (a
        heartbeat moves its gateway's deadline), almost always a later one; waking for each made the loop
        query the database ~30 times a second at 1,000 homes."""
        self._delivery_wake = asyncio.Event()
        self._state_wake = asyncio.Event()
        self._pending = _Pending()
        self._deferred: deque[PolicyInput] = deque()
        self._deferred_wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._known: OrderedDict[str, store.LockedSubject] = OrderedDict()
        """Subject -> the state and version this worker last committed for it, most recently written last
        (at most KNOWN_SUBJECTS)."""
        bind = sessions.kw.get("bind")
        self.unlocked_decisions = getattr(getattr(bind, "dialect", None), "name", None) == "postgresql"
        """Decide gateway inputs on the remembered state and write each decision in ONE autocommitted
        statement guarded by the subject's version (:func:`store.save_unless_moved`): one round trip
        instead of four (BEGIN, the locking read, the write, COMMIT), each of which waits its turn in a
        busy worker's event loop, which is what an alert's latency is made of under load. A subject
        another decision has moved on (another worker, a timer) writes nothing and is decided again under
        its lock. PostgreSQL only: SQLite serialises every writer anyway."""
        self.changes_seen = asyncio.Condition()
        """Notified after every committed decision that changed an alert (tests wait on it)."""

    # -- inputs ---------------------------------------------------------------------------------------

    async def handle_outcome(self, outcome: IngestOutcome) -> None:
        """Ingest's hook, awaited after the message's transaction committed."""
        await self.handle_outcomes([outcome])

    async def handle_outcomes(self, outcomes: Sequence[IngestOutcome]) -> None:
        """Ingest's hook for the messages of one committed transaction, in their order.

        Inputs for one subject (a patient, a gateway) are decided one after another in that order;
        different subjects are decided concurrently, each in its own transaction (the subject's row lock
        keeps workers apart). Observation batches without a probe flag are looked at only when their
        gateway's policy state follows a probe that is off (``IngestOutcome.probe_watch``, read by ingest
        with the gateway's row): almost every batch needs no transaction at all."""
        self.stream_lag.observe(outcomes)
        stored = [o for o in outcomes if o.kind is OutcomeKind.STORED and o.message is not None]
        by_subject: dict[str, list[tuple[PolicyInput, str]]] = {}
        for outcome in stored:
            item = self._policy_input(outcome)
            if item is None:
                continue
            subject = subject_of(item)
            if subject is None:
                continue
            by_subject.setdefault(subject, []).append((item, outcome.topic))
        if not by_subject:
            return
        # The decisions run in a task of their own: if ingest is cancelled (shutdown) while they run,
        # they still complete (ingest has committed the messages; their redelivery would be duplicates
        # the engine never sees). drain() waits for these at shutdown.
        decisions = asyncio.create_task(
            self._decide_together(by_subject), name=f"escalate {len(by_subject)} subjects"
        )
        self._inflight.add(decisions)
        decisions.add_done_callback(self._inflight.discard)
        await asyncio.shield(decisions)

    async def _decide_together(self, by_subject: dict[str, list[tuple[PolicyInput, str]]]) -> None:
        """Decide the inputs of one ingest transaction in ONE transaction: the subjects locked with one
        statement (in subject order, so workers locking overlapping sets never deadlock), each subject's
        inputs decided and saved in order. A burst of a thousand assessments is then a few hundred
        statements and one commit rather than a thousand transactions.

        An input on which the pure policy fails is logged and skipped; the others go on. Database trouble
        retries the whole transaction and then defers every input (as :meth:`_submit_stored` does); a
        database refusal (a bug) falls back to one transaction per subject, which confines it to its
        subject."""
        if self.unlocked_decisions and len(by_subject) > 1:
            by_subject = await self._decide_unlocked_first(by_subject)
        if not by_subject:
            return
        if len(by_subject) == 1:
            ((_, items),) = by_subject.items()
            await self._submit_in_order(items)
            return
        for attempt in range(1, STORAGE_ATTEMPTS + 1):
            now = self._clock()
            try:
                async with self.sessions() as session, session.begin():
                    saved, next_due, failed, final = await self._apply_together(session, by_subject, now)
            except Exception as exc:
                if not _retryable(exc):
                    logger.warning(
                        "deciding %d subjects at once failed (%s); one by one", len(by_subject), exc
                    )
                    await asyncio.gather(*(self._submit_in_order(items) for items in by_subject.values()))
                    return
                if attempt == STORAGE_ATTEMPTS:
                    for items in by_subject.values():
                        for item, topic in items:
                            self._defer(item, topic, exc)
                    return
                self.counters.storage_retries += 1
                logger.warning(
                    "deciding %d subjects hit database trouble (attempt %d): %s",
                    len(by_subject),
                    attempt,
                    exc,
                )
                await asyncio.sleep(0.05 * 2**attempt * (0.5 + random.random()))
                continue
            self.counters.inputs += sum(len(items) for items in by_subject.values())
            self.counters.inputs_failed += failed
            for written in final:
                self._remember(written)
            await self._committed(saved, min(next_due) if next_due else None)
            self._state_wake.set()
            return

    async def _decide_unlocked_first(
        self, by_subject: dict[str, list[tuple[PolicyInput, str]]]
    ) -> dict[str, list[tuple[PolicyInput, str]]]:
        """Decide unlocked (:meth:`_decide_unlocked`, one statement each) the subjects with one input
        whose state this worker remembers: fewer round trips than one transaction for all as soon as
        they are most of the batch, as they are in steady operation. Returns the subjects left for the
        transaction (the others, and any whose unlocked decision could not be made)."""
        left: dict[str, list[tuple[PolicyInput, str]]] = {}
        for subject, items in by_subject.items():
            if len(items) == 1 and subject in self._known:
                item, topic = items[0]
                try:
                    changes = await self._decide_unlocked(subject, item)
                except Exception:  # not retryable: what _submit_stored does with it
                    self.counters.inputs += 1
                    self.counters.inputs_failed += 1
                    logger.exception("escalation of a message on %.200r failed on a server bug", topic)
                    continue
                if changes is not None:
                    self.counters.inputs += 1
                    self._state_wake.set()
                    continue
            left[subject] = items
        return left

    async def _apply_together(
        self, session: AsyncSession, by_subject: dict[str, list[tuple[PolicyInput, str]]], now: datetime
    ) -> tuple[list[store.SavedEvent], list[datetime], int, list[store.LockedSubject]]:
        """In the caller's transaction: the saved events, the next due times, the inputs that failed and
        each subject's state as written."""
        saved: list[store.SavedEvent] = []
        final: list[store.LockedSubject] = []
        next_due: list[datetime] = []
        failed = 0
        locked = await store.lock_subjects(session, list(by_subject), now=now)
        lag = self.stream_lag.current()
        quiet: list[store.QuietState] = []  # saved together at the end: one round trip for all
        for subject, current in locked.items():
            written, last = current, None
            for item, topic in by_subject[subject]:
                try:
                    decision = decide(current.state, item, now=now, policy=self.policy, stream_lag=lag)
                except Exception:
                    failed += 1
                    logger.exception("escalation of a message on %.200r failed on a server bug", topic)
                    continue
                if decision.changes:  # alert rows, audit and deliveries: saved now, in input order
                    if (earlier := _unsaved(written, current, last)) is not None:  # rare: quiet ones first
                        await store.save_states(session, [earlier], now=now)
                    saved += await self._save(session, current, decision, now)
                    written = store.LockedSubject(subject, decision.state, current.version + 1)
                if decision.next_due_at is not None:
                    next_due.append(decision.next_due_at)
                current, last = store.LockedSubject(subject, decision.state, current.version + 1), decision
            if (unsaved := _unsaved(written, current, last)) is not None:
                quiet.append(unsaved)
            final.append(current)
        await store.save_states(session, quiet, now=now)
        return saved, next_due, failed, final

    def _policy_input(self, outcome: IngestOutcome) -> PolicyInput | None:
        message = outcome.message
        if isinstance(message, Assessment):
            self._pending.patients.add(message.patient_id)
            return AssessmentReceived(assessment=message)
        if isinstance(message, GatewayStatus):
            if outcome.connectivity is not None:
                self._pending.gateways.add(message.gateway_id)
            return StatusReceived(status=message)
        if isinstance(message, Event):
            return EventReceived(event=message)
        if isinstance(message, ObservationBatch):
            if _flagged(message) or outcome.probe_watch:
                return ObservationsReceived(batch=message)
            return None  # cannot change anything: no transaction
        return None  # command acknowledgements do not concern the policy

    async def _submit_in_order(self, items: Sequence[tuple[PolicyInput, str]]) -> None:
        for item, topic in items:
            await self._submit_stored(item, topic)

    async def _submit_stored(self, item: PolicyInput, topic: str) -> None:
        """Submit an input whose message is stored; never raises (failures are deferred or logged)."""
        try:
            await self.submit(item)
        except Exception as exc:
            if not _retryable(exc):
                self.counters.inputs_failed += 1
                logger.exception("escalation of a message on %.200r failed on a server bug", topic)
                return
            self._defer(item, topic, exc)
        self._state_wake.set()

    def _defer(self, item: PolicyInput, topic: str, exc: Exception) -> None:
        """Stored but not yet escalated: keep it and retry until the database is back."""
        self.counters.inputs_deferred += 1
        self._deferred.append(item)
        self._deferred_wake.set()
        logger.error("database unavailable; escalation of a message on %.200r deferred: %s", topic, exc)

    async def drain(self, timeout_s: float = 10.0) -> int:
        """Wait (bounded) for decisions still running for stored messages; return how many were left."""
        if not self._inflight:
            return 0
        _, pending = await asyncio.wait(set(self._inflight), timeout=timeout_s)
        if pending:
            logger.error("%d escalation decisions still running at shutdown", len(pending))
        return len(pending)

    async def run_deferred(self) -> None:
        """Retry inputs whose escalation failed on database trouble, oldest first, until cancelled."""
        while True:
            await self._deferred_wake.wait()
            self._deferred_wake.clear()
            while self._deferred:
                item = self._deferred[0]
                try:
                    await self.submit(item)
                except Exception as exc:
                    if _retryable(exc):
                        logger.warning("deferred escalation still failing, retrying in 1 s: %s", exc)
                        await asyncio.sleep(1.0)
                        continue
                    self.counters.inputs_failed += 1
                    logger.exception("deferred escalation failed on a server bug; input dropped")
                self._deferred.popleft()

    async def submit(self, item: PolicyInput) -> list[AlertChange]:
        """Apply one gateway input (or a tick for its subject) and return the alert changes it made."""
        subject = subject_of(item)
        if subject is None:
            raise ValueError(f"{type(item).__name__} names no subject; use act() or fire_due()")
        self.counters.inputs += 1
        changes = await self._decide_unlocked(subject, item)
        if changes is not None:
            return changes
        return await self._decide(subject, item)

    async def act(self, action: ClinicianAction) -> list[AlertChange]:
        """A clinician's action on an alert. Raises AlertNotOpenError (unknown or resolved alert) or
        ActionRefusedError (role, state, priority or missing note); nothing changes then."""
        self.counters.actions += 1
        async with store.reading(self.sessions) as session:
            row = await session.get(Alert, action.alert_id)
        if row is None or row.state == "resolved":
            self.counters.actions_refused += 1
            raise AlertNotOpenError(action.alert_id)
        try:
            return await self._decide(store.policy_subject(row), action)
        except EscalationError:
            self.counters.actions_refused += 1
            raise

    async def acknowledge(
        self, alert_id: uuid.UUID, *, actor: str, role: Role, note: str | None = None
    ) -> list[AlertChange]:
        return await self.act(Acknowledge(alert_id=alert_id, actor=actor, role=role, note=note))

    async def escalate(
        self, alert_id: uuid.UUID, *, actor: str, role: Role, note: str | None = None
    ) -> list[AlertChange]:
        return await self.act(Escalate(alert_id=alert_id, actor=actor, role=role, note=note))

    async def resolve(self, alert_id: uuid.UUID, *, actor: str, role: Role, note: str) -> list[AlertChange]:
        return await self.act(Resolve(alert_id=alert_id, actor=actor, role=role, note=note))

    async def snooze(
        self, alert_id: uuid.UUID, *, actor: str, role: Role, duration_s: float, note: str | None = None
    ) -> list[AlertChange]:
        return await self.act(
            Snooze(alert_id=alert_id, actor=actor, role=role, duration_s=duration_s, note=note)
        )

    async def send_command(
        self, *, gateway_id: str, patient_id: str, body: CommandBody, issued_by: str
    ) -> Command:
        """Store a command (pending), publish it to the gateway's command topic (QoS 1), mark it sent.

        The gateway's acknowledgement arrives through ingest (``cmd-ack``) and updates the stored
        command. Raises the publisher's error when the broker is unreachable (the command stays pending)."""
        command = Command(
            message_id=new_message_id(),
            gateway_id=gateway_id,
            patient_id=patient_id,
            issued_at=self._clock(),
            issued_by=issued_by,
            body=body,
        )
        async with self.sessions() as session, session.begin():
            await repository.record_command(session, command)
        if self.publisher is None:
            raise RuntimeError("no broker connection configured: the command stays pending")
        topic = gateway_topic(gateway_id, GatewayChannel.CMD, body.command)
        await self.publisher.publish(topic, encode(command), qos=1)
        async with self.sessions() as session, session.begin():
            await repository.mark_command_sent(session, command.message_id, sent_at=self._clock())
        return command

    # -- the API's AlertActions protocol (server.api.actions) --------------------------------------------

    async def acknowledge_alert(self, alert_id: uuid.UUID, *, actor: ActingAccount, note: str | None) -> None:
        await self.acknowledge(alert_id, actor=actor.account, role=_policy_role(alert_id, actor), note=note)

    async def escalate_alert(self, alert_id: uuid.UUID, *, actor: ActingAccount, note: str | None) -> None:
        await self.escalate(alert_id, actor=actor.account, role=_policy_role(alert_id, actor), note=note)

    async def resolve_alert(self, alert_id: uuid.UUID, *, actor: ActingAccount, note: str) -> None:
        await self.resolve(alert_id, actor=actor.account, role=_policy_role(alert_id, actor), note=note)

    async def snooze_alert(
        self, alert_id: uuid.UUID, *, actor: ActingAccount, duration_s: float, note: str | None
    ) -> None:
        role = _policy_role(alert_id, actor)
        await self.snooze(alert_id, actor=actor.account, role=role, duration_s=duration_s, note=note)

    # -- the one transaction --------------------------------------------------------------------------

    async def _decide(self, subject: str, item: PolicyInput) -> list[AlertChange]:
        for attempt in range(1, STORAGE_ATTEMPTS + 1):
            now = self._clock()
            try:
                async with self.sessions() as session, session.begin():
                    locked = await store.lock_subject(session, subject, now=now)
                    decision = decide(
                        locked.state, item, now=now, policy=self.policy, stream_lag=self.stream_lag.current()
                    )
                    saved = await self._save(session, locked, decision, now)
            except Exception as exc:
                if not _retryable(exc) or attempt == STORAGE_ATTEMPTS:
                    raise
                self.counters.storage_retries += 1
                logger.warning(
                    "escalation of %s hit database trouble (attempt %d): %s", subject, attempt, exc
                )
                await asyncio.sleep(0.05 * 2**attempt * (0.5 + random.random()))
                continue
            self._remember(store.LockedSubject(subject, decision.state, locked.version + 1))
            await self._committed(saved, decision.next_due_at)
            return decision.changes
        raise AssertionError("unreachable")  # pragma: no cover

    async def _decide_unlocked(self, subject: str, item: PolicyInput) -> list[AlertChange] | None:
        """Decide ``item`` on the subject's remembered state and write it in one statement that applies
        only if the subject's row is still at that version (see ``unlocked_decisions``). None when this
        cannot be done (nothing remembered, a decision that needs a transaction, the row moved on,
        database trouble): the caller decides under the subject's lock, as if this had not been tried."""
        known = self._known.get(subject) if self.unlocked_decisions else None
        if known is None:
            return None
        now = self._clock()
        try:
            decision = decide(
                known.state, item, now=now, policy=self.policy, stream_lag=self.stream_lag.current()
            )
        except Exception:
            return None  # decided again on the locked state, where a real failure is reported
        if not store.writes_alone(known, decision):
            return None
        try:
            async with store.autocommit(self.sessions) as session:
                saved = await store.save_unless_moved(
                    session, known, decision, now=now, webhooks=list(self.webhooks),
                    worker_id=self.worker_id, mqtt_leased_until=self._lease(now),
                )  # fmt: skip
        except Exception as exc:
            if not _retryable(exc):
                raise
            return None  # the locked path retries, then defers
        if saved is None:
            self.counters.unlocked_conflicts += 1
            self._known.pop(subject, None)
            return None
        self.counters.unlocked_decisions += 1
        self._remember(store.LockedSubject(subject, decision.state, known.version + 1))
        await self._committed(saved, decision.next_due_at)
        return decision.changes

    def _remember(self, written: store.LockedSubject) -> None:
        """Keep a subject's committed state for unlocked decisions (never an older version over a newer
        one: concurrent decisions may report their commits out of order)."""
        if not self.unlocked_decisions:
            return
        current = self._known.get(written.subject)
        if current is not None and current.version >= written.version:
            return
        self._known[written.subject] = written
        self._known.move_to_end(written.subject)
        if len(self._known) > KNOWN_SUBJECTS:
            self._known.popitem(last=False)

    def _lease(self, now: datetime) -> datetime | None:
        """Until when a decision's cc-topic deliveries are leased for publishing right after its commit."""
        if self.publisher is None:
            return None
        return now + timedelta(seconds=self.settings.delivery_lease_s)

    async def _save(
        self, session: AsyncSession, locked: store.LockedSubject, decision: Decision, now: datetime
    ) -> list[store.SavedEvent]:
        leased = self._lease(now)
        return await store.save_decision(
            session,
            locked,
            decision,
            now=now,
            webhooks=list(self.webhooks),
            worker_id=self.worker_id,
            mqtt_leased_until=leased,
        )

    async def _committed(self, saved: Sequence[store.SavedEvent], next_due_at: datetime | None) -> None:
        if next_due_at is not None and (self._timer_wake_at is None or next_due_at < self._timer_wake_at):
            self._timer_wake.set()
        if not saved:
            return
        changes = [entry.change for entry in saved]
        if self.broadcaster is not None:
            for entry in saved:
                self.broadcaster.publish("alert", entry.event.model_dump(mode="json"))
        self.counters.alert_events += len(changes)
        for change in changes:
            if change.due_at is not None:
                late = (change.at - change.due_at).total_seconds()
                self.counters.max_timer_lateness_s = max(self.counters.max_timer_lateness_s, late)
            logger.info(
                "alert %s %s: %s %s priority %s tier %d%s: %s",
                change.alert_id,
                change.action,
                change.category,
                change.condition,
                change.priority,
                change.tier,
                f" by {change.actor}" if change.actor else "",
                change.reason,
            )
            if change.patient_id is not None:
                self._pending.patients.add(change.patient_id)
        leased = [(e.mqtt_delivery_id, e.event) for e in saved if e.mqtt_delivery_id is not None]
        if leased:
            await self._deliver_now(leased)
        self._delivery_wake.set()
        self._state_wake.set()
        async with self.changes_seen:
            self.changes_seen.notify_all()

    async def _deliver_now(self, leased: Sequence[tuple[int, AlertEvent]]) -> None:
        """Publish just-committed events to the cc topic at once (concurrently, each waiting at most
        IMMEDIATE_PUBLISH_TIMEOUT_S for its PUBACK), then record the outcome in one transaction; the
        delivery loop would only find them on its next claim. A failed publish is handed to the loop
        (due now, its backoff after); if the recording fails, the loop sends the events again when their
        lease ends (at least once: consumers deduplicate by message_id). Never raises."""
        publisher = self.publisher
        assert publisher is not None

        async def publish(event: AlertEvent) -> str | None:
            try:
                async with asyncio.timeout(IMMEDIATE_PUBLISH_TIMEOUT_S):
                    await publisher.publish(CC_ALERT_TOPIC, encode(event), qos=1)
            except Exception as exc:  # recorded and retried by the loop, never fatal
                return _failure(exc)
            return None

        errors = await asyncio.gather(*(publish(event) for _, event in leased))
        now = self._clock()
        delivered = [row_id for (row_id, _), error in zip(leased, errors, strict=True) if error is None]
        try:
            async with self.sessions() as session, session.begin():
                if delivered:
                    await session.execute(
                        update(AlertDelivery)
                        .where(AlertDelivery.id.in_(delivered))
                        .values(
                            status="delivered",
                            delivered_at=now,
                            next_attempt_at=None,
                            attempts=AlertDelivery.attempts + 1,
                        )
                    )
                for (row_id, _), error in zip(leased, errors, strict=True):
                    if error is not None:
                        await session.execute(
                            update(AlertDelivery)
                            .where(AlertDelivery.id == row_id)
                            .values(
                                attempts=AlertDelivery.attempts + 1, next_attempt_at=now, last_error=error
                            )
                        )
        except Exception as exc:  # the decision is committed whatever happens here
            log = logger.warning if _retryable(exc) else logger.exception
            log(
                "recording %d alert deliveries failed; they are sent again after the lease: %s",
                len(leased),
                exc,
            )
            return
        self.counters.deliveries_sent += len(delivered)
        if len(delivered) < len(leased):
            self.counters.delivery_retries += len(leased) - len(delivered)
            logger.warning(
                "%d alert events not published at once; the delivery loop retries them",
                len(leased) - len(delivered),
            )
            self._delivery_wake.set()

    # -- timers ---------------------------------------------------------------------------------------

    async def fire_due(self) -> int:
        """Claim the subjects whose timers are due now and fire them; return how many were claimed."""
        now = self._clock()
        lag = self.stream_lag.current()
        changes: list[store.SavedEvent] = []
        next_due: list[datetime] = []
        claimed = 0
        fired: list[store.LockedSubject] = []
        for attempt in range(1, STORAGE_ATTEMPTS + 1):
            changes, next_due, fired = [], [], []
            try:
                async with self.sessions() as session, session.begin():
                    subjects = await store.claim_due(session, now, self.settings.timer_batch)
                    claimed = len(subjects)
                    for row in subjects:
                        subject = row.subject  # read now: a rolled-back savepoint expires the row
                        try:
                            async with session.begin_nested():
                                locked = store.load(row)
                                decision = decide(
                                    locked.state, Tick(), now=now, policy=self.policy, stream_lag=lag
                                )
                                saved = await self._save(session, locked, decision, now)
                            fired.append(store.LockedSubject(subject, decision.state, locked.version + 1))
                        except Exception as exc:
                            if _retryable(exc):
                                raise
                            # One subject's bug must not hold up every other timer: set it aside.
                            self.counters.timer_errors += 1
                            logger.exception("firing the timers of %s failed; retrying it in 60 s", subject)
                            await store.postpone(session, subject, now + timedelta(seconds=60))
                            continue
                        changes.extend(saved)
                        if decision.next_due_at is not None:
                            next_due.append(decision.next_due_at)
                break
            except Exception as exc:
                if not _retryable(exc) or attempt == STORAGE_ATTEMPTS:
                    raise
                self.counters.storage_retries += 1
                logger.warning("firing timers hit database trouble (attempt %d): %s", attempt, exc)
                await asyncio.sleep(0.05 * 2**attempt * (0.5 + random.random()))
        self.counters.timer_subjects_fired += claimed
        for written in fired:
            self._remember(written)
        await self._committed(changes, min(next_due) if next_due else None)
        return claimed

    async def run_timers(self) -> None:
        """Fire due timers until cancelled; sleep until the earliest due time (at most timer_poll_s, so a
        timer set by another worker is seen in time)."""
        poll = self.settings.timer_poll_s
        while True:
            self._timer_wake_at = None  # looking: every decision's timer counts until the next sleep
            self._timer_wake.clear()
            try:
                claimed = await self.fire_due()
                if claimed >= self.settings.timer_batch:
                    continue
                async with store.reading(self.sessions) as session:
                    earliest = await store.earliest_due(session)
            except Exception as exc:
                if not _retryable(exc):
                    raise
                logger.error("timer loop: database unavailable, retrying in %g s: %s", poll, exc)
                earliest = None
            delay = poll
            now = self._clock()
            if earliest is not None:
                delay = min(poll, max(0.0, (earliest - now).total_seconds()))
            self._timer_wake_at = now + timedelta(seconds=delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._timer_wake.wait()

    # -- deliveries -----------------------------------------------------------------------------------

    async def deliver_pending(self) -> int:
        """Send the deliveries that are due (leased, so no other worker sends them meanwhile); return how
        many were attempted."""
        now = self._clock()
        lease = timedelta(seconds=self.settings.delivery_lease_s)
        async with self.sessions() as session, session.begin():
            rows = (
                await session.scalars(
                    select(AlertDelivery)
                    .where(AlertDelivery.status == "pending", AlertDelivery.next_attempt_at <= now)
                    .order_by(AlertDelivery.id)
                    .limit(self.settings.delivery_batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for row in rows:
                row.attempts += 1
                row.next_attempt_at = now + lease
            claimed = [
                (row.id, row.sink, row.target, row.payload, row.attempts, row.message_id) for row in rows
            ]
        # Concurrently (a receiver slow to answer, up to its timeout, holds up only its own row), a few
        # at a time: each records its outcome in a transaction of its own, from the shared pool.
        slots = asyncio.Semaphore(DELIVERIES_AT_ONCE)

        async def deliver(row: tuple[int, str, str, dict[str, object], int, uuid.UUID]) -> None:
            async with slots:
                await self._deliver(*row)

        await asyncio.gather(*(deliver(row) for row in claimed))
        return len(claimed)

    async def _deliver(
        self,
        row_id: int,
        sink: str,
        target: str,
        payload: dict[str, object],
        attempts: int,
        message_id: uuid.UUID,
    ) -> None:
        error = await self._send(sink, target, payload, message_id)
        await self._record_delivery(row_id, sink, target, attempts, error)

    async def _send(
        self, sink: str, target: str, payload: dict[str, object], message_id: uuid.UUID
    ) -> str | None:
        """None when delivered, else why not."""
        body = encode(AlertEvent.model_validate(payload))
        try:
            if sink == store.MQTT_SINK:
                if self.publisher is None:
                    return "no broker connection configured"
                await self.publisher.publish(target, body, qos=1)
                return None
            hook = self.webhooks.get(target)
            if hook is None:
                return f"webhook {target!r} is no longer configured"
            transport = self._webhook_transport
            if transport is None:
                transport = self._owned_transport = self._owned_transport or HttpxTransport()
            stamp = int(self._clock().timestamp())
            signed = headers(hook.secret.get_secret_value(), stamp, body, str(message_id))
            await transport.post(hook.url, body, signed, timeout_s=hook.timeout_s)
            return None
        except Exception as exc:  # every failure of a sink is recorded and retried, never fatal
            return _failure(exc)

    async def _record_delivery(
        self, row_id: int, sink: str, target: str, attempts: int, error: str | None
    ) -> None:
        now = self._clock()
        values: dict[str, object]
        if error is None:
            values = {"status": "delivered", "delivered_at": now, "next_attempt_at": None}
            self.counters.deliveries_sent += 1
        else:
            hook = self.webhooks.get(target) if sink == store.WEBHOOK_SINK else None
            limit = hook.max_attempts if hook is not None else self.settings.mqtt_max_attempts
            if sink == store.WEBHOOK_SINK and hook is None:
                limit = attempts
            if attempts >= limit:
                values = {"status": "failed", "next_attempt_at": None, "last_error": error}
                self.counters.deliveries_failed += 1
                logger.error(
                    "delivery %d to %s %s failed for good after %d attempts: %s",
                    row_id,
                    sink,
                    target,
                    attempts,
                    error,
                )
            else:
                initial, maximum = (
                    (hook.backoff_initial_s, hook.backoff_max_s) if hook is not None else (0.5, 30.0)
                )
                ceiling = min(maximum, initial * 2 ** min(attempts - 1, 32))
                delay = ceiling / 2 + random.uniform(0, ceiling / 2)
                values = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": error}
                self.counters.delivery_retries += 1
                logger.warning(
                    "delivery %d to %s %s failed (attempt %d), retry in %.1f s: %s",
                    row_id,
                    sink,
                    target,
                    attempts,
                    delay,
                    error,
                )
        async with self.sessions() as session, session.begin():
            await session.execute(update(AlertDelivery).where(AlertDelivery.id == row_id).values(**values))

    async def run_deliveries(self) -> None:
        poll = self.settings.delivery_poll_s
        while True:
            self._delivery_wake.clear()
            try:
                attempted = await self.deliver_pending()
                if attempted >= self.settings.delivery_batch:
                    continue
            except Exception as exc:
                if not _retryable(exc):
                    raise
                logger.error("delivery loop: database unavailable, retrying in %g s: %s", poll, exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._delivery_wake.wait()

    # -- patient state --------------------------------------------------------------------------------

    async def publish_patient_states(self) -> int:
        """Publish the PatientState of every patient touched since the last call (retained, QoS 1): one
        query for all of them, then the publishes concurrently (each awaits its PUBACK)."""
        pending, self._pending = self._pending, _Pending()
        patients = set(pending.patients)
        if not self.settings.publish_patient_state or self.publisher is None:
            return 0
        async with store.reading(self.sessions) as session:
            patients.update(await patients_of_gateways(session, pending.gateways))
            states = await patient_states(session, patients, now=self._clock())
        published = await asyncio.gather(*(self._publish_state(state) for state in states))
        self.counters.patient_states_published += sum(published)
        return sum(published)

    async def _publish_state(self, state: PatientState) -> bool:
        assert self.publisher is not None
        topic = cc_patient_topic(state.patient_id)
        try:
            await self.publisher.publish(topic, encode(state), qos=1, retain=True)
        except Exception as exc:
            logger.warning("publishing the state of %s failed: %s", state.patient_id, exc)
            self._pending.patients.add(state.patient_id)
            self._state_wake.set()  # try again (each attempt waits for the broker connection)
            return False
        if self.broadcaster is not None:
            self.broadcaster.publish("patient", state.model_dump(mode="json"))
        return True

    async def run_patient_states(self) -> None:
        while True:
            await self._state_wake.wait()
            self._state_wake.clear()
            try:
                await self.publish_patient_states()
            except Exception as exc:
                if not _retryable(exc):
                    raise
                logger.error("patient state: database unavailable: %s", exc)
            await asyncio.sleep(0.2)  # coalesce bursts: one state per patient per 200 ms at most

    # -- start-up -------------------------------------------------------------------------------------

    async def catch_up(self) -> int:
        """Offer the policy the newest stored status of each gateway and the newest assessment of each
        patient received within ``catch_up_hours`` (it ignores what it already applied). Returns how many
        inputs were offered."""
        if self.settings.catch_up_hours <= 0:
            return 0
        since = self._clock() - timedelta(hours=self.settings.catch_up_hours)
        inputs: list[PolicyInput] = []
        async with store.reading(self.sessions) as session:
            gateways = (
                await session.scalars(select(GatewayRow).where(GatewayRow.status_received_at >= since))
            ).all()
            inputs.extend(item for item in (_status_input(row) for row in gateways) if item is not None)
            patient_ids = (
                await session.scalars(
                    select(AssessmentRow.patient_id).where(AssessmentRow.received_at >= since).distinct()
                )
            ).all()
            for patient_id in sorted(patient_ids):
                row = await repository.latest_assessment(session, patient_id)
                item = _assessment_input(row) if row is not None else None
                if item is not None:
                    inputs.append(item)
        for offered in inputs:
            await self.submit(offered)
        if inputs:
            logger.info("escalation caught up with %d stored inputs", len(inputs))
        return len(inputs)

    async def catch_up_until_done(self, retry_s: float = 1.0) -> int:
        """:meth:`catch_up`, retried while the database is unavailable (a worker that starts while the
        database restarts must not exit: its ingest session would keep its share of the traffic)."""
        while True:
            try:
                return await self.catch_up()
            except Exception as exc:
                if not _retryable(exc):
                    raise
                logger.error("escalation catch-up: database unavailable, retrying in %g s: %s", retry_s, exc)
            await asyncio.sleep(retry_s)

    async def run(self) -> None:
        """Catch up, then run the timer, delivery and patient-state loops until cancelled."""
        await self.catch_up_until_done()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.run_timers(), name=f"escalation timers {self.worker_id}")
                group.create_task(self.run_deliveries(), name=f"alert deliveries {self.worker_id}")
                group.create_task(self.run_patient_states(), name=f"patient states {self.worker_id}")
                group.create_task(self.run_deferred(), name=f"deferred inputs {self.worker_id}")
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._owned_transport is not None:
            await self._owned_transport.aclose()
            self._owned_transport = None

    async def wait_for_changes(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, re-checking after every committed alert change."""
        async with self.changes_seen:
            await self.changes_seen.wait_for(predicate)


class _HasValue(Protocol):
    @property
    def value(self) -> str: ...


class ActingAccount(Protocol):
    """Who acts (``server.api.actions.Actor``): the token's account id and its role."""

    @property
    def account(self) -> str: ...

    @property
    def role(self) -> _HasValue: ...


def _policy_role(alert_id: uuid.UUID, actor: ActingAccount) -> Role:
    """The policy's role for an API role; a role the policy does not know (e.g. a viewer) may not act."""
    try:
        return Role(actor.role.value)
    except ValueError:
        raise ActionRefusedError(
            f"role {actor.role.value} may not act on alerts", alert_id=alert_id, reason="role_not_allowed"
        ) from None


def _status_input(row: GatewayRow) -> StatusReceived | None:
    if row.status_state is None or row.session is None or row.status_sent_at is None:
        return None
    try:
        status = GatewayStatus.model_validate(
            {
                "gateway_id": row.gateway_id,
                "state": row.status_state,
                "session": row.session,
                "sent_at": row.status_sent_at,
                "software_version": row.software_version or "",
                "heartbeat_interval_s": row.heartbeat_interval_s or 30.0,
                "backlog": row.backlog or 0,
                "oldest_unsent_age_s": row.oldest_unsent_age_s,
                "devices": row.devices or [],
                "clock_synchronized": row.clock_synchronized,
            }
        )
    except ValidationError as exc:
        logger.warning("stored status of %s cannot be replayed: %s", row.gateway_id, exc)
        return None
    return StatusReceived(status=status)


def _assessment_input(row: AssessmentRow) -> AssessmentReceived | None:
    try:
        assessment = Assessment.model_validate(
            {
                "message_id": row.message_id,
                "gateway_id": row.gateway_id,
                "seq": row.seq,
                "sent_at": row.received_at,
                "patient_id": row.patient_id,
                "assessed_at": row.assessed_at,
                "total": row.total,
                "components": row.components,
                "risk": row.risk,
                "complete": row.complete,
                "input_ages_s": row.input_ages_s,
                "spo2_scale": row.spo2_scale,
                "on_oxygen": row.on_oxygen,
                "consciousness": row.consciousness,
                "trend_rising": row.trend_rising,
                "historical": row.historical,
            }
        )
    except ValidationError as exc:
        logger.warning("stored assessment %s cannot be replayed: %s", row.message_id, exc)
        return None
    return AssessmentReceived(assessment=assessment)
