"""Sampling methods against independent truth: Shapley values by brute force over all coalitions, additive
models, captum's ShapleyValueSampling and KernelShap on the same net, RISE's formula with masks made by
scikit-image's bilinear resize (as the paper's code does)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import unveil
from unveil import metrics
from unveil.methods.rise import draw_grids
from unveil.segmentation import grid

from conftest import TinyNet
from test_exact import segment_linear_model


# ----------------------------------------------------------------------------- helpers
def exact_shapley(value, k: int) -> np.ndarray:
    """Shapley values by the definition: value(mask tuple) over all 2^k coalitions."""
    phi = np.zeros(k)
    for i in range(k):
        for rest in itertools.product([0, 1], repeat=k - 1):
            without = rest[:i] + (0,) + rest[i:]
            with_i = rest[:i] + (1,) + rest[i:]
            s = sum(rest)
            weight = math.factorial(s) * math.factorial(k - s - 1) / math.factorial(k)
            phi[i] += weight * (value(with_i) - value(without))
    return phi


def segment_poly_model(labels: np.ndarray, fn):
    """score = fn(segment means of channel 0); with a white image and a zero baseline the segment means are
    exactly the mask, so the score of coalition m is fn(m)."""
    k = int(labels.max()) + 1
    counts = np.bincount(labels.reshape(-1), minlength=k)

    def model(batch):
        flat = batch[..., 0].reshape(len(batch), -1)
        means = np.stack([np.bincount(labels.reshape(-1), weights=row, minlength=k) for row in flat]) / counts
        s = np.array([fn(m) for m in means])
        return np.stack([s, 1 - s], axis=1)

    return unveil.Model(model, input_size=labels.shape, outputs="scores", batch_size=64)


def interaction(m) -> float:
    m = np.asarray(m, dtype=np.float64)
    return 0.1 + 0.2 * m[0] - 0.1 * m[1] + 0.05 * m[4] + 0.3 * m[0] * m[1] - 0.2 * m[2] * m[3] * m[4]


WHITE = np.ones((20, 20, 3), np.float32)
STRIPES = np.repeat(np.arange(5), 4)[None, :].repeat(20, axis=0)  # 5 vertical stripes of 20 x 4 pixels


class Tempered(torch.nn.Module):
    """TinyNet with its logits divided by 3, so the class probabilities are far from 0 and 1."""

    def __init__(self):
        super().__init__()
        self.net = TinyNet(seed=2)

    def forward(self, x):
        return self.net(x) / 3


@pytest.fixture(scope="module")
def small_net_case():
    """A net without normalization, a 32 x 32 image, 6 grid cells, zero baseline, and the exact Shapley
    values of class 0's probability (all 64 coalitions composed and evaluated here, not by unveil)."""
    net = Tempered().eval()
    img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    img[:16, :11] = [0.9, 0.1, 0.1]
    labels = grid(32, 32, 6)
    x = torch.from_numpy(img.transpose(2, 0, 1))[None]
    lab = torch.from_numpy(labels)
    coalitions = list(itertools.product([0, 1], repeat=6))
    masks = torch.tensor(coalitions, dtype=torch.float32)[:, lab][:, None]
    with torch.no_grad():
        v = torch.softmax(net(masks * x), 1)[:, 0].double().numpy()
    table = dict(zip(coalitions, v))
    exact = exact_shapley(lambda m: table[m], 6)
    model = unveil.Model(net, input_size=(32, 32), batch_size=16)
    forward = lambda z: torch.softmax(net(z), 1)  # noqa: E731  captum's view of the same scores
    return dict(net=net, img=img, labels=labels, x=x, lab=lab, exact=exact, model=model, forward=forward,
                f_none=float(table[(0,) * 6]))


def cell_means(attr: torch.Tensor, lab: torch.Tensor, k: int) -> np.ndarray:
    return np.array([attr[0, 0][lab == i].mean().item() for i in range(k)])


