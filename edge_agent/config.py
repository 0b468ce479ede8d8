"""The gateway's configuration: ``gateway.toml``, validated, with ``WARDWATCH_…`` environment overrides.

Environment variables override the file, nested keys joined by ``__``, e.g.
``WARDWATCH_BROKER__URL=mqtts://broker.example:8883`` or ``WARDWATCH_OUTBOX__QUOTA_MB=256``.

:func:`load_config` raises :class:`~edge_agent.errors.ConfigError` whose message names the file, the key
and the fix, e.g.::

    /etc/wardwatch/gateway.toml: broker.url: broker URL must start with mqtts:// (TLS) ...
      fix: use mqtts://host:8883 and set broker.ca_file, broker.cert_file and broker.key_file
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from edge_agent.errors import ConfigError
from edge_agent.protocol import DeviceId, GatewayId, PatientId, VitalCode

DEVICE_KINDS: Final = (
    "ble_heart_rate",
    "ble_blood_pressure",
    "ble_thermometer",
    "ble_plx_spot",
    "ble_plx_continuous",
    "ble_scale",
    "ble_glucose",
    "masimo",
    "contec",
    "respiration_patch",
)
"""Driver kinds a device entry may name; BLE kinds need ``address``, serial kinds ``path`` or ``usb_id``.
``respiration_patch`` has no driver yet (no Bluetooth SIG profile carries respiratory rate): only the
simulators provide it, and ``wardwatch agent`` refuses it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(_Section):
    allow_plaintext: bool = False
    """Permit plain ``mqtt://``: for simulators and tests on loopback only."""
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    url: str
    """``mqtts://host:8883``: TLS with this gateway's client certificate."""
    keepalive_s: int = Field(default=30, ge=5, le=600)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    protocol_version: Literal["5", "3.1.1"] = "5"
    """MQTT 5; "3.1.1" only for a broker without MQTT 5 (the demo's embedded amqtt): no PUBACK reason
    codes, and how long the broker keeps the session is its own setting."""

    @field_validator("url")
    @classmethod
    def _tls_is_complete(cls, url: str, info: ValidationInfo) -> str:
        if url.startswith("mqtts://"):
            missing = [name for name in ("ca_file", "cert_file", "key_file") if info.data.get(name) is None]
            if missing:
                raise ValueError(f"mqtts:// needs {', '.join('broker.' + m for m in missing)}")
        elif url.startswith("mqtt://"):
            if not info.data.get("allow_plaintext"):
                raise ValueError("broker URL must start with mqtts:// (TLS); plain mqtt:// is refused")
        else:
            raise ValueError(f"broker URL {url!r} must start with mqtts://")
        return url


class PatientConfig(_Section):
    id: PatientId
    spo2_scale: Literal[1, 2] = 1
    """SpO2 Scale 2 only when a clinician has prescribed it (hypercapnic respiratory failure)."""
    on_oxygen: bool = False


class DeviceConfig(_Section):
    id: DeviceId
    kind: Annotated[str, StringConstraints(pattern="^(" + "|".join(DEVICE_KINDS) + ")$")]
    patient: PatientId
    address: str | None = None
    """BLE address (or, for devices that hide it, leave empty and set ``service_uuid``)."""
    path: str | None = None
    usb_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$")] | None = None

    @model_validator(mode="after")
    def _has_an_address(self) -> DeviceConfig:
        if self.kind.startswith("ble_"):
            if not self.address:
                raise ValueError(f"a {self.kind} device needs address")
        elif self.kind in ("masimo", "contec") and not (self.path or self.usb_id):
            raise ValueError(f"a {self.kind} device needs path or usb_id")
        return self


class ScoringConfig(_Section):
    staleness_s: dict[VitalCode, float] = Field(default_factory=dict)
    """Override the default staleness window per vital (seconds)."""
    median_window_s: float = Field(default=60, ge=0, le=3600)
    """Span of the rolling median over continuous SpO2 and pulse; 0 scores every sample as it is."""
    trend_window_s: float = Field(default=6 * 3600, gt=0)


