"""Our shapley, kernelshap and occlusion against captum's ShapleyValueSampling, KernelShap and Occlusion.

    .venv/bin/python bench/vs_captum.py [--images 3] [--n-features 50] [--permutations 4] [--samples 400]

Same photos, same model (the default EfficientNet-Lite0, allocator tuned with ``unveil.tune_cpu()``), same
input space (the 224 x 224 model input in [0, 1]; captum gets the model's own module behind the same
normalization and softmax), same target (the top class), same SLIC segments as feature mask, same baseline
(the image's mean colour), same settings (permutations, samples, window and stride). Captum runs twice: with
its default ``perturbations_per_eval=1`` and with ``perturbations_per_eval`` = our batch size.

Printed per method: wall times and ratios (captum / ours; target >= 1.5), evaluations, each run's overhead
over its floor (evaluations x the best per-image forward time at its batch size, measured in the same run),
and agreement: max |difference| for occlusion (deterministic), Pearson correlation of the segment weights for
the sampled methods at equal samples, next to the correlation of ours with ours under another seed (the
sampling-noise ceiling).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import best_forward_seconds, gmean, photos, table  # noqa: E402

import unveil  # noqa: E402
from unveil.models.default import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from unveil.perturb import make_baseline  # noqa: E402
from unveil.segmentation import segment  # noqa: E402


class CountingForward:
    """captum's forward function: normalize, the model's module (channels-last as ours), softmax; counts rows."""

    def __init__(self, model: unveil.Model):
        self.net = model.fn
        self.channels_last = model.channels_last
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        self.n = 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.n += z.shape[0]
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


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--n-features", type=int, default=50)
    parser.add_argument("--permutations", type=int, default=4)
    parser.add_argument("--samples", type=int, default=400, help="KernelSHAP evaluations on each side")
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--methods", default="occlusion,shapley,kernelshap")
    args = parser.parse_args(argv)
    from captum.attr import KernelShap, Occlusion, ShapleyValueSampling

    unveil.tune_cpu()
    model = unveil.load_model()
    bs = model.resolve_batch_size()
    fwd = CountingForward(model)
    methods = args.methods.split(",")
    print(f"model {model.name}, batch size {bs}, torch threads {torch.get_num_threads()}, "
          f"{args.n_features} SLIC segments, {args.permutations} permutations, {args.samples} KernelSHAP samples, "
          f"occlusion window {args.window} stride {args.stride}, baseline: the image's mean colour")
    rows = []
    for path in photos(args.images):
        _, x = model.prepare(path)
        img = np.ascontiguousarray(x.numpy().transpose(1, 2, 0))  # the model input itself: no resize on our side
        target = int(np.argmax(model.probabilities(x, batch_size=1)[0].numpy()))
        labels = segment(img, "slic", args.n_features, seed=0)
        base = make_baseline(x, "mean")
        xin, bin_ = x[None], base[None]
        mask = torch.from_numpy(labels)[None, None]
        common = dict(target=target, seed=0, progress=False)
        for name in methods:
            if name == "occlusion":
                ours = lambda seed=0: unveil.explain(model, img, method="occlusion", window=args.window,  # noqa: E731
                                                     stride=args.stride, baseline="mean", **{**common, "seed": seed})
                occ = Occlusion(fwd)
                theirs = lambda ppe: occ.attribute(  # noqa: E731
                    xin, sliding_window_shapes=(3, args.window, args.window), strides=(3, args.stride, args.stride),
                    baselines=bin_, target=target, perturbations_per_eval=ppe)
            elif name == "shapley":
                ours = lambda seed=0: unveil.explain(  # noqa: E731
                    model, img, method="shapley", n_permutations=args.permutations, segmentation=labels,
                    baseline="mean", **{**common, "seed": seed})
                svs = ShapleyValueSampling(fwd)
                theirs = lambda ppe: svs.attribute(  # noqa: E731
                    xin, baselines=bin_, target=target, feature_mask=mask, n_samples=args.permutations,
                    perturbations_per_eval=ppe)
            elif name == "kernelshap":
                # captum's count includes the full and the empty coalition; ours adds them to n_samples
                ours = lambda seed=0: unveil.explain(  # noqa: E731
                    model, img, method="kernelshap", n_samples=args.samples - 2, segmentation=labels,
                    baseline="mean", **{**common, "seed": seed})
                ks = KernelShap(fwd)
                theirs = lambda ppe: ks.attribute(  # noqa: E731
                    xin, baselines=bin_, target=target, feature_mask=mask, n_samples=args.samples,
                    perturbations_per_eval=ppe)
            else:
                raise SystemExit(f"unknown method {name!r}")
            per_img = {b: best_forward_seconds(model, b) for b in (1, bs)}
            exp, t_ours = timed(ours)
            runs = {}
            for ppe in (1, bs):
                fwd.n = 0
                with torch.random.fork_rng():
                    torch.manual_seed(0)
                    attr, t = timed(lambda: theirs(ppe))
                runs[ppe] = (attr, t, fwd.n)
            for b in (1, bs):  # the floor: the best per-image forward time seen before or after the runs
                per_img[b] = min(per_img[b], best_forward_seconds(model, b))
            attr = runs[bs][0]
            row = {"method": name, "image": path.stem, "ours_s": t_ours, "n_ours": exp.n_evals,
                   "ovh_ours_%": 100 * (t_ours / (exp.n_evals * per_img[bs]) - 1),
                   "captum1_s": runs[1][1], "captumB_s": runs[bs][1], "n_captum": runs[bs][2],
                   "ovh_capB_%": 100 * (runs[bs][1] / (runs[bs][2] * per_img[bs]) - 1),
                   "x_vs_1": runs[1][1] / t_ours, "x_vs_B": runs[bs][1] / t_ours}
            if name == "occlusion":
                ref = attr[0, 0].double().numpy()
                row["agree"] = f"max|d| {np.abs(exp.map - ref).max():.1e}"
                row["agree1"] = f"{np.abs(runs[1][0][0, 0].double().numpy() - ref).max():.1e}"
            else:
                w_theirs = per_segment(attr, labels)
                w_theirs1 = per_segment(runs[1][0], labels)
                other = ours(1)
                row["agree"] = f"r {corr(exp.weights, w_theirs):.3f}"
                row["agree1"] = f"r {corr(exp.weights, w_theirs1):.3f}"
                row["ours_vs_ours"] = f"r {corr(exp.weights, other.weights):.3f}"
            rows.append(row)
            print(table([row], list(row)), flush=True)
    cols = ["method", "image", "ours_s", "captum1_s", "captumB_s", "x_vs_1", "x_vs_B", "n_ours", "n_captum",
            "ovh_ours_%", "ovh_capB_%", "agree", "agree1", "ours_vs_ours"]
    print("\nall runs (captum1: perturbations_per_eval=1; captumB: = our batch size "
          f"{bs}; x_vs: captum time / ours; agree: ours vs captumB, agree1: ours vs captum1)")
    print(table(rows, cols))
    summary = []
    for name in methods:
        r = [x for x in rows if x["method"] == name]
        summary.append({
            "method": name,
            "speedup_vs_ppe1": gmean([x["x_vs_1"] for x in r]),
            "speedup_vs_ppeB": gmean([x["x_vs_B"] for x in r]),
            "target": ">= 1.5",
            "ours_overhead_%": float(np.mean([x["ovh_ours_%"] for x in r])),
            "captumB_overhead_%": float(np.mean([x["ovh_capB_%"] for x in r])),
        })
    print("\nper method (geometric mean of the time ratios over the images; mean overheads)")
    print(table(summary, list(summary[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
