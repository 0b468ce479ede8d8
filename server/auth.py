"""API accounts: bearer tokens stored as slow hashes, roles and what each may do, sign-in rate limiting.

A token is ``ww_<key id>_<secret>``: the key id (12 hex characters) is stored in clear and finds the row
in one indexed lookup; the secret (32 random bytes, URL-safe base64) is stored only as an scrypt hash
with a per-token salt, so a copy of the database does not give anyone a working token. The plain token
is shown once, when it is created, and never logged.

Roles, from least to most rights (``ROLE_PERMISSIONS`` is the table the API checks on every route):

- ``integration``  reads everything except patients' display names (other systems, FHIR export,
                   Prometheus scraping ``/metrics``);
- ``viewer``       reads everything, display names included;
- ``nurse``        + acknowledge and snooze alerts, resolve alerts that are not high, send patient settings;
- ``physician``    + escalate by hand, resolve high and emergency alerts;
- ``admin``        reads, manages tokens, reads dead letters and ingest counters, sets display names,
                   and acts on technical (equipment) alerts; clinical actions stay with clinicians.

The names of nurse, physician, admin and integration are those of :class:`server.escalation.Role`, so
``server.escalation.Role(role.value)`` converts an acting role for the policy.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import re
import secrets
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from sqlalchemy import CheckConstraint, Index, LargeBinary, String, Text, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from server.storage.models import Base, Id64, RowId
from server.storage.types import JsonDocument, UtcDateTime

TOKEN_PREFIX: Final = "ww"
KEY_ID_HEX: Final = 12
SECRET_BYTES: Final = 32
ACCOUNT_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
"""Account names are what the audit log and commands record as the actor (never a patient's name)."""


class Role(StrEnum):
    INTEGRATION = "integration"
    VIEWER = "viewer"
    NURSE = "nurse"
    PHYSICIAN = "physician"
    ADMIN = "admin"


class Permission(StrEnum):
    READ = "read"
    READ_IDENTITY = "read_identity"
    """See patients' display names."""
    ACKNOWLEDGE = "acknowledge"
    SNOOZE = "snooze"
    ESCALATE = "escalate"
    RESOLVE = "resolve"
    """Resolve alerts that are not high or emergency priority."""
    RESOLVE_HIGH = "resolve_high"
    COMMAND = "command"
    """Send patient settings to a gateway."""
    SET_DISPLAY_NAME = "set_display_name"
    MANAGE_TOKENS = "manage_tokens"
    READ_INGEST = "read_ingest"
    """Dead letters and ingest counters."""
    READ_METRICS = "read_metrics"
    """``/metrics`` (Prometheus): counts only, no patient data."""


_NURSE: Final = frozenset(
    {
        Permission.READ,
        Permission.READ_IDENTITY,
        Permission.ACKNOWLEDGE,
        Permission.SNOOZE,
        Permission.RESOLVE,
        Permission.COMMAND,
    }
)
ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.INTEGRATION: frozenset({Permission.READ, Permission.READ_METRICS}),
    Role.VIEWER: frozenset({Permission.READ, Permission.READ_IDENTITY}),
    Role.NURSE: _NURSE,
    Role.PHYSICIAN: _NURSE | {Permission.ESCALATE, Permission.RESOLVE_HIGH},
    Role.ADMIN: frozenset(
        {
            Permission.READ,
            Permission.READ_IDENTITY,
            Permission.SET_DISPLAY_NAME,
            Permission.MANAGE_TOKENS,
            Permission.READ_INGEST,
            Permission.READ_METRICS,
            # Technical alerts only: the escalation policy refuses admins on clinical alerts.
            Permission.ACKNOWLEDGE,
            Permission.SNOOZE,
            Permission.RESOLVE,
        }
    ),
}


