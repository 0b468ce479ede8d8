"""The live event stream over a real HTTP server (uvicorn on a loopback socket), and the broadcaster."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from conftest import SQLITE_ONLY, Api, make_api
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.api import ApiSettings, Broadcaster
from server.api.events import CLOSED, RESYNC
from server.ingest import Ingestor


async def _next_event(lines: AsyncIterator[str]) -> tuple[str, dict[str, object]]:
    kind = ""
    async for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            return kind, json.loads(line.removeprefix("data: "))
    raise AssertionError("stream ended")


async def _until_connected(lines: AsyncIterator[str]) -> None:
    async for line in lines:
        if line == ": connected":
            return
    raise AssertionError("stream ended before it was connected")


@pytest.fixture
async def served(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor
) -> AsyncIterator[tuple[Api, str]]:
    api, close = await make_api(sessions, ingestor, settings=ApiSettings(events_keepalive_s=0.2))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # connections queue here until uvicorn accepts them: no start-up race
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api.app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[listener]), name="uvicorn-under-test")
    try:
        yield api, f"http://127.0.0.1:{port}"
    finally:
        api.broadcaster.close()  # ends open streams, so the server can stop
        server.should_exit = True
        await task
        listener.close()
        await close()


@SQLITE_ONLY
async def test_stream_delivers_published_events_with_header_auth(served: tuple[Api, str]) -> None:
    api, url = served
    async with (
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", "/api/events", headers=api.auth("viewer")) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        lines = response.aiter_lines()
        await _until_connected(lines)

        api.broadcaster.publish("alert", {"alert_id": "a-1", "action": "raised", "priority": "high"})
        api.broadcaster.publish("patient", {"patient_id": "pt-1", "risk": "medium"})

        assert await _next_event(lines) == (
            "alert",
            {"alert_id": "a-1", "action": "raised", "priority": "high"},
        )
        assert await _next_event(lines) == ("patient", {"patient_id": "pt-1", "risk": "medium"})
        api.broadcaster.close()
        assert await _next_event(lines) == (CLOSED, {})


@SQLITE_ONLY
async def test_stream_ends_when_its_token_is_revoked(served: tuple[Api, str]) -> None:
    api, url = served
    async with (
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", "/api/events", headers=api.auth("viewer")) as response,
    ):
        lines = response.aiter_lines()
        await _until_connected(lines)
        key_id = api.tokens["viewer"].split("_")[1]
        revoked = await client.delete(f"/api/tokens/{key_id}", headers=api.auth("admin"))
        assert revoked.status_code == 204

        assert await _next_event(lines) == (CLOSED, {"reason": "token revoked"})


@SQLITE_ONLY
async def test_stream_with_a_single_use_ticket(served: tuple[Api, str]) -> None:
    api, url = served
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        ticket = (await client.post("/api/events/ticket", headers=api.auth("nurse"))).json()["ticket"]
        async with client.stream("GET", "/api/events", params={"ticket": ticket}) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            await _until_connected(lines)
            api.broadcaster.publish("alert", {"alert_id": "a-2"})
            assert await _next_event(lines) == ("alert", {"alert_id": "a-2"})
            reused = await client.get("/api/events", params={"ticket": ticket})
            assert reused.status_code == 401
            assert (await client.get("/api/events")).status_code == 401


async def test_a_slow_subscriber_gets_resync_instead_of_unbounded_memory() -> None:
    broadcaster = Broadcaster(queue_size=3)
    async with broadcaster.subscribe() as slow, broadcaster.subscribe() as fast:
        broadcaster.publish("alert", {"n": 0})
        assert (await fast.next()).data == {"n": 0}
        for n in range(1, 10):
            broadcaster.publish("alert", {"n": n})
            assert (await fast.next()).data == {"n": n}

        received = [await slow.next() for _ in range(3)]
        # The queue held 0, 1, 2; at 3 the oldest made room for the resync, and 4..9 were dropped.
        assert [event.data for event in received[:2]] == [{"n": 1}, {"n": 2}]
        assert received[2].kind == RESYNC
        broadcaster.publish("alert", {"n": 10})  # caught up: events flow again
        assert (await slow.next()).data == {"n": 10}
    assert broadcaster.subscriber_count == 0
