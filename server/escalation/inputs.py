"""What the policy is told: gateway traffic, clinicians' actions and timer ticks.

Gateway traffic is passed as the wire contract's own models (already validated by ingest). A clinician's
action names the alert, the actor's account id and role; the API checks the token, the policy checks
what that role may do to that alert.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from edge_agent.protocol import Assessment, Event, GatewayStatus, ObservationBatch
from server.escalation.config import Role

ActorId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
]
Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tick(_Input):
    """The scheduler calling back at (or after) a due time. Any other input also fires what is due."""

    kind: Literal["tick"] = "tick"


class AssessmentReceived(_Input):
    kind: Literal["assessment"] = "assessment"
    assessment: Assessment


class StatusReceived(_Input):
    kind: Literal["status"] = "status"
    status: GatewayStatus


class EventReceived(_Input):
    kind: Literal["event"] = "event"
    event: Event


class ObservationsReceived(_Input):
    """An observation batch; the policy looks only at each device's newest live reading (probe state)."""

    kind: Literal["observations"] = "observations"
    batch: ObservationBatch


class _ClinicianAction(_Input):
    alert_id: uuid.UUID
    actor: ActorId
    role: Role
    note: Note | None = None


class Acknowledge(_ClinicianAction):
    kind: Literal["acknowledge"] = "acknowledge"


class Escalate(_ClinicianAction):
    """Send the alert to the next tier now."""

    kind: Literal["escalate"] = "escalate"


class Snooze(_ClinicianAction):
    """Silence a low or medium alert for a bounded time; it is re-armed when the snooze ends."""

    kind: Literal["snooze"] = "snooze"
    duration_s: float = Field(gt=0)


class Resolve(_ClinicianAction):
    """Close the alert. A note saying why is required."""

    kind: Literal["resolve"] = "resolve"


ClinicianAction = Acknowledge | Escalate | Snooze | Resolve
PolicyInput = Annotated[
    Tick
    | AssessmentReceived
    | StatusReceived
    | EventReceived
    | ObservationsReceived
    | Acknowledge
    | Escalate
    | Snooze
    | Resolve,
    Field(discriminator="kind"),
]
