"""Authentication, tokens, roles on every route, sign-in rate limiting, headers, CORS, health, 503."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import CHEAP_KDF, SQLITE_ONLY, Api, make_api
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.api import ApiSettings
from server.auth import (
    DEFAULT_KDF,
    ApiToken,
    Role,
    TokenError,
    TokenVerifier,
    create_token,
    install_token,
    parse_token,
    register_token_command,
)
from server.ingest import Ingestor
from server.storage import create_engine, session_factory

# Every route with the method and a body that passes validation; {alert}, {command} are filled in.
READ_ROUTES = [
    "/api/patients",
    "/api/patients/pt-1",
    "/api/patients/pt-1/observations",
    "/api/patients/pt-1/assessments",
    "/api/patients/pt-1/commands",
    "/api/commands/{command}",
    "/api/alerts",
    "/api/alerts/history",
    "/api/alerts/{alert}",
    "/api/gateways",
    "/api/gateways/gw-1",
    "/api/audit",
    "/api/dead-letters",
    "/api/ingest",
    "/api/tokens",
    "/api/events",
]
WRITE_ROUTES: list[tuple[str, str, dict[str, object] | None]] = [
    ("POST", "/api/alerts/{alert}/acknowledge", None),
    ("POST", "/api/alerts/{alert}/escalate", None),
    ("POST", "/api/alerts/{alert}/resolve", {"note": "x"}),
    ("POST", "/api/alerts/{alert}/snooze", {"duration_s": 60}),
    ("POST", "/api/patients/pt-1/commands", {"command": "set_oxygen", "on_oxygen": True}),
    ("POST", "/api/patients/pt-1/settings", {"on_oxygen": True}),
    ("PUT", "/api/patients/pt-1/display-name", {"display_name": None}),
    ("POST", "/api/tokens", {"name": "bob", "role": "viewer"}),
    ("DELETE", "/api/tokens/0123456789ab", None),
    ("POST", "/api/events/ticket", None),
]


def _template(path: str) -> str:
    for concrete, template in (
        ("pt-1", "{patient_id}"),
        ("gw-1", "{gateway_id}"),
        ("{alert}", "{alert_id}"),
        ("{command}", "{command_id}"),
        ("0123456789ab", "{key_id}"),
    ):
        path = path.replace(concrete, template)
    return path


def _fill(path: str) -> str:
    return path.format(alert=uuid.uuid4(), command=uuid.uuid4())


@SQLITE_ONLY
async def test_every_api_route_refuses_missing_and_wrong_tokens(api: Api) -> None:
    routes = [("GET", path, None) for path in READ_ROUTES] + WRITE_ROUTES
    documented = {
        (method.upper(), path)
        for path, operations in api.app.openapi()["paths"].items()
        for method in operations
        if path.startswith("/api/")
    }
    listed = {(method, _template(path)) for method, path, _ in routes}
    assert listed == documented, "every route is in this test"
    for token in (None, "Bearer ww_0123456789ab_wrong", "Basic dXNlcjpwYXNz", "Bearer"):
        for method, path, body in routes:
            api.monotonic.value += 61  # stay clear of the rate limit in this test
            headers = {} if token is None else {"Authorization": token}
            response = await api.client.request(method, _fill(path), headers=headers, json=body)
            assert response.status_code == 401, (method, path, token, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"]["code"] == "unauthorized"


@SQLITE_ONLY
@pytest.mark.parametrize("role", ["integration", "viewer", "nurse", "physician", "admin"])
async def test_roles_on_every_write_route(api: Api, role: str) -> None:
    """Which role passes the route's role check (it may still fail later: 404 for the unknown alert)."""
    allowed = {
        "integration": {"/api/events/ticket"},
        "viewer": {"/api/events/ticket"},
        "nurse": {"acknowledge", "resolve", "snooze", "commands", "settings", "/api/events/ticket"},
        "physician": {
            "acknowledge",
            "resolve",
            "snooze",
            "escalate",
            "commands",
            "settings",
            "/api/events/ticket",
        },
        "admin": {"acknowledge", "resolve", "snooze", "display-name", "tokens", "/api/events/ticket"},
    }[role]
    for method, path, body in WRITE_ROUTES:
        response = await api.client.request(method, _fill(path), headers=api.auth(role), json=body)
        passes = any(word in path.split("/") or word == path for word in allowed) or (
            "tokens" in allowed and path.startswith("/api/tokens")
        )
        if passes:
            assert response.status_code != 403, (role, path, response.text)
        else:
            assert response.status_code == 403, (role, path, response.text)


@SQLITE_ONLY
async def test_admin_only_reads(api: Api) -> None:
    for role in ("integration", "viewer", "nurse", "physician"):
        for path in ("/api/tokens", "/api/dead-letters", "/api/ingest"):
            assert (await api.get(path, role=role)).status_code == 403
    for path in ("/api/patients", "/api/alerts", "/api/gateways", "/api/audit"):
        for role in ("integration", "viewer", "nurse", "physician", "admin"):
            assert (await api.get(path, role=role)).status_code == 200


