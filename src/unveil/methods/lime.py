"""LIME for images: random on/off masks over segments, a weighted local surrogate, its weights as the map.

Sampling and weighting follow the ``lime`` package (each segment kept with probability 1/2, the first sample
is the whole image, cosine distance to it, kernel sqrt(exp(-d^2 / width^2)) with width 0.25); the surrogate
and segmentation options follow MATLAB's imageLIME as well (grid features, regression-tree surrogate,
bicubic upsampling of grid maps).
"""

from __future__ import annotations

import warnings

import numpy as np

from .registry import Context, MethodResult, check_positive, register

SURROGATES = ("ridge", "lasso", "tree")
UPSAMPLING = ("bicubic", "nearest", "none")


# ----------------------------------------------------------------------------- plain functions
#: The most mask entries (n_samples x n_features) LIME may draw: the surrogate is fitted on all of them at once,
#: as float64 (2 GiB at this bound).
MAX_MASK_ENTRIES = 2**28


def warn_few_samples(n_samples: int, n_features: int, what: str = "features", option: str = "n_samples") -> None:
    """A warning when ``n_samples`` (the unperturbed input included) do not exceed the ``n_features`` the
    surrogate weighs: the fit is then underdetermined and the ridge penalty, not the samples, sets the weights."""
    if n_samples <= n_features:
        warnings.warn(f"lime: {n_samples} samples (the unperturbed input included) for {n_features} {what}: the "
                      f"surrogate's weights are not determined by so few (the ridge penalty picks them); give more "
                      f"samples ({option}, or a larger budget)", UserWarning, stacklevel=4)


def check_sample_entries(n_samples: int, n_features: int, what: str = "samples") -> None:
    """A ValueError naming ``n_samples`` when ``n_samples`` x ``n_features`` masks, all fitted at once, would be
    more than :data:`MAX_MASK_ENTRIES` entries."""
    if n_samples * n_features > MAX_MASK_ENTRIES:
        raise ValueError(f"n_samples: {n_samples} {what} of {n_features} segments need "
                         f"{n_samples * n_features * 8 / 2**30:.1f} GiB for the fit (all at once, float64); at most "
                         f"{MAX_MASK_ENTRIES // n_features} here")


def sample_masks(rng: np.random.Generator, n_samples: int, n_features: int) -> np.ndarray:
    """n_samples x n_features {0, 1} masks, each feature kept with probability 1/2; row 0 keeps everything.
    A ValueError names ``n_samples`` when there would be more than :data:`MAX_MASK_ENTRIES`."""
    check_sample_entries(n_samples, n_features)
    masks = rng.integers(0, 2, size=(n_samples, n_features), dtype=np.uint8)
    masks[0] = 1
    return masks


def kernel_weights(masks: np.ndarray, kernel_width: float = 0.25) -> np.ndarray:
    """sqrt(exp(-d^2 / width^2)) with d the cosine distance of each mask to the all-ones mask."""
    x = masks.astype(np.float64)
    norms = np.linalg.norm(x, axis=1) * np.sqrt(x.shape[1])
    cos = np.divide(x.sum(axis=1), norms, out=np.zeros(len(x)), where=norms > 0)
    d = 1.0 - cos
    d[d < 1e-12] = 0.0  # the full mask is at distance 0 exactly (not 2e-16 of rounding)
    with np.errstate(over="ignore"):  # (d / width)^2: no overflow for huge widths; inf for tiny ones gives 0
        return np.sqrt(np.exp(-((d / kernel_width) ** 2)))


def constant_scores(y: np.ndarray) -> bool:
    """Whether the scores ``y`` are all equal, to float rounding (a spread under 1e-12 of their own size, so
    that tiny scores that vary, 1e-15 against 4e-15, still count as varying)."""
    y = np.asarray(y, dtype=np.float64)
    return y.size == 0 or float(np.ptp(y)) <= 1e-12 * float(np.max(np.abs(y)))


