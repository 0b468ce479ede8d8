"""docs/openapi.json is what the code serves; regenerate with ``python -m server.api.openapi``."""

from __future__ import annotations

import json
from pathlib import Path

from server.api.openapi import openapi_document, render

DOCUMENT = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def test_committed_openapi_document_is_current() -> None:
    assert DOCUMENT.exists(), "run: .venv/bin/python -m server.api.openapi"
    assert DOCUMENT.read_text(encoding="utf-8") == render(), (
        "docs/openapi.json is stale; run: .venv/bin/python -m server.api.openapi"
    )


def test_every_api_operation_requires_a_bearer_token_and_documents_errors() -> None:
    document = openapi_document()
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/api/"):
                assert operation["security"] == [{"bearer": []}], (method, path)
                assert {"401", "403", "422", "503"} <= set(operation["responses"]), (method, path)
            elif path == "/metrics":
                assert operation["security"] == [{"bearer": []}]
                assert {"401", "403", "503"} <= set(operation["responses"])
            else:
                assert "security" not in operation, path
    assert "HTTPValidationError" not in json.dumps(document)
