"""The engine's database work: lock and save a subject's policy state, mirror the policy's alerts into
``alerts``, append ``alert_events`` (the audit log) and queue their deliveries, all in the caller's
transaction.

Locking: a subject touched by an input is locked with ``SELECT … FOR UPDATE`` (it waits for a worker
that holds it, then sees that worker's committed state); due subjects are claimed with
``FOR UPDATE SKIP LOCKED`` (a worker never waits for, and never fires, a timer another worker is
firing). On SQLite both render as a plain SELECT inside the ``BEGIN IMMEDIATE`` transaction that the
storage layer starts, which serialises writers.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import Table, TextClause, bindparam, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent.protocol import CC_ALERT_TOPIC, AlertEvent, new_message_id
from server.engine.tables import AlertDelivery, EscalationSubject
from server.escalation import AlertChange, Decision, EscalationState, alert_subject, to_alert_event
from server.escalation.state import Alert as PolicyAlert
from server.storage.engine import READ_ONLY
from server.storage.models import Alert, AlertEventRecord, Gateway
from server.storage.repository import one_of

MQTT_SINK: Final = "mqtt"
WEBHOOK_SINK: Final = "webhook"

_ACK_STATE_TO_ROW: Final = {"unacknowledged": "open", "acknowledged": "acknowledged", "snoozed": "snoozed"}


@asynccontextmanager
async def reading(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session that only reads: on SQLite its transaction is deferred and never takes the write lock."""
    async with sessions() as session:
        await session.connection(execution_options=READ_ONLY)
        yield session


@asynccontextmanager
async def autocommit(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session whose every statement commits by itself: no BEGIN and COMMIT round trips around a
    statement that is a whole transaction (:func:`save_unless_moved`)."""
    async with sessions() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield session


def _on_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def probe_watches(state: EscalationState) -> dict[str, bool]:
    """For each gateway in a policy state: does the state follow a probe that is off on one of its
    devices (a reading without the flag would clear it)? Saved as ``gateways.probe_watch``; for the other
    gateways a batch with no flagged reading cannot change anything, and the engine skips it."""
    return {
        gateway_id: any(
            device.probe_off_since is not None or device.probe_confirm_at is not None
            for device in gateway.devices.values()
        )
        for gateway_id, gateway in state.gateways.items()
    }


@dataclass(frozen=True, slots=True)
class LockedSubject:
    subject: str
    state: EscalationState
    version: int


def load(row: EscalationSubject) -> LockedSubject:
    """The row's state (raises pydantic's ValidationError for a state this version cannot read)."""
    return LockedSubject(row.subject, EscalationState.model_validate(row.state), row.version)


async def lock_subject(session: AsyncSession, subject: str, *, now: datetime) -> LockedSubject:
    """The subject's state, locked for this transaction (created empty when it has none yet: two workers
    creating the same subject at once meet on the primary key, and the second waits for the first).

    One round trip when the subject exists (every input after its first)."""
    return (await lock_subjects(session, [subject], now=now))[subject]


async def lock_subjects(
    session: AsyncSession, subjects: Sequence[str], *, now: datetime
) -> dict[str, LockedSubject]:
    """Several subjects' states, locked in subject order (so that transactions locking overlapping sets
    wait for each other rather than deadlock), the missing ones created empty first."""
    ordered = sorted(set(subjects))
    statement = (
        select(EscalationSubject)
        .where(one_of(session, EscalationSubject.subject, ordered))
        .order_by(EscalationSubject.subject)
        .with_for_update()
    )
    rows = {row.subject: row for row in (await session.scalars(statement)).all()}
    missing = [subject for subject in ordered if subject not in rows]
    if missing:
        dialect = postgresql if _on_postgresql(session) else sqlite
        insert = dialect.insert(EscalationSubject)
        empty = EscalationState().model_dump(mode="json")
        await session.execute(
            insert.values(
                [
                    {"subject": subject, "state": empty, "next_due_at": None, "updated_at": now, "version": 0}
                    for subject in missing
                ]
            ).on_conflict_do_nothing(index_elements=["subject"])
        )
        created = (
            await session.scalars(statement.where(one_of(session, EscalationSubject.subject, missing)))
        ).all()
        rows.update((row.subject, row) for row in created)
    return {subject: load(rows[subject]) for subject in ordered}


async def claim_due(session: AsyncSession, now: datetime, limit: int) -> list[EscalationSubject]:
    """Subjects whose next timer is due at ``now``, locked; those locked by another worker are skipped."""
    statement = (
        select(EscalationSubject)
        .where(EscalationSubject.next_due_at <= now)
        .order_by(EscalationSubject.next_due_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.scalars(statement)).all())


async def postpone(session: AsyncSession, subject: str, until: datetime) -> None:
    """Move a subject's next timer to ``until`` without changing its state (after a failure)."""
    await session.execute(
        update(EscalationSubject).where(EscalationSubject.subject == subject).values(next_due_at=until)
    )


