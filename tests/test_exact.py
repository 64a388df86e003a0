"""Exact answers: LIME recovers a model linear in the segment indicators; occlusion of a linear model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import unveil
from unveil.segmentation import grid


def segment_linear_model(coef: np.ndarray, labels: np.ndarray, bias: float = 0.1):
    """score(x) = bias + sum_k coef_k * mean of x over segment k (channel 0); with a white image and a zero
    baseline, the score of mask m is exactly bias + coef . m."""
    k = len(coef)
    counts = np.bincount(labels.reshape(-1), minlength=k)

    def fn(batch):
        flat = batch[..., 0].reshape(len(batch), -1)
        seg_means = np.stack([np.bincount(labels.reshape(-1), weights=row, minlength=k) for row in flat]) / counts
        s = bias + seg_means @ coef
        return np.stack([s, 1 - s], axis=1)

    return unveil.Model(fn, input_size=labels.shape, outputs="scores", batch_size=50)


@pytest.mark.parametrize("selection", ["all", "forward", "highest_weights"])
def test_lime_recovers_linear_coefficients(selection):
    labels = grid(24, 24, 9)
    coef = np.array([0.30, -0.10, 0.05, 0.20, 0.0, -0.25, 0.12, 0.07, 0.15])
    model = segment_linear_model(coef, labels)
    image = np.ones((24, 24, 3), np.float32)
    exp = unveil.explain(model, image, method="lime", target=0, seed=1, n_samples=300, segmentation=labels,
                         baseline="zero", alpha=1e-6, selection=selection, n_select=9, progress=False)
    np.testing.assert_allclose(exp.weights, coef, atol=1e-4)
    assert exp.extras["r2"] == pytest.approx(1.0, abs=1e-6)
    assert exp.extras["intercept"] == pytest.approx(0.1, abs=1e-4)
    # the map paints each segment with its coefficient
    np.testing.assert_allclose(exp.map, coef[labels], atol=1e-4)


def test_lime_forward_selection_picks_the_largest_effects():
    labels = grid(24, 24, 9)
    coef = np.array([0.30, -0.01, 0.02, 0.20, 0.0, -0.25, 0.01, 0.02, 0.01])
    model = segment_linear_model(coef, labels)
    exp = unveil.explain(model, np.ones((24, 24, 3), np.float32), method="lime", target=0, seed=0,
                         n_samples=400, segmentation=labels, baseline="zero", alpha=1e-6,
                         selection="forward", n_select=3, progress=False)
    assert set(exp.extras["selected"]) == {0, 3, 5}
    assert set(np.flatnonzero(exp.weights)) == {0, 3, 5}


def test_lime_tree_surrogate_ranks_the_dominant_segment_first():
    labels = grid(24, 24, 4)
    coef = np.array([0.6, 0.05, 0.0, 0.1])
    model = segment_linear_model(coef, labels)
    exp = unveil.explain(model, np.ones((24, 24, 3), np.float32), method="lime", target=0, seed=0,
                         n_samples=200, segmentation=labels, baseline="zero", surrogate="tree", progress=False)
    assert int(np.argmax(exp.weights)) == 0
    assert exp.weights.sum() == pytest.approx(1.0)  # importances of a fitted tree sum to one
    assert np.all(exp.weights >= 0)


def test_lime_grid_bicubic_map_keeps_cell_values_at_cell_centres():
    labels = grid(24, 24, 4)  # 2 x 2 cells of 12 px
    coef = np.array([0.4, 0.0, 0.0, -0.2])
    model = segment_linear_model(coef, labels)
    kw = dict(method="lime", target=0, seed=0, n_samples=100, segmentation="grid", n_features=4,
              baseline="zero", alpha=1e-6, progress=False)
    smooth = unveil.explain(model, np.ones((24, 24, 3), np.float32), upsample="bicubic", **kw)
    blocky = unveil.explain(model, np.ones((24, 24, 3), np.float32), upsample="nearest", **kw)
    np.testing.assert_allclose(blocky.map, coef[labels], atol=1e-4)
    assert smooth.map[0, 0] == pytest.approx(0.4, abs=0.02)
    assert len(np.unique(np.round(smooth.map, 4))) > 4  # interpolated, not blocks


class PixelLinear(torch.nn.Module):
    """logit_0 = sum(w * x), logit_1 = 0: with outputs='scores' the score is the linear form itself."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x):
        s = (x * self.w).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], 1)


