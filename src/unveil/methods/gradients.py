"""Gradient methods (white box): saliency, gradient x input, integrated gradients and SmoothGrad.

Every gradient method is built in two layers. An :class:`Attributor` holds the maths for one model, target
and set of options: ``attribute(xs)`` maps a batch of model inputs (N x C x H x W, in [0, 1]) to per-channel
attributions (N x C' x h x w) and ``reduce`` turns those into N x h x w maps. The registered method runs its
attributor on the one input of the call; :func:`smoothgrad` runs *any* registered attributor on noisy copies
and averages (composition: a new gradient method becomes smoothable by calling :func:`register_attributor`).

Conventions shared by the gradient family:

- The score is the target's **logit** by default (``output="logit"``: the raw output of the torch module,
  which is the logit for a classifier; for a module declared ``outputs="probabilities"`` it is that
  probability). ``output="probability"`` differentiates the softmax probability instead.
- Gradients are taken with respect to the model input in [0, 1], before the adapter's normalization (so the
  normalization counts as the network's first layer); "input" in gradient x input means that tensor.
- Attributions keep their sign. C x H x W attributions become H x W maps by **summing over channels**
  (saliency: the maximum of |gradient| over channels, its definition); the per-channel attribution is kept
  in ``extras["attribution"]``.
- Every forward pass goes through ``Model.forward`` (counted), in chunks of at most
  ``ctx.gradient_batch_size``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from ..perturb import make_baseline, progress_bar
from .registry import Context, MethodResult, option_mapping, register

__all__ = [
    "OUTPUTS",
    "IG_METHODS",
    "Attributor",
    "register_attributor",
    "attributor_names",
    "build_attributor",
    "target_scores",
    "input_gradients",
    "ig_nodes",
    "sum_channels",
    "max_abs_channels",
    "completeness_error",
]

OUTPUTS = ("logit", "probability")
#: integration rules of integrated gradients (``"riemann"`` is an alias of ``"riemann_trapezoid"``).
IG_METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


# ----------------------------------------------------------------------------- plain functions
def check_output(output: str) -> str:
    if output not in OUTPUTS:
        raise ValueError(f"output: expected one of {OUTPUTS}, got {output!r}")
    return output


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def target_scores(model, out: torch.Tensor, target: int, output: str = "logit") -> torch.Tensor:
    """The N differentiable scores of ``target`` from the raw outputs ``out`` (N x classes)."""
    if output == "probability":
        out = model.to_probabilities(out)
    return out[:, target]


def _require_torch(model) -> None:
    if hasattr(model, "require_gradients"):
        model.require_gradients()
    elif not getattr(model, "differentiable", False):
        raise TypeError(
            f"model {getattr(model, 'name', model)!r} gives no gradients: gradient methods need a "
            "torch.nn.Module (wrap one with unveil.Model)"
        )


def input_gradients(
    model,
    xs: torch.Tensor,
    target: int,
    *,
    output: str = "logit",
    batch_size: int = 16,
) -> torch.Tensor:
    """d score / d input for each of the N inputs ``xs`` (N x C x H x W in [0, 1]); N x C x H x W, detached.

    Chunks of at most ``batch_size`` inputs per forward/backward pass. Only the inputs get gradients: the
    module's parameters keep ``grad is None``.
    """
    _require_torch(model)
    return torch.cat([g for _, g in chunked_gradients(model, _chunks(xs, batch_size), target, output=output)])


def _chunks(xs: torch.Tensor, batch_size: int) -> Iterable[torch.Tensor]:
    for s in range(0, xs.shape[0], batch_size):
        yield xs[s : s + batch_size]


def backward_scores(model, leaf: torch.Tensor, raw: torch.Tensor, target: int, output: str = "logit"):
    """(scores, d score / d leaf) of ``target`` from the raw outputs ``raw`` of a forward pass of ``leaf`` made
    with gradients; both detached."""
    with torch.enable_grad():
        s = target_scores(model, raw, target, output)
        (g,) = torch.autograd.grad(s.sum(), leaf)
    return s.detach(), g.detach()


def chunked_gradients(model, chunks: Iterable[torch.Tensor], target: int, *, output: str = "logit"):
    """Yield (scores, gradients) for each chunk (n x C x H x W) of inputs; both detached."""
    for chunk in chunks:
        xb = chunk.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            raw = model.forward(xb)
        yield backward_scores(model, xb, raw, target, output)


#: The most path points integrated gradients takes (each one is a forward and backward pass; Gauss-Legendre
#: nodes for 10000 take ~2.5 s to compute, and 500 steps already integrate to under 2 % on the default model).
MAX_STEPS = 10_000


def ig_nodes(n_steps: int, method: str = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """Points alpha in [0, 1] and weights of the integration rule (``IG_METHODS``), float64, ``n_steps`` each.

    ``gausslegendre``: Gauss-Legendre nodes mapped to [0, 1]; ``riemann_trapezoid``: alpha = 0, 1/(n-1), ..., 1
    with half weights at the ends (needs n >= 2); ``riemann_left`` / ``right`` / ``middle``: n equal steps,
    alpha at the left end, right end or middle of each. These are the points and weights captum uses.
    """
    method = "riemann_trapezoid" if method == "riemann" else method
    if method not in IG_METHODS:
        raise ValueError(f"integration: expected one of {IG_METHODS} (or 'riemann'), got {method!r}")
    n = check_positive_int(n_steps, "n_steps", 2 if method == "riemann_trapezoid" else 1)
    if n > MAX_STEPS:
        raise ValueError(f"n_steps: {n} path points, each a forward and backward pass, is more than the "
                         f"{MAX_STEPS} allowed (500 steps already integrate to under 2 % on the default model)")
    if method == "gausslegendre":
        if n <= 200:  # numpy's nodes, as captum's; its eigenvalue solve is O(n^3) (24 s at 3000 steps)
            x, w = np.polynomial.legendre.leggauss(n)
        else:  # scipy's, equal to them to 1e-13, in O(n^2) (0.2 s at 3000 steps)
            from scipy.special import roots_legendre

            x, w = roots_legendre(n)
        return 0.5 * (x + 1.0), 0.5 * w
    if method == "riemann_trapezoid":
        w = np.full(n, 1.0 / (n - 1))
        w[0] = w[-1] = 0.5 / (n - 1)
        return np.linspace(0.0, 1.0, n), w
    w = np.full(n, 1.0 / n)
    if method == "riemann_left":
        return np.arange(n) / n, w
    if method == "riemann_right":
        return np.arange(1, n + 1) / n, w
    return (np.arange(n) + 0.5) / n, w


def integrated_gradient_sums(
    model,
    xs: torch.Tensor,
    baseline: torch.Tensor,
    target: int,
    *,
    n_steps: int = 50,
    method: str = "gausslegendre",
    output: str = "logit",
    batch_size: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """Integrated gradients of each input in ``xs`` (N x C x H x W) from ``baseline`` (C x H x W).

    The N x n_steps path points ``baseline + alpha (x - baseline)`` are made chunk by chunk (at most
    ``batch_size`` per pass) and their weighted gradients accumulated in place, so memory does not grow with
    ``n_steps``. Returns N x C x H x W attributions ``(x - baseline) * sum_k w_k grad(path_k)`` (float32).
    """
    _require_torch(model)
    alphas, weights = ig_nodes(n_steps, method)
    n, m = xs.shape[0], len(alphas)
    base = baseline.to(xs.device, xs.dtype).unsqueeze(0)
    diff = xs - base
    a = torch.as_tensor(alphas, dtype=xs.dtype, device=xs.device)
    w = torch.as_tensor(weights, dtype=torch.float64, device=xs.device)
    total = torch.zeros(xs.shape, dtype=torch.float64, device=xs.device)
    idx = torch.arange(n * m, device=xs.device)

    def chunks():
        for s in range(0, n * m, batch_size):
            j = idx[s : s + batch_size]
            yield base[0] + a[j % m].view(-1, 1, 1, 1) * diff[j // m]

    w32 = w.float()
    start = 0
    with progress_bar(n * m, "integrated gradients", progress) as bar:
        for _, g in chunked_gradients(model, chunks(), target, output=output):
            j = idx[start : start + g.shape[0]]
            owners, counts = torch.unique_consecutive(j // m, return_counts=True)
            for i, part_w, part_g in zip(owners.tolist(), w32[j % m].split(counts.tolist()),
                                         g.split(counts.tolist())):
                total[i] += torch.tensordot(part_w, part_g, dims=1).double()  # one weighted sum per input
            start += g.shape[0]
            bar.update(g.shape[0])
    return (diff.double() * total).float()


def sum_channels(a: torch.Tensor) -> torch.Tensor:
    """N x C x h x w -> N x h x w, summed over channels (keeps the sign)."""
    return a.sum(dim=1)


def max_abs_channels(a: torch.Tensor) -> torch.Tensor:
    """N x C x h x w -> N x h x w, the largest |value| over channels (saliency's reduction)."""
    return a.abs().amax(dim=1)


def completeness_error(total: float, s_x: float, s_base: float) -> float:
    """|sum of attributions - (s(x) - s(baseline))| / |s(x) - s(baseline)|; when the scores are equal: 0 if the
    attributions sum to 0 too, else inf."""
    delta = s_x - s_base
    gap = abs(total - delta)
    return gap / abs(delta) if delta != 0 else (0.0 if gap == 0 else float("inf"))


def score_pair(model, x: torch.Tensor, baseline: torch.Tensor, target: int, output: str) -> tuple[float, float]:
    """(s(x), s(baseline)) in one forward pass of 2 (counted)."""
    with torch.no_grad():
        s = target_scores(model, model.forward(torch.stack([x, baseline.to(x.device, x.dtype)])), target, output)
    if not math.isfinite(float(s[1])):
        raise baseline_error(model, float(s[1]))
    return float(s[0]), float(s[1])


def baseline_error(model, score: float) -> ValueError:
    """The error for a model whose score on the baseline is NaN or infinite."""
    return ValueError(
        f"model {getattr(model, 'name', model)!r} gives a score of {score} on the baseline: choose another "
        "baseline= (an image, or 'blur'); a model that standardizes each image divides by the zero "
        "spread of a constant image such as the default 'zero'")


# ----------------------------------------------------------------------------- attributors
@dataclass
class Attributor:
    """One gradient method, configured for a model, target and options.

    ``attribute(xs)``: N x C x H x W inputs in [0, 1] -> N x C' x h x w attributions (torch, detached).
    ``reduce``: N x C' x h x w -> N x h x w maps. ``baseline``: the C x H x W reference, if the method has one.
    """

    attribute: Callable[[torch.Tensor], torch.Tensor]
    reduce: Callable[[torch.Tensor], torch.Tensor] = sum_channels
    interpolation: str = "bilinear"
    baseline: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)
    #: may show a progress bar of its own (integrated gradients' many passes); SmoothGrad, which shows one
    #: over its samples, turns it off for the method it wraps
    progress: bool = True


