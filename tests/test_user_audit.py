"""Findings of a user-side audit of the image command and API: errors raised inside a torch module are named
as the model's (with the line of the user's code, libraries passed over), the command loads ONNX graphs of any
channel count with the graph's own normalization rule, the metrics' re-explanations follow ``progress``,
premultiplied-alpha images keep their transparency, STREAK draws one bar, and ``progress`` must be a bool."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

import unveil
from unveil.checks import MODEL_FAILED, check_bool
from unveil.cli import main


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path)
    return str(path)


USER = textwrap.dedent("""
    import numpy as np
    import torch
    import unveil

    class Mismatch(torch.nn.Module):          # a linear layer made for another input size
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(10, 3)
        def forward(self, x):
            return self.fc(x.flatten(1))      # LINE_TORCH

    def sized():
        return unveil.Model(Mismatch(), input_size=(16, 16), name="mismatch")

    def in_numpy(batch):
        return np.reshape(batch, (7, -1))     # LINE_NUMPY
    """)


def _line(text: str, tag: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if tag in line)


@pytest.mark.parametrize("attr, tag, what", [
    ("sized", "LINE_TORCH", "1 image of 3 x 16 x 16 (C x H x W, values in [0, 1])"),
    ("in_numpy", "LINE_NUMPY", "1 image of 40 x 48 x 3 (H x W x C, values in [0, 1])"),
])
def test_an_error_inside_the_model_is_one_line_at_the_users_code(tmp_path, photo, capsys, attr, tag, what):
    user = tmp_path / "user_model.py"
    user.write_text(USER)
    try:
        rc = main(["explain", photo, "--model", f"{user}:{attr}", "--method", "occlusion", "--no-progress",
                   "--out", str(tmp_path / "out")])
    finally:
        sys.modules.pop("user_model", None)
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("unveil: error:")]
    assert len(line) == 1
    assert f"failed on {what}" in line[0]
    # the user's line, not torch's functional.py or numpy's fromnumeric.py
    assert f"at {user}:{_line(USER, tag)}:" in line[0]


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_errors_of_the_module_are_marked_and_a_hook_of_the_package_is_not():
    x = torch.rand(1, 3, 8, 8)

    def users_hook(module, args):  # the user's own hook fails: the model's error
        raise KeyError("users hook")

    net = _Net()
    handle = net.conv.register_forward_pre_hook(users_hook)
    with pytest.raises(KeyError) as info:
        unveil.Model(net, mean=None, std=None).forward(x)
    handle.remove()
    assert "failed on 1 image of 3 x 8 x 8" in getattr(info.value, MODEL_FAILED)

    # this package's code called back from inside the module (as a gradient method's hooks are) raises its own
    # error, which stays unmarked: check_bool(module, args) refuses a module as a bool
    handle = net.conv.register_forward_pre_hook(check_bool)
    with pytest.raises(ValueError, match="expected True or False") as info:
        unveil.Model(net, mean=None, std=None).forward(x)
    handle.remove()
    assert getattr(info.value, MODEL_FAILED, None) is None


def test_a_size_hint_error_is_the_models_and_points_at_its_code(tmp_path, photo, capsys):
    user = tmp_path / "hint_model.py"
    user.write_text(USER.replace("def sized():", "def bare():\n    return Mismatch()\n\ndef sized():"))
    try:
        rc = main(["explain", photo, "--model", f"{user}:bare", "--method", "occlusion", "--no-progress",
                   "--out", str(tmp_path / "out")])
    finally:
        sys.modules.pop("hint_model", None)
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert "input_size=(height, width)" in err  # the hint: the image's own size reached the module
    assert f"at {user}:{_line(user.read_text(), 'LINE_TORCH')}:" in err  # the module's line, not the hint's


class _Gray(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy exporter, kept for its speed
def test_the_command_loads_a_one_channel_onnx_graph_without_imagenet_normalization(tmp_path, photo, capsys):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "gray.onnx"
    torch.onnx.export(_Gray().eval(), (torch.rand(1, 1, 16, 16),), str(path), input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    out = tmp_path / "out"
    assert main(["explain", photo, "--model", str(path), "--method", "occlusion", "--no-progress",
                 "--out", str(out)]) == 0
    assert list(out.glob("*_occlusion.npz"))
    # as from_onnx has it: the graph takes [0, 1] input, no normalization (ImageNet's is for 3 channels)
    from unveil.cli import load_cli_model

    model = load_cli_model(str(path))
    assert model.channels == 1
    ref = unveil.Model.from_onnx(path)
    img = unveil.load_image(photo)
    a = model.probabilities(model.prepare(img)[1][None], batch_size=1)
    b = ref.probabilities(ref.prepare(img)[1][None], batch_size=1)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)


def test_one_channel_mean_error_reads_plainly():
    with pytest.raises(ValueError, match=r"channel count is 1; expected one finite value, got \(0\.1, 0\.2\)"):
        unveil.Model(_Gray(), channels=1, mean=(0.1, 0.2), std=0.5)


def test_randomization_and_stability_follow_progress(monkeypatch):
    from unveil import metrics

    seen = []
    real = metrics._explain_again

    def spy(model, image, explanation, seed, batch_size, progress):
        seen.append(progress)
        return real(model, image, explanation, seed, batch_size, progress)

    monkeypatch.setattr(metrics, "_explain_again", spy)
    torch.manual_seed(1)
    model = unveil.Model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                             torch.nn.LazyLinear(3)), input_size=(12, 12), mean=None, std=None)
    img = np.random.default_rng(0).random((12, 12, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="occlusion", window=6, stride=6, progress=False)
    for flag in (True, False):
        seen.clear()
        metrics.evaluate(model, img, exp, metrics=["randomization", "stability"], progress=flag)
        assert seen and all(p is flag for p in seen)


def test_premultiplied_alpha_keeps_its_transparency():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[:2] = (200, 40, 10, 255)  # top half opaque, bottom half fully transparent
    img = Image.fromarray(rgba, "RGBA")
    want = unveil.load_image(img)
    got = unveil.load_image(img.convert("RGBa"))
    np.testing.assert_allclose(got, want, atol=1 / 255)
    assert np.all(got[2:] == 1.0)  # transparent pixels on the white background, as RGBA's


def test_progress_must_be_a_bool():
    model = unveil.Model(_Net(), mean=None, std=None)
    img = np.zeros((8, 8, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="progress: expected True or False, got 'no'"):
        unveil.explain(model, img, method="saliency", progress="no")


def test_streak_draws_one_bar_over_its_segments(monkeypatch):
    from unveil import perturb

    bars = []
    real = perturb.progress_bar

    def record(total, desc, enabled, unit="img"):
        bars.append((total, desc, enabled, unit))
        return real(total, desc, False, unit)

    monkeypatch.setattr(perturb, "progress_bar", record)
    torch.manual_seed(0)
    model = unveil.Model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                             torch.nn.Flatten(), torch.nn.Linear(4, 3)),
                         input_size=(16, 16), mean=None, std=None, batch_size=4)
    img = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="streak", segmentation="grid", n_features=16, progress=True)
    streak_bars = [b for b in bars if b[1] == "streak"]
    assert streak_bars == [(int(exp.segments.max()) + 1, "streak", True, "seg")]
    assert exp.n_evals > len(streak_bars) * 4  # many requests, one bar


def test_repeated_flags_options_and_listed_names_are_errors(photo, capsys):
    for argv, message in [
        (["explain", photo, "--target", "1", "--target", "2"], "--target: given twice"),
        (["explain", photo, "--method", "lime,,occlusion"], "an empty method name in 'lime,,occlusion'"),
        (["explain", photo, "--method", "occlusion,occlusion"], "method occlusion listed twice"),
        (["evaluate", photo, "--metrics", "deletion,deletion"], "metric deletion listed twice"),
    ]:
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err
    model = "unveil.checks:check_bool"  # never loaded: the options are refused first
    assert main(["explain", photo, "--model", model, "--method", "occlusion", "-o", "window=8",
                 "-o", "window=16"]) == 2
    assert "-o window: given twice (8 and 16)" in capsys.readouterr().err


def test_a_python_file_without_attribute_is_named(tmp_path, photo, capsys):
    user = tmp_path / "some_models.py"
    user.write_text("def build():\n    pass\n")
    assert main(["explain", photo, "--model", str(user)]) == 2
    assert "a Python file needs ':attribute'" in capsys.readouterr().err


def test_a_closed_pipe_ends_the_command_quietly(monkeypatch, capsys):
    class Closed:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Closed())
    assert main(["methods"]) == 1
    assert capsys.readouterr().err == ""


def test_submodules_are_reachable_from_the_package():
    import subprocess

    code = ("import unveil, sys; print(unveil.streak.streak.__name__, unveil.tabular.__name__, "
            "unveil.images.load_image.__name__, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:3] == ["streak", "unveil.tabular", "load_image"]
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        unveil.no_such_name  # noqa: B018


def test_eight_bit_data_in_sixteen_bits_warns_and_keeps_the_rule():
    gray = np.arange(0, 256, 16, dtype=np.uint8).reshape(4, 4)
    with pytest.warns(UserWarning, match="largest value is 240 .of 65535. read nearly black"):
        got = unveil.load_image(Image.fromarray(gray, "L").convert("I"))
    np.testing.assert_allclose(got[..., 0], gray / 65535.0, rtol=1e-6)  # the documented rule, unchanged
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # real 16-bit data and all-black images: no warning
        unveil.load_image((gray.astype(np.uint16) * 257))
        unveil.load_image(np.zeros((4, 4), dtype=np.uint16))


def test_occlusion_warns_when_windows_cannot_rank_pixels():
    torch.manual_seed(0)
    model = unveil.Model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                             torch.nn.Flatten(), torch.nn.Linear(4, 3)),
                         input_size=(16, 16), mean=None, std=None)
    img = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match="covers the whole 16 x 16 model input"):
        exp = unveil.explain(model, img, method="occlusion", window=100, progress=False)
    assert exp.extras["n_windows"] == 1
    with pytest.warns(UserWarning, match="stride 10 is larger than window 4"):
        exp = unveil.explain(model, img, method="occlusion", window=4, stride=10, progress=False)
    # windows start at 0, 10 and 12 (the last aligned to the end): rows and columns 4..9 are in none
    assert np.all(exp.map[4:10, :] == 0) and np.all(exp.map[:, 4:10] == 0)
    assert np.any(exp.map[:4, :4] != 0)


class _Argmax(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3))).argmax(dim=1, keepdim=True)


@pytest.mark.filterwarnings("ignore:occlusion. the map is all 0")  # a 0/1 output that no window flips
@pytest.mark.parametrize("fn", [
    _Argmax(),
    lambda batch: (batch.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)[:, None],
    lambda batch: (batch.mean(axis=(1, 2, 3)) > 0.5)[:, None],
])
def test_one_integer_per_input_is_refused_as_a_class_index(fn):
    """Read as logits (a torch module's default; a function's when it says so), one integer per input would be
    an argmax taken for a binary classifier's logit."""
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    model = unveil.Model(fn, mean=None, std=None) if isinstance(fn, torch.nn.Module) else unveil.Model(
        fn, outputs="logits")
    with pytest.raises(ValueError, match="reads as a class index"):
        unveil.explain(model, img, method="occlusion", window=4, progress=False)
    # declared scores: the number is explained as it is (occlusion's drops of a 0/1 output)
    scores = unveil.Model(fn, outputs="scores", **({"mean": None, "std": None}
                                                   if isinstance(fn, torch.nn.Module) else {}))
    exp = unveil.explain(scores, img, method="occlusion", window=4, progress=False)
    assert exp.map.shape == (8, 8)


