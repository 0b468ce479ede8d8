"""The device certificate authority: one CA directory, its issued certificates, its index and its CRL.

Every identity that may connect to the broker holds a certificate from this CA; the broker trusts no
other CA on its gateway listener and maps each certificate's CN to the MQTT username and client id.
Keys are ECDSA P-256 (accepted by OpenSSL/Mosquitto, Python's ssl module and paho); signatures SHA-256.

Directory layout (``DIRECTORY`` below is what ``wardwatch pki init --dir`` created)::

    DIRECTORY/
      ca.pem                          the CA certificate: broker ``cafile``, every client's ``ca_file``
      ca.key                          the CA private key (0600; optionally passphrase-encrypted)
      crl.pem                         revocation list signed by the CA: broker ``crlfile``
      index.json                      every certificate ever issued (serial, CN, kind, not_after, revoked)
      .lock                           held while the directory is being changed
      gateways/<id>/gateway.pem       a gateway's client certificate (CN = gateway id)
      gateways/<id>/gateway.key       its private key (0600)
      gateways/<id>/ca.pem            a copy of the CA certificate: copy the folder to /etc/wardwatch/pki/
      servers/<name>/server.pem       the broker's server certificate (SAN: --dns / --ip)
      servers/<name>/server.key
      clients/<name>/client.pem       the server's own MQTT identity (role server, CN wardwatch-server*)
      clients/<name>/client.key       or a command-center consumer (role command-center, CN cc-*)
      clients/<name>/ca.pem

Names are reserved by role so that one kind of identity can never pose as another in the broker's ACL
(whose ``pattern`` lines give every user a gateway namespace ``wardwatch/v1/gw/<CN>/``): gateway ids may
not start with ``wardwatch-server`` or ``cc-``; server identities must start with ``wardwatch-server``,
command-center identities with ``cc-``.

Errors: :class:`PkiError` (with a message that says what to do), raised by every function here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT: Final = "ca.pem"
CA_KEY: Final = "ca.key"
CRL: Final = "crl.pem"
INDEX: Final = "index.json"
LOCK: Final = ".lock"

IDENTITY_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""The wire contract's id grammar (edge_agent.protocol): no '/', '+', '#', whitespace or '%'."""
SERVER_PREFIX: Final = "wardwatch-server"
COMMAND_CENTER_PREFIX: Final = "cc-"
CLOCK_SKEW: Final = dt.timedelta(minutes=5)
"""Certificates start this long before issue, so a gateway whose clock is slightly behind accepts them."""


class PkiError(Exception):
    """A PKI operation could not be done; the message says why and what to do."""


class Kind(StrEnum):
    CA = "ca"
    GATEWAY = "gateway"
    SERVER = "server"
    CLIENT = "client"


ClientRole = Literal["server", "command-center"]

REVOCATION_REASONS: Final[dict[str, x509.ReasonFlags]] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key-compromise": x509.ReasonFlags.key_compromise,
    "superseded": x509.ReasonFlags.superseded,
    "cessation-of-operation": x509.ReasonFlags.cessation_of_operation,
    "affiliation-changed": x509.ReasonFlags.affiliation_changed,
}


@dataclass(slots=True, kw_only=True)
class IssuedCertificate:
    """One row of index.json."""

    serial: str
    """Hexadecimal, lower case, as ``openssl x509 -serial`` prints it (without leading zeros)."""
    common_name: str
    kind: Kind
    role: str | None
    not_before: str
    not_after: str
    cert_file: str
    """Relative to the CA directory."""
    revoked_at: str | None = None
    revocation_reason: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def expired(self, now: dt.datetime) -> bool:
        return dt.datetime.fromisoformat(self.not_after) <= now


@dataclass(slots=True)
class Index:
    crl_number: int
    certificates: list[IssuedCertificate]

    def to_json(self) -> str:
        rows = []
        for cert in self.certificates:
            row = asdict(cert)
            row["kind"] = cert.kind.value
            row["revoked"] = cert.revoked
            rows.append(row)
        return (
            json.dumps({"version": 1, "crl_number": self.crl_number, "certificates": rows}, indent=2) + "\n"
        )

    @classmethod
    def from_json(cls, text: str, source: Path) -> Index:
        try:
            data = json.loads(text)
            rows = []
            for row in data["certificates"]:
                row = {k: v for k, v in row.items() if k != "revoked"}
                row["kind"] = Kind(row["kind"])
                rows.append(IssuedCertificate(**row))
            return cls(crl_number=int(data["crl_number"]), certificates=rows)
        except (ValueError, KeyError, TypeError) as exc:
            raise PkiError(
                f"{source}: not a valid certificate index ({exc}); restore it from backup"
            ) from None


