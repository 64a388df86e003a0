"""epsilon-LRP and DeepLIFT (Rescale) as modified chain rules (Ancona et al., ICLR 2018; DeepExplain's way).

Both methods are ordinary backpropagation in which the local derivative of every elementwise nonlinearity
y = g(z) is replaced by a *multiplier*:

- epsilon-LRP: g(z) / (z + eps * sign(z)) (sign(+0.0) = +1), then attribution = gradient x input;
- DeepLIFT-Rescale: (g(z) - g(z0)) / (z - z0) with z0 the same unit's input on the baseline (a reference
  forward pass), the ordinary derivative g'(z) where |z - z0| <= 1e-5; attribution = gradient x (input -
  baseline).

Three separate pieces:

- rules are data: a list of ``(module type(s), rule)`` pairs (:data:`ELEMENTWISE`, :func:`elrp_rules`,
  :func:`deeplift_rules`); the first matching pair wins, so a user extends the list by putting pairs in front
  (option ``rules=`` of both methods), e.g. ``[(MyActivation, Rescale())]`` or ``[(nn.Hardswish, Gradient())]``;
- :class:`ModifiedChainRule`, a context manager that installs forward hooks on the matched modules of a
  module and removes them on exit (also after an exception): the user's module object is not changed;
- the attribution itself (:func:`modified_gradients`), which uses ``Model.forward`` (counted) in chunks.

Unsupported nonlinearities raise a clear ``ValueError`` naming them: any module from ``torch.nn``'s
activation family without a rule, and any functional nonlinearity (``torch.sigmoid``, ``F.relu``, ``x.tanh()``,
``F.softmax``, ...) called outside a ruled module. Linear layers,
batch norm (in eval mode), pooling (max pooling by its gradient, as DeepExplain) and additions pass their
ordinary gradient. The default model, EfficientNet-Lite0, uses ``nn.ReLU6`` modules only; the
``efficientnet_lite_pytorch`` package's ``Swish`` / ``MemoryEfficientSwish`` modules have rules too (but the
non-lite squeeze-and-excitation gate calls ``torch.sigmoid`` functionally and is reported as unsupported).
Functional nonlinearities are found after the first modified forward pass, by looking for their nodes
(``SigmoidBackward0``, ...) in the output's autograd graph: ruled units cut their own node out of it.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import numpy as np
import torch

from ..models.base import autograd_nodes, module_lock, stands_for
from ..perturb import make_baseline
from .gradients import (
    Attributor,
    _require_torch,
    backward_scores,
    baseline_error,
    check_output,
    completeness_error,
    register_attributor,
    run_attributor,
    sum_channels,
    target_scores,
)
from .registry import Context, MethodResult, register

__all__ = [
    "Rule",
    "Epsilon",
    "Rescale",
    "Gradient",
    "ELEMENTWISE",
    "elrp_rules",
    "deeplift_rules",
    "ModifiedChainRule",
    "modified_gradients",
    "UnsupportedNonlinearity",
]


class UnsupportedNonlinearity(ValueError):
    """A nonlinearity without a rule was found in the model (the message names it)."""


# ----------------------------------------------------------------------------- rules
class Rule:
    """How the backward of one elementwise nonlinearity y = module(z) is replaced.

    ``multiplier(module, z, y, z0, y0)`` returns the tensor that replaces dy/dz (broadcastable to z), or None
    to keep the ordinary gradient. ``z0``, ``y0``: the unit's input and output on the baseline (only given,
    and recorded, when ``needs_reference``).
    """

    needs_reference = False

    def multiplier(self, module, z, y, z0=None, y0=None):  # pragma: no cover - interface
        raise NotImplementedError


class Gradient(Rule):
    """Keep the ordinary gradient (mark a nonlinearity as accepted as it is)."""

    def multiplier(self, module, z, y, z0=None, y0=None):
        return None

    def __repr__(self):
        return "Gradient()"


class Epsilon(Rule):
    """epsilon-LRP: g(z) / (z + eps * sign(z)), sign(+0.0) = +1 (the sign bit decides, as ``copysign``)."""

    def __init__(self, eps: float = 1e-4):
        if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not 0 <= eps < np.inf:
            raise ValueError(f"eps: expected a non-negative finite float, got {eps!r}")
        self.eps = float(eps)

    def multiplier(self, module, z, y, z0=None, y0=None):
        den = torch.copysign(torch.tensor(self.eps, dtype=z.dtype), z)  # +eps for z >= +0.0, -eps for z <= -0.0
        m = torch.div(y, den.add_(z), out=den)
        return m if self.eps > 0 else torch.nan_to_num_(m, nan=0.0)  # eps = 0: 0/0 at z = 0 counts as 0

    def __repr__(self):
        return f"Epsilon({self.eps})"


def _ones(z):
    return torch.ones((), dtype=z.dtype, device=z.device).expand_as(z)


# the piecewise-linear ones through autograd's own backward kernels (one pass each)
def _hardtanh_grad(module, z):
    return torch.ops.aten.hardtanh_backward(_ones(z), z, module.min_val, module.max_val)


def _relu_grad(module, z):
    return torch.ops.aten.threshold_backward(_ones(z), z, 0)


def _leaky_relu_grad(module, z):
    return torch.ops.aten.leaky_relu_backward(_ones(z), z, module.negative_slope, False)


def _sigmoid_grad(module, z):
    s = torch.sigmoid(z)
    return s * (1 - s)


def _silu_grad(module, z):
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


#: g'(z) in closed form for the common nonlinearities (the same values autograd gives, also at the kinks:
#: 0 at z = 0 for ReLU, 0 at both ends of ReLU6/Hardtanh); other types go through autograd.
_DERIVATIVES: dict[type, Callable] = {
    torch.nn.ReLU: _relu_grad,
    torch.nn.ReLU6: _hardtanh_grad,
    torch.nn.Hardtanh: _hardtanh_grad,
    torch.nn.LeakyReLU: _leaky_relu_grad,
    torch.nn.Sigmoid: _sigmoid_grad,
    torch.nn.Tanh: lambda module, z: 1 - torch.tanh(z) ** 2,
    torch.nn.SiLU: _silu_grad,
}


def local_gradient(module: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """g'(z) of an elementwise module: in closed form for the common types (exact type match), else by
    autograd through its own ``forward`` (hooks not run)."""
    closed = _DERIVATIVES.get(type(module))
    if closed is not None:
        return closed(module, z)
    with torch.enable_grad():
        leaf = z.detach().requires_grad_(True)  # a new leaf sharing z's memory
        y = module.forward(leaf.clone() if getattr(module, "inplace", False) else leaf)
        (g,) = torch.autograd.grad(y, leaf, torch.ones_like(y))
    return g


class Rescale(Rule):
    """DeepLIFT Rescale: (g(z) - g(z0)) / (z - z0); g'(z) where |z - z0| <= ``threshold``."""

    needs_reference = True

    def __init__(self, threshold: float = 1e-5):
        self.threshold = float(threshold)

    def multiplier(self, module, z, y, z0=None, y0=None):
        dz = z - z0
        m = (y - y0).div_(dz)  # inf or nan where dz = 0: replaced below with the rest of the near units
        near = torch.le(dz.abs_(), self.threshold)
        # a closed-form derivative costs less than asking whether any unit is near (a full reduction)
        if type(module) in _DERIVATIVES or bool(near.any()):
            torch.where(near, local_gradient(module, z), m, out=m)
        return m

    def __repr__(self):
        return f"Rescale({self.threshold})"


