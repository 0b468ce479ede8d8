"""Reads and writes on the server's tables, one function per question or change.

Every function takes an open ``AsyncSession`` inside a transaction that the caller owns (``async with
session.begin()``): what belongs together commits together. Writes that can race between workers use
``INSERT … ON CONFLICT`` on both backends, so they are safe with several processes on PostgreSQL and
with several connections on SQLite, and never raise on a duplicate.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Table,
    TextClause,
    and_,
    any_,
    bindparam,
    case,
    delete,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute

from edge_agent import protocol
from server.storage.models import (
    AlertEventRecord,
    Assessment,
    CommandRecord,
    DeadLetter,
    Gateway,
    GatewayEvent,
    Observation,
    Patient,
    ReceivedMessage,
    SequenceGap,
)

GATEWAYS: Table = Gateway.__table__  # type: ignore[assignment]
PATIENTS: Table = Patient.__table__  # type: ignore[assignment]
OBSERVATIONS: Table = Observation.__table__  # type: ignore[assignment]
RECEIVED: Table = ReceivedMessage.__table__  # type: ignore[assignment]
GAPS: Table = SequenceGap.__table__  # type: ignore[assignment]
ASSESSMENTS: Table = Assessment.__table__  # type: ignore[assignment]
EVENTS: Table = GatewayEvent.__table__  # type: ignore[assignment]


def _insert(session: AsyncSession, table: Table) -> postgresql.Insert | sqlite.Insert:
    """The dialect's own INSERT, which has ON CONFLICT."""
    if _on_postgresql(session):
        return postgresql.insert(table)
    return sqlite.insert(table)


def _on_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def one_of(
    session: AsyncSession, column: ColumnElement[Any] | QueryableAttribute[Any], values: Sequence[str]
) -> ColumnElement[bool]:
    """``column IN values``, written on PostgreSQL as ``column = ANY(array)``: one statement text whatever
    the number of values. asyncpg prepares each distinct text once per connection (and keeps 100), so an
    IN list, a new text for each count, cost a prepare round trip each time its count was new or evicted:
    ~5 a second per worker at 1,000 homes, for locking a batch's subjects and reading patient states."""
    if _on_postgresql(session):
        array = postgresql.ARRAY(column.expression.type)
        return column == any_(bindparam(None, list(values), type_=array))
    return column.in_(values)


# The ingest's bulk writes on PostgreSQL: one statement per table and batch whose parameters are arrays,
# one per column, expanded by unnest(). asyncpg encodes an array in one binary parameter, and SQLAlchemy
# has no per-row work to do (no per-row bind processing, no statement per row count), which is where the
# time of a batch went. The statements mean the same as the portable ones below them: same rows, same
# ON CONFLICT, same row order (ORDER BY in the SELECT), run in the caller's transaction; errors are
# SQLAlchemy's as usual. JSON columns are sent as text and cast, as SQLAlchemy's JSON type does.

_PG_CLAIM_SQL = """
    INSERT INTO received_messages (message_id, gateway_id, channel, seq, received_at)
    SELECT * FROM unnest(
        CAST(:message_ids AS uuid[]), CAST(:{p}gateway_ids AS text[]), CAST(:channels AS text[]),
        CAST(:seqs AS bigint[]), CAST(:received_ats AS timestamptz[])
    ) AS claimed (message_id, gateway_id, channel, seq, received_at)
    {where}
    ORDER BY message_id
    ON CONFLICT (message_id) DO NOTHING
    RETURNING message_id
"""
_PG_CLAIM = text(_PG_CLAIM_SQL.format(p="", where=""))

_PG_LOCK_GATEWAYS_SQL = """
    INSERT INTO gateways AS known (gateway_id, first_seen_at, last_seen_at, online)
    SELECT heard.gateway_id, CAST(:received_at AS timestamptz), CAST(:received_at AS timestamptz), false
    FROM unnest(CAST(:gateway_ids AS text[])) AS heard (gateway_id)
    ORDER BY heard.gateway_id
    ON CONFLICT (gateway_id) DO UPDATE SET last_seen_at = CASE
        WHEN known.last_seen_at < excluded.last_seen_at THEN excluded.last_seen_at
        ELSE known.last_seen_at END
    RETURNING known.gateway_id, known.online, known.session, known.status_state,
        known.status_sent_at, known.highest_seq, known.probe_watch
"""
_PG_LOCK_GATEWAYS = text(_PG_LOCK_GATEWAYS_SQL)

# Both in one statement: the UNION ALL reads ``locked`` to the end before it reads ``claimed`` (and the
# claim's filter counts ``locked`` first), so the gateways are locked before any message id is claimed,
# the order every ingest transaction takes its locks in.
_PG_LOCK_AND_CLAIM = text(
    f"""
    WITH locked AS ({_PG_LOCK_GATEWAYS_SQL}),
    claimed AS ({_PG_CLAIM_SQL.format(p="claim_", where="WHERE (SELECT count(*) FROM locked) >= 0")})
    SELECT gateway_id, online, session, status_state, status_sent_at, highest_seq, probe_watch,
        CAST(NULL AS uuid) AS message_id
    FROM locked
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, message_id FROM claimed
    """
)

