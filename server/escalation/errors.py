"""Errors raised by the escalation policy when a clinician's action cannot be applied.

::

    EscalationError                     base of everything the escalation policy raises on purpose
    ├── AlertNotOpenError (LookupError) the alert id names no open alert in the state given
    └── ActionRefusedError (ValueError) the action is not allowed (role, alert state, priority, note)

A refused action changes nothing and produces no alert event, so the API can answer 404 / 409 / 403 /
422 from the class and ``reason`` without parsing the message.
"""

from __future__ import annotations

import uuid
from typing import Literal

RefusalReason = Literal[
    "role_not_allowed",
    "already_acknowledged",
    "snooze_not_allowed",
    "snooze_too_long",
    "top_tier_reached",
    "note_required",
]


class EscalationError(Exception):
    """Base class for the escalation policy's own errors."""


class AlertNotOpenError(EscalationError, LookupError):
    """No open alert with this id (never raised, already resolved, or held by another subject's state)."""

    def __init__(self, alert_id: uuid.UUID) -> None:
        super().__init__(f"alert {alert_id} is not open")
        self.alert_id = alert_id


class ActionRefusedError(EscalationError, ValueError):
    """A clinician's action that the policy refuses; ``reason`` says why in a machine-readable word."""

    def __init__(self, message: str, *, alert_id: uuid.UUID, reason: RefusalReason) -> None:
        super().__init__(message)
        self.alert_id = alert_id
        self.reason: RefusalReason = reason
