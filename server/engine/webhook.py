"""Webhook requests: the body is the AlertEvent's JSON, signed with HMAC-SHA256.

Headers of every POST::

    Content-Type: application/json
    X-WardWatch-Delivery: <the AlertEvent's message_id; the same on every retry, so receivers dedup>
    X-WardWatch-Timestamp: <Unix seconds when this attempt was signed>
    X-WardWatch-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

A receiver recomputes the signature over the timestamp and the raw body with the shared secret, compares
in constant time (:func:`verify`) and refuses timestamps far from its clock (a replayed request).
Any 2xx answer is a delivery; anything else, or no answer within the timeout, is retried with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final, Protocol

import httpx

SIGNATURE_HEADER: Final = "X-WardWatch-Signature"
TIMESTAMP_HEADER: Final = "X-WardWatch-Timestamp"
DELIVERY_HEADER: Final = "X-WardWatch-Delivery"
SIGNATURE_PREFIX: Final = "sha256="


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>`` over ``"<timestamp>." + body``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance_s: float = 300
) -> bool:
    """What a receiver does: a well-formed, fresh timestamp and a signature that matches."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs(now - stamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature)


def headers(secret: str, timestamp: int, body: bytes, delivery_id: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


class WebhookError(Exception):
    """A webhook attempt failed: no answer, or an answer that is not 2xx (``status`` then set)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class WebhookTransport(Protocol):
    """Sends one POST; raises WebhookError unless the receiver answered 2xx."""

    async def post(self, url: str, body: bytes, headers: dict[str, str], *, timeout_s: float) -> None: ...


class HttpxTransport:
    """The real transport (one pooled httpx client; call :meth:`aclose` when done)."""

    def __init__(self) -> None:
        self._client = httpx.AsyncClient(follow_redirects=False)

    async def post(self, url: str, body: bytes, headers: dict[str, str], *, timeout_s: float) -> None:
        try:
            response = await self._client.post(url, content=body, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise WebhookError(f"POST {url}: {type(exc).__name__}: {exc}") from exc
        if not response.is_success:
            raise WebhookError(f"POST {url}: HTTP {response.status_code}", status=response.status_code)

    async def aclose(self) -> None:
        await self._client.aclose()