#: name -> builder ``fn(ctx, **options) -> Attributor``; smoothgrad composes any of them.
_ATTRIBUTORS: dict[str, Callable[..., Attributor]] = {}


def register_attributor(name: str, builder: Callable[..., Attributor]) -> None:
    """Make gradient method ``name`` available to :func:`smoothgrad` (``builder(ctx, **options)``)."""
    _ATTRIBUTORS[name] = builder


def attributor_names() -> list[str]:
    return sorted(_ATTRIBUTORS)


def _check_base(name: str) -> None:
    if name not in _ATTRIBUTORS:
        raise ValueError(f"base: expected a gradient method, one of {attributor_names()}, got {name!r}")


def attributor_options(name: str) -> list[str]:
    """The option names gradient method ``name``'s attributor takes."""
    _check_base(name)
    return [p.name for p in list(inspect.signature(_ATTRIBUTORS[name]).parameters.values())[1:]]


def build_attributor(name: str, ctx: Context, options: dict | None = None) -> Attributor:
    """The configured attributor of gradient method ``name`` (options checked like ``explain``'s)."""
    known = attributor_options(name)
    options = option_mapping("base_options", options)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"base_options: method {name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"its options are: {', '.join(known)}")
    return _ATTRIBUTORS[name](ctx, **options)


