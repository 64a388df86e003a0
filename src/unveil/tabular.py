"""Sparse logistic regression on tables: choose k features (optionally all pairwise products too) maximizing
the training log-likelihood, with STREAK, greedy forward selection or at random; and a libsvm file loader.

The set function is f(S) = maximized log-likelihood (nats, summed over the training rows) of an L2-regularized
logistic regression with intercept on the columns S; STREAK and the baselines report f(S) - f(empty), the gain
over the intercept-only model. The oracle is batched and warm-started: a queried set is always a set seen
before plus one new column (the instance's set plus the arriving element, or the greedy set plus a candidate),
so each query starts from the earlier set's optimum and iterates with that optimum's Hessian (a chord Newton
iteration solved by a Schur complement, vectorized over all queries sharing the earlier set) to the exact
optimum; a full Newton fit is the fallback.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np

from .checks import FLOAT32_MAX, check_bool
from .streak import SelectionResult, greedy, random_selection, streak

__all__ = [
    "load_libsvm",
    "feature_elements",
    "design_matrix",
    "fit_logistic",
    "LogisticLikelihood",
    "select_features",
    "SELECTORS",
]

SELECTORS = ("streak", "greedy", "random")
#: the largest dense ``X`` (bytes) :func:`load_libsvm` builds: 4 GiB.
MAX_DENSE_BYTES = 1 << 32


# ----------------------------------------------------------------------------- libsvm files
def load_libsvm(path: str | Path, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a libsvm/svmlight file (``label index:value ...``, 1-based indices, ``#`` comments).

    Returns ``X`` (rows x features, dense float32; ``n_features`` columns, default the largest index) and
    ``y`` (int64 in {0, 1}: labels {0, 1} as they are, {-1, 1} with -1 -> 0, any other two values ordered).
    The labels must hold exactly two classes (a binary problem). A missing, empty or malformed file, a
    non-finite label or value, a value beyond float32's range, or a dense ``X`` over :data:`MAX_DENSE_BYTES`
    (4 GiB, e.g. from one huge feature index) raises ValueError naming the file (and the line).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"path: no such libsvm file: {p}")
    if n_features is not None and (
        isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 1
    ):
        raise ValueError(f"n_features: expected a positive int or None, got {n_features!r}")
    labels: list[float] = []
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{p}: not a text file (libsvm files are text)") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        try:
            label = float(tokens[0])
        except ValueError:
            raise ValueError(f"{p}, line {lineno}: the label {tokens[0]!r} is not a number") from None
        if not np.isfinite(label):
            raise ValueError(f"{p}, line {lineno}: the label {tokens[0]!r} is not a finite number")
        r = len(labels)
        seen: set[int] = set()
        for tok in tokens[1:]:
            if tok.startswith("qid:"):
                continue
            idx_s, sep, val_s = tok.partition(":")
            try:
                if not sep:
                    raise ValueError
                idx, val = int(idx_s), float(val_s)
            except ValueError:
                raise ValueError(f"{p}, line {lineno}: {tok!r} is not index:value") from None
            if idx < 1:
                raise ValueError(f"{p}, line {lineno}: feature index {idx}; libsvm indices start at 1")
            if idx in seen:
                raise ValueError(f"{p}, line {lineno}: feature index {idx} appears twice")
            if not np.isfinite(val):
                raise ValueError(f"{p}, line {lineno}: feature {idx} has a non-finite value")
            if abs(val) > FLOAT32_MAX:
                raise ValueError(f"{p}, line {lineno}: feature {idx} is {val_s}, beyond float32's range "
                                 f"(X is float32: |value| <= {FLOAT32_MAX:.4g})")
            seen.add(idx)
            rows.append(r)
            cols.append(idx - 1)
            vals.append(val)
        labels.append(label)
    if not labels:
        raise ValueError(f"{p}: no data rows")
    d = (max(cols) + 1) if cols else 0
    if n_features is not None:
        if d > n_features:
            raise ValueError(f"{p}: feature index {d} exceeds n_features={n_features}")
        d = int(n_features)
    need = len(labels) * d * np.dtype(np.float32).itemsize
    if need > MAX_DENSE_BYTES:
        what = f"n_features={d}" if n_features is not None else f"the largest feature index is {d}"
        raise ValueError(
            f"{p}: {what}; a dense X of {len(labels)} rows x {d} columns (float32) would need {need} bytes "
            f"({need / 2**30:.1f} GiB), over the limit of {MAX_DENSE_BYTES / 2**30:.0f} GiB"
        )
    X = np.zeros((len(labels), d), dtype=np.float32)
    X[np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)] = np.asarray(vals, dtype=np.float32)
    lab = np.asarray(labels)
    classes = np.unique(lab)
    if len(classes) == 1:
        raise ValueError(f"{p}: every label is {classes[0]:g}, one class; a binary problem needs two")
    if set(classes) <= {0.0, 1.0}:
        y = lab.astype(np.int64)
    elif set(classes) <= {-1.0, 1.0}:
        y = (lab > 0).astype(np.int64)
    elif len(classes) == 2:
        y = (lab == classes[1]).astype(np.int64)
    else:
        raise ValueError(f"{p}: {len(classes)} distinct labels; a binary problem needs two")
    return X, y


# ----------------------------------------------------------------------------- features
def feature_elements(n_features: int, pairs: bool = False) -> list:
    """The elements to stream: column indices 0..d-1, then (with ``pairs``) every product (i, j), i < j."""
    check_bool(pairs, "pairs")
    elems: list = list(range(int(n_features)))
    if pairs:
        elems += [(i, j) for i in range(n_features) for j in range(i + 1, n_features)]
    return elems


def design_matrix(X: np.ndarray, elements: Sequence[Hashable]) -> np.ndarray:
    """rows x len(elements) float64: column i of X for element i, the product of columns i and j for (i, j)."""
    X = np.asarray(X, dtype=np.float64)
    out = np.empty((X.shape[0], len(elements)), dtype=np.float64)
    for c, e in enumerate(elements):
        if isinstance(e, tuple):
            out[:, c] = X[:, e[0]] * X[:, e[1]]
        else:
            out[:, c] = X[:, e]
    return out


def _loglik(eta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sum over rows of y*eta - log(1 + e^eta); eta is rows (x columns)."""
    yy = y if eta.ndim == 1 else y[:, None]
    return np.sum(yy * eta - np.logaddexp(0.0, eta), axis=0)


