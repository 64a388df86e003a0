"""Loading images and turning any accepted input into H x W x 3 float32 in [0, 1].

The conversion rule (documented in the README, applied everywhere):

* paths are opened with Pillow; a missing, empty, corrupt or non-image file raises ``ValueError`` naming it;
* grayscale (one channel) is repeated to three channels;
* an alpha channel (LA, RGBA, or an array with 2 or 4 channels) is composited onto a white background;
* palette and CMYK images are converted to RGB by Pillow;
* ``uint8`` is divided by 255, ``uint16`` (and Pillow's 16-bit modes) by 65535, ``bool`` maps to {0, 1};
  float arrays must already lie in [0, 1]; other integer types are refused with a message saying how to convert;
* NaN or infinite values, zero-sized images and wrong shapes are refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np

ImageLike = Union[str, os.PathLike, "PIL.Image.Image", np.ndarray]  # noqa: F821

__all__ = ["load_image", "to_float_rgb", "resize"]


def _composite_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return rgb * a + (1.0 - a)


def to_float_rgb(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Convert an array (H x W, H x W x 1|2|3|4) to H x W x 3 float32 in [0, 1] by the module's rule."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(array).__name__}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(
            f"{name}: expected shape H x W or H x W x C with C in 1..4 channels, got {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name}: the image is empty (shape {array.shape})")
    if array.dtype == np.uint8:
        x = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        x = array.astype(np.float32) / 65535.0
    elif array.dtype == np.bool_:
        x = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        x = array.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name}: contains NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name}: float images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                "divide by 255 (8-bit data) or 65535 (16-bit data) first"
            )
    else:
        raise TypeError(
            f"{name}: unsupported dtype {array.dtype}; pass uint8, uint16, bool or float in [0, 1]"
        )
    if x.ndim == 2:
        x = x[..., None]
    c = x.shape[2]
    if c == 1:
        x = np.repeat(x, 3, axis=2)
    elif c == 2:
        x = _composite_white(np.repeat(x[..., :1], 3, axis=2), x[..., 1])
    elif c == 4:
        x = _composite_white(x[..., :3], x[..., 3])
    return np.ascontiguousarray(x, dtype=np.float32)


def _from_pil(img, name: str) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.uint16)
        return to_float_rgb(arr, name)
    if mode == "I":  # 32-bit integer pixels: Pillow's mode for 16-bit PNGs
        arr = np.asarray(img, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"{name}: 32-bit integer pixels outside 0..65535 are not supported")
        return to_float_rgb(arr.astype(np.uint16), name)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if arr.size and arr.max() > 1.0:
            arr = arr / 255.0 if arr.max() <= 255.0 else arr / float(arr.max())
        return to_float_rgb(arr, name)
    if mode in ("L", "RGB", "RGBA", "LA"):
        return to_float_rgb(np.asarray(img), name)
    if mode == "1":
        return to_float_rgb(np.asarray(img.convert("L")), name)
    has_alpha = "A" in mode or (mode == "P" and "transparency" in img.info)
    return to_float_rgb(np.asarray(img.convert("RGBA" if has_alpha else "RGB")), name)


def load_image(image: ImageLike, name: str = "image") -> np.ndarray:
    """Return ``image`` (path, PIL image or array) as H x W x 3 float32 in [0, 1] (see the module rule)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.exists():
            raise ValueError(f"image file not found: {path}")
        if path.is_dir():
            raise ValueError(f"expected an image file, got a directory: {path}")
        if path.stat().st_size == 0:
            raise ValueError(f"image file is empty: {path}")
        try:
            with Image.open(path) as img:
                img.load()
                return _from_pil(img, str(path))
        except UnidentifiedImageError:
            raise ValueError(f"not a readable image file: {path}") from None
        except Image.DecompressionBombError as err:
            raise ValueError(f"image file too large to decode safely: {path} ({err})") from None
        except (OSError, SyntaxError) as err:
            raise ValueError(f"corrupt or truncated image file: {path} ({err})") from None
    if isinstance(image, Image.Image):
        return _from_pil(image, name)
    if isinstance(image, np.ndarray):
        return to_float_rgb(image, name)
    try:  # torch tensors: C x H x W or H x W x C, as the shape says
        import torch

        if isinstance(image, torch.Tensor):
            arr = image.detach().cpu().numpy()
            if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
                arr = arr.transpose(1, 2, 0)
            return to_float_rgb(arr, name)
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(
        f"{name}: expected a file path, a PIL image or a numpy array, got {type(image).__name__}"
    )


def resize(image: np.ndarray, size: tuple[int, int], order: int = 1) -> np.ndarray:
    """Resize H x W (x C) float array to ``size`` = (height, width); anti-aliased when shrinking."""
    from skimage.transform import resize as _resize

    if tuple(image.shape[:2]) == tuple(size):
        return image
    shrinking = size[0] < image.shape[0] or size[1] < image.shape[1]
    out = _resize(
        image,
        size,
        order=order,
        mode="edge",
        anti_aliasing=bool(shrinking and order > 0),
        preserve_range=True,
    )
    return out.astype(image.dtype, copy=False)
