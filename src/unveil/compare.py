"""Compare explanation methods on one image, at an equal budget, with deletion and insertion scores.

    import unveil
    model = unveil.load_model()
    cmp = unveil.compare(model, "cat.jpg", methods=["lime", "occlusion"], budget=500)
    cmp.save("report.html")          # a self-contained HTML report (see :mod:`unveil.report`)
    for row in cmp.table(): print(row)
"""

from __future__ import annotations

import sys
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .checks import scalar_target
from .explanation import Explanation
from .metrics import (
    DEFAULT_DELETION_BASELINE,
    DEFAULT_STEP,
    Deletion,
    Insertion,
    MetricResult,
    check_fraction,
    random_explanation,
)
from .models.base import as_model

__all__ = ["compare", "Comparison", "MethodEntry", "DEFAULT_COMPARE_METHODS"]

#: the methods compared when none are named.
DEFAULT_COMPARE_METHODS = ("lime", "occlusion")

#: grid cells of the random floor's ranking (about as many regions as LIME's default segments).
FLOOR_CELLS = 50


@dataclass
class MethodEntry:
    """One method's results: one explanation and its deletion / insertion results per target."""

    method: str
    explanations: list[Explanation]
    deletion: list[MetricResult]
    insertion: list[MetricResult]

    @property
    def n_evals(self) -> int:
        """Evaluations of the first target's explanation (every target costs the same)."""
        return self.explanations[0].n_evals

    @property
    def seconds(self) -> float:
        return self.explanations[0].seconds


@dataclass
class Comparison:
    """What :func:`compare` measured; ``to_html()`` / ``save(path)`` make the report.

    ``top``: the model's top-5 classes as (index, label, probability). ``targets``: the explained classes.
    ``floor``: deletion and insertion results of a random ranking of grid cells per target (the level any method
    should beat), or None. ``top_k`` / ``top_fraction``: the size of the top masks shown (segments / fraction
    of pixels).
    """

    image: np.ndarray
    model_name: str
    top: list[tuple[int, str, float]]
    targets: list[int]
    labels: list[str]
    budget: int | None
    seed: int
    entries: list[MethodEntry]
    floor: list[tuple[MetricResult, MetricResult]] | None = None
    top_k: int = 5
    top_fraction: float = 0.1
    image_name: str = ""
    options: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)  # method -> why it was left out (its error, one line)

    def entry(self, method: str) -> MethodEntry:
        for e in self.entries:
            if e.method == method:
                return e
        raise KeyError(method)

    def top_mask(self, exp: Explanation) -> np.ndarray:
        """The top-k mask shown for ``exp``: ``top_k`` segments for segment methods, else ``top_fraction``."""
        if exp.segments is not None and exp.weights is not None:
            return exp.top_mask(min(self.top_k, len(exp.weights)))
        return exp.top_mask(fraction=self.top_fraction)

    def table(self) -> list[dict]:
        """One row per (method, target): method, target, label, n_evals, seconds, deletion_auc, insertion_auc."""
        rows = []
        for e in self.entries:
            for exp, d, i in zip(e.explanations, e.deletion, e.insertion):
                rows.append({"method": e.method, "target": exp.target, "label": exp.label, "n_evals": exp.n_evals,
                             "seconds": round(exp.seconds, 4), "deletion_auc": d.score, "insertion_auc": i.score})
        if self.floor:
            for t, lab, (d, i) in zip(self.targets, self.labels, self.floor):
                rows.append({"method": "random", "target": t, "label": lab, "n_evals": 0, "seconds": 0.0,
                             "deletion_auc": d.score, "insertion_auc": i.score})
        return rows

    def to_html(self) -> str:
        """The self-contained HTML report (images inline as base64 PNG, no network references)."""
        from .report import render_html

        return render_html(self)

    def save(self, path: str | Path) -> Path:
        """Write the HTML report to ``path`` (folders created); return the path."""
        from .report import write_report

        return write_report(self, path)


def _check_methods(methods, model) -> list:
    from .methods.registry import check_model_for

    if methods is None:
        methods = list(DEFAULT_COMPARE_METHODS)
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not isinstance(methods, (list, tuple)) or not methods:
        raise ValueError(f"methods: expected a non-empty list of method names, got {methods!r}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods: a method is named twice in {list(methods)}")
    return check_model_for(model, methods)


def _is_segment_mean(baseline) -> bool:
    return isinstance(baseline, str) and baseline == "segment_mean"


def _check_deletion_baseline(deletion: Deletion, original: np.ndarray, x) -> None:
    """A bad ``deletion_baseline`` (an unknown name, an image of another picture) is an error before any
    method runs, made by the metric's own code; ``segment_mean`` is checked per method (it needs segments)."""
    if deletion.baseline is None or _is_segment_mean(deletion.baseline):
        return
    try:
        deletion.given_baseline(x, original.shape[:2], key="deletion_baseline")
    except (ValueError, TypeError) as err:
        message = str(err)
        raise type(err)(message if message.startswith("deletion_baseline") else f"deletion_baseline: {message}") \
            from None


