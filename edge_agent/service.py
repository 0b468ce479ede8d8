"""The edge agent service: devices → outbox → NEWS2 chart → outbox → uplink, under one TaskGroup.

::

    Agent.run()
    └── Outbox (open, integrity-checked)
        └── TaskGroup
            ├── device:<id>      one per configured device, restarted with capped jittered backoff
            ├── uplink           MQTT connection, drain, heartbeat, commands (reconnects forever)
            ├── reassess         re-scores every chart on a timer, so values go stale without readings
            ├── local-alert      runs the configured hook when the uplink is down and risk is high
            └── systemd          READY, WATCHDOG and STATUS for systemd (no-op outside systemd)

Order for each reading: it is committed to the outbox first; only then is it scored, and an assessment
that changed is committed in turn. A device that fails forever only ever restarts itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import assert_type

from pydantic import ValidationError

from drivers.reading import Reading
from drivers.transport import BatteryLevel as DeviceBattery
from drivers.transport import Connected, Device, DeviceEvent, Disconnected, ProbeState
from edge_agent import __version__
from edge_agent.backoff import Backoff
from edge_agent.clock import clock_synchronized
from edge_agent.config import DeviceConfig, GatewayConfig, PatientConfig
from edge_agent.mqtt import MqttSettings, TlsFiles, Will
from edge_agent.outbox import Outbox, OutboxOptions
from edge_agent.protocol import (
    AssessmentContent,
    BatteryLevel,
    Command,
    Consciousness,
    DeviceConnected,
    DeviceDisconnected,
    DeviceState,
    EventContent,
    EventDetail,
    LocalAlert,
    Observation,
    ProbeOff,
    Risk,
    SetConsciousness,
    SetOxygen,
    SetSpo2Scale,
    SetStaleness,
)
from edge_agent.scoring.stream import ChartSettings, PatientChart
from edge_agent.systemd import Notifier
from edge_agent.uplink import GatewayHealth, Uplink, UplinkOptions

log = logging.getLogger(__name__)

DeviceFactory = Callable[[DeviceConfig], Device]


@dataclass(slots=True)
class DeviceStatus:
    kind: str
    connected: bool = False
    battery_pct: int | None = None
    last_reading_at: datetime | None = None
    restarts: int = 0
    rejected_readings: int = 0
    last_error: str | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Agent:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        device_factory: DeviceFactory,
        clock: Callable[[], datetime] = _utc_now,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        reassess_interval_s: float = 30.0,
        device_backoff: Callable[[], Backoff] = lambda: Backoff(initial_s=1, maximum_s=300),
        uplink_options: UplinkOptions | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self._device_factory = device_factory
        self._clock = clock
        self._sleep = sleep
        """Waits measured on the patient's clock (re-assessment, the offline local alert); ``clock``'s own
        sleep when that clock is simulated. Supervision (systemd watchdog, reconnect backoff) stays real."""
        self._reassess_interval_s = reassess_interval_s
        self._device_backoff = device_backoff
        self._uplink_options = uplink_options or UplinkOptions(
            heartbeat_interval_s=config.heartbeat_interval_s, clock=lambda: clock().timestamp(), sleep=sleep
        )
        self._notifier = notifier or Notifier()
        self.devices = {d.id: DeviceStatus(kind=d.kind) for d in config.devices}
        self.charts: dict[str, PatientChart] = {}
        self.outbox: Outbox | None = None
        self.uplink: Uplink | None = None
        self.ready = asyncio.Event()
        self._local_alert_fired: set[str] = set()
        self.local_alert_done = asyncio.Event()
        """Set each time the local-alert hook has run (for supervision and tests)."""

    # -- wiring ---------------------------------------------------------------------------------------

    def _mqtt_settings(self, will: Will) -> MqttSettings:
        broker = self.config.broker
        tls = None
        if broker.url.startswith("mqtts://"):
            assert broker.ca_file is not None  # the config validated mqtts:// has all three files
            tls = TlsFiles(ca_file=broker.ca_file, cert_file=broker.cert_file, key_file=broker.key_file)
        return MqttSettings.from_url(
            broker.url,
            client_id=self.config.gateway_id,
            tls=tls,
            keepalive_s=broker.keepalive_s,
            session_expiry_s=broker.session_expiry_s,
            protocol_version=broker.protocol_version,
            will=will,
            manual_ack=True,
        )

    def _health(self) -> GatewayHealth:
        return GatewayHealth(
            devices=[
                DeviceState(
                    device_id=device_id,
                    device_kind=status.kind,
                    connected=status.connected,
                    battery_pct=status.battery_pct,
                    last_reading_at=status.last_reading_at,
                )
                for device_id, status in self.devices.items()
            ],
            clock_synchronized=clock_synchronized(),
        )

    async def _chart_for(self, outbox: Outbox, patient: PatientConfig) -> PatientChart:
        stored = (await outbox.load_settings()).get(f"patient:{patient.id}")
        base = ChartSettings(
            median_window_s=self.config.scoring.median_window_s,
            trend_window_s=self.config.scoring.trend_window_s,
        )
        if self.config.scoring.staleness_s:
            base = base.model_copy(
                update={"staleness_s": {**base.staleness_s, **self.config.scoring.staleness_s}}
            )
        if stored is None:
            return PatientChart(
                patient.id, settings=base, spo2_scale=patient.spo2_scale, on_oxygen=patient.on_oxygen
            )
        saved = json.loads(stored)
        if saved.get("staleness_s"):
            base = base.model_copy(update={"staleness_s": {**base.staleness_s, **saved["staleness_s"]}})
        return PatientChart(
            patient.id,
            settings=base,
            spo2_scale=saved["spo2_scale"],
            on_oxygen=saved["on_oxygen"],
            consciousness=Consciousness(saved["consciousness"]),
            settings_at=datetime.fromisoformat(saved["settings_at"]),
        )

    async def _save_chart_settings(self, outbox: Outbox, chart: PatientChart, at: datetime) -> None:
        latest = chart.assess(now=at)
        saved = {
            "spo2_scale": latest.spo2_scale,
            "on_oxygen": latest.on_oxygen,
            "consciousness": latest.consciousness.value,
            "settings_at": at.isoformat(),
            "staleness_s": {str(k): v for k, v in chart.settings.staleness_s.items()},
        }
        await outbox.save_setting(f"patient:{chart.patient_id}", json.dumps(saved))

    # -- running --------------------------------------------------------------------------------------

    async def run(self) -> None:
        config = self.config
        options = OutboxOptions(
            quota_bytes=int(config.outbox.quota_mb * 1024 * 1024),
            historical_after_s=config.outbox.historical_after_s,
            clock=lambda: self._clock().timestamp(),
        )
        async with Outbox(config.outbox.path, config.gateway_id, options) as outbox:
            self.outbox = outbox
            if outbox.moved_corrupt_to is not None:
                self._notifier.status(f"outbox was corrupt; moved to {outbox.moved_corrupt_to}")
            self.charts = {p.id: await self._chart_for(outbox, p) for p in config.patients}
            self.uplink = Uplink(
                outbox=outbox,
                gateway_id=config.gateway_id,
                software_version=__version__,
                connection=self._mqtt_settings,
                commands=self._apply_command,
                health=self._health,
                options=self._uplink_options,
            )
            async with asyncio.TaskGroup() as tasks:
                for device in config.devices:
                    tasks.create_task(self._supervise(device), name=f"device:{device.id}")
                tasks.create_task(self.uplink.run(), name="uplink")
                tasks.create_task(self._reassess_forever(), name="reassess")
                tasks.create_task(self._local_alert_watch(), name="local-alert")
                tasks.create_task(self._systemd(), name="systemd")
                self.ready.set()
                log.info(
                    "agent %s running: %d patients, %d devices",
                    config.gateway_id,
                    len(config.patients),
                    len(config.devices),
                )

    async def _supervise(self, device_config: DeviceConfig) -> None:
        status = self.devices[device_config.id]
        backoff = self._device_backoff()
        while True:
            try:
                device = self._device_factory(device_config)
                async with contextlib.aclosing(device.readings()) as stream:  # type: ignore[type-var]
                    async for item in stream:
                        backoff.reset()
                        await self._take(device_config, item)
                status.last_error = "device stream ended"
                log.warning("device %s: its stream ended; restarting it", device_config.id)
            except Exception as exc:
                status.last_error = repr(exc)
                log.error("device %s failed: %r; restarting it", device_config.id, exc, exc_info=exc)
            status.connected = False
            status.restarts += 1
            await asyncio.sleep(backoff.next_delay())

    async def _take(self, device: DeviceConfig, item: Reading | DeviceEvent) -> None:
        assert self.outbox is not None
        if isinstance(item, Reading):
            await self._take_reading(device, item)
            return
        status = self.devices[device.id]
        detail: EventDetail | None = None
        if isinstance(item, Connected):
            status.connected = True
            detail = DeviceConnected(kind="device_connected", device_id=device.id, device_kind=device.kind)
        elif isinstance(item, Disconnected):
            status.connected = False
            detail = DeviceDisconnected(
                kind="device_disconnected", device_id=device.id, reason=item.reason[:500]
            )
        elif isinstance(item, DeviceBattery):
            if status.battery_pct != item.battery_pct:
                detail = BatteryLevel(kind="battery", device_id=device.id, battery_pct=item.battery_pct)
            status.battery_pct = item.battery_pct
        elif isinstance(item, ProbeState) and item.probe_off:
            detail = ProbeOff(kind="probe_off", device_id=device.id, patient_id=device.patient)
        if detail is not None:
            await self.outbox.put_event(EventContent(occurred_at=item.at, detail=detail))

    async def _take_reading(self, device: DeviceConfig, reading: Reading) -> None:
        assert self.outbox is not None
        status = self.devices[device.id]
        try:
            observation = Observation(
                patient_id=device.patient,
                vital=reading.vital.value,
                value=reading.value,
                unit=reading.unit,
                measured_at=reading.measured_at,
                time_source=reading.time_source.value,
                device_id=device.id,
                quality=sorted(reading.quality),
                perfusion_index=reading.perfusion_index,
            )
        except ValidationError as exc:
            status.rejected_readings += 1
            log.warning("device %s: reading %r cannot be sent and is dropped: %s", device.id, reading, exc)
            return
        await self.outbox.put_observations([observation])  # on disk before anything else happens
        status.last_reading_at = reading.measured_at
        chart = self.charts[device.patient]
        assessment = chart.observe(reading, now=self._clock())
        if assessment is not None:
            await self._record(assessment)

    async def _record(self, assessment: AssessmentContent) -> None:
        assert self.outbox is not None
        await self.outbox.put_assessment(assessment)
        if assessment.risk is Risk.HIGH:
            log.warning("patient %s: NEWS2 %d, risk high", assessment.patient_id, assessment.total)

    async def _reassess_forever(self) -> None:
        while True:
            await self._sleep(self._reassess_interval_s)
            now = self._clock()
            for chart in self.charts.values():
                assessment = chart.reassess(now=now)
                if assessment is not None:
                    await self._record(assessment)

    async def _apply_command(self, command: Command) -> tuple[bool, str]:
        assert self.outbox is not None
        chart = self.charts.get(command.patient_id)
        if chart is None:
            return False, f"patient {command.patient_id} is not monitored by this gateway"
        now = self._clock()
        body = command.body
        if isinstance(body, SetSpo2Scale):
            assessment = chart.set_spo2_scale(body.scale, now=now)
            detail = f"SpO2 scale set to {body.scale}"
        elif isinstance(body, SetOxygen):
            assessment = chart.set_on_oxygen(body.on_oxygen, now=now)
            detail = f"oxygen {'on' if body.on_oxygen else 'off'}"
        elif isinstance(body, SetConsciousness):
            assessment = chart.set_consciousness(body.consciousness, now=now)
            detail = f"consciousness set to {body.consciousness.value}"
        else:
            assert_type(body, SetStaleness)
            assessment = chart.set_staleness(body.windows_s, now=now)
            detail = "staleness windows set: " + ", ".join(f"{k}={v:g}s" for k, v in body.windows_s.items())
        await self._save_chart_settings(self.outbox, chart, now)
        if assessment is not None:
            await self._record(assessment)
        return True, detail

    async def _local_alert_watch(self) -> None:
        settings = self.config.local_alert
        while True:
            await self._sleep(min(5.0, settings.after_uplink_down_s / 4))
            uplink = self.uplink
            if uplink is None:
                continue
            down_since = uplink.state.down_since
            now = self._clock()
            if down_since is None:
                self._local_alert_fired.clear()  # the uplink is back: the episode is over
                continue
            down_for = now.timestamp() - down_since
            for patient_id, chart in self.charts.items():
                last = chart.last_assessment
                if last is None or last.risk is not Risk.HIGH:
                    self._local_alert_fired.discard(patient_id)
                    continue
                if down_for < settings.after_uplink_down_s or patient_id in self._local_alert_fired:
                    continue
                self._local_alert_fired.add(patient_id)
                await self._fire_local_alert(last, down_for, now)

    async def _fire_local_alert(self, assessment: AssessmentContent, down_for: float, now: datetime) -> None:
        assert self.outbox is not None
        settings = self.config.local_alert
        log.error(
            "uplink down for %.0f s and patient %s is at high risk (NEWS2 %d): running the local alert",
            down_for,
            assessment.patient_id,
            assessment.total,
        )
        if settings.command:
            await run_local_alert(settings.command, assessment, timeout_s=settings.timeout_s)
        detail = LocalAlert(
            kind="local_alert",
            patient_id=assessment.patient_id,
            risk=assessment.risk,
            total=assessment.total,
            uplink_down_s=down_for,
        )
        await self.outbox.put_event(EventContent(occurred_at=now, detail=detail))
        self.local_alert_done.set()

    async def _systemd(self) -> None:
        notifier = self._notifier
        notifier.ready(f"running {len(self.devices)} devices")
        interval = notifier.watchdog_interval_s or 10.0
        while True:
            notifier.watchdog()
            if self.outbox is not None and self.uplink is not None:
                backlog = await self.outbox.backlog()
                state = "connected" if self.uplink.state.connected else "uplink down"
                connected = sum(1 for d in self.devices.values() if d.connected)
                notifier.status(
                    f"{state}; backlog {backlog.total}; devices {connected}/{len(self.devices)} connected"
                )
            await asyncio.sleep(interval)


async def run_local_alert(
    command: list[str], assessment: AssessmentContent, *, timeout_s: float
) -> int | None:
    """Run the hook with the alert in its environment; never raises (a broken hook must not stop us)."""
    environment = {
        "WARDWATCH_PATIENT_ID": assessment.patient_id,
        "WARDWATCH_NEWS2": str(assessment.total),
        "WARDWATCH_RISK": assessment.risk.value,
    }
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            env={**_base_environment(), **environment},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError as exc:
        log.error("local alert command %s could not start: %s", command[0], exc)
        return None
    try:
        async with asyncio.timeout(timeout_s):
            code = await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        log.error("local alert command %s killed after %.0f s", command[0], timeout_s)
        return None
    log.info("local alert command %s exited %d after %.1f s", command[0], code, time.monotonic() - started)
    return code


def _base_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key in ("PATH", "LANG", "HOME")}
