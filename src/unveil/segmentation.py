"""Segmentations of the model input into features: superpixels, a regular grid, or a user label map.

Every function returns an H x W int64 label map with labels 0..K-1, each label present at least once.
Segmentation runs on the resized model input; :func:`upsample_labels` maps the labels back to the image.
A user's label map is the exception to that direction: it is drawn at the user's resolution, so
:func:`segment` returns it as a :class:`LabelMap` (the model-input map, every segment kept by
:func:`resize_labels`, carrying the user's map itself), and the explanation's segments are the user's map.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SEGMENTATIONS", "LabelMap", "segment", "grid", "grid_shape", "relabel", "resize_labels",
           "upsample_labels"]

SEGMENTATIONS = ("slic", "quickshift", "felzenszwalb", "grid")


def relabel(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary integer labels to consecutive 0..K-1 in the order of their values (int64)."""
    return _relabel_with_values(labels)[0].astype(np.int64)


class LabelMap(np.ndarray):
    """The h x w labels 0..K-1 at the model's input size made from a user's label map, holding the user's map.

    ``source``: the user's map relabelled 0..K-1 at the user's own resolution (int32), what the explanation's
    ``segments`` show; ``values``: the user's label of each index (``values[i]`` is segment i's label, sorted).
    Arrays derived from a LabelMap (slices, arithmetic) are plain label arrays without them.
    """

    source: np.ndarray | None
    values: np.ndarray | None

    def __new__(cls, labels: np.ndarray, source: np.ndarray, values: np.ndarray) -> "LabelMap":
        obj = np.asarray(labels).view(cls)
        obj.source = source
        obj.values = values
        return obj

    def __array_finalize__(self, obj) -> None:
        self.source = None
        self.values = None

    def __array_wrap__(self, arr, context=None, return_scalar=False):
        arr = np.asarray(arr).view(np.ndarray)  # results of ufuncs and reductions are plain arrays and scalars
        return arr[()] if return_scalar else arr


