"""Tabular explanations: exact answers on linear and additive models, agreement with the lime package,
budgets and evaluation counts, save/load/plot, input errors and the explain-table command."""

from __future__ import annotations

import codecs
import itertools
import json
import math
import re
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import unveil
from unveil import Explanation, explain_tabular
from unveil.cli import main

F = 12


@pytest.fixture(scope="module")
def linear():
    """Raw linear scores of two outputs over F features with different scales, a background and a row."""
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.3, 4.0, F)
    background = rng.normal(size=(300, F)) * scale + rng.normal(size=F)
    W = rng.normal(size=(F, 2))
    b = np.array([0.5, -1.0])
    x = background.mean(axis=0) + rng.normal(size=F) * scale
    return (lambda rows: rows @ W + b), W, x, background


class Counting:
    """A model function that counts the rows it was given (independently of unveil's own counting)."""

    def __init__(self, fn):
        self.fn, self.rows = fn, 0

    def __call__(self, rows):
        self.rows += len(rows)
        return self.fn(rows)


def brute_force_shapley(value, n):
    """Exact Shapley values of the set function value(frozenset) over n players, by the subset formula."""
    phi = np.zeros(n)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            w = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for s in itertools.combinations(others, size):
                phi[i] += w * (value(frozenset(s) | {i}) - value(frozenset(s)))
    return phi


def interacting(rows):
    """A nonlinear model with pairwise interactions (1-D output: a regression)."""
    return (np.tanh(rows[:, 0] * rows[:, 1]) + rows[:, 2] ** 2 - rows[:, 3] * rows[:, 4] * rows[:, 5]
            + np.sin(rows[:, 1]))


def set_value(model, x, refs):
    """f(S): features in S at x, the rest at each reference row, scores averaged."""
    def value(s):
        keep = np.zeros(x.size, bool)
        keep[list(s)] = True
        return float(np.mean(model(np.where(keep, x, refs))))
    return value


# ----------------------------------------------------------------------------- exact recovery
@pytest.mark.parametrize("baseline", ["mean", "background"])
def test_kernelshap_recovers_coefficient_times_difference_from_background_mean(linear, baseline):
    model, W, x, bg = linear
    bg = bg[:40]  # 'background' averages over n_background rows: all of them here
    truth = W[:, 1] * (x - bg.mean(axis=0))
    exp = explain_tabular(model, x, background=bg, method="kernelshap", target=1, baseline=baseline, n_background=40)
    assert not exp.extras["exact"]  # 2^12 - 2 coalitions do not fit the default 2072 samples: sampled path
    np.testing.assert_allclose(exp.weights, truth, atol=1e-8)
    assert exp.weights.sum() == pytest.approx(exp.score - exp.extras["base_value"], abs=1e-9)


def test_kernelshap_enumerates_small_tables_and_gives_exact_shapley_values():
    rng = np.random.default_rng(1)
    bg = rng.normal(size=(8, 6))
    x = rng.normal(size=6) + 1.0
    exp = explain_tabular(interacting, x, background=bg, method="kernelshap", baseline="background", n_background=8)
    assert exp.extras["exact"]
    truth = brute_force_shapley(set_value(interacting, x, bg), 6)
    np.testing.assert_allclose(exp.weights, truth, atol=1e-9)
    assert exp.n_evals == 1 + 8 * (2**6 - 1)  # the row, then every coalition but the full one, per background row


def test_shapley_sampling_exact_on_linear_and_within_standard_errors_on_interactions(linear):
    model, W, x, bg = linear
    exp = explain_tabular(model, x, background=bg, method="shapley", target=0, n_permutations=5)
    np.testing.assert_allclose(exp.weights, W[:, 0] * (x - bg.mean(axis=0)), atol=1e-9)

    rng = np.random.default_rng(2)
    bg6 = rng.normal(size=(50, 6))
    x6 = rng.normal(size=6) + 1.0
    exp = explain_tabular(interacting, x6, background=bg6, method="shapley", n_permutations=400, seed=3)
    truth = brute_force_shapley(set_value(interacting, x6, bg6.mean(axis=0, keepdims=True)), 6)
    se = exp.extras["stderr"]
    assert np.all(se[np.abs(truth) > 0] > 0)  # the interactions make the samples vary
    assert np.all(np.abs(exp.weights - truth) <= 4 * se + 1e-9), (exp.weights, truth, se)
    assert exp.weights.sum() == pytest.approx(exp.score - exp.extras["base_value"], abs=1e-9)


def test_lime_on_a_linear_model_gives_coefficient_times_scale_and_ranks_by_it(linear):
    model, W, x, bg = linear
    expected = W[:, 1] * bg.std(axis=0)  # continuous LIME: one weight per background standard deviation
    assert not np.array_equal(np.argsort(np.abs(W[:, 1])), np.argsort(np.abs(expected)))  # scale matters here
    exp = explain_tabular(model, x, background=bg, method="lime", target=1, discretize=False)
    np.testing.assert_allclose(exp.weights, expected, rtol=0.02, atol=0.01)
    assert exp.extras["r2"] > 0.999

    # discretized: the weight of 'in the row's quartile' is coef x (mean of the background inside the row's
    # bin - mean outside it); the features are built with well separated sizes of that quantity
    rng = np.random.default_rng(4)
    scale = np.array([1.0, 3.0, 0.5, 2.0, 0.2])
    coef = np.array([2.0, -1.2, 3.0, 0.35, -4.0])  # |coef x scale| = 2, 3.6, 1.5, 0.7, 0.8 -> other order than |coef|
    bg5 = rng.normal(size=(400, 5)) * scale
    x5 = 1.3 * scale  # every feature in its top quartile
    exp = explain_tabular(lambda r: r @ coef, x5, background=bg5, method="lime", seed=1)
    inside = bg5 >= np.percentile(bg5, 75, axis=0)
    effect = coef * np.array([bg5[inside[:, j], j].mean() - bg5[~inside[:, j], j].mean() for j in range(5)])
    assert list(np.argsort(-np.abs(exp.weights))) == list(np.argsort(-np.abs(effect)))
    np.testing.assert_allclose(exp.weights, effect, rtol=0.15)
    assert exp.extras["conditions"][0].startswith("x0 > ")


def test_streak_selects_the_top_contributions_of_an_additive_model():
    rng = np.random.default_rng(5)
    bg = rng.normal(size=(100, 10)) + 2.0
    x = rng.normal(size=10) + 3.0
    mean = bg.mean(axis=0)
    contrib = np.array([1.0, 10.0, -5.0, 6.0, 0.7, 8.0, 0.3, 4.0, -2.0, 5.0])  # top 5: 10, 8, 6, 5, 4
    c = contrib / (x**2 - mean**2)  # f = sum c_i t_i^2: feature i adds exactly contrib_i at the mean baseline

    def additive(rows):
        return rows**2 @ c

    top5 = set(np.argsort(-contrib)[:5])
    for seed in range(4):  # four stream orders
        exp = explain_tabular(additive, x, background=bg, method="streak", k=5, seed=seed)
        assert set(exp.extras["selected"]) == top5
        np.testing.assert_allclose(exp.weights[sorted(top5)], contrib[sorted(top5)], rtol=1e-9)
        assert np.count_nonzero(exp.weights) == 5
        assert exp.label == "output" and exp.target == 0


# ----------------------------------------------------------------------------- agreement with the lime package
def _lime_package_weights(clf, bg, x, target, discretize, seed):
    from lime.lime_tabular import LimeTabularExplainer

    explainer = LimeTabularExplainer(bg, discretize_continuous=discretize, random_state=seed)
    got = explainer.explain_instance(x, clf.predict_proba, labels=(target,), num_features=bg.shape[1],
                                     num_samples=5000)
    w = np.zeros(bg.shape[1])
    for i, v in got.local_exp[target]:
        w[i] = v
    return w


