"""ONNX Runtime models: models exported from torch in the tests give what the torch adapter gives on the same
module (outputs, counts, maps); gradient methods and bad files fail clearly; the CLI loads .onnx files."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import skimage.data
import torch
from conftest import TinyNet
from PIL import Image

import unveil
from unveil.cli import main
from unveil.models.base import BATCH_CANDIDATES
from unveil.models.onnx import OnnxModel


def export(module: torch.nn.Module, path, shape, *, fixed_batch: bool = False) -> str:
    """Export ``module`` to ONNX at ``path`` for inputs of ``shape`` (N first); the batch dimension is dynamic
    unless ``fixed_batch`` (then it is ``shape[0]``)."""
    dynamic = None if fixed_batch else {"image": {0: "batch"}, "scores": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        torch.onnx.export(module.eval(), (torch.rand(*shape),), str(path), input_names=["image"],
                          output_names=["scores"], dynamic_axes=dynamic, dynamo=False)
    return str(path)


class SoftTiny(torch.nn.Module):
    """The tests' TinyNet with its logits scaled down, so that probabilities (and maps) are far from saturated."""

    def __init__(self):
        super().__init__()
        self.net = TinyNet()

    def forward(self, x):
        return self.net(x) / 8


def torch_tiny(**kwargs) -> unveil.Model:
    return unveil.Model(SoftTiny(), input_size=(32, 32), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), **kwargs)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    return export(SoftTiny(), tmp_path_factory.mktemp("onnx") / "tiny.onnx", (2, 3, 32, 32))


@pytest.fixture(scope="module")
def tiny_onnx_fixed(tmp_path_factory):
    return export(SoftTiny(), tmp_path_factory.mktemp("onnx") / "tiny_b4.onnx", (4, 3, 32, 32), fixed_batch=True)


def onnx_tiny(path, **kwargs) -> OnnxModel:
    return unveil.Model.from_onnx(path, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), **kwargs)


@pytest.fixture
def batch():
    return torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- the small model


def test_reads_input_size_and_layout_from_the_graph(tiny_onnx, tiny_onnx_fixed):
    m = onnx_tiny(tiny_onnx)
    assert isinstance(m, unveil.Model) and m.input_size == (32, 32) and m.name == "tiny"
    assert m.fn.fixed_batch is None and not m.fn.channels_last
    assert m.providers[-1] == "CPUExecutionProvider"
    assert onnx_tiny(tiny_onnx_fixed).fn.fixed_batch == 4
    with pytest.raises(ValueError, match="takes 32 x 32 images"):
        onnx_tiny(tiny_onnx, input_size=(64, 64))
    with pytest.raises(ValueError, match="has 10 outputs, got 3 labels"):
        onnx_tiny(tiny_onnx, labels=["a", "b", "c"])


def test_probabilities_match_the_torch_adapter(tiny_onnx, batch):
    ref = torch_tiny(batch_size=16).probabilities(batch)
    got = onnx_tiny(tiny_onnx, batch_size=16).probabilities(batch)
    assert got.shape == (7, 10) and got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=1e-5)
    logits = onnx_tiny(tiny_onnx).fn(np.ascontiguousarray(batch.numpy().transpose(0, 2, 3, 1)))
    with torch.inference_mode():
        ref_logits = torch_tiny().forward(batch).numpy()
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4)
    assert np.abs(logits - ref_logits[::-1]).max() > 0.1  # the inputs differ enough for the check to fail


def test_batch_size_invariance_and_fixed_batch_graphs(tiny_onnx, tiny_onnx_fixed, batch):
    ref = torch_tiny(batch_size=16).probabilities(batch)
    for path in (tiny_onnx, tiny_onnx_fixed):  # the fixed graph pads 1, 3 and 7 up to 4 and splits 8
        m = onnx_tiny(path)
        for bs in (1, 3, 4, 8):
            assert torch.allclose(m.probabilities(batch, batch_size=bs), ref, atol=1e-5), (path, bs)


