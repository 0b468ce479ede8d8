"""The escalation policy: gateway traffic and clinicians' actions in, alert changes and timers out.

Pure (STYLE.md rule 1): no clock, socket, database or task in here; ``now`` is passed in. The server's
escalation worker loads a state, calls :func:`decide`, stores the new state, appends the changes to the
audit log and publishes them (:func:`to_alert_event`), and asks to be called back at
``Decision.next_due_at``. docs/escalation.md describes the rules.

Modules::

    config.py     EscalationPolicy (validated settings), priorities, tiers, technical conditions, roles
    inputs.py     what the policy is told: Tick, AssessmentReceived, StatusReceived, EventReceived,
                  ObservationsReceived, Acknowledge, Escalate, Snooze, Resolve
    state.py      EscalationState (serialisable), Alert, PatientTrack, GatewayTrack, DeviceTrack
    changes.py    AlertChange (one audit record) and its wire form
    lifecycle.py  raise / escalate / re-arm / resolve and the clinicians' actions, with permissions
    clinical.py   NEWS2 rules
    technical.py  equipment alarms
    policy.py     decide(), subject_of()
    errors.py     EscalationError, AlertNotOpenError, ActionRefusedError
"""

from server.escalation.changes import Action, AlertChange, to_alert_event
from server.escalation.clinical import effective_risk, risk_from_score
from server.escalation.config import (
    CLINICAL_CONDITION,
    ClinicalResponse,
    EscalationPolicy,
    Priority,
    Role,
    TechnicalCondition,
)
from server.escalation.errors import ActionRefusedError, AlertNotOpenError, EscalationError
from server.escalation.inputs import (
    Acknowledge,
    AssessmentReceived,
    ClinicianAction,
    Escalate,
    EventReceived,
    ObservationsReceived,
    PolicyInput,
    Resolve,
    Snooze,
    StatusReceived,
    Tick,
)
from server.escalation.lifecycle import PERMITTED_ROLES
from server.escalation.policy import Decision, alert_subject, decide, subject_of
from server.escalation.state import Alert, DeviceTrack, EscalationState, GatewayTrack, PatientTrack

__all__ = [
    "CLINICAL_CONDITION",
    "PERMITTED_ROLES",
    "Acknowledge",
    "Action",
    "ActionRefusedError",
    "Alert",
    "AlertChange",
    "AlertNotOpenError",
    "AssessmentReceived",
    "ClinicalResponse",
    "ClinicianAction",
    "Decision",
    "DeviceTrack",
    "Escalate",
    "EscalationError",
    "EscalationPolicy",
    "EscalationState",
    "EventReceived",
    "GatewayTrack",
    "ObservationsReceived",
    "PatientTrack",
    "PolicyInput",
    "Priority",
    "Resolve",
    "Role",
    "Snooze",
    "StatusReceived",
    "TechnicalCondition",
    "Tick",
    "alert_subject",
    "decide",
    "effective_risk",
    "risk_from_score",
    "subject_of",
    "to_alert_event",
]