# ----------------------------------------------------------------------------- Shapley value sampling
def test_shapley_of_an_additive_model_is_exact_with_zero_error():
    labels = grid(24, 24, 9)
    coef = np.array([0.30, -0.10, 0.05, 0.20, 0.0, -0.25, 0.12, 0.07, 0.15])
    exp = unveil.explain(segment_linear_model(coef, labels), np.ones((24, 24, 3), np.float32), method="shapley",
                         target=0, seed=4, n_permutations=6, segmentation=labels, baseline="zero", progress=False)
    np.testing.assert_allclose(exp.weights, coef, atol=1e-6)
    assert np.all(exp.extras["stderr"] < 1e-6)
    assert exp.extras["n_permutations"] == 6
    assert exp.extras["f_none"] == pytest.approx(0.1, abs=1e-6)
    # without a budget or n_permutations: the documented 20 permutations
    default = unveil.explain(segment_linear_model(coef, labels), np.ones((24, 24, 3), np.float32), method="shapley",
                             target=0, seed=4, segmentation=labels, baseline="zero", progress=False)
    assert default.extras["n_permutations"] == 20


def test_shapley_with_interactions_converges_to_the_brute_force_values():
    labels = STRIPES
    exact = exact_shapley(interaction, 5)
    # the interaction terms are shared equally: 0.3 m0 m1 gives 0.15 each, -0.2 m2 m3 m4 gives -0.2/3 each
    np.testing.assert_allclose(exact, [0.35, 0.05, -0.2 / 3, -0.2 / 3, 0.05 - 0.2 / 3], atol=1e-12)
    exp = unveil.explain(segment_poly_model(labels, interaction), WHITE, method="shapley", target=0, seed=0,
                         n_permutations=400, segmentation=labels, baseline="zero", progress=False)
    se = exp.extras["stderr"]
    assert np.all(se > 0) and np.all(se < 0.01)
    assert np.all(np.abs(exp.weights - exact) <= 4 * se + 1e-6)
    # each permutation's samples telescope: the estimate is efficient however few permutations
    assert exp.weights.sum() == pytest.approx(interaction(np.ones(5)) - interaction(np.zeros(5)), abs=1e-5)
    # 400 permutations ask for 2400 coalitions, but there are only 32 and each is scored once
    assert exp.extras["masks_requested"] == 400 * 6
    assert exp.n_evals <= 32 and exp.extras["masks_evaluated"] == exp.n_evals - 1


