"""Search parameters without a database: FHIR date ranges and prefixes, code tokens, _count, cursors;
and the router with its injectable authentication and sessions (401, 503 as OperationOutcome)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fhir_support import FHIR_JSON, validated
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.protocol import VitalCode
from server.api.context import ApiError
from server.auth import Account, Role
from server.fhir import FhirSettings, fhir_router
from server.fhir.errors import InvalidSearchError
from server.fhir.search import Cursor, date_range, page_size, parse_codes, time_window, vitals_for
from server.storage import create_engine, session_factory

moments = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2090, 12, 31), timezones=st.just(UTC)
)


def _render(moment: datetime, precision: str) -> str:
    if precision == "year":
        return f"{moment:%Y}"
    if precision == "month":
        return f"{moment:%Y-%m}"
    if precision == "day":
        return f"{moment:%Y-%m-%d}"
    if precision == "minute":
        return f"{moment:%Y-%m-%dT%H:%M}Z"
    if precision == "second":
        return f"{moment:%Y-%m-%dT%H:%M:%S}Z"
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


@settings(max_examples=200, deadline=None)
@given(moments, st.sampled_from(["year", "month", "day", "minute", "second", "micro"]), moments)
def test_a_date_value_covers_its_precision_and_prefixes_split_time(
    moment: datetime, precision: str, reading: datetime
) -> None:
    text = _render(moment, precision)
    prefix, start, end = date_range(text)
    assert prefix == "eq"
    assert start <= moment < end
    # Every reading time is in exactly one of: before the range, inside it, after it.
    before = time_window([f"lt{text}"])
    inside = time_window([text])
    after = time_window([f"gt{text}"])

    def holds(window: object) -> bool:
        low, high = getattr(window, "start"), getattr(window, "end")  # noqa: B009
        return (low is None or reading >= low) and (high is None or reading < high)

    assert [holds(before), holds(inside), holds(after)].count(True) == 1
    assert holds(time_window([f"ge{text}"])) == (holds(inside) or holds(after))
    assert holds(time_window([f"le{text}"])) == (holds(inside) or holds(before))


def test_zones_and_fractions() -> None:
    assert date_range("ge2026-03-01T10:00:00+01:00")[1:] == (
        datetime(2026, 3, 1, 9, tzinfo=UTC),
        datetime(2026, 3, 1, 9, 0, 1, tzinfo=UTC),
    )
    assert date_range("2026-03-01T10:00:00.25Z")[2] - date_range("2026-03-01T10:00:00.25Z")[1] == timedelta(
        milliseconds=10
    )
    assert date_range("sa2026")[0] == "gt" and date_range("eb2026")[0] == "lt"
    assert date_range("2026-12")[2] == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2026-13",
        "2026-02-30",
        "2026-03-01T10:00",
        "2026-03-01T25:00:00Z",
        "ne2026",
        "ap2026",
        "9999",
    ],
)
def test_bad_dates_are_refused(text: str) -> None:
    with pytest.raises(InvalidSearchError) as caught:
        date_range(text)
    assert caught.value.expression == "date"


def test_code_tokens_choose_what_to_read() -> None:
    assert vitals_for(None) == (list(VitalCode), True)
    vitals, news2 = vitals_for(parse_codes(["http://loinc.org|8867-4"]))
    assert vitals == [VitalCode.HEART_RATE] and not news2
    vitals, news2 = vitals_for(parse_codes(["8478-0"]))
    assert set(vitals) == {VitalCode.SYSTOLIC_BP, VitalCode.DIASTOLIC_BP, VitalCode.MEAN_ARTERIAL_PRESSURE}
    assert vitals_for(parse_codes(["1104051000000101"])) == ([], True)
    assert vitals_for(parse_codes(["http://loinc.org|1104051000000101"])) == ([], False)
    with pytest.raises(InvalidSearchError):
        parse_codes(["8867-4", "9279-1"])
    with pytest.raises(InvalidSearchError):
        parse_codes(["http://loinc.org|"])


def test_count_and_cursor() -> None:
    assert page_size([], default=100, maximum=1000) == 100
    assert page_size(["5000"], default=100, maximum=1000) == 1000
    for bad in (["0"], ["-1"], ["x"], ["1", "2"]):
        with pytest.raises(InvalidSearchError):
            page_size(bad, default=100, maximum=1000)
    cursor = Cursor(datetime(2026, 3, 1, 8, 0, 0, 5, tzinfo=UTC), "abc-1-bp")
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in ("", "!!!", "W10", "WyIyMDI2LTAzLTAxVDA4OjAwOjAwIiwgMV0"):
        with pytest.raises(InvalidSearchError):
            Cursor.decode(bad)


# --------------------------------------------------------------------------------------------------
# The router outside the API app: injected authentication and sessions


async def _refuse(request: Request) -> Account:
    raise ApiError(401, "unauthorized", "no token", headers={"WWW-Authenticate": "Bearer"})


async def _integration(request: Request) -> Account:
    return Account(name="ehr-1", role=Role.INTEGRATION, key_id="0123456789ab")


async def test_injected_authentication_refusal_is_an_outcome() -> None:
    app = FastAPI()
    app.include_router(fhir_router(authenticate=_refuse, sessions=lambda request: pytest.fail("no session")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        response = await client.get("/fhir/Patient/pt-1")
    assert response.status_code == 401
    assert response.headers["content-type"] == FHIR_JSON
    assert response.headers["www-authenticate"] == "Bearer"
    assert validated(response.json()).model_dump()["issue"][0]["code"] == "login"


async def test_unreachable_database_is_503_transient(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    sessions = session_factory(engine)
    app = FastAPI()
    app.include_router(
        fhir_router(
            authenticate=_integration,
            sessions=lambda request: sessions,
            settings=FhirSettings(base_url="https://ward.example.org/fhir"),  # type: ignore[arg-type]
        )
    )
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
            response = await client.get("/fhir/Observation?patient=pt-1")
    finally:
        await engine.dispose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["issue"][0]["code"] == "transient"
