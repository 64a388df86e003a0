"""The model adapter: one object that owns preprocessing, batching, the device and the evaluation count.

A :class:`Model` wraps either a ``torch.nn.Module`` or any Python callable. Everything the methods send
through it is an N x C x H x W float tensor in [0, 1] at the model's input size; the adapter normalizes,
batches (``batch_size``: the most inputs in one forward pass), runs under ``torch.inference_mode`` and turns
the outputs into class probabilities.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..checks import (FLOAT32_MAX, blame_model, check_labels, integer_text, match_class_name, name_key,
                      raised_by_callback, scalar_target, shown_label_index)
from ..images import check_alpha, load_image, resize

__all__ = ["Model", "as_model", "BATCH_CANDIDATES", "sweep_images", "quick_sizes"]

#: batch sizes tried by ``batch_size="auto"`` (the fastest per image is kept).
BATCH_CANDIDATES = (1, 4, 8, 16, 32)

#: What a model's outputs may be declared as (see :class:`Model`).
OUTPUTS = ("logits", "probabilities", "scores")

#: How far outside [0, 1] outputs declared ``"probabilities"`` may stray (rounding) before they are refused.
PROBABILITY_SLACK = 1e-3


_MODULE_LOCKS: "weakref.WeakKeyDictionary[torch.nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_MODULE_LOCKS_GUARD = threading.Lock()


def module_lock(module: torch.nn.Module) -> threading.RLock:
    """The re-entrant lock of a torch module, shared by every adapter of it. Held by each forward pass and
    for the whole of a block that puts hooks on the module (the modified chain rules, Grad-CAM's capture):
    with several threads explaining with one model, a pass never runs through another thread's hooks or
    with another pass's training flags cleared. (Backward passes run outside it: hooks act at forward time.)"""
    with _MODULE_LOCKS_GUARD:
        lock = _MODULE_LOCKS.get(module)
        if lock is None:
            lock = _MODULE_LOCKS[module] = threading.RLock()
        return lock


def class_scores(out, name: str):
    """The N x classes scores in what a model returned: a tensor or array as it is; the first element of a
    tuple or list whose first element is a tensor or array (extra outputs dropped; a list of rows stays a
    list of rows); ``logits`` of a mapping or output object that has them (Hugging Face); the one value of a
    one-entry mapping. A ValueError names the model and what it returned otherwise."""
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], (torch.Tensor, np.ndarray)) \
            and getattr(out[0], "ndim", 0) == 2:
        return out[0]
    if isinstance(out, Mapping):
        if "logits" in out:
            return out["logits"]
        if len(out) == 1:
            return next(iter(out.values()))
        raise ValueError(f"model {name!r} returned a mapping with keys {sorted(map(str, out))}; expected one "
                         "holding 'logits', or a single entry, or an N x classes tensor or array")
    logits = getattr(out, "logits", None)
    if logits is not None and not isinstance(out, (torch.Tensor, np.ndarray)):
        return logits
    return out


#: phrases of torch's errors for an input whose spatial size the layers cannot take (a Linear after Flatten,
#: a reshape to a fixed size, an addition of two maps of different sizes)
SIZE_ERRORS = ("cannot be multiplied", "is invalid for input of size", "must match the size", "Expected size",
               "size of tensor")


def stands_for(node, t: torch.Tensor) -> bool:
    """Whether autograd ``node`` is tensor ``t``'s: its ``grad_fn``, or for a leaf its AccumulateGrad."""
    return node is t.grad_fn if t.grad_fn is not None else getattr(node, "variable", None) is t