# The content of a batch (sequence numbers, gaps, patients, readings, assessments, events) is written on
# PostgreSQL in ONE statement: each part below is a data-modifying WITH query of it (see write_content).
# Every round trip costs the ingest transaction a turn of the worker's event loop, which is what its
# latency is made of under load. ``{p}`` prefixes a part's array parameters so that parts can share a
# statement; ``:received_at`` and ``:consciousness`` are the same value for every part.

_PG_SET_HIGHEST_SQL = """
    UPDATE gateways SET highest_seq = target.highest_seq
    FROM unnest(CAST(:{p}gateway_ids AS text[]), CAST(:{p}highest AS bigint[]))
        AS target (gateway_id, highest_seq)
    WHERE gateways.gateway_id = target.gateway_id
"""

_PG_GAPS_SQL = """
    INSERT INTO sequence_gaps (gateway_id, first_missing, last_missing, detected_at)
    SELECT gap.gateway_id, gap.first_missing, gap.last_missing, CAST(:received_at AS timestamptz)
    FROM unnest(
        CAST(:{p}gateway_ids AS text[]), CAST(:{p}firsts AS bigint[]), CAST(:{p}lasts AS bigint[])
    ) WITH ORDINALITY AS gap (gateway_id, first_missing, last_missing, position)
    ORDER BY gap.position
"""

_PG_ENSURE_PATIENTS_SQL = """
    INSERT INTO patients (patient_id, gateway_id, first_seen_at, spo2_scale, on_oxygen, consciousness)
    SELECT seen.patient_id, seen.gateway_id, CAST(:received_at AS timestamptz), 1, false, :consciousness
    FROM unnest(CAST(:{p}patient_ids AS text[]), CAST(:{p}gateway_ids AS text[]))
        AS seen (patient_id, gateway_id)
    ORDER BY seen.patient_id
    ON CONFLICT (patient_id) DO NOTHING
"""

_PG_OBSERVATIONS_SQL = """
    INSERT INTO observations (message_id, position, gateway_id, seq, patient_id, vital, value, unit,
        measured_at, time_source, device_id, quality, perfusion_index, historical, received_at)
    SELECT reading.message_id, reading.position, reading.gateway_id, reading.seq, reading.patient_id,
        reading.vital, reading.value, reading.unit, reading.measured_at, reading.time_source,
        reading.device_id, CAST(reading.quality AS jsonb), reading.perfusion_index, reading.historical,
        CAST(:received_at AS timestamptz)
    FROM unnest(
        CAST(:{p}message_ids AS uuid[]), CAST(:{p}positions AS integer[]), CAST(:{p}gateway_ids AS text[]),
        CAST(:{p}seqs AS bigint[]), CAST(:{p}patient_ids AS text[]), CAST(:{p}vitals AS text[]),
        CAST(:{p}values AS double precision[]), CAST(:{p}units AS text[]),
        CAST(:{p}measured_ats AS timestamptz[]), CAST(:{p}time_sources AS text[]),
        CAST(:{p}device_ids AS text[]), CAST(:{p}qualities AS text[]),
        CAST(:{p}perfusion_indexes AS double precision[]), CAST(:{p}historicals AS boolean[])
    ) AS reading (message_id, position, gateway_id, seq, patient_id, vital, value, unit, measured_at,
        time_source, device_id, quality, perfusion_index, historical)
    ON CONFLICT (message_id, position) DO NOTHING
"""

_PG_ASSESSMENTS_SQL = """
    INSERT INTO assessments (message_id, gateway_id, seq, patient_id, assessed_at, total, risk, components,
        complete, input_ages_s, spo2_scale, on_oxygen, consciousness, trend_rising, historical, received_at)
    SELECT a.message_id, a.gateway_id, a.seq, a.patient_id, a.assessed_at, a.total, a.risk,
        CAST(a.components AS jsonb), a.complete, CAST(a.input_ages_s AS jsonb), a.spo2_scale, a.on_oxygen,
        a.consciousness, a.trend_rising, a.historical, CAST(:received_at AS timestamptz)
    FROM unnest(
        CAST(:{p}message_ids AS uuid[]), CAST(:{p}gateway_ids AS text[]), CAST(:{p}seqs AS bigint[]),
        CAST(:{p}patient_ids AS text[]), CAST(:{p}assessed_ats AS timestamptz[]),
        CAST(:{p}totals AS smallint[]), CAST(:{p}risks AS text[]), CAST(:{p}components AS text[]),
        CAST(:{p}completes AS boolean[]), CAST(:{p}input_ages AS text[]), CAST(:{p}spo2_scales AS smallint[]),
        CAST(:{p}on_oxygens AS boolean[]), CAST(:{p}consciousnesses AS text[]), CAST(:{p}trends AS boolean[]),
        CAST(:{p}historicals AS boolean[])
    ) AS a (message_id, gateway_id, seq, patient_id, assessed_at, total, risk, components, complete,
        input_ages_s, spo2_scale, on_oxygen, consciousness, trend_rising, historical)
"""

