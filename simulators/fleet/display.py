"""The fleet's live progress (rich, only on a terminal) and its end-of-run summary."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from simulators.fleet.latency import LatencyHistogram
from simulators.fleet.runner import FleetConfig, FleetStats

log = logging.getLogger(__name__)

REFRESH_S = 0.5
WINDOW_S = 5.0
"""Rates and live latency percentiles are over about this many recent seconds."""
LOG_EVERY_S = 10.0
"""Without a terminal, a progress line is logged this often."""


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _percentiles(histogram: LatencyHistogram) -> str:
    return " / ".join(_ms(histogram.percentile(q)) for q in (50, 95, 99))


@dataclass(frozen=True, slots=True)
class Snapshot:
    at: float
    acknowledged: int
    observations: int
    puback: LatencyHistogram
    e2e: LatencyHistogram


@dataclass(frozen=True, slots=True)
class Window:
    """Rates and latency over the recent window (about WINDOW_S)."""

    messages_per_s: float
    observations_per_s: float
    puback: LatencyHistogram
    e2e: LatencyHistogram


class Progress:
    """Recent rates and latency percentiles from snapshots of the run's cumulative counters.

    Each consumer (live table, log lines, JSON lines) has its own Progress; none of them resets anything
    the others read."""

    def __init__(self, stats: FleetStats, config: FleetConfig, *, window_s: float = WINDOW_S) -> None:
        self.stats = stats
        self.config = config
        self.window_s = window_s
        self._snapshots: deque[Snapshot] = deque()

    def _snapshot(self, at: float) -> Snapshot:
        stats = self.stats
        return Snapshot(
            at,
            stats.total(stats.acknowledged),
            stats.observations_acknowledged,
            stats.puback.copy(),
            stats.e2e.copy(),
        )

    def sample(self) -> Window:
        stats, now = self.stats, time.monotonic()
        if not self._snapshots:
            self._snapshots.append(
                Snapshot(stats.started_monotonic, 0, 0, LatencyHistogram(), LatencyHistogram())
            )
        self._snapshots.append(self._snapshot(now))
        while len(self._snapshots) > 2 and now - self._snapshots[1].at >= self.window_s:
            self._snapshots.popleft()
        first, last = self._snapshots[0], self._snapshots[-1]
        span = last.at - first.at
        return Window(
            messages_per_s=(last.acknowledged - first.acknowledged) / span if span > 0 else 0.0,
            observations_per_s=(last.observations - first.observations) / span if span > 0 else 0.0,
            puback=last.puback.since(first.puback),
            e2e=last.e2e.since(first.e2e),
        )

    def table(self) -> Table:
        stats = self.stats
        window = self.sample()
        table = Table(title=f"wardwatch sim fleet → {self.config.broker_display}", show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value", justify="right")
        table.add_row("elapsed", f"{stats.elapsed_s:.0f} s of {self.config.duration_s:g} s")
        table.add_row(
            "gateways connected", f"{stats.connected} / {stats.homes} ({stats.gateways_started} started)"
        )
        table.add_row("reconnects / connect failures", f"{stats.reconnects} / {stats.connect_failures}")
        table.add_row("messages sent", f"{stats.total(stats.sent):,}")
        table.add_row("acknowledged", f"{stats.total(stats.acknowledged):,}")
        table.add_row("refused", f"{stats.total(stats.refused):,}")
        table.add_row("retransmitted", f"{stats.retransmitted:,}")
        table.add_row("backlog (unacknowledged)", f"{stats.backlog:,}")
        table.add_row("rate", f"{window.messages_per_s:,.0f} msg/s, {window.observations_per_s:,.0f} obs/s")
        table.add_row("PUBACK latency p50/p95/p99 ms", _percentiles(window.puback))
        if self.config.measure_e2e:
            table.add_row("end-to-end p50/p95/p99 ms", _percentiles(window.e2e))
            table.add_row("received by probe", f"{stats.received:,}")
        if stats.last_errors:
            table.add_row("last error", stats.last_errors[-1][:100], style="red")
        return table

    def line(self) -> str:
        stats = self.stats
        window = self.sample()
        return (
            f"{stats.elapsed_s:.0f}s connected={stats.connected}/{stats.homes} "
            f"sent={stats.total(stats.sent)} acked={stats.total(stats.acknowledged)} "
            f"refused={stats.total(stats.refused)} backlog={stats.backlog} "
            f"rate={window.messages_per_s:.0f}msg/s {window.observations_per_s:.0f}obs/s "
            f"puback_ms(p50/p95/p99)={_percentiles(window.puback)}"
        )

    def record(self) -> dict[str, object]:
        """One line of the progress time series (``--progress-jsonl``)."""
        stats = self.stats
        window = self.sample()
        line: dict[str, object] = {
            "at": datetime.now(UTC).isoformat(),
            "elapsed_s": round(stats.elapsed_s, 3),
            "connected": stats.connected,
            "sent": stats.total(stats.sent),
            "acknowledged": stats.total(stats.acknowledged),
            "refused": stats.total(stats.refused),
            "retransmitted": stats.retransmitted,
            "backlog": stats.backlog,
            "reconnects": stats.reconnects,
            "messages_per_s": round(window.messages_per_s, 1),
            "observations_per_s": round(window.observations_per_s, 1),
            "puback": window.puback.summary().as_dict(),
            "end_to_end": window.e2e.summary().as_dict() if self.config.measure_e2e else None,
            "generator_max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        return line


async def record_progress(stats: FleetStats, config: FleetConfig, path: Path, interval_s: float) -> None:
    """Until cancelled: append one JSON line per interval to ``path`` (rates and latency over the
    interval, counters since the start)."""
    progress = Progress(stats, config, window_s=interval_s)
    with path.open("a", encoding="utf-8") as out:
        while True:
            await asyncio.sleep(interval_s)
            out.write(json.dumps(progress.record()) + "\n")
            out.flush()


async def show_progress(stats: FleetStats, config: FleetConfig, console: Console) -> None:
    """Until cancelled: a live table on a terminal, otherwise a log line every LOG_EVERY_S."""
    progress = Progress(stats, config)
    if console.is_terminal:
        with Live(progress.table(), console=console, auto_refresh=False, transient=True) as live:
            while True:
                await asyncio.sleep(REFRESH_S)
                live.update(progress.table(), refresh=True)
    while True:
        await asyncio.sleep(LOG_EVERY_S)
        log.info("fleet: %s", progress.line())


def summary_table(summary: dict[str, Any]) -> Table:
    messages, latency = summary["messages"], summary["latency"]
    table = Table(title="wardwatch sim fleet: summary", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    gateways = summary["gateways"]
    table.add_row("homes", f"{summary['homes']} ({gateways['started']} started)")
    table.add_row(
        "elapsed", f"{summary['elapsed_s']:.1f} s" + (" (interrupted)" if summary["interrupted"] else "")
    )
    table.add_row("connects / reconnects", f"{gateways['connects']} / {gateways['reconnects']}")
    table.add_row("messages sent", f"{messages['sent']:,}")
    table.add_row("acknowledged", f"{messages['acknowledged']:,}")
    table.add_row("refused", f"{messages['refused']:,}")
    table.add_row("unacknowledged", f"{messages['unacknowledged']:,}")
    table.add_row("retransmitted", f"{messages['retransmitted']:,}")
    table.add_row(
        "observations sent / acknowledged",
        f"{summary['observations']['sent']:,} / {summary['observations']['acknowledged']:,}",
    )
    throughput = summary["throughput"]
    table.add_row(
        "rate", f"{throughput['messages_per_s']:,} msg/s, {throughput['observations_per_s']:,} obs/s"
    )
    for name, key in (("PUBACK latency", "puback"), ("end-to-end latency", "end_to_end")):
        values = latency.get(key)
        if values is None:
            continue
        text = " / ".join(
            "-" if values[p] is None else f"{values[p]:.1f}" for p in ("p50_ms", "p95_ms", "p99_ms")
        )
        table.add_row(f"{name} p50/p95/p99 ms", f"{text} (n={values['count']:,})")
    if summary.get("end_to_end"):
        table.add_row("received by probe", f"{summary['end_to_end']['received']:,}")
    for error in summary["errors"]:
        table.add_row("error", error[:110], style="red")
    return table
