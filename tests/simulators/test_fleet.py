"""``wardwatch sim fleet``: real Mosquitto, a real subscriber counting like a ledger."""

from __future__ import annotations

import asyncio
import io
import json
import math
import os
import shutil
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from support.broker import MosquittoBroker, free_port

from edge_agent.mqtt import MqttClient, MqttSettings
from edge_agent.protocol import (
    NEWS2_PARAMETERS,
    Assessment,
    Event,
    GatewayChannel,
    GatewayStatus,
    ObservationBatch,
    decode_gateway_message,
    gateway_filter,
)
from edge_agent.scoring import news2_one
from server.pki import CertificateAuthority
from simulators.fleet import (
    BrokerUnreachable,
    Fleet,
    FleetConfig,
    FleetError,
    FleetStats,
    HomeTraffic,
    LatencyHistogram,
    TrafficPlan,
)
from simulators.fleet.command import run_fleet
from simulators.fleet.traffic import DECIMALS, STREAMS, TrafficError

REPO = Path(__file__).resolve().parents[2]
WARDWATCH = Path(sys.executable).parent / "wardwatch"


def _contents(plan: TrafficPlan, index: int, ticks: int) -> list[tuple[str, object]]:
    home = HomeTraffic(plan, index, start=datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    return [(str(message.channel), message.body) for i in range(ticks) for message in home.tick(i)]


# -- traffic: pure --------------------------------------------------------------------------------------


def test_same_seed_same_contents_other_seed_other_values() -> None:
    plan = TrafficPlan(
        seed=7, rate=12, batch_interval_s=0.5, score_interval_s=5, scenarios={"sepsis": 1, "stable": 1}
    )
    first, again = _contents(plan, 3, 40), _contents(plan, 3, 40)
    assert first == again
    other = _contents(TrafficPlan(seed=8, rate=12, batch_interval_s=0.5, score_interval_s=5), 3, 40)
    values = [o.value for channel, body in first if channel == "obs" for o in body]  # type: ignore[attr-defined]
    other_values = [o.value for channel, body in other if channel == "obs" for o in body]  # type: ignore[attr-defined]
    assert len(values) == len(other_values) == 12 * 20
    assert values != other_values


def test_observation_schedule_rate_streams_and_timestamps() -> None:
    plan = TrafficPlan(rate=6, batch_interval_s=1, score_interval_s=0)
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    home = HomeTraffic(plan, 0, start=start)
    ticks = [home.tick(i) for i in range(10)]
    assert [m.channel for m in ticks[0]] == [GatewayChannel.EVENT] * 4 + [GatewayChannel.OBS]
    observations = [o for tick in ticks for m in tick if m.channel is GatewayChannel.OBS for o in m.body]  # type: ignore[union-attr]
    assert len(observations) == 60
    assert [o.vital for o in observations[:6]] == list(STREAMS)
    for k, observation in enumerate(observations):
        assert (observation.measured_at - start).total_seconds() == pytest.approx(k / 6, abs=1e-6)
        assert observation.patient_id == "sim-pt-00000"
        assert observation.device_id.startswith("sim-gw-00000-")


@pytest.mark.parametrize("index", [0, 1, 7])
def test_values_are_the_patients_vitals_whatever_the_chunking(index: int) -> None:
    """Observation values equal one direct evaluation of the patient's vitals on the 1 s grid, across the
    (per-home shifted) chunk boundaries."""
    plan = TrafficPlan(seed=2, rate=6, score_interval_s=0)
    home = HomeTraffic(plan, index, start=datetime(2026, 1, 1, tzinfo=UTC))
    observations = [
        o
        for i in range(320)
        for m in home.tick(i)
        if m.channel is GatewayChannel.OBS
        for o in m.body  # type: ignore[union-attr]
    ]
    series = home.patient.vitals_series(np.floor(np.arange(len(observations)) / 6.0))
    for k, observation in enumerate(observations):
        assert observation.value == round(float(series[observation.vital][k]), DECIMALS[observation.vital])


def test_fractional_rate_spreads_observations_without_loss() -> None:
    plan = TrafficPlan(rate=0.7, batch_interval_s=1, score_interval_s=0)
    home = HomeTraffic(plan, 0, start=datetime(2026, 3, 1, tzinfo=UTC))
    counts = [sum(m.observations for m in home.tick(i)) for i in range(100)]
    assert sum(counts) == 70
    assert set(counts) == {0, 1}


def test_assessments_are_news2_of_the_latest_values_sent() -> None:
    plan = TrafficPlan(
        seed=3, rate=6, batch_interval_s=1, score_interval_s=10, scenarios={"sepsis": 1}, scenario_hour=20
    )
    home = HomeTraffic(plan, 5, start=datetime(2026, 3, 1, tzinfo=UTC))
    latest: dict[str, float] = {}
    assessments = 0
    for i in range(60):
        for message in home.tick(i):
            if message.channel is GatewayChannel.OBS:
                for observation in message.body:  # type: ignore[union-attr]
                    latest[observation.vital] = observation.value
            elif message.channel is GatewayChannel.SCORE:
                assessments += 1
                body = message.body
                expected = news2_one(
                    respiratory_rate=latest["respiratory_rate"],
                    spo2=latest["spo2"],
                    systolic_bp=latest["systolic_bp"],
                    pulse=latest["heart_rate"],
                    temperature=latest["body_temperature"],
                    on_oxygen=body.on_oxygen,  # type: ignore[union-attr]
                    alert=body.consciousness == "A",  # type: ignore[union-attr]
                    spo2_scale=body.spo2_scale,  # type: ignore[union-attr]
                )
                assert body.total == expected.total  # type: ignore[union-attr]
                assert list(body.components.values()) == list(expected.components)  # type: ignore[union-attr]
                assert list(body.components) == list(NEWS2_PARAMETERS)  # type: ignore[union-attr]
                assert body.complete  # type: ignore[union-attr]
    # Instants 10, 20, 30, 40, 50 s; 60 s is the end of tick 59's interval [59, 60), so in tick 60.
    assert assessments == 5


@settings(max_examples=40)
@given(
    rate=st.floats(min_value=0.1, max_value=200),
    interval=st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0]),
    ticks=st.integers(min_value=1, max_value=30),
)
def test_every_observation_planned_exactly_once(rate: float, interval: float, ticks: int) -> None:
    plan = TrafficPlan(rate=rate, batch_interval_s=interval, score_interval_s=0)
    home = HomeTraffic(plan, 0, start=datetime(2026, 3, 1, tzinfo=UTC))
    count = sum(m.observations for i in range(ticks) for m in home.tick(i))
    assert count == math.ceil(ticks * interval * rate - 1e-9)


