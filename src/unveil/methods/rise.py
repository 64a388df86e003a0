"""RISE: randomized input sampling (Petsiuk, Das & Saenko 2018).

N random binary grids of s x s cells (each cell kept with probability p) are upsampled bilinearly to
(s + 1) x cell size and cropped to the input with a random shift, giving smooth masks M_i. The saliency of a
pixel is the score-weighted mean of the masks, normalized by the expected mask value:

    map = sum_i f(x_i) M_i / (N p),   x_i = baseline + M_i (x - baseline)

(the paper's estimator of E[f(x_M) | M(pixel) = 1]; with the default zero baseline x_i = M_i x, black where hidden.
The paper's code multiplies the *normalized* input, so its hidden pixels show the dataset's mean colour:
``baseline`` set to that colour reproduces it; for ImageNet models ``"gray"`` is close). By default the mean score
is used as a control variate (``centered``): the same expectation, much less noise. The low-resolution grids and
shifts are drawn in blocks as the passes need them; the full-size masks are made chunk by chunk and folded into
running sums, so no more than one chunk of them exists at a time.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..checks import check_bool
from .registry import Context, MethodResult, register

#: Grid cells per side when ``s`` is not given (the paper's 7), fewer for an input with a shorter side.
DEFAULT_S = 7


# ----------------------------------------------------------------------------- plain functions
def draw_grids(
    rng: np.random.Generator, n: int, s: int, p: float, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(n x s x s bool grids, n x 2 int shifts (dy, dx) in [0, cell size)) for masks of ``size`` (h, w)."""
    h, w = size
    grids = rng.random((n, s, s)) < p
    cell = (math.ceil(h / s), math.ceil(w / s))
    shifts = np.stack([rng.integers(0, cell[0], n), rng.integers(0, cell[1], n)], axis=1)
    return grids, shifts


#: RISE draws its grids this many masks at a time (a fixed block, so the masks do not depend on the batch size).
GRID_BLOCK = 4096


