"""Grad-CAM (Selvaraju et al. 2017): the feature maps A_k of a convolutional layer weighted by the spatial mean
of d score / d A_k, summed over k, then ReLU. The coarse map (the layer's resolution) is returned with
``interpolation="bilinear"``, so the pipeline upsamples it to the image.

The layer's output is captured by a forward hook that exists only during a pass (removed in ``finally``): the
call's prediction pass, whose graph Grad-CAM then reuses, or its own pass for other inputs (SmoothGrad's);
the gradient is taken with ``torch.autograd.grad`` with respect to that output, so no backward hooks and no
``.grad`` are left on the user's module. A layer whose output a later operation changes in place (``Conv2d``
then ``ReLU(inplace=True)``, as in VGG; ResNet's ``out += identity``) is detected by the tensor's version
counter; the pass is then made again with the hook handing the network a copy, so the map is still that of the
layer's own output (one more pass, for such layers only).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch

from ..models.base import autograd_nodes, module_lock
from .gradients import Attributor, _require_torch, check_output, register_attributor, run_attributor, target_scores
from .registry import Context, MethodResult, register

__all__ = ["resolve_layer", "captured_outputs", "gradcam_maps", "build_gradcam"]


def resolve_layer(net: torch.nn.Module, layer: str | None) -> tuple[str | None, torch.nn.Module | None]:
    """(name, module) for ``layer`` (a dotted submodule name); (None, None) for the default (found while
    running: the last ``torch.nn.Conv2d`` the forward pass calls)."""
    if layer is None:
        if not any(isinstance(m, torch.nn.Conv2d) for m in net.modules()):
            raise ValueError("gradcam: the model has no torch.nn.Conv2d layer; pass layer='<module name>'")
        return None, None
    if not isinstance(layer, str):
        raise TypeError(f"layer: expected a module name (str), got {type(layer).__name__}")
    names = dict(net.named_modules())
    if layer not in names or layer == "":
        convs = [n for n, m in names.items() if isinstance(m, torch.nn.Conv2d)][-5:]
        raise ValueError(f"layer: the model has no submodule {layer!r}; its last convolutions are {convs}")
    return layer, names[layer]


class _ModifiedInPlace(Exception):
    """The recorded layer output was changed in place after the layer (its version counter moved)."""


@contextlib.contextmanager
def captured_outputs(net: torch.nn.Module, layer: str | None, copy: bool = False):
    """Inside the block, forward passes record the output of ``layer`` (default: of every ``Conv2d``) as
    (name, output, version) triples, in call order, in the list this yields; the hooks are removed on exit.
    ``copy``: the network continues with a copy of the output, so later in-place operations leave the recorded
    tensor (and its gradient) alone."""
    name, module = resolve_layer(net, layer)
    targets = [(name, module)] if module is not None else [
        (n, m) for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)
    ]
    seen: list = []
    handles = []

    def hook(mod, args, out, n):
        is_tensor = isinstance(out, torch.Tensor)
        seen.append((n, out, out._version if is_tensor else None))
        return out.clone() if copy and is_tensor else None

    with module_lock(net):  # no other thread's pass runs through these hooks
        try:
            for n, m in targets:
                handles.append(m.register_forward_hook(lambda mod, args, out, n=n: hook(mod, args, out, n)))
            yield seen
        finally:
            for h in handles:
                h.remove()


def _weighted_maps(scores: torch.Tensor, seen: list, layer: str | None):
    """(maps after ReLU, before ReLU, layer name) from the target ``scores`` of a pass that recorded the
    layer's outputs in ``seen`` (the last one counts)."""
    if not seen:
        raise ValueError(f"gradcam: layer {layer or 'conv'!r} was not called by the forward pass")
    used, a, version = seen[-1]
    if len(seen) > 1:  # the last call (of the default's convolutions, or of a layer called more than once)
        reached = autograd_nodes(scores)  # whose output the score depends on
        used, a, version = next((e for e in reversed(seen) if getattr(e[1], "grad_fn", None) in reached), seen[-1])
    if not isinstance(a, torch.Tensor) or a.dim() != 4:
        raise ValueError(f"gradcam: layer {used!r} gives {type(a).__name__} "
                         f"{tuple(getattr(a, 'shape', ()))}; expected N x K x h x w feature maps")
    if a._version != version:
        raise _ModifiedInPlace(used)
    (g,) = torch.autograd.grad(scores.sum(), a, allow_unused=True)
    if g is None:
        raise ValueError(f"gradcam: the target's score does not depend on layer {used!r} (a branch the output does "
                         "not use?); pass layer='<module name>' of a layer on the output's path")
    alpha = g.detach().float().mean(dim=(2, 3), keepdim=True)
    raw = (alpha * a.detach().float()).sum(dim=1, keepdim=True)
    return torch.relu(raw), raw, used


