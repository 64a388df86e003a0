"""Gradient methods: our integrated gradients against captum's, and every gradient method's overhead over its floor.

    .venv/bin/python bench/vs_captum_gradients.py [--images 4] [--steps 50] [--reps 2]

1. Integrated gradients on the same photos, default model, same settings (``n_steps``, Gauss-Legendre, black
   baseline, target = top class): captum's ``IntegratedGradients`` on the same prepared input tensor, through the
   same differentiable forward (normalization included), once with captum's default batching (all steps in one
   pass) and once with ``internal_batch_size`` = our batch size. Ours is timed as a whole ``explain()`` call
   (image preparation, the first forward and the completeness check included); captum's as ``attribute()`` only.
   Ours is also timed on that same input given as a 224 x 224 image (``ours_224``: no resizing in or out).
   Captum runs twice more on the module as its users have it (``captum_stock``, ``captum_stock_bs``): the
   network as the packages give it, without the channels-last layout, folded batch norms and folded paddings
   that ``load_model()`` gives ours (the same function; a captum user starts from the plain module).
   Printed: times, ratios captum / ours (target >= 1.5) against captum on our own tuned module (the same
   compute: what the IG loop itself costs) and on the stock module (as captum users run it), max |difference|
   of the per-channel attributions and of the channel-summed maps, and our completeness error.
2. Overhead of each gradient method over its floor: the sum, over the passes the call made, of the best time of
   a pass of that batch size (forward only, or forward+backward when it ran with gradients), measured in the
   same run, on images already at the model's input size (target <= 5 %).
Timings alternate between the contenders and keep the best of ``--reps`` repetitions.
"""

from __future__ import annotations

import argparse
import sys
import time

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import best_forward_seconds, gmean, photos, stock_model, table, timed  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import unveil  # noqa: E402

GRADIENT_OPTIONS = {
    "saliency": {},
    "grad_input": {},
    "integrated_gradients": {"n_steps": 50},
    "smoothgrad": {"n_samples": 25},
    "elrp": {},
    "deeplift": {},
    "gradcam": {},
}


def captum_ig(model, x, target, n_steps, internal_batch_size):
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(lambda z: model.forward(z))
    return ig.attribute(x.unsqueeze(0), baselines=torch.zeros_like(x).unsqueeze(0), target=target,
                        n_steps=n_steps, method="gausslegendre", internal_batch_size=internal_batch_size)[0].detach()


def compare_ig(model, stock, paths, n_steps, reps, bs):
    rows = []
    for path in paths:
        img = unveil.load_image(path)
        _, x = model.prepare(img)
        target = int(torch.argmax(model.probabilities(x, batch_size=1)[0]))
        small = x.cpu().numpy().transpose(1, 2, 0)  # the input captum gets, as an image: no resizing either way
        opts = dict(method="integrated_gradients", target=target, n_steps=n_steps, integration="gausslegendre",
                    baseline="zero", progress=False)
        contenders = {  # name -> call; timed in this order, interleaved, the best of the repetitions kept
            "ours": lambda: unveil.explain(model, img, **opts),
            "ours_224": lambda: unveil.explain(model, small, **opts),
            "captum": lambda: captum_ig(model, x, target, n_steps, None),
            "captum_bs": lambda: captum_ig(model, x, target, n_steps, bs),
            "captum_stock": lambda: captum_ig(stock, x, target, n_steps, None),
            "captum_stock_bs": lambda: captum_ig(stock, x, target, n_steps, bs),
        }
        best = dict.fromkeys(contenders, np.inf)
        out = {}
        for _ in range(reps):
            for name, call in contenders.items():
                out[name], t = timed(call)
                best[name] = min(best[name], t)
        ours, ref, ref_bs, ref_stock = out["ours"], out["captum"], out["captum_bs"], out["captum_stock"]
        a = ours.extras["attribution"]
        r = ref.cpu().numpy()
        rows.append({
            "image": path.stem, "label": ours.label, "ours_s": best["ours"], "ours_224_s": best["ours_224"],
            "captum_s": best["captum"], "captum_bs_s": best["captum_bs"], "ratio": best["captum"] / best["ours"],
            "ratio_224": best["captum"] / best["ours_224"], "ratio_bs_224": best["captum_bs"] / best["ours_224"],
            "captum_stock_s": best["captum_stock"], "captum_stock_bs_s": best["captum_stock_bs"],
            "stock_ratio": best["captum_stock"] / best["ours"],
            "stock_ratio_bs": best["captum_stock_bs"] / best["ours"],
            "maxdiff_stock": f"{np.abs(a - ref_stock.cpu().numpy()).max():.1e}",
            "maxdiff_attr": f"{np.abs(a - r).max():.1e}", "maxdiff_map": f"{np.abs(a.sum(0) - r.sum(0)).max():.1e}",
            "max|attr|": float(np.abs(r).max()),
            "maxdiff_bs": f"{np.abs(r - ref_bs.cpu().numpy()).max():.1e}",
            "completeness_%": 100 * ours.extras["completeness_error"],
        })
    return rows


