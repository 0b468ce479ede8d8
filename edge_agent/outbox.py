"""The durable outbox: every reading, assessment and event is on disk before anything else happens to it.

Two stages, both in one SQLite database (WAL, ``synchronous=FULL``)::

    item     pending payload bodies, one row per observation / assessment / event
       │  form():  one transaction takes items, assigns message id + sequence number, writes the
       ▼           finished MQTT payload and deletes the items
    message  formed messages: published_at is set by the broker's success PUBACK (mark_published);
             the row is deleted only by acknowledge(), when the server's receipt says it is stored

A message is formed once and re-sent byte for byte until the server confirms it, so a crash between
publish and PUBACK, or a broker that acknowledged and then crashed before delivering, causes a
retransmission with the same message id, which the server deduplicates. Sequence numbers come from a
counter stored in the same transaction, so they continue across restarts.

Drain order: formed messages first (in sequence order), then assessments and events, then observations.
Observations stored more than ``historical_after_s`` before they are formed are marked ``historical``;
every batch takes live observations first and fills the rest with the oldest backlog, so a long backlog
never delays live data.

Quota: when the database's used pages exceed ``quota_bytes``, the oldest pending observations are
deleted (never assessments, events or formed messages) and an ``outbox_eviction`` event is queued.

Writes are group-committed: concurrent ``put`` calls that arrive while a transaction is running are
written together in the next one, and each caller resumes only after its rows are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, Self

import aiosqlite

from edge_agent.protocol import (
    MAX_OBSERVATIONS_PER_BATCH,
    AssessmentContent,
    EventContent,
    Observation,
    OutboxEviction,
    gateway_topic,
    new_message_id,
)

log = logging.getLogger(__name__)

Channel = Literal["obs", "score", "event"]
_PRIORITY: Final[dict[Channel, int]] = {"score": 0, "event": 0, "obs": 1}

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS item (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel     TEXT    NOT NULL CHECK (channel IN ('obs', 'score', 'event')),
    priority    INTEGER NOT NULL,
    stored_at   REAL    NOT NULL,
    body        TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS item_drain ON item (priority, id);
CREATE TABLE IF NOT EXISTS message (
    seq         INTEGER PRIMARY KEY,
    message_id  TEXT    NOT NULL UNIQUE,
    channel     TEXT    NOT NULL,
    topic       TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    items       INTEGER NOT NULL,
    oldest_stored_at REAL NOT NULL,
    formed_at   REAL    NOT NULL,
    published_at REAL
);
CREATE TABLE IF NOT EXISTS counter (
    name        TEXT PRIMARY KEY,
    value       INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS setting (
    name        TEXT PRIMARY KEY,
    value       TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class FormedMessage:
    seq: int
    message_id: str
    channel: Channel
    topic: str
    payload: bytes
    items: int


@dataclass(frozen=True, slots=True)
class Backlog:
    messages: int
    """Formed messages the broker has not acknowledged yet."""
    items: int
    """Pending items not yet formed into messages."""
    awaiting_receipt: int
    """Messages the broker acknowledged but the server has not yet confirmed storing."""
    oldest_stored_at: float | None
    """Gateway time at which the oldest unsent item was stored (None when empty)."""
    used_bytes: int
    evicted_total: int

    @property
    def unsent(self) -> int:
        """Items and messages that have not reached the broker."""
        return self.messages + self.items

    @property
    def total(self) -> int:
        """Everything not yet confirmed stored by the server."""
        return self.messages + self.items + self.awaiting_receipt


@dataclass(slots=True)
class _PendingWrite:
    rows: Sequence[tuple[str, int, float, str]]
    done: asyncio.Future[None]


@dataclass(slots=True, kw_only=True)
class OutboxOptions:
    quota_bytes: int = 512 * 1024 * 1024
    historical_after_s: float = 60.0
    max_batch: int = MAX_OBSERVATIONS_PER_BATCH
    eviction_fraction: float = 0.05
    """Share of the quota freed at once when it is exceeded, so eviction does not run on every write."""
    clock: Callable[[], float] = field(default=time.time)


class Outbox:
    """``async with Outbox(path, gateway_id) as outbox`` opens, checks and (re)creates the database."""

    def __init__(self, path: Path, gateway_id: str, options: OutboxOptions | None = None) -> None:
        self.path = Path(path)
        self.gateway_id = gateway_id
        self.options = options or OutboxOptions()
        self._db: aiosqlite.Connection | None = None
        self._writes: asyncio.Queue[_PendingWrite | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._page_size = 4096
        self._changed = asyncio.Event()
        self._acknowledged = asyncio.Event()
        # aiosqlite serialises statements, not transactions: one lock keeps each transaction whole.
        self._lock = asyncio.Lock()
        self.evictions = 0
        self.moved_corrupt_to: Path | None = None
        """Where a database that failed its integrity check at start-up was moved (it is kept for
        forensics; the agent continues with a new, empty outbox)."""

    # -- lifetime -------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._open_checked()
        self._writer = asyncio.create_task(self._write_loop(), name="outbox-writer")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._writer is not None:
            self._writes.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _open_checked(self) -> None:
        problem = await self._integrity_problem() if self.path.exists() else None
        if problem is not None:
            self.moved_corrupt_to = self._move_aside()
            log.error(
                "outbox %s failed its integrity check (%s); moved it to %s and started a new one",
                self.path,
                problem,
                self.moved_corrupt_to,
            )
        db = await aiosqlite.connect(self.path, isolation_level=None)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=FULL")
        await db.executescript(_SCHEMA)
        columns = {row[1] for row in await (await db.execute("PRAGMA table_info(message)")).fetchall()}
        if "published_at" not in columns:  # an outbox written by a version without server receipts
            await db.execute("ALTER TABLE message ADD COLUMN published_at REAL")
        row = await (await db.execute("PRAGMA page_size")).fetchone()
        self._page_size = int(row[0]) if row else 4096
        self._db = db

    async def _integrity_problem(self) -> str | None:
        try:
            async with aiosqlite.connect(self.path) as db:
                rows = await (await db.execute("PRAGMA integrity_check")).fetchall()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        messages = [str(row[0]) for row in rows]
        return None if messages == ["ok"] else "; ".join(messages[:5])

    def _move_aside(self) -> Path:
        moved = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        self.path.rename(moved)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                side.rename(moved.with_name(moved.name + suffix))
        return moved

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            db = self.db
            try:
                # BEGIN inside the try: a cancellation while it is queued must still roll back.
                await db.execute("BEGIN IMMEDIATE")
                yield db
            except BaseException:
                # aiosqlite runs statements in order, so this follows the BEGIN even if that is pending.
                with contextlib.suppress(sqlite3.OperationalError):
                    await asyncio.shield(db.execute("ROLLBACK"))
                raise
            # A cancellation while COMMIT is queued still commits; callers treat that as "unknown" and
            # rely on idempotence (a formed message is resent, an acknowledgement repeated).
            await asyncio.shield(db.execute("COMMIT"))

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    # -- writing --------------------------------------------------------------------------------------

    async def put_observations(self, observations: Sequence[Observation]) -> None:
        await self._put([("obs", _body(o)) for o in observations])

    async def put_assessment(self, assessment: AssessmentContent) -> None:
        await self._put([("score", assessment.model_dump_json())])

    async def put_event(self, event: EventContent) -> None:
        await self._put([("event", event.model_dump_json())])

    async def _put(self, bodies: Iterable[tuple[Channel, str]]) -> None:
        now = self.options.clock()
        rows = [(channel, _PRIORITY[channel], now, body) for channel, body in bodies]
        if not rows:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writes.put_nowait(_PendingWrite(rows, done))
        await done

    async def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._writes.get()
            if first is None:
                return
            group = [first]
            while not self._writes.empty():
                more = self._writes.get_nowait()
                if more is None:
                    stopping = True
                    break
                group.append(more)
            try:
                await self._commit(group)
            except Exception as exc:
                log.exception("outbox write of %d groups failed", len(group))
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_exception(exc)
            else:
                for pending in group:
                    if not pending.done.done():
                        pending.done.set_result(None)
                self._changed.set()

    async def _commit(self, group: list[_PendingWrite]) -> None:
        rows = [row for pending in group for row in pending.rows]
        async with self._transaction() as db:
            await db.executemany(
                "INSERT INTO item (channel, priority, stored_at, body) VALUES (?, ?, ?, ?)", rows
            )
            eviction = await self._evict_over_quota()
        if eviction is not None:
            count, oldest, newest = eviction
            self.evictions += count
            log.warning(
                "outbox over its quota of %d bytes: evicted %d oldest observations stored %s..%s",
                self.options.quota_bytes,
                count,
                _iso(oldest),
                _iso(newest),
            )

    async def _used_bytes(self) -> int:
        db = self.db
        pages = await (await db.execute("PRAGMA page_count")).fetchone()
        free = await (await db.execute("PRAGMA freelist_count")).fetchone()
        return (int(pages[0]) - int(free[0])) * self._page_size if pages and free else 0

    async def _evict_over_quota(self) -> tuple[int, float, float] | None:
        """Inside the write transaction: drop the oldest pending observations while over quota."""
        quota = self.options.quota_bytes
        used = await self._used_bytes()
        if used <= quota:
            return None
        db = self.db
        target = quota * (1 - self.options.eviction_fraction)
        evicted, oldest, newest = 0, float("inf"), float("-inf")
        while used > target:
            row = await (
                await db.execute("SELECT avg(length(body)) FROM item WHERE channel = 'obs'")
            ).fetchone()
            if row is None or row[0] is None:
                break  # nothing evictable left: assessments and events are never dropped
            per_row = float(row[0]) + 40
            chunk = max(1, int((used - target) / per_row))
            victims = await (
                await db.execute(
                    "SELECT min(id), max(id), count(*), min(stored_at), max(stored_at) FROM "
                    "(SELECT id, stored_at FROM item WHERE channel = 'obs' ORDER BY id LIMIT ?)",
                    (chunk,),
                )
            ).fetchone()
            if victims is None or not victims[2]:
                break
            low, high, count, first_at, last_at = victims
            await db.execute("DELETE FROM item WHERE channel = 'obs' AND id BETWEEN ? AND ?", (low, high))
            evicted += int(count)
            oldest, newest = min(oldest, first_at), max(newest, last_at)
            used = await self._used_bytes()
        if not evicted:
            return None
        await db.execute(
            "INSERT INTO counter (name, value) VALUES ('evicted', ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (evicted,),
        )
        now = self.options.clock()
        detail = OutboxEviction(
            kind="outbox_eviction",
            evicted_observations=evicted,
            oldest_evicted_at=_dt(oldest),
            newest_evicted_at=_dt(newest),
        )
        body = json.dumps({"occurred_at": _iso(now), "detail": detail.model_dump(mode="json")})
        await db.execute(
            "INSERT INTO item (channel, priority, stored_at, body) VALUES ('event', ?, ?, ?)",
            (_PRIORITY["event"], now, body),
        )
        return evicted, oldest, newest

    # -- draining -------------------------------------------------------------------------------------

    async def formed(self) -> list[FormedMessage]:
        """Every formed message not yet confirmed, in sequence order (a new connection resends them)."""
        return await self._messages("")

    async def unpublished(self) -> list[FormedMessage]:
        """Formed messages the broker has not acknowledged (never sent, refused, or cut off)."""
        return await self._messages("WHERE published_at IS NULL")

    async def unreceipted(self, *, published_before: float) -> list[FormedMessage]:
        """Messages the broker acknowledged before ``published_before`` whose receipt has not come."""
        return await self._messages("WHERE published_at < ?", (published_before,))

    async def _messages(self, where: str, parameters: tuple[float, ...] = ()) -> list[FormedMessage]:
        async with self._lock:
            cursor = await self.db.execute(
                f"SELECT seq, message_id, channel, topic, payload, items FROM message {where} ORDER BY seq",
                parameters,
            )
            rows = await cursor.fetchall()
        return [FormedMessage(r[0], r[1], r[2], r[3], bytes(r[4]), r[5]) for r in rows]

    async def mark_published(self, seqs: Sequence[int]) -> None:
        """The broker acknowledged these messages; keep them until the server's receipt."""
        if not seqs:
            return
        now = self.options.clock()
        async with self._transaction() as db:
            await db.executemany(
                "UPDATE message SET published_at = ? WHERE seq = ?", [(now, s) for s in seqs]
            )
        self._acknowledged.set()

    async def form(self, *, max_messages: int = 16) -> list[FormedMessage]:
        """Turn pending items into up to ``max_messages`` messages, durably, and return them."""
        now = self.options.clock()
        sent_at = _iso(now)
        formed: list[FormedMessage] = []
        async with self._transaction() as db:
            seq = await self._counter("seq")
            while len(formed) < max_messages:
                row = await (
                    await db.execute(
                        "SELECT id, channel, stored_at, body FROM item ORDER BY priority, id LIMIT 1"
                    )
                ).fetchone()
                if row is None:
                    break
                message_id = str(new_message_id())
                head = self._head(message_id, seq, sent_at)
                if row[1] == "obs":
                    ids, oldest, payload, count = await self._form_batch(head, now)
                    channel: Channel = "obs"
                else:
                    ids, oldest, count = [row[0]], row[2], 1
                    channel = row[1]
                    payload = f"{{{head},{row[3][1:]}".encode()
                topic = gateway_topic(self.gateway_id, channel)
                await db.execute(
                    "INSERT INTO message (seq, message_id, channel, topic, payload, items, oldest_stored_at, "
                    "formed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, message_id, channel, topic, payload, count, oldest, now),
                )
                await db.executemany("DELETE FROM item WHERE id = ?", [(i,) for i in ids])
                formed.append(FormedMessage(seq, message_id, channel, topic, payload, count))
                seq += 1
            await db.execute(
                "INSERT INTO counter (name, value) VALUES ('seq', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (seq,),
            )
        return formed

    async def _form_batch(self, head: str, now: float) -> tuple[list[int], float, bytes, int]:
        db = self.db
        limit = self.options.max_batch
        live_since = now - self.options.historical_after_s
        live = list(
            await (
                await db.execute(
                    "SELECT id, stored_at, body FROM item WHERE channel = 'obs' AND stored_at >= ? "
                    "ORDER BY id LIMIT ?",
                    (live_since, limit),
                )
            ).fetchall()
        )
        backlog: list[sqlite3.Row] = []
        if len(live) < limit:
            backlog = list(
                await (
                    await db.execute(
                        "SELECT id, stored_at, body FROM item WHERE channel = 'obs' AND stored_at < ? "
                        "ORDER BY id LIMIT ?",
                        (live_since, limit - len(live)),
                    )
                ).fetchall()
            )
        parts = [body[:-1] + ',"historical":false}' for _, _, body in live]
        parts += [body[:-1] + ',"historical":true}' for _, _, body in backlog]
        rows = live + backlog
        payload = f'{{{head},"observations":[{",".join(parts)}]}}'.encode()
        return [r[0] for r in rows], min(r[1] for r in rows), payload, len(rows)

    def _head(self, message_id: str, seq: int, sent_at: str) -> str:
        return (
            f'"message_id":"{message_id}","gateway_id":{json.dumps(self.gateway_id)},'
            f'"seq":{seq},"sent_at":"{sent_at}"'
        )

    async def acknowledge(self, seqs: Sequence[int]) -> None:
        """These messages are safe (the server's receipt, or the broker's PUBACK when receipts are off):
        forget them, in one transaction. Unknown sequence numbers are ignored."""
        if not seqs:
            return
        async with self._transaction() as db:
            await db.executemany("DELETE FROM message WHERE seq = ?", [(s,) for s in seqs])
        self._acknowledged.set()

    async def wait_for_acknowledgement(self) -> None:
        """Wait until a PUBACK or a receipt changed the outbox since the last call."""
        await self._acknowledged.wait()
        self._acknowledged.clear()

    async def wait_for_items(self) -> None:
        """Wait until something new was written since the last call."""
        await self._changed.wait()
        self._changed.clear()

    async def backlog(self) -> Backlog:
        async with self._lock:
            db = self.db
            messages = await (
                await db.execute(
                    "SELECT count(*) FILTER (WHERE published_at IS NULL), min(oldest_stored_at), "
                    "count(*) FILTER (WHERE published_at IS NOT NULL) FROM message"
                )
            ).fetchone()
            items = await (await db.execute("SELECT count(*), min(stored_at) FROM item")).fetchone()
            used, evicted = await self._used_bytes(), await self._counter("evicted")
        oldest = [
            v for v in (messages[1] if messages else None, items[1] if items else None) if v is not None
        ]
        return Backlog(
            messages=int(messages[0]) if messages else 0,
            items=int(items[0]) if items else 0,
            awaiting_receipt=int(messages[2]) if messages else 0,
            oldest_stored_at=min(oldest) if oldest else None,
            used_bytes=used,
            evicted_total=evicted,
        )

    # -- small persistent state (session number, clinician settings) -----------------------------------

    async def _counter(self, name: str) -> int:
        row = await (await self.db.execute("SELECT value FROM counter WHERE name = ?", (name,))).fetchone()
        return int(row[0]) if row else 0

    async def next_session(self) -> int:
        """Increment and return the stored session number (durable before it is used)."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO counter (name, value) VALUES ('session', 1) "
                "ON CONFLICT (name) DO UPDATE SET value = value + 1"
            )
            return await self._counter("session")

    async def load_settings(self) -> dict[str, str]:
        async with self._lock:
            rows = await (await self.db.execute("SELECT name, value FROM setting")).fetchall()
        return {str(name): str(value) for name, value in rows}

    async def save_setting(self, name: str, value: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO setting (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )


def _body(observation: Observation) -> str:
    """The observation's JSON without ``historical``, which is decided when the batch is formed."""
    return observation.model_dump_json(exclude={"historical"})


def _dt(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


def _iso(unix: float) -> str:
    return _dt(unix).isoformat().replace("+00:00", "Z")