class GridStream:
    """The grids and shifts of ``n`` masks drawn block by block (:data:`GRID_BLOCK` masks, each block as
    :func:`draw_grids` draws it), on demand and in order: ``take(start, stop)`` returns masks start..stop-1 and
    forgets the blocks before ``start``, so a million masks never lie in memory at once."""

    def __init__(self, rng: np.random.Generator, n: int, s: int, p: float, size: tuple[int, int]):
        self.rng, self.n, self.s, self.p, self.size = rng, n, s, p, size
        self.blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.drawn = 0  # blocks drawn so far (they must be drawn in order: one random stream)

    def take(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        first, last = start // GRID_BLOCK, (stop - 1) // GRID_BLOCK
        if first < self.drawn and first not in self.blocks:
            raise RuntimeError("GridStream: masks are taken in order; an earlier block is gone")
        while self.drawn <= last:
            size = min(GRID_BLOCK, self.n - self.drawn * GRID_BLOCK)
            self.blocks[self.drawn] = draw_grids(self.rng, size, self.s, self.p, self.size)
            self.drawn += 1
        for b in [b for b in self.blocks if b < first]:
            del self.blocks[b]
        parts = [self.blocks[b] for b in range(first, last + 1)]
        grids = np.concatenate([g for g, _ in parts])
        shifts = np.concatenate([t for _, t in parts])
        lo = start - first * GRID_BLOCK
        return grids[lo : lo + stop - start], shifts[lo : lo + stop - start]


def interpolation_matrix(n_out: int, n_in: int) -> np.ndarray:
    """n_out x n_in weights of bilinear (linear per axis) resampling from n_in to n_out samples, pixel centres
    aligned (``align_corners=False``), out-of-range neighbours reflected without repeating the edge
    (numpy's 'reflect', scikit-image ``resize(order=1, mode='reflect')``, the paper's code)."""
    src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    i0 = np.floor(src).astype(np.int64)
    frac = src - i0

    def reflect(i):
        if n_in == 1:
            return np.zeros_like(i)
        period = 2 * (n_in - 1)
        i = np.abs(i) % period
        return np.where(i >= n_in, period - i, i)

    out = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(out, (rows, reflect(i0)), 1.0 - frac)
    np.add.at(out, (rows, reflect(i0 + 1)), frac)
    return out


def upsample_masks(
    grids: np.ndarray, shifts: np.ndarray, size: tuple[int, int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """n x s x s grids -> n x h x w float32 masks in [0, 1]: bilinear upsampling to (s + 1) cells of
    ceil(h / s) x ceil(w / s) pixels, then a crop at each mask's shift (dy, dx).

    Only the cropped rows and columns are computed: mask = A_y[dy:dy+h] @ grid @ A_x[dx:dx+w]^T with the
    per-axis interpolation matrices of :func:`interpolation_matrix`.
    """
    n, s, _ = grids.shape
    h, w = size
    ch, cw = math.ceil(h / s), math.ceil(w / s)
    ay = torch.as_tensor(interpolation_matrix((s + 1) * ch, s), dtype=torch.float32, device=device)
    ax = torch.as_tensor(interpolation_matrix((s + 1) * cw, s), dtype=torch.float32, device=device)
    dy = torch.as_tensor(shifts[:, 0], device=device)
    dx = torch.as_tensor(shifts[:, 1], device=device)
    rows = ay[dy[:, None] + torch.arange(h, device=device)[None, :]]  # n x h x s
    cols = ax[dx[:, None] + torch.arange(w, device=device)[None, :]]  # n x w x s
    g = torch.as_tensor(grids, device=device).to(torch.float32)
    return torch.bmm(torch.bmm(rows, g), cols.transpose(1, 2)).clamp_(0.0, 1.0)


# ----------------------------------------------------------------------------- the method
@register(
    "rise",
    family="perturbation",
    description="RISE: score-weighted mean of random smooth masks (low-resolution grids, shifted, bilinear)",
)
def rise(
    ctx: Context,
    *,
    n_masks: int = 1000,
    s: int | None = None,
    p: float = 0.5,
    baseline="zero",
    centered: bool = True,
) -> MethodResult:
    """``n_masks`` random masks (``budget`` caps them; the paper used 4000 to 8000 on a GPU, 1000 keeps a
    CPU call to seconds), grids of ``s`` x ``s`` cells (default 7, or the input's shorter side when that is
    smaller) kept with probability ``p``; hidden pixels show
    ``baseline`` (default 'zero': black, the image times the mask; the paper's code hid pixels at the
    dataset's mean colour, as it multiplied the normalized input). The paper's map is sum_i f(x_i) M_i / (N p)
    (``centered=False``). By default the mean score f̄ is its control variate: sum_i (f(x_i) - f̄) M_i / (N p)
    + f̄, the same expectation with the noise of the scores' level removed — with 1000 masks the paper's sum
    carries a ripple of about 3 % of the mean score (10 % over a model that ignores its input, whose centered
    map is exactly constant), and adding a constant to the scores (logits, margins) can reorder its pixels;
    the centered map only shifts by that constant.
    """
    centered = check_bool(centered, "centered")
    if isinstance(n_masks, bool) or not isinstance(n_masks, (int, np.integer)) or n_masks < 1:
        raise ValueError(f"n_masks: expected a positive int, got {n_masks!r}")
    _, h, w = ctx.x.shape
    if s is None:  # the paper's 7 x 7 grid, fewer cells on an input with a side under 7 pixels
        s = min(DEFAULT_S, h, w)
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 1 <= s <= min(h, w):
        raise ValueError(f"s: expected an int from 1 to {min(h, w)} (grid cells per side), got {s!r}")
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0 < p <= 1:
        raise ValueError(f"p: expected a keep probability in (0, 1], got {p!r}")
    remaining = ctx.remaining()
    n = int(n_masks) if remaining is None else min(int(n_masks), remaining)
    if n < 1:
        raise ValueError(f"budget: {ctx.budget} evaluations leave no room for RISE masks")
    grids = GridStream(ctx.rng, n, int(s), float(p), (h, w))
    perturber = ctx.perturber(ctx.baseline(baseline), desc="rise")
    device = ctx.x.device
    total = np.zeros((h, w), dtype=np.float64)  # running sums (float64 on the host: any device works)
    cover = np.zeros((h, w), dtype=np.float64)  # sum_i M_i, for the centered map
    score_sum = [0.0]

    def make(start: int, stop: int) -> torch.Tensor:  # masks are drawn and made pass by pass, never all at once
        return upsample_masks(*grids.take(start, stop), (h, w), device)

    def consume(m: torch.Tensor, probs: np.ndarray) -> None:
        f = np.asarray(probs[:, ctx.target], dtype=np.float64)
        md = m.detach().to("cpu", torch.float64)  # float64 sums on the host: large scores stay in range, any device
        total[...] += torch.tensordot(torch.from_numpy(f), md, dims=1).numpy()
        cover[...] += md.sum(dim=0).numpy()
        score_sum[0] += float(f.sum())

    perturber.score_masks(make, n, consume)
    if centered:
        mean = score_sum[0] / n
        heat = (total - mean * cover) / (n * float(p)) + mean
        formula = "sum_i (f(x_i) - mean f) M_i / (N p) + mean f"
    else:
        heat, formula = total / (n * float(p)), "sum_i f(x_i) M_i / (N p)"
    extras = {"n_masks": n, "s": int(s), "p": float(p), "centered": centered, "normalization": formula}
    return MethodResult(map=heat, interpolation="bilinear", extras=extras)
