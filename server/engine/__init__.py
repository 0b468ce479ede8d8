"""The escalation engine: the pure policy (``server.escalation``) run against the database, with timers
claimed by one worker at a time, an append-only audit log, and deliveries to the command center (MQTT)
and webhooks.

Modules::

    escalator.py      EscalationEngine: inputs from ingest, clinicians' actions, timers, deliveries
    store.py          the transaction's database work (subject state, alerts, audit, deliveries)
    tables.py         escalation_subjects and alert_deliveries (migration 0003)
    broker_link.py    BrokerLink: the publishing connection, kept open
    webhook.py        HMAC-SHA256 signing, verify() for receivers, the httpx transport
    patient_state.py  PatientState from the database
    stream_lag.py     StreamLag: how far behind the gateways' traffic this worker is
    settings.py       BrokerSettings, EngineSettings, WebhookSettings
"""

from server.engine.broker_link import BrokerLink, NotConnectedError, Publisher
from server.engine.escalator import EngineCounters, EscalationEngine
from server.engine.settings import BrokerSettings, EngineSettings, WebhookSettings
from server.engine.webhook import WebhookError, sign, verify

__all__ = [
    "BrokerLink",
    "BrokerSettings",
    "EngineCounters",
    "EngineSettings",
    "EscalationEngine",
    "NotConnectedError",
    "Publisher",
    "WebhookError",
    "WebhookSettings",
    "sign",
    "verify",
]
