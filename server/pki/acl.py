"""The broker ACL's ``user`` blocks for server and command-center identities (deploy/mosquitto/acl).

Gateways need no entry of their own: the ACL's ``pattern`` lines cover every gateway by its CN. Mosquitto
has no wildcard users, so each server connection and each command-center consumer gets a block; this is
the one place that says what such a block contains (``wardwatch pki issue-client`` prints it, and a test
checks that the shipped ACL's blocks are exactly these).
"""

from __future__ import annotations

from typing import Final

from server.pki.authority import ClientRole, Kind, check_identity

GATEWAY_ROOT: Final = "wardwatch/v1/gw"
COMMAND_CENTER_ROOT: Final = "wardwatch/v1/cc"

ROLE_TOPICS: Final[dict[str, tuple[str, ...]]] = {
    "server": (
        f"read {GATEWAY_ROOT}/+/status",
        f"read {GATEWAY_ROOT}/+/obs",
        f"read {GATEWAY_ROOT}/+/score",
        f"read {GATEWAY_ROOT}/+/event",
        f"read {GATEWAY_ROOT}/+/cmd-ack",
        f"write {GATEWAY_ROOT}/+/cmd/+",
        f"write {GATEWAY_ROOT}/+/receipt",
        f"readwrite {COMMAND_CENTER_ROOT}/#",
    ),
    "command-center": (f"read {COMMAND_CENTER_ROOT}/#",),
}


def acl_block(name: str, role: ClientRole) -> str:
    """The ``user`` block for ``name``: a deny of the gateway namespace the ACL's patterns would give that
    name, then the role's topics."""
    check_identity(name, Kind.CLIENT, role)
    lines = [f"user {name}", f"topic deny {GATEWAY_ROOT}/{name}/#"]
    lines += [f"topic {access}" for access in ROLE_TOPICS[role]]
    return "\n".join(lines) + "\n"