def test_plan_rejects_what_the_wire_contract_would_refuse() -> None:
    with pytest.raises(TrafficError, match="at most 1000"):
        TrafficPlan(rate=2000, batch_interval_s=1)
    with pytest.raises(TrafficError, match="unknown scenario"):
        TrafficPlan(scenarios={"flu": 1})
    with pytest.raises(FleetError, match="mqtt://"):
        FleetConfig(broker_url="http://localhost", homes=1, duration_s=1)
    with pytest.raises(FleetError, match="no TLS files"):
        FleetConfig(broker_url="mqtts://localhost", homes=1, duration_s=1)
    secret = FleetConfig(broker_url="mqtt://fleet:s3cret@broker:1884", homes=1, duration_s=1)
    assert secret.broker_display == "mqtt://broker:1884"
    assert "s3cret" not in json.dumps(FleetStats(1).summary(secret))


# -- latency histogram --------------------------------------------------------------------------------


@given(
    st.lists(st.floats(min_value=1e-4, max_value=100), min_size=1, max_size=300),
    st.sampled_from([50, 95, 99]),
)
def test_histogram_percentile_within_one_percent(values: list[float], q: int) -> None:
    histogram = LatencyHistogram()
    for value in values:
        histogram.record(value)
    ordered = sorted(values)
    exact = ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]
    reported = histogram.percentile(q)
    assert reported is not None
    assert reported == pytest.approx(exact, rel=0.01)
    assert histogram.summary().max_ms == pytest.approx(max(values) * 1000, abs=1e-3)


