"""server.pki: the device CA, its certificates, index and CRL; cross-checked with the openssl command."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import example, given
from hypothesis import strategies as st

from edge_agent.cli import main
from edge_agent.protocol import GatewayId
from server.pki import CertificateAuthority, Kind, PkiError
from server.pki.acl import acl_block
from server.pki.authority import IDENTITY_PATTERN, check_identity


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


@pytest.fixture
def authority(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.init(tmp_path / "ca", organization="Example Virtual Ward")


def openssl_verify(authority: CertificateAuthority, cert: Path) -> subprocess.CompletedProcess[str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    return subprocess.run(
        [openssl, "verify", "-CAfile", str(authority.ca_cert_path), "-crl_check", "-CRLfile",
         str(authority.crl_path), str(cert)],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip


def test_init_makes_a_p256_ca_with_a_private_key_and_an_empty_crl(authority: CertificateAuthority) -> None:
    ca = load(authority.ca_cert_path)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    assert mode(authority.ca_key_path) == 0o600
    assert mode(authority.directory) == 0o700
    crl = authority.crl()
    assert list(crl) == []
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    [row] = authority.index().certificates
    assert (row.kind, row.common_name, row.revoked) == (Kind.CA, "WardWatch device CA", False)


def test_init_refuses_to_overwrite_a_ca(authority: CertificateAuthority) -> None:
    before = authority.ca_key_path.read_bytes()
    with pytest.raises(PkiError, match="already holds a CA"):
        CertificateAuthority.init(authority.directory)
    assert authority.ca_key_path.read_bytes() == before


def test_gateway_certificate(authority: CertificateAuthority) -> None:
    issued = authority.issue_gateway("gw-0001", days=30)
    cert = load(issued.cert_path)
    ca = load(authority.ca_cert_path)
    cert.verify_directly_issued_by(ca)
    assert common_name(cert) == "gw-0001"
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=29, hours=23) < lifetime <= dt.timedelta(days=30)
    assert mode(issued.key_path) == 0o600
    assert (issued.cert_path.parent / "ca.pem").read_bytes() == authority.ca_cert_path.read_bytes()
    row = authority.index().certificates[-1]
    assert row.serial == f"{cert.serial_number:x}"
    assert (row.kind, row.common_name, row.not_after) == (
        Kind.GATEWAY,
        "gw-0001",
        cert.not_valid_after_utc.isoformat(),
    )
    assert openssl_verify(authority, issued.cert_path).returncode == 0


def test_server_certificate_has_the_names_clients_dial(authority: CertificateAuthority) -> None:
    issued = authority.issue_server("broker", dns_names=["mqtt.example.org"], ip_addresses=["192.0.2.10"])
    cert = load(issued.cert_path)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["mqtt.example.org"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["192.0.2.10"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    with pytest.raises(PkiError, match="not an IP address"):
        authority.issue_server("broker-2", ip_addresses=["mqtt.example.org"])


def test_client_names_are_reserved_by_role(authority: CertificateAuthority) -> None:
    authority.issue_client("wardwatch-server-1-ingest", role="server")
    authority.issue_client("cc-console-1", role="command-center")
    with pytest.raises(PkiError, match="must start with 'wardwatch-server'"):
        authority.issue_client("cc-console-2", role="server")
    with pytest.raises(PkiError, match="must start with 'cc-'"):
        authority.issue_client("console", role="command-center")
    for reserved in ("wardwatch-server-9", "cc-home"):
        with pytest.raises(PkiError, match="reserved"):
            authority.issue_gateway(reserved)


@given(st.text(max_size=80))
@example("gw-1\n")
@example("gw-1")
@example("cc-home")
@example("gw/1")
@example("gw+1")
@example("a" * 65)
def test_identities_follow_the_wire_contracts_id_grammar(name: str) -> None:
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(GatewayId).validate_python(name)
        valid = True
    except ValidationError:
        valid = False
    reserved = name.startswith(("wardwatch-server", "cc-"))
    try:
        check_identity(name, Kind.GATEWAY)
        accepted = True
    except PkiError:
        accepted = False
    assert accepted == (valid and not reserved)
    assert accepted <= bool(IDENTITY_PATTERN.fullmatch(name))
    assert not (accepted and any(c in name for c in "/+#% \n\t"))  # nothing the ACL would read as syntax


def test_a_second_certificate_needs_renew_and_both_stay_valid_until_the_old_is_revoked(
    authority: CertificateAuthority,
) -> None:
    first = authority.issue_gateway("gw-0002")
    with pytest.raises(PkiError, match="--renew"):
        authority.issue_gateway("gw-0002")
    second = authority.issue_gateway("gw-0002", renew=True)
    assert first.record.serial != second.record.serial
    revoked = authority.revoke(serial=first.record.serial, reason="superseded")
    assert [r.serial for r in revoked] == [first.record.serial]
    listed = {entry.serial_number for entry in authority.crl()}
    assert listed == {int(first.record.serial, 16)}
    assert openssl_verify(authority, second.cert_path).returncode == 0


def test_revoke_puts_every_certificate_of_the_name_on_a_fresh_signed_crl(
    authority: CertificateAuthority,
) -> None:
    keep = authority.issue_gateway("gw-keep")
    stolen = authority.issue_gateway("gw-stolen")
    number_before = authority.crl().extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    revoked = authority.revoke("gw-stolen", reason="key-compromise", crl_days=7)
    assert [r.common_name for r in revoked] == ["gw-stolen"]
    crl = authority.crl()
    assert crl.is_signature_valid(load(authority.ca_cert_path).public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(int(stolen.record.serial, 16))
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )
    assert crl.get_revoked_certificate_by_serial_number(int(keep.record.serial, 16)) is None
    assert crl.next_update_utc is not None
    assert (
        dt.timedelta(days=6, hours=23) < crl.next_update_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(days=7)
    )
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number_before + 1
    row = next(r for r in authority.index().certificates if r.common_name == "gw-stolen")
    assert row.revoked and row.revocation_reason == "key-compromise"
    result = openssl_verify(authority, stolen.cert_path)
    assert result.returncode != 0 and "certificate revoked" in result.stdout + result.stderr
    assert openssl_verify(authority, keep.cert_path).returncode == 0
    # revoking again changes nothing but re-signs; a valid name can be re-issued afterwards
    assert authority.revoke("gw-stolen") == []
    authority.issue_gateway("gw-stolen")
    with pytest.raises(PkiError, match="no certificate"):
        authority.revoke("gw-unknown")


def test_refresh_crl_moves_next_update_and_keeps_revocations(authority: CertificateAuthority) -> None:
    stolen = authority.issue_gateway("gw-x")
    authority.revoke("gw-x", crl_days=1)
    authority.refresh_crl(crl_days=60)
    crl = authority.crl()
    assert crl.get_revoked_certificate_by_serial_number(int(stolen.record.serial, 16)) is not None
    assert crl.next_update_utc is not None
    assert crl.next_update_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=59)


def test_encrypted_ca_key_needs_its_passphrase(tmp_path: Path) -> None:
    CertificateAuthority.init(tmp_path / "ca", passphrase=b"correct horse battery staple")
    assert b"ENCRYPTED" in (tmp_path / "ca" / "ca.key").read_bytes()
    with pytest.raises(PkiError, match="encrypted"):
        CertificateAuthority.open(tmp_path / "ca").issue_gateway("gw-1")
    with pytest.raises(PkiError, match="wrong passphrase"):
        CertificateAuthority.open(tmp_path / "ca", passphrase=b"wrong").issue_gateway("gw-1")
    opened = CertificateAuthority.open(tmp_path / "ca", passphrase=b"correct horse battery staple")
    assert opened.issue_gateway("gw-1").record.common_name == "gw-1"
    assert [r.common_name for r in opened.index().certificates] == ["WardWatch device CA", "gw-1"]


def test_a_certificate_cannot_outlive_the_ca(tmp_path: Path) -> None:
    authority = CertificateAuthority.init(tmp_path / "ca", days=10)
    with pytest.raises(PkiError, match="outlive the CA"):
        authority.issue_gateway("gw-1", days=30)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = str(tmp_path / "ca")
    assert main(["pki", "init", "--dir", directory]) == 0
    assert main(["pki", "issue-gateway", "gw-cli", "--dir", directory, "--days", "90"]) == 0
    assert main(["pki", "issue-server", "broker", "--dir", directory, "--ip", "127.0.0.1"]) == 0
    assert main(["pki", "issue-client", "cc-cli", "--role", "command-center", "--dir", directory]) == 0
    assert main(["pki", "revoke", "gw-cli", "--dir", directory, "--reason", "key-compromise"]) == 0
    assert main(["pki", "crl", "--dir", directory]) == 0
    capsys.readouterr()
    assert main(["pki", "list", "--dir", directory, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["common_name"], r["revoked"]) for r in rows] == [
        ("ca", "WardWatch device CA", False),
        ("gateway", "gw-cli", True),
        ("server", "broker", False),
        ("client", "cc-cli", False),
    ]
    assert main(["pki", "issue-gateway", "cc-bad", "--dir", directory]) == 2
    assert "reserved" in capsys.readouterr().err
    assert main(["pki", "issue-gateway", "gw-1", "--dir", str(tmp_path / "nowhere")]) == 2
    assert "wardwatch pki init" in capsys.readouterr().err


def test_the_shipped_acl_blocks_are_what_pki_prints() -> None:
    text = (Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl").read_text(encoding="utf-8")
    settings = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    patterns = [line for line in settings if line.startswith("pattern ")]
    assert patterns == [
        f"pattern write wardwatch/v1/gw/%u/{channel}"
        for channel in ("status", "obs", "score", "event", "cmd-ack")
    ] + ["pattern read wardwatch/v1/gw/%u/cmd/+", "pattern read wardwatch/v1/gw/%u/receipt"]
    blocks = "\n".join(settings[len(patterns) :]).split("\nuser ")
    shipped = ["user " + block.removeprefix("user ") + "\n" for block in blocks]
    assert shipped == [
        acl_block("wardwatch-server-1-ingest", "server"),
        acl_block("wardwatch-server-1-pub", "server"),
        acl_block("cc-console-1", "command-center"),
    ]


def test_the_acl_decides_every_channel_of_the_wire_contract() -> None:
    """A channel added to edge_agent.protocol must get a direction here and in deploy/mosquitto/acl and
    server.pki.acl, or the broker silently drops its traffic."""
    from edge_agent.protocol import GatewayChannel

    from_gateway = {"status", "obs", "score", "event", "cmd-ack"}
    to_gateway = {"cmd": "cmd/+", "receipt": "receipt"}
    undecided = {c.value for c in GatewayChannel} - from_gateway - set(to_gateway)
    assert not undecided, f"new gateway channel(s) {undecided}: add them to the broker ACL"
    text = (Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "acl").read_text(encoding="utf-8")
    server = acl_block("wardwatch-server-1-ingest", "server")
    for channel in from_gateway:
        assert f"pattern write wardwatch/v1/gw/%u/{channel}\n" in text
        assert f"topic read wardwatch/v1/gw/+/{channel}\n" in server
    for suffix in to_gateway.values():
        assert f"pattern read wardwatch/v1/gw/%u/{suffix}\n" in text
        assert f"topic write wardwatch/v1/gw/+/{suffix}\n" in server
