"""ONNX Runtime models: an ``.onnx`` classifier behind the same adapter as torch modules and callables.

:func:`load_onnx` (also ``unveil.Model.from_onnx``) opens an inference session and wraps it in an
:class:`OnnxModel`, a :class:`~unveil.models.base.Model` whose function is an :class:`OnnxFunction`: it takes the
adapter's numpy batch (N x H x W x C float32 in [0, 1]), preprocesses it into the graph's input and runs the
session. Black-box methods work on it; gradient methods do not (a session gives no gradients), and they say so,
naming the methods that work instead.

Needs ``onnxruntime`` (a dependency of unveil; ``pip install onnxruntime``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .base import Model, per_channel
from .default import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["OnnxFunction", "OnnxModel", "load_onnx", "export_onnx", "default_providers"]

_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(
            "ONNX models need the package onnxruntime: pip install onnxruntime"
        ) from err
    return onnxruntime


def default_providers() -> list[str]:
    """ONNX Runtime execution providers to use: CUDA first where this onnxruntime build has it, then the CPU."""
    ort = _import_ort()
    available = ort.get_available_providers()
    wanted = [p for p in ("CUDAExecutionProvider",) if p in available]
    return wanted + ["CPUExecutionProvider"]


def _static(dim) -> int | None:
    """A graph dimension as an int when it is fixed, else None (symbolic names and unknowns)."""
    return int(dim) if isinstance(dim, (int, np.integer)) and dim > 0 else None


def _per_channel(name: str, value, channels: int) -> np.ndarray:
    """``value`` as ``channels`` float32 values (one value is repeated); ValueError otherwise."""
    return per_channel(name, value, channels, owner="the graph")


class OnnxFunction:
    """An ONNX Runtime session as a model function: ``fn(batch) -> N x classes`` raw outputs (numpy).

    ``batch`` is N x H x W x C float32 in [0, 1] (what :class:`Model` hands a callable). ``preprocess`` turns
    it into the graph's input; the default normalizes with ``mean``/``std`` (per channel, or one value for all;
    when None: ImageNet's for a 3-channel graph, none (0 and 1) for other channel counts) and lays it out as the
    graph wants (N x C x H x W unless the graph's static shape puts the channels last) in the input's dtype. The
    first output of the graph is returned. A graph with a fixed batch dimension B gets exactly B inputs per
    run: a shorter batch is padded (padding rows are dropped from the result) and a longer one split.
    """

    def __init__(
        self,
        session,
        *,
        preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        name: str = "onnx",
    ):
        self.session = session
        self.name = name
        inputs = session.get_inputs()
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        self.input_type = inputs[0].type
        self.output_name = session.get_outputs()[0].name
        self.dtype = _DTYPES.get(self.input_type)
        rank = len(self.input_shape)
        self.fixed_batch = _static(self.input_shape[0]) if rank else None
        # N x H x W x C when the last dimension is fixed and smaller than the second (or the second is free)
        s1, s3 = (_static(self.input_shape[1]), _static(self.input_shape[3])) if rank == 4 else (None, None)
        self.channels_last = s3 is not None and (s1 is None or s3 < s1)
        #: the graph's fixed channel count (None when the graph leaves it free or is not an image batch)
        self.channels = s3 if self.channels_last else s1
        self.preprocess = preprocess
        if preprocess is None:
            if rank != 4:
                raise ValueError(
                    f"{name}: the graph's input {self.input_name!r} has shape {self.input_shape}, not an image "
                    "batch (4 dimensions); pass preprocess= to build it from the N x H x W x C batch"
                )
            if self.dtype is None:
                raise ValueError(
                    f"{name}: the graph's input {self.input_name!r} is {self.input_type}; the default "
                    "preprocessing makes float inputs; pass preprocess= to build it"
                )
            c = self.channels or 3
            imagenet = c == 3
            self._mean = _per_channel("mean", IMAGENET_MEAN if imagenet else 0.0, c) if mean is None else \
                _per_channel("mean", mean, c)
            self._std = _per_channel("std", IMAGENET_STD if imagenet else 1.0, c) if std is None else \
                _per_channel("std", std, c)
            if not np.all(self._std > 0):
                raise ValueError(f"std: expected positive values, got {std!r}")

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(height, width) when the graph fixes both, else None."""
        if len(self.input_shape) != 4:
            return None
        h, w = (self.input_shape[1], self.input_shape[2]) if self.channels_last else self.input_shape[2:4]
        h, w = _static(h), _static(w)
        return (h, w) if h and w else None

    @property
    def num_outputs(self) -> int | None:
        """The number of classes when the graph's first output fixes it."""
        shape = self.session.get_outputs()[0].shape
        return _static(shape[-1]) if len(shape) == 2 else None

    def default_preprocess(self, batch: np.ndarray) -> np.ndarray:
        """(batch - mean) / std, in the graph's layout and dtype."""
        x = (batch - self._mean) / self._std
        if not self.channels_last:
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=self.dtype)

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.session.run([self.output_name], {self.input_name: x})[0]
        except Exception as err:  # onnxruntime's own exception types: say what was fed and what the graph takes
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(
                f"{self.name}: the session refused an input of shape {tuple(x.shape)} {x.dtype} (the graph's "
                f"input {self.input_name!r} is {self.input_shape} {self.input_type}): {detail}"
            ) from None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        n = batch.shape[0]
        x = self.default_preprocess(batch) if self.preprocess is None else np.asarray(self.preprocess(batch))
        if self.dtype is not None and x.dtype != self.dtype:
            x = x.astype(self.dtype)
        b = self.fixed_batch
        if b is None or n == b:
            return self._run(x)
        outs = []
        for i in range(0, n, b):
            part = x[i : i + b]
            k = part.shape[0]
            if k < b:  # pad with copies of the last input; their outputs are dropped
                part = np.concatenate([part, np.repeat(part[-1:], b - k, axis=0)])
            outs.append(self._run(part)[:k])
        return np.concatenate(outs)

    def __repr__(self) -> str:
        return f"OnnxFunction({self.name!r}, input {self.input_name!r} {self.input_shape} {self.input_type})"


