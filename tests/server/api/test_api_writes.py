"""Write routes: alert actions (through the Actions protocol), commands and their acknowledgement state,
display names; every write audited; the display name never in logs or MQTT payloads."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from api_data import add_alert, seed_ward
from conftest import SQLITE_ONLY, Api
from server_support import at, topic_for
from sqlalchemy import select

from edge_agent import protocol
from server.auth import ApiAuditRecord
from server.escalation.errors import ActionRefusedError
from server.storage.models import CommandRecord

pytestmark = pytest.mark.usefixtures("backend")


async def test_acknowledge_happy_path_goes_through_actions_and_returns_the_trail(api: Api) -> None:
    await seed_ward(api.ingestor)
    alert_id = await add_alert(api.sessions, subject="pt-high", priority="high", tier=2, patient_id="pt-high")

    response = await api.post(f"/api/alerts/{alert_id}/acknowledge", json={"note": "calling the patient"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["alert"]["state"] == "acknowledged"
    assert body["alert"]["acknowledged_by"] == "nurse-1"
    assert [(e["action"], e["actor"], e["reason"]) for e in body["events"]] == [
        ("acknowledged", "nurse-1", "calling the patient")
    ]
    ((action, called_id, actor, values),) = api.engine.calls
    assert (action, called_id, actor.account, actor.role.value) == (
        "acknowledged",
        alert_id,
        "nurse-1",
        "nurse",
    )
    assert values == {"note": "calling the patient"}
    # Alert writes are audited in alert_events (by the engine), readable through the audit route.
    audit = await api.get("/api/audit", role="viewer", params={"source": "alert"})
    ((entry,),) = [audit.json()["items"]]
    assert (entry["action"], entry["actor"], entry["source"]) == ("acknowledged", "nurse-1", "alert")


@SQLITE_ONLY
async def test_acknowledge_without_body_is_fine(api: Api) -> None:
    await seed_ward(api.ingestor)
    alert_id = await add_alert(api.sessions, subject="pt-low", priority="medium", tier=1, patient_id="pt-low")

    response = await api.post(f"/api/alerts/{alert_id}/acknowledge")

    assert response.status_code == 200, response.text


@SQLITE_ONLY
@pytest.mark.parametrize("body", [None, {}, {"note": ""}, {"note": "   "}])
async def test_resolve_without_a_note_is_422_and_nothing_happens(
    api: Api, body: dict[str, str] | None
) -> None:
    await seed_ward(api.ingestor)
    alert_id = await add_alert(api.sessions, subject="pt-low", priority="medium", tier=1, patient_id="pt-low")

    response = await api.post(f"/api/alerts/{alert_id}/resolve", role="physician", json=body)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["problems"][0]["where"] in ("body", "body.note")
    assert api.engine.calls == []


async def test_resolve_with_note_escalate_and_snooze(api: Api) -> None:
    await seed_ward(api.ingestor)
    high = await add_alert(api.sessions, subject="pt-high", priority="high", tier=2, patient_id="pt-high")
    medium = await add_alert(
        api.sessions, subject="pt-med-old", priority="medium", tier=1, patient_id="pt-med-old"
    )

    escalated = await api.post(f"/api/alerts/{high}/escalate", role="physician", json={"note": "to on-call"})
    snoozed = await api.post(f"/api/alerts/{medium}/snooze", json={"duration_s": 900, "note": "visit due"})
    resolved = await api.post(
        f"/api/alerts/{high}/resolve", role="physician", json={"note": "ambulance took over"}
    )
    again = await api.post(f"/api/alerts/{high}/resolve", role="physician", json={"note": "twice"})

    assert escalated.status_code == 200 and escalated.json()["alert"]["tier"] == 3
    assert snoozed.status_code == 200 and snoozed.json()["alert"]["state"] == "snoozed"
    assert resolved.status_code == 200 and resolved.json()["alert"]["resolved_by"] == "physician-1"
    assert again.status_code == 409
    assert [call[0] for call in api.engine.calls] == ["escalated", "snoozed", "resolved"]


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("role", "path", "body", "priority", "category"),
    [
        ("viewer", "acknowledge", None, "medium", "clinical"),
        ("integration", "acknowledge", None, "medium", "clinical"),
        ("nurse", "escalate", None, "medium", "clinical"),
        ("nurse", "resolve", {"note": "fine now"}, "high", "clinical"),  # high: physicians only
        ("admin", "acknowledge", None, "medium", "clinical"),  # admins act on equipment alerts only
        ("viewer", "snooze", {"duration_s": 60}, "low", "technical"),
    ],
)
async def test_wrong_role_is_403_audited_and_never_reaches_the_engine(
    api: Api, role: str, path: str, body: dict[str, object] | None, priority: str, category: str
) -> None:
    await seed_ward(api.ingestor)
    alert_id = await add_alert(
        api.sessions, subject="pt-high", priority=priority, tier=1, patient_id="pt-high", category=category
    )

    response = await api.post(f"/api/alerts/{alert_id}/{path}", role=role, json=body)

    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == "forbidden"
    assert api.engine.calls == []
    audit = (await api.get("/api/audit", role="viewer", params={"source": "api"})).json()["items"]
    assert [(e["actor"], e["outcome"]) for e in audit] == [(f"{role}-1", "forbidden")]


@SQLITE_ONLY
async def test_admin_may_acknowledge_a_technical_alert(api: Api) -> None:
    await seed_ward(api.ingestor)
    alert_id = await add_alert(
        api.sessions, subject="gateway:gw-a", priority="low", tier=1, category="technical", gateway_id="gw-a"
    )

    response = await api.post(f"/api/alerts/{alert_id}/acknowledge", role="admin")

    assert response.status_code == 200, response.text


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("reason", "status"),
    [
        ("role_not_allowed", 403),
        ("snooze_not_allowed", 409),
        ("snooze_too_long", 422),
        ("top_tier_reached", 409),
    ],
)
async def test_policy_refusals_map_to_4xx(api: Api, reason: str, status: int) -> None:
    await seed_ward(api.ingestor)
    alert_id = await add_alert(api.sessions, subject="pt-low", priority="medium", tier=1, patient_id="pt-low")
    api.engine.refuse = ActionRefusedError("refused by the policy", alert_id=alert_id, reason=reason)  # type: ignore[arg-type]

    response = await api.post(f"/api/alerts/{alert_id}/snooze", role="physician", json={"duration_s": 60})

    assert response.status_code == status, response.text
    assert "refused by the policy" in response.json()["error"]["message"]


@SQLITE_ONLY
async def test_unknown_alert_404_and_malformed_ids_or_bodies_422_never_500(api: Api) -> None:
    unknown = await api.post(f"/api/alerts/{uuid.uuid4()}/acknowledge")
    not_uuid = await api.post("/api/alerts/not-a-uuid/acknowledge")
    broken_json = await api.client.post(
        f"/api/alerts/{uuid.uuid4()}/snooze",
        headers={**api.auth("nurse"), "Content-Type": "application/json"},
        content=b'{"duration_s": ',
    )
    extra_field = await api.post(f"/api/alerts/{uuid.uuid4()}/snooze", json={"duration_s": 5, "until": "x"})
    too_long = await api.post(f"/api/alerts/{uuid.uuid4()}/snooze", json={"duration_s": 10**9})

    assert unknown.status_code == 404
    assert not_uuid.status_code == 422
    assert not_uuid.json()["error"]["problems"][0]["where"] == "path.alert_id"
    assert broken_json.status_code == 422
    assert extra_field.status_code == 422
    assert extra_field.json()["error"]["problems"][0]["where"] == "body.until"
    assert too_long.status_code == 422
    assert too_long.json()["error"]["problems"][0]["where"] == "body.duration_s"


async def test_command_is_stored_published_and_its_acknowledgement_tracked(api: Api) -> None:
    await seed_ward(api.ingestor)

    response = await api.post(
        "/api/patients/pt-high/commands", json={"command": "set_spo2_scale", "scale": 2}
    )

    assert response.status_code == 202, response.text
    command_id = uuid.UUID(response.json()["command_id"])
    ((topic, payload),) = api.broker.published
    assert topic == "wardwatch/v1/gw/gw-a/cmd/set_spo2_scale"
    sent = protocol.decode(protocol.Command, payload)
    assert (sent.message_id, sent.patient_id, sent.issued_by) == (command_id, "pt-high", "nurse-1")
    state = await api.get(f"/api/commands/{command_id}", role="viewer")
    assert state.json()["state"] == "sent"
    detail = (await api.get("/api/patients/pt-high")).json()
    assert detail["settings"]["spo2_scale"] == 2
    assert detail["settings"]["updated_by"] == "nurse-1"
    assert detail["settings"]["in_effect"]["spo2_scale"] == 1  # the gateway has not scored with it yet

    ack = protocol.CommandAck(
        message_id=protocol.new_message_id(),
        gateway_id="gw-a",
        command_id=command_id,
        ok=True,
        detail="applied",
        acked_at=at(700),
    )
    await api.ingestor.ingest(topic_for(ack), protocol.encode(ack))
    acked = (await api.get(f"/api/commands/{command_id}")).json()
    assert (acked["state"], acked["ack_ok"], acked["ack_detail"]) == ("acknowledged", True, "applied")
    listed = (await api.get("/api/patients/pt-high/commands")).json()
    assert [item["command_id"] for item in listed] == [str(command_id)]
    audit = (await api.get("/api/audit", role="admin", params={"source": "api"})).json()["items"]
    assert [(e["action"], e["target"], e["outcome"]) for e in audit] == [
        ("POST /api/patients/{patient_id}/commands", f"command:{command_id}", "sent")
    ]


@SQLITE_ONLY
async def test_settings_route_sends_one_command_per_setting(api: Api) -> None:
    await seed_ward(api.ingestor)

    response = await api.post(
        "/api/patients/pt-low/settings", role="physician", json={"on_oxygen": True, "consciousness": "C"}
    )

    assert response.status_code == 202, response.text
    assert len(response.json()["commands"]) == 2
    assert [topic.rsplit("/", 1)[1] for topic, _ in api.broker.published] == [
        "set_oxygen",
        "set_consciousness",
    ]
    empty = await api.post("/api/patients/pt-low/settings", json={})
    assert empty.status_code == 422


async def test_command_errors(api: Api) -> None:
    await seed_ward(api.ingestor)

    unknown = await api.post(
        "/api/patients/pt-nobody/commands", json={"command": "set_oxygen", "on_oxygen": True}
    )
    bad = await api.post("/api/patients/pt-low/commands", json={"command": "set_spo2_scale", "scale": 3})
    viewer = await api.post(
        "/api/patients/pt-low/commands", role="viewer", json={"command": "set_oxygen", "on_oxygen": True}
    )
    api.broker.fail = True
    down = await api.post("/api/patients/pt-low/commands", json={"command": "set_oxygen", "on_oxygen": True})

    assert unknown.status_code == 404
    assert bad.status_code == 422
    assert viewer.status_code == 403
    assert down.status_code == 503
    async with api.sessions() as session:
        states = (await session.scalars(select(CommandRecord.state))).all()
    assert list(states) == ["pending"]  # stored, not sent: never silently lost


async def test_display_name_admin_only_audited_without_the_name_and_never_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    name = "Grace Hopper-Zyxw"
    caplog.set_level(logging.DEBUG)
    # aiosqlite logs every statement's parameters at DEBUG (the name included): the server's entry point
    # must keep that logger at INFO or above; everything else may log at DEBUG.
    caplog.set_level(logging.INFO, logger="aiosqlite")
    await seed_ward(api.ingestor)

    nurse = await api.client.put(
        "/api/patients/pt-low/display-name", headers=api.auth("nurse"), json={"display_name": name}
    )
    admin = await api.client.put(
        "/api/patients/pt-low/display-name", headers=api.auth("admin"), json={"display_name": name}
    )
    control = await api.client.put(
        "/api/patients/pt-low/display-name", headers=api.auth("admin"), json={"display_name": "a\x00b"}
    )
    for path in ("/api/patients", "/api/patients/pt-low", "/api/audit?source=api"):
        assert (await api.get(path, role="admin")).status_code == 200
    await api.post("/api/patients/pt-low/commands", json={"command": "set_oxygen", "on_oxygen": True})

    assert nurse.status_code == 403
    assert admin.status_code == 204
    assert control.status_code == 422
    assert (await api.get("/api/patients/pt-low")).json()["patient"]["display_name"] == name
    assert name not in caplog.text
    assert "Grace" not in caplog.text
    for _, payload in api.broker.published:
        assert b"Grace" not in payload
    async with api.sessions() as session:
        rows = (await session.scalars(select(ApiAuditRecord))).all()
    assert rows, "the display-name change is audited"
    assert all("Grace" not in json.dumps(row.detail) for row in rows)
    assert any(row.detail == {"display_name_set": True} for row in rows)
