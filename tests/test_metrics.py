"""Metrics against answers worked out by hand: analytic deletion/insertion curves, a one-pixel model, sanity checks."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

import unveil
from unveil import metrics
from unveil.explanation import Explanation

from conftest import TinyNet, tiny_model

H = W = 20
N = H * W
REGION = (slice(4, 12), slice(5, 15))  # 8 x 10 = 80 pixels
R = 80


def noise_image(seed=0):
    """Random image in [0.2, 1]: every pixel differs from 0 and from its blur."""
    return (0.2 + 0.8 * np.random.default_rng(seed).random((H, W, 3))).astype(np.float32)


def intact_model(image: np.ndarray, region_mask: np.ndarray) -> unveil.Model:
    """score = fraction of the region's pixels equal to the original image (class 0); class 1 = 1 - score."""
    ref = image[region_mask]

    def fn(batch):
        same = np.all(np.abs(batch[:, region_mask] - ref) < 1e-5, axis=-1)
        s = same.mean(axis=1)
        return np.stack([s, 1 - s], axis=1)

    return unveil.Model(fn, input_size=(H, W), outputs="probabilities", batch_size=16)


def manual(m, image, baseline=None, target=0):
    params = {} if baseline is None else {"baseline": baseline}
    return Explanation(map=np.asarray(m, np.float32), target=target, label="", score=1.0, method="manual",
                       params=params, image=image)


@pytest.fixture
def region_setup():
    img = noise_image()
    mask = np.zeros((H, W), bool)
    mask[REGION] = True
    return img, mask, intact_model(img, mask)


def test_step_counts_and_auc_by_hand():
    np.testing.assert_array_equal(metrics.step_counts(400), np.arange(51) * 8)
    np.testing.assert_array_equal(metrics.step_counts(10, 3), [0, 3, 6, 9, 10])
    np.testing.assert_array_equal(metrics.step_counts(10, 0.25), [0, 3, 6, 9, 10])
    assert metrics.auc([0, 0.5, 1], [1, 1, 0]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="step"):
        metrics.step_counts(10, 0.0)
    with pytest.raises(TypeError, match="step"):
        metrics.step_counts(10, True)


def test_deletion_curve_is_analytic(region_setup):
    img, mask, model = region_setup
    res = metrics.Deletion(baseline="zero")(model, img, manual(mask, img))
    x = np.arange(51) * 8 / N
    expected = 1 - np.minimum(np.arange(51) * 8, R) / R
    np.testing.assert_allclose(res.x, x)
    np.testing.assert_allclose(res.y, expected, atol=1e-7)
    assert res.score == pytest.approx(R / (2 * N))  # the triangle from (0, 1) to (R/N, 0)
    assert res.higher_is_better is False and res.n_evals == 51


def test_insertion_curve_is_analytic(region_setup):
    img, mask, model = region_setup
    res = metrics.insertion(model, img, manual(mask, img))
    expected = np.minimum(np.arange(51) * 8, R) / R
    np.testing.assert_allclose(res.y, expected, atol=1e-7)
    assert res.score == pytest.approx(1 - R / (2 * N))
    assert res.higher_is_better is True and res.details["baseline"] == "blur"