_PG_EVENTS_SQL = """
    INSERT INTO gateway_events (message_id, gateway_id, seq, kind, device_id, patient_id, occurred_at,
        detail, historical, received_at)
    SELECT e.message_id, e.gateway_id, e.seq, e.kind, e.device_id, e.patient_id, e.occurred_at,
        CAST(e.detail AS jsonb), e.historical, CAST(:received_at AS timestamptz)
    FROM unnest(
        CAST(:{p}message_ids AS uuid[]), CAST(:{p}gateway_ids AS text[]), CAST(:{p}seqs AS bigint[]),
        CAST(:{p}kinds AS text[]), CAST(:{p}device_ids AS text[]), CAST(:{p}patient_ids AS text[]),
        CAST(:{p}occurred_ats AS timestamptz[]), CAST(:{p}details AS text[]),
        CAST(:{p}historicals AS boolean[])
    ) AS e (message_id, gateway_id, seq, kind, device_id, patient_id, occurred_at, detail, historical)
"""


_PG_CONTENT_SQL = {
    "highest": _PG_SET_HIGHEST_SQL,
    "gaps": _PG_GAPS_SQL,
    "patients": _PG_ENSURE_PATIENTS_SQL,
    "observations": _PG_OBSERVATIONS_SQL,
    "assessments": _PG_ASSESSMENTS_SQL,
    "events": _PG_EVENTS_SQL,
}


@functools.cache
def _pg_statement(*parts: str) -> TextClause:
    """The statement writing ``parts`` (names in _PG_CONTENT_SQL): the part itself for one, data-modifying
    WITH queries for several (PostgreSQL runs each to completion, and checks foreign keys at the end of the
    statement, so readings may name a patient that a sibling part inserts)."""
    if len(parts) == 1:
        return text(_PG_CONTENT_SQL[parts[0]].format(p=""))
    queries = ",\n".join(f"{name} AS ({_PG_CONTENT_SQL[name].format(p=name + '_')})" for name in parts)
    return text(f"WITH {queries}\nSELECT 1")


async def _pg_write(
    session: AsyncSession, parts: dict[str, dict[str, list[Any]]], *, received_at: datetime | None
) -> None:
    """Write ``parts`` (name in _PG_CONTENT_SQL -> its arrays) in one statement."""
    if not parts:
        return
    params: dict[str, Any]
    if len(parts) == 1:
        params = dict(*parts.values())
    else:
        params = {f"{name}_{key}": value for name, arrays in parts.items() for key, value in arrays.items()}
    if parts.keys() - {"highest"}:
        params["received_at"] = received_at
    if "patients" in parts:
        params["consciousness"] = protocol.Consciousness.ALERT.value
    await session.execute(_pg_statement(*parts), params)


def _json(value: Any) -> str:
    """A JSON column's value as SQLAlchemy's JSON type would send it."""
    return json.dumps(value)


# --------------------------------------------------------------------------------------------------
# Dedup


async def claim_message(
    session: AsyncSession,
    *,
    message_id: uuid.UUID,
    gateway_id: str,
    channel: str,
    seq: int | None,
    received_at: datetime,
) -> bool:
    """Record that ``message_id`` was received; False when it already was (a replay: store nothing).

    On PostgreSQL a concurrent transaction inserting the same id makes this wait until that one commits
    (then False) or rolls back (then True), so exactly one worker stores each message."""
    statement = (
        _insert(session, RECEIVED)
        .values(
            message_id=message_id,
            gateway_id=gateway_id,
            channel=channel,
            seq=seq,
            received_at=received_at,
        )
        .on_conflict_do_nothing(index_elements=[RECEIVED.c.message_id])
        .returning(RECEIVED.c.message_id)
    )
    return (await session.execute(statement)).first() is not None