def test_shapley_agrees_with_captum_within_sampling_error(small_net_case):
    from captum.attr import ShapleyValueSampling

    c = small_net_case
    exp = unveil.explain(c["model"], c["img"], method="shapley", target=0, seed=0, n_permutations=100,
                         segmentation=c["labels"], baseline="zero", progress=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        attr = ShapleyValueSampling(c["forward"]).attribute(
            c["x"], baselines=torch.zeros_like(c["x"]), target=0, feature_mask=c["lab"][None, None],
            n_samples=100, perturbations_per_eval=6)
    theirs = cell_means(attr, c["lab"], 6)
    se = exp.extras["stderr"].astype(np.float64)  # both are means of 100 draws of the same distribution
    assert np.all(np.abs(exp.weights - c["exact"]) <= 4 * se + 1e-6)
    assert np.all(np.abs(theirs - c["exact"]) <= 4 * se + 1e-6)
    assert np.all(np.abs(exp.weights - theirs) <= 4 * np.sqrt(2) * se + 1e-6)
    # an even split of f(all) - f(none) would be far outside the sampling error on this case
    assert np.abs(c["exact"] - c["exact"].mean()).max() > 10 * se.max()


def test_shapley_budget_buys_the_most_permutations_that_fit():
    labels = grid(24, 24, 9)
    model = segment_linear_model(np.linspace(-0.2, 0.3, 9), labels)
    kw = dict(method="shapley", target=0, segmentation=labels, baseline="zero", progress=False)
    img = np.ones((24, 24, 3), np.float32)
    exp = unveil.explain(model, img, budget=60, **kw)
    # 59 evaluations left: the empty coalition, then at most 8 new ones per permutation
    assert exp.n_evals <= 60 and exp.extras["n_permutations"] >= (59 - 1) // 8
    capped = unveil.explain(model, img, budget=60, n_permutations=3, **kw)
    assert capped.extras["n_permutations"] == 3
    with pytest.raises(ValueError, match="budget"):
        unveil.explain(model, img, budget=8, **kw)  # one permutation over 9 segments needs 9


def test_shapley_scores_masks_in_batches():
    labels = STRIPES
    sizes = []
    inner = segment_poly_model(labels, interaction)

    def recording(batch):
        sizes.append(len(batch))
        return inner.fn(batch)

    model = unveil.Model(recording, input_size=(20, 20), outputs="scores", batch_size=8)
    exp = unveil.explain(model, WHITE, method="shapley", target=0, n_permutations=20, segmentation=labels,
                         baseline="zero", progress=False)
    assert max(sizes) == 8 and sum(sizes) == exp.n_evals


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_shapley_rejects_bad_permutation_counts(bad, tiny, image):
    with pytest.raises(ValueError, match="n_permutations"):
        unveil.explain(tiny, image, method="shapley", n_permutations=bad, progress=False)


# ----------------------------------------------------------------------------- KernelSHAP
@pytest.mark.parametrize("sampling", ["kernel", "uniform"])
def test_kernelshap_of_an_additive_model_is_exact(sampling):
    labels = grid(24, 24, 9)
    coef = np.array([0.30, -0.10, 0.05, 0.20, 0.0, -0.25, 0.12, 0.07, 0.15])
    exp = unveil.explain(segment_linear_model(coef, labels), np.ones((24, 24, 3), np.float32),
                         method="kernelshap", target=0, seed=2, n_samples=80, segmentation=labels,
                         baseline="zero", sampling=sampling, progress=False)
    np.testing.assert_allclose(exp.weights, coef, atol=1e-6)
    assert exp.extras["intercept"] == pytest.approx(0.1, abs=1e-6)
    assert exp.extras["r2"] == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("n_samples", [3, 40])
def test_kernelshap_efficiency_holds_exactly_on_a_net(small_net_case, n_samples):
    c = small_net_case
    exp = unveil.explain(c["model"], c["img"], method="kernelshap", target=0, seed=1, n_samples=n_samples,
                         segmentation=c["labels"], baseline="zero", progress=False)
    assert exp.extras["intercept"] == pytest.approx(c["f_none"], abs=1e-6)  # f(none) composed by the test
    # exact by construction (the weights are stored as float32)
    assert float(np.sum(exp.weights, dtype=np.float64)) == pytest.approx(exp.score - exp.extras["intercept"],
                                                                          abs=1e-7)


def test_kernelshap_agrees_with_captum_and_the_exact_values(small_net_case):
    from captum.attr import KernelShap

    c = small_net_case
    exp = unveil.explain(c["model"], c["img"], method="kernelshap", target=0, seed=0, n_samples=400,
                         segmentation=c["labels"], baseline="zero", progress=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        attr = KernelShap(c["forward"]).attribute(
            c["x"], baselines=torch.zeros_like(c["x"]), target=0, feature_mask=c["lab"][None, None],
            n_samples=400, perturbations_per_eval=50)
    theirs = cell_means(attr, c["lab"], 6)
    spread = np.abs(c["exact"] - c["exact"].mean()).max()
    # sampling error of 400 kernel draws over 6 features, measured over 6 seeds: below 2e-4 for ours (paired
    # samples), below 1.6e-3 for captum's (and for ours with paired=False)
    assert np.abs(exp.weights - c["exact"]).max() < 0.001
    assert np.abs(theirs - c["exact"]).max() < 0.002
    assert np.abs(exp.weights - theirs).max() < 0.003 < spread / 5
    assert exp.n_evals <= 64  # 6 features have 64 coalitions; repeats are scored once


def test_kernelshap_options_are_checked(tiny, image):
    with pytest.raises(ValueError, match="sampling"):
        unveil.explain(tiny, image, method="kernelshap", sampling="sobol", progress=False)
    with pytest.raises(ValueError, match="n_samples"):
        unveil.explain(tiny, image, method="kernelshap", n_samples=0, progress=False)


# ----------------------------------------------------------------------------- RISE
def test_rise_with_all_ones_masks_is_the_constant_score(tiny):
    img = np.random.default_rng(3).random((32, 32, 3)).astype(np.float32)
    exp = unveil.explain(tiny, img, method="rise", target=3, p=1.0, n_masks=20, progress=False)
    np.testing.assert_allclose(exp.map, exp.score, rtol=1e-5, atol=1e-7)


def test_rise_map_is_the_papers_formula_with_skimage_masks():
    from skimage.transform import resize

    net = Tempered().eval()
    h = w = 40
    n, s, p = 30, 5, 0.5
    img = np.random.default_rng(5).random((h, w, 3)).astype(np.float32)
    model = unveil.Model(net, input_size=(h, w), batch_size=7)
    exp = unveil.explain(model, img, method="rise", target=2, seed=9, n_masks=n, s=s, p=p, centered=False,
                         progress=False)
    grids, shifts = draw_grids(np.random.default_rng(9), n, s, p, (h, w))
    cell = math.ceil(h / s)
    masks = np.stack([
        resize(g.astype(np.float64), ((s + 1) * cell, (s + 1) * cell), order=1, mode="reflect",
               anti_aliasing=False)[dy:dy + h, dx:dx + w]
        for g, (dy, dx) in zip(grids, shifts)
    ])
    x = torch.from_numpy(img.transpose(2, 0, 1))
    with torch.no_grad():
        scores = torch.softmax(net(torch.from_numpy(masks).float()[:, None] * x), 1)[:, 2].double().numpy()
    expected = np.tensordot(scores, masks, axes=1) / (n * p)
    np.testing.assert_allclose(exp.map, expected, rtol=1e-4, atol=1e-6)
    assert 0.3 < masks.mean() < 0.7 and masks.min() >= 0 and masks.max() <= 1


def test_rise_finds_the_region_the_score_depends_on():
    h = w = 42
    region = np.zeros((h, w), bool)
    region[6:18, 24:36] = True

    def region_score(batch):  # the mean brightness of the region: only its pixels matter
        s = batch[:, region, 0].mean(axis=1)
        return np.stack([s, 1 - s], axis=1)

    model = unveil.Model(region_score, input_size=(h, w), outputs="scores", batch_size=50)
    exp = unveil.explain(model, np.ones((h, w, 3), np.float32), method="rise", target=0, seed=0, n_masks=500,
                         progress=False)
    corr = np.corrcoef(exp.map.ravel(), region.ravel().astype(float))[0, 1]
    assert corr > 0.6
    assert exp.map[region].min() > exp.map[~region].mean()


def test_rise_budget_caps_the_masks(tiny, image):
    exp = unveil.explain(tiny, image, method="rise", n_masks=100, budget=25, progress=False)
    assert exp.n_evals == 25 and exp.extras["n_masks"] == 24


@pytest.mark.parametrize("opts, name", [({"p": 0.0}, "p"), ({"p": 1.5}, "p"), ({"s": 0}, "s"), ({"s": 1000}, "s"),
                                        ({"n_masks": 0}, "n_masks")])
def test_rise_rejects_bad_options(tiny, image, opts, name):
    with pytest.raises(ValueError, match=name):
        unveil.explain(tiny, image, method="rise", progress=False, **opts)


# stderr is the unbiased sample std / sqrt(n) of the per-permutation samples. Two segments of
# f = 0.1 + 0.2 m0 + 0.3 m1 + 0.4 m0 m1: feature 0's sample is 0.2 (first) or 0.6 (second), so the share p of
# permutations where it comes first follows from the mean, and the sample variance from p exactly.
def test_shapley_stderr_is_the_sample_standard_error():
    labels = np.repeat(np.arange(2), 4)[None, :].repeat(8, axis=0)
    f = lambda m: 0.1 + 0.2 * m[0] + 0.3 * m[1] + 0.4 * m[0] * m[1]
    n = 10
    exp = unveil.explain(segment_poly_model(labels, f), np.ones((8, 8, 3), np.float32), method="shapley", target=0,
                         seed=0, n_permutations=n, segmentation=labels, baseline="zero", progress=False)
    p = (0.6 - exp.weights[0]) / 0.4
    assert 0 < p < 1  # both orders were drawn (else the check below is empty)
    expected = math.sqrt(n / (n - 1) * p * (1 - p) * 0.4 ** 2 / n)
    assert exp.extras["stderr"][0] == pytest.approx(expected, rel=1e-5)
    assert exp.extras["stderr"][1] == pytest.approx(expected, rel=1e-5)


def test_kernel_coalition_sizes_follow_the_shapley_kernel():
    """KernelSHAP draws coalition sizes in proportion to the Shapley kernel's total weight per size (a
    chi-square test of 40000 draws)."""
    from scipy.stats import chisquare
    from unveil.methods.kernelshap import sample_coalitions
    K = 10
    z = sample_coalitions(np.random.default_rng(0), 40000, K, paired=False)
    sizes = np.bincount(z.sum(1), minlength=K + 1)[1:K]
    s = np.arange(1, K)
    total_w = np.array([math.comb(K, j) * (K - 1) / (math.comb(K, j) * j * (K - j)) for j in s])  # C(K,j) pi(j)
    assert chisquare(sizes, total_w / total_w.sum() * sizes.sum()).pvalue > 1e-3


def test_shapley_with_a_budget_ends_once_every_coalition_is_known():
    """With a budget and no n_permutations, Shapley sampling draws permutations while evaluations remain; with
    3 segments all 8 coalitions are soon known and no permutation spends any: it stops there (it looped
    forever) and returns the exact Shapley values of the additive model."""
    labels = np.repeat(np.arange(3), 4)[None, :].repeat(12, axis=0)
    f = lambda m: 0.1 + 0.2 * m[0] + 0.3 * m[1] + 0.15 * m[2]
    exp = unveil.explain(segment_poly_model(labels, f), np.ones((12, 12, 3), np.float32), method="shapley",
                         target=0, seed=0, budget=60, segmentation=labels, baseline="zero", progress=False)
    assert exp.n_evals <= 8 and exp.extras["n_permutations"] >= 1
    np.testing.assert_allclose(exp.weights, [0.2, 0.3, 0.15], atol=1e-6)


def test_rise_grids_are_drawn_block_by_block_in_order(monkeypatch):
    from unveil.methods import rise as rise_module

    monkeypatch.setattr(rise_module, "GRID_BLOCK", 7)
    n, s, p, size = 30, 4, 0.5, (20, 24)
    stream = rise_module.GridStream(np.random.default_rng(3), n, s, p, size)
    rng = np.random.default_rng(3)
    blocks = [draw_grids(rng, min(7, n - i), s, p, size) for i in range(0, n, 7)]  # the same stream, by hand
    grids, shifts = np.concatenate([g for g, _ in blocks]), np.concatenate([t for _, t in blocks])
    start, most = 0, 0
    for width in (5, 5, 9, 1, 10):  # passes across block boundaries
        g, t = stream.take(start, start + width)
        np.testing.assert_array_equal(g, grids[start:start + width])
        np.testing.assert_array_equal(t, shifts[start:start + width])
        most = max(most, len(stream.blocks))
        start += width
    assert start == n and most <= 3  # earlier blocks are let go
    with pytest.raises(RuntimeError, match="taken in order"):
        stream.take(0, 3)


def test_absurd_counts_are_refused_by_name(tiny, image):
    from unveil.methods.gradients import ig_nodes

    with pytest.raises(ValueError, match=r"^n_samples: 1000000000 samples of \d+ segments need [\d.]+ GiB"):
        unveil.explain(tiny, image, method="lime", n_samples=10**9, progress=False)
    with pytest.raises(ValueError, match=r"^n_steps: 1000000000 path points.* more than the 10000 allowed"):
        unveil.explain(tiny, image, method="integrated_gradients", n_steps=10**9, progress=False)
    a, w = ig_nodes(3000)  # scipy's nodes past 200 steps: the same rule, fast
    ref_x, ref_w = np.polynomial.legendre.leggauss(300)
    a300, w300 = ig_nodes(300)
    np.testing.assert_allclose(a300, 0.5 * (ref_x + 1), atol=1e-13)
    np.testing.assert_allclose(w300, 0.5 * ref_w, atol=1e-13)
    assert a.shape == (3000,) and w.sum() == pytest.approx(1.0) and np.all(np.diff(a) > 0)


def test_one_segment_gets_the_whole_change_in_kernelshap_and_shapley(tiny, image):
    labels = np.zeros(image.shape[:2], np.int64)  # a single segment: the image against the baseline
    target = int(tiny.probabilities(tiny.prepare(image)[1][None], batch_size=1)[0].argmax())
    blank = unveil.explain(tiny, np.zeros_like(image), method="occlusion", target=target, window=8, progress=False)
    whole = unveil.explain(tiny, image, method="occlusion", target=target, window=8, progress=False).score
    for method, opts in (("kernelshap", {}), ("shapley", {"n_permutations": 2})):
        exp = unveil.explain(tiny, image, method=method, segmentation=labels, baseline="zero", target=target,
                             progress=False, **opts)
        assert exp.weights.shape == (1,)
        assert exp.weights[0] == pytest.approx(whole - blank.score, abs=1e-6)  # f(image) - f(black)
    assert unveil.explain(tiny, image, method="kernelshap", segmentation=labels, progress=False).n_evals == 2


def test_centered_rise_is_the_papers_sum_with_the_mean_score_as_control_variate():
    """Centered RISE = (sum f_i M_i - mean(f) sum M_i) / (N p) + mean(f), from the same masks as the paper's
    sum; adding a constant to the scores shifts it by that constant (the paper's sum can reorder its pixels),
    and a model that ignores its input gets an exactly constant map."""
    h = w = 32

    def scores(c):
        def f(batch):
            s = batch[:, :16, :16, 0].mean(axis=(1, 2))
            return np.stack([s + c, -s + c], 1)
        return f

    img = np.random.default_rng(1).random((h, w, 3)).astype(np.float32)
    maps = {}
    for c in (0.0, 1000.0):
        model = unveil.Model(scores(c), input_size=(h, w), outputs="scores", batch_size=256)
        for centered in (True, False):
            maps[c, centered] = unveil.explain(model, img, method="rise", target=0, n_masks=300, seed=4,
                                               centered=centered, progress=False).map.astype(np.float64)
    np.testing.assert_allclose(maps[1000.0, True] - maps[0.0, True], 1000.0, atol=1e-3)  # a shift, no reordering
    assert metrics.spearman(maps[0.0, False], maps[1000.0, False]) < 0.9  # the paper's sum: reordered
    # the same masks by hand: centered from the paper's pieces
    grids, shifts = draw_grids(np.random.default_rng(4), 300, 7, 0.5, (h, w))
    from unveil.methods.rise import upsample_masks

    m = upsample_masks(grids, shifts, (h, w), torch.device("cpu")).double().numpy()
    f = scores(0.0)((m[..., None] * img[None]).astype(np.float32))[:, 0].astype(np.float64)
    paper = np.tensordot(f, m, axes=1) / (300 * 0.5)
    np.testing.assert_allclose(maps[0.0, False], paper, atol=1e-5)
    centered = (np.tensordot(f, m, axes=1) - f.mean() * m.sum(0)) / (300 * 0.5) + f.mean()
    np.testing.assert_allclose(maps[0.0, True], centered, atol=1e-5)
    flat = unveil.Model(lambda b: np.tile([0.2, 0.8], (len(b), 1)), input_size=(h, w), batch_size=64)
    const = unveil.explain(flat, img, method="rise", target=1, n_masks=200, progress=False).map
    np.testing.assert_allclose(const, 0.8, atol=1e-6)


def test_scores_that_do_not_vary_give_exact_zeros_and_r2_one():
    from conftest import IgnoresInput as Const

    model = unveil.Model(Const(), input_size=(32, 32), batch_size=16)
    img = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
    for opts in ({}, {"surrogate": "lasso"}, {"surrogate": "tree"}):
        exp = unveil.explain(model, img, method="lime", n_samples=64, n_features=8, progress=False, **opts)
        assert not exp.weights.any() and exp.extras["r2"] == 1.0, opts  # were +-1e-32 and R2 0, 1 or -24
    X = np.random.default_rng(0).normal(size=(100, 4))
    table = unveil.explain_tabular(lambda r: np.full(len(r), 7.0), X[0], background=X, method="lime",
                                   progress=False)
    assert not table.weights.any() and table.extras["r2"] == 1.0  # was -168


def test_lime_kernel_weights_at_extreme_widths():
    from unveil.methods.lime import kernel_weights

    masks = np.random.default_rng(0).integers(0, 2, (50, 8)).astype(np.uint8)
    masks[0] = 1
    wide = kernel_weights(masks, 1e200)  # was an OverflowError from width ** 2
    np.testing.assert_allclose(wide, 1.0)
    narrow = kernel_weights(masks, 1e-160)  # the full mask is at distance 0: weight 1, the rest 0
    assert narrow[0] == 1.0 and not narrow[1:][masks[1:].min(axis=1) == 0].any()


def test_kernelshap_uniform_sampling_over_many_segments():
    """The Shapley kernel of 1600 segments underflows (C(K, k) overflows): weights are normalized in log
    space, and the attributions still sum to f(all) - f(none)."""
    from unveil.methods.kernelshap import shapley_kernel

    lw = shapley_kernel(np.array([1, 800, 1599]), 1600, log=True)
    assert np.all(np.isfinite(lw)) and lw[0] == pytest.approx(lw[2]) and lw[1] < lw[0] - 1000
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    model = unveil.Model(net.eval(), input_size=(40, 40), batch_size=64)
    img = np.random.default_rng(2).random((40, 40, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="kernelshap", segmentation=np.arange(1600).reshape(40, 40),
                         n_samples=40, sampling="uniform", baseline="zero", progress=False)
    assert np.all(np.isfinite(exp.weights))
    assert exp.weights.sum() == pytest.approx(exp.extras["f_all"] - exp.extras["intercept"], abs=1e-6)


def test_tiny_scores_that_vary_are_still_explained():
    """The 'scores do not vary' shortcut is relative to the scores' own size: probabilities of 1e-15..4e-15
    that follow the image are fitted, not zeroed."""
    from unveil.methods.lime import constant_scores

    assert constant_scores(np.full(5, 7.0) + np.array([0, 1e-15, 0, 0, 0]))
    assert not constant_scores(np.array([1e-15, 4e-15, 2e-15]))
    assert not constant_scores(np.array([1.0, 1.0 - 1e-9]))

    def f(batch):
        s = batch[:, :16, :16, 0].mean(axis=(1, 2))
        return np.stack([1.0 - 1e-15 * (1 + 3 * s), 1e-15 * (1 + 3 * s)], 1)

    model = unveil.Model(f, input_size=(32, 32), outputs="scores", batch_size=64)
    img = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="lime", target=1, n_samples=100, segmentation="grid", n_features=4,
                         alpha=0.0, progress=False)
    assert exp.weights.any() and exp.extras["r2"] > 0.9
    table = unveil.explain_tabular(lambda r: 1e-13 * (1 + np.asarray(r)[:, 0]), np.ones(3),
                                   background=np.random.default_rng(0).normal(size=(50, 3)), method="lime",
                                   discretize=False, kernel_width=1e200, progress=False)  # and no overflow
    assert table.weights[0] > 1e4 * np.abs(table.weights[1:]).max()  # was exactly 0: read as constant
