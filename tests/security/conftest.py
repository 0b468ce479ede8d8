from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from security_support import Pki, issue_test_pki, start_production_broker
from support.broker import MosquittoBroker


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return issue_test_pki(tmp_path_factory.mktemp("pki") / "ca")


@pytest.fixture
def secure_broker(
    broker_factory: Callable[..., MosquittoBroker], pki: Pki, tmp_path: Path
) -> MosquittoBroker:
    """A Mosquitto running deploy/mosquitto/mosquitto.conf and acl with the test PKI's files."""
    return start_production_broker(broker_factory, pki, tmp_path)
