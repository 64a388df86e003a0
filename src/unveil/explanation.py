"""The one result type every method returns, and that plots, metrics, the CLI and reports consume."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Explanation"]

_ARRAYS = ("map", "segments", "weights", "image", "values")


def make_folder(folder: Path, what: str = "output folder") -> Path:
    """Create ``folder`` (and its parents) if needed; a ValueError says why when it cannot be (a file is in
    the way, no permission)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{what} {folder} cannot be created: {err.strerror or err}") from None
    return folder


#: Arrays larger than this (bytes) are stored in the .npz uncompressed, except label maps: a photo's image and
#: map shrink by under 10 % with zlib, which took 12-16 s for a 48-megapixel photo; label maps shrink ~100x fast.
COMPRESS_BELOW = 16 * 2**20


def write_npz(path: Path, arrays: dict) -> None:
    """An .npz (``numpy.load`` reads it) with each array compressed (zlib level 1) unless it is larger than
    :data:`COMPRESS_BELOW` and not the segments."""
    import zipfile

    with zipfile.ZipFile(path, "w", allowZip64=True) as zf:
        for name, value in arrays.items():
            a = np.asanyarray(value)
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            small = a.nbytes < COMPRESS_BELOW or name == "segments"
            info.compress_type = zipfile.ZIP_DEFLATED if small else zipfile.ZIP_STORED
            setattr(info, "compress_level" if hasattr(info, "compress_level") else "_compresslevel", 1)
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(a) if a.ndim else a, allow_pickle=False)


def _compact(arrays: dict) -> dict:
    """The explanation's arrays in fewer bytes, exactly restored by :func:`_expand`: segments in the smallest
    unsigned type that holds them; an image whose values are all k / 255 (an 8-bit source) as uint8
    (``image_u8``)."""
    out = dict(arrays)
    seg = out.get("segments")
    if seg is not None and seg.size and np.issubdtype(seg.dtype, np.integer) and seg.min() >= 0:
        top = int(seg.max())
        out["segments"] = seg.astype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int32)
    img = out.get("image")
    if img is not None and img.dtype == np.float32 and img.size:
        head = img.reshape(-1)[:4096]  # a float image fails here, cheaply
        if np.array_equal(_to_u8(head).astype(np.float32) / 255.0, head):
            u8 = _to_u8(img)
            back = u8.astype(np.float32)
            back /= 255.0
            if np.array_equal(back, img):
                del out["image"]
                out["image_u8"] = u8
    return out