async def test_tokens_are_stored_as_scrypt_hashes_only(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    token = await create_token(sessions, "nurse", "alice")

    parsed = parse_token(token)
    assert parsed is not None
    async with sessions() as session:
        row = (await session.scalars(select(ApiToken))).one()
    assert row.kdf == DEFAULT_KDF.label() == "scrypt$32768$8$1"
    assert row.key_id == parsed.key_id
    assert parsed.secret.encode() not in row.secret_hash
    assert len(row.salt) == 16 and len(row.secret_hash) == 32
    verifier = TokenVerifier(sessions)
    account = await verifier.verify(token)
    assert account is not None and (account.name, account.role) == ("alice", Role.NURSE)
    assert await verifier.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert await verifier.verify(token.replace(parsed.key_id, "0" * 12)) is None


@SQLITE_ONLY
async def test_create_token_refuses_bad_roles_and_names(sessions: async_sessionmaker[AsyncSession]) -> None:
    with pytest.raises(TokenError, match="unknown role"):
        await create_token(sessions, "superuser", "alice", kdf=CHEAP_KDF)
    with pytest.raises(TokenError, match="account id"):
        await create_token(sessions, "nurse", "Alice Smith", kdf=CHEAP_KDF)


@SQLITE_ONLY
async def test_admin_creates_and_revokes_tokens_through_the_api(api: Api) -> None:
    created = await api.post("/api/tokens", role="admin", json={"name": "carol", "role": "physician"})
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    key_id = created.json()["key_id"]
    own = {"Authorization": f"Bearer {token}"}
    assert (await api.client.get("/api/alerts", headers=own)).status_code == 200
    listing = (await api.get("/api/tokens", role="admin")).json()["tokens"]
    assert "carol" in [item["name"] for item in listing]
    assert token not in str(listing)

    revoked = await api.client.delete(f"/api/tokens/{key_id}", headers=api.auth("admin"))

    assert revoked.status_code == 204
    assert (await api.client.get("/api/alerts", headers=own)).status_code == 401  # at once, despite the cache
    again = await api.client.delete(f"/api/tokens/{key_id}", headers=api.auth("admin"))
    assert again.status_code == 404
    audit = (await api.get("/api/audit", role="admin", params={"source": "api"})).json()["items"]
    assert [(e["target"], e["outcome"]) for e in audit] == [
        (f"token:{key_id}", "not_found"),
        (f"token:{key_id}", "revoked"),
        (f"token:{key_id}", "created"),
    ]


@SQLITE_ONLY
async def test_failed_sign_ins_are_rate_limited_per_address(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor
) -> None:
    api, close = await make_api(sessions, ingestor, settings=ApiSettings(sign_in_failures_per_window=10))
    other, close_other = await make_api(sessions, ingestor, address="198.51.100.7")
    try:
        wrong = {"Authorization": "Bearer ww_0123456789ab_guess"}
        for _ in range(10):
            assert (await api.client.get("/api/patients", headers=wrong)).status_code == 401
        api.monotonic.value += 30

        limited = await api.client.get("/api/patients", headers=wrong)
        good_token_too = await api.get("/api/patients")

        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) == 30
        assert good_token_too.status_code == 429  # the address is refused before any token is checked
        assert (await other.get("/api/patients")).status_code == 200  # another address is not
        api.monotonic.value += 30.5
        assert (await api.get("/api/patients")).status_code == 200  # the window has passed
    finally:
        await close()
        await close_other()


@SQLITE_ONLY
async def test_security_headers_on_every_kind_of_answer(api: Api) -> None:
    answers = [
        await api.get("/api/patients"),
        await api.client.get("/api/patients"),  # 401
        await api.get("/api/nothing-here"),  # 404
        await api.get("/api/patients", params={"x": 1}, role="viewer"),
        await api.client.get("/healthz"),
    ]
    for response in answers:
        headers = response.headers
        assert headers["content-security-policy"].startswith("default-src 'self'")
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
    assert answers[2].status_code == 404 and answers[2].json()["error"]["code"] == "not_found"


@SQLITE_ONLY
async def test_cors_is_off_unless_configured(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, api: Api
) -> None:
    origin = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    plain = await api.client.get("/api/patients", headers={**api.auth("nurse"), **origin})
    preflight = await api.client.options("/api/patients", headers=origin)
    assert "access-control-allow-origin" not in plain.headers
    assert "access-control-allow-origin" not in preflight.headers

    configured, close = await make_api(
        sessions,
        ingestor,
        settings=ApiSettings(cors_origins=("https://cc.hospital.example",)),
    )
    try:
        allowed = await configured.client.options(
            "/api/patients",
            headers={"Origin": "https://cc.hospital.example", "Access-Control-Request-Method": "GET"},
        )
        refused = await configured.client.options("/api/patients", headers=origin)
        assert allowed.headers["access-control-allow-origin"] == "https://cc.hospital.example"
        assert "access-control-allow-origin" not in refused.headers
    finally:
        await close()


