"""A learned perturbation ("deep explanation"): a small CNN, trained per image, generates a perturbed image x'
that the model no longer recognizes while staying close to x; where x' differs from x is the explanation.

The generator is ``blocks`` x ``layers`` k x k convolutions (C -> C channels, same padding) with a ReLU after
each block, its output rescaled to the input's range ``[min x, max x]``. Adam (``lr``) minimizes, per image,

    p_target(x') + l1 * mean |x - x'|

The map post-processes the difference as the method describes: the channel mean of ``|x - x'|`` raised to
``power``, a ``border`` fraction zeroed on every side (padding artefacts), a ``dilation`` x ``dilation`` grey
dilation; its centre of mass is reported. Images are in [0, 1] throughout, in
the model's channel order (RGB for RGB models; any channel count works).

The generator starts as the identity (centred delta kernels plus ``init_noise``), so that x' is close to x at
step 0 (exactly x with ``init_noise=0``; the default noise through the nine convolutions and the rescale
leaves a mean |x - x'| of about 0.1) and early stopping marks the first x' the model no longer recognizes;
``init="random"`` starts from PyTorch's default convolution initialisation instead (x' is then noise at step
0, so early stopping would end the optimization at once: combine it with ``stop_below=0``).

Caveat: the generator's easiest way to erase a class is a global change of brightness and contrast, so with
the defaults the difference follows the image's brightness and barely depends on the class (measured figures in
the README; a smaller ``lr`` such as 5e-4 with ``init_noise=0`` gave class-specific maps at 2-5x the time).

Many images: :func:`explain_batch` trains one generator per image, all as one batch (grouped convolutions).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._optimize import ImageOutcome, check_common, optimize, target_probability
from ._optimize import explain_batch as _explain_batch
from .registry import Context, MethodResult, check_positive, register

__all__ = ["learned", "explain_batch", "run_batch", "postprocess", "generate", "INITS"]

INITS = ("identity", "random")


def generate(x: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor], layers: int) -> torch.Tensor:
    """Run one generator per image: ``x`` N x C x h x w, ``weights[l]`` N x C x C x k x k, ``biases[l]`` N x C;
    a ReLU after every ``layers`` convolutions; the output rescaled to each image's [min x, max x]."""
    n, c, h, w = x.shape
    k = weights[0].shape[-1]
    z = x
    for i, (wt, b) in enumerate(zip(weights, biases)):
        z = F.conv2d(z.reshape(1, n * c, h, w), wt.reshape(n * c, c, k, k), b.reshape(n * c), padding=k // 2, groups=n)
        z = z.reshape(n, c, h, w)
        if (i + 1) % layers == 0:
            z = torch.relu(z)
    zmin = z.amin(dim=(1, 2, 3), keepdim=True)
    zmax = z.amax(dim=(1, 2, 3), keepdim=True)
    xmin = x.amin(dim=(1, 2, 3), keepdim=True)
    xmax = x.amax(dim=(1, 2, 3), keepdim=True)
    return (z - zmin) / (zmax - zmin).clamp_min(1e-12) * (xmax - xmin) + xmin


#: The most convolutions (``blocks`` x ``layers``) a generator may have (the paper's is 3 x 3).
MAX_CONVOLUTIONS = 256


def postprocess(difference: np.ndarray, power: float = 6.0, border: float = 0.1, dilation: int = 20):
    """h x w channel-mean ``|x - x'|`` -> (map, centre of mass (row, col) in the same pixels, NaN if empty):
    raised to ``power``, ``int(border * side)`` pixels zeroed on each side, grey-dilated by a square of
    ``dilation`` pixels (a square wider than 2 x the longer side + 1 covers the whole image from every pixel,
    so larger ones are taken at that width: the same result)."""
    from scipy import ndimage  # here, not at import: the method registry loads this module

    d = np.asarray(difference, dtype=np.float64) ** power
    h, w = d.shape
    bh, bw = int(border * h), int(border * w)
    if bh:
        d[:bh] = 0.0
        d[h - bh :] = 0.0
    if bw:
        d[:, :bw] = 0.0
        d[:, w - bw :] = 0.0
    if dilation > 1:
        side = min(int(dilation), 2 * max(h, w) + 1)
        d = ndimage.grey_dilation(d, size=(side, side), mode="constant", cval=0.0)
    com = ndimage.center_of_mass(d) if d.sum() > 0 else (float("nan"), float("nan"))
    return d.astype(np.float32), (float(com[0]), float(com[1]))


def _init_params(n, c, k, n_conv, init, init_noise, generators, device, dtype):
    weights = torch.zeros(n_conv, n, c, c, k, k)
    biases = torch.zeros(n_conv, n, c)
    bound = 1.0 / np.sqrt(c * k * k)
    for i, g in enumerate(generators):
        for j in range(n_conv):
            if init == "identity":
                wt = torch.zeros(c, c, k, k)
                wt[range(c), range(c), k // 2, k // 2] = 1.0
                if init_noise > 0:
                    wt += init_noise * torch.randn(c, c, k, k, generator=g)
                b = torch.zeros(c)
            else:
                wt = (torch.rand(c, c, k, k, generator=g) * 2 - 1) * bound
                b = (torch.rand(c, generator=g) * 2 - 1) * bound
            weights[j, i], biases[j, i] = wt, b
    ws = [weights[j].to(device, dtype).requires_grad_(True) for j in range(n_conv)]
    bs = [biases[j].to(device, dtype).requires_grad_(True) for j in range(n_conv)]
    return ws, bs


def run_batch(
    model,
    xs: torch.Tensor,
    targets: torch.Tensor,
    start_scores: torch.Tensor,
    generators: list[torch.Generator],
    *,
    progress: bool = False,
    kernel_size: int = 3,
    blocks: int = 3,
    layers: int = 3,
    lr: float = 0.01,
    l1: float = 1.0,
    iterations: int = 500,
    init: str = "identity",
    init_noise: float = 0.01,
    power: float = 6.0,
    border: float = 0.1,
    dilation: int = 20,
    stop_below: float | None = 0.01,
) -> list[ImageOutcome]:
    """The batched core: one generator per image of ``xs`` (N x C x h x w in [0, 1] on the model's device),
    ``targets`` (N,), ``start_scores`` (N,), one torch generator per image. Options as in :func:`learned`."""
    k = check_positive("kernel_size", kernel_size, integer=True)
    if k % 2 == 0:
        raise ValueError(f"kernel_size: expected an odd int (same padding), got {kernel_size!r}")
    blocks = check_positive("blocks", blocks, integer=True)
    layers = check_positive("layers", layers, integer=True)
    if blocks * layers > MAX_CONVOLUTIONS:
        raise ValueError(f"blocks x layers: {blocks} x {layers} convolutions, more than the {MAX_CONVOLUTIONS} "
                         "a generator may have")
    l1 = check_positive("l1", l1, allow_zero=True)
    if init not in INITS:
        raise ValueError(f"init: expected one of {INITS}, got {init!r}")
    init_noise = check_positive("init_noise", init_noise, allow_zero=True)
    power = check_positive("power", power)
    border = check_positive("border", border, allow_zero=True)
    if border >= 0.5:
        raise ValueError(f"border: expected a fraction in [0, 0.5) of each side, got {border!r}")
    dilation = check_positive("dilation", dilation, integer=True)
    iterations, lr, stop_below = check_common(iterations, lr, stop_below)
    n, c, h, w = xs.shape
    device, dtype = xs.device, xs.dtype
    targets = targets.to(device)
    ws, bs = _init_params(n, c, k, blocks * layers, init, init_noise, generators, device, dtype)

    def loss_fn(rows: torch.Tensor, step: int):
        x = xs[rows]
        xp = generate(x, [wt[rows] for wt in ws], [b[rows] for b in bs], layers)
        probs = target_probability(model, xp, targets[rows])
        return probs + l1 * (x - xp).abs().flatten(1).mean(1), probs

    result = optimize(
        loss_fn, ws + bs, start_scores, iterations=iterations, lr=lr, stop_below=stop_below,
        progress=progress, desc="learned",
    )
    with torch.no_grad():
        perturbed = generate(xs, [wt.detach() for wt in ws], [b.detach() for b in bs], layers)
        after = model.to_probabilities(model.forward(perturbed))
        after = after.gather(1, targets.view(-1, 1)).view(-1).float().cpu().numpy()
        diff = (xs - perturbed).abs().mean(dim=1).float().cpu().numpy()
    perturbed_np = perturbed.float().cpu().numpy().transpose(0, 2, 3, 1)
    out = []
    for i in range(n):
        heat, com = postprocess(diff[i], power, border, dilation)
        before = float(start_scores[i])
        extras = {
            "perturbed": np.ascontiguousarray(perturbed_np[i], dtype=np.float32),
            "difference": diff[i].astype(np.float32),
            "center_of_mass_input": com,
            "score_before": before,
            "score_after": float(after[i]),
            "score_drop": (before - float(after[i])) / before if before > 0 else 0.0,
            "iterations": int(result.steps[i]),
            "stopped_early": bool(result.stopped[i]),
            "trace": result.trace[i],
        }
        out.append(ImageOutcome(map=heat, extras=extras, n_evals=result.forwards(i) + 1))
    return out


def _finish(outcome: ImageOutcome, size: tuple[int, int]) -> None:
    """Add ``center_of_mass`` in the original image's pixels (row, col) to an image's extras."""
    h, w = outcome.map.shape
    r, c = outcome.extras["center_of_mass_input"]
    outcome.extras["center_of_mass"] = ((r + 0.5) * size[0] / h - 0.5, (c + 0.5) * size[1] / w - 0.5)


@register(
    "learned",
    family="learned",
    description="Learned perturbation: a small CNN trained per image to erase the target; the map is where it changed",
)
def learned(
    ctx: Context,
    *,
    kernel_size: int = 3,
    blocks: int = 3,
    layers: int = 3,
    lr: float = 0.01,
    l1: float = 1.0,
    iterations: int = 500,
    init: str = "identity",
    init_noise: float = 0.01,
    power: float = 6.0,
    border: float = 0.1,
    dilation: int = 20,
    stop_below: float | None = 0.01,
) -> MethodResult:
    """Train a generator of ``blocks`` x ``layers`` ``kernel_size`` convolutions with Adam (``lr``) for at most
    ``iterations`` steps on ``p_target(x') + l1 * mean |x - x'|``, stopping once the target's probability is
    below ``stop_below`` times its start (0 or None: every step). ``init``: ``"identity"`` (plus Gaussian
    ``init_noise`` on the kernels) or ``"random"``. Map: ``mean_c |x - x'|`` ** ``power``, ``border`` zeroed,
    grey-dilated by ``dilation`` pixels (of the model input).

    Extras: ``difference`` (the raw h x w channel mean of ``|x - x'|``), ``perturbed`` (h x w x C x'),
    ``center_of_mass`` (row, col of the map, original image pixels; ``center_of_mass_input`` in model-input
    pixels), ``score_before``, ``score_after``, ``score_drop``, ``iterations``, ``stopped_early``, ``trace``.
    """
    outs = run_batch(
        ctx.model, ctx.x.unsqueeze(0), torch.tensor([ctx.target]), torch.tensor([float(ctx.probs[ctx.target])]),
        [ctx.generator], progress=ctx.progress, kernel_size=kernel_size, blocks=blocks, layers=layers, lr=lr,
        l1=l1, iterations=iterations, init=init, init_noise=init_noise, power=power, border=border,
        dilation=dilation, stop_below=stop_below,
    )
    _finish(outs[0], ctx.image.shape[:2])
    drop, before = outs[0].extras["score_drop"], outs[0].extras["score_before"]
    if not drop > 1e-6:  # the relative drop: nothing erased
        import warnings

        warnings.warn(f"learned: the target's probability did not drop ({before:.4g} before and after "
                      f"{outs[0].extras['iterations']} steps): the map shows where the generator drifted from "
                      "the image, not what the model needs (too few iterations, a model that ignores its input "
                      "or a saturated softmax)", UserWarning, stacklevel=3)
    return MethodResult(map=outs[0].map, interpolation="bilinear", extras=outs[0].extras)


def explain_batch(model, images, targets=None, *, seed: int = 0, progress: bool = True,
                  group_size: int | None = None, **options) -> list:
    """Learned-perturbation explanations of many images, one generator per image, all trained as one batch on
    the model's device. ``targets``: None (top class each), one class for all, or one per image. Each result
    equals ``unveil.explain(model, image, method="learned", seed=seed, **options)`` within float rounding.
    ``group_size``: the most images per batch (default 16). Returns a list of :class:`unveil.Explanation`."""
    return _explain_batch("learned", run_batch, model, images, targets, seed=seed, progress=progress,
                          group_size=group_size, finish=_finish, **options)
