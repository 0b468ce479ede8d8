"""Pieces shared by the routers: typed path parameters and read-only sessions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Final

from fastapi import Path
from sqlalchemy.ext.asyncio import AsyncSession

from server.api.context import ApiContext
from server.storage.engine import READ_ONLY

ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
PatientIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="The patient's pseudonym")]
GatewayIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="The gateway id")]


@asynccontextmanager
async def reading(context: ApiContext) -> AsyncIterator[AsyncSession]:
    """A session whose transaction only reads (on SQLite it does not take the write lock)."""
    async with context.sessions() as session:
        await session.connection(execution_options=READ_ONLY)
        yield session