@pytest.mark.parametrize("discretize", [True, False])
def test_lime_agrees_with_the_lime_package_on_breast_cancer(discretize):
    pytest.importorskip("lime")
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[::2], y[::2])
    bg = X[::2]
    for row in (37,):  # one row per mode keeps the test short; 25, 49 and 97 agree as well
        x = X[row]
        ref = _lime_package_weights(clf, bg, x, 1, discretize, seed=0)
        noise = np.linalg.norm(_lime_package_weights(clf, bg, x, 1, discretize, seed=1) - ref)  # lime vs itself
        ours = explain_tabular(clf.predict_proba, x, background=bg, method="lime", target=1, discretize=discretize)
        assert np.corrcoef(ours.weights, ref)[0, 1] > 0.95
        assert np.linalg.norm(ours.weights - ref) <= 1.5 * noise + 0.05 * np.linalg.norm(ref)
        # the criterion has teeth: a wrong kernel width (0.75 instead of 0.75 sqrt(30)) fails it
        wrong = explain_tabular(clf.predict_proba, x, background=bg, method="lime", target=1,
                                discretize=discretize, kernel_width=0.75)
        assert np.linalg.norm(wrong.weights - ref) > 1.5 * noise + 0.05 * np.linalg.norm(ref)


# ----------------------------------------------------------------------------- counting and budgets
def test_n_evals_are_exact(linear):
    model, W, x, bg = linear
    for method, options, expected in [
        ("lime", {"num_samples": 300}, 300),  # the row is sample 0
        ("shapley", {"n_permutations": 1}, F + 1),  # the row, then F coalitions (the full one is the row)
        ("kernelshap", {"n_samples": 50, "paired": False}, None),
        ("streak", {}, None),
        ("shapley", {"n_permutations": 3, "baseline": "background", "n_background": 7}, None),
    ]:
        counted = Counting(model)
        exp = explain_tabular(counted, x, background=bg, method=method, **options)
        assert exp.n_evals == counted.rows
        if expected is not None:
            assert exp.n_evals == expected


class FakeBar:
    """Stands in for tqdm: records what the bar was told."""

    made: list = []

    def __init__(self, **kwargs):
        self.kwargs, self.count, self.closed = kwargs, 0, False
        FakeBar.made.append(self)

    def update(self, n):
        self.count += n

    def close(self):
        self.closed = True


def test_progress_bar_counts_the_rows_and_is_closed(linear, monkeypatch):
    import tqdm.auto

    model, W, x, bg = linear
    monkeypatch.setattr(tqdm.auto, "tqdm", FakeBar)
    FakeBar.made = []
    exp = explain_tabular(model, x, background=bg, method="kernelshap", n_samples=300, batch_size=64)
    (bar,) = FakeBar.made
    assert bar.count == exp.n_evals and bar.closed and bar.kwargs["desc"] == "kernelshap"
    FakeBar.made = []
    explain_tabular(model, x, background=bg, method="kernelshap", n_samples=300, progress=False)
    assert FakeBar.made == []

    def failing(rows):
        if len(rows) > 1:
            raise RuntimeError("model failed")
        return model(rows)

    with pytest.raises(RuntimeError, match="model failed"):
        explain_tabular(failing, x, background=bg, method="lime")
    assert all(b.closed for b in FakeBar.made) and FakeBar.made


@pytest.mark.parametrize("method,budget", [("lime", 100), ("kernelshap", 40), ("shapley", 50), ("streak", 12)])
def test_budget_is_honoured(linear, method, budget):
    model, _, x, bg = linear
    counted = Counting(model)
    exp = explain_tabular(counted, x, background=bg, method=method, budget=budget)
    assert counted.rows == exp.n_evals <= budget
    assert exp.params["budget"] == budget
    if method == "lime":  # one row per sample: the budget is spent exactly
        assert exp.n_evals == budget
    else:  # ten background rows per coalition
        heavy = Counting(model)
        hx = explain_tabular(heavy, x, background=bg, method=method, budget=budget * 10, baseline="background",
                             n_background=10)
        assert heavy.rows == hx.n_evals <= budget * 10
    with pytest.raises(ValueError, match="budget"):
        explain_tabular(model, x, background=bg, method=method, budget=2 if method != "lime" else 1)


# ----------------------------------------------------------------------------- the Explanation
def test_save_load_round_trip_and_plot(linear, tmp_path):
    model, _, x, bg = linear
    names = [f"feature {i}" for i in range(F)]
    exp = explain_tabular(model, x, background=bg, method="shapley", n_permutations=4, feature_names=names,
                          class_names=["no", "yes"], target="yes")
    assert exp.target == 1 and exp.label == "yes" and exp.kind == "tabular"
    path = exp.save(tmp_path / "row.npz")
    back = Explanation.load(path)
    assert back.kind == "tabular" and back.feature_names == names and back.label == "yes"
    np.testing.assert_array_equal(back.weights, exp.weights)
    np.testing.assert_array_equal(back.values, x)
    np.testing.assert_array_equal(back.extras["stderr"], exp.extras["stderr"])
    assert back.n_evals == exp.n_evals and back.seed == exp.seed and back.method == "shapley"
    assert list(back.top_features(3)) == list(np.argsort(-exp.weights)[:3])
    png = tmp_path / "row.png"
    fig = back.plot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    top = max(fig.axes[0].get_yticklabels(), key=lambda t: t.get_position()[1]).get_text()
    assert top == f"{names[int(np.argmax(np.abs(exp.weights)))]} = {x[int(np.argmax(np.abs(exp.weights)))]:.4g}"


def test_top_mask_of_a_table_is_one_bool_per_feature(linear):
    model, W, x, bg = linear
    exp = explain_tabular(model, x, background=bg, method="kernelshap", target=1, progress=False)
    top = np.argsort(-exp.weights, kind="stable")[:3]
    mask = exp.top_mask(3)
    assert mask.shape == (F,) and mask.dtype == bool and mask.sum() == 3
    assert set(np.flatnonzero(mask)) == set(top)
    assert not exp.top_mask(0).any() and exp.top_mask(F).all()
    sel = explain_tabular(model, x, background=bg, method="streak", k=2, target=1, progress=False)
    assert len(sel.extras["selected"]) == 2
    assert set(np.flatnonzero(sel.top_mask(2))) == set(sel.extras["selected"])


def test_estimators_and_torch_modules_are_accepted():
    import torch
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000).fit(X, y)
    exp = explain_tabular(clf, X[120], background=X, method="kernelshap",
                          class_names=["setosa", "versicolor", "virginica"])
    assert exp.label == "virginica" and exp.score == pytest.approx(clf.predict_proba(X[120:121])[0, 2])

    lin = torch.nn.Linear(4, 3)
    exp = explain_tabular(lin, X[0], background=X, method="kernelshap", target=2)  # raw outputs: linear
    w = lin.weight.detach().numpy()[2]
    np.testing.assert_allclose(exp.weights, w * (X[0] - X.mean(axis=0)), atol=1e-4)


