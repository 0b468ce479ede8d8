"""Authentication on every route, the role check, the API's audit records, and HTTP security headers.

A request proves who it is with ``Authorization: Bearer <token>``. Missing or wrong tokens are failed
sign-ins: each counts against the client's address, and an address with too many recent failures gets
429 with ``Retry-After`` before its token is even looked at (so guessing is slow as well as hopeless).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.context import API_PREFIX, ApiContext, ApiError
from server.auth import ROLE_PERMISSIONS, Account, ApiAuditRecord, Permission, Role, may

logger = logging.getLogger(__name__)

WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def context_of(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def client_address(request: Request, context: ApiContext) -> str:
    if context.settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.client.host if request.client is not None else "unknown"


def _roles_with(permission: Permission) -> str:
    return ", ".join(role.value for role in Role if permission in ROLE_PERMISSIONS[role])


async def authenticate(request: Request, *, token: str | None = None) -> Account:
    """The account behind the request's bearer token (or ``token`` when given), or ApiError 401/429."""
    context = context_of(request)
    address = client_address(request, context)
    wait = context.limiter.retry_after(address)
    if wait is not None:
        raise ApiError(
            429,
            "rate_limited",
            f"too many failed sign-ins from this address; try again in {math.ceil(wait)} s",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    if token is None:
        header = request.headers.get("authorization")
        if header is None:
            context.limiter.record_failure(address)
            raise ApiError(
                401,
                "unauthorized",
                "missing Authorization header; send 'Authorization: Bearer <token>'",
                problems=[("header.authorization", "missing")],
                headers={"WWW-Authenticate": "Bearer"},
            )
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            context.limiter.record_failure(address)
            raise ApiError(
                401,
                "unauthorized",
                "the Authorization header must be 'Bearer <token>'",
                problems=[("header.authorization", "not a bearer token")],
                headers={"WWW-Authenticate": 'Bearer error="invalid_request"'},
            )
        token = token.strip()
    account = await context.verifier.verify(token)
    if account is None:
        context.limiter.record_failure(address)
        logger.info("rejected API token from %s", address)
        raise ApiError(
            401,
            "unauthorized",
            "the token is unknown, revoked or wrong",
            problems=[("header.authorization", "invalid token")],
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    request.state.account = account
    return account


def require(permission: Permission) -> Callable[[Request], Awaitable[Account]]:
    """A FastAPI dependency: the caller's account, which must have ``permission`` (else 401/403)."""

    async def dependency(request: Request) -> Account:
        account = await authenticate(request)
        if not may(account.role, permission):
            if request.method in WRITE_METHODS:
                await write_audit(request, account, target=request.url.path, outcome="forbidden")
            raise ApiError(
                403,
                "forbidden",
                f"role {account.role} may not {permission.value.replace('_', ' ')} "
                f"(allowed: {_roles_with(permission)})",
            )
        return account

    dependency.__name__ = f"require_{permission.value}"
    return dependency


def forbid(account: Account, message: str) -> ApiError:
    return ApiError(403, "forbidden", f"role {account.role} {message}")


async def write_audit(
    request: Request,
    account: Account,
    *,
    target: str,
    outcome: str,
    detail: dict[str, Any] | None = None,
    note: str | None = None,
) -> None:
    """Append one record of an API write (or refused write) to ``api_audit``.

    ``detail`` must not hold a display name; say that one was set instead."""
    context = context_of(request)
    route = request.scope.get("route")
    template = str(getattr(route, "path", request.url.path))
    if request.url.path.startswith(API_PREFIX + "/") and not template.startswith(API_PREFIX + "/"):
        template = API_PREFIX + template  # routers are included under the prefix
    async with context.sessions() as session, session.begin():
        session.add(
            ApiAuditRecord(
                at=context.clock(),
                actor=account.name,
                role=account.role.value,
                method=request.method,
                route=str(template)[:200],
                target=target[:200],
                outcome=outcome[:32],
                detail=detail,
                note=note,
            )
        )


# --------------------------------------------------------------------------------------------------
# Headers

SECURITY_HEADERS: Final = (
    (
        b"content-security-policy",
        b"default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


class SecurityHeaders:
    """Pure ASGI middleware (it does not buffer, so event streams flow): security headers on every
    response, and ``Cache-Control: no-store`` on everything but ``/static/`` assets (health data must
    not sit in a browser or proxy cache)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        # Everything the app serves may carry health data (API, FHIR, the page's data): never cached,
        # except the page's static assets.
        no_store = not path.startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in {h for h, _ in SECURITY_HEADERS}
                    and (not no_store or name.lower() != b"cache-control")
                ]
                headers.extend(SECURITY_HEADERS)
                if no_store:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Pure ASGI middleware: a request body larger than ``max_bytes`` gets 413 before the app parses
    it (by Content-Length, or by counting a chunked body as it arrives), so a hostile client cannot make
    the server hold an unbounded JSON document in memory."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, send: Send) -> None:
        body = (
            b'{"error":{"status":413,"code":"payload_too_large","message":"the request body is larger than '
            + str(self.max_bytes).encode()
            + b' bytes","problems":[{"where":"body","problem":"too large"}]}}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await self._too_large(send)
                    return
        received = 0
        exceeded = False

        async def counting_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                return await receive()  # after the stump only a disconnect listener asks (no busy loop)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # End the body here; whatever the app answers to the stump is replaced by 413.
                    exceeded = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        replaced = False

        async def checked_send(message: Message) -> None:
            nonlocal replaced
            if exceeded:
                if not replaced and message["type"] == "http.response.start":
                    replaced = True
                    await self._too_large(send)
                return
            await send(message)

        await self.app(scope, counting_receive, checked_send)