async def earliest_due(session: AsyncSession) -> datetime | None:
    result: datetime | None = await session.scalar(select(func.min(EscalationSubject.next_due_at)))
    return result


def row_subject(alert: PolicyAlert | AlertChange) -> str:
    """The ``alerts.subject`` of a policy alert: the patient id for clinical alerts, ``gateway:<id>`` or
    ``device:<gateway>/<device>`` for technical ones (one unresolved row per subject and condition)."""
    if alert.category == "clinical":
        assert alert.patient_id is not None
        return alert.patient_id
    if alert.device_id is not None:
        return f"device:{alert.gateway_id}/{alert.device_id}"
    return f"gateway:{alert.gateway_id}"


def policy_subject(row: Alert) -> str:
    """The policy subject holding an alert row's state."""
    if row.detail and isinstance(row.detail.get("policy_subject"), str):
        return str(row.detail["policy_subject"])
    return alert_subject(row.category, patient_id=row.patient_id, gateway_id=row.gateway_id)


@dataclass(frozen=True, slots=True)
class SavedEvent:
    change: AlertChange
    event: AlertEvent
    mqtt_delivery_id: int | None = None
    """The event's cc-topic delivery row, when it was saved leased for immediate delivery."""


async def save_decision(
    session: AsyncSession,
    locked: LockedSubject,
    decision: Decision,
    *,
    now: datetime,
    webhooks: Sequence[str],
    worker_id: str,
    mqtt_leased_until: datetime | None = None,
) -> list[SavedEvent]:
    """Write the new state, the alert rows, the audit records and their deliveries; return the events.

    With ``mqtt_leased_until`` each event's cc-topic delivery is saved leased until then (the delivery
    loop leaves it alone): the caller publishes it as soon as the transaction commits and records the
    outcome; if it never does (a crash), the loop sends it once the lease ends.

    On PostgreSQL a decision that changes one alert (nearly all of them) is written in ONE statement
    (:func:`_pg_save_decision`); otherwise, and on SQLite, one statement per row kind and alert."""
    if len({change.alert_id for change in decision.changes}) == 1 and _on_postgresql(session):
        saved = await _pg_save_decision(
            session, locked, decision, now=now, webhooks=webhooks, worker_id=worker_id,
            mqtt_leased_until=mqtt_leased_until,
        )  # fmt: skip
        if saved is None:  # the row is locked by this transaction: its version cannot have moved
            raise RuntimeError(f"escalation subject {locked.subject!r} is not at version {locked.version}")
        await _save_probe_watches(session, locked.state, decision.state)
        return saved
    await _save_state(session, locked, decision, now=now)
    done: set[uuid.UUID] = set()
    for change in decision.changes:
        if change.alert_id not in done:
            # Alerts in the order they first change (a resolve before the raise that replaces it), each
            # written and flushed before the next, so the one-unresolved-per-subject index always holds.
            await _save_alert(session, locked.subject, decision, change.alert_id, now=now)
            done.add(change.alert_id)
    written: list[tuple[AlertChange, AlertEvent, AlertDelivery]] = []
    for change, event, record in _audit_records(decision, worker_id):
        session.add(AlertEventRecord(**record))
        deliveries = [
            AlertDelivery(**delivery)
            for delivery in _deliveries(event, webhooks, now=now, mqtt_leased_until=mqtt_leased_until)
        ]
        session.add_all(deliveries)
        written.append((change, event, deliveries[0]))
    await session.flush()
    return [
        SavedEvent(change, event, mqtt.id if mqtt_leased_until is not None else None)
        for change, event, mqtt in written
    ]


