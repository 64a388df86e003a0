"""The public entry point: ``explain(model, image, method=..., target=None, **options) -> Explanation``."""

from __future__ import annotations

import time
import warnings
from contextlib import nullcontext

import numpy as np
import torch

from .checks import check_bool
from .explanation import Explanation
from .images import check_drawn_for, resize
from .methods.registry import Context, MethodResult, check_seed, get_method
from .models.base import _check_batch_size, as_model
from .segmentation import upsample_labels

__all__ = ["explain", "DEFAULT_METHOD"]

from ._defaults import DEFAULT_METHOD  # noqa: E402 - re-exported

_INTERPOLATION_ORDER = {"nearest": 0, "bilinear": 1, "bicubic": 3}


def check_finite_map(heat: np.ndarray, method: str, options: dict) -> None:
    """A ValueError naming the method (and the options given) when its map holds NaN or infinite values:
    an option that makes an optimization diverge (a learning rate too high) or a model whose scores are
    too extreme, said here rather than written into files and plots."""
    if not np.isfinite(heat).all():
        given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "default options"
        raise ValueError(f"method {method!r} gave NaN or infinite attributions ({given}); an option may make it "
                         "diverge (e.g. a learning rate too high), the model's scores may overflow, or its "
                         "gradient may not be finite at this input (e.g. sqrt or log of 0 in its forward)")


def _check_options(spec, options: dict) -> None:
    known = spec.options
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"method {spec.name!r} has no option {', '.join(map(repr, unknown))}; its options are: "
            f"{', '.join(sorted(known)) or '(none)'}"
        )


def _warns_itself(method: str, params: dict) -> bool:
    """Whether the method's own warning already says why its map is flat (explain adds none): Grad-CAM's all-0
    map, the learned perturbation's undropped score, STREAK keeping nothing (``fill="none"``)."""
    return method in ("gradcam", "learned") or (method == "streak" and params.get("fill", "none") == "none")


def _image_segments(result: MethodResult, size: tuple[int, int]) -> np.ndarray:
    """The method's segments at the image size: a user's label map (a :class:`~unveil.segmentation.LabelMap`)
    as the user drew it, relabelled 0..K-1 (resized only when drawn at another size, every segment kept), with
    ``result.extras["segment_labels"]`` = the user's label of each index; other segments by nearest neighbour."""
    from .segmentation import resize_labels

    source = getattr(result.segments, "source", None)
    if source is None:
        return upsample_labels(np.asarray(result.segments), size)
    result.extras["segment_labels"] = np.asarray(result.segments.values).copy()
    return source if source.shape == tuple(size) else resize_labels(source, size)


def _to_image_resolution(result: MethodResult, size: tuple[int, int]):
    """(map H x W float32, segments H x W int32 or None) at the original image size. For a user's label map
    the segments are the user's own (see :func:`_image_segments`, which adds ``extras["segment_labels"]``)."""
    if result.weights is not None:
        if result.segments is None:
            raise RuntimeError("a method returned weights without segments")
        weights = np.asarray(result.weights, dtype=np.float32)
        segments = _image_segments(result, size)
        if result.map is None:
            return weights[segments], segments.astype(np.int32)
        seg_out = segments.astype(np.int32)
    else:
        seg_out = None
    if result.map is None:
        raise RuntimeError("a method returned neither a map nor weights")
    m = np.asarray(result.map, dtype=np.float32)
    if m.ndim != 2:
        raise RuntimeError(f"a method returned a map of shape {m.shape}; expected 2-D")
    order = _INTERPOLATION_ORDER[result.interpolation]
    if m.shape != size:
        if order == 0:
            m = upsample_labels(m, size)
        else:
            m = resize(m, size, order=order)
    return m.astype(np.float32), seg_out


