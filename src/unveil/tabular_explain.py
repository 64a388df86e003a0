"""Explain one row of a table: ``explain_tabular(model_fn, x, background=X, method=...) -> Explanation``.

The model is any function of a batch of rows (N x F float64 numpy) returning N x outputs scores (class
probabilities such as a scikit-learn ``predict_proba``, or logits), or N values (a regression: one output).
The explanation gives one signed weight per feature (column) for one output, the ``target``.

Methods (:data:`TABULAR_METHODS`):

* ``lime``: the ``lime`` package's ``LimeTabularExplainer`` sampling and weighting. With ``discretize=True``
  each feature is cut at the background's quartiles (or deciles); a sample draws each feature's bin from the
  background's bin frequencies and a value inside that bin (a normal with the bin's mean and standard
  deviation, truncated to the bin), and its interpretable vector says which features fall in the explained
  row's own bin. With ``discretize=False`` samples are N(0, 1) scaled by the background's standard deviation
  around its mean (or around the row), and the surrogate sees standardized values. Weights:
  sqrt(exp(-d² / width²)), d the Euclidean distance to the row in the interpretable space, width
  0.75 sqrt(F); surrogate: weighted ridge (alpha 1).
* ``kernelshap``, ``shapley``, ``streak``: set functions over coalitions S of features, f(S) = the target's
  score with the features in S at the row's values and the others hidden. Hidden features take the
  background's mean (``baseline="mean"``, one evaluation per coalition, the default), or the values of
  ``n_background`` background rows with the scores averaged (``baseline="background"``: the interventional
  expectation E_b f(x_S, b_rest), ``n_background`` evaluations per coalition), or a given row. On a model
  linear in the features both give coefficient x (x - background mean). A feature whose hidden value is the
  row's own in every reference row changes no score: its Shapley value is exactly 0 (KernelSHAP leaves it
  out of its fit).

``categorical_features`` (columns holding category codes): LIME draws them from the background's categories
with their frequencies and reads them as "the row's category" (1/0), as the lime package; ``baseline="mean"``
hides them at the background's most frequent value. A torch module runs in inference behaviour (training
flags cleared during each pass and restored after), as :meth:`unveil.Model.inference_behaviour`.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
import time
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .checks import (blame_model, check_bool, check_positive, integer_text, match_class_name, scalar_target,
                     shown_label_index)
from .explanation import Explanation
from .methods.kernelshap import constrained_fit, sample_coalitions, shapley_kernel
from .methods.lime import SELECTIONS, fit_surrogate, warn_few_samples, weighted_r2
from .methods.registry import MethodSpec
from .methods.shapley import budget_chunks, marginal_contributions, permutation_masks
from .streak import streak as run_streak

__all__ = ["explain_tabular", "tabular_methods", "TABULAR_METHODS", "DEFAULT_TABULAR_METHOD", "load_csv", "TableModel"]

#: rows in one call of the model function unless ``batch_size`` says otherwise.
DEFAULT_BATCH_ROWS = 4096
#: most row values (rows x features) composed at once.
CHUNK_VALUES = 1 << 21
BASELINES = ("mean", "background")
#: largest |value| of a continuous feature LIME samples: past it a squared deviation overflows float64
LIME_VALUE_LIMIT = 1e150
DISCRETIZERS = {"quartile": (25, 50, 75), "decile": tuple(range(10, 100, 10))}
LIME_SELECTIONS = ("auto", "none", "forward", "highest_weights", "streak")
from ._defaults import DEFAULT_TABULAR_METHOD  # noqa: E402 - re-exported

TABULAR_METHODS: dict[str, MethodSpec] = {}


def _method(name: str, description: str):
    def deco(fn):
        TABULAR_METHODS[name] = MethodSpec(name, fn, "perturbation", description, False)
        return fn

    return deco


def tabular_methods() -> list[str]:
    """Names of the tabular explanation methods."""
    return sorted(TABULAR_METHODS)


# ----------------------------------------------------------------------------- the model
class TableModel:
    """Rows in, scores out: batches (``batch_size`` rows per call), counts evaluated rows (``n_evals``),
    checks shapes and finiteness, and refuses to go past ``budget`` (a method must plan within it)."""

    def __init__(self, fn: Callable, batch_size: int = DEFAULT_BATCH_ROWS, budget: int | None = None,
                 name: str = "model_fn", frame=None, progress: bool = False, desc: str = "rows"):
        self.fn, self.batch_size, self.budget, self.name = fn, int(batch_size), budget, name
        self.frame = frame  # (DataFrame type, columns): rows go to the model as that frame
        self.n_evals = 0
        self.n_outputs: int | None = None
        self.progress, self.desc, self._bar = check_bool(progress, "progress"), desc, None

    def close(self) -> None:
        """Close the progress bar (if one was drawn)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _tick(self, n: int) -> None:
        if not self.progress:
            return
        if self._bar is None:
            from tqdm.auto import tqdm

            # rows evaluated so far; disable=None hides the bar when stderr is not a terminal
            self._bar = tqdm(total=self.budget, desc=self.desc, unit="row", disable=None, leave=False)
        self._bar.update(n)

    def _call(self, rows: np.ndarray) -> np.ndarray:
        arg = rows if self.frame is None else self.frame[0](rows, columns=self.frame[1])
        try:
            out = self.fn(arg)
        except Exception as err:
            n, f = rows.shape
            blame_model(err, self.name, f"{n} row{'' if n == 1 else 's'} of {f} feature{'' if f == 1 else 's'}")
            raise
        if hasattr(out, "detach"):  # a torch tensor
            out = out.detach().cpu().numpy()
        try:
            out = np.asarray(out, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{self.name}: must return numbers (N x outputs), got {type(out).__name__}") from None
        if out.ndim == 1:
            out = out[:, None]
        if out.ndim != 2 or out.shape[0] != len(rows):
            raise ValueError(
                f"{self.name}: returned shape {out.shape} for {len(rows)} rows; expected ({len(rows)}, outputs) "
                f"or ({len(rows)},)"
            )
        if self.n_outputs is None:
            self.n_outputs = out.shape[1]
        elif out.shape[1] != self.n_outputs:
            raise ValueError(f"{self.name}: returned {out.shape[1]} outputs per row, earlier {self.n_outputs}")
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise ValueError(
                f"{self.name}: returned NaN or infinite scores for {int(bad.sum())} of {len(rows)} rows "
                f"(first: {rows[int(np.argmax(bad))].tolist()})"
            )
        return out

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """N x outputs float64 scores of N x F rows."""
        rows = np.asarray(rows, dtype=np.float64)
        if self.budget is not None and self.n_evals + len(rows) > self.budget:
            raise RuntimeError(f"{len(rows)} more evaluations would pass the budget of {self.budget}")
        outs = []
        for i in range(0, len(rows), self.batch_size):
            outs.append(self._call(rows[i: i + self.batch_size]))
            self._tick(len(outs[-1]))
        self.n_evals += len(rows)
        return np.concatenate(outs) if outs else np.zeros((0, self.n_outputs or 0))


def _model_function(model_fn) -> tuple[Callable, list[str] | None, int | None, str]:
    """(rows -> scores, class names or None, the model's own batch size or None, a name) for what the user
    passed: a unveil.Model, a torch module (raw outputs), an estimator with ``predict_proba`` (or ``predict``),
    or any callable."""
    import torch

    from .models.base import Model, class_scores, module_lock

    if isinstance(model_fn, type):
        raise TypeError(f"model_fn: got the class {model_fn.__name__}, not a model; pass an instance, e.g. "
                        f"{model_fn.__name__}(), trained or with its weights loaded")
    if isinstance(model_fn, Model):
        model = model_fn
        if model._mean is not None or model.input_size is not None:
            raise ValueError(f"model_fn: {model.name!r} is an image Model (it "
                             f"{'normalizes with mean and std' if model._mean is not None else 'resizes to input_size'}"
                             f"); for rows pass the torch module or callable itself, or a Model without them")
        bs = model.batch_size if isinstance(model.batch_size, int) else None
        if model.is_torch:
            def run(rows):
                t = torch.as_tensor(rows, dtype=torch.float32, device=model.device)
                with torch.inference_mode():
                    return model.to_probabilities(model.forward(t)).cpu().numpy()
        else:
            def run(rows):
                out = model.fn(rows)
                out = out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out, np.float32))
                return model.to_probabilities(out.reshape(len(rows), -1)).numpy()
        return run, model.labels, bs, model.name
    if isinstance(model_fn, torch.nn.Module):
        # the image path's adapter, for its inference behaviour only: each pass runs with every submodule's
        # training flag cleared (dropout off, batch norm on its running statistics) and restores them after,
        # also after an exception; raw outputs, no preprocessing
        module = model_fn
        adapter = Model(module, outputs="scores", channels=None, batch_size=1, name=type(module).__name__)
        device, dtype = adapter.device, adapter.dtype or torch.float32  # the module's (float64, half ...)

        def run(rows):
            t = torch.as_tensor(rows, dtype=dtype, device=device)
            with torch.inference_mode(), module_lock(module), adapter.inference_behaviour():
                out = class_scores(module(t), adapter.name)
            return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out
        return run, None, None, adapter.name
    classes = getattr(model_fn, "classes_", None)
    if classes is None:  # a bound method such as clf.predict_proba
        classes = getattr(getattr(model_fn, "__self__", None), "classes_", None)
    names = [str(c) for c in classes] if classes is not None else None
    if not callable(model_fn):
        for attr in ("predict_proba", "predict"):
            fn = getattr(model_fn, attr, None)
            if callable(fn):
                return fn, names if attr == "predict_proba" else None, None, f"{type(model_fn).__name__}.{attr}"
        raise TypeError(
            f"model_fn: expected a callable (rows N x F -> scores), a torch module, a unveil.Model or an estimator "
            f"with predict_proba/predict, got {type(model_fn).__name__}"
        )
    if getattr(model_fn, "__name__", "") == "predict" and names is not None:
        names = None  # predict returns one value per row: the classes are no outputs
    return model_fn, names, None, getattr(model_fn, "__name__", type(model_fn).__name__)


