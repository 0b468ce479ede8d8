"""The drivers repeat the wire contract's vital codes, units, quality flags and time sources (they may not
import the edge agent); this keeps the copies equal."""

from __future__ import annotations

import ast
from pathlib import Path

import drivers
from drivers.reading import UNITS, Quality, TimeSource, Vital
from edge_agent import protocol


def test_vital_codes_equal_the_wire_contract() -> None:
    assert [v.value for v in Vital] == [v.value for v in protocol.VitalCode]


def test_units_are_the_contract_ucum_units() -> None:
    assert {str(k): u for k, u in UNITS.items()} == {str(c): s.ucum for c, s in protocol.VITALS.items()}


def test_quality_flags_and_time_sources_equal_the_contract() -> None:
    assert {q.value for q in Quality} == {q.value for q in protocol.QualityFlag}
    assert {t.value for t in TimeSource} == {t.value for t in protocol.TimeSource}


def test_parse_error_is_a_value_error_exported_at_the_top() -> None:
    assert issubclass(drivers.ParseError, ValueError)
    assert issubclass(drivers.ParseError, drivers.DriverError)


def test_drivers_import_nothing_from_the_other_packages() -> None:
    root = Path(drivers.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}"
                for n in names
                if n.split(".")[0] in {"edge_agent", "server", "simulators"}
            ]
    assert offenders == []
