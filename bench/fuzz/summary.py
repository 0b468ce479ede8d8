"""Markdown table of a fuzz run: ``python -m bench.fuzz.summary results.jsonl`` (from ``--json``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(lines: list[dict[str, object]]) -> str:
    out = ["| target | cases | failures | time (s) | outcomes |", "|---|---:|---:|---:|---|"]
    for row in lines:
        outcomes = row["outcomes"]
        assert isinstance(outcomes, dict)
        total = sum(outcomes.values())
        shown = ", ".join(
            f"{label} {100 * count / total:.1f} %" for label, count in list(outcomes.items())[:6]
        )
        if len(outcomes) > 6:
            shown += f", {len(outcomes) - 6} more"
        out.append(
            f"| `{row['target']}` | {row['cases']:,} | {row['failures']} | {row['seconds']} | {shown} |"
        )
    return "\n".join(out)


def main() -> None:
    rows = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
    latest = {row["target"]: row for row in rows}  # the last run of each target
    from bench.fuzz.run import all_targets

    order = [target.name for target in all_targets()]
    print(table(sorted(latest.values(), key=lambda row: order.index(str(row["target"])))))


if __name__ == "__main__":
    main()
