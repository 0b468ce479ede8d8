"""Server configuration: database, ingest and retention (pydantic-settings, keyword-only, validated).

Values come, highest priority first, from keyword arguments, environment variables
(``WARDWATCH_SERVER_DATABASE__URL``, ``WARDWATCH_SERVER_INGEST__SHARE_GROUP``, …: prefix
``WARDWATCH_SERVER_``, ``__`` between levels) and a TOML file (``ServerSettings.load(path)``), e.g.::

    state_dir = "/var/lib/wardwatch"

    [database]
    url = "postgresql+asyncpg://wardwatch@db.internal/wardwatch"

    [ingest]
    share_group = "wardwatch-ingest"

    [retention]
    observations_days = 90

With nothing configured the server keeps a SQLite database in its state directory.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from edge_agent.errors import ConfigError
from edge_agent.protocol import MAX_PAYLOAD_BYTES

ENV_PREFIX = "WARDWATCH_SERVER_"
DATABASE_FILE_NAME = "wardwatch.db"


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/wardwatch`` or ``~/.local/state/wardwatch``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "wardwatch"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str | None = None
    """SQLAlchemy async URL: ``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://user@host/db``.

    None means a SQLite file named wardwatch.db in the state directory."""
    pool_size: int = Field(default=16, ge=1, le=100)
    """Connections a server process keeps open (PostgreSQL): ingest alone runs 8 transactions at once, and
    the engine's decisions, deliveries and timers run beside them. Enough that a busy worker does not
    open and close connections all the time (a new one costs PostgreSQL a process and the worker a few
    round trips before its first statement)."""
    max_overflow: int = Field(default=4, ge=0, le=100)
    """Connections opened beyond ``pool_size`` at peaks, closed when returned."""
    busy_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """How long a SQLite writer waits for another writer before giving up."""
    echo: bool = False
    """Log every SQL statement (debugging only)."""
    migrate_on_start: bool = True
    """Upgrade the schema to the newest migration when the server starts."""

    @model_validator(mode="after")
    def _async_driver(self) -> Self:
        if self.url is not None and not self.url.startswith(("sqlite+aiosqlite:", "postgresql+asyncpg:")):
            raise ValueError(
                "database.url must start with 'sqlite+aiosqlite:' or 'postgresql+asyncpg:' "
                f"(an asyncio driver), got {self.url.split(':', 1)[0]!r}"
            )
        return self


class IngestSettings(_Section):
    share_group: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] | None = (
        "wardwatch-ingest"
    )
    """MQTT shared-subscription group: every worker with the same group splits the gateways' traffic.

    None subscribes without ``$share/`` (one worker only: several would each store every message once
    and see the rest as duplicates)."""
    max_payload_bytes: int = Field(default=MAX_PAYLOAD_BYTES, ge=1024, le=MAX_PAYLOAD_BYTES)
    """Payloads larger than this go to the dead-letter table unread."""
    dead_letter_payload_bytes: int = Field(default=64 * 1024, ge=0, le=MAX_PAYLOAD_BYTES)
    """How much of a rejected payload the dead-letter table keeps (its full size is recorded too)."""
    storage_attempts: int = Field(default=3, ge=1, le=20)
    """Attempts at a transaction that failed on a lock, deadlock or lost connection before giving up
    (the message is then not acknowledged, so the broker delivers it again)."""
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    """Messages the broker may have in flight to this worker unacknowledged (the MQTT 5 Receive Maximum;
    the worker also stops reading past it). Enough for the consumer's concurrent batches
    (8 transactions of up to 100) plus the next ones forming; beyond it messages wait in the broker."""
    session_expiry_s: int = Field(default=60, ge=0, le=24 * 3600)
    """How long the broker keeps a worker's ingest session (its subscriptions, its unacknowledged and
    queued messages) after the worker disconnects. A restarted worker that is back within this time gets
    them at once. A shared subscription keeps handing a disconnected worker its share of the traffic
    until the session expires, so a long expiry lets a worker that is gone for good hold messages that
    the others could store: after expiry the gateways' receipt timeout sends those again (nothing is
    lost either way; this bounds the delay to about expiry + the gateways' receipt_timeout_s)."""


class RetentionSettings(_Section):
    """How long rows are kept; ``None`` keeps them forever. Alerts and the audit log are never purged."""

    observations_days: float | None = Field(default=400, gt=0)
    assessments_days: float | None = Field(default=400, gt=0)
    events_days: float | None = Field(default=400, gt=0)
    received_messages_days: float | None = Field(default=400, gt=0)
    """The dedup window: a replay older than this would be stored again if its content was purged."""
    dead_letters_days: float | None = Field(default=30, gt=0)
    filled_gaps_days: float | None = Field(default=30, gt=0)
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    """Rows deleted per transaction, so a purge never holds long locks."""

    @model_validator(mode="after")
    def _dedup_outlives_content(self) -> Self:
        window = self.received_messages_days
        for name in ("observations_days", "assessments_days", "events_days"):
            kept = getattr(self, name)
            if window is not None and (kept is None or kept > window):
                raise ValueError(
                    f"retention.received_messages_days ({window}) must be at least retention.{name} "
                    f"({kept}), or a replayed message could be stored twice"
                )
        return self


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True
    )

    state_dir: Path = Field(default_factory=default_state_dir)
    database: DatabaseSettings = DatabaseSettings()
    ingest: IngestSettings = IngestSettings()
    retention: RetentionSettings = RetentionSettings()

    @property
    def database_url(self) -> str:
        """The configured URL, or the SQLite file in the state directory."""
        if self.database.url is not None:
            return self.database.url
        return f"sqlite+aiosqlite:///{self.state_dir / DATABASE_FILE_NAME}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keyword arguments (the file's contents, see load) yield to the environment, as 12-factor
        # deployments expect; no .env or secrets directory is read implicitly.
        return env_settings, init_settings

    @classmethod
    def load(cls, path: Path | None = None) -> ServerSettings:
        """Settings from a TOML file (if given) overridden by the environment.

        Raises ConfigError naming the file, the key and what is wrong."""
        data: dict[str, Any] = {}
        where = str(path) if path is not None else "the environment"
        if path is not None:
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise ConfigError(f"{path}: cannot read: {exc.strerror}", path=str(path)) from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"{path}: not valid TOML: {exc}", path=str(path)) from None
        try:
            return cls(**data)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            key = ".".join(str(part) for part in first["loc"]) or "(top level)"
            count = len(exc.errors())
            more = f" (and {count - 1} more problems)" if count > 1 else ""
            raise ConfigError(
                f"{where}: {key}: {first['msg']}{more}; environment variables use the prefix "
                f"{ENV_PREFIX} with '__' between levels",
                path=str(path) if path is not None else None,
                key=key,
            ) from None