def _passes(model, name, img, opts):
    """Run one explain() while recording each pass (batch size, with gradients?); return (Explanation, passes, s)."""
    passes = []
    handle = model.fn.register_forward_pre_hook(lambda m, a: passes.append((a[0].shape[0], torch.is_grad_enabled())))
    try:
        t0 = time.perf_counter()
        exp = unveil.explain(model, img, method=name, progress=False, **opts)
        wall = time.perf_counter() - t0
    finally:
        handle.remove()
    return exp, passes, wall


def overheads(model, paths, reps):
    """Floor = sum over the passes the call made of the best time of a pass of that size (forward, or
    forward+backward when it ran with gradients), measured in the same run. Images are given at the model's
    input size, so resizing (the same for every method) is not counted."""
    rows = []
    cache: dict = {}

    def pass_time(n, grad):
        if (n, grad) not in cache:
            cache[(n, grad)] = n * best_forward_seconds(model, n, reps=3, backward=grad)
        return cache[(n, grad)]

    images = [unveil.images.resize(unveil.load_image(p), model.input_size) for p in paths]
    for name, opts in GRADIENT_OPTIONS.items():
        wall = floor = 0.0
        for img in images:
            best = np.inf
            for _ in range(reps):
                exp, passes, w = _passes(model, name, img, opts)
                best = min(best, w)
            wall += best
            floor += sum(pass_time(n, g) for n, g in passes)
        rows.append({"method": name, "n_evals": exp.n_evals, "passes": len(passes), "wall_s": wall,
                     "floor_s": floor, "overhead_%": 100 * (wall - floor) / floor, "target": "<= 5 %",
                     "met": "yes" if wall <= 1.05 * floor else "no"})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: steadier timings on a shared machine; 0 keeps torch's)")
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    unveil.tune_cpu()
    model = unveil.load_model()
    stock = stock_model(batch_size=1)
    bs = model.resolve_batch_size()
    paths = photos(args.images)
    unveil.explain(model, paths[0], method="saliency", progress=False)  # warm-up
    print(f"model {model.name}, batch size {bs}, torch threads {torch.get_num_threads()}, "
          f"fwd+bwd {1000 * best_forward_seconds(model, bs, backward=True):.1f} ms/img")
    print(f"\n1. integrated gradients, {args.steps} steps, Gauss-Legendre, black baseline: unveil vs captum")
    rows = compare_ig(model, stock, paths, args.steps, args.reps, bs)
    print("captum on our own tuned module (the same compute):")
    print(table(rows, ["image", "label", "ours_s", "ours_224_s", "captum_s", "captum_bs_s", "ratio", "ratio_224",
                       "ratio_bs_224", "maxdiff_attr", "maxdiff_map", "max|attr|", "maxdiff_bs", "completeness_%"]))
    print("captum on the stock module (as its users run it):")
    print(table(rows, ["image", "ours_s", "captum_stock_s", "captum_stock_bs_s", "stock_ratio", "stock_ratio_bs",
                       "maxdiff_stock"]))
    print(f"geometric mean ratio captum/ours: {gmean([r['ratio'] for r in rows]):.2f}x (photo in, captum default "
          f"batching), {gmean([r['ratio_224'] for r in rows]):.2f}x (224 x 224 in), "
          f"{gmean([r['ratio_bs_224'] for r in rows]):.2f}x (224 x 224 in, captum internal_batch_size={bs}); "
          "target >= 1.5x")
    print(f"against captum on the stock module, as its users run it: {gmean([r['stock_ratio'] for r in rows]):.2f}x "
          f"(captum default batching), {gmean([r['stock_ratio_bs'] for r in rows]):.2f}x (internal_batch_size={bs}); "
          "photo in on our side; target >= 1.5x")
    if not args.skip_overhead:
        print("\n2. overhead over the floor (sum of the best time of each pass made, same run, 224 x 224 inputs)")
        print(table(overheads(model, paths, args.reps), ["method", "n_evals", "passes", "wall_s", "floor_s",
                                                        "overhead_%", "target", "met"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
