"""NEWS2 throughput: WardWatch's vectorised scorer against PyPI ``vitalscore`` (a per-row scorer).

Run from the repository root (the peer is in the ``bench`` extra)::

    .venv/bin/pip install -c constraints.txt -e '.[bench]'
    .venv/bin/python bench/bench_news2.py --rows 1000000 --runs 5

One process, same input rows for both. Reports, as medians of ``--runs`` runs:

* rows per second of ``edge_agent.scoring.news2`` (with and without building the ``risk`` object array)
  and of ``vitalscore.score_news2`` called once per row (reading ``total`` and ``risk``; its inputs are
  converted to Python lists before the clock starts, which favours the peer);
* the ratio of the two (the target is >= 100x);
* the cost of reading the inputs once (``np.sum`` over every input array), the floor any scorer that looks
  at every value must pay;
* our band lookup (one comparison per cut point) against ``np.searchsorted`` + ``take``;
* agreement with the peer on whole-number inputs (temperature in tenths, the chart's resolution), and on
  fractional inputs, with every disagreement sorted into a kind.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from importlib import metadata
from typing import Any

import numpy as np

from edge_agent.scoring import news2
from edge_agent.scoring.news2 import PULSE

try:
    from vitalscore import score_news2
except ImportError:  # pragma: no cover - told to the user below
    sys.exit("vitalscore is not installed: .venv/bin/pip install -c constraints.txt -e '.[bench]'")

CONSCIOUSNESS_LEVELS = np.array(["A", "C", "V", "P", "U"])
PEER_RISK = {"Low": "low", "Medium": "medium", "High": "high"}
COMPONENT_ATTRIBUTES = (
    "rr_score",
    "spo2_score",
    "o2_score",
    "sbp_score",
    "hr_score",
    "consciousness_score",
    "temp_score",
)


def make_rows(rows: int, seed: int, *, fractional: bool) -> dict[str, np.ndarray]:
    """Observation sets spread over every band, inside vitalscore's accepted ranges."""
    rng = np.random.default_rng(seed)

    def whole(low: int, high: int) -> np.ndarray:
        values = rng.integers(low, high + 1, rows).astype(np.float64)
        if fractional:  # one decimal place, e.g. 90.4 (a device average, a typed value)
            values = np.clip(values + rng.integers(-5, 5, rows) / 10, low, high)
        return values

    tenths = rng.integers(330, 416, rows) / 10  # 33.0 .. 41.5 C
    if fractional:  # two decimal places, e.g. 36.04
        tenths = np.round(tenths + rng.integers(-5, 5, rows) / 100, 2)
    consciousness = np.where(rng.random(rows) < 0.85, "A", CONSCIOUSNESS_LEVELS[rng.integers(1, 5, rows)])
    return {
        "respiratory_rate": whole(4, 45),
        "spo2": whole(70, 100),
        "systolic_bp": whole(60, 260),
        "pulse": whole(30, 180),
        "temperature": tenths,
        "on_oxygen": rng.random(rows) < 0.2,
        "consciousness": consciousness,
        "spo2_scale": np.where(rng.random(rows) < 0.15, 2, 1),
        "alert": consciousness == "A",  # prepared like the peer's Python lists, before the clock starts
    }


def ours(data: dict[str, np.ndarray], *, with_risk_objects: bool) -> Any:
    result = news2(
        respiratory_rate=data["respiratory_rate"],
        spo2=data["spo2"],
        systolic_bp=data["systolic_bp"],
        pulse=data["pulse"],
        temperature=data["temperature"],
        on_oxygen=data["on_oxygen"],
        alert=data["alert"],
        spo2_scale=data["spo2_scale"],
    )
    if with_risk_objects:
        _ = result.risk
    return result


def as_lists(data: dict[str, np.ndarray]) -> list[tuple[Any, ...]]:
    return list(
        zip(
            data["respiratory_rate"].tolist(),
            data["spo2"].tolist(),
            data["on_oxygen"].tolist(),
            data["systolic_bp"].tolist(),
            data["pulse"].tolist(),
            data["consciousness"].tolist(),
            data["temperature"].tolist(),
            (data["spo2_scale"] == 2).tolist(),
            strict=True,
        )
    )


def peer(rows: list[tuple[Any, ...]]) -> list[Any]:
    results = []
    for rr, spo2, oxygen, sbp, hr, level, temp, scale_2 in rows:
        result = score_news2(rr, spo2, oxygen, sbp, hr, level, temp, use_spo2_scale2=scale_2)
        _ = result.total, result.risk
        results.append(result)
    return results


def read_once(data: dict[str, np.ndarray]) -> float:
    return float(sum(np.sum(data[name]) for name in data if name != "consciousness"))