@given(
    st.lists(st.floats(min_value=1e-4, max_value=10), min_size=1, max_size=100),
    st.lists(st.floats(min_value=1e-4, max_value=10), min_size=1, max_size=100),
)
def test_histogram_since_is_the_later_values(before: list[float], after: list[float]) -> None:
    histogram = LatencyHistogram()
    for value in before:
        histogram.record(value)
    mark = histogram.copy()
    for value in after:
        histogram.record(value)
    window, alone = histogram.since(mark), LatencyHistogram()
    for value in after:
        alone.record(value)
    assert window.count == len(after)
    for q in (50, 95, 99):
        assert window.percentile(q) == pytest.approx(alone.percentile(q), rel=0.01)
    assert window.max_s == pytest.approx(max(after), rel=0.01)


# -- against Mosquitto ----------------------------------------------------------------------------------


class Ledger:
    """What a subscriber received from the fleet, validated with the wire contract."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seqs: dict[str, list[int]] = defaultdict(list)
        self.message_ids: set[str] = set()
        self.kinds: dict[str, int] = defaultdict(int)
        self.observations = 0
        self.statuses: dict[str, list[GatewayStatus]] = defaultdict(list)
        self.values: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self.changed = asyncio.Event()

    def sequenced(self) -> int:
        return sum(len(seqs) for seqs in self.seqs.values())

    def take(self, topic: str, payload: bytes) -> None:
        self.changed.set()
        where, message = decode_gateway_message(topic, payload)
        if not where.gateway_id.startswith(self.prefix):
            return
        if isinstance(message, GatewayStatus):
            self.statuses[where.gateway_id].append(message)
            return
        assert isinstance(message, ObservationBatch | Assessment | Event)
        self.seqs[where.gateway_id].append(message.seq)
        self.message_ids.add(str(message.message_id))
        self.kinds[str(where.channel)] += 1
        if isinstance(message, ObservationBatch):
            self.observations += len(message.observations)
            self.values[where.gateway_id].extend((str(o.vital), o.value) for o in message.observations)


async def _subscribe(
    broker: MosquittoBroker, ledger: Ledger, ready: asyncio.Event, stop: asyncio.Event
) -> None:
    settings = MqttSettings.from_url(
        broker.url,
        client_id=f"ledger-{uuid.uuid4().hex[:8]}",
        clean_start=True,
        session_expiry_s=0,
        receive_maximum=1000,
    )
    async with MqttClient(settings) as client:
        await client.subscribe(gateway_filter())
        ready.set()
        messages = client.messages()
        while not stop.is_set():
            next_message = asyncio.ensure_future(anext(messages))
            stopping = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({next_message, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if next_message in done:
                message = next_message.result()
                ledger.take(message.topic, message.payload)
            else:
                next_message.cancel()
            stopping.cancel()


async def _run_with_ledger(
    broker: MosquittoBroker, config: FleetConfig, *, first_home: int = 0
) -> tuple[Fleet, Ledger]:
    ledger = Ledger(config.plan.gateway_prefix)
    ready, stop = asyncio.Event(), asyncio.Event()
    subscriber = asyncio.create_task(_subscribe(broker, ledger, ready, stop))
    await ready.wait()
    ramped: list[int] = []
    fleet = Fleet(config, first_home=first_home, on_ramped=lambda s: ramped.append(s.gateways_started))
    await fleet.run()
    assert ramped == [config.homes]  # once, when the last home had started
    expected = fleet.stats.total(fleet.stats.acknowledged) - fleet.stats.acknowledged["status"]
    async with asyncio.timeout(10):
        while ledger.sequenced() < expected or any(
            not statuses or statuses[-1].state != "death" for statuses in ledger.statuses.values()
        ):
            ledger.changed.clear()
            await ledger.changed.wait()
    stop.set()
    await subscriber
    return fleet, ledger


@pytest.fixture
def fleet_broker(broker_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    """A private broker: the fleet leaves retained statuses behind, which other tests must not see."""
    return broker_factory(extra_config="set_tcp_nodelay true")


async def test_twenty_homes_ledger(fleet_broker: MosquittoBroker) -> None:
    prefix = f"gw{uuid.uuid4().hex[:6]}"
    plan = TrafficPlan(
        seed=11,
        rate=60,
        batch_interval_s=0.1,
        score_interval_s=0.5,
        gateway_prefix=prefix,
        scenarios={"stable": 3, "sepsis": 1},
    )
    config = FleetConfig(
        broker_url=fleet_broker.url,
        homes=20,
        duration_s=2.0,
        plan=plan,
        heartbeat_interval_s=0.5,
        connect_rate=500,
        measure_e2e=True,
        session=5,
    )
    fleet, ledger = await _run_with_ledger(fleet_broker, config)
    stats = fleet.stats
    summary = stats.summary(config)
    messages = summary["messages"]
    assert isinstance(messages, dict)

    # Every gateway delivered a contiguous sequence from 0, and only its own.
    assert set(ledger.seqs) == {plan.gateway_id(i) for i in range(20)}
    for gateway_id, seqs in ledger.seqs.items():
        assert seqs == list(range(len(seqs))), gateway_id
        assert stats.gateways[gateway_id].next_seq == len(seqs)
    # 20 ticks of 6 observations, 4 device events and 3 assessments (0.5, 1.0, 1.5 s) per gateway.
    assert ledger.kinds == {"obs": 20 * 20, "event": 20 * 4, "score": 20 * 3}
    assert ledger.observations == 20 * 20 * 6 == stats.observations_acknowledged
    # Every acknowledged message was received, nothing was refused or lost, the counts agree.
    assert messages["refused"] == 0 and messages["unacknowledged"] == 0
    assert (
        messages["sequenced_acknowledged"] == len(ledger.message_ids) == sum(map(len, ledger.seqs.values()))
    )
    assert summary["end_to_end"] == {"received": len(ledger.message_ids), "unmatched": 0}
    latency = summary["latency"]
    assert isinstance(latency, dict)
    assert latency["puback"]["count"] == len(ledger.message_ids)
    assert 0 < latency["puback"]["p50_ms"] <= latency["puback"]["p99_ms"] <= latency["puback"]["max_ms"]
    # Birth, heartbeats, death: one session each, the death last.
    for gateway_id, statuses in ledger.statuses.items():
        states = [status.state for status in statuses]
        assert states[0] == "birth" and states[-1] == "death" and "heartbeat" in states, gateway_id
        assert {status.session for status in statuses} == {5}
    assert len(ledger.statuses) == 20


async def test_same_seed_same_values_on_the_wire(fleet_broker: MosquittoBroker) -> None:
    runs = []
    for _ in range(2):
        plan = TrafficPlan(
            seed=42,
            rate=30,
            batch_interval_s=0.2,
            score_interval_s=0,
            gateway_prefix=f"gw{uuid.uuid4().hex[:6]}",
        )
        config = FleetConfig(
            broker_url=fleet_broker.url, homes=3, duration_s=1.0, plan=plan, connect_rate=500
        )
        _fleet, ledger = await _run_with_ledger(fleet_broker, config)
        runs.append([ledger.values[plan.gateway_id(i)] for i in range(3)])
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 30


async def test_reconnect_resends_unacknowledged_with_same_seq(
    broker_factory: Callable[..., MosquittoBroker],
) -> None:
    """The broker dies twice mid-run and comes back on the same port: the gateways reconnect with new
    sessions and every planned message is acknowledged in the end (unacknowledged ones are sent again;
    a small in-flight window must survive the reconnects)."""
    broker = broker_factory(persistence=True, extra_config="set_tcp_nodelay true")
    plan = TrafficPlan(
        rate=50, batch_interval_s=0.02, score_interval_s=0, gateway_prefix=f"gw{uuid.uuid4().hex[:6]}"
    )
    config = FleetConfig(
        broker_url=broker.url,
        homes=2,
        duration_s=3.0,
        plan=plan,
        connect_rate=100,
        max_inflight=2,
        drain_timeout_s=20,
        measure_e2e=True,  # the probe loses its connection too, and must not end the run
    )
    fleet = Fleet(config)
    run = asyncio.create_task(fleet.run())
    for threshold in (20, 80):
        async with asyncio.timeout(10):
            while fleet.stats.total(fleet.stats.acknowledged) < threshold:
                fleet.stats.progress.clear()
                await fleet.stats.progress.wait()
        broker.kill()
        broker.start()
    stats = await run
    assert stats.reconnects >= 4 and stats.connections_lost >= 4
    assert stats.unacknowledged() == 0
    for index in range(2):
        ledger = stats.gateways[plan.gateway_id(index)]
        assert ledger.acknowledged == ledger.sent == ledger.next_seq == 150 + 4
        assert ledger.sessions >= 3


# -- command line ---------------------------------------------------------------------------------------


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [str(WARDWATCH), "sim", "fleet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_cli_runs_and_writes_json_summary(fleet_broker: MosquittoBroker, tmp_path: Path) -> None:
    summary_path, progress_path = tmp_path / "summary.json", tmp_path / "progress.jsonl"
    result = _cli(
        "--homes", "5", "--broker", fleet_broker.url, "--duration", "1.5", "--rate", "12",
        "--batch-interval", "0.5", "--score-interval", "0.5", "--seed", "3",
        "--gateway-prefix", f"gw{uuid.uuid4().hex[:6]}", "--json-summary", str(summary_path),
        "--progress-jsonl", str(progress_path), "--progress-interval", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "summary" in result.stdout and "acknowledged" in result.stdout
    summary = json.loads(summary_path.read_text())
    assert summary["homes"] == 5
    assert summary["messages"]["unacknowledged"] == 0
    assert summary["observations"] == {"sent": 5 * 18, "acknowledged": 5 * 18}
    assert summary["messages"]["by_kind"]["score"]["acknowledged"] == 5 * 2
    assert summary["latency"]["puback"]["count"] == summary["messages"]["sequenced_acknowledged"]
    assert len(summary["per_gateway"]) == 5
    lines = [json.loads(line) for line in progress_path.read_text().splitlines()]
    assert len(lines) >= 2
    acknowledged = [line["acknowledged"] for line in lines]
    assert acknowledged == sorted(acknowledged) and acknowledged[-1] <= summary["messages"]["acknowledged"]
    assert sum(line["puback"]["count"] for line in lines) <= summary["latency"]["puback"]["count"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:1883", "must start with mqtt://"),
        ("mqtt://127.0.0.1:{port}", "cannot reach the broker"),
    ],
)
def test_cli_bad_broker_exits_2(url: str, message: str) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = _cli("--homes", "3", "--broker", url.format(port=port), "--duration", "1", timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_unwritable_summary_is_a_usage_error_before_the_run(tmp_path: Path) -> None:
    result = _cli(
        "--homes", "1", "--broker", "mqtt://127.0.0.1:1", "--duration", "1",
        "--json-summary", str(tmp_path / "missing" / "summary.json"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "--json-summary" in result.stderr and "does not exist" in result.stderr


def test_cli_unusable_tls_files_are_a_usage_error(tmp_path: Path) -> None:
    result = _cli(
        "--homes", "1", "--broker", "mqtts://127.0.0.1:1", "--duration", "1",
        "--tls-ca", str(tmp_path / "no-such-ca.pem"),
    )  # fmt: skip
    assert result.returncode == 2
    assert "no-such-ca.pem" in result.stderr and "Traceback" not in result.stderr


def test_numpy_is_not_seeded_globally() -> None:
    """The plan never touches numpy's or random's global state (other code may rely on it)."""
    state = np.random.get_state()[1].copy()  # type: ignore[index]
    _contents(TrafficPlan(seed=1), 0, 3)
    assert (np.random.get_state()[1] == state).all()  # type: ignore[index]


async def test_refused_messages_are_counted_not_retried_and_fail_the_run(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    """The broker's ACL refuses assessments (PUBACK 0x87): each is counted once as refused, nothing is
    resent, the rest of the traffic flows, and the command's exit status is 1."""
    acl = tmp_path / "acl"
    acl.write_text(
        "user fleet\n"
        "topic write wardwatch/v1/gw/+/status\n"
        "topic write wardwatch/v1/gw/+/obs\n"
        "topic write wardwatch/v1/gw/+/event\n"
    )
    port = free_port()
    broker = broker_factory(
        port=port, listener_config=f"listener {port} 127.0.0.1\nallow_anonymous true\nacl_file {acl}\n"
    )
    plan = TrafficPlan(
        rate=10, batch_interval_s=0.25, score_interval_s=0.5, gateway_prefix=f"gw{uuid.uuid4().hex[:6]}"
    )
    config = FleetConfig(
        broker_url=broker.url, homes=3, duration_s=1.0, plan=plan, username="fleet", connect_rate=100
    )
    output = io.StringIO()
    summary, status = await run_fleet(config, console=Console(file=output, force_terminal=True, width=120))
    assert status == 1
    messages = summary["messages"]
    assert isinstance(messages, dict)
    assert messages["by_kind"]["score"] == {"sent": 3, "acknowledged": 0, "refused": 3}
    assert messages["by_kind"]["obs"] == {"sent": 12, "acknowledged": 12, "refused": 0}
    assert messages["retransmitted"] == 0 and messages["unacknowledged"] == 0
    assert any("0x87" in error for error in summary["errors"])  # type: ignore[attr-defined]
    # On a terminal the live table was drawn.
    assert "gateways connected" in output.getvalue()


