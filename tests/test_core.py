"""Perturber, baselines, segmentation, Explanation and the model adapter against hand-computed answers."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

import unveil
from unveil.images import load_image
from unveil.perturb import Perturber, gaussian_blur, make_baseline
from unveil.segmentation import grid, grid_shape, segment, upsample_labels


# ----------------------------------------------------------------------------- perturber
class Recorder:
    """A callable model that records every image it sees and scores it by its mean."""

    def __init__(self):
        self.seen = []

    def __call__(self, batch):
        self.seen.append(batch.copy())
        s = batch.mean(axis=(1, 2, 3))
        return np.stack([s, 1 - s], 1)


def test_composition_is_baseline_plus_mask_times_difference():
    rec = Recorder()
    model = unveil.Model(rec, input_size=(4, 4), batch_size=3)
    x = torch.rand(3, 4, 4)
    b = torch.rand(3, 4, 4)
    labels = np.repeat(np.arange(4), 4).reshape(4, 4)  # one label per row
    p = Perturber(model, x, b, labels, batch_size=3)
    masks = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0.5, 0, 0, 1]], np.float32)
    p.score_features(masks)
    seen = np.concatenate(rec.seen)
    for m, img in zip(masks, seen):
        pix = m[labels][None]
        expected = (b + torch.from_numpy(pix) * (x - b)).numpy().transpose(1, 2, 0)
        np.testing.assert_allclose(img, expected, atol=1e-6)
    assert [len(s) for s in rec.seen] == [3, 1]  # chunks of the batch size


def test_repeated_masks_are_scored_once():
    rec = Recorder()
    model = unveil.Model(rec, input_size=(4, 4), batch_size=8)
    p = Perturber(model, torch.rand(3, 4, 4), torch.zeros(3, 4, 4), np.arange(16).reshape(4, 4) % 2)
    masks = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [0, 1]])
    out = p.score_features(masks)
    assert p.n_evals == 2 and sum(len(s) for s in rec.seen) == 2
    np.testing.assert_array_equal(out[0], out[2])
    p.score_features(masks[:2])
    assert p.n_evals == 2  # remembered across calls


def test_unperturbed_probabilities_seed_the_cache():
    rec = Recorder()
    model = unveil.Model(rec, input_size=(4, 4))
    known = np.array([0.25, 0.75], np.float32)
    p = Perturber(model, torch.rand(3, 4, 4), torch.zeros(3, 4, 4), np.zeros((4, 4), int), unperturbed=known)
    np.testing.assert_array_equal(p.score_features(np.ones((1, 1)))[0], known)
    assert p.n_evals == 0


def test_pixel_masks_are_made_pass_by_pass():
    rec = Recorder()
    model = unveil.Model(rec, input_size=(4, 4), batch_size=2)
    p = Perturber(model, torch.rand(3, 4, 4), torch.zeros(3, 4, 4))
    events = []

    def make(start, stop):
        events.append(("make", start, stop))
        return torch.ones(stop - start, 4, 4) * (start / 6)

    p.score_masks(make, 5, lambda masks, probs: events.append(("scored", masks.shape[0], probs.shape)))
    # each pass is made only after the previous one was scored: never more than one pass of masks at a time
    assert events == [("make", 0, 2), ("scored", 2, (2, 2)), ("make", 2, 4), ("scored", 2, (2, 2)),
                      ("make", 4, 5), ("scored", 1, (1, 2))]
    assert p.n_evals == 5


def test_baselines():
    x = torch.rand(3, 6, 8)
    np.testing.assert_allclose(make_baseline(x, "mean")[:, 0, 0], x.mean(dim=(1, 2)), atol=1e-6)
    assert torch.all(make_baseline(x, "gray") == 0.5) and torch.all(make_baseline(x, "zero") == 0)
    labels = np.zeros((6, 8), int)
    labels[:, 4:] = 1
    sm = make_baseline(x, "segment_mean", labels)
    np.testing.assert_allclose(sm[:, 0, 0], x[:, :, :4].mean(dim=(1, 2)), atol=1e-6)
    np.testing.assert_allclose(sm[:, 5, 7], x[:, :, 4:].mean(dim=(1, 2)), atol=1e-6)
    user = make_baseline(x, np.full((3, 3, 3), 0.25, np.float32))
    assert user.shape == x.shape and torch.allclose(user, torch.tensor(0.25))
    with pytest.raises(ValueError, match="segment_mean"):
        make_baseline(x, "segment_mean")


def test_baseline_image_from_a_path_string_or_a_checked_tensor(tmp_path):
    from PIL import Image

    x = torch.rand(3, 6, 8)
    path = tmp_path / "bg.png"
    Image.fromarray(np.full((6, 8, 3), 51, np.uint8)).save(path)
    for given in (str(path), path):
        np.testing.assert_allclose(make_baseline(x, given).numpy(), 0.2, atol=1e-6)
    with pytest.raises(ValueError, match="neither a baseline name .* nor an existing image file"):
        make_baseline(x, str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="neither a baseline name"):
        make_baseline(x, "graey")
    np.testing.assert_allclose(make_baseline(x, torch.full((3, 6, 8), 0.25)).numpy(), 0.25)
    for bad in (torch.full((3, 6, 8), float("nan")), torch.full((3, 6, 8), 5.0)):
        with pytest.raises(ValueError, match="baseline"):
            make_baseline(x, bad)


def test_blur_matches_scipy():
    from scipy.ndimage import gaussian_filter

    x = torch.rand(1, 20, 20)
    ours = gaussian_blur(x, 2.0)[0].numpy()
    ref = gaussian_filter(x[0].numpy().astype(np.float64), 2.0, mode="mirror", truncate=3.0)
    np.testing.assert_allclose(ours, ref, atol=2e-3)
    # a constant image stays constant
    assert torch.allclose(gaussian_blur(torch.full((3, 9, 9), 0.3), 3.0), torch.tensor(0.3))


def test_blur_baseline_default_sigma_is_a_tenth_of_the_shorter_side():
    from scipy.ndimage import gaussian_filter

    x = torch.rand(3, 20, 40)
    ours = make_baseline(x, "blur").numpy()
    ref = np.stack([gaussian_filter(c.numpy().astype(np.float64), 2.0, mode="mirror", truncate=3.0) for c in x])
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_float_images_get_only_rounding_slack():
    """Values within 1e-5 outside [0, 1] (the caller's own rounding) are clipped; 1.001 is an error."""
    from unveil.images import to_float

    np.testing.assert_array_equal(to_float(np.array([[1 + 5e-6, -5e-6]], np.float32))[..., 0], [[1.0, 0.0]])
    for bad in (1.001, -0.001):
        with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
            to_float(np.full((2, 2), bad, np.float32))


def test_rgb_projection_keeps_the_image_the_right_way_up():
    """A 2-channel image whose channels are both a ramp t: the first principal axis is (1, 1)/sqrt(2), so the
    first output channel is t rescaled to [0, 1], not its negative."""
    from unveil.images import rgb_projection

    t = np.linspace(0.1, 0.7, 24, dtype=np.float32).reshape(4, 6)
    out = rgb_projection(np.stack([t, t], axis=2))
    np.testing.assert_allclose(out[..., 0], (t - t.min()) / (t.max() - t.min()), atol=1e-6)


def _weights_explanation(weights, **kw):
    weights = np.asarray(weights, np.float32)
    segments = np.arange(weights.size, dtype=np.int32).reshape(1, -1)
    return unveil.Explanation(map=weights[segments], segments=segments, weights=weights, target=0, label="c",
                              score=0.5, method=kw.pop("method", "lime"), params=kw.pop("params", {}), seed=0, **kw)


def test_top_features_and_top_mask_rules():
    """Ties go to the lower index; a fraction counts pixels rounded (0.29 of 100 is 29, though 0.29 * 100 is
    28.999...); the top pixels are the largest signed values, not the largest magnitudes."""
    assert list(_weights_explanation([1, 3, 3, 0]).top_features(2)) == [1, 2]
    assert _weights_explanation(np.arange(100) / 100).top_mask(fraction=0.29).sum() == 29
    mask = _weights_explanation([-5, 1, 2]).top_mask(fraction=1 / 3)
    np.testing.assert_array_equal(mask, [[False, False, True]])
    # a STREAK explanation without a fill (a table's STREAK has none): only the selected features
    sel = _weights_explanation([0, 0, 0.4, 0], method="streak", extras={"selected": [2]})
    assert list(sel.top_features(3)) == [2]


def test_save_load_is_exact_for_257_segments_and_for_images_not_all_8_bit(tmp_path):
    exp = _weights_explanation(np.linspace(-1, 1, 257))
    flat = (np.arange(20 * 257 * 3) % 256 / 255.0).astype(np.float32)  # every value k / 255 ...
    flat[-1] = 0.1234567  # ... but the last, after the first 4096 that are checked cheaply
    exp = dataclasses.replace(exp, image=flat.reshape(20, 257, 3))
    back = unveil.Explanation.load(exp.save(tmp_path / "e.npz"))
    np.testing.assert_array_equal(back.segments, exp.segments)
    assert back.segments.max() == 256
    np.testing.assert_array_equal(back.image, exp.image)


# ----------------------------------------------------------------------------- segmentation
@pytest.mark.parametrize("h, w, n", [(224, 224, 49), (224, 224, 50), (40, 48, 16), (10, 300, 12)])
def test_grid_has_about_n_cells(h, w, n):
    labels = grid(h, w, n)
    rows, cols = grid_shape(h, w, n)
    assert labels.max() + 1 == rows * cols
    assert abs(rows * cols - n) <= max(rows, cols)
    sizes = np.bincount(labels.reshape(-1))
    assert sizes.max() - sizes.min() <= max(h // rows, w // cols) + 1  # nearly equal cells


@pytest.mark.parametrize("method", ["slic", "quickshift", "felzenszwalb"])
def test_superpixels_are_consecutive_and_seeded(method):
    import skimage.data
    from skimage.transform import resize

    img = resize(skimage.data.chelsea(), (64, 80), anti_aliasing=True).astype(np.float32)
    a = segment(img, method, n_features=30, seed=1)
    b = segment(img, method, n_features=30, seed=1)
    np.testing.assert_array_equal(a, b)
    k = a.max() + 1
    assert set(np.unique(a)) == set(range(k)) and 5 <= k <= 400


def test_slic_gives_about_n_features():
    import skimage.data
    from skimage.transform import resize

    img = resize(skimage.data.chelsea(), (224, 224), anti_aliasing=True).astype(np.float32)
    k = segment(img, "slic", n_features=50).max() + 1
    assert 25 <= k <= 75


def test_upsample_labels_nearest():
    lab = np.array([[0, 1], [2, 3]])
    np.testing.assert_array_equal(upsample_labels(lab, (4, 4)), np.kron(lab, np.ones((2, 2), int)))


# ----------------------------------------------------------------------------- explanation
def test_save_load_round_trip_and_top_mask(tmp_path, tiny, image):
    exp = unveil.explain(tiny, image, method="lime", n_samples=40, n_features=12, seed=5, progress=False)
    path = exp.save(tmp_path / "e.npz")
    meta = json.loads((tmp_path / "e.json").read_text())
    assert meta["method"] == "lime" and meta["seed"] == 5 and meta["n_evals"] == exp.n_evals
    back = unveil.Explanation.load(path)
    np.testing.assert_array_equal(back.map, exp.map)
    np.testing.assert_array_equal(back.segments, exp.segments)
    np.testing.assert_array_equal(back.image, exp.image)
    assert back.target == exp.target and back.params == exp.params and back.extras["r2"] == exp.extras["r2"]
    top2 = exp.top_mask(2)
    best = np.argsort(-exp.weights)[:2]
    np.testing.assert_array_equal(top2, np.isin(exp.segments, best))
    assert exp.top_mask(0).sum() == 0
    frac = exp.top_mask(fraction=0.25)
    assert frac.sum() == round(0.25 * exp.map.size)
    assert exp.map[frac].min() >= exp.map[~frac].max()


def test_top_features_are_the_largest_weights_also_after_a_selection(tiny, image):
    """LIME's ``selection`` decides which weights are fitted; the top features are still the largest weights
    (not the selection order); STREAK's are its selected set in selection order."""
    for selection in ("forward", "highest_weights", "streak"):
        exp = unveil.explain(tiny, image, method="lime", n_samples=60, n_features=12, seed=1, selection=selection,
                             n_select=5, progress=False)
        fitted = exp.extras["selected"]
        assert np.count_nonzero(exp.weights) <= len(fitted) == 5
        np.testing.assert_array_equal(exp.top_features(3), np.argsort(-exp.weights, kind="stable")[:3])
    st = unveil.explain(tiny, image, method="streak", n_features=12, seed=1, progress=False)
    assert st.extras["selected"] and list(st.top_features(5)) == st.extras["selected"][:5]


def test_top_mask_errors(tiny, image):
    exp = unveil.explain(tiny, image, method="occlusion", window=8, progress=False)
    with pytest.raises(ValueError, match="fraction"):
        exp.top_mask(3)
    with pytest.raises(ValueError, match="exactly one"):
        exp.top_mask()
    for bad in ("0.5", 1.5, -0.1, True):
        with pytest.raises(ValueError, match="fraction must lie in"):
            exp.top_mask(fraction=bad)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k: expected a positive int"):
            tiny.predict(image, k=bad)


def test_sidecar_is_strict_json_with_null_for_nan(tmp_path, tiny, image):
    import dataclasses

    exp = unveil.explain(tiny, image, method="occlusion", window=8, progress=False)
    exp = dataclasses.replace(exp, extras={**exp.extras, "r2": float("nan"), "few": np.array([1.0, np.inf])})
    path = exp.save(tmp_path / "e.npz")

    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    meta = json.loads(path.with_suffix(".json").read_text(), parse_constant=refuse)
    assert meta["extras"]["r2"] is None
    back = unveil.Explanation.load(path)
    assert back.extras["r2"] is None
    np.testing.assert_array_equal(back.extras["few"], [1.0, np.inf])  # arrays keep their values in the .npz


def test_load_errors(tmp_path, tiny, image):
    with pytest.raises(ValueError, match="not found"):
        unveil.Explanation.load(tmp_path / "missing.npz")
    path = unveil.explain(tiny, image, method="occlusion", window=8, progress=False).save(tmp_path / "e.npz")
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    for broken in ("[1, 2]", json.dumps({**meta, "extras": [1]}), json.dumps({"method": "lime"})):
        sidecar.write_text(broken)
        with pytest.raises(ValueError, match="not a readable explanation"):
            unveil.Explanation.load(path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    exp = unveil.explain(tiny, image, method="occlusion", window=8, progress=False)
    with pytest.raises(ValueError, match="exists and is not a folder"):
        exp.save(blocker / "e.npz")


def test_plot_writes_a_png(tmp_path, tiny, image):
    exp = unveil.explain(tiny, image, method="occlusion", window=8, progress=False)
    path = tmp_path / "o.png"
    exp.plot(path)
    from PIL import Image

    with Image.open(path) as img:
        assert img.size[0] > 200
    ov = exp.overlay()
    assert ov.shape == image.shape and 0 <= ov.min() and ov.max() <= 1


def test_explanation_is_frozen(tiny, image):
    exp = unveil.explain(tiny, image, method="occlusion", window=8, progress=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.target = 3


# ----------------------------------------------------------------------------- model adapter
def test_counting_and_auto_batch_size(image):
    from conftest import TinyNet

    model = unveil.Model(TinyNet(), input_size=(32, 32), batch_size="auto")
    with model.counting() as c:
        exp = unveil.explain(model, image, method="occlusion", window=8, progress=False)
    # a request under a whole sweep times a quick sweep on its own passes: the model's size stays unmeasured
    assert model.batch_size == "auto" and not hasattr(model, "batch_timings")
    assert c[0] == exp.n_evals == model.n_evals
    _, x = model.prepare(image)
    with model.counting() as c:
        model.probabilities(x)  # asks for the batch size outright: synthetic calibration passes
    assert isinstance(model.batch_size, int) and model.batch_size in model.batch_timings
    assert c[0] == 1 and model.n_evals == exp.n_evals + 1  # calibration passes are not counted


def test_logits_become_probabilities(tiny, image):
    _, x = tiny.prepare(image)
    p = tiny.probabilities(x)
    with torch.no_grad():
        logits = tiny.fn(x[None])
    torch.testing.assert_close(p, torch.softmax(logits, 1))


# ----------------------------------------------------------------------------- the real model
@pytest.mark.slow
@pytest.mark.parametrize("name, index, label", [("chelsea", 285, "Egyptian cat"), ("coffee", 967, "espresso")])
def test_default_model_predicts_known_classes(default_model, name, index, label):
    import skimage.data

    top = default_model.predict(getattr(skimage.data, name)(), k=1)[0]
    assert top[0] == index and top[1] == label


@pytest.mark.slow
def test_channels_last_gives_the_same_probabilities():
    import skimage.data

    a = unveil.load_model(channels_last=True, batch_size=2, inference="torch")
    b = unveil.load_model(channels_last=False, batch_size=2, inference="torch")
    _, x = a.prepare(skimage.data.coffee())
    x2 = torch.stack([x, x.flip(2)])
    torch.testing.assert_close(a.probabilities(x2), b.probabilities(x2), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_folded_batch_norm_gives_the_same_probabilities():
    import skimage.data

    folded = unveil.load_model(batch_size=2, inference="torch")
    plain = unveil.load_model(fold_bn=False, batch_size=2, inference="torch")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.fn.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.fn.modules()) == 49
    _, x = folded.prepare(skimage.data.chelsea())
    x2 = torch.stack([x, torch.rand_like(x)])
    torch.testing.assert_close(folded.probabilities(x2), plain.probabilities(x2), atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_tune_cpu_leaves_results_unchanged(tmp_path):
    import subprocess
    import sys

    script = (
        "import sys, numpy as np, skimage.data, unveil\n"
        "if sys.argv[1] == '1': assert unveil.tune_cpu()\n"
        "m = unveil.load_model(batch_size=4, inference=\"torch\")\n"
        "e = unveil.explain(m, skimage.data.chelsea(), method='occlusion', window=56, stride=56, progress=False)\n"
        "np.save(sys.argv[2], e.map)\n"
    )
    outs = []
    for flag in ("0", "1"):
        out = tmp_path / f"m{flag}.npy"
        subprocess.run([sys.executable, "-c", script, flag, str(out)], check=True, timeout=300)
        outs.append(np.load(out))
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.slow
def test_lime_on_the_real_model_finds_the_cat(default_model):
    import skimage.data

    exp = unveil.explain(default_model, skimage.data.chelsea(), method="lime", n_samples=300, seed=0,
                         progress=False)
    assert exp.target == 285 and exp.n_evals == 300
    assert exp.extras["r2"] > 0.3
    # hiding the 5 segments LIME ranks highest costs far more score than hiding the 5 it ranks lowest
    _, x = default_model.prepare(skimage.data.chelsea())
    labels = segment(x.numpy().transpose(1, 2, 0), "slic", 50, seed=0)
    np.testing.assert_array_equal(upsample_labels(labels, exp.segments.shape), exp.segments)
    order = np.argsort(-exp.weights)
    masks = np.ones((2, len(exp.weights)))
    masks[0, order[:5]] = 0
    masks[1, order[-5:]] = 0
    p = Perturber(default_model, x, make_baseline(x, "segment_mean", labels), labels)
    top_hidden, bottom_hidden = p.score_features(masks)[:, 285]
    assert top_hidden < 0.75 * exp.score and bottom_hidden > exp.score and top_hidden < bottom_hidden - 0.2


def test_a_module_in_training_mode_is_explained_as_it_predicts_and_left_unchanged(image):
    from conftest import TinyNet

    net = TinyNet()
    ref = unveil.explain(unveil.Model(TinyNet(), input_size=(32, 32)), image, method="occlusion", window=8,
                         progress=False)
    net.train()
    stats = net.features[1].running_mean.clone()
    exp = unveil.explain(unveil.Model(net, input_size=(32, 32)), image, method="occlusion", window=8,
                         progress=False)
    np.testing.assert_allclose(exp.map, ref.map, atol=1e-6)  # batch norm used its running statistics
    assert all(m.training for m in net.modules())  # flags restored
    assert torch.equal(net.features[1].running_mean, stats)  # statistics not updated
    # eval_mode=False runs the module as it is: batch statistics, updated running means
    unveil.explain(unveil.Model(net, input_size=(32, 32), eval_mode=False), image, method="occlusion",
                   window=8, progress=False)
    assert not torch.equal(net.features[1].running_mean, stats)


def test_auto_batch_size_stops_at_a_size_much_slower_than_the_best(monkeypatch):
    """A fake clock: a call on n images costs n + n**2 / 32 time units, so n images run at 32 / (32 + n) per
    unit (32/33, 8/9, 4/5, 2/3 for n = 1, 4, 8, 16): batch 16 runs at 0.6875 x batch 1's throughput, below 70 %,
    so 32 is never tried."""
    import unveil.models.base as base

    clock = [0.0]
    monkeypatch.setattr(base, "time", type("FakeTime", (), {"perf_counter": staticmethod(lambda: clock[0])}))

    def fn(batch):
        n = batch.shape[0]
        clock[0] += n + n * n / 32
        return np.tile(np.array([[0.25, 0.75]], np.float32), (n, 1))

    model = unveil.Model(fn, input_size=(8, 8), batch_size="auto")
    assert model.resolve_batch_size() == 1
    assert list(model.batch_timings) == [1, 4, 8, 16]
    assert model.batch_timings[1] == pytest.approx(32 / 33) and model.batch_timings[16] == pytest.approx(2 / 3)
    assert model.n_evals == 0


def test_gradient_methods_do_not_calibrate_the_batch_size(image):
    from conftest import TinyNet

    model = unveil.Model(TinyNet(), input_size=(32, 32), batch_size="auto")
    for method in ("saliency", "grad_input", "elrp", "deeplift", "gradcam"):
        exp = unveil.explain(model, image, method=method, progress=False)
        assert exp.n_evals >= 1
    assert model.batch_size == "auto" and not hasattr(model, "batch_timings")
    # many gradient passes: chunks of GRADIENT_BATCH, still no measurement of inference passes
    from unveil.methods.registry import GRADIENT_BATCH

    sizes = []
    handle = model.fn.register_forward_pre_hook(lambda m, a: sizes.append(a[0].shape[0]))
    try:
        ig = unveil.explain(model, image, method="integrated_gradients", n_steps=40, progress=False)
        unveil.explain(model, image, method="smoothgrad", n_samples=20, progress=False)
    finally:
        handle.remove()
    assert max(sizes) == GRADIENT_BATCH == 8 and sizes.count(8) == 5 + 2  # IG: 5 x 8; smoothgrad: 8 + 8 + 4
    assert model.batch_size == "auto" and not hasattr(model, "batch_timings")
    ref = unveil.explain(model, image, method="integrated_gradients", n_steps=40, batch_size=7, progress=False)
    np.testing.assert_allclose(ig.map, ref.map, atol=1e-5)
    model.resolve_batch_size()  # measured on inference passes
    assert isinstance(model.batch_size, int) and model.batch_size in model.batch_timings
    # the measured inference size does not carry over to gradient passes; a size the user sets does
    # (40 path points in chunks, then s(x) and s(baseline) in one pass for the completeness check)
    fixed = unveil.Model(TinyNet(), input_size=(32, 32), batch_size=6)
    for m, expected in ((model, [GRADIENT_BATCH] * 5 + [2]), (fixed, [6] * 6 + [4, 2])):
        sizes.clear()
        handle = m.fn.register_forward_pre_hook(lambda mod, a: sizes.append(a[0].shape[0]))
        try:
            unveil.explain(m, image, method="integrated_gradients", n_steps=40, progress=False)
        finally:
            handle.remove()
        assert [n for n in sizes if n > 1] == expected


def _clocked_cells_model(monkeypatch, cost):
    """A model function over 32 x 32 images (a logistic function of the means of a 4 x 4 grid of cells) whose
    pass of n inputs advances a fake clock, patched into the batch-size sweep, by ``cost(n)``. Returns (the
    function, the list of its pass sizes)."""
    import unveil.models.base as base

    clock = [0.0]
    monkeypatch.setattr(base, "time", type("FakeTime", (), {"perf_counter": staticmethod(lambda: clock[0])}))
    sizes = []
    w = np.random.default_rng(0).normal(size=16)

    def fn(batch):
        n = batch.shape[0]
        clock[0] += cost(n)
        sizes.append(n)
        cells = batch[..., 0].reshape(n, 4, 8, 4, 8).mean(axis=(2, 4)).reshape(n, 16)
        p = 1 / (1 + np.exp(-(cells @ w)))
        return np.stack([p, 1 - p], axis=1)

    return fn, sizes


def test_auto_batch_size_is_measured_on_a_large_request_itself(monkeypatch, image):
    """LIME's 400 masks (fewer distinct ones) hold a whole calibration sweep: the sizes are timed on the request's
    own passes (the fake clock of the test above: batch 1 wins, 32 never tried), every pass is a counted evaluation
    of the explanation, nothing is spent besides, and the result equals that of a fixed batch size."""
    from unveil.models.base import sweep_images

    fn, sizes = _clocked_cells_model(monkeypatch, lambda n: n + n * n / 32)

    opts = dict(method="lime", n_samples=400, segmentation="grid", n_features=16, target=0, seed=0,
                progress=False)
    assert sweep_images() <= 400
    auto = unveil.Model(fn, input_size=(32, 32), outputs="probabilities", batch_size="auto")
    exp = unveil.explain(auto, image, **opts)
    assert auto.batch_size == 1 and list(auto.batch_timings) == [1, 4, 8, 16]
    assert auto.batch_timings[16] == pytest.approx(2 / 3)
    n_auto = sum(sizes)
    assert exp.n_evals == n_auto  # every pass of the sweep is one of the explanation's evaluations
    # the sweep's passes: for each size a warm-up and 32 timed images (at least two passes), then batch 1
    sweep = [1] * 33 + [4] * 9 + [8] * 5 + [16] * 3
    assert sizes[1 : 1 + len(sweep)] == sweep and set(sizes[1 + len(sweep):]) == {1}
    sizes.clear()
    fixed = unveil.Model(fn, input_size=(32, 32), outputs="probabilities", batch_size=7)
    ref = unveil.explain(fixed, image, **opts)
    np.testing.assert_allclose(exp.weights, ref.weights, atol=1e-6)
    assert ref.n_evals == n_auto == sum(sizes) > 253  # the same evaluations (distinct masks) as without a sweep
    # RISE's masks are made pass by pass: the sweep runs on them too
    sizes.clear()
    auto = unveil.Model(fn, input_size=(32, 32), outputs="probabilities", batch_size="auto")
    rise = unveil.explain(auto, image, method="rise", n_masks=300, s=4, target=0, seed=0, progress=False)
    assert rise.n_evals == 301 == sum(sizes) and sizes[1 : 1 + len(sweep)] == sweep
    assert auto.batch_size == 1 and list(auto.batch_timings) == [1, 4, 8, 16]
    ref = unveil.explain(fixed, image, method="rise", n_masks=300, s=4, target=0, seed=0, progress=False)
    np.testing.assert_allclose(rise.map, ref.map, atol=1e-6)


def test_small_perturbation_requests_do_not_calibrate_the_batch_size(image):
    """STREAK asks a few inputs at a time: with an unmeasured "auto" batch size they go in one pass each and
    the model stays unmeasured; the selection equals that under a fixed batch size. A large request measures."""
    from conftest import TinyNet
    from unveil.perturb import SMALL_REQUEST

    net = TinyNet()
    auto = unveil.Model(net, input_size=(32, 32), batch_size="auto")
    fixed = unveil.Model(net, input_size=(32, 32), batch_size=1)
    opts = dict(method="streak", seed=0, n_features=20, progress=False)
    exp = unveil.explain(auto, image, **opts)
    ref = unveil.explain(fixed, image, **opts)
    assert auto.batch_size == "auto" and not hasattr(auto, "batch_timings")
    assert exp.extras["selected"] == ref.extras["selected"] and exp.n_evals == ref.n_evals
    np.testing.assert_allclose(exp.weights, ref.weights, atol=1e-6)

    _, x = auto.prepare(image)
    labels = grid(32, 32, 16)
    perturber = Perturber(auto, x, make_baseline(x, "zero"), labels)
    rng = np.random.default_rng(0)
    small = (rng.random((SMALL_REQUEST, 16)) < 0.5).astype(np.float32)
    perturber.score_features(small)
    assert not auto.batch_size_known
    # a request too small for a quick sweep (under 15 inputs) goes in passes of SMALL_REQUEST, unmeasured
    calls = []
    counted = unveil.Model(lambda b: calls.append(len(b)) or np.full((len(b), 3), 1 / 3), input_size=(32, 32),
                           outputs="probabilities", batch_size="auto")
    p = Perturber(counted, x, make_baseline(x, "zero"), labels)
    p.score_features(_distinct_masks(0, SMALL_REQUEST))
    p.score_features(_distinct_masks(SMALL_REQUEST, 2 * SMALL_REQUEST + 6))
    assert calls == [SMALL_REQUEST, SMALL_REQUEST, 6] and not counted.batch_size_known
    # a model with an int batch size splits even small requests at that size
    calls = []
    one = unveil.Model(lambda b: calls.append(len(b)) or np.full((len(b), 3), 1 / 3), input_size=(32, 32),
                       outputs="probabilities", batch_size=2)
    Perturber(one, x, make_baseline(x, "zero"), labels).score_features(small)
    assert calls == [2] * (SMALL_REQUEST // 2)


def _distinct_masks(start: int, stop: int, k: int = 16) -> np.ndarray:
    """Feature masks start..stop-1: the binary digits of those integers over k features (all distinct)."""
    return ((np.arange(start, stop)[:, None] >> np.arange(k)) & 1).astype(np.float32)


def test_a_medium_request_times_a_quick_sweep_on_its_own_passes(monkeypatch, image):
    """A request of 100 new inputs (under a whole sweep of 253): a quick sweep on its own first passes (a
    warm-up and two timed passes at 1, 4, 8 and 16), the fastest size for the rest of it and for later
    requests, every pass a counted evaluation; the model's "auto" size stays unmeasured; the scores equal
    those of a fixed batch size. Fake clock: a pass of n costs 10 + n, so the largest size tried is the
    fastest."""
    fn, calls = _clocked_cells_model(monkeypatch, lambda n: 10 + n)

    auto = unveil.Model(fn, input_size=(32, 32), outputs="probabilities", batch_size="auto")
    _, x = auto.prepare(image)
    labels, zero = grid(32, 32, 16), make_baseline(x, "zero")
    p = Perturber(auto, x, zero, labels)
    with auto.counting() as c:
        got = p.score_features(_distinct_masks(0, 100))
    assert calls == [1] * 3 + [4] * 3 + [8] * 3 + [16] * 3 + [13] and c[0] == p.n_evals == 100
    assert not auto.batch_size_known and auto.batch_size == "auto"
    calls.clear()
    later = p.score_features(_distinct_masks(100, 120))
    assert calls == [16, 4]
    ref = Perturber(unveil.Model(fn, input_size=(32, 32), outputs="probabilities", batch_size=7), x, zero, labels)
    np.testing.assert_allclose(got, ref.score_features(_distinct_masks(0, 100)), atol=1e-6)
    np.testing.assert_allclose(later, ref.score_features(_distinct_masks(100, 120)), atol=1e-6)
    assert list(auto.quick_batch_timings) == [1, 4, 8, 16]
    # the next call's Perturber reuses the choice without timing; a request that can try 32 as well times again
    calls.clear()
    Perturber(auto, x, zero, labels).score_features(_distinct_masks(200, 300))
    assert calls == [16] * 6 + [4]
    calls.clear()
    Perturber(auto, x, zero, labels).score_features(_distinct_masks(300, 500))
    assert calls == [1] * 3 + [4] * 3 + [8] * 3 + [16] * 3 + [32] * 3 + [17]
    assert list(auto.quick_batch_timings) == [1, 4, 8, 16, 32] and not auto.batch_size_known
    auto.batch_size = "auto"  # setting the size forgets the quick choice
    assert auto.quick_batch_timings == {}


@pytest.mark.slow
def test_folded_padding_gives_exactly_the_same_logits():
    import skimage.data

    folded = unveil.load_model(batch_size=2, inference="torch")
    padded = unveil.load_model(fold_pad=False, batch_size=2, inference="torch")
    pads = [m for m in folded.fn.modules() if isinstance(getattr(m, "static_padding", None), torch.nn.ZeroPad2d)]
    assert len(pads) == 5 and all(m.stride == (2, 2) or list(m.stride) == [2, 2] for m in pads)  # asymmetric
    assert sum(isinstance(getattr(m, "static_padding", None), torch.nn.ZeroPad2d) for m in padded.fn.modules()) == 17
    _, x = folded.prepare(skimage.data.chelsea())
    x2 = torch.stack([x, torch.rand_like(x)])
    with torch.inference_mode():
        torch.testing.assert_close(folded.forward(x2), padded.forward(x2), atol=1e-6, rtol=1e-6)


def test_perturbed_inputs_are_normalized_from_normalized_parts(image):
    """A torch model with mean/std: the Perturber normalizes baseline and difference once and makes each
    normalized composite in one pass; it equals normalizing the composite (to rounding), and so do the
    probabilities. A callable has no normalization and refuses normalized input."""
    from conftest import TinyNet

    model = unveil.Model(TinyNet(), input_size=(32, 32), mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), batch_size=4)
    mean, std = model.normalization()
    _, x = model.prepare(image)
    labels = grid(32, 32, 16)
    p = Perturber(model, x, make_baseline(x, "blur"), labels)
    masks = torch.from_numpy(np.random.default_rng(0).random((5, 16)).astype(np.float32))
    pixel = p.feature_to_pixel(masks)
    inputs, normalized = p._model_inputs(pixel)
    assert normalized and inputs.shape == (5, 3, 32, 32)
    torch.testing.assert_close(inputs, (p.compose(pixel) - mean) / std, atol=1e-5, rtol=1e-5)
    got = p.score_features(masks.numpy())
    ref = model.probabilities(p.compose(pixel), batch_size=4).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    fn = unveil.Model(lambda b: np.full((len(b), 2), 0.5, np.float32), input_size=(32, 32), mean=(0.5,) * 3,
                      std=(0.25,) * 3, outputs="probabilities")
    assert fn.normalization() is None
    with pytest.raises(ValueError, match="no normalization"):
        fn.probabilities(x, normalized=True)


def test_mean_and_std_are_checked_when_the_model_is_made():
    """Bad normalization is a clear error at Model(...), not a crash inside the first forward pass."""
    from conftest import TinyNet

    net = TinyNet()
    for kwargs, message in [
        (dict(mean=(0.5, 0.5, 0.5)), "pass both"),
        (dict(std=(0.2, 0.2, 0.2)), "pass both"),
        (dict(mean=(0.5, 0.5), std=(0.2, 0.2, 0.2)), "channel count is 3"),
        (dict(mean=(0.5, 0.5, 0.5), std=(0.2, 0.0, 0.2)), "positive"),
        (dict(mean=(0.5, float("nan"), 0.5), std=0.2), "finite"),
        (dict(mean="gray", std=0.2), "expected numbers"),
    ]:
        with pytest.raises(ValueError, match=message):
            unveil.Model(net, input_size=(32, 32), **kwargs)
    one = unveil.Model(net, input_size=(32, 32), mean=0.5, std=(0.2, 0.25, 0.3))
    mean, std = one.normalization()
    assert mean.flatten().tolist() == [0.5] * 3 and std.shape == (1, 3, 1, 1)
    free = unveil.Model(net, input_size=(32, 32), channels=None, mean=(0.4, 0.5), std=(0.2, 0.3))
    assert free.normalization()[0].shape == (1, 2, 1, 1)  # each image keeps its channels: any count


def test_input_size_and_label_count_errors(image):
    from conftest import TinyNet

    for size in (32, (32,), (32, 32, 3), (True, 32)):
        with pytest.raises(ValueError, match="input_size"):
            unveil.Model(TinyNet(), input_size=size)
    wrong = unveil.Model(TinyNet(), input_size=(32, 32), labels=["a", "b"])
    n = wrong.fn(torch.zeros(1, 3, 32, 32)).shape[1]
    with pytest.raises(ValueError, match=f"returned {n} class scores but has 2 labels"):
        unveil.explain(wrong, image, method="occlusion", window=8, progress=False)


def test_figures_draw_large_images_reduced_by_block_means():
    from unveil import viz

    a = np.arange(7 * 10, dtype=np.float32).reshape(7, 10)
    got = viz._block_mean(a, 3)
    padded = np.pad(a, ((0, 2), (0, 2)), mode="edge")
    assert got.shape == (3, 4)
    assert got[0, 0] == a[:3, :3].mean() and got[2, 3] == padded[6:9, 9:12].mean()
    exp = unveil.Explanation(map=np.linspace(-1, 2, 2100 * 900, dtype=np.float32).reshape(2100, 900),
                             target=0, label="x", score=0.5, method="occlusion", params={}, seed=0, n_evals=1,
                             seconds=0.1, image=np.full((2100, 900, 3), 0.5, np.float32),
                             segments=np.repeat(np.arange(2100)[:, None] // 300, 900, axis=1))
    image, m, segments, lim = viz._for_drawing(exp)
    assert max(m.shape) <= viz.DRAW_MAX_SIDE and image.shape[:2] == m.shape == segments.shape
    assert lim == pytest.approx(2.0)  # the colour scale from the whole map
    viz.plot(exp)  # draws
    small = viz.overlay(exp, max_side=300)
    assert small.shape == (525, 225, 3)  # 2100 x 900 in 4 x 4 blocks: at most 600 a side
    np.testing.assert_allclose(small, viz._block_mean(viz.overlay(exp), 4), atol=0.05)
    np.testing.assert_array_equal(viz.overlay(exp, max_side=5000), viz.overlay(exp))


def test_save_stores_8_bit_images_as_uint8_and_large_arrays_uncompressed(tmp_path, tiny, monkeypatch):
    import zipfile

    from unveil import explanation as explanation_module

    photo = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    exp = unveil.explain(tiny, photo, method="lime", n_samples=20, progress=False)
    monkeypatch.setattr(explanation_module, "COMPRESS_BELOW", 1000)  # the map and image count as large
    path = exp.save(tmp_path / "e.npz")
    with zipfile.ZipFile(path) as zf:
        kinds = {i.filename: i.compress_type for i in zf.infolist()}
    assert "image_u8.npy" in kinds and "image.npy" not in kinds
    assert kinds["image_u8.npy"] == kinds["map.npy"] == zipfile.ZIP_STORED
    assert kinds["segments.npy"] == zipfile.ZIP_DEFLATED
    with np.load(path) as raw:
        assert raw["segments"].dtype == np.uint8 and raw["image_u8"].dtype == np.uint8
    back = unveil.Explanation.load(path)
    np.testing.assert_array_equal(back.image, photo.astype(np.float32) / 255.0)
    np.testing.assert_array_equal(back.image, exp.image)
    assert back.segments.dtype == np.int32 and np.array_equal(back.segments, exp.segments)
    np.testing.assert_array_equal(back.map, exp.map)


def test_files_written_with_plain_savez_compressed_still_load(tmp_path, tiny, image):
    exp = unveil.explain(tiny, image, method="lime", n_samples=20, progress=False)
    path = exp.save(tmp_path / "e.npz")
    with np.load(path) as raw:
        arrays = {k: raw[k] for k in raw.files}
    arrays["segments"] = arrays["segments"].astype(np.int32)
    np.savez_compressed(path, **arrays)  # the earlier format: int32 labels, float image
    back = unveil.Explanation.load(path)
    np.testing.assert_array_equal(back.segments, exp.segments)
    np.testing.assert_array_equal(back.image, exp.image)


def test_fractional_and_binary_masks_are_scored_separately():
    """A fractional mask is scored on its own, not given the cached score of the binary mask it rounds to."""
    from unveil.perturb import Perturber
    model = unveil.Model(lambda b: np.stack([b.mean(axis=(1, 2, 3)), 1 - b.mean(axis=(1, 2, 3))], 1), input_size=(4, 4))
    p = Perturber(model, torch.ones(3, 4, 4), torch.zeros(3, 4, 4), np.repeat(np.arange(2), 8).reshape(4, 4))
    out = p.score_features(np.array([[1, 0], [0.5, 0]], np.float32))
    np.testing.assert_allclose(out[:, 0], [0.5, 0.25], atol=1e-6)


def test_save_keeps_nested_arrays_pil_baselines_and_numpy_bools(tmp_path, tiny, image):
    from PIL import Image

    base = Image.fromarray((image * 200).astype(np.uint8)).convert("L").convert("RGB")
    exp = unveil.explain(tiny, image, method="occlusion", window=8, baseline=base, progress=False)
    extras = {**exp.extras, "flag": np.bool_(True), "nested": {"big": np.arange(100.0), "small": np.arange(3)}}
    exp = dataclasses.replace(exp, extras=extras)
    back = unveil.Explanation.load(exp.save(tmp_path / "e.npz"))
    np.testing.assert_allclose(back.params["baseline"], load_image(base))  # was its repr string
    assert back.extras["flag"] is True
    np.testing.assert_array_equal(back.extras["nested"]["big"], np.arange(100.0))  # was "<array (100,) float64>"
    np.testing.assert_array_equal(back.extras["nested"]["small"], np.arange(3))
    sg = unveil.explain(tiny, image, method="smoothgrad", n_samples=2, base_options={"baseline": image * 0.5},
                        base="integrated_gradients", progress=False)
    loaded = unveil.Explanation.load(sg.save(tmp_path / "sg.npz"))
    np.testing.assert_array_equal(loaded.params["base_options"]["baseline"], image * 0.5)


def test_save_and_load_take_the_same_path_and_refuse_folders(tmp_path, tiny, image):
    exp = unveil.explain(tiny, image, method="occlusion", window=8, progress=False)
    for given, written in (("pic.png", "pic.png.npz"), ("cat.v2", "cat.v2.npz"), ("a.json", "a.npz"),
                           ("b.npz", "b.npz"), ("plain", "plain.npz")):
        assert exp.save(tmp_path / given) == tmp_path / written
        assert (tmp_path / written).with_suffix(".json").exists()
        np.testing.assert_array_equal(unveil.Explanation.load(tmp_path / given).map, exp.map)
    with pytest.raises(ValueError, match=r"is a folder; give the explanation's file name"):
        exp.save(tmp_path)


def test_damaged_files_and_sidecars_are_named(tmp_path, tiny, image):
    path = unveil.explain(tiny, image, method="occlusion", window=8, progress=False).save(tmp_path / "e.npz")
    whole, sidecar = path.read_bytes(), path.with_suffix(".json")
    path.write_bytes(whole[: len(whole) // 2])  # truncated
    with pytest.raises(ValueError, match=r"^not a readable explanation: .*e\.npz"):
        unveil.Explanation.load(path)
    path.write_bytes(b"garbage, not a zip archive" * 10)
    with pytest.raises(ValueError, match=r"e\.npz is not an \.npz archive"):
        unveil.Explanation.load(path)
    path.write_bytes(whole)
    meta = json.loads(sidecar.read_text())
    for key, value in (("target", "abc"), ("score", "hi"), ("n_evals", 2.5), ("target", True)):
        sidecar.write_text(json.dumps({**meta, key: value}))
        with pytest.raises(ValueError, match=rf"not a readable explanation: .*'{key}' is {re.escape(repr(value))}"):
            unveil.Explanation.load(path)