class _FunctionalRelu(torch.nn.Module):
    """ReLU called as a function: the modified-chain-rule methods (elrp, deeplift) refuse it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_compare_leaves_out_a_method_that_cannot_run_and_keeps_the_others(tmp_path):
    model = unveil.Model(_FunctionalRelu(), input_size=(16, 16), mean=None, std=None)
    img = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="elrp") as alone:  # one method: its error, as explain gives it
        unveil.compare(model, img, methods=["elrp"], progress=False)
    with pytest.warns(UserWarning, match="compare: method 'elrp' left out"):
        cmp = unveil.compare(model, img, methods=["occlusion", "elrp"], progress=False,
                             options={"occlusion": {"window": 4}}, out=tmp_path / "r.html")
    assert [e.method for e in cmp.entries] == ["occlusion"]
    assert cmp.failed == {"elrp": f"{type(alone.value).__name__}: {str(alone.value).splitlines()[0]}"}
    # the kept method's scores are those of a comparison without the failing one
    ref = unveil.compare(model, img, methods=["occlusion"], progress=False, options={"occlusion": {"window": 4}})
    assert cmp.entry("occlusion").deletion[0].score == ref.entry("occlusion").deletion[0].score
    html = (tmp_path / "r.html").read_text()
    assert "Left out" in html and "<b>elrp</b>" in html
    # a setting of the comparison itself still stops it: 'segment_mean' deletion needs segments
    with pytest.raises(ValueError, match="needs segments"):
        unveil.compare(model, img, methods=["lime", "saliency"], deletion_baseline="segment_mean",
                       progress=False, options={"lime": {"n_samples": 20, "n_features": 4}})


SOFT = textwrap.dedent("""
    import torch

    class Soft(torch.nn.Module):              # returns probabilities: its last layer is a softmax
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(3, 4)
            self.out = torch.nn.Softmax(dim=1)
        def forward(self, x):
            return self.out(self.fc(x.mean(dim=(2, 3)) * 20))
    """)


def test_outputs_flag_declares_what_the_model_returns(tmp_path, photo, capsys):
    user = tmp_path / "soft_model.py"
    user.write_text(SOFT)
    argv = ["explain", photo, "--model", f"{user}:Soft", "--method", "occlusion", "--no-progress",
            "--out", str(tmp_path / "out")]
    import warnings

    try:
        with pytest.warns(UserWarning, match="--outputs probabilities"):  # advice that can be followed here
            assert main(argv) == 0
        plain = capsys.readouterr()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert main([*argv, "--outputs", "probabilities"]) == 0
        declared = capsys.readouterr()
    finally:
        sys.modules.pop("soft_model", None)
    mod = {}
    exec(SOFT, mod)  # the same module, built here
    model = unveil.Model(mod["Soft"](), outputs="probabilities")
    img = unveil.load_image(photo)
    probs = model.probabilities(model.prepare(img)[1][None], batch_size=1)[0].numpy()
    top = int(np.argmax(probs))
    assert f"p={probs[top]:.4f}" in declared.out  # the module's own probability, not a softmax of it
    assert f"p={probs[top]:.4f}" not in plain.out


def test_the_report_says_what_a_budget_left_of_the_samples_asked(tmp_path):
    torch.manual_seed(0)
    model = unveil.Model(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),
                                             torch.nn.Flatten(), torch.nn.Linear(4, 3)),
                         input_size=(16, 16), mean=None, std=None)
    img = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    cmp = unveil.compare(model, img, methods=["lime", "rise"], budget=40, progress=False,
                         options={"lime": {"n_features": 8, "segmentation": "grid"}}, out=tmp_path / "r.html")
    html = (tmp_path / "r.html").read_text()
    lime, rise = cmp.entry("lime").explanations[0], cmp.entry("rise").explanations[0]
    assert lime.extras["n_samples"] < 1000 and rise.extras["n_masks"] < 1000  # the budget cut both
    assert f"n_samples=1000 ({lime.extras['n_samples']} used)" in html
    assert f"n_masks=1000 ({rise.extras['n_masks']} used)" in html
    assert "budget=40</td>" in html and "budget=40 (" not in html  # equal values are shown once


def test_max_pixels_sets_the_decoding_limit_for_one_command(tmp_path, photo, capsys):
    """A file over Pillow's limit is refused with advice a command-line user can follow; --max-pixels moves the
    limit for that command only (here below a 40 x 48 photo: 1920 pixels), and the limit is back afterwards."""
    before = Image.MAX_IMAGE_PIXELS
    out = str(tmp_path / "out")
    assert main(["explain", photo, "--method", "occlusion", "--no-progress", "--out", out,
                 "--max-pixels", "1000"]) == 2
    err = capsys.readouterr().err
    assert "too large to decode safely" in err and "--max-pixels" in err and "photo.png" in err
    assert Image.MAX_IMAGE_PIXELS == before
    assert main(["evaluate", photo, "--method", "occlusion", "--no-progress", "--max-pixels", "1919"]) == 2
    assert "too large to decode safely" in capsys.readouterr().err
    assert main(["evaluate", photo, "--method", "occlusion", "--no-progress", "--max-pixels", "1920"]) == 0
    assert "deletion" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["explain", photo, "--max-pixels", "0"])
    assert "expected a positive int" in capsys.readouterr().err


def test_a_mask_picture_that_is_not_two_toned_warns_and_keeps_the_rule():
    """A photo given as --mask (most pixels of middle brightness) warns; an anti-aliased mask (a soft edge
    one pixel wide) does not; both are still thresholded by the documented rule."""
    import warnings

    from unveil.cli import mask_from_image

    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 31.5, xx - 31.5)
    disc = np.clip(20.5 - r, 0, 1).astype(np.float32)[..., None].repeat(3, axis=2)  # soft rim, 1 px
    assert 0 < ((disc[..., 0] > 0) & (disc[..., 0] < 1)).sum() < 0.05 * disc[..., 0].size
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(mask_from_image(disc), disc[..., 0] > 0.5)
    photo = np.random.default_rng(0).uniform(0.2, 0.8, (64, 64, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"--mask: \d+% of its pixels are of middle brightness"):
        np.testing.assert_array_equal(mask_from_image(photo), photo.mean(axis=2) > 0.5)
    veil = np.concatenate([np.ones((64, 64, 3), np.float32),
                           np.random.default_rng(1).uniform(0, 0.45, (64, 64, 1)).astype(np.float32)], axis=2)
    with pytest.warns(UserWarning, match="middle opacity"):  # transparency spread over its whole range
        mask_from_image(veil)


def test_metrics_show_progress_by_default_as_explain_does(monkeypatch):
    from unveil import metrics, perturb

    assert metrics.Deletion().progress is True and metrics.Randomization().progress is True
    assert metrics.Stability().progress is True and metrics.deletion.progress is True
    for make in (metrics.Deletion, metrics.Insertion, metrics.Randomization, metrics.Stability):
        with pytest.raises(ValueError, match="progress: expected True or False, got 'no'"):
            make(progress="no")
    seen = []
    real = perturb.Perturber.__init__

    def spy(self, *args, **kwargs):
        seen.append(kwargs.get("progress"))
        real(self, *args, **kwargs)

    monkeypatch.setattr(perturb.Perturber, "__init__", spy)
    model = unveil.Model(lambda b: b.reshape(len(b), -1)[:, :2] * 4.0, input_size=(8, 8), mean=None, std=None,
                         outputs="logits")
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="occlusion", window=4, stride=4, progress=False)
    seen.clear()
    metrics.evaluate(model, img, exp)
    assert seen == [True, True]  # deletion and insertion, each drawing its bar (on a terminal)