def _relabel_with_values(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels mapped to 0..K-1 in the order of their values, as int32; the K sorted original values)."""
    flat = labels.reshape(-1)
    lo, hi = int(flat.min()), int(flat.max())
    if hi < 2**63 and hi - lo < 4 * flat.size + (1 << 20):  # labels in a short range: a lookup table
        shifted = flat.astype(np.int64) - lo if lo else flat.astype(np.int64, copy=False)
        present = np.bincount(shifted, minlength=hi - lo + 1) > 0
        values = (np.flatnonzero(present) + lo).astype(labels.dtype)
        lut = (np.cumsum(present) - 1).astype(np.int32)
        inv = lut[shifted]
    else:
        values, inv = np.unique(flat, return_inverse=True)
        inv = inv.astype(np.int32)
    return inv.reshape(labels.shape), values


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an H x W map of labels 0..K-1 (every label present) to ``size`` = (height, width) by nearest
    neighbour, keeping every label.

    Enlarging keeps every label by itself. When shrinking, a segment thinner than an output pixel (a 1-pixel
    strip, a small dot) can fall between the sampled pixel centres; such a segment gets its share of the
    output area back (its area times the output/input pixel ratio, rounded, at least one pixel), taken evenly
    along the output pixels that hold most of it (each input pixel belongs to the output pixel holding its
    centre), never another segment's last pixel. A ValueError when there are more segments than output pixels.
    """
    labels = np.asarray(labels)
    out = upsample_labels(labels, size)
    H, W = labels.shape
    h, w = int(size[0]), int(size[1])
    if h >= H and w >= W:
        return out
    k = int(labels.max()) + 1
    counts = np.bincount(out.reshape(-1).astype(np.int64, copy=False), minlength=k)
    if counts.min() > 0:
        return out
    present = np.bincount(labels.reshape(-1).astype(np.int64, copy=False), minlength=k) > 0
    lost = np.flatnonzero((counts == 0) & present)
    if lost.size == 0:
        return out
    n = int(present.sum())
    if n > h * w:
        raise ValueError(f"segmentation: the label map has {n} segments but a {h} x {w} map holds only {h * w} "
                         "pixels; merge segments or use a larger input_size")
    out = np.array(out, copy=True)
    flat = out.reshape(-1)
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)  # output row of each input row
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    is_lost = np.zeros(k, dtype=bool)
    is_lost[lost] = True
    r, c = np.nonzero(is_lost[labels])
    lab = labels[r, c].astype(np.int64)
    pix = rows[r] * w + cols[c]
    # (label, output pixel) pairs, sorted by label then pixel, with the input pixels of the label they hold
    pairs, cover = np.unique(lab * (h * w) + pix, return_counts=True)
    plab, ppix = pairs // (h * w), pairs % (h * w)
    starts = np.searchsorted(plab, lost)
    ends = np.searchsorted(plab, lost, side="right")
    area = np.bincount(lab, minlength=k)
    centre_r = np.bincount(lab, weights=rows[r], minlength=k)
    centre_c = np.bincount(lab, weights=cols[c], minlength=k)
    for seg, a, b in zip(lost.tolist(), starts.tolist(), ends.tolist()):
        cand, cov = ppix[a:b], cover[a:b]
        cand = cand[cov * 2 >= cov.max()]  # the pixels that hold most of it (raster order)
        quota = max(1, int(round(area[seg] * h * w / (H * W))))
        if quota < cand.size:  # evenly spread over its pixels
            cand = cand[((np.arange(quota) + 0.5) * cand.size / quota).astype(np.int64)]
        got = 0
        for p in cand.tolist():
            owner = flat[p]
            if counts[owner] >= 2 and not is_lost[owner]:
                counts[owner] -= 1
                flat[p] = seg
                got += 1
        if not got:  # its pixels are other segments' last ones: the nearest pixel that can be spared
            spare = np.flatnonzero(counts[flat] >= 2)
            cy, cx = centre_r[seg] / area[seg], centre_c[seg] / area[seg]
            p = int(spare[np.argmin((spare // w - cy) ** 2 + (spare % w - cx) ** 2)])
            counts[flat[p]] -= 1
            flat[p] = seg
            got = 1
        counts[seg] = got
    return out


def grid_shape(height: int, width: int, n_features: int) -> tuple[int, int]:
    """Rows x cols of a grid with about ``n_features`` cells that are as square as the image allows."""
    n = max(1, int(n_features))
    rows = max(1, round(math.sqrt(n * height / width)))
    rows = min(rows, height)
    cols = max(1, min(width, round(n / rows)))
    return rows, cols


def grid(height: int, width: int, n_features: int = 49) -> np.ndarray:
    """A regular grid of about ``n_features`` cells (MATLAB imageLIME's "grid" segmentation)."""
    rows, cols = grid_shape(height, width, n_features)
    r = np.minimum((np.arange(height) * rows) // height, rows - 1)
    c = np.minimum((np.arange(width) * cols) // width, cols - 1)
    return (r[:, None] * cols + c[None, :]).astype(np.int64)


def segment(
    image: np.ndarray,
    method: str | np.ndarray = "slic",
    n_features: int = 50,
    seed: int = 0,
    **options,
) -> np.ndarray:
    """Segment an H x W x C float image in [0, 1] (any C: images without three channels are segmented on
    :func:`unveil.images.rgb_projection`).

    ``method`` is one of :data:`SEGMENTATIONS` or a user's label map: a 2-D integer array (any values,
    negative ones included; usually at the photo's resolution), returned as a :class:`LabelMap`: its labels
    mapped to 0..K-1 in the order of their values and resized to ``image`` (the model input) by
    :func:`resize_labels`, so that every segment keeps pixels. ``n_features`` is the target number of
    segments for ``slic`` and ``grid`` (and sets the scale of ``felzenszwalb``); ``quickshift`` uses its own
    options (defaults as in the ``lime`` package: kernel_size=4, max_dist=200, ratio=0.2). Extra ``options`` go
    to scikit-image.
    """
    h, w = image.shape[:2]
    if isinstance(method, np.ndarray):
        labels = np.asarray(method)
        if labels.ndim != 2 or labels.size == 0:
            raise ValueError(f"segmentation: a label map must be 2-D (H x W) and not empty, got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"segmentation: a label map must hold integers, got dtype {labels.dtype}")
        source, values = _relabel_with_values(labels)
        small = source if source.shape == (h, w) else resize_labels(source, (h, w))
        return LabelMap(small.astype(np.int64), source=source, values=values)
    if not isinstance(method, str) or method not in SEGMENTATIONS:
        raise ValueError(f"segmentation: unknown method {method!r}; choose one of {SEGMENTATIONS} or pass a label map")
    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 1:
        raise ValueError(f"n_features: expected a positive int, got {n_features!r}")
    if method == "grid":
        return grid(h, w, int(n_features))
    from skimage import segmentation as sks

    from .images import rgb_projection

    image = rgb_projection(image)

    if method == "slic":
        opts = dict(n_segments=int(n_features), compactness=10.0, sigma=1.0, start_label=0)
        run = sks.slic
    elif method == "quickshift":
        opts = dict(kernel_size=4, max_dist=200, ratio=0.2, rng=seed)
        run = sks.quickshift
    else:  # felzenszwalb: the scale that gives about n_features segments grows with the image area
        opts = dict(scale=max(1.0, h * w / (4.0 * n_features)), sigma=0.8, min_size=max(8, h * w // (8 * n_features)))
        run = sks.felzenszwalb
    opts.update(options)
    try:
        labels = run(image, **opts)
    except (TypeError, ValueError, ZeroDivisionError) as err:  # an option scikit-image refuses
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise ValueError(f"segmentation {method!r}" + (f" with {given}" if given else "")
                         + f" failed in scikit-image: {type(err).__name__}: {err}") from None
    return relabel(labels)


def upsample_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an H x W array (a label map, a coarse map) to ``size`` = (height, width)."""
    h, w = labels.shape
    H, W = size
    if (h, w) == (H, W):
        return labels
    rows = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]
