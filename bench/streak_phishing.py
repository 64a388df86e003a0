"""Sparse logistic regression on the phishing data (the STREAK paper's second experiment).

Random train/test splits (2000/2000 rows by default), k features out of the 68 columns and (by default) all
their pairwise products, chosen by STREAK (eps 0.1 and 0.75), greedy forward selection ("local search") and at
random. For each: training log-likelihood gain over the intercept-only model (nats), test accuracy, oracle
calls (logistic fits) and seconds, averaged over seeds. Greedy runs once to the largest k per seed; its
figures at smaller k are read off its prefix (time and fits up to that round). The paper reports STREAK at
k = 80 taking about 70 % (eps 0.1) and 5 % (eps 0.75) of local search's time at k = 40, with comparable
likelihood: the ratios are printed at the end.

    .venv/bin/python bench/streak_phishing.py --seeds 10

A full seed with pairs up to k = 80 takes tens of minutes on one core; to use several cores, run disjoint seed
ranges in parallel with ``--first-seed`` and ``--save``, then print the merged table with ``--merge``:

    .venv/bin/python bench/streak_phishing.py --seeds 5 --save a.json &
    .venv/bin/python bench/streak_phishing.py --seeds 5 --first-seed 5 --save b.json &
    wait; .venv/bin/python bench/streak_phishing.py --merge a.json b.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from unveil.tabular import LogisticLikelihood, load_libsvm, select_features

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "streak" / "phishing.txt"


class Timed:
    """Wraps the oracle: remembers the cumulative seconds after each call (one call per greedy round)."""

    def __init__(self, oracle: LogisticLikelihood):
        self.oracle, self.t0, self.stamps = oracle, time.perf_counter(), []

    def __call__(self, sets):
        out = self.oracle(sets)
        self.stamps.append(time.perf_counter() - self.t0)
        return out

    def __getattr__(self, name):
        return getattr(self.oracle, name)


def accuracy(oracle: LogisticLikelihood, X_te, y_te, selected) -> float:
    if not selected:
        return float(np.mean(y_te == int(oracle.y.mean() >= 0.5)))
    coef, icpt, _ = oracle.fit(selected)
    return float(np.mean((oracle.predict_proba(X_te, selected, coef, icpt) >= 0.5) == y_te))


def run_seed(X, y, seed: int, ks: list[int], epss: list[float], n_train: int, n_test: int, pairs: bool) -> list:
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    tr, te = perm[:n_train], perm[n_train : n_train + n_test]
    Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
    rows = []
    # greedy once to max(k); prefixes give the smaller k
    oracle = Timed(LogisticLikelihood(Xtr, ytr, pairs=pairs))
    oracle.t0 = time.perf_counter()
    g = select_features(None, None, max(ks), method="greedy", oracle=oracle)
    for k in ks:
        sel = g.selected[:k]
        rounds = len(sel)
        rows.append(dict(method="greedy", eps=None, k=k, seed=seed, value=float(sum(g.gains[:k])),
                         acc=accuracy(oracle.oracle, Xte, yte, sel), calls=int(sum(g.calls_per_element[:rounds])),
                         seconds=oracle.stamps[rounds - 1] if rounds else 0.0, size=rounds))
    for k in ks:
        for eps in epss:
            oracle = LogisticLikelihood(Xtr, ytr, pairs=pairs)
            t0 = time.perf_counter()
            r = select_features(None, None, k, method="streak", eps=eps, seed=seed, oracle=oracle)
            dt = time.perf_counter() - t0
            rows.append(dict(method="streak", eps=eps, k=k, seed=seed, value=r.value,
                             acc=accuracy(oracle, Xte, yte, r.selected), calls=r.oracle_calls, seconds=dt,
                             size=len(r.selected)))
        oracle = LogisticLikelihood(Xtr, ytr, pairs=pairs)
        t0 = time.perf_counter()
        r = select_features(None, None, k, method="random", seed=seed, oracle=oracle)
        dt = time.perf_counter() - t0
        rows.append(dict(method="random", eps=None, k=k, seed=seed, value=r.value,
                         acc=accuracy(oracle, Xte, yte, r.selected), calls=r.oracle_calls, seconds=dt,
                         size=len(r.selected)))
    return rows


def mean_sd(values):
    m = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return m, sd


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, default=10, help="random splits (default 10)")
    ap.add_argument("--ks", type=int, nargs="+", default=[20, 40, 80])
    ap.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.75])
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--no-pairs", action="store_true", help="stream the 68 columns only, not their products")
    ap.add_argument("--running", action="store_true", help="print the table after every seed too")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds run: first-seed .. first-seed + seeds - 1")
    ap.add_argument("--save", type=Path, default=None, help="write the rows done so far to this JSON after each seed")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="print the table of rows saved by earlier runs (with the same --ks and --eps) and exit")
    args = ap.parse_args(argv)
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(f.read_text())]
        n = len({r["seed"] for r in rows})
        print(f"merged {len(args.merge)} file(s): {n} seeds ({sorted({r['seed'] for r in rows})})")
        report(rows, args, n)
        return
    X, y = load_libsvm(args.data)
    pairs = not args.no_pairs
    n_el = X.shape[1] + (X.shape[1] * (X.shape[1] - 1) // 2 if pairs else 0)
    print(f"phishing: {X.shape[0]} rows, {X.shape[1]} features, {n_el} streamed elements; "
          f"train {args.n_train} / test {args.n_test}; {args.seeds} seeds", flush=True)
    rows = []
    for i, seed in enumerate(range(args.first_seed, args.first_seed + args.seeds)):
        t0 = time.perf_counter()
        rows += run_seed(X, y, seed, args.ks, args.eps, args.n_train, args.n_test, pairs)
        print(f"  seed {seed} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        if args.save:
            args.save.write_text(json.dumps(rows))
        if args.running and i + 1 < args.seeds:
            report(rows, args, i + 1)
    report(rows, args, args.seeds)


def report(rows: list, args, n_seeds: int) -> None:
    """Print the table and the ratios over the seeds done so far."""
    print(f"\n=== {n_seeds} seed(s) ===")
    configs = [("greedy", None)] + [("streak", e) for e in args.eps] + [("random", None)]
    print(f"\n{'method':<14}{'k':>4}{'size':>6}{'train LL gain':>18}{'test acc':>14}{'fits':>10}{'seconds':>14}")
    summary = {}
    for k in args.ks:
        for method, eps in configs:
            sel = [r for r in rows if r["k"] == k and r["method"] == method and r["eps"] == eps]
            v, vs = mean_sd([r["value"] for r in sel])
            a, as_ = mean_sd([r["acc"] for r in sel])
            c, _ = mean_sd([r["calls"] for r in sel])
            s, ss = mean_sd([r["seconds"] for r in sel])
            z, _ = mean_sd([r["size"] for r in sel])
            summary[(method, eps, k)] = dict(value=v, acc=a, calls=c, seconds=s)
            name = method if eps is None else f"streak({eps})"
            print(f"{name:<14}{k:>4}{z:>6.1f}{v:>11.1f} ±{vs:>5.1f}{a:>9.3f} ±{as_:.3f}{c:>10.0f}"
                  f"{s:>8.2f} ±{ss:>5.2f}")
    print("\nSTREAK vs local search (greedy), means over seeds:")
    if 40 in args.ks and 80 in args.ks:
        base = summary[("greedy", None, 40)]
        for eps in args.eps:
            st = summary[("streak", eps, 80)]
            print(f"  STREAK(eps={eps}) at k=80 / greedy at k=40: time {st['seconds'] / base['seconds']:.1%}"
                  f" (paper: about {'70%' if eps == 0.1 else '5%' if eps == 0.75 else '?'}), fits "
                  f"{st['calls'] / base['calls']:.1%}, train LL {st['value'] / base['value']:.3f}x, "
                  f"test acc {st['acc'] - base['acc']:+.3f}")
    for k in args.ks:
        base = summary[("greedy", None, k)]
        parts = [f"STREAK({eps}) time {summary[('streak', eps, k)]['seconds'] / base['seconds']:.1%} "
                 f"LL {summary[('streak', eps, k)]['value'] / base['value']:.3f}x" for eps in args.eps]
        print(f"  k={k}: vs greedy at the same k: " + "; ".join(parts), flush=True)


if __name__ == "__main__":
    main()
