"""Early-warning scores for the gateway and the server.

* :func:`news2` — NEWS2 (RCP 2017) for whole arrays; :mod:`.mews` and :mod:`.qsofa` have the same shape.
  :func:`news2_one` scores a single observation set in plain Python from the same tables.
* :mod:`.response` — the RCP clinical response and minimum monitoring frequency for each risk, as data.
* :mod:`.stream` — :class:`PatientChart`, the per-patient state the edge agent feeds readings into
  (staleness, signal quality, rolling median, trend); it emits an assessment only when the picture changes.

Everything here is pure: arrays or readings and an injected ``now`` in, values out.
docs/scoring.md lists every table with its source.
"""

from edge_agent.scoring.mews import MewsResult, mews
from edge_agent.scoring.news2 import News2Result, News2Set, news2, news2_one
from edge_agent.scoring.qsofa import QsofaResult, qsofa
from edge_agent.scoring.response import ClinicalResponse, clinical_response
from edge_agent.scoring.stream import ChartSettings, PatientChart

__all__ = [
    "ChartSettings",
    "ClinicalResponse",
    "MewsResult",
    "News2Result",
    "News2Set",
    "PatientChart",
    "QsofaResult",
    "clinical_response",
    "mews",
    "news2",
    "news2_one",
    "qsofa",
]
