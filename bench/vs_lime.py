"""Our ``lime`` against the ``lime`` package on the same images, segmentation and sample count.

    .venv/bin/python bench/vs_lime.py [--samples 1000] [--images chelsea,coffee]

Each side runs in its own process, as its users run it: the ``lime`` package with its default batch size (10)
and a typical PyTorch classifier function; unveil through ``unveil.explain`` with its defaults. Then both again
with the allocator tuned (``unveil.tune_cpu()``) in their processes. Same quickshift parameters
(kernel_size=4, max_dist=200, ratio=0.2), same hidden-segment colour (each segment's mean), 1000 samples,
the default model, images resized to 224 x 224 first. Times cover the explanation call only (the model is
loaded and one image passed before). unveil's one-off costs land in its first image's time, as its users get
them: the ONNX Runtime export and the batch-size measurement (made on that LIME run's own passes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import median, table  # noqa: E402

CHILD_LIME = r"""
import os; os.environ["TQDM_DISABLE"] = "1"  # the package draws a bar per sample; drawing is not its work
import json, sys, time, numpy as np, torch, skimage.data, unveil
from unveil.images import load_image, resize
tune, names, samples = sys.argv[1] == "1", sys.argv[2].split(","), int(sys.argv[3])
if tune:
    unveil.tune_cpu()
from lime import lime_image
from lime.wrappers.scikit_image import SegmentationAlgorithm
# the module as its package gives it: no channels-last, batch norm and padding layers kept (unveil's additions)
m = unveil.load_model(channels_last=False, fold_bn=False, fold_pad=False, inference="torch")
net = m.fn
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

def classifier_fn(images):  # how a PyTorch user writes it for the lime package
    x = torch.from_numpy(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        return torch.softmax(net((x - mean) / std), dim=1).numpy()

out = {}
for name in names:
    img = resize(load_image(getattr(skimage.data, name)()), (224, 224)).astype(np.float64)
    classifier_fn(img[None])  # warm-up
    target = int(np.argmax(classifier_fn(img[None])[0]))
    seg = SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2, random_seed=0)
    t0 = time.perf_counter()
    exp = lime_image.LimeImageExplainer(random_state=0).explain_instance(
        img, classifier_fn, labels=(target,), top_labels=None, hide_color=None, num_samples=samples,
        segmentation_fn=seg)
    out[name] = {"seconds": time.perf_counter() - t0, "target": target, "score": float(exp.score),
                 "segments": int(exp.segments.max()) + 1}
print(json.dumps(out))
"""

CHILD_UNVEIL = r"""
import json, sys, time, numpy as np, skimage.data, unveil
from unveil.images import load_image, resize
tune, names, samples = sys.argv[1] == "1", sys.argv[2].split(","), int(sys.argv[3])
if tune:
    unveil.tune_cpu()
m = unveil.load_model()
out = {}
for name in names:
    img = resize(load_image(getattr(skimage.data, name)()), (224, 224))
    m.probabilities(m.prepare(img)[1])  # warm-up
    t0 = time.perf_counter()
    exp = unveil.explain(m, img, method="lime", n_samples=samples, segmentation="quickshift", progress=False)
    out[name] = {"seconds": time.perf_counter() - t0, "target": exp.target, "score": exp.extras["r2"],
                 "segments": exp.extras["n_features"], "n_evals": exp.n_evals}
out["batch_size"] = m.batch_size
print(json.dumps(out))
"""


def run(child: str, tune: bool, names: list[str], samples: int) -> dict:
    res = subprocess.run([sys.executable, "-c", child, "1" if tune else "0", ",".join(names), str(samples)],
                         check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--images", default="chelsea,coffee")
    args = parser.parse_args(argv)
    names = args.images.split(",")
    rows, ratios = [], {}
    for tune in (False, True):
        lime_out = run(CHILD_LIME, tune, names, args.samples)
        ours = run(CHILD_UNVEIL, tune, names, args.samples)
        setting = "tuned allocator" if tune else "as users run it"
        for n in names:
            rows.append({"setting": setting, "image": n, "lime pkg s": lime_out[n]["seconds"],
                         "unveil s": ours[n]["seconds"], "speed-up": lime_out[n]["seconds"] / ours[n]["seconds"],
                         "segments (pkg/ours)": f"{lime_out[n]['segments']}/{ours[n]['segments']}",
                         "R2 (pkg/ours)": f"{lime_out[n]['score']:.3f}/{ours[n]['score']:.3f}",
                         "target": f"{lime_out[n]['target']}/{ours[n]['target']}"})
        ratios[setting] = (median(lime_out[n]["seconds"] for n in names), median(ours[n]["seconds"] for n in names),
                           ours["batch_size"])
    print(table(rows, ["setting", "image", "lime pkg s", "unveil s", "speed-up", "segments (pkg/ours)",
                       "R2 (pkg/ours)", "target"]))
    print()
    for setting, target in (("as users run it", 3.0), ("tuned allocator", 1.5)):
        pkg, ours, bs = ratios[setting]
        print(f"{setting}: median lime package {pkg:.2f} s, unveil {ours:.2f} s -> {pkg / ours:.2f}x faster "
              f"(target >= {target}x; unveil batch size {bs}, measured within its first image's time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
