"""``wardwatch pki``: the device CA on the command line.

::

    wardwatch pki init --dir /srv/wardwatch-ca
    wardwatch pki issue-gateway gw-0001 --dir /srv/wardwatch-ca [--days 365] [--renew]
    wardwatch pki issue-server broker --dir ... --dns broker.example.org --ip 203.0.113.7
    wardwatch pki issue-client wardwatch-server-1 --role server --dir ...
    wardwatch pki issue-client cc-console-1 --role command-center --dir ...
    wardwatch pki revoke gw-0001 --dir ... [--serial HEX] [--reason key-compromise]
    wardwatch pki crl --dir ...          re-sign crl.pem with a fresh next-update
    wardwatch pki list --dir ...         index.json as a table (or --json)

Every command prints what it wrote. Exit status 0 on success, 2 with a one-line reason otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path

from server.pki.acl import acl_block
from server.pki.authority import (
    REVOCATION_REASONS,
    CertificateAuthority,
    Issued,
    PkiError,
    certificate_summary,
)


def _passphrase(args: argparse.Namespace) -> bytes | None:
    variable: str | None = args.ca_passphrase_env
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        raise PkiError(f"--ca-passphrase-env {variable}: that environment variable is not set or empty")
    return value.encode()


def _open(args: argparse.Namespace) -> CertificateAuthority:
    return CertificateAuthority.open(Path(args.dir), passphrase=_passphrase(args))


def _print_issued(issued: Issued) -> None:
    record = issued.record
    print(
        f"issued {record.kind.value} {record.common_name}: serial {record.serial}, until {record.not_after}"
    )
    print(f"  certificate {issued.cert_path}")
    print(f"  key         {issued.key_path} (mode 0600)")


def _init(args: argparse.Namespace) -> int:
    authority = CertificateAuthority.init(
        Path(args.dir),
        common_name=args.common_name,
        organization=args.organization,
        days=args.days,
        crl_days=args.crl_days,
        passphrase=_passphrase(args),
    )
    print(f"created CA {authority.ca_cert_path} (key {authority.ca_key_path}, mode 0600)")
    print(f"  CRL {authority.crl_path}, index {authority.index_path}")
    return 0


def _issue_gateway(args: argparse.Namespace) -> int:
    _print_issued(_open(args).issue_gateway(args.gateway_id, days=args.days, renew=args.renew))
    return 0


def _issue_server(args: argparse.Namespace) -> int:
    issued = _open(args).issue_server(
        args.name, dns_names=args.dns, ip_addresses=args.ip, days=args.days, renew=args.renew
    )
    _print_issued(issued)
    return 0


def _issue_client(args: argparse.Namespace) -> int:
    issued = _open(args).issue_client(args.name, role=args.role, days=args.days, renew=args.renew)
    _print_issued(issued)
    print("  add this block to the broker's ACL file, then reload the broker (docs/security.md):\n")
    print(acl_block(args.name, args.role))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    authority = _open(args)
    revoked = authority.revoke(args.name, serial=args.serial, reason=args.reason, crl_days=args.crl_days)
    for record in revoked:
        print(f"revoked {record.kind.value} {record.common_name}: serial {record.serial}")
    if not revoked:
        print("already revoked; CRL re-signed")
    print(f"wrote {authority.crl_path}: install it as the broker's crlfile and restart the broker")
    return 0


def _crl(args: argparse.Namespace) -> int:
    authority = _open(args)
    authority.refresh_crl(crl_days=args.crl_days)
    next_update = authority.crl().next_update_utc
    print(f"wrote {authority.crl_path}; next update {next_update:%Y-%m-%d %H:%M} UTC")
    return 0


def _list(args: argparse.Namespace) -> int:
    authority = CertificateAuthority.open(Path(args.dir))
    rows = [certificate_summary(record) for record in authority.index().certificates]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    now = dt.datetime.now(dt.UTC)
    for record in authority.index().certificates:
        state = "revoked" if record.revoked else ("expired" if record.expired(now) else "valid")
        print(
            f"{record.serial:>40}  {record.kind.value:<8} {record.common_name:<32} "
            f"{record.not_after}  {state}"
        )
    return 0


def _run(args: argparse.Namespace) -> int:
    try:
        status: int = args.pki_run(args)
    except PkiError as exc:
        print(f"wardwatch pki: {exc}", file=sys.stderr)
        return 2
    return status


def register_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "pki",
        help="the device certificate authority: issue and revoke broker certificates",
        description=(
            "Create the device CA and issue client certificates for gateways (CN = gateway id), the "
            "server and command-center consumers, the broker's server certificate, and the CRL. "
            "Layout and procedures: docs/security.md."
        ),
    )
    parser.set_defaults(run=_run)
    actions = parser.add_subparsers(title="pki commands", metavar="ACTION", required=True)

    def action(name: str, help_text: str, handler: object) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--dir", required=True, help="the CA directory")
        sub.add_argument(
            "--ca-passphrase-env",
            metavar="VARIABLE",
            default=None,
            help="environment variable holding the CA key's passphrase (default: the key is not encrypted)",
        )
        sub.set_defaults(pki_run=handler)
        return sub

    init = action("init", "create a new device CA (ECDSA P-256) with an empty CRL", _init)
    init.add_argument("--common-name", default="WardWatch device CA", help="the CA's CN")
    init.add_argument("--organization", default=None, help="the CA's O (optional)")
    init.add_argument("--days", type=int, default=3650, help="CA validity in days (default 3650)")
    init.add_argument("--crl-days", type=int, default=30, help="CRL next-update in days (default 30)")

    gateway = action(
        "issue-gateway", "issue a gateway's client certificate (CN = gateway id)", _issue_gateway
    )
    gateway.add_argument("gateway_id", metavar="ID")

    server = action("issue-server", "issue the broker's TLS server certificate", _issue_server)
    server.add_argument("name", metavar="NAME")
    server.add_argument("--dns", action="append", default=[], help="a DNS name for the SAN (repeatable)")
    server.add_argument("--ip", action="append", default=[], help="an IP address for the SAN (repeatable)")

    client = action(
        "issue-client", "issue the server's MQTT identity or a command-center consumer's", _issue_client
    )
    client.add_argument("name", metavar="NAME")
    client.add_argument("--role", required=True, choices=["server", "command-center"])

    for sub in (gateway, server, client):
        sub.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
        sub.add_argument(
            "--renew", action="store_true", help="issue even though a valid certificate exists (rotation)"
        )

    revoke = action("revoke", "revoke a certificate and re-sign the CRL", _revoke)
    revoke.add_argument(
        "name", metavar="ID", nargs="?", default=None, help="revoke every certificate with this CN"
    )
    revoke.add_argument("--serial", default=None, help="revoke only this serial (hex), e.g. after a rotation")
    revoke.add_argument("--reason", default="unspecified", choices=sorted(REVOCATION_REASONS))
    revoke.add_argument("--crl-days", type=int, default=30, help="CRL next-update in days (default 30)")

    crl = action("crl", "re-sign the CRL with a fresh next-update", _crl)
    crl.add_argument("--crl-days", type=int, default=30, help="CRL next-update in days (default 30)")

    listing = action("list", "list every issued certificate", _list)
    listing.add_argument("--json", action="store_true", help="print index rows as JSON")