# ----------------------------------------------------------------------------- input errors
def test_bad_inputs_get_clear_errors(linear):
    model, _, x, bg = linear
    with pytest.raises(ValueError, match=r"x: has 11 values but the background has 12 columns"):
        explain_tabular(model, x[:-1], background=bg)
    with pytest.raises(ValueError, match="background: required"):
        explain_tabular(model, x)

    def nan_model(rows):
        out = rows @ np.ones(F)
        out[rows[:, 0] > x[0] + 1] = np.nan
        return out

    with pytest.raises(ValueError, match="NaN or infinite scores"):
        explain_tabular(nan_model, x, background=bg, method="lime", num_samples=200)
    with pytest.raises(ValueError, match=r"target 2 is out of range: the model gives 2 outputs \(0..1\)"):
        explain_tabular(model, x, background=bg, target=2)
    with pytest.raises(ValueError, match="target 1 is out of range"):
        explain_tabular(lambda r: r.sum(axis=1), x, background=bg, target=1)  # a regression: one output
    with pytest.raises(ValueError, match="unknown method 'occlusion'; available: kernelshap, lime, shapley, streak"):
        explain_tabular(model, x, background=bg, method="occlusion")
    with pytest.raises(ValueError, match=r"no option 'n_samples'; its options are: .*num_samples"):
        explain_tabular(model, x, background=bg, method="lime", n_samples=10)
    with pytest.raises(ValueError, match="feature_names: expected 12 names"):
        explain_tabular(model, x, background=bg, feature_names=["a", "b"])
    with pytest.raises(ValueError, match="returned shape"):
        explain_tabular(lambda r: np.zeros((len(r) + 1, 2)), x, background=bg)
    with pytest.raises(ValueError, match="baseline: unknown 'median'"):
        explain_tabular(model, x, background=bg, method="shapley", baseline="median")
    with pytest.raises(ValueError, match="x: contains NaN"):
        explain_tabular(model, np.full(F, np.nan), background=bg)


@pytest.mark.parametrize("method,option,value", [
    ("lime", "discretize", "False"),
    ("lime", "discretize", "no"),
    ("lime", "discretize", 0),
    ("lime", "sample_around_instance", "False"),
    ("lime", "sample_around_instance", None),
    ("kernelshap", "paired", "no"),
    ("kernelshap", "paired", 1),
])
def test_bool_options_take_only_true_or_false(linear, method, option, value):
    model, _, x, bg = linear
    with pytest.raises(ValueError, match=f"^{option}: expected True or False, got {value!r}$"):
        explain_tabular(model, x, background=bg, method=method, **{option: value})
    with pytest.raises(ValueError, match="^progress: expected True or False, got 'False'$"):
        explain_tabular(model, x, background=bg, method=method, progress="False")


def test_numpy_bools_are_bools(linear):
    model, _, x, bg = linear
    for method, option in [("lime", "discretize"), ("lime", "sample_around_instance"), ("kernelshap", "paired")]:
        opts = {"num_samples": 200} if method == "lime" else {"n_samples": 60}
        for flag in (False, True):
            a = explain_tabular(model, x, background=bg, method=method, **opts, **{option: flag})
            b = explain_tabular(model, x, background=bg, method=method, **opts, **{option: np.bool_(flag)})
            np.testing.assert_array_equal(a.weights, b.weights)


@pytest.mark.parametrize("option,value,match", [
    ("alpha", -1.0, "alpha: expected a non-negative number, got -1.0"),
    ("alpha", "abc", "alpha: expected a non-negative number, got 'abc'"),
    ("alpha", float("nan"), "alpha: expected a non-negative number, got nan"),
    ("alpha", True, "alpha: expected a non-negative number, got True"),
    ("kernel_width", 0, "kernel_width: expected a positive number, got 0"),
    ("kernel_width", -2.0, "kernel_width: expected a positive number, got -2.0"),
    ("kernel_width", "abc", "kernel_width: expected a positive number, got 'abc'"),
    ("kernel_width", float("inf"), "kernel_width: expected a positive number, got inf"),
    ("discretizer", ["quartile"], r"discretizer: unknown \['quartile'\]"),
    ("feature_selection", ["auto"], r"feature_selection: unknown \['auto'\]"),
])
def test_lime_numeric_options_are_checked(linear, option, value, match):
    model, _, x, bg = linear
    with pytest.raises(ValueError, match=match):
        explain_tabular(model, x, background=bg, method="lime", num_samples=100, **{option: value})


def test_lime_alpha_is_the_ridge_penalty(linear):
    """Continuous LIME of a linear model: with alpha 0 the ridge is plain least squares and recovers
    coefficient x background std exactly; alpha None is the default 1; a large alpha shrinks the weights."""
    model, W, x, bg = linear
    opts = dict(method="lime", target=1, discretize=False, num_samples=300)
    exact = explain_tabular(model, x, background=bg, alpha=0, **opts)
    np.testing.assert_allclose(exact.weights, W[:, 1] * bg.std(axis=0), rtol=1e-8, atol=1e-10)
    default = explain_tabular(model, x, background=bg, **opts)
    np.testing.assert_array_equal(explain_tabular(model, x, background=bg, alpha=None, **opts).weights,
                                  default.weights)
    shrunk = explain_tabular(model, x, background=bg, alpha=np.float32(1e4), **opts)
    assert np.linalg.norm(shrunk.weights) < 0.5 * np.linalg.norm(exact.weights)


@pytest.mark.parametrize("method", ["kernelshap", "shapley", "streak"])
def test_n_background_is_checked_with_every_baseline(linear, method):
    model, _, x, bg = linear
    for baseline in ("mean", "background", x):
        with pytest.raises(ValueError, match="n_background: expected an int >= 1"):
            explain_tabular(model, x, background=bg, method=method, baseline=baseline, n_background="abc")
        with pytest.raises(ValueError, match="n_background: expected an int >= 1"):
            explain_tabular(model, x, background=bg, method=method, baseline=baseline, n_background=0)


def test_pandas_frames_give_names_and_reach_the_model_as_frames(linear):
    pd = pytest.importorskip("pandas")
    model, W, x, bg = linear
    cols = [f"c{i}" for i in range(F)]
    seen = []

    def frame_model(df):
        seen.append(list(df.columns))
        return df.to_numpy() @ W

    exp = explain_tabular(frame_model, pd.Series(x, index=cols), background=pd.DataFrame(bg, columns=cols),
                          method="kernelshap", target=0)
    assert exp.feature_names == cols and seen[0] == cols


def test_pandas_row_is_matched_to_the_background_by_column_name(linear):
    pd = pytest.importorskip("pandas")
    model, W, x, bg = linear
    cols = [f"c{i}" for i in range(F)]
    frame = pd.DataFrame(bg, columns=cols)
    truth = W[:, 0] * (x - bg.mean(axis=0))  # KernelSHAP of a linear model, hidden features at the mean
    order = list(np.random.default_rng(1).permutation(cols))
    assert order != cols
    shuffled = pd.Series(x, index=cols)[order]
    for row in (shuffled, shuffled.to_frame().T):  # a Series and a one-row DataFrame
        exp = explain_tabular(lambda df: df.to_numpy() @ W, row, background=frame, method="kernelshap", target=0)
        np.testing.assert_allclose(exp.weights, truth, atol=1e-8)
        np.testing.assert_array_equal(exp.values, x)
        assert exp.feature_names == cols
    # a plain array still goes by position
    exp = explain_tabular(lambda df: df.to_numpy() @ W, x, background=frame, method="kernelshap", target=0)
    np.testing.assert_allclose(exp.weights, truth, atol=1e-8)

    renamed = pd.Series(x, index=cols[:3] + ["zz"] + cols[4:])
    with pytest.raises(ValueError, match=r"x: its column names differ from the background's: "
                                         r"missing \['c3'\], unexpected \['zz'\]"):
        explain_tabular(model, renamed, background=frame, method="kernelshap")
    with pytest.raises(ValueError, match=r"x: repeated column names \['c0'\]"):
        explain_tabular(model, pd.Series(x, index=["c0"] + cols[:-1]), background=frame, method="kernelshap")