async def test_first_home_offsets_ids_and_unreachable_broker_fails_fast() -> None:
    plan = TrafficPlan(gateway_prefix="gwoff")
    config = FleetConfig(broker_url=f"mqtt://127.0.0.1:{free_port()}", homes=3, duration_s=1.0, plan=plan)
    fleet = Fleet(config, first_home=7)
    async with asyncio.timeout(15):
        with pytest.raises(BrokerUnreachable, match="cannot connect"):
            await fleet.run()
    assert list(fleet.stats.gateways) == ["gwoff-00007"]  # nobody else tried


async def test_first_home_traffic(fleet_broker: MosquittoBroker) -> None:
    plan = TrafficPlan(rate=6, score_interval_s=0, gateway_prefix=f"gw{uuid.uuid4().hex[:6]}")
    config = FleetConfig(broker_url=fleet_broker.url, homes=2, duration_s=1.0, plan=plan, connect_rate=100)
    _fleet, ledger = await _run_with_ledger(fleet_broker, config, first_home=7)
    assert sorted(ledger.seqs) == [plan.gateway_id(7), plan.gateway_id(8)]
    # Home 7 of a fleet split over processes sends what home 7 of one big fleet sends.
    expected = _contents(plan, 7, 1)
    sent = [
        (str(vital), value)
        for channel, body in expected
        if channel == "obs"
        for vital, value in ((o.vital, o.value) for o in body)
    ]  # type: ignore[attr-defined]
    assert ledger.values[plan.gateway_id(7)] == sent


