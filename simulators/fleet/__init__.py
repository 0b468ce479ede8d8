"""``wardwatch sim fleet``: wire-contract load from many simulated gateways (docs/simulators.md).

* :mod:`.traffic` — what each home sends, a pure function of (seed, home, tick);
* :mod:`.runner` — gateways on real MQTT connections, reconnects, counters;
* :mod:`.latency` — bounded-memory latency percentiles;
* :mod:`.display` — live progress and the summary; :mod:`.command` — the command line.
"""

from simulators.fleet.latency import LatencyHistogram, LatencySummary
from simulators.fleet.runner import (
    BrokerUnreachable,
    Fleet,
    FleetConfig,
    FleetError,
    FleetStats,
    SimulatedGateway,
)
from simulators.fleet.traffic import STREAMS, HomeTraffic, PlannedMessage, TrafficError, TrafficPlan

__all__ = [
    "STREAMS",
    "BrokerUnreachable",
    "Fleet",
    "FleetConfig",
    "FleetError",
    "FleetStats",
    "HomeTraffic",
    "LatencyHistogram",
    "LatencySummary",
    "PlannedMessage",
    "SimulatedGateway",
    "TrafficError",
    "TrafficPlan",
]