# ----------------------------------------------------------------------------- inputs
def _frame_info(obj, name: str):
    """(values, column labels as they are, DataFrame type) of a pandas DataFrame/Series, else (obj, None, None).
    A column (a Series: an entry) that is not numbers is a TypeError naming it and ``name``."""
    if hasattr(obj, "to_numpy") and hasattr(obj, "columns"):
        labels, frame_type = list(obj.columns), type(obj)
    elif hasattr(obj, "to_numpy") and hasattr(obj, "index"):
        labels, frame_type = list(obj.index), None
    else:
        return obj, None, None
    try:
        values = obj.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        bad = []
        for j, label in enumerate(labels):
            try:
                np.asarray(obj.iloc[:, j] if frame_type is not None else obj.iloc[j], dtype=np.float64)
            except (TypeError, ValueError):
                bad.append(str(label))
        raise TypeError(f"{name}: column(s) {bad or labels} are not numbers; every feature must be numeric "
                        f"(encode categories as numbers first)") from None
    return values, labels, frame_type


def _match_names(x: np.ndarray, x_names: list[str], bg_names: list[str]) -> np.ndarray:
    """``x`` reordered from its own column names to the background's; a ValueError when the names differ."""
    if x_names == bg_names:
        return x
    if len(x_names) != x.size:  # a multi-row x: its shape error comes later
        return x
    for which, names in (("x", x_names), ("background", bg_names)):
        if len(set(names)) < len(names):
            seen: set[str] = set()
            dup = sorted({n for n in names if n in seen or seen.add(n)})
            raise ValueError(f"{which}: repeated column names {dup}; x and background cannot be matched by name")
    x_set, bg_set = set(x_names), set(bg_names)
    missing = [n for n in bg_names if n not in x_set]
    unexpected = [n for n in x_names if n not in bg_set]
    if missing or unexpected:
        raise ValueError(
            f"x: its column names differ from the background's: missing {missing}, unexpected {unexpected} "
            f"(pass x as a numpy array to match the columns by position)"
        )
    pos = {n: i for i, n in enumerate(x_names)}
    return x[[pos[n] for n in bg_names]]


