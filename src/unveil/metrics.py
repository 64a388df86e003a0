"""Built-in evaluation of explanations: how faithful, how robust, how well localized.

Every metric is a small immutable object: configured once, it keeps no state between calls, says whether a
higher score is better, and returns a :class:`MetricResult` with its whole curve plus the score.

* :data:`deletion` / :data:`insertion` (RISE, Petsiuk et al. 2018): pixels ranked by the map (ties broken in a
  seeded random order) are removed (set to the explainer's baseline) or inserted (into a blurred copy of the
  input) a fixed number per step; the curve is the target probability after each step, the score its area
  (trapezoid rule over the fraction of pixels changed, [0, 1]). Every step of a curve goes through the shared
  :class:`~unveil.perturb.Perturber` in batches, at the model's input resolution.
* :data:`randomization` (Adebayo et al. 2018): re-explain with a deep copy of the model whose layers are
  randomized from the top down (cascading); Spearman rank correlation and SSIM of each map with the original.
* :data:`stability`: the same method under several seeds; mean pairwise Spearman correlation and top-k IoU.
* :data:`pointing_game`: does the map's maximum fall on the object (a mask or box, 15-pixel tolerance as in
  TorchRay)?

    from unveil import metrics
    res = metrics.deletion(model, image, exp)          # res.score: AUC, res.x / res.y: the curve
    res = metrics.Deletion(step=0.01)(model, image, exp)  # a configured copy
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .explanation import Explanation
from .images import check_drawn_for, resize
from .models.base import Model, as_model, module_lock
from .checks import MAX_SEED, check_bool, check_positive, check_seed
from .perturb import Perturber, make_baseline
from .segmentation import resize_labels

__all__ = [
    "MetricResult",
    "Deletion",
    "Insertion",
    "Randomization",
    "Stability",
    "PointingGame",
    "deletion",
    "insertion",
    "randomization",
    "stability",
    "pointing_game",
    "METRICS",
    "evaluate",
    "auc",
    "step_counts",
    "pixel_ranking",
    "spearman",
    "map_ssim",
    "top_iou",
    "random_explanation",
    "DEFAULT_DELETION_BASELINE",
]

#: baseline that deletion removes pixels to when the explanation's method has none (gradient methods, a map
#: made by hand): the image's mean colour, our analogue of RISE zeroing a mean-normalized input.
DEFAULT_DELETION_BASELINE = "mean"

#: the default step: 1/50 of the image's pixels per step.
DEFAULT_STEP = 1.0 / 50.0


# ----------------------------------------------------------------------------- the result type
@dataclass(frozen=True)
class MetricResult:
    """One metric on one explanation.

    ``score``: the number to compare (AUC, correlation, hit rate). ``higher_is_better``: its direction.
    ``x`` / ``y``: the whole curve (for deletion: fraction of pixels removed, target probability).
    ``details``: metric-specific values (per-layer SSIM, the baseline used, ...). ``n_evals``: model
    evaluations the metric spent.
    """

    name: str
    score: float
    higher_is_better: bool
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    x_label: str = ""
    y_label: str = ""
    details: dict = field(default_factory=dict)
    n_evals: int = 0

    def to_dict(self) -> dict:
        """JSON-ready values (arrays as lists)."""
        from .explanation import _jsonable

        return {  # strict JSON: NaN (an undefined score or point) is written as null
            "name": self.name,
            "score": _jsonable(float(self.score)),
            "higher_is_better": self.higher_is_better,
            "x": [_jsonable(float(v)) for v in np.asarray(self.x, dtype=np.float64).reshape(-1)],
            "y": [_jsonable(float(v)) for v in np.asarray(self.y, dtype=np.float64).reshape(-1)],
            "x_label": self.x_label,
            "y_label": self.y_label,
            "details": {k: (v.tolist() if isinstance(v, np.ndarray) else _jsonable(v))
                        for k, v in self.details.items()},
            "n_evals": int(self.n_evals),
        }


# ----------------------------------------------------------------------------- plain functions
def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under the curve ``y(x)`` by the trapezoid rule."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def step_counts(n_pixels: int, step: float | int = DEFAULT_STEP) -> np.ndarray:
    """Pixels changed after each step, from 0 to ``n_pixels``: 0, p, 2p, ..., n_pixels.

    ``step``: a fraction of the image in (0, 1] (``p = ceil(step * n_pixels)``) or an int number of pixels.
    """
    if isinstance(step, (bool, np.bool_)):
        raise TypeError(f"step: expected a fraction in (0, 1] or an int number of pixels, got {step!r}")
    if isinstance(step, (int, np.integer)):
        if step < 1:
            raise ValueError(f"step: expected a positive number of pixels, got {step!r}")
        per = int(step)
    elif isinstance(step, (float, np.floating)):
        if not 0.0 < step <= 1.0:
            raise ValueError(f"step: expected a fraction of the image in (0, 1], got {step!r}")
        per = max(1, math.ceil(float(step) * n_pixels - 1e-9))
    else:
        raise TypeError(f"step: expected a fraction in (0, 1] or an int number of pixels, got {type(step).__name__}")
    n_steps = math.ceil(n_pixels / per)
    return np.minimum(np.arange(n_steps + 1, dtype=np.int64) * per, n_pixels)


def pixel_ranking(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """H x W int64 rank of each pixel (0 = most important); equal values are ordered by ``rng``."""
    flat = np.asarray(saliency, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(flat)):
        raise ValueError("explanation map contains NaN or infinite values")
    perm = rng.permutation(flat.size)
    order = perm[np.argsort(-flat[perm], kind="stable")]
    rank = np.empty(flat.size, dtype=np.int64)
    rank[order] = np.arange(flat.size)
    return rank.reshape(np.shape(saliency))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (flattened); 1 when both are constant (they agree: neither ranks
    any pixel above another), 0 when only one is."""
    from scipy.stats import rankdata

    ra = rankdata(np.asarray(a, np.float64).reshape(-1))
    rb = rankdata(np.asarray(b, np.float64).reshape(-1))
    if ra.size != rb.size:
        raise ValueError(f"maps of different sizes: {np.shape(a)} and {np.shape(b)}")
    ra, rb = ra - ra.mean(), rb - rb.mean()
    va, vb = float(ra @ ra), float(rb @ rb)
    if va == 0 and vb == 0:
        return 1.0
    den = math.sqrt(va * vb)
    return float(ra @ rb) / den if den > 0 else 0.0