def test_pandas_non_numeric_columns_are_named(linear):
    pd = pytest.importorskip("pandas")
    model, _, x, bg = linear
    frame = pd.DataFrame(bg[:, :4], columns=["a", "b", "c", "d"]).assign(city="Paris", zone=list("xy") * 150)
    with pytest.raises(TypeError, match=r"^background: column\(s\) \['city', 'zone'\] are not numbers"):
        explain_tabular(model, frame.iloc[0], background=frame, method="kernelshap")
    with pytest.raises(TypeError, match=r"^background: column\(s\) \['city', 'zone'\] are not numbers"):
        explain_tabular(model, np.zeros(6), background=frame, method="kernelshap")
    row = pd.Series({"a": 1.0, "b": 2.0, "c": "3 kg", "d": 4.0})
    with pytest.raises(TypeError, match=r"^x: column\(s\) \['c'\] are not numbers"):
        explain_tabular(model, row, background=frame[["a", "b", "c", "d"]], method="kernelshap")


# ----------------------------------------------------------------------------- the command
def test_explain_table_command_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(6)
    data = rng.normal(size=(40, 4)) * [1.0, 2.0, 0.5, 3.0]
    csv = tmp_path / "table.v1.csv"  # a dot in the name: the results keep it (they replaced it once)
    lines = ["age,income,height,score,label"] + [",".join(f"{v:.6f}" for v in r) + f",{i % 2}"
                                                 for i, r in enumerate(data)]
    csv.write_text("\n".join(lines) + "\n")
    (tmp_path / "model.py").write_text(textwrap.dedent("""
        import numpy as np
        from sklearn.linear_model import LinearRegression

        def factory():
            rng = np.random.default_rng(0)
            X = rng.normal(size=(50, 4))
            return LinearRegression().fit(X, X @ [1.5, -2.0, 0.5, 0.25] + 1.0)
    """))
    out = tmp_path / "out"
    spec = f"{tmp_path / 'model.py'}:factory"
    code = main(["explain-table", str(csv), "--row", "5", "--model", spec, "--label-column", "label",
                 "--method", "kernelshap", "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    weights = {f["name"]: f["weight"] for f in result["features"]}
    background = np.delete(np.round(data, 6), 5, axis=0)
    expected = np.array([1.5, -2.0, 0.5, 0.25]) * (np.round(data[5], 6) - background.mean(axis=0))
    np.testing.assert_allclose([weights[n] for n in ("age", "income", "height", "score")], expected, atol=1e-6)
    assert result["background_rows"] == 39
    assert result["files"] == [str(out / f"table.v1_row5_kernelshap{ext}") for ext in (".png", ".npz", ".json")]
    assert all(Path(f).exists() for f in result["files"])
    back = Explanation.load(out / "table.v1_row5_kernelshap.npz")
    assert back.feature_names == ["age", "income", "height", "score"]

    code = main(["explain-table", str(csv), "--row", "0", "--model", spec, "--label-column", "label",
                 "--background-rows", "10", "--top", "2", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "lime" in text and "10 background rows" in text
    assert (out / "table.v1_row0_lime.png").exists()
    assert main(["explain-table", str(csv), "--row", "40", "--model", spec, "--out", str(out)]) == 2
    assert "--row 40: the file has 40 data rows" in capsys.readouterr().err
    assert main(["explain-table", str(csv), "--row", "1", "--model", spec, "--out", str(out)]) == 2  # label kept
    err = capsys.readouterr().err  # checked before any model call: it was fitted on 4 columns
    assert "the model takes 4 features (its n_features_in_)" in err and "5 columns" in err
    assert "--label-column" in err


def test_load_csv_drops_a_byte_order_mark_and_names_bad_bytes(tmp_path):
    from unveil.tabular_explain import load_csv

    text = "label,age,income\r\n1,30,2.5\r\n0,41,3.25\r\n"
    excel = tmp_path / "excel.csv"
    excel.write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))  # as Excel's "CSV UTF-8" saves it
    data, names = load_csv(excel, label_column="label")
    assert names == ["age", "income"]
    np.testing.assert_array_equal(data, [[30, 2.5], [41, 3.25]])
    data, names = load_csv(excel)
    assert names == ["label", "age", "income"] and data[0, 0] == 1

    latin = tmp_path / "latin1.csv"
    latin.write_bytes("name\u00e9,age\n1,2\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(latin))}, line 1: byte 0xe9 is not UTF-8"):
        load_csv(latin)
    latin.write_bytes(codecs.BOM_UTF8 + b"a,b\n1,2\n\n3,\xe9\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(latin))}, line 4: byte 0xe9 is not UTF-8"):
        load_csv(latin)
    # line numbers count the lines of the file, blank ones included
    gaps = tmp_path / "gaps.csv"
    gaps.write_text("a,b\n1,2\n\n\n3,x\n")
    with pytest.raises(ValueError, match=r"gaps.csv, line 5, column 'b': 'x' is not a number"):
        load_csv(gaps)


def test_unveil_exports():
    assert "explain_tabular" in unveil.__all__
    assert unveil.tabular_methods() == ["kernelshap", "lime", "shapley", "streak"]


def test_explain_table_target_names_an_integer_class_before_an_output_number(tmp_path, capsys):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(30, 2))
    csv = tmp_path / "t.csv"
    csv.write_text("a,b\n" + "\n".join(f"{r[0]:.6f},{r[1]:.6f}" for r in data) + "\n")
    (tmp_path / "m.py").write_text(textwrap.dedent("""
        import numpy as np
        from sklearn.linear_model import LogisticRegression

        def factory():
            rng = np.random.default_rng(0)
            X = rng.normal(size=(60, 2))
            return LogisticRegression().fit(X, np.where(X[:, 0] > 0, 2, 1))  # classes_ = [1, 2]
    """))
    spec = f"{tmp_path / 'm.py'}:factory"
    for given, index, label in (("2", 1, "2"), ("1", 0, "1")):
        assert main(["explain-table", str(csv), "--row", "0", "--model", spec, "--method", "kernelshap",
                     "--target", given, "--out", str(tmp_path / "o"), "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert (result["target"], result["label"]) == (index, label)
    # the API reads an int as an output number; out of range, the error points to the class of that name
    import importlib.util

    mod_spec = importlib.util.spec_from_file_location("_t_m", tmp_path / "m.py")
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    with pytest.raises(ValueError, match=r"out of range: .*; the class named 2 is output 1: pass target='2'"):
        explain_tabular(mod.factory(), data[0], background=data[1:], target=2)


# ----------------------------------------------------------------------------- torch modules in training mode
def _train_mode_nets():
    import torch

    torch.manual_seed(0)
    drop = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(32, 2))
    norm = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    with torch.no_grad():  # running statistics that differ from a batch's own
        norm[1].running_mean.uniform_(-1, 1)
        norm[1].running_var.uniform_(0.5, 2.0)
    return drop.train(), norm.train()


def test_torch_module_in_training_mode_is_explained_in_inference_behaviour_and_restored():
    import copy

    import torch

    X = np.random.default_rng(0).normal(size=(60, 5))
    drop, norm = _train_mode_nets()
    for net in (drop, norm):
        stats = {k: v.clone() for k, v in net.state_dict().items()}
        twin = copy.deepcopy(net).eval()
        for method, opts in (("kernelshap", {}), ("lime", {"num_samples": 300})):
            a = explain_tabular(net, X[0], background=X, method=method, seed=0, progress=False, **opts)
            b = explain_tabular(net, X[0], background=X, method=method, seed=0, progress=False, **opts)
            ref = explain_tabular(twin, X[0], background=X, method=method, seed=0, progress=False, **opts)
            np.testing.assert_array_equal(a.weights, b.weights)
            np.testing.assert_allclose(a.weights, ref.weights, rtol=1e-6, atol=1e-7)
            assert a.score == ref.score == b.score
        assert all(m.training for m in net.modules())  # every flag as it was
        assert all(torch.equal(v, stats[k]) for k, v in net.state_dict().items())  # batch norm untouched
        assert not any(m.training for m in twin.modules())

    class Failing(torch.nn.Module):  # raises on its second pass (the first is the row itself)
        def __init__(self):
            super().__init__()
            self.body, self.calls = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Dropout(0.3)), 0

        def forward(self, t):
            self.calls += 1
            assert not self.body[1].training  # inference behaviour inside the pass
            if self.calls > 1:
                raise RuntimeError("boom")
            return self.body(t)

    failing = Failing().train()
    failing.body[0].eval()  # a mixed state comes back as it was
    with pytest.raises(RuntimeError, match="boom"):
        explain_tabular(failing, X[0], background=X, method="kernelshap", progress=False)
    assert failing.training and failing.body.training and failing.body[1].training and not failing.body[0].training


# ----------------------------------------------------------------------------- features that cannot matter
def _dummy_setup():
    """7 features of a nonlinear model that uses them all; feature 2 of the row is at the background's mean,
    feature 5 is a constant column (0.1: its float mean over 300 rows is not 0.1) that the row shares."""
    rng = np.random.default_rng(7)
    bg = rng.normal(size=(300, 7))
    bg[:, 5] = 0.1
    x = rng.normal(size=7) + 0.8
    x[2] = bg.mean(axis=0)[2]
    x[5] = 0.1

    def model(rows):
        return (np.tanh(rows[:, 0] * rows[:, 1]) + rows[:, 2] ** 2 * rows[:, 3] - rows[:, 4] * rows[:, 5]
                + np.sin(rows[:, 5] + rows[:, 6]) + rows[:, 2] * rows[:, 6])
    return model, x, bg


def test_kernelshap_gives_dummy_features_exactly_zero_and_exact_shapley_values():
    model, x, bg = _dummy_setup()
    refs = bg.mean(axis=0, keepdims=True)
    refs[0, 5] = 0.1  # the truth's own reference row: what "hidden at the mean" means for these features
    truth = brute_force_shapley(set_value(model, x, refs), 7)  # independent: the subset formula, 2^7 subsets
    assert truth[2] == truth[5] == 0.0 and np.all(np.abs(np.delete(truth, [2, 5])) > 1e-3)
    counted = Counting(model)
    exp = explain_tabular(counted, x, background=bg, method="kernelshap", progress=False)
    assert exp.extras["exact"] and exp.extras["fixed_features"] == [2, 5]
    assert exp.weights[2] == 0.0 and exp.weights[5] == 0.0
    np.testing.assert_allclose(exp.weights, truth, atol=1e-10)
    assert exp.weights.sum() == pytest.approx(exp.score - exp.extras["base_value"], abs=1e-12)
    assert counted.rows == exp.n_evals == 1 + 1 + (2**5 - 2)  # the row, f(none), the proper coalitions of 5

    # sampled (fewer coalitions than 2^5 - 2): still exactly 0 for the dummies, efficiency exact
    exp = explain_tabular(model, x, background=bg, method="kernelshap", n_samples=12, seed=1, progress=False)
    assert not exp.extras["exact"] and exp.weights[2] == 0.0 and exp.weights[5] == 0.0
    assert exp.weights.sum() == pytest.approx(exp.score - exp.extras["base_value"], abs=1e-12)

    # baseline="background": a feature is a dummy when every drawn row holds the row's value
    bg2 = bg[:8].copy()
    bg2[:, 1] = x[1]
    exp = explain_tabular(model, x, background=bg2, method="kernelshap", baseline="background", n_background=8,
                          progress=False)
    truth = brute_force_shapley(set_value(model, x, bg2), 7)
    assert exp.extras["fixed_features"] == [1, 5] and exp.weights[1] == 0.0 and exp.weights[5] == 0.0
    np.testing.assert_allclose(exp.weights, truth, atol=1e-10)
    # Shapley sampling reads the same coalitions: exactly 0 too
    exp = explain_tabular(model, x, background=bg, method="shapley", n_permutations=20, progress=False)
    assert exp.weights[2] == 0.0 and exp.weights[5] == 0.0


def test_kernelshap_with_nothing_or_one_feature_varying():
    model, x, bg = _dummy_setup()
    one = np.tile(x, (5, 1))
    one[:, 3] = [0.0, 1.0, 2.0, 3.0, 4.0]
    exp = explain_tabular(model, x, background=one, method="kernelshap", progress=False)
    assert exp.extras["fixed_features"] == [0, 1, 2, 4, 5, 6]
    np.testing.assert_array_equal(np.delete(exp.weights, 3), 0.0)
    assert exp.weights[3] == pytest.approx(exp.score - float(model(one.mean(axis=0, keepdims=True))[0]))
    exp = explain_tabular(model, x, background=x[None, :], method="kernelshap", progress=False)
    np.testing.assert_array_equal(exp.weights, 0.0)
    assert exp.extras["base_value"] == exp.score and exp.n_evals == 1


# ----------------------------------------------------------------------------- categorical features
CODES = np.array([0.0, 3.0, 7.0])  # not 0..k-1: a mean or an interpolation would show


def _categorical_table(n=300, seed=0):
    rng = np.random.default_rng(seed)
    bg = np.column_stack([rng.normal(size=n), rng.choice(CODES, n, p=[0.2, 0.5, 0.3]), rng.normal(size=n),
                          rng.choice([1.0, 2.0], n, p=[0.7, 0.3])])
    return bg


class Recorder:
    """A linear model that records every value of the categorical columns it is given."""

    def __init__(self, w=(1.0, 0.5, -2.0, 0.25)):
        self.w, self.seen = np.asarray(w), {1: set(), 3: set()}

    def __call__(self, rows):
        for j in self.seen:
            self.seen[j].update(rows[:, j].tolist())
        return rows @ self.w


@pytest.mark.parametrize("method,opts", [
    ("lime", {"num_samples": 400}),
    ("lime", {"num_samples": 400, "discretize": False}),
    ("lime", {"num_samples": 400, "discretize": False, "sample_around_instance": True}),
    ("kernelshap", {}),
    ("shapley", {"n_permutations": 5}),
    ("streak", {"k": 2}),
])
def test_categorical_columns_only_take_codes_of_the_background(method, opts):
    bg = _categorical_table()
    x = np.array([0.4, 7.0, -1.2, 2.0])
    model = Recorder()
    exp = explain_tabular(model, x, background=bg, method=method, categorical_features=[1, 3], progress=False,
                          **opts)
    assert model.seen[1] <= {0.0, 3.0, 7.0} and model.seen[3] <= {1.0, 2.0}
    assert exp.params["categorical_features"] == [1, 3]
    if method == "kernelshap":  # hidden at the mode (3 and 1), not the mean (about 3.6 and 1.3)
        mode = np.array([bg[:, 0].mean(), 3.0, bg[:, 2].mean(), 1.0])
        np.testing.assert_allclose(exp.weights, model.w * (x - mode), atol=1e-9)
    if method == "lime" and opts.get("discretize", True):
        assert exp.extras["conditions"][1] == "x1 = 7" and exp.extras["conditions"][3] == "x3 = 2"
    plain = Recorder()
    explain_tabular(plain, x, background=bg, method=method, progress=False, **opts)
    assert not plain.seen[1] <= {0.0, 3.0, 7.0}  # without the option, codes are invented


def test_lime_categorical_sampling_follows_the_background_frequencies():
    bg = _categorical_table()
    x = np.array([0.4, 7.0, -1.2, 2.0])
    rows = []

    def model(r):
        rows.append(r.copy())
        return r @ np.ones(4)

    explain_tabular(model, x, background=bg, method="lime", num_samples=4000, categorical_features=["x1"],
                    progress=False)
    col = np.concatenate(rows)[:, 1]
    freq = [np.mean(col == c) for c in CODES]
    np.testing.assert_allclose(freq, [np.mean(bg[:, 1] == c) for c in CODES], atol=0.03)


def test_categorical_features_are_checked():
    bg = _categorical_table(40)
    x = bg[0]
    model = Recorder()
    with pytest.raises(ValueError, match=r"^categorical_features: no column named \['city'\]; the columns are "
                                         r"\['x0', 'x1', 'x2', 'x3'\]"):
        explain_tabular(model, x, background=bg, categorical_features=["x1", "city"])
    with pytest.raises(ValueError, match=r"^categorical_features: column indices \[4, -1\] are out of range: "
                                         r"the table has 4 columns \(0..3\)"):
        explain_tabular(model, x, background=bg, categorical_features=[1, 4, -1])
    with pytest.raises(TypeError, match=r"^categorical_features: expected column indices \(ints\) or names"):
        explain_tabular(model, x, background=bg, categorical_features=[1.0])
    with pytest.raises(TypeError, match=r"^categorical_features: expected a list of column indices or names"):
        explain_tabular(model, x, background=bg, categorical_features=3.5)
    exp = explain_tabular(model, x, background=bg, method="kernelshap", categorical_features="x1", progress=False)
    assert exp.params["categorical_features"] == [1]
    exp = explain_tabular(model, x, background=bg, method="kernelshap", categorical_features=np.array([3, 1, 3]),
                          progress=False)
    assert exp.params["categorical_features"] == [1, 3]


def test_categorical_one_hot_pipeline_that_refuses_unknown_codes_runs_with_every_method():
    pd = pytest.importorskip("pandas")
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.normal(40, 10, 300), "income": rng.normal(50, 15, 300),
                       "city": rng.integers(0, 4, 300)})
    y = ((df.city == 2) | (df.income > 60)).astype(int)
    enc = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="error"), ["city"])], remainder="passthrough")
    pipe = make_pipeline(enc, LogisticRegression(max_iter=2000)).fit(df, y)
    row = df[df.city == 2].iloc[0]  # the mode is city 3
    few = {"lime": {"num_samples": 300}, "shapley": {"n_permutations": 5}, "kernelshap": {}, "streak": {"k": 2}}
    for method in unveil.tabular_methods():
        exp = explain_tabular(pipe, row, background=df, method=method, target=1, categorical_features=["city"],
                              progress=False, **few[method])
        assert np.all(np.isfinite(exp.weights))
        # city 2 makes class 1 (against the other cities, and the mode, city 3): every method credits it
        assert exp.weights[2] > 0 and exp.weights[2] == exp.weights.max(), (method, exp.weights)
    with pytest.raises(ValueError, match="unknown categor"):  # the pipeline does refuse invented codes
        explain_tabular(pipe, row, background=df, method="kernelshap", progress=False)


