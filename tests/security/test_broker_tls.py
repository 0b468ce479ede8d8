"""The broker's transport on deploy/mosquitto/mosquitto.conf: TLS 1.2+ with a client certificate from the
device CA that is not revoked, or nothing.

Raw handshakes use Python's ssl module with explicit versions, so each refusal is the broker's: at TLS
1.2 the broker's alert names the reason (certificate revoked, handshake failure for a missing
certificate); under TLS 1.3 the client's handshake finishes before the server has checked the client
certificate, so the refusal shows as the connection closing before any CONNACK.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from security_support import (
    GATEWAY_A,
    GATEWAY_B,
    REVOKED_GATEWAY,
    Identity,
    Pki,
    client,
    tls_context,
    wait_for_log,
)
from support.broker import MosquittoBroker

from edge_agent.mqtt import ConnectFailed, ConnectionLost, MqttClient, MqttSettings, TlsFiles
from edge_agent.protocol import gateway_topic
from server.pki import CertificateAuthority

# MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keepalive 30 s, empty client id.
CONNECT_311 = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 30, 0, 0])
CONNACK_ACCEPTED = bytes([0x20, 2, 0, 0])


def mqtt_over_tls(broker: MosquittoBroker, context: ssl.SSLContext) -> tuple[str | None, bytes]:
    """Handshake, send CONNECT, return (TLS version, first bytes back). Raises the TLS error, if any."""
    with (
        socket.create_connection((broker.host, broker.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=broker.host) as tls,
    ):
        version = tls.version()
        tls.sendall(CONNECT_311)
        return version, tls.recv(4)


@pytest.mark.parametrize(
    ("maximum", "expected"), [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")]
)
def test_tls_1_2_and_1_3_with_a_valid_certificate_are_accepted(
    secure_broker: MosquittoBroker, pki: Pki, maximum: ssl.TLSVersion, expected: str
) -> None:
    identity = pki[GATEWAY_A]
    context = tls_context(identity, identity.ca_file, minimum=maximum, maximum=maximum)
    assert mqtt_over_tls(secure_broker, context) == (expected, CONNACK_ACCEPTED)


def test_revoked_certificate_is_refused(secure_broker: MosquittoBroker, pki: Pki) -> None:
    revoked = pki[REVOKED_GATEWAY]
    at_1_2 = tls_context(revoked, revoked.ca_file, maximum=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REVOKED"):
        mqtt_over_tls(secure_broker, at_1_2)
    with pytest.raises((ssl.SSLError, ConnectionError)):  # TLS 1.3: closed before any CONNACK
        mqtt_over_tls(secure_broker, tls_context(revoked, revoked.ca_file))
    wait_for_log(secure_broker, "certificate verify failed")


async def test_revoked_certificate_is_refused_to_the_projects_client(
    secure_broker: MosquittoBroker, pki: Pki
) -> None:
    with pytest.raises(ConnectFailed):
        async with client(secure_broker, pki[REVOKED_GATEWAY]):
            pass


def test_missing_client_certificate_is_refused(secure_broker: MosquittoBroker, pki: Pki) -> None:
    ca_file = pki[GATEWAY_A].ca_file
    with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
        mqtt_over_tls(secure_broker, tls_context(None, ca_file, maximum=ssl.TLSVersion.TLSv1_2))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        mqtt_over_tls(secure_broker, tls_context(None, ca_file))
    wait_for_log(secure_broker, "peer did not return a certificate")


async def test_missing_client_certificate_is_refused_to_the_projects_client(
    secure_broker: MosquittoBroker, pki: Pki
) -> None:
    with pytest.raises(ConnectFailed):
        async with client(
            secure_broker, None, client_id=GATEWAY_A, tls=TlsFiles(ca_file=pki[GATEWAY_A].ca_file)
        ):
            pass


def test_certificate_from_another_ca_with_a_real_gateway_name_is_refused(
    secure_broker: MosquittoBroker, pki: Pki, tmp_path: Path
) -> None:
    impostor_ca = CertificateAuthority.init(tmp_path / "impostor-ca", common_name="WardWatch device CA")
    forged = impostor_ca.issue_gateway(GATEWAY_B)
    identity = Identity(GATEWAY_B, pki[GATEWAY_B].ca_file, forged.cert_path, forged.key_path)
    with pytest.raises(ssl.SSLError):
        mqtt_over_tls(secure_broker, tls_context(identity, identity.ca_file, maximum=ssl.TLSVersion.TLSv1_2))


def test_plaintext_mqtt_is_refused(secure_broker: MosquittoBroker) -> None:
    with socket.create_connection((secure_broker.host, secure_broker.port), timeout=5) as raw:
        raw.sendall(CONNECT_311)
        try:
            answer = raw.recv(4)
        except ConnectionResetError:
            answer = b""
    assert answer != CONNACK_ACCEPTED
    assert not answer.startswith(b"\x20")  # no CONNACK of any kind: the broker only speaks TLS here


async def test_plaintext_mqtt_is_refused_to_the_projects_client(secure_broker: MosquittoBroker) -> None:
    plain = MqttSettings.from_url(secure_broker.url, client_id=GATEWAY_A, connect_timeout_s=5)
    with pytest.raises(ConnectFailed):
        async with MqttClient(plain):
            pass


def test_tls_1_1_is_refused(secure_broker: MosquittoBroker, pki: Pki) -> None:
    identity = pki[GATEWAY_A]
    context = tls_context(
        identity, identity.ca_file, minimum=ssl.TLSVersion.TLSv1_1, maximum=ssl.TLSVersion.TLSv1_1
    )
    # OpenSSL 3 keeps TLS 1.1 behind security level 0; lower it so this client really offers TLS 1.1.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as refused:
        mqtt_over_tls(secure_broker, context)
    if "NO_PROTOCOLS_AVAILABLE" in str(refused.value) or "NO_CIPHERS_AVAILABLE" in str(refused.value):
        # This OpenSSL cannot even offer TLS 1.1; the handshake still fails, which is what we require,
        # but the broker never got to refuse it.
        return
    assert "PROTOCOL_VERSION" in str(refused.value) or "UNSUPPORTED_PROTOCOL" in str(refused.value)
    wait_for_log(secure_broker, "unsupported protocol")


# -- revocation in operation ---------------------------------------------------------------------------


def own_copy_of(pki: Pki, tmp_path: Path) -> CertificateAuthority:
    """A copy of the session's CA that this test may revoke in without disturbing the others."""
    shutil.copytree(pki.authority.directory, tmp_path / "ca-copy")
    return CertificateAuthority.open(tmp_path / "ca-copy")


