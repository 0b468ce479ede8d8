"""The writes the API asks other components to perform: the :class:`Actions` protocol.

The API authenticates, checks the role, validates the request, calls one of these methods, writes its
own audit record (``api_audit``) for non-alert writes and answers. It never changes alert state itself:
the escalation engine implements the alert methods, applying the policy (``server.escalation``) and
appending to ``alert_events`` in the same transaction as the change.

Errors an implementation raises, and what the client gets::

    server.escalation.AlertNotOpenError      -> 404 unknown alert / 409 already resolved
    server.escalation.ActionRefusedError     -> by reason: role_not_allowed 403; note_required,
                                                snooze_too_long 422; the rest 409
    UnknownPatientError                      -> 404
    NoGatewayError                           -> 409 (the patient has no gateway to send to)
    CommandNotSentError                      -> 503 (stored as pending; the broker did not take it)
    server.storage.StorageUnavailable        -> 503

:class:`DatabaseActions` is the implementation the server wires up: commands and display names here,
alert actions delegated to the engine's :class:`AlertActions`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent import protocol
from server.auth import Role
from server.storage import repository
from server.storage.models import Patient

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: the token's account id (recorded as ``actor``) and role.

    For the escalation policy, ``server.escalation.Role(actor.role.value)`` converts nurse, physician
    and admin (the API never passes viewer or integration to a write)."""

    account: str
    role: Role


class UnknownPatientError(LookupError):
    def __init__(self, patient_id: str) -> None:
        super().__init__(f"no patient {patient_id!r}")
        self.patient_id = patient_id


class NoGatewayError(RuntimeError):
    def __init__(self, patient_id: str) -> None:
        super().__init__(f"patient {patient_id!r} has no gateway to send a command to")
        self.patient_id = patient_id


class CommandNotSentError(RuntimeError):
    """The command is stored (state ``pending``) but could not be handed to the broker."""

    def __init__(self, command_id: uuid.UUID, cause: str) -> None:
        super().__init__(f"command {command_id} is stored but was not sent: {cause}")
        self.command_id = command_id


class AlertActions(Protocol):
    """Clinicians' actions on one alert. Each returns once the change and its ``alert_events`` row are
    committed (and published), or raises without changing anything."""

    async def acknowledge_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str | None) -> None: ...

    async def escalate_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str | None) -> None: ...

    async def resolve_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str) -> None:
        """``note`` is never empty (the API refuses a resolve without one)."""
        ...

    async def snooze_alert(
        self, alert_id: uuid.UUID, *, actor: Actor, duration_s: float, note: str | None
    ) -> None: ...


class Actions(AlertActions, Protocol):
    """Everything the API writes through."""

    async def send_command(self, patient_id: str, body: protocol.CommandBody, *, actor: Actor) -> uuid.UUID:
        """Store a command for the patient's gateway, publish it (QoS 1), return its message id."""
        ...

    async def set_display_name(self, patient_id: str, display_name: str | None, *, actor: Actor) -> None:
        """Set or clear the patient's display name (raise UnknownPatientError for an unknown patient)."""
        ...


PublishCommand = Callable[[str, bytes], Awaitable[None]]
"""``publish(topic, payload)``: returns once the broker acknowledged it (QoS 1 PUBACK)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class DatabaseActions:
    """:class:`Actions` with commands and display names done here and alert actions delegated.

    A command is committed as ``pending`` (with the patient's requested settings updated) before it is
    published, then marked ``sent`` after the broker took it; the gateway's acknowledgement arrives
    through ingest (``cmd-ack``)."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        alerts: AlertActions,
        publish_command: PublishCommand,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._sessions = sessionmaker
        self._alerts = alerts
        self._publish = publish_command
        self._clock = clock

    async def acknowledge_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str | None) -> None:
        await self._alerts.acknowledge_alert(alert_id, actor=actor, note=note)

    async def escalate_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str | None) -> None:
        await self._alerts.escalate_alert(alert_id, actor=actor, note=note)

    async def resolve_alert(self, alert_id: uuid.UUID, *, actor: Actor, note: str) -> None:
        await self._alerts.resolve_alert(alert_id, actor=actor, note=note)

    async def snooze_alert(
        self, alert_id: uuid.UUID, *, actor: Actor, duration_s: float, note: str | None
    ) -> None:
        await self._alerts.snooze_alert(alert_id, actor=actor, duration_s=duration_s, note=note)

    async def send_command(self, patient_id: str, body: protocol.CommandBody, *, actor: Actor) -> uuid.UUID:
        now = self._clock()
        async with self._sessions() as session, session.begin():
            patient = await session.scalar(
                select(Patient).where(Patient.patient_id == patient_id).with_for_update()
            )
            if patient is None:
                raise UnknownPatientError(patient_id)
            if patient.gateway_id is None:
                raise NoGatewayError(patient_id)
            command = protocol.Command(
                message_id=protocol.new_message_id(),
                gateway_id=patient.gateway_id,
                patient_id=patient_id,
                issued_at=now,
                issued_by=actor.account,
                body=body,
            )
            await repository.record_command(session, command)
            requested = _requested_settings(body)
            if requested:
                await session.execute(
                    update(Patient)
                    .where(Patient.patient_id == patient_id)
                    .values(**requested, settings_updated_at=now, settings_updated_by=actor.account)
                )
        topic = protocol.gateway_topic(command.gateway_id, protocol.GatewayChannel.CMD, body.command)
        try:
            await self._publish(topic, protocol.encode(command))
        except Exception as exc:
            logger.warning("command %s to gateway %s not published: %s", command.message_id, topic, exc)
            raise CommandNotSentError(command.message_id, str(exc)) from exc
        async with self._sessions() as session, session.begin():
            await repository.mark_command_sent(session, command.message_id, sent_at=self._clock())
        return command.message_id

    async def set_display_name(self, patient_id: str, display_name: str | None, *, actor: Actor) -> None:
        async with self._sessions() as session, session.begin():
            if not await repository.set_display_name(session, patient_id, display_name):
                raise UnknownPatientError(patient_id)


def _requested_settings(body: protocol.CommandBody) -> dict[str, object]:
    """The patients-table columns a settings command changes (what the clinician asked for)."""
    if isinstance(body, protocol.SetSpo2Scale):
        return {"spo2_scale": body.scale}
    if isinstance(body, protocol.SetOxygen):
        return {"on_oxygen": body.on_oxygen}
    if isinstance(body, protocol.SetConsciousness):
        return {"consciousness": body.consciousness.value}
    return {}