async def claim_messages(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
    """Bulk :func:`claim_message`: ``rows`` of message_id, gateway_id, channel, seq, received_at with
    distinct ids; returns the ids claimed now (the others were stored before).

    Rows are inserted in id order, so two workers claiming overlapping sets wait for each other in the
    same order and cannot deadlock on these keys."""
    if not rows:
        return set()
    ordered = sorted(rows, key=lambda row: row["message_id"])
    if _on_postgresql(session):
        result = await session.execute(
            _PG_CLAIM,
            {
                "message_ids": [row["message_id"] for row in ordered],
                "gateway_ids": [row["gateway_id"] for row in ordered],
                "channels": [row["channel"] for row in ordered],
                "seqs": [row["seq"] for row in ordered],
                "received_ats": [row["received_at"] for row in ordered],
            },
        )
        # asyncpg returns its own UUID type; hand back the standard one the callers compare with.
        return {uuid.UUID(int=value.int) for value in result.scalars()}
    statement = (
        _insert(session, RECEIVED)
        .values(ordered)
        .on_conflict_do_nothing(index_elements=[RECEIVED.c.message_id])
        .returning(RECEIVED.c.message_id)
    )
    return set((await session.execute(statement)).scalars())


# --------------------------------------------------------------------------------------------------
# Gateways and sequence gaps


@dataclass(frozen=True, slots=True)
class GatewayRow:
    """The gateway's state as it was when locked, before this transaction changed it."""

    gateway_id: str
    online: bool
    session: int | None
    status_state: str | None
    status_sent_at: datetime | None
    highest_seq: int | None
    probe_watch: bool
    """See ``Gateway.probe_watch``."""


def _gateway_row(row: Any) -> GatewayRow:
    return GatewayRow(
        gateway_id=row.gateway_id,
        online=row.online,
        session=row.session,
        status_state=row.status_state,
        status_sent_at=row.status_sent_at,
        highest_seq=row.highest_seq,
        probe_watch=row.probe_watch,
    )


async def lock_gateway(session: AsyncSession, gateway_id: str, *, received_at: datetime) -> GatewayRow:
    """Create the gateway if new, record that it was heard from, and lock its row until the transaction
    ends.

    Everything that reads and then writes a gateway's sequence or status state runs under this lock,
    so concurrent workers handling the same gateway's messages take turns."""
    return (await lock_gateways(session, [gateway_id], received_at=received_at))[gateway_id]


async def lock_gateways(
    session: AsyncSession, gateway_ids: Iterable[str], *, received_at: datetime
) -> dict[str, GatewayRow]:
    """Bulk :func:`lock_gateway` in one statement, locking in gateway-id order."""
    ids = sorted(set(gateway_ids))
    if not ids:
        return {}
    if _on_postgresql(session):
        rows = await session.execute(_PG_LOCK_GATEWAYS, {"gateway_ids": ids, "received_at": received_at})
        return {row.gateway_id: _gateway_row(row) for row in rows}
    insert = _insert(session, GATEWAYS).values(
        [
            {"gateway_id": gid, "first_seen_at": received_at, "last_seen_at": received_at, "online": False}
            for gid in ids
        ]
    )
    # DO UPDATE rather than DO NOTHING: it returns the existing row and holds its lock. The update
    # advances last_seen_at (never backwards: workers may commit out of order).
    current = GATEWAYS.c.last_seen_at
    statement = insert.on_conflict_do_update(
        index_elements=[GATEWAYS.c.gateway_id],
        set_={
            "last_seen_at": case(
                (current < insert.excluded.last_seen_at, insert.excluded.last_seen_at), else_=current
            )
        },
    ).returning(
        GATEWAYS.c.gateway_id,
        GATEWAYS.c.online,
        GATEWAYS.c.session,
        GATEWAYS.c.status_state,
        GATEWAYS.c.status_sent_at,
        GATEWAYS.c.highest_seq,
        GATEWAYS.c.probe_watch,
    )
    return {row.gateway_id: _gateway_row(row) for row in await session.execute(statement)}


async def lock_gateways_and_claim(
    session: AsyncSession,
    gateway_ids: Iterable[str],
    rows: Sequence[dict[str, Any]],
    *,
    received_at: datetime,
) -> tuple[dict[str, GatewayRow], set[uuid.UUID]]:
    """:func:`lock_gateways`, then :func:`claim_messages` of ``rows``: one round trip on PostgreSQL."""
    ids = sorted(set(gateway_ids))
    if not (ids and rows and _on_postgresql(session)):
        locked = await lock_gateways(session, ids, received_at=received_at)
        return locked, await claim_messages(session, rows)
    ordered = sorted(rows, key=lambda row: row["message_id"])
    result = await session.execute(
        _PG_LOCK_AND_CLAIM,
        {
            "gateway_ids": ids,
            "received_at": received_at,
            "message_ids": [row["message_id"] for row in ordered],
            "claim_gateway_ids": [row["gateway_id"] for row in ordered],
            "channels": [row["channel"] for row in ordered],
            "seqs": [row["seq"] for row in ordered],
            "received_ats": [row["received_at"] for row in ordered],
        },
    )
    gateways: dict[str, GatewayRow] = {}
    claimed: set[uuid.UUID] = set()
    for row in result:
        if row.message_id is None:
            gateways[row.gateway_id] = _gateway_row(row)
        else:  # asyncpg's own UUID type: hand back the standard one the callers compare with
            claimed.add(uuid.UUID(int=row.message_id.int))
    return gateways, claimed


def _highest_arrays(highest: dict[str, int]) -> dict[str, list[Any]]:
    ordered = sorted(highest.items())  # a fixed order: no lock-order deadlocks
    return {"gateway_ids": [gid for gid, _ in ordered], "highest": [value for _, value in ordered]}


async def set_highest_seqs(session: AsyncSession, highest: dict[str, int]) -> None:
    """``gateways.highest_seq`` for several gateways (one executemany)."""
    if highest and _on_postgresql(session):
        await _pg_write(session, {"highest": _highest_arrays(highest)}, received_at=None)
    elif highest:
        statement = (
            update(GATEWAYS)
            .where(GATEWAYS.c.gateway_id == bindparam("target_gateway"))
            .values(highest_seq=bindparam("new_highest"))
        )
        rows = [{"target_gateway": gid, "new_highest": value} for gid, value in sorted(highest.items())]
        await session.execute(statement, rows)


async def update_gateway(db: AsyncSession, gateway_id: str, /, **values: Any) -> None:
    """Set columns of one gateway (``session`` is a column name here, hence the positional-only db)."""
    await db.execute(update(GATEWAYS).where(GATEWAYS.c.gateway_id == gateway_id).values(**values))


async def update_gateways(db: AsyncSession, values: Mapping[str, Mapping[str, Any]]) -> None:
    """Set columns of several gateways (gateway id -> column -> value): one executemany for the gateways
    that set the same columns (a single round trip on asyncpg), in gateway order."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for gateway_id, columns in sorted(values.items()):
        row = {f"new_{name}": value for name, value in columns.items()}
        groups.setdefault(tuple(sorted(columns)), []).append({"target_gateway": gateway_id, **row})
    for names, rows in groups.items():
        statement = (
            update(GATEWAYS)
            .where(GATEWAYS.c.gateway_id == bindparam("target_gateway"))
            .values({name: bindparam(f"new_{name}") for name in names})
        )
        await db.execute(statement, rows)


@dataclass(frozen=True, slots=True)
class SeqRange:
    """``first..last`` inclusive."""

    first: int
    last: int

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}..{self.last}"


@dataclass(frozen=True, slots=True)
class SequenceResult:
    highest_seq: int
    opened: SeqRange | None = None
    """The gap this message revealed (numbers skipped before it)."""
    filled: bool = False
    """The message was one of the missing numbers of an open gap."""
    out_of_order: bool = False
    """At or below the highest number seen and not in an open gap (reordered, or a reused number)."""


async def track_sequence(
    session: AsyncSession, gateway: GatewayRow, seq: int, *, received_at: datetime
) -> SequenceResult:
    """Advance the gateway's highest sequence number, record a skipped range, or fill an open gap.

    Call with the gateway locked (``lock_gateway``). Gateways number from 0 (docs/protocol.md), so a
    first message with a higher number opens a gap from 0: those messages have not reached this server
    (they may still be on their way through another worker, or were delivered to a database that was
    since replaced; either way the gap says so)."""
    highest = -1 if gateway.highest_seq is None else gateway.highest_seq
    if seq == highest + 1:
        await update_gateway(session, gateway.gateway_id, highest_seq=seq)
        return SequenceResult(highest_seq=seq)
    if seq > highest + 1:
        skipped = SeqRange(highest + 1, seq - 1)
        await session.execute(
            GAPS.insert().values(
                gateway_id=gateway.gateway_id,
                first_missing=skipped.first,
                last_missing=skipped.last,
                detected_at=received_at,
            )
        )
        await update_gateway(session, gateway.gateway_id, highest_seq=seq)
        return SequenceResult(highest_seq=seq, opened=skipped)
    gap = (
        await session.execute(
            select(GAPS.c.id, GAPS.c.first_missing, GAPS.c.last_missing, GAPS.c.detected_at).where(
                GAPS.c.gateway_id == gateway.gateway_id,
                GAPS.c.filled_at.is_(None),
                GAPS.c.first_missing <= seq,
                GAPS.c.last_missing >= seq,
            )
        )
    ).first()
    if gap is None:
        return SequenceResult(highest_seq=highest, out_of_order=True)
    first, last = gap.first_missing, gap.last_missing
    if first == last:
        await session.execute(update(GAPS).where(GAPS.c.id == gap.id).values(filled_at=received_at))
    elif seq == first:
        await session.execute(update(GAPS).where(GAPS.c.id == gap.id).values(first_missing=seq + 1))
    elif seq == last:
        await session.execute(update(GAPS).where(GAPS.c.id == gap.id).values(last_missing=seq - 1))
    else:  # split: the row keeps the lower part, a new row (same detection time) the upper part
        await session.execute(update(GAPS).where(GAPS.c.id == gap.id).values(last_missing=seq - 1))
        await session.execute(
            GAPS.insert().values(
                gateway_id=gateway.gateway_id,
                first_missing=seq + 1,
                last_missing=last,
                detected_at=gap.detected_at,
            )
        )
    return SequenceResult(highest_seq=highest, filled=True)


def advance_sequence(highest: int | None, seqs: Sequence[int]) -> tuple[int, list[SeqRange]] | None:
    """Where ``seqs`` (in arrival order) take a gateway whose highest number is ``highest``, when every
    one is above the one before (the common case): the new highest and the ranges skipped. None when a
    number is at or below one already seen, which needs the open gaps in the database
    (:func:`track_sequence`)."""
    current = -1 if highest is None else highest
    skipped = []
    for seq in seqs:
        if seq <= current:
            return None
        if seq > current + 1:
            skipped.append(SeqRange(current + 1, seq - 1))
        current = seq
    return current, skipped


def _gap_arrays(gaps: Sequence[tuple[str, SeqRange]]) -> dict[str, list[Any]]:
    return {
        "gateway_ids": [gateway_id for gateway_id, _ in gaps],
        "firsts": [gap.first for _, gap in gaps],
        "lasts": [gap.last for _, gap in gaps],
    }


async def insert_gaps(
    session: AsyncSession, gaps: Sequence[tuple[str, SeqRange]], *, detected_at: datetime
) -> None:
    if gaps and _on_postgresql(session):
        await _pg_write(session, {"gaps": _gap_arrays(gaps)}, received_at=detected_at)
    elif gaps:
        rows = [
            {
                "gateway_id": gateway_id,
                "first_missing": gap.first,
                "last_missing": gap.last,
                "detected_at": detected_at,
            }
            for gateway_id, gap in gaps
        ]
        await session.execute(GAPS.insert(), rows)


async def open_gaps(session: AsyncSession, gateway_id: str | None = None) -> list[SequenceGap]:
    """Missing ranges not yet filled, oldest first."""
    statement = select(SequenceGap).where(SequenceGap.filled_at.is_(None))
    if gateway_id is not None:
        statement = statement.where(SequenceGap.gateway_id == gateway_id)
    statement = statement.order_by(SequenceGap.gateway_id, SequenceGap.first_missing)
    return list((await session.scalars(statement)).all())


# --------------------------------------------------------------------------------------------------
# Content


async def ensure_patients(
    session: AsyncSession, patient_ids: Iterable[str], *, gateway_id: str, received_at: datetime
) -> None:
    """Create patients seen for the first time (pseudonym only; settings at their defaults)."""
    await ensure_patients_of(session, dict.fromkeys(patient_ids, gateway_id), received_at=received_at)


def _patient_arrays(reported_by: dict[str, str]) -> dict[str, list[Any]]:
    patients = sorted(reported_by)  # a fixed order: no lock-order deadlocks
    return {"patient_ids": patients, "gateway_ids": [reported_by[patient_id] for patient_id in patients]}


async def ensure_patients_of(
    session: AsyncSession, reported_by: dict[str, str], *, received_at: datetime
) -> None:
    """Bulk :func:`ensure_patients`: patient id -> the gateway that reported them."""
    if reported_by and _on_postgresql(session):
        await _pg_write(session, {"patients": _patient_arrays(reported_by)}, received_at=received_at)
        return
    rows = [
        {
            "patient_id": patient_id,
            "gateway_id": reported_by[patient_id],
            "first_seen_at": received_at,
            "spo2_scale": 1,
            "on_oxygen": False,
            "consciousness": protocol.Consciousness.ALERT.value,
        }
        for patient_id in sorted(reported_by)  # a fixed order: no lock-order deadlocks
    ]
    if rows:
        statement = _insert(session, PATIENTS).on_conflict_do_nothing(index_elements=[PATIENTS.c.patient_id])
        await session.execute(statement, rows)


async def insert_observations(
    session: AsyncSession, batch: protocol.ObservationBatch, *, received_at: datetime
) -> None:
    await insert_observation_batches(session, [batch], received_at=received_at)


async def insert_observation_batches(
    session: AsyncSession, batches: Sequence[protocol.ObservationBatch], *, received_at: datetime
) -> None:
    """Every reading of every batch, in one executemany (one array statement on PostgreSQL)."""
    if _on_postgresql(session):
        arrays = _observation_arrays(batches)
        if arrays is not None:
            await _pg_write(session, {"observations": arrays}, received_at=received_at)
        return
    rows = [
        {
            "message_id": batch.message_id,
            "position": position,
            "gateway_id": batch.gateway_id,
            "seq": batch.seq,
            "patient_id": item.patient_id,
            "vital": item.vital.value,
            "value": item.value,
            "unit": item.unit,
            "measured_at": item.measured_at,
            "time_source": item.time_source.value,
            "device_id": item.device_id,
            "quality": [flag.value for flag in item.quality],
            "perfusion_index": item.perfusion_index,
            "historical": item.historical,
            "received_at": received_at,
        }
        for batch in batches
        for position, item in enumerate(batch.observations)
    ]
    if rows:
        statement = _insert(session, OBSERVATIONS).on_conflict_do_nothing(
            index_elements=[OBSERVATIONS.c.message_id, OBSERVATIONS.c.position]
        )
        await session.execute(statement, rows)


def _observation_arrays(batches: Sequence[protocol.ObservationBatch]) -> dict[str, list[Any]] | None:
    """The readings of ``batches`` as _PG_OBSERVATIONS_SQL's arrays; None when there are none."""
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "message_ids", "positions", "gateway_ids", "seqs", "patient_ids", "vitals", "values", "units",
            "measured_ats", "time_sources", "device_ids", "qualities", "perfusion_indexes", "historicals",
        )
    }  # fmt: skip
    for batch in batches:
        count = len(batch.observations)
        if not count:
            continue
        columns["message_ids"] += [batch.message_id] * count
        columns["positions"] += range(count)
        columns["gateway_ids"] += [batch.gateway_id] * count
        columns["seqs"] += [batch.seq] * count
        for item in batch.observations:
            columns["patient_ids"].append(item.patient_id)
            columns["vitals"].append(item.vital.value)
            columns["values"].append(item.value)
            columns["units"].append(item.unit)
            columns["measured_ats"].append(item.measured_at)
            columns["time_sources"].append(item.time_source.value)
            columns["device_ids"].append(item.device_id)
            # Almost every reading is clean: its flags' JSON is "[]" without a json.dumps call each.
            flags = _json([flag.value for flag in item.quality]) if item.quality else "[]"
            columns["qualities"].append(flags)
            columns["perfusion_indexes"].append(item.perfusion_index)
            columns["historicals"].append(item.historical)
    return columns if columns["message_ids"] else None


