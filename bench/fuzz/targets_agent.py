"""Targets for what the edge agent reads: commands from the server (decoded, applied to the real
patient charts, acknowledged), the server's receipts, and its configuration file.

Oracle, commands: the uplink never raises; it answers every command with an acknowledgement that is
itself a valid wire message; a valid command for a monitored patient is applied (ok), anything malformed
is refused ("rejected: ..." naming the problem) under the id the payload claimed when it claimed one, and
nothing is ever reported as "failed" (that means the handler raised). Receipts: a valid receipt for this
gateway deletes exactly its sequence numbers from the real outbox; anything else deletes nothing and
is reported in ``last_error``. Configuration: ``load_config`` returns a config or raises ``ConfigError``
whose message names the file (and for a bad value the key and a fix), whatever the file's bytes and the
``WARDWATCH_*`` environment overrides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from bench.fuzz import wire_documents as docs
from bench.fuzz.harness import Check, OracleViolation, Target, require
from bench.fuzz.mutation import hostile_json_bytes, mutate_bytes, mutate_document, random_bytes, random_json
from edge_agent.config import GatewayConfig, load_config
from edge_agent.errors import ConfigError, ProtocolError
from edge_agent.outbox import Outbox
from edge_agent.protocol import CommandAck, Receipt, decode, encode, gateway_topic
from edge_agent.service import Agent
from edge_agent.uplink import Uplink

FANOUT = 20
GATEWAY = "gw-fuzz-0"
MONITORED = ("pt-0001", "pt-0002")


def scratch_directory() -> tempfile.TemporaryDirectory[str]:
    """A temporary directory, in memory where the machine has /dev/shm (fsync is then nearly free)."""
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(prefix="wardwatch-fuzz-", dir=shm if shm.is_dir() else None)


def _config(directory: Path) -> GatewayConfig:
    return GatewayConfig(
        gateway_id=GATEWAY,
        broker={"url": "mqtt://127.0.0.1:1", "allow_plaintext": True},
        patients=[{"id": patient} for patient in MONITORED],
        outbox={"path": directory / "outbox.db"},
    )


@dataclass(frozen=True)
class Message:
    topic: str
    raw: bytes
    valid: bool

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, raw={self.raw[:3000]!r}, valid={self.valid})"


class _AgentBench:
    """The real Agent's command handler and charts, and a real Uplink and Outbox, without MQTT."""

    def __init__(self, directory: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.agent = Agent(_config(directory), device_factory=lambda *_: None)  # type: ignore[arg-type,return-value]
        self.outbox = Outbox(directory / "outbox.db", GATEWAY)
        self.acknowledged: list[list[int]] = []
        self.loop.run_until_complete(self._open())

    async def _open(self) -> None:
        await self.outbox.__aenter__()
        self.agent.outbox = self.outbox
        self.agent.charts = {
            p.id: await self.agent._chart_for(self.outbox, p) for p in self.agent.config.patients
        }
        self.uplink = Uplink(
            outbox=self.outbox,
            gateway_id=GATEWAY,
            software_version="fuzz",
            connection=lambda will: None,  # type: ignore[arg-type,return-value]
            commands=self.agent._apply_command,
        )
        real_acknowledge = self.outbox.acknowledge

        async def spy(seqs: Sequence[int]) -> None:
            self.acknowledged.append(list(seqs))
            await real_acknowledge(seqs)

        self.outbox.acknowledge = spy  # type: ignore[method-assign]

    def close(self) -> None:
        self.loop.run_until_complete(self.outbox.__aexit__(None, None, None))
        self.loop.close()


@contextlib.contextmanager
def _bench() -> Iterator[_AgentBench]:
    with scratch_directory() as directory:
        bench = _AgentBench(Path(directory))
        try:
            yield bench
        finally:
            bench.close()


# --------------------------------------------------------------------------------------------------
# Commands


@st.composite
def commands(draw: st.DrawFn) -> Message:
    document = draw(docs.command(GATEWAY))
    if draw(st.integers(0, 4)) == 0:
        document["patient_id"] = "pt-9f3a"  # a valid command for a patient this gateway does not monitor
    topic = gateway_topic(GATEWAY, "cmd", document["body"]["command"])
    return Message(topic, json.dumps(document).encode(), True)


def derive_command(message: Message, rnd: random.Random) -> Message:
    document = json.loads(message.raw)
    topic = message.topic
    if rnd.random() < 0.1:
        name = rnd.choice(["set_spo2_scale", "set_oxygen", "set_consciousness", "set_staleness"])
        topic = gateway_topic(GATEWAY, "cmd", name)
    return Message(topic, hostile_json_bytes(document, rnd), False)


def _claimed(raw: bytes) -> uuid.UUID | None:
    """The message id the payload claims, read independently of the agent's code."""
    try:
        document = json.loads(raw)
        return uuid.UUID(str(document["message_id"])) if isinstance(document, dict) else None
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def command_check(bench: _AgentBench) -> Check:
    def check(message: Message) -> str:
        command_id, ok, detail = bench.loop.run_until_complete(
            bench.uplink._apply(message.topic, message.raw)
        )
        require(isinstance(command_id, uuid.UUID), f"command id {command_id!r}")
        require(not detail.startswith("failed"), f"the command handler raised: {detail}")
        ack = bench.uplink._acknowledgement(command_id, ok, detail)  # what _serve_commands publishes
        require(decode(CommandAck, encode(ack)) == ack, "the acknowledgement does not survive the wire")
        document = None
        with contextlib.suppress(ValueError, RecursionError):
            document = json.loads(message.raw)
        if ok:
            require(isinstance(document, dict), "accepted a payload that is not a JSON object")
            assert isinstance(document, dict)
            require(document.get("patient_id") in MONITORED, "applied a command for an unmonitored patient")
            require(uuid.UUID(document["message_id"]) == command_id, "acknowledged under another id")
            return "applied"
        if message.valid:
            require(
                document is not None and document["patient_id"] not in MONITORED,
                f"valid command not applied: {detail}",
            )
            require("not monitored" in detail, f"unhelpful refusal: {detail}")
            return "refused: patient not monitored"
        require(detail.startswith("rejected: ") or "not monitored" in detail, f"unhelpful refusal: {detail}")
        claimed = _claimed(message.raw)
        if claimed is not None:
            require(command_id == claimed, f"refusal sent under {command_id}, the payload claimed {claimed}")
        return "rejected" if detail.startswith("rejected") else "refused: patient not monitored"

    return check


@contextlib.contextmanager
def _command_target() -> Iterator[Check]:
    with _bench() as bench:
        yield command_check(bench)


# --------------------------------------------------------------------------------------------------
# Receipts


@st.composite
def receipts(draw: st.DrawFn) -> Message:
    gateway = draw(st.sampled_from([GATEWAY, GATEWAY, GATEWAY, "gw-fuzz-1"]))
    document = draw(docs.receipt(gateway))
    return Message(gateway_topic(GATEWAY, "receipt"), json.dumps(document).encode(), gateway == GATEWAY)


def derive_receipt(message: Message, rnd: random.Random) -> Message:
    return Message(message.topic, hostile_json_bytes(json.loads(message.raw), rnd), False)


def receipt_check(bench: _AgentBench) -> Check:
    def check(message: Message) -> str:
        bench.acknowledged.clear()
        bench.uplink.state.last_error = None
        before = bench.uplink.state.receipted_messages
        bench.loop.run_until_complete(bench.uplink._take_receipt(message.raw))
        try:
            receipt = decode(Receipt, message.raw)
        except ProtocolError:
            require(not bench.acknowledged, "a malformed receipt deleted messages")
            error = bench.uplink.state.last_error or ""
            require(
                error.startswith("malformed receipt: invalid Receipt") or "Receipt payload" in error, error
            )
            return "malformed: ignored"
        if receipt.gateway_id != GATEWAY:
            require(not bench.acknowledged, "another gateway's receipt deleted messages")
            return "other gateway: ignored"
        require(bench.acknowledged == [receipt.seqs], f"deleted {bench.acknowledged}, receipt {receipt.seqs}")
        require(bench.uplink.state.receipted_messages == before + len(receipt.seqs), "receipt not counted")
        require(message.valid or True, "")
        return "applied"

    return check


@contextlib.contextmanager
def _receipt_target() -> Iterator[Check]:
    with _bench() as bench:
        yield receipt_check(bench)


# --------------------------------------------------------------------------------------------------
# Configuration files

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{_key(str(k))} = {_inline(v)}" for k, v in value.items() if v is not None) + "}"
        )
    return '""'