def may(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS[role]


# --------------------------------------------------------------------------------------------------
# Tables (created by migration 0002_api_accounts)


class ApiToken(Base):
    """One bearer token: who it belongs to, its role, and the scrypt hash of its secret."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(KEY_ID_HEX), unique=True)
    name: Mapped[str] = mapped_column(Id64)
    """The account the token acts as; recorded as the actor of every write."""
    role: Mapped[str] = mapped_column(String(16))
    kdf: Mapped[str] = mapped_column(String(64))
    """``scrypt$n$r$p``: the parameters the hash was made with, so they can be raised later."""
    salt: Mapped[bytes] = mapped_column(LargeBinary)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_by: Mapped[str] = mapped_column(Id64)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    __table_args__ = (
        CheckConstraint("role IN ('integration', 'viewer', 'nurse', 'physician', 'admin')", name="role"),
        Index("ix_api_tokens_name", "name"),
    )


class ApiAuditRecord(Base):
    """Every write through the API that is not an alert action (those are in alert_events)."""

    __tablename__ = "api_audit"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(Id64)
    role: Mapped[str] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(200))
    """The route template, e.g. ``/api/patients/{patient_id}/commands``."""
    target: Mapped[str] = mapped_column(String(200))
    """What was changed: a patient id, a token's key id, a command id."""
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument)
    """What was asked, never a display name (``display_name_set: true`` instead)."""
    note: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_api_audit_at", "at"),)


# --------------------------------------------------------------------------------------------------
# Hashing


@dataclass(frozen=True, slots=True)
class ScryptParameters:
    """scrypt cost. The default (n=2**15, r=8, p=1: 32 MiB, tens of milliseconds) follows OWASP's
    password storage guidance; tests may use a cheaper one."""

    n: int = 2**15
    r: int = 8
    p: int = 1

    def label(self) -> str:
        return f"scrypt${self.n}${self.r}${self.p}"

    @classmethod
    def parse(cls, label: str) -> ScryptParameters:
        name, n, r, p = label.split("$")
        if name != "scrypt":
            raise ValueError(f"unknown key derivation {name!r}")
        return cls(int(n), int(r), int(p))


DEFAULT_KDF: Final = ScryptParameters()


def hash_secret(secret: str, salt: bytes, parameters: ScryptParameters) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8"),
        salt=salt,
        n=parameters.n,
        r=parameters.r,
        p=parameters.p,
        maxmem=256 * parameters.n * parameters.r * parameters.p,
        dklen=32,
    )


@dataclass(frozen=True, slots=True)
class ParsedToken:
    key_id: str
    secret: str


def parse_token(token: str) -> ParsedToken | None:
    """Split ``ww_<key id>_<secret>``; None when it does not have that shape."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or len(key_id) != KEY_ID_HEX or not secret or len(secret) > 128:
        return None
    if any(c not in "0123456789abcdef" for c in key_id):
        return None
    return ParsedToken(key_id, secret)


@dataclass(frozen=True, slots=True)
class Account:
    """Who is calling: the token's account name, role and key id."""

    name: str
    role: Role
    key_id: str


class TokenError(ValueError):
    """A token cannot be created as asked (bad role or name)."""


def _check_account(role: str, name: str) -> Role:
    try:
        checked = Role(role)
    except ValueError:
        raise TokenError(f"unknown role {role!r}; choose one of {', '.join(r.value for r in Role)}") from None
    if not re.fullmatch(ACCOUNT_PATTERN, name):
        raise TokenError(
            f"account name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit (an account id, not a person's full name)"
        )
    return checked