def _as_numbers(value, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected numbers (an array of floats), got {type(value).__name__}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return arr


def _check_inputs(x, background, feature_names):
    background, bg_labels, frame_type = _frame_info(background, "background")
    x, x_labels, _ = _frame_info(x, "x")
    bg_names = None if bg_labels is None else [str(c) for c in bg_labels]
    x_names = None if x_labels is None else [str(c) for c in x_labels]
    x = _as_numbers(x, "x")
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x_names is not None and bg_names is not None:
        x = _match_names(x, x_names, bg_names)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"x: expected one row (a 1-D array of the features), got shape {x.shape}")
    if background is None:
        raise ValueError("background: required, a 2-D array of rows (the data perturbations draw from)")
    background = _as_numbers(background, "background")
    if background.ndim == 1:
        background = background[None, :]
    if background.ndim != 2 or background.shape[0] < 1:
        raise ValueError(f"background: expected a 2-D array of rows (rows x features), got shape {background.shape}")
    n = background.shape[1]
    if x.size != n:
        raise ValueError(f"x: has {x.size} values but the background has {n} columns (features)")
    names = feature_names if feature_names is not None else (bg_names or x_names)
    if names is None:
        names = [f"x{i}" for i in range(n)]
    if isinstance(names, str) or len(list(names)) != n:
        raise ValueError(f"feature_names: expected {n} names (one per column), got {names!r}")
    frame = (frame_type, bg_labels) if frame_type is not None else None  # the model gets the labels as they are
    return x, background, [str(s) for s in names], frame


def _check_categorical(value, feature_names: list[str], columns: list | None) -> list[int]:
    """The sorted column indices named by ``categorical_features`` (indices 0..F-1 or names, from
    ``feature_names`` or the DataFrame's columns; one name or index alone is taken as a list of one). A
    DataFrame's number labels are matched too: an int that is a label but no position is that label's column;
    an int that is a label at another position is an error (ambiguous)."""
    if value is None:
        return []
    n = len(feature_names)
    items = [value] if isinstance(value, (str, int, np.integer)) else value
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"categorical_features: expected a list of column indices or names, got "
                        f"{type(value).__name__}") from None
    number_labels = {int(c): j for j, c in enumerate(columns or [])  # a DataFrame's labels that are numbers
                     if isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_))}
    lookup = {str(c): j for j, c in enumerate(columns or [])}
    lookup.update({name: j for j, name in enumerate(feature_names)})
    out, unknown, out_of_range, bad = set(), [], [], []
    for item in items:
        if isinstance(item, (bool, np.bool_)):
            bad.append(item)
        elif isinstance(item, (int, np.integer)):
            as_label = number_labels.get(int(item))
            if as_label is not None and not 0 <= item < n:
                out.add(as_label)
            elif as_label is not None and as_label != item:
                raise ValueError(f"categorical_features: {int(item)} is ambiguous: column {int(item)} by position "
                                 f"is {feature_names[int(item)]!r}, but the DataFrame also has a column labelled "
                                 f"{int(item)} (position {as_label}); name the column meant as a string: "
                                 f"'{int(item)}' for the one labelled {int(item)}, "
                                 f"{feature_names[int(item)]!r} for the one at position {int(item)}")
            elif 0 <= item < n:
                out.add(int(item))
            else:
                out_of_range.append(int(item))
        elif isinstance(item, str):
            if item in lookup:
                out.add(lookup[item])
            else:
                unknown.append(item)
        else:
            bad.append(item)
    if bad:
        raise TypeError(f"categorical_features: expected column indices (ints) or names (str), got {bad!r}")
    if out_of_range:
        raise ValueError(f"categorical_features: column indices {out_of_range} are out of range: the table has "
                         f"{n} columns (0..{n - 1})")
    if unknown:
        raise ValueError(f"categorical_features: no column named {unknown}; the columns are {feature_names}")
    return sorted(out)


def _check_int(value, name: str, low: int, what: str, none_ok: bool = True):
    if value is None and none_ok:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an int >= {low} ({what}){' or None' if none_ok else ''}, got {value!r}")
    return int(value)


def _target_index(target, n_outputs: int, class_names, scores: np.ndarray) -> int:
    target = scalar_target(target)
    if target is None:
        return int(np.argmax(scores))
    if isinstance(target, str):
        found = match_class_name(target, class_names)
        if found is not None:
            return found
        number = integer_text(target)
        if number is None and class_names is None:  # the label shown for an output without a name
            number = 0 if target.strip().lower() == "output" and n_outputs == 1 else shown_label_index(target)
        if number is None:
            known = f"; the classes are {list(class_names)}" if class_names is not None else ""
            raise ValueError(f"target {target!r}: no output of that name{known}")
        target = number
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
        raise TypeError(f"target: expected an output number or class name, got {type(target).__name__}")
    if not 0 <= target < n_outputs:
        named = match_class_name(str(target), class_names)
        hint = "" if named is None else f"; the class named {target} is output {named}: pass target='{target}'"
        raise ValueError(f"target {target} is out of range: the model gives "
                         f"{'1 output (0)' if n_outputs == 1 else f'{n_outputs} outputs (0..{n_outputs - 1})'}{hint}")
    return int(target)


