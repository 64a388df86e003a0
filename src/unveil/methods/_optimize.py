"""Shared machinery of the learned-perturbation methods (``meaningful``, ``learned``).

Both methods optimize a small set of tensors per image (a mask, or a generator's weights) against the model's
target probability. Here many images run as one batch on the model's device: every optimized tensor has the
image as its first dimension, Adam runs row by row (its own step count per image), and an image whose target
probability fell below its threshold stops changing while the others go on.

Gradients are taken with :func:`torch.autograd.grad` with respect to these tensors only, so the model's
parameters never receive a ``.grad`` and nothing on the model is changed (no ``requires_grad`` flips, no hooks,
no ``eval()``/``train()``).

:func:`explain_batch` is the many-image entry point (``unveil.methods.meaningful.explain_batch`` and
``unveil.methods.learned.explain_batch`` bind it to their method); the registered single-image methods go
through the same code with a batch of one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..perturb import progress_bar
from .registry import check_positive, check_seed

__all__ = ["OptimResult", "optimize", "check_common", "explain_batch", "image_generators", "DEFAULT_GROUP"]

#: the most images :func:`explain_batch` optimizes as one batch unless told otherwise.
DEFAULT_GROUP = 16


@dataclass
class OptimResult:
    """Per image: ``steps`` (Adam updates made), ``stopped`` (stopped early, below the threshold), ``trace``
    (the target probability seen at each step, float32 array), ``confirms`` (extra forwards spent checking a
    stop without the loss's randomness)."""

    steps: np.ndarray
    stopped: np.ndarray
    trace: list = field(default_factory=list)
    confirms: np.ndarray | None = None

    def forwards(self, i: int) -> int:
        """Model evaluations spent on image ``i`` during the optimization."""
        return len(self.trace[i]) + (0 if self.confirms is None else int(self.confirms[i]))


def check_common(iterations, lr, stop_below) -> tuple[int, float, float]:
    """Validate the options every learned method shares; return them as (int, float, float)."""
    if isinstance(iterations, (bool, np.bool_)) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise ValueError(f"iterations: expected a non-negative int (optimizer steps), got {iterations!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)) or not 0 < lr < np.inf:
        raise ValueError(f"lr: expected a positive finite number (Adam's learning rate), got {lr!r}")
    if stop_below is None:
        stop_below = 0.0
    if (
        isinstance(stop_below, bool)
        or not isinstance(stop_below, (int, float, np.floating, np.integer))
        or not 0.0 <= stop_below < 1.0
    ):
        raise ValueError(
            f"stop_below: expected a fraction in [0, 1) of the starting score (0 or None: never stop early), "
            f"got {stop_below!r}"
        )
    return int(iterations), float(lr), float(stop_below)


def image_generators(seed: int, n: int) -> list[torch.Generator]:
    """One torch generator per image, each seeded with ``seed``: image i's random draws depend only on the seed
    and on that image's own progress, so a batch gives the same results as the images one by one."""
    return [torch.Generator().manual_seed(int(seed)) for _ in range(n)]


def _adam_rows(params, grads, state, rows, lr, betas=(0.9, 0.999), eps=1e-8) -> None:
    """Adam (torch.optim.Adam's update, no weight decay) applied to the rows ``rows`` of every tensor in
    ``params``; each row (image) keeps its own step count in ``state['t']``."""
    b1, b2 = betas
    state["t"][rows] += 1
    t = state["t"][rows].to(params[0].dtype)
    bc1 = 1.0 - b1**t
    bc2 = 1.0 - b2**t
    for i, (p, g) in enumerate(zip(params, grads)):
        shape = (-1,) + (1,) * (p.dim() - 1)
        g = g[rows]
        m = state["m"][i][rows].mul_(b1).add_(g, alpha=1 - b1)
        v = state["v"][i][rows].mul_(b2).addcmul_(g, g, value=1 - b2)
        state["m"][i][rows] = m
        state["v"][i][rows] = v
        denom = v.sqrt() / bc2.sqrt().view(shape) + eps
        p[rows] = p[rows] - (lr / bc1).view(shape) * m / denom


def optimize(
    loss_fn: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
    params: Sequence[torch.Tensor],
    start_scores: torch.Tensor,
    *,
    iterations: int,
    lr: float,
    stop_below: float,
    progress: bool = False,
    desc: str = "optimizing",
    project: Callable[[torch.Tensor], None] | None = None,
    confirm: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> OptimResult:
    """Minimize ``loss_fn`` over ``params`` (leaf tensors of the method's own with ``requires_grad``, each
    N x ..., row i belongs to image i) with per-row Adam.

    ``loss_fn(rows, step)`` gets the active image indices (a long tensor) and returns (the loss of each active
    image, its target probability), both of length ``len(rows)``, computed from ``p[rows]`` of each param.
    An image stops (its rows no longer change) once its probability is below ``stop_below * start_scores``.
    ``project(rows)`` runs after each update (e.g. clamping a mask to [0, 1]). ``confirm(rows)``, for a
    stochastic loss, recomputes the probability of the candidate rows without the randomness (no gradient);
    an image stops only when that value is below its threshold too. The params are updated in place.
    """
    n = int(start_scores.shape[0])
    device = params[0].device
    state = {
        "t": torch.zeros(n, dtype=torch.long, device=device),
        "m": [torch.zeros_like(p) for p in params],
        "v": [torch.zeros_like(p) for p in params],
    }
    threshold = (stop_below * start_scores.detach().to(device=device, dtype=torch.float32)).clone()
    done = torch.zeros(n, dtype=torch.bool, device=device)
    steps = np.zeros(n, dtype=np.int64)
    confirms = np.zeros(n, dtype=np.int64)
    traces: list[list[float]] = [[] for _ in range(n)]
    bar = progress_bar(iterations, desc, progress, unit="step")
    try:
        for step in range(iterations):
            rows = torch.nonzero(~done).flatten()
            if rows.numel() == 0:
                break
            with torch.enable_grad():
                losses, probs = loss_fn(rows, step)
                grads = torch.autograd.grad(losses.sum(), list(params), allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(grads, params)]
            probs = probs.detach().float()
            for r, pr in zip(rows.tolist(), probs.cpu().tolist()):
                traces[r].append(pr)
            below = probs < threshold[rows]
            if confirm is not None and bool(below.any()):
                with torch.no_grad():
                    clean = confirm(rows[below]).detach().float()
                confirms[rows[below].cpu().numpy()] += 1
                below[below.clone()] = clean < threshold[rows[below]]
            done[rows[below]] = True
            move = rows[~below]
            if move.numel():
                with torch.no_grad():
                    _adam_rows(params, grads, state, move, lr)
                    if project is not None:
                        project(move)
                steps[move.cpu().numpy()] += 1
            bar.update(1)
            bar.set_postfix(active=int((~done).sum()))
    finally:
        bar.close()
    return OptimResult(steps=steps, stopped=done.cpu().numpy(), trace=[np.asarray(t, np.float32) for t in traces],
                       confirms=confirms)


def target_probability(model, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Differentiable softmax probability of each row's target class (N,) from ``model.forward`` (N x C x H x W)."""
    probs = model.to_probabilities(model.forward(x))
    return probs.gather(1, targets.view(-1, 1).to(probs.device)).view(-1)


# ----------------------------------------------------------------------------- many images, one call
def explain_batch(
    method: str,
    run: Callable,
    model,
    images,
    targets=None,
    *,
    seed: int = 0,
    progress: bool = True,
    group_size: int | None = None,
    finish: Callable | None = None,
    **options,
) -> list:
    """Explain many images with a learned method, optimizing up to ``group_size`` of them as one batch.

    ``method``: ``"meaningful"`` or ``"learned"``; ``run``: its batched core
    ``run(model, xs, targets, start_scores, generators, *, progress, **options) -> list[ImageOutcome]``.
    ``images``: a sequence of paths, PIL images or arrays.
    ``targets``: None (each image's top class), one class (number or name) for all, or one per image.
    ``seed``: every image's random draws start from it, so each result equals ``unveil.explain`` of that image
    alone with the same seed (within float rounding). ``group_size``: the most images optimized together
    (default: all; lower it when device memory runs short). ``finish(outcome, (H, W))`` may complete an image's
    extras once its original size is known. Other keyword arguments are the method's options.
    Returns one :class:`unveil.Explanation` per image, in order; ``n_evals`` counts that image's forwards.
    """
    from ..api import _check_options, _to_image_resolution, check_finite_map
    from ..explanation import Explanation
    from ..models.base import as_model
    from .registry import MethodResult, get_method

    t0 = time.perf_counter()
    spec = get_method(method)
    if spec.family != "learned":
        raise ValueError(f"method: explain_batch runs the learned methods, not {method!r}")
    _check_options(spec, options)
    seed = check_seed(seed)
    model = as_model(model)
    model.require_gradients(method)
    if isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise TypeError("images: expected a sequence of images (paths, PIL images or arrays)")
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise TypeError("images: got one image; pass a list of images (or an N x H x W x C array)")
    images = list(images)
    if not images:
        raise ValueError("images: expected a non-empty sequence of images")
    n = len(images)
    if group_size is None:
        group_size = DEFAULT_GROUP
    group_size = check_positive("group_size", group_size, integer=True)
    prepared = [model.prepare(img) for img in images]
    with torch.no_grad():
        probs = [model.probabilities(x.unsqueeze(0), batch_size=1)[0].numpy() for _, x in prepared]
    if targets is None or isinstance(targets, (str, int, np.integer)):
        tlist = [targets] * n
    else:
        tlist = list(targets)
        if len(tlist) != n:
            raise ValueError(f"targets: expected one per image ({n}), got {len(tlist)}")
    tidx = [
        int(np.argmax(p)) if t is None else model.class_index(t, p.shape[0]) for t, p in zip(tlist, probs)
    ]
    results: list = [None] * n
    by_shape: dict[tuple, list[int]] = {}
    for i, (_, x) in enumerate(prepared):
        by_shape.setdefault(tuple(x.shape), []).append(i)
    for idx in by_shape.values():
        for s in range(0, len(idx), group_size):
            chunk = idx[s : s + group_size]
            xs = torch.stack([prepared[i][1] for i in chunk])
            tg = torch.tensor([tidx[i] for i in chunk], dtype=torch.long)
            start = torch.tensor([probs[i][tidx[i]] for i in chunk], dtype=torch.float32)
            outs = run(model, xs, tg, start, image_generators(seed, len(chunk)), progress=progress, **options)
            for i, out in zip(chunk, outs):
                results[i] = out
    seconds = (time.perf_counter() - t0) / n
    explanations = []
    for i, (res, (original, _)) in enumerate(zip(results, prepared)):
        if finish is not None:
            finish(res, original.shape[:2])
        heat, _ = _to_image_resolution(MethodResult(map=res.map, interpolation="bilinear"), original.shape[:2])
        check_finite_map(heat, spec.name, options)
        explanations.append(
            Explanation(
                map=heat,
                target=tidx[i],
                label=model.label(tidx[i]),
                score=float(probs[i][tidx[i]]),
                method=spec.name,
                params={**spec.options, **options, "budget": None},
                seed=seed,
                n_evals=int(res.n_evals) + 1,
                seconds=seconds,
                extras=res.extras,
                image=original,
            )
        )
    return explanations


@dataclass
class ImageOutcome:
    """One image's result from a method's batched core: the map (h x w at the model's input size), its extras
    and the forwards spent on it (without the unperturbed input's)."""

    map: np.ndarray
    extras: dict
    n_evals: int
