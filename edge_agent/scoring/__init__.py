"""Early-warning scores for the gateway and the server.

* :func:`news2` — NEWS2 (RCP 2017) for whole arrays; :mod:`.mews` and :mod:`.qsofa` have the same shape.
* :mod:`.response` — the RCP clinical response and minimum monitoring frequency for each risk, as data.
* :mod:`.stream` — the per-patient state the edge agent feeds readings into (staleness, signal quality,
  rolling median, trend) and that emits an assessment only when the picture changes.

Everything here is pure: arrays or readings and an injected ``now`` in, values out.
docs/scoring.md lists every table with its source.
"""

from edge_agent.scoring.mews import MewsResult, mews
from edge_agent.scoring.news2 import News2Result, news2
from edge_agent.scoring.qsofa import QsofaResult, qsofa
from edge_agent.scoring.response import ClinicalResponse, clinical_response

__all__ = [
    "ClinicalResponse",
    "MewsResult",
    "News2Result",
    "QsofaResult",
    "clinical_response",
    "mews",
    "news2",
    "qsofa",
]