def test_counts_every_image_once_padding_excluded(tiny_onnx, tiny_onnx_fixed, batch, image):
    for path in (tiny_onnx, tiny_onnx_fixed):
        m = onnx_tiny(path, batch_size=3)
        with m.counting() as c:
            m.probabilities(batch)
        assert c[0] == 7 and m.n_evals == 7
    t, o = torch_tiny(batch_size=8), onnx_tiny(tiny_onnx, batch_size=8)
    et = unveil.explain(t, image, method="occlusion", seed=0, window=8)
    eo = unveil.explain(o, image, method="occlusion", seed=0, window=8)
    assert eo.n_evals == et.n_evals > 1 and o.n_evals == t.n_evals
    assert np.abs(et.map).max() > 1e-3
    np.testing.assert_allclose(eo.map, et.map, atol=1e-5)


def test_auto_batch_size_is_measured_or_taken_from_the_graph(tiny_onnx, tiny_onnx_fixed, image):
    m = onnx_tiny(tiny_onnx)
    assert m.batch_size == "auto"
    unveil.explain(m, image, method="occlusion", window=16)  # a small request: the model stays unmeasured
    assert m.batch_size == "auto"
    m.resolve_batch_size()
    tried = list(m.batch_timings)
    assert m.batch_size in tried and tried == list(BATCH_CANDIDATES[: len(tried)])
    fixed = onnx_tiny(tiny_onnx_fixed)
    assert fixed.batch_size == 4 and not hasattr(fixed, "batch_timings")


def test_lime_map_is_the_torch_adapters(tiny_onnx, image):
    options = dict(method="lime", seed=3, n_samples=40, n_features=12, segmentation="grid")
    et = unveil.explain(torch_tiny(batch_size=16), image, **options)
    eo = unveil.explain(onnx_tiny(tiny_onnx, batch_size=5), image, **options)
    assert eo.target == et.target and eo.n_evals == et.n_evals == 40 and np.abs(et.weights).max() > 1e-3
    np.testing.assert_allclose(eo.weights, et.weights, atol=1e-4)
    np.testing.assert_allclose(eo.map, et.map, atol=1e-4)


def test_user_preprocess_replaces_the_default(tiny_onnx, batch):
    def preprocess(b):  # N x H x W x 3 in [0, 1] -> the graph's N x 3 x H x W (float64 is cast to float32)
        return ((b.astype(np.float64) - 0.5) / 0.25).transpose(0, 3, 1, 2)

    m = unveil.Model.from_onnx(tiny_onnx, preprocess=preprocess, batch_size=8)
    ref = unveil.Model(SoftTiny(), input_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3,
                       batch_size=8).probabilities(batch)
    assert torch.allclose(m.probabilities(batch), ref, atol=1e-5)
    with pytest.raises(ValueError, match="mean, std"):
        unveil.Model.from_onnx(tiny_onnx, preprocess=preprocess, mean=(0.5,) * 3)
    wrong = unveil.Model.from_onnx(tiny_onnx, preprocess=lambda b: b, batch_size=8)  # N x H x W x 3: not NCHW
    with pytest.raises(ValueError, match=r"refused an input of shape \(7, 32, 32, 3\)"):
        wrong.probabilities(batch)


class ChannelsLastSoftmax(torch.nn.Module):
    """SoftTiny behind an N x H x W x C input, ending in a softmax (a graph that outputs probabilities)."""

    def __init__(self):
        super().__init__()
        self.net = SoftTiny()

    def forward(self, x):
        return torch.softmax(self.net(x.permute(0, 3, 1, 2)), dim=1)


def test_channels_last_graph_and_probability_outputs(tmp_path, batch):
    path = export(ChannelsLastSoftmax(), tmp_path / "nhwc.onnx", (2, 32, 32, 3))
    m = unveil.Model.from_onnx(path, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), outputs="probabilities",
                               batch_size=8)
    assert m.fn.channels_last and m.input_size == (32, 32)
    assert torch.allclose(m.probabilities(batch), torch_tiny(batch_size=8).probabilities(batch), atol=1e-5)