def to_toml(document: Any) -> str:
    """TOML text for a document: top-level tables and arrays of tables as sections, the rest inline
    (values TOML cannot hold, such as null, are left out)."""
    if not isinstance(document, dict):
        return f"value = {_inline(document)}\n"
    lines = []
    sections = []
    for key, value in document.items():
        if value is None:
            continue
        if isinstance(value, dict):
            sections.append(
                f"\n[{_key(key)}]\n"
                + "".join(f"{_key(k)} = {_inline(v)}\n" for k, v in value.items() if v is not None)
            )
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                sections.append(
                    f"\n[[{_key(key)}]]\n"
                    + "".join(f"{_key(k)} = {_inline(v)}\n" for k, v in item.items() if v is not None)
                )
        else:
            lines.append(f"{_key(key)} = {_inline(value)}\n")
    return "".join(lines) + "".join(sections)


@dataclass(frozen=True)
class ConfigCase:
    text: bytes
    env: tuple[tuple[str, str], ...]
    valid: bool

    def __repr__(self) -> str:
        return f"ConfigCase(text={self.text[:3000]!r}, env={self.env!r}, valid={self.valid})"


DEVICE_KINDS = ("ble_heart_rate", "ble_plx_continuous", "masimo", "contec", "respiration_patch")


@st.composite
def config_documents(draw: st.DrawFn) -> dict[str, Any]:
    patients = draw(st.lists(st.sampled_from(docs.PATIENTS), min_size=1, max_size=3, unique=True))
    devices = []
    for index in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(DEVICE_KINDS))
        device: dict[str, Any] = {
            "id": f"dev-{index}",
            "kind": kind,
            "patient": draw(st.sampled_from(patients)),
        }
        if kind.startswith("ble_"):
            device["address"] = "AA:BB:CC:DD:EE:FF"
        elif draw(st.booleans()):
            device["path"] = "/dev/ttyUSB0"
        else:
            device["usb_id"] = "0403:6001"
        devices.append(device)
    document: dict[str, Any] = {
        "gateway_id": draw(st.sampled_from(docs.GATEWAYS) | docs.ids),
        "heartbeat_interval_s": draw(st.floats(1, 3600)),
        "broker": draw(
            st.sampled_from(
                [
                    {"url": "mqtt://127.0.0.1:1883", "allow_plaintext": True},
                    {
                        "url": "mqtts://broker:8883",
                        "ca_file": "ca.pem",
                        "cert_file": "gw.pem",
                        "key_file": "gw.key",
                    },
                ]
            )
        ),
        "patients": [{"id": p, "spo2_scale": draw(st.sampled_from([1, 2]))} for p in patients],
        "devices": devices,
        "scoring": {"median_window_s": draw(st.floats(0, 3600)), "staleness_s": {"spo2": 600.0}},
        "outbox": {"quota_mb": draw(st.floats(1, 4096)), "path": "/var/lib/wardwatch/outbox.db"},
    }
    return document