@pytest.mark.parametrize("discretize", [True, False])
def test_lime_categorical_agrees_with_the_lime_package(discretize):
    pytest.importorskip("lime")
    from lime.lime_tabular import LimeTabularExplainer

    rng = np.random.default_rng(0)
    n = 400
    bg = np.column_stack([rng.normal(size=n), rng.normal(size=n), rng.integers(0, 4, n), rng.integers(0, 3, n)])
    bg = bg.astype(np.float64)

    def model(rows):  # class 1 when the city (column 2) is 2; column 0 helps a little; columns 1, 3: nothing
        p = 1 / (1 + np.exp(-(4.0 * (rows[:, 2] == 2) - 2.0 + 0.8 * rows[:, 0])))
        return np.column_stack([1 - p, p])

    for x, sign in ((np.array([0.3, -0.5, 2.0, 1.0]), 1), (np.array([0.3, -0.5, 1.0, 1.0]), -1)):
        lime_exp = LimeTabularExplainer(bg, categorical_features=[2, 3], discretize_continuous=discretize,
                                        random_state=0).explain_instance(x, model, labels=(1,), num_features=4,
                                                                         num_samples=2000)
        ref = np.zeros(4)
        for i, v in lime_exp.local_exp[1]:
            ref[i] = v
        ours = explain_tabular(model, x, background=bg, method="lime", target=1, discretize=discretize,
                               categorical_features=[2, 3], num_samples=2000, progress=False).weights
        for w in (ref, ours):  # the city is the top feature, with the sign of its effect, in both
            assert np.argmax(np.abs(w)) == 2 and np.sign(w[2]) == sign
        assert set(np.flatnonzero(np.abs(ours) > 0.05)) == set(np.flatnonzero(np.abs(ref) > 0.05))
        plain = explain_tabular(model, x, background=bg, method="lime", target=1, discretize=discretize,
                                num_samples=2000, progress=False).weights
        assert np.argmax(np.abs(plain)) != 2  # without the option the city's effect is lost