def _efficientnet_swish_types() -> tuple[type, ...]:
    try:
        from efficientnet_lite_pytorch.utils import MemoryEfficientSwish, Swish
    except Exception:  # pragma: no cover - package missing
        return ()
    return (Swish, MemoryEfficientSwish)


_nn = torch.nn
#: the elementwise nonlinearities the default rule lists cover (GELU: both the exact and the tanh form).
ELEMENTWISE: tuple[type, ...] = (
    _nn.ReLU, _nn.ReLU6, _nn.LeakyReLU, _nn.Sigmoid, _nn.Tanh, _nn.SiLU, _nn.GELU, _nn.ELU, _nn.Softplus,
    _nn.Hardtanh,
) + _efficientnet_swish_types()


def elrp_rules(eps: float = 1e-4) -> list[tuple]:
    """The default (module types, rule) list of epsilon-LRP."""
    return [(ELEMENTWISE, Epsilon(eps))]


def deeplift_rules(threshold: float = 1e-5) -> list[tuple]:
    """The default (module types, rule) list of DeepLIFT-Rescale."""
    return [(ELEMENTWISE, Rescale(threshold))]


def _check_rules(rules) -> list[tuple]:
    if rules is None:
        return []
    try:
        pairs = list(rules)
    except TypeError:
        raise TypeError(f"rules: expected a list of (module type, Rule) pairs, got {type(rules).__name__}") from None
    for pair in pairs:
        ok = isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], Rule)
        types = pair[0] if ok and isinstance(pair[0], tuple) else (pair[0],) if ok else ()
        if not ok or not types or not all(isinstance(t, type) and issubclass(t, torch.nn.Module) for t in types):
            raise TypeError(f"rules: each entry must be (module type or tuple of types, Rule), got {pair!r}")
    return pairs


