"""The device PKI: a dedicated CA for everything that connects to the broker (``wardwatch pki``).

:mod:`server.pki.authority` does the work (keys, certificates, index, CRL); :mod:`server.pki.cli` is the
command. Layout, roles and procedures: docs/security.md.
"""

from server.pki.authority import (
    CertificateAuthority,
    ClientRole,
    Index,
    Issued,
    IssuedCertificate,
    Kind,
    PkiError,
)
from server.pki.cli import register_command

__all__ = [
    "CertificateAuthority",
    "ClientRole",
    "Index",
    "Issued",
    "IssuedCertificate",
    "Kind",
    "PkiError",
    "register_command",
]
