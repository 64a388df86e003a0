"""Faithfulness of each method at equal budgets: mean deletion and insertion AUC (RISE definition) over real photos.

Images: ../shared/data/photos/*.jpg and scikit-image's chelsea, coffee, astronaut, rocket. Model: the embedded
EfficientNet-Lite0. Each perturbation method runs at every budget (gradient/learned methods once, budget '-');
two random maps are the floors every method should beat (deletion: lower is better, insertion: higher): one value
per pixel ('random map') and one per cell of a 7 x 7 grid ('random cells': removes whole regions, as the methods do).
Methods listed in FILL_BUDGET get options that let the budget, not a default, set their cost (occlusion: stride 1,
grown by the budget). ``kill -TERM`` (or Ctrl-C) prints the table over the images finished so far.

    python bench/faithfulness.py                                  # lime, occlusion at budgets 250 and 1000
    python bench/faithfulness.py --methods lime,occlusion,rise --images 3 --budgets 250
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import photos, table  # noqa: E402

SKIMAGE = ("chelsea", "coffee", "astronaut", "rocket")


def load_images(spec: str | None) -> list[tuple[str, np.ndarray]]:
    """All photos + the scikit-image samples; ``spec``: a count (first N) or comma-separated names/paths."""
    import skimage.data

    from unveil import load_image

    every = [(p.stem, p) for p in photos()] + [(name, name) for name in SKIMAGE]
    if spec is None:
        chosen = every
    elif spec.isdigit():
        chosen = every[: int(spec)]
    else:
        known = dict(every)
        chosen = []
        for name in (s.strip() for s in spec.split(",") if s.strip()):
            if name in known:
                chosen.append((name, known[name]))
            elif Path(name).is_file():
                chosen.append((Path(name).stem, Path(name)))
            else:
                raise SystemExit(f"--images: unknown image {name!r}; known: {', '.join(known)}")
    out = []
    for name, src in chosen:
        img = getattr(skimage.data, src)() if src in SKIMAGE else src
        out.append((name, load_image(img)))
    return out


def _sem(values: np.ndarray) -> float:
    """Standard error of the mean (0 for a single value)."""
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="lime,occlusion", help="comma-separated registered methods")
    parser.add_argument("--images", default=None, help="a count (first N) or comma-separated names (default all)")
    parser.add_argument("--budgets", default="250,1000", help="comma-separated budgets (default 250,1000)")
    parser.add_argument("--step", type=float, default=1 / 50, help="deletion/insertion step (fraction)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-image", action="store_true", help="also print one row per image")
    args = parser.parse_args()

    import unveil
    from unveil import metrics
    from unveil.methods.registry import get_method

    unveil.tune_cpu()
    methods = [m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != "none"]  # none: floors only
    specs = [get_method(m) for m in methods]
    budgets = [int(b) for b in args.budgets.split(",")]
    images = load_images(args.images)
    model = unveil.load_model()
    deletion = metrics.Deletion(step=args.step, seed=args.seed)
    insertion = metrics.Insertion(step=args.step, seed=args.seed)
    print(f"{len(images)} images: {', '.join(n for n, _ in images)}; model {model.name}, "
          f"batch size {model.resolve_batch_size()}; step {args.step:.3f}", flush=True)

    records = []  # (method, budget, image, n_evals, seconds, deletion, insertion, deletion baseline)
    t_start = time.perf_counter()
    done: list[str] = []
    signal.signal(signal.SIGTERM, _stop)  # kill -TERM summarizes too (background jobs ignore SIGINT)
    try:
        run_all(images, specs, budgets, model, deletion, insertion, args.seed, records, done)
    except KeyboardInterrupt:  # summarize the images finished so far
        print(f"\ninterrupted: summarizing the {len(done)} finished images", flush=True)
    records = [r for r in records if r[2] in done]
    if not records:
        return
    summarize(records, args.per_image)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")


def _stop(signum, frame):
    raise KeyboardInterrupt


#: options that make a method spend its budget instead of stopping at its default cost (occlusion's default
#: 32-pixel window at stride 16 costs 170 evaluations; from stride 1 the budget sets the stride).
FILL_BUDGET = {"occlusion": {"stride": 1}}


def run_all(images, specs, budgets, model, deletion, insertion, seed, records, done) -> None:
    import unveil
    from unveil import metrics

    for name, img in images:
        target = None
        for spec in specs:
            for budget in (budgets if spec.uses_budget else [None]):
                fill = FILL_BUDGET.get(spec.name, {}) if budget is not None else {}
                exp = unveil.explain(model, img, method=spec.name, budget=budget, seed=seed, progress=False, **fill)
                target = exp.target
                d, i = deletion(model, img, exp), insertion(model, img, exp)
                records.append((spec.name, budget, name, exp.n_evals, exp.seconds, d.score, i.score,
                                d.details["baseline"]))
                print(f"  {name:<10s} {spec.name:<12s} budget {budget or '-':>5} -> {exp.n_evals:5d} evals "
                      f"{exp.seconds:6.1f} s  deletion {d.score:.3f}  insertion {i.score:.3f}", flush=True)
        # the floor: a random map of the same target, removed to the default baseline
        probs = model.probabilities(model.prepare(img)[1])[0].numpy()
        tgt = int(np.argmax(probs)) if target is None else target
        ref = unveil.Explanation(map=np.zeros(img.shape[:2], np.float32), target=tgt, label=model.label(tgt),
                                 score=float(probs[tgt]), method="random", image=img)
        for floor, cells in (("random map", None), ("random cells", 49)):
            rnd = metrics.random_explanation(ref, seed, cells=cells)
            d, i = deletion(model, img, rnd), insertion(model, img, rnd)
            records.append((floor, None, name, 0, 0.0, d.score, i.score, d.details["baseline"]))
            print(f"  {name:<10s} {floor:<12s} budget     -               deletion {d.score:.3f}  "
                  f"insertion {i.score:.3f}", flush=True)
        done.append(name)


def summarize(records, per_image: bool) -> None:
    def row(method, budget, rs):
        dels, ins = np.array([r[5] for r in rs]), np.array([r[6] for r in rs])
        return {
            "method": method, "budget": budget or "-", "images": len(rs),
            "n_evals": float(np.mean([r[3] for r in rs])), "seconds": float(np.mean([r[4] for r in rs])),
            "deletion": float(dels.mean()), "del_sem": _sem(dels),
            "insertion": float(ins.mean()), "ins_sem": _sem(ins),
            "baseline": rs[0][7],
        }

    keys = []
    for r in records:
        if (r[0], r[1]) not in keys:
            keys.append((r[0], r[1]))
    rows = [row(m, b, [r for r in records if (r[0], r[1]) == (m, b)]) for m, b in keys]
    floor = next(r for r in rows if r["method"] == "random map")
    for r in rows:
        r["del/random"] = r["deletion"] / floor["deletion"] if floor["deletion"] > 0 else float("nan")
        r["ins/random"] = r["insertion"] / floor["insertion"] if floor["insertion"] > 0 else float("nan")
    if per_image:
        print()
        print(table([{"method": r[0], "budget": r[1] or "-", "image": r[2], "n_evals": r[3], "seconds": r[4],
                      "deletion": r[5], "insertion": r[6]} for r in records],
                    ["method", "budget", "image", "n_evals", "seconds", "deletion", "insertion"]))
    print()
    print("mean AUC over images (deletion: lower is better; insertion: higher is better; ± = standard error)")
    print(table(rows, ["method", "budget", "images", "n_evals", "seconds", "deletion", "del_sem", "insertion",
                       "ins_sem", "del/random", "ins/random", "baseline"]))


if __name__ == "__main__":
    main()
