"""Ceiling study: how far above the best baseline can any recommender get on a synthetic export?

    python benchmarks/ceiling.py [--customers 2500 --items 250 --per-customer 2.5 --groups 8 --seed 7]
                                 [--out benchmarks/results/ceiling.md]

The defaults regenerate the sample in `data/` (byte for byte). The generator plants the taste
structure (`recsys/synthetic/generate.py`), so its hidden truth gives scorers no recommender can
beat: a customer's next pick is a companion of their previous pick, a fresh pick of their taste
group's items, or a fresh pick by global popularity, with the planted probabilities at the time of
the held-out pick. This script scores such scorers on the test split of the evaluation protocol
(`recsys/data/splits.py`, the split `benchmarks/quality.py` uses), beside the baselines tuned as
there, and reports each one's ratio to the best baseline with its paired bootstrap interval:

* **planted truth**: the customer's true group, the true companions of their latest item;
* **planted truth, no companions**;
* **group inferred**: the group's posterior from the customer's training items under the true
  probabilities (the most a latent-class model could identify from the history), with the true
  companions, with companions *learnt* (directed counts of consecutive items in the training rows,
  their weight chosen on the validation split, never on test), and without companions.

Everything scored knows the time of the held-out pick (an oracle's advantage, small: see the
table). Choices: the learnt companions' weight and smoothing on the validation split only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (0.05, 0.1, 0.25, 0.5, 1.0)  # learnt companions' weight, chosen on validation
SMOOTHING = (1.0, 3.0)


class Truth:
    """The planted probabilities, mapped onto one loaded export's item codes."""

    def __init__(self, model, data, customer_group):
        from recsys.synthetic.generate import COMPANION_SHARE, IN_GROUP_SHARE

        self.model = model
        position = {name: k for k, name in enumerate(model.names)}
        self.generator_item = np.array([position[name] for name in data.items])  # code -> generator index
        self.group = customer_group.reindex(data.users).to_numpy()
        self.companion_share = COMPANION_SHARE
        self.in_group_of_fresh = IN_GROUP_SHARE
        self.in_group, self.global_share = (1 - COMPANION_SHARE) * IN_GROUP_SHARE, (1 - COMPANION_SHARE) * (1 - IN_GROUP_SHARE)
        groups = model.group_p.shape[0]
        self.prior = np.bincount(self.group, minlength=groups) / len(self.group)

    def fresh(self, groups_weight: np.ndarray, bins: np.ndarray) -> np.ndarray:
        """(users, codes) probability of a fresh pick, given each user's group weights and time bin."""
        group_part = np.einsum("ug,ugi->ui", groups_weight, self.model.group_p[:, bins].transpose(1, 0, 2))
        mixed = self.in_group * group_part + self.global_share * self.model.global_p[bins]
        return mixed[:, self.generator_item]

    def companions(self, last: np.ndarray) -> np.ndarray:
        """(users, codes) probability mass on the true companions of each user's latest item."""
        out = np.zeros((len(last), self.model.global_p.shape[1]))
        comp = self.model.companions[self.generator_item[last]]
        np.add.at(out, (np.repeat(np.arange(len(last)), comp.shape[1]), comp.ravel()), self.companion_share / comp.shape[1])
        return out[:, self.generator_item]

    def posterior(self, train, users: np.ndarray) -> np.ndarray:
        """(users, groups) posterior of each user's group given their training items and times."""
        from recsys.data.interactions import pair_times

        pu, pi, pt, _ = pair_times(train)
        bins = self.model.time_bin(pt)
        item = self.generator_item[pi]
        # Every training item as a fresh pick (companions are in-group items too).
        like = self.in_group_of_fresh * self.model.group_p[:, bins, item] + (1 - self.in_group_of_fresh) * self.model.global_p[bins, item]
        log = np.zeros((train.n_users, len(self.prior)))
        # A companion can be picked while it has no fresh-pick probability (launched later), so
        # floor the likelihood rather than rule every group out.
        np.add.at(log, pu, np.log(np.maximum(like.T, 1e-12)))
        log = log[users] + np.log(np.maximum(self.prior, 1e-12))
        post = np.exp(log - log.max(axis=1, keepdims=True))
        return post / post.sum(axis=1, keepdims=True)


def split_facts(split):
    """Each scored user's latest training item, and the scored users' training items (excluded
    from every list, as the protocol does)."""
    from recsys.data.interactions import pair_times

    train = split.train
    pu, pi, pt, _ = pair_times(train)
    order = np.lexsort((pi, pt, pu))
    last = np.full(train.n_users, -1)
    last[pu[order]] = pi[order]  # the latest assignment per user wins
    seen = sp.csr_matrix((np.ones(len(pu)), (pu, pi)), shape=(train.n_users, train.n_items))[split.users]
    return last[split.users], seen


def held_out_times(data, split) -> np.ndarray:
    """Each scored user's time of their first held-out pick."""
    relevant = split.relevant
    hit = np.asarray(relevant[data.user, data.item]).ravel() > 0
    first = np.full(data.n_users, np.iinfo(np.int64).max)
    np.minimum.at(first, data.user[hit], data.time[hit])
    return first[split.users]


def transitions(train) -> sp.csr_matrix:
    """Directed counts of consecutive distinct items (by first time) in ``train``."""
    from recsys.data.interactions import pair_times

    pu, pi, pt, _ = pair_times(train)
    order = np.lexsort((pi, pt, pu))
    pu, pi = pu[order], pi[order]
    same = pu[1:] == pu[:-1]
    n = train.n_items
    return sp.csr_matrix((np.ones(int(same.sum())), (pi[:-1][same], pi[1:][same])), shape=(n, n))