# ----------------------------------------------------------------------------- shared pieces
class TableContext:
    """What a tabular method may use: the row, the background, the counted model, the target, the seed."""

    def __init__(self, model: TableModel, x, background, feature_names, target, scores, seed, budget,
                 categorical: Sequence[int] = ()):
        self.model, self.x, self.background, self.feature_names = model, x, background, feature_names
        self.target, self.scores, self.seed, self.budget = target, scores, seed, budget
        self.categorical = np.asarray(sorted(set(int(j) for j in categorical)), dtype=np.int64)
        self.rng = np.random.default_rng(seed)

    @property
    def n_features(self) -> int:
        return self.x.size

    @property
    def score(self) -> float:
        return float(self.scores[self.target])

    def remaining(self) -> int | None:
        """Evaluations still allowed by ``budget`` (None when unlimited)."""
        return None if self.budget is None else self.budget - self.model.n_evals

    def mean_row(self) -> np.ndarray:
        """The ``baseline="mean"`` row (F values): the background's mean; a categorical column's most frequent
        value (ties: the smallest), a constant column's own value (exactly, not a rounded mean)."""
        bg = self.background
        row = bg.mean(axis=0)
        const = np.all(bg == bg[0], axis=0)
        row[const] = bg[0, const]
        for j in self.categorical:
            values, counts = np.unique(bg[:, j], return_counts=True)
            row[j] = values[int(np.argmax(counts))]
        return row

    def coalitions(self, baseline, n_background: int) -> "Coalitions":
        """f(S) for this row and target, hidden features from ``baseline`` (see the module docstring)."""
        n_background = _check_int(n_background, "n_background", 1, "background rows averaged", none_ok=False)
        if isinstance(baseline, str):
            if baseline not in BASELINES:
                raise ValueError(f"baseline: unknown {baseline!r}; choose one of {BASELINES} or give a row")
            if baseline == "mean":
                refs = self.mean_row()[None, :]
            else:
                rows = self.background
                if len(rows) > n_background:
                    rows = rows[np.sort(self.rng.choice(len(rows), size=n_background, replace=False))]
                refs = rows
        else:
            refs = _as_numbers(baseline, "baseline").reshape(1, -1)
            if refs.shape[1] != self.n_features:
                raise ValueError(f"baseline: a row needs {self.n_features} values, got {refs.shape[1]}")
        return Coalitions(self.model, self.x, refs, self.target, self.score)


