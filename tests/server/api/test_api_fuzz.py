"""Hostile requests: whatever the body, query or path, the API answers 4xx JSON or success, never 500.

A small slice runs in ``make test``; raise ``WARDWATCH_FUZZ_EXAMPLES`` for a long run.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from api_data import add_alert, seed_ward
from conftest import SQLITE_ONLY, Api, make_api
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.ingest import Ingestor
from server.settings import IngestSettings
from server.storage import create_engine, session_factory

EXAMPLES = int(os.environ.get("WARDWATCH_FUZZ_EXAMPLES", "25"))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8,
)
ROUTES = [
    ("POST", "/api/alerts/{alert}/acknowledge"),
    ("POST", "/api/alerts/{alert}/escalate"),
    ("POST", "/api/alerts/{alert}/resolve"),
    ("POST", "/api/alerts/{alert}/snooze"),
    ("POST", "/api/patients/{patient}/commands"),
    ("POST", "/api/patients/{patient}/settings"),
    ("PUT", "/api/patients/{patient}/display-name"),
    ("POST", "/api/tokens"),
    ("GET", "/api/patients/{patient}/observations"),
    ("GET", "/api/patients/{patient}/assessments"),
    ("GET", "/api/alerts/history"),
    ("GET", "/api/alerts/{alert}"),
    ("GET", "/api/audit"),
    ("GET", "/api/dead-letters"),
    ("GET", "/api/commands/{alert}"),
]
COMMANDS = ["set_spo2_scale", "set_oxygen", "set_consciousness", "set_staleness"]
QUERY_KEYS = ["since", "until", "cursor", "limit", "vital", "state", "source", "before_id", "patient_id", "x"]
BODIES = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "note": json_values,
            "duration_s": json_values,
            "command": st.sampled_from(
                ["set_spo2_scale", "set_oxygen", "set_consciousness", "set_staleness"]
            ),
            "scale": json_values,
            "on_oxygen": json_values,
            "consciousness": json_values,
            "windows_s": json_values,
            "display_name": json_values,
            "name": json_values,
            "role": json_values,
        },
    ),
)


@st.composite
def hostile_request(draw: st.DrawFn) -> tuple[str, str, dict[str, str], Any, str]:
    method, template = draw(st.sampled_from(ROUTES))
    patient = draw(st.sampled_from(["pt-high", "pt-low", "nobody"]) | st.text(min_size=1, max_size=70))
    alert = draw(
        st.sampled_from(["{known}", str(uuid.uuid4()), "not-a-uuid"]) | st.text(min_size=1, max_size=40)
    )
    path = template.format(
        patient=urllib.parse.quote(patient, safe=""), alert=urllib.parse.quote(alert, safe="{}")
    )
    query = draw(st.dictionaries(st.sampled_from(QUERY_KEYS), st.text(max_size=40), max_size=4))
    body = draw(BODIES)
    role = draw(st.sampled_from(["integration", "viewer", "nurse", "physician", "admin"]))
    return method, path, query, body, role


@pytest.fixture
def fuzz_target(database_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, Api, uuid.UUID]]:
    """One app, database and event loop for all examples (an example is one loop.run_until_complete)."""
    loop = asyncio.new_event_loop()
    engine = create_engine(database_url)
    sessions = session_factory(engine)

    async def start() -> tuple[Api, Callable[[], Any], uuid.UUID]:
        api, close = await make_api(sessions, Ingestor(sessions, IngestSettings()))
        await seed_ward(api.ingestor)
        known = await add_alert(
            api.sessions, subject="pt-low", priority="medium", tier=1, patient_id="pt-low"
        )
        return api, close, known

    api, close, known = loop.run_until_complete(start())
    try:
        yield loop, api, known
    finally:
        loop.run_until_complete(close())
        loop.run_until_complete(engine.dispose())
        loop.close()


async def _exercise(
    api: Api, known: uuid.UUID, requests: list[tuple[str, str, dict[str, str], Any, str]]
) -> None:
    for method, path, query, body, role in requests:
        response = await api.client.request(
            method,
            path.replace("{known}", str(known)),
            params=query,
            content=json.dumps(body, allow_nan=True),  # Infinity and NaN too: Python's parser takes them
            headers={**api.auth(role), "Content-Type": "application/json"},
        )
        assert response.status_code < 500, (method, path, query, body, role, response.text)
        if response.status_code >= 400:
            assert response.json()["error"]["message"]


@SQLITE_ONLY
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(hostile_request(), min_size=1, max_size=6))
def test_hostile_requests_never_get_500(
    fuzz_target: tuple[asyncio.AbstractEventLoop, Api, uuid.UUID],
    requests: list[tuple[str, str, dict[str, str], Any, str]],
) -> None:
    loop, api, known = fuzz_target
    loop.run_until_complete(_exercise(api, known, requests))
