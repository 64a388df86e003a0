"""Baselines and the Perturber: the shared engine of every black-box method.

A method decides *which* masks to try; the Perturber composes ``x' = baseline + m * (x - baseline)`` for a
whole chunk of masks at once on the model's device (a gather of the mask vectors through the segment label
map), evaluates chunk by chunk (never all perturbed images at once) and remembers the masks it has scored.
"""

from __future__ import annotations

import contextlib

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .checks import check_positive
from .images import load_image, resize
from .models.base import sweep_images

__all__ = ["BASELINES", "make_baseline", "gaussian_blur", "Perturber"]

#: named baselines; a user image (path, PIL or array) is accepted too.
BASELINES = ("mean", "segment_mean", "gray", "zero", "blur")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a C x H x W (or N x C x H x W) tensor, edges reflected."""
    if sigma <= 0:
        return x.clone()
    squeeze = x.dim() == 3
    z = x.unsqueeze(0) if squeeze else x
    radius = max(1, int(round(3 * sigma)))
    radius = min(radius, z.shape[-1] - 1, z.shape[-2] - 1) if min(z.shape[-2:]) > 1 else 0
    if radius == 0:
        return x.clone()
    t = torch.arange(-radius, radius + 1, dtype=z.dtype, device=z.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = z.shape[1]
    z = torch.nn.functional.pad(z, (radius, radius, radius, radius), mode="reflect")
    z = torch.nn.functional.conv2d(z, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    z = torch.nn.functional.conv2d(z, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return z[0] if squeeze else z


def make_baseline(
    x: torch.Tensor,
    kind="mean",
    labels: np.ndarray | torch.Tensor | None = None,
    blur_sigma: float | None = None,
) -> torch.Tensor:
    """The C x H x W image that hidden features are set to.

    ``kind``: ``"mean"`` (the image's mean colour), ``"segment_mean"`` (each segment's mean colour, the
    ``lime`` package's default; needs ``labels``), ``"gray"`` (0.5), ``"zero"`` (black), ``"blur"``
    (Gaussian, ``blur_sigma`` pixels, default 10 % of the shorter side), or an image (path, PIL, array,
    C x H x W tensor; checked like any input image and resized to the input). A string that is not one of
    these names is read as a file path.
    """
    c, h, w = x.shape
    if isinstance(kind, str):
        if kind == "mean":
            return x.mean(dim=(1, 2), keepdim=True).expand(c, h, w).clone()
        if kind == "gray":
            return torch.full_like(x, 0.5)
        if kind == "zero":
            return torch.zeros_like(x)
        if kind == "blur":
            sigma = check_positive("blur_sigma", blur_sigma) if blur_sigma is not None else 0.1 * min(h, w)
            return gaussian_blur(x, sigma)
        if kind == "segment_mean":
            if labels is None:
                raise ValueError("baseline 'segment_mean' needs a segmentation")
            lab = torch.as_tensor(np.asarray(labels), device=x.device).reshape(-1)
            k = int(lab.max()) + 1
            flat = x.reshape(c, -1)
            sums = torch.zeros(c, k, dtype=x.dtype, device=x.device).index_add_(1, lab, flat)
            counts = torch.bincount(lab, minlength=k).clamp_min(1).to(x.dtype)
            return (sums / counts)[:, lab].reshape(c, h, w)
        if not Path(kind).is_file():
            raise ValueError(f"baseline: {kind!r} is neither a baseline name ({', '.join(BASELINES)}) nor an "
                             "existing image file")
    if isinstance(kind, torch.Tensor) and kind.dim() == 3 and kind.shape[0] == c:
        kind = kind.detach().float().cpu().numpy().transpose(1, 2, 0)
    img = load_image(kind, name="baseline", channels=c)
    img = resize(img, (h, w))
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(x.device, x.dtype)


#: While a model's ``"auto"`` batch size is unmeasured, a request of at most this many new inputs goes to the
#: model in one pass (STREAK asks a few inputs per arriving segment, at most one per live threshold, and
#: measuring would take several times its whole run), and a request too small for a quick sweep
#: (:func:`~unveil.models.base.quick_sizes`) in passes of this many. Larger requests time their own passes:
#: a whole sweep, kept for the model, from ``sweep_images()`` (253) inputs; a quick one below that, kept
#: aside for later requests of its kind. Synthetic calibration passes run only where a batch size is asked
#: for outright.
SMALL_REQUEST = 8


class _NoBar:
    """What ``progress_bar`` gives when progress is off: a bar's interface that draws nothing (a disabled tqdm
    would still start tqdm's monitor thread)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(total: int | None, desc: str, enabled: bool, unit: str = "img"):
    """A tqdm bar over ``total`` model inputs, shown only when ``enabled`` and on a terminal; gone when done."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=None, leave=False)


class Perturber:
    """Scores perturbed copies of one model input ``x`` (C x H x W, in [0, 1], on the model's device).

    ``labels`` (H x W ints 0..K-1) turns feature masks (N x K) into pixel masks by a gather; pixel masks
    (N x H x W) can be scored directly. Scores are class probabilities, N x classes, float32 numpy.
    ``known`` pre-seeds the cache, e.g. with the all-ones mask's (the unperturbed input's) probabilities.
    """

    def __init__(
        self,
        model,
        x: torch.Tensor,
        baseline: torch.Tensor,
        labels: np.ndarray | None = None,
        *,
        batch_size: int | None = None,
        progress: bool = False,
        desc: str = "evaluating",
        unperturbed: np.ndarray | None = None,
    ):
        self.model = model
        self.x = x
        self.baseline = baseline.to(x.device, x.dtype)
        self.diff = self.x - self.baseline
        # the model's normalization applied once to the fixed parts: (b - mean) / std + m (x - b) / std is the
        # normalized composite, made in one pass instead of composing and then normalizing every batch
        norm = model.normalization()
        self._normalized = None
        if norm is not None:
            mean, std = (t.to(x.device, x.dtype)[0] for t in norm)
            self._normalized = ((self.baseline - mean) / std, self.diff / std)
        self.labels = None
        self.n_features = None
        if labels is not None:
            self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=x.device)
            self.n_features = int(self.labels.max()) + 1
        self._batch_size = batch_size  # None: the model's, measured (if "auto") when first needed
        self.progress = progress
        self.desc = desc
        self._cache: dict[bytes, np.ndarray] = {}
        self._outer = None  # a bar over a whole method's steps (see overall_bar): requests then draw none
        if unperturbed is not None and self.n_features is not None:
            self._cache[self._key(np.ones(self.n_features, dtype=np.float32))] = np.asarray(unperturbed, np.float32)
        self.n_evals = 0

    @property
    def batch_size(self) -> int:
        """The most inputs in one forward pass: the one given, else the model's (measured on first use if the
        model's is ``"auto"``)."""
        if self._batch_size is None:
            self._batch_size = int(self.model.resolve_batch_size(self.x.unsqueeze(0)))
        return self._batch_size

    def _step(self, n: int) -> int:
        """Inputs per pass for the rest (``n``) of a request that :meth:`_drive` did not measure on: while the
        batch size is still unmeasured, all of them up to :data:`SMALL_REQUEST`, else passes of that many;
        otherwise :attr:`batch_size`."""
        if self._batch_size is None and not self.model.batch_size_known:
            return max(1, min(n, SMALL_REQUEST))
        return self.batch_size

    # ----------------------------------------------------------------- composition
    def _masks(self, pixel_masks: torch.Tensor) -> torch.Tensor:
        """N x H x W (or N x 1|C x H x W) masks as N x 1|C x H x W on the input's device and dtype."""
        m = pixel_masks.to(self.x.device, self.x.dtype)
        return m.unsqueeze(1) if m.dim() == 3 else m

    def compose(self, pixel_masks: torch.Tensor) -> torch.Tensor:
        """N x H x W (or N x 1|C x H x W) masks in [0, 1] -> N x C x H x W perturbed inputs."""
        return self.baseline + self._masks(pixel_masks) * self.diff

    def feature_to_pixel(self, masks: torch.Tensor) -> torch.Tensor:
        """N x K feature masks -> N x H x W pixel masks (a gather through the label map)."""
        if self.labels is None:
            raise ValueError("this Perturber has no segmentation: pass pixel masks")
        return masks.to(self.x.device, self.x.dtype)[:, self.labels]

    def _model_inputs(self, pixel_masks: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The perturbed inputs as the model takes them: (inputs, whether they are already normalized)."""
        if self._normalized is None:
            return self.compose(pixel_masks), False
        base, diff = self._normalized
        return torch.addcmul(base, self._masks(pixel_masks), diff), True

    def _evaluate(self, pixel_masks: torch.Tensor) -> np.ndarray:
        """Probabilities of the perturbed inputs of these masks, in one pass (the caller sized it)."""
        inputs, normalized = self._model_inputs(pixel_masks)
        probs = self.model.probabilities(inputs, batch_size=pixel_masks.shape[0], normalized=normalized)
        self.n_evals += pixel_masks.shape[0]
        return probs.numpy()

    def _bar(self, total: int | None):
        if self._outer is not None:
            return _NoBar()
        return progress_bar(total, self.desc, self.progress)

    @contextlib.contextmanager
    def overall_bar(self, total: int, unit: str):
        """One bar over a method's ``total`` steps (counted in ``unit``; the caller updates it) in place of a bar
        per request, for methods that make many small requests (STREAK: one per arriving segment)."""
        bar = progress_bar(total, self.desc, self.progress, unit=unit)
        self._outer = bar
        try:
            with bar:
                yield bar
        finally:
            self._outer = None

    # ----------------------------------------------------------------- scoring
    @staticmethod
    def _key(row: np.ndarray) -> bytes:
        if row.dtype == np.bool_ or np.all((row == 0) | (row == 1)):
            return b"b" + np.packbits(row.astype(bool)).tobytes()
        return b"f" + np.ascontiguousarray(row, dtype=np.float32).tobytes()

    def score_features(self, masks: np.ndarray) -> np.ndarray:
        """Probabilities (N x classes) for N x K feature masks in [0, 1]; repeated masks are scored once."""
        masks = np.asarray(masks, dtype=np.float32)
        if masks.ndim != 2 or masks.shape[1] != self.n_features:
            raise ValueError(f"feature masks: expected shape (N, {self.n_features}), got {masks.shape}")
        keys = [self._key(r) for r in masks]
        todo: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in self._cache and k not in todo:
                todo[k] = i
        if todo:
            idx = np.fromiter(todo.values(), dtype=np.int64, count=len(todo))
            with self._bar(len(idx)) as bar:

                def run(start: int, stop: int) -> None:  # the new masks start..stop-1, in one pass
                    chunk = idx[start:stop]
                    probs = self._evaluate(self.feature_to_pixel(torch.from_numpy(masks[chunk])))
                    for j, p in zip(chunk, probs):
                        self._cache[keys[j]] = p
                    bar.update(len(chunk))

                self._drive(len(idx), run)
        return np.stack([self._cache[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)

    def _drive(self, total: int, run: Callable[[int, int], None]) -> None:
        """Call ``run(start, stop)`` (inputs start..stop-1 in one pass) over a request of ``total`` inputs. An
        unmeasured ``"auto"`` batch size is measured on the request's own first passes: a whole sweep, kept
        for the model, when the request holds one (:func:`~unveil.models.base.sweep_images`); else a quick
        sweep (:meth:`~unveil.models.Model.quick_batch_size_on`, whose choice later requests reuse), which
        serves the rest of this Perturber's work. Then passes of the batch size (see :meth:`_step`)."""
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            stop = min(total, done + n)
            run(done, stop)
            done = stop

        if self._batch_size is None and not self.model.batch_size_known and total > SMALL_REQUEST:
            if total >= sweep_images():
                self._batch_size = int(self.model.measure_batch_size_on(advance))
            else:
                quick = self.model.quick_batch_size_on(advance, total)
                if quick is not None:
                    self._batch_size = int(quick)
        step = self._step(total - done)
        while done < total:
            advance(step)

    def score_masks(self, make: Callable[[int, int], torch.Tensor], total: int,
                    consume: Callable[[torch.Tensor, np.ndarray], None]) -> None:
        """Score ``total`` pixel masks made on demand, one pass at a time: ``make(start, stop)`` returns masks
        start..stop-1 (n x H x W, or n x 1|C x H x W) and ``consume(masks, probabilities)`` receives them with
        their n x classes probabilities. At most one pass of masks and perturbed images exists at a time; the
        batch size is measured on these passes as in :meth:`score_features`."""
        with self._bar(total) as bar:

            def run(start: int, stop: int) -> None:
                masks = make(start, stop)
                consume(masks, self._evaluate(masks))
                bar.update(stop - start)

            self._drive(int(total), run)
