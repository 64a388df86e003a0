"""Odd but valid input is converted by the documented rule; bad input gets a clear error naming the problem."""

from __future__ import annotations

import numpy as np
import torch
import pytest
from PIL import Image

import unveil
from unveil.images import load_image


# ----------------------------------------------------------------------------- valid, odd input
def test_uint8_rgb_is_divided_by_255():
    arr = np.array([[[0, 128, 255]]], np.uint8)
    np.testing.assert_allclose(load_image(arr), [[[0.0, 128 / 255, 1.0]]])


def test_grayscale_is_repeated_to_three_channels():
    arr = np.array([[0, 255], [51, 102]], np.uint8)
    out = load_image(arr)
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], out[..., 2])
    assert out[1, 0, 1] == pytest.approx(0.2)


def test_rgba_is_composited_onto_white():
    arr = np.array([[[255, 0, 0, 255], [255, 0, 0, 0], [0, 0, 255, 51]]], np.uint8)
    out = load_image(arr)
    np.testing.assert_allclose(out[0, 0], [1, 0, 0])  # opaque red stays red
    np.testing.assert_allclose(out[0, 1], [1, 1, 1])  # fully transparent becomes white
    np.testing.assert_allclose(out[0, 2], [0.8, 0.8, 1.0], atol=1e-6)  # 20 % blue over white


def test_16bit_png_file_is_divided_by_65535(tmp_path):
    arr = np.array([[0, 65535], [32768, 1000]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    out = load_image(path)
    np.testing.assert_allclose(out[..., 0], arr / 65535.0, atol=1e-6)


def test_16bit_array_and_bool_and_float():
    np.testing.assert_allclose(load_image(np.full((2, 2), 65535, np.uint16)), 1.0)
    np.testing.assert_allclose(load_image(np.eye(2, dtype=bool))[..., 0], np.eye(2))
    f = np.random.default_rng(0).random((3, 4, 3))
    np.testing.assert_allclose(load_image(f), f.astype(np.float32))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "1", "CMYK"])
def test_pil_modes_become_rgb(mode):
    img = Image.new("RGB", (5, 4), (10, 200, 30)).convert(mode)
    out = load_image(img)
    assert out.shape == (4, 5, 3) and out.dtype == np.float32
    # Pillow's own RGB conversion scaled to [0, 1] (LA/RGBA here are fully opaque: compositing changes nothing)
    np.testing.assert_allclose(out, np.asarray(img.convert("RGB"), np.float32) / 255, atol=1e-6)


def test_palette_with_transparency_and_la_composite_white():
    la = Image.fromarray(np.array([[[0, 0]]], np.uint8), mode="LA")
    np.testing.assert_allclose(load_image(la), 1.0)


def test_tiny_and_non_square_images_are_explained_at_their_own_size(tiny):
    for shape in [(1, 1, 3), (3, 200, 3)]:
        img = np.random.default_rng(1).random(shape).astype(np.float32)
        exp = unveil.explain(tiny, img, method="occlusion", window=8, progress=False)
        assert exp.map.shape == shape[:2]


def test_callable_model_without_input_size_uses_image_size():
    seen = []

    def fn(batch):
        seen.append(batch.shape)
        s = batch.mean(axis=(1, 2, 3))
        return np.stack([s, 1 - s], 1)

    img = np.random.default_rng(0).random((9, 11, 3)).astype(np.float32)
    exp = unveil.explain(fn, img, method="occlusion", window=3, target=0, progress=False)
    assert exp.map.shape == (9, 11)
    assert seen[0][1:] == (9, 11, 3)


# ----------------------------------------------------------------------------- bad files
def test_missing_file(tiny):
    with pytest.raises(ValueError, match="not found: .*nope.png"):
        unveil.explain(tiny, "nope.png", method="occlusion")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.*empty.jpg"):
        load_image(p)


