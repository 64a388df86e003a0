"""KernelSHAP (Lundberg & Lee 2017): LIME's weighted linear surrogate with the Shapley kernel.

With the kernel pi(z) = (K - 1) / (C(K, |z|) |z| (K - |z|)) over coalitions z of K segments, and the
constraints g(none) = f(none), g(all) = f(all), the weighted least-squares surrogate's coefficients are the
Shapley values. The two infinite-weight coalitions are enforced exactly: the intercept is f(none) and one
coefficient is eliminated so the weights sum to f(all) - f(none) by construction.

Coalitions are sampled with probability proportional to the kernel (a size k with probability
proportional to (K - 1) / (k (K - k)), then k segments uniformly), so every sample has the same weight;
by default each sample comes with its complement (paired sampling, which cancels much of the variance).
``sampling="uniform"`` uses LIME's own masks (each segment kept with probability 1/2) weighted by the kernel.
"""

from __future__ import annotations

import numpy as np

from .lime import check_sample_entries, sample_masks, weighted_r2
from .registry import Context, MethodResult, register
from .shapley import budget_chunks

SAMPLINGS = ("kernel", "uniform")
#: most coalitions drawn at once.
CHUNK_SAMPLES = 1 << 14


# ----------------------------------------------------------------------------- plain functions
def shapley_kernel(sizes: np.ndarray, n_features: int, log: bool = False) -> np.ndarray:
    """pi(z) = (K - 1) / (C(K, |z|) |z| (K - |z|)) for coalition sizes |z| (inf for 0 and K); ``log``: its
    logarithm (C(K, |z|) overflows past ~1030 features, where pi itself underflows to 0)."""
    k = np.asarray(sizes, dtype=np.float64)
    m = float(n_features)
    out = np.full(k.shape, np.inf)
    inner = (k > 0) & (k < m)
    ki = k[inner]
    from scipy.special import gammaln  # here, not at import: scipy.special takes ~0.2 s to load

    log_binom = gammaln(m + 1) - gammaln(ki + 1) - gammaln(m - ki + 1)
    log_pi = np.log(m - 1) - log_binom - np.log(ki) - np.log(m - ki)
    out[inner] = log_pi if log else np.exp(log_pi)
    return out


def size_distribution(n_features: int) -> np.ndarray:
    """Probabilities of coalition sizes 1..K-1 proportional to the kernel's total weight per size."""
    k = np.arange(1, n_features, dtype=np.float64)
    p = (n_features - 1) / (k * (n_features - k))
    return p / p.sum()


def sample_coalitions(rng: np.random.Generator, n: int, n_features: int, paired: bool = True) -> np.ndarray:
    """n x K {0, 1} uint8 coalitions drawn proportionally to the Shapley kernel (never empty nor full).

    ``paired``: rows come in pairs (z, 1 - z); the kernel is symmetric so the distribution is unchanged.
    """
    if n_features < 2:
        raise ValueError(f"n_features: KernelSHAP needs at least 2 segments, got {n_features}")
    m = (n + 1) // 2 if paired else n
    sizes = rng.choice(np.arange(1, n_features), size=m, p=size_distribution(n_features))
    ranks = np.argsort(np.argsort(rng.random((m, n_features)), axis=1), axis=1)
    z = (ranks < sizes[:, None]).astype(np.uint8)
    if paired:
        z = np.stack([z, 1 - z], axis=1).reshape(-1, n_features)[:n]
    return z


def constrained_fit(z: np.ndarray, y: np.ndarray, w: np.ndarray, f_none: float, f_all: float) -> np.ndarray:
    """Weights phi minimizing sum w (y - f_none - z . phi)^2 subject to sum(phi) = f_all - f_none.

    The last coefficient is eliminated (phi_K = f_all - f_none - sum of the others), so the constraint holds
    by construction; the rest is a weighted least-squares fit (minimum norm when under-determined).
    """
    z = np.asarray(z, dtype=np.float64)
    delta = f_all - f_none
    target = np.asarray(y, dtype=np.float64) - f_none - z[:, -1] * delta
    design = z[:, :-1] - z[:, -1:]
    sw = np.sqrt(np.asarray(w, dtype=np.float64))
    head = np.linalg.lstsq(design * sw[:, None], target * sw, rcond=None)[0]
    return np.append(head, delta - head.sum())