class AnyChannels(torch.nn.Module):
    """A small conv net on C-channel input (2 classes), weights seeded."""

    def __init__(self, c: int, last: bool = False):
        super().__init__()
        torch.manual_seed(c)
        self.last = last
        self.conv = torch.nn.Conv2d(c, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        if self.last:
            x = x.permute(0, 3, 1, 2)
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("c, last", [(1, False), (5, False), (1, True), (5, True)])
def test_graphs_with_other_channel_counts_take_fitted_images(tmp_path, c, last):
    net = AnyChannels(c, last)
    shape = (2, 24, 24, c) if last else (2, c, 24, 24)
    m = unveil.Model.from_onnx(export(net, tmp_path / f"c{c}.onnx", shape), batch_size=4)
    assert m.channels == c and m.fn.channels_last == last
    # the same module through the torch adapter, no normalization (the default for C != 3)
    ref = unveil.Model(AnyChannels(c), input_size=(24, 24), channels=c, mean=None, std=None, batch_size=4)
    rng = np.random.default_rng(c)
    img = rng.random((30, 36, c)).astype(np.float32)  # C channels as they are; an RGB image for the gray graph
    if c == 1:
        img = rng.random((30, 36, 3)).astype(np.float32)
    for method, opts in (("lime", dict(n_samples=30, n_features=9, segmentation="grid")),
                         ("occlusion", dict(window=8, stride=8))):
        eo = unveil.explain(m, img, method=method, seed=0, progress=False, **opts)
        et = unveil.explain(ref, img, method=method, seed=0, progress=False, **opts)
        assert eo.map.shape == img.shape[:2] and eo.target == et.target
        np.testing.assert_allclose(eo.map, et.map, atol=1e-5)
    with pytest.raises(ValueError, match=f"channel count is {c}"):
        unveil.Model.from_onnx(tmp_path / f"c{c}.onnx", mean=(0.1, 0.2))


def test_to_onnx_exports_a_torch_model_with_its_settings(tmp_path, batch, image):
    t = unveil.Model(SoftTiny(), input_size=(32, 32), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.25), batch_size=6,
                     labels=[f"c{i}" for i in range(10)], name="soft")
    o = t.to_onnx(tmp_path / "sub" / "soft.onnx")
    assert isinstance(o, OnnxModel) and (tmp_path / "sub" / "soft.onnx").is_file()
    assert o.labels == t.labels and o.input_size == (32, 32) and o.outputs == "logits" and o.name == "soft"
    assert o.resolve_batch_size() == 6 and o.channels == 3
    assert o.inference == "onnxruntime" and t.inference == "torch"  # what runs the passes, for each
    assert unveil.Model(lambda b: b.mean(axis=(1, 2)), input_size=(8, 8)).inference == "python"
    assert torch.allclose(o.probabilities(batch), t.probabilities(batch), atol=1e-5)
    opts = dict(method="lime", seed=0, n_samples=30, n_features=9, segmentation="grid", progress=False)
    np.testing.assert_allclose(unveil.explain(o, image, **opts).map, unveil.explain(t, image, **opts).map,
                               atol=1e-4)
    raw = unveil.Model(AnyChannels(5), input_size=(24, 24), channels=5, mean=None, std=None, batch_size=4)
    o5 = raw.to_onnx(tmp_path / "c5.onnx", batch_size=2)  # no normalization, 5 channels
    x5 = torch.rand(3, 5, 24, 24, generator=torch.Generator().manual_seed(2))
    assert o5.channels == 5 and o5.resolve_batch_size() == 2
    assert torch.allclose(o5.probabilities(x5), raw.probabilities(x5), atol=1e-5)
    with pytest.raises(TypeError, match="torch module"):
        unveil.Model(lambda b: b.mean(axis=(1, 2)), input_size=(8, 8)).to_onnx(tmp_path / "f.onnx")
    with pytest.raises(ValueError, match="input_size"):
        unveil.Model(SoftTiny()).to_onnx(tmp_path / "g.onnx")
    with pytest.raises(TypeError, match="labels"):
        t.to_onnx(tmp_path / "h.onnx", labels=["a"])


