"""Webhook delivery to a real local HTTP receiver: a valid HMAC-SHA256 signature, retries with backoff,
the outcome recorded, and the dead letter after the last attempt."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from engine_support import FakeClock, RecordingPublisher, gateway_status, ingest, news2_assessment
from server_support import rows
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent import protocol
from server.engine import EscalationEngine, WebhookSettings, sign, verify
from server.engine.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from server.ingest import Ingestor

SECRET = "a-shared-secret-of-some-length"


@dataclass
class Receiver:
    """A local HTTP endpoint that answers with the next status of ``answers`` (then 200)."""

    answers: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(({key: value for key, value in self.headers.items()}, body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="webhook receiver", daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def test_signature_golden_vector_and_verify() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET.encode(), b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert sign(SECRET, 1_700_000_000, body) == f"sha256={expected}"
    signature = sign(SECRET, 1_700_000_000, body)
    assert verify(SECRET, "1700000000", body, signature, now=1_700_000_100)
    assert not verify(SECRET, "1700000000", body + b" ", signature, now=1_700_000_100)
    assert not verify("another-secret-entirely", "1700000000", body, signature, now=1_700_000_100)
    assert not verify(SECRET, "1700000000", body, signature, now=1_700_001_000)  # stale
    assert not verify(SECRET, "soon", body, signature, now=1_700_000_000)


async def test_webhook_receives_signed_alert_events_and_retries_with_backoff(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str, receiver: Receiver
) -> None:
    receiver.answers = [503]
    clock, publisher = FakeClock(), RecordingPublisher()
    hook = WebhookSettings(
        name="pager",
        url=f"http://127.0.0.1:{receiver.port}/hook",
        secret=SECRET,
        backoff_initial_s=2,
        backoff_max_s=2,
    )
    engine = EscalationEngine(sessions, publisher=publisher, clock=clock, webhooks=[hook])
    try:
        birth = gateway_status(gateway_id, "birth", sent_at=clock.now)
        await engine.handle_outcome(await ingest(ingestor, birth, clock.now))
        high = news2_assessment(gateway_id, 0, patient_id="pt-hook", assessed_at=clock.now)
        await engine.handle_outcome(await ingest(ingestor, high, clock.now))

        assert await engine.drain() == 0  # the cc topic's copy went out at once after the commit
        assert len(publisher.alert_events()) == 1
        assert await engine.deliver_pending() == 1  # the webhook is the delivery loop's
        (status, attempts, error) = (
            await rows(
                sessions, "SELECT status, attempts, last_error FROM alert_deliveries WHERE sink = 'webhook'"
            )
        )[0]
        assert (status, attempts) == ("pending", 1) and "503" in error

        clock.advance(0.9)
        assert await engine.deliver_pending() == 0  # the backoff (1..2 s) has not passed
        clock.advance(1.2)
        assert await engine.deliver_pending() == 1
        (status, attempts, delivered_at) = (
            await rows(
                sessions, "SELECT status, attempts, delivered_at FROM alert_deliveries WHERE sink = 'webhook'"
            )
        )[0]
        assert (status, attempts) == ("delivered", 2) and delivered_at is not None

        assert len(receiver.requests) == 2
        for headers, body in receiver.requests:
            stamp = headers[TIMESTAMP_HEADER]
            assert verify(SECRET, stamp, body, headers[SIGNATURE_HEADER], now=clock.now.timestamp())
            assert abs(int(stamp) - clock.now.timestamp()) < 5
            event = protocol.decode(protocol.AlertEvent, body)
            assert (event.action, event.patient_id, event.priority) == ("raised", "pt-hook", "high")
            assert headers[DELIVERY_HEADER] == str(event.message_id)
        assert receiver.requests[0][1] == receiver.requests[1][1]  # a retry sends the same event
        assert json.loads(receiver.requests[0][1])["message_id"] == receiver.requests[0][0][DELIVERY_HEADER]
    finally:
        await engine.aclose()


async def test_a_webhook_that_keeps_failing_is_dead_lettered(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str, receiver: Receiver
) -> None:
    receiver.answers = [500, 500, 500]
    clock = FakeClock()
    hook = WebhookSettings(
        name="pager", url=f"http://127.0.0.1:{receiver.port}/", secret=SECRET, max_attempts=3, backoff_max_s=1
    )
    engine = EscalationEngine(sessions, publisher=RecordingPublisher(), clock=clock, webhooks=[hook])
    try:
        death = gateway_status(gateway_id, "death", sent_at=clock.now)
        await engine.handle_outcome(await ingest(ingestor, death, clock.now))
        for _ in range(5):
            await engine.deliver_pending()
            clock.advance(2)
        (status, attempts, error) = (
            await rows(
                sessions, "SELECT status, attempts, last_error FROM alert_deliveries WHERE sink = 'webhook'"
            )
        )[0]
        assert (status, attempts) == ("failed", 3) and "500" in error
        assert len(receiver.requests) == 3
        assert engine.counters.deliveries_failed == 1
    finally:
        await engine.aclose()


async def test_a_slow_receiver_does_not_hold_up_the_other_deliveries(
    sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor, gateway_id: str
) -> None:
    """The delivery loop sends its rows concurrently: the first receiver answers only once the second
    has been called (sent one after the other, this would never finish)."""
    second_called = asyncio.Event()
    posted: list[str] = []

    class Transport:
        async def post(self, url: str, body: bytes, headers: dict[str, str], *, timeout_s: float) -> None:
            posted.append(url)
            if url.endswith("/slow"):
                await second_called.wait()
            else:
                second_called.set()

    clock, publisher = FakeClock(), RecordingPublisher()
    hooks = [
        WebhookSettings(name="slow", url="http://127.0.0.1:9/slow", secret=SECRET),
        WebhookSettings(name="fast", url="http://127.0.0.1:9/fast", secret=SECRET),
    ]
    engine = EscalationEngine(
        sessions, publisher=publisher, clock=clock, webhooks=hooks, webhook_transport=Transport()
    )
    birth = gateway_status(gateway_id, "birth", sent_at=clock.now)
    await engine.handle_outcome(await ingest(ingestor, birth, clock.now))
    high = news2_assessment(gateway_id, 0, patient_id="pt-slow-hook", assessed_at=clock.now)
    await engine.handle_outcome(await ingest(ingestor, high, clock.now))

    assert await asyncio.wait_for(engine.deliver_pending(), 10) == 2
    assert posted == ["http://127.0.0.1:9/slow", "http://127.0.0.1:9/fast"]
    statuses = await rows(sessions, "SELECT target, status FROM alert_deliveries WHERE sink = 'webhook'")
    assert sorted(tuple(row) for row in statuses) == [("fast", "delivered"), ("slow", "delivered")]