async def create_token(
    sessionmaker: async_sessionmaker[AsyncSession],
    role: str,
    name: str,
    *,
    created_by: str = "cli",
    kdf: ScryptParameters = DEFAULT_KDF,
    now: datetime | None = None,
) -> str:
    """Create a token for account ``name`` with ``role``; return the plain token (shown once).

    Raises TokenError for an unknown role or a name that is not an account id."""
    checked = _check_account(role, name)
    key_id = secrets.token_hex(KEY_ID_HEX // 2)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    salt = secrets.token_bytes(16)
    digest = await asyncio.to_thread(hash_secret, secret, salt, kdf)
    async with sessionmaker() as session, session.begin():
        session.add(
            ApiToken(
                key_id=key_id,
                name=name,
                role=checked.value,
                kdf=kdf.label(),
                salt=salt,
                secret_hash=digest,
                created_at=now or datetime.now(UTC),
                created_by=created_by,
            )
        )
    return f"{TOKEN_PREFIX}_{key_id}_{secret}"


async def install_token(
    sessionmaker: async_sessionmaker[AsyncSession],
    token: str,
    role: str,
    name: str,
    *,
    created_by: str = "cli",
    kdf: ScryptParameters = DEFAULT_KDF,
    now: datetime | None = None,
) -> bool:
    """Store a token made elsewhere (``wardwatch demo --api-token``); False when its key id already
    exists (then nothing changes). Raises TokenError for a malformed token, role or name."""
    checked = _check_account(role, name)
    parsed = parse_token(token)
    if parsed is None:
        raise TokenError("a token must look like ww_<12 hex digits>_<secret>")
    salt = secrets.token_bytes(16)
    digest = await asyncio.to_thread(hash_secret, parsed.secret, salt, kdf)
    async with sessionmaker() as session, session.begin():
        if await session.scalar(select(ApiToken.id).where(ApiToken.key_id == parsed.key_id)) is not None:
            return False
        session.add(
            ApiToken(
                key_id=parsed.key_id,
                name=name,
                role=checked.value,
                kdf=kdf.label(),
                salt=salt,
                secret_hash=digest,
                created_at=now or datetime.now(UTC),
                created_by=created_by,
            )
        )
    return True


async def revoke_token(
    sessionmaker: async_sessionmaker[AsyncSession], key_id: str, *, now: datetime | None = None
) -> bool:
    """Revoke a token by key id; False when no such live token exists."""
    async with sessionmaker() as session, session.begin():
        result = await session.execute(
            update(ApiToken)
            .where(ApiToken.key_id == key_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now or datetime.now(UTC))
            .returning(ApiToken.id)
        )
        return result.first() is not None


async def list_tokens(session: AsyncSession) -> Sequence[ApiToken]:
    return (await session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id))).all()


class TokenVerifier:
    """Checks bearer tokens against the database, with a short in-memory cache of verified tokens so
    that the slow hash runs once per token per ``cache_s`` rather than once per request.

    A token revoked through this process's API stops working at once (``forget``); one revoked by
    another process or the CLI stops within ``cache_s``."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        cache_s: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sessions = sessionmaker
        self._clock = clock
        self._cache_s = cache_s
        self._monotonic = monotonic
        self._cache: dict[str, tuple[bytes, Account, float]] = {}

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    async def verify(self, token: str) -> Account | None:
        """The account a token belongs to, or None when it is unknown, revoked or wrong."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        fingerprint = hashlib.sha256(parsed.secret.encode("utf-8")).digest()
        cached = self._cache.get(parsed.key_id)
        now = self._monotonic()
        if cached is not None and cached[2] > now and hmac.compare_digest(cached[0], fingerprint):
            return cached[1]
        async with self._sessions() as session:
            row = await session.scalar(
                select(ApiToken).where(ApiToken.key_id == parsed.key_id, ApiToken.revoked_at.is_(None))
            )
        if row is None:
            self.forget(parsed.key_id)
            return None
        try:
            parameters = ScryptParameters.parse(row.kdf)
        except ValueError:
            return None
        digest = await asyncio.to_thread(hash_secret, parsed.secret, row.salt, parameters)
        if not hmac.compare_digest(digest, row.secret_hash):
            return None
        account = Account(name=row.name, role=Role(row.role), key_id=row.key_id)
        # Once per cache period, not per request: when a token was last used (to find unused ones).
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=self._clock())
            )
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[parsed.key_id] = (fingerprint, account, now + self._cache_s)
        return account


# --------------------------------------------------------------------------------------------------
# Sign-in rate limiting


