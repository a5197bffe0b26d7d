"""Wall time of `recsys lookup` as a user sees it: a fresh process per lookup, random customers.

    python benchmarks/lookup_latency.py --output output --n 50

Prints median, p90 and max in milliseconds (JSON with --json).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="output", help="store folder (holds recsys.db)")
    parser.add_argument("--n", type=int, default=50, help="number of lookups")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    db = Path(args.output) / "recsys.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        users = [row[0] for row in conn.execute("SELECT user_id FROM recommendations WHERE rank = 1")]
    random.Random(args.seed).shuffle(users)
    command = shutil.which("recsys") or str(Path(sys.executable).with_name("recsys"))
    # One warm-up so the first sample does not pay for cold file caches.
    subprocess.run([command, "lookup", users[0], "--output", args.output], check=True, capture_output=True)
    samples = []
    for user in users[: args.n]:
        started = time.perf_counter()
        subprocess.run([command, "lookup", user, "--output", args.output], check=True, capture_output=True)
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    result = {
        "lookups": len(samples),
        "median_ms": round(statistics.median(samples), 1),
        "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 1),
        "max_ms": round(samples[-1], 1),
    }
    print(json.dumps(result) if args.json else "  ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
