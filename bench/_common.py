"""Shared pieces of the benchmarks: the photos, timing helpers and table printing."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PHOTOS = SHARED / "photos"


def photos(n: int | None = None) -> list[Path]:
    found = sorted(PHOTOS.glob("*.jpg"))
    if not found:
        raise SystemExit(f"no photos under {PHOTOS}: the benchmarks read ../shared/data next to the checkout")
    return found[:n] if n else found


def stock_model(batch_size: int | str = "auto"):
    """The default network as its packages give it and a captum or lime user runs it: no channels-last, batch
    norm and padding layers kept (unveil's additions), torch for every pass."""
    import unveil

    return unveil.load_model(channels_last=False, fold_bn=False, fold_pad=False, inference="torch",
                             batch_size=batch_size)


def timed(fn):
    """(fn(), wall seconds it took)."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def best_forward_seconds(model, batch_size: int, reps: int = 5, backward: bool = False) -> float:
    """Best per-image time of one forward (or forward+backward) pass at ``batch_size`` on random input."""
    x = torch.rand(batch_size, 3, *model.input_size, device=model.device)
    best = float("inf")
    for i in range(reps + 1):
        t0 = time.perf_counter()
        if backward:
            xi = x.clone().requires_grad_(True)
            out = model.forward(xi)
            torch.autograd.grad(out[:, 0].sum(), xi)
        else:
            model.probabilities(x, batch_size=batch_size)
        dt = (time.perf_counter() - t0) / batch_size
        if i:  # the first pass warms up
            best = min(best, dt)
    return best


def plain_loop_seconds(model, n: int, batch_size: int, backward: bool = False) -> float:
    """Wall time of ``n`` images through the model in batches of ``batch_size``: the same passes a method
    makes, with no method around them (random inputs, one batch tensor reused)."""
    x = torch.rand(batch_size, 3, *model.input_size, device=model.device)
    t0 = time.perf_counter()
    for i in range(0, n, batch_size):
        part = x[: min(batch_size, n - i)]
        if backward:
            xi = part.clone().requires_grad_(True)
            torch.autograd.grad(model.forward(xi)[:, 0].sum(), xi)
        else:
            model.probabilities(part, batch_size=batch_size)
    return time.perf_counter() - t0


def table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return "" if v is None else str(v)


def median(values) -> float:
    return float(statistics.median(values))


def gmean(values) -> float:
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=float)))))