# activation modules that need a rule: everything torch.nn defines as an activation
_ACTIVATION_MODULE = "torch.nn.modules.activation"
_NEUTRAL = (_nn.MultiheadAttention,)  # in that module but not an elementwise nonlinearity we can judge

#: autograd nodes of nonlinearities; one reachable from the model's output after a modified forward pass
#: belongs to a nonlinearity that no rule replaced (a functional call such as ``torch.sigmoid(x)``).
NONLINEAR_NODES = frozenset(
    {
        "Relu", "Hardtanh", "LeakyRelu", "Sigmoid", "Tanh", "Silu", "Gelu", "Elu", "Softplus", "Hardswish",
        "Hardsigmoid", "Mish", "Softmax", "LogSoftmax", "Prelu", "RreluWithNoise", "Softshrink", "Hardshrink",
        "Threshold", "Glu", "LogSigmoid", "Celu", "Selu", "Softsign",
        # piecewise-linear activations written with other ops: z.clamp(min=0) as a ReLU, torch.maximum(z, 0),
        # torch.where(z > 0, z, a * z)
        "Clamp", "ClampMin", "ClampMax", "Maximum", "Minimum", "Where",
    }
)


def unruled_nonlinearities(output: torch.Tensor, inputs=(), accepted: frozenset | set = frozenset()) -> list[str]:
    """Names of the nonlinearity nodes (e.g. ``SigmoidBackward0``) in ``output``'s autograd graph, leaving out
    the ``accepted`` nodes and, when ``inputs`` are given, the nodes on branches that do not depend on them
    (a learned temperature ``scale.exp()``: a function of parameters only)."""
    if output.grad_fn is None:
        return []
    inputs = list(inputs)
    depends: dict = {}  # node -> whether an input lies below it (all True when no inputs are given)
    stack = [(output.grad_fn, False)]
    while stack:  # iterative post-order: a node is decided once its children are
        node, expanded = stack.pop()
        if node is None or (node in depends and not expanded):
            continue
        children = [fn for fn, _ in node.next_functions if fn is not None]
        if not expanded:
            depends[node] = False  # in progress (autograd graphs have no cycles)
            stack.append((node, True))
            stack.extend((c, False) for c in children if c not in depends)
        else:
            depends[node] = (not inputs or any(stands_for(node, t) for t in inputs)
                             or any(depends.get(c, False) for c in children))
    found = []
    for node, dep in depends.items():
        name = type(node).__name__
        if dep and node not in accepted and "Backward" in name and name.split("Backward")[0] in NONLINEAR_NODES \
                and name not in found:
            found.append(name)
    return found


# ----------------------------------------------------------------------------- the context manager
class _Multiply(torch.autograd.Function):
    """Forward: y unchanged; backward: the incoming gradient times the multiplier (nothing to y's own graph)."""

    @staticmethod
    def forward(ctx, z, y, m):
        ctx.save_for_backward(m)
        ctx.shape = z.shape
        # a new alias of y's memory: an input returned as it is comes back as a view whose size-1 batch
        # dimension gets another stride, which turns channels-last activations of a one-image pass into
        # "not channels-last" for the next layer (padding and convolution then copy them: ~18 ms a pass)
        return y.detach()

    @staticmethod
    def backward(ctx, grad):
        (m,) = ctx.saved_tensors
        g = grad * m
        if g.shape != ctx.shape:
            g = g.expand(ctx.shape)
        return g, None, None