def compare(
    model,
    image,
    methods: Sequence[str] | None = None,
    budget: int | None = None,
    targets: Sequence[int | str] | int | str | None = None,
    *,
    seed: int = 0,
    options: dict[str, dict] | None = None,
    step: float | int = DEFAULT_STEP,
    random_floor: bool = True,
    deletion_baseline=DEFAULT_DELETION_BASELINE,
    top_k: int = 5,
    top_fraction: float = 0.1,
    batch_size: int | None = None,
    progress: bool = True,
    out: str | Path | None = None,
) -> Comparison:
    """Explain ``image`` with each of ``methods`` and score every map by deletion and insertion AUC.

    ``methods``: registered method names (default :data:`DEFAULT_COMPARE_METHODS`). ``budget``: the most model
    evaluations per explanation, passed to the perturbation methods only (gradient methods take none).
    ``targets``: a class (number or name) or a list of them; default the top class. With two or more the report
    shows the classes' maps side by side. ``options``: per-method options, e.g. ``{"lime": {"n_features": 30}}``.
    ``step``: deletion/insertion pixels per step (fraction of the image or int). ``deletion_baseline``: what
    deleted pixels become, the same for every method so that their scores compare (default the image's mean
    colour; None: each explanation's own baseline, as :class:`~unveil.metrics.Deletion` alone takes it).
    ``random_floor``: also score a random ranking of about :data:`FLOOR_CELLS` grid cells (regions like those
    the methods find: deleting scattered random pixels hurts most models faster than any ranking of regions,
    so a per-pixel random map is no floor). ``out``: write the HTML report there too.

    With two or more methods, one that cannot run (a ValueError or TypeError: an option it refuses, a model it
    cannot take; or an error inside the model during its passes) is left out with a warning, named with its
    error in ``failed`` and in the report; the others' results are kept. If none runs, the first error is
    raised. Settings of the comparison itself (a bad ``deletion_baseline``) stop it at once.
    """
    from .api import explain

    model = as_model(model)
    specs = _check_methods(methods, model)
    options = dict(options or {})
    names = [s.name for s in specs]
    stray = sorted(set(options) - set(names))
    if stray:
        raise ValueError(f"options: given for {', '.join(map(repr, stray))}, which are not among the methods")
    if budget is not None and (
        isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)) or budget < 2
    ):
        raise ValueError(f"budget: expected an int >= 2 (model evaluations), got {budget!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k: expected a positive int (segments), got {top_k!r}")
    check_fraction("top_fraction", top_fraction)
    if out is not None:  # before the long work: a report path that cannot be written fails now
        from .report import check_report_path

        check_report_path(out)
    deletion = Deletion(baseline=deletion_baseline, step=step, seed=seed, batch_size=batch_size, progress=progress)
    insertion = Insertion(step=step, seed=seed, batch_size=batch_size, progress=progress)

    original, x = model.prepare(image)
    _check_deletion_baseline(deletion, original, x)
    probs = model.probabilities(x.unsqueeze(0), batch_size=1)[0].numpy()
    order = np.argsort(-probs, kind="stable")[:5]
    top = [(int(i), model.label(int(i)), float(probs[i])) for i in order]
    if targets is None:
        target_list = [top[0][0]]
    else:
        targets = scalar_target(targets)
        raw = [targets] if isinstance(targets, (str, int, np.integer)) else targets
        if not isinstance(raw, (list, tuple)) or not raw:
            raise ValueError(f"targets: expected a class, a list of classes or None, got {targets!r}")
        target_list = list(dict.fromkeys(model.class_index(t, probs.shape[0]) for t in raw))  # repeats once

    entries, failed, first_error = [], {}, None
    for spec in specs:
        exps, dels, inss = [], [], []
        try:
            for t in target_list:
                exp = explain(model, original, method=spec.name, target=t, seed=seed,
                              budget=budget if spec.uses_budget else None, batch_size=batch_size,
                              progress=progress, **options.get(spec.name, {}))
                exps.append(exp)
                if exp.segments is None and _is_segment_mean(deletion_baseline):
                    raise _SetupError(f"deletion_baseline 'segment_mean' needs segments, and method {spec.name!r} "
                                      "gives a pixel map; choose another baseline (or None: each method's own)")
                dels.append(deletion(model, original, exp))
                inss.append(insertion(model, original, exp))
        except Exception as err:
            if len(specs) == 1 or isinstance(err, _SetupError) or not _method_failure(err):
                raise
            # one method that cannot run here (an option it refuses, a model it cannot take) does not cost
            # the others' work: it is left out, with a warning and a line in the report
            failed[spec.name] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            first_error = first_error or err
            warnings.warn(f"compare: method {spec.name!r} left out ({failed[spec.name]})", UserWarning,
                          stacklevel=2)
            continue
        entries.append(MethodEntry(spec.name, exps, dels, inss))
    if not entries:
        raise first_error

    floor = None
    if random_floor:
        floor = []
        for exp in entries[0].explanations:
            rnd = random_explanation(exp, seed, cells=FLOOR_CELLS)
            floor.append((deletion(model, original, rnd), insertion(model, original, rnd)))
    name = str(image) if isinstance(image, (str, Path)) else ""
    result = Comparison(
        image=original, model_name=model.name, top=top, targets=target_list,
        labels=[model.label(t) for t in target_list], budget=None if budget is None else int(budget),
        seed=int(seed), entries=entries, floor=floor, top_k=int(top_k), top_fraction=float(top_fraction),
        image_name=name, options=options, failed=failed,
    )
    if out is not None:
        result.save(out)
    return result


class _SetupError(ValueError):
    """A setting of the comparison itself is wrong (not one method's): the whole comparison stops."""


def _method_failure(err: Exception) -> bool:
    """Whether ``err`` is one method's clear refusal (a ValueError or TypeError: an option, a model it cannot
    take) or an error inside the model during that method's passes, rather than a fault to surface as it is."""
    from .checks import MODEL_FAILED

    return isinstance(err, (ValueError, TypeError)) or getattr(err, MODEL_FAILED, None) is not None


class _CallableModule(types.ModuleType):
    """This module's type: ``unveil.compare`` is both the module (``unveil.compare.Comparison``, ``import
    unveil.compare as uc``) and the function (``unveil.compare(model, image, ...)`` calls :func:`compare`)."""

    def __call__(self, *args, **kwargs):
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
