from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.cli import build_parser, main


def test_help_lists_registered_commands_only(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "schema" in out
    registered = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert "schema" in registered


def test_console_script_is_installed_and_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("wardwatch")
    result = subprocess.run(
        [str(script), "schema", "--out", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ObservationBatch.json").is_file()


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["no-such-command"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_only_the_command_being_run_is_loaded() -> None:
    from edge_agent.cli import _command_named

    assert _command_named(["--log-level", "DEBUG", "agent", "check", "--config", "x"]) == "agent"
    assert _command_named(["--help"]) is None
    only = build_parser(only="schema")._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(only) == {"schema"}
    everything = build_parser(only="no-such")._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"schema", "agent"} <= set(everything)
