"""Pictures of explanations: overlays, segment boundaries, comparison grids. Matplotlib is imported here only."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from .images import rgb_projection

__all__ = ["overlay", "plot", "plot_table", "grid_figure", "figure_to_png"]


def literal_text(fn):
    """Run a drawing function with matplotlib's math parsing off, so that class and feature names are drawn
    as written ("costs $5 to $10" stays so; "$x_$" no longer fails to parse)."""

    @functools.wraps(fn)
    def drawing(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)

    return drawing


def _symmetric_limit(m: np.ndarray) -> float:
    lim = float(np.max(np.abs(m))) if m.size else 0.0
    return lim if lim > 0 else 1.0


#: The longest side, in pixels, of an image or map a figure draws: larger ones are reduced by k x k block means
#: (segments by taking every k-th pixel) first. A figure panel is a few hundred pixels wide, and drawing a
#: 48-megapixel photo took matplotlib half a minute. The colour scale still comes from the whole map.
DRAW_MAX_SIDE = 1024


def _block_mean(a: np.ndarray, k: int) -> np.ndarray:
    """Means of k x k blocks over the first two axes (the last partial row and column of blocks included)."""
    if k <= 1:
        return a
    h, w = a.shape[:2]
    hp, wp = -(-h // k) * k, -(-w // k) * k
    a = a.astype(np.float32, copy=False)
    if (hp, wp) != (h, w):  # pad by repeating the edge so partial blocks average real pixels
        a = np.pad(a, ((0, hp - h), (0, wp - w)) + ((0, 0),) * (a.ndim - 2), mode="edge")
    return a.reshape(hp // k, k, wp // k, k, *a.shape[2:]).mean(axis=(1, 3))


def _for_drawing(exp, max_side: int = DRAW_MAX_SIDE):
    """(image or None, map, segments or None, colour limit) of ``exp`` at most ``max_side`` pixels a side."""
    m = np.asarray(exp.map, dtype=np.float32)
    lim = _symmetric_limit(m)
    k = -(-max(m.shape) // max(1, int(max_side)))
    image = None if exp.image is None else rgb_projection(exp.image)
    segments = exp.segments
    if k > 1:
        m = _block_mean(m, k)
        image = None if image is None else _block_mean(image, k)
        segments = None if segments is None else np.asarray(segments)[::k, ::k]
    return image, m, segments, lim


def overlay(exp, alpha: float = 0.55, cmap: str = "bwr", max_side: int | None = None) -> np.ndarray:
    """H x W x 3 float32: the (grayed) input blended with the map coloured symmetrically around zero.
    ``max_side``: for a picture of at most that many pixels a side (a thumbnail), the image and map are first
    reduced by block means to at most twice that (the colour scale still from the whole map)."""
    from matplotlib import colormaps

    if max_side is None:
        m = np.asarray(exp.map, dtype=np.float32)
        lim = _symmetric_limit(m)
        base = None if exp.image is None else rgb_projection(exp.image)
    else:
        base, m, _, lim = _for_drawing(exp, 2 * int(max_side))
    colours = colormaps[cmap]((m / lim + 1.0) / 2.0)[..., :3].astype(np.float32)
    if base is None:
        return colours
    gray = base.mean(axis=2, keepdims=True).repeat(3, axis=2)
    weight = alpha * np.clip(np.abs(m) / lim, 0.0, 1.0)[..., None] ** 0.5
    return np.clip((1 - weight) * (0.35 * gray + 0.65 * base) + weight * colours, 0.0, 1.0)


def _draw(ax, exp, cmap: str = "bwr", boundaries: bool = True, title: str | None = None):
    from matplotlib.colors import TwoSlopeNorm

    base, m, segments, lim = _for_drawing(exp)
    if base is not None:
        ax.imshow(0.4 * base.mean(axis=2), cmap="gray", vmin=0, vmax=1)
        if boundaries and segments is not None:
            from skimage.segmentation import find_boundaries

            edge = find_boundaries(segments, mode="inner")
            rgba = np.zeros(edge.shape + (4,), np.float32)
            rgba[edge] = (1.0, 1.0, 0.4, 0.5)
            ax.imshow(rgba)
    im = ax.imshow(m, cmap=cmap, norm=TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim),
                   alpha=0.6 if base is not None else 1.0)
    ax.set_axis_off()
    ax.set_title(title or f"{exp.label} ({exp.score:.3f}) - {exp.method}", fontsize=9)
    return im


@literal_text
def plot(exp, path: str | Path | None = None, *, cmap: str = "bwr", boundaries: bool = True, dpi: int = 100):
    """Figure with the input, the overlay and a colour bar; written to ``path`` (PNG) when given."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.4, 4.0), dpi=dpi)
    ax0, ax1 = fig.subplots(1, 2)
    if exp.image is not None:
        ax0.imshow(_for_drawing(exp)[0])
    ax0.set_axis_off()
    ax0.set_title("input", fontsize=9)
    im = _draw(ax1, exp, cmap=cmap, boundaries=boundaries)
    fig.colorbar(im, ax=ax1, fraction=0.046, pad=0.04, label="importance")
    fig.suptitle(
        f"{exp.method}: target {exp.target} '{exp.label}' p={exp.score:.3f}  "
        f"({exp.n_evals} evals, {exp.seconds:.1f} s)",
        fontsize=10,
    )
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig


