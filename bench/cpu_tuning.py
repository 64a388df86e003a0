"""Effect of the CPU fast path on the default model: glibc malloc thresholds (tune_cpu), channels-last
memory format, batch norm folded into the convolutions, symmetric zero paddings folded into them, and the
forward passes on ONNX Runtime (what ``load_model()`` does when onnxruntime and onnx are installed).

    .venv/bin/python bench/cpu_tuning.py [--seconds 3] [--rounds 2]

Each configuration runs in its own process (the allocator setting is process-wide), the configurations
alternate over rounds so drift hits all alike, and the best round counts. Also checks that the
probabilities are unchanged across configurations.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _common import table  # noqa: E402

CHILD = r"""
import json, sys, time, numpy as np, torch, skimage.data, unveil
tune, cl, fold, pad, ort = (a == "1" for a in sys.argv[1:6])
seconds = float(sys.argv[6])
torch.manual_seed(0)
if tune:
    unveil.tune_cpu()
m = unveil.load_model(channels_last=cl, fold_bn=fold, fold_pad=pad, batch_size=1,
                      inference="onnxruntime" if ort else "torch")
_, x0 = m.prepare(skimage.data.chelsea())
x = torch.stack([x0] + [torch.rand_like(x0) for _ in range(63)])
probe = m.probabilities(x[:4], batch_size=4).numpy()
out = {"probe": probe.tolist()}
for bs in (1, 16, 64):
    m.probabilities(x[:bs], batch_size=bs)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        m.probabilities(x[:bs], batch_size=bs)
        n += bs
    out[str(bs)] = n / (time.perf_counter() - t0)
print(json.dumps(out))
"""

CONFIGS = [
    ("default malloc", "0", "0", "0", "0", "0"),
    ("tune_cpu()", "1", "0", "0", "0", "0"),
    ("tune_cpu() + channels_last", "1", "1", "0", "0", "0"),
    ("+ folded batch norm", "1", "1", "1", "0", "0"),
    ("+ folded padding (torch)", "1", "1", "1", "1", "0"),
    ("+ ONNX Runtime (default)", "1", "1", "1", "1", "1"),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per batch size per process")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    best: dict[str, dict] = {}
    probes = {}
    for _ in range(args.rounds):
        for name, tune, cl, fold, pad, ort in CONFIGS:
            res = subprocess.run([sys.executable, "-c", CHILD, tune, cl, fold, pad, ort, str(args.seconds)],
                                 check=True, capture_output=True, text=True)
            out = json.loads(res.stdout.strip().splitlines()[-1])
            probes[name] = out.pop("probe")
            prev = best.setdefault(name, {})
            for bs, v in out.items():
                prev[bs] = max(prev.get(bs, 0.0), v)
    import numpy as np

    ref = np.asarray(probes[CONFIGS[0][0]])
    rows = []
    base = best[CONFIGS[0][0]]
    for name, *_ in CONFIGS:
        r = {"configuration": name}
        for bs in ("1", "16", "64"):
            r[f"b{bs} img/s"] = best[name][bs]
            r[f"b{bs} x"] = best[name][bs] / base[bs]
        r["max |dp|"] = f"{float(np.abs(np.asarray(probes[name]) - ref).max()):.1e}"
        rows.append(r)
    print("default model (EfficientNet-Lite0, 224 x 224), torch threads:", __import__("torch").get_num_threads())
    print(table(rows, ["configuration", "b1 img/s", "b16 img/s", "b64 img/s", "b1 x", "b16 x", "b64 x", "max |dp|"]))
    fastest = max(best[CONFIGS[-1][0]].values())
    print(f"\nbest fast-path throughput over best default-malloc throughput: {fastest / max(base.values()):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