def test_non_image_file(tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("this is text, not a picture")
    with pytest.raises(ValueError, match="not a readable image file: .*notes.png"):
        load_image(p)


def test_truncated_file(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "cut.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="cut.png"):
        load_image(bad)


def test_directory(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        load_image(tmp_path)


# ----------------------------------------------------------------------------- bad arrays
@pytest.mark.parametrize(
    "arr, error, match",
    [
        (np.zeros((4, 4, 5), np.uint8), ValueError, "^image: has 5 channels but the model takes 3"),
        (np.zeros((2, 2, 2, 3), np.uint8), ValueError, r"^image: expected shape H x W or H x W x C .*\(2, 2, 2, 3\)"),
        (np.zeros((0, 4, 3), np.uint8), ValueError, "^image: the image is empty"),
        (np.full((2, 2, 3), np.nan, np.float32), ValueError, "^image: contains NaN"),
        (np.full((2, 2, 3), 255.0), ValueError, r"^image: float images must lie in \[0, 1\].*divide by 255"),
        (np.zeros((2, 2, 3), np.int32), TypeError, "^image: unsupported dtype int32"),
    ],
)
def test_bad_arrays(arr, error, match):
    with pytest.raises(error, match=match):
        load_image(arr)


def test_wrong_type():
    with pytest.raises(TypeError, match="expected a file path"):
        load_image(3.5)


# ----------------------------------------------------------------------------- bad arguments
def test_unknown_method_lists_the_available(tiny, image):
    with pytest.raises(ValueError, match="unknown method 'nope'.*lime"):
        unveil.explain(tiny, image, method="nope")


@pytest.mark.parametrize("target, exc, match", [
    (10, ValueError, "out of range.*10 classes"),
    (-1, ValueError, "out of range"),
    ("giraffe", ValueError, "no class of that name"),
    (2.5, TypeError, "class number or name"),
])
def test_bad_targets(tiny, image, target, exc, match):
    with pytest.raises(exc, match=match):
        unveil.explain(tiny, image, method="occlusion", target=target)


def test_class_names_match_exactly_then_loosely_and_win_over_numbers():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    m = unveil.Model(net, input_size=(16, 16), labels=["Egyptian_cat", "great white shark", "5", "tabby  cat"])
    for name, index in [("Egyptian_cat", 0), ("egyptian cat", 0), ("EGYPTIAN_CAT", 0), (" great_white  shark ", 1),
                        ("tabby cat", 3), ("tabby_cat", 3), ("5", 2), ("1", 1), (" 3 ", 3)]:
        assert m.class_index(name) == index, name
    assert m.class_index(np.int64(2)) == 2 and m.class_index(0) == 0  # numbers are always numbers
    with pytest.raises(ValueError, match=r"^target '²': no class of that name"):
        m.class_index("²")  # a superscript digit is no number
    with pytest.raises(ValueError, match=r"^target 'shark': no class of that name; did you mean one of "
                                         r"\['great white shark'\]"):
        m.class_index("shark")
    exp = unveil.explain(m, np.random.default_rng(0).random((20, 24, 3)), method="occlusion", target="egyptian_cat",
                         progress=False)
    assert exp.target == 0 and exp.label == "Egyptian_cat"


def test_int_labels_are_their_text():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    for labels in (list(range(4)), np.arange(4)):
        m = unveil.Model(net, input_size=(16, 16), labels=labels)
        assert m.labels == ["0", "1", "2", "3"] and m.class_index("2") == 2 and m.label(3) == "3"


@pytest.mark.parametrize("labels, match", [
    ("abcd", r"^labels: expected a list of class names \(one str per class\), got str$"),
    ({0: "a", 1: "b"}, r"^labels: expected a list .* got dict; a dict's values in class order"),
    (["a", None, "c"], r"^labels: every class name must be a str \(or an int, taken as its text\); got \[None\]"),
    (["a", True], r"^labels: every class name must be a str .*got \[True\]"),
    (3, r"^labels: expected a list of class names, got int"),
])
def test_bad_labels(labels, match):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(TypeError, match=match):
        unveil.Model(net, input_size=(16, 16), labels=labels)


@pytest.mark.parametrize("kw, match", [
    ({"seed": -1}, "seed"),
    ({"budget": 1}, "budget"),
    ({"budget": 2.5}, "budget"),
    ({"batch_size": 0}, "batch_size"),
    ({"n_samples": 1}, "n_samples"),
    ({"surrogate": "forest"}, "surrogate"),
    ({"segmentation": "watershed"}, "segmentation"),
    ({"baseline": "purple"}, "baseline"),
    ({"selection": "magic"}, "selection"),
    ({"n_features": 0}, "n_features"),
    ({"segmentation": np.zeros((3, 3, 3), int)}, "2-D"),
])
def test_bad_lime_options(tiny, image, kw, match):
    with pytest.raises(ValueError, match=match):
        unveil.explain(tiny, image, method="lime", progress=False, **kw)


def test_nan_scores_are_reported():
    def fn(batch):
        return np.full((len(batch), 3), np.nan)

    with pytest.raises(ValueError, match="NaN"):
        unveil.explain(fn, np.zeros((8, 8, 3), np.float32), method="occlusion")


def test_wrong_output_shape_is_reported():
    def fn(batch):
        return np.zeros(len(batch))

    with pytest.raises(ValueError, match=r"returned shape \(1,\).*expected \(1, classes\)"):
        unveil.explain(fn, np.zeros((8, 8, 3), np.float32), method="occlusion")


def test_bad_model_arguments():
    with pytest.raises(TypeError, match=r"^model: expected a unveil.Model, a torch.nn.Module or a callable, got int"):
        unveil.explain(42, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="input_size"):
        unveil.Model(lambda b: b, input_size=(0, 3))
    with pytest.raises(ValueError, match="outputs"):
        unveil.Model(lambda b: b, outputs="margins")
    with pytest.raises(ValueError, match="batch_size"):
        unveil.Model(lambda b: b, batch_size="fast")


def test_user_label_map_and_user_baseline_image(tiny, image):
    labels = np.zeros((40, 48), int)
    labels[:, 24:] = 7
    exp = unveil.explain(tiny, image, method="lime", segmentation=labels, baseline=np.zeros((5, 5, 3)),
                         n_samples=20, progress=False)
    assert set(np.unique(exp.segments)) == {0, 1}
    assert np.all(exp.map[:, :20] == exp.weights[0]) and np.all(exp.map[:, 28:] == exp.weights[1])


@pytest.mark.parametrize("shape", [(7, 9), (7, 9, 3), (5, 6, 5)])
def test_bilinear_enlarging_equals_scikit_images_resize(shape):
    from skimage.transform import resize as sk_resize

    from unveil.images import resize

    x = np.random.default_rng(1).random(shape).astype(np.float32)
    for size in [(21, 40), (7, 30), (64, 64)]:
        ours = resize(x, size)
        ref = sk_resize(x, size, order=1, mode="edge", anti_aliasing=False, preserve_range=True)
        assert ours.shape == ref.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(850, 1280, 3), (300, 100, 3), (37, 41), (60, 50, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_antialiased_shrinking_equals_scikit_images_resize(shape, dtype):
    """The sparse-matrix shrink against scikit-image's resize (Gaussian prefilter + bilinear), including an axis
    that grows while the other shrinks, grayscale, 5 channels, float64; a flat image stays flat."""
    from skimage.transform import resize as sk_resize

    from unveil.images import resize

    x = np.random.default_rng(2).random(shape).astype(dtype)
    for size in [(224, 224), (8, 16), (shape[0] - 1, shape[1]), (shape[0] // 3, shape[1] + 7)]:
        if size[0] >= shape[0] and size[1] >= shape[1]:
            continue  # enlarging: the test above
        ours = resize(x, size)
        ref = sk_resize(x, size, order=1, mode="edge", anti_aliasing=True, preserve_range=True)
        assert ours.shape == ref.shape and ours.dtype == dtype
        np.testing.assert_allclose(ours, ref, atol=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(resize(np.full(shape, 0.3, dtype), (20, 20)), 0.3, atol=1e-6)


def test_resize_stays_in_the_input_range_and_reloads():
    """Interpolation weights are convex, so resizing keeps the input's range; float rounding had given
    1.0000001 on the white regions of scikit-image's coffee photo, which load_image then rejected. Shrinking
    and enlarging clip to the input's range (as scikit-image's clip=True); load_image clips values within
    FLOAT_SLACK of [0, 1] and still rejects values further out."""
    import skimage.data

    from unveil.images import FLOAT_SLACK, resize

    img = load_image(skimage.data.coffee())
    assert img.max() == 1.0
    for size in [(224, 224), (401, 603), (900, 1300)]:
        out = resize(img, size)
        assert out.min() >= img.min() and out.max() <= 1.0
        load_image(out)  # accepted as it is
    signed = np.random.default_rng(3).normal(size=(40, 50)).astype(np.float32)
    for size in [(12, 13), (90, 120)]:
        out = resize(signed, size)
        assert signed.min() <= out.min() and out.max() <= signed.max()
    np.testing.assert_array_equal(load_image(np.array([[1 + FLOAT_SLACK / 2, -FLOAT_SLACK / 2]], np.float32)),
                                  np.array([[[1.0] * 3, [0.0] * 3]], np.float32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image(np.array([[1 + 2 * FLOAT_SLACK, 0.5]], np.float32))


# ----------------------------------------------------------------------------- what a model may return
class _Pool(torch.nn.Module):
    """Per-channel means times fixed weights: 3 inputs -> ``k`` scores, wrapped by ``wrap``."""

    def __init__(self, k=2, wrap=lambda z: z):
        super().__init__()
        self.lin = torch.nn.Linear(3, k)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(k, 3, generator=gen))
            self.lin.bias.copy_(torch.randn(k, generator=gen))
        self.wrap = wrap

    def forward(self, x):
        return self.wrap(self.lin(x.mean(dim=(2, 3))))


_IMG = np.random.default_rng(3).random((8, 8, 3)).astype(np.float32)


@pytest.mark.parametrize("wrap", [lambda z: {"logits": z, "hidden": z * 0}, lambda z: {"out": z},
                                  lambda z: (z, z * 0), type("Output", (), {"__init__": lambda s, z: setattr(
                                      s, "logits", z)})])
def test_torch_outputs_in_a_mapping_tuple_or_output_object_are_read(wrap):
    plain = unveil.Model(_Pool(), input_size=(8, 8))
    wrapped = unveil.Model(_Pool(wrap=wrap), input_size=(8, 8))
    for method in ("occlusion", "saliency"):
        a = unveil.explain(plain, _IMG, method=method, window=4, stride=4) if method == "occlusion" else \
            unveil.explain(plain, _IMG, method=method)
        b = unveil.explain(wrapped, _IMG, method=method, window=4, stride=4) if method == "occlusion" else \
            unveil.explain(wrapped, _IMG, method=method)
        np.testing.assert_array_equal(a.map, b.map)
        assert a.score == b.score


def test_callable_outputs_in_a_tuple_or_mapping_are_read_and_others_refused():
    def probs(batch):
        m = batch.mean(axis=(1, 2))
        return m / m.sum(axis=1, keepdims=True)

    ref = unveil.explain(probs, _IMG, method="occlusion", window=4, stride=4)
    for fn in (lambda b: (probs(b), "extra"), lambda b: {"logits": probs(b)}, lambda b: {"p": probs(b)}):
        got = unveil.explain(unveil.Model(fn, outputs="probabilities"), _IMG, method="occlusion", window=4,
                             stride=4)
        np.testing.assert_array_equal(got.map, ref.map)
    with pytest.raises(ValueError, match=r"mapping with keys \['a', 'b'\]"):
        unveil.explain(lambda b: {"a": probs(b), "b": probs(b)}, _IMG, method="occlusion")
    with pytest.raises(ValueError, match="not an N x classes array"):
        unveil.explain(lambda b: [probs(b)[0], "x"], _IMG, method="occlusion")
    with pytest.raises(ValueError, match="returned complex numbers"):
        unveil.explain(lambda b: probs(b) + 0j, _IMG, method="occlusion")


def test_logits_declared_as_probabilities_are_refused_and_scores_are_taken_as_they_are():
    def logits(batch):
        return batch.mean(axis=(1, 2)) * 8.0 - 2.0

    with pytest.raises(ValueError, match=r"outside \[0, 1\].*outputs='logits'"):
        unveil.explain(logits, _IMG, method="occlusion")
    exp = unveil.explain(unveil.Model(logits, outputs="scores"), _IMG, method="occlusion", target=0)
    assert exp.score == pytest.approx(float(logits(_IMG[None])[0, 0]), rel=1e-6)
    soft = unveil.explain(unveil.Model(logits, outputs="logits"), _IMG, method="occlusion", target=0)
    z = logits(_IMG[None])[0]
    assert soft.score == pytest.approx(float(np.exp(z[0]) / np.exp(z).sum()), rel=1e-5)


def test_one_logit_is_read_as_two_classes_sigmoid_of_minus_z_and_z():
    torch.manual_seed(0)
    net = _Pool(k=1)
    model = unveil.Model(net, input_size=(8, 8), labels=["negative", "positive"])
    x = torch.from_numpy(_IMG).permute(2, 0, 1)[None]
    z = float(net(x)[0, 0].detach())
    p = model.probabilities(x, batch_size=1)[0]
    np.testing.assert_allclose(p.numpy(), [1 / (1 + np.exp(z)), 1 / (1 + np.exp(-z))], rtol=1e-6)
    exp = unveil.explain(model, _IMG, method="occlusion", window=4, stride=4, target=1)
    assert np.abs(exp.map).max() > 0 and exp.label == "positive"
    # gradients of class 1 are half those of z
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(net(xg)[0, 0], xg)
    sal = unveil.explain(model, _IMG, method="grad_input", target=1)
    np.testing.assert_allclose(sal.map, (0.5 * g * x)[0].sum(0).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="2 class scores but has 1 labels.*one-logit model.*two labels"):
        unveil.explain(unveil.Model(net, input_size=(8, 8), labels=["positive"]), _IMG, method="occlusion")


def test_outputs_declared_logits_that_look_like_probabilities_are_warned_about_once():
    """A module ending in Softmax (rows summing to 1) or Sigmoid, left at the default outputs='logits', would be
    squashed twice: a warning says so once; declared probabilities, or real logits, give none."""
    import warnings

    for last, k in ((torch.nn.Softmax(dim=1), 3), (torch.nn.Sigmoid(), 1)):
        net = torch.nn.Sequential(_Pool(k=k), last)
        with pytest.warns(UserWarning, match="look like probabilities.*outputs='probabilities'"):
            model = unveil.Model(net, input_size=(8, 8))
            unveil.explain(model, _IMG, method="occlusion", window=4, stride=4)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            unveil.explain(model, _IMG, method="occlusion", window=4, stride=4)  # once per model
            unveil.explain(unveil.Model(net, input_size=(8, 8), outputs="probabilities"), _IMG,
                           method="occlusion", window=4, stride=4)
            unveil.explain(unveil.Model(_Pool(k=3), input_size=(8, 8)), _IMG, method="occlusion", window=4,
                           stride=4)


def test_a_model_changing_its_class_count_or_scoring_no_class_is_refused():
    calls = []

    def shifting(batch):
        calls.append(len(batch))
        k = 3 if len(calls) == 1 else 4
        return np.full((len(batch), k), 1.0 / k, np.float32)

    with pytest.raises(ValueError, match="4 class scores for this batch and 3 before"):
        unveil.explain(unveil.Model(shifting, batch_size=4), _IMG, method="occlusion", window=4, stride=4)
    with pytest.raises(ValueError, match="no class scores"):
        unveil.explain(lambda b: np.zeros((len(b), 0), np.float32), _IMG, method="occlusion")


def test_integer_or_detached_torch_outputs_are_refused_by_gradient_methods():
    class Counts(torch.nn.Module):
        def forward(self, x):
            return (x.mean(dim=(2, 3)) * 10).long()

    with pytest.raises(ValueError, match="do not depend differentiably on its input"):
        unveil.explain(unveil.Model(Counts(), input_size=(8, 8)), _IMG, method="saliency")


# ----------------------------------------------------------------------------- option values
@pytest.mark.parametrize("method, opts, message", [
    ("lime", {"alpha": float("nan")}, "alpha: expected a non-negative number"),
    ("lime", {"alpha": float("inf")}, "alpha"),
    ("lime", {"alpha": -1.0}, "alpha"),
    ("lime", {"alpha": "x"}, "alpha"),
    ("lime", {"alpha": True}, "alpha"),
    ("lime", {"alpha": 10**400}, "alpha"),
    ("lime", {"kernel_width": 10**400}, "kernel_width"),
    ("lime", {"n_select": 0, "selection": "forward"}, "n_select: expected a positive int"),
    ("lime", {"n_select": -1, "selection": "highest_weights"}, "n_select"),
    ("lime", {"n_select": 1.5}, "n_select"),
    ("lime", {"n_select": None}, "n_select"),
    ("lime", {"kernel_width": "x"}, "kernel_width"),
    ("lime", {"kernel_width": None}, "kernel_width"),
    ("lime", {"kernel_width": True}, "kernel_width"),
    ("lime", {"max_depth": True, "surrogate": "tree"}, "max_depth"),
    ("lime", {"segmentation_options": 1}, "segmentation_options: expected a dict"),
    ("kernelshap", {"segmentation_options": 0}, "segmentation_options"),
    ("shapley", {"segmentation_options": False}, "segmentation_options"),
    ("streak", {"segmentation_options": [("n_segments", 5)]}, "segmentation_options"),
    ("lime", {"segmentation_options": {"n_segments": 0}}, r"segmentation 'slic' with n_segments=0 failed"),
    ("lime", {"segmentation_options": {"bogus": 1}}, r"segmentation 'slic' with bogus=1 failed"),
    ("lime", {"segmentation": np.zeros((0, 0), int)}, "label map must be 2-D"),
    ("smoothgrad", {"base_options": 1.5}, "base_options: expected a dict"),
    ("elrp", {"eps": float("inf")}, "eps: expected a non-negative finite"),
    ("meaningful", {"lr": float("inf")}, "lr: expected a positive finite"),
    ("learned", {"lr": float("inf")}, "lr"),
])
def test_bad_option_values_are_named(tiny, image, method, opts, message):
    with pytest.raises(ValueError, match=message):
        unveil.explain(tiny, image, method=method, progress=False, **opts)


def test_seeds_beyond_64_bits_are_refused(tiny, image):
    with pytest.raises(ValueError, match=r"seed: expected an int from 0 to 2\*\*63 - 1"):
        unveil.explain(tiny, image, method="occlusion", seed=2**64)
    exp = unveil.explain(tiny, image, method="occlusion", seed=2**63 - 1, window=8, progress=False)
    assert exp.seed == 2**63 - 1


def test_rise_default_grid_fits_an_input_with_a_short_side():
    def fn(batch):
        return np.stack([batch[..., 0].mean(axis=(1, 2)), 1 - batch[..., 0].mean(axis=(1, 2))], axis=1)

    img = np.random.default_rng(0).random((5, 40, 3)).astype(np.float32)
    exp = unveil.explain(unveil.Model(fn, outputs="probabilities"), img, method="rise", n_masks=20, progress=False)
    assert exp.extras["s"] == 5 and exp.map.shape == (5, 40) and np.isfinite(exp.map).all()
    with pytest.raises(ValueError, match="s: expected an int from 1 to 5"):
        unveil.explain(unveil.Model(fn), img, method="rise", n_masks=20, s=7, progress=False)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_a_map_with_infinite_values_is_an_error_not_a_file():
    def overflowing(batch):  # finite scores whose differences overflow float32
        m = batch.mean(axis=(1, 2, 3))
        return np.stack([np.where(m > 0.8, 3e38, -3e38), np.zeros_like(m)], axis=1).astype(np.float32)

    img = np.full((16, 16, 3), 0.9, np.float32)
    with pytest.raises(ValueError, match="method 'occlusion' gave NaN or infinite attributions"):
        unveil.explain(unveil.Model(overflowing, outputs="scores"), img, method="occlusion", window=8, stride=8,
                       target=0, baseline="zero", progress=False)


@pytest.mark.parametrize("orientation, turn", [(1, lambda a: a), (3, lambda a: np.rot90(a, 2)),
                                               (6, lambda a: np.rot90(a, -1)), (8, lambda a: np.rot90(a, 1))])
def test_exif_orientation_turns_photos_upright(tmp_path, orientation, turn):
    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:5, :10] = 255  # a white block top-left as stored
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.png"
    Image.fromarray(stored).save(path, exif=exif)
    expected = turn(stored).astype(np.float32) / 255.0  # 6: the stored top-left ends top-right
    np.testing.assert_array_equal(load_image(path), expected)
    with Image.open(path) as img:
        np.testing.assert_array_equal(load_image(img), expected)


def test_a_fixed_size_module_without_input_size_gets_a_hint_and_tensors_targets_are_read():
    """A module made for one input size, wrapped without input_size, sees the image's own size: torch's shape
    error comes back with the fix. A one-element integer tensor target (logits.argmax()) is a class number;
    a batch of one image, a channels-first array and normalized values get advice that fits them."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    img = np.random.default_rng(0).random((10, 12, 3)).astype(np.float32)
    with pytest.raises(RuntimeError, match=r"shape \(1, 3, 10, 12\).*input_size=\(height, width\)"):
        unveil.explain(mlp, img, method="saliency")
    gray = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(start_dim=1), torch.nn.LazyLinear(2))
    with pytest.raises(RuntimeError) as err:  # a channel mismatch is not a size problem: no input_size advice
        unveil.explain(unveil.Model(gray, channels=None), img, method="saliency")
    assert "input_size" not in str(err.value)
    model = unveil.Model(mlp, input_size=(8, 8))
    exp = unveil.explain(model, img, method="occlusion", window=4, target=torch.tensor(2))
    assert exp.target == 2 and unveil.explain(model, img, method="occlusion", window=4, target=np.array(3)).target == 3
    with pytest.raises(TypeError, match="float32 value"):
        unveil.explain(model, img, method="occlusion", target=torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"a batch of shape \(1, 3, 8, 8\); pass the one image"):
        unveil.explain(model, torch.rand(1, 3, 8, 8), method="occlusion")
    with pytest.raises(ValueError, match=r"transpose a C x H x W array"):
        unveil.explain(model, np.random.default_rng(1).random((3, 40, 50)).astype(np.float32), method="occlusion")
    with pytest.raises(ValueError, match="before normalization"):
        unveil.explain(model, (img - 0.5) / 0.25, method="occlusion")
    with pytest.raises(ValueError, match="divide by 255"):
        unveil.explain(model, img * 255, method="occlusion")


def test_float_files_follow_the_float_rule_and_premultiplied_alpha_is_read(tmp_path):
    from PIL import Image

    ok = np.linspace(0, 1, 80 * 100, dtype=np.float32).reshape(80, 100)
    Image.fromarray(ok, mode="F").save(tmp_path / "ok.tif")
    np.testing.assert_allclose(load_image(tmp_path / "ok.tif")[..., 0], ok)  # values as they are, no rescaling
    for top in (1.5, 300.0):  # was divided by 255 or by its own maximum, silently
        Image.fromarray(ok * top, mode="F").save(tmp_path / "big.tif")
        with pytest.raises(ValueError, match=r"big\.tif.*\[0, 1\]"):
            load_image(tmp_path / "big.tif")
    la = Image.new("La", (6, 4), (200, 255))
    img = load_image(la)
    assert img.shape == (4, 6, 3)
    np.testing.assert_allclose(img, 200 / 255, atol=1e-6)  # opaque: the gray level itself


def test_a_module_class_a_wrong_channel_count_and_odd_settings_are_named():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3)

        def forward(self, x):
            return self.conv(x).mean((2, 3))

    with pytest.raises(TypeError, match=r"^model: got the class Net, not a module; pass an instance, e.g. Net\(\)"):
        unveil.explain(Net, np.random.default_rng(0).random((20, 20, 3)))
    gray_net = unveil.Model(Net(), input_size=(16, 16))  # channels=3 by default
    with pytest.raises(RuntimeError, match=r"the images reach it with 3 channel\(s\) \(channels=3\): a model whose "
                                           r"input has 1 takes unveil.Model\(\.\.\., channels=1\)"):
        unveil.explain(gray_net, np.random.default_rng(0).random((20, 20, 3)), method="saliency", progress=False)
    exp = unveil.explain(unveil.Model(Net(), input_size=(16, 16), channels=1),
                         np.random.default_rng(0).random((20, 20, 3)), method="saliency", progress=False)
    assert exp.map.shape == (20, 20)
    rgb_net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with pytest.raises(RuntimeError, match=r"reach it with 1 channel\(s\) \(channels=1\): a model whose input has 3 "
                                           r"takes unveil.Model\(\.\.\., channels=3\)"):  # the other way round
        unveil.explain(unveil.Model(rgb_net, input_size=(16, 16), channels=1),
                       np.random.default_rng(0).random((20, 20)), method="saliency", progress=False)
    with pytest.raises(ValueError, match=r"^background: expected a gray level or an \(r, g, b\) colour in \[0, 1\] "
                                         r"\(white: 1.0\), got 'white'"):
        unveil.Model(Net(), input_size=(16, 16), background="white")
    bf = torch.rand(3, 8, 10).to(torch.bfloat16)
    np.testing.assert_allclose(load_image(bf), bf.float().numpy().transpose(1, 2, 0))


def test_scores_beyond_float32_are_named_not_called_infinite():
    huge = unveil.Model(lambda b: np.tile([1e300, 1.0], (len(b), 1)), input_size=(8, 8), outputs="scores")
    with pytest.raises(ValueError, match=r"returned scores up to 1e\+300, beyond float32's range \(3.4e38\)"):
        unveil.explain(huge, np.random.default_rng(0).random((8, 8, 3)), method="occlusion", progress=False)
    class Huge(torch.nn.Module):  # a torch module computing in float64
        def forward(self, x):
            return torch.stack([x.double().mean((1, 2, 3)) * 1e300, x.double().mean((1, 2, 3))], 1)

    with pytest.raises(ValueError, match=r"returned scores up to [\d.]+e\+299, beyond float32's range"):
        unveil.explain(unveil.Model(Huge(), input_size=(8, 8), outputs="scores"),
                       np.random.default_rng(0).random((8, 8, 3)), method="saliency", progress=False)
    nan = unveil.Model(lambda b: np.tile([np.nan, 1.0], (len(b), 1)), input_size=(8, 8), outputs="scores")
    with pytest.raises(ValueError, match=r"returned NaN or infinite scores"):
        unveil.explain(nan, np.random.default_rng(0).random((8, 8, 3)), method="occlusion", progress=False)