class Coalitions:
    """f(masks): the target's score with each mask's features (1) at the row's values and the rest (0) at the
    reference rows, averaged over those rows. Each distinct mask is evaluated once (the full one never: it is
    the row itself); ``cost`` evaluations per new mask. ``fixed`` (F bools): features whose value in every
    reference row is the row's own, so hiding them changes no row the model sees; masks are read with them
    present, so two masks that differ only there are one coalition (evaluated once, the same score): their
    Shapley values are exactly 0."""

    def __init__(self, model: TableModel, x: np.ndarray, refs: np.ndarray, target: int, f_all: float):
        self.model, self.x, self.refs, self.target = model, x, refs, target
        self.fixed = np.all(refs == x[None, :], axis=0)
        self.cache: dict[bytes, float] = {np.ones(x.size, np.uint8).tobytes(): float(f_all)}

    @property
    def cost(self) -> int:
        return len(self.refs)

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks).astype(np.uint8).reshape(-1, self.x.size)
        if self.fixed.any():
            masks[:, self.fixed] = 1  # the rows are the same either way
        uniq, inverse = np.unique(masks, axis=0, return_inverse=True)
        keys = [row.tobytes() for row in uniq]
        new = np.asarray([i for i, key in enumerate(keys) if key not in self.cache], dtype=np.int64)
        step = max(1, CHUNK_VALUES // (self.cost * self.x.size))
        for start in range(0, len(new), step):
            idx = new[start: start + step]
            keep = uniq[idx].astype(bool)[:, None, :]
            rows = np.where(keep, self.x[None, None, :], self.refs[None, :, :]).reshape(-1, self.x.size)
            values = self.model(rows)[:, self.target].reshape(len(idx), self.cost).mean(axis=1)
            self.cache.update({keys[i]: float(v) for i, v in zip(idx, values)})
        per_unique = np.asarray([self.cache[key] for key in keys], dtype=np.float64)
        return per_unique[np.asarray(inverse).reshape(-1)]


def _masks_of(sets: Sequence[tuple], n_features: int) -> np.ndarray:
    masks = np.zeros((len(sets), n_features), dtype=np.uint8)
    for row, s in enumerate(sets):
        masks[row, list(s)] = 1
    return masks


# ----------------------------------------------------------------------------- LIME
class Discretizer:
    """Cuts each column of ``background`` at its percentiles (duplicates merged); per bin: the background's
    frequency, mean, standard deviation, min and max, for drawing values back inside a bin."""

    def __init__(self, background: np.ndarray, percentiles: Sequence[float], names: Sequence[str]):
        self.cuts = [np.unique(np.percentile(col, percentiles)) for col in background.T]
        width = max(len(c) for c in self.cuts) + 1
        n = background.shape[1]
        self.freq, self.mean, self.std = np.zeros((n, width)), np.zeros((n, width)), np.zeros((n, width))
        self.low, self.high = np.zeros((n, width)), np.zeros((n, width))
        bins = self.bins(background)
        for j, cuts in enumerate(self.cuts):
            col = background[:, j]
            self.low[j, : len(cuts) + 1] = np.concatenate([[col.min()], cuts])
            self.high[j, : len(cuts) + 1] = np.concatenate([cuts, [col.max()]])
            for b in range(len(cuts) + 1):
                inside = col[bins[:, j] == b]
                self.freq[j, b] = len(inside) / len(col)
                if len(inside):
                    self.mean[j, b], self.std[j, b] = inside.mean(), inside.std()
        self.std += 1e-11
        self.names = names

    def bins(self, rows: np.ndarray) -> np.ndarray:
        """Bin number (0 = at most the first cut) of each value, rows x features."""
        rows = np.atleast_2d(rows)
        return np.stack([np.searchsorted(c, rows[:, j]) for j, c in enumerate(self.cuts)], axis=1)

    def sample_bins(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n x features bins drawn independently per feature with the background's frequencies."""
        cum = np.cumsum(self.freq, axis=1)
        cum[:, -1] = 1.0
        u = rng.random((n, len(self.cuts)))
        return (u[:, :, None] > cum[None, :, :]).sum(axis=2)

    def values(self, rng: np.random.Generator, bins: np.ndarray) -> np.ndarray:
        """A value inside each given bin: normal(bin mean, bin std) truncated to the bin's [min, max]."""
        from scipy.stats import truncnorm

        j = np.broadcast_to(np.arange(len(self.cuts)), bins.shape)
        low, high, mean, std = (a[j, bins] for a in (self.low, self.high, self.mean, self.std))
        out = low.copy()  # a bin of one value
        spread = low < high
        if spread.any():
            lo, hi = (low[spread] - mean[spread]) / std[spread], (high[spread] - mean[spread]) / std[spread]
            out[spread] = truncnorm.rvs(lo, hi, loc=mean[spread], scale=std[spread], random_state=rng)
        return out

    def conditions(self, x: np.ndarray) -> list[str]:
        """The explained row's bin of each feature as text, e.g. '0.20 < x3 <= 0.52'."""
        out = []
        for name, cuts, b in zip(self.names, self.cuts, self.bins(x)[0]):
            if b == 0:
                out.append(f"{name} <= {cuts[0]:.2f}")
            elif b == len(cuts):
                out.append(f"{name} > {cuts[-1]:.2f}")
            else:
                out.append(f"{cuts[b - 1]:.2f} < {name} <= {cuts[b]:.2f}")
        return out


def _highest_weights(X, y, w, k, **_):
    """The lime package's 'highest_weights': ridge (alpha 0.01) on all features, the k largest
    |coefficient x the explained row's interpretable value|."""
    coef = fit_surrogate(X, y, w, "ridge", 0.01)[0]
    return np.argsort(-np.abs(coef * X[0]), kind="stable")[:k].astype(np.int64)


def _lime_samples(ctx: TableContext, n: int, discretize: bool, discretizer: str, around_instance: bool, names):
    """(interpretable n x F, model rows n x F, extras); row 0 is the explained row. A categorical column
    (``ctx.categorical``) is drawn from the background's categories with their frequencies (no code the
    background lacks) and read as "the row's category" (1/0), as the lime package does."""
    bg, x, rng = ctx.background, ctx.x, ctx.rng
    n_feat = x.size
    cat = ctx.categorical
    cont = np.setdiff1d(np.arange(n_feat), cat)
    huge = [names[j] for j in cont if max(np.abs(bg[:, j]).max(initial=0.0), abs(x[j])) > LIME_VALUE_LIMIT]
    if huge:
        raise ValueError(f"lime: the feature(s) {huge} hold values beyond {LIME_VALUE_LIMIT:.0e} in magnitude, where "
                         f"their spread overflows float64; rescale them (kernelshap and shapley take them as they are)")
    rows, interp = np.empty((n, n_feat)), np.empty((n, n_feat))
    if discretize:
        conditions = [""] * n_feat
        if len(cont):
            disc = Discretizer(bg[:, cont], DISCRETIZERS[discretizer], [names[j] for j in cont])
            bins = disc.sample_bins(rng, n)
            bins[0] = disc.bins(x[cont])[0]
            rows[:, cont] = disc.values(rng, bins)
            interp[:, cont] = bins == bins[0]
            for j, text in zip(cont, disc.conditions(x[cont])):
                conditions[j] = text
        extras = {"conditions": conditions}
    else:
        mean, scale = bg.mean(axis=0), bg.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)  # a constant column: unit scale, as StandardScaler
        mean[cat], scale[cat] = 0.0, 1.0  # as the lime package: categorical columns are their 1/0 indicator
        centre = x if around_instance else mean
        rows[:, cont] = rng.standard_normal((n, len(cont))) * scale[cont] + centre[cont]
        rows[0] = x
        interp[:, cont] = (rows[:, cont] - mean[cont]) / scale[cont]
        extras = {"mean": mean, "scale": scale}
    for j in cat:
        values, counts = np.unique(bg[:, j], return_counts=True)
        rows[:, j] = rng.choice(values, size=n, p=counts / counts.sum())
        rows[0, j] = x[j]
        interp[:, j] = rows[:, j] == x[j]
        if discretize:
            extras["conditions"][j] = f"{names[j]} = {x[j]:g}"
    rows[0] = x
    return interp, rows, extras


@_method("lime", "LIME for tables (the lime package's LimeTabularExplainer): weighted ridge over discretized "
                 "or standardized samples drawn from the background")
def lime(
    ctx: TableContext,
    *,
    num_samples: int = 5000,
    num_features: int | None = None,
    discretize: bool = True,
    discretizer: str = "quartile",
    sample_around_instance: bool = False,
    kernel_width: float | None = None,
    feature_selection: str = "auto",
    alpha: float = 1.0,
):
    """``num_samples`` samples, the row itself first (``budget`` caps them); ``num_features`` (None: all)
    kept by ``feature_selection`` ('auto': forward selection up to 6 features, else highest weights, as the
    lime package; 'none', 'forward', 'highest_weights', 'streak'), then the ridge is refitted on them.
    Weights are per interpretable unit: 'in the row's bin' (discretized) or one background standard deviation
    (continuous). ``alpha``: the ridge penalty (>= 0; None: 1). ``kernel_width``: > 0 (None: 0.75 sqrt(F)).
    ``extras``: ``r2``, ``intercept``, ``local_prediction``, ``conditions`` (discretized)."""
    n = _check_int(num_samples, "num_samples", 2, "samples", none_ok=False)
    discretize = check_bool(discretize, "discretize")
    sample_around_instance = check_bool(sample_around_instance, "sample_around_instance")
    if not isinstance(discretizer, str) or discretizer not in DISCRETIZERS:
        raise ValueError(f"discretizer: unknown {discretizer!r}; choose one of {sorted(DISCRETIZERS)}")
    if not isinstance(feature_selection, str) or feature_selection not in LIME_SELECTIONS:
        raise ValueError(f"feature_selection: unknown {feature_selection!r}; choose one of {LIME_SELECTIONS}")
    k = _check_int(num_features, "num_features", 1, "features kept")
    width = (0.75 * math.sqrt(ctx.n_features) if kernel_width is None
             else check_positive("kernel_width", kernel_width))
    alpha = 1.0 if alpha is None else check_positive("alpha", alpha, allow_zero=True)
    remaining = ctx.remaining()
    if remaining is not None:
        n = min(n, remaining + 1)  # row 0 is the explained row, already scored
        if n < 2:
            raise ValueError(f"budget: {ctx.budget} evaluations leave no room for LIME samples")
    warn_few_samples(n, ctx.n_features, option="num_samples")
    interp, rows, extras = _lime_samples(ctx, n, discretize, discretizer, sample_around_instance, ctx.feature_names)
    y = np.concatenate([[ctx.score], ctx.model(rows[1:])[:, ctx.target]])
    d = np.linalg.norm(interp - interp[0], axis=1)
    with np.errstate(over="ignore"):  # (d / width)^2: no overflow for huge widths
        w = np.sqrt(np.exp(-((d / width) ** 2)))
    used = np.arange(ctx.n_features)
    if k is not None and k < ctx.n_features and feature_selection != "none":
        mode = feature_selection if feature_selection != "auto" else ("forward" if k <= 6 else "highest_weights")
        if mode == "highest_weights":
            used = _highest_weights(interp, y, w, k)
        else:
            from .methods.streak import select_streak  # noqa: F401  (registers 'streak' in SELECTIONS)

            alpha_sel = 0.0 if mode == "forward" else None  # the lime package's forward selection: no penalty
            used = np.asarray(SELECTIONS[mode](interp, y, w, k, alpha=alpha_sel, rng=ctx.rng, seed=ctx.seed), np.int64)
    coef, intercept, r2 = fit_surrogate(interp[:, used], y, w, "ridge", alpha)
    weights = np.zeros(ctx.n_features)
    weights[used] = coef
    extras.update(r2=r2, intercept=intercept, local_prediction=float(intercept + interp[0, used] @ coef),
                  n_samples=n, kernel_width=width, base_value=intercept)
    if len(used) < ctx.n_features:
        extras["selected"] = [int(i) for i in used]
    return weights, extras


# ----------------------------------------------------------------------------- KernelSHAP
@_method("kernelshap", "KernelSHAP: Shapley-kernel weighted linear fit over coalitions of features, "
                       "efficiency exact; every coalition when they fit in n_samples")
def kernelshap(ctx: TableContext, *, n_samples: int | None = None, baseline="mean", n_background: int = 50,
               paired: bool = True):
    """``n_samples`` coalitions (default 2M + 2048, as the shap package, M the varying features below); when
    all 2^M - 2 proper coalitions fit in it (M <= 11 by default) every one is evaluated with its exact kernel
    weight, which gives the exact Shapley values; else they are drawn by the kernel (``paired`` with
    complements). A feature whose hidden value equals the row's own in every reference row (x_i = mean_i, a
    constant column, every drawn background row holding x_i) changes no score: its Shapley value is exactly
    0, and it is given 0 and left out of the fit, as shap does with non-varying features. The weights sum
    exactly to f(all) - f(none). ``extras``: ``base_value`` (= f(none)), ``f_all``, ``r2``, ``exact``,
    ``n_samples``, ``fixed_features`` (the features left out)."""
    n_feat = ctx.n_features
    total = _check_int(n_samples, "n_samples", 1, "coalitions")
    paired = check_bool(paired, "paired")
    f = ctx.coalitions(baseline, n_background)
    vary = np.flatnonzero(~f.fixed)
    m = len(vary)
    total = 2 * m + 2048 if total is None else total

    def g(z: np.ndarray) -> np.ndarray:  # f of coalitions of the varying features (the fixed ones present)
        full = np.ones((len(z), n_feat), dtype=np.uint8)
        full[:, vary] = z
        return f(full)

    remaining = ctx.remaining()
    if remaining is not None and m >= 1 and remaining < (2 if m > 1 else 1) * f.cost:
        raise ValueError(f"budget: {ctx.budget} evaluations leave no room for KernelSHAP (it needs at least "
                         f"{ctx.model.n_evals + (2 if m > 1 else 1) * f.cost}: the row, f(none)"
                         f"{' and one coalition' if m > 1 else ''})")
    f_none = float(g(np.zeros((1, m), np.uint8))[0])  # no evaluation when m = 0: it is the row itself
    proper = 2**m - 2  # coalitions besides the empty and the full one
    exact = proper <= total and (remaining is None or (remaining - f.cost) // f.cost >= proper)
    if m <= 1:  # one varying feature: all of the change is its own
        z, sub, r2 = np.zeros((0, m)), np.full(m, ctx.score - f_none), float("nan")
    else:
        if exact:  # every coalition, each with its kernel weight
            z = ((np.arange(1, proper + 1)[:, None] >> np.arange(m)) & 1).astype(np.uint8)
            y, w = g(z), shapley_kernel(z.sum(axis=1), m)
        else:  # drawn chunk by chunk: coalitions that repeat cost nothing and buy more samples
            zs, ys = [], []
            for size in budget_chunks(ctx, total, f.cost, 0, 1 << 14):
                zs.append(sample_coalitions(ctx.rng, size, m, paired))
                ys.append(g(zs[-1]))
            z, y = np.concatenate(zs), np.concatenate(ys)
            w = np.ones(len(z))
        sub = constrained_fit(z, y, w, f_none, ctx.score)
        r2 = weighted_r2(y, f_none + z @ sub, w)
    phi = np.zeros(n_feat)
    phi[vary] = sub
    return phi, {"base_value": f_none, "f_all": ctx.score, "r2": float(r2), "exact": bool(exact),
                 "n_samples": len(z), "coalitions_evaluated": len(f.cache) - 1,
                 "fixed_features": [int(i) for i in np.flatnonzero(f.fixed)]}


# ----------------------------------------------------------------------------- Shapley value sampling
@_method("shapley", "Shapley value sampling: mean score change of each feature joining random permutations, "
                    "with standard errors")
def shapley(ctx: TableContext, *, n_permutations: int | None = None, baseline="mean", n_background: int = 50):
    """``n_permutations`` random orders of the features (default 100; with a ``budget`` and no number, as
    many as fit, counting F - 1 new coalitions per permutation; repeated coalitions are evaluated once and
    the savings buy more). Each permutation's changes sum to f(all) - f(none). ``extras``: ``stderr`` per
    feature (NaN with one permutation), ``n_permutations``, ``base_value`` (= f(none)), ``f_all``."""
    n_feat = ctx.n_features
    total = _check_int(n_permutations, "n_permutations", 1, "permutations")
    if total is None:
        total = 100 if ctx.budget is None else None
    if n_feat == 1:
        total = 1
    f = ctx.coalitions(baseline, n_background)
    cap = max(1, CHUNK_VALUES // ((n_feat + 1) * n_feat))
    draws = []
    for size in budget_chunks(ctx, total, (n_feat - 1) * f.cost, f.cost, cap):
        perms = ctx.rng.permuted(np.tile(np.arange(n_feat), (size, 1)), axis=1)
        scores = f(permutation_masks(perms).reshape(-1, n_feat)).reshape(size, n_feat + 1)
        draws.append(marginal_contributions(perms, scores))
    if not draws:
        raise ValueError(
            f"budget: {ctx.budget} evaluations leave no room for one permutation over {n_feat} features "
            f"(it needs at least {ctx.model.n_evals + n_feat * f.cost}: the row, f(none) and {n_feat - 1} "
            "coalitions)"
        )
    draws = np.concatenate(draws)
    m = len(draws)
    stderr = draws.std(axis=0, ddof=1) / math.sqrt(m) if m > 1 else np.full(n_feat, np.nan)
    f_none = float(f(np.zeros((1, n_feat)))[0])  # cached: every permutation starts from it
    return draws.mean(axis=0), {"stderr": stderr, "n_permutations": m, "base_value": f_none, "f_all": ctx.score}


# ----------------------------------------------------------------------------- STREAK
@_method("streak", "STREAK: streaming weak submodular selection of the k features that keep the target's score")
def streak(ctx: TableContext, *, k: int = 5, eps: float = 0.7, baseline="mean", n_background: int = 50,
           lookahead: int = 1):
    """At most ``k`` features chosen by :func:`unveil.streak.streak` over f(S) - f(empty), features arriving
    in a seeded random order; ``eps`` in (0, 1) spaces the thresholds (smaller: finer, more evaluations).
    Weights: each chosen feature's marginal gain in selection order, 0 elsewhere. ``extras``: ``selected``
    (in order), ``gains``, ``value``, ``base_value`` (= f(empty)), ``singleton_gains`` (NaN: not reached)."""
    k = _check_int(k, "k", 1, "features to select", none_ok=False)
    f = ctx.coalitions(baseline, n_background)
    remaining = ctx.remaining()
    calls = None if remaining is None else remaining // f.cost
    if calls is not None and calls < 2:
        raise ValueError(f"budget: {ctx.budget} evaluations leave no room for STREAK (it needs at least "
                         f"{ctx.model.n_evals + 2 * f.cost}: the row, f(empty) and one feature's)")
    order = ctx.rng.permutation(ctx.n_features).tolist()
    res = run_streak(lambda sets: f(_masks_of(sets, ctx.n_features)), order, k, eps, budget=calls,
                     lookahead=lookahead)
    weights = np.zeros(ctx.n_features)
    chosen = [int(u) for u in res.selected]
    if not chosen:
        why = (f"the budget stopped the stream after {res.n_seen} of {ctx.n_features} features" if res.stopped
               else "no feature raised the target's score over the baseline's enough to be kept")
        warnings.warn(f"streak: {why}, so every weight is 0 (see extras['singleton_gains']); try another "
                      "baseline" + (" or a larger budget" if res.stopped else ""), UserWarning, stacklevel=4)
    weights[chosen] = res.gains
    singles = np.full(ctx.n_features, np.nan)
    for u, gain in res.singletons:
        singles[int(u)] = gain
    return weights, {"selected": chosen, "gains": [float(g) for g in res.gains], "value": float(res.value),
                     "base_value": float(res.empty_value), "oracle_calls": int(res.oracle_calls),
                     "n_seen": int(res.n_seen), "stopped": bool(res.stopped), "lookahead": int(res.lookahead),
                     "singleton_gains": singles}


# ----------------------------------------------------------------------------- the entry point
def explain_tabular(
    model_fn,
    x,
    background=None,
    method: str = DEFAULT_TABULAR_METHOD,
    target: int | str | None = None,
    *,
    feature_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    budget: int | None = None,
    batch_size: int | None = None,
    progress: bool = True,
    categorical_features: Sequence[int | str] | None = None,
    **options,
) -> Explanation:
    """Explain ``model_fn``'s score for output ``target`` on the row ``x``, one weight per feature.

    ``model_fn``: a callable taking rows (N x F float64 numpy) and returning N x outputs scores (class
    probabilities, e.g. a scikit-learn ``predict_proba``, are explained as they are), or N values (a
    regression: one output, target 0); also an estimator with ``predict_proba`` (else ``predict``), a torch
    module taking N x F float32 tensors (its raw outputs), or a :class:`unveil.Model` (its probabilities).
    When ``background`` is a pandas DataFrame the rows reach the model as DataFrames with its columns; when
    ``x`` (a Series or one-row DataFrame) carries column names too, its values are matched to the background's
    columns by name (other names: ValueError).
    ``x``: one row (F values). ``background``: rows x F, the data perturbations draw from and hidden features
    come from. ``target``: output number or class name; the top output when None. ``feature_names``: default
    the DataFrame's columns, else x0..x{F-1}. ``class_names``: default the estimator's ``classes_`` or the
    Model's labels. ``budget``: the most model evaluations (rows), the row itself included.
    ``batch_size``: the most rows in one call of the model (default: a ``unveil.Model``'s own int
    batch size, else 4096). ``progress``: a bar of the rows
    evaluated, on a terminal (stderr), while the method runs. ``categorical_features``: the columns (indices
    or names) that hold category codes: LIME draws them from the background's categories with their
    frequencies and reads them as "the row's category" (1/0), ``baseline="mean"`` hides them at the
    background's most frequent value; no method then sends the model a code the background lacks (the row's
    own excepted). Other keyword arguments are the method's options (:data:`TABULAR_METHODS`, README "Tables").
    """
    t0 = time.perf_counter()
    if not isinstance(method, str) or method not in TABULAR_METHODS:
        raise ValueError(f"unknown method {method!r}; available: {', '.join(tabular_methods())}")
    spec = TABULAR_METHODS[method]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"method {method!r} has no option {', '.join(map(repr, unknown))}; its options are: "
                         f"{', '.join(sorted(spec.options))}")
    seed = _check_int(seed, "seed", 0, "the random seed", none_ok=False)
    budget = _check_int(budget, "budget", 2, "model evaluations")
    fn, names, model_bs, name = _model_function(model_fn)
    x, background, feature_list, frame = _check_inputs(x, background, feature_names)
    categorical = _check_categorical(categorical_features, feature_list, frame[1] if frame is not None else None)
    bs = _check_int(batch_size, "batch_size", 1, "rows per call") or model_bs or DEFAULT_BATCH_ROWS
    model = TableModel(fn, bs, budget, name="model_fn" if name in ("", "<lambda>") else name, frame=frame,
                       progress=progress, desc=method)
    try:
        return _explain_row(model, spec, method, x, background, feature_list, target, class_names, names, seed,
                            budget, options, t0, categorical)
    finally:
        model.close()


def _explain_row(model, spec, method, x, background, feature_list, target, class_names, names, seed, budget,
                 options, t0, categorical=()) -> Explanation:
    """The body of :func:`explain_tabular` once the inputs are checked and the model is wrapped."""
    scores = model(x[None, :])[0]
    if class_names is not None:
        names = [str(c) for c in class_names]
        if len(names) != len(scores):
            raise ValueError(f"class_names: {len(names)} names for a model with {len(scores)} outputs")
    elif names is not None and len(names) != len(scores):
        names = None
    target_idx = _target_index(target, len(scores), names, scores)
    ctx = TableContext(model, x, background, feature_list, target_idx, scores, seed, budget, categorical)
    weights, extras = spec.fn(ctx, **options)
    if budget is not None and model.n_evals > budget:  # a method bug, never a user error
        raise RuntimeError(f"method {method!r} spent {model.n_evals} evaluations, over its budget of {budget}")
    weights = np.asarray(weights, dtype=np.float64)
    if weights.size > 1 and np.ptp(weights) == 0 and not (method == "streak" and not extras.get("selected")):
        same = "all 0" if not np.any(weights) else f"all equal ({weights[0]:.4g})"
        warnings.warn(f"{method}: the weights are {same}, so they rank no feature: nothing the method measures "
                      f"changed. A model whose output ignores these features, a saturated output, a background "
                      f"equal to the row, or too few samples (a small budget) do this", UserWarning, stacklevel=3)
    label = names[target_idx] if names is not None else ("output" if len(scores) == 1 else f"class {target_idx}")
    params = {**spec.options, **options, "budget": budget, "n_background_rows": len(background),
              "categorical_features": [int(j) for j in categorical] or None}
    return Explanation(
        map=weights.astype(np.float32),
        target=target_idx,
        label=label,
        score=float(scores[target_idx]),
        method=method,
        params=params,
        seed=seed,
        n_evals=model.n_evals,
        seconds=time.perf_counter() - t0,
        weights=weights,
        extras={**extras, "scores": scores},
        kind="tabular",
        feature_names=feature_list,
        values=x,
    )


# ----------------------------------------------------------------------------- CSV files
_LIBSVM_ITEM = re.compile(r"\s\d+:\S")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_csv(path: str | Path, label_column: str | None = None, header: bool = True) -> tuple[np.ndarray, list[str]]:
    """Read a CSV file whose first row names the columns and whose other rows are numbers.

    Returns (rows x features float64, feature names); ``label_column`` (a name) is dropped. With
    ``header=False`` every line is data and the columns are named x0, x1, ...; a header whose every cell is a
    number is read as names, with a warning (the file probably has none). ValueError names the file, the line
    and the column of anything that is not a finite number (an empty cell, a word, nan, inf), and repeated
    column names. The file is UTF-8 (a byte-order mark, as Excel writes, is dropped); other bytes are a
    ValueError naming the file and the line.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a folder, not a CSV file")
    if not p.is_file():
        raise ValueError(f"no such CSV file: {p}")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        start = err.start + (len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0)
        line = raw.count(b"\n", 0, start) + 1
        raise ValueError(f"{p}, line {line}: byte 0x{raw[start]:02x} is not UTF-8; save the file as UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    first = next(reader, None)
    if not first:
        raise ValueError(f"{p}: empty file; the first row must name the columns")
    if len(first) == 1 and _LIBSVM_ITEM.search(first[0]):
        raise ValueError(f"{p}: looks like a libsvm file (index:value pairs), not a CSV; read it with "
                         f"unveil.tabular.load_libsvm")
    rows = []
    if header:
        names = [h.strip() for h in first]
        seen: set[str] = set()
        repeated = sorted({n for n in names if n in seen or seen.add(n)})
        if repeated:
            raise ValueError(f"{p}: the header names the columns {repeated} more than once; give each its own name")
        if all(_is_number(h) for h in names):
            warnings.warn(f"{p}: the first line ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}) holds "
                          f"only numbers and was read as the column names; if the file has no header line, pass "
                          f"header=False (unveil explain-table --no-header)", UserWarning, stacklevel=2)
    else:
        names = [f"x{j}" for j in range(len(first))]
        rows.append((1, first))
    for row in reader:
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(names):
            raise ValueError(f"{p}, line {reader.line_num}: {len(row)} values for {len(names)} columns")
        rows.append((reader.line_num, row))
    drop = None
    if label_column is not None:
        if label_column not in names:
            raise ValueError(f"--label-column {label_column!r}: no such column; the columns are {names}")
        drop = names.index(label_column)
    keep = [j for j in range(len(names)) if j != drop]
    if not rows:
        raise ValueError(f"{p}: no data rows under the header")
    data = np.empty((len(rows), len(keep)), dtype=np.float64)
    for i, (lineno, row) in enumerate(rows):
        for c, j in enumerate(keep):
            try:
                data[i, c] = float(row[j])
            except ValueError:
                raise ValueError(
                    f"{p}, line {lineno}, column {names[j]!r}: {row[j]!r} is not a number"
                ) from None
            if not math.isfinite(data[i, c]):
                raise ValueError(f"{p}, line {lineno}, column {names[j]!r}: {row[j].strip()!r} is not a finite "
                                 f"number (the methods need every value)")
    return data, [names[j] for j in keep]
