"""The clinical response to a NEWS2 score (RCP 2017, chart 4 and table 3), as data.

=====================================  ===================  ==============================================
trigger                                minimum monitoring   response
=====================================  ===================  ==============================================
aggregate 0                            12-hourly            continue routine NEWS2 monitoring
aggregate 1-4                          4-6-hourly           registered nurse to assess; decide on
                                                            frequency and escalation
3 in a single parameter (low-medium)   1-hourly             registered nurse to inform the medical team,
                                                            who review and decide on escalation
aggregate 5-6 (medium)                 1-hourly             inform the medical team at once; urgent
                                                            review by a clinician competent in acute
                                                            illness; care where the patient is monitored
aggregate 7 or more (high)             continuous           emergency assessment by a critical-care team;
                                                            consider transfer to level 2 or 3 care
=====================================  ===================  ==============================================

The two "low" rows differ only in frequency, so the response depends on the total as well as the risk.
For a virtual ward, "the medical team" is the command center's clinician on call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from edge_agent.protocol import Risk

__all__ = ["CLINICAL_RESPONSES", "ClinicalResponse", "clinical_response"]


@dataclass(frozen=True, slots=True)
class ClinicalResponse:
    trigger: str
    """Which row of the RCP table applies, e.g. "aggregate 1-4"."""
    risk: Risk
    monitoring: str
    """Minimum monitoring frequency as the chart says it: "12-hourly", "4-6-hourly", "1-hourly" or
    "continuous"."""
    longest_interval: timedelta | None
    """The longest allowed gap between observation sets; None for continuous monitoring."""
    response: str


CLINICAL_RESPONSES: Final = (
    ClinicalResponse(
        trigger="aggregate 0",
        risk=Risk.LOW,
        monitoring="12-hourly",
        longest_interval=timedelta(hours=12),
        response="Continue routine NEWS2 monitoring.",
    ),
    ClinicalResponse(
        trigger="aggregate 1-4",
        risk=Risk.LOW,
        monitoring="4-6-hourly",
        longest_interval=timedelta(hours=6),
        response=(
            "Inform a registered nurse, who must assess the patient and decide whether to increase the "
            "frequency of monitoring or escalate care."
        ),
    ),
    ClinicalResponse(
        trigger="3 in a single parameter",
        risk=Risk.LOW_MEDIUM,
        monitoring="1-hourly",
        longest_interval=timedelta(hours=1),
        response=(
            "Registered nurse to inform the medical team caring for the patient, who will review and "
            "decide whether escalation of care is necessary."
        ),
    ),
    ClinicalResponse(
        trigger="aggregate 5-6",
        risk=Risk.MEDIUM,
        monitoring="1-hourly",
        longest_interval=timedelta(hours=1),
        response=(
            "Registered nurse to inform the medical team immediately and request an urgent assessment by a "
            "clinician or team competent in the care of acutely ill patients; provide care in an "
            "environment with monitoring facilities."
        ),
    ),
    ClinicalResponse(
        trigger="aggregate 7 or more",
        risk=Risk.HIGH,
        monitoring="continuous",
        longest_interval=None,
        response=(
            "Registered nurse to inform the medical team immediately (at least specialist registrar level); "
            "emergency assessment by a team with critical-care competencies, including advanced airway "
            "skills; consider transfer to a level 2 or 3 care facility (HDU or ICU)."
        ),
    ),
)
_BY_RISK: Final = {response.risk: response for response in CLINICAL_RESPONSES[1:]}


def clinical_response(risk: Risk | str, total: int) -> ClinicalResponse:
    """The RCP response for an assessment's risk and total (a total of 0 needs only 12-hourly checks)."""
    risk = Risk(risk)
    if risk is Risk.LOW and total == 0:
        return CLINICAL_RESPONSES[0]
    return _BY_RISK[risk]