async def test_broker_gone_for_good_ends_at_the_drain_timeout(
    broker_factory: Callable[..., MosquittoBroker],
) -> None:
    """The broker dies and stays dead: the run still ends (drain timeout), every planned message is
    accounted for as acknowledged, unacknowledged or never sent."""
    broker = broker_factory()
    plan = TrafficPlan(
        rate=10, batch_interval_s=0.1, score_interval_s=0, gateway_prefix=f"gw{uuid.uuid4().hex[:6]}"
    )
    config = FleetConfig(
        broker_url=broker.url, homes=2, duration_s=1.5, plan=plan, connect_rate=100, drain_timeout_s=1.0
    )

    fleet = Fleet(config)

    async def kill_after_some_traffic() -> None:
        while fleet.stats.total(fleet.stats.acknowledged) < 8:
            fleet.stats.progress.clear()
            await fleet.stats.progress.wait()
        broker.kill()

    loop = asyncio.get_running_loop()
    started = loop.time()
    killer = asyncio.create_task(kill_after_some_traffic())
    async with asyncio.timeout(20):
        stats = await fleet.run()
    await killer
    assert loop.time() - started < 12
    summary = stats.summary(config)
    messages = summary["messages"]
    assert isinstance(messages, dict)
    assert messages["unacknowledged"] + messages["never_sent"] > 0
    assert stats.connections_lost == 2
    for index in range(2):
        ledger = stats.gateways[plan.gateway_id(index)]
        assert ledger.next_seq == 15 + 4
        assert ledger.sent <= ledger.next_seq and ledger.acknowledged < ledger.next_seq