class ModifiedChainRule(contextlib.AbstractContextManager):
    """Inside ``with``: the backward of each ruled nonlinearity of ``module`` is replaced by its rule.

    ``rules``: (module type(s), :class:`Rule`) pairs, the first match wins. On entry, every activation module
    of ``module`` must match a rule (else :class:`UnsupportedNonlinearity`, naming it); on exit all hooks are
    removed. ``reference()`` is a block whose forward passes record each ruled unit's input and output (the
    baseline run of DeepLIFT) instead of changing anything; later passes use those records in call order.
    """

    def __init__(self, module: torch.nn.Module, rules: Sequence[tuple], method_name: str = "this method"):
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.rules = _check_rules(rules)
        self.method_name = method_name
        self._handles: list = []
        self._inside = 0
        self._stack: list = []
        self._recording = False
        self._refs: list | None = None
        self._ref_versions: list = []
        self._copy_refs = False
        self._call = 0
        self._accepted: set = set()  # autograd nodes inside units ruled by Gradient()
        self.n_units = 0

    def rule_for(self, m: torch.nn.Module) -> Rule | None:
        for types, rule in self.rules:
            if isinstance(m, types):
                return rule
        return None

    def _matched(self) -> list[tuple[str, torch.nn.Module, Rule]]:
        found, missing = [], []
        for name, m in self.module.named_modules():
            rule = self.rule_for(m)
            if rule is not None:
                found.append((name, m, rule))
            elif type(m).__module__ == _ACTIVATION_MODULE and not isinstance(m, _NEUTRAL):
                missing.append(f"{name or '(root)'} ({type(m).__name__})")
        if missing:
            raise UnsupportedNonlinearity(
                f"{self.method_name} has no rule for the nonlinearit{'y' if len(missing) == 1 else 'ies'} "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; pass rules=[(type, rule), ...] "
                "(e.g. Rescale(), Epsilon(), or Gradient() to keep its gradient)"
            )
        return found

    # hooks ---------------------------------------------------------------
    def _pre(self, rule):
        def hook(module, args):
            if self._inside > 0 or not args or not isinstance(args[0], torch.Tensor):
                self._stack.append(None)  # nested in another ruled unit: leave it alone
                self._inside += 1
                return None
            z = args[0]
            self._stack.append(z)
            self._inside += 1
            if getattr(module, "inplace", False):
                return (z.clone(),) + tuple(args[1:])  # keep z intact for the rule
            return None

        return hook

    def _post(self, rule):
        def hook(module, args, y):
            try:
                z = self._stack.pop()
                if z is None or not isinstance(y, torch.Tensor):
                    return None
                if self._recording:
                    if rule.needs_reference:
                        pair = (z.detach(), y.detach())
                        if self._copy_refs:
                            pair = (pair[0].clone(), pair[1].clone())
                        self._refs.append(pair)
                        self._ref_versions.append((z._version, y._version))
                    return None
                z0 = y0 = None
                if rule.needs_reference:
                    if self._refs is None:
                        raise RuntimeError(f"{self.method_name}: no reference pass was recorded")
                    if self._call >= len(self._refs):
                        raise RuntimeError(
                            f"{self.method_name}: the forward pass called more nonlinearities than the "
                            "reference pass did (data-dependent control flow is not supported)"
                        )
                    z0, y0 = self._refs[self._call]
                    self._call += 1
                    if z0.shape[1:] != z.shape[1:]:
                        raise RuntimeError(f"{self.method_name}: reference activations do not match the input's")
                with torch.no_grad():
                    m = rule.multiplier(module, z.detach(), y.detach(), z0, y0)
                if m is None:  # the ordinary gradient, accepted as it is: its nodes are no unruled nonlinearity
                    self._accept(y, z)
                    return None
                return _Multiply.apply(z, y.detach(), m)  # cut y's own graph
            finally:
                self._inside -= 1

        return hook

    def _root_pre(self, module, args):
        self._call = 0
        self._stack.clear()
        self._accepted.clear()

    def _accept(self, y: torch.Tensor, z: torch.Tensor) -> None:
        """Mark the autograd nodes between the unit's output ``y`` and its input ``z`` as accepted."""
        self._accepted |= autograd_nodes(y, stop=lambda node: stands_for(node, z))

    def __enter__(self):
        matched = self._matched()
        self.n_units = len(matched)
        self._lock = module_lock(self.module)  # no other thread's pass runs through these hooks
        self._lock.acquire()
        try:
            self._handles.append(self.module.register_forward_pre_hook(self._root_pre))
            for _, m, rule in matched:
                self._handles.append(m.register_forward_pre_hook(self._pre(rule)))
                self._handles.append(m.register_forward_hook(self._post(rule)))
        except BaseException:
            self._remove()
            self._lock.release()
            raise
        return self

    def _remove(self):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._stack.clear()
        self._refs = None

    def __exit__(self, *exc):
        try:
            self._remove()
        finally:
            self._lock.release()
        return False

    def check(self, output: torch.Tensor, inputs=()) -> None:
        """Raise :class:`UnsupportedNonlinearity` if ``output`` (of a forward pass in this block) still depends
        on a nonlinearity through its ordinary gradient, i.e. one that no rule replaced (only nonlinearities
        on the way from ``inputs``, when given, count; those inside units ruled by :class:`Gradient` do not)."""
        found = unruled_nonlinearities(output, inputs, self._accepted)
        if found:
            raise UnsupportedNonlinearity(
                f"{self.method_name}: the model applies a nonlinearity that no rule covers "
                f"({', '.join(found)}); it is probably called as a function (e.g. torch.sigmoid(x) in forward). "
                "Make it a module (e.g. torch.nn.Sigmoid, or torch.nn.ReLU for a clamp, maximum or where standing "
                "for one) with a rule, or pass rules=[(type, rule), ...]"
            )

    @contextlib.contextmanager
    def reference(self, copy: bool = False):
        """Forward passes in this block record the ruled units' (input, output) on the baseline: as they are, or
        as copies with ``copy`` (see :meth:`references_changed`)."""
        self._refs, self._ref_versions = [], []
        self._copy_refs = bool(copy)
        self._recording = True
        try:
            yield
        finally:
            self._recording = False

    def references_changed(self) -> bool:
        """Whether the model changed a recorded unit's input or output in place after the unit ran (``h =
        relu(z); h.mul_(2)``), which overwrote the record; the reference pass must then be made again with
        ``reference(copy=True)``."""
        if self._copy_refs or not self._refs:
            return False
        return any((z._version, y._version) != v for (z, y), v in zip(self._refs, self._ref_versions))