def _to_u8(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as the nearest k / 255, k as uint8."""
    t = x * np.float32(255.0)
    t += np.float32(0.5)
    return t.astype(np.uint8)


def _expand(arrays: dict) -> dict:
    """The inverse of :func:`_compact` (files written before it load unchanged)."""
    out = dict(arrays)
    if "image_u8" in out:
        out["image"] = out.pop("image_u8").astype(np.float32) / 255.0  # the same arithmetic as loading 8-bit
    if "segments" in out and np.issubdtype(out["segments"].dtype, np.integer):
        out["segments"] = out["segments"].astype(np.int32)
    return out


def _as_array(value) -> np.ndarray | None:
    """An option value that is an array (numpy, a torch tensor, or a PIL image: H x W x C float32 in [0, 1] by
    the input rule) as numpy; None for anything else."""
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch") and hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    from .images import is_pil_image, load_image

    if is_pil_image(value):
        return load_image(value, channels=None, name="a PIL image option")
    return None


#: The sidecar's fields with the types a readable explanation has (anything else: the file is not one).
_META_TYPES = (("target", (int,), "a class number"), ("label", (str,), "a class name"),
               ("score", (int, float), "a number"), ("method", (str,), "a method name"),
               ("n_evals", (int,), "a count"), ("seconds", (int, float), "a number"),
               ("seed", (int,), "an int or null"), ("kind", (str,), "'image' or 'tabular'"),
               ("params", (dict,), "a dict"))


def _array_leaves(tree: dict, prefix: str, arrays_only: bool = False):
    """(``prefix__key[__subkey...]``, array) for every array in ``tree`` and in the dicts inside it (numpy
    arrays only when ``arrays_only``; else also tensors and PIL images, as :func:`_as_array` reads them)."""
    for key, value in tree.items():
        name = f"{prefix}__{key}"
        if isinstance(value, dict):
            yield from _array_leaves(value, name, arrays_only)
            continue
        a = value if isinstance(value, np.ndarray) else None if arrays_only else _as_array(value)
        if a is not None:
            yield name, a


def _put_leaf(tree: dict, key: str, array: np.ndarray) -> None:
    """Put ``array`` back at ``key`` (``a__b``: ``tree["a"]["b"]`` when ``tree["a"]`` is a dict that was
    saved with it; otherwise the key as it is)."""
    head, sep, rest = key.partition("__")
    if sep and key not in tree and isinstance(tree.get(head), dict):
        _put_leaf(tree[head], rest, array)
    else:
        tree[key] = array


def _npz_path(path) -> Path:
    """The .npz file of an explanation saved as ``path`` (``x.npz`` and ``x.json`` -> ``x.npz``; otherwise
    ``.npz`` added to the whole name)."""
    path = Path(path)
    if path.suffix == ".npz":
        return path
    return path.with_suffix(".npz") if path.suffix == ".json" else path.with_name(path.name + ".npz")


def _jsonable(value: Any):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist()) if value.size <= 64 else f"<array {value.shape} {value.dtype}>"
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None  # strict JSON has no NaN or infinity
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return repr(value)


@dataclass(frozen=True)
class Explanation:
    """Why the model gave ``target`` its score, for one image (``kind="image"``) or one table row
    (``kind="tabular"``, from :func:`unveil.explain_tabular`).

    ``map``: H x W float32 signed importance at the input image's own resolution (positive = supports the
    target). ``segments``: H x W int32 feature labels (segment-based methods) or None. ``weights``: one value
    per feature (per segment; for ``streak`` each selected segment's gain, the order in ``extras['selected']``).
    ``score``: the target's probability on the unperturbed input. ``n_evals``: model evaluations spent,
    the unperturbed input included. ``seconds``: wall time of the whole call. ``extras``: method-specific
    results (surrogate R², standard errors, ...). ``image``: the input (H x W x C float32, as the model took it), kept
    for plots.

    For a table row, ``map`` and ``weights`` hold one weight per feature (F values), ``feature_names`` the
    columns' names, ``values`` the explained row, ``score`` the model's output for ``target`` on it (a
    probability or any score), and ``segments`` and ``image`` are None.
    """

    map: np.ndarray
    target: int
    label: str
    score: float
    method: str
    params: dict = field(default_factory=dict)
    seed: int | None = None
    n_evals: int = 0
    seconds: float = 0.0
    segments: np.ndarray | None = None
    weights: np.ndarray | None = None
    extras: dict = field(default_factory=dict)
    image: np.ndarray | None = field(default=None, repr=False)
    kind: str = "image"
    feature_names: list | None = None
    values: np.ndarray | None = field(default=None, repr=False)

    # --------------------------------------------------------------------- masks
    def top_features(self, k: int) -> np.ndarray:
        """Indices of the ``k`` features with the largest weights (for ``streak``: the selected set, in selection
        order, then — with a ``fill`` — the other features by their filled weights; LIME's ``selection`` only
        decides which weights are fitted, so its top features are still those with the largest weights)."""
        if self.weights is None or (self.segments is None and self.kind != "tabular"):
            raise ValueError(f"method {self.method!r} gives a pixel map without segments; use top_mask(fraction=...)")
        k = max(0, int(k))
        order = np.argsort(-np.asarray(self.weights), kind="stable")
        if self.method == "streak" and "selected" in self.extras:
            selected = np.asarray(self.extras["selected"], dtype=np.int64)
            if self.params.get("fill", "none") == "none":
                return selected[:k]
            return np.concatenate([selected, order[~np.isin(order, selected)]])[:k]
        return order[:k]

    def top_mask(self, k: int | None = None, *, fraction: float | None = None) -> np.ndarray:
        """H x W bool mask of the ``k`` most important segments, or of the top ``fraction`` of pixels (for a
        table's explanation: a bool per feature, True for the ``k`` top features or the top ``fraction``)."""
        if (k is None) == (fraction is None):
            raise ValueError("top_mask: pass exactly one of k (segments) or fraction (of pixels)")
        if k is not None:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
                raise ValueError(f"top_mask: k must be a non-negative int, got {k!r}")
            # a table's explanation has no segments: each feature (map entry) is its own
            labels = self.segments if self.segments is not None else np.arange(self.map.size).reshape(self.map.shape)
            return np.isin(labels, self.top_features(int(k)))
        if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, (int, float, np.integer, np.floating)) \
                or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"top_mask: fraction must lie in [0, 1], got {fraction!r}")
        n = int(round(fraction * self.map.size))
        mask = np.zeros(self.map.size, dtype=bool)
        if n:
            mask[np.argsort(-self.map.reshape(-1), kind="stable")[:n]] = True
        return mask.reshape(self.map.shape)

    # --------------------------------------------------------------------- save / load
    def metadata(self) -> dict:
        """Everything but the arrays, as JSON-ready values."""
        meta = {
            f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in _ARRAYS
        }
        meta["shape"] = list(self.map.shape)
        return meta

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npz with the arrays) and a .json sidecar with the metadata; return the .npz path.
        A path ending in ``.json`` names the pair too; any other ending gets ``.npz`` added (``cat.v2`` ->
        ``cat.v2.npz`` and ``cat.v2.json``); :meth:`load` takes the same path."""
        if Path(path).is_dir():
            raise ValueError(f"save: {path} is a folder; give the explanation's file name "
                             f"(e.g. {Path(path) / 'x.npz'})")
        path = _npz_path(path)
        make_folder(path.parent)
        arrays = {name: getattr(self, name) for name in _ARRAYS if getattr(self, name) is not None}
        params = self.params if isinstance(self.params, dict) else {}
        # arrays among the extras and options (also inside dicts, e.g. smoothgrad's base_options) go to the .npz
        # under their key path; the .json keeps a placeholder
        extra_arrays = dict(_array_leaves(self.extras, "extra", arrays_only=True))
        param_arrays = dict(_array_leaves(params, "param"))
        write_npz(path, {**_compact(arrays), **extra_arrays, **param_arrays})
        meta = self.metadata()
        meta["extras"] = {k: _jsonable(v) for k, v in self.extras.items() if not isinstance(v, np.ndarray)}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2, allow_nan=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Explanation":
        """Read an explanation written by :meth:`save` (the .npz or the .json path, or the path given to
        :meth:`save`)."""
        npz = _npz_path(path)
        js = npz.with_suffix(".json")
        for p in (npz, js):
            if not p.exists():
                raise ValueError(f"explanation file not found: {p}")
        import zipfile

        if not zipfile.is_zipfile(npz):
            raise ValueError(f"not a readable explanation: {npz} is not an .npz archive (damaged or another file)")
        try:
            meta = json.loads(js.read_text())
            with np.load(npz, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as err:
            raise ValueError(f"not a readable explanation: {path} ({type(err).__name__}: {err})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get("extras") or {}, dict):
            raise ValueError(f"not a readable explanation: {js} holds no explanation's metadata")
        for key, kinds, what in _META_TYPES:
            value = meta.get(key)
            if key in meta and value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                raise ValueError(f"not a readable explanation: {js}: {key!r} is {value!r}, expected {what}")
        extras = dict(meta.get("extras") or {})
        params = meta.get("params")
        arrays = _expand(arrays)
        for k in list(arrays):
            if k.startswith("extra__"):
                _put_leaf(extras, k[len("extra__"):], arrays.pop(k))
            elif k.startswith("param__") and isinstance(params, dict):
                _put_leaf(params, k[len("param__"):], arrays.pop(k))
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in meta.items() if k in names and k not in _ARRAYS}
        kwargs["extras"] = extras
        kwargs.update({k: v for k, v in arrays.items() if k in _ARRAYS})
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ValueError(f"not a readable explanation: {path} ({err})") from None

    # --------------------------------------------------------------------- pictures
    def overlay(self, alpha: float = 0.55, cmap: str = "bwr") -> np.ndarray:
        """H x W x 3 float image: the input under the map, coloured symmetrically around zero."""
        from .viz import overlay

        return overlay(self, alpha=alpha, cmap=cmap)

    def plot(self, path: str | Path | None = None, **kwargs):
        """Draw the overlay with a colour bar and a title (label, score, method); save it if ``path``.
        A table row's explanation is drawn as horizontal bars, one per feature (see :func:`unveil.viz.plot_table`)."""
        from .viz import plot, plot_table

        return (plot_table if self.kind == "tabular" else plot)(self, path, **kwargs)

    def __repr__(self) -> str:
        if self.kind == "tabular":
            return (
                f"Explanation(method={self.method!r}, kind='tabular', target={self.target} ({self.label!r}), "
                f"score={self.score:.4f}, features={self.map.shape[0]}, n_evals={self.n_evals}, "
                f"seconds={self.seconds:.2f})"
            )
        return (
            f"Explanation(method={self.method!r}, target={self.target} ({self.label!r}), score={self.score:.4f}, "
            f"map={self.map.shape}, n_evals={self.n_evals}, seconds={self.seconds:.2f})"
        )