def writes_alone(locked: LockedSubject, decision: Decision) -> bool:
    """Whether :func:`save_unless_moved` can write ``decision`` (one statement): it changes at most one
    alert, and no gateway's probe watch (which lives in another table)."""
    return len({change.alert_id for change in decision.changes}) <= 1 and probe_watches(
        locked.state
    ) == probe_watches(decision.state)


async def save_unless_moved(
    session: AsyncSession,
    known: LockedSubject,
    decision: Decision,
    *,
    now: datetime,
    webhooks: Sequence[str],
    worker_id: str,
    mqtt_leased_until: datetime | None = None,
) -> list[SavedEvent] | None:
    """PostgreSQL, on a connection in autocommit: write ``decision``, made on ``known`` without a lock,
    in ONE statement (its own transaction) if the subject's row is still at ``known.version``; return
    its events, or None when another decision has moved the row on (nothing is written then: decide
    again on the current state). What :func:`save_decision` writes, for a decision
    :func:`writes_alone` accepts."""
    if not writes_alone(known, decision):
        raise ValueError("this decision needs a transaction of its own (save_decision)")
    if decision.changes:
        return await _pg_save_decision(
            session, known, decision, now=now, webhooks=webhooks, worker_id=worker_id,
            mqtt_leased_until=mqtt_leased_until,
        )  # fmt: skip
    table: Table = EscalationSubject.__table__  # type: ignore[assignment]
    written = await session.scalar(
        update(table)
        .where(table.c.subject == known.subject, table.c.version == known.version)
        .values(
            state=decision.state.model_dump(mode="json"),
            next_due_at=decision.next_due_at,
            updated_at=now,
            version=known.version + 1,
        )
        .returning(table.c.version)
    )
    return [] if written is not None else None


# PostgreSQL: a decision changing one alert in one statement of data-modifying WITH queries (each runs to
# completion; foreign keys are checked at the end of the statement, so the audit rows may name an alert
# that a sibling query inserts). One round trip instead of five (state, alert read, alert write, audit,
# deliveries): each costs the decision a turn of the worker's event loop, which is what an alert's
# latency is made of under load. Parameters are cast, as ingest's statements are; JSON is sent as text.
# Every part is guarded by the subject's version (the row must still be at version - 1): in a locked
# transaction that always holds; outside one (:func:`save_unless_moved`) a decision made on a state that
# another decision has replaced writes nothing, and the statement answers one row of NULLs.

_PG_TYPES: Final = {
    "id": "uuid", "category": "text", "condition": "text", "subject": "text", "patient_id": "text",
    "gateway_id": "text", "device_id": "text", "raised_at": "timestamptz", "priority": "text",
    "tier": "smallint", "risk": "text", "total": "smallint", "reason": "text", "updated_at": "timestamptz",
    "state": "text", "resolved_at": "timestamptz", "resolved_by": "text", "next_escalation_at": "timestamptz",
    "snoozed_until": "timestamptz", "acknowledged_at": "timestamptz", "acknowledged_by": "text",
    "detail": "jsonb",
}  # fmt: skip