def test_a_float64_torch_module_gets_float64_rows():
    """A .double() module is called with float64 rows (not refused by torch's dtype check) and explained as
    its float32 twin is."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Linear(3, 2)
    X = np.random.default_rng(0).random((20, 3))
    ref = unveil.explain_tabular(net, X[0], background=X, method="kernelshap", progress=False)
    got = unveil.explain_tabular(net.double(), X[0], background=X, method="kernelshap", progress=False)
    np.testing.assert_allclose(got.weights, ref.weights, atol=1e-6)


def test_tabular_budget_loops_end_and_small_budgets_are_named_with_fixed_features():
    """Shapley sampling with a budget over a table whose columns are mostly constant ends (every coalition of
    the two varying ones is soon known); KernelSHAP with one varying feature still refuses a budget that
    cannot pay for f(none); a one-element integer tensor is a target."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    bg = rng.normal(size=(30, 12))
    bg[:, :10] = 1.0
    x = rng.normal(size=12)
    x[:10] = 1.0
    w = np.arange(1.0, 13.0)
    exp = explain_tabular(lambda r: np.asarray(r) @ w, x, background=bg, method="shapley", budget=200,
                          progress=False)
    np.testing.assert_allclose(exp.weights, np.r_[np.zeros(10), w[10:] * (x[10:] - bg[:, 10:].mean(0))],
                               atol=1e-9)
    bg3 = rng.normal(size=(100, 3))
    bg3[:, 1:] = 1.0
    with pytest.raises(ValueError, match=r"^budget: 10 evaluations leave no room for KernelSHAP \(it needs at "
                                         r"least 51: the row, f\(none\)\)"):
        explain_tabular(lambda r: np.asarray(r) @ [1.0, 2.0, 3.0], np.array([0.5, 1, 1]), background=bg3,
                        method="kernelshap", baseline="background", budget=10, progress=False)
    two = explain_tabular(lambda r: np.stack([np.asarray(r)[:, 0], -np.asarray(r)[:, 0]], 1), x, background=bg,
                          method="kernelshap", target=torch.tensor(1), progress=False)
    assert two.target == 1


