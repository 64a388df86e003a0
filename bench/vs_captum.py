"""Our shapley, kernelshap and occlusion against captum's ShapleyValueSampling, KernelShap and Occlusion.

    .venv/bin/python bench/vs_captum.py [--images 3] [--n-features 50] [--permutations 4] [--samples 400]

Same photos, same model (the default EfficientNet-Lite0, allocator tuned with ``unveil.tune_cpu()``; our side
runs its forward passes as ``load_model()`` sets it up, on ONNX Runtime when installed, or as ``--inference``
says; captum's runs the torch module), same
input space (the 224 x 224 model input in [0, 1]; captum gets the model's own module behind the same
normalization and softmax), same target (the top class), same SLIC segments as feature mask, same baseline
(the image's mean colour), same settings (permutations, samples, window and stride). Captum runs twice: with
its default ``perturbations_per_eval=1`` and with ``perturbations_per_eval`` = our batch size, on the module as
``load_model()`` tunes it for us (channels-last, batch norms and paddings folded into the convolutions); and a
third time (``captumS``, batched like us) on the stock module, as the packages give it and as a captum user
runs it.

Each side runs ``--repeats`` times, interleaved, and its best time counts (the machine is shared and noisy).
Printed per method: wall times and ratios (captum / ours; target >= 1.5), evaluations, each run's overhead
over its floor (evaluations x the best per-image forward time at its batch size, measured in the same run),
and agreement: max |difference| for occlusion (deterministic), Pearson correlation of the segment weights for
the sampled methods at equal samples, next to the correlation of ours with ours under another seed (the
sampling-noise ceiling).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import best_forward_seconds, gmean, photos, stock_model, table, timed  # noqa: E402

import unveil  # noqa: E402
from unveil.models.default import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from unveil.perturb import make_baseline  # noqa: E402
from unveil.segmentation import segment  # noqa: E402


class CountingForward:
    """captum's forward function: normalize, the model's module (channels-last as ours), softmax; counts rows."""

    def __init__(self, model: unveil.Model, normalize: bool = True):
        self.net = model.fn
        self.channels_last = model.channels_last
        self.normalize = normalize
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.n = 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.n += z.shape[0]
        if self.normalize:
            z = (z - self.mean) / self.std
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return torch.softmax(self.net(z), dim=1)


def corr(a, b) -> float:
    return float(np.corrcoef(np.asarray(a, float).ravel(), np.asarray(b, float).ravel())[0, 1])


def per_segment(attr: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """captum's per-pixel attribution (1 x C x H x W, constant over a feature) -> one value per segment."""
    a = attr[0, 0].detach().double().numpy()
    k = int(labels.max()) + 1
    return np.bincount(labels.ravel(), weights=a.ravel(), minlength=k) / np.bincount(labels.ravel(), minlength=k)


def runners(name, model, fwd, img, x, labels, target, args):
    """(ours(seed) -> Explanation, theirs(perturbations_per_eval) -> captum attribution) for one method."""
    from captum.attr import KernelShap, Occlusion, ShapleyValueSampling

    xin, bin_ = x[None], make_baseline(x, "mean")[None]
    mask = torch.from_numpy(labels)[None, None]
    common = dict(target=target, progress=False)
    if name == "occlusion":
        def ours(seed=0):
            return unveil.explain(model, img, method="occlusion", window=args.window, stride=args.stride,
                                  baseline="mean", seed=seed, **common)

        def theirs(ppe):
            return Occlusion(fwd).attribute(
                xin, sliding_window_shapes=(3, args.window, args.window), strides=(3, args.stride, args.stride),
                baselines=bin_, target=target, perturbations_per_eval=ppe)
    elif name == "shapley":
        def ours(seed=0):
            return unveil.explain(model, img, method="shapley", n_permutations=args.permutations,
                                  segmentation=labels, baseline="mean", seed=seed, **common)

        def theirs(ppe):
            return ShapleyValueSampling(fwd).attribute(
                xin, baselines=bin_, target=target, feature_mask=mask, n_samples=args.permutations,
                perturbations_per_eval=ppe)
    elif name == "kernelshap":
        def ours(seed=0):  # captum's count includes the full and the empty coalition; ours adds them
            return unveil.explain(model, img, method="kernelshap", n_samples=args.samples - 2,
                                  segmentation=labels, baseline="mean", seed=seed, **common)

        def theirs(ppe):
            return KernelShap(fwd).attribute(
                xin, baselines=bin_, target=target, feature_mask=mask, n_samples=args.samples,
                perturbations_per_eval=ppe)
    else:
        raise SystemExit(f"unknown method {name!r}")
    return ours, theirs