@functools.cache
def _pg_save_decision_statement(created: tuple[str, ...], updated: tuple[str, ...]) -> TextClause:
    columns = (*created, *updated)
    values = ", ".join(f"CAST(:a_{name} AS {_PG_TYPES[name]})" for name in columns)
    sets = ", ".join(f"{name} = excluded.{name}" for name in updated)
    return text(
        f"""
        WITH state AS (
            UPDATE escalation_subjects SET state = CAST(:state AS jsonb),
                next_due_at = CAST(:next_due_at AS timestamptz), updated_at = CAST(:now AS timestamptz),
                version = CAST(:version AS bigint)
            WHERE subject = CAST(:subject AS text) AND version = CAST(:version AS bigint) - 1
            RETURNING 1
        ), alert AS (
            INSERT INTO alerts ({", ".join(columns)}) SELECT {values} WHERE EXISTS (SELECT FROM state)
            ON CONFLICT (id) DO UPDATE SET {sets}
        ), audit AS (
            INSERT INTO alert_events (message_id, alert_id, action, actor, reason, priority, tier, risk,
                total, at, detail)
            SELECT e.message_id, e.alert_id, e.action, e.actor, e.reason, e.priority, e.tier, e.risk,
                e.total, e.at, CAST(e.detail AS jsonb)
            FROM unnest(
                CAST(:e_message_ids AS uuid[]), CAST(:e_alert_ids AS uuid[]), CAST(:e_actions AS text[]),
                CAST(:e_actors AS text[]), CAST(:e_reasons AS text[]), CAST(:e_priorities AS text[]),
                CAST(:e_tiers AS smallint[]), CAST(:e_risks AS text[]), CAST(:e_totals AS smallint[]),
                CAST(:e_ats AS timestamptz[]), CAST(:e_details AS text[])
            ) WITH ORDINALITY AS e (message_id, alert_id, action, actor, reason, priority, tier, risk, total,
                at, detail, position)
            WHERE EXISTS (SELECT FROM state)
            ORDER BY e.position
        ), deliveries AS (
            INSERT INTO alert_deliveries (message_id, sink, target, payload, status, attempts, created_at,
                next_attempt_at)
            SELECT d.message_id, d.sink, d.target, CAST(d.payload AS jsonb), 'pending', 0,
                CAST(:now AS timestamptz), d.next_attempt_at
            FROM unnest(
                CAST(:d_message_ids AS uuid[]), CAST(:d_sinks AS text[]), CAST(:d_targets AS text[]),
                CAST(:d_payloads AS text[]), CAST(:d_next_attempt_ats AS timestamptz[])
            ) WITH ORDINALITY AS d (message_id, sink, target, payload, next_attempt_at, position)
            WHERE EXISTS (SELECT FROM state)
            ORDER BY d.position
            RETURNING id, message_id, sink
        )
        SELECT id, message_id FROM deliveries WHERE sink = '{MQTT_SINK}'
        UNION ALL SELECT NULL, NULL WHERE NOT EXISTS (SELECT FROM state)
        """
    )


async def _pg_save_decision(
    session: AsyncSession,
    locked: LockedSubject,
    decision: Decision,
    *,
    now: datetime,
    webhooks: Sequence[str],
    worker_id: str,
    mqtt_leased_until: datetime | None,
) -> list[SavedEvent] | None:
    """:func:`save_decision` for a decision that changes one alert, in one statement; None (nothing
    written) when the subject's row is no longer at ``locked.version``. Probe watches are the caller's."""
    alert_id = decision.changes[0].alert_id
    created, updated = _alert_columns(locked.subject, decision, alert_id, now=now)
    updated["detail"] = json.dumps(updated["detail"])
    audit = _audit_records(decision, worker_id)
    deliveries = [
        row
        for _, event, _ in audit
        for row in _deliveries(event, webhooks, now=now, mqtt_leased_until=mqtt_leased_until)
    ]
    params: dict[str, Any] = {
        "subject": locked.subject,
        "state": json.dumps(decision.state.model_dump(mode="json")),
        "next_due_at": decision.next_due_at,
        "now": now,
        "version": locked.version + 1,
        **{f"a_{name}": value for name, value in (created | updated).items()},
        "e_message_ids": [record["message_id"] for _, _, record in audit],
        "e_alert_ids": [record["alert_id"] for _, _, record in audit],
        "e_actions": [record["action"] for _, _, record in audit],
        "e_actors": [record["actor"] for _, _, record in audit],
        "e_reasons": [record["reason"] for _, _, record in audit],
        "e_priorities": [record["priority"] for _, _, record in audit],
        "e_tiers": [record["tier"] for _, _, record in audit],
        "e_risks": [record["risk"] for _, _, record in audit],
        "e_totals": [record["total"] for _, _, record in audit],
        "e_ats": [record["at"] for _, _, record in audit],
        "e_details": [json.dumps(record["detail"]) for _, _, record in audit],
        "d_message_ids": [row["message_id"] for row in deliveries],
        "d_sinks": [row["sink"] for row in deliveries],
        "d_targets": [row["target"] for row in deliveries],
        "d_payloads": [json.dumps(row["payload"]) for row in deliveries],
        "d_next_attempt_ats": [row["next_attempt_at"] for row in deliveries],
    }
    statement = _pg_save_decision_statement(tuple(created), tuple(updated))
    rows = (await session.execute(statement, params)).all()
    if rows and rows[0].message_id is None:
        return None  # the row has moved on: nothing written
    # asyncpg returns its own UUID type: compare as standard ones
    mqtt_ids = {uuid.UUID(int=row.message_id.int): row.id for row in rows}
    return [
        SavedEvent(change, event, mqtt_ids[event.message_id] if mqtt_leased_until is not None else None)
        for change, event, _ in audit
    ]