def explain(
    model,
    image,
    method: str = DEFAULT_METHOD,
    target: int | str | None = None,
    *,
    seed: int = 0,
    budget: int | None = None,
    batch_size: int | str | None = None,
    progress: bool = True,
    **options,
) -> Explanation:
    """Explain ``model``'s score for ``target`` on ``image`` with ``method``.

    ``model``: a :class:`unveil.Model`, a torch module or a callable (see :class:`unveil.Model`).
    ``image``: a path, a PIL image or an array (any channels; see :mod:`unveil.images`).
    ``target``: class number or name; the top class when None.
    ``seed``: every random choice (sampling, segmentation) comes from it.
    ``budget``: the most model evaluations a perturbation method may spend (the unperturbed input included).
    ``batch_size``: the most inputs in one forward pass for this call (default: the model's).
    ``progress``: show a progress bar on long work (on a terminal).
    Other keyword arguments are the method's options (``unveil.method_specs()``, ``unveil methods --json`` and
    the README list them with their defaults).
    """
    t0 = time.perf_counter()
    spec = get_method(method)
    _check_options(spec, options)
    params = {**spec.options, **options}  # every option's value, defaults included
    seed = check_seed(seed)
    progress = check_bool(progress, "progress")
    if budget is not None and (
        isinstance(budget, (bool, np.bool_)) or not isinstance(budget, (int, np.integer)) or budget < 2
    ):
        raise ValueError(f"budget: expected an int >= 2 (model evaluations), got {budget!r}")
    if budget is not None and not spec.uses_budget:
        raise ValueError(f"budget: method {spec.name!r} is not a perturbation method and takes no budget")
    model = as_model(model)
    if spec.needs_gradients:
        model.require_gradients(spec.name)
    original, x = model.prepare(image)
    for key in ("segmentation", "baseline"):  # an array drawn for another picture is refused, not stretched
        check_drawn_for(options.get(key), original.shape[:2], tuple(x.shape[-2:]), key)
    # None and "auto": the model's batch size, resolved (measured if "auto") when the method first needs it
    bs = None if batch_size is None else _check_batch_size(batch_size)
    if bs == "auto":
        bs = None
    with model.counting() as counter:
        prediction = None
        if spec.reuses_prediction:  # the prediction pass keeps its graph: the method's gradient pass is this one
            leaf = x.unsqueeze(0).detach().requires_grad_(True)
            scope = spec.prediction_scope
            with (scope(model, x, params) if scope else nullcontext()) as state:
                with torch.enable_grad():
                    raw = model.forward(leaf)
            probs = model.checked(model.to_probabilities(raw))[0].numpy()
            prediction = (leaf, raw, state)
        else:
            probs = model.probabilities(x.unsqueeze(0), batch_size=1)[0].numpy()
        target_idx = int(np.argmax(probs)) if target is None else model.class_index(target, probs.shape[0])
        ctx = Context(
            model=model,
            image=original,
            x=x,
            target=target_idx,
            probs=probs,
            seed=seed,
            budget=None if budget is None else int(budget),
            progress=progress,
            batch=None if bs is None else int(bs),
            counter=counter,
            prediction=prediction,
        )
        # every random draw comes from the context's own generators: the process's torch random stream is
        # neither used nor saved and restored (a restore would rewind another thread's draws)
        result = spec.fn(ctx, **options)
        n_evals = counter[0]
    if budget is not None and n_evals > budget:  # a method bug, never a user error
        raise RuntimeError(f"method {spec.name!r} spent {n_evals} evaluations, over its budget of {budget}")
    heat, segments = _to_image_resolution(result, original.shape[:2])
    check_finite_map(heat, spec.name, options)
    if np.ptp(heat) == 0 and not _warns_itself(spec.name, params):
        flat = "all 0" if not np.any(heat) else f"constant ({float(heat.flat[0]):.4g} everywhere)"
        warnings.warn(f"{spec.name}: the map is {flat}, so it ranks no pixel: nothing the method measures changed. "
                      "A saturated softmax (probability 1.0 or 0.0 throughout; outputs='scores' explains the raw "
                      "outputs, gradient methods take output='logit'), an input equal to its baseline (gradient "
                      "x input of a black image), a model that ignores its input, or too few samples do this",
                      UserWarning, stacklevel=2)
    params["budget"] = budget
    return Explanation(
        map=heat,
        target=target_idx,
        label=model.label(target_idx),
        score=float(probs[target_idx]),
        method=spec.name,
        params=params,
        seed=seed,
        n_evals=int(n_evals),
        seconds=time.perf_counter() - t0,
        segments=segments,
        weights=None if result.weights is None else np.asarray(result.weights, dtype=np.float32),
        extras=result.extras,
        image=original,
    )
