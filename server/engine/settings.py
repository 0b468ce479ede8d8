"""Settings of the escalation engine and the command-center outputs (keyword-only, validated).

In ``server.toml``::

    [broker]
    url = "mqtts://broker.internal:8883"
    ca_file = "/etc/wardwatch/ca.pem"
    cert_file = "/etc/wardwatch/server.pem"
    key_file = "/etc/wardwatch/server.key"

    [engine]
    timer_poll_s = 1.0

    [escalation]               # server.escalation.EscalationPolicy
    resolution_hold_s = 1800

    [[webhooks]]
    name = "pager"
    url = "https://pager.example/hooks/wardwatch"
    secret = "at least 16 characters, shared with the receiver"
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, model_validator

from edge_agent.mqtt import MqttSettings, MqttVersion, TlsFiles


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerSettings(_Section):
    """The MQTT broker the server consumes gateway traffic from and publishes command-center topics to."""

    url: str = "mqtt://127.0.0.1:1883"
    """``mqtt://host:port`` (loopback or a private network only) or ``mqtts://host:port`` with the files."""
    client_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")] | None = None
    """Base of this worker's MQTT client ids; each worker needs its own (default: from worker_id)."""
    username: str | None = None
    password: SecretStr | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    """Certificate of the publishing connection (CN ``<client id>-pub``, e.g. ``wardwatch-server-1-pub``)."""
    key_file: Path | None = None
    ingest_cert_file: Path | None = None
    """Certificate of the ingest connection (CN ``<client id>-ingest``). A broker that maps the certificate
    CN to the client id (deploy/mosquitto) needs one per connection: two connections with one identity
    would evict each other. Defaults to ``cert_file``/``key_file`` when unset."""
    ingest_key_file: Path | None = None
    protocol_version: MqttVersion = "5"
    """MQTT 5; "3.1.1" only for a broker without MQTT 5 (the demo's embedded amqtt), which also needs
    ``ingest.share_group`` unset if the broker has no shared subscriptions."""

    @model_validator(mode="after")
    def _tls_matches_scheme(self) -> Self:
        if not self.url.startswith(("mqtt://", "mqtts://")):
            raise ValueError(f"broker.url must start with mqtt:// or mqtts://, got {self.url!r}")
        if self.url.startswith("mqtts://") and self.ca_file is None:
            raise ValueError("broker.url is mqtts:// but broker.ca_file is not set")
        if self.url.startswith("mqtt://") and self.ca_file is not None:
            raise ValueError("broker.ca_file is set but broker.url is plain mqtt://; use mqtts://")
        return self

    def mqtt(
        self, client_id: str, *, connection: Literal["publish", "ingest"] = "publish", **options: object
    ) -> MqttSettings:
        tls = None
        if self.ca_file is not None:
            cert, key = self.cert_file, self.key_file
            if connection == "ingest" and self.ingest_cert_file is not None:
                cert, key = self.ingest_cert_file, self.ingest_key_file
            tls = TlsFiles(ca_file=self.ca_file, cert_file=cert, key_file=key)
        return MqttSettings.from_url(
            self.url,
            client_id=client_id,
            tls=tls,
            username=self.username,
            password=self.password.get_secret_value() if self.password else None,
            protocol_version=self.protocol_version,
            **options,
        )


class WebhookSettings(_Section):
    """An HTTP endpoint that receives every alert event as JSON, signed with HMAC-SHA256."""

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)]
    secret: SecretStr = Field(min_length=16)
    """Shared with the receiver; it checks ``X-WardWatch-Signature`` (see server.engine.webhook)."""
    timeout_s: float = Field(default=10.0, gt=0, le=120)
    max_attempts: int = Field(default=10, ge=1, le=100)
    """Attempts before the delivery is recorded as failed (the dead letter)."""
    backoff_initial_s: float = Field(default=1.0, gt=0, le=3600)
    backoff_max_s: float = Field(default=300.0, gt=0, le=24 * 3600)


class EngineSettings(_Section):
    timer_poll_s: float = Field(default=1.0, gt=0, le=5)
    """Longest sleep of the timer loop: bounds how late a timer set by another worker can fire."""
    timer_batch: int = Field(default=100, ge=1, le=10_000)
    """Due subjects claimed per transaction."""
    delivery_poll_s: float = Field(default=1.0, gt=0, le=60)
    delivery_lease_s: float = Field(default=60.0, gt=0, le=3600)
    """A claimed delivery is retried by another worker if not finished within this time."""
    delivery_batch: int = Field(default=50, ge=1, le=1000)
    mqtt_max_attempts: int = Field(default=1000, ge=1)
    """Attempts at publishing an alert event on MQTT before it is recorded as failed."""
    catch_up_hours: float = Field(default=24.0, ge=0, le=24 * 30)
    """At start-up the newest status of each gateway and the newest assessment of each patient from this
    window are offered to the policy again (it ignores what it already applied), so an input whose
    process died between storing and escalating is not lost."""
    publish_patient_state: bool = True
    """Publish each patient's PatientState, retained, on wardwatch/v1/cc/patients/{id}/state."""