def learnt(counts: sp.csr_matrix, last: np.ndarray, weight: float, smoothing: float) -> np.ndarray:
    """``weight`` x the smoothed share of each item among the successors of each user's latest item."""
    rows = np.asarray(counts.sum(axis=1)).ravel()
    scaled = sp.diags(1.0 / (rows + smoothing)) @ counts
    return weight * scaled[last].toarray()


def top(scores: np.ndarray, seen: sp.csr_matrix, k: int) -> np.ndarray:
    """The ``k`` best codes per row, the user's training items left out."""
    scores = scores.copy()
    scores[seen.nonzero()] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def scorers(truth: Truth, data, split, with_learnt: tuple[float, float] | None):
    """Name -> (users, codes) scores on ``split`` (same order as ``split.users``)."""
    users = split.users
    last, seen = split_facts(split)
    bins = truth.model.time_bin(held_out_times(data, split))
    groups = truth.model.group_p.shape[0]
    known = np.eye(groups)[truth.group[users]]
    inferred = truth.posterior(split.train, users)
    comp = truth.companions(last)
    out = {
        "planted truth": truth.fresh(known, bins) + comp,
        "planted truth, no companions": truth.fresh(known, bins),
        "group inferred, true companions": truth.fresh(inferred, bins) + comp,
        "group inferred, no companions": truth.fresh(inferred, bins),
    }
    counts = transitions(split.train)
    if with_learnt is None:
        return out, seen, (inferred, bins, last, counts)
    out["group inferred, companions learnt"] = truth.fresh(inferred, bins) + learnt(counts, last, *with_learnt)
    return out, seen, None


def choose_learnt(truth: Truth, data, validation, k: int) -> tuple[tuple[float, float], float]:
    """The learnt companions' (weight, smoothing) with the best validation NDCG."""
    from recsys.evaluation.metrics import user_metrics

    _, seen, (inferred, bins, last, counts) = scorers(truth, data, validation, None)
    base = truth.fresh(inferred, bins)
    relevant = validation.relevant_rows()
    results = {
        (w, s): user_metrics(top(base + learnt(counts, last, w, s), seen, k), relevant, k)["ndcg"].mean()
        for w in WEIGHTS
        for s in SMOOTHING
    }
    best = max(results, key=results.get)
    return best, float(results[best])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2500)
    parser.add_argument("--items", type=int, default=250)
    parser.add_argument("--per-customer", type=float, default=2.5)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ceiling.md")
    args = parser.parse_args()

    from recsys.data.export import load_interactions
    from recsys.data.splits import sample_users, temporal_holdout
    from recsys.evaluation.metrics import mean_interval, ratio_interval, user_metrics
    from recsys.evaluation.protocol import (
        EVALUATION_USERS,
        baseline_factories,
        evaluate_recommenders,
    )
    from recsys.evaluation.tuning import tune_baselines
    from recsys.settings import RunOptions
    from recsys.synthetic.generate import generate_export, pick_model, write_export

    started = time.perf_counter()
    frame, planted = generate_export(args.customers, args.items, args.per_customer, args.groups, args.seed, return_groups=True)
    with tempfile.TemporaryDirectory() as folder:
        data, _ = load_interactions(write_export(frame, Path(folder) / "export.csv"))
    truth = Truth(pick_model(args.items, args.groups, args.seed), data, planted.customer_group)
    options = RunOptions()
    k = options.top_k
    test = sample_users(temporal_holdout(data), EVALUATION_USERS, options.seed)
    validation = temporal_holdout(test.train)
    choices = tune_baselines(validation, k, seed=options.seed)
    settings = {name: choice.settings for name, choice in choices.items()}
    baselines = evaluate_recommenders(baseline_factories(options, settings), test, k, settings=settings)
    assert np.array_equal(baselines.users, test.users)
    scores = baselines.ndcg()
    best = max(scores, key=scores.get)
    (weight, smoothing), validation_ndcg = choose_learnt(truth, data, validation, k)
    ceilings, seen, _ = scorers(truth, data, test, (weight, smoothing))
    relevant = test.relevant_rows()

    lines = [
        "# Ceiling study: what the planted structure of a synthetic export allows",
        "",
        (
            f"Generated by `python benchmarks/ceiling.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
            f"(export: {args.customers:,} customers, {args.items:,} items, {args.per_customer} per customer, "
            f"{args.groups} groups, seed {args.seed}; the defaults are the sample in `data/`). Test split of the "
            f"evaluation protocol, {len(test.users):,} customers, NDCG@{k} with its 95% bootstrap interval; "
            f"ratio to the best baseline ({best}, tuned as in `benchmarks/quality.py`: {settings}) with its paired "
            f"bootstrap interval. Learnt companions: weight {weight}, smoothing {smoothing}, chosen on the "
            f"validation split (NDCG {validation_ndcg:.4f} there)."
        ),
        "",
        "| scorer | NDCG@12 | 95% interval | ratio to best baseline | 95% interval of the ratio |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(scores, key=scores.get, reverse=True):
        low, high = mean_interval(baselines.per_user[name])
        lines.append(f"| {name} (baseline) | {scores[name]:.4f} | {low:.4f} to {high:.4f} | {scores[name] / scores[best]:.3f} | |")
    for name, score in ceilings.items():
        ndcg = user_metrics(top(score, seen, k), relevant, k)["ndcg"]
        low, high = mean_interval(ndcg)
        ratio, rlow, rhigh = ratio_interval(ndcg, baselines.per_user[best])
        lines.append(f"| {name} | {ndcg.mean():.4f} | {low:.4f} to {high:.4f} | {ratio:.3f} | {rlow:.3f} to {rhigh:.3f} |")
    lines += ["", f"Whole study: {time.perf_counter() - started:.0f} s."]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
