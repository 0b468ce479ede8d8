"""Creating the async engine and sessions, with the per-backend settings that correctness needs.

SQLite (the default, one server process): WAL journal, ``synchronous=FULL`` (a committed message survives
power loss, since the broker forgets it once acknowledged), foreign keys on, a busy timeout, and every
transaction started with ``BEGIN IMMEDIATE`` so two writers queue instead of deadlocking on a lock
upgrade (a session that only reads can ask for a deferred transaction with ``READ_ONLY``; keep every
session short either way, as one open write transaction holds the whole database).

PostgreSQL (several workers): asyncpg with a bounded pool and pre-ping, READ COMMITTED; the ingest relies
on ``INSERT … ON CONFLICT`` and row locks, not on the isolation level.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

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
    url: str | URL, *, pool_size: int = 5, busy_timeout_s: float = 10.0, echo: bool = False
) -> AsyncEngine:
    """An AsyncEngine for ``sqlite+aiosqlite`` or ``postgresql+asyncpg`` URLs.

    For a SQLite file the parent directory is created if missing."""
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
        return create_async_engine(
            parsed, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, **options
        )
    raise ValueError(f"unsupported database backend {backend!r}; use sqlite+aiosqlite or postgresql+asyncpg")


def _configure_sqlite(engine: AsyncEngine, busy_timeout_s: float) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver; BEGIN IMMEDIATE is emitted below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
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


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (no implicit reloads in async code)."""
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def redacted(url: str | URL) -> str:
    """The URL with its password hidden, for log lines and error messages."""
    return make_url(url).render_as_string(hide_password=True)
