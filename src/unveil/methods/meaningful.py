"""Meaningful perturbation (Fong & Vedaldi, ICCV 2017): learn the smallest, smoothest region whose deletion
(blurring, by default) drops the target's probability.

A low-resolution mask m (1 keeps a pixel, 0 replaces it by the perturbed image) is upsampled bilinearly and
blends the input x0 with its perturbed version eta: ``x = eta + M * (x0 - eta)``. Adam minimizes, per image,

    lambda1 * sum(|1 - m|) + lambda2 * TV_beta(m) + p_target(x)

with ``TV_beta(m) = sum_u ((m(u) - m(u + e_row))^2 + (m(u) - m(u + e_col))^2)^(beta / 2)`` (forward
differences, zero past the last row and column), m projected onto [0, 1] after every step, the input shifted
by a random jitter of a few pixels and small Gaussian noise added to the mask at every step (gradients pass
through the noise's clamp). The objective's weights and schedule are the authors' (lambda1 = 1e-4,
lambda2 = 1e-2, beta = 3, lr 0.1, at most 300 iterations, 28 x 28 mask, blur sigma 10 pixels of the model
input); unlike their code, the optimization stops early by default (``stop_below``; None runs every
iteration, a tighter mask), starts from an all-ones mask, upsamples bilinearly and adds mask noise 0.02.
The map is ``1 - M``: 1 where the image had to be deleted.

Many images: :func:`explain_batch` optimizes one mask per image as one batch on the model's device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..perturb import gaussian_blur
from ._optimize import ImageOutcome, check_common, optimize, target_probability
from ._optimize import explain_batch as _explain_batch
from .registry import Context, MethodResult, check_positive, register

__all__ = ["meaningful", "explain_batch", "tv_norm", "run_batch", "PERTURBATIONS"]

PERTURBATIONS = ("blur", "constant", "noise")


def tv_norm(m: torch.Tensor, beta: float = 3.0) -> torch.Tensor:
    """TV_beta of each mask in an N x 1 x a x b batch -> (N,): the sum over pixels of the squared forward
    differences' sum (rows and columns, zero past the edge) raised to beta / 2."""
    d_row = F.pad(m[..., 1:, :] - m[..., :-1, :], (0, 0, 0, 1))
    d_col = F.pad(m[..., :, 1:] - m[..., :, :-1], (0, 1, 0, 0))
    sq = (d_row**2 + d_col**2).clamp_min(1e-12)
    return sq.pow(beta / 2.0).flatten(1).sum(1)