def _audit_records(
    decision: Decision, worker_id: str
) -> list[tuple[AlertChange, AlertEvent, dict[str, Any]]]:
    """Each change of ``decision`` with its wire event and its ``alert_events`` row."""
    records = []
    for change in decision.changes:
        event = to_alert_event(change, message_id=new_message_id())
        record = {
            "message_id": event.message_id,
            "alert_id": change.alert_id,
            "action": change.action,
            "actor": change.actor,
            "reason": event.reason,
            "priority": change.priority,
            "tier": change.tier,
            "risk": change.risk.value if change.risk is not None else None,
            "total": change.total,
            "at": change.at,
            "detail": _event_detail(change, worker_id),
        }
        records.append((change, event, record))
    return records


def _deliveries(
    event: AlertEvent, webhooks: Sequence[str], *, now: datetime, mqtt_leased_until: datetime | None
) -> list[dict[str, Any]]:
    """The ``alert_deliveries`` rows of one event: the cc topic first, then each webhook."""
    payload = event.model_dump(mode="json")
    sinks = [(MQTT_SINK, CC_ALERT_TOPIC)] + [(WEBHOOK_SINK, name) for name in webhooks]
    return [
        {
            "message_id": event.message_id,
            "sink": sink,
            "target": target,
            "payload": payload,
            "status": "pending",
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": mqtt_leased_until if sink == MQTT_SINK and mqtt_leased_until else now,
        }
        for sink, target in sinks
    ]


async def _save_state(
    session: AsyncSession, locked: LockedSubject, decision: Decision, *, now: datetime
) -> None:
    """One UPDATE of the locked row (a Core statement: the unit of work's bookkeeping for one row costs
    more than the statement)."""
    await session.execute(
        update(EscalationSubject)
        .where(EscalationSubject.subject == locked.subject)
        .values(
            state=decision.state.model_dump(mode="json"),
            next_due_at=decision.next_due_at,
            updated_at=now,
            version=locked.version + 1,
        ),
        execution_options={"synchronize_session": False},
    )
    await _save_probe_watches(session, locked.state, decision.state)


@dataclass(frozen=True, slots=True)
class QuietState:
    """A subject's state after decisions that changed no alert, to be saved by :func:`save_states`."""

    written: LockedSubject
    """The state as its row holds it now (locked in this transaction)."""
    state: EscalationState
    version: int
    next_due_at: datetime | None