def _short(value: float) -> str:
    return f"{value:.4g}"


@literal_text
def plot_table(exp, path: str | Path | None = None, *, max_features: int = 20, dpi: int = 100):
    """Horizontal bars of a table row's weights, the largest |weight| on top (at most ``max_features``; the
    rest are counted in the axis label): red supports the target, blue opposes it; each bar is labelled
    with the feature's name and the row's value. Written to ``path`` (PNG) when given."""
    from matplotlib.figure import Figure

    weights = np.asarray(exp.weights if exp.weights is not None else exp.map, dtype=np.float64)
    names = list(exp.feature_names or [f"x{i}" for i in range(weights.size)])
    values = None if exp.values is None else np.asarray(exp.values)
    order = np.argsort(-np.abs(weights), kind="stable")[: max(1, int(max_features))]
    labels = [names[i] if values is None else f"{names[i]} = {_short(values[i])}" for i in order]
    fig = Figure(figsize=(7.0, 1.2 + 0.32 * len(order)), dpi=dpi)
    ax = fig.subplots()
    pos = np.arange(len(order))[::-1]
    colours = ["#d62728" if weights[i] > 0 else "#1f77b4" for i in order]
    ax.barh(pos, weights[order], color=colours)
    ax.set_yticks(pos, labels, fontsize=8)
    ax.axvline(0.0, color="black", linewidth=0.8)
    hidden = weights.size - len(order)
    ax.set_xlabel("weight" + (f"  ({hidden} smaller features not shown)" if hidden > 0 else ""), fontsize=9)
    ax.set_title(
        f"{exp.method}: target {exp.target} '{exp.label}' score={exp.score:.4g}  "
        f"({exp.n_evals} evals, {exp.seconds:.2f} s)",
        fontsize=10,
    )
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, bbox_inches="tight")
    return fig


@literal_text
def grid_figure(explanations: Sequence, titles: Sequence[str] | None = None, cols: int = 4, size: float = 2.6):
    """Several explanations side by side (one panel each)."""
    from matplotlib.figure import Figure

    n = max(1, len(explanations))
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(size * cols, size * rows + 0.3))
    axes = np.atleast_1d(fig.subplots(rows, cols)).reshape(-1)
    for i, ax in enumerate(axes):
        if i < len(explanations):
            _draw(ax, explanations[i], title=titles[i] if titles else None)
        else:
            ax.set_axis_off()
    return fig


def figure_to_png(fig, dpi: int = 100) -> bytes:
    """PNG bytes of a matplotlib figure."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
