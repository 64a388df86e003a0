"""unveil.tabular: the libsvm loader, the logistic log-likelihood oracle, and sparse feature selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unveil.tabular import (
    LogisticLikelihood,
    design_matrix,
    feature_elements,
    fit_logistic,
    load_libsvm,
    select_features,
)

PHISHING = Path(__file__).resolve().parents[2] / "shared" / "data" / "streak" / "phishing.txt"


def synthetic(seed=0, n=600, d=12, true=(1, 4, 7), pair=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    eta = 1.5 * X[:, list(true)].sum(axis=1) - 0.3
    if pair is not None:
        eta = eta + 2.0 * X[:, pair[0]] * X[:, pair[1]]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(np.int64)
    return X, y


# ----------------------------------------------------------------------------- the loader
def test_libsvm_round_trip_against_sklearn(tmp_path):
    from sklearn.datasets import dump_svmlight_file, load_svmlight_file

    rng = np.random.default_rng(0)
    X = (rng.random((30, 9)) * (rng.random((30, 9)) < 0.4)).astype(np.float32)
    X[:, -1] = 0.0  # a trailing empty column: n_features keeps it
    y = rng.integers(0, 2, 30)
    path = tmp_path / "d.txt"
    dump_svmlight_file(X, y, str(path), zero_based=False)
    X2, y2 = load_libsvm(path, n_features=9)
    np.testing.assert_allclose(X2, X, rtol=1e-6)
    np.testing.assert_array_equal(y2, y)
    assert X2.dtype == np.float32 and X2.shape == (30, 9)
    Xs, ys = load_svmlight_file(str(path), n_features=9, zero_based=False)
    np.testing.assert_allclose(X2, Xs.toarray(), rtol=1e-6)
    # -1/+1 labels and comments
    path.write_text("# header\n-1 1:0.5 3:2\n+1 2:1   # note\n\n-1 3:1\n")
    X3, y3 = load_libsvm(path)
    np.testing.assert_array_equal(y3, [0, 1, 0])
    np.testing.assert_allclose(X3, [[0.5, 0, 2], [0, 1, 0], [0, 0, 1]])


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "no data rows"),
        ("1 1:0.5\nx 2:1\n", "line 2: the label"),
        ("1 1:0.5 2\n", "line 1: '2' is not index:value"),
        ("1 0:0.5\n", "start at 1"),
        ("1 2:1 2:3\n", "appears twice"),
        ("1 1:1\n2 1:1\n3 1:1\n", "3 distinct labels"),
        ("1 1:nan\n", "non-finite"),
        ("1 1:1e40 2:1e-50\n0 2:1\n", r"line 1: feature 1 is 1e40, beyond float32's range"),
        ("1 1:1\n0 2:-3.5e38\n", r"line 2: feature 2 is -3.5e38, beyond float32's range"),
        ("1 1:1\nnan 1:2\n0 1:3\n", "line 2: the label 'nan' is not a finite number"),
        ("1 1:1\n-inf 1:2\n", "line 2: the label '-inf' is not a finite number"),
        ("1 1:1\n1 2:1\n", "every label is 1, one class; a binary problem needs two"),
        ("-1 1:1\n-1 2:1\n", "every label is -1, one class"),
        ("5 1:1\n", "every label is 5, one class"),
    ],
)
def test_libsvm_bad_files(tmp_path, text, match):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_libsvm(path)


def test_libsvm_missing_file_and_n_features(tmp_path):
    with pytest.raises(ValueError, match="no such libsvm file"):
        load_libsvm(tmp_path / "nope.txt")
    path = tmp_path / "d.txt"
    path.write_text("1 5:1\n0 1:1\n")
    with pytest.raises(ValueError, match="exceeds n_features"):
        load_libsvm(path, n_features=3)


def test_libsvm_refuses_a_dense_matrix_too_large_to_build(tmp_path):
    path = tmp_path / "huge.txt"
    path.write_text("1 99999999999:1\n0 1:1\n")
    need = 2 * 99999999999 * 4
    with pytest.raises(ValueError, match=rf"huge.txt: the largest feature index is 99999999999; a dense X of 2 rows "
                                         rf"x 99999999999 columns \(float32\) would need {need} bytes"):
        load_libsvm(path)
    path.write_text("1 1:1\n0 2:1\n")
    with pytest.raises(ValueError, match=r"n_features=2147483648; .* over the limit of 4 GiB"):
        load_libsvm(path, n_features=2**31)
    # the limit is on bytes: 2 rows x 2^29 columns is exactly 4 GiB (refused only above), so one more column
    # is refused while the check itself allocates nothing
    with pytest.raises(ValueError, match="would need 4294967304 bytes"):
        load_libsvm(path, n_features=2**29 + 1)


@pytest.mark.skipif(not PHISHING.exists(), reason="shared data not present")
def test_phishing_file_shape():
    X, y = load_libsvm(PHISHING)
    assert X.shape == (11055, 68) and set(np.unique(y)) == {0, 1}


# ----------------------------------------------------------------------------- the oracle
def test_loglik_oracle_matches_sklearn_and_scratch_fits():
    from sklearn.linear_model import LogisticRegression

    X, y = synthetic(1, n=300, d=6, true=(1, 4))
    f = LogisticLikelihood(X, y, pairs=True, l2=0.5)
    assert len(f.elements) == 6 + 15
    sets = [(), (2,), (2, 4), (2, 4, (0, 3)), (5,), (5, 1)]
    values = f(sets)
    ybar = y.mean()
    assert values[0] == pytest.approx(len(y) * (ybar * np.log(ybar) + (1 - ybar) * np.log(1 - ybar)))
    for s, v in zip(sets[1:], values[1:]):
        Z = design_matrix(X, s)
        m = LogisticRegression(C=1 / 0.5, tol=1e-12, max_iter=10000).fit(Z, y)
        p = m.predict_proba(Z)[:, 1]
        assert v == pytest.approx(float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))), abs=1e-5)
        assert v == pytest.approx(f.fit(s)[2], abs=1e-6)
    # warm starts (each set extends one seen in the previous call) give the same values
    again = LogisticLikelihood(X, y, pairs=True, l2=0.5)
    again([(2,), (5,)])
    np.testing.assert_allclose(again([(2, 4), (5, 1)]), values[[2, 5]], atol=1e-6)
    np.testing.assert_allclose(again([(2, 4, (0, 3))]), values[[3]], atol=1e-6)


def test_fit_logistic_warm_start_and_products():
    X, y = synthetic(2, n=200, d=3, true=(0, 2))
    coef, icpt, ll = fit_logistic(X, y, 1e-3)
    coef2, icpt2, ll2 = fit_logistic(X, y, 1e-3, beta0=np.concatenate([[icpt], coef]) + 0.3)
    np.testing.assert_allclose(coef2, coef, atol=1e-6)
    assert ll2 == pytest.approx(ll, abs=1e-8)
    np.testing.assert_allclose(design_matrix(X, [(0, 2)])[:, 0], X[:, 0] * X[:, 2], rtol=1e-6)
    assert feature_elements(3, pairs=True) == [0, 1, 2, (0, 1), (0, 2), (1, 2)]


# ----------------------------------------------------------------------------- selection
@pytest.mark.parametrize("method", ["streak", "greedy"])
def test_selection_recovers_the_true_features(method):
    X, y = synthetic(3)
    r = select_features(X, y, 3, method=method, eps=0.1, seed=0)
    assert set(r.selected) == {1, 4, 7}
    oracle = LogisticLikelihood(X, y)
    assert r.value == pytest.approx(oracle([r.selected])[0] - oracle.empty_loglik, abs=1e-5)


def test_selection_finds_a_true_pairwise_product():
    X, y = synthetic(4, n=800, d=6, true=(0,), pair=(2, 5))
    for method in ("streak", "greedy"):
        r = select_features(X, y, 2, method=method, eps=0.1, pairs=True, seed=1)
        assert set(r.selected) == {0, (2, 5)}


def test_streak_beats_random_and_uses_fewer_fits_than_greedy():
    X, y = synthetic(5, n=500, d=30, true=(2, 9, 11, 20, 25))
    s = select_features(X, y, 5, method="streak", eps=0.75, seed=0)
    g = select_features(X, y, 5, method="greedy")
    r = select_features(X, y, 5, method="random", seed=0)
    assert s.value > r.value and s.value >= 0.8 * g.value
    assert s.oracle_calls < g.oracle_calls
    assert len(r.selected) == 5 and r.oracle_calls == 5
    with pytest.raises(ValueError, match="method"):
        select_features(X, y, 5, method="lasso")
    with pytest.raises(ValueError, match=r"^y: labels must be 0 or 1"):
        LogisticLikelihood(X, np.full(len(y), 2))


def test_selection_input_errors_name_the_input():
    X, y = synthetic(6, n=40, d=3, true=(0, 2))
    bad = X.copy()
    bad[5, 2] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"^X: has 2 non-finite values \(NaN or infinite; first at row 5, column 2\)"):
        select_features(bad, y, 2)
    with pytest.raises(ValueError, match="^X: has no rows"):
        select_features(np.zeros((0, 3)), np.zeros(0, np.int64), 2)
    with pytest.raises(ValueError, match="^y: every label is 1; a logistic regression needs both classes"):
        select_features(X, np.ones(len(y), np.int64), 2)
    with pytest.raises(TypeError, match="^X: expected numbers"):
        select_features(np.full((4, 2), "a"), y[:4], 1)
    for pairs in ("False", 0, None):
        with pytest.raises(ValueError, match=f"^pairs: expected True or False, got {pairs!r}$"):
            select_features(X, y, 2, pairs=pairs)
    for l2 in (-1.0, float("nan"), float("inf"), "abc"):
        with pytest.raises(ValueError, match="^l2: expected a finite number >= 0"):
            select_features(X, y, 2, l2=l2)
    # numpy bools are bools: the same selection
    assert select_features(X, y, 2, pairs=np.bool_(True)).selected == select_features(X, y, 2, pairs=True).selected
