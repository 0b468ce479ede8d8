"""Write the API's OpenAPI document: ``python -m server.api.openapi [docs/openapi.json]``.

A test fails when the committed ``docs/openapi.json`` differs from what the code produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, cast

from sqlalchemy.ext.asyncio import async_sessionmaker

from server.api.actions import Actions
from server.api.app import create_app

DEFAULT_PATH = Path("docs/openapi.json")


def openapi_document() -> dict[str, Any]:
    """The document as the app serves it at /api/openapi.json (no database or actions are used)."""
    app = create_app(sessionmaker=async_sessionmaker(), actions=cast(Actions, object()))
    return app.openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_PATH
    path.write_text(render(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