async def test_health_without_auth_and_ready_when_migrated(api: Api) -> None:
    health = await api.client.get("/healthz")
    ready = await api.client.get("/readyz")

    assert (health.status_code, health.json()["status"]) == (200, "ok")
    assert (ready.status_code, ready.json()["status"]) == (200, "ok")


@SQLITE_ONLY
async def test_a_broken_database_gives_503_not_500(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor
) -> None:
    api, close = await make_api(sessions, ingestor)
    broken = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'never-migrated.db'}")
    try:
        # Same tokens, but the app now reads a database without tables (as after a failed restore).
        api.app.state.context.sessions = session_factory(broken)
        api.app.state.context.verifier._sessions = session_factory(broken)
        no_tokens = await api.get("/api/patients")
        ready = await api.client.get("/readyz")
        api.app.state.context.verifier._sessions = sessions
        api.app.state.context.verifier._cache.clear()
        reads = await api.get("/api/alerts")

        assert no_tokens.status_code == 503
        assert no_tokens.json()["error"]["code"] == "storage_unavailable"
        assert no_tokens.headers["retry-after"] == "5"
        assert ready.status_code == 503
        assert reads.status_code == 503
    finally:
        await close()
        await broken.dispose()


@SQLITE_ONLY
async def test_cli_token_create_list_revoke(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n', encoding="utf-8")
    parser = argparse.ArgumentParser(prog="wardwatch server")
    register_token_command(parser.add_subparsers())

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        status: int = await_free(args)
        return status

    def await_free(args: argparse.Namespace) -> int:
        # The command runs its own event loop; run it on a thread so the test's loop is untouched.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            result: int = pool.submit(args.run, args).result()
        return result

    assert run("token", "create", "--role", "nurse", "--name", "alice", "--config", str(config)) == 0
    token = capsys.readouterr().out.strip()
    parsed = parse_token(token)
    assert parsed is not None
    engine = create_engine(database_url)
    try:
        account = await TokenVerifier(session_factory(engine)).verify(token)
        assert account is not None and account.name == "alice"
    finally:
        await engine.dispose()
    assert run("token", "list", "--config", str(config)) == 0
    listing = capsys.readouterr().out
    assert parsed.key_id in listing and "alice" in listing and parsed.secret not in listing
    assert run("token", "revoke", parsed.key_id, "--config", str(config)) == 0
    assert run("token", "revoke", parsed.key_id, "--config", str(config)) == 1
    assert run("token", "create", "--role", "nurse", "--name", "Alice Smith", "--config", str(config)) == 2


@SQLITE_ONLY
async def test_last_use_of_a_token_is_recorded(api: Api) -> None:
    assert (await api.get("/api/alerts", role="viewer")).status_code == 200

    tokens = {item["name"]: item for item in (await api.get("/api/tokens", role="admin")).json()["tokens"]}

    assert tokens["viewer-1"]["last_used_at"] == api.clock.now.isoformat().replace("+00:00", "Z")
    assert tokens["physician-1"]["last_used_at"] is None


@SQLITE_ONLY
async def test_guessing_event_tickets_counts_as_failed_sign_ins(api: Api) -> None:
    for _ in range(10):
        assert (await api.client.get("/api/events", params={"ticket": "guess"})).status_code == 401

    limited = await api.client.get("/api/events", params={"ticket": "guess"})

    assert limited.status_code == 429


@SQLITE_ONLY
async def test_install_token_made_elsewhere(sessions: async_sessionmaker[AsyncSession]) -> None:
    token = "ww_00112233aabb_" + "s" * 43

    assert await install_token(sessions, token, "nurse", "demo-nurse", kdf=CHEAP_KDF) is True
    assert await install_token(sessions, token, "admin", "someone", kdf=CHEAP_KDF) is False
    account = await TokenVerifier(sessions).verify(token)
    assert account is not None and (account.name, account.role) == ("demo-nurse", Role.NURSE)
    with pytest.raises(TokenError, match="must look like"):
        await install_token(sessions, "letmein", "nurse", "x", kdf=CHEAP_KDF)


@SQLITE_ONLY
async def test_oversized_bodies_get_413_before_parsing(api: Api) -> None:
    big = b'{"note": "' + b"x" * 70_000 + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    declared = await api.client.post(
        f"/api/alerts/{uuid.uuid4()}/resolve",
        headers={**api.auth("physician"), "Content-Type": "application/json"},
        content=big,
    )
    streamed = await api.client.post(
        f"/api/alerts/{uuid.uuid4()}/resolve",
        headers={**api.auth("physician"), "Content-Type": "application/json"},
        content=chunks(),
    )

    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert response.json()["error"]["code"] == "payload_too_large"
        assert response.headers["x-frame-options"] == "DENY"
