"""The fleet's live progress (rich, only on a terminal) and its end-of-run summary."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
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


class Progress:
    """Samples the counters; computes recent rates and windowed latency percentiles."""

    def __init__(self, stats: FleetStats, config: FleetConfig) -> None:
        self.stats = stats
        self.config = config
        self._samples: deque[tuple[float, int, int]] = deque()
        self._window_started = time.monotonic()
        self.puback = LatencyHistogram()
        self.e2e = LatencyHistogram()

    def sample(self) -> tuple[float, float]:
        """Acknowledged messages and observations per second over the recent window."""
        stats, now = self.stats, time.monotonic()
        if not self._samples and now > stats.started_monotonic:
            self._samples.append((stats.started_monotonic, 0, 0))
        self._samples.append((now, stats.total(stats.acknowledged), stats.observations_acknowledged))
        while len(self._samples) > 2 and now - self._samples[0][0] > WINDOW_S:
            self._samples.popleft()
        if now - self._window_started >= WINDOW_S:
            # Keep the last full window for display while the next one fills.
            self.puback.clear()
            self.puback.merge(stats.puback_window)
            stats.puback_window.clear()
            self.e2e.clear()
            self.e2e.merge(stats.e2e_window)
            stats.e2e_window.clear()
            self._window_started = now
        elif self.puback.count == 0:
            self.puback.merge(stats.puback_window)
            stats.puback_window.clear()
            self.e2e.merge(stats.e2e_window)
            stats.e2e_window.clear()
        first, last = self._samples[0], self._samples[-1]
        span = last[0] - first[0]
        if span <= 0:
            return 0.0, 0.0
        return (last[1] - first[1]) / span, (last[2] - first[2]) / span

    def table(self) -> Table:
        stats = self.stats
        messages_per_s, observations_per_s = self.sample()
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
        table.add_row("rate", f"{messages_per_s:,.0f} msg/s, {observations_per_s:,.0f} obs/s")
        table.add_row("PUBACK latency p50/p95/p99 ms", _percentiles(self.puback))
        if self.config.measure_e2e:
            table.add_row("end-to-end p50/p95/p99 ms", _percentiles(self.e2e))
            table.add_row("received by probe", f"{stats.received:,}")
        if stats.last_errors:
            table.add_row("last error", stats.last_errors[-1][:100], style="red")
        return table

    def line(self) -> str:
        stats = self.stats
        messages_per_s, observations_per_s = self.sample()
        return (
            f"{stats.elapsed_s:.0f}s connected={stats.connected}/{stats.homes} "
            f"sent={stats.total(stats.sent)} acked={stats.total(stats.acknowledged)} "
            f"refused={stats.total(stats.refused)} backlog={stats.backlog} "
            f"rate={messages_per_s:.0f}msg/s {observations_per_s:.0f}obs/s "
            f"puback_ms(p50/p95/p99)={_percentiles(self.puback)}"
        )


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