def _assessment_arrays(assessments: Sequence[protocol.Assessment]) -> dict[str, list[Any]]:
    return {
        "message_ids": [a.message_id for a in assessments],
        "gateway_ids": [a.gateway_id for a in assessments],
        "seqs": [a.seq for a in assessments],
        "patient_ids": [a.patient_id for a in assessments],
        "assessed_ats": [a.assessed_at for a in assessments],
        "totals": [a.total for a in assessments],
        "risks": [a.risk.value for a in assessments],
        "components": [_json(dict(a.components)) for a in assessments],
        "completes": [a.complete for a in assessments],
        "input_ages": [_json(dict(a.input_ages_s)) for a in assessments],
        "spo2_scales": [a.spo2_scale for a in assessments],
        "on_oxygens": [a.on_oxygen for a in assessments],
        "consciousnesses": [a.consciousness.value for a in assessments],
        "trends": [a.trend_rising for a in assessments],
        "historicals": [a.historical for a in assessments],
    }


async def insert_assessment(
    session: AsyncSession, assessment: protocol.Assessment, *, received_at: datetime
) -> None:
    await insert_assessments(session, [assessment], received_at=received_at)


async def insert_assessments(
    session: AsyncSession, assessments: Sequence[protocol.Assessment], *, received_at: datetime
) -> None:
    if assessments and _on_postgresql(session):
        await _pg_write(session, {"assessments": _assessment_arrays(assessments)}, received_at=received_at)
        return
    rows = [
        {
            "message_id": assessment.message_id,
            "gateway_id": assessment.gateway_id,
            "seq": assessment.seq,
            "patient_id": assessment.patient_id,
            "assessed_at": assessment.assessed_at,
            "total": assessment.total,
            "risk": assessment.risk.value,
            "components": dict(assessment.components),
            "complete": assessment.complete,
            "input_ages_s": dict(assessment.input_ages_s),
            "spo2_scale": assessment.spo2_scale,
            "on_oxygen": assessment.on_oxygen,
            "consciousness": assessment.consciousness.value,
            "trend_rising": assessment.trend_rising,
            "historical": assessment.historical,
            "received_at": received_at,
        }
        for assessment in assessments
    ]
    if rows:
        await session.execute(ASSESSMENTS.insert(), rows)