def test_deletion_uses_the_explanations_baseline(region_setup):
    img, mask, _ = region_setup

    # a model that scores how many region pixels are exactly gray (the 'gray' baseline)
    def fn(batch):
        s = np.all(np.abs(batch[:, mask] - 0.5) < 1e-6, axis=-1).mean(axis=1)
        return np.stack([s, 1 - s], axis=1)

    model = unveil.Model(fn, input_size=(H, W), outputs="probabilities")
    gray = metrics.deletion(model, img, manual(mask, img, baseline="gray"), target=0)
    assert gray.details["baseline"] == "gray"
    assert gray.y[R // 8] == pytest.approx(1.0)  # the region is all gray once removed
    default = metrics.deletion(model, img, manual(mask, img), target=0)
    assert default.details["baseline"] == metrics.DEFAULT_DELETION_BASELINE
    assert np.all(default.y == 0)
    # a baseline that cannot be rebuilt (as after save/load) falls back to the documented default
    lost = metrics.deletion(model, img, manual(mask, img, baseline="<array (20, 20, 3) float32>"), target=0)
    assert lost.details["baseline"] == metrics.DEFAULT_DELETION_BASELINE


def test_single_pixel_model_deletion_auc_by_hand():
    img = noise_image(1)
    py, px = 7, 13

    def fn(batch):
        s = np.all(np.abs(batch[:, py, px] - img[py, px]) < 1e-6, axis=-1).astype(np.float32)
        return np.stack([s, 1 - s], axis=1)

    model = unveil.Model(fn, input_size=(H, W), outputs="probabilities")
    first = np.zeros((H, W))
    first[py, px] = 1.0
    deletion = metrics.Deletion(baseline="zero")
    # removed at step 1 of 50: the curve is 1 at 0 then 0, AUC = 0.5 / 50
    assert deletion(model, img, manual(first, img)).score == pytest.approx(0.5 / 50)
    # ranked last: removed at the last step, AUC = 1 - 0.5 / 50
    assert deletion(model, img, manual(-first, img)).score == pytest.approx(1 - 0.5 / 50)
    # ranked 100th of 400 (8 pixels per step): removed in step ceil(100/8) = 13, AUC = (13 - 0.5) / 50
    order = np.arange(N, dtype=np.float64)[::-1].reshape(H, W).copy()  # pixel i has rank i
    order.reshape(-1)[[99, py * W + px]] = order.reshape(-1)[[py * W + px, 99]]
    assert deletion(model, img, manual(order, img)).score == pytest.approx(12.5 / 50)
    # all ties: the pixel's position comes from the seeded random order, different per seed, same per seed
    flat = np.zeros((H, W))
    aucs = [metrics.Deletion(baseline="zero", seed=s)(model, img, manual(flat, img)).score for s in range(40)]
    assert aucs[0] == metrics.Deletion(baseline="zero", seed=0)(model, img, manual(flat, img)).score
    assert len(set(aucs)) > 10
    assert all(round(a * 50 - 0.5) == pytest.approx(a * 50 - 0.5) for a in aucs)  # (j - 0.5) / 50
    assert np.mean(aucs) == pytest.approx(0.5, abs=0.12)


def test_random_map_scores_worse_than_the_true_map(region_setup):
    img, mask, model = region_setup
    true = manual(mask, img, baseline="zero")
    rand = metrics.random_explanation(true, seed=3)
    assert metrics.deletion(model, img, true).score < metrics.deletion(model, img, rand).score - 0.2
    assert metrics.insertion(model, img, true).score > metrics.insertion(model, img, rand).score + 0.2
    # and occlusion, which finds the region, beats the random map too
    occ = unveil.explain(model, img, method="occlusion", target=0, window=4, baseline="zero", progress=False)
    assert metrics.deletion(model, img, occ).score < metrics.deletion(model, img, rand).score
    assert metrics.insertion(model, img, occ).score > metrics.insertion(model, img, rand).score


def test_map_resized_to_model_input(region_setup):
    img, mask, model = region_setup
    big = np.kron(mask.astype(np.float32), np.ones((3, 3), np.float32))  # the map at 3x the input resolution
    big_img = np.kron(img, np.ones((3, 3, 1), np.float32))
    res = metrics.Deletion(baseline="zero")(model, img, manual(big, big_img))
    assert res.details["input_size"] == [H, W]
    assert res.score == pytest.approx(R / (2 * N), abs=0.02)


def test_randomization_lowers_the_correlation():
    torch.manual_seed(0)
    model = tiny_model()
    img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="occlusion", window=6, stride=2, progress=False)
    net = model.fn
    state = copy.deepcopy(net.state_dict())
    res = metrics.Randomization(max_steps=3)(model, img, exp)
    assert res.y[0] == 1.0 and len(res.y) == 4
    assert res.score < 0.9 and res.score == abs(res.y[-1]) and res.details["absolute"]
    assert res.details["ssim"][-1] < 1.0
    assert res.details["layers_randomized"][-1] == res.details["n_layers"] == 4
    for k, v in state.items():  # the user's model is untouched
        assert torch.equal(v, net.state_dict()[k])
    # the same check on an unchanged model would give 1.0: re-running the explanation reproduces it
    same = unveil.explain(model, img, method="occlusion", window=6, stride=2, progress=False)
    assert metrics.spearman(exp.map, same.map) == pytest.approx(1.0)


