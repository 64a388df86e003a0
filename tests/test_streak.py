"""STREAK: the generic algorithm's proven bounds, the image method and LIME's STREAK feature selection.

The ratio tested against. The paper (Elenberg et al. 2017, Theorem 5.1) proves, for a gamma-weakly submodular
monotone f and a uniformly random stream order, E[f(STREAK)] >= (1 - eps) * gamma *
(3 - e^(-gamma/2) - 2 sqrt(2 - e^(-gamma/2))) / 2 * OPT, about 0.016 (1 - eps) OPT at gamma = 1. For gamma = 1
(monotone submodular: coverage and non-negative modular functions) the threshold argument of Badanidiyuru et
al. (2014), which STREAK builds on, gives the stronger (1 - eps) / 2 for *every* order and every run:
some live threshold tau lies in [(1 - eps) OPT / 2, OPT / 2] (the range [(1 - eps) m / (9 k^2), m k] holds it
because m <= OPT <= k m), and that instance either fills up (value >= k * tau / k = tau) or rejected every
optimal element it did not keep with a gain < tau / k, so OPT <= f(S u OPT) <= f(S) + tau. Elements that
arrive before the instance opens have f({u}) < tau / k, so they would have been rejected too. The tests assert
the (1 - eps) / 2 bound (it implies the paper's).
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest

import unveil
from unveil.segmentation import grid
from unveil.streak import (
    SelectionResult,
    ThresholdGreedy,
    greedy,
    max_live_instances,
    random_selection,
    streak,
    threshold_greedy,
)



def modular(weights):
    w = np.asarray(weights, dtype=np.float64)
    return lambda sets: [float(sum(w[list(s)])) for s in sets]


def coverage(cover, item_weights):
    def f(sets):
        return [float(sum(item_weights[j] for j in set().union(*[cover[e] for e in s]))) for s in sets]

    return f


def random_coverage(rng, n, universe=20):
    cover = [set(rng.choice(universe, size=int(rng.integers(1, 6)), replace=False).tolist()) for _ in range(n)]
    return coverage(cover, rng.random(universe))


def brute_force(f, n, k):
    return max(f([c])[0] for c in itertools.combinations(range(n), min(k, n)))


# ----------------------------------------------------------------------------- the algorithm
@pytest.mark.parametrize("eps", [0.1, 0.5, 0.7])
def test_modular_value_bound_and_size(eps):
    rng = np.random.default_rng(1)
    for _ in range(40):
        n, k = int(rng.integers(5, 30)), int(rng.integers(1, 8))
        w = rng.exponential(size=n) * (rng.random(n) < 0.8)  # non-negative, some zeros
        f = modular(w)
        r = streak(f, rng.permutation(n).tolist(), k, eps)
        opt = np.sort(w)[::-1][:k].sum()
        assert len(r.selected) <= k and len(set(r.selected)) == len(r.selected)
        assert r.value >= (1 - eps) / 2 * opt - 1e-12
        assert r.value == pytest.approx(w[list(r.selected)].sum())
        assert sum(r.gains) == pytest.approx(r.value)


@pytest.mark.parametrize("eps", [0.1, 0.3, 0.7])
def test_modular_well_separated_top_k_is_found_exactly(eps):
    rng = np.random.default_rng(2)
    sep = 1.05 / (1 - eps) ** 2  # top-k weights more than 1/(1-eps)^2 above the rest
    for _ in range(30):
        n, k = int(rng.integers(6, 25)), int(rng.integers(1, 5))
        top = rng.uniform(1.0, 1.5, size=k)
        rest = rng.uniform(0.0, 1.0 / sep, size=n - k)
        w = np.concatenate([top, rest])
        largest = int(np.argmax(w))
        others = [j for j in rng.permutation(n).tolist() if j != largest]
        r = streak(modular(w), [largest] + others, k, eps)
        assert set(r.selected) == set(range(k))


@pytest.mark.parametrize("eps", [0.2, 0.5, 0.75])
def test_coverage_ratio_live_instances_and_calls(eps):
    rng = np.random.default_rng(3)
    close = []
    for _ in range(25):
        n, k = int(rng.integers(8, 13)), int(rng.integers(2, 5))
        f = random_coverage(rng, n)
        order = rng.permutation(n).tolist()
        r = streak(f, order, k, eps)
        opt = brute_force(f, n, k)
        g = greedy(f, range(n), k)
        assert r.value >= (1 - eps) / 2 * opt - 1e-12
        assert r.value == pytest.approx(f([r.selected])[0] - f([()])[0])
        close.append(r.value / g.value)
        # live instances never exceed 2 - ln(9 k^3) / ln(1 - eps)
        assert len(r.history) == n and r.max_live <= max_live_instances(k, eps) + 1e-9
        # each element costs at most one set per live instance plus its singleton; f(empty) once
        assert r.calls_per_element[0] == 1
        for t in range(1, n):
            assert r.calls_per_element[t] <= r.history[t - 1] + 1
        assert r.oracle_calls == 1 + sum(r.calls_per_element)
        assert r.oracle_calls <= n * r.max_live
    assert np.mean(close) >= 0.85  # close to greedy in practice (measured: 0.96, 0.90, 0.88 for these eps)


def test_live_instances_bound_is_reached_and_respected():
    for k, eps in [(1, 0.5), (5, 0.7), (10, 0.1), (3, 0.9)]:
        w = np.linspace(0.1, 4.0, 60)  # m grows with every element: instances open and drop all along
        r = streak(modular(w), list(range(60)), k, eps)
        bound = max_live_instances(k, eps)
        assert r.max_live <= bound + 1e-9
        assert r.max_live >= math.floor(bound) - 1


def test_deterministic_and_batched_equals_unbatched():
    rng = np.random.default_rng(4)
    f = random_coverage(rng, 40, universe=60)
    order = rng.permutation(40).tolist()
    a = streak(f, order, 5, 0.3)
    b = streak(f, order, 5, 0.3)
    assert a == b
    batch_sizes = []

    def counted(sets):
        batch_sizes.append(len(sets))
        return f(sets)

    c = streak(counted, order, 5, 0.3)
    d = streak(lambda s: f([s])[0], order, 5, 0.3, batched=False)
    assert c.selected == d.selected == a.selected and c.gains == d.gains
    assert c.oracle_calls == d.oracle_calls
    assert len(batch_sizes) == 41  # f(empty) + one call per element
    assert max(batch_sizes) > 1


def test_budget_stops_the_stream():
    rng = np.random.default_rng(5)
    f = random_coverage(rng, 30)
    full = streak(f, range(30), 4, 0.5)
    for budget in (1, 2, 7, 20, full.oracle_calls - 1):
        r = streak(f, range(30), 4, 0.5, budget=budget)
        assert r.oracle_calls <= budget and r.stopped and r.n_seen < 30
    assert streak(f, range(30), 4, 0.5, budget=full.oracle_calls) == full
    with pytest.raises(ValueError, match="budget"):
        streak(f, range(30), 4, 0.5, budget=0)
    g = greedy(f, range(30), 4, budget=59)  # f(empty) + 30 for round 1; round 2 (29 sets) does not fit
    assert g.oracle_calls == 31 and g.stopped and len(g.selected) == 1


def test_best_singleton_wins_when_larger():
    # one element worth 10 after an element worth 1: instances opened late miss nothing, but a set of k=1
    w = np.array([1.0, 10.0, 0.5])
    r = streak(modular(w), [0, 1, 2], 1, 0.5)
    assert r.selected == (1,) and r.value == pytest.approx(10.0)


def test_threshold_greedy_rule():
    w = np.array([0.5, 2.0, 1.0, 3.0, 0.9])
    r = threshold_greedy(modular(w), range(5), 2, tau=2.0)  # keep gains >= 1.0 while |S| < 2
    assert r.selected == (1, 2) and r.gains == (2.0, 1.0) and r.value == 3.0
    inst = ThresholdGreedy(1, 1.0)
    assert inst.offer("a", 1.0) and not inst.offer("b", 5.0)
    with pytest.raises(ValueError, match="tau"):
        ThresholdGreedy(2, 0.0)


def test_greedy_and_random_baselines():
    w = np.array([0.3, 0.9, 0.1, 0.7, 0.5])
    g = greedy(modular(w), range(5), 3)
    assert g.selected == (1, 3, 4) and g.gains == pytest.approx((0.9, 0.7, 0.5))
    assert g.oracle_calls == 1 + 5 + 4 + 3
    r1 = random_selection(modular(w), range(5), 3, rng=7)
    r2 = random_selection(modular(w), range(5), 3, rng=np.random.default_rng(7))
    assert r1 == r2 and len(set(r1.selected)) == 3
    assert r1.value == pytest.approx(w[list(r1.selected)].sum())
    assert isinstance(r1, SelectionResult) and r1.oracle_calls == 4


def test_generic_elements_and_bad_input():
    f = lambda sets: [float(len(s)) for s in sets]
    r = streak(f, ["a", ("x", 1), 3.5], 2, 0.5)
    assert len(r.selected) == 2
    with pytest.raises(ValueError, match=r"^k: expected a positive int"):
        streak(f, [1, 2], 0)
    with pytest.raises(ValueError, match="eps"):
        streak(f, [1, 2], 2, eps=1.0)
    with pytest.raises(ValueError, match="twice"):
        streak(f, [1, 1], 2)
    with pytest.raises(TypeError, match=r"^f: expected a callable set function"):
        streak(None, [1, 2], 2)
    with pytest.raises(ValueError, match="values"):
        greedy(lambda sets: [1.0], [1, 2], 2)
    with pytest.raises(ValueError, match="non-finite"):
        streak(lambda sets: [float("nan")] * len(sets), [1, 2], 2)
    assert streak(lambda sets: [0.0] * len(sets), [1, 2], 2).selected == ()


# ----------------------------------------------------------------------------- images
def segment_model(coef: np.ndarray, labels: np.ndarray, bias: float = 0.05):
    """p(class 0) = bias + sum_k coef_k * mean of channel 0 over segment k; with a white image and a zero
    baseline, keeping the segments S scores exactly bias + sum_{k in S} coef_k."""
    k = len(coef)
    flat_labels = labels.reshape(-1)
    counts = np.bincount(flat_labels, minlength=k)

    def fn(batch):
        flat = batch[..., 0].reshape(len(batch), -1)
        means = np.stack([np.bincount(flat_labels, weights=row, minlength=k) for row in flat]) / counts
        s = bias + means @ coef
        return np.stack([s, 1 - s], axis=1)

    return unveil.Model(fn, input_size=labels.shape, outputs="scores", batch_size=32)


def test_streak_selects_the_two_segments_the_class_depends_on():
    labels = grid(30, 30, 25)
    coef = np.full(25, 0.004)
    coef[[7, 18]] = [0.45, 0.35]
    model = segment_model(coef, labels)
    for seed in range(3):
        exp = unveil.explain(model, np.ones((30, 30, 3), np.float32), method="streak", target=0, seed=seed,
                             k=2, segmentation=labels, baseline="zero", progress=False)
        assert set(exp.extras["selected"]) == {7, 18}
        gains = dict(zip(exp.extras["selected"], exp.extras["gains"]))
        assert gains == pytest.approx({7: 0.45, 18: 0.35})
        np.testing.assert_allclose(exp.weights[[7, 18]], [0.45, 0.35], atol=1e-6)
        assert np.count_nonzero(exp.weights) == 2
        np.testing.assert_allclose(exp.map, exp.weights[labels], atol=1e-7)  # gains painted on their segments
        assert set(exp.top_features(2).tolist()) == {7, 18}
        np.testing.assert_array_equal(exp.top_mask(2), np.isin(labels, [7, 18]))
        assert exp.extras["value"] == pytest.approx(0.80)
        assert exp.extras["empty_score"] == pytest.approx(0.05)
        np.testing.assert_allclose(exp.extras["singleton_gains"], coef, atol=1e-6)
        # model evaluations: the unperturbed input plus every set STREAK asked for (no repeats in a stream)
        assert exp.n_evals == 1 + exp.extras["oracle_calls"]


def test_streak_fill_ranks_the_other_segments_by_their_singleton_gains():
    labels = grid(30, 30, 25)
    coef = np.linspace(0.001, 0.02, 25)
    coef[[7, 18, 3]] = [0.45, 0.35, 0.3]  # with k = 2, one of the three large effects is left out
    model = segment_model(coef, labels)
    img = np.ones((30, 30, 3), np.float32)
    opts = dict(method="streak", target=0, seed=1, k=2, segmentation=labels, baseline="zero", progress=False)
    plain = unveil.explain(model, img, **opts)
    full = unveil.explain(model, img, fill="singletons", **opts)
    sel = full.extras["selected"]
    assert sel == plain.extras["selected"] and len(sel) == 2
    assert full.n_evals == plain.n_evals  # the singletons were evaluated anyway
    np.testing.assert_allclose(full.weights[sel], coef[sel], atol=1e-6)  # selected gains unchanged (modular f)
    rest = np.setdiff1d(np.arange(25), sel)
    c = min(1.0, 0.5 * coef[sel].min() / coef[rest].max())  # the largest left-out effect needs scaling down
    assert c < 1
    np.testing.assert_allclose(full.weights[rest], coef[rest] * c, atol=1e-6)
    assert full.weights[rest].max() < full.weights[sel].min()
    np.testing.assert_allclose(full.map, full.weights[labels], atol=1e-7)
    np.testing.assert_array_equal(full.top_mask(2), plain.top_mask(2))
    # past the selected set, top_mask(k) goes on down the filled ranking (without a fill: the set only)
    third = rest[np.argmax(coef[rest])]
    np.testing.assert_array_equal(full.top_features(3), [*sel, third])
    np.testing.assert_array_equal(full.top_mask(3), np.isin(labels, [*sel, third]))
    np.testing.assert_array_equal(plain.top_mask(3), plain.top_mask(2))
    with pytest.raises(ValueError, match="fill"):
        unveil.explain(model, img, fill="all", **opts)


def test_streak_on_a_torch_model_spends_few_evaluations_and_honours_the_budget(tiny, image):
    exp = unveil.explain(tiny, image, method="streak", seed=0, n_features=20, progress=False)
    n_seg = exp.extras["n_features"]
    assert len(exp.extras["selected"]) <= 5
    assert exp.n_evals <= 1 + 1 + n_seg * (1 + max_live_instances(5, 0.7))
    assert exp.extras["max_live"] <= max_live_instances(5, 0.7)
    ahead = unveil.explain(tiny, image, method="streak", seed=0, n_features=20, lookahead=4, progress=False)
    assert ahead.extras["selected"] == exp.extras["selected"] and ahead.n_evals >= exp.n_evals
    np.testing.assert_allclose(ahead.weights, exp.weights, atol=1e-6)
    capped = unveil.explain(tiny, image, method="streak", seed=0, n_features=20, budget=12, progress=False)
    assert capped.n_evals <= 12 and capped.extras["stopped"]
    with pytest.raises(ValueError, match=r"^k: expected a positive int \(segments to select\)"):
        unveil.explain(tiny, image, method="streak", k=0, progress=False)
    with pytest.raises(ValueError, match="eps"):
        unveil.explain(tiny, image, method="streak", eps=1.5, progress=False)


# ----------------------------------------------------------------------------- STREAK LIME
def test_ridge_r2_oracle_matches_sklearn():
    from sklearn.linear_model import Ridge

    from unveil.methods.streak import ridge_r2_oracle

    rng = np.random.default_rng(0)
    X = rng.integers(0, 2, size=(200, 12)).astype(float)
    y = X @ rng.normal(size=12) + 0.3 * rng.normal(size=200)
    w = rng.random(200)
    f = ridge_r2_oracle(X, y, w, alpha=0.7)
    sets = [(), (3,), (0, 5, 9), tuple(range(12))]
    for s, v in zip(sets, f(sets)):
        if not s:
            assert v == 0.0
            continue
        reg = Ridge(alpha=0.7).fit(X[:, list(s)], y, sample_weight=w)
        assert v == pytest.approx(reg.score(X[:, list(s)], y, sample_weight=w), abs=1e-10)


def test_lime_with_streak_selection_picks_the_largest_effects():
    from unveil.methods import lime as lime_module

    unveil.methods()  # loading the registry registers the selection
    assert "streak" in lime_module.SELECTIONS
    labels = grid(24, 24, 9)
    coef = np.array([0.30, -0.01, 0.02, 0.20, 0.0, -0.25, 0.01, 0.02, 0.01])
    model = segment_model(coef, labels, bias=0.3)
    exp = unveil.explain(model, np.ones((24, 24, 3), np.float32), method="lime", target=0, seed=0,
                         n_samples=400, segmentation=labels, baseline="zero", alpha=1e-6,
                         selection="streak", n_select=3, progress=False)
    assert set(exp.extras["selected"]) == {0, 3, 5}
    np.testing.assert_allclose(exp.weights[[0, 3, 5]], coef[[0, 3, 5]], atol=0.02)
    assert set(np.flatnonzero(exp.weights)) == {0, 3, 5}


def test_singleton_gains_are_reported_for_every_element_seen():
    w = np.array([0.2, 0.0, 0.7, 0.1])
    r = streak(modular(w), [3, 0, 2, 1], 2, 0.5)
    assert r.singletons == ((3, 0.1), (0, 0.2), (2, 0.7), (1, 0.0))


@pytest.mark.parametrize("lookahead", [2, 4, 50])
def test_lookahead_gives_the_same_result_in_fewer_calls(lookahead):
    rng = np.random.default_rng(6)
    for _ in range(10):
        f = random_coverage(rng, 30, universe=40)
        order = rng.permutation(30).tolist()
        n_calls = [0, 0]

        def counted(i):
            def g(sets):
                n_calls[i] += 1
                return f(sets)

            return g

        a = streak(counted(0), order, 4, 0.5)
        b = streak(counted(1), order, 4, 0.5, lookahead=lookahead)
        assert (b.selected, b.gains, b.value, b.history, b.singletons) == (a.selected, a.gains, a.value,
                                                                         a.history, a.singletons)
        assert b.oracle_calls >= a.oracle_calls and n_calls[1] <= n_calls[0]
        if lookahead < 30:  # a window as long as the stream opened no instance yet: one call per element
            assert n_calls[1] < n_calls[0]
        assert sum(b.calls_per_element) + 1 == b.oracle_calls and len(b.calls_per_element) == n_calls[1] - 1
        capped = streak(f, order, 4, 0.5, lookahead=lookahead, budget=a.oracle_calls // 2)
        assert capped.oracle_calls <= a.oracle_calls // 2 and capped.stopped
    with pytest.raises(ValueError, match="lookahead"):
        streak(f, order, 4, 0.5, lookahead=0)


def test_streak_fill_ends_ranks_the_rest_by_singleton_and_leave_one_out_gains():
    """f = bias + sum of kept coefficients + w * [a and b both kept]: alone, a and b gain only their
    coefficients; taken out of the whole image each also loses w. The rest are ranked by the sum of the two
    ranks (exact values known), below the selected segments, at one evaluation per segment more."""
    from scipy.stats import rankdata

    labels = grid(30, 30, 25)
    coef = np.linspace(0.001, 0.012, 25)
    coef[[7, 18]] = [0.3, 0.25]
    a, b, w = 2, 11, 0.1
    flat_labels = labels.reshape(-1)
    counts = np.bincount(flat_labels, minlength=25)

    def fn(batch):
        flat = batch[..., 0].reshape(len(batch), -1)
        means = np.stack([np.bincount(flat_labels, weights=row, minlength=25) for row in flat]) / counts
        s = 0.05 + means @ coef + w * np.minimum(means[:, a], means[:, b])
        return np.stack([s, 1 - s], axis=1)

    model = unveil.Model(fn, input_size=labels.shape, outputs="scores", batch_size=32)
    img = np.ones((30, 30, 3), np.float32)
    opts = dict(method="streak", target=0, seed=1, k=2, segmentation=labels, baseline="zero", progress=False)
    plain = unveil.explain(model, img, **opts)
    ends = unveil.explain(model, img, fill="ends", **opts)
    sel = ends.extras["selected"]
    assert sorted(sel) == [7, 18] and sel == plain.extras["selected"]
    assert ends.n_evals == plain.n_evals + 25  # one leave-one-out input per segment
    drops = coef.copy()
    drops[[a, b]] += w
    np.testing.assert_allclose(ends.extras["leave_one_out"], drops, atol=1e-6)
    np.testing.assert_allclose(ends.extras["singleton_gains"], coef, atol=1e-6)
    np.testing.assert_allclose(ends.weights[sel], coef[sel], atol=1e-6)
    rest = np.setdiff1d(np.arange(25), sel)
    score = (rankdata(coef) + rankdata(drops))[rest]
    np.testing.assert_allclose(ends.weights[rest], 0.5 * coef[sel].min() * score / score.max(), atol=1e-6)
    assert ends.weights[rest].max() < ends.weights[sel].min()
    # b (rank 9 alone, last when left out) moves above segments that beat it alone
    assert ends.weights[b] > ends.weights[b + 2]
    np.testing.assert_allclose(ends.map, ends.weights[labels], atol=1e-7)
    # the budget covers the leave-one-out batch: it is reserved before the stream
    capped = unveil.explain(model, img, fill="ends", budget=40, **opts)
    assert capped.n_evals <= 40 and capped.extras["stopped"]
    assert len(capped.extras["leave_one_out"]) == 25
    with pytest.raises(ValueError, match="fill='ends' reserves"):
        unveil.explain(model, img, fill="ends", budget=26, **opts)


def test_streak_says_so_when_it_keeps_no_segment():
    def flat(batch):  # no segment changes anything: every gain is 0, none passes a positive threshold
        return np.tile([[0.25, 0.75]], (len(batch), 1)).astype(np.float32)

    img = np.random.default_rng(0).random((24, 24, 3)).astype(np.float32)
    model = unveil.Model(flat, input_size=(24, 24))
    with pytest.warns(UserWarning, match="no segment .* the map is all 0"):
        exp = unveil.explain(model, img, method="streak", segmentation="grid", n_features=9, progress=False)
    assert exp.extras["selected"] == [] and not exp.map.any()
    # with a fill the segments are ranked anyway; over this flat model every gain is 0, which explain says
    with pytest.warns(UserWarning, match=r"^streak: the map is all 0, so it ranks no pixel") as caught:
        unveil.explain(model, img, method="streak", segmentation="grid", n_features=9, fill="singletons",
                       progress=False)
    assert not any("no segment" in str(w.message) for w in caught)


@pytest.mark.parametrize("k, eps, m", [(1, 0.5, 1.0), (5, 0.7, 0.37), (10, 0.1, 2.5), (3, 0.9, 4.0)])
def test_first_element_opens_exactly_the_thresholds_in_range(k, eps, m):
    """After the first element (m = its value) exactly the thresholds (1-eps)^i in [(1-eps) m / 9k^2, m k] are
    open: counted by brute force over the exponents."""
    from unveil.streak import streak
    q = 1 - eps
    lo, hi = q * m / (9 * k * k), m * k
    expected = sum(1 for i in range(-300, 3000) if lo <= q ** i <= hi)
    r = streak(lambda sets: [m * len(s) for s in sets], [0], k, eps)
    assert r.history[0] == expected


def test_max_live_instances_value():
    from unveil.streak import max_live_instances
    assert max_live_instances(5, 0.7) == pytest.approx(2 - math.log(9 * 125) / math.log(0.3))
    assert max_live_instances(1, 0.5) == pytest.approx(2 + math.log(9) / math.log(2))


def test_a_budget_sees_the_same_elements_with_any_lookahead():
    """Under a budget, lookahead would spend calls on queries that are asked again; it is 1 there, so the
    elements seen and the set are lookahead 1's."""
    w = modular([2.0, 9.0, 2.0, 6.0, 7.0, 3.0])
    assert streak(w, range(6), 2, 0.5, budget=4, lookahead=3) == streak(w, range(6), 2, 0.5, budget=4)
    assert streak(w, range(6), 2, 0.5, budget=4, lookahead=3).lookahead == 1  # what was used, not what was asked
    assert streak(w, range(6), 2, 0.5, lookahead=3).lookahead == 3
    rng = np.random.default_rng(11)
    for _ in range(20):
        f = random_coverage(rng, 25)
        budget = int(rng.integers(3, 60))
        one = streak(f, range(25), 4, 0.5, budget=budget)
        for lookahead in (2, 5):
            assert streak(f, range(25), 4, 0.5, budget=budget, lookahead=lookahead) == one


def test_too_small_eps_and_extreme_gains_are_named():
    f = modular([1.0, 2.0, 3.0])
    for k, eps, bound, least in ((5, 1e-9, "7.026e\\+09", "7.1e-05"), (20, 1e-4, "1.118e\\+05", "0.00012")):
        with pytest.raises(ValueError, match=rf"^eps: {eps!r} with k = {k} would keep up to {bound} threshold "
                                             rf"instances .* the most allowed is 100000, which needs eps >= {least}"):
            streak(f, range(3), k, eps)
        assert max_live_instances(k, float(least)) <= 100_000  # the value the message gives is accepted
    assert streak(f, range(3), 5, 7.1e-5).selected  # (many instances, three elements: quick)
    for big in (1e308, 5e-324):
        with pytest.raises(ValueError, match=rf"^streak: a singleton gain of {re.escape(repr(big))} puts the "
                                             "thresholds .* outside the range of floats; rescale the set function"):
            streak(modular([big, 0.0]), range(2), 3)
    tiny = streak(modular([1e-300, 3e-300]), range(2), 1)  # small but representable: as any scale
    assert tiny.selected == (1,)
