"""Scale benchmark: the nightly flow end to end on generated exports of 100k and 1M customers.

    python benchmarks/scale.py [--customers 100000 1000000] [--items 20000] [--per-customer 20]

For each size: generate the export (same schema as the real one; Zipf-like popularity, planted
taste groups), run `recsys run` on it in a child process, **the default path** (the nightly
evaluation and the quality gate on), and report seconds per stage (from the run's
`runs.metrics`), peak resident memory of the run, the machine's load while it ran, and the
median wall time of 50 `recsys lookup` processes against the published store. `--no-evaluate`
measures the path without the evaluation instead. Each path writes its own section of
benchmarks/results/scale.md; the rest of the file is left as it is.

    python benchmarks/scale.py --degraded item_knn ease popularity [--customers 1000000] [--workdir /tmp/scale]

The degraded path instead: each run publishes the named baseline's lists for every customer, as
when the model fails the quality gate (the flow's decision is forced in the child process; no
evaluation, no training). Reports wall time, peak RSS, seconds per stage and the machine's load
while it ran, in the "Degraded path" section of benchmarks/results/scale.md (the rest of the
file is left as it is).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The flow's stages in the order they run (runs.metrics["seconds"]); a stage a run skips shows 0.
STAGES = (
    "load", "evaluate", "train_retrieval", "choose_ranker", "refresh_retrieval", "train_ranking", "score",
    "baseline_lists", "publish",
)


def machine() -> str:
    """Cores, memory and CPU model of this machine."""
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as handle:
        memory_kb = int(handle.readline().split()[1])
    return f"{os.cpu_count()} cores ({cpu}), {memory_kb / 1024**2:.0f} GiB RAM, Python {platform.python_version()}"


# The child of a degraded-path run: the flow's decision forced to publish the named baseline.
FORCED_DEGRADED = """
import sys
import flows.nightly

name = sys.argv[1]


def decide(*_args, **_kwargs):  # whatever the flow passes: the decision is forced
    return "degraded", f"forced by benchmarks/scale.py --degraded {name}", name, None


flows.nightly.decide = decide
from recsys.cli.launcher import main