def autograd_nodes(t: torch.Tensor, stop: Callable[[object], bool] | None = None) -> set:
    """The autograd nodes ``t`` was computed through, not walking past (nor including) nodes for which
    ``stop(node)`` holds."""
    found, stack = set(), [t.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in found or (stop is not None and stop(node)):
            continue
        found.add(node)
        stack.extend(fn for fn, _ in node.next_functions)
    return found


def _depends_on(out: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether autograd can reach ``x`` (a leaf or not) from ``out``: False for outputs computed from ``x``
    under ``torch.no_grad()`` or through ``.detach()``, even when later layers' parameters give them a graph."""
    return out.requires_grad and any(stands_for(node, x) for node in autograd_nodes(out))


class Model:
    """A classifier that unveil can explain.

    Parameters
    ----------
    fn:
        a ``torch.nn.Module`` taking N x C x H x W normalized tensors, or any callable taking a numpy batch
        N x H x W x C float32 in [0, 1] and returning N x classes scores (array-like).
    input_size:
        (height, width) the model expects; images are resized to it. ``None`` keeps each image's own size.
    labels:
        class names, index = class number.
    mean, std:
        per-channel normalization applied before a torch module (ignored for callables): both or neither,
        one value or one per channel each, std positive; checked here.
    outputs:
        ``"logits"`` (softmax is applied to get probabilities), ``"probabilities"`` (used as they are; checked
        to lie in [0, 1], so logits passed by mistake are an error, not a silent wrong map) or ``"scores"``
        (any real numbers used as they are: a regression output, a margin, a linear form). Default: logits
        for torch modules, probabilities for callables. A model with **one logit** (a binary classifier) is
        read as two classes with logits (-z/2, z/2), whose softmax is (sigmoid(-z), sigmoid(z)): class 1 is
        the positive one (gradient attributions of class 1 are half those of z itself); give it two labels
        or none. What a model returns may be a tensor or array, a tuple or list whose first element is one,
        a mapping or output object with ``logits`` (Hugging Face outputs), or a mapping with one entry.
    batch_size:
        the most inputs in one forward pass: an int, or ``"auto"`` (torch modules only by default) which
        times a few sizes and keeps the fastest per image: on an explanation's own passes where a request is
        large enough (see :meth:`measure_batch_size_on` and :meth:`quick_batch_size_on`), else on synthetic
        passes the first time a size is asked for outright (:meth:`resolve_batch_size`).
    channels_last:
        feed torch modules channels-last inputs (faster convolutions on CPU). The module itself is not
        touched; :func:`unveil.load_model` converts its own module's weights too.
    channels:
        the number of channels the model takes (3 by default; 1 for grayscale models, any count for
        multispectral ones; None takes each image with its own channels). Images are fitted to it by the
        rule of :mod:`unveil.images` (gray repeated, RGB to luminance, alpha composited or dropped).
    alpha, background:
        what happens to an image's alpha channel when the model takes fewer channels: ``"composite"`` onto
        ``background`` (gray level or RGB in [0, 1], white by default) or ``"drop"``.
    max_side:
        with ``input_size=None``, an image whose longer side exceeds this many pixels is resized (aspect kept)
        so that the longer side is ``max_side`` before the model sees it; maps still come back at the image's
        own resolution. None never resizes. Default 1024.
    eval_mode:
        True (default): forward passes run with every submodule in inference behaviour (batch norm uses its
        running statistics and does not update them, dropout is off), and each submodule's ``training`` flag
        is restored afterwards, so a module left in training mode is explained as it predicts and comes
        back unchanged. False runs the module exactly as it is.
    """

    def __init__(
        self,
        fn: torch.nn.Module | Callable,
        *,
        input_size: tuple[int, int] | None = None,
        labels: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        outputs: str | None = None,
        batch_size: int | str | None = None,
        channels_last: bool = False,
        name: str | None = None,
        eval_mode: bool = True,
        channels: int | None = 3,
        alpha: str = "composite",
        background=1.0,
        max_side: int | None = 1024,
    ):
        if isinstance(fn, Model):
            raise TypeError("fn is already a unveil.Model")
        if isinstance(fn, type) and issubclass(fn, torch.nn.Module):
            raise TypeError(f"model: got the class {fn.__name__}, not a module; pass an instance, e.g. "
                            f"{fn.__name__}(), with its trained weights loaded")
        if not callable(fn):
            raise TypeError(f"model: expected a torch.nn.Module or a callable, got {type(fn).__name__}")
        self.fn = fn
        self.is_torch = isinstance(fn, torch.nn.Module)
        if input_size is not None:
            if (
                not isinstance(input_size, (tuple, list))
                or len(input_size) != 2
                or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in input_size)
            ):
                raise ValueError(f"input_size: expected (height, width) positive ints, got {input_size!r}")
            input_size = (int(input_size[0]), int(input_size[1]))
        self.input_size = input_size
        self.labels = check_labels(labels)
        outputs = outputs or ("logits" if self.is_torch else "probabilities")
        if outputs not in OUTPUTS:
            raise ValueError(f"outputs: expected one of {', '.join(map(repr, OUTPUTS))}, got {outputs!r}")
        self.outputs = outputs
        self._n_classes: int | None = None  # the class count of the first scores returned, see to_probabilities
        if batch_size is None:
            batch_size = "auto" if self.is_torch else 32
        self._batch_request = _check_batch_size(batch_size)
        self._batch_resolved: int | None = None if batch_size == "auto" else int(batch_size)
        self.quick_batch_timings: dict[int, float] = {}  # the last quick sweep's {size: img/s}, see below
        self._quick_tried = 0  # candidate sizes that sweep could try
        self.channels_last = bool(channels_last)
        self.eval_mode = bool(eval_mode)
        if channels is not None and (
            isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1
        ):
            raise ValueError(f"channels: expected a positive int or None, got {channels!r}")
        self.channels = None if channels is None else int(channels)
        check_alpha(alpha, background)
        self.alpha, self.background = alpha, background
        if max_side is not None and (
            isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer)) or max_side < 1
        ):
            raise ValueError(f"max_side: expected a positive int or None, got {max_side!r}")
        self.max_side = None if max_side is None else int(max_side)
        self.name = name or (type(fn).__name__ if self.is_torch else getattr(fn, "__name__", "callable"))
        if (mean is None) != (std is None):
            raise ValueError("mean and std: pass both (the input becomes (x - mean) / std) or neither")
        self._mean = self._std = None
        if mean is not None:
            m, sd = per_channel("mean", mean, self.channels), per_channel("std", std, self.channels)
            if not np.all(sd > 0):
                raise ValueError(f"std: expected positive values, got {std!r}")
            if m.size != sd.size and 1 not in (m.size, sd.size):
                raise ValueError(f"mean and std: {m.size} and {sd.size} values; expected as many (or one)")
            self._mean = torch.from_numpy(m).view(1, -1, 1, 1)
            self._std = torch.from_numpy(sd).view(1, -1, 1, 1)
        self.n_evals = 0
        self._local = threading.local()
        self._lock = threading.Lock()
        self._ort = None  # (session, input name) once made; see use_onnxruntime
        self._ort_wanted = False

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        """The device inputs are composed on: the module's (first parameter's) device, else the CPU."""
        if self.is_torch:
            for p in self.fn.parameters():
                return p.device
            for b in self.fn.buffers():
                return b.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype | None:
        """The floating dtype a torch module computes in (its first floating parameter's or buffer's), None for
        callables and modules without one. Inputs are composed in float32 and cast to it for the module;
        outputs are read back as float32 (a ``.double()`` or ``.half()`` module works as it is on torch; ONNX
        Runtime's CPU kernels lack float64 convolutions)."""
        if self.is_torch:
            for t in itertools.chain(self.fn.parameters(), self.fn.buffers()):
                if t.is_floating_point():
                    return t.dtype
        return None

    @property
    def differentiable(self) -> bool:
        return self.is_torch

    @property
    def kind(self) -> str:
        """What the model is, in words (for messages)."""
        return "a torch module" if self.is_torch else "a Python callable"

    def require_gradients(self, method: str | None = None) -> None:
        """Raise a TypeError naming the methods that need no gradients when this model gives none."""
        if self.differentiable:
            return
        from ..methods.registry import method_specs

        usable = ", ".join(s.name for s in method_specs() if not s.needs_gradients)
        what = f"method {method!r} needs" if method else "gradient methods need"
        raise TypeError(
            f"{what} gradients; model {self.name!r} is {self.kind}, which gives none (only a torch.nn.Module "
            f"does). Methods that need no gradients: {usable}"
        )

    # ------------------------------------------------------------------ other kinds of model
    @classmethod
    def from_onnx(
        cls,
        path,
        *,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
        labels: Sequence[str] | None = None,
        input_size: tuple[int, int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        outputs: str = "logits",
        batch_size: int | str = "auto",
        providers: Sequence | None = None,
        session_options=None,
        name: str | None = None,
    ) -> "Model":
        """An ONNX classifier run by ONNX Runtime (black-box methods only): see :func:`unveil.models.onnx.load_onnx`."""
        from .onnx import load_onnx

        return load_onnx(
            path, preprocess=preprocess, labels=labels, input_size=input_size, mean=mean, std=std,
            outputs=outputs, batch_size=batch_size, providers=providers, session_options=session_options,
            name=name,
        )

    def to_onnx(self, path, **options) -> "Model":
        """This torch model exported to ``path`` and run by ONNX Runtime (same preprocessing, labels and
        outputs; black-box methods only): see :func:`unveil.models.onnx.export_onnx`."""
        from .onnx import export_onnx

        return export_onnx(self, path, **options)

    @property
    def num_classes(self) -> int | None:
        """The number of classes: the labels', else the count of the scores returned so far (None before)."""
        return len(self.labels) if self.labels is not None else self._n_classes

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, input_size={self.input_size}, outputs={self.outputs!r}, "
            f"batch_size={self._batch_resolved or self._batch_request!r}, device={self.device})"
        )

    # ------------------------------------------------------------------ labels and targets
    def label(self, index: int) -> str:
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    def class_index(self, target: int | str, num_classes: int | None = None) -> int:
        """Turn a class number or name (an int, a numpy integer, or a one-element integer tensor or array such
        as ``logits.argmax()``) into a checked class number."""
        n = num_classes if num_classes is not None else self.num_classes
        target = scalar_target(target)
        if isinstance(target, str):
            found = match_class_name(target, self.labels)  # a class name wins over a number ("5" as a label)
            if found is not None:
                return found
            number = integer_text(target)
            if number is None and self.labels is None:
                number = shown_label_index(target)  # the label shown for it: "class 5"
            if number is not None:
                target = number
            else:
                if self.labels is None:
                    raise ValueError(f"target {target!r}: this model has no class names; pass a class number")
                wanted = name_key(target)
                near = [lab for lab in self.labels if wanted in name_key(lab)][:5]
                hint = f"; did you mean one of {near}?" if near else ""
                raise ValueError(f"target {target!r}: no class of that name{hint}")
        if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
            raise TypeError(f"target: expected a class number or name, got {type(target).__name__}")
        target = int(target)
        if target < 0 or (n is not None and target >= n):
            span = "class (0)" if n == 1 else f"classes (0..{(n or 1) - 1})"
            raise ValueError(f"target {target} is out of range: the model has {n} {span}")
        return target

    # ------------------------------------------------------------------ inputs
    def model_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the model sees for an image of ``height`` x ``width`` (``input_size``, or ``max_side``)."""
        if self.input_size is not None:
            return self.input_size
        longer = max(height, width)
        if self.max_side is None or longer <= self.max_side:
            return height, width
        scale = self.max_side / longer
        return max(1, round(height * scale)), max(1, round(width * scale))

    def prepare(self, image) -> tuple[np.ndarray, torch.Tensor]:
        """Load ``image`` and return (the H x W x C original, the C x h x w model input on the device)."""
        original = load_image(image, channels=self.channels, alpha=self.alpha, background=self.background)
        small = resize(original, self.model_size(*original.shape[:2]))
        x = torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1))).to(self.device)
        return original, x

    # ------------------------------------------------------------------ counting
    @contextlib.contextmanager
    def counting(self):
        """Count the evaluations made by this thread inside the block: ``with m.counting() as c: ...; c[0]``."""
        stack = getattr(self._local, "counters", None)
        if stack is None:
            stack = self._local.counters = []
        counter = [0]
        stack.append(counter)
        try:
            yield counter
        finally:  # by identity: two counters holding the same count are equal lists
            del stack[next(i for i, c in enumerate(stack) if c is counter)]

    def _count(self, n: int) -> None:
        with self._lock:
            self.n_evals += n
        for c in getattr(self._local, "counters", ()):
            c[0] += n

    # ------------------------------------------------------------------ forward passes
    @contextlib.contextmanager
    def inference_behaviour(self):
        """Temporarily clear the ``training`` flag of submodules that have it set (restored on exit)."""
        training = [m for m in self.fn.modules() if m.training] if self.is_torch and self.eval_mode else []
        for m in training:
            m.training = False
        try:
            yield
        finally:
            for m in training:
                m.training = True

    def forward(self, x: torch.Tensor, *, normalized: bool = False) -> torch.Tensor:
        """Differentiable raw outputs (logits for a torch module) of an N x C x H x W batch in [0, 1]
        (``normalized``: already normalized, see :meth:`normalization`)."""
        self.require_gradients()
        z = x if normalized else self._normalize(x)
        dtype = self.dtype
        if dtype is not None and z.dtype != dtype:
            z = z.to(dtype)
        if self.channels_last and z.dim() == 4:
            z = z.contiguous(memory_format=torch.channels_last)
        with module_lock(self.fn), self.inference_behaviour():
            try:
                raw = self.fn(z)
            except Exception as err:
                hint = self._failure_hint(err, z) if isinstance(err, RuntimeError) else None
                n = z.shape[0]
                what = (f"{n} image{'' if n == 1 else 's'} of {' x '.join(map(str, z.shape[1:]))} (C x H x W"
                        f"{', normalized' if self.normalization() is not None else ', values in [0, 1]'})")
                if hint is not None:
                    blame_model(hint, repr(self.name), what)
                    raise hint from err
                if not raised_by_callback(err):  # a hook's own error stays the package's
                    blame_model(err, repr(self.name), what)
                raise
            out = class_scores(raw, self.name)
        if isinstance(out, torch.Tensor) and out.dim() == 2:
            self._refuse_class_index(out.shape[1], not (out.is_floating_point() or out.is_complex()), out.dtype)
        self._count(x.shape[0])  # counted once the model has scored them (a failed pass scored nothing)
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"model {self.name!r} returned {type(out).__name__}; a torch module must return "
                             "an N x classes tensor (or a tuple, list or mapping holding one)")
        if out.dim() != 2:
            raise ValueError(f"model {self.name!r} returned shape {tuple(out.shape)}; expected N x classes")
        if x.requires_grad and torch.is_grad_enabled() and not _depends_on(out, x):
            raise ValueError(f"model {self.name!r} returned scores that do not depend differentiably on its "
                             f"input (dtype {out.dtype}): gradient methods need float outputs computed from the "
                             "input with autograd on (no torch.no_grad(), .detach() or integer steps on the way)")
        return self._two_logits(out)

    def _failure_hint(self, err: RuntimeError, z: torch.Tensor) -> RuntimeError | None:
        """A RuntimeError saying how to fix ``err`` (raised by the module on ``z``) when it is a channel count
        or a spatial size the module was not made for and the model's settings can change; else None."""
        wants = re.search(r"expected input\[[^\]]*\] to have (\d+) channels, but got", str(err))
        if wants:  # a first convolution made for another channel count
            return RuntimeError(
                f"model {self.name!r} failed on a batch of shape {tuple(z.shape)} ({err}); the images reach "
                f"it with {z.shape[1]} channel(s) (channels={self.channels}): a model whose input has "
                f"{wants.group(1)} takes unveil.Model(..., channels={wants.group(1)})")
        if self.input_size is not None or not any(w in str(err) for w in SIZE_ERRORS):
            return None  # not a spatial-size mismatch, or not one our choice of size caused
        return RuntimeError(  # the image's own size reached the module: say how to fix it
            f"model {self.name!r} failed on a batch of shape {tuple(z.shape)} ({err}); it sees each image "
            "at the image's own size: a model made for one size needs unveil.Model(module, "
            "input_size=(height, width))")

    def _refuse_class_index(self, columns: int, integer: bool, dtype) -> None:
        """One integer (or bool) per input read as logits would be a class index (an argmax) taken for a binary
        classifier's logit: refused, naming the model."""
        if integer and columns == 1 and self.outputs == "logits":
            raise ValueError(f"model {self.name!r} returned one {dtype} number per input: that reads as a class "
                             "index (an argmax), not a logit; return the logits or probabilities (or pass "
                             "outputs='scores' to explain the number as it is)")

    def _two_logits(self, out: torch.Tensor) -> torch.Tensor:
        """One logit z per input (a binary classifier) as the two logits (-z/2, z/2); other outputs as they
        are."""
        if self.outputs == "logits" and out.dim() == 2 and out.shape[1] == 1:
            half = out / 2
            return torch.cat([-half, half], dim=1)
        return out

    # ------------------------------------------------------------------ ONNX Runtime for forward-only passes
    def use_onnxruntime(self, enable: bool = True) -> "Model":
        """Run this torch module's passes without gradients (every black-box method's) on an ONNX Runtime
        session exported from it, and keep torch for gradients. The export happens on first need (calibration
        or a pass over more than one input; about a second for the default model); if it fails, a warning says
        why and torch runs them. The session is a snapshot of the module's weights: after changing them, call
        ``use_onnxruntime()`` again (it exports anew). CPU modules with a fixed ``input_size`` only; ``False``
        goes back to torch. Returns the model."""
        if enable:
            if not self.is_torch or self.input_size is None or self.device.type != "cpu":
                raise ValueError(f"use_onnxruntime: model {self.name!r} is not a CPU torch module with a fixed "
                                 "input_size")
            if not self.eval_mode:
                raise ValueError(f"use_onnxruntime: model {self.name!r} has eval_mode=False; the exported graph "
                                 "would run in inference behaviour, not as the module is")
            from .onnx import _import_ort

            _import_ort()
            if self.dtype == torch.float64 and any(isinstance(m, torch.nn.modules.conv._ConvNd)
                                                   for m in self.fn.modules()):
                import warnings

                warnings.warn(f"model {self.name!r}: ONNX Runtime's CPU kernels have no float64 convolution; torch "
                              "runs its forward passes", RuntimeWarning, stacklevel=2)
                enable = False
        self._ort_wanted = bool(enable)
        self._ort = None
        return self

    @property
    def inference(self) -> str:
        """What runs passes without gradients: ``"onnxruntime"`` (an ONNX model, or a torch module after
        :meth:`use_onnxruntime`), ``"torch"``, or ``"python"`` (a Python callable, run as it is)."""
        if not self.is_torch:
            return "python"
        return "onnxruntime" if self._ort_wanted else "torch"

    def _ort_session(self, create: bool):
        if self._ort is None and self._ort_wanted and create:
            # the module's lock first, as every pass takes them (the export takes it again): taken the other
            # way round, an export beside a pass holding the module's lock while counting would deadlock
            with module_lock(self.fn), self._lock:
                if self._ort is None and self._ort_wanted:
                    from .onnx import inference_session

                    try:
                        self._ort = inference_session(self)
                    except Exception as err:  # noqa: BLE001 - any export/session failure: torch keeps working
                        import warnings

                        warnings.warn(f"model {self.name!r}: ONNX Runtime unavailable ({type(err).__name__}: "
                                      f"{err}); torch runs its forward passes", RuntimeWarning, stacklevel=3)
                        self._ort_wanted = False
        return self._ort

    def normalization(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std), each 1 x C x 1 x 1, with which the adapter normalizes a torch module's input; None when
        it does not (callables and ONNX files get the batch in [0, 1]). A caller that builds many inputs from
        fixed parts can normalize the parts once and pass ``normalized=True`` (the Perturber does)."""
        return (self._mean, self._std) if self.is_torch and self._mean is not None else None

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std per channel, when the model has them."""
        if self._mean is None:
            return x
        return (x - self._mean.to(x.device)) / self._std.to(x.device)

    def _call_ort(self, session, input_name: str, x: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        z = x if normalized else self._normalize(x)
        arr = np.ascontiguousarray(z.detach().cpu().numpy(), dtype=np.float32)
        out = session.run(None, {input_name: arr})[0]
        self._count(x.shape[0])
        return self.to_probabilities(torch.from_numpy(np.asarray(out, dtype=np.float32)))

    def _check_range(self, out: torch.Tensor) -> None:
        """A ValueError naming the model when finite scores overflow float32, in which they are handled."""
        if out.dtype == torch.float64 and out.numel() and bool(torch.isfinite(out).all()) \
                and float(out.abs().max()) > FLOAT32_MAX:
            raise ValueError(f"model {self.name!r} returned scores up to {float(out.abs().max()):.4g}, beyond "
                             "float32's range (3.4e38), in which scores are handled; rescale them")

    def to_probabilities(self, out: torch.Tensor) -> torch.Tensor:
        """The scores the methods explain from a batch's raw outputs (N x classes): softmax of logits (one
        logit read as two, see the class), probabilities checked to lie in [0, 1], scores as they are. A
        ValueError names the model when there are no classes, when the class count differs from an earlier
        batch's, or when probabilities leave [0, 1]."""
        self._check_range(out)
        out = self._two_logits(out)
        n = int(out.shape[1]) if out.dim() == 2 else 0
        if n == 0:
            raise ValueError(f"model {self.name!r} returned shape {tuple(out.shape)}: no class scores")
        if self._n_classes is None:
            self._n_classes = n
            if self.outputs == "logits":
                self._warn_if_probabilities(out)
        elif n != self._n_classes:
            raise ValueError(f"model {self.name!r} returned {n} class scores for this batch and {self._n_classes} "
                             "before; a model must score the same classes every time")
        if self.outputs == "logits":
            return torch.softmax(out.float(), dim=1)
        out = out.float()
        if self.outputs == "probabilities" and out.numel():
            lo, hi = (float(v) for v in torch.aminmax(out))
            if lo < -PROBABILITY_SLACK or hi > 1 + PROBABILITY_SLACK:
                raise ValueError(
                    f"model {self.name!r} returned scores from {lo:.4g} to {hi:.4g}, outside [0, 1], though its "
                    "outputs are declared 'probabilities'; pass outputs='logits' if they are logits (softmax "
                    "is applied) or outputs='scores' to explain them as they are")
        return out

    def _warn_if_probabilities(self, out: torch.Tensor) -> None:
        """Warn (once, on the first scores) when outputs declared logits look like probabilities: every row
        non-negative and summing to 1, or a torch module whose last layer is a Sigmoid or Softmax. Read as
        logits they would be squashed a second time: scores shrink toward 1/classes (a sigmoid's one column
        always gives class 1)."""
        with torch.no_grad():
            o = out.detach().float().cpu()
            rows_sum_to_1 = o.shape[1] > 1 and bool((o >= 0).all()) and bool(
                torch.allclose(o.sum(dim=1), torch.ones(o.shape[0]), atol=1e-4))
        leaves = [m for m in self.fn.modules() if not list(m.children())] if self.is_torch else []
        last = leaves[-1] if leaves else None
        if rows_sum_to_1 or isinstance(last, (torch.nn.Sigmoid, torch.nn.Softmax)):
            import warnings

            why = "every row is non-negative and sums to 1" if rows_sum_to_1 else \
                f"its last layer is {type(last).__name__}"
            warnings.warn(f"model {self.name!r}: its outputs look like probabilities ({why}) but are read as "
                          "logits, so the softmax squashes them again; pass outputs='probabilities' (on the command "
                          "line --outputs probabilities) if they are",
                          UserWarning, stacklevel=4)

    def _call_batch(self, x: torch.Tensor, normalized: bool = False) -> torch.Tensor:
        if self.is_torch:
            ort = self._ort_session(create=x.shape[0] > 1)
            if ort is not None:
                return self._call_ort(*ort, x, normalized)
            with torch.inference_mode():
                return self.to_probabilities(self.forward(x, normalized=normalized))
        if normalized:
            raise ValueError(f"model {self.name!r} takes its inputs in [0, 1]; it has no normalization")
        batch = np.ascontiguousarray(x.detach().cpu().numpy().transpose(0, 2, 3, 1), dtype=np.float32)
        try:
            out = self.fn(batch)
        except Exception as err:
            shape = " x ".join(map(str, batch.shape[1:]))
            blame_model(err, repr(self.name), f"{batch.shape[0]} image{'' if batch.shape[0] == 1 else 's'} of "
                        f"{shape} (H x W x C, values in [0, 1])")
            raise
        out = class_scores(out, self.name)
        self._count(x.shape[0])
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu().numpy()
        try:
            arr = np.asarray(out)
            with np.errstate(over="ignore"):
                real = None if np.iscomplexobj(arr) else np.ascontiguousarray(arr, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"model {self.name!r} returned {type(out).__name__} that is not an N x classes "
                             f"array of numbers ({err})") from None
        if real is None:
            raise ValueError(f"model {self.name!r} returned complex numbers; expected real N x classes scores")
        if arr.ndim == 2:
            self._refuse_class_index(arr.shape[1], arr.dtype.kind in "iub", arr.dtype)
        if arr.dtype.kind == "f" and arr.dtype.itemsize > 4:
            self._check_range(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64)))
        out = real
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(
                f"model {self.name!r} returned shape {out.shape} for a batch of {x.shape[0]}; expected "
                f"({x.shape[0]}, classes)"
            )
        return self.to_probabilities(torch.from_numpy(out))

    def probabilities(self, x: torch.Tensor, batch_size: int | None = None, *,
                      normalized: bool = False) -> torch.Tensor:
        """Class probabilities (N x classes, float32, on the CPU) of an N x C x H x W batch in [0, 1], or
        already normalized with :meth:`normalization` when ``normalized``."""
        if x.dim() == 3:
            x = x.unsqueeze(0)
        bs = batch_size or self.resolve_batch_size(x[:1])
        outs = [self._call_batch(x[i : i + bs], normalized) for i in range(0, x.shape[0], bs)]
        return self.checked(torch.cat(outs))

    def checked(self, probs: torch.Tensor) -> torch.Tensor:
        """``probs`` detached on the CPU; a ValueError naming the model if any is NaN or infinite, or if their
        class count differs from the number of ``labels``."""
        probs = probs.detach().cpu()
        if not torch.isfinite(probs).all():
            raise ValueError(f"model {self.name!r} returned NaN or infinite scores")
        if self.labels is not None and probs.dim() == 2 and probs.shape[1] != len(self.labels):
            hint = ""
            if self.outputs == "logits" and probs.shape[1] == 2 and len(self.labels) == 1:
                positive = self.labels[0]
                hint = (f"; a one-logit model is read as two classes, negative and positive: pass two labels, "
                        f"e.g. labels=['not {positive}', '{positive}']")
            raise ValueError(f"model {self.name!r} returned {probs.shape[1]} class scores but has "
                             f"{len(self.labels)} labels; pass one label per class (or labels=None){hint}")
        return probs

    def predict(self, image, k: int = 5) -> list[tuple[int, str, float]]:
        """Top-``k`` classes of one image as (index, label, probability)."""
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k: expected a positive int (classes to list), got {k!r}")
        _, x = self.prepare(image)
        p = self.probabilities(x, batch_size=1)[0]
        top = torch.topk(p, min(k, p.numel()))
        return [(int(i), self.label(int(i)), float(v)) for v, i in zip(top.values, top.indices)]

    # ------------------------------------------------------------------ batching
    @property
    def batch_size(self) -> int | str:
        return self._batch_resolved if self._batch_resolved is not None else self._batch_request

    @batch_size.setter
    def batch_size(self, value: int | str) -> None:
        self._batch_request = _check_batch_size(value)
        self._batch_resolved = None if value == "auto" else int(value)
        self.quick_batch_timings, self._quick_tried = {}, 0

    @property
    def batch_size_known(self) -> bool:
        """Whether :meth:`resolve_batch_size` returns without measuring (an int batch size, or "auto" measured)."""
        return self._batch_resolved is not None

    @property
    def batch_size_fixed(self) -> int | None:
        """The batch size the user set as an int; None for ``"auto"`` (measured or not)."""
        return self._batch_request if isinstance(self._batch_request, int) else None

    def measure_batch_size_on(self, run) -> int:
        """Measure an ``"auto"`` batch size on real work instead of synthetic passes: ``run(bs)`` evaluates the
        next ``bs`` inputs of a request holding at least :func:`sweep_images` of them (each pass is a real,
        counted evaluation). Same sizes, order, timing and stopping rule as :meth:`resolve_batch_size`; the
        fastest size is kept for the model, with ``batch_timings``."""
        self._ort_session(create=True)  # measure what will run
        self._batch_resolved, self.batch_timings = _sweep(run, BATCH_CANDIDATES)
        return self._batch_resolved

    def quick_batch_size_on(self, run, total: int) -> int | None:
        """The batch size for a request of ``total`` new inputs too small for :meth:`measure_batch_size_on`:
        the fastest of :func:`quick_sizes`, timed on the request's own first passes (a warm-up and two timed
        passes at each size, every pass a real, counted evaluation), and kept in ``quick_batch_timings`` for
        later requests, which reuse it without timing unless they could try more sizes than it did. The
        model's ``"auto"`` size itself stays unmeasured (two passes per size are too few to keep for good).
        None (nothing run) when fewer than two sizes fit."""
        sizes = quick_sizes(total)
        if not sizes:
            return None
        if self._quick_tried < len(sizes):
            self._ort_session(create=True)  # measure what will run
            _, self.quick_batch_timings = _sweep(run, sizes, images=0)
            self._quick_tried = len(sizes)
        return max(self.quick_batch_timings, key=self.quick_batch_timings.get)

    def resolve_batch_size(self, sample: torch.Tensor | None = None) -> int:
        """The batch size in force; ``"auto"`` is measured once, on the first call, on ``sample``'s shape."""
        if self._batch_resolved is None:
            if sample is None:
                if self.input_size is None:
                    return 16
                g = torch.Generator().manual_seed(0)  # the process's random stream is left alone
                sample = torch.rand(1, self.channels or 3, *self.input_size, generator=g).to(self.device)
            self._batch_resolved, self.batch_timings = measure_batch_size(self, sample)
        return self._batch_resolved


