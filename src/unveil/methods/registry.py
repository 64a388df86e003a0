"""The method registry and what a method receives (Context) and returns (MethodResult).

A method is a function ``fn(ctx, **options) -> MethodResult`` registered by name with :func:`register`. The
shared pipeline (:func:`unveil.explain`) owns loading, targets, seeds, batching, counting and timing, so a
method only decides which inputs to try and how to read the scores.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..checks import check_positive, check_seed, option_mapping  # noqa: F401 - the methods' option checks
from ..perturb import Perturber, make_baseline
from ..segmentation import segment

__all__ = ["MethodSpec", "MethodResult", "Context", "register", "get_method", "method_names", "method_specs"]

FAMILIES = ("perturbation", "learned", "gradient")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: Callable
    family: str
    description: str
    needs_gradients: bool
    #: the call's prediction pass runs with gradients and its graph is handed to the method (one pass fewer
    #: for methods whose single gradient pass is at the input itself: saliency, gradient x input, and the
    #: modified chain rules, whose pass runs inside ``prediction_scope``)
    reuses_prediction: bool = False
    #: ``scope(model, x, options) -> context manager`` the prediction pass runs in (None: none); what it yields
    #: is handed to the method with the pass (:meth:`Context.take_prediction`)
    prediction_scope: Callable | None = None

    @property
    def options(self) -> dict:
        """Option name -> default, read from the function's signature."""
        sig = inspect.signature(self.fn)
        return {
            p.name: p.default
            for p in list(sig.parameters.values())[1:]
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    @property
    def uses_budget(self) -> bool:
        """Perturbation methods accept ``budget=`` (the most model evaluations they may spend)."""
        return self.family == "perturbation"


@dataclass
class MethodResult:
    """What a method hands back.

    Either ``weights`` (one per feature of ``segments``, an h x w label map at the model's input size) or
    ``map`` (any 2-D resolution; resized to the image with ``interpolation``: nearest, bilinear or bicubic).
    """

    map: np.ndarray | None = None
    segments: np.ndarray | None = None
    weights: np.ndarray | None = None
    interpolation: str = "bilinear"
    extras: dict = field(default_factory=dict)


#: Inputs per forward+backward pass when the model's batch size is "auto" (measured or not: the measurement
#: times inference passes), so that a gradient method never pays or follows a measurement of inference passes.
#: Integrated gradients (50 steps, default model, CPU) took 1.86/1.61/1.57/2.17/2.65 s at batch 2/4/8/16/32
#: under glibc's default allocator and 1.89/1.62/1.58/1.49/1.42 s with it tuned: 8 is the best of the first and
#: within 11 % of the second.
GRADIENT_BATCH = 8


@dataclass
class Context:
    """Everything a method may use for one image: the model, the input, the target and the shared tools."""

    model: object
    image: np.ndarray  # H x W x C original, float32 [0, 1]
    x: torch.Tensor  # C x h x w model input on the model's device, [0, 1]
    target: int
    probs: np.ndarray  # class probabilities of the unperturbed input
    seed: int
    budget: int | None
    progress: bool
    batch: int | None  # this call's batch size; None: the model's (an "auto" one measured by the Perturber)
    counter: list  # evaluations made so far in this call (shared with the model's counting())
    prediction: tuple | None = None  # (input leaf 1 x C x h x w, raw outputs, scope state) of a prediction pass
    rng: np.random.Generator = field(init=False)
    generator: torch.Generator = field(init=False)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        self.generator = torch.Generator().manual_seed(int(self.seed))

    @property
    def gradient_batch_size(self) -> int:
        """The most inputs in one forward+backward pass: this call's batch size, else the model's when the user
        set it as an int, else :data:`GRADIENT_BATCH`. An ``"auto"`` size is not used here, measured or not:
        the measurement times inference passes (on ONNX Runtime when that runs them), which say little about
        forward+backward ones."""
        if self.batch is not None:
            return self.batch
        fixed = self.model.batch_size_fixed
        return GRADIENT_BATCH if fixed is None else fixed

    def gradient_batch_for(self, n: int) -> int:
        """Gradient-pass batch size for ``n`` inputs: 1 for a single input, else :attr:`gradient_batch_size`."""
        return 1 if n <= 1 else self.gradient_batch_size

    def take_prediction(self, xs: torch.Tensor) -> tuple | None:
        """(leaf, raw outputs, state) of this call's prediction pass, kept with its graph for a method
        registered with ``reuses_prediction``, when ``xs`` is the call's own input (1 x C x h x w, the same
        storage as :attr:`x`); ``state`` is what the method's ``prediction_scope`` yielded (None without one).
        Handed out once, then dropped. None otherwise: the method runs its own pass."""
        if self.prediction is None or xs.shape[0] != 1 or xs.data_ptr() != self.x.data_ptr():
            return None
        out, self.prediction = self.prediction, None
        return out

    @property
    def n_evals(self) -> int:
        return self.counter[0]

    def remaining(self) -> int | None:
        """Evaluations still allowed by ``budget`` (None when unlimited)."""
        return None if self.budget is None else self.budget - self.counter[0]

    def input_image(self) -> np.ndarray:
        """The model input as h x w x C float32 numpy (what segmentation runs on, projected to 3 channels)."""
        return self.x.detach().cpu().numpy().transpose(1, 2, 0)

    def segment(self, segmentation="slic", n_features: int = 50, options=None) -> np.ndarray:
        """Label map (h x w, 0..K-1) of the model input; a user label map at any size is resized.
        ``options``: a method's ``segmentation_options`` (a mapping, or None), passed to scikit-image."""
        return segment(self.input_image(), segmentation, n_features, seed=self.seed,
                       **option_mapping("segmentation_options", options))

    def baseline(self, kind="mean", labels: np.ndarray | None = None, **options) -> torch.Tensor:
        return make_baseline(self.x, kind, labels=labels, **options)

    def perturber(self, baseline: torch.Tensor, labels: np.ndarray | None = None, desc: str = "") -> Perturber:
        return Perturber(
            self.model,
            self.x,
            baseline,
            labels,
            batch_size=self.batch,  # None: the model's, measured only when a request is not small
            progress=self.progress,
            desc=desc or "evaluating",
            unperturbed=self.probs,
        )


_REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, *, family: str, description: str, needs_gradients: bool | None = None,
             reuses_prediction: bool | Callable = False):
    """Decorator: register ``fn(ctx, *, option=default, ...)`` as method ``name``. ``reuses_prediction``: True,
    or a ``prediction_scope(model, x, options)`` to run the pass in; see :meth:`Context.take_prediction`."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")

    def deco(fn):
        old = _REGISTRY.get(name)
        if old is not None and old.fn is not fn and (old.fn.__module__, old.fn.__qualname__) != \
                (fn.__module__, fn.__qualname__):  # the same function again: its module imported anew after an
            raise ValueError(f"method {name!r} is already registered")  # interrupted import, it replaces itself
        for p in list(inspect.signature(fn).parameters.values())[1:]:
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise TypeError(f"method {name!r}: options must be keyword-only (after *), {p.name!r} is not")
        grads = family != "perturbation" if needs_gradients is None else needs_gradients
        reuse = bool(reuses_prediction and grads)
        scope = reuses_prediction if reuse and callable(reuses_prediction) else None
        _REGISTRY[name] = MethodSpec(name, fn, family, description, grads, reuse, scope)
        return fn

    return deco


def check_model_for(model, methods) -> list[MethodSpec]:
    """The specs of ``methods`` (names), after checking that ``model`` can run each: a gradient method on a
    model without gradients (a callable, an ONNX graph) is an error naming the method, before any work."""
    specs = [get_method(m) for m in methods]
    for spec in specs:
        if spec.needs_gradients:
            model.require_gradients(spec.name)
    return specs


def get_method(name: str) -> MethodSpec:
    from . import _discover

    _discover()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def method_specs() -> list[MethodSpec]:
    from . import _discover

    _discover()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def method_names() -> list[str]:
    return [s.name for s in method_specs()]