def _sigmoid(eta: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * eta))


def fit_logistic(
    Z: np.ndarray,
    y: np.ndarray,
    l2: float = 1e-3,
    *,
    beta0: np.ndarray | None = None,
    tol: float = 1e-8,
    max_iter: int = 100,
) -> tuple[np.ndarray, float, float]:
    """Newton fit of logistic regression with intercept: maximize loglik - l2/2 * |coef|^2.

    ``Z``: rows x q features, ``y``: rows in {0, 1}. ``beta0``: a warm start (q + 1 values, intercept first).
    Returns (coef q, intercept, log-likelihood in nats at the optimum, summed over rows).
    """
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n, q = Z.shape
    A = np.concatenate([np.ones((n, 1)), Z], axis=1)
    pen = np.full(q + 1, float(l2))
    pen[0] = 0.0
    if beta0 is None:
        ybar = float(np.clip(y.mean(), 1e-12, 1 - 1e-12))
        beta = np.zeros(q + 1)
        beta[0] = np.log(ybar / (1 - ybar))
    else:
        beta = np.asarray(beta0, dtype=np.float64).copy()

    def objective(b):
        return float(_loglik(A @ b, y)) - 0.5 * float(pen @ (b * b))

    obj = objective(beta)
    for _ in range(max_iter):
        eta = A @ beta
        mu = _sigmoid(eta)
        g = A.T @ (y - mu) - pen * beta
        H = A.T @ (A * (mu * (1 - mu))[:, None]) + np.diag(pen) + 1e-12 * np.eye(q + 1)
        step = np.linalg.solve(H, g)
        t = 1.0
        while True:  # step halving keeps the (concave) objective increasing
            cand = beta + t * step
            new = objective(cand)
            if new >= obj - 1e-12 or t < 1e-6:
                break
            t *= 0.5
        beta, obj = cand, new
        if np.max(np.abs(t * step)) < tol:
            break
    return beta[1:], float(beta[0]), float(_loglik(A @ beta, y))


# ----------------------------------------------------------------------------- the oracle
class _ParentState:
    __slots__ = ("cols", "beta", "eta", "w", "ainv")

    def __init__(self, cols, beta, eta, w, ainv):
        self.cols, self.beta, self.eta, self.w, self.ainv = cols, beta, eta, w, ainv