def _unit(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def map_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity of two maps after scaling each to [0, 1] (as in Adebayo et al.)."""
    from skimage.metrics import structural_similarity

    a, b = _unit(a), _unit(b)
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {a.shape} and {b.shape}")
    win = min(7, *a.shape)
    win = win if win % 2 else win - 1
    if win < 3:
        return float(np.allclose(a, b))
    return float(structural_similarity(a, b, data_range=1.0, win_size=win))


def top_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> float:
    """Intersection over union of the top ``fraction`` of pixels of two maps (ties in index order)."""
    n = max(1, int(round(fraction * np.size(a))))
    ta = np.argsort(-np.asarray(a, np.float64).reshape(-1), kind="stable")[:n]
    tb = np.argsort(-np.asarray(b, np.float64).reshape(-1), kind="stable")[:n]
    inter = len(np.intersect1d(ta, tb))
    return inter / (2 * n - inter)


def random_explanation(explanation: Explanation, seed: int = 0, cells: int | None = None) -> Explanation:
    """A copy of ``explanation`` with a uniform random map (the floor any method should beat).

    ``cells``: None draws one value per pixel (deletion then scatters removed pixels over the whole image,
    which hurts most models quickly); an int draws one value per cell of a grid of about that many cells
    (``segmentation.grid``), a random ranking of regions like those the methods find.
    """
    rng = np.random.default_rng(seed)
    if cells is None:
        m = rng.random(explanation.map.shape).astype(np.float32)
    else:
        from .segmentation import grid

        if isinstance(cells, bool) or not isinstance(cells, (int, np.integer)) or cells < 1:
            raise ValueError(f"cells: expected a positive int or None, got {cells!r}")
        labels = grid(*explanation.map.shape, int(cells))
        weights = rng.random(int(labels.max()) + 1).astype(np.float32)
        return Explanation(map=weights[labels], segments=labels, weights=weights, target=explanation.target,
                           label=explanation.label, score=explanation.score, method="random", params={},
                           seed=seed, image=explanation.image)
    return Explanation(map=m, target=explanation.target, label=explanation.label, score=explanation.score,
                       method="random", params={}, seed=seed, image=explanation.image)


def _check_explanation(explanation) -> Explanation:
    if not isinstance(explanation, Explanation):
        raise TypeError(f"explanation: expected a unveil.Explanation, got {type(explanation).__name__}")
    if np.ndim(explanation.map) != 2:
        raise ValueError(f"explanation: map must be 2-D, got shape {np.shape(explanation.map)}")
    if not np.all(np.isfinite(np.asarray(explanation.map, dtype=np.float64))):
        raise ValueError("explanation map contains NaN or infinite values")
    return explanation


def _check_metric_batch_size(value) -> None:
    if value is not None:  # None: the model's
        check_positive("batch_size", value, integer=True)


def check_fraction(name: str, value) -> float:
    """``value`` as a float; a ValueError naming ``name`` unless it is a number in (0, 1]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 < value <= 1.0:
        raise ValueError(f"{name}: expected a fraction in (0, 1], got {value!r}")
    return float(value)


def _inputs(model, image, explanation):
    """(Model, C x h x w input, h x w map at the input size, target)."""
    explanation = _check_explanation(explanation)
    model = as_model(model)
    if image is None:
        image = explanation.image
        if image is None:
            raise ValueError("image: the explanation keeps no image; pass the image explicitly")
    original, x = model.prepare(image)
    m = np.asarray(explanation.map, dtype=np.float32)
    (mh, mw), (ih, iw) = m.shape, original.shape[:2]
    if abs(mh * iw / mw - ih) > max(1.0, ih / mh):  # maps come at the image's resolution (or a multiple)
        raise ValueError(f"explanation: its map is {mh} x {mw} but the image is {ih} x {iw} (another shape); "
                         "pass the image it explains")
    size = tuple(x.shape[1:])
    if m.shape != size:
        m = resize(m, size, order=1)
    return model, x, m, explanation


def _target(model: Model, explanation: Explanation, target) -> int:
    if target is None:
        if explanation.target is None:
            raise ValueError("target: the explanation has none; pass target=")
        target = explanation.target
    return model.class_index(target)


def _target_scores(probs: np.ndarray, target: int, model: Model) -> np.ndarray:
    """Column ``target`` of a pass's probabilities; a ValueError when the model has fewer classes (an
    explanation made with another model)."""
    if target >= probs.shape[1]:
        raise ValueError(f"target {target} is out of range: model {model.name!r} has {probs.shape[1]} classes "
                         f"(0..{probs.shape[1] - 1}); was the explanation made with another model?")
    return probs[:, target]


# ----------------------------------------------------------------------------- deletion / insertion
@dataclass(frozen=True)
class _Causal:
    step: float | int = DEFAULT_STEP
    seed: int = 0
    batch_size: int | None = None
    progress: bool = True

    def __post_init__(self):
        step_counts(100, self.step)  # validates step
        check_seed(self.seed)
        _check_metric_batch_size(self.batch_size)
        check_bool(self.progress, "progress")

    name = "causal"
    higher_is_better = True
    _kind = "deletion"

    def _baseline(self, x: torch.Tensor, explanation: Explanation) -> tuple[torch.Tensor, str]:
        raise NotImplementedError

    def __call__(self, model, image=None, explanation: Explanation | None = None, *, target=None) -> MetricResult:
        """Curve and AUC of ``explanation`` on ``model`` (``image`` defaults to the explanation's own image).

        ``target``: class whose probability is recorded (default: the explanation's target).
        """
        if explanation is None:
            raise TypeError(f"{self.name}: missing the explanation to evaluate")
        model, x, saliency, explanation = _inputs(model, image, explanation)
        target = _target(model, explanation, target)
        rank = pixel_ranking(saliency, np.random.default_rng(self.seed))
        counts = step_counts(rank.size, self.step)
        baseline, used = self._baseline(x, explanation)
        perturber = Perturber(model, x, baseline, batch_size=self.batch_size, progress=self.progress,
                              desc=self.name)
        rank_t = torch.from_numpy(rank).to(x.device)
        deleting = self._kind == "deletion"
        ys: list[np.ndarray] = []

        def make(start: int, stop: int) -> torch.Tensor:  # the masks of steps start..stop-1
            c = torch.as_tensor(counts[start:stop], device=x.device)[:, None, None]
            return (rank_t[None] >= c) if deleting else (rank_t[None] < c)

        perturber.score_masks(make, len(counts), lambda masks, probs: ys.append(_target_scores(probs, target, model)))
        y = np.concatenate(ys)
        xs = counts / rank.size
        return MetricResult(
            name=self.name,
            score=auc(xs, y),
            higher_is_better=self.higher_is_better,
            x=xs.astype(np.float64),
            y=y.astype(np.float64),
            x_label=f"fraction of pixels {'removed' if deleting else 'inserted'}",
            y_label=f"p({model.label(target)})",
            details={"baseline": used, "pixels_per_step": int(counts[1] - counts[0]) if len(counts) > 1 else 0,
                     "target": target, "input_size": list(rank.shape)},
            n_evals=perturber.n_evals,
        )


@dataclass(frozen=True)
class Deletion(_Causal):
    """Deletion curve and AUC (lower is better): remove the most important pixels first.

    ``baseline``: what removed pixels become; None (default) takes the explanation's own baseline
    (``params['baseline']``) when its method has one, else :data:`DEFAULT_DELETION_BASELINE`.
    ``step``: pixels per step, as a fraction of the image (default 1/50) or an int. ``seed``: tie order.
    """

    baseline: object = None
    name = "deletion"
    higher_is_better = False
    _kind = "deletion"

    def given_baseline(self, x, size: tuple[int, int], explanation=None, key: str = "baseline"):
        """(baseline tensor, name) of the ``baseline`` given to this metric, for input ``x`` of a picture of
        ``size`` (h, w); a ValueError (naming ``key``) for an image of another picture or an unknown name."""
        check_drawn_for(self.baseline, size, tuple(x.shape[1:]), key)
        return self._make(x, self.baseline, explanation, strict=True)

    def _baseline(self, x, explanation):
        if self.baseline is not None:
            return self.given_baseline(x, explanation.map.shape, explanation)
        kind = explanation.params.get("baseline") if isinstance(explanation.params, dict) else None
        if kind is None:
            return self._make(x, DEFAULT_DELETION_BASELINE, explanation, strict=True)
        return self._make(x, kind, explanation, strict=False)

    @staticmethod
    def _make(x, kind, explanation, strict: bool):
        name = kind if isinstance(kind, str) else "image"
        try:
            if isinstance(kind, str) and kind == "segment_mean":
                if explanation.segments is None:
                    raise ValueError("baseline 'segment_mean' needs the explanation's segments")
                labels = resize_labels(np.asarray(explanation.segments), tuple(x.shape[1:]))  # every segment kept
                return make_baseline(x, kind, labels=labels), name
            return make_baseline(x, kind), name
        except (ValueError, TypeError):
            if strict:
                raise
            # a baseline that cannot be rebuilt (e.g. an array lost when the explanation was saved)
            return make_baseline(x, DEFAULT_DELETION_BASELINE), DEFAULT_DELETION_BASELINE


@dataclass(frozen=True)
class Insertion(_Causal):
    """Insertion curve and AUC (higher is better): insert the most important pixels first into a blurred copy.

    ``blur_sigma``: the blur in pixels of the model input (default 10 % of the shorter side, as
    ``make_baseline(x, 'blur')``). ``step``, ``seed``: as for :class:`Deletion`.
    """

    blur_sigma: float | None = None
    name = "insertion"
    higher_is_better = True
    _kind = "insertion"

    def __post_init__(self):
        super().__post_init__()
        if self.blur_sigma is not None:
            check_positive("blur_sigma", self.blur_sigma)

    def _baseline(self, x, explanation):
        return make_baseline(x, "blur", blur_sigma=self.blur_sigma), "blur"


# ----------------------------------------------------------------------------- model randomization
def _parametrized_layers(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Modules that hold parameters directly, in definition order."""
    return [(n, m) for n, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))]


def _in_call_order(model: Model, x: torch.Tensor, layers: list) -> list:
    """``layers`` (name, module) of ``model.fn`` sorted by when one forward pass of ``x`` (C x H x W) first
    calls them, input side first; layers the pass never calls come first (randomizing them changes nothing)."""
    first: dict = {}

    def seen(name):
        def hook(module, args):  # returns None: the inputs go on unchanged
            first.setdefault(name, len(first))
        return hook

    with module_lock(model.fn):  # no other thread's pass runs through these hooks
        handles = [m.register_forward_pre_hook(seen(n)) for n, m in layers]
        try:
            with torch.no_grad():
                model.forward(x.unsqueeze(0))  # torch's pass, also for a model whose others run on ONNX Runtime
        finally:
            for h in handles:
                h.remove()
    return sorted(layers, key=lambda nm: first.get(nm[0], -1))


def _copy_model(model: Model, module: torch.nn.Module) -> Model:
    mean = None if model._mean is None else model._mean.reshape(-1).tolist()
    std = None if model._std is None else model._std.reshape(-1).tolist()
    return Model(module, input_size=model.input_size, labels=model.labels, mean=mean, std=std,
                 outputs=model.outputs, batch_size=model.batch_size, channels_last=model.channels_last,
                 name=f"{model.name} (randomized)", eval_mode=model.eval_mode, channels=model.channels,
                 alpha=model.alpha, background=model.background, max_side=model.max_side)


def _explain_again(model, image, explanation: Explanation, seed: int, batch_size, progress: bool):
    from .api import explain
    from .methods.registry import get_method

    spec = get_method(explanation.method)
    params = explanation.params if isinstance(explanation.params, dict) else {}
    options = {k: v for k, v in params.items() if k in spec.options}
    budget = params.get("budget") if spec.uses_budget else None
    return explain(model, image, method=spec.name, target=explanation.target, seed=seed, budget=budget,
                   batch_size=batch_size, progress=progress, **options)


@dataclass(frozen=True)
class Randomization:
    """Model-randomization sanity check (cascading, top layer first); lower is better.

    Re-runs the explanation's method (same options, target, seed and budget) on deep copies of the model whose
    parameter-holding layers are re-drawn from N(0, std of the original tensor; 0.05 for a constant or
    one-element tensor), cumulatively from the output
    side (the order in which a forward pass calls them, found with one pass). ``max_steps``: the most
    re-explanations (layers are grouped evenly when there are more; the last step always has every layer
    randomized). ``absolute`` (default, Adebayo et al.'s main measure): compare |map|; False compares the
    signed maps. Score: |Spearman correlation| of the fully randomized model's map with the original (a
    faithful method's falls towards 0; a map that merely flipped sign still counts as unchanged). Curve: the
    signed correlation per cascade step, step 0 the original (1.0). A constant original map ranks nothing:
    the check is then undefined, score NaN with a warning, and nothing is re-explained.
    """

    max_steps: int | None = 5
    absolute: bool = True
    seed: int = 0
    batch_size: int | None = None
    progress: bool = True
    name = "randomization"
    higher_is_better = False

    def __post_init__(self):
        if self.max_steps is not None and (
            isinstance(self.max_steps, bool) or not isinstance(self.max_steps, (int, np.integer)) or self.max_steps < 1
        ):
            raise ValueError(f"max_steps: expected a positive int or None, got {self.max_steps!r}")
        check_seed(self.seed)
        _check_metric_batch_size(self.batch_size)
        check_bool(self.progress, "progress")

    def __call__(self, model, image=None, explanation: Explanation | None = None) -> MetricResult:
        """Re-explain on randomized copies of ``model`` (a torch model; the original is never touched)."""
        if explanation is None:
            raise TypeError("randomization: missing the explanation to evaluate")
        explanation = _check_explanation(explanation)
        model = as_model(model)
        if not model.is_torch:
            raise TypeError(f"randomization: model {model.name!r} is {model.kind}; it needs a torch module "
                            "whose weights can be re-drawn")
        if image is None:
            image = explanation.image
            if image is None:
                raise ValueError("image: the explanation keeps no image; pass the image explicitly")
        layers = _parametrized_layers(model.fn)
        if not layers:
            raise ValueError(f"randomization: model {model.name!r} has no parameters to randomize")
        reference = np.abs(explanation.map) if self.absolute else explanation.map
        x_label = "cascade step (layers randomized from the top)"
        y_label = "Spearman correlation with the original map" + (" (|maps|)" if self.absolute else "")
        if np.ptp(reference) == 0:
            warnings.warn("randomization: the explanation's map is constant (e.g. all 0), so it ranks no pixel and "
                          "the check is undefined: score NaN (a rank correlation with a constant counts as 0, "
                          "which would read as a perfect pass)", UserWarning, stacklevel=2)
            return MetricResult(name=self.name, score=float("nan"), higher_is_better=self.higher_is_better,
                                x=np.zeros(1), y=np.full(1, np.nan), x_label=x_label, y_label=y_label,
                                details={"constant_map": True, "absolute": self.absolute}, n_evals=0)
        layers = _in_call_order(model, model.prepare(image)[1], layers)
        top_down = list(reversed(range(len(layers))))
        n_steps = len(layers) if self.max_steps is None else min(self.max_steps, len(layers))
        cuts = [math.ceil((s + 1) * len(layers) / n_steps) for s in range(n_steps)]
        g = torch.Generator().manual_seed(self.seed)
        module = copy.deepcopy(model.fn)
        copied = dict(_parametrized_layers(module))
        rho, ssim, names, n_evals = [1.0], [1.0], ["original"], 1  # 1: the pass that found the call order
        done = 0
        for cut in cuts:
            with torch.no_grad():
                for i in top_down[done:cut]:
                    for p in copied[layers[i][0]].parameters(recurse=False):
                        std = float(p.detach().float().std()) if p.numel() > 1 else 0.0
                        std = std if std > 0 and math.isfinite(std) else 0.05
                        p.copy_((torch.randn(p.shape, generator=g) * std).to(p.device, p.dtype))
            done = cut
            rand_model = _copy_model(model, module)
            exp = _explain_again(rand_model, image, explanation, explanation.seed or 0, self.batch_size,
                                 self.progress)
            n_evals += exp.n_evals
            m = np.abs(exp.map) if self.absolute else exp.map
            rho.append(spearman(reference, m))
            ssim.append(map_ssim(reference, m))
            names.append(layers[top_down[cut - 1]][0] or "(root)")
        return MetricResult(
            name=self.name,
            score=abs(rho[-1]),
            higher_is_better=self.higher_is_better,
            x=np.arange(len(rho), dtype=np.float64),
            y=np.asarray(rho, dtype=np.float64),
            x_label=x_label,
            y_label=y_label,
            details={"ssim": np.asarray(ssim), "randomized_down_to": names, "layers_randomized": [0] + cuts,
                     "n_layers": len(layers), "absolute": self.absolute},
            n_evals=n_evals,
        )


# ----------------------------------------------------------------------------- stability
@dataclass(frozen=True)
class Stability:
    """Agreement of the method with itself under ``k`` seeds (higher is better).

    Re-runs the explanation's method with seeds ``seed, seed+1, ..., seed+k-1`` (the explanation itself is the
    first; past the largest seed they continue from 0); score: mean pairwise Spearman correlation;
    ``details['top_iou']``: mean pairwise IoU of the top
    ``top_fraction`` of pixels. Curve: the pairwise correlations.
    """

    k: int = 5
    top_fraction: float = 0.1
    batch_size: int | None = None
    progress: bool = True
    name = "stability"
    higher_is_better = True

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 2:
            raise ValueError(f"k: expected an int >= 2 (seeds), got {self.k!r}")
        check_fraction("top_fraction", self.top_fraction)
        _check_metric_batch_size(self.batch_size)
        check_bool(self.progress, "progress")

    def __call__(self, model, image=None, explanation: Explanation | None = None) -> MetricResult:
        """Re-explain under ``k - 1`` further seeds and compare all pairs."""
        if explanation is None:
            raise TypeError("stability: missing the explanation to evaluate")
        explanation = _check_explanation(explanation)
        if image is None:
            image = explanation.image
            if image is None:
                raise ValueError("image: the explanation keeps no image; pass the image explicitly")
        base_seed = explanation.seed or 0
        seeds = [(base_seed + s) % (MAX_SEED + 1) for s in range(self.k)]  # past the largest seed: from 0
        maps, n_evals = [explanation.map], 0
        for seed in seeds[1:]:
            exp = _explain_again(model, image, explanation, seed, self.batch_size, self.progress)
            maps.append(exp.map)
            n_evals += exp.n_evals
        pairs = list(itertools.combinations(range(self.k), 2))
        rho = np.asarray([spearman(maps[i], maps[j]) for i, j in pairs])
        iou = np.asarray([top_iou(maps[i], maps[j], self.top_fraction) for i, j in pairs])
        return MetricResult(
            name=self.name,
            score=float(rho.mean()),
            higher_is_better=True,
            x=np.arange(len(pairs), dtype=np.float64),
            y=rho,
            x_label="pair of seeds",
            y_label="Spearman correlation",
            details={"top_iou": float(iou.mean()), "pairwise_top_iou": iou, "pairs": pairs,
                     "seeds": seeds, "top_fraction": self.top_fraction},
            n_evals=n_evals,
        )


# ----------------------------------------------------------------------------- pointing game
def object_mask(truth, h: int, w: int) -> np.ndarray:
    """The object as an H x W bool mask, from ``truth``: a mask (bool, or numbers 0 and one other value) of that
    shape, or a box (x0, y0, x1, y1) in its pixels (x1, y1 exclusive). A ValueError names what is wrong: a
    soft or NaN mask (threshold it first: ``mask > 0.5``), an empty one, a box outside the picture."""
    try:
        arr = np.asarray(truth)
    except (TypeError, ValueError):
        raise ValueError(f"truth: expected a mask or a box (x0, y0, x1, y1), got {type(truth).__name__}") from None
    if arr.dtype == object or not (arr.dtype == bool or np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"truth: expected a mask or a box of numbers, got dtype {arr.dtype}")
    if arr.ndim == 1 and arr.size == 4:
        box = "(" + ", ".join(f"{float(v):g}" for v in arr) + ")"
        if not np.all(np.isfinite(arr.astype(np.float64))):
            raise ValueError(f"truth: box {box} holds a value that is not a finite number")
        x0, y0, x1, y1 = (int(round(float(v))) for v in arr)
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f"truth: box {box} must satisfy 0 <= x0 < x1 <= {w}, 0 <= y0 < y1 <= {h}")
        mask = np.zeros((h, w), dtype=bool)
        mask[y0:y1, x0:x1] = True
        return mask
    if arr.shape != (h, w):
        raise ValueError(f"truth: expected a {h} x {w} mask or a box (x0, y0, x1, y1), got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.all(np.isfinite(arr)):
            raise ValueError("truth: the mask holds NaN or infinite values")
        top = arr.max() if arr.size else 0
        if not (top > 0 and np.all((arr == 0) | (arr == top))):
            raise ValueError(f"truth: a mask must be boolean (or 0 and one other value, as 0/1 or 0/255); this one "
                             f"holds values from {float(arr.min()):.4g} to {float(top):.4g}: threshold it first "
                             "(mask > 0.5)")
    mask = arr.astype(bool)
    if not mask.any():
        raise ValueError("truth: the mask is empty")
    return mask


@dataclass(frozen=True)
class PointingGame:
    """Hit (1) when the map's maximum lies less than ``tolerance`` pixels from the object, else miss (0).

    The object is an H x W boolean mask at the explanation's resolution, or a box (x0, y0, x1, y1) in its
    pixels (x1, y1 exclusive). ``tolerance``: 15 pixels, and a strict "less than", as in TorchRay; 0 asks for
    the point to lie on the object. The point is the first maximum in raster order; a constant map points
    nowhere and is a miss.
    """

    tolerance: float = 15.0
    name = "pointing_game"
    higher_is_better = True

    def __post_init__(self):
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float, np.number)) \
                or not 0 <= self.tolerance < np.inf:
            raise ValueError(f"tolerance: expected a non-negative number of pixels, got {self.tolerance!r}")

    def __call__(self, explanation: Explanation, truth) -> MetricResult:
        """``truth``: the object's mask (H x W bool) or box (x0, y0, x1, y1)."""
        explanation = _check_explanation(explanation)
        m = np.asarray(explanation.map, dtype=np.float64)
        mask = object_mask(truth, *m.shape)
        py, px = np.unravel_index(int(np.argmax(m)), m.shape)
        ys, xs = np.nonzero(mask)
        dist = float(np.sqrt(np.min((ys - py) ** 2 + (xs - px) ** 2)))
        constant = bool(m.max() == m.min())
        hit = not constant and (dist < self.tolerance if self.tolerance > 0 else dist == 0.0)
        return MetricResult(
            name=self.name,
            score=float(hit),
            higher_is_better=True,
            x=np.asarray([px], dtype=np.float64),
            y=np.asarray([py], dtype=np.float64),
            x_label="column of the maximum",
            y_label="row of the maximum",
            details={"point": (int(py), int(px)), "distance": dist, "tolerance": float(self.tolerance), "hit": hit,
                     "constant_map": constant},
        )


#: ready-made metrics with default settings (immutable; make a configured one with e.g. ``Deletion(step=0.01)``).
deletion = Deletion()
insertion = Insertion()
randomization = Randomization()
stability = Stability()
pointing_game = PointingGame()

#: metric name -> default instance (the CLI's and compare's choices).
METRICS = {"deletion": deletion, "insertion": insertion, "randomization": randomization, "stability": stability}


def evaluate(
    model,
    image,
    explanation: Explanation,
    metrics: Sequence[str] = ("deletion", "insertion"),
    *,
    truth=None,
    step: float | int = DEFAULT_STEP,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, MetricResult]:
    """Run the named metrics (keys of :data:`METRICS`, plus ``pointing_game`` when ``truth`` is given).

    ``step`` and ``seed`` configure deletion and insertion; returns name -> :class:`MetricResult`.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in METRICS and m != "pointing_game"]
    if unknown:
        raise ValueError(f"metrics: unknown {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join([*METRICS, 'pointing_game'])}")
    made = {
        "deletion": Deletion(step=step, seed=seed, batch_size=batch_size, progress=progress),
        "insertion": Insertion(step=step, seed=seed, batch_size=batch_size, progress=progress),
        "randomization": Randomization(seed=seed, batch_size=batch_size, progress=progress),
        "stability": Stability(batch_size=batch_size, progress=progress),
    }
    out: dict[str, MetricResult] = {}
    for name in metrics:
        if name == "pointing_game":
            if truth is None:
                raise ValueError("metrics: pointing_game needs truth= (a mask or a box)")
            out[name] = pointing_game(explanation, truth)
        else:
            out[name] = made[name](model, image, explanation)
    if truth is not None and "pointing_game" not in out:
        out["pointing_game"] = pointing_game(explanation, truth)
    return out
