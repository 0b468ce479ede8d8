"""Server settings: defaults, TOML file, environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.protocol import MAX_PAYLOAD_BYTES
from server.ingest import subscription_filters
from server.settings import ServerSettings


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in (
        "WARDWATCH_SERVER_DATABASE__URL",
        "WARDWATCH_SERVER_STATE_DIR",
        "WARDWATCH_SERVER_INGEST__SHARE_GROUP",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_keep_sqlite_in_the_state_directory(tmp_path: Path) -> None:
    settings = ServerSettings.load()
    assert settings.state_dir == tmp_path / "state" / "wardwatch"
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'state' / 'wardwatch' / 'wardwatch.db'}"
    assert settings.ingest.max_payload_bytes == MAX_PAYLOAD_BYTES
    assert subscription_filters(settings.ingest.share_group)[0].startswith("$share/wardwatch-ingest/")


def test_toml_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        'state_dir = "/var/lib/ww"\n'
        "[database]\n"
        'url = "postgresql+asyncpg://ww@db/ww"\n'
        "[ingest]\n"
        'share_group = "team-a"\n'
        "[retention]\n"
        "observations_days = 30\n"
    )
    settings = ServerSettings.load(path)
    assert settings.database_url == "postgresql+asyncpg://ww@db/ww"
    assert settings.ingest.share_group == "team-a"
    assert settings.retention.observations_days == 30

    monkeypatch.setenv("WARDWATCH_SERVER_INGEST__SHARE_GROUP", "team-b")
    assert ServerSettings.load(path).ingest.share_group == "team-b"


@pytest.mark.parametrize(
    ("toml", "key", "words"),
    [
        ('[database]\nurl = "postgresql://ww@db/ww"\n', "database", "asyncio driver"),
        ("[ingest]\nmax_payload_bytes = 10000000\n", "ingest.max_payload_bytes", "less than or equal"),
        ('[ingest]\nshare_group = "a/b"\n', "ingest.share_group", "pattern"),
        ("[retention]\nreceived_messages_days = 10\n", "retention", "stored twice"),
        ("[retention]\nobservation_days = 10\n", "retention.observation_days", "Extra inputs"),
        ("[database\n", None, "not valid TOML"),
    ],
)
def test_bad_configuration_names_file_and_key(tmp_path: Path, toml: str, key: str | None, words: str) -> None:
    path = tmp_path / "server.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as raised:
        ServerSettings.load(path)
    assert str(path) in str(raised.value)
    assert words in str(raised.value)
    if key is not None:
        assert raised.value.key == key


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ServerSettings.load(tmp_path / "absent.toml")