def event_patient(event: protocol.Event) -> str | None:
    return getattr(event.detail, "patient_id", None)


def _event_arrays(events: Sequence[protocol.Event]) -> dict[str, list[Any]]:
    return {
        "message_ids": [e.message_id for e in events],
        "gateway_ids": [e.gateway_id for e in events],
        "seqs": [e.seq for e in events],
        "kinds": [e.detail.kind for e in events],
        "device_ids": [getattr(e.detail, "device_id", None) for e in events],
        "patient_ids": [event_patient(e) for e in events],
        "occurred_ats": [e.occurred_at for e in events],
        "details": [_json(e.detail.model_dump(mode="json")) for e in events],
        "historicals": [e.historical for e in events],
    }


async def insert_event(session: AsyncSession, event: protocol.Event, *, received_at: datetime) -> None:
    await insert_events(session, [event], received_at=received_at)


async def insert_events(
    session: AsyncSession, events: Sequence[protocol.Event], *, received_at: datetime
) -> None:
    if events and _on_postgresql(session):
        await _pg_write(session, {"events": _event_arrays(events)}, received_at=received_at)
        return
    rows = [
        {
            "message_id": event.message_id,
            "gateway_id": event.gateway_id,
            "seq": event.seq,
            "kind": event.detail.kind,
            "device_id": getattr(event.detail, "device_id", None),
            "patient_id": event_patient(event),
            "occurred_at": event.occurred_at,
            "detail": event.detail.model_dump(mode="json"),
            "historical": event.historical,
            "received_at": received_at,
        }
        for event in events
    ]
    if rows:
        await session.execute(EVENTS.insert(), rows)


