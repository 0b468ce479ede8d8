"""The FHIR endpoints on real SQLite and PostgreSQL, with data put in through the real ingest: search
paging (every page size, batch boundaries, data arriving between pages), date and code filters,
Patient reads by role, $everything, OperationOutcome errors, and FHIR validation of every answer."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir_support import FHIR_JSON, FhirApi, T, make_fhir_api, validated, vital_reading
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from edge_agent import protocol
from server.fhir import mapping, reads
from server.ingest import Ingestor
from server.storage.models import Alert, Patient

T0 = T
MINUTE = timedelta(minutes=1)
INSTANTS = 20
V = protocol.VitalCode


async def seed(api: FhirApi) -> int:
    """pt-1 on gw-1: at each of 20 minutes a heart rate and an SpO2 (oximeter); every 4th minute a cuff
    measurement (systolic and MAP in one message, diastolic in the next); every 5th minute a NEWS2.
    pt-2 on gw-2 has readings at the same times (they must never show up for pt-1).
    Returns the number of pt-1's Observation resources."""
    sequencer = api.sequencer
    messages: list[protocol.WireModel] = [
        protocol.GatewayStatus(
            gateway_id="gw-1",
            state="birth",
            session=1,
            sent_at=T0,
            software_version="0.1.0",
            heartbeat_interval_s=30,
            devices=[
                protocol.DeviceState(device_id="oximeter-1", device_kind="pulse_oximeter", connected=True),
                protocol.DeviceState(
                    device_id="cuff-1", device_kind="blood_pressure_monitor", connected=True
                ),
            ],
        )
    ]
    expected = 0
    for minute in range(INSTANTS):
        when = T0 + minute * MINUTE
        vitals = [
            vital_reading("pt-1", V.HEART_RATE, 70 + minute, when, "oximeter-1"),
            vital_reading("pt-1", V.SPO2, 97 - minute % 5, when, "oximeter-1", perfusion_index=2.0),
        ]
        expected += 2
        if minute % 4 == 0:
            vitals += [
                vital_reading("pt-1", V.SYSTOLIC_BP, 120 + minute, when, "cuff-1"),
                vital_reading("pt-1", V.MEAN_ARTERIAL_PRESSURE, 90 + minute, when, "cuff-1"),
            ]
            expected += 1
        messages += [
            sequencer.batch("gw-1", vitals),
            sequencer.batch("gw-2", [vital_reading("pt-2", V.HEART_RATE, 60, when, "oximeter-9")]),
        ]
        if minute % 4 == 0:
            messages.append(
                sequencer.batch("gw-1", [vital_reading("pt-1", V.DIASTOLIC_BP, 80, when, "cuff-1")])
            )
        if minute % 5 == 0:
            messages.append(sequencer.score("gw-1", "pt-1", when, {"respiration": 3, "spo2": 3, "pulse": 1}))
            expected += 1
    await api.ingest(*messages)
    return expected


@pytest.fixture
async def fhir_api(sessions: async_sessionmaker[AsyncSession], ingestor: Ingestor) -> AsyncIterator[FhirApi]:
    """The FHIR router on the real API app, on each backend (tests/server/conftest.py's databases)."""
    api = await make_fhir_api(sessions, ingestor)
    yield api
    await api.client.aclose()