class LogisticLikelihood:
    """Batched set function for :mod:`unveil.streak`: ``f(sets)`` = maximized training log-likelihood (nats) of
    an L2-regularized (``l2``, on the coefficients) logistic regression with intercept on each set's columns.

    ``X``: rows x d features, ``y``: rows in {0, 1}; ``pairs`` adds every product of two columns as an element
    ((i, j) tuples; see :func:`feature_elements`). ``fits`` counts sets fitted. Sets are tuples of elements.
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        pairs: bool = False,
        l2: float = 1e-3,
        tol: float = 1e-7,
        max_iter: int = 12,
        cache_size: int = 1024,
    ):
        X = np.asarray(X)
        try:
            values = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"X: expected numbers (rows x features), got an array of {X.dtype}") from None
        y = np.asarray(y)
        if X.ndim != 2:
            raise ValueError(f"X: expected a 2-D array (rows x features), got shape {X.shape}")
        if X.shape[0] == 0:
            raise ValueError("X: has no rows; a logistic regression needs training rows")
        bad = ~np.isfinite(values)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"X: has {int(bad.sum())} non-finite values (NaN or infinite; first at row {r}, "
                             f"column {c})")
        if y.shape != (X.shape[0],):
            raise ValueError(f"y: expected {X.shape[0]} labels, got shape {y.shape}")
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("y: labels must be 0 or 1")
        if np.all(y == y[0]):
            raise ValueError(f"y: every label is {int(y[0])}; a logistic regression needs both classes 0 and 1")
        if (isinstance(l2, (bool, np.bool_)) or not isinstance(l2, (int, float, np.integer, np.floating))
                or not (np.isfinite(l2) and l2 >= 0)):
            raise ValueError(f"l2: expected a finite number >= 0 (the L2 penalty), got {l2!r}")
        self.X = X
        self.y = y.astype(np.float64)
        self.n = X.shape[0]
        self.elements = feature_elements(X.shape[1], pairs)
        self.F = design_matrix(X, self.elements)
        self.index = {e: c for c, e in enumerate(self.elements)}
        self.l2 = float(l2)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.cache_size = int(cache_size)
        self._states: OrderedDict[frozenset, _ParentState] = OrderedDict()
        self._recent: dict[frozenset, tuple[tuple, np.ndarray]] = {}
        self.fits = 0
        ybar = float(np.clip(self.y.mean(), 1e-12, 1 - 1e-12))
        self.empty_loglik = float(self.n * (ybar * np.log(ybar) + (1 - ybar) * np.log(1 - ybar)))

    # ------------------------------------------------------------------ fits
    def _cols(self, s: tuple) -> np.ndarray:
        try:
            return np.asarray([self.index[e] for e in s], dtype=np.int64)
        except KeyError as err:
            raise ValueError(f"sets: unknown element {err.args[0]!r}") from None

    def fit(self, s: Sequence[Hashable]) -> tuple[np.ndarray, float, float]:
        """Fit set ``s`` from scratch: (coef per element of s, intercept, log-likelihood)."""
        s = tuple(s)
        return fit_logistic(self.F[:, self._cols(s)], self.y, self.l2, tol=self.tol)

    def predict_proba(self, X: np.ndarray, s: Sequence[Hashable], coef: np.ndarray, intercept: float) -> np.ndarray:
        """P(y = 1) for the rows of ``X`` (original features) under a fit on ``s``."""
        return _sigmoid(design_matrix(X, tuple(s)) @ coef + intercept)

    def _state(self, s: tuple) -> _ParentState:
        key = frozenset(s)
        st = self._states.get(key)
        if st is not None and st.cols.tolist() == self._cols(s).tolist():
            self._states.move_to_end(key)
            return st
        cols = self._cols(s)
        warm = self._recent.get(key)
        beta0 = None
        if warm is not None:
            order, b = warm
            pos = {e: i for i, e in enumerate(order)}
            beta0 = np.concatenate([[b[0]], [b[1 + pos[e]] for e in s]])
        coef, icpt, _ = fit_logistic(self.F[:, cols], self.y, self.l2, beta0=beta0, tol=self.tol)
        beta = np.concatenate([[icpt], coef])
        A = np.concatenate([np.ones((self.n, 1)), self.F[:, cols]], axis=1)
        eta = A @ beta
        mu = _sigmoid(eta)
        w = mu * (1 - mu)
        pen = np.full(len(beta), self.l2)
        pen[0] = 0.0
        H = A.T @ (A * w[:, None]) + np.diag(pen) + 1e-12 * np.eye(len(beta))
        st = _ParentState(cols, beta, eta, w, np.linalg.inv(H))
        self._states[key] = st
        if len(self._states) > self.cache_size:
            self._states.popitem(last=False)
        return st

    def _extend(self, parent: tuple, news: list) -> tuple[np.ndarray, np.ndarray]:
        """Fit parent + (u,) for every u in ``news`` from the parent's optimum: (log-likelihoods, betas C x q+2)."""
        st = self._state(parent)
        y, l2 = self.y, self.l2
        A = np.concatenate([np.ones((self.n, 1)), self.F[:, st.cols]], axis=1)  # n x q
        U = self.F[:, self._cols(tuple(news))]  # n x C
        pen = np.full(A.shape[1], l2)
        pen[0] = 0.0
        c = A.T @ (U * st.w[:, None])  # q x C
        d = (U * U * st.w[:, None]).sum(axis=0) + l2 + 1e-12
        ainv_c = st.ainv @ c
        schur = d - np.sum(c * ainv_c, axis=0)
        C = U.shape[1]
        dS = np.zeros((A.shape[1], C))
        bu = np.zeros(C)
        ok = np.zeros(C, dtype=bool)
        eta = np.repeat(st.eta[:, None], C, axis=1)
        act = np.arange(C)  # columns still iterating; converged ones drop out
        for it in range(self.max_iter):
            mu = _sigmoid(eta[:, act])
            r = y[:, None] - mu
            Ua = U[:, act]
            gS = A.T @ r - pen[:, None] * (st.beta[:, None] + dS[:, act])
            gu = np.sum(Ua * r, axis=0) - l2 * bu[act]
            if it:  # the new column's Hessian entries at the current point; the old block stays the parent's
                Uw = Ua * (mu * (1.0 - mu))
                c_a = A.T @ Uw
                ainv_c_a = st.ainv @ c_a
                schur_a = np.sum(Uw * Ua, axis=0) + l2 + 1e-12 - np.sum(c_a * ainv_c_a, axis=0)
            else:
                ainv_c_a, schur_a = ainv_c, schur
            step_u = (gu - np.sum(ainv_c_a * gS, axis=0)) / schur_a
            step_S = st.ainv @ gS - ainv_c_a * step_u
            dS[:, act] += step_S
            bu[act] += step_u
            eta[:, act] = st.eta[:, None] + A @ dS[:, act] + U[:, act] * bu[act]
            change = np.maximum(np.max(np.abs(step_S), axis=0), np.abs(step_u))
            done = change < self.tol
            ok[act[done]] = True
            act = act[~done & np.isfinite(change)]
            if act.size == 0:
                break
        ll = _loglik(eta, y)
        betas = np.concatenate([st.beta[:, None] + dS, bu[None, :]], axis=0).T  # C x (q + 1)
        for j in np.flatnonzero(~ok | ~np.isfinite(ll)):  # not converged: a full Newton fit
            coef, icpt, ll[j] = self.fit((*parent, news[j]))
            betas[j] = np.concatenate([[icpt], coef])
        return ll, betas

    # ------------------------------------------------------------------ the set function
    def __call__(self, sets: list) -> np.ndarray:
        """Log-likelihood (nats) of each set's fit; sets sharing all but their last element go in one batch."""
        out = np.empty(len(sets), dtype=np.float64)
        groups: dict[tuple, list[int]] = {}
        for i, s in enumerate(sets):
            s = tuple(s)
            if len(s) == 0:
                out[i] = self.empty_loglik
            else:
                groups.setdefault(s[:-1], []).append(i)
        current: dict[frozenset, tuple[tuple, np.ndarray]] = {}
        for parent, idx in groups.items():
            if len(parent) == 0:
                ll, betas = self._extend((), [tuple(sets[i])[-1] for i in idx])
            else:
                ll, betas = self._extend(parent, [tuple(sets[i])[-1] for i in idx])
            for j, i in enumerate(idx):
                s = tuple(sets[i])
                out[i] = ll[j]
                current[frozenset(s)] = (s, betas[j])
        self.fits += len(sets)
        self._recent = current
        return out


