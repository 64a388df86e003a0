"""A user's own label map (``segmentation=<H x W ints>``): every segment keeps a weight, the explanation's
segments are the user's map at the image's resolution, and the user's label values stay identifiable."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import unveil
from unveil.segmentation import LabelMap, resize_labels, segment, upsample_labels

SEGMENT_METHODS = ["lime", "kernelshap", "shapley", "streak"]
FAST = {"lime": dict(n_samples=30), "kernelshap": dict(n_samples=30), "shapley": dict(n_permutations=2),
        "streak": dict()}


class MeanRed(torch.nn.Module):
    """score = mean of the red channel over the whole input: additive over pixels, so with a zero baseline a
    segment's exact contribution is its red sum at the model's input size / the input's pixel count."""

    def forward(self, x):
        s = x[:, 0].mean(dim=(1, 2))
        return torch.stack([s, 1 - s], dim=1)


def mean_red_model(size=(32, 32)) -> unveil.Model:
    return unveil.Model(MeanRed(), input_size=size, outputs="probabilities", batch_size=64)


def tiny_conv(size=(32, 32)) -> unveil.Model:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    return unveil.Model(net, input_size=size, batch_size=64)


def strip_map(h=96, w=128) -> np.ndarray:
    """Left/right halves and a 1-pixel horizontal strip (a wire) that nearest sampling to 32 x 32 misses."""
    labels = np.zeros((h, w), np.int64)
    labels[:, w // 2:] = 1
    labels[9, :] = 2  # row 9 of 96: the 32 rows sampled are 1, 4, 7, 10, ... (3i + 1): never row 9
    return labels


def photo(h=96, w=128, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


def test_the_strip_is_lost_by_plain_nearest_sampling():  # the case the tests below are about
    assert 2 not in upsample_labels(strip_map(), (32, 32))


@pytest.mark.parametrize("method", SEGMENT_METHODS)
def test_a_one_pixel_strip_keeps_its_segment_and_the_users_boundaries(method):
    labels = strip_map()
    exp = unveil.explain(tiny_conv(), photo(), method=method, segmentation=labels, target=0, progress=False,
                         **FAST[method])
    assert exp.weights.shape == (3,) and exp.extras["n_features"] == 3
    assert exp.segments.shape == labels.shape and exp.segments.dtype == np.int32
    np.testing.assert_array_equal(exp.segments, labels)  # labels 0..2 already: the map exactly as given
    np.testing.assert_array_equal(exp.extras["segment_labels"], [0, 1, 2])
    np.testing.assert_array_equal(exp.map, exp.weights[labels])  # the strip row shows the strip's weight


def test_the_strip_keeps_about_its_area_at_the_models_input():
    small = segment(np.zeros((32, 32, 3), np.float32), strip_map())
    assert isinstance(small, LabelMap) and small.shape == (32, 32)
    area = np.bincount(small.reshape(-1), minlength=3)
    assert area[2] == round(128 * 32 * 32 / (96 * 128))  # 128 pixels of 12288 -> 11 of 1024
    rows = np.unique(np.nonzero(small == 2)[0])
    assert rows.tolist() == [3]  # row 9 of 96 has its centre in row 3 of 32
    cols = np.nonzero(small[3] == 2)[0]
    assert cols.min() < 4 and cols.max() > 27  # spread along the strip, not bunched at one end
    # outside the strip's row, the map is plain nearest sampling
    near = upsample_labels(strip_map(), (32, 32))
    np.testing.assert_array_equal(np.delete(small, 3, axis=0), np.delete(near, 3, axis=0))


@pytest.mark.parametrize("method", ["lime", "shapley"])
def test_user_label_values_come_back_identifiable(tmp_path, method):
    user = np.full((96, 128), 10, np.int64)
    user[:, 64:] = 100
    user[40:60, 20:50] = 20
    exp = unveil.explain(tiny_conv(), photo(), method=method, segmentation=user, target=1, progress=False,
                         **FAST[method])
    values = exp.extras["segment_labels"]
    np.testing.assert_array_equal(values, [10, 20, 100])
    np.testing.assert_array_equal(values[exp.segments], user)  # index -> the user's label, pixel for pixel
    weight_of = dict(zip(values.tolist(), exp.weights.tolist()))
    assert set(weight_of) == {10, 20, 100}
    assert np.all(exp.map[user == 20] == np.float32(weight_of[20]))
    back = unveil.Explanation.load(exp.save(tmp_path / "e.npz"))
    np.testing.assert_array_equal(back.extras["segment_labels"], values)
    np.testing.assert_array_equal(back.segments, exp.segments)


def test_negative_and_unsorted_labels_are_segments_too():
    user = np.full((40, 48), -1, np.int32)  # e.g. "background" = -1
    user[5:30, 5:20] = 7
    user[5:30, 30:44] = 3
    exp = unveil.explain(tiny_conv(), photo(40, 48), method="kernelshap", segmentation=user, n_samples=30,
                         progress=False)
    np.testing.assert_array_equal(exp.extras["segment_labels"], [-1, 3, 7])
    np.testing.assert_array_equal(exp.extras["segment_labels"][exp.segments], user)


def test_a_map_drawn_at_another_size_is_resized_to_the_image_keeping_every_segment():
    user = strip_map(96, 128)  # drawn for a 96 x 128 photo, explained on its 48 x 64 copy
    exp = unveil.explain(tiny_conv(), photo(48, 64), method="lime", segmentation=user, n_samples=30,
                         progress=False)
    assert exp.segments.shape == (48, 64)
    np.testing.assert_array_equal(exp.segments, resize_labels(user, (48, 64)))
    assert set(np.unique(exp.segments)) == {0, 1, 2} and exp.weights.shape == (3,)
    # a map at the model's input size comes back enlarged by nearest neighbour, as before
    small = upsample_labels(user, (32, 32))
    exp = unveil.explain(tiny_conv(), photo(), method="lime", segmentation=small, n_samples=30, progress=False)
    np.testing.assert_array_equal(exp.segments, upsample_labels(small, (96, 128)))


@pytest.mark.parametrize("method,opts", [("shapley", dict(n_permutations=3)),
                                         ("kernelshap", dict(n_samples=200)),
                                         ("lime", dict(n_samples=200, alpha=1e-9))])
def test_additive_model_weights_are_the_segments_red_mass_at_the_models_input(method, opts):
    model = mean_red_model()
    img = photo()
    labels = strip_map()
    labels[60:90, 10:40] = 7  # four segments, labels 0, 1, 2, 7
    exp = unveil.explain(model, img, method=method, segmentation=labels, baseline="zero", target=0, seed=0,
                         progress=False, **opts)
    _, x = model.prepare(img)
    small = segment(x.numpy().transpose(1, 2, 0), labels)  # the features the method perturbed
    red = x[0].numpy().astype(np.float64)
    expected = np.bincount(small.reshape(-1), weights=red.reshape(-1), minlength=4) / red.size
    np.testing.assert_allclose(exp.weights, expected, atol=1e-5)
    assert exp.weights[2] > 0  # the strip counts
    # its share is about its share of the photo (rounded to whole model pixels)
    assert np.bincount(small.reshape(-1))[2] / small.size == pytest.approx(128 / labels.size, rel=0.1)
    np.testing.assert_array_equal(exp.extras["segment_labels"], [0, 1, 2, 7])
    np.testing.assert_array_equal(exp.segments, np.searchsorted([0, 1, 2, 7], labels))


def test_resize_labels_keeps_every_label_and_leaves_others_as_nearest():
    cols = np.tile(np.arange(2), (64, 32))  # 1-pixel columns: halving samples only label 1
    assert set(np.unique(upsample_labels(cols, (32, 32)))) == {1}
    out = resize_labels(cols, (32, 32))
    assert np.bincount(out.reshape(-1)).tolist() == [512, 512]  # each keeps its share of the area
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 300, (300, 300))  # 300 labels into 400 pixels
    out = resize_labels(noisy, (20, 20))
    assert np.bincount(out.reshape(-1), minlength=300).min() >= 1
    blocks = np.kron(np.arange(16).reshape(4, 4), np.ones((8, 8), int))
    np.testing.assert_array_equal(resize_labels(blocks, (16, 16)), upsample_labels(blocks, (16, 16)))
    np.testing.assert_array_equal(resize_labels(blocks, (50, 40)), upsample_labels(blocks, (50, 40)))


@pytest.mark.parametrize("labels,message", [
    (np.zeros((0, 0), int), "label map must be 2-D"),
    (np.zeros((4, 4, 3), int), "label map must be 2-D"),
    (np.zeros((40, 48)), "must hold integers, got dtype float64"),
    (np.full((40, 48), np.nan), "must hold integers"),
    (np.zeros((40, 48), bool), "must hold integers, got dtype bool"),
    (np.arange(40 * 48).reshape(40, 48), r"label map has 1920 segments but a 32 x 32 map holds only 1024"),
])
def test_wrong_label_maps_are_named(labels, message):
    with pytest.raises(ValueError, match=message):
        unveil.explain(tiny_conv(), photo(40, 48), method="lime", segmentation=labels, n_samples=10,
                       progress=False)


def test_derived_arrays_are_plain_label_arrays():
    small = segment(np.zeros((32, 32, 3), np.float32), strip_map())
    assert type(small.max()) is np.int64 and int(small.max()) == 2
    assert type(small == 2) is np.ndarray and type(np.asarray(small)) is np.ndarray
    assert small[:4].source is None and small.source.shape == (96, 128)


def test_a_transposed_or_cropped_map_or_baseline_is_refused_not_stretched():
    img = photo()  # 96 x 128; the model's input is 32 x 32
    for labels in (strip_map(128, 96), strip_map(96, 64)):  # transposed; cropped to half the width
        with pytest.raises(ValueError, match=rf"^segmentation: the label map is {labels.shape[0]} x "
                                             rf"{labels.shape[1]} but the image is 96 x 128 \(the model's input "
                                             r"32 x 32\): not the same picture at another scale"):
            unveil.explain(tiny_conv(), img, method="lime", segmentation=labels, n_samples=10, progress=False)
    with pytest.raises(ValueError, match=r"^baseline: the baseline image is 5 x 500 but the image is 96 x 128"):
        unveil.explain(tiny_conv(), img, method="occlusion", baseline=np.zeros((5, 500, 3)), progress=False)
    # the same picture at another scale, or at the model's input size, is resized as before
    for shape in ((48, 64), (97, 128), (32, 32)):
        exp = unveil.explain(tiny_conv(), img, method="occlusion", baseline=np.zeros((*shape, 3)), window=16,
                             stride=16, progress=False)
        assert exp.map.shape == (96, 128)
    from PIL import Image

    with pytest.raises(ValueError, match=r"^baseline: the baseline image is 128 x 96 but the image is 96 x 128"):
        unveil.explain(tiny_conv(), img, method="occlusion", baseline=Image.new("RGB", (96, 128)), progress=False)
    path = Path(tempfile.mkdtemp()) / "base.png"
    Image.new("RGB", (96, 128)).save(path)
    with pytest.raises(ValueError, match=r"^baseline: the baseline image is 128 x 96"):
        unveil.explain(tiny_conv(), img, method="occlusion", baseline=str(path), progress=False)
    with pytest.raises(ValueError, match=r"^baseline: a batch of shape \(1, 3, 32, 32\); pass the one image"):
        unveil.explain(tiny_conv(), img, method="occlusion", baseline=torch.zeros(1, 3, 32, 32), progress=False)
    with pytest.raises(ValueError, match=r"^baseline: the baseline image is 5 x 500"):  # the metric's own baseline
        unveil.metrics.Deletion(baseline=np.zeros((5, 500, 3)))(tiny_conv(), img, unveil.explain(
            tiny_conv(), img, method="occlusion", window=16, stride=16, progress=False))
    torch_baseline = torch.zeros(3, 48, 64)  # C x H x W
    assert unveil.explain(tiny_conv(), img, method="occlusion", baseline=torch_baseline, window=16, stride=16,
                          progress=False).map.shape == (96, 128)


def test_pictures_resized_apart_from_one_original_are_the_same_picture():
    """Two copies of one picture, each rounded to whole pixels at its own scale, pass; transposed, cropped and
    stretched ones do not (the check behind the label map and baseline refusals)."""
    from unveil.images import same_picture

    rng = np.random.default_rng(0)
    for _ in range(20000):
        h, w = rng.integers(10, 4000, 2)
        s1, s2 = rng.uniform(0.01, 1, 2)
        a = (max(1, round(h * s1)), max(1, round(w * s1)))
        b = (max(1, round(h * s2)), max(1, round(w * s2)))
        assert same_picture(a, b), (a, b)
    assert same_picture((169, 150), (692, 610))  # both from 1813 x 1600
    for a, b in (((128, 96), (96, 128)), ((96, 64), (96, 128)), ((5, 500), (96, 128)), ((100, 120), (100, 100))):
        assert not same_picture(a, b), (a, b)


def test_a_lost_thin_segment_is_placed_at_the_middle_of_its_pixels():
    """A 1-pixel strip at row 50 of a 100 x 100 map falls between the rows 10 x 10 sampling reads (5, 15, ...,
    95): its 100 pixels are worth one output pixel, taken from the middle of the ten output pixels it covers
    (row 5, columns 0..9 in raster order: the one at index int(0.5 * 10 / 1) = 5), not from an end."""
    labels = np.zeros((100, 100), np.int64)
    labels[50] = 1
    small = resize_labels(labels, (10, 10))
    assert (small == 1).sum() == 1 and small[5, 5] == 1


def test_felzenszwalb_is_scikit_images_at_the_documented_scale():
    """n_features sets felzenszwalb's scale to h*w / (4 n) and its min_size to max(8, h*w // (8 n))."""
    from skimage.segmentation import felzenszwalb

    from unveil.segmentation import relabel

    img = np.random.default_rng(4).random((48, 64, 3)).astype(np.float32)
    img[10:30, 20:50] = [0.9, 0.1, 0.1]
    ours = segment(img, "felzenszwalb", n_features=12)
    ref = relabel(felzenszwalb(img, scale=48 * 64 / (4 * 12), sigma=0.8, min_size=max(8, 48 * 64 // (8 * 12))))
    np.testing.assert_array_equal(ours, ref)


def test_a_lost_segment_may_take_pixels_holding_half_its_largest_share():
    """20 x 20 -> 10 x 10 reads input pixel (2i + 1, 2j + 1) for output pixel (i, j). Segment 1 holds input
    pixels (0, 0), (1, 0) (two in output pixel (0, 0)) and (0, 2) (one in output pixel (0, 1)), none of them read,
    so it is lost. Candidates are the output pixels holding at least half its largest share: both. Its 3 input
    pixels are worth round(3 / 4) -> 1 output pixel, the middle candidate in raster order: index int(0.5 * 2) = 1,
    output pixel (0, 1)."""
    labels = np.zeros((20, 20), np.int64)
    labels[0, 0] = labels[1, 0] = labels[0, 2] = 1
    small = resize_labels(labels, (10, 10))
    assert (small == 1).sum() == 1 and small[0, 1] == 1
