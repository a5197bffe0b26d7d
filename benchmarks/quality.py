"""Quality benchmark: the evaluation protocol on the sample, the real export, a 200k-customer
synthetic export and MovieLens 100k, the two-stage model over 3 seeds, every figure with its uncertainty.

    python benchmarks/quality.py [--real PATH] [--seeds 42 43 44] [--out benchmarks/results/quality.md]

For each dataset: the temporal holdout (test split) of `recsys/data/splits.py`; the baselines'
settings chosen on the holdout of its training rows (`recsys/evaluation/tuning.py`), never on the
test split; every baseline scored once (they are deterministic), the two-stage model once per
seed. Reported: NDCG@12 with its 95% bootstrap interval; the two-stage model's mean and spread
over seeds; the ratio two-stage / best baseline per seed with its paired bootstrap interval; and
on the real export the cold-start list against all-time popularity. The real export is skipped
when it is absent; the synthetic export is generated (seeded) when missing, MovieLens 100k
downloaded (`benchmarks/movielens.py`). MovieLens has no target of its own: it is data of another
shape (dense, 1,682 items), reported to show the model is not fitted to the company's export.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import movielens

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared/data/valoraciones_usuarios_2021_2022.csv"
SYNTHETIC = Path("/tmp/recsys-quality/export_200000.csv")
COLD_START_TARGET = 1.3


def synthetic_export(path: Path) -> Path:
    """The 200k export of `recsys generate --customers 200000 --items 20000 --per-customer 20`."""
    if not path.is_file():
        from recsys.synthetic.generate import generate_export, write_export

        path.parent.mkdir(parents=True, exist_ok=True)
        write_export(generate_export(200_000, 20_000, 20, seed=7), path)
    return path


def as_is(path: Path) -> Path:
    return path


# name: (path, target ratio of the two-stage model to the best baseline or None, what makes the file)
DATASETS = {
    "sample (data/interactions_sample.csv)": (ROOT / "data/interactions_sample.csv", 1.25, as_is),
    "real export (2021-2022)": (REAL, 1.05, as_is),
    "synthetic, 200,000 customers, 20,000 items": (SYNTHETIC, 1.10, synthetic_export),
    "MovieLens 100k (public ratings, benchmarks/movielens.py)": (movielens.EXPORT, None, movielens.movielens_export),
}


def dataset_section(title: str, path: Path, target: float | None, seeds: list[int], lines: list[str]) -> dict:
    """Evaluate one dataset; appends its markdown to ``lines``; returns the headline figures."""
    from recsys.data.export import load_interactions
    from recsys.data.splits import cold_start_split, sample_users, temporal_holdout
    from recsys.evaluation.metrics import paired_difference, ratio_interval
    from recsys.evaluation.protocol import (
        EVALUATION_USERS,
        MODEL_NAME,
        baseline_factories,
        cold_start_recommenders,
        evaluate_recommenders,
        markdown_table,
    )
    from recsys.evaluation.tuning import tune_baselines
    from recsys.models.two_stage import TwoStage
    from recsys.settings import RunOptions

    started = time.perf_counter()
    interactions, _ = load_interactions(path)
    options = RunOptions()
    test = sample_users(temporal_holdout(interactions), EVALUATION_USERS, options.seed)
    choices = tune_baselines(temporal_holdout(test.train), options.top_k, seed=options.seed)
    settings = {name: choice.settings for name, choice in choices.items()}
    baselines = evaluate_recommenders(baseline_factories(options, settings), test, options.top_k, settings=settings)
    scores = baselines.ndcg()
    best = max(scores, key=lambda name: (scores[name], name == "popularity"))
    runs = []
    for seed in seeds:
        seeded = options.with_(seed=seed)
        run = evaluate_recommenders({MODEL_NAME: lambda: TwoStage(seeded, tuned=settings)}, test, options.top_k)
        model = run.per_user[MODEL_NAME]
        runs.append((seed, run, ratio_interval(model, baselines.per_user[best]), paired_difference(model, baselines.per_user[best])))
    model_ndcg = np.array([run.ndcg()[MODEL_NAME] for _, run, _, _ in runs])
    ratios = np.array([ratio[0] for _, _, ratio, _ in runs])
    table = baselines.table.copy()
    first = runs[0][1].table.copy()
    import pandas as pd

    table = pd.concat([first, table], ignore_index=True)
    lines += [
        f"## {title}",
        "",
        f"Tuned on the holdout of the test split's training rows: {settings}.",
        "",
        markdown_table(table, f"Test holdout (two-stage: seed {seeds[0]}; {int(table['users'].iloc[0]):,} customers)"),
        "",
        f"Two-stage NDCG@12 over seeds {', '.join(map(str, seeds))}: mean {model_ndcg.mean():.4f}, "
        f"spread {model_ndcg.min():.4f} to {model_ndcg.max():.4f} (sd {model_ndcg.std(ddof=1) if len(seeds) > 1 else 0:.4f}).",
        "",
        f"| seed | two-stage | best baseline ({best}) | ratio | 95% interval of the ratio | difference | 95% interval |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed, run, (ratio, low, high), (diff, dlow, dhigh) in runs:
        lines.append(
            f"| {seed} | {run.ndcg()[MODEL_NAME]:.4f} | {scores[best]:.4f} | {ratio:.3f} | {low:.3f} to {high:.3f} | "
            f"{diff:+.4f} | {dlow:+.4f} to {dhigh:+.4f} |"
        )
    verdict = "no target" if target is None else f"target {target:.2f}: {'met' if ratios.mean() >= target else 'NOT met'}"
    lines += [
        "",
        f"**Two-stage / best baseline ({best}): mean ratio {ratios.mean():.3f} over {len(seeds)} seeds ({verdict}).**",
        "",
    ]
    headline = {"ratio": float(ratios.mean()), "best": best, "target": target}
    if path == REAL:
        cold = cold_start_split(interactions)
        cold_evaluation = evaluate_recommenders(cold_start_recommenders(options), cold, options.top_k)
        names = list(cold_evaluation.per_user)
        listed = next(name for name in names if name.startswith("cold_start_list"))
        ratio, low, high = ratio_interval(cold_evaluation.per_user[listed], cold_evaluation.per_user["popularity"])
        cut = datetime.fromtimestamp(cold.cut, timezone.utc)
        lines += [
            markdown_table(cold_evaluation.table, f"Cold start (customers first seen after {cut:%Y-%m-%d})"),
            "",
            f"**Cold-start list / all-time popularity = {ratio:.3f} (95% interval {low:.3f} to {high:.3f}; "
            f"target {COLD_START_TARGET}: {'met' if ratio >= COLD_START_TARGET else 'NOT met'}).**",
            "",
        ]
        headline["cold_ratio"] = ratio
    lines += [f"Whole protocol on this dataset: {time.perf_counter() - started:.0f} s.", ""]
    return headline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL)
    parser.add_argument("--synthetic", type=Path, default=SYNTHETIC)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--only", nargs="*", help="substrings of the dataset titles to run (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/quality.md")
    args = parser.parse_args()

    datasets = dict(DATASETS)
    for name, path in (("real export (2021-2022)", args.real), ("synthetic, 200,000 customers, 20,000 items", args.synthetic)):
        datasets[name] = (path, *datasets[name][1:])
    lines = [
        "# Quality benchmark",
        "",
        f"Generated by `python benchmarks/quality.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}. Protocol: `recsys/data/splits.py` "
        "(per-customer temporal holdout, the last 20% of each customer's distinct items held out, at most "
        "20,000 customers scored; cold start = customers first seen in the last 10% of the time span). "
        "Metrics @12, NDCG with its 95% bootstrap interval over customers; `seconds` = fit + recommend.",
        "",
    ]
    for name, (path, target, make) in datasets.items():
        if args.only and not any(part in name for part in args.only):
            continue
        path = make(path)
        if not path.is_file():
            lines += [f"## {name}", "", f"skipped: {path} not found", ""]
            continue
        headline = dataset_section(name, path, target, args.seeds, lines)
        print(f"{name}: {headline}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
