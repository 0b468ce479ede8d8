"""Errors raised by the patient physiology simulator.

::

    PhysiologyError (ValueError)        base of everything this package raises on purpose
    ├── UnknownScenarioError (KeyError)  a scenario name that is not in SCENARIOS; lists the known ones
    └── ScenarioError                    a scenario, course, cadence or fault definition that cannot run
"""

from __future__ import annotations


class PhysiologyError(ValueError):
    """Base class for the physiology simulator's own errors."""


class UnknownScenarioError(PhysiologyError, KeyError):
    """A scenario name that is not defined. ``known`` lists the names that are."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown scenario {name!r}; known scenarios: {', '.join(known)}")
        self.name = name
        self.known = known

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class ScenarioError(PhysiologyError):
    """A scenario, course, device cadence or fault event that is inconsistent."""
