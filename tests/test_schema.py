"""docs/schema/ must match what the models generate: a stale schema fails here."""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.protocol import SCHEMA_MODELS
from edge_agent.schema import schema_documents

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schema"


def test_committed_schemas_are_current() -> None:
    generated = schema_documents()
    committed = {path.name: path.read_text() for path in SCHEMA_DIR.glob("*.json")}
    stale = sorted(name for name in generated if committed.get(name) != generated[name])
    extra = sorted(set(committed) - set(generated))
    assert not stale, f"stale schemas {stale}: run `make schema` and commit docs/schema/"
    assert not extra, f"schemas for payloads that no longer exist: {extra}"


def test_every_payload_has_a_schema_that_forbids_unknown_fields() -> None:
    for model in SCHEMA_MODELS:
        schema = json.loads(schema_documents()[f"{model.__name__}.json"])
        assert schema["additionalProperties"] is False, model.__name__
