"""Simulated patients: deterministic vital signs, device cadences, artefacts and equipment faults.

::

    from simulators.physiology import Patient, DeviceKind

    patient = Patient("sepsis", seed=7)               # hour 0 = DEFAULT_START unless start= is given
    patient.vitals_at(16 * 3600)                      # true vitals at 16 h (Vitals)
    patient.vitals_series(range(0, 48 * 3600, 60))    # arrays for a vectorised scorer (VitalsSeries)
    for sample in patient.samples(0, 3600):           # what the scenario's devices measure, in time order
        ...
    patient.device_connected(DeviceKind.THERMOMETER, t)   # equipment faults for device simulators
    patient.uplink_up(t)                                   # … and for the agent simulator

Scenarios, cadences and faults are data (``SCENARIOS``, ``CADENCES``, ``FaultEvent``); docs/scenarios.md
describes each scenario's expected course.
"""

from .cadence import CADENCES, Cadence, DeviceKind, Measurement
from .course import BASELINE, Course
from .errors import PhysiologyError, ScenarioError, UnknownScenarioError
from .faults import FaultEvent, FaultKind, FaultTransition
from .patient import DEFAULT_START, Patient, Sample, Vitals, VitalsSeries
from .scenarios import NEWS2_KIT, RISK_ORDER, SCENARIOS, Expectation, RiskBand, Scenario, fault, get_scenario

__all__ = [
    "BASELINE",
    "CADENCES",
    "DEFAULT_START",
    "NEWS2_KIT",
    "RISK_ORDER",
    "SCENARIOS",
    "Cadence",
    "Course",
    "DeviceKind",
    "Expectation",
    "FaultEvent",
    "FaultKind",
    "FaultTransition",
    "Measurement",
    "Patient",
    "PhysiologyError",
    "RiskBand",
    "Sample",
    "Scenario",
    "ScenarioError",
    "UnknownScenarioError",
    "Vitals",
    "VitalsSeries",
    "fault",
    "get_scenario",
]
