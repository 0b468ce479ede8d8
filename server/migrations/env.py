"""Alembic environment for the WardWatch server, wired to the async engine.

Run from code through ``server.storage.migrate`` (which passes an open connection in
``config.attributes["connection"]``), or from a checkout with the Alembic CLI::

    WARDWATCH_DATABASE_URL=sqlite+aiosqlite:///dev.db alembic -c server/alembic.ini upgrade head
    WARDWATCH_DATABASE_URL=sqlite+aiosqlite:///dev.db alembic -c server/alembic.ini revision \\
        --autogenerate -m "what changed"

Logging is left to the caller (libraries do not configure it).
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from server.storage.engine import create_engine
from server.storage.models import import_model_modules

config = context.config


def _configure(connection: Connection, *, with_models: bool = False) -> None:
    # Only autogenerate compares with the models; an upgrade runs the scripts and needs none of them.
    context.configure(
        connection=connection,
        target_metadata=import_model_modules() if with_models else None,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_configure, with_models=True)
    finally:
        await engine.dispose()


def _run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = os.environ.get("WARDWATCH_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set WARDWATCH_DATABASE_URL to the database to migrate")
    asyncio.run(_run_with_own_engine(url))


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
_run()