def bundle_of(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == FHIR_JSON
    assert response.headers["cache-control"] == "no-store"
    document: dict[str, Any] = response.json()
    assert isinstance(validated(document), Bundle)
    for entry in document.get("entry", []):
        validated(entry["resource"])  # every resource validates on its own too
        resource = entry["resource"]
        assert entry["fullUrl"] == f"http://ward.test/fhir/{resource['resourceType']}/{resource['id']}"
    return document


def next_link(bundle: dict[str, Any]) -> str | None:
    links = {link["relation"]: link["url"] for link in bundle["link"]}
    return links.get("next")


async def walk(api: FhirApi, url: str, role: str = "integration") -> tuple[list[dict[str, Any]], int]:
    resources: list[dict[str, Any]] = []
    pages = 0
    next_url: str | None = url
    while next_url is not None:
        bundle = bundle_of(await api.get(next_url, role))
        pages += 1
        resources.extend(entry["resource"] for entry in bundle.get("entry", []))
        next_url = next_link(bundle)
        assert pages < 500
    return resources, pages


def code_of(resource: dict[str, Any]) -> str:
    return str(resource["code"]["coding"][-1]["code"])


def times(resources: list[dict[str, Any]]) -> list[str]:
    return [resource["effectiveDateTime"] for resource in resources]


# --------------------------------------------------------------------------------------------------
# Paging


async def test_pages_together_are_the_whole_result_in_order(
    fhir_api: FhirApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reads, "BATCH_ROWS", 4)  # batch boundaries inside instants and inside cuff triples
    expected = await seed(fhir_api)
    everything, _ = await walk(fhir_api, "/fhir/Observation?patient=pt-1&_count=1000")
    assert len(everything) == expected == 2 * INSTANTS + 5 + 4
    keys = [(r["effectiveDateTime"], r["id"]) for r in everything]
    assert keys == sorted(keys)
    assert all(r["subject"] == {"reference": "Patient/pt-1"} for r in everything)
    panels = [r for r in everything if code_of(r) == "85354-9"]
    assert len(panels) == 5
    for panel in panels:
        values = [c["valueQuantity"]["value"] for c in panel["component"]]
        assert len(values) == 3 and values[1] == 80  # systolic, diastolic (other message), MAP
    for count in (1, 3, 7):
        paged, pages = await walk(fhir_api, f"/fhir/Observation?patient=pt-1&_count={count}")
        assert [r["id"] for r in paged] == [r["id"] for r in everything], count
        assert pages == -(-expected // count)


async def test_next_link_keeps_the_filters_and_a_bad_cursor_is_refused(fhir_api: FhirApi) -> None:
    await seed(fhir_api)
    bundle = bundle_of(
        await fhir_api.get("/fhir/Observation?patient=pt-1&code=8867-4&date=ge2026-03-01&_count=2")
    )
    query = parse_qs(urlsplit(next_link(bundle) or "").query)
    assert query["code"] == ["8867-4"] and query["date"] == ["ge2026-03-01"] and query["_count"] == ["2"]
    assert bundle["link"][0] == {
        "relation": "self",
        "url": "http://ward.test/fhir/Observation?patient=pt-1&code=8867-4&date=ge2026-03-01&_count=2",
    }
    response = await fhir_api.get("/fhir/Observation?patient=pt-1&_cursor=not-a-cursor")
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == ["_cursor"]


async def test_a_reading_stored_between_pages_appears_on_a_later_page(fhir_api: FhirApi) -> None:
    await seed(fhir_api)
    first = bundle_of(await fhir_api.get("/fhir/Observation?patient=pt-1&code=8867-4&_count=5"))
    late = T0 + 30 * MINUTE
    await fhir_api.ingest(
        fhir_api.sequencer.batch(
            "gw-1", [vital_reading("pt-1", V.HEART_RATE, 99, late, "oximeter-1")]
        ).model_copy(update={"seq": 10_000})
    )
    rest, _ = await walk(fhir_api, next_link(first) or "")
    heart_rates = [entry["resource"] for entry in first["entry"]] + rest
    assert len(heart_rates) == INSTANTS + 1
    assert heart_rates[-1]["valueQuantity"]["value"] == 99


# --------------------------------------------------------------------------------------------------
# Filters


DATE_CASES = [
    (["ge2026-03-01T08:05:00Z"], range(5, INSTANTS)),
    (["gt2026-03-01T08:05:00Z"], range(6, INSTANTS)),
    (["le2026-03-01T08:05:00Z"], range(0, 6)),
    (["lt2026-03-01T08:05:00Z"], range(0, 5)),
    (["sa2026-03-01T08:05:00Z"], range(6, INSTANTS)),
    (["eb2026-03-01T08:05:00Z"], range(0, 5)),
    (["ge2026-03-01T08:03:00Z", "lt2026-03-01T08:07:00Z"], range(3, 7)),
    (["eq2026-03-01T08:04Z"], range(4, 5)),
    (["2026-03-01T09:04:00+01:00"], range(4, 5)),
    (["gt2026-03-01T08:04:59.5Z"], range(5, INSTANTS)),
    (["2026-03-01"], range(0, INSTANTS)),
    (["2026-03"], range(0, INSTANTS)),
    (["lt2026-03-01"], range(0)),
    (["ge2026-03-02"], range(0)),
    (["ge2026-03-01T08:10:00Z", "le2026-03-01T08:02:00Z"], range(0)),
]


async def test_date_filters(fhir_api: FhirApi) -> None:
    await seed(fhir_api)
    for dates, minutes in DATE_CASES:
        query = "&".join(f"date={d.replace('+', '%2B')}" for d in dates)
        found, _ = await walk(
            fhir_api, f"/fhir/Observation?patient=pt-1&code=http://loinc.org|8867-4&{query}&_count=3"
        )
        expected = [mapping.fhir_instant(T0 + m * MINUTE) for m in minutes]
        assert times(found) == expected, dates


CODE_CASES = [
    ("8867-4", {"8867-4"}, INSTANTS),
    ("http://loinc.org|59408-5", {"59408-5"}, INSTANTS),
    ("2708-6", {"59408-5"}, INSTANTS),
    ("85354-9", {"85354-9"}, 5),
    ("8478-0", set(), 0),  # every MAP here is inside a panel
    ("8480-6", set(), 0),  # systolic is a component, never an Observation's code
    ("http://snomed.info/sct|1104051000000101", {"1104051000000101"}, 4),
    ("http://snomed.info/sct|8867-4", set(), 0),
    ("8867-4,85354-9", {"8867-4", "85354-9"}, INSTANTS + 5),
]


async def test_code_filter(fhir_api: FhirApi) -> None:
    await seed(fhir_api)
    for code, expected_codes, count in CODE_CASES:
        found, _ = await walk(
            fhir_api, f"/fhir/Observation?patient=pt-1&code={code.replace('|', '%7C')}&_count=6"
        )
        assert len(found) == count, code
        assert {code_of(r) for r in found} == expected_codes, code
    # A lone mean arterial pressure (no cuff pair at that instant) is found by its own code.
    await fhir_api.ingest(
        fhir_api.sequencer.batch(
            "gw-1", [vital_reading("pt-1", V.MEAN_ARTERIAL_PRESSURE, 88, T0 + 40 * MINUTE, "cuff-1")]
        )
    )
    found, _ = await walk(fhir_api, "/fhir/Observation?patient=pt-1&code=8478-0")
    assert [r["valueQuantity"]["value"] for r in found] == [88]


async def test_subject_reference_and_unknown_patient(fhir_api: FhirApi) -> None:
    await seed(fhir_api)
    by_subject, _ = await walk(fhir_api, "/fhir/Observation?subject=Patient/pt-2")
    assert [code_of(r) for r in by_subject] == ["8867-4"] * INSTANTS
    nobody = bundle_of(await fhir_api.get("/fhir/Observation?patient=pt-404"))
    assert "entry" not in nobody


# --------------------------------------------------------------------------------------------------
# Patient, $everything


async def test_patient_name_by_role(fhir_api: FhirApi) -> None:
    await seed(fhir_api)
    async with fhir_api.sessions() as session, session.begin():
        await session.execute(
            update(Patient).where(Patient.patient_id == "pt-1").values(display_name="Ada Example")
        )
    for role, named in (("integration", False), ("viewer", True), ("nurse", True), ("admin", True)):
        response = await fhir_api.get("/fhir/Patient/pt-1", role)
        assert response.status_code == 200
        assert response.headers["content-type"] == FHIR_JSON
        patient = response.json()
        validated(patient)
        assert patient["identifier"][0]["value"] == "pt-1"
        assert ("name" in patient) is named, role
    missing = await fhir_api.get("/fhir/Patient/pt-404")
    assert missing.status_code == 404
    assert missing.json()["issue"][0]["code"] == "not-found"


async def test_pseudonym_with_underscore_is_found_by_its_digest_id(fhir_api: FhirApi) -> None:
    await fhir_api.ingest(
        fhir_api.sequencer.batch("gw-3", [vital_reading("ward_3", V.HEART_RATE, 77, T0, "oximeter-1")])
    )
    fhir_id = mapping.patient_fhir_id("ward_3")
    patient = (await fhir_api.get(f"/fhir/Patient/{fhir_id}")).json()
    assert patient["id"] == fhir_id and patient["identifier"][0]["value"] == "ward_3"
    found, _ = await walk(fhir_api, f"/fhir/Observation?patient={fhir_id}")
    assert [r["subject"]["reference"] for r in found] == [f"Patient/{fhir_id}"]
    assert (await fhir_api.get("/fhir/Patient/ward_3")).status_code == 404


async def test_everything_has_patient_devices_flags_and_observations_over_pages(fhir_api: FhirApi) -> None:
    expected = await seed(fhir_api)
    alert_id = uuid.uuid4()
    async with fhir_api.sessions() as session, session.begin():
        session.add(
            Alert(
                id=alert_id,
                category="clinical",
                condition="news2_high",
                subject="pt-1",
                patient_id="pt-1",
                gateway_id="gw-1",
                state="open",
                priority="high",
                tier=1,
                risk="high",
                total=7,
                reason="NEWS2 7 (high)",
                raised_at=T0,
                updated_at=T0,
            )
        )
    first = bundle_of(await fhir_api.get("/fhir/Patient/pt-1/$everything?_count=10", "viewer"))
    kinds = [entry["resource"]["resourceType"] for entry in first["entry"]]
    assert kinds[:5] == ["Patient", "Device", "Device", "Device", "Flag"]
    devices = [entry["resource"] for entry in first["entry"] if entry["resource"]["resourceType"] == "Device"]
    assert {d.get("type", {}).get("text") for d in devices} == {
        "Home gateway",
        "pulse_oximeter",
        "blood_pressure_monitor",
    }
    assert first["entry"][4]["resource"]["id"] == str(alert_id)
    assert first["entry"][1]["search"] == {"mode": "include"}
    observations: list[dict[str, Any]] = []
    page: dict[str, Any] | None = first
    while page is not None:
        resources = [entry["resource"] for entry in page["entry"]]
        here = {f"{r['resourceType']}/{r['id']}" for r in resources}
        for resource in resources:
            # Every page is self-contained: each Device an Observation or Device refers to is on it.
            for reference in (resource.get("device"), resource.get("parent")):
                if reference is not None:
                    assert reference["reference"] in here
        observations += [r for r in resources if r["resourceType"] == "Observation"]
        if page is not first:
            assert {r["resourceType"] for r in resources} <= {"Observation", "Device"}
        url = next_link(page)
        page = None if url is None else bundle_of(await fhir_api.get(url, "viewer"))
    assert len(observations) == expected
    assert len({r["id"] for r in observations}) == expected
    window = bundle_of(
        await fhir_api.get(
            "/fhir/Patient/pt-1/$everything?start=2026-03-01T08:19:00Z&end=2026-03-01T08:19:00Z"
        )
    )
    in_window = [e["resource"] for e in window["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert [r["effectiveDateTime"] for r in in_window] == ["2026-03-01T08:19:00Z"] * 2
    kinds = [e["resource"]["resourceType"] for e in window["entry"]]
    assert kinds == ["Patient", "Device", "Device", "Flag", "Observation", "Observation"]  # no cuff reading


# --------------------------------------------------------------------------------------------------
# Errors and security


async def test_errors_are_operation_outcomes(fhir_api: FhirApi) -> None:
    await seed(fhir_api)
    cases = [
        ("/fhir/Observation?patient=pt-1&date=yesterday", 400, "invalid", "date"),
        ("/fhir/Observation?patient=pt-1&date=ne2026-03-01", 400, "not-supported", "date"),
        ("/fhir/Observation?patient=pt-1&date=ge2026-03-01T08:00:00", 400, "invalid", "date"),
        ("/fhir/Observation?patient=pt-1&category=vital-signs", 400, "not-supported", "category"),
        ("/fhir/Observation?patient=pt-1&_count=0", 400, "not-supported", "_count"),
        ("/fhir/Observation?patient=pt-1&_count=many", 400, "invalid", "_count"),
        ("/fhir/Observation?patient=pt-1&_format=xml", 400, "not-supported", "_format"),
        ("/fhir/Observation?date=ge2026-03-01", 400, "invalid", "patient"),
        ("/fhir/Observation?patient=pt-1&patient=pt-2", 400, "invalid", "patient"),
        ("/fhir/Patient/pt-1/$everything?start=soon", 400, "invalid", "start"),
    ]
    for url, status, code, expression in cases:
        response = await fhir_api.get(url)
        assert response.status_code == status, url
        assert response.headers["content-type"] == FHIR_JSON
        outcome = response.json()
        validated(outcome)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == code, url
        assert outcome["issue"][0]["expression"] == [expression], url


async def test_xml_only_accept_is_406_and_json_accepts_are_served(fhir_api: FhirApi) -> None:
    await seed(fhir_api)
    token = {"Authorization": f"Bearer {fhir_api.tokens['integration']}"}
    xml = await fhir_api.client.get("/fhir/Patient/pt-1", headers={**token, "Accept": "application/fhir+xml"})
    assert xml.status_code == 406
    assert xml.json()["issue"][0]["code"] == "not-supported"
    for accept in ("application/fhir+json", "application/json", "*/*", "application/fhir+xml, */*;q=0.1"):
        response = await fhir_api.client.get("/fhir/Patient/pt-1", headers={**token, "Accept": accept})
        assert response.status_code == 200, accept


async def test_no_token_or_a_wrong_token_is_refused_with_an_outcome(fhir_api: FhirApi) -> None:
    response = await fhir_api.client.get("/fhir/Observation?patient=pt-1")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["issue"][0]["code"] == "login"
    wrong = await fhir_api.client.get(
        "/fhir/Patient/pt-1", headers={"Authorization": "Bearer ww_0123456789ab_wrong"}
    )
    assert wrong.status_code == 401 and wrong.headers["content-type"] == FHIR_JSON


async def test_large_count_is_capped_and_metadata_needs_no_token(fhir_api: FhirApi) -> None:
    await seed(fhir_api)
    bundle = bundle_of(await fhir_api.get("/fhir/Observation?patient=pt-1&_count=999999"))
    assert len(bundle["entry"]) == 2 * INSTANTS + 9
    statement = await fhir_api.client.get("/fhir/metadata")
    assert statement.status_code == 200
    document = statement.json()
    validated(document)
    assert document["fhirVersion"] == "4.0.1"


async def test_random_ward_pages_cover_every_reading_once(
    fhir_api: FhirApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random readings with many shared instants, random page sizes and small read batches: the pages
    hold every stored reading exactly once (by its wire identity), in order, with no page too big."""
    seed_value = random.randrange(2**32)
    print(f"random seed {seed_value}")  # reproduce a failure with this seed
    rng = random.Random(seed_value)
    monkeypatch.setattr(reads, "BATCH_ROWS", rng.randint(2, 9))
    messages: list[protocol.WireModel] = []
    identities: set[str] = set()
    for _ in range(12):
        readings = []
        for _ in range(rng.randint(1, 12)):
            vital = rng.choice(list(V))
            spec = protocol.VITALS[vital]
            when = T0 + timedelta(seconds=rng.randint(0, 20))
            readings.append(
                vital_reading("pt-1", vital, spec.minimum + 1, when, rng.choice(["cuff-1", "oximeter-1"]))
            )
        batch = fhir_api.sequencer.batch("gw-1", readings)
        identities.update(f"{batch.message_id}/{position}" for position in range(len(readings)))
        messages.append(batch)
        if rng.random() < 0.5:
            score = fhir_api.sequencer.score("gw-1", "pt-1", T0 + timedelta(seconds=rng.randint(0, 20)), {})
            identities.add(str(score.message_id))
            messages.append(score)
    await fhir_api.ingest(*messages)
    count = rng.randint(2, 8)
    found, _ = await walk(fhir_api, f"/fhir/Observation?patient=pt-1&_count={count}")
    seen = [identifier["value"] for resource in found for identifier in resource["identifier"]]
    assert sorted(seen) == sorted(identities)
    keys = [(r["effectiveDateTime"], r["id"]) for r in found]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