def run_attributor(ctx: Context, att: Attributor, extras: dict | None = None) -> MethodResult:
    """Run ``att`` on the call's one input and wrap the map as a MethodResult (per-channel attribution kept)."""
    a = att.attribute(ctx.x.unsqueeze(0))
    heat = att.reduce(a)[0]
    out = {"attribution": a[0].cpu().numpy().astype(np.float32), **att.extras, **(extras or {})}
    return MethodResult(map=heat.cpu().numpy().astype(np.float32), interpolation=att.interpolation, extras=out)


def _baseline(ctx: Context, baseline) -> torch.Tensor:
    return make_baseline(ctx.x, baseline)


def _input_gradients(ctx: Context, xs: torch.Tensor, output: str) -> torch.Tensor:
    """:func:`input_gradients` of ``xs``; for the call's own input, the backward of its prediction pass when
    the call kept it (:meth:`Context.take_prediction`), so no second forward."""
    kept = ctx.take_prediction(xs)
    if kept is not None:
        return backward_scores(ctx.model, kept[0], kept[1], ctx.target, output)[1]
    return input_gradients(ctx.model, xs, ctx.target, output=output, batch_size=ctx.gradient_batch_for(len(xs)))


def build_saliency(ctx: Context, *, output: str = "logit") -> Attributor:
    check_output(output)
    _require_torch(ctx.model)

    def attribute(xs):
        return _input_gradients(ctx, xs, output).abs()

    return Attributor(attribute, reduce=max_abs_channels)


