"""``wardwatch schema``: the JSON Schema of every wire payload, for consumers in other languages."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edge_agent.protocol import SCHEMA_MODELS, TOPIC_ROOT


def schema_documents() -> dict[str, str]:
    """File name -> JSON text of each payload's schema (draft 2020-12), deterministic for diffing."""
    documents = {}
    for model in SCHEMA_MODELS:
        schema = model.model_json_schema(mode="validation")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://wardwatch.invalid/schema/{TOPIC_ROOT}/{model.__name__}.json",
            **schema,
        }
        documents[f"{model.__name__}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return documents


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_documents().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _run(args: argparse.Namespace) -> int:
    for path in write_schemas(Path(args.out)):
        print(path)
    return 0


def register_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="write the JSON Schema of every wire payload",
        description="Write the JSON Schema (draft 2020-12) of every MQTT payload, one file per model.",
    )
    parser.add_argument("--out", default="docs/schema", help="directory to write to (default: docs/schema)")
    parser.set_defaults(run=_run)
