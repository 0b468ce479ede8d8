"""The server's database: SQLAlchemy 2 async models, Alembic migrations, repository functions.

SQLite (aiosqlite) by default, PostgreSQL (asyncpg) by URL. Typical start-up::

    engine = create_engine(settings.database_url)
    await migrate(engine)
    sessions = session_factory(engine)
"""

from __future__ import annotations

from server.storage.engine import create_engine, redacted, session_factory
from server.storage.errors import MigrationError, StorageError, StorageUnavailable
from server.storage.migrate import current_revision, head_revision, migrate
from server.storage.retention import PurgeReport, purge_expired, purge_periodically

__all__ = [
    "MigrationError",
    "PurgeReport",
    "StorageError",
    "StorageUnavailable",
    "create_engine",
    "current_revision",
    "head_revision",
    "migrate",
    "purge_expired",
    "purge_periodically",
    "redacted",
    "session_factory",
]