# ---------------------------------------------------------------- what does not work, clearly


def test_gradient_methods_name_the_methods_that_work(tiny_onnx, image):
    specs = unveil.method_specs()
    usable = [s.name for s in specs if not s.needs_gradients]
    needing = [s.name for s in specs if s.needs_gradients]
    assert usable and needing
    callable_model = unveil.Model(lambda b: np.full((len(b), 2), 0.5), input_size=(32, 32), name="fn")
    for m, kind in ((onnx_tiny(tiny_onnx), "ONNX Runtime model"), (callable_model, "Python callable")):
        for method in ("saliency", "gradcam", "meaningful"):
            with pytest.raises(TypeError) as info:
                unveil.explain(m, image, method=method)
            text = str(info.value)
            assert f"method {method!r} needs gradients" in text and kind in text
            listed = text.split("need no gradients:")[1]
            assert all(name in listed for name in usable)
            assert not any(name in listed.replace(",", " ").split() for name in needing)
        with pytest.raises(TypeError, match="Methods that need no gradients: " + ", ".join(usable)):
            m.forward(torch.rand(1, 3, 32, 32))
        with pytest.raises(TypeError, match="needs gradients"):
            unveil.compare(m, image, methods=["occlusion", "integrated_gradients"])
    assert unveil.explain(onnx_tiny(tiny_onnx), image, method="rise", n_masks=20, seed=0).n_evals == 21


def test_bad_files_are_clear_value_errors(tmp_path, tiny_onnx):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(ValueError, match=r"missing\.onnx'?: no such file"):
        unveil.Model.from_onnx(missing)
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a model")
    with pytest.raises(ValueError, match=r"junk\.onnx'?: not a readable ONNX model"):
        unveil.Model.from_onnx(junk)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.onnx"):
        unveil.Model.from_onnx(empty)

    class TwoInputs(torch.nn.Module):
        def forward(self, a, b):
            return a.mean(dim=(2, 3)) + b.mean(dim=(2, 3))

    two = tmp_path / "two.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TwoInputs(), (torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)), str(two),
                          input_names=["left", "right"], dynamo=False)
    with pytest.raises(ValueError, match=r"two\.onnx.*one input.*it has 2: 'left', 'right'"):
        unveil.Model.from_onnx(two)
    with pytest.raises(TypeError, match="path"):
        unveil.Model.from_onnx(123)


# ---------------------------------------------------------------- the CLI


