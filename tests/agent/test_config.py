"""gateway.toml validation: good files load; every bad one names the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "gateway.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


MINIMAL = """
gateway_id = "gw-1"
[broker]
url = "mqtts://broker:8883"
ca_file = "/ca.pem"
cert_file = "/gw.pem"
key_file = "/gw.key"
[[patients]]
id = "pt-1"
"""


def test_the_shipped_example_is_valid() -> None:
    config = load_config(EXAMPLE)
    assert config.gateway_id == "gw-0001"
    assert {d.kind for d in config.devices} >= {"ble_plx_continuous", "masimo"}


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert config.heartbeat_interval_s == 30
    assert config.outbox.quota_mb == 512
    assert config.patients[0].spo2_scale == 1


@pytest.mark.parametrize(
    ("change", "key", "fix"),
    [
        (("mqtts://broker:8883", "mqtt://broker:1883"), "broker.url", "use mqtts://"),
        (('gateway_id = "gw-1"', 'gateway_id = "gw/1"'), "gateway_id", "certificate CN"),
        (('id = "pt-1"', 'id = "Jane Doe"'), "patients.0.id", "pseudonym"),
        (('key_file = "/gw.key"', ""), "broker.url", "broker.key_file"),
        (("[[patients]]", "[[patients]]\nname = 'x'"), "patients.0.name", "pseudonym"),
    ],
)
def test_errors_name_file_key_and_fix(tmp_path: Path, change: tuple[str, str], key: str, fix: str) -> None:
    path = write(tmp_path, MINIMAL.replace(*change))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {key}")
    assert fix in message
    assert error.value.key == key


def test_device_errors(tmp_path: Path) -> None:
    bad_kind = MINIMAL + '[[devices]]\nid = "d1"\nkind = "toaster"\npatient = "pt-1"\npath = "/dev/x"\n'
    with pytest.raises(ConfigError, match=r"devices\.0\.kind.*\n  fix: kind must be one of ble_heart_rate"):
        load_config(write(tmp_path, bad_kind))
    no_address = MINIMAL + '[[devices]]\nid = "d1"\nkind = "ble_scale"\npatient = "pt-1"\n'
    with pytest.raises(ConfigError, match="needs address"):
        load_config(write(tmp_path, no_address))
    stranger = MINIMAL + '[[devices]]\nid = "d1"\nkind = "masimo"\npatient = "pt-2"\npath = "/dev/x"\n'
    with pytest.raises(ConfigError, match="not in patients"):
        load_config(write(tmp_path, stranger))


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "gateway_id = "))


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDWATCH_HEARTBEAT_INTERVAL_S", "10")
    monkeypatch.setenv("WARDWATCH_BROKER__URL", "mqtts://other:8883")
    config = load_config(write(tmp_path, MINIMAL))
    assert config.heartbeat_interval_s == 10
    assert config.broker.url == "mqtts://other:8883"
    assert config.broker.ca_file == Path("/ca.pem")


def test_broker_protocol_version_reaches_the_mqtt_settings(tmp_path: Path) -> None:
    from edge_agent.mqtt import Will
    from edge_agent.service import Agent

    assert load_config(write(tmp_path, MINIMAL)).broker.protocol_version == "5"
    older = load_config(write(tmp_path, MINIMAL.replace("[broker]", '[broker]\nprotocol_version = "3.1.1"')))
    assert older.broker.protocol_version == "3.1.1"
    will = Will(topic="wardwatch/v1/gw/gw-1/status", payload=b"death")
    agent = Agent(older, device_factory=lambda _device: pytest.fail("no device is opened"))
    mqtt = agent._mqtt_settings(will)
    assert (mqtt.protocol_version, mqtt.persistent_session) == ("3.1.1", True)
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, MINIMAL.replace("[broker]", '[broker]\nprotocol_version = "4"')))
    assert error.value.key == "broker.protocol_version"