@dataclass(frozen=True, slots=True)
class Issued:
    """What an issue operation wrote."""

    record: IssuedCertificate
    cert_path: Path
    key_path: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _serial_hex(serial: int) -> str:
    return f"{serial:x}"


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the start (never world-readable, not even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.chmod(0o644)
    os.replace(temporary, path)


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def check_identity(name: str, kind: Kind, role: ClientRole | None = None) -> str:
    """Raise PkiError unless ``name`` is a valid CN for this kind of identity."""
    if not IDENTITY_PATTERN.fullmatch(name):
        raise PkiError(
            f"{name!r} is not a valid identity: use 1-64 letters, digits, '_', '.', '-', starting with a "
            "letter or digit (it becomes the MQTT username and appears inside topics)"
        )
    if kind is Kind.GATEWAY and name.startswith((SERVER_PREFIX, COMMAND_CENTER_PREFIX)):
        raise PkiError(
            f"gateway id {name!r} is reserved: ids starting with {SERVER_PREFIX!r} or "
            f"{COMMAND_CENTER_PREFIX!r} name the server's and the command center's identities"
        )
    if kind is Kind.CLIENT:
        prefix = SERVER_PREFIX if role == "server" else COMMAND_CENTER_PREFIX
        if not name.startswith(prefix):
            raise PkiError(f"a {role} identity's name must start with {prefix!r} (the broker's ACL needs it)")
    return name


class CertificateAuthority:
    """A CA directory. Open one with :meth:`init` (new) or :meth:`open` (existing)."""

    def __init__(self, directory: Path, *, passphrase: bytes | None = None) -> None:
        self.directory = directory
        self._passphrase = passphrase

    # -- paths ----------------------------------------------------------------------------------------

    @property
    def ca_cert_path(self) -> Path:
        return self.directory / CA_CERT

    @property
    def ca_key_path(self) -> Path:
        return self.directory / CA_KEY

    @property
    def crl_path(self) -> Path:
        return self.directory / CRL

    @property
    def index_path(self) -> Path:
        return self.directory / INDEX

    # -- creation -------------------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        common_name: str = "WardWatch device CA",
        organization: str | None = None,
        days: int = 3650,
        crl_days: int = 30,
        passphrase: bytes | None = None,
    ) -> CertificateAuthority:
        """Create a new CA in ``directory`` (which must not already hold one)."""
        if days < 1 or crl_days < 1:
            raise PkiError("--days and --crl-days must be at least 1")
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        authority = cls(directory, passphrase=passphrase)
        with authority._locked():
            if authority.ca_key_path.exists() or authority.ca_cert_path.exists():
                raise PkiError(f"{directory} already holds a CA ({CA_CERT}); refusing to overwrite it")
            now = _now()
            key = ec.generate_private_key(ec.SECP256R1())
            attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
            if organization:
                attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
            name = x509.Name(attributes)
            public = key.public_key()
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(name)
                .public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW)
                .not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=False,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                .sign(key, hashes.SHA256())
            )
            _write_private(authority.ca_key_path, _key_pem(key, passphrase))
            _write_public(authority.ca_cert_path, _cert_pem(cert))
            index = Index(
                crl_number=0,
                certificates=[authority._record(cert, Kind.CA, None, CA_CERT)],
            )
            authority._write_crl(index, key, cert, crl_days=crl_days)
        return authority

    @classmethod
    def open(cls, directory: Path, *, passphrase: bytes | None = None) -> CertificateAuthority:
        authority = cls(directory, passphrase=passphrase)
        if not authority.ca_cert_path.exists() or not authority.ca_key_path.exists():
            raise PkiError(
                f"{directory} holds no CA ({CA_CERT} and {CA_KEY}); run `wardwatch pki init` first"
            )
        return authority

    # -- reading --------------------------------------------------------------------------------------

    def index(self) -> Index:
        try:
            text = self.index_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PkiError(f"{self.index_path} is missing; restore it from backup") from None
        return Index.from_json(text, self.index_path)

    def ca_certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_cert_path.read_bytes())

    def _ca_key(self) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=self._passphrase)
        except TypeError:
            raise PkiError(
                f"{self.ca_key_path} is encrypted: give its passphrase (--ca-passphrase-env VARIABLE)"
            ) from None
        except ValueError:
            raise PkiError(f"{self.ca_key_path}: cannot decrypt the CA key (wrong passphrase?)") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self.ca_key_path} is not an EC private key")
        return key

    # -- issuing --------------------------------------------------------------------------------------

    def issue_gateway(self, gateway_id: str, *, days: int = 365, renew: bool = False) -> Issued:
        check_identity(gateway_id, Kind.GATEWAY)
        return self._issue(
            gateway_id,
            Kind.GATEWAY,
            role=None,
            folder=Path("gateways") / gateway_id,
            stem="gateway",
            days=days,
            renew=renew,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            alternative_names=[],
        )

    def issue_server(
        self,
        name: str,
        *,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[str] = (),
        days: int = 365,
        renew: bool = False,
    ) -> Issued:
        """A TLS server certificate for the broker; SAN from ``dns_names`` and ``ip_addresses``
        (``name`` itself as the only DNS name when neither is given)."""
        if not IDENTITY_PATTERN.fullmatch(name):
            raise PkiError(f"server name {name!r}: use letters, digits, '_', '.', '-'")
        alternative: list[x509.GeneralName] = [
            x509.DNSName(d) for d in (dns_names or ([] if ip_addresses else [name]))
        ]
        for address in ip_addresses:
            try:
                alternative.append(x509.IPAddress(ipaddress.ip_address(address)))
            except ValueError:
                raise PkiError(f"--ip {address!r} is not an IP address") from None
        return self._issue(
            name,
            Kind.SERVER,
            role=None,
            folder=Path("servers") / name,
            stem="server",
            days=days,
            renew=renew,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            alternative_names=alternative,
        )

    def issue_client(self, name: str, *, role: ClientRole, days: int = 365, renew: bool = False) -> Issued:
        """A client certificate for the server's own MQTT identity or a command-center consumer."""
        if role not in ("server", "command-center"):
            raise PkiError(f"role must be 'server' or 'command-center', not {role!r}")
        check_identity(name, Kind.CLIENT, role)
        return self._issue(
            name,
            Kind.CLIENT,
            role=role,
            folder=Path("clients") / name,
            stem="client",
            days=days,
            renew=renew,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            alternative_names=[],
        )

    def _issue(
        self,
        name: str,
        kind: Kind,
        *,
        role: str | None,
        folder: Path,
        stem: str,
        days: int,
        renew: bool,
        usage: x509.ObjectIdentifier,
        alternative_names: list[x509.GeneralName],
    ) -> Issued:
        if days < 1:
            raise PkiError("--days must be at least 1")
        with self._locked():
            index = self.index()
            now = _now()
            current = [
                c
                for c in index.certificates
                if c.common_name == name and c.kind is kind and not c.revoked and not c.expired(now)
            ]
            if current and not renew:
                raise PkiError(
                    f"{kind.value} {name!r} already has a valid certificate (serial {current[-1].serial}); "
                    "pass --renew to issue a replacement (then revoke the old serial once it is rolled out)"
                )
            ca_cert = self.ca_certificate()
            ca_key = self._ca_key()
            not_after = now + dt.timedelta(days=days)
            if not_after > ca_cert.not_valid_after_utc:
                raise PkiError(
                    "the certificate would outlive the CA (CA expires "
                    f"{ca_cert.not_valid_after_utc:%Y-%m-%d}); use fewer --days or a new CA"
                )
            key = ec.generate_private_key(ec.SECP256R1())
            public = key.public_key()
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_cert.subject)
                .public_key(public)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - CLOCK_SKEW)
                .not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=False,
                        crl_sign=False,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
                )
            )
            if alternative_names:
                builder = builder.add_extension(
                    x509.SubjectAlternativeName(alternative_names), critical=False
                )
            cert = builder.sign(ca_key, hashes.SHA256())
            cert_path = self.directory / folder / f"{stem}.pem"
            key_path = self.directory / folder / f"{stem}.key"
            record = self._record(cert, kind, role, str(folder / f"{stem}.pem"))
            index.certificates.append(record)
            # The index first: a crash before the files are written leaves a listed certificate nobody
            # holds (harmless), never a certificate in someone's hands that `revoke` cannot find.
            self._write_index(index)
            _write_private(key_path, _key_pem(key))
            _write_public(cert_path, _cert_pem(cert))
            if kind is not Kind.SERVER:
                _write_public(self.directory / folder / CA_CERT, _cert_pem(ca_cert))
        return Issued(record=record, cert_path=cert_path, key_path=key_path)

    # -- revoking -------------------------------------------------------------------------------------

    def revoke(
        self,
        name: str | None = None,
        *,
        serial: str | None = None,
        reason: str = "unspecified",
        crl_days: int = 30,
    ) -> list[IssuedCertificate]:
        """Revoke every unrevoked certificate with CN ``name`` (or the one with ``serial``), then
        regenerate crl.pem. Returns the certificates revoked by this call."""
        if (name is None) == (serial is None):
            raise PkiError("give either a name or --serial")
        if reason not in REVOCATION_REASONS:
            raise PkiError(f"reason must be one of {', '.join(REVOCATION_REASONS)}")
        with self._locked():
            index = self.index()
            wanted = serial.lower().lstrip("0") if serial is not None else None
            matches = [
                c
                for c in index.certificates
                if c.kind is not Kind.CA
                and (
                    (wanted is not None and c.serial == wanted)
                    or (name is not None and c.common_name == name)
                )
            ]
            if not matches:
                raise PkiError(f"no certificate for {name or serial!r} in {self.index_path}")
            now = _now()
            revoked = [c for c in matches if not c.revoked]
            for cert in revoked:
                cert.revoked_at = now.isoformat()
                cert.revocation_reason = reason
            self._write_crl(index, self._ca_key(), self.ca_certificate(), crl_days=crl_days)
        return revoked

    def refresh_crl(self, *, crl_days: int = 30) -> None:
        """Re-sign crl.pem with a new next-update (run it well before the current one passes)."""
        with self._locked():
            self._write_crl(self.index(), self._ca_key(), self.ca_certificate(), crl_days=crl_days)

    def crl(self) -> x509.CertificateRevocationList:
        return x509.load_pem_x509_crl(self.crl_path.read_bytes())

    # -- internals ------------------------------------------------------------------------------------

    @staticmethod
    def _record(cert: x509.Certificate, kind: Kind, role: str | None, cert_file: str) -> IssuedCertificate:
        common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return IssuedCertificate(
            serial=_serial_hex(cert.serial_number),
            common_name=str(common_name),
            kind=kind,
            role=role,
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            cert_file=cert_file,
        )

    def _write_crl(
        self,
        index: Index,
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        *,
        crl_days: int,
    ) -> None:
        if crl_days < 1:
            raise PkiError("--crl-days must be at least 1")
        now = _now()
        index.crl_number += 1
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca_cert.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=crl_days))
            .add_extension(x509.CRLNumber(index.crl_number), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        for cert in index.certificates:
            if cert.revoked_at is None:
                continue
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(cert.serial, 16))
                .revocation_date(dt.datetime.fromisoformat(cert.revoked_at))
            )
            reason = REVOCATION_REASONS.get(
                cert.revocation_reason or "unspecified", x509.ReasonFlags.unspecified
            )
            if reason is not x509.ReasonFlags.unspecified:
                entry = entry.add_extension(x509.CRLReason(reason), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(ca_key, hashes.SHA256())
        # The index first: a crash in between leaves a revocation recorded but not yet published, and the
        # next revoke or crl refresh publishes it; never a published CRL the index does not explain.
        self._write_index(index)
        _write_public(self.crl_path, crl.public_bytes(serialization.Encoding.PEM))

    def _write_index(self, index: Index) -> None:
        _write_public(self.index_path, index.to_json().encode())

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def certificate_summary(record: IssuedCertificate) -> dict[str, Any]:
    """A row for ``wardwatch pki list`` (JSON)."""
    return {**asdict(record), "kind": record.kind.value, "revoked": record.revoked}