class OutboxConfig(_Section):
    path: Path = Path("/var/lib/wardwatch/outbox.db")
    quota_mb: float = Field(default=512, gt=0)
    historical_after_s: float = Field(default=60, gt=0)


class LocalAlertConfig(_Section):
    command: list[str] = Field(default_factory=list)
    """Program and arguments run once per episode when the uplink has been down longer than
    ``after_uplink_down_s`` and a patient's local risk is high (a speaker, a light, an SMS modem)."""
    after_uplink_down_s: float = Field(default=300, gt=0)
    timeout_s: float = Field(default=30, gt=0)


class GatewayConfig(BaseSettings):
    model_config = SettingsConfigDict(
        extra="forbid", frozen=True, env_prefix="WARDWATCH_", env_nested_delimiter="__"
    )

    gateway_id: GatewayId
    broker: BrokerConfig
    patients: list[PatientConfig] = Field(min_length=1)
    devices: list[DeviceConfig] = Field(default_factory=list)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    heartbeat_interval_s: float = Field(default=30, ge=1, le=3600)
    local_alert: LocalAlertConfig = Field(default_factory=LocalAlertConfig)

    @model_validator(mode="after")
    def _devices_belong_to_patients(self) -> GatewayConfig:
        patients = {p.id for p in self.patients}
        if len(patients) != len(self.patients):
            raise ValueError("patients: a patient id appears twice")
        ids = [d.id for d in self.devices]
        if len(set(ids)) != len(ids):
            raise ValueError("devices: a device id appears twice")
        for device in self.devices:
            if device.patient not in patients:
                raise ValueError(
                    f"device {device.id} names patient {device.patient!r}, which is not in patients"
                )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first so it overrides the file's values, which arrive as init arguments.
        return (env_settings, init_settings)


_FIXES: Final[dict[str, str]] = {
    "gateway_id": "set gateway_id to this gateway's certificate CN (letters, digits, '_', '.', '-')",
    "broker.url": "use mqtts://host:8883 and set broker.ca_file, broker.cert_file and broker.key_file",
    "patients": "add at least one [[patients]] table with id = the programme's pseudonym",
    "devices": "each [[devices]] entry needs id, kind, patient and address (BLE) or path / usb_id (serial)",
    "kind": f"kind must be one of {', '.join(DEVICE_KINDS)}",
    "usb_id": "write usb_id as VID:PID in hex, e.g. 0403:6001",
    "staleness_s": f"keys of scoring.staleness_s are vital codes: {', '.join(v.value for v in VitalCode)}",
}


def _fix_for(location: str) -> str:
    parts = location.split(".")
    named = ".".join(part for part in parts if not part.isdigit())
    for key in (location, named, parts[-1], parts[0]):
        if key in _FIXES:
            return _FIXES[key]
    return "see docs/operations.md, section Configuration"


def load_config(path: Path | str) -> GatewayConfig:
    """Read and validate a gateway.toml (plus environment overrides) or raise ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}", path=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}): {exc.reason}\n  fix: save the file as UTF-8",
            path=str(path),
        ) from None
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}", path=str(path)) from None
    # Keys starting with "_" would reach pydantic-settings as its own options (_env_prefix,
    # _cli_parse_args, ...) instead of being refused as unknown keys.
    hidden = sorted(key for key in data if key.startswith("_"))
    if hidden:
        raise ConfigError(
            f"{path}: {hidden[0]}: not a configuration key\n  fix: remove it (see docs/operations.md)",
            path=str(path),
            key=hidden[0],
        )
    try:
        return GatewayConfig(**data)
    except SettingsError as exc:  # a WARDWATCH_* variable whose value is not valid JSON for its key
        raise ConfigError(
            f"{path}: an environment override cannot be used: {exc}\n"
            "  fix: give WARDWATCH_* variables for tables and lists as JSON, or unset them",
            path=str(path),
        ) from None
    except ValidationError as exc:
        lines = []
        first_key = None
        for error in exc.errors(include_url=False, include_input=False):
            location = ".".join(str(part) for part in error["loc"]) or "(top level)"
            first_key = first_key or location
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"{path}: {location}: {message}\n  fix: {_fix_for(location)}")
        raise ConfigError("\n".join(lines), path=str(path), key=first_key) from None
