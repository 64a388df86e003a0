"""STREAK: streaming maximization of a (weakly) submodular set function under a cardinality constraint.

Elenberg, Dimakis, Feldman & Karbasi, "Streaming Weak Submodularity: Interpreting Neural Networks on the Fly",
NeurIPS 2017 (arXiv 1703.02647). Elements arrive one at a time and are seen once. ``ThresholdGreedy(k, tau)``
keeps an element when its set still has room and the element's marginal gain is at least ``tau / k``. STREAK
runs one ThresholdGreedy per threshold ``tau = (1 - eps)^i`` inside ``[(1 - eps) m / (9 k^2), m k]``, where ``m``
is the largest singleton gain seen so far: instances whose threshold falls below the range are dropped and new
ones are opened at the top as ``m`` grows, so at most ``2 - ln(9 k^3) / ln(1 - eps)`` are live at once.

Everything here is generic: elements are any hashable values and the set function is a **batched oracle**,
``f(sets) -> values`` with ``sets`` a list of tuples of elements (in selection order), so that all the marginal
gains the live instances need for one arriving element are asked for in a single call (an image model runs one
batched forward pass per element). ``oracle_calls`` counts the sets evaluated (distinct sets per call; the empty
set once). Plain greedy forward selection and random selection are here as baselines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Sequence

import numpy as np

__all__ = [
    "SelectionResult",
    "ThresholdGreedy",
    "threshold_greedy",
    "streak",
    "greedy",
    "random_selection",
    "max_live_instances",
]

#: The most STREAK instances (thresholds) :func:`streak` accepts: ``eps`` must be large enough for
#: ``max_live_instances(k, eps)`` to stay under it (a smaller eps only spends memory and oracle calls).
MAX_INSTANCES = 100_000

#: A batched set function: a list of sets (tuples of elements) -> one value per set.
SetFunction = Callable[[list], Sequence[float]]


@dataclass(frozen=True)
class SelectionResult:
    """What a selection algorithm returns.

    ``selected``: the chosen elements in selection order. ``gains``: the marginal gain of each when it was
    chosen (they sum to ``value``). ``value``: f(selected) - f(empty set). ``empty_value``: f(empty set).
    ``oracle_calls``: sets evaluated. ``n_seen``: stream elements processed: fewer than the stream when a budget
    stopped it (then ``stopped`` is True) or when a single ThresholdGreedy's set filled; greedy and random
    selection report every element. ``history``: live STREAK instances after each element (empty for
    the baselines). ``calls_per_element``: sets evaluated in each oracle call: one per element (STREAK with
    ``lookahead`` 1), per window of elements plus re-asked queries (``lookahead`` > 1), or per round (greedy).
    ``threshold``: the winning instance's tau (None for a singleton, greedy or random). ``method``: its name.
    ``singletons``: STREAK's (element, f({element}) - f(empty)) for every element seen, in arrival order (it
    evaluates every singleton anyway, to track the largest). ``lookahead``: the one STREAK used (1 under a
    budget, whatever was asked).
    """

    selected: tuple
    gains: tuple
    value: float
    empty_value: float
    oracle_calls: int
    n_seen: int
    stopped: bool = False
    history: tuple = ()
    calls_per_element: tuple = ()
    threshold: float | None = None
    method: str = "streak"
    singletons: tuple = ()
    lookahead: int = 1

    @property
    def max_live(self) -> int:
        """The most STREAK instances that were live at once (0 for the baselines)."""
        return max(self.history, default=0)


def max_live_instances(k: int, eps: float) -> float:
    """The bound on live STREAK instances, ``2 - ln(9 k^3) / ln(1 - eps)`` (the threshold range spans a factor
    of ``9 k^3 / (1 - eps)`` and thresholds are spaced by ``1 - eps``)."""
    k, eps = _check_k(k), _check_eps(eps)
    return 2.0 - math.log(9.0 * k**3) / math.log(1.0 - eps)


# ----------------------------------------------------------------------------- checks and the oracle
def _check_k(k) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive int (the most elements to select), got {k!r}")
    return int(k)


def _check_eps(eps) -> float:
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.floating, np.integer)):
        raise ValueError(f"eps: expected a number in (0, 1), got {eps!r}")
    if not 0.0 < float(eps) < 1.0:
        raise ValueError(f"eps: expected a number in (0, 1), got {eps!r}")
    return float(eps)


def _check_budget(budget) -> int | None:
    if budget is None:
        return None
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)) or budget < 0:
        raise ValueError(f"budget: expected a non-negative int (oracle calls) or None, got {budget!r}")
    return int(budget)


class _Oracle:
    """Counts sets evaluated, dedupes sets within a call, validates what ``f`` returns."""

    def __init__(self, f, batched: bool, budget: int | None):
        if not callable(f):
            raise TypeError(f"f: expected a callable set function, got {type(f).__name__}")
        self.f = f
        self.batched = bool(batched)
        self.budget = _check_budget(budget)
        self.calls = 0

    def affordable(self, n: int) -> bool:
        return self.budget is None or self.calls + n <= self.budget

    def __call__(self, sets: list[tuple]) -> np.ndarray:
        if not sets:
            return np.zeros(0, dtype=np.float64)
        if self.batched:
            out = self.f(list(sets))
        else:
            out = [self.f(s) for s in sets]
        try:
            values = np.asarray(out, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise TypeError("f: must return numbers (one value per set)") from None
        if values.shape[0] != len(sets):
            raise ValueError(f"f: returned {values.shape[0]} values for {len(sets)} sets")
        if not np.all(np.isfinite(values)):
            raise ValueError("f: returned a non-finite value")
        self.calls += len(sets)
        return values


def _empty(oracle: _Oracle, empty_value) -> float:
    if empty_value is not None:
        v = float(empty_value)
        if not math.isfinite(v):
            raise ValueError(f"empty_value: expected a finite number, got {empty_value!r}")
        return v
    if not oracle.affordable(1):
        raise ValueError(f"budget: {oracle.budget} oracle calls leave no room to evaluate the empty set")
    return float(oracle([()])[0])


def _elements(stream, name: str = "stream") -> list:
    if isinstance(stream, (str, bytes)) or not isinstance(stream, Iterable):
        raise TypeError(f"{name}: expected an iterable of hashable elements, got {type(stream).__name__}")
    items = list(stream)
    seen: set = set()
    for u in items:
        if not isinstance(u, Hashable):
            raise TypeError(f"{name}: elements must be hashable, got {type(u).__name__}")
        if u in seen:
            raise ValueError(f"{name}: element {u!r} appears twice")
        seen.add(u)
    return items


# ----------------------------------------------------------------------------- ThresholdGreedy
class ThresholdGreedy:
    """One threshold instance: keep ``u`` when ``|S| < k`` and ``f(u | S) >= tau / k``.

    It holds its set, the gains and the raw f(S); the caller feeds it gains (so that many instances can share
    one batched oracle call).
    """

    __slots__ = ("k", "tau", "selected", "gains", "raw")

    def __init__(self, k: int, tau: float, empty_value: float = 0.0):
        self.k = _check_k(k)
        if not (isinstance(tau, (int, float, np.floating, np.integer)) and math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau: expected a positive finite number, got {tau!r}")
        self.tau = float(tau)
        self.selected: list = []
        self.gains: list[float] = []
        self.raw = float(empty_value)  # f(S)

    @property
    def has_room(self) -> bool:
        return len(self.selected) < self.k

    def query(self, u) -> tuple:
        """The set whose value decides on ``u``: S + (u,)."""
        return (*self.selected, u)

    def offer(self, u, value_with_u: float) -> bool:
        """Decide on ``u`` given f(S + u); return whether it was kept."""
        if not self.has_room:
            return False
        gain = float(value_with_u) - self.raw
        if gain >= self.tau / self.k:
            self.selected.append(u)
            self.gains.append(gain)
            self.raw = float(value_with_u)
            return True
        return False


def threshold_greedy(
    f: SetFunction,
    stream: Iterable,
    k: int,
    tau: float,
    *,
    batched: bool = True,
    budget: int | None = None,
    empty_value: float | None = None,
) -> SelectionResult:
    """Run a single ThresholdGreedy(k, tau) over ``stream`` (one oracle call of one set per element)."""
    items = _elements(stream)
    oracle = _Oracle(f, batched, budget)
    f0 = _empty(oracle, empty_value)
    inst = ThresholdGreedy(k, tau, f0)
    calls, n_seen, stopped = [], 0, False
    for u in items:
        if not inst.has_room:
            break
        if not oracle.affordable(1):
            stopped = True
            break
        inst.offer(u, oracle([inst.query(u)])[0])
        calls.append(1)
        n_seen += 1
    return SelectionResult(tuple(inst.selected), tuple(inst.gains), inst.raw - f0, f0, oracle.calls, n_seen,
                           stopped, (), tuple(calls), inst.tau, "threshold_greedy")


# ----------------------------------------------------------------------------- STREAK
def _threshold_range(m: float, k: int, eps: float) -> tuple[int, int]:
    """Exponents i (tau = (1 - eps)^i) with (1 - eps) m / (9 k^2) <= tau <= m k; empty when lo > hi."""
    q, m = 1.0 - eps, float(m)
    with np.errstate(over="ignore", under="ignore"):
        hi, lo = m * k, q * m / (9.0 * k * k)
    if not (math.isfinite(hi / q) and lo > 0.0):
        raise ValueError(f"streak: a singleton gain of {m!r} puts the thresholds [{lo!r}, {hi!r}] outside the "
                         "range of floats; rescale the set function (e.g. to probabilities or log-likelihoods)")
    lq = math.log(q)
    i_min = math.ceil(math.log(hi) / lq)
    while q**i_min > hi:  # guard the float rounding of the logarithms with the exact comparisons
        i_min += 1
    while q ** (i_min - 1) <= hi:
        i_min -= 1
    i_max = math.floor(math.log(lo) / lq)
    while q**i_max < lo:
        i_max -= 1
    while q ** (i_max + 1) >= lo:
        i_max += 1
    return i_min, i_max


def streak(
    f: SetFunction,
    stream: Iterable,
    k: int,
    eps: float = 0.7,
    *,
    batched: bool = True,
    budget: int | None = None,
    empty_value: float | None = None,
    lookahead: int = 1,
    on_element: Callable[[], None] | None = None,
) -> SelectionResult:
    """STREAK over ``stream`` (elements in arrival order; each seen once): at most ``k`` elements.

    ``f``: batched oracle ``f(list of tuples) -> values`` (``batched=False``: ``f(tuple) -> value``), meant
    monotone and normalized; gains are taken relative to f(empty set), which is evaluated once unless
    ``empty_value`` gives it. ``eps`` in (0, 1): threshold spacing (smaller = more instances, better value,
    more oracle calls; at most :data:`MAX_INSTANCES` instances, so eps >= 7.1e-5 for k = 5). ``budget``: the
    most oracle calls (sets evaluated); the stream stops before an element whose batch would exceed it.
    ``lookahead``: elements whose queries go in one oracle call (under the instances' sets before the window;
    a query a decision inside the window changed is asked again): the same decisions in fewer, larger calls,
    for some more sets. Under a ``budget`` it is 1, so that no budget goes to sets that are asked again.
    Returns the best set among the instances (also those dropped on the way) or the best singleton, whichever
    is larger. Deterministic: the result depends only on ``f`` and the order. ``on_element``: called with no
    argument after each element is processed (e.g. to move a progress bar).
    """
    k, eps = _check_k(k), _check_eps(eps)
    bound = max_live_instances(k, eps)
    if bound > MAX_INSTANCES:
        least = 1.0 - math.exp(-math.log(9.0 * k**3) / (MAX_INSTANCES - 2))
        scale = 10.0 ** math.floor(math.log10(least))
        least = math.ceil(least / scale * 10) / 10 * scale  # two digits, rounded up: the value itself passes
        raise ValueError(f"eps: {eps!r} with k = {k} would keep up to {bound:.4g} threshold instances "
                         f"(2 - ln(9 k^3) / ln(1 - eps)); the most allowed is {MAX_INSTANCES}, which needs "
                         f"eps >= {least:.2g}")
    if isinstance(lookahead, (bool, np.bool_)) or not isinstance(lookahead, (int, np.integer)) or lookahead < 1:
        raise ValueError(f"lookahead: expected a positive int (elements per oracle call), got {lookahead!r}")
    lookahead = int(lookahead) if budget is None else 1  # under a budget, speculative sets would spend it
    items = _elements(stream)
    oracle = _Oracle(f, batched, budget)
    f0 = _empty(oracle, empty_value)
    q = 1.0 - eps
    live: dict[int, ThresholdGreedy] = {}  # exponent i -> instance with tau = (1 - eps)^i
    m = 0.0
    best_single, best_single_gain = None, -math.inf
    best_dropped: ThresholdGreedy | None = None
    history, calls, n_seen, stopped = [], [], 0, False
    singles: list[tuple] = []

    def needed(u) -> dict:
        # the singleton (tracks m, feeds newly opened instances) and S + u of every instance with room;
        # instances holding the same set share its evaluation
        out: dict[frozenset, tuple] = {frozenset((u,)): (u,)}
        for i in sorted(live):
            inst = live[i]
            if inst.has_room:
                sq = inst.query(u)
                out.setdefault(frozenset(sq), sq)
        return out

    values: dict[frozenset, float] = {}
    pos = 0
    while pos < len(items) and not stopped:
        # one batched call for the next `lookahead` elements, under the instances' current sets; a set that
        # changes inside the window has its later queries asked again (below), so decisions are unchanged
        width = min(lookahead, len(items) - pos)
        while True:
            spec: dict[frozenset, tuple] = {}
            for u in items[pos : pos + width]:
                spec.update(needed(u))
            if oracle.affordable(len(spec)) or width == 1:
                break
            width -= 1
        values = {}
        if oracle.affordable(len(spec)):
            values = dict(zip(spec, oracle(list(spec.values()))))
            calls.append(len(spec))
        for u in items[pos : pos + width]:
            missing = {key: sq for key, sq in needed(u).items() if key not in values}
            if missing:
                if not oracle.affordable(len(missing)):
                    stopped = True
                    break
                values.update(zip(missing, oracle(list(missing.values()))))
                calls.append(len(missing))
            n_seen += 1
            if on_element is not None:
                on_element()
            single = values[frozenset((u,))] - f0
            singles.append((u, float(single)))
            if single > best_single_gain:
                best_single, best_single_gain = u, single
            if single > m:
                m = single
                i_min, i_max = _threshold_range(m, k, eps)
                for i in [i for i in live if i > i_max or i < i_min]:
                    gone = live.pop(i)
                    if best_dropped is None or gone.raw > best_dropped.raw:
                        best_dropped = gone
                for i in range(i_min, i_max + 1):
                    if i not in live:
                        live[i] = ThresholdGreedy(k, q**i, f0)
            for i in sorted(live):
                inst = live[i]
                if inst.has_room:
                    inst.offer(u, values[frozenset(inst.query(u))])
            history.append(len(live))
        pos += width

    best = None
    for i in sorted(live):  # highest threshold first; ties keep the first
        if best is None or live[i].raw > best.raw:
            best = live[i]
    if best_dropped is not None and (best is None or best_dropped.raw > best.raw):
        best = best_dropped
    if best_single_gain > 0 and (best is None or best_single_gain > best.raw - f0):
        sel, gains, value, tau = (best_single,), (best_single_gain,), best_single_gain, None
    elif best is not None:
        sel, gains, value, tau = tuple(best.selected), tuple(best.gains), best.raw - f0, best.tau
    else:
        sel, gains, value, tau = (), (), 0.0, None
    return SelectionResult(sel, gains, float(value), f0, oracle.calls, n_seen, stopped, tuple(history),
                           tuple(calls), tau, "streak", tuple(singles), lookahead)


# ----------------------------------------------------------------------------- baselines
def greedy(
    f: SetFunction,
    elements: Iterable,
    k: int,
    *,
    batched: bool = True,
    budget: int | None = None,
    empty_value: float | None = None,
) -> SelectionResult:
    """Greedy forward selection: ``k`` rounds, each adds the element of largest marginal gain (ties: first in
    ``elements``). One batched call per round over all remaining elements; a round that does not fit the
    ``budget`` is not started."""
    k = _check_k(k)
    items = _elements(elements, "elements")
    oracle = _Oracle(f, batched, budget)
    f0 = _empty(oracle, empty_value)
    selected, gains, raw, calls, stopped = [], [], f0, [], False
    for _ in range(min(k, len(items))):
        chosen = set(selected)
        rest = [u for u in items if u not in chosen]
        if not oracle.affordable(len(rest)):
            stopped = True
            break
        values = oracle([(*selected, u) for u in rest])
        calls.append(len(rest))
        j = int(np.argmax(values))
        selected.append(rest[j])
        gains.append(float(values[j]) - raw)
        raw = float(values[j])
    return SelectionResult(tuple(selected), tuple(gains), raw - f0, f0, oracle.calls, len(items), stopped, (),
                           tuple(calls), None, "greedy")


def random_selection(
    f: SetFunction,
    elements: Iterable,
    k: int,
    *,
    rng: np.random.Generator | int | None = 0,
    batched: bool = True,
    budget: int | None = None,
    empty_value: float | None = None,
) -> SelectionResult:
    """``k`` elements drawn uniformly without replacement (``rng``: a numpy Generator or a seed); its prefixes
    are evaluated in one call so the gains are reported (k oracle calls; fewer elements if ``budget`` is short)."""
    k = _check_k(k)
    items = _elements(elements, "elements")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    oracle = _Oracle(f, batched, budget)
    f0 = _empty(oracle, empty_value)
    n = min(k, len(items))
    if oracle.budget is not None:
        n = min(n, oracle.budget - oracle.calls)
    order = gen.permutation(len(items))[:n]
    chosen = tuple(items[j] for j in order)
    values = oracle([chosen[: i + 1] for i in range(n)])
    raws = np.concatenate([[f0], values])
    gains = tuple(float(g) for g in np.diff(raws))
    return SelectionResult(chosen, gains, float(raws[-1] - f0), f0, oracle.calls, len(items), n < min(k, len(items)),
                           (), (n,) if n else (), None, "random")