def build_grad_input(ctx: Context, *, output: str = "logit") -> Attributor:
    check_output(output)
    _require_torch(ctx.model)

    def attribute(xs):
        return xs * _input_gradients(ctx, xs, output)

    return Attributor(attribute)


def build_integrated_gradients(
    ctx: Context, *, baseline="zero", n_steps: int = 50, integration: str = "gausslegendre", output: str = "logit"
) -> Attributor:
    check_output(output)
    _require_torch(ctx.model)
    ig_nodes(n_steps, integration)  # validates both
    base = _baseline(ctx, baseline)

    def attribute(xs):
        return integrated_gradient_sums(ctx.model, xs, base, ctx.target, n_steps=n_steps, method=integration,
                                        output=output, batch_size=ctx.gradient_batch_size,
                                        progress=ctx.progress and att.progress)

    att = Attributor(attribute, baseline=base)
    return att


register_attributor("saliency", build_saliency)
register_attributor("grad_input", build_grad_input)
register_attributor("integrated_gradients", build_integrated_gradients)


# ----------------------------------------------------------------------------- registered methods
@register(
    "saliency",
    family="gradient",
    needs_gradients=True,
    reuses_prediction=True,
    description="Saliency (Simonyan et al. 2014): max over channels of |d score / d input|",
)
def saliency(ctx: Context, *, output: str = "logit") -> MethodResult:
    """``output``: differentiate the target's ``"logit"`` (default) or its softmax ``"probability"``."""
    return run_attributor(ctx, build_saliency(ctx, output=output))


@register(
    "grad_input",
    family="gradient",
    needs_gradients=True,
    reuses_prediction=True,
    description="Gradient x input (Shrikumar et al. 2016), summed over channels",
)
def grad_input(ctx: Context, *, output: str = "logit") -> MethodResult:
    """Gradient times the model input in [0, 1]; the map sums the channels."""
    return run_attributor(ctx, build_grad_input(ctx, output=output))


