"""`wardwatch agent check` and `wardwatch sim home` as a user runs them."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from support.broker import MosquittoBroker

from edge_agent.mqtt import MqttClient, MqttSettings
from edge_agent.protocol import gateway_filter

WARDWATCH = str(Path(sys.executable).with_name("wardwatch"))


def gateway_toml(tmp_path: Path, broker_url: str, devices: str, tls: bool = True) -> Path:
    for name in ("ca.pem", "gw.pem", "gw.key"):
        (tmp_path / name).write_text("placeholder")
    broker = (
        f'url = "mqtts://broker:8883"\nca_file = "{tmp_path / "ca.pem"}"\n'
        f'cert_file = "{tmp_path / "gw.pem"}"\nkey_file = "{tmp_path / "gw.key"}"\n'
        if tls
        else f'url = "{broker_url}"\nallow_plaintext = true\n'
    )
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'gateway_id = "gw-cli"\n[broker]\n{broker}[[patients]]\nid = "pt-1"\n{devices}'
        f'[outbox]\npath = "{tmp_path / "outbox.db"}"\n'
    )
    return path


BLE = (
    '[[devices]]\nid = "oxi-1"\nkind = "ble_plx_continuous"\npatient = "pt-1"\n'
    'address = "AA:BB:CC:DD:EE:01"\n'
)
PATCH = '[[devices]]\nid = "rr-1"\nkind = "respiration_patch"\npatient = "pt-1"\n'


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WARDWATCH, *args], capture_output=True, text=True, timeout=120, check=False)


def test_check_accepts_a_good_file(tmp_path: Path) -> None:
    result = run("agent", "check", "--config", str(gateway_toml(tmp_path, "", BLE)))
    assert result.returncode == 0, result.stderr
    assert "OK: gateway gw-cli, 1 patient(s), 1 device(s)" in result.stdout


def test_check_refuses_missing_certificates_and_simulator_only_devices(tmp_path: Path) -> None:
    path = gateway_toml(tmp_path, "", BLE)
    (tmp_path / "gw.key").unlink()
    result = run("agent", "check", "--config", str(path))
    assert result.returncode == 2
    assert f"broker.key_file: {tmp_path / 'gw.key'} does not exist" in result.stderr
    patch = gateway_toml(tmp_path, "", PATCH)
    result = run("agent", "check", "--config", str(patch))
    assert result.returncode == 2
    assert "rr-1: kind respiration_patch has no driver on a real gateway" in result.stderr


def test_check_reports_validation_errors_with_key_and_fix(tmp_path: Path) -> None:
    path = gateway_toml(tmp_path, "", BLE.replace("ble_plx_continuous", "toaster"))
    result = run("agent", "check", "--config", str(path))
    assert result.returncode == 2
    assert "devices.0.kind" in result.stderr
    assert "fix: kind must be one of" in result.stderr


async def test_sim_home_runs_a_real_agent_for_a_while(broker: MosquittoBroker, tmp_path: Path) -> None:
    path = gateway_toml(tmp_path, broker.url, BLE + PATCH, tls=False)
    async with MqttClient(MqttSettings.from_url(broker.url, client_id="cli-watch")) as watcher:
        await watcher.subscribe(gateway_filter("obs", gateway_id="gw-cli"))
        process = await asyncio.create_subprocess_exec(
            *[WARDWATCH, "sim", "home", "--config", str(path), "--scenario", "copd"],
            *["--speed", "30", "--duration", "4"],
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        message = await asyncio.wait_for(anext(aiter(watcher.messages())), 60)
        assert b'"device_id":"oxi-1"' in message.payload or b'"device_id":"rr-1"' in message.payload
        _, raw_stderr = await asyncio.wait_for(process.communicate(), 60)
    stderr = raw_stderr.decode()
    assert process.returncode == 0, stderr
    assert "scenario copd" in stderr
