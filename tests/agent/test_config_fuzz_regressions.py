"""Regressions found by the fuzzer (bench/fuzz, issue 9) in gateway.toml loading: each once gave a
traceback (or was silently accepted) instead of a ConfigError naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import load_config
from edge_agent.errors import ConfigError

VALID = (
    'gateway_id = "gw-1"\n[broker]\nurl = "mqtt://localhost"\nallow_plaintext = true\n'
    '[[patients]]\nid = "pt-1"\n'
)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_bytes(VALID.replace("gw-1", "gw-\xe9").encode("latin-1"))  # was UnicodeDecodeError
    with pytest.raises(ConfigError, match=r"gateway.toml: not UTF-8 text \(byte 17\)") as caught:
        load_config(path)
    assert "fix: save the file as UTF-8" in str(caught.value)


def test_an_environment_override_that_is_not_json_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(VALID)
    monkeypatch.setenv("WARDWATCH_BROKER", "{not json")  # was pydantic_settings.SettingsError
    with pytest.raises(ConfigError, match="an environment override cannot be used") as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path)) and "WARDWATCH_" in str(caught.value)


@pytest.mark.parametrize("key", ["_env_prefix", "_secrets_dir", "_cli_parse_args"])
def test_keys_that_would_configure_the_settings_loader_are_refused(tmp_path: Path, key: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(f'{key} = "X"\n' + VALID)  # was silently taken as a pydantic-settings option
    with pytest.raises(ConfigError, match=f"{key}: not a configuration key") as caught:
        load_config(path)
    assert caught.value.key == key