async def write_content(
    session: AsyncSession,
    *,
    highest: dict[str, int],
    gaps: Sequence[tuple[str, SeqRange]],
    reported_by: dict[str, str],
    observations: Sequence[protocol.ObservationBatch],
    assessments: Sequence[protocol.Assessment],
    events: Sequence[protocol.Event],
    received_at: datetime,
) -> None:
    """What a batch of claimed messages writes, in the caller's transaction: :func:`set_highest_seqs`,
    :func:`insert_gaps` (detected at ``received_at``), :func:`ensure_patients_of`,
    :func:`insert_observation_batches`, :func:`insert_assessments` and :func:`insert_events`. One
    statement on PostgreSQL (one round trip instead of up to six); those functions one after another on
    SQLite, which has no round trips to save."""
    if not _on_postgresql(session):
        await set_highest_seqs(session, highest)
        await insert_gaps(session, gaps, detected_at=received_at)
        await ensure_patients_of(session, reported_by, received_at=received_at)
        await insert_observation_batches(session, observations, received_at=received_at)
        await insert_assessments(session, assessments, received_at=received_at)
        await insert_events(session, events, received_at=received_at)
        return
    parts: dict[str, dict[str, list[Any]]] = {}
    if highest:
        parts["highest"] = _highest_arrays(highest)
    if gaps:
        parts["gaps"] = _gap_arrays(gaps)
    if reported_by:
        parts["patients"] = _patient_arrays(reported_by)
    readings = _observation_arrays(observations)
    if readings is not None:
        parts["observations"] = readings
    if assessments:
        parts["assessments"] = _assessment_arrays(assessments)
    if events:
        parts["events"] = _event_arrays(events)
    await _pg_write(session, parts, received_at=received_at)


