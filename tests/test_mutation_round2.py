"""Second mutation-testing round (metrics, STREAK, gradient methods, modified chain rules, Grad-CAM).

Each test pins a behaviour that a surviving mutant changed, against a value worked out independently (by hand,
by brute force, by another library, or a documented property), on small models built here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import unveil
from unveil import metrics
from unveil.explanation import Explanation
from unveil.methods import gradients as grad_mod
from unveil.methods.gradcam import gradcam_maps, resolve_layer
from unveil.methods.modified_rules import (
    Epsilon,
    Gradient,
    ModifiedChainRule,
    UnsupportedNonlinearity,
    deeplift_rules,
    elrp_rules,
    local_gradient,
    modified_gradients,
)
from unveil.streak import greedy, random_selection, streak, threshold_greedy

from conftest import tiny_model


def manual(m, image, target=0, method="manual", params=None, seed=None):
    return Explanation(map=np.asarray(m, np.float32), target=target, label="", score=1.0, method=method,
                       params=params or {}, seed=seed, image=image)


def rand_image(h=32, w=32, seed=0):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def unit(m):
    m = np.asarray(m, np.float64)
    return (m - m.min()) / (m.max() - m.min())


# ============================================================================= metrics: plain functions
def test_a_step_of_the_whole_image_is_one_step():
    """``step`` is a fraction in (0, 1]: 1.0 changes every pixel in one step."""
    np.testing.assert_array_equal(metrics.step_counts(7, 1.0), [0, 7])
    np.testing.assert_array_equal(metrics.Deletion(step=1.0).step, 1.0)


def test_map_ssim_is_the_ssim_of_the_maps_scaled_to_unit_range():
    """As Adebayo et al.: each map scaled to [0, 1], then SSIM with skimage's own default (7 x 7) window; a
    constant map scales to 0 everywhere (m - min is 0)."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a, b = rng.random((9, 11)), rng.random((9, 11))
    b[:5] += a[:5]  # some shared structure
    expected = structural_similarity(unit(a), unit(b), data_range=1.0)
    assert metrics.map_ssim(5 * a - 2, b) == pytest.approx(expected)
    flat = structural_similarity(np.zeros((9, 11)), unit(b), data_range=1.0)
    assert metrics.map_ssim(np.full((9, 11), 3.0), b) == pytest.approx(flat)


def test_map_ssim_on_maps_smaller_than_the_window():
    """Maps of a side under 7 use the largest odd window that fits; under 3 (no window fits), 1 when the scaled
    maps agree and 0 when they do not."""
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(1)
    a = rng.random((6, 6))
    b = a + 0.3 * rng.random((6, 6))
    assert metrics.map_ssim(a, a) == pytest.approx(1.0)
    assert metrics.map_ssim(a, b) == pytest.approx(structural_similarity(unit(a), unit(b), data_range=1.0,
                                                                         win_size=5))
    c = rng.random((3, 3))
    d = c + 0.3 * rng.random((3, 3))
    ssim3 = structural_similarity(unit(c), unit(d), data_range=1.0, win_size=3)
    assert 0.0 < ssim3 < 1.0 and metrics.map_ssim(c, d) == pytest.approx(ssim3)
    e = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert metrics.map_ssim(e, 2 * e + 1) == 1.0
    assert metrics.map_ssim(e, 1 - e) == 0.0


def test_top_iou_counts_the_nearest_number_of_pixels_and_at_least_one():
    """57 % of 100 pixels is 57 pixels, although 0.57 * 100 == 56.99999999999999 in floats; a fraction too small
    for one pixel still compares the top pixel."""
    a = np.arange(100.0)
    b = a.copy()
    b[43] = -1.0  # a's 57th pixel (index 43) is b's last; b's 57th is index 42
    # top 57: a {43..99}, b {42, 44..99}: 56 shared of 58
    assert metrics.top_iou(a, b, 0.57) == pytest.approx(56 / 58)
    x = np.arange(10.0)
    assert metrics.top_iou(x, x, 0.01) == 1.0
    assert metrics.top_iou(x, x[::-1], 0.01) == 0.0


# ============================================================================= metrics: deletion / insertion
def test_a_coarse_map_of_an_image_with_odd_sides_is_accepted():
    """A map at a quarter of the image's resolution (43 x 48 -> 10 x 12, sides rounded down) explains that
    image: it is within one map pixel of its aspect, so it is upsampled, not refused."""
    img = rand_image(43, 48)
    res = metrics.Deletion(step=0.25)(tiny_model(), img, manual(np.random.default_rng(1).random((10, 12)), img))
    assert np.isfinite(res.score) and len(res.y) == 5


def test_a_target_equal_to_the_number_of_classes_is_out_of_range():
    img = rand_image()
    unlabelled = unveil.Model(tiny_model(n_classes=3).fn, input_size=(32, 32))  # class count known once run
    with pytest.raises(ValueError, match="target 3 is out of range"):
        metrics.deletion(unlabelled, img, manual(np.ones((32, 32)), img, target=3))


def test_a_baseline_that_cannot_be_rebuilt_falls_back_to_the_mean_values_and_all():
    """Not only the name: the curve is the one of Deletion(baseline='mean')."""
    model, img = tiny_model(), rand_image()
    m = np.random.default_rng(2).random((32, 32))
    lost = metrics.deletion(model, img, manual(m, img, params={"baseline": "<array (32, 32, 3) float32>"}))
    mean = metrics.Deletion(baseline="mean")(model, img, manual(m, img))
    zero = metrics.Deletion(baseline="zero")(model, img, manual(m, img))
    assert lost.details["baseline"] == "mean"
    np.testing.assert_allclose(lost.y, mean.y, rtol=1e-6)
    assert not np.allclose(zero.y, mean.y)  # the baseline matters on this model


def test_insertion_blur_sigma_is_used():
    """A blur of a thousandth of a pixel leaves the image as it is: the insertion curve then starts where it
    ends (all pixels inserted); the default blur (10 % of the side) does not."""
    model, img = tiny_model(), rand_image()
    exp = manual(np.random.default_rng(3).random((32, 32)), img)
    sharp = metrics.Insertion(blur_sigma=1e-3)(model, img, exp)
    assert sharp.y[0] == pytest.approx(sharp.y[-1], rel=1e-5)
    default = metrics.insertion(model, img, exp)
    assert abs(default.y[0] - default.y[-1]) > 1e-3


