"""Real databases for the server's tests: a SQLite file and a PostgreSQL database per test.

PostgreSQL is the one at ``WARDWATCH_TEST_POSTGRES_URL`` (default: trust auth as ``postgres`` on
127.0.0.1:5432). Each run migrates one template database ``wardwatch_test_<random>_tpl`` and gives every
test its own copy (``CREATE DATABASE … TEMPLATE``), dropped afterwards, so tests never see each other's
rows. When PostgreSQL is unreachable the PostgreSQL half of the tests is skipped, or fails under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from server.ingest import Ingestor
from server.settings import IngestSettings
from server.storage import create_engine, migrate, session_factory

POSTGRES_ADMIN_URL = os.environ.get(
    "WARDWATCH_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ("sqlite", "postgresql")
T = TypeVar("T")


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from synchronous fixture code, on a thread of its own so that the
    test's event loop (pytest-asyncio's) is never touched."""

    async def main() -> T:
        return await factory()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()


def postgres_url(database: str) -> str:
    return make_url(POSTGRES_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


async def _admin(*statements: str) -> None:
    engine = create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


def _unavailable(message: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """Name of a migrated template database for this run (dropped at the end)."""
    name = f"wardwatch_test_{uuid.uuid4().hex[:10]}_tpl"
    try:
        run_async(lambda: _admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # unreachable, refused, no permission: all mean "no PostgreSQL here"
        _unavailable(f"PostgreSQL at {make_url(POSTGRES_ADMIN_URL).host} is not usable: {exc}")
    try:
        run_async(lambda: migrate(postgres_url(name)))
        yield name
    finally:
        run_async(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    run_async(lambda: migrate(f"sqlite+aiosqlite:///{path}"))
    return path


def _migrated_postgres_database(request: pytest.FixtureRequest) -> Iterator[str]:
    template: str = request.getfixturevalue("postgres_template")
    name = f"wardwatch_test_{uuid.uuid4().hex[:12]}"
    run_async(lambda: _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield postgres_url(name)
    run_async(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fresh_postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, migrated PostgreSQL database for this test."""
    yield from _migrated_postgres_database(request)


@pytest.fixture
def second_postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Another new, migrated PostgreSQL database, for a test comparing two runs."""
    yield from _migrated_postgres_database(request)


@pytest.fixture
def empty_postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new PostgreSQL database with no tables at all (for migration tests)."""
    request.getfixturevalue("postgres_template")  # skips or fails when PostgreSQL is not usable
    name = f"wardwatch_test_{uuid.uuid4().hex[:12]}"
    run_async(lambda: _admin(f'CREATE DATABASE "{name}"'))
    yield postgres_url(name)
    run_async(lambda: _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of each backend, empty of rows, owned by this test."""
    if backend == "postgresql":
        url: str = request.getfixturevalue("fresh_postgres_url")
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    path = tmp_path / "wardwatch.db"
    shutil.copyfile(template, path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def empty_database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "postgresql":
        url: str = request.getfixturevalue("empty_postgres_url")
        return url
    return f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    instance = create_engine(database_url)
    yield instance
    await instance.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def ingestor(sessions: async_sessionmaker[AsyncSession]) -> Ingestor:
    return Ingestor(sessions, IngestSettings(dead_letter_payload_bytes=1024), retry_delay_s=0.01)