class _HeadFirst(torch.nn.Module):
    """Its head is declared before its body: declaration order is not the order of the forward pass."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(4, 3)
        self.body = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)).mean(dim=(2, 3)))


def test_randomization_cascades_from_the_output_in_call_order_and_scores_a_sign_flip_as_unchanged(monkeypatch):
    """Layers are randomized from the last one the forward pass calls (head, then body), whatever their
    declaration order; a re-explanation that is the original map negated scores |rho| = 1 (unchanged), signed
    or not."""
    torch.manual_seed(0)
    model = unveil.Model(_HeadFirst(), input_size=(16, 16))
    img = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="saliency", progress=False)
    res = metrics.Randomization(max_steps=None)(model, img, exp)
    assert res.details["randomized_down_to"] == ["original", "head", "body"]
    ort = unveil.Model(_HeadFirst(), input_size=(16, 16), batch_size=4).use_onnxruntime()
    ort.probabilities(torch.rand(4, 3, 16, 16))  # its inference passes now run on ONNX Runtime
    down = metrics.Randomization(max_steps=None)(ort, img, unveil.explain(ort, img, method="saliency",
                                                                           progress=False))
    assert down.details["randomized_down_to"] == ["original", "head", "body"]  # the order from a torch pass
    flipped = exp.__class__(**{**exp.__dict__, "map": -exp.map})
    monkeypatch.setattr(metrics, "_explain_again", lambda *a, **k: flipped)
    for absolute in (False, True):
        r = metrics.Randomization(max_steps=1, absolute=absolute)(model, img, exp)
        assert r.score == pytest.approx(1.0)
    assert metrics.Randomization(absolute=False)(model, img, exp).y[-1] == pytest.approx(-1.0)


def test_stability_of_identical_constant_maps_and_seeds_past_the_largest():
    """A method that returns the same flat map for every seed is perfectly stable (Spearman 1, top IoU 1);
    seeds past 2**63 - 1 continue from 0 instead of failing on a seed the user never passed."""
    model = unveil.Model(lambda b: np.tile([0.3, 0.7], (len(b), 1)), outputs="probabilities")
    img = np.random.default_rng(0).random((12, 12, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="occlusion", window=4, progress=False)
    assert not exp.map.any()
    res = metrics.Stability(k=3)(model, img, exp)
    assert res.score == 1.0 and res.details["top_iou"] == 1.0
    assert metrics.spearman(np.zeros(4), np.arange(4)) == 0.0  # one flat map: no agreement to speak of
    lime = unveil.explain(model, img, method="lime", n_samples=20, n_features=4, seed=2**63 - 1, progress=False)
    assert metrics.Stability(k=3)(model, img, lime).details["seeds"] == [2**63 - 1, 0, 1]


def test_randomization_refuses_a_callable(region_setup):
    img, mask, model = region_setup
    with pytest.raises(TypeError, match="callable"):
        metrics.randomization(model, img, manual(mask, img))


def test_randomization_of_a_constant_map_is_undefined_not_a_pass(tiny, image):
    flat = dataclasses.replace(unveil.explain(tiny, image, method="saliency", progress=False),
                               map=np.zeros(image.shape[:2], np.float32))
    with pytest.warns(UserWarning, match=r"^randomization: the explanation's map is constant .* score NaN"):
        res = metrics.Randomization(max_steps=2)(tiny, image, flat)
    assert np.isnan(res.score) and res.n_evals == 0  # was 0.0: the best score, for a map with no information
    data = res.to_dict()
    assert data["score"] is None and data["y"] == [None]
    json.dumps(data, allow_nan=False)  # strict JSON


def test_stability_of_a_deterministic_and_a_sampling_method(tiny, image):
    occ = unveil.explain(tiny, image, method="occlusion", window=8, progress=False)
    res = metrics.Stability(k=3)(tiny, image, occ)
    assert res.score == pytest.approx(1.0) and res.details["top_iou"] == pytest.approx(1.0)
    assert len(res.y) == 3
    lime = unveil.explain(tiny, image, method="lime", n_samples=30, n_features=16, progress=False)
    res = metrics.Stability(k=3)(tiny, image, lime)
    assert res.score < 0.999 and res.details["seeds"] == [0, 1, 2]


def test_spearman_ssim_iou_against_scipy_and_by_hand():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    a, b = rng.random((9, 9)), rng.random((9, 9))
    assert metrics.spearman(a, b) == pytest.approx(spearmanr(a.ravel(), b.ravel()).statistic)
    assert metrics.spearman(a, -a) == pytest.approx(-1.0)
    assert metrics.spearman(a, np.zeros((9, 9))) == 0.0
    assert metrics.map_ssim(a, 3 * a + 1) == pytest.approx(1.0)
    x = np.arange(10.0)
    assert metrics.top_iou(x, x, 0.2) == 1.0
    assert metrics.top_iou(x, x[::-1], 0.2) == 0.0
    y = x.copy()
    y[8] = -1.0  # top-2 of y is {9, 7}: one shared of three -> 1/3
    assert metrics.top_iou(x, y, 0.2) == pytest.approx(1 / 3)


def test_pointing_game():
    m = np.zeros((100, 100), np.float32)
    m[50, 60] = 1.0
    exp = manual(m, None)
    assert metrics.pointing_game(exp, (55, 40, 70, 58)).score == 1.0  # inside
    assert metrics.pointing_game(exp, (0, 0, 47, 51)).score == 1.0  # 14 pixels away: within tolerance
    res = metrics.pointing_game(exp, (0, 0, 40, 40))
    assert res.score == 0.0 and res.details["distance"] == pytest.approx(np.hypot(11, 21))
    mask = np.zeros((100, 100), bool)
    mask[50, 76] = True
    assert metrics.PointingGame(tolerance=15)(exp, mask).score == 0.0
    assert metrics.PointingGame(tolerance=16)(exp, mask).score == 0.0  # TorchRay's strict "less than"
    assert metrics.PointingGame(tolerance=16.01)(exp, mask).score == 1.0
    assert metrics.PointingGame(tolerance=0)(exp, (55, 40, 70, 58)).score == 1.0  # 0: on the object
    assert metrics.PointingGame(tolerance=0)(exp, (0, 0, 47, 51)).score == 0.0
    flat = metrics.pointing_game(manual(np.zeros((100, 100), np.float32), None), (0, 0, 10, 10))
    assert flat.score == 0.0 and flat.details["constant_map"]  # points nowhere, though (0, 0) is on the box
    assert metrics.pointing_game.higher_is_better
    with pytest.raises(ValueError, match="truth"):
        metrics.pointing_game(exp, np.zeros((5, 5), bool))
    assert metrics.pointing_game(exp, mask.astype(np.float32)).score == 0.0  # 0/1 numbers are a mask
    assert metrics.pointing_game(exp, mask.astype(np.uint8) * 255).score == 0.0  # so are 0/255 (a PNG's)
    assert metrics.PointingGame(tolerance=16.01)(exp, mask.astype(np.uint8) * 255).score == 1.0
    soft = np.full((100, 100), 0.05)
    soft[90:, 90:] = 0.9  # was read as "everywhere": every map hit
    with pytest.raises(ValueError, match=r"^truth: a mask must be boolean \(or 0 and one other value, as 0/1 or "
                                         r"0/255\); this one holds values from 0.05 to 0.9: threshold it first"):
        metrics.pointing_game(exp, soft)
    with pytest.raises(ValueError, match=r"^truth: the mask holds NaN"):
        metrics.pointing_game(exp, np.full((100, 100), np.nan))
    with pytest.raises(ValueError, match=r"^truth: box \(0, nan, 5, 5\) holds a value that is not a finite"):
        metrics.pointing_game(exp, (0, np.nan, 5, 5))


def test_metrics_keep_no_state_and_leave_the_model_unchanged(tiny, image):
    exp = unveil.explain(tiny, image, method="occlusion", window=8, progress=False)
    net = tiny.fn
    state = copy.deepcopy(net.state_dict())
    grads = [p.requires_grad for p in net.parameters()]
    modes = [m.training for m in net.modules()]
    a = metrics.deletion(tiny, image, exp)
    b = metrics.insertion(tiny, image, exp)
    metrics.Stability(k=2)(tiny, image, exp)
    assert metrics.deletion(tiny, image, exp).score == a.score  # same answer twice
    assert metrics.insertion(tiny, image, exp).score == b.score
    for k, v in state.items():
        assert torch.equal(v, net.state_dict()[k])
    assert [p.requires_grad for p in net.parameters()] == grads
    assert [m.training for m in net.modules()] == modes
    assert all(p.grad is None for p in net.parameters())
    np.testing.assert_array_equal(metrics.deletion(tiny, image, exp).y, a.y)  # the whole curve, too
    with pytest.raises(dataclasses.FrozenInstanceError):
        metrics.deletion.step = 0.5  # frozen: no settings change behind another caller


def test_batch_size_does_not_change_curves(image):
    exp = unveil.explain(tiny_model(), image, method="occlusion", window=8, progress=False)
    ys = [metrics.Deletion(batch_size=bs)(tiny_model(batch_size=bs), image, exp).y for bs in (1, 64)]
    np.testing.assert_allclose(ys[0], ys[1], rtol=1e-5, atol=1e-6)


def test_evaluate_and_errors(tiny, image):
    exp = unveil.explain(tiny, image, method="occlusion", window=8, progress=False)
    out = metrics.evaluate(tiny, image, exp, truth=(0, 0, 20, 20))
    assert set(out) == {"deletion", "insertion", "pointing_game"}
    assert out["deletion"].to_dict()["name"] == "deletion"
    with pytest.raises(ValueError, match="unknown 'bogus'"):
        metrics.evaluate(tiny, image, exp, ["bogus"])
    with pytest.raises(TypeError, match="explanation"):
        metrics.deletion(tiny, image, exp.map)
    with pytest.raises(ValueError, match="seed"):
        metrics.Deletion(seed=-1)
    bad = manual(np.full((4, 4), np.nan), image)
    with pytest.raises(ValueError, match="NaN"):
        metrics.deletion(tiny, image, bad)


def test_random_explanation_per_pixel_and_per_cell():
    from unveil.segmentation import grid

    ref = manual(np.zeros((21, 28)), None)
    a, b = metrics.random_explanation(ref, seed=1), metrics.random_explanation(ref, seed=1)
    np.testing.assert_array_equal(a.map, b.map)
    assert len(np.unique(a.map)) == 21 * 28 and a.method == "random"
    cells = metrics.random_explanation(ref, seed=1, cells=12).map
    labels = grid(21, 28, 12)
    for k in range(int(labels.max()) + 1):  # one value per grid cell, a different one per cell
        assert len(np.unique(cells[labels == k])) == 1
    assert len(np.unique(cells)) == int(labels.max()) + 1
    with pytest.raises(ValueError, match="cells"):
        metrics.random_explanation(ref, cells=0)


def test_an_array_baseline_survives_save_and_load_so_deletion_scores_the_same(tmp_path):
    model = tiny_model()
    img = np.random.default_rng(0).random((24, 32, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="lime", n_samples=30, n_features=8, segmentation="grid",
                         baseline=np.zeros((24, 32, 3), np.float32), progress=False)
    back = unveil.Explanation.load(exp.save(tmp_path / "l.npz"))
    np.testing.assert_array_equal(back.params["baseline"], exp.params["baseline"])
    a, b = metrics.deletion(model, img, exp), metrics.deletion(model, img, back)
    assert a.details["baseline"] == b.details["baseline"] == "image"
    assert a.score == b.score
    assert metrics.deletion(model, img, exp).score != metrics.Deletion(baseline="mean")(model, img, exp).score


def test_metrics_refuse_a_mismatched_image_target_or_map_and_bad_settings():
    import dataclasses

    model = tiny_model()
    img = np.random.default_rng(0).random((24, 32, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="occlusion", window=8, progress=False)
    other = np.random.default_rng(1).random((50, 20, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="map is 24 x 32 but the image is 50 x 20"):
        metrics.deletion(model, other, exp)
    with pytest.raises(ValueError, match=r"target 9 is out of range: the model has 3 classes \(0..2\)"):
        metrics.deletion(tiny_model(n_classes=3), img, dataclasses.replace(exp, target=9))
    unlabelled = unveil.Model(TinyNet(n_classes=3), input_size=(32, 32))  # its class count known only once run
    with pytest.raises(ValueError, match="target 9 is out of range: model .* has 3 classes.*another model"):
        metrics.deletion(unlabelled, img, dataclasses.replace(exp, target=9))
    with pytest.raises(ValueError, match="target: the explanation has none"):
        metrics.deletion(model, img, dataclasses.replace(exp, target=None))
    nan_map = dataclasses.replace(exp, map=np.full_like(exp.map, np.nan))
    with pytest.raises(ValueError, match="NaN or infinite"):
        metrics.pointing_game(nan_map, (0, 0, 5, 5))
    for name, bad in (("batch_size", lambda: metrics.Deletion(batch_size=0)),
                      ("batch_size", lambda: metrics.Deletion(batch_size="x")),
                      ("blur_sigma", lambda: metrics.Insertion(blur_sigma=float("nan"))),
                      ("blur_sigma", lambda: metrics.Insertion(blur_sigma=-1)),
                      ("top_fraction", lambda: metrics.Stability(top_fraction="x")),
                      ("tolerance", lambda: metrics.PointingGame(tolerance=float("nan")))):
        with pytest.raises(ValueError, match=f"^{name}: "):  # each names its own setting
            bad()


def test_randomization_copies_keep_the_models_channels():
    class Gray(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(1, 4, 3)
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    model = unveil.Model(Gray(), input_size=(16, 16), channels=1)
    img = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="saliency")
    res = metrics.Randomization(max_steps=2)(model, img, exp)
    assert len(res.y) == 3 and np.isfinite(res.y).all()