class Small1000(torch.nn.Module):
    """224 x 224 -> 1000 logits, cheap: a strided conv, pooling and a linear layer."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 16, stride=16)
        self.fc = torch.nn.Linear(4 * 14 * 14, 1000)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def test_cli_explains_with_an_onnx_file_as_the_torch_adapter_does(tmp_path, capsys):
    from unveil.models.default import IMAGENET_MEAN, IMAGENET_STD

    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(photo)
    net = Small1000().eval()
    path = export(net, tmp_path / "small.onnx", (2, 3, 224, 224))
    out = tmp_path / "res"
    assert main(["explain", str(photo), "--model", path, "--method", "occlusion", "-o", "window=56",
                 "--out", str(out), "--no-progress", "--batch-size", "8"]) == 0
    text = capsys.readouterr().out
    meta = json.loads((out / "photo_occlusion.json").read_text())
    # the same module through the torch adapter, set up as the CLI sets up an ImageNet classifier
    ref_model = unveil.Model(net, input_size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD,
                             labels=unveil.imagenet_labels(), batch_size=8)
    ref = unveil.explain(ref_model, str(photo), method="occlusion", window=56)
    top = ref_model.predict(str(photo), k=5)
    for (idx, label, p), line in zip(top, text.splitlines()[1:6]):
        assert line.split()[0] == str(idx) and label in line and f"{p:.4f}" in line
    assert meta["target"] == ref.target and meta["label"] == ref.label == unveil.imagenet_labels()[ref.target]
    assert meta["n_evals"] == ref.n_evals
    onnx_map = np.load(out / "photo_occlusion.npz")["map"]
    assert np.abs(ref.map).max() > 1e-4
    np.testing.assert_allclose(onnx_map, ref.map, atol=1e-5)


def test_cli_reports_a_bad_onnx_file_in_one_line(tmp_path, capsys):
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(photo)
    bad = tmp_path / "bad.onnx"
    bad.write_text("not onnx")
    assert main(["explain", str(photo), "--model", str(bad), "--no-progress", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unveil: error:") and "bad.onnx" in err and "not a readable ONNX model" in err


# ---------------------------------------------------------------- the embedded default model


@pytest.fixture(scope="module")
def default_pair(tmp_path_factory):
    """The default model and the same module exported to ONNX (each with a fixed batch size: no calibration)."""
    torch_model = unveil.load_model(batch_size=16, inference="torch")
    path = export(torch_model.fn, tmp_path_factory.mktemp("onnx") / "default.onnx", (2, 3, 224, 224))
    onnx_model = unveil.Model.from_onnx(path, labels=unveil.imagenet_labels(), batch_size=16)
    return torch_model, onnx_model


@pytest.mark.slow
def test_default_model_logits_and_top_class_match(default_pair):
    t, o = default_pair
    assert o.input_size == t.input_size == (224, 224)
    _, x = t.prepare(skimage.data.chelsea())
    xs = torch.cat([x.unsqueeze(0), torch.rand(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))])
    with torch.inference_mode():
        ref = t.forward(xs).numpy()
    got = o.fn(np.ascontiguousarray(xs.numpy().transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    assert t.predict(skimage.data.chelsea(), k=1)[0][0] == o.predict(skimage.data.chelsea(), k=1)[0][0] == 285


@pytest.mark.slow
def test_default_model_lime_map_is_the_same(default_pair):
    t, o = default_pair
    img = skimage.data.chelsea()
    et = unveil.explain(t, img, method="lime", seed=0, n_samples=60)
    eo = unveil.explain(o, img, method="lime", seed=0, n_samples=60)
    assert eo.target == et.target == 285 and eo.label == et.label
    assert eo.n_evals == et.n_evals == 60
    np.testing.assert_array_equal(eo.segments, et.segments)
    np.testing.assert_allclose(eo.map, et.map, atol=1e-4 * float(np.abs(et.map).max()))


# ---------------------------------------------------------------- ONNX Runtime for a torch model's forward passes
def test_torch_model_on_onnxruntime_gives_the_torch_maps_and_counts(image):
    from conftest import TinyNet

    plain = unveil.Model(TinyNet(), input_size=(32, 32), batch_size=8)
    hybrid = unveil.Model(TinyNet(), input_size=(32, 32), batch_size=8).use_onnxruntime()
    assert plain.inference == "torch" and hybrid.inference == "onnxruntime"
    s_plain = unveil.explain(plain, image, method="saliency", progress=False)
    s_hybrid = unveil.explain(hybrid, image, method="saliency", progress=False)
    np.testing.assert_array_equal(s_hybrid.map, s_plain.map)  # gradients stay on torch
    assert hybrid._ort is None  # one-input passes made no session
    for method, opts in (("lime", {"n_samples": 60}), ("occlusion", {"window": 8})):
        a = unveil.explain(plain, image, method=method, seed=0, progress=False, **opts)
        b = unveil.explain(hybrid, image, method=method, seed=0, progress=False, **opts)
        assert a.n_evals == b.n_evals > 1
        np.testing.assert_allclose(b.map, a.map, atol=1e-5 * max(1.0, float(np.abs(a.map).max())))
    assert hybrid._ort is not None and plain.n_evals == hybrid.n_evals


def test_onnxruntime_failure_warns_and_torch_runs(image, monkeypatch):
    import unveil.models.onnx as onnx_mod
    from conftest import TinyNet

    def broken(model, opset=17):
        raise RuntimeError("cannot export this")

    monkeypatch.setattr(onnx_mod, "inference_session", broken)
    m = unveil.Model(TinyNet(), input_size=(32, 32), batch_size=4).use_onnxruntime()
    with pytest.warns(RuntimeWarning, match="cannot export this"):
        exp = unveil.explain(m, image, method="occlusion", window=8, progress=False)
    assert m.inference == "torch" and exp.n_evals > 1


def test_use_onnxruntime_needs_a_cpu_torch_module_with_a_fixed_size():
    from conftest import TinyNet

    with pytest.raises(ValueError, match="fixed input_size"):
        unveil.Model(lambda b: np.ones((len(b), 2), np.float32), input_size=(8, 8)).use_onnxruntime()
    with pytest.raises(ValueError, match="fixed input_size"):
        unveil.Model(TinyNet()).use_onnxruntime()
    with pytest.raises(ValueError, match="eval_mode=False"):
        unveil.Model(TinyNet(), input_size=(32, 32), eval_mode=False).use_onnxruntime()
    with pytest.raises(ValueError, match="inference"):
        unveil.load_model(inference="tensorrt")
    # float64: ONNX Runtime's CPU kernels have no float64 convolution, so torch keeps the passes, said at once
    m = unveil.Model(TinyNet().double(), input_size=(32, 32))
    with pytest.warns(RuntimeWarning, match="no float64 convolution; torch runs"):
        assert m.use_onnxruntime() is m
    assert m.inference == "torch"
    p = m.probabilities(torch.rand(3, 3, 32, 32))
    assert p.shape == (3, 10) and p.dtype == torch.float32
    # without convolutions a float64 module runs on ONNX Runtime (its CPU kernels have float64 matmuls)
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).double()
    m = unveil.Model(lin, input_size=(8, 8)).use_onnxruntime()
    x = torch.rand(5, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = m.probabilities(x, batch_size=5)
    assert m.inference == "onnxruntime" and m._ort is not None
    torch.testing.assert_close(p, unveil.Model(lin, input_size=(8, 8)).probabilities(x, batch_size=5), atol=1e-5,
                               rtol=1e-5)


def test_a_graph_the_providers_cannot_run_is_named_so(tmp_path):
    path = tmp_path / "double.onnx"
    net = TinyNet().double().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        torch.onnx.export(net, (torch.rand(1, 3, 32, 32, dtype=torch.float64),), str(path), input_names=["x"],
                          dynamo=False)
    with pytest.raises(ValueError, match=r"ONNX Runtime cannot run it with the providers"):
        unveil.Model.from_onnx(path)


@pytest.mark.slow
def test_default_model_runs_forward_passes_on_onnxruntime_when_installed():
    assert unveil.load_model().inference == "onnxruntime"  # the test extra installs onnxruntime and onnx
    assert unveil.load_model(inference="torch").inference == "torch"


def test_a_module_returning_a_mapping_runs_on_onnxruntime_with_the_same_scores():
    class Dict(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 3)

        def forward(self, x):
            h = torch.relu(self.conv(x)).mean(dim=(2, 3))
            return {"hidden": h, "logits": self.fc(h)}

    net = Dict().eval()
    x = torch.rand(5, 3, 16, 16)
    plain = unveil.Model(net, input_size=(16, 16)).probabilities(x, batch_size=5)
    ort = unveil.Model(net, input_size=(16, 16)).use_onnxruntime()
    got = ort.probabilities(x, batch_size=5)
    assert ort.inference == "onnxruntime"
    np.testing.assert_allclose(got.numpy(), plain.numpy(), atol=1e-6)


@pytest.mark.parametrize("mode", ["eval", "train", "mixed"])
def test_exporting_leaves_every_submodule_in_its_own_mode(mode):
    net = TinyNet()
    net.train(mode == "train")
    if mode == "mixed":
        net.eval()
        next(m for m in net.modules() if m is not net).train()
    before = [m.training for m in net.modules()]
    model = unveil.Model(net, input_size=(32, 32)).use_onnxruntime()
    model.probabilities(torch.rand(4, 3, 32, 32), batch_size=4)  # a pass of several inputs: the export
    assert model.inference == "onnxruntime"
    assert [m.training for m in net.modules()] == before