@pytest.mark.slow
async def test_two_hundred_homes_ramp_up_and_ledger(fleet_broker: MosquittoBroker) -> None:
    """Scale smoke test: 200 connections ramped at 400/s, default rate, every acknowledged message
    received once and every gateway's sequence contiguous."""
    plan = TrafficPlan(seed=5, score_interval_s=1, gateway_prefix=f"gw{uuid.uuid4().hex[:6]}")
    config = FleetConfig(
        broker_url=fleet_broker.url,
        homes=200,
        duration_s=2.0,
        plan=plan,
        connect_rate=400,
        heartbeat_interval_s=1,
    )
    fleet, ledger = await _run_with_ledger(fleet_broker, config)
    stats = fleet.stats
    assert stats.connects == 200 and stats.reconnects == 0
    assert len(ledger.seqs) == 200
    assert all(seqs == list(range(2 + 4 + 1)) for seqs in ledger.seqs.values())
    assert ledger.observations == stats.observations_acknowledged == 200 * 2 * 6
    assert stats.unacknowledged() == 0


def test_cli_mutual_tls_through_the_production_acl(
    broker_factory: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    """--tls-ca/--tls-cert/--tls-key against Mosquitto with client certificates and the production ACL
    (deploy/mosquitto/acl): the home whose id is the certificate's identity gets everything through; a
    second home presenting the same certificate is refused on every publish, counted, exit status 1."""
    authority = CertificateAuthority.init(tmp_path / "pki")
    broker_cert = authority.issue_server("broker", dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    prefix = f"gw{uuid.uuid4().hex[:6]}"
    gateway_cert = authority.issue_gateway(f"{prefix}-00000")
    acl = tmp_path / "acl"
    shutil.copyfile(REPO / "deploy" / "mosquitto" / "acl", acl)
    port = free_port()
    listener = (
        f"listener {port} 127.0.0.1\n"
        f"cafile {authority.ca_cert_path}\ncertfile {broker_cert.cert_path}\nkeyfile {broker_cert.key_path}\n"
        "require_certificate true\nuse_identity_as_username true\nallow_anonymous false\n"
        f"acl_file {acl}\n"
    )
    broker_factory(port=port, listener_config=listener)
    summary_path = tmp_path / "summary.json"
    result = _cli(
        "--homes", "2", "--broker", f"mqtts://127.0.0.1:{port}", "--duration", "1", "--score-interval", "0.5",
        "--tls-ca", str(authority.ca_cert_path), "--tls-cert", str(gateway_cert.cert_path),
        "--tls-key", str(gateway_cert.key_path), "--gateway-prefix", prefix,
        "--json-summary", str(summary_path),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    per_gateway = json.loads(summary_path.read_text())["per_gateway"]
    own, other = per_gateway[f"{prefix}-00000"], per_gateway[f"{prefix}-00001"]
    assert own["acknowledged"] == own["sent"] == own["next_seq"] == 4 + 1 + 1
    assert own["refused"] == 0
    assert other["acknowledged"] == 0 and other["refused"] == other["sent"] == 4 + 1 + 1