@register(
    "integrated_gradients",
    family="gradient",
    needs_gradients=True,
    description="Integrated gradients (Sundararajan et al. 2017) from a baseline, Gauss-Legendre or Riemann",
)
def integrated_gradients(
    ctx: Context, *, baseline="zero", n_steps: int = 50, integration: str = "gausslegendre", output: str = "logit"
) -> MethodResult:
    """(x - baseline) times the path integral of the gradient, with ``n_steps`` points of rule ``integration``
    (named so because ``explain``'s own ``method`` argument picks the explanation method).

    ``baseline``: as the Perturber's (``"zero"`` black, default; ``"mean"``, ``"gray"``, ``"blur"`` or an
    image). ``integration``: ``"gausslegendre"`` (default, as captum's) or ``"riemann"`` (= trapezoid),
    ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``. Chunks of ``batch_size`` path points per
    pass, so memory does not grow with ``n_steps``. ``extras["completeness_error"]``:
    |sum of attributions - (s(x) - s(baseline))| / |s(x) - s(baseline)| (two more forward passes).
    """
    att = build_integrated_gradients(ctx, baseline=baseline, n_steps=n_steps, integration=integration,
                                     output=output)
    result = run_attributor(ctx, att)
    s_x, s_b = score_pair(ctx.model, ctx.x, att.baseline, ctx.target, output)
    total = float(result.extras["attribution"].astype(np.float64).sum())
    result.extras.update(
        score_input=s_x, score_baseline=s_b, attribution_sum=total,
        completeness_error=completeness_error(total, s_x, s_b),
    )
    return result


@register(
    "smoothgrad",
    family="gradient",
    needs_gradients=True,
    description="SmoothGrad (Smilkov et al. 2017): any gradient method averaged over noisy copies of the input",
)
def smoothgrad(
    ctx: Context,
    *,
    base: str = "saliency",
    n_samples: int = 25,
    noise: float = 0.15,
    base_options: dict | None = None,
    output: str | None = None,
) -> MethodResult:
    """Average ``base``'s attributions over ``n_samples`` copies of the input plus Gaussian noise.

    ``noise``: standard deviation as a fraction of the input's range (max - min; the paper's 10-20 %; of 1, the
    range images come in, when the input is flat).
    ``base``: any gradient method (saliency, grad_input, integrated_gradients, elrp, deeplift, gradcam),
    configured by ``base_options``; its baseline, if any, is made from the clean input. The per-channel
    attributions are averaged, then reduced as the base method reduces them. Noise comes from the seed.
    ``output``: what the base differentiates, ``"logit"`` or ``"probability"`` (as every gradient method's
    option; default: ``base_options``' own, else the logit).
    """
    n = check_positive_int(n_samples, "n_samples")
    if isinstance(noise, bool) or not isinstance(noise, (int, float, np.floating)) or not 0 <= noise < np.inf:
        raise ValueError(f"noise: expected a non-negative fraction of the input range, got {noise!r}")
    if base == "smoothgrad":
        raise ValueError("base: smoothgrad cannot wrap itself")
    if output is not None:
        base_options = option_mapping("base_options", base_options)
        inner = check_output(base_options.setdefault("output", check_output(output)))
        if inner != output:
            raise ValueError(f"output={output!r} and base_options={{'output': {inner!r}}} disagree; give one")
        if "output" not in attributor_options(base):
            raise ValueError(f"output: the base method {base!r} has no option 'output'")
    att = build_attributor(base, ctx, base_options)
    att.progress = False  # one bar, over the samples
    x = ctx.x
    spread = float(x.max() - x.min())
    sigma = float(noise) * (spread if spread > 0 else 1.0)  # a flat image: the [0, 1] range images come in
    total = None
    chunk = max(1, ctx.gradient_batch_size)
    with progress_bar(n, f"smoothgrad ({base})", ctx.progress, unit="sample") as bar:
        for s in range(0, n, chunk):
            # one draw per sample, so the noise does not depend on the batch size
            eps = torch.stack([torch.randn(x.shape, generator=ctx.generator) for _ in range(min(chunk, n - s))])
            a = att.attribute(x.unsqueeze(0) + sigma * eps.to(x.device, x.dtype)).double().sum(0, keepdim=True)
            total = a if total is None else total + a
            bar.update(eps.shape[0])
    mean = (total / n).float()
    heat = att.reduce(mean)[0]
    extras = {"attribution": mean[0].cpu().numpy(), "base": base, "sigma": sigma, "n_samples": n, **att.extras}
    return MethodResult(map=heat.cpu().numpy().astype(np.float32), interpolation=att.interpolation, extras=extras)