class SignInLimiter:
    """At most ``max_failures`` failed sign-ins per client address within ``window_s``; after that the
    address is refused (429) until its oldest failure leaves the window. Remembers at most
    ``max_addresses`` addresses (the least recently failing are forgotten first)."""

    def __init__(
        self,
        *,
        max_failures: int = 10,
        window_s: float = 60.0,
        max_addresses: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._max_addresses = max_addresses
        self._monotonic = monotonic
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self.failures_total = 0
        self.refusals_total = 0
        """Requests answered 429 (for /metrics)."""

    def _recent(self, address: str, now: float) -> deque[float] | None:
        times = self._failures.get(address)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        return times

    def retry_after(self, address: str) -> float | None:
        """Seconds until this address may try again, or None when it may try now."""
        now = self._monotonic()
        times = self._recent(address, now)
        if times is None or len(times) < self.max_failures:
            return None
        self.refusals_total += 1
        return max(times[0] + self.window_s - now, 0.001)

    def record_failure(self, address: str) -> None:
        self.failures_total += 1
        now = self._monotonic()
        times = self._recent(address, now)
        if times is None:
            times = deque(maxlen=self.max_failures)
            self._failures[address] = times
        times.append(now)
        self._failures.move_to_end(address)
        while len(self._failures) > self._max_addresses:
            self._failures.popitem(last=False)


# --------------------------------------------------------------------------------------------------
# CLI: ``wardwatch server token create|list|revoke`` (registered by the server command)


def register_token_command(server_subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``token create|list|revoke`` under the ``wardwatch server`` command's subparsers.

    Each leaf sets ``run`` (args -> exit status) like every wardwatch command; ``--config`` is read from
    the leaf's own option (default: environment and built-in defaults)."""
    token = server_subparsers.add_parser("token", help="create, list or revoke API tokens")
    actions = token.add_subparsers(title="token commands", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="create a token and print it once")
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument("--name", required=True, help="account id the token acts as (e.g. alice)")
    create.add_argument("--config", type=Path, default=None, help="server.toml")
    create.set_defaults(run=_run_create)

    listing = actions.add_parser("list", help="list tokens (key id, account, role; never the secret)")
    listing.add_argument("--config", type=Path, default=None, help="server.toml")
    listing.set_defaults(run=_run_list)

    revoke = actions.add_parser("revoke", help="revoke a token by its key id")
    revoke.add_argument("key_id")
    revoke.add_argument("--config", type=Path, default=None, help="server.toml")
    revoke.set_defaults(run=_run_revoke)


async def _with_sessions(config: Path | None, job: Callable[[async_sessionmaker[AsyncSession]], Any]) -> Any:
    from server.process import WorkerSettings  # the same file `wardwatch server --config` reads
    from server.storage import create_engine, migrate, session_factory

    settings = WorkerSettings.load(config)
    engine = create_engine(settings.database_url)
    try:
        if settings.database.migrate_on_start:
            await migrate(engine)
        return await job(session_factory(engine))
    finally:
        await engine.dispose()


def _run_create(args: argparse.Namespace) -> int:
    async def job(sessions: async_sessionmaker[AsyncSession]) -> str:
        return await create_token(sessions, args.role, args.name)

    try:
        token = asyncio.run(_with_sessions(args.config, job))
    except TokenError as exc:
        print(f"wardwatch server token create: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _run_list(args: argparse.Namespace) -> int:
    async def job(sessions: async_sessionmaker[AsyncSession]) -> Sequence[ApiToken]:
        async with sessions() as session:
            return await list_tokens(session)

    for row in asyncio.run(_with_sessions(args.config, job)):
        state = f"revoked {row.revoked_at.isoformat()}" if row.revoked_at else "active"
        print(f"{row.key_id}  {row.name}  {row.role}  created {row.created_at.isoformat()}  {state}")
    return 0


def _run_revoke(args: argparse.Namespace) -> int:
    async def job(sessions: async_sessionmaker[AsyncSession]) -> bool:
        return await revoke_token(sessions, args.key_id)

    if not asyncio.run(_with_sessions(args.config, job)):
        print(f"wardwatch server token revoke: no active token with key id {args.key_id}", file=sys.stderr)
        return 1
    return 0