async def save_states(session: AsyncSession, quiet: Sequence[QuietState], *, now: datetime) -> None:
    """Save several subjects' states at once: one executemany (one round trip on asyncpg) instead of an
    UPDATE per subject, for decisions that changed no alert (most of them: heartbeats, assessments that
    keep the risk). What :func:`save_decision` writes for such a decision, and nothing else."""
    if not quiet:
        return
    table: Table = EscalationSubject.__table__  # type: ignore[assignment]
    await session.execute(
        update(table)
        .where(table.c.subject == bindparam("target_subject"))
        .values(
            state=bindparam("new_state"),
            next_due_at=bindparam("new_next_due_at"),
            updated_at=bindparam("new_updated_at"),
            version=bindparam("new_version"),
        ),
        [
            {
                "target_subject": item.written.subject,
                "new_state": item.state.model_dump(mode="json"),
                "new_next_due_at": item.next_due_at,
                "new_updated_at": now,
                "new_version": item.version,
            }
            for item in sorted(quiet, key=lambda item: item.written.subject)
        ],
    )
    for item in quiet:
        await _save_probe_watches(session, item.written.state, item.state)


async def _save_probe_watches(session: AsyncSession, before: EscalationState, after: EscalationState) -> None:
    """``gateways.probe_watch`` where the state's answer changed (rare: a probe went off, or came back)."""
    was = probe_watches(before)
    for gateway_id, watching in probe_watches(after).items():
        if watching != was.get(gateway_id, False):
            await session.execute(
                update(Gateway).where(Gateway.gateway_id == gateway_id).values(probe_watch=watching),
                execution_options={"synchronize_session": False},
            )


async def _save_alert(
    session: AsyncSession, subject: str, decision: Decision, alert_id: uuid.UUID, *, now: datetime
) -> None:
    created, updated = _alert_columns(subject, decision, alert_id, now=now)
    # populate_existing: the row may have been written by a statement since it was last loaded
    row = await session.get(Alert, alert_id, populate_existing=True)
    if row is None:
        row = Alert(**created)
        session.add(row)
    for name, value in updated.items():
        setattr(row, name, value)
    await session.flush()


def _alert_columns(
    subject: str, decision: Decision, alert_id: uuid.UUID, *, now: datetime
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``alerts`` row of one alert after ``decision``: the columns set when the row is created, and
    those set whenever the alert changes (a resolved alert keeps who acknowledged it)."""
    changes = [change for change in decision.changes if change.alert_id == alert_id]
    first, last = changes[0], changes[-1]
    current = decision.state.alerts.get(str(alert_id))
    created: dict[str, Any] = {
        "id": alert_id,
        "category": first.category,
        "condition": first.condition,
        "subject": row_subject(first),
        "patient_id": first.patient_id,
        "gateway_id": first.gateway_id,
        "device_id": first.device_id,
        "raised_at": current.opened_at if current is not None else first.at,
    }
    updated: dict[str, Any] = {
        "priority": last.priority,
        "tier": last.tier,
        "risk": last.risk.value if last.risk is not None else None,
        "total": last.total,
        "reason": last.reason,
        "updated_at": now,
    }
    detail: dict[str, Any] = {"policy_subject": subject}
    if current is None:
        updated.update(
            state="resolved", resolved_at=last.at, resolved_by=last.actor, next_escalation_at=None,
            snoozed_until=None,
        )  # fmt: skip
    else:
        updated.update(
            state=_ACK_STATE_TO_ROW[current.ack_state],
            acknowledged_at=current.acknowledged_at,
            acknowledged_by=current.acknowledged_by,
            snoozed_until=current.snoozed_until,
            next_escalation_at=current.due_at(),
        )
        detail.update(
            ever_high=current.ever_high,
            resolution_suggested=current.resolution_suggested,
            ceiling=current.ceiling,
            count=current.count,
        )
    updated["detail"] = detail
    return created, updated


def _event_detail(change: AlertChange, worker_id: str) -> dict[str, Any]:
    detail: dict[str, Any] = {"category": change.category, "condition": change.condition, "worker": worker_id}
    if change.device_id is not None:
        detail["device_id"] = change.device_id
    if change.due_at is not None:
        detail["due_at"] = change.due_at.isoformat()
        detail["late_s"] = round((change.at - change.due_at).total_seconds(), 3)
    if change.snoozed_until is not None:
        detail["snoozed_until"] = change.snoozed_until.isoformat()
    return detail
