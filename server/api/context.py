"""What every route needs, built once by ``create_app``: sessions, settings, actions, clocks, and the
authentication machinery. Also the API's one error type, :class:`ApiError`."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.api.actions import Actions
from server.api.events import Broadcaster
from server.api.settings import ApiSettings
from server.auth import Account, SignInLimiter, TokenVerifier

API_PREFIX: Final = "/api"


class ApiError(Exception):
    """An answer other than success: status, a machine-readable code, a sentence, and where."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        problems: Sequence[tuple[str, str]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.problems = list(problems)
        self.headers = dict(headers or {})


class EventTickets:
    """Single-use tickets that let a browser's EventSource (which cannot send headers) open the event
    stream as the account that asked for the ticket."""

    def __init__(self, *, lifetime_s: float = 60.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.lifetime_s = lifetime_s
        self._monotonic = monotonic
        self._tickets: dict[str, tuple[Account, float]] = {}

    def issue(self, account: Account) -> str:
        now = self._monotonic()
        for ticket, (_, expiry) in list(self._tickets.items()):
            if expiry <= now:
                del self._tickets[ticket]
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = (account, now + self.lifetime_s)
        return ticket

    def redeem(self, ticket: str) -> Account | None:
        entry = self._tickets.pop(ticket, None)
        if entry is None or entry[1] <= self._monotonic():
            return None
        return entry[0]


@dataclass(slots=True)
class ApiContext:
    sessions: async_sessionmaker[AsyncSession]
    settings: ApiSettings
    actions: Actions
    broadcaster: Broadcaster
    clock: Callable[[], datetime]
    verifier: TokenVerifier
    limiter: SignInLimiter
    tickets: EventTickets
    ingest_counters: Callable[[], Mapping[str, int]] | None = None
    stream_lag_s: Callable[[], float] | None = None
    engine_counters: Callable[[], Mapping[str, float]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def age_s(self, moment: datetime | None, now: datetime) -> float | None:
        return None if moment is None else round((now - moment).total_seconds(), 3)