# ----------------------------------------------------------------------------- attribution
def modified_gradients(
    model,
    xs: torch.Tensor,
    target: int,
    rules: Sequence[tuple],
    *,
    baseline: torch.Tensor | None = None,
    output: str = "logit",
    batch_size: int = 16,
    method_name: str = "modified chain rule",
    kept: tuple | None = None,
) -> tuple[torch.Tensor, dict]:
    """Modified gradients of the target score for N inputs ``xs`` (N x C x H x W in [0, 1]).

    ``baseline`` (C x H x W) is run once first (recording the reference activations) when a rule needs it.
    ``kept``: (leaf, raw outputs, state) of a forward pass of ``xs`` already made inside
    :func:`prediction_scope` with these rules: only its backward runs.
    Returns (N x C x H x W gradients, {"score_input": N scores, "score_baseline": float or None}).
    """
    _require_torch(model)
    if kept is None:
        scores, grads = [], []
        base = None if baseline is None else baseline.to(xs.device, xs.dtype)
        with _scope(model, rules, method_name, base) as state:
            for s in range(0, xs.shape[0], batch_size):
                xb = xs[s : s + batch_size].detach().clone().requires_grad_(True)
                with torch.enable_grad():
                    raw = model.forward(xb)
                if s == 0:
                    state["rule"].check(raw, [xb])
                sc, g = backward_scores(model, xb, raw, target, output)  # softmax ("probability"): ordinary gradient
                scores.append(sc)
                grads.append(g)
        sc, g = torch.cat(scores), torch.cat(grads)
    else:
        leaf, raw, state = kept
        state["rule"].check(raw, [leaf])
        sc, g = backward_scores(model, leaf, raw, target, output)
    ref = state["reference"]
    s_base = None if ref is None else float(target_scores(model, ref, target, output)[0])
    return g, {"score_input": sc, "score_baseline": s_base}


@contextlib.contextmanager
def _scope(model, rules: Sequence[tuple], name: str, baseline: torch.Tensor | None):
    """Forward passes in this block run under the rules; yields {"rule": the ModifiedChainRule, "reference": raw
    outputs of the reference pass on ``baseline`` (C x H x W, made first when a rule needs it) or None}."""
    with ModifiedChainRule(model.fn, rules, name) as mcr:
        state = {"rule": mcr, "reference": None}
        if any(rule.needs_reference for _, rule in mcr.rules):
            if baseline is None:
                raise ValueError(f"{name}: the rules need a baseline")
            with mcr.reference(), torch.no_grad():
                state["reference"] = model.forward(baseline.unsqueeze(0))
            if mcr.references_changed():  # recorded tensors changed in place later in the pass: copies, once more
                with mcr.reference(copy=True), torch.no_grad():
                    state["reference"] = model.forward(baseline.unsqueeze(0))
            if not torch.isfinite(state["reference"]).all():
                bad = state["reference"][~torch.isfinite(state["reference"])][0]
                raise baseline_error(model, float(bad))
        yield state