def random_pixel_linear(seed: int, h: int, w: int, batch_size: int | None = None):
    """(model, image, weights): a PixelLinear model with small random weights and a random h x w image."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(3, h, w)) * 0.01
    image = rng.random((h, w, 3)).astype(np.float32)
    kw = {} if batch_size is None else {"batch_size": batch_size}
    return unveil.Model(PixelLinear(weights), input_size=(h, w), outputs="scores", **kw), image, weights


def test_occlusion_of_a_linear_model_equals_the_analytic_drop():
    h = w = 12
    model, image, weights = random_pixel_linear(0, h, w, batch_size=8)
    window, stride = 4, 2
    exp = unveil.explain(model, image, method="occlusion", target=0, window=window, stride=stride,
                         baseline="zero", progress=False)
    contrib = (weights * image.transpose(2, 0, 1)).sum(0)  # each pixel's part of the score
    starts = list(range(0, h - window + 1, stride))
    total, count = np.zeros((h, w)), np.zeros((h, w))
    drops = []
    for y in starts:
        for x in starts:
            d = contrib[y:y + window, x:x + window].sum()  # removing a window removes exactly its pixels' terms
            drops.append(d)
            total[y:y + window, x:x + window] += d
            count[y:y + window, x:x + window] += 1
    np.testing.assert_allclose(exp.extras["drops"], drops, atol=1e-5)
    np.testing.assert_allclose(exp.map, total / count, atol=1e-5)


def test_occlusion_with_one_pixel_windows_is_gradient_times_input():
    model, image, weights = random_pixel_linear(1, 8, 8)
    exp = unveil.explain(model, image, method="occlusion", target=0, window=1, stride=1, baseline="zero",
                         progress=False)
    np.testing.assert_allclose(exp.map, (weights * image.transpose(2, 0, 1)).sum(0), atol=1e-6)
    assert exp.n_evals == 1 + 64


def test_occlusion_budget_grows_the_stride():
    model = unveil.Model(PixelLinear(np.ones((3, 32, 32)) * 1e-3), input_size=(32, 32), outputs="scores")
    img = np.full((32, 32, 3), 0.5, np.float32)
    free = unveil.explain(model, img, method="occlusion", target=0, window=8, stride=2, progress=False)
    capped = unveil.explain(model, img, method="occlusion", target=0, window=8, stride=2, budget=30, progress=False)
    assert free.n_evals == 1 + 13 * 13
    assert capped.n_evals <= 30 and capped.extras["stride"] > 2


def test_occlusion_budget_rule_by_hand_and_every_pixel_stays_covered():
    """Under a budget the stride grows up to the window, then the window by an eighth (at least 1) with the
    stride equal to it: traced by hand for two cases; the stride never passes the window, so no pixel is left
    out of every window."""
    from unveil.methods.occlusion import fit_to_budget, window_starts

    # 20 x 20, window 4: stride 2, 3, 4 give 81, 49, 25 windows; window 5, stride 5 gives 4 x 4 = 16
    assert fit_to_budget(20, 20, 4, 2, 16) == (5, 5)
    # 100 x 100, window 16: windows 16, 18, 20, 22, 24, 27, 30, 33 are too many, 37 gives 3 x 3
    assert fit_to_budget(100, 100, 16, 16, 9) == (37, 37)
    for h, w, window, stride, budget in [(20, 20, 4, 2, 16), (37, 23, 5, 1, 11), (64, 48, 9, 3, 5), (9, 30, 2, 1, 7)]:
        win, st = fit_to_budget(h, w, window, stride, budget)
        ys, xs = window_starts(h, win, st), window_starts(w, win, st)
        assert st <= win and len(ys) * len(xs) <= budget
        covered = np.zeros((h, w), bool)
        for y in ys:
            for x in xs:
                covered[y:y + win, x:x + win] = True
        assert covered.all()


def test_occlusion_default_window_and_stride():
    """Default window: a seventh of the shorter side (rounded); stride: half the window; a given window longer
    than the shorter side is kept up to the longer side."""
    model = unveil.Model(PixelLinear(np.ones((3, 224, 160)) * 1e-4), input_size=(224, 160), outputs="scores")
    exp = unveil.explain(model, np.full((224, 160, 3), 0.5, np.float32), method="occlusion", target=0,
                         progress=False)
    assert (exp.extras["window"], exp.extras["stride"]) == (round(160 / 7), round(160 / 7) // 2) == (23, 11)
    model, image, weights = random_pixel_linear(2, 10, 30)
    exp = unveil.explain(model, image, method="occlusion", target=0, window=20, stride=5, baseline="zero",
                         progress=False)
    assert exp.extras["window"] == 20
    contrib = (weights * image.transpose(2, 0, 1)).sum(0)
    drops = [contrib[:, x:x + 20].sum() for x in (0, 5, 10)]  # one row of windows: 10 rows, 20 columns each
    np.testing.assert_allclose(exp.extras["drops"], drops, atol=1e-5)


@pytest.mark.parametrize("alpha", [1e-6, 0.01, 1.0, 25.0])
def test_weighted_ridge_equals_scikit_learns_ridge_with_sample_weights(alpha):
    from sklearn.linear_model import Ridge

    from unveil.methods.lime import fit_surrogate, weighted_ridge

    rng = np.random.default_rng(3)
    X = rng.integers(0, 2, size=(300, 12)).astype(np.float64)
    y = X @ rng.normal(size=12) + 0.3 + 0.05 * rng.normal(size=300)
    w = rng.uniform(0.01, 1.0, size=300)
    ref = Ridge(alpha=alpha).fit(X, y, sample_weight=w)
    beta, b = weighted_ridge(X, y, w, alpha)
    np.testing.assert_allclose(beta, ref.coef_, rtol=1e-6, atol=1e-9)
    assert b == pytest.approx(float(ref.intercept_), rel=1e-6, abs=1e-9)
    coef, intercept, r2 = fit_surrogate(X, y, w, "ridge", alpha)
    np.testing.assert_allclose(coef, ref.coef_, rtol=1e-6, atol=1e-9)
    assert r2 == pytest.approx(ref.score(X, y, sample_weight=w), rel=1e-9)


def test_weighted_ridge_refuses_weights_summing_to_zero():
    from unveil.methods.lime import weighted_ridge

    with pytest.raises(ValueError, match="sample weights sum to zero"):
        weighted_ridge(np.ones((4, 2)), np.ones(4), np.zeros(4))


def test_lime_kernel_weights_equal_the_lime_packages():
    """LIME's image kernel is the lime package's: sqrt(exp(-d^2 / w^2)) of scikit-learn's cosine distance of each
    mask to the all-ones mask."""
    import sklearn.metrics

    from unveil.methods.lime import kernel_weights
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 2, size=(200, 30)).astype(np.uint8)
    masks[0] = 1
    d = sklearn.metrics.pairwise_distances(masks, masks[:1], metric="cosine").ravel()
    ref = np.sqrt(np.exp(-(d ** 2) / 0.25 ** 2))  # lime_image.LimeImageExplainer's default kernel
    np.testing.assert_allclose(kernel_weights(masks, 0.25), ref, rtol=1e-12)