main(sys.argv[2:])
"""


def run_flow(data: Path, output: Path, degraded: str | None = None, evaluate: bool = False) -> tuple[float, float, dict]:
    """Run `recsys run` once; returns (wall seconds, peak RSS GiB of that child, load averages).

    ``degraded``: publish this baseline instead of training (see ``FORCED_DEGRADED``);
    ``evaluate``: the default path, evaluation and quality gate on. The peak
    is the child's own (``wait4``), not the largest of every child so far; the load is the
    machine's 1-minute load average sampled every 5 s while the child ran (mean and max).
    """
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    arguments = ["run", "--data", str(data), "--output", str(output)] + ([] if evaluate else ["--no-evaluate"])
    if degraded:
        command = [sys.executable, "-c", FORCED_DEGRADED, degraded, *arguments]
    else:
        command = [sys.executable, "-m", "recsys.cli", *arguments]
    samples: list[float] = []
    done = threading.Event()

    def sample_load() -> None:
        while not done.wait(5.0):
            samples.append(os.getloadavg()[0])

    sampler = threading.Thread(target=sample_load, daemon=True)
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    done.set()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])}... exited with {child.returncode}")
    load = {"mean": float(np.mean(samples)) if samples else os.getloadavg()[0], "max": max(samples, default=0.0)}
    return seconds, usage.ru_maxrss / 1024**2, load


def lookup_median(output: Path, n: int = 50) -> float:
    """Median wall milliseconds of `n` `recsys lookup` processes for random customers."""
    with sqlite3.connect(f"file:{output / 'recsys.db'}?mode=ro", uri=True) as conn:
        count = conn.execute("SELECT count(*) FROM recommendations WHERE rank = 1").fetchone()[0]
        rng = np.random.default_rng(1)
        users = [
            conn.execute("SELECT user_id FROM recommendations WHERE rank = 1 LIMIT 1 OFFSET ?", (int(i),)).fetchone()[0]
            for i in rng.integers(0, count, n)
        ]
    command = shutil.which("recsys") or str(Path(sys.executable).with_name("recsys"))
    subprocess.run([command, "lookup", users[0], "--output", str(output)], check=True, capture_output=True)
    samples = []
    for user in users:
        started = time.perf_counter()
        subprocess.run([command, "lookup", user, "--output", str(output)], check=True, capture_output=True)
        samples.append((time.perf_counter() - started) * 1000)
    return float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--per-customer", type=float, default=20.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/recsys-scale"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scale.md")
    parser.add_argument("--no-evaluate", action="store_true", help="measure the path without the nightly evaluation")
    parser.add_argument(
        "--degraded", nargs="+", metavar="BASELINE",
        help="measure the degraded path instead: publish each named baseline (e.g. item_knn ease rp3beta popularity)",
    )
    args = parser.parse_args()
    if args.degraded:
        degraded_path(args)
        return

    evaluate = not args.no_evaluate
    rows = []
    for customers in args.customers:
        data = export_for(args, customers)
        output = args.workdir / f"out_{customers}"
        shutil.rmtree(output, ignore_errors=True)
        wall, peak, load = run_flow(data, output, evaluate=evaluate)
        run_rows, users, status, metrics = current_run(output)
        gate = metrics.get("gate") or {}
        rows.append(
            {
                "customers": users, "interactions": run_rows, "wall": wall, "peak": peak, "load": load,
                "status": status, "seconds": metrics["seconds"], "gate": gate.get("reason", "not run"),
                "lookup": lookup_median(output),
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    path = "default path (evaluation and quality gate on)" if evaluate else "`--no-evaluate`"
    begin, end = section_markers(evaluate)
    lines = [
        begin,
        f"## {'Default path' if evaluate else 'Without the evaluation (--no-evaluate)'}",
        "",
        f"`python benchmarks/scale.py --customers {' '.join(map(str, args.customers))}"
        f"{'' if evaluate else ' --no-evaluate'}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
        f"Machine: {machine()}. Exports generated with `recsys.synthetic` ({args.items:,} items, "
        f"{args.per_customer:g} redemptions per customer on average, repeats of an item included (about 16 distinct "
        "items at 20), plus as many rows again of exact duplicates, as in the real export); "
        f"`recsys run`, {path}, end to end (a temporary Prefect server included). Peak RSS is the run's own "
        "(`wait4`); load is the machine's 1-minute load average while it ran (2 cores: 2.0 means both busy).",
        "",
        "| customers | interactions (rows) | end to end (s) | peak RSS (GiB) | status | "
        + " | ".join(STAGES) + " | machine load, mean / max | `recsys lookup` median (ms) |",
        "|" + "---|" * (7 + len(STAGES)),
    ]
    for row in rows:
        stage_cells = " | ".join(f"{row['seconds'].get(stage, 0.0):.1f}" for stage in STAGES)
        lines.append(
            f"| {row['customers']:,} | {row['interactions']:,} | {row['wall']:.0f} | {row['peak']:.2f} | "
            f"{row['status']} | {stage_cells} | {row['load']['mean']:.1f} / {row['load']['max']:.1f} | {row['lookup']:.0f} |"
        )
    lines += [
        "",
        "Stages in seconds (`runs.metrics.seconds`). `evaluate` = tuning EASE and RP3beta and scoring every "
        "baseline on the held-out items; `train_retrieval`, `choose_ranker`, `refresh_retrieval`, `train_ranking` = "
        "the training sequence (its own held-out evaluation inside `train_ranking`); `score` = every customer's "
        "candidates from the four sources, features, ranking and the final top 12.",
        "",
        "Quality gate: " + "; ".join(f"{row['customers']:,}: {row['gate']}" for row in rows),
        end,
    ]
    write_section(args.out, begin, end, lines)


def export_for(args, customers: int) -> Path:
    """The generated export of ``customers`` in the work folder (generated, seeded, when missing)."""
    from recsys.synthetic.generate import generate_export, write_export

    args.workdir.mkdir(parents=True, exist_ok=True)
    data = args.workdir / f"export_{customers}.csv"
    if not data.exists():
        started = time.perf_counter()
        write_export(generate_export(customers, args.items, args.per_customer, seed=11), data)
        print(f"generated {data} in {time.perf_counter() - started:.0f}s", flush=True)
    return data


def current_run(output: Path) -> tuple[int, int, str, dict]:
    """(rows, customers, status, metrics) of the published run of the store in ``output``."""
    with sqlite3.connect(output / "recsys.db") as conn:
        rows, users, status, metrics = conn.execute("SELECT rows, users, status, metrics FROM runs WHERE is_current").fetchone()
    return rows, users, status, json.loads(metrics)


def section_markers(evaluate: bool) -> tuple[str, str]:
    """The comments around the section of benchmarks/results/scale.md one path writes."""
    name = "default path" if evaluate else "no-evaluate path"
    return f"<!-- {name}: written by `python benchmarks/scale.py` -->", f"<!-- end of {name} -->"


def write_section(out: Path, begin: str, end: str, lines: list[str]) -> None:
    """Replace the section between ``begin`` and ``end`` in ``out`` (append it when absent)."""
    text = out.read_text() if out.exists() else "# Scale benchmark\n"
    if begin in text:
        before, rest = text.split(begin, 1)
        after = rest.split(end, 1)[1] if end in rest else ""
        text = before + "\n".join(lines) + after
    else:
        text = text.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


DEGRADED_BEGIN = "<!-- degraded path: written by `python benchmarks/scale.py --degraded` -->"
DEGRADED_END = "<!-- end of degraded path -->"
DEGRADED_STAGES = ("load", "baseline_lists", "publish")


def degraded_path(args) -> None:
    """Run the degraded path for every size and baseline; write the "Degraded path" section."""
    rows = []
    for customers in args.customers:
        data = export_for(args, customers)
        for name in args.degraded:
            output = args.workdir / f"out_{customers}_degraded_{name}"
            shutil.rmtree(output, ignore_errors=True)
            wall, peak, load = run_flow(data, output, degraded=name)
            run_rows, users, status, metrics = current_run(output)
            assert status == "degraded", status
            rows.append({
                "customers": users, "interactions": run_rows, "baseline": name, "wall": wall, "peak": peak,
                "load": load, "seconds": metrics["seconds"], "full": metrics["lists"]["full"],
            })
            print(json.dumps(rows[-1]), flush=True)
            shutil.rmtree(output, ignore_errors=True)
    lines = [
        DEGRADED_BEGIN,
        "## Degraded path",
        "",
        f"`python benchmarks/scale.py --degraded {' '.join(args.degraded)} --customers "
        f"{' '.join(map(str, args.customers))}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine()}. "
        "Each run publishes the named baseline's lists for every customer, as a run whose model fails the quality "
        "gate does (the decision forced in the child; no evaluation, no training); `recsys run` end to end, a "
        "temporary Prefect server included. Peak RSS is the run's own (`wait4`); load is the machine's 1-minute "
        "load average while it ran (2 cores: 2.0 means both busy).",
        "",
        "| customers | interactions (rows) | baseline | end to end (s) | peak RSS (GiB) | "
        + " | ".join(f"{stage} (s)" for stage in DEGRADED_STAGES) + " | full lists | machine load, mean / max |",
        "|" + "---|" * (7 + len(DEGRADED_STAGES)),
    ]
    for row in rows:
        stage_cells = " | ".join(f"{row['seconds'].get(stage, 0.0):.1f}" for stage in DEGRADED_STAGES)
        lines.append(
            f"| {row['customers']:,} | {row['interactions']:,} | {row['baseline']} | {row['wall']:.0f} | "
            f"{row['peak']:.2f} | {stage_cells} | {row['full']:,} | {row['load']['mean']:.1f} / {row['load']['max']:.1f} |"
        )
    lines.append(DEGRADED_END)
    write_section(args.out, DEGRADED_BEGIN, DEGRADED_END, lines)


if __name__ == "__main__":
    main()