def upsample(m: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x 1 x a x b masks -> N x 1 x h x w, bilinear (half-pixel centres)."""
    return F.interpolate(m, size=size, mode="bilinear", align_corners=False)


def _mask_size(mask_size) -> tuple[int, int]:
    if isinstance(mask_size, (list, tuple)) and len(mask_size) == 2:
        a, b = mask_size
    else:
        a = b = mask_size
    return (check_positive("mask_size", a, integer=True), check_positive("mask_size", b, integer=True))


def run_batch(
    model,
    xs: torch.Tensor,
    targets: torch.Tensor,
    start_scores: torch.Tensor,
    generators: list[torch.Generator],
    *,
    progress: bool = False,
    mask_size=28,
    perturbation: str = "blur",
    blur_radius: float = 10.0,
    lambda1: float = 1e-4,
    lambda2: float = 1e-2,
    beta: float = 3.0,
    lr: float = 0.1,
    iterations: int = 300,
    jitter: int | None = None,
    noise: float = 0.02,
    stop_below: float | None = 0.01,
) -> list[ImageOutcome]:
    """The batched core: one mask per image of ``xs`` (N x 3 x h x w in [0, 1] on the model's device),
    ``targets`` (N,) class numbers, ``start_scores`` (N,) their unperturbed probabilities, one generator per
    image. Options as in :func:`meaningful`."""
    a, b = _mask_size(mask_size)
    if perturbation not in PERTURBATIONS:
        raise ValueError(f"perturbation: expected one of {PERTURBATIONS}, got {perturbation!r}")
    blur_radius = check_positive("blur_radius", blur_radius, allow_zero=True)
    lambda1 = check_positive("lambda1", lambda1, allow_zero=True)
    lambda2 = check_positive("lambda2", lambda2, allow_zero=True)
    beta = check_positive("beta", beta)
    n, c, h, w = xs.shape
    jitter = min(4, max(h, w)) if jitter is None else check_positive("jitter", jitter, integer=True, allow_zero=True)
    noise = check_positive("noise", noise, allow_zero=True)
    iterations, lr, stop_below = check_common(iterations, lr, stop_below)

    if jitter > max(h, w):
        raise ValueError(f"jitter: expected at most the input's longer side ({max(h, w)} pixels), got {jitter}")
    device, dtype = xs.device, xs.dtype
    targets = targets.to(device)
    J = jitter

    def pad(z: torch.Tensor) -> torch.Tensor:  # room for the jitter: replicate J pixels below and right
        return F.pad(z, (0, J, 0, J), mode="replicate") if J else z

    if perturbation == "blur":
        eta = gaussian_blur(xs, blur_radius)
    elif perturbation == "constant":
        eta = xs.mean(dim=(2, 3), keepdim=True).expand_as(xs).clone()
    else:
        eta = None  # fresh uniform noise at every step
    xp = pad(xs)
    etap = None if eta is None else pad(eta)
    # the perturbation the stopping check and the final result use: fixed, drawn first for noise
    eta_eval = eta if eta is not None else torch.stack(
        [torch.rand(c, h, w, generator=g) for g in generators]).to(device, dtype)

    mask = torch.ones(n, 1, a, b, device=device, dtype=dtype, requires_grad=True)

    def loss_fn(rows: torch.Tensor, step: int):
        m = mask[rows]
        xj, ej, eps = [], [], []
        for r in rows.tolist():
            g = generators[r]
            dy, dx = (torch.randint(0, J + 1, (2,), generator=g).tolist() if J else (0, 0))
            eps.append(torch.randn(1, a, b, generator=g) if noise > 0 else None)
            xj.append(xp[r, :, dy : dy + h, dx : dx + w])
            if etap is None:
                ej.append(torch.rand(c, h, w, generator=g).to(device, dtype))
            else:
                ej.append(etap[r, :, dy : dy + h, dx : dx + w])
        xj, ej = torch.stack(xj), torch.stack(ej)
        if noise > 0:
            e = torch.stack(eps).to(device, dtype)
            m_used = m + ((m + noise * e).clamp(0.0, 1.0) - m).detach()
        else:
            m_used = m
        big = upsample(m_used, (h, w))
        probs = target_probability(model, ej + big * (xj - ej), targets[rows])
        losses = lambda1 * (1.0 - m).abs().flatten(1).sum(1) + lambda2 * tv_norm(m, beta) + probs
        return losses, probs

    def confirm(rows: torch.Tensor) -> torch.Tensor:  # the probability without jitter and noise
        big = upsample(mask[rows], (h, w))
        e = eta_eval[rows]
        return target_probability(model, e + big * (xs[rows] - e), targets[rows])

    def project(rows: torch.Tensor) -> None:
        mask[rows] = mask[rows].clamp(0.0, 1.0)

    result = optimize(
        loss_fn, [mask], start_scores, iterations=iterations, lr=lr, stop_below=stop_below,
        progress=progress, desc="meaningful", project=project,
        confirm=confirm,
    )
    with torch.no_grad():
        m = mask.detach()
        big = upsample(m, (h, w))
        perturbed = eta_eval + big * (xs - eta_eval)
        after = model.to_probabilities(model.forward(perturbed))
        after = after.gather(1, targets.view(-1, 1)).view(-1).float().cpu().numpy()
    heat = (1.0 - big[:, 0]).float().cpu().numpy()
    perturbed_np = perturbed.float().cpu().numpy().transpose(0, 2, 3, 1)
    out = []
    for i in range(n):
        before = float(start_scores[i])
        extras = {
            "perturbed": np.ascontiguousarray(perturbed_np[i], dtype=np.float32),
            "mask": m[i, 0].float().cpu().numpy(),
            "score_before": before,
            "score_after": float(after[i]),
            "score_drop": (before - float(after[i])) / before if before > 0 else 0.0,
            "iterations": int(result.steps[i]),
            "stopped_early": bool(result.stopped[i]),
            "trace": result.trace[i],
        }
        out.append(ImageOutcome(map=heat[i], extras=extras, n_evals=result.forwards(i) + 1))
    return out


@register(
    "meaningful",
    family="learned",
    description="Meaningful perturbation: a learned smooth mask whose blurring removes the target's score",
)
def meaningful(
    ctx: Context,
    *,
    mask_size=28,
    perturbation: str = "blur",
    blur_radius: float = 10.0,
    lambda1: float = 1e-4,
    lambda2: float = 1e-2,
    beta: float = 3.0,
    lr: float = 0.1,
    iterations: int = 300,
    jitter: int | None = None,
    noise: float = 0.02,
    stop_below: float | None = 0.01,
) -> MethodResult:
    """Learn a ``mask_size`` mask (int or (rows, cols), upsampled bilinearly) with Adam (``lr``) for at most
    ``iterations`` steps, stopping once the target's probability falls below ``stop_below`` times its
    starting value (0 or None: run every step). ``perturbation``: ``"blur"`` (Gaussian, ``blur_radius``
    = sigma in pixels of the model input), ``"constant"`` (the image's mean colour) or ``"noise"`` (uniform
    noise, fresh each step; the stopping check and the result use one fixed draw). ``lambda1`` weighs
    ``sum |1 - m|``, ``lambda2`` weighs ``TV_beta(m)``; each step
    the input is shifted by 0..``jitter`` pixels (None: 4, at most the input's longer side) and the mask gets
    Gaussian noise of std ``noise``.

    Map: ``1 - M`` (the upsampled mask), in [0, 1]. Extras: ``perturbed`` (h x w x 3, the final blended
    input), ``mask`` (the low-resolution m), ``score_before``, ``score_after``, ``score_drop`` (relative),
    ``iterations``, ``stopped_early``, ``trace`` (the target probability at each step).
    """
    outs = run_batch(
        ctx.model, ctx.x.unsqueeze(0), torch.tensor([ctx.target]), torch.tensor([float(ctx.probs[ctx.target])]),
        [ctx.generator], progress=ctx.progress, mask_size=mask_size, perturbation=perturbation,
        blur_radius=blur_radius, lambda1=lambda1, lambda2=lambda2, beta=beta, lr=lr, iterations=iterations,
        jitter=jitter, noise=noise, stop_below=stop_below,
    )
    return MethodResult(map=outs[0].map, interpolation="bilinear", extras=outs[0].extras)


def explain_batch(model, images, targets=None, *, seed: int = 0, progress: bool = True,
                  group_size: int | None = None, **options) -> list:
    """Meaningful-perturbation explanations of many images, their masks optimized as one batch on the model's
    device. ``targets``: None (top class each), one class for all, or one per image. Each result equals
    ``unveil.explain(model, image, method="meaningful", seed=seed, **options)`` within float rounding.
    ``group_size``: the most images per batch (default 16). Returns a list of :class:`unveil.Explanation`."""
    return _explain_batch("meaningful", run_batch, model, images, targets, seed=seed, progress=progress,
                          group_size=group_size, **options)
