"""Settings of the REST API (validated, keyword-only; the server's configuration holds them as ``[api]``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    """Address the HTTP server listens on (loopback by default; put a TLS proxy in front)."""
    port: int = Field(default=8080, ge=1, le=65535)
    cors_origins: tuple[AnyHttpUrl, ...] = ()
    """Browser origins allowed to call the API from another site. Empty (the default): CORS is off."""
    sign_in_failures_per_window: int = Field(default=10, ge=1, le=10_000)
    """Failed sign-ins (missing or wrong token) allowed per client address per window before 429."""
    sign_in_window_s: float = Field(default=60.0, gt=0, le=86_400)
    token_cache_s: float = Field(default=30.0, ge=0, le=3600)
    """How long a verified token is trusted without hashing it again; a token revoked by another
    process stops working within this time."""
    trust_forwarded_for: bool = False
    """Take the client address for rate limiting from X-Forwarded-For (only behind a trusted proxy)."""
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Largest request body accepted (413 beyond); the API's requests are small JSON documents."""
    max_page_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    events_keepalive_s: float = Field(default=15.0, gt=0, le=300)
    """Comment lines sent on an idle event stream so proxies keep it open."""
    events_queue_size: int = Field(default=1000, ge=1, le=1_000_000)
    """Events buffered per subscriber; a slower client gets a ``resync`` event instead of the excess."""