def gradcam_maps(
    model, xs: torch.Tensor, target: int, *, layer: str | None = None, output: str = "logit", batch_size: int = 16,
    kept: tuple | None = None, copy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Grad-CAM of N inputs (N x C x H x W in [0, 1]).

    ``kept``: (leaf, raw outputs, recorded layer outputs) of a forward pass of ``xs`` already made inside
    :func:`captured_outputs` (the call's prediction pass): only its partial backward runs.
    Returns (N x 1 x h x w maps after ReLU, the same before ReLU, the layer's name); h x w is the layer's
    output resolution. ``copy``: hand the network a copy of the layer's output from the start (what a layer
    whose output is changed in place needs; found out and done on the fly otherwise).
    """
    _require_torch(model)
    if kept is not None:
        _, raw_out, seen = kept
        try:
            return _weighted_maps(target_scores(model, raw_out, target, output), seen, layer)
        except _ModifiedInPlace as changed:  # the pass again, the network working on a copy of the layer's output
            return gradcam_maps(model, xs, target, layer=str(changed), output=output, batch_size=batch_size,
                                copy=True)
    maps, raws = [], []
    used = layer
    for s in range(0, xs.shape[0], batch_size):
        while True:
            with captured_outputs(model.fn, used, copy=copy) as seen:
                xb = xs[s : s + batch_size].detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    sc = target_scores(model, model.forward(xb), target, output)
            try:
                m, raw, used = _weighted_maps(sc, seen, used)
                break
            except _ModifiedInPlace as changed:
                if copy:  # pragma: no cover - a copy is never changed in place by the network
                    raise
                used, copy = str(changed), True
        seen.clear()
        raws.append(raw)
        maps.append(m)
    return torch.cat(maps), torch.cat(raws), used


def build_gradcam(ctx: Context, *, layer: str | None = None, output: str = "logit") -> Attributor:
    check_output(output)
    _require_torch(ctx.model)
    resolve_layer(ctx.model.fn, layer)
    extras: dict = {}

    def attribute(xs):
        m, raw, used = gradcam_maps(ctx.model, xs, ctx.target, layer=layer, output=output,
                                    batch_size=ctx.gradient_batch_for(len(xs)), kept=ctx.take_prediction(xs))
        extras["layer"] = used
        extras["raw_map"] = raw[0, 0].cpu().numpy()
        return m

    return Attributor(attribute, reduce=lambda a: a[:, 0], interpolation="bilinear", extras=extras)


register_attributor("gradcam", build_gradcam)


@register(
    "gradcam",
    family="gradient",
    needs_gradients=True,
    reuses_prediction=lambda model, x, options: captured_outputs(model.fn, options.get("layer")),
    description="Grad-CAM (Selvaraju et al. 2017): ReLU of a conv layer's gradient-weighted feature maps",
)
def gradcam(ctx: Context, *, layer: str | None = None, output: str = "logit") -> MethodResult:
    """``layer``: a submodule name (``dict(net.named_modules())``), default the last ``Conv2d`` called whose
    output the score depends on (a layer called more than once: its last call). A layer the score does not
    depend on is an error; an all-0 map (ReLU of negative maps, or a zero gradient) gets a warning.
    The coarse map is upsampled to the image bilinearly; ``extras["raw_map"]``: before the ReLU;
    ``extras["layer"]``: the layer used."""
    result = run_attributor(ctx, build_gradcam(ctx, layer=layer, output=output))
    result.extras.pop("attribution", None)  # the map itself (1 x h x w)
    if not np.any(result.map):
        used = result.extras["layer"]
        why = (f"the target's gradient at layer {used!r} is 0 everywhere" if not np.any(result.extras["raw_map"])
               else f"the gradient-weighted maps of layer {used!r} are negative everywhere, which the ReLU removes "
               "(extras['raw_map'] keeps them)")
        warnings.warn(f"gradcam: the map is all 0: {why}; try another layer=", UserWarning, stacklevel=3)
    return result