# --------------------------------------------------------------------------------------------------
# Commands


async def record_command(session: AsyncSession, command: protocol.Command) -> None:
    """Store a command before it is published (state ``pending``)."""
    session.add(
        CommandRecord(
            message_id=command.message_id,
            gateway_id=command.gateway_id,
            patient_id=command.patient_id,
            name=command.body.command,
            body=command.body.model_dump(mode="json"),
            issued_at=command.issued_at,
            issued_by=command.issued_by,
            state="pending",
        )
    )
    await session.flush()


async def mark_command_sent(session: AsyncSession, command_id: uuid.UUID, *, sent_at: datetime) -> None:
    await session.execute(
        update(CommandRecord)
        .where(CommandRecord.message_id == command_id, CommandRecord.state == "pending")
        .values(state="sent", sent_at=sent_at)
    )


async def acknowledge_command(
    session: AsyncSession, ack: protocol.CommandAck, *, received_at: datetime
) -> bool | None:
    """Apply a gateway's acknowledgement. True when applied, False when the command already had one,
    None when no command with that id was sent to that gateway."""
    result = await session.execute(
        update(CommandRecord)
        .where(
            CommandRecord.message_id == ack.command_id,
            CommandRecord.gateway_id == ack.gateway_id,
            CommandRecord.ack_message_id.is_(None),
        )
        .values(
            state="acknowledged" if ack.ok else "rejected",
            ack_message_id=ack.message_id,
            ack_ok=ack.ok,
            ack_detail=ack.detail,
            acked_at=ack.acked_at,
            ack_received_at=received_at,
        )
        .returning(CommandRecord.message_id)
    )
    if result.first() is not None:
        return True
    exists = await session.scalar(
        select(CommandRecord.message_id).where(
            CommandRecord.message_id == ack.command_id, CommandRecord.gateway_id == ack.gateway_id
        )
    )
    return False if exists is not None else None


# --------------------------------------------------------------------------------------------------
# Dead letters


async def record_dead_letter(
    session: AsyncSession,
    *,
    topic: str,
    gateway_id: str | None,
    reason: str,
    detail: str,
    payload: bytes,
    keep_bytes: int,
    received_at: datetime,
) -> None:
    """Keep a rejected message: the first ``keep_bytes`` of its payload, its full size and why."""
    session.add(
        DeadLetter(
            topic=topic[:1024],
            gateway_id=gateway_id,
            reason=reason,
            detail=detail[:4000],
            payload=payload[:keep_bytes],
            payload_size=len(payload),
            received_at=received_at,
        )
    )
    await session.flush()


# --------------------------------------------------------------------------------------------------
# Reads used by the API and the escalation engine


async def observations_for_patient(
    session: AsyncSession,
    patient_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    vital: protocol.VitalCode | None = None,
    limit: int = 1000,
) -> Sequence[Observation]:
    """A patient's readings in measurement order (oldest first), at most ``limit``."""
    conditions = [Observation.patient_id == patient_id]
    if since is not None:
        conditions.append(Observation.measured_at >= since)
    if until is not None:
        conditions.append(Observation.measured_at < until)
    if vital is not None:
        conditions.append(Observation.vital == vital.value)
    statement = select(Observation).where(and_(*conditions)).order_by(Observation.measured_at, Observation.id)
    return (await session.scalars(statement.limit(limit))).all()


async def latest_assessment(session: AsyncSession, patient_id: str) -> Assessment | None:
    statement = (
        select(Assessment)
        .where(Assessment.patient_id == patient_id)
        .order_by(Assessment.assessed_at.desc(), Assessment.id.desc())
        .limit(1)
    )
    return (await session.scalars(statement)).first()


async def list_gateways(session: AsyncSession) -> Sequence[Gateway]:
    return (await session.scalars(select(Gateway).order_by(Gateway.gateway_id))).all()


async def set_display_name(session: AsyncSession, patient_id: str, display_name: str | None) -> bool:
    """Set or clear the one identifying field; False when the patient is unknown."""
    result = await session.execute(
        update(Patient)
        .where(Patient.patient_id == patient_id)
        .values(display_name=display_name)
        .returning(Patient.patient_id)
    )
    return result.first() is not None


async def append_alert_event(session: AsyncSession, event: AlertEventRecord) -> None:
    """Append to the audit log (the only write the database allows on that table)."""
    session.add(event)
    await session.flush()


async def delete_in_batches(session: AsyncSession, table: Table, *conditions: Any, batch_size: int) -> int:
    """Delete up to ``batch_size`` rows matching ``conditions`` (by primary key); return how many."""
    key = next(iter(table.primary_key.columns))
    chosen = select(key).where(*conditions).limit(batch_size)
    result = await session.execute(delete(table).where(key.in_(chosen)))
    return int(getattr(result, "rowcount", 0) or 0)