def test_small_budgets_name_the_least_budget_that_works():
    """Each method's refusal names the smallest budget it accepts (the explained row counted), and that budget
    is then accepted."""
    rng = np.random.default_rng(1)
    bg, x = rng.normal(size=(20, 6)), rng.normal(size=6)
    model = lambda r: np.asarray(r) @ np.arange(1.0, 7.0)  # noqa: E731
    cases = [("shapley", {}, 7), ("kernelshap", {}, 3), ("streak", {"baseline": "background", "n_background": 3}, 7)]
    for method, opts, least in cases:
        with pytest.raises(ValueError, match=rf"^budget: {least - 1} evaluations leave no room .*it needs at least "
                                             rf"{least}\b"):
            explain_tabular(model, x, background=bg, method=method, budget=least - 1, progress=False, **opts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # STREAK may keep nothing with so few evaluations
            exp = explain_tabular(model, x, background=bg, method=method, budget=least, progress=False, **opts)
        assert exp.n_evals <= least


def test_a_model_class_is_refused_with_the_fix():
    from sklearn.linear_model import LinearRegression

    with pytest.raises(TypeError, match=r"^model_fn: got the class LinearRegression, not a model; pass an instance"):
        explain_tabular(LinearRegression, np.zeros(3), background=np.ones((4, 3)), progress=False)


def test_streak_says_so_when_it_keeps_no_feature():
    bg = np.random.default_rng(0).normal(size=(20, 3))
    x = bg.mean(0) - 1  # every feature lowers the score: no gain is positive
    model = lambda r: np.asarray(r) @ [1.0, 2.0, 3.0]  # noqa: E731
    with pytest.warns(UserWarning, match=r"^streak: no feature raised the target's score .* every weight is 0"):
        exp = explain_tabular(model, x, background=bg, method="streak", progress=False)
    assert exp.extras["selected"] == [] and not exp.weights.any()
    np.testing.assert_allclose(exp.extras["singleton_gains"], [-1.0, -2.0, -3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a kept feature: no warning
        explain_tabular(model, bg.mean(0) + 1, background=bg, method="streak", progress=False)


def test_categorical_features_by_a_frames_number_labels():
    pd = pytest.importorskip("pandas")
    bg = _categorical_table(40)
    got = []

    def model(rows):  # reached as a frame with the background's own labels (numbers stay numbers)
        got.append(list(rows.columns))
        return Recorder()(rows.to_numpy())

    frame = pd.DataFrame(bg, columns=[10, 20, 30, 40])
    exp = explain_tabular(model, frame.iloc[0], background=frame, method="kernelshap", categorical_features=[20],
                          progress=False)
    assert exp.params["categorical_features"] == [1] and exp.feature_names == ["10", "20", "30", "40"]
    assert got and all(labels == [10, 20, 30, 40] for labels in got)
    same = explain_tabular(model, frame.iloc[0], background=frame, method="kernelshap",
                           categorical_features=[1, "40"], progress=False)  # a position and a label as text
    assert same.params["categorical_features"] == [1, 3]
    strings = pd.DataFrame(bg, columns=["2", "0", "1", "3"])  # text labels: an int is only ever a position
    exp = explain_tabular(lambda r: Recorder()(r.to_numpy()), strings.iloc[0], background=strings,
                          method="kernelshap", categorical_features=[0, "1"], progress=False)
    assert exp.params["categorical_features"] == [0, 2]
    shuffled = pd.DataFrame(bg, columns=[2, 0, 1, 3])
    with pytest.raises(ValueError, match=r"^categorical_features: 0 is ambiguous: column 0 by position is '2', "
                                         r"but the DataFrame also has a column labelled 0 \(position 1\); name the "
                                         r"column meant as a string: '0' for the one labelled 0, '2' for the one at "
                                         r"position 0"):
        explain_tabular(model, shuffled.iloc[0], background=shuffled, categorical_features=[0], progress=False)
    meant = explain_tabular(model, shuffled.iloc[0], background=shuffled, method="kernelshap",
                            categorical_features=["2"], progress=False)  # as the message says
    assert meant.params["categorical_features"] == [0]
    plain = pd.DataFrame(bg)  # labels 0..3 are the positions
    exp = explain_tabular(model, plain.iloc[0], background=plain, method="kernelshap", categorical_features=[3],
                          progress=False)
    assert exp.params["categorical_features"] == [3]



# ------------------------------------------------------------------------- pinned against the lime package and by hand
def _capture_lime(monkeypatch, model, x, bg, **opts):
    """Run LIME with discretize=False, recording every sample row the model sees (the row itself first) and the
    (y, w) of the final ridge fit; returns (explanation, rows, y, w)."""
    from unveil import tabular_explain as te

    seen, fits = [], []
    real_fit = te.fit_surrogate

    def recording_fit(X, y, w, *a, **k):
        fits.append((np.array(y), np.array(w)))
        return real_fit(X, y, w, *a, **k)

    def recording_model(rows):
        seen.append(np.array(rows))
        return model(rows)

    monkeypatch.setattr(te, "fit_surrogate", recording_fit)
    exp = explain_tabular(recording_model, x, background=bg, method="lime", discretize=False, progress=False, **opts)
    rows = np.concatenate(seen)
    y, w = fits[-1]
    assert len(rows) == len(y) == len(w)
    return exp, rows, y, w


def _lime_scaled(bg, rows):
    """The lime package's tabular explainer (no discretizer) over bg, and rows in its scaled space."""
    from lime.lime_tabular import LimeTabularExplainer

    explainer = LimeTabularExplainer(bg, mode="regression", discretize_continuous=False)
    return explainer, (rows - explainer.scaler.mean_) / explainer.scaler.scale_


def _tanh_setup(seed, F=8):
    rng = np.random.default_rng(seed)
    bg = rng.normal(size=(100, F)) * rng.uniform(0.5, 3, F)
    coef = rng.normal(size=F)
    x = bg.mean(0) + rng.normal(size=F) * bg.std(0)
    return (lambda r: np.tanh(np.asarray(r) @ coef)), x, bg


def test_lime_sample_weights_are_the_lime_package_kernel(monkeypatch):
    """Sample weights = lime_tabular's default kernel sqrt(exp(-d²/kw²)), kw = 0.75 sqrt(F), d the Euclidean
    distance to row 0 in lime's scaled space (truth: the lime package's own kernel_fn)."""
    pytest.importorskip("lime")
    model, x, bg = _tanh_setup(seed=1, F=5)
    exp, rows, y, w = _capture_lime(monkeypatch, model, x, bg, num_samples=200)
    explainer, scaled = _lime_scaled(bg, rows)
    d = np.linalg.norm(scaled - scaled[0], axis=1)
    np.testing.assert_allclose(w, explainer.base.kernel_fn(d), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(w, np.sqrt(np.exp(-d**2 / (np.sqrt(5) * 0.75) ** 2)), rtol=1e-12)
    assert exp.extras["kernel_width"] == pytest.approx(0.75 * np.sqrt(5), rel=1e-15)


@pytest.mark.parametrize("selection,k,lime_method", [("forward", 3, "forward_selection"), ("auto", 6, "auto")])
def test_lime_feature_selection_is_the_lime_package_selection(monkeypatch, selection, k, lime_method):
    """Forward selection (unpenalized ridge) and 'auto' at k = 6 (still forward) pick exactly the features, in
    order, of lime_base's LimeBase.feature_selection on the same samples, targets and weights."""
    pytest.importorskip("lime")
    from lime.lime_base import LimeBase

    model, x, bg = _tanh_setup(seed=20)  # a draw where ridge alpha 1 or highest weights would pick otherwise
    exp, rows, y, w = _capture_lime(monkeypatch, model, x, bg, num_samples=25, num_features=k,
                                    feature_selection=selection, seed=20)
    explainer, scaled = _lime_scaled(bg, rows)
    truth = LimeBase(explainer.base.kernel_fn).feature_selection(scaled, y, w, k, lime_method)
    assert exp.extras["selected"] == [int(i) for i in truth]


@pytest.mark.parametrize("around", [False, True])
def test_lime_highest_weights_ranks_coefficient_times_the_rows_standardized_value(monkeypatch, around):
    """'highest_weights' (continuous) ranks |coef x row 0's standardized value| (from the background mean, also
    when sampling around the row): y = 5 x1 + x2 with x1 near its mean and x2 three stds off picks x2 (truth:
    by hand, and lime_base's 'highest_weights' on the same samples)."""
    pytest.importorskip("lime")
    from lime.lime_base import LimeBase

    rng = np.random.default_rng(0)
    bg = rng.normal(size=(200, 3))
    x = bg.mean(0) + np.array([0.0, 0.1, 3.0]) * bg.std(0)
    exp, rows, y, w = _capture_lime(monkeypatch, lambda r: 5 * r[:, 1] + r[:, 2], x, bg, num_samples=500,
                                    num_features=1, feature_selection="highest_weights",
                                    sample_around_instance=around)
    explainer, scaled = _lime_scaled(bg, rows)
    truth = LimeBase(explainer.base.kernel_fn).feature_selection(scaled, y, w, 1, "highest_weights")
    assert exp.extras["selected"] == [2] == [int(i) for i in truth]


def test_lime_quartile_bins_put_a_value_on_a_cut_in_the_lower_bin_as_the_lime_package():
    """A value exactly on a quartile falls in the bin it closes ('<= cut'): bins and the row's conditions equal
    lime.discretize.QuartileDiscretizer's on integer columns whose values hit the cuts."""
    pytest.importorskip("lime")
    from lime.discretize import QuartileDiscretizer

    from unveil.tabular_explain import Discretizer

    bg = np.column_stack([np.arange(9.0), np.arange(9.0)[::-1] * 2, np.repeat([1.0, 2.0, 3.0], 3)])
    names = ["a", "b", "c"]
    theirs = QuartileDiscretizer(bg, [], names, labels=None)
    rows = np.vstack([bg, [[2.0, 8.0, 2.0], [4.0, 12.0, 3.0], [6.0, 4.0, 1.0]]])  # cuts 2/4/6, 4/8/12, 1/2/3
    np.testing.assert_array_equal(Discretizer(bg, (25, 50, 75), names).bins(rows), theirs.discretize(rows))
    x = np.array([4.0, 12.0, 2.0])
    exp = explain_tabular(lambda r: np.asarray(r) @ [1.0, 1.0, 1.0], x, background=bg, method="lime",
                          feature_names=names, num_samples=50, progress=False)
    bins = theirs.discretize(x[None])[0]
    assert exp.extras["conditions"] == [theirs.names[j][int(b)] for j, b in enumerate(bins)]
    assert exp.extras["conditions"][0] == "2.00 < a <= 4.00"


def test_kernelshap_mean_baseline_breaks_a_categorical_mode_tie_at_the_smallest_code():
    """Category counts tie between 2 and 5: the 'mean' row hides the column at 2, so for a linear model the
    base value is a . (col0 mean, 2) (by hand)."""
    bg = np.column_stack([[1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 2.0, 5.0, 5.0, 7.0]])
    a = np.array([1.5, -2.0])
    exp = explain_tabular(lambda r: np.asarray(r) @ a, np.array([0.0, 7.0]), background=bg, method="kernelshap",
                          categorical_features=[1], progress=False)
    assert exp.extras["base_value"] == pytest.approx(1.5 * 3.0 - 2.0 * 2.0, abs=1e-12)
    np.testing.assert_allclose(exp.weights, a * (np.array([0.0, 7.0]) - [3.0, 2.0]), atol=1e-12)


def test_background_baseline_draws_distinct_background_rows():
    """n_background=3 of 4 distinct background rows: f(none) averages 3 distinct background rows (drawn without
    replacement), seen by a recording model."""
    bg = np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 5.0], [3.0, 7.0]])
    x = np.array([10.0, 20.0])
    for seed in range(4):
        calls = []

        def model(rows):
            calls.append(np.array(rows))
            return np.asarray(rows) @ [1.0, 1.0]

        exp = explain_tabular(model, x, background=bg, method="kernelshap", baseline="background", n_background=3,
                              seed=seed, progress=False)
        refs = calls[1]  # after the row itself: f(none), every feature hidden
        assert len(refs) == 3 and len({tuple(r) for r in refs}) == 3
        assert all(any(np.array_equal(r, b) for b in bg) for r in refs)
        assert exp.extras["base_value"] == pytest.approx(refs.sum(axis=1).mean(), abs=1e-12)


def test_a_feature_is_fixed_only_when_every_reference_row_holds_the_rows_value():
    """Background rows [[x0, 0], [x0 + 2, 0]] hide feature 0 at x0 in one row only: it is not fixed, and
    phi0 = a0 (x0 - (x0 + 1)) = -a0 (by hand, linear f = a . x)."""
    a = np.array([3.0, -0.5])
    x = np.array([1.0, 4.0])
    bg = np.array([[1.0, 0.0], [3.0, 0.0]])
    exp = explain_tabular(lambda r: np.asarray(r) @ a, x, background=bg, method="kernelshap", baseline="background",
                          n_background=2, progress=False)
    np.testing.assert_allclose(exp.weights, [-3.0, -0.5 * 4.0], atol=1e-12)
    assert exp.extras["fixed_features"] == []


def test_kernelshap_takes_the_exact_path_only_when_the_budget_pays_for_f_none_and_every_coalition():
    """F = 3, mean baseline: the row, f(none) and 6 coalitions need 8 evaluations; budget 7 samples within it,
    budget 8 enumerates (by hand)."""
    rng = np.random.default_rng(0)
    bg = rng.normal(size=(20, 3))
    x = bg.mean(0) + 1.0
    a = np.array([1.0, 2.0, -3.0])
    model = lambda r: np.asarray(r) @ a  # noqa: E731
    short = explain_tabular(model, x, background=bg, method="kernelshap", budget=7, progress=False)
    assert not short.extras["exact"] and short.n_evals <= 7
    full = explain_tabular(model, x, background=bg, method="kernelshap", budget=8, progress=False)
    assert full.extras["exact"] and full.n_evals == 8
    np.testing.assert_allclose(full.weights, a * (x - bg.mean(0)), atol=1e-12)


def test_kernelshap_default_sample_count_counts_only_varying_features():
    """14 features, 2 constant at the row's value: the default n_samples is 2 x 12 + 2048 (as shap, M the
    varying features)."""
    rng = np.random.default_rng(0)
    bg = rng.normal(size=(30, 14))
    bg[:, [3, 9]] = [0.25, -1.5]
    x = bg.mean(0) + 1.0
    x[[3, 9]] = [0.25, -1.5]
    exp = explain_tabular(lambda r: np.asarray(r) @ np.arange(1.0, 15.0), x, background=bg, method="kernelshap",
                          progress=False)
    assert exp.extras["fixed_features"] == [3, 9] and not exp.extras["exact"]
    assert exp.extras["n_samples"] == 2 * 12 + 2048


def test_shapley_stderr_is_the_sample_standard_deviation_over_root_m():
    """f = x0 x1, baseline 0, x = (1, 1): feature 0's draw is 1 when it joins second, else 0; with p = phi0 over
    m permutations, stderr0 = sqrt(p (1 - p) m / (m - 1)) / sqrt(m) (ddof 1, by hand)."""
    m = 10
    exp = explain_tabular(lambda r: np.asarray(r)[:, 0] * np.asarray(r)[:, 1], np.array([1.0, 1.0]),
                          background=np.zeros((3, 2)) + [[0.5, 0.5]], method="shapley", baseline=[0.0, 0.0],
                          n_permutations=m, progress=False)
    p = exp.weights[0]
    assert 0 < p < 1 and exp.extras["n_permutations"] == m
    expected = math.sqrt(p * (1 - p) * m / (m - 1)) / math.sqrt(m)
    np.testing.assert_allclose(exp.extras["stderr"], [expected, expected], rtol=1e-12)


def test_shapley_runs_100_permutations_by_default_and_every_one_asked_beyond_a_chunk():
    """Default n_permutations is 100 (no budget); an explicit count above one chunk (2^21 // (3 x 2) for F = 2)
    is run in full, not stopped after the first chunk."""
    bg = np.random.default_rng(0).normal(size=(10, 2))
    model = lambda r: np.asarray(r) @ [1.0, 2.0]  # noqa: E731
    x = np.array([1.0, -1.0])
    assert explain_tabular(model, x, background=bg, method="shapley", progress=False).extras["n_permutations"] == 100
    many = (1 << 21) // 6 + 10
    exp = explain_tabular(model, x, background=bg, method="shapley", n_permutations=many, progress=False)
    assert exp.extras["n_permutations"] == many
