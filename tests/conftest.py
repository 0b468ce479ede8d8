from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from support.broker import MosquittoBroker

settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("default")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A plain loopback Mosquitto per test module; tests within it isolate by topic prefix / gateway id.
    (Per module, not per session: retained statuses and offline persistent sessions left by one module's
    tests must not slow down or feed another's.)"""
    instance = MosquittoBroker(workdir=tmp_path_factory.mktemp("mosquitto"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """Start brokers owned by one test (to kill, restart or configure them); all stopped afterwards."""
    started: list[MosquittoBroker] = []

    def start(**options: object) -> MosquittoBroker:
        instance = MosquittoBroker(workdir=tmp_path / f"mosquitto-{len(started)}", **options)  # type: ignore[arg-type]
        instance.start()
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture
def topic_prefix() -> str:
    """A topic prefix no other test uses, so parallel runs never see each other's traffic."""
    return f"test/{uuid.uuid4().hex}"


@pytest.fixture
def gateway_id() -> str:
    """A gateway id unique to this test (the wire contract's topics are keyed by gateway)."""
    return f"gw-{uuid.uuid4().hex[:12]}"