def weighted_r2(y: np.ndarray, pred: np.ndarray, w: np.ndarray) -> float:
    """Weighted coefficient of determination (as sklearn's ``score`` with ``sample_weight``). For scores that
    do not vary (:func:`constant_scores`) it is 1 when the predictions equal them to the same rounding, else 0
    (sklearn's convention), instead of a ratio of two rounding errors."""
    if constant_scores(y):
        return 1.0 if constant_scores(np.concatenate([np.asarray(y, np.float64), np.asarray(pred, np.float64)])) \
            else 0.0
    mean = np.average(y, weights=w)
    ss_res = float(np.sum(w * (y - pred) ** 2))
    ss_tot = float(np.sum(w * (y - mean) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)


def weighted_normal_equations(X: np.ndarray, y: np.ndarray, w: np.ndarray):
    """The weighted, centred least-squares system of ``X`` (n x d), ``y`` (n) under sample weights ``w`` (n):
    (x_mean, y_mean, Xc' W Xc, Xc' W yc, yc' W yc) with Xc, yc centred on the weighted means (float64)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    sw = float(w.sum())
    x_mean = (w @ X) / sw
    y_mean = float(w @ y) / sw
    xc = X - x_mean
    yc = y - y_mean
    return x_mean, y_mean, xc.T @ (w[:, None] * xc), xc.T @ (w * yc), float(w @ yc**2)


def weighted_ridge(X: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: float = 1.0) -> tuple[np.ndarray, float]:
    """Weighted ridge regression with an unpenalized intercept, in closed form: minimizes
    sum_i w_i (y_i - b - x_i . beta)^2 + alpha |beta|^2 (the fit of ``sklearn.linear_model.Ridge(alpha)`` with
    ``sample_weight=w``, without importing scikit-learn, which costs a second or more per process).
    Returns (beta, b)."""
    if not float(np.sum(w)) > 0:
        raise ValueError("surrogate: the sample weights sum to zero; no sample is close enough to the input")
    x_mean, y_mean, gram, rhs, _ = weighted_normal_equations(X, y, w)
    gram[np.diag_indices_from(gram)] += float(alpha)
    try:
        beta = np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:  # alpha = 0 with collinear features: the minimum-norm solution
        beta = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return beta, y_mean - float(x_mean @ beta)


def fit_surrogate(
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    surrogate: str = "ridge",
    alpha: float | None = None,
    seed: int = 0,
    max_depth: int | None = None,
) -> tuple[np.ndarray, float, float]:
    """Fit the weighted surrogate; return (weight per feature, intercept, weighted R²). Scores that do not
    vary (to rounding: :func:`constant_scores`) give weights exactly 0 and R² 1, whatever the surrogate."""
    X = X.astype(np.float64)
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate: unknown {surrogate!r}; choose one of {SURROGATES}")
    if constant_scores(y):  # nothing to explain: not the fit's rounding noise (1e-32 weights)
        return np.zeros(X.shape[1]), (float(np.mean(y)) if surrogate != "tree" else float("nan")), 1.0
    if surrogate == "ridge":
        coef, intercept = weighted_ridge(X, y, w, 1.0 if alpha is None else alpha)
        return coef, intercept, weighted_r2(y, X @ coef + intercept, w)
    if surrogate == "lasso":
        from sklearn.linear_model import Lasso

        reg = Lasso(alpha=1e-3 if alpha is None else alpha, fit_intercept=True, max_iter=10000)
        reg.fit(X, y, sample_weight=w)
        coef, intercept = reg.coef_, float(reg.intercept_)
    else:  # "tree" (checked above)
        from sklearn.tree import DecisionTreeRegressor

        reg = DecisionTreeRegressor(max_depth=max_depth, random_state=seed)
        reg.fit(X, y, sample_weight=w)
        coef, intercept = reg.feature_importances_, float("nan")
    return np.asarray(coef, dtype=np.float64), intercept, weighted_r2(y, reg.predict(X), w)


def _ridge_r2(X, y, w, cols, alpha):
    return fit_surrogate(X[:, cols], y, w, "ridge", alpha)[2] if len(cols) else 0.0


def select_forward(X, y, w, k, alpha=None, **_):
    """Greedy forward selection: add the feature that raises the weighted ridge R² most, k times."""
    chosen: list[int] = []
    for _ in range(min(k, X.shape[1])):
        rest = [j for j in range(X.shape[1]) if j not in chosen]
        scores = [_ridge_r2(X, y, w, chosen + [j], alpha) for j in rest]
        chosen.append(rest[int(np.argmax(scores))])
    return np.asarray(chosen, dtype=np.int64)


def select_highest_weights(X, y, w, k, alpha=None, **_):
    """The k features with the largest |weight| in a ridge fit on all features."""
    coef = fit_surrogate(X, y, w, "ridge", alpha)[0]
    return np.argsort(-np.abs(coef), kind="stable")[:k].astype(np.int64)


#: feature selection strategies by name: fn(X, y, w, k, alpha=..., rng=...) -> selected indices.
SELECTIONS = {"forward": select_forward, "highest_weights": select_highest_weights}


# ----------------------------------------------------------------------------- the method
@register(
    "lime",
    family="perturbation",
    description="LIME: weighted surrogate (ridge, lasso or tree) over random on/off segment masks",
)
def lime(
    ctx: Context,
    *,
    n_samples: int = 1000,
    segmentation="slic",
    n_features: int = 50,
    segmentation_options: dict | None = None,
    baseline="segment_mean",
    kernel_width: float = 0.25,
    surrogate: str = "ridge",
    alpha: float | None = None,
    max_depth: int | None = None,
    selection: str = "all",
    n_select: int = 10,
    upsample: str = "bicubic",
) -> MethodResult:
    """``n_samples`` masks (``budget`` caps them); ``selection`` ('all', 'forward', 'highest_weights', ...)
    keeps ``n_select`` features and refits on them; ``upsample`` applies to grid segmentations only."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 2:
        raise ValueError(f"n_samples: expected an int >= 2, got {n_samples!r}")
    if surrogate not in SURROGATES:
        raise ValueError(f"surrogate: unknown {surrogate!r}; choose one of {SURROGATES}")
    if upsample not in UPSAMPLING:
        raise ValueError(f"upsample: unknown {upsample!r}; choose one of {UPSAMPLING}")
    if selection != "all" and selection not in SELECTIONS:
        raise ValueError(f"selection: unknown {selection!r}; choose 'all' or one of {sorted(SELECTIONS)}")
    check_positive("kernel_width", kernel_width)
    if alpha is not None:
        alpha = check_positive("alpha", alpha, allow_zero=True)
    if max_depth is not None:
        max_depth = check_positive("max_depth", max_depth, integer=True)
    n_select = check_positive("n_select", n_select, integer=True)
    labels = ctx.segment(segmentation, n_features, segmentation_options)
    k = int(labels.max()) + 1
    remaining = ctx.remaining()
    n = int(n_samples) if remaining is None else min(int(n_samples), remaining + 1)  # row 0 is already scored
    if n < 2:
        raise ValueError(f"budget: {ctx.budget} evaluations leave no room for LIME samples")
    warn_few_samples(n, k, "segments")
    masks = sample_masks(ctx.rng, n, k)
    perturber = ctx.perturber(ctx.baseline(baseline, labels), labels, desc="lime")
    y = perturber.score_features(masks)[:, ctx.target].astype(np.float64)
    w = kernel_weights(masks, kernel_width)
    X = masks.astype(np.float64)

    if selection == "all":
        used = np.arange(k)
    else:
        used = np.asarray(
            SELECTIONS[selection](X, y, w, min(int(n_select), k), alpha=alpha, rng=ctx.rng, seed=ctx.seed), np.int64
        )
    coef, intercept, r2 = fit_surrogate(X[:, used], y, w, surrogate, alpha, ctx.seed, max_depth)
    weights = np.zeros(k, dtype=np.float64)
    weights[used] = coef
    extras = {
        "r2": r2,
        "intercept": intercept,
        "n_samples": n,
        "n_features": k,
        "selected": used.tolist() if selection != "all" else None,
        "local_prediction": float(intercept + coef.sum()) if surrogate != "tree" else None,
    }
    if extras["selected"] is None:
        del extras["selected"]
    result = MethodResult(segments=labels, weights=weights, extras=extras)
    if isinstance(segmentation, str) and segmentation == "grid" and upsample == "bicubic":
        from ..segmentation import grid_shape

        rows, cols = grid_shape(*labels.shape, n_features)
        result.map = weights.reshape(rows, cols)
        result.interpolation = "bicubic"
    return result
