"""Creating the async engine and sessions, with the per-backend settings that correctness needs.

SQLite (the default, one server process): WAL journal, ``synchronous=FULL`` (a committed message survives
power loss, since the broker forgets it once acknowledged), foreign keys on, a busy timeout, and every
transaction started with ``BEGIN IMMEDIATE`` so two writers queue instead of deadlocking on a lock
upgrade (a session that only reads can ask for a deferred transaction with ``READ_ONLY``; keep every
session short either way, as one open write transaction holds the whole database).

PostgreSQL (several workers): asyncpg with a bounded pool, READ COMMITTED; the ingest relies on
``INSERT … ON CONFLICT`` and row locks, not on the isolation level. No pre-ping on every checkout: it
would cost two round trips (BEGIN, ROLLBACK) before every transaction, for every ingest batch and every
escalation decision. Instead a connection is checked when it leaves the pool: one the server has closed
(a restart, ``pg_terminate_backend``; the driver has already seen the socket close) is replaced at no
cost, and one that sat idle for ``IDLE_PING_S`` is pinged. A connection that dies while busy fails its
statement as a disconnect; SQLAlchemy then discards every connection of the pool opened before it, and
the callers' retries (ingest, the engine; the API answers 503 with Retry-After) run on new ones.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_only

IDLE_PING_S: Final = 10.0
"""A PostgreSQL connection idle in the pool this long is pinged before use."""

READ_ONLY_OPTION: Final = "wardwatch_read_only"
READ_ONLY: Final = {READ_ONLY_OPTION: True}
"""Execution options for a session that only reads: on SQLite its transaction does not take the write
lock, so it never delays ingest. Before the first query:
``async with sessions() as s: await s.connection(execution_options=READ_ONLY)``. No effect on
PostgreSQL."""


def sqlite_file(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for memory databases and other backends."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    if url.database.startswith("file:"):
        return None
    return Path(url.database)


def create_engine(
    url: str | URL,
    *,
    pool_size: int = 5,
    max_overflow: int | None = None,
    busy_timeout_s: float = 10.0,
    echo: bool = False,
) -> AsyncEngine:
    """An AsyncEngine for ``sqlite+aiosqlite`` or ``postgresql+asyncpg`` URLs.

    On PostgreSQL ``pool_size`` connections stay open; up to ``max_overflow`` more (default: as many
    again) are opened while busy and closed when returned. For a SQLite file the parent directory is
    created if missing."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    options: dict[str, Any] = {"echo": echo}
    if backend == "sqlite":
        path = sqlite_file(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": busy_timeout_s}
        engine = create_async_engine(parsed, **options)
        _configure_sqlite(engine, busy_timeout_s)
        return engine
    if backend == "postgresql":
        overflow = pool_size if max_overflow is None else max_overflow
        engine = create_async_engine(parsed, pool_size=pool_size, max_overflow=overflow, **options)
        _check_on_checkout(engine)
        return engine
    raise ValueError(f"unsupported database backend {backend!r}; use sqlite+aiosqlite or postgresql+asyncpg")


_IDLE_SINCE: Final = "wardwatch_idle_since"


def _check_on_checkout(engine: AsyncEngine) -> None:
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_connection, "_connection", None)
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the database closed this connection")  # the pool replaces it
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_S:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise DisconnectionError(f"an idle connection failed its ping: {exc}") from exc


def _configure_sqlite(engine: AsyncEngine, busy_timeout_s: float) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver; BEGIN IMMEDIATE is emitted below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            _switch_to_wal(cursor, busy_timeout_s)
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN DEFERRED")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def _switch_to_wal(cursor: Any, busy_timeout_s: float) -> None:
    """``PRAGMA journal_mode=WAL``, tried again while another connection is switching the same new file.

    The switch needs an exclusive lock. When two connections to a new file make it at once, both hold a
    shared lock and SQLite refuses the second upgrade at once ("database is locked") rather than through
    the busy handler, which would deadlock; it is a brief conflict (the other switch then completes, and
    a file in WAL mode needs no lock to say so). Workers or migrations starting together on a new SQLite
    database met it about once in 40 starts. The wait yields to the event loop: connections are opened
    inside SQLAlchemy's async adaptation."""
    deadline = time.monotonic() + busy_timeout_s
    delay = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
        await_only(asyncio.sleep(delay))
        delay = min(delay * 2, 0.2)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (no implicit reloads in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def redacted(url: str | URL) -> str:
    """The URL with its password hidden, for log lines and error messages."""
    return make_url(url).render_as_string(hide_password=True)
