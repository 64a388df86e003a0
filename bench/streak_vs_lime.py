"""STREAK (k = 5) vs LIME (1000 samples) on the same segmentation, with the embedded EfficientNet-Lite0.

Images: ../shared/data/photos/*.jpg and ../shared/data/streak/images/*.jpg. For each image both methods run with
the same seed, segmentation and baseline (so the superpixels are identical); the table gives model evaluations,
seconds, and deletion (lower is better) / insertion (higher is better) AUC from :mod:`unveil.metrics`, then the
ratios LIME / STREAK. The two methods alternate per image so machine load hits both alike. Targets: >= 5x fewer
evaluations and >= 5x less time, with insertion AUC at least LIME's. (The paper: about 10x faster than LIME at
30 superpixels, k = 5.) ``lime-streak`` (LIME's samples, 5 segments chosen by STREAK over the ridge R²) can be
added with ``--with-lime-streak``. ``streak+fill`` is the same STREAK run with ``fill="singletons"`` (the other
segments ranked below the selected ones by the singleton gains STREAK evaluated anyway): same evaluations and
time, a full ranking for deletion/insertion; the ``streak`` row is that run's map with the fill removed (what
the default ``fill="none"`` returns). ``streak+ends`` is a separate run with ``fill="ends"``: the other segments
ranked by their singleton and leave-one-out gains together, one more evaluation per segment (in one batch);
its evaluation and time ratios are printed too. ``lime/streak-top`` is LIME's map with STREAK's selected set
moved to the top (no evaluation of its own): whether STREAK's set is where an insertion ranking should start.
``--small-lime N`` adds LIME with N samples (``lime-N``) on the same segmentation.

    .venv/bin/python bench/streak_vs_lime.py [--images 4] [--samples 1000] [--k 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PHOTOS, SHARED  # noqa: E402

STREAK_IMAGES = SHARED / "streak" / "images"


def images(n: int | None) -> list[Path]:
    """The two folders interleaved (a photo, a flower, ...), so the first N hold both kinds."""
    a, b = sorted(PHOTOS.glob("*.jpg")), sorted(STREAK_IMAGES.glob("*.jpg"))
    if not a and not b:
        raise SystemExit(f"no images under {PHOTOS} or {STREAK_IMAGES}")
    found = [p for pair in zip(a, b) for p in pair] + a[len(b):] + b[len(a):]
    return found[:n] if n else found


def _unfilled(exp):
    """The explanation with ``fill="none"``: weights outside the selected set back to 0 (map repainted)."""
    import dataclasses

    w = np.zeros_like(exp.weights)
    sel = exp.extras["selected"]
    w[sel] = exp.weights[sel]
    return dataclasses.replace(exp, weights=w, map=w[exp.segments].astype(np.float32),
                               params={**exp.params, "fill": "none"})


def _selected_first(exp, selected, gains):
    """``exp`` (a LIME explanation) with the segments in ``selected`` moved above all others, ordered by their
    ``gains`` (as STREAK's map orders them), the rest in LIME's order below them."""
    import dataclasses

    w = np.asarray(exp.weights, dtype=np.float64)
    rest = np.setdiff1d(np.arange(len(w)), selected)
    low = float(w[rest].min()) if len(rest) else 0.0
    out = w - low  # the rest >= 0, order kept
    top = float(out[rest].max()) if len(rest) else 0.0
    by_gain = [selected[j] for j in np.argsort(-np.asarray(gains, dtype=np.float64), kind="stable")]
    for j, u in enumerate(by_gain):  # the largest gain highest
        out[u] = top + len(selected) - j
    return dataclasses.replace(exp, weights=out, map=out[exp.segments].astype(np.float32),
                               params={**exp.params, "order": "streak-top"})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None, help="first N images (default all)")
    ap.add_argument("--samples", type=int, default=1000, help="LIME samples (default 1000)")
    ap.add_argument("--k", type=int, default=5, help="STREAK's k (default 5)")
    ap.add_argument("--eps", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", default="segment_mean",
                    help="what hidden segments become, for both methods (default segment_mean, lime's; 'blur' is "
                         "where the insertion curve starts)")
    ap.add_argument("--with-lime-streak", action="store_true")
    ap.add_argument("--small-lime", type=int, default=None, metavar="N",
                    help="also run LIME with N samples on the same segmentation")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default torch's); 1 is steadier on a busy machine, where small "
                         "batches pay the thread pool's waits on every layer")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    import unveil
    from unveil.methods.streak import N_FEATURES

    try:
        from unveil import metrics
    except ImportError:
        metrics = None
    unveil.tune_cpu()
    model = unveil.load_model()
    # one-off costs out of the first image's timing: the batch-size calibration and, when forward passes run on
    # ONNX Runtime, the export (both happen on the first call that passes more than one input)
    model.resolve_batch_size()
    model.probabilities(torch.rand(2, 3, *model.input_size), batch_size=2)
    seg = dict(segmentation="slic", n_features=N_FEATURES, baseline=args.baseline)
    runs = {
        "streak": dict(method="streak", k=args.k, eps=args.eps, fill="singletons", **seg),
        "lime": dict(method="lime", n_samples=args.samples, **seg),
        "streak+ends": dict(method="streak", k=args.k, eps=args.eps, fill="ends", **seg),
    }
    if args.with_lime_streak:
        runs["lime-streak"] = dict(method="lime", n_samples=args.samples, selection="streak", n_select=args.k, **seg)
    if args.small_lime:
        runs[f"lime-{args.small_lime}"] = dict(method="lime", n_samples=args.small_lime, **seg)
    rows = []
    print(f"{'image':<34}{'method':<13}{'segs':>5}{'n_evals':>9}{'seconds':>9}{'deletion':>10}{'insertion':>11}")
    for i, path in enumerate(images(args.images)):
        names = list(runs) if i % 2 == 0 else list(reversed(runs))  # alternate who runs first
        exps = {}
        for name in names:
            opts = runs[name]
            exp = unveil.explain(model, path, seed=args.seed, progress=False, **opts)
            exps[name] = exp
        filled = exps["streak"]
        exps["streak+fill"] = filled
        exps["streak"] = _unfilled(filled)
        exps["lime/streak-top"] = _selected_first(exps["lime"], filled.extras["selected"], filled.extras["gains"])
        segs = {name: e.segments for name, e in exps.items()}
        same = all(np.array_equal(segs["streak"], s) for s in segs.values())
        for name in exps:
            exp = exps[name]
            if metrics is not None:
                dele = metrics.deletion(model, path, exp).score
                ins = metrics.insertion(model, path, exp).score
            else:
                dele = ins = float("nan")
            rows.append(dict(image=path.stem, method=name, n_evals=exp.n_evals, seconds=exp.seconds,
                             deletion=dele, insertion=ins, segs=int(exp.segments.max()) + 1))
            print(f"{path.stem[:33]:<34}{name:<13}{rows[-1]['segs']:>5}{exp.n_evals:>9}{exp.seconds:>9.2f}"
                  f"{dele:>10.3f}{ins:>11.3f}" + ("" if same else "  (segmentations differ!)"), flush=True)
        done = [r for r in rows if r["method"] in ("streak", "lime")]
        tot = {m: (sum(r["n_evals"] for r in done if r["method"] == m), sum(r["seconds"] for r in done
                                                                            if r["method"] == m)) for m in runs}
        print(f"  so far ({i + 1} images): evaluations {tot['lime'][0] / tot['streak'][0]:.1f}x, "
              f"time {tot['lime'][1] / tot['streak'][1]:.1f}x fewer with STREAK", flush=True)

    print("\nmeans over images")
    means = {}
    for name in exps:
        sel = [r for r in rows if r["method"] == name]
        means[name] = {key: statistics.fmean(r[key] for r in sel) for key in ("n_evals", "seconds", "deletion",
                                                                               "insertion")}
        m = means[name]
        print(f"  {name:<13} n_evals {m['n_evals']:8.1f}  seconds {m['seconds']:7.2f}  deletion {m['deletion']:.3f}"
              f"  insertion {m['insertion']:.3f}")
    s, lm = means["streak"], means["lime"]
    ev = lm["n_evals"] / s["n_evals"]
    tm = lm["seconds"] / s["seconds"]
    print(f"\nLIME / STREAK: evaluations {ev:.1f}x (target >= 5x), time {tm:.1f}x (target >= 5x)")
    per = [r_l["seconds"] / r_s["seconds"] for r_s, r_l in zip(
        [r for r in rows if r["method"] == "streak"], [r for r in rows if r["method"] == "lime"])]
    print(f"  per-image time ratio: median {statistics.median(per):.1f}x, min {min(per):.1f}x")
    if metrics is None:
        print("insertion/deletion: not measured (unveil.metrics is missing)")
    else:
        wins = sum(r_s["insertion"] >= r_l["insertion"] for r_s, r_l in zip(
            [r for r in rows if r["method"] == "streak"], [r for r in rows if r["method"] == "lime"]))
        print(f"insertion AUC: STREAK {s['insertion']:.3f} vs LIME {lm['insertion']:.3f} "
              f"({'at least' if s['insertion'] >= lm['insertion'] else 'BELOW'} LIME's; STREAK >= LIME on "
              f"{wins}/{len(per)} images); deletion AUC: STREAK {s['deletion']:.3f} vs LIME {lm['deletion']:.3f} "
              "(lower is better)")
        f = means["streak+fill"]
        wins = sum(r_s["insertion"] >= r_l["insertion"] for r_s, r_l in zip(
            [r for r in rows if r["method"] == "streak+fill"], [r for r in rows if r["method"] == "lime"]))
        print(f"with fill='singletons' (no extra evaluation): insertion {f['insertion']:.3f} "
              f"({'at least' if f['insertion'] >= lm['insertion'] else 'BELOW'} LIME's; >= LIME on {wins}/{len(per)} "
              f"images), deletion {f['deletion']:.3f}")
        e = means["streak+ends"]
        wins = sum(r_s["insertion"] >= r_l["insertion"] for r_s, r_l in zip(
            [r for r in rows if r["method"] == "streak+ends"], [r for r in rows if r["method"] == "lime"]))
        print(f"with fill='ends' (one more evaluation per segment): evaluations {lm['n_evals'] / e['n_evals']:.1f}x, "
              f"time {lm['seconds'] / e['seconds']:.1f}x fewer than LIME; insertion {e['insertion']:.3f} "
              f"({'at least' if e['insertion'] >= lm['insertion'] else 'BELOW'} LIME's; >= LIME on {wins}/{len(per)} "
              f"images), deletion {e['deletion']:.3f}")
        t = means["lime/streak-top"]
        print(f"LIME's ranking with STREAK's selected set first: insertion {t['insertion']:.3f} (LIME's own order "
              f"{lm['insertion']:.3f}), deletion {t['deletion']:.3f}")
        if args.small_lime:
            m = means[f"lime-{args.small_lime}"]
            print(f"LIME with {args.small_lime} samples: insertion {m['insertion']:.3f}, deletion {m['deletion']:.3f},"
                  f" {m['seconds']:.2f} s per image (STREAK {s['seconds']:.2f} s, STREAK fill='ends' "
                  f"{e['seconds']:.2f} s)")


if __name__ == "__main__":
    main()