ENV_KEYS = (
    "WARDWATCH_GATEWAY_ID",
    "WARDWATCH_BROKER__URL",
    "WARDWATCH_BROKER",
    "WARDWATCH_PATIENTS",
    "WARDWATCH_DEVICES",
    "WARDWATCH_OUTBOX__QUOTA_MB",
    "WARDWATCH_SCORING__STALENESS_S",
    "WARDWATCH_HEARTBEAT_INTERVAL_S",
    "WARDWATCH_LOCAL_ALERT__COMMAND",
    "WARDWATCH_NOPE",
)

config_cases = config_documents().map(lambda d: ConfigCase(to_toml(d).encode(), (), True))


def derive_config(case: ConfigCase, rnd: random.Random) -> ConfigCase:
    import tomllib

    document = tomllib.loads(case.text.decode())
    how = rnd.randrange(6)
    env: tuple[tuple[str, str], ...] = ()
    if how in (0, 1):
        text = to_toml(mutate_document(document, rnd)).encode("utf-8", "surrogatepass")
    elif how == 2:
        text = mutate_bytes(case.text, rnd, rounds=4)
    elif how == 3:
        text = random_bytes(rnd, 300)
    else:
        text = (
            case.text
            if how == 4
            else to_toml(mutate_document(document, rnd)).encode("utf-8", "surrogatepass")
        )
        names = rnd.sample(ENV_KEYS, rnd.randint(1, 3))
        env = tuple(
            (name, rnd.choice([json.dumps(random_json(rnd)), str(random_json(rnd)), "{", ""]))
            for name in names
        )
    return ConfigCase(text, env, False)