def per_channel(name: str, value, channels: int | None, owner: str = "the model") -> np.ndarray:
    """``value`` (one number, or one per channel) as finite float32 values, one per channel when ``channels``
    is known (one value is repeated); a ValueError naming ``name`` otherwise."""
    try:
        arr = np.asarray(value, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected numbers, got {value!r}") from None
    if channels is not None and arr.size == 1:
        arr = np.repeat(arr, channels)
    if arr.size == 0 or (channels is not None and arr.size != channels) or not np.all(np.isfinite(arr)):
        if channels == 1:
            count = f"{owner}'s channel count is 1; expected one finite value"
        elif channels:
            count = f"{owner}'s channel count is {channels}; expected 1 or {channels} finite values"
        else:
            count = "expected finite values"
        raise ValueError(f"{name}: {count}, got {value!r}")
    return arr


def _check_batch_size(value) -> int | str:
    if value == "auto":
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"batch_size: expected a positive int or 'auto', got {value!r}")
    return int(value)


#: Calibration stops trying larger batch sizes once one runs below this fraction of the best throughput so far.
SLOWER_STOP = 0.7


#: Images timed at each candidate batch size (at least two passes; the best pass counts), after a warm-up pass.
CALIBRATION_IMAGES = 32


def _sweep(run, candidates: Iterable[int], images: int = CALIBRATION_IMAGES) -> tuple[int, dict[int, float]]:
    """Call ``run(bs)`` (one pass of ``bs`` inputs) at each candidate size, smallest first: a warm-up pass, then
    at least ``images`` timed images (two passes at least); stop after a size below ``SLOWER_STOP`` x the best
    so far. Returns (fastest size, {size: img/s of its best pass})."""
    timings: dict[int, float] = {}
    for bs in candidates:
        run(bs)  # warm-up: allocator and kernels
        best = float("inf")
        for _ in range(max(2, images // bs)):
            t0 = time.perf_counter()
            run(bs)
            best = min(best, time.perf_counter() - t0)
        timings[bs] = bs / max(best, 1e-9)
        if timings[bs] < SLOWER_STOP * max(timings.values()):
            break
    return max(timings, key=timings.get), timings


def sweep_images(candidates: Iterable[int] = BATCH_CANDIDATES, images: int = CALIBRATION_IMAGES) -> int:
    """Inputs a whole calibration sweep passes (warm-up and timed passes at every candidate size): a request of
    at least this many can be measured on its own inputs (:meth:`Model.measure_batch_size_on`)."""
    return sum(bs * (1 + max(2, images // bs)) for bs in candidates)


def quick_sizes(total: int) -> list[int]:
    """The smallest candidate sizes whose quick sweep (a warm-up and two timed passes each) fits in a request of
    ``total`` inputs: [1, 4] from 15 inputs, [1, 4, 8] from 39, [1, 4, 8, 16] from 87, all five from 183; []
    when fewer than two fit."""
    sizes = [bs for i, bs in enumerate(BATCH_CANDIDATES) if sweep_images(BATCH_CANDIDATES[: i + 1], 0) <= total]
    return sizes if len(sizes) >= 2 else []


def measure_batch_size(model: Model, sample: torch.Tensor, candidates: Iterable[int] = BATCH_CANDIDATES):
    """Time forward passes at each candidate size, smallest first (after a warm-up), and return
    (fastest, {size: img/s}) over the sizes tried.

    Each size's throughput is that of its best pass, so a pass slowed by other work on the machine does not
    decide the choice. Sizes above one that ran below ``SLOWER_STOP`` x the best so far are not tried: under
    glibc's default allocator large batches are the slowest and the costliest to time (a quarter of the
    throughput here), and calibration is paid by every process."""
    model._ort_session(create=True)  # calibrate what will run
    base = sample[:1]
    batches: dict[int, torch.Tensor] = {}  # one input tensor per size, made on its first pass

    def run(bs: int) -> None:
        if bs not in batches:
            batches[bs] = base.expand(bs, *base.shape[1:]).clone()
        model._call_batch(batches[bs])

    own = [0]  # this calibration's passes (this thread's only): taken back out of the model's count
    saved = getattr(model._local, "counters", None)
    model._local.counters = [own]  # calibration passes are not evaluations of any explanation
    try:
        return _sweep(run, candidates)
    finally:
        model._local.counters = saved if saved is not None else []
        with model._lock:
            model.n_evals -= own[0]


def as_model(model) -> Model:
    """Accept a :class:`Model`, a torch module or a callable (wrapped with default settings)."""
    if isinstance(model, Model):
        return model
    if isinstance(model, torch.nn.Module) or callable(model):
        return Model(model)
    raise TypeError(f"model: expected a unveil.Model, a torch.nn.Module or a callable, got {type(model).__name__}")
