"""A server worker's two MQTT connections can carry two certificates (one identity each)."""

from __future__ import annotations

from pathlib import Path

from server.engine.settings import BrokerSettings


def test_ingest_connection_uses_its_own_certificate_when_given(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("ca", "pub.pem", "pub.key", "ingest.pem", "ingest.key")}
    settings = BrokerSettings(
        url="mqtts://broker:8883",
        ca_file=files["ca"],
        cert_file=files["pub.pem"],
        key_file=files["pub.key"],
        ingest_cert_file=files["ingest.pem"],
        ingest_key_file=files["ingest.key"],
    )
    publish = settings.mqtt("wardwatch-server-1-pub")
    ingest = settings.mqtt("wardwatch-server-1-ingest", connection="ingest")
    assert publish.tls is not None
    assert ingest.tls is not None
    assert (publish.tls.cert_file, publish.tls.key_file) == (files["pub.pem"], files["pub.key"])
    assert (ingest.tls.cert_file, ingest.tls.key_file) == (files["ingest.pem"], files["ingest.key"])


def test_one_certificate_serves_both_connections_when_no_ingest_certificate_is_set(tmp_path: Path) -> None:
    settings = BrokerSettings(
        url="mqtts://broker:8883", ca_file=tmp_path / "ca", cert_file=tmp_path / "c", key_file=tmp_path / "k"
    )
    ingest = settings.mqtt("x-ingest", connection="ingest")
    assert ingest.tls is not None
    assert ingest.tls.cert_file == tmp_path / "c"


def test_broker_protocol_version_applies_to_both_connections() -> None:
    broker = BrokerSettings(url="mqtt://127.0.0.1:1883", protocol_version="3.1.1")
    publish, ingest = broker.mqtt("w1-pub"), broker.mqtt("w1-ingest", connection="ingest")
    assert (publish.protocol_version, ingest.protocol_version) == ("3.1.1", "3.1.1")
    assert BrokerSettings().mqtt("w1-pub").protocol_version == "5"
