"""Read routes against what the real ingest stored, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest
from api_data import add_alert, batch, ingest, reading, seed_ward
from conftest import SQLITE_ONLY, Api
from server_support import T0, at

from edge_agent import protocol
from server.ingest import OutcomeKind

pytestmark = pytest.mark.usefixtures("backend")


async def test_patients_sorted_by_risk_then_score_then_time_without_data(api: Api) -> None:
    await seed_ward(api.ingestor)

    response = await api.get("/api/patients")

    assert response.status_code == 200, response.text
    body = response.json()
    assert [p["patient_id"] for p in body["patients"]] == ["pt-high", "pt-med-old", "pt-med-new", "pt-low"]
    high = body["patients"][0]
    assert high["news2"]["total"] == 7
    assert high["news2"]["risk"] == "high"
    assert high["news2"]["components"]["respiration"] == 3
    assert high["gateway_id"] == "gw-a"
    assert high["gateway_online"] is True
    # Latest reading of each vital, with its age against the server's clock (T0 + 10 min).
    assert high["latest"]["heart_rate"]["value"] == 125
    assert high["latest"]["heart_rate"]["age_s"] == pytest.approx(600 - 55)
    assert high["latest"]["spo2"]["unit"] == "%"
    assert high["data_age_s"] == pytest.approx(545)
    low = body["patients"][-1]
    assert set(low["latest"]) == {"respiratory_rate", "heart_rate"}
    assert low["latest"]["respiratory_rate"]["measured_at"] == at(9).isoformat().replace("+00:00", "Z")


async def test_patient_detail_with_settings_commands_and_alerts(api: Api) -> None:
    await seed_ward(api.ingestor)
    alert_id = await add_alert(api.sessions, subject="pt-high", priority="high", tier=2, patient_id="pt-high")

    response = await api.get("/api/patients/pt-high")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["patient"]["patient_id"] == "pt-high"
    assert body["patient"]["open_alerts"] == 1
    assert body["patient"]["top_priority"] == "high"
    assert body["settings"]["spo2_scale"] == 1
    assert body["settings"]["in_effect"] == {
        "spo2_scale": 1,
        "on_oxygen": False,
        "consciousness": "A",
        "as_of": "2026-03-01T08:00:55Z",
    }
    assert body["commands"] == []
    assert [a["alert_id"] for a in body["open_alerts"]] == [str(alert_id)]
    assert [a["alert_id"] for a in body["recent_alerts"]] == [str(alert_id)]


@SQLITE_ONLY
async def test_unknown_patient_is_404_with_where(api: Api) -> None:
    response = await api.get("/api/patients/nobody")

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert error["problems"] == [{"where": "path.patient_id", "problem": "unknown"}]


async def test_observations_paged_by_cursor_filtered_by_vital_and_time(api: Api) -> None:
    await seed_ward(api.ingestor)
    seen: list[float] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"vital": "respiratory_rate", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        response = await api.get("/api/patients/pt-low/observations", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(item["measured_at"] for item in page["items"])
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4  # 10 readings, 3 per page
    assert len(seen) == len(set(seen)) == 10
    assert seen == sorted(seen)

    window = await api.get(
        "/api/patients/pt-low/observations",
        params={"since": at(2).isoformat(), "until": at(5).isoformat()},
    )
    assert [item["value"] for item in window.json()["items"]] == [14, 14, 14]
    both = await api.get(
        "/api/patients/pt-low/observations",
        params=[("vital", "respiratory_rate"), ("vital", "heart_rate")],
    )
    assert len(both.json()["items"]) == 11


@SQLITE_ONLY
@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"cursor": "garbage"}, "query.cursor"),
        ({"since": "2026-03-01T08:00:00"}, "query.since"),  # no zone: ambiguous, refused
        ({"vital": "pulse_pressure"}, "query.vital.0"),
        ({"limit": 0}, "query.limit"),
        ({"limit": 10_000_000}, "query.limit"),
        ({"since": "2026-03-01T09:00:00Z", "until": "2026-03-01T08:00:00Z"}, "query.until"),
    ],
)
async def test_bad_observation_queries_are_422_saying_where(
    api: Api, params: dict[str, object], where: str
) -> None:
    await seed_ward(api.ingestor)

    response = await api.get("/api/patients/pt-low/observations", params=params)

    assert response.status_code == 422, response.text
    assert where in [problem["where"] for problem in response.json()["error"]["problems"]]


@SQLITE_ONLY
async def test_assessments_of_a_patient(api: Api) -> None:
    await seed_ward(api.ingestor)

    response = await api.get("/api/patients/pt-high/assessments")

    assert response.status_code == 200
    items = response.json()["items"]
    assert [(item["total"], item["risk"]) for item in items] == [(7, "high")]


async def test_alert_queue_most_urgent_first_with_next_escalation(api: Api) -> None:
    await seed_ward(api.ingestor)
    medium = await add_alert(
        api.sessions, subject="pt-med-old", priority="medium", tier=1, patient_id="pt-med-old", raised=T0
    )
    high = await add_alert(
        api.sessions, subject="pt-high", priority="high", tier=2, patient_id="pt-high", raised=at(300)
    )
    battery = await add_alert(
        api.sessions,
        subject="gateway:gw-a",
        priority="low",
        tier=1,
        category="technical",
        condition="battery_low",
        gateway_id="gw-a",
        next_escalation_in_s=None,
    )

    response = await api.get("/api/alerts")

    assert response.status_code == 200
    alerts = response.json()["alerts"]
    assert [a["alert_id"] for a in alerts] == [str(high), str(medium), str(battery)]
    assert alerts[0]["age_s"] == pytest.approx(300)
    assert alerts[0]["next_escalation_in_s"] == pytest.approx(0)
    assert alerts[1]["next_escalation_in_s"] == pytest.approx(-300)  # overdue
    technical = await api.get("/api/alerts", params={"category": "technical"})
    assert [a["alert_id"] for a in technical.json()["alerts"]] == [str(battery)]


@SQLITE_ONLY
async def test_alert_history_pages_newest_first(api: Api) -> None:
    await seed_ward(api.ingestor)
    ids = [
        await add_alert(
            api.sessions, subject=f"pt-{i}", priority="low", tier=1, raised=T0 + timedelta(minutes=i)
        )
        for i in range(5)
    ]
    collected: list[str] = []
    cursor = None
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/api/alerts/history", params=params)).json()
        collected.extend(item["alert_id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert collected == [str(i) for i in reversed(ids)]


async def test_gateways_with_devices_backlog_and_technical_alarms(api: Api) -> None:
    await seed_ward(api.ingestor)
    battery = await add_alert(
        api.sessions,
        subject="gateway:gw-a",
        priority="low",
        tier=1,
        category="technical",
        condition="battery_low",
        gateway_id="gw-a",
    )

    response = await api.get("/api/gateways", role="viewer")

    assert response.status_code == 200
    gateways = {g["gateway_id"]: g for g in response.json()["gateways"]}
    assert set(gateways) == {"gw-a", "gw-b", "gw-c"}
    a = gateways["gw-a"]
    assert a["online"] is True
    assert a["backlog"] == 7
    assert a["patients"] == ["pt-high"]
    assert a["devices"] == [
        {
            "device_id": "oximeter-1",
            "device_kind": "pulse_oximeter",
            "connected": True,
            "battery_pct": 12,
            "last_reading_at": "2026-03-01T08:00:50Z",
            "last_reading_age_s": 550.0,
        }
    ]
    assert [alarm["alert_id"] for alarm in a["technical_alarms"]] == [str(battery)]
    assert gateways["gw-b"]["online"] is False  # never sent a status
    one = await api.get("/api/gateways/gw-c")
    assert one.json()["patients"] == ["pt-low"]
    assert (await api.get("/api/gateways/gw-z")).status_code == 404


async def test_dead_letters_and_ingest_counters_for_admins(api: Api) -> None:
    outcome = await api.ingestor.ingest("wardwatch/v1/gw/gw-x/obs", b"{not json")
    assert outcome.kind is OutcomeKind.DEAD_LETTER

    letters = await api.get("/api/dead-letters", role="admin")
    counters = await api.get("/api/ingest", role="admin")

    assert letters.status_code == 200
    (item,) = letters.json()["items"]
    assert item["reason"] == "invalid_json"
    assert item["gateway_id"] == "gw-x"
    assert item["payload_base64"] == "e25vdCBqc29u"
    assert counters.json()["counters"]["dead_letters.invalid_json"] == 1
    assert counters.json()["dead_letters_stored"] == {"invalid_json": 1}
    for role in ("nurse", "physician", "viewer", "integration"):
        assert (await api.get("/api/dead-letters", role=role)).status_code == 403
        assert (await api.get("/api/ingest", role=role)).status_code == 403


async def test_integration_role_never_sees_display_names(api: Api) -> None:
    await seed_ward(api.ingestor)
    named = await api.client.put(
        "/api/patients/pt-high/display-name",
        headers=api.auth("admin"),
        json={"display_name": "Ada Lovelace"},
    )
    assert named.status_code == 204

    for role, expected in (("viewer", "Ada Lovelace"), ("nurse", "Ada Lovelace"), ("integration", None)):
        listing = await api.get("/api/patients", role=role)
        detail = await api.get("/api/patients/pt-high", role=role)
        assert listing.json()["patients"][0]["display_name"] == expected
        assert detail.json()["patient"]["display_name"] == expected


@SQLITE_ONLY
async def test_latest_reading_ties_go_to_the_one_stored_last(api: Api) -> None:
    hr = protocol.VitalCode.HEART_RATE
    await ingest(
        api.ingestor,
        batch("gw-t", 0, [reading("pt-tie", hr, 60, 5), reading("pt-tie", hr, 61, 5)], 6),
        batch("gw-t", 1, [reading("pt-tie", hr, 62, 5), reading("pt-tie", hr, 50, 4)], 7),
    )

    patient = (await api.get("/api/patients/pt-tie")).json()["patient"]

    assert patient["latest"]["heart_rate"]["value"] == 62


@SQLITE_ONLY
async def test_prometheus_metrics_for_scrapers_only(api: Api) -> None:
    await seed_ward(api.ingestor)
    await api.ingestor.ingest("wardwatch/v1/gw/gw-x/obs", b"[")
    await add_alert(api.sessions, subject="pt-high", priority="high", tier=2, patient_id="pt-high")
    await add_alert(api.sessions, subject="pt-low", priority="medium", tier=1, patient_id="pt-low")
    await api.client.get("/api/patients", headers={"Authorization": "Bearer nope"})

    response = await api.get("/metrics", role="integration")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = set(response.text.splitlines())
    assert 'wardwatch_ingest_stored_total{channel="obs"} 4' in lines
    assert 'wardwatch_ingest_dead_letters_total{reason="invalid_json"} 1' in lines
    assert "# TYPE wardwatch_ingest_received_total counter" in lines
    assert "# TYPE wardwatch_ingest_stream_lag_seconds gauge" in lines
    assert "wardwatch_ingest_stream_lag_seconds 42.5" in lines
    assert "# TYPE wardwatch_engine_unlocked_conflicts_total counter" in lines
    assert "wardwatch_engine_unlocked_conflicts_total 3" in lines
    assert "# TYPE wardwatch_engine_max_timer_lateness_seconds gauge" in lines
    assert "wardwatch_engine_max_timer_lateness_seconds 0.25" in lines
    assert 'wardwatch_alerts_open{category="clinical",priority="high"} 1' in lines
    assert 'wardwatch_alerts_open{category="clinical",priority="medium"} 1' in lines
    assert 'wardwatch_gateways{state="online"} 1' in lines
    assert 'wardwatch_gateways{state="offline"} 2' in lines
    assert "wardwatch_api_sign_in_failures_total 1" in lines
    assert "pt-high" not in response.text  # counts only, no patient ids
    assert (await api.get("/metrics", role="admin")).status_code == 200
    for role in ("viewer", "nurse", "physician"):
        assert (await api.get("/metrics", role=role)).status_code == 403
    assert (await api.client.get("/metrics")).status_code == 401