def prediction_scope(name: str):
    """The ``prediction_scope`` of modified-chain-rule method ``name`` (``"elrp"`` or ``"deeplift"``): the
    call's prediction pass is the method's forward pass (the rules change only the backward, so its scores are
    the ordinary ones), after DeepLIFT's reference pass."""

    def scope(model, x, options):
        rules, baseline = _RULES[name](options)
        return _scope(model, _check_rules(options.get("rules")) + rules, name, make_baseline(x, baseline))

    return scope


_RULES = {  # name -> options -> (default rules, baseline)
    "elrp": lambda options: (elrp_rules(options.get("eps", 1e-4)), "zero"),
    "deeplift": lambda options: (deeplift_rules(), options.get("baseline", "zero")),
}


def _build(ctx: Context, name: str, rules: list, baseline, output: str, extra_rules) -> Attributor:
    check_output(output)
    _require_torch(ctx.model)
    pairs = _check_rules(extra_rules) + rules
    base = make_baseline(ctx.x, baseline)
    info: dict = {}

    def attribute(xs):
        g, scores = modified_gradients(ctx.model, xs, ctx.target, pairs, baseline=base, output=output,
                                       batch_size=ctx.gradient_batch_for(len(xs)), method_name=name,
                                       kept=ctx.take_prediction(xs))
        info.update(scores)
        return (xs - base.unsqueeze(0)) * g

    att = Attributor(attribute, reduce=sum_channels, baseline=base)
    att.info = info  # scores of the last attribute() call
    return att


def build_elrp(ctx: Context, *, eps: float = 1e-4, rules=None, output: str = "logit") -> Attributor:
    return _build(ctx, "elrp", *_RULES["elrp"]({"eps": eps}), output, rules)


def build_deeplift(ctx: Context, *, baseline="zero", rules=None, output: str = "logit") -> Attributor:
    return _build(ctx, "deeplift", *_RULES["deeplift"]({"baseline": baseline}), output, rules)


register_attributor("elrp", build_elrp)
register_attributor("deeplift", build_deeplift)


def _with_completeness(result: MethodResult, att: Attributor, s_base: float | None) -> MethodResult:
    s_x = float(att.info["score_input"][0])
    total = float(result.extras["attribution"].astype(np.float64).sum())
    result.extras.update(score_input=s_x, attribution_sum=total)
    if s_base is not None:
        result.extras.update(score_baseline=s_base, completeness_error=completeness_error(total, s_x, s_base))
    return result


@register(
    "elrp",
    family="gradient",
    needs_gradients=True,
    reuses_prediction=prediction_scope("elrp"),
    description="epsilon-LRP as a modified chain rule (Ancona et al. 2018): g(z)/z backward, times the input",
)
def elrp(ctx: Context, *, eps: float = 1e-4, rules=None, output: str = "logit") -> MethodResult:
    """Input times the gradient in which each nonlinearity's derivative is g(z) / (z + eps sign z).

    ``eps``: the stabilizer (default 1e-4). ``rules``: extra (module type(s), Rule) pairs tried before the
    defaults (see :mod:`unveil.methods.modified_rules`). ``output``: ``"logit"`` (default) or
    ``"probability"``. The map sums channels.
    """
    att = build_elrp(ctx, eps=eps, rules=rules, output=output)
    return _with_completeness(run_attributor(ctx, att), att, None)


@register(
    "deeplift",
    family="gradient",
    needs_gradients=True,
    reuses_prediction=prediction_scope("deeplift"),
    description="DeepLIFT-Rescale as a modified chain rule (Ancona et al. 2018), against a baseline",
)
def deeplift(ctx: Context, *, baseline="zero", rules=None, output: str = "logit") -> MethodResult:
    """(input - baseline) times the gradient in which each nonlinearity's derivative is
    (g(z) - g(z0)) / (z - z0) against a reference pass on ``baseline`` (``"zero"`` by default; any of the
    Perturber's baselines or an image). Two forward passes: the reference pass, then the call's prediction
    pass, run under the rules, whose backward gives the gradient. ``extras["completeness_error"]`` is
    |sum of attributions - (s(x) - s(baseline))| / |s(x) - s(baseline)| (zero up to rounding on networks
    made of linear layers and ruled nonlinearities, for ``output="logit"``: with ``"probability"`` the final
    softmax keeps its ordinary gradient, so the sum no longer matches the difference)."""
    att = build_deeplift(ctx, baseline=baseline, rules=rules, output=output)
    result = run_attributor(ctx, att)
    return _with_completeness(result, att, att.info["score_baseline"])
