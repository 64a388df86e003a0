"""Images of any channel count (grayscale, RGBA, 16-bit, multispectral) and of any size, through callable models."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import unveil
from unveil.images import fit_channels, load_image, rgb_projection

H, W = 40, 48
REGION = (slice(8, 24), slice(16, 32))  # the only pixels the region models look at (on the 8-pixel grid)


def region_model(channel: int, channels: int | None, seen: list | None = None, **kw) -> unveil.Model:
    """Probability of class 0 = mean of ``channel`` over REGION (at the model's resolution, 40 x 48 here)."""

    def fn(batch):
        if seen is not None:
            seen.append(batch.shape)
        p = batch[:, REGION[0], REGION[1], channel].mean(axis=(1, 2))
        return np.stack([p, 1.0 - p], axis=1)

    return unveil.Model(fn, channels=channels, labels=["region", "rest"], **kw)


def region_image(channels: int, channel: int, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(1)
    img = rng.random((H, W, channels)) * 0.3
    img[..., channel] = 0.05
    img[REGION[0], REGION[1], channel] = 0.95
    if dtype == np.uint16:
        return np.round(img * 65535).astype(np.uint16)
    if dtype == np.uint8:
        return np.round(img * 255).astype(np.uint8)
    return img.astype(np.float32)


def inside_share(exp) -> float:
    """Share of the positive importance that falls inside REGION."""
    pos = np.clip(exp.map, 0, None)
    return float(pos[REGION].sum() / max(pos.sum(), 1e-12))


# baseline "mean": LIME's default (each segment's own mean) would hide nothing in these uniform cells
METHODS = {"lime": {"n_samples": 150, "n_features": 30, "segmentation": "grid", "baseline": "mean"},
           "occlusion": {"window": 8, "stride": 8}}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("case", ["gray2d", "gray1", "rgba", "uint16", "five"])
def test_any_channel_count_runs_through_lime_and_occlusion(method, case):
    seen: list = []
    if case == "gray2d":  # H x W, a grayscale model
        img, model = region_image(1, 0, np.uint8)[..., 0], region_model(0, 1, seen)
    elif case == "gray1":  # H x W x 1 into an RGB model: repeated
        img, model = region_image(1, 0, np.uint8), region_model(1, 3, seen)
    elif case == "rgba":  # alpha composited onto white by default; opaque here so colours stay
        img = np.concatenate([region_image(3, 1, np.uint8), np.full((H, W, 1), 255, np.uint8)], axis=2)
        model = region_model(1, 3, seen)
    elif case == "uint16":
        img, model = region_image(3, 2, np.uint16), region_model(2, 3, seen)
    else:  # five channels, the model reads the fifth
        img, model = region_image(5, 4), region_model(4, 5, seen)
    exp = unveil.explain(model, img, method=method, target=0, seed=0, progress=False, **METHODS[method])
    want_c = {"gray2d": 1, "gray1": 3, "rgba": 3, "uint16": 3, "five": 5}[case]
    assert {s[1:] for s in seen} == {(H, W, want_c)}  # the model saw its own channel count at every call
    assert exp.map.shape == (H, W) and exp.image.shape == (H, W, want_c)
    if method == "occlusion":  # windows on the region's 8-pixel grid: nothing outside it moves the score
        assert inside_share(exp) == pytest.approx(1.0)
    else:  # the region's four grid cells are LIME's top four
        truth = np.zeros((H, W), bool)
        truth[REGION] = True
        np.testing.assert_array_equal(exp.top_mask(4), truth)


def test_perturbations_reach_every_channel():
    """A model reading only the 5th channel is moved by the perturbation: occluding the region lowers it to the
    baseline (the image's mean in that channel), exactly."""
    img = region_image(5, 4)
    model = region_model(4, 5)
    exp = unveil.explain(model, img, method="occlusion", target=0, window=8, stride=8, baseline="mean",
                         progress=False)
    full = img[REGION[0], REGION[1], 4].mean()
    mean4 = img[..., 4].mean()
    # one 8 x 8 window inside the region: 64 of its 256 pixels go from 0.95 to the channel mean
    window_drop = 64 * (0.95 - mean4) / (16 * 16)
    assert exp.map[12, 20] == pytest.approx(window_drop, rel=1e-4)
    assert exp.map[30, 4] == 0.0
    assert exp.score == pytest.approx(full, rel=1e-5)


def test_alpha_rules():
    rgba = np.zeros((2, 2, 4), np.float32)
    rgba[..., 0] = 1.0  # red
    rgba[..., 3] = 0.25  # mostly transparent
    white = load_image(rgba)
    np.testing.assert_allclose(white[0, 0], [1.0, 0.75, 0.75])
    black = load_image(rgba, background=0.0)
    np.testing.assert_allclose(black[0, 0], [0.25, 0.0, 0.0])
    green = load_image(rgba, background=(0.0, 1.0, 0.0))
    np.testing.assert_allclose(green[0, 0], [0.25, 0.75, 0.0])
    dropped = load_image(rgba, alpha="drop")
    np.testing.assert_allclose(dropped[0, 0], [1.0, 0.0, 0.0])
    kept = load_image(rgba, channels=4)  # a 4-channel model keeps the fourth channel
    np.testing.assert_allclose(kept[0, 0], [1.0, 0.0, 0.0, 0.25])
    la = np.array([[[200, 0]]], np.uint8)  # gray + fully transparent alpha
    np.testing.assert_allclose(load_image(la), [[[1.0, 1.0, 1.0]]])
    np.testing.assert_allclose(load_image(la, channels=1, alpha="drop"), [[[200 / 255]]], rtol=1e-6)
    with pytest.raises(ValueError, match="alpha: expected one of"):
        load_image(rgba, alpha="keep")
    with pytest.raises(ValueError, match="background"):
        load_image(rgba, background=(2.0, 0, 0))


def test_model_alpha_options_reach_prepare():
    rgba = np.zeros((4, 4, 4), np.float32)
    rgba[..., 3] = 0.0
    model = unveil.Model(lambda b: np.stack([b.mean(axis=(1, 2, 3)), 1 - b.mean(axis=(1, 2, 3))], 1),
                         background=0.5)
    original, x = model.prepare(rgba)
    np.testing.assert_allclose(original, 0.5)
    assert tuple(x.shape) == (3, 4, 4)


def test_luminance_and_channel_mismatch():
    rgb = np.array([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], np.float32)
    np.testing.assert_allclose(fit_channels(rgb, 1)[..., 0], [[0.299, 0.587]], rtol=1e-6)
    with pytest.raises(ValueError, match="has 5 channels but the model takes 3"):
        load_image(np.zeros((4, 4, 5), np.float32))
    with pytest.raises(ValueError, match="has 3 channels but the model takes 5"):
        load_image(np.zeros((4, 4, 3), np.float32), channels=5)
    assert load_image(np.zeros((4, 4, 7), np.uint8), channels=None).shape == (4, 4, 7)
    with pytest.raises(ValueError, match="channels: expected a positive int"):
        unveil.Model(lambda b: b, channels=0)


def test_rgb_projection():
    rng = np.random.default_rng(0)
    gray = rng.random((6, 5, 1)).astype(np.float32)
    np.testing.assert_array_equal(rgb_projection(gray), np.repeat(gray, 3, axis=2))
    rgb = rng.random((6, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(rgb_projection(rgb), rgb)
    # six channels where the left and right halves differ along one direction of channel space: the first
    # principal component separates them (and every component lies in [0, 1])
    img = np.zeros((8, 8, 6), np.float32) + 0.01 * rng.random((8, 8, 6)).astype(np.float32)
    img[:, 4:] += np.array([0.8, 0.0, 0.5, 0.0, 0.3, 0.0], np.float32)
    proj = rgb_projection(img)
    assert proj.shape == (8, 8, 3) and proj.min() >= 0 and proj.max() <= 1
    assert abs(proj[:, :4, 0].mean() - proj[:, 4:, 0].mean()) > 0.9


def test_multispectral_segmentation_uses_the_projection():
    img = region_image(5, 4)
    labels = unveil.segmentation.segment(img, "slic", n_features=20)
    assert labels.shape == (H, W) and labels.max() >= 1
    np.testing.assert_array_equal(labels, unveil.segmentation.segment(rgb_projection(img), "slic", n_features=20))


def test_npy_file_and_cli_with_a_five_channel_model(tmp_path, capsys):
    from unveil.cli import main

    path = tmp_path / "scene.npy"
    np.save(path, region_image(5, 4))
    np.testing.assert_array_equal(load_image(path, channels=5), region_image(5, 4))
    user = tmp_path / "msi.py"
    user.write_text(
        "import numpy as np\nimport unveil\n"
        "def build():\n"
        "    def fn(b):\n"
        "        p = b[:, 8:24, 16:32, 4].mean(axis=(1, 2))\n"
        "        return np.stack([p, 1 - p], axis=1)\n"
        "    return unveil.Model(fn, channels=5, labels=['region', 'rest'])\n"
    )
    out = tmp_path / "res"
    assert main(["explain", str(path), "--model", f"{user}:build", "--method", "occlusion", "--target", "0",
                 "-o", "window=8", "-o", "stride=8", "--out", str(out), "--no-progress"]) == 0
    exp = unveil.Explanation.load(out / "scene_occlusion.npz")
    assert exp.image.shape == (H, W, 5) and inside_share(exp) > 0.9
    assert (out / "scene_occlusion.png").stat().st_size > 0
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not an array")
    with pytest.raises(ValueError, match="not a readable .npy"):
        load_image(bad)


def test_large_image_is_resized_for_the_model_and_the_map_comes_back_full_size():
    seen: list = []

    def fn(batch):
        seen.append(batch.shape)
        p = batch[..., 0].mean(axis=(1, 2))
        return np.stack([p, 1 - p], axis=1)

    big = np.zeros((3000, 2000, 3), np.uint8)
    big[:1500] = 255
    model = unveil.Model(fn)  # input_size=None, max_side=1024
    exp = unveil.explain(model, big, method="occlusion", target=0, window=128, stride=128, baseline="zero",
                         progress=False)
    assert {s[1:3] for s in seen} == {(1024, 683)}
    assert exp.map.shape == (3000, 2000)
    # rows 0..1499 are white: occluding them lowers the score; the black half below moves nothing (but for the
    # anti-aliased edge row, inside the first window below it, spread by the bilinear upsampling)
    assert exp.map[:1400].min() > 0 and abs(exp.map[2300:]).max() == 0.0
    assert unveil.Model(fn, max_side=None).model_size(3000, 2000) == (3000, 2000)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (8-bit gray) and whose data is one empty chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 20_000])  # 100 and 400 million pixels: over the limit, and far over
def test_decompression_bomb_sized_file_is_refused_before_decoding(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(side, side))
    assert side * side > Image.MAX_IMAGE_PIXELS
    with pytest.raises(ValueError, match="too large to decode safely: .*bomb.png"):
        load_image(path)