# ----------------------------------------------------------------------------- the method
@register(
    "kernelshap",
    family="perturbation",
    description="KernelSHAP: Shapley-kernel weighted linear surrogate over segment coalitions, efficiency exact",
)
def kernelshap(
    ctx: Context,
    *,
    n_samples: int = 1000,
    segmentation="slic",
    n_features: int = 50,
    segmentation_options: dict | None = None,
    baseline="segment_mean",
    sampling: str = "kernel",
    paired: bool = True,
) -> MethodResult:
    """``n_samples`` coalitions besides the empty and the full one (``budget`` caps them; the full one is the input
    itself, the empty one costs one evaluation). Repeated coalitions are scored once, so the evaluations are at most
    ``n_samples + 2`` (the input's own pass and the empty coalition counted); under a budget the samples are drawn
    chunk by chunk and the evaluations saved by repeats buy more samples. ``sampling``: 'kernel' (sizes drawn by the
    kernel, ``paired`` with complements) or 'uniform' (LIME's masks, weighted by the kernel). ``extras``: ``r2``
    (kernel-weighted fit of the sampled scores), ``intercept`` (= f(none)), ``f_all``, ``n_samples``,
    ``masks_evaluated``.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise ValueError(f"n_samples: expected a positive int, got {n_samples!r}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: unknown {sampling!r}; choose one of {SAMPLINGS}")
    if not isinstance(paired, (bool, np.bool_)):
        raise TypeError(f"paired: expected a bool, got {type(paired).__name__}")
    labels = ctx.segment(segmentation, n_features, segmentation_options)
    k = int(labels.max()) + 1
    check_sample_entries(n_samples, k, "coalitions")  # every sample is kept for the constrained fit
    perturber = ctx.perturber(ctx.baseline(baseline, labels), labels, desc="kernelshap")
    f_all = float(ctx.probs[ctx.target])
    f_none = None
    zs, ys = [], []
    if k == 1:  # one segment: all of the change is its own (efficiency); only f(none) is needed
        remaining = ctx.remaining()
        if remaining is not None and remaining < 1:
            raise ValueError(f"budget: {ctx.budget} evaluations leave no room for KernelSHAP's f(none)")
        f_none = float(perturber.score_features(np.zeros((1, 1), np.uint8))[0, ctx.target])
        return MethodResult(segments=labels, weights=np.array([f_all - f_none]), extras={
            "r2": float("nan"), "intercept": f_none, "f_all": f_all, "n_samples": 0, "n_features": 1,
            "masks_evaluated": perturber.n_evals, "local_prediction": f_all})
    for size in budget_chunks(ctx, int(n_samples), 1, 1, CHUNK_SAMPLES):
        if sampling == "kernel":
            z = sample_coalitions(ctx.rng, size, k, bool(paired))
        else:
            z = sample_masks(ctx.rng, size, k)
        # the empty coalition rides along with the first chunk (the Perturber scores it once)
        rows = np.concatenate([np.zeros((1, k), np.uint8), z])
        y = perturber.score_features(rows)[:, ctx.target].astype(np.float64)
        f_none = float(y[0])
        zs.append(z)
        ys.append(y[1:])
    if f_none is None:
        raise ValueError(f"budget: {ctx.budget} evaluations leave no room for KernelSHAP samples")
    z, y = np.concatenate(zs), np.concatenate(ys)
    n_drawn = len(z)
    sizes = z.sum(axis=1)
    inner = (sizes > 0) & (sizes < k)  # the empty and full coalitions are constraints, not samples
    z, y, sizes = z[inner], y[inner], sizes[inner]
    if sampling == "kernel":
        w = np.ones(len(y))
    else:
        lw = shapley_kernel(sizes, k, log=True)  # normalized in log space: the weights themselves underflow
        w = np.exp(lw - lw.max()) if len(lw) else lw
        w = w / w.sum() * len(w) if len(w) else w
    if len(y):
        phi = constrained_fit(z, y, w, f_none, f_all)
        r2 = weighted_r2(y, f_none + z @ phi, w)
    else:  # nothing but the constraint: split the difference evenly
        phi, r2 = np.full(k, (f_all - f_none) / k), float("nan")
    extras = {
        "r2": float(r2),
        "intercept": f_none,
        "f_all": f_all,
        "n_samples": n_drawn,
        "n_features": k,
        "masks_evaluated": perturber.n_evals,
        "local_prediction": float(f_none + phi.sum()),
    }
    return MethodResult(segments=labels, weights=phi, extras=extras)