def reload_broker(broker: MosquittoBroker) -> None:
    """SIGHUP, then wait until the broker has logged the reload (it re-reads the CRL and the ACL file in
    the same main-loop turn, before it accepts another connection). The log is the only signal."""
    assert broker.process is not None
    reloads = broker.log_text().count("Reloading config.")
    broker.process.send_signal(signal.SIGHUP)
    wait_for_log(broker, "Reloading config.", occurrences=reloads + 1)


async def test_revoking_and_reloading_refuses_new_connections_restart_ends_the_old_one(
    secure_broker: MosquittoBroker, pki: Pki, tmp_path: Path
) -> None:
    authority = own_copy_of(pki, tmp_path)
    gateway = pki[GATEWAY_A]
    at_1_2 = tls_context(gateway, gateway.ca_file, maximum=ssl.TLSVersion.TLSv1_2)
    async with client(secure_broker, gateway) as already_connected:
        authority.revoke(GATEWAY_A, reason="key-compromise")
        shutil.copyfile(authority.crl_path, tmp_path / "etc-mosquitto-wardwatch" / "crl.pem")
        reload_broker(secure_broker)
        with pytest.raises(ssl.SSLError, match="CERTIFICATE_REVOKED"):
            mqtt_over_tls(secure_broker, at_1_2)
        # A TLS session is checked once, at the handshake: the connection made before stays up ...
        await already_connected.publish(gateway_topic(GATEWAY_A, "obs"), b"still connected")
        # ... until the broker restarts (docs/security.md: revoke, then restart the broker).
        secure_broker.stop()
        assert isinstance(await already_connected.wait_closed(), ConnectionLost)
    secure_broker.start()
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REVOKED"):
        mqtt_over_tls(secure_broker, at_1_2)


def test_an_expired_crl_locks_every_client_out_until_it_is_refreshed(
    secure_broker: MosquittoBroker, pki: Pki, tmp_path: Path
) -> None:
    """Why `wardwatch pki crl` must run well before the CRL's next-update (docs/security.md)."""
    authority = own_copy_of(pki, tmp_path)
    key = serialization.load_pem_private_key(authority.ca_key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    now = datetime.now(UTC)
    expired = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(authority.ca_certificate().subject)
        .last_update(now - timedelta(days=31))
        .next_update(now - timedelta(minutes=1))
        .sign(key, hashes.SHA256())
    )
    installed = tmp_path / "etc-mosquitto-wardwatch" / "crl.pem"
    installed.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    reload_broker(secure_broker)
    gateway = pki[GATEWAY_A]
    at_1_2 = tls_context(gateway, gateway.ca_file, maximum=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_EXPIRED"):
        mqtt_over_tls(secure_broker, at_1_2)
    authority.refresh_crl(crl_days=30)
    shutil.copyfile(authority.crl_path, installed)
    reload_broker(secure_broker)
    assert mqtt_over_tls(secure_broker, at_1_2) == ("TLSv1.2", CONNACK_ACCEPTED)


def test_the_brokers_server_certificate_is_not_a_client_identity(
    secure_broker: MosquittoBroker, pki: Pki
) -> None:
    """A serverAuth-only certificate from the same CA (CN "broker") cannot log in as a client."""
    servers = pki.authority.directory / "servers" / "broker"
    identity = Identity("broker", pki.authority.ca_cert_path, servers / "server.pem", servers / "server.key")
    with pytest.raises(ssl.SSLError):
        mqtt_over_tls(secure_broker, tls_context(identity, identity.ca_file, maximum=ssl.TLSVersion.TLSv1_2))
    wait_for_log(secure_broker, "certificate verify failed")


def test_an_expired_gateway_certificate_is_refused(
    secure_broker: MosquittoBroker, pki: Pki, tmp_path: Path
) -> None:
    authority = pki.authority
    ca_key = serialization.load_pem_private_key(authority.ca_key_path.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    expired = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GATEWAY_A)]))
        .issuer_name(authority.ca_certificate().subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=400))
        .not_valid_after(now - timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "expired.pem", tmp_path / "expired.key"
    cert_file.write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    identity = Identity(GATEWAY_A, authority.ca_cert_path, cert_file, key_file)
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_EXPIRED"):
        mqtt_over_tls(secure_broker, tls_context(identity, identity.ca_file, maximum=ssl.TLSVersion.TLSv1_2))
