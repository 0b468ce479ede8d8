"""Bringing a database to the newest schema with Alembic, from code (the server calls this at start-up).

Several workers may start at once against one PostgreSQL: the upgrade runs inside a transaction holding
a PostgreSQL advisory lock, so one migrates and the others wait, then find nothing to do. PostgreSQL and
SQLite both have transactional DDL, so a failed migration leaves the previous schema intact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from server.storage.engine import create_engine, redacted
from server.storage.errors import MigrationError

logger = logging.getLogger(__name__)

# A path rather than the "server:migrations" resource: resolving the resource goes through the top-level
# package, which a directory named tests/server on sys.path can shadow.
SCRIPT_LOCATION: Final = str(Path(__file__).resolve().parent.parent / "migrations")
MIGRATION_LOCK_KEY: Final = 0x5741_5244_5741_5443 & 0x7FFF_FFFF_FFFF_FFFF  # "WARDWATC"


def alembic_config() -> Config:
    """An Alembic configuration without an ini file: the scripts ship inside the package."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise MigrationError("no migrations found in server/migrations")
    return head


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def migrate(database: str | URL | AsyncEngine, *, revision: str = "head") -> None:
    """Upgrade the database (a URL or an engine) to ``revision``; a no-op when it is already there.

    Raises MigrationError naming the database (password hidden) and the cause."""
    await _run(database, _upgrade, revision)


async def downgrade(database: str | URL | AsyncEngine, *, revision: str) -> None:
    """Downgrade to ``revision`` (``base`` drops every table: an operator's tool, never run by the server)."""
    await _run(database, _downgrade, revision)


async def _run(
    database: str | URL | AsyncEngine, step: Callable[[Connection, str], None], revision: str
) -> None:
    engine = database if isinstance(database, AsyncEngine) else create_engine(database)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            before = await connection.run_sync(_current)
            await connection.run_sync(step, revision)
            after = await connection.run_sync(_current)
        if before != after:
            logger.info("database %s migrated from %s to %s", redacted(engine.url), before, after)
    except SQLAlchemyError as exc:
        raise MigrationError(f"migrating {redacted(engine.url)} failed: {exc}") from exc
    finally:
        if engine is not database:
            await engine.dispose()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when it was never migrated."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)