def select_features(
    X: np.ndarray,
    y: np.ndarray,
    k: int,
    *,
    method: str = "streak",
    eps: float = 0.1,
    pairs: bool = False,
    seed: int = 0,
    budget: int | None = None,
    l2: float = 1e-3,
    oracle: LogisticLikelihood | None = None,
) -> SelectionResult:
    """Choose at most ``k`` features (with ``pairs``, also products (i, j)) maximizing the logistic regression's
    training log-likelihood. ``method``: 'streak' (features streamed in a ``seed``-ed random order, threshold
    spacing ``eps``), 'greedy' (forward selection) or 'random'. ``budget``: the most fits. The result's
    ``value`` is the log-likelihood gain over the intercept-only model (nats). ``oracle`` reuses a
    :class:`LogisticLikelihood` (its ``X``/``y``/``pairs`` then win)."""
    if method not in SELECTORS:
        raise ValueError(f"method: unknown {method!r}; choose one of {SELECTORS}")
    f = oracle if oracle is not None else LogisticLikelihood(X, y, pairs=pairs, l2=l2)
    elems = f.elements
    rng = np.random.default_rng(seed)
    if method == "streak":
        order = [elems[j] for j in rng.permutation(len(elems))]
        return streak(f, order, k, eps, budget=budget, empty_value=f.empty_loglik)
    if method == "greedy":
        return greedy(f, elems, k, budget=budget, empty_value=f.empty_loglik)
    return random_selection(f, elems, k, rng=rng, budget=budget, empty_value=f.empty_loglik)