class OnnxModel(Model):
    """A :class:`Model` over an ONNX Runtime session (see :func:`load_onnx`); ``fn`` is its :class:`OnnxFunction`."""

    kind = "an ONNX Runtime model"

    @property
    def inference(self) -> str:
        return "onnxruntime"

    @property
    def session(self):
        return self.fn.session

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually runs on, in order of preference."""
        return list(self.fn.session.get_providers())


def load_onnx(
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
) -> OnnxModel:
    """Load an ONNX classifier from ``path`` as a :class:`Model` running on ONNX Runtime.

    The graph must have one input: an image batch (N x C x H x W, or N x H x W x C when its static shape says
    so) unless ``preprocess`` builds it. ``preprocess(batch) -> array``: ``batch`` is N x H x W x C float32 in
    [0, 1] at ``input_size``; it returns the graph's input for those N images. Without it, the batch is
    normalized with ``mean``/``std`` (per channel or one value; default: ImageNet's for 3 channels, none for other
    counts; ``mean=0, std=1`` for a 3-channel graph that takes [0, 1] input) and laid out as the graph wants.
    The graph's fixed channel count (C) is the model's ``channels``: images are fitted to it by the rule of
    :func:`unveil.load_image` (a gray graph gets luminance, ...); a graph that leaves C free gets 3.
    ``input_size`` defaults to the graph's static (height, width); with neither, each image keeps its own size.
    The first output is read as N x classes ``outputs`` (``"logits"``, softmaxed by the adapter,
    ``"probabilities"`` or ``"scores"``, see :class:`~unveil.models.base.Model`). ``batch_size``: an int or
    ``"auto"`` (timed on first use like torch models; a graph with a fixed batch dimension uses that size).
    ``providers`` default to :func:`default_providers`; ``session_options`` is an
    ``onnxruntime.SessionOptions`` (threads, graph optimizations).
    """
    ort = _import_ort()
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path: expected the path of an .onnx file, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ONNX model {str(path)!r}: no such file")
    if preprocess is not None and not callable(preprocess):
        raise TypeError(f"preprocess: expected a callable batch -> array, got {type(preprocess).__name__}")
    if preprocess is not None and (mean is not None or std is not None):
        raise ValueError("mean, std: they belong to the default preprocessing; with preprocess= normalize there")
    try:
        session = ort.InferenceSession(
            str(path), sess_options=session_options, providers=list(providers or default_providers())
        )
    except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "NOT_IMPLEMENTED" in detail:  # a valid graph with an operator the providers lack (float64 Conv on CPU)
            raise ValueError(f"ONNX model {str(path)!r}: ONNX Runtime cannot run it with the providers "
                             f"{list(providers or default_providers())} ({detail})") from None
        raise ValueError(f"ONNX model {str(path)!r}: not a readable ONNX model ({detail})") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise ValueError(
            f"ONNX model {str(path)!r}: expected a graph with one input (the image batch), it has "
            f"{len(inputs)}: {names}"
        )
    name = name or path.stem
    fn = OnnxFunction(session, preprocess=preprocess, mean=mean, std=std, name=f"ONNX model {str(path)!r}")
    graph_size = fn.input_size
    if input_size is None:
        input_size = graph_size
    elif graph_size is not None and tuple(input_size) != graph_size:
        raise ValueError(
            f"input_size: ONNX model {str(path)!r} takes {graph_size[0]} x {graph_size[1]} images, "
            f"got input_size={tuple(input_size)}"
        )
    n_out = fn.num_outputs
    if labels is not None and n_out is not None and len(labels) != n_out:
        raise ValueError(f"labels: ONNX model {str(path)!r} has {n_out} outputs, got {len(labels)} labels")
    if fn.fixed_batch is not None and batch_size == "auto":
        batch_size = fn.fixed_batch  # the graph decides; other sizes still work (padded or split)
    return OnnxModel(fn, input_size=input_size, labels=labels, outputs=outputs, batch_size=batch_size, name=name,
                     channels=fn.channels if fn.channels is not None else 3)


def export_onnx(model: Model, path, *, opset: int = 17, **options) -> OnnxModel:
    """Export a torch :class:`Model`'s module to ``path`` with ``torch.onnx.export`` and load it back on ONNX
    Runtime with the same input size, channels, normalization, labels, outputs and batch size.

    The graph takes the normalized N x C x H x W batch (the batch dimension free) and returns the module's first
    output. ``opset``: the ONNX opset (17 by default). ``options`` go to :func:`load_onnx` (``providers``,
    ``session_options``, ``batch_size``, ``name``). Only black-box methods run on the result; keep ``model`` for
    gradient methods. Needs ``onnxruntime`` and ``onnx`` (``pip install onnxruntime onnx``).
    """
    if not isinstance(model, Model) or not model.is_torch:
        raise TypeError(f"export_onnx: expected a unveil.Model over a torch module, got {_kind(model)}")
    if model.input_size is None:
        raise ValueError(f"export_onnx: model {model.name!r} has no input_size; the graph needs a fixed image size")
    _import_ort()
    bad = sorted(set(options) - {"providers", "session_options", "batch_size", "name"})
    if bad:
        raise TypeError(f"export_onnx: unexpected option(s) {', '.join(map(repr, bad))}; the rest is taken from "
                        "the model")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _export(model, path, opset)
    mean = model._mean.reshape(-1).tolist() if model._mean is not None else 0.0
    std = model._std.reshape(-1).tolist() if model._std is not None else 1.0
    batch = model._batch_request if isinstance(model._batch_request, int) else "auto"
    kwargs = dict(labels=model.labels, mean=mean, std=std, outputs=model.outputs, batch_size=batch, name=model.name)
    kwargs.update(options)
    return load_onnx(path, **kwargs)


def _export(model: Model, path: Path, opset: int = 17) -> None:
    """``torch.onnx.export`` of ``model.fn`` (normalized N x C x H x W in, its class scores out as
    :func:`~unveil.models.base.class_scores` reads them, batch free)."""
    import warnings

    import torch

    from ..checks import scoped_warnings
    from .base import class_scores, module_lock

    dtype = model.dtype or torch.float32

    class Scores(torch.nn.Module):  # the module's scores however it returns them (a mapping, a tuple, ...),
        def __init__(self, fn):  # float32 in and out whatever dtype the module computes in
            super().__init__()
            self.fn = fn

        def forward(self, x):
            out = class_scores(self.fn(x.to(dtype)), model.name)
            return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out

    c = model.channels or 3
    g = torch.Generator().manual_seed(0)  # the example input: the process's random stream is left alone
    example = torch.rand(2, c, *model.input_size, generator=g).to(model.device)
    with module_lock(model.fn):  # no other pass runs meanwhile, so the flags read here are the user's own
        # the exporter switches the exported module to eval and back with a recursive train(flag) of its own
        # top-level flag, which would leave every submodule of the user's module in that one mode (and so does
        # the wrapper's eval()): the flags are put back one by one afterwards
        flags = [(m, m.training) for m in model.fn.modules()]
        try:
            wrapper = Scores(model.fn).eval()
            with model.inference_behaviour(), scoped_warnings():
                warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
                try:
                    torch.onnx.export(wrapper, (example,), str(path), input_names=["image"],
                                      output_names=["scores"], dynamic_axes={"image": {0: "batch"},
                                                                              "scores": {0: "batch"}},
                                      opset_version=opset, dynamo=False)
                except ModuleNotFoundError as err:
                    raise ImportError(f"torch.onnx.export needs the package {err.name!r}: pip install onnx") \
                        from err
        finally:
            for m, training in flags:
                m.training = training


def inference_session(model: Model, opset: int = 17):
    """An ONNX Runtime CPU session over ``model.fn`` (exported to a temporary file that is removed once the
    session holds the graph), for a torch :class:`Model`'s forward passes without gradients. Idle threads do not
    spin (``session.intra_op.allow_spinning`` 0), so other work on the machine keeps its cores.
    Returns (session, input name)."""
    import tempfile

    ort = _import_ort()
    with tempfile.TemporaryDirectory(prefix="unveil-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        _export(model, path, opset)
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return session, session.get_inputs()[0].name


def _kind(obj) -> str:
    return obj.kind if isinstance(obj, Model) else type(obj).__name__
