"""Segmentations of the model input into features: superpixels, a regular grid, or a user label map.

Every function returns an H x W int64 label map with labels 0..K-1, each label present at least once.
Segmentation runs on the resized model input; :func:`upsample_labels` maps the labels back to the image.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SEGMENTATIONS", "segment", "grid", "grid_shape", "relabel", "upsample_labels"]

SEGMENTATIONS = ("slic", "quickshift", "felzenszwalb", "grid")


def relabel(labels: np.ndarray) -> np.ndarray:
    """Map arbitrary integer labels to consecutive 0..K-1 (order of first value kept sorted)."""
    _, inv = np.unique(labels, return_inverse=True)
    return inv.reshape(labels.shape).astype(np.int64)


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

    ``method`` is one of :data:`SEGMENTATIONS` or a label map (any integer array, resized to the image by
    nearest neighbour). ``n_features`` is the target number of segments for ``slic`` and ``grid`` (and sets
    the scale of ``felzenszwalb``); ``quickshift`` uses its own options (defaults as in the ``lime``
    package: kernel_size=4, max_dist=200, ratio=0.2). Extra ``options`` go to scikit-image.
    """
    h, w = image.shape[:2]
    if isinstance(method, np.ndarray):
        labels = np.asarray(method)
        if labels.ndim != 2 or labels.size == 0:
            raise ValueError(f"segmentation: a label map must be 2-D (H x W) and not empty, got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"segmentation: a label map must hold integers, got dtype {labels.dtype}")
        if labels.shape != (h, w):
            labels = upsample_labels(labels, (h, w))
        return relabel(labels)
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