@contextlib.contextmanager
def _config_target() -> Iterator[Check]:
    saved = {key: value for key, value in os.environ.items() if key.startswith("WARDWATCH_")}
    for key in saved:
        del os.environ[key]
    with scratch_directory() as directory:
        path = Path(directory) / "gateway.toml"

        def check(case: ConfigCase) -> str:
            path.write_bytes(case.text)
            try:
                for name, value in case.env:  # the environment holds neither NUL nor lone surrogates
                    os.environ[name] = value.replace("\x00", "").encode("utf-8", "replace").decode()
                config = load_config(path)
            except ConfigError as exc:
                message = str(exc)
                require(message.startswith(str(path)), f"ConfigError does not name the file: {message[:300]}")
                require(
                    "fix:" in message
                    or "not valid TOML" in message
                    or "cannot read" in message
                    or "not UTF-8" in message
                    or "environment" in message,
                    f"ConfigError without a fix: {message[:300]}",
                )
                require(not case.valid, f"valid configuration refused: {message}")
                return "ConfigError"
            finally:
                for name, _ in case.env:
                    os.environ.pop(name, None)
            if case.valid:
                import tomllib

                document = tomllib.loads(case.text.decode())
                require(config.gateway_id == document["gateway_id"], "gateway_id not the file's")
                require(
                    [p.id for p in config.patients] == [p["id"] for p in document["patients"]], "patients"
                )
                return "loaded"
            return "loaded (mutated)"

        try:
            yield check
        finally:
            for key in [k for k in os.environ if k.startswith("WARDWATCH_")]:
                del os.environ[key]
            os.environ.update(saved)


def targets() -> list[Target]:
    return [
        Target(
            "agent_commands",
            "agent",
            commands(),
            _command_target,
            doc="Uplink._apply + Agent._apply_command: valid, mutated and arbitrary commands; the ack",
            derive=derive_command,
            fanout=FANOUT,
            stateless=False,
        ),
        Target(
            "agent_receipts",
            "agent",
            receipts(),
            _receipt_target,
            doc="Uplink._take_receipt on a real outbox: valid, another gateway's, mutated, arbitrary",
            derive=derive_receipt,
            fanout=FANOUT,
            stateless=False,
        ),
        Target(
            "agent_config",
            "agent",
            config_cases,
            _config_target,
            doc="load_config: valid gateway.toml, mutated TOML, arbitrary bytes, WARDWATCH_* overrides",
            derive=derive_config,
            fanout=FANOUT,
        ),
    ]


__all__ = ["OracleViolation", "targets"]
