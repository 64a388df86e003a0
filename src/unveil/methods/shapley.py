"""Shapley value sampling over segments (Castro, Gómez & Tejada 2009).

Each random permutation of the K features adds them one at a time to the empty coalition (every feature at
the baseline) until all are present; a feature's sample is the score change when it joins. The mean over
permutations is an unbiased estimate of its Shapley value, and every permutation's samples sum exactly to
f(all) - f(none), so the estimate is efficient for any number of permutations.

All coalitions of a chunk of permutations are built as one mask array and scored by the Perturber, which
scores each distinct mask once: the full coalition is the unperturbed input (already known), the empty one is
paid for once, and coalitions that repeat across permutations cost nothing.
"""

from __future__ import annotations

import math

import numpy as np

from .registry import Context, MethodResult, register

#: permutations per call when neither ``n_permutations`` nor a budget says otherwise.
DEFAULT_PERMUTATIONS = 20
#: most mask entries (permutations x (K + 1) x K) built at once.
CHUNK_ENTRIES = 1 << 20


# ----------------------------------------------------------------------------- plain functions
def permutation_ranks(perms: np.ndarray) -> np.ndarray:
    """P x K permutations -> P x K ranks: ``ranks[p, f]`` is the position of feature f in permutation p."""
    perms = np.asarray(perms)
    ranks = np.empty_like(perms)
    ranks[np.arange(perms.shape[0])[:, None], perms] = np.arange(perms.shape[1])
    return ranks


def permutation_masks(perms: np.ndarray) -> np.ndarray:
    """P x K permutations -> P x (K + 1) x K {0, 1} uint8 coalitions: row j keeps the first j features."""
    ranks = permutation_ranks(perms)
    k = ranks.shape[1]
    return (ranks[:, None, :] < np.arange(k + 1)[None, :, None]).astype(np.uint8)


def marginal_contributions(perms: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores P x (K + 1) along each permutation's coalitions -> P x K samples, column f = feature f's change."""
    steps = np.diff(np.asarray(scores, dtype=np.float64), axis=1)
    return np.take_along_axis(steps, permutation_ranks(perms), axis=1)


def budget_chunks(ctx: Context, total: int | None, unit_cost: int, first_cost: int, cap: int):
    """Yield chunk sizes (units, e.g. permutations) until ``total`` units are done or the budget is spent.

    Each chunk is sized so that its worst case (``unit_cost`` new evaluations per unit, plus ``first_cost``
    for the first chunk) fits ``ctx.remaining()`` at that moment; evaluations saved by repeated masks are
    spent on the next chunks. ``total`` None means: as many as the budget allows (a budget is then needed),
    and ends early once a chunk spends no evaluation (every coalition it met was known: with few features
    all of them soon are, and the budget would never run down).
    """
    done, extra = 0, first_cost
    while total is None or done < total:
        size = cap if total is None else min(cap, total - done)
        remaining = ctx.remaining()
        if remaining is not None:
            fits = (remaining - extra) // unit_cost if unit_cost > 0 else (size if remaining >= extra else 0)
            size = min(size, fits)
        if size <= 0:
            return
        yield size
        done += size
        extra = 0
        if total is None and ctx.remaining() == remaining:
            return


# ----------------------------------------------------------------------------- the method
@register(
    "shapley",
    family="perturbation",
    description="Shapley value sampling: mean score change of each segment joining random permutations",
)
def shapley(
    ctx: Context,
    *,
    n_permutations: int | None = None,
    segmentation="slic",
    n_features: int = 50,
    segmentation_options: dict | None = None,
    baseline="segment_mean",
) -> MethodResult:
    """``n_permutations`` random orders of the segments (default 20; with a ``budget`` and no
    ``n_permutations``, as many as the budget allows, an explicit number is capped by it).

    A permutation over K segments costs at most K - 1 new evaluations (the full coalition is the input
    itself), the first one also pays for the empty coalition; the budget is counted at that worst case,
    chunk by chunk, and evaluations saved by repeated coalitions buy further permutations. ``extras``:
    ``stderr`` per segment (sample standard deviation / sqrt(permutations); NaN with one permutation),
    ``n_permutations``, ``masks_requested`` and ``masks_evaluated`` (after removing repeats),
    ``f_all`` and ``f_none`` (the weights sum to their difference).
    """
    if n_permutations is not None and (
        isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1
    ):
        raise ValueError(f"n_permutations: expected a positive int or None, got {n_permutations!r}")
    labels = ctx.segment(segmentation, n_features, segmentation_options)
    k = int(labels.max()) + 1
    perturber = ctx.perturber(ctx.baseline(baseline, labels), labels, desc="shapley")
    if n_permutations is not None:
        total = int(n_permutations)
    else:
        total = DEFAULT_PERMUTATIONS if ctx.budget is None else None
    if k == 1:  # one feature: a single permutation is the exact value
        total = 1
    cap = max(1, CHUNK_ENTRIES // ((k + 1) * k))
    samples, f_none = [], None
    for size in budget_chunks(ctx, total, k - 1, 1, cap):
        perms = ctx.rng.permuted(np.tile(np.arange(k), (size, 1)), axis=1)
        scores = perturber.score_features(permutation_masks(perms).reshape(-1, k))[:, ctx.target]
        scores = scores.reshape(size, k + 1)
        f_none = float(scores[0, 0])
        samples.append(marginal_contributions(perms, scores))
    if not samples:
        raise ValueError(
            f"budget: {ctx.budget} evaluations leave no room for one permutation over {k} segments "
            f"(it needs {k}); raise the budget or lower n_features"
        )
    samples = np.concatenate(samples)
    n = samples.shape[0]
    phi = samples.mean(axis=0)
    stderr = samples.std(axis=0, ddof=1) / math.sqrt(n) if n > 1 else np.full(k, np.nan)
    extras = {
        "stderr": stderr.astype(np.float32),
        "n_permutations": n,
        "n_features": k,
        "masks_requested": n * (k + 1),
        "masks_evaluated": perturber.n_evals,
        "f_all": float(ctx.probs[ctx.target]),
        "f_none": f_none,
    }
    return MethodResult(segments=labels, weights=phi, extras=extras)