class Free(torch.nn.Module):
    """A near-free classifier (channel means -> 1000 logits): timing with it shows each library's own cost."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 1000)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--n-features", type=int, default=50)
    parser.add_argument("--permutations", type=int, default=4)
    parser.add_argument("--samples", type=int, default=400, help="KernelSHAP evaluations on each side")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--methods", default="occlusion,shapley,kernelshap")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side (the best counts)")
    parser.add_argument("--inference", default="auto", choices=["auto", "torch", "onnxruntime"],
                        help="what runs our side's forward passes (load_model's inference=; captum's side always "
                             "runs the torch module)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for both sides (1 is steadier on a busy machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    unveil.tune_cpu()
    model = unveil.load_model(inference=args.inference)
    bs = model.resolve_batch_size()
    fwd = CountingForward(model)
    stock = stock_model(batch_size=bs)
    fwd_stock = CountingForward(stock)
    methods = args.methods.split(",")
    print(f"model {model.name} (our forward passes on {model.inference}), batch size {bs}, "
          f"torch threads {torch.get_num_threads()}, "
          f"{args.n_features} SLIC segments, {args.permutations} permutations, {args.samples} KernelSHAP samples, "
          f"occlusion window {args.window} stride {args.stride}, baseline: the image's mean colour")
    rows = []
    for path in photos(args.images):
        _, x = model.prepare(path)
        img = np.ascontiguousarray(x.numpy().transpose(1, 2, 0))  # the model input itself: no resize on our side
        target = int(np.argmax(model.probabilities(x, batch_size=1)[0].numpy()))
        labels = segment(img, "slic", args.n_features, seed=0)
        for name in methods:
            ours, theirs = runners(name, model, fwd, img, x, labels, target, args)
            _, theirs_stock = runners(name, model, fwd_stock, img, x, labels, target, args)
            t_stock = float("inf")
            per_img = {b: best_forward_seconds(model, b, reps=3) for b in (1, bs)}
            t_ours, runs = float("inf"), {}
            for _ in range(args.repeats):  # interleaved, best of each: the machine's noise hits both sides
                exp, t = timed(ours)
                t_ours = min(t_ours, t)
                for ppe in (bs, 1):
                    fwd.n = 0
                    with torch.random.fork_rng():
                        torch.manual_seed(0)
                        attr, t = timed(lambda: theirs(ppe))
                    if ppe not in runs or t < runs[ppe][1]:
                        runs[ppe] = (attr, t, fwd.n)
                with torch.random.fork_rng():
                    torch.manual_seed(0)
                    attr_stock, t = timed(lambda: theirs_stock(bs))
                t_stock = min(t_stock, t)
            for b in (1, bs):  # the floor: the best per-image forward time seen before or after the runs
                per_img[b] = min(per_img[b], best_forward_seconds(model, b, reps=3))
            attr = runs[bs][0]
            row = {"method": name, "image": path.stem, "ours_s": t_ours, "n_ours": exp.n_evals,
                   "ovh_ours_%": 100 * (t_ours / (exp.n_evals * per_img[bs]) - 1),
                   "captum1_s": runs[1][1], "captumB_s": runs[bs][1], "n_captum": runs[bs][2],
                   "ovh_capB_%": 100 * (runs[bs][1] / (runs[bs][2] * per_img[bs]) - 1),
                   "x_vs_1": runs[1][1] / t_ours, "x_vs_B": runs[bs][1] / t_ours,
                   "captumS_s": t_stock, "x_vs_S": t_stock / t_ours}
            if name == "occlusion":
                ref = attr[0, 0].double().numpy()
                row["agree"] = f"max|d| {np.abs(exp.map - ref).max():.1e}"
                row["agree1"] = f"{np.abs(runs[1][0][0, 0].double().numpy() - ref).max():.1e}"
                row["agreeS"] = f"{np.abs(attr_stock[0, 0].double().numpy() - ref).max():.1e}"
            else:
                w_theirs = per_segment(attr, labels)
                w_theirs1 = per_segment(runs[1][0], labels)
                other = ours(1)
                row["agree"] = f"r {corr(exp.weights, w_theirs):.3f}"
                row["agree1"] = f"r {corr(exp.weights, w_theirs1):.3f}"
                row["agreeS"] = f"r {corr(exp.weights, per_segment(attr_stock, labels)):.3f}"
                row["ours_vs_ours"] = f"r {corr(exp.weights, other.weights):.3f}"
            rows.append(row)
            print(table([row], list(row)), flush=True)
    cols = ["method", "image", "ours_s", "captum1_s", "captumB_s", "captumS_s", "x_vs_1", "x_vs_B", "x_vs_S",
            "n_ours", "n_captum", "ovh_ours_%", "ovh_capB_%", "agree", "agree1", "agreeS", "ours_vs_ours"]
    print("\nall runs (captum1: perturbations_per_eval=1; captumB: = our batch size "
          f"{bs}; captumS: batched, on the stock module; x_vs: captum time / ours; agree: ours vs captumB, "
          "agree1: ours vs captum1, agreeS: ours vs captumS)")
    print(table(rows, cols))
    summary = []
    for name in methods:
        r = [x for x in rows if x["method"] == name]
        summary.append({
            "method": name,
            "speedup_vs_ppe1": gmean([x["x_vs_1"] for x in r]),
            "speedup_vs_ppeB": gmean([x["x_vs_B"] for x in r]),
            "speedup_vs_stock": gmean([x["x_vs_S"] for x in r]),
            "target": ">= 1.5",
            "ours_overhead_%": float(np.mean([x["ovh_ours_%"] for x in r])),
            "captumB_overhead_%": float(np.mean([x["ovh_capB_%"] for x in r])),
        })
    print("\nper method (geometric mean of the time ratios over the images; mean overheads)")
    print(table(summary, list(summary[0])))

    # each library's own cost per evaluation, with the model made nearly free (best of 3 runs, first photo)
    free = unveil.Model(Free().eval(), input_size=model.input_size, batch_size=bs)
    free_fwd = CountingForward(free, normalize=False)
    _, x = free.prepare(photos(1)[0])
    img = np.ascontiguousarray(x.numpy().transpose(1, 2, 0))
    labels = segment(img, "slic", args.n_features, seed=0)
    own = []
    for name in methods:
        ours, theirs = runners(name, free, free_fwd, img, x, labels, 0, args)
        t_ours = min(timed(ours)[1] for _ in range(3))
        n_ours = ours().n_evals
        cost = {}
        for ppe in (1, bs):
            free_fwd.n = 0
            t = min(timed(lambda: theirs(ppe))[1] for _ in range(3))
            cost[ppe] = (t, free_fwd.n // 3)
        own.append({"method": name, "ours_ms/eval": 1000 * t_ours / n_ours,
                     "captum1_ms/eval": 1000 * cost[1][0] / cost[1][1],
                     "captumB_ms/eval": 1000 * cost[bs][0] / cost[bs][1],
                     "ms/img forward": 1000 * min(best_forward_seconds(model, bs) for _ in range(2))})
    print("\nown cost per evaluation with a near-free model (next to the real model's best forward per image)")
    print(table(own, list(own[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
