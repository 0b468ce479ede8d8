"""A real Mosquitto started with deploy/mosquitto/mosquitto.conf and acl, and clients that hold certificates
issued by ``server.pki`` — the broker exactly as production runs it, with only paths and the port changed.

The test harness (tests/support/broker.py) adds ``user root`` when run as root, ``persistence false``, its
own log file and queue limits after this configuration; nothing it adds touches TLS, authentication or
the ACL.
"""

from __future__ import annotations

import shutil
import ssl
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from support.broker import MosquittoBroker, free_port

from edge_agent.mqtt import MqttClient, MqttSettings, TlsFiles
from server.pki import CertificateAuthority

DEPLOY: Final = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
PRODUCTION_ETC: Final = "/etc/mosquitto/wardwatch/"

GATEWAY_A: Final = "gw-home-a"
GATEWAY_B: Final = "gw-home-b"
REVOKED_GATEWAY: Final = "gw-stolen"
SERVER_INGEST: Final = "wardwatch-server-1-ingest"
SERVER_PUB: Final = "wardwatch-server-1-pub"
COMMAND_CENTER: Final = "cc-console-1"
"""The identities named in deploy/mosquitto/acl (the ACL is used unchanged)."""


@dataclass(frozen=True, slots=True)
class Identity:
    name: str
    ca_file: Path
    cert_file: Path
    key_file: Path

    def tls(self) -> TlsFiles:
        return TlsFiles(ca_file=self.ca_file, cert_file=self.cert_file, key_file=self.key_file)


@dataclass(frozen=True, slots=True)
class Pki:
    authority: CertificateAuthority
    identities: dict[str, Identity]

    def __getitem__(self, name: str) -> Identity:
        return self.identities[name]


def issue_test_pki(directory: Path) -> Pki:
    """A CA with the broker's certificate (SAN 127.0.0.1, localhost), both test gateways, the server's
    two identities, a command-center consumer, and a gateway whose certificate is revoked."""
    authority = CertificateAuthority.init(directory)
    authority.issue_server("broker", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    identities: dict[str, Identity] = {}
    for gateway in (GATEWAY_A, GATEWAY_B, REVOKED_GATEWAY):
        issued = authority.issue_gateway(gateway)
        identities[gateway] = Identity(gateway, authority.ca_cert_path, issued.cert_path, issued.key_path)
    for name in (SERVER_INGEST, SERVER_PUB):
        issued = authority.issue_client(name, role="server")
        identities[name] = Identity(name, authority.ca_cert_path, issued.cert_path, issued.key_path)
    issued = authority.issue_client(COMMAND_CENTER, role="command-center")
    identities[COMMAND_CENTER] = Identity(
        COMMAND_CENTER, authority.ca_cert_path, issued.cert_path, issued.key_path
    )
    authority.revoke(REVOKED_GATEWAY, reason="key-compromise")
    return Pki(authority, identities)


def production_config(*, etc: Path, workdir: Path, port: int) -> str:
    """deploy/mosquitto/mosquitto.conf with its paths moved under ``etc``/``workdir`` and the listener
    on a private loopback port. Every substitution must match exactly once, so the file cannot drift
    away from what these tests exercise."""
    lines = (DEPLOY / "mosquitto.conf").read_text(encoding="utf-8").splitlines()
    substitutions = [
        ("listener 8883", f"listener {port} 127.0.0.1", 1),
        ("persistence_location /var/lib/mosquitto/", f"persistence_location {workdir}/", 1),
        (PRODUCTION_ETC, f"{etc}/", 5),
    ]
    settings = [i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")]
    for old, new, count in substitutions:
        found = sum(lines[i].count(old) for i in settings)
        assert found == count, f"deploy/mosquitto/mosquitto.conf: expected {count} × {old!r}, found {found}"
        for i in settings:
            lines[i] = lines[i].replace(old, new)
    return "\n".join(lines) + "\n"


def install_broker_files(pki: Pki, etc: Path) -> None:
    """Lay the files out as docs/security.md tells an operator to (names as in mosquitto.conf)."""
    etc.mkdir(parents=True, exist_ok=True)
    authority = pki.authority
    shutil.copyfile(authority.ca_cert_path, etc / "ca.pem")
    shutil.copyfile(authority.directory / "servers" / "broker" / "server.pem", etc / "server.pem")
    shutil.copyfile(authority.directory / "servers" / "broker" / "server.key", etc / "server.key")
    shutil.copyfile(authority.crl_path, etc / "crl.pem")
    shutil.copyfile(DEPLOY / "acl", etc / "acl")


def start_production_broker(
    broker_factory: Callable[..., MosquittoBroker], pki: Pki, tmp_path: Path
) -> MosquittoBroker:
    etc = tmp_path / "etc-mosquitto-wardwatch"
    install_broker_files(pki, etc)
    workdir = tmp_path / "broker-state"
    workdir.mkdir(exist_ok=True)
    port = free_port()
    return broker_factory(port=port, listener_config=production_config(etc=etc, workdir=workdir, port=port))


def client(
    broker: MosquittoBroker,
    identity: Identity | None,
    *,
    client_id: str | None = None,
    tls: TlsFiles | None = None,
) -> MqttClient:
    """The project's MQTT 5 client over mutual TLS as ``identity``."""
    files = tls if tls is not None else (identity.tls() if identity is not None else None)
    return MqttClient(
        MqttSettings(
            host=broker.host,
            port=broker.port,
            client_id=client_id or (identity.name if identity else "anonymous"),
            tls=files,
            clean_start=True,
            session_expiry_s=0,
            connect_timeout_s=5,
        )
    )


def wait_for_log(broker: MosquittoBroker, text: str, *, occurrences: int = 1, timeout: float = 10) -> None:
    """Wait until the broker's log holds ``text`` (at least ``occurrences`` times). Mosquitto writes the
    reason for a failed handshake after it has sent the alert, so a client can see the refusal before the
    line is in the log; the log is the only signal."""
    deadline = time.monotonic() + timeout
    while broker.log_text().count(text) < occurrences:
        assert time.monotonic() < deadline, f"mosquitto never logged {text!r}"
        time.sleep(0.01)


def tls_context(
    identity: Identity | None,
    ca_file: Path,
    *,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    with warnings.catch_warnings():
        # Python deprecates TLS 1.1 (rightly); the refusal test must offer it on purpose.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = minimum
        context.maximum_version = maximum
    if identity is not None:
        context.load_cert_chain(str(identity.cert_file), str(identity.key_file))
    return context
