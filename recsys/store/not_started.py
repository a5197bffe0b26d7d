"""Runs that ended before they were recorded in the store's ``runs`` table: a scheduled run
refused by the run lock, an export that was bad at 02:00, a store that could not be opened.

Nobody watches a scheduled run's terminal, and the store is left untouched by such a run (bad
input never changes it), so they are kept beside the run log, ``DIR/logs/not_started.jsonl``,
one JSON line each, and ``recsys runs`` lists them. Standard library only.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

FILE = Path("logs") / "not_started.jsonl"


def record(output: Path | str, run_id: str, message: str, flow_run: str | None = None) -> None:
    """Add a run that ended before it was recorded; best effort (an unwritable folder is the
    reason it could not start, and is in Prefect's record of the run anyway)."""
    path = Path(output) / FILE
    entry = {"run_id": run_id, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "message": message}
    if flow_run:
        entry["flow_run"] = flow_run
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
    except OSError:
        pass


def recent(output: Path | str, limit: int = 20) -> list[dict]:
    """The newest ``limit`` of them, newest first ([] when there are none)."""
    path = Path(output) / FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    entries = []
    for line in reversed(lines):
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a full disk
        if len(entries) == limit:
            break
    return entries
