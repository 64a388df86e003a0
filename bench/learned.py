"""Learned perturbations (meaningful, learned) on the real photos with the default model.

Prints, per method: seconds per image one by one (batch 1) and all photos as one batch (``explain_batch``,
up to 8 per batch), the largest map difference between the two (float rounding of batched convolutions,
amplified by the optimization), the relative score drop, the optimizer steps
spent, and the deletion / insertion AUC (RISE definition, ``unveil.metrics``) next to occlusion and LIME on
the same photos. Everything compared is measured in this one run.

    python bench/learned.py [--iterations 100] [--threads N] [--lime-samples 500] [--stop-below 0.01]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import unveil
from unveil.methods import learned as learned_mod
from unveil.methods import meaningful as meaningful_mod

PHOTOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "photos"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100,
                    help="optimizer steps at most (methods' defaults: 300 / 500)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--lime-samples", type=int, default=500)
    ap.add_argument("--group", type=int, default=8, help="images per batch in the batched run")
    ap.add_argument("--stop-below", type=float, default=0.01, help="early stop: fraction of the start score")
    args = ap.parse_args()
    unveil.tune_cpu()
    if args.threads:
        torch.set_num_threads(args.threads)
    photos = sorted(PHOTOS.resolve().glob("*.jpg"))
    model = unveil.load_model(batch_size=16)
    print(f"{len(photos)} photos, {model.name}, {torch.get_num_threads()} threads, iterations <= {args.iterations}")

    results: dict[str, list] = {}
    rows = []
    for name, module in (("meaningful", meaningful_mod), ("learned", learned_mod)):
        opts = {"iterations": args.iterations, "stop_below": args.stop_below}
        t0 = time.perf_counter()
        single = [unveil.explain(model, p, method=name, seed=0, progress=False, **opts) for p in photos]
        t_single = (time.perf_counter() - t0) / len(photos)
        t0 = time.perf_counter()
        batch = module.explain_batch(model, photos, seed=0, progress=False, group_size=args.group, **opts)
        t_batch = (time.perf_counter() - t0) / len(photos)
        rel = max(
            float(np.abs(a.map - b.map).max() / max(np.abs(a.map).max(), 1e-12)) for a, b in zip(single, batch)
        )
        drop = np.mean([e.extras["score_drop"] for e in single])
        steps = np.mean([e.extras["iterations"] for e in single])
        early = np.mean([e.extras["stopped_early"] for e in single])
        rows.append((name, t_single, t_batch, rel, drop, steps, early))
        results[name] = single
        results[name + " (batch)"] = batch
    for name, opts in (("occlusion", {}), ("lime", {"n_samples": args.lime_samples})):
        t0 = time.perf_counter()
        results[name] = [unveil.explain(model, p, method=name, seed=0, progress=False, **opts) for p in photos]
        rows.append((name, (time.perf_counter() - t0) / len(photos), None, None, None, None, None))

    print()
    print(f"{'method':<11} {'s/img b=1':>10} {'s/img b=' + str(args.group):>10} {'speed-up':>9} {'max rel diff':>13}"
          f" {'score drop':>11} {'steps':>6} {'stopped':>8}")
    for name, t1, tb, rel, drop, steps, early in rows:
        if tb is None:
            print(f"{name:<11} {t1:>10.2f} {'':>10} {'':>9} {'':>13} {'':>11} {'':>6} {'':>8}")
        else:
            print(f"{name:<11} {t1:>10.2f} {tb:>10.2f} {t1 / tb:>8.2f}x {rel:>13.2e} {100 * drop:>10.1f}% "
                  f"{steps:>6.0f} {100 * early:>7.0f}%")

    try:
        from unveil import metrics
    except ImportError:
        print("\nunveil.metrics is not available: deletion / insertion AUC not measured")
        return
    print(f"\ndeletion AUC (lower is better) / insertion AUC (higher is better), mean over {len(photos)} photos")
    print(f"{'method':<18} {'deletion':>9} {'insertion':>10}   per photo deletion")
    for name, exps in results.items():
        dels = [metrics.deletion(model, p, e).score for p, e in zip(photos, exps)]
        ins = [metrics.insertion(model, p, e).score for p, e in zip(photos, exps)]
        per = " ".join(f"{d:.3f}" for d in dels)
        print(f"{name:<18} {np.mean(dels):>9.3f} {np.mean(ins):>10.3f}   {per}")
    print("photos:", " ".join(p.stem for p in photos))


if __name__ == "__main__":
    main()
