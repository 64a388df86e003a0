"""``make demo``: explain scikit-image's cat photo with LIME on the embedded model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unveil.demo", description=__doc__)
    parser.add_argument("--out", default="unveil-demo", help="output folder (default: unveil-demo)")
    parser.add_argument("--samples", type=int, default=1000, help="LIME samples (default 1000)")
    args = parser.parse_args(argv)

    import skimage.data

    import unveil

    unveil.tune_cpu()
    model = unveil.load_model()
    image = skimage.data.chelsea()
    print("top-5 classes for skimage.data.chelsea():")
    for idx, label, p in model.predict(image, k=5):
        print(f"  {idx:4d}  {label:<24s} {p:.3f}")
    exp = unveil.explain(model, image, method="lime", seed=0, n_samples=args.samples)
    out = Path(args.out)
    png = out / "chelsea_lime.png"
    exp.plot(png)
    exp.save(out / "chelsea_lime.npz")
    print(
        f"lime: target {exp.target} '{exp.label}' p={exp.score:.3f}, {exp.n_evals} evaluations, "
        f"{exp.seconds:.1f} s, surrogate R2={exp.extras['r2']:.3f} (forward passes on {model.inference})"
    )
    print(f"overlay written to {png.resolve()}")
    return 0


if __name__ == "__main__":
    from .process import configure_openmp

    configure_openmp()  # a process of its own: idle OpenMP threads sleep (see unveil.process)
    sys.exit(main())