# ============================================================================= metrics: randomization
class _Reused(torch.nn.Module):
    """``a`` is called first and again after ``b``; ``fc`` last; ``spare`` is never called."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.spare = torch.nn.Linear(2, 2)
        self.fc = torch.nn.Linear(3, 3)
        self.b = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.a = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        h = self.a(torch.relu(self.b(torch.relu(self.a(x)))))
        return self.fc(h.mean(dim=(2, 3)))


def test_randomization_orders_layers_by_their_first_call_and_never_called_ones_last():
    """Cascade from the output: fc, then b, then a (first called before b, though called again after it);
    a layer the pass never calls changes nothing, so it is randomized at the very end."""
    model = unveil.Model(_Reused(), input_size=(12, 12))
    img = rand_image(12, 12)
    exp = unveil.explain(model, img, method="saliency", progress=False)
    res = metrics.Randomization(max_steps=None)(model, img, exp)
    assert res.details["randomized_down_to"] == ["original", "fc", "b", "a", "spare"]


def test_randomization_makes_no_more_steps_than_layers():
    """``max_steps`` is the most re-explanations: a model of two parameter layers has two steps."""
    model = unveil.Model(_Reused().requires_grad_(True), input_size=(12, 12))
    model.fn.a = torch.nn.Identity()
    model.fn.spare = torch.nn.Identity()
    img = rand_image(12, 12)
    exp = unveil.explain(model, img, method="saliency", progress=False)
    res = metrics.Randomization(max_steps=5)(model, img, exp)
    assert len(res.y) == 3 and res.details["layers_randomized"] == [0, 1, 2]


class _Wide(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 64, 1)
        self.norm = torch.nn.BatchNorm1d(64).eval()  # weight all 1, bias all 0: constant tensors
        self.hidden = torch.nn.Linear(64, 64)
        self.head = torch.nn.Linear(64, 3)
        with torch.no_grad():
            self.hidden.weight.mul_(3.0)

    def forward(self, x):
        return self.head(torch.relu(self.hidden(self.norm(self.conv(x).mean(dim=(2, 3))))))


def _recorded_steps(monkeypatch, model, img, exp, **options):
    """The parameters of the randomized copy at each cascade step."""
    steps = []

    def record(rand_model, image, explanation, seed, batch_size, progress):
        steps.append({n: p.detach().clone() for n, p in rand_model.fn.named_parameters()})
        return explanation

    monkeypatch.setattr(metrics, "_explain_again", record)
    res = metrics.Randomization(**options)(model, img, exp)
    return steps, res


def test_randomized_weights_are_drawn_from_zero_mean_normals_of_the_original_spread(monkeypatch):
    """N(0, std of the original tensor): a re-drawn tensor keeps the original's spread (to sampling error),
    centred on 0; a constant tensor (a norm layer's weight of ones, bias of zeros) is re-drawn too, to values
    that differ (it is randomized, not zeroed or left constant)."""
    model = unveil.Model(_Wide().eval(), input_size=(8, 8))
    img = rand_image(8, 8)
    exp = manual(np.random.default_rng(0).random((8, 8)), img)
    original = {n: p.detach().clone() for n, p in model.fn.named_parameters()}
    steps, _ = _recorded_steps(monkeypatch, model, img, exp, max_steps=None)
    final = steps[-1]
    for name in ("hidden.weight", "conv.weight", "head.weight"):
        new, old = final[name], original[name]
        assert not torch.equal(new, old)
        assert float(new.std()) == pytest.approx(float(old.std()), rel=0.2)
        assert abs(float(new.mean())) < 5 * float(old.std()) / new.numel() ** 0.5
    for name in ("norm.weight", "norm.bias"):
        assert float(original[name].std()) == 0.0
        assert float(final[name].std()) > 0.0  # randomized, not a constant


def test_randomization_cascades_each_randomized_layer_keeps_its_draw(monkeypatch):
    """Cumulative: step s+1 is step s with one more layer re-drawn; the layers re-drawn before keep the
    values they got."""
    model = unveil.Model(_Wide().eval(), input_size=(8, 8))
    img = rand_image(8, 8)
    exp = manual(np.random.default_rng(0).random((8, 8)), img)
    original = {n: p.detach().clone() for n, p in model.fn.named_parameters()}
    steps, res = _recorded_steps(monkeypatch, model, img, exp, max_steps=None)
    assert res.details["randomized_down_to"] == ["original", "head", "hidden", "norm", "conv"]
    for s in range(1, len(steps)):
        for name, value in steps[s].items():
            if not torch.equal(steps[s - 1][name], original[name]):  # randomized at an earlier step
                assert torch.equal(value, steps[s - 1][name]), (s, name)


def _counting_net():
    class Counting(torch.nn.Module):
        seen = 0

        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            type(self).seen += x.shape[0]
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    return Counting()


def test_randomization_counts_every_evaluation_it_spends():
    net = _counting_net()
    model = unveil.Model(net, input_size=(12, 12))
    img = rand_image(12, 12)
    exp = unveil.explain(model, img, method="occlusion", window=4, progress=False)
    before = type(net).seen
    res = metrics.Randomization(max_steps=None)(model, img, exp)
    spent = type(net).seen - before
    assert res.n_evals == spent and spent > 1 + len(res.y)


def test_randomization_compares_absolute_maps_of_signed_explanations(monkeypatch):
    """absolute=True compares |maps|: a re-explanation that is the original with its signs flipped is
    unchanged (rho 1); signed (absolute=False) it is the perfect opposite (rho -1). A re-explanation equal to
    |map| is unchanged for the absolute comparison, and for the signed one has scipy's rank correlation with
    the signed map."""
    from scipy.stats import spearmanr

    model, img = tiny_model(), rand_image()
    m = np.random.default_rng(4).normal(size=(32, 32))  # signed
    exp = manual(m, img)
    for again, absolute, rho in ((-m, True, 1.0), (-m, False, -1.0), (np.abs(m), True, 1.0),
                                 (np.abs(m), False, spearmanr(m.ravel(), np.abs(m).ravel()).statistic)):
        monkeypatch.setattr(metrics, "_explain_again", lambda *a, _m=again, **k: manual(_m, img))
        res = metrics.Randomization(max_steps=1, absolute=absolute)(model, img, exp)
        assert res.y[-1] == pytest.approx(rho), (absolute, rho)


class _ParamsUnused(torch.nn.Module):
    """Its output depends on the input only: its one parameter layer is multiplied by 0."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 3)
        self.register_buffer("w", torch.tensor([[2.0, -1.0, 0.5], [-1.0, 1.0, 0.0], [0.3, 0.2, -2.0]]))

    def forward(self, x):
        pooled = (x * torch.linspace(0, 1, x.shape[-1])).mean(dim=(2, 3))
        return pooled @ self.w + 0.0 * self.lin(pooled)


def test_randomization_reexplains_with_the_explanations_own_seed():
    """Same options and seed: on a model whose parameters do not matter, the re-explanation of a sampling
    method reproduces the map exactly (rho 1), for any seed the explanation had."""
    model = unveil.Model(_ParamsUnused(), input_size=(16, 16))
    img = rand_image(16, 16)
    exp = unveil.explain(model, img, method="lime", n_samples=40, n_features=9, segmentation="grid", seed=5,
                         progress=False)
    res = metrics.Randomization(max_steps=1)(model, img, exp)
    assert res.score == pytest.approx(1.0)
    other = unveil.explain(model, img, method="lime", n_samples=40, n_features=9, segmentation="grid", seed=0,
                           progress=False)
    assert metrics.spearman(exp.map, other.map) < 0.999  # the seed matters for this method


# ============================================================================= metrics: stability
def test_stability_compares_the_explanation_with_the_next_seeds_pair_by_pair():
    """k = 3 from seed 4: maps of seeds 4 (the explanation), 5 and 6; the score is the mean of the three
    pairwise rank correlations (scipy), top IoU the mean of the pairwise IoUs at the given fraction."""
    from scipy.stats import spearmanr

    model = tiny_model()
    img = rand_image()
    opts = dict(method="lime", n_samples=30, n_features=9, segmentation="grid", progress=False)
    exp = unveil.explain(model, img, seed=4, **opts)
    maps = [exp.map] + [unveil.explain(model, img, seed=s, **opts).map for s in (5, 6)]
    pairs = [(0, 1), (0, 2), (1, 2)]
    rho = [spearmanr(maps[i].ravel(), maps[j].ravel()).statistic for i, j in pairs]
    iou = [metrics.top_iou(maps[i], maps[j], 0.3) for i, j in pairs]
    assert len(set(np.round(rho, 9))) == 3 and len(set(np.round(iou, 9))) > 1  # the mean is not any one of them
    res = metrics.Stability(k=3, top_fraction=0.3)(model, img, exp)
    np.testing.assert_allclose(res.y, rho)
    assert res.score == pytest.approx(np.mean(rho))
    assert res.details["top_iou"] == pytest.approx(np.mean(iou))
    assert np.mean(iou) != pytest.approx(np.mean([metrics.top_iou(maps[i], maps[j], 0.1) for i, j in pairs]))


# ============================================================================= metrics: pointing game
def test_pointing_game_box_from_normalized_coordinates_and_to_the_edge():
    """A box from normalized coordinates (x1 = 0.29 * 100 == 28.999999999999996) covers columns 0..28; a box
    may reach the picture's far edges (x1 = w, y1 = h, exclusive); on a non-square map the point is (row,
    column)."""
    m = np.zeros((50, 100), np.float32)
    m[10, 28] = 1.0
    exact = metrics.PointingGame(tolerance=0)
    assert exact(manual(m, None), (0.0, 0.0, 0.29 * 100, 50.0)).score == 1.0
    m2 = np.zeros((50, 100), np.float32)
    m2[49, 99] = 1.0
    res = exact(manual(m2, None), (90, 40, 100, 50))
    assert res.score == 1.0 and res.details["point"] == (49, 99)
    m3 = np.zeros((5, 10), np.float32)
    m3[2, 7] = 1.0
    res = exact(manual(m3, None), (7, 2, 8, 3))
    assert res.details["point"] == (2, 7) and res.score == 1.0 and res.x[0] == 7 and res.y[0] == 2


# ============================================================================= metrics: evaluate
def test_evaluate_passes_step_and_seed_on_and_takes_a_single_name():
    model, img = tiny_model(), rand_image()
    flat = manual(np.zeros((32, 32)), img)  # all ties: the seed orders the pixels
    out = metrics.evaluate(model, img, flat, "deletion", step=0.25, seed=3)
    assert set(out) == {"deletion"}
    np.testing.assert_allclose(out["deletion"].x, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(out["deletion"].y, metrics.Deletion(step=0.25, seed=3)(model, img, flat).y)
    assert not np.array_equal(out["deletion"].y, metrics.Deletion(step=0.25, seed=0)(model, img, flat).y)
    ins = metrics.evaluate(model, img, flat, ["insertion"], step=0.25, seed=3)["insertion"]
    np.testing.assert_allclose(ins.x, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(ins.y, metrics.Insertion(step=0.25, seed=3)(model, img, flat).y)
    exp = unveil.explain(model, img, method="saliency", progress=False)
    rnd = metrics.evaluate(model, img, exp, ["randomization"], seed=3)["randomization"]
    np.testing.assert_array_equal(rnd.y, metrics.Randomization(seed=3)(model, img, exp).y)
    assert not np.array_equal(rnd.y, metrics.Randomization(seed=0)(model, img, exp).y)


# ============================================================================= STREAK: the generic algorithm


def modular(weights, bias=0.0, calls=None):
    """f(S) = bias + sum of the weights of S; ``calls`` (a list) records each oracle call's sets."""
    w = np.asarray(weights, dtype=np.float64)

    def f(sets):
        if calls is not None:
            calls.append(list(sets))
        return [bias + float(sum(w[list(s)])) for s in sets]

    return f


@pytest.mark.parametrize("k, eps, m", [(1, 0.1, 0.6561), (1, 0.25, 0.421875), (1, 0.6, 56.25), (4, 0.2, 225.0)])
def test_thresholds_exactly_at_either_end_of_the_range_are_open(k, eps, m):
    """m k (0.6561 = 0.9^4, 0.421875 = 0.75^3) or (1 - eps) m / 9k^2 (2.5 = 0.4^-1, 1.25 = 0.8^-1) exactly a
    power of 1 - eps, where the logarithms round to the neighbouring exponent: the range is closed, so that
    threshold is open too. Counted by brute force over the exponents."""
    q = 1 - eps
    lo, hi = q * m / (9 * k * k), m * k
    assert any(q ** i in (lo, hi) for i in range(-50, 50))  # the case is the exact one
    expected = sum(1 for i in range(-300, 3000) if lo <= q ** i <= hi)
    assert streak(lambda sets: [m * len(s) for s in sets], [0], k, eps).history[0] == expected


def test_threshold_greedy_asks_sets_in_selection_order_until_the_set_is_full():
    """Sets go to f in selection order (the newest element last); once k elements are kept no further set is
    asked (an instance without room keeps nothing); gains and value are relative to f(empty)."""
    calls = []
    r = threshold_greedy(modular([1.0, 2.0, 3.0, 4.0, 5.0], bias=0.5, calls=calls), [4, 2, 0, 3, 1], 3, tau=0.3)
    assert r.selected == (4, 2, 0) and r.gains == (5.0, 3.0, 1.0)
    assert r.value == pytest.approx(9.0) and r.empty_value == 0.5
    assert calls == [[()], [(4,)], [(4, 2)], [(4, 2, 0)]] and r.oracle_calls == 4


def test_threshold_greedy_spends_its_whole_budget():
    """budget 3: f(empty) and the first two elements (one set each); the third does not fit."""
    r = threshold_greedy(modular([1.0, 2.0, 3.0, 4.0]), range(4), 4, tau=0.1, budget=3)
    assert r.oracle_calls == 3 and r.n_seen == 2 and r.stopped and r.selected == (0, 1)


def test_streak_asks_each_arriving_element_last_in_its_sets():
    calls = []
    order = [3, 0, 4, 1, 2]
    streak(modular([0.4, 1.0, 0.2, 0.9, 0.6], calls=calls), order, 3, 0.5)
    assert calls[0] == [()] and len(calls) == 1 + len(order)
    for u, sets in zip(order, calls[1:]):
        assert all(s[-1] == u for s in sets) and (u,) in sets


def test_streak_best_singleton_is_compared_by_its_gain_over_f_empty():
    """k = 1: the first element (1.0) fills every instance; the second (1.01) raises m too little to open a
    new threshold, so no instance takes it, and the best singleton (gain 1.01 > 1.0) wins. With f(empty) = 0.5
    the comparison is of gains, not of raw values."""
    r = streak(modular([1.0, 1.01], bias=0.5), [0, 1], 1, 0.5)
    assert r.selected == (1,) and r.value == pytest.approx(1.01) and r.threshold is None


def test_streak_reports_the_highest_threshold_among_instances_holding_the_best_set():
    """One element, k = 1: the five thresholds 1, 1/2, ..., 1/16 in [0.5 / 9, 1] all keep it; the winner is the
    first of them, the highest (m k = 1)."""
    r = streak(modular([1.0]), [0], 1, 0.5)
    assert r.history == (5,) and r.selected == (0,) and r.threshold == 1.0


def test_greedy_with_k_above_the_number_of_elements_selects_them_all():
    r = greedy(modular([0.3, 0.9, 0.5], bias=0.25), range(3), 5)
    assert r.selected == (1, 2, 0) and r.gains == pytest.approx((0.9, 0.5, 0.3))
    assert r.value == pytest.approx(1.7) and r.empty_value == 0.25 and r.oracle_calls == 1 + 3 + 2 + 1
    assert not r.stopped


def test_random_selection_value_budget_and_uniformity():
    w = [0.3, 0.9, 0.5, 0.1]
    r = random_selection(modular(w, bias=0.25), range(4), 2, rng=3)
    assert r.value == pytest.approx(sum(w[j] for j in r.selected)) and not r.stopped
    capped = random_selection(modular(w), range(4), 3, rng=3, budget=3)  # f(empty) + two prefixes
    assert capped.oracle_calls == 3 and len(capped.selected) == 2 and capped.stopped
    # uniform draws: over 400 seeds each element comes first about a quarter of the time
    firsts = np.bincount([random_selection(modular(w), range(4), 1, rng=s).selected[0] for s in range(400)],
                         minlength=4)
    assert firsts.min() > 60


# ============================================================================= STREAK: the image method
def segment_model(coef, labels, bias=0.05, target=0, calls=None):
    """score = bias + sum_k coef_k * mean of channel 0 over segment k, as class ``target`` (the other class gets
    1 - score): with a white image and a zero baseline, keeping the segments S scores bias + sum_{S} coef.
    ``calls`` (a list) records the size of each batch the model is asked."""
    coef = np.asarray(coef, np.float64)
    n = len(coef)
    flat_labels = labels.reshape(-1)
    counts = np.bincount(flat_labels, minlength=n)

    def fn(batch):
        if calls is not None:
            calls.append(len(batch))
        flat = batch[..., 0].reshape(len(batch), -1)
        means = np.stack([np.bincount(flat_labels, weights=row, minlength=n) for row in flat]) / counts
        s = bias + means @ coef
        out = np.stack([s, 1 - s], axis=1)
        return out if target == 0 else out[:, ::-1].copy()

    return unveil.Model(fn, input_size=labels.shape, outputs="scores", batch_size=64)


def _streak_opts(labels, **kw):
    return dict(method="streak", seed=1, segmentation=labels, baseline="zero", progress=False, **kw)


WHITE = np.ones((24, 24, 3), np.float32)


def test_streak_explains_the_requested_target():
    from unveil.segmentation import grid

    labels = grid(24, 24, 9)
    coef = np.full(9, 0.002)
    coef[[2, 6]] = [0.4, 0.3]
    model = segment_model(coef, labels, target=1)  # class 1 depends on segments 2 and 6; class 0 is 1 - that
    exp = unveil.explain(model, WHITE, target=1, k=2, **_streak_opts(labels))
    assert set(exp.extras["selected"]) == {2, 6}
    np.testing.assert_allclose(exp.extras["singleton_gains"], coef, atol=1e-6)


def test_streak_segments_arrive_in_a_seeded_random_order():
    """Under a budget that stops the stream early, the segments seen (those with a singleton gain) are the
    first of the seeded order: the same for one seed, not always the first labels."""
    from unveil.segmentation import grid

    labels = grid(24, 24, 16)
    model = segment_model(np.linspace(0.01, 0.05, 16), labels)
    seen = []
    for seed in range(6):
        exp = unveil.explain(model, WHITE, target=0, k=2, budget=6, **{**_streak_opts(labels), "seed": seed})
        seen.append(tuple(np.flatnonzero(~np.isnan(exp.extras["singleton_gains"]))))
    again = unveil.explain(model, WHITE, target=0, k=2, budget=6, **{**_streak_opts(labels), "seed": 0})
    assert tuple(np.flatnonzero(~np.isnan(again.extras["singleton_gains"]))) == seen[0]
    assert all(0 < len(s) < 16 for s in seen) and len(set(seen)) > 1


def test_streak_lookahead_batches_several_segments_per_model_call():
    from unveil.segmentation import grid

    labels = grid(24, 24, 16)
    coef = np.linspace(0.01, 0.05, 16)
    one, four = [], []
    a = unveil.explain(segment_model(coef, labels, calls=one), WHITE, target=0, k=3, **_streak_opts(labels))
    b = unveil.explain(segment_model(coef, labels, calls=four), WHITE, target=0, k=3, lookahead=4,
                       **_streak_opts(labels))
    assert b.extras["selected"] == a.extras["selected"] and b.extras["lookahead"] == 4
    assert len(four) < len(one)


def test_streak_smallest_budget_is_three_evaluations():
    """The unperturbed input, f(empty) and one segment: budget 3 runs (one segment seen), 2 is refused."""
    from unveil.segmentation import grid

    labels = grid(24, 24, 9)
    model = segment_model(np.linspace(0.1, 0.3, 9), labels)
    exp = unveil.explain(model, WHITE, target=0, budget=3, **_streak_opts(labels))
    assert exp.n_evals <= 3 and exp.extras["n_seen"] == 1 and exp.extras["stopped"]
    with pytest.raises(ValueError, match="needs at least 3"):
        unveil.explain(model, WHITE, target=0, budget=2, **_streak_opts(labels))


def test_streak_fill_singletons_leaves_small_gains_as_they_are_and_unseen_segments_at_zero():
    """c = 1 when the largest left-out gain is already under half the smallest selected one (it is a factor in
    (0, 1]); segments a budget kept unseen get 0."""
    from unveil.segmentation import grid

    labels = grid(24, 24, 16)
    coef = np.linspace(0.001, 0.016, 16)
    coef[[4, 9]] = [0.5, 0.4]
    model = segment_model(coef, labels)
    exp = unveil.explain(model, WHITE, target=0, k=2, fill="singletons", **_streak_opts(labels))
    sel = exp.extras["selected"]
    assert sorted(sel) == [4, 9]
    rest = np.setdiff1d(np.arange(16), sel)
    np.testing.assert_allclose(exp.weights[rest], coef[rest], atol=1e-6)  # 0.016 < 0.2: unscaled
    capped = unveil.explain(model, WHITE, target=0, k=2, fill="singletons", budget=6, **_streak_opts(labels))
    unseen = np.isnan(capped.extras["singleton_gains"])
    assert unseen.any() and np.all(capped.weights[unseen] == 0.0)


def test_streak_fills_when_every_segment_is_selected():
    """k = 4 of 4 segments that all raise the score: every one is selected, nothing is left to fill, and both
    fills return the gains as they are."""
    from unveil.segmentation import grid

    labels = grid(24, 24, 4)
    coef = np.array([0.2, 0.15, 0.1, 0.25])
    model = segment_model(coef, labels)
    for fill in ("singletons", "ends"):
        exp = unveil.explain(model, WHITE, target=0, k=4, fill=fill, **_streak_opts(labels))
        assert sorted(exp.extras["selected"]) == [0, 1, 2, 3]
        np.testing.assert_allclose(exp.weights, coef, atol=1e-6)


def test_streak_fill_ends_ranks_unseen_segments_lowest_on_the_singleton_side():
    """Ranks 1..n with ties averaged: the u segments a budget kept unseen share ranks 1..u on the singleton
    side, the seen ones follow in the order of their gains; plus the leave-one-out ranks; mapped onto (0, half
    the smallest selected gain]."""
    from scipy.stats import rankdata

    from unveil.segmentation import grid

    labels = grid(24, 24, 16)
    coef = np.linspace(0.001, 0.016, 16)
    coef[[4, 9]] = [0.5, 0.4]
    model = segment_model(coef, labels)
    exp = unveil.explain(model, WHITE, target=0, k=2, fill="ends", budget=28, **_streak_opts(labels))
    singles = exp.extras["singleton_gains"].astype(np.float64)
    unseen = np.isnan(singles)
    sel = exp.extras["selected"]
    assert unseen.sum() >= 2 and sel
    u = int(unseen.sum())
    rank_s = np.empty(16)
    rank_s[unseen] = (1 + u) / 2  # the average of ranks 1..u
    rank_s[~unseen] = u + rankdata(singles[~unseen])
    score = rank_s + rankdata(exp.extras["leave_one_out"].astype(np.float64))
    rest = np.setdiff1d(np.arange(16), sel)
    top = 0.5 * exp.weights[sel].min()
    np.testing.assert_allclose(exp.weights[rest], top * score[rest] / score[rest].max(), rtol=1e-5)


# ============================================================================= STREAK LIME
def _regression(seed=0, n=200, d=10):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 2, size=(n, d)).astype(float)
    y = X @ rng.normal(size=d) + 0.3 * rng.normal(size=n)
    return X, y, rng.random(n)


def test_ridge_r2_oracle_default_penalty_is_lime_ridge_alpha_1():
    from sklearn.linear_model import Ridge

    from unveil.methods.streak import ridge_r2_oracle

    X, y, w = _regression()
    f = ridge_r2_oracle(X, y, w)
    for s in [(3,), (0, 5, 9)]:
        reg = Ridge(alpha=1.0).fit(X[:, list(s)], y, sample_weight=w)
        assert f([s])[0] == pytest.approx(reg.score(X[:, list(s)], y, sample_weight=w), abs=1e-10)


def test_streak_lime_selection_of_a_constant_response():
    """A constant response: every R^2 is 0 (not 0/0), so STREAK keeps nothing and the selection falls back to
    one feature."""
    from unveil.methods.streak import ridge_r2_oracle, select_streak

    X, _, w = _regression()
    y = np.zeros(len(X))  # (sum of squares exactly 0)
    assert ridge_r2_oracle(X, y, w)([(1,), (2, 3)]) == pytest.approx([0.0, 0.0])
    assert len(select_streak(X, y, w, 3)) == 1


def test_streak_lime_selection_streams_in_the_given_generators_order():
    """``rng`` (a Generator) orders the stream, else ``seed``: the same order, so the same selection, for a
    Generator of seed s as for seed=s; and the order matters (the selection, in selection order, varies)."""
    from unveil.methods.streak import select_streak

    X, y, w = _regression(1, 60, 8)
    by_seed = [tuple(select_streak(X, y, w, 3, seed=s)) for s in range(5)]
    by_rng = [tuple(select_streak(X, y, w, 3, rng=np.random.default_rng(s))) for s in range(5)]
    assert by_rng == by_seed and len(set(by_seed)) > 1


# ============================================================================= gradient methods


def test_trapezoid_rule_needs_two_points():
    with pytest.raises(ValueError, match="n_steps"):
        grad_mod.ig_nodes(1, "riemann_trapezoid")
    with pytest.raises(ValueError, match="n_steps"):
        grad_mod.ig_nodes(1, "riemann")
    x, w = grad_mod.ig_nodes(1, "riemann_left")  # one step is fine for the others
    assert x.tolist() == [0.0] and w.tolist() == [1.0]


def test_max_abs_channels_takes_the_largest_magnitude():
    a = torch.tensor([[[[1.0, -3.0]], [[-2.0, 0.5]], [[0.0, 2.0]]]])  # 1 x 3 x 1 x 2
    np.testing.assert_array_equal(grad_mod.max_abs_channels(a).numpy(), [[[2.0, 3.0]]])


def test_completeness_error_of_equal_scores():
    """Equal scores: attributions summing to 0 are complete (error 0); any other sum has an infinite relative
    error."""
    assert grad_mod.completeness_error(0.0, 1.5, 1.5) == 0.0
    assert grad_mod.completeness_error(0.25, 1.5, 1.5) == float("inf")
    assert grad_mod.completeness_error(1.2, 3.0, 2.0) == pytest.approx(0.2)


def test_smoothgrad_noise_is_a_fraction_of_the_input_range():
    """sigma = noise * (max - min) of the input; a flat input: noise * 1 (the [0, 1] range)."""
    img = np.full((32, 32, 3), 0.45, np.float32)
    img[0, 0] = 0.2
    img[-1, -1] = 0.7
    model = tiny_model()
    exp = unveil.explain(model, img, method="smoothgrad", n_samples=2, noise=0.2, progress=False)
    assert exp.extras["sigma"] == pytest.approx(0.2 * 0.5, rel=1e-5)
    flat = unveil.explain(model, np.full((32, 32, 3), 0.6, np.float32), method="smoothgrad", n_samples=2,
                          noise=0.2, progress=False)
    assert flat.extras["sigma"] == pytest.approx(0.2)


# ============================================================================= modified chain rules


def _seeded(net, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net.eval()


class _ConvAct(nn.Module):
    """conv - act - conv - act - mean - linear (3 x 8 x 8 -> 3 logits); ``act`` makes each activation module."""

    def __init__(self, act=nn.ReLU, seed=0):
        super().__init__()
        self.c1, self.a1 = nn.Conv2d(3, 6, 3, padding=1), act()
        self.c2, self.a2 = nn.Conv2d(6, 6, 3, padding=1), act()
        self.fc = nn.Linear(6, 3)
        _seeded(self, seed)

    def forward(self, x):
        return self.fc(self.a2(self.c2(self.a1(self.c1(x)))).mean(dim=(2, 3)))


def _wrap(net, size=8):
    return unveil.Model(net, input_size=(size, size))


def _input_gradient(net, x, target):
    """d logit_target / d x by plain autograd (x: C x H x W)."""
    leaf = x.detach().clone().unsqueeze(0).requires_grad_(True)
    (g,) = torch.autograd.grad(net(leaf)[0, target], leaf)
    return g[0]


def test_epsilon_rule_with_eps_zero_counts_0_over_0_as_0():
    z = torch.tensor([[2.0, 0.0, -0.0, -1.5]])
    relu = nn.ReLU()
    m = Epsilon(0.0).multiplier(relu, z, relu(z))
    assert torch.isfinite(m).all() and m.tolist() == [[1.0, 0.0, 0.0, 0.0]]


def test_local_gradient_of_an_in_place_module_leaves_its_input_alone():
    """ELU (no closed form here: autograd through its forward) in place: d/dz = 1 for z > 0, exp(z) below."""
    z = torch.tensor([-1.0, 0.5, -0.2, 2.0])
    keep = z.clone()
    g = local_gradient(nn.ELU(inplace=True), z)
    torch.testing.assert_close(g, torch.where(z > 0, torch.ones_like(z), torch.exp(z)))
    assert torch.equal(z, keep)


class _MyReLU(nn.ReLU):
    """A user's subclass of a ruled type."""


def test_rules_match_subclasses_of_their_types():
    img = rand_image(8, 8)
    for method in ("elrp", "deeplift"):
        sub = unveil.explain(_wrap(_ConvAct(_MyReLU)), img, method=method, target=1, progress=False)
        plain = unveil.explain(_wrap(_ConvAct(nn.ReLU)), img, method=method, target=1, progress=False)
        np.testing.assert_allclose(sub.extras["attribution"], plain.extras["attribution"], rtol=1e-5, atol=1e-7)


def test_the_first_matching_rule_wins_in_explain_and_in_smoothgrad():
    """rules=[(ReLU, Gradient())] in front of DeepLIFT's defaults: every ReLU keeps its gradient, so the
    attribution is (x - baseline) * the plain autograd gradient; through smoothgrad too (noise 0, one sample,
    where the method runs its own forward pass)."""
    net = _ConvAct(nn.ReLU, seed=3)
    model = _wrap(net)
    img = rand_image(8, 8, seed=3)
    x = model.prepare(img)[1]
    expected = (x * _input_gradient(net, x, 1)).numpy()  # baseline "zero"
    exp = unveil.explain(model, img, method="deeplift", target=1, rules=[(nn.ReLU, Gradient())], progress=False)
    np.testing.assert_allclose(exp.extras["attribution"], expected, rtol=1e-4, atol=1e-6)
    rescale = unveil.explain(model, img, method="deeplift", target=1, progress=False)
    assert not np.allclose(rescale.extras["attribution"], expected, rtol=1e-3, atol=1e-5)  # the rule matters
    sg = unveil.explain(model, img, method="smoothgrad", target=1, base="deeplift", noise=0.0, n_samples=1,
                        base_options={"rules": [(nn.ReLU, Gradient())]}, progress=False)
    np.testing.assert_allclose(sg.extras["attribution"], expected, rtol=1e-4, atol=1e-6)


def test_an_activation_module_without_a_rule_is_refused_on_entry():
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Hardswish())
    with pytest.raises(UnsupportedNonlinearity, match=r"no rule for the nonlinearity 1 \(Hardswish\)"):
        with ModifiedChainRule(net, elrp_rules()):
            pass  # before any forward pass


def test_multihead_attention_is_not_an_activation_to_rule():
    net = _ConvAct()
    net.attn = nn.MultiheadAttention(4, 2)  # in torch.nn.modules.activation, but not elementwise
    with ModifiedChainRule(net, elrp_rules()) as mcr:
        assert mcr.n_units == 2


class _SwishGate(nn.Module):
    """z * sigmoid(z), the sigmoid a ruled submodule (nn.Sigmoid) inside this unit."""

    def __init__(self):
        super().__init__()
        self.gate = nn.Sigmoid()

    def forward(self, z):
        return z * self.gate(z)


def test_a_unit_ruled_by_gradient_keeps_the_ordinary_gradient_of_the_units_inside_it():
    """A ruled unit's nested units are left alone: with rules=[(_SwishGate, Gradient())] the whole swish keeps
    its ordinary gradient (its inner Sigmoid, though covered by the default rules, is not changed), so
    epsilon-LRP is input times the plain gradient."""
    net = _ConvAct(_SwishGate, seed=4)
    model = _wrap(net)
    img = rand_image(8, 8, seed=4)
    x = model.prepare(img)[1]
    exp = unveil.explain(model, img, method="elrp", target=2, rules=[(_SwishGate, Gradient())], progress=False)
    np.testing.assert_allclose(exp.extras["attribution"], (x * _input_gradient(net, x, 2)).numpy(),
                               rtol=1e-4, atol=1e-6)


class _MLP(nn.Module):
    """Flatten - Linear - Tanh - Linear - ReLU - Linear: 3 x 4 x 4 -> 2."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(48, 5), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(),
                                 nn.Linear(4, 2))
        _seeded(self, 2)

    def forward(self, x):
        return self.net(x)


def test_deeplift_with_an_epsilon_rule_in_front_matches_the_modified_chain_rule_by_hand():
    """Mixed rules: Tanh by Epsilon (no reference), ReLU by Rescale against the zero baseline. The gradient by
    hand in float64: W1^T (m1 * W2^T (m2 * W3[t])), m1 = tanh(z1) / (z1 + eps sign z1), m2 = (relu(z2) -
    relu(z2_0)) / (z2 - z2_0); attribution = x * gradient."""
    eps = 0.01
    net = _MLP()
    model = unveil.Model(net, input_size=(4, 4))
    img = rand_image(4, 4, seed=5)
    x = model.prepare(img)[1]
    l1, l2, l3 = (net.net[i] for i in (1, 3, 5))
    W1, b1 = l1.weight.detach().double().numpy(), l1.bias.detach().double().numpy()
    W2, b2 = l2.weight.detach().double().numpy(), l2.bias.detach().double().numpy()
    W3 = l3.weight.detach().double().numpy()
    xv = x.double().numpy().reshape(-1)
    z1 = W1 @ xv + b1
    z2 = W2 @ np.tanh(z1) + b2
    z2_0 = W2 @ np.tanh(b1) + b2
    assert np.abs(z2 - z2_0).min() > 1e-3
    m1 = np.tanh(z1) / (z1 + eps * np.sign(z1))
    m2 = (np.maximum(z2, 0) - np.maximum(z2_0, 0)) / (z2 - z2_0)
    t = 1
    grad = W1.T @ (m1 * (W2.T @ (m2 * W3[t])))
    assert np.abs(xv * grad).max() > 1e-2  # a ReLU passes something
    exp = unveil.explain(model, img, method="deeplift", target=t, rules=[(nn.Tanh, Epsilon(eps))], progress=False)
    np.testing.assert_allclose(exp.extras["attribution"].reshape(-1), xv * grad, rtol=1e-4, atol=1e-6)


def test_modified_gradients_do_not_depend_on_the_batch_size():
    """DeepLIFT's reference records are used afresh by every forward pass: three inputs in chunks of one are
    the same as in one chunk."""
    model = _wrap(_ConvAct(seed=6))
    xs = torch.stack([model.prepare(rand_image(8, 8, seed=s))[1] for s in range(3)])
    base = torch.full_like(xs[0], 0.5)
    one, _ = modified_gradients(model, xs, 0, deeplift_rules(), baseline=base, batch_size=1)
    three, _ = modified_gradients(model, xs, 0, deeplift_rules(), baseline=base, batch_size=3)
    torch.testing.assert_close(one, three, rtol=1e-5, atol=1e-7)


class _SigmoidGate(nn.Module):
    """The output scaled by sigmoid(a parameter): a nonlinearity on a branch that never touches the input."""

    def __init__(self):
        super().__init__()
        self.body = _ConvAct(seed=7)
        self.gate = nn.Parameter(torch.tensor(0.3))

    def forward(self, x):
        return self.body(x) * torch.sigmoid(self.gate)


def test_a_functional_nonlinearity_of_parameters_only_is_not_flagged():
    """Through explain (which reuses its prediction pass) and through smoothgrad (its own passes): the gated
    model's attribution is the plain body's times sigmoid(0.3)."""
    img = rand_image(8, 8, seed=7)
    factor = 1 / (1 + np.exp(-0.3))
    gated, plain = _wrap(_SigmoidGate()), _wrap(_ConvAct(seed=7))
    for kw in ({"method": "elrp"}, {"method": "smoothgrad", "base": "elrp", "noise": 0.0, "n_samples": 1}):
        a = unveil.explain(gated, img, target=0, progress=False, **kw).extras["attribution"]
        b = unveil.explain(plain, img, target=0, progress=False, **kw).extras["attribution"]
        np.testing.assert_allclose(a, b * factor, rtol=1e-4, atol=1e-7)


class _FunctionalSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = _ConvAct(seed=8)

    def forward(self, x):
        return self.body.fc(torch.sigmoid(self.body.c1(x)).mean(dim=(2, 3)).repeat(1, 2)[:, :6])


def test_a_functional_nonlinearity_on_the_input_path_is_named_in_every_pass():
    model = _wrap(_FunctionalSigmoid())
    img = rand_image(8, 8)
    xs = model.prepare(img)[1].unsqueeze(0)
    with pytest.raises(UnsupportedNonlinearity, match="SigmoidBackward0"):
        modified_gradients(model, xs, 0, elrp_rules())
    with pytest.raises(UnsupportedNonlinearity, match="SigmoidBackward0"):
        unveil.explain(model, img, method="smoothgrad", base="elrp", n_samples=2, progress=False)


# ============================================================================= Grad-CAM


def test_gradcam_layer_must_be_a_submodule_not_the_model_itself():
    with pytest.raises(ValueError, match="no submodule ''"):
        resolve_layer(_ConvAct(), "")


def test_gradcam_maps_of_a_batch_are_the_maps_of_each_input():
    """Three different inputs in chunks of two: each map is the one of that input alone."""
    model = _wrap(_ConvAct(seed=9))
    xs = torch.stack([model.prepare(rand_image(8, 8, seed=s))[1] for s in range(3)])
    maps, raws, _ = gradcam_maps(model, xs, 1, batch_size=2)
    assert maps.shape[0] == raws.shape[0] == 3
    for i in range(3):
        m, r, _ = gradcam_maps(model, xs[i : i + 1], 1)
        torch.testing.assert_close(raws[i : i + 1], r, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(maps[i : i + 1], m, rtol=1e-5, atol=1e-7)


def test_gradcam_coarse_map_is_upsampled_bilinearly():
    """The 16 x 16 map of TinyNet's last convolution on a 32 x 32 input, brought to the image's 40 x 48:
    bilinear interpolation makes values between those of the coarse map (nearest would only repeat them)."""
    img = rand_image(40, 48, seed=2)
    exp = unveil.explain(tiny_model(), img, method="gradcam", progress=False)
    coarse = np.maximum(exp.extras["raw_map"], 0)
    assert coarse.shape == (16, 16) and exp.map.shape == (40, 48)
    assert len(np.unique(exp.map)) > 2 * len(np.unique(coarse))


def _reference_streak_value(f, order, k, eps):
    """STREAK as the paper states it, kept plain: one ThresholdGreedy per threshold (1 - eps)^i in
    [(1 - eps) m / 9k^2, m k], none ever forgotten; the value is the best over every instance ever opened and
    the best singleton."""
    q = 1 - eps
    f0 = f([()])[0]
    m, best_single, live, dropped = 0.0, 0.0, {}, []
    for u in order:
        g = f([(u,)])[0] - f0
        best_single = max(best_single, g)
        if g > m:
            m = g
            lo, hi = q * m / (9 * k * k), m * k
            for i in [i for i in live if not lo <= q ** i <= hi]:
                dropped.append(live.pop(i))
            top = int(np.floor(np.log(hi) / np.log(q))) - 2
            for i in range(top, top + 10_000):
                if q ** i < lo:
                    break
                if q ** i <= hi and i not in live:
                    live[i] = [[], f0]
        for i in sorted(live):
            s, raw = live[i]
            if len(s) < k:
                v = f([(*s, u)])[0]
                if v - raw >= q ** i / k:
                    s.append(u)
                    live[i][1] = v
    return max([best_single] + [raw - f0 for _, raw in dropped + list(live.values())])


def _coverage(cover, item_weights):
    return lambda sets: [float(sum(item_weights[j] for j in set().union(*[cover[e] for e in s]))) for s in sets]


def test_streak_keeps_the_best_of_the_instances_it_dropped():
    """An instance dropped as m grew can hold the best set: here (k = 3) the low threshold that kept
    {3, 1, 0} (42.964) is dropped when element 4 (42.958 alone) raises m; STREAK returns the best instance ever
    opened, dropped ones included (the plain reference, which forgets none, agrees), also over random
    coverage streams."""
    iw = [3.2203, 0.0052, 3.3012, 1.206, 4.1352, 0.0847, 0.0383, 1.6091, 38.7385, 3141.9342]
    f = _coverage([{1, 8}, {4}, {1}, {5}, {4, 5, 8}], iw)
    r = streak(f, [3, 1, 0, 4, 2], 3, 0.5)
    assert r.selected == (3, 1, 0)
    assert r.value == pytest.approx(_reference_streak_value(f, [3, 1, 0, 4, 2], 3, 0.5))
    assert r.value == pytest.approx(iw[5] + iw[4] + iw[1] + iw[8])
    rng = np.random.default_rng(7)
    for _ in range(150):
        n, k, eps = int(rng.integers(4, 10)), int(rng.integers(2, 4)), float(rng.choice([0.3, 0.5, 0.7]))
        weights = np.exp(rng.normal(size=10) * 3)
        cover = [set(rng.choice(10, size=int(rng.integers(1, 4)), replace=False).tolist()) for _ in range(n)]
        f = _coverage(cover, weights)
        order = rng.permutation(n).tolist()
        assert streak(f, order, k, eps).value == pytest.approx(_reference_streak_value(f, order, k, eps))
