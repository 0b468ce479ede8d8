"""Deleting rows past their retention, in bounded batches (one short transaction each).

Alerts and the audit log are never purged (the audit table refuses deletes). Open sequence gaps are kept
whatever their age: they are evidence of missing data until someone resolves them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.settings import RetentionSettings
from server.storage.models import (
    Assessment,
    DeadLetter,
    GatewayEvent,
    Observation,
    ReceivedMessage,
    SequenceGap,
)
from server.storage.repository import delete_in_batches

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class PurgeReport:
    deleted: dict[str, int] = field(default_factory=dict)
    """Table name -> rows deleted."""

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def _targets(
    settings: RetentionSettings, now: datetime
) -> list[tuple[Table, float | None, Callable[..., Any]]]:
    def older(column: Any) -> Callable[[datetime], Any]:
        return lambda cutoff: column < cutoff

    def filled_before(cutoff: datetime) -> Any:
        return SequenceGap.filled_at.is_not(None) & (SequenceGap.filled_at < cutoff)

    return [
        (Observation.__table__, settings.observations_days, older(Observation.received_at)),  # type: ignore[list-item]
        (Assessment.__table__, settings.assessments_days, older(Assessment.received_at)),  # type: ignore[list-item]
        (GatewayEvent.__table__, settings.events_days, older(GatewayEvent.received_at)),  # type: ignore[list-item]
        (ReceivedMessage.__table__, settings.received_messages_days, older(ReceivedMessage.received_at)),  # type: ignore[list-item]
        (DeadLetter.__table__, settings.dead_letters_days, older(DeadLetter.received_at)),  # type: ignore[list-item]
        (SequenceGap.__table__, settings.filled_gaps_days, filled_before),  # type: ignore[list-item]
    ]


async def purge_expired(
    sessions: async_sessionmaker[AsyncSession], settings: RetentionSettings, *, now: datetime
) -> PurgeReport:
    """Delete everything older than its retention at ``now``; return how many rows per table."""
    report = PurgeReport()
    for table, days, condition in _targets(settings, now):
        if days is None:
            continue
        cutoff = now - timedelta(days=days)
        deleted = 0
        while True:
            async with sessions() as session, session.begin():
                count = await delete_in_batches(
                    session, table, condition(cutoff), batch_size=settings.batch_size
                )
            deleted += count
            if count < settings.batch_size:
                break
        report.deleted[table.name] = deleted
        if deleted:
            logger.info("retention: deleted %d rows from %s older than %s", deleted, table.name, cutoff)
    return report


async def purge_periodically(
    sessions: async_sessionmaker[AsyncSession],
    settings: RetentionSettings,
    *,
    clock: Callable[[], datetime],
    interval_s: float = 3600.0,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Purge now and then every ``interval_s`` until cancelled (a task for the server's TaskGroup).

    Database trouble is logged and retried at the next interval; it never ends the loop. Several workers
    may run it at once: deletes of the same rows simply find fewer."""
    while True:
        try:
            report = await purge_expired(sessions, settings, now=clock())
            if report.total:
                logger.info("retention: deleted %d rows in all", report.total)
        except (DBAPIError, OSError, TimeoutError) as exc:
            logger.warning("retention purge failed, trying again in %.0f s: %s", interval_s, exc)
        await sleep(interval_s)