def timed(function: Callable[[], object], runs: int) -> tuple[float, object]:
    times = []
    value: object = None
    for _ in range(runs):
        start = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def classify(
    data: dict[str, np.ndarray], result: Any, peer_results: list[Any]
) -> tuple[int, Counter[str], dict[str, str]]:
    """Rows where everything agrees, and a count and one example of each kind of disagreement."""
    kinds: Counter[str] = Counter()
    examples: dict[str, str] = {}
    agree = 0
    names = ("respiration", "spo2", "air_or_oxygen", "systolic_bp", "pulse", "consciousness", "temperature")
    inputs = ("respiratory_rate", "spo2", "on_oxygen", "systolic_bp", "pulse", "consciousness", "temperature")
    for index, other in enumerate(peer_results):
        mine = result.components[index].tolist()
        theirs = [getattr(other, attribute) for attribute in COMPONENT_ATTRIBUTES]
        found = []
        for name, source, a, b in zip(names, inputs, mine, theirs, strict=True):
            if a != b:
                found.append(f"{name}: band edge")
                examples.setdefault(
                    f"{name}: band edge",
                    f"{source}={data[source][index].item()!r}: WardWatch {a}, vitalscore {b}",
                )
        our_risk = str(result.risk[index])
        their_risk = PEER_RISK[other.risk.value]
        if not found and our_risk != their_risk:
            kind = (
                "risk: single 3 is low-medium (RCP), vitalscore says Medium"
                if our_risk == "low-medium" and their_risk == "medium"
                else f"risk: {our_risk} vs {their_risk}"
            )
            found.append(kind)
            examples.setdefault(kind, f"total {int(result.total[index])}, components {mine}")
        if found:
            kinds.update(found)
        else:
            agree += 1
    return agree, kinds, examples


def agreement_report(title: str, data: dict[str, np.ndarray], peer_results: list[Any]) -> None:
    result = ours(data, with_risk_objects=True)
    rows = len(peer_results)
    agree, kinds, examples = classify(data, result, peer_results)
    totals = sum(int(result.total[i]) == r.total for i, r in enumerate(peer_results))
    print(f"\n#### Agreement with vitalscore: {title} ({rows:,} rows)\n")
    print(f"- same total: {totals:,} rows ({100 * totals / rows:.3f} %)")
    print(f"- same components, total and risk: {agree:,} rows ({100 * agree / rows:.3f} %)")
    if kinds:
        print("\n| kind of disagreement | rows | example |\n|---|---:|---|")
        for kind, count in kinds.most_common():
            print(f"| {kind} | {count:,} | {examples[kind]} |")


def searchsorted_lookup(values: np.ndarray) -> np.ndarray:
    table = np.array((*PULSE.scores, -1), dtype=np.int8)
    index = np.searchsorted(np.array(PULSE.cuts), values, side="right")
    index[np.isnan(values)] = len(PULSE.cuts) + 1
    return table.take(index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5, help="runs of each side; medians are reported")
    parser.add_argument("--peer-runs", type=int, default=3)
    parser.add_argument("--fractional-rows", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=20_171_219)
    args = parser.parse_args()

    data = make_rows(args.rows, args.seed, fractional=False)
    peer_rows = as_lists(data)
    ours(data, with_risk_objects=True)  # warm up

    read_s, _ = timed(lambda: read_once(data), args.runs)
    ours_s, _ = timed(lambda: ours(data, with_risk_objects=True), args.runs)
    ours_levels_s, _ = timed(lambda: ours(data, with_risk_objects=False), args.runs)
    peer_s, peer_results = timed(lambda: peer(peer_rows), args.peer_runs)
    pulse = data["pulse"]
    compare_s, _ = timed(lambda: PULSE.score(pulse), args.runs)
    search_s, _ = timed(lambda: searchsorted_lookup(pulse), args.runs)
    assert np.array_equal(PULSE.score(pulse), searchsorted_lookup(pulse))

    rows = args.rows
    print("### NEWS2 throughput\n")
    print(
        f"{rows:,} rows, seed {args.seed}; medians of {args.runs} runs (vitalscore: {args.peer_runs}); "
        f"Python {platform.python_version()}, numpy {np.__version__}, "
        f"vitalscore {metadata.version('vitalscore')}, "
        f"{platform.machine()} {_cpu()}, {os.cpu_count()} CPUs (numpy runs single-threaded here)\n"
    )
    print("| what | time | rows/s | vs vitalscore |\n|---|---:|---:|---:|")
    lines = [
        ("vitalscore.score_news2, one call per row", peer_s),
        ("WardWatch news2, with the Risk object array", ours_s),
        ("WardWatch news2, risk as int8 levels only", ours_levels_s),
        ("reading the inputs once (np.sum of each array)", read_s),
    ]
    for label, seconds in lines:
        print(f"| {label} | {seconds * 1e3:,.1f} ms | {rows / seconds:,.0f} | {peer_s / seconds:,.0f}x |")
    print(
        f"\nWardWatch is {peer_s / ours_s:,.0f}x vitalscore (target >= 100x) and "
        f"{ours_s / read_s:.1f}x the cost of reading its inputs once ({ours_levels_s / read_s:.1f}x without "
        "the Risk objects)."
    )
    print(
        f"\nBand lookup for one parameter (pulse, {rows:,} values): one comparison per cut point "
        f"{compare_s * 1e3:.2f} ms, np.searchsorted + take {search_s * 1e3:.2f} ms "
        f"({search_s / compare_s:.1f}x slower); both give the same scores."
    )

    agreement_report("whole numbers, temperature in tenths", data, peer_results)
    fractional = make_rows(args.fractional_rows, args.seed + 1, fractional=True)
    agreement_report("fractional values", fractional, peer(as_lists(fractional)))


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
