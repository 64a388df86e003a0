"""Occlusion: slide a window of baseline over the input; a pixel's value is the mean score drop of the windows
covering it (Zeiler & Fergus 2014; the same definition as captum's ``Occlusion``)."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .registry import Context, MethodResult, register


def window_starts(size: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of windows along one axis; the last window is aligned to the end so all pixels are covered."""
    if window >= size:
        return np.zeros(1, dtype=np.int64)
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return np.asarray(starts, dtype=np.int64)


def fit_to_budget(h: int, w: int, window: int, stride: int, max_windows: int | None) -> tuple[int, int]:
    """Grow the stride (then the window) until the number of windows fits ``max_windows``."""
    if max_windows is None:
        return window, stride
    if max_windows < 1:
        raise ValueError("budget: no evaluations left for occlusion windows")
    while len(window_starts(h, window, stride)) * len(window_starts(w, window, stride)) > max_windows:
        if stride < window:
            stride += 1
        else:
            window += max(1, window // 8)
            stride = window
    return window, stride


def window_masks(h: int, w: int, ys: np.ndarray, xs: np.ndarray, window: int, idx: np.ndarray) -> torch.Tensor:
    """len(idx) x h x w masks: 0 inside window ``idx`` (row-major over ys x xs), 1 elsewhere."""
    masks = torch.ones(len(idx), h, w)
    for j, i in enumerate(idx):
        y, x = ys[i // len(xs)], xs[i % len(xs)]
        masks[j, y : y + window, x : x + window] = 0.0
    return masks


@register(
    "occlusion",
    family="perturbation",
    description="Occlusion: mean target-score drop of the sliding windows of baseline covering each pixel",
)
def occlusion(
    ctx: Context,
    *,
    window: int | None = None,
    stride: int | None = None,
    baseline="mean",
) -> MethodResult:
    """``window`` (pixels of the model input, default 1/7 of the shorter side) slides by ``stride`` (default
    half the window); a ``budget`` grows the stride, then the window, until the windows fit."""
    _, h, w = ctx.x.shape
    if window is None:
        window = max(1, int(round(min(h, w) / 7)))
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window: expected a positive int (pixels), got {window!r}")
    if stride is None:
        stride = max(1, window // 2)
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise ValueError(f"stride: expected a positive int (pixels), got {stride!r}")
    window, stride = min(int(window), max(h, w)), int(stride)
    remaining = ctx.remaining()
    window, stride = fit_to_budget(h, w, window, stride, remaining)
    ys, xs = window_starts(h, window, stride), window_starts(w, window, stride)
    n = len(ys) * len(xs)
    given = "" if remaining is None else f" (after a budget of {ctx.budget})"
    if n == 1:
        warnings.warn(f"occlusion: the window{given}, {window} pixels, covers the whole {h} x {w} model input, so "
                      "one window hides everything and the map is constant; window and stride are in pixels of "
                      "the model input", UserWarning, stacklevel=3)
    elif stride > window:
        warnings.warn(f"occlusion: stride {stride} is larger than window {window}{given}: pixels between windows "
                      "are hidden by none and get 0", UserWarning, stacklevel=3)
    perturber = ctx.perturber(ctx.baseline(baseline), desc="occlusion")
    order = np.arange(n)
    parts: list[np.ndarray] = []
    perturber.score_masks(lambda a, b: window_masks(h, w, ys, xs, window, order[a:b]), n,
                          lambda masks, probs: parts.append(probs[:, ctx.target]))
    scores = np.concatenate(parts)
    drop = (ctx.probs[ctx.target] - scores).astype(np.float64)
    total = np.zeros((h, w), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.float64)
    for i in range(n):
        y, x = ys[i // len(xs)], xs[i % len(xs)]
        total[y : y + window, x : x + window] += drop[i]
        count[y : y + window, x : x + window] += 1.0
    heat = total / np.maximum(count, 1.0)
    extras = {"window": window, "stride": stride, "n_windows": n, "drops": drop.astype(np.float32)}
    return MethodResult(map=heat, interpolation="bilinear", extras=extras)
