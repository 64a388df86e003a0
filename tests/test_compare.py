"""compare(), the HTML report, and the CLI's compare / evaluate subcommands, on tiny models."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

import unveil
from unveil.compare import FLOOR_CELLS
from unveil import metrics
from unveil.cli import main
from unveil.methods.registry import method_specs



class _Report(HTMLParser):
    """Collects sections, image sources and any external reference of an HTML page."""

    def __init__(self):
        super().__init__()
        self.sections, self.images, self.external, self.h2 = [], [], [], []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append((a.get("id"), a.get("class")))
        if tag == "img":
            self.images.append(a.get("src", ""))
        for key in ("href", "src"):
            v = a.get(key)
            if v and not (v.startswith("#") or v.startswith("data:image/png;base64,")):
                self.external.append(v)
        if tag in ("link", "script"):
            self.external.append(tag)
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.h2.append(data)
            self._in_h2 = False


def parse(text: str) -> _Report:
    p = _Report()
    p.feed(text)
    return p


FAST = {"lime": {"n_features": 16, "n_samples": 40}, "occlusion": {"window": 8}}


def opts(*names):
    return {n: FAST[n] for n in names if n in FAST}


def test_compare_deletion_baseline_none_keeps_each_methods_own(tiny, image):
    cmp = unveil.compare(tiny, image, methods=["lime"], budget=40, options=opts("lime"), progress=False, step=0.1,
                         random_floor=False, deletion_baseline=None)
    exp = cmp.entries[0].explanations[0]
    own = metrics.Deletion(step=0.1)(tiny, image, exp)
    assert own.details["baseline"] == "segment_mean" and cmp.entries[0].deletion[0].score == pytest.approx(own.score)
    mean = metrics.Deletion(baseline="mean", step=0.1)(tiny, image, exp)
    assert abs(mean.score - own.score) > 1e-4  # the baselines differ on this image, so the choice matters


def test_compare_one_target_writes_a_report_with_one_section_per_method(tiny, image, tmp_path):
    cmp = unveil.compare(tiny, image, methods=["lime", "occlusion"], budget=40, options=opts("lime", "occlusion"),
                         progress=False, step=0.1, out=tmp_path / "r" / "report.html")
    assert [e.method for e in cmp.entries] == ["lime", "occlusion"]
    probs = tiny.probabilities(tiny.prepare(image)[1])[0].numpy()
    assert cmp.targets == [int(np.argmax(probs))]
    assert [t[0] for t in cmp.top] == list(np.argsort(-probs)[:5])
    for e in cmp.entries:
        exp = e.explanations[0]
        assert exp.n_evals <= 40 and exp.params["budget"] == 40
        # the scores in the comparison are the metrics' own on that explanation, deletion against one baseline
        # for every method (LIME's own would be its segment means)
        assert e.deletion[0].score == pytest.approx(metrics.Deletion(baseline="mean", step=0.1)(tiny, image, exp).score)
        assert e.deletion[0].details["baseline"] == "mean"
        assert e.insertion[0].score == pytest.approx(metrics.Insertion(step=0.1)(tiny, image, exp).score)
        assert len(e.deletion[0].y) == 11
    rows = cmp.table()
    assert [r["method"] for r in rows] == ["lime", "occlusion", "random"]
    # the floor ranks grid cells at random (a per-pixel random map deletes scattered pixels: no floor)
    rnd = metrics.random_explanation(cmp.entries[0].explanations[0], 0, cells=FLOOR_CELLS)
    assert len(np.unique(rnd.map)) <= FLOOR_CELLS
    assert cmp.floor[0][0].score == pytest.approx(metrics.Deletion(baseline="mean", step=0.1)(tiny, image, rnd).score)
    assert cmp.floor[0][1].score == pytest.approx(metrics.Insertion(step=0.1)(tiny, image, rnd).score)

    text = (tmp_path / "r" / "report.html").read_text()
    page = parse(text)
    methods = [sid for sid, cls in page.sections if cls == "method"]
    assert methods == ["method-lime", "method-occlusion"]
    assert ("classes", None) not in page.sections  # one target: no class comparison
    assert page.external == []  # self-contained: no network or file references
    # input, 2 curves, and per method an overlay and a mask; every one a decodable PNG
    assert len(page.images) == 1 + 2 + 2 * 2
    for src in page.images:
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for r in rows[:2]:
        assert f"{r['deletion_auc']:.4f}" in text and f"{r['insertion_auc']:.4f}" in text
    assert cmp.labels[0] in text


def test_top_mask_follows_the_explanation_kind(tiny, image):
    cmp = unveil.compare(tiny, image, methods=["lime", "occlusion"], options=opts("lime", "occlusion"), top_k=3,
                         top_fraction=0.25, step=0.25, random_floor=False, progress=False)
    lime, occ = cmp.entry("lime").explanations[0], cmp.entry("occlusion").explanations[0]
    np.testing.assert_array_equal(cmp.top_mask(lime), lime.top_mask(3))
    np.testing.assert_array_equal(cmp.top_mask(occ), occ.top_mask(fraction=0.25))
    assert cmp.floor is None and [r["method"] for r in cmp.table()] == ["lime", "occlusion"]


def test_two_targets_show_the_classes_side_by_side(tiny, image, tmp_path):
    cmp = unveil.compare(tiny, image, methods=["occlusion"], targets=[2, "class5"], options=opts("occlusion"),
                         progress=False, step=0.1)
    e = cmp.entry("occlusion")
    assert cmp.targets == [2, 5] and [x.target for x in e.explanations] == [2, 5]
    assert len(e.deletion) == len(e.insertion) == len(cmp.floor) == 2
    # the two maps are each target's own explanation
    direct = unveil.explain(tiny, image, method="occlusion", target=5, progress=False, **FAST["occlusion"])
    np.testing.assert_array_equal(e.explanations[1].map, direct.map)
    page = parse(cmp.to_html())
    assert ("classes", None) in page.sections
    assert "Class comparison" in page.h2
    # input, 2 curves per target, 2 side-by-side overlays, and overlay + mask per target
    assert len(page.images) == 1 + 4 + 2 + 4


def test_a_repeated_target_is_shown_once_and_a_folder_is_no_report_path(tiny, image, tmp_path):
    calls = []

    def uniform(batch):
        calls.append(len(batch))
        return np.full((len(batch), 3), 1 / 3, np.float32)

    model = unveil.Model(uniform, input_size=(32, 32))
    with pytest.raises(ValueError, match="is a folder"):
        unveil.compare(model, image, methods=["occlusion"], out=tmp_path, options=opts("occlusion"))
    assert calls == []  # refused before any model evaluation
    cmp = unveil.compare(tiny, image, methods=["occlusion"], targets=[2, "class2", 2], options=opts("occlusion"),
                         progress=False, step=0.25, random_floor=False)
    assert cmp.targets == [2] and len(cmp.entry("occlusion").explanations) == 1


def test_budget_goes_to_perturbation_methods_only(tiny, image):
    grads = [s.name for s in method_specs() if s.family == "gradient" and s.name in ("saliency", "grad_input")]
    if not grads:
        pytest.skip("no gradient method registered")
    cmp = unveil.compare(tiny, image, methods=["occlusion", grads[0]], budget=20, options=opts("occlusion"),
                         progress=False, random_floor=False, step=0.25)
    assert cmp.entry("occlusion").n_evals <= 20
    assert cmp.entry(grads[0]).explanations[0].params["budget"] is None


def test_compare_errors_are_named(tiny, image):
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        unveil.compare(tiny, image, methods=["nope"])
    with pytest.raises(ValueError, match=r"^options: given for 'lime', which are not among the methods"):
        unveil.compare(tiny, image, methods=["occlusion"], options={"lime": {}})
    with pytest.raises(ValueError, match=r"^budget: expected an int >= 2"):
        unveil.compare(tiny, image, methods=["occlusion"], budget=1)
    with pytest.raises(ValueError, match="named twice"):
        unveil.compare(tiny, image, methods=["occlusion", "occlusion"])
    with pytest.raises(ValueError, match="out of range"):
        unveil.compare(tiny, image, methods=["occlusion"], targets=[99])
    with pytest.raises(ValueError, match="targets: expected a class"):
        unveil.compare(tiny, image, methods=["occlusion"], targets=1.0)
    with pytest.raises(ValueError, match="top_fraction"):
        unveil.compare(tiny, image, methods=["occlusion"], top_fraction="a")
    grads = [s.name for s in method_specs() if s.needs_gradients]
    if grads:
        callable_model = unveil.Model(lambda b: np.full((len(b), 3), 1 / 3), input_size=(8, 8))
        with pytest.raises(TypeError, match="needs gradients"):
            unveil.compare(callable_model, image, methods=[grads[0]])


# ----------------------------------------------------------------------------- the command line
class Tiny224(torch.nn.Module):
    """224 x 224 -> 1000 logits in one strided convolution and a linear layer (milliseconds per batch)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 2, 32, stride=32)
        self.fc = torch.nn.Linear(2 * 7 * 7, 1000)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny224.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(Tiny224().eval(), (torch.rand(2, 3, 224, 224),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return str(path)


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_cli_compare_writes_the_report(tmp_path, scripted, photo, capsys):
    out = tmp_path / "rep.html"
    rc = main(["compare", photo, "--model", scripted, "--methods", "lime,occlusion", "--budget", "24",
               "--target", "3", "--target", "7", "-o", "n_features=16", "--out", str(out), "--no-progress",
               "--batch-size", "8", "--step", "0.25"])
    assert rc == 0
    page = parse(out.read_text())
    assert [s for s, c in page.sections if c == "method"] == ["method-lime", "method-occlusion"]
    assert ("classes", None) in page.sections and page.external == []
    text = capsys.readouterr().out
    assert "report ->" in text and text.count("lime") >= 2 and "random" in text
    rc = main(["compare", photo, "--model", scripted, "--methods", "occlusion", "--budget", "10", "--json",
               "--out", str(out), "--no-progress", "--step", "0.25", "--batch-size", "8"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["rows"][0]["method"] == "occlusion" and data["rows"][0]["n_evals"] <= 10
    # --deletion-baseline: one for every method (default mean), or 'own' (LIME's segment means)
    for flag, used in (["--deletion-baseline", "gray"], "'gray'"), (["--deletion-baseline", "own"], "'segment_mean'"):
        assert main(["compare", photo, "--model", scripted, "--methods", "lime", "--budget", "24", "-o",
                     "n_features=16", "--out", str(out), "--no-progress", "--step", "0.25", *flag]) == 0
        assert used in out.read_text().replace("&#x27;", "'")


def test_cli_evaluate_text_and_json(scripted, photo, capsys):
    args = ["evaluate", photo, "--model", scripted, "--method", "occlusion", "--budget", "12", "--no-progress",
            "--box", "0,0,40,30"]
    assert main(args) == 0
    text = capsys.readouterr().out
    for word in ("deletion", "insertion", "pointing_game", "lower", "higher"):
        assert word in text
    assert main(args + ["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["method"] == "occlusion" and data["n_evals"] <= 12
    d = data["metrics"]["deletion"]
    assert d["higher_is_better"] is False and len(d["x"]) == 51  # 224 * 224 pixels, 1/50 per step
    x, y = np.asarray(d["x"]), np.asarray(d["y"])
    assert d["score"] == pytest.approx(float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2)))  # trapezoid rule
    assert d["details"]["baseline"] == "mean"  # occlusion's own baseline
    pg = data["metrics"]["pointing_game"]
    py, px = pg["details"]["point"]  # the map's maximum: a hit exactly when it is under 15 px from the box
    dist = np.hypot(max(0, py - 29), max(0, px - 39))  # box 0,0,40,30: rows 0..29, columns 0..39
    assert pg["score"] == float(dist < 15) and pg["details"]["distance"] == pytest.approx(dist)


def test_cli_evaluate_reads_a_transparent_mask_by_its_opaque_part(scripted, photo, tmp_path, capsys):
    from PIL import Image

    h, w = np.asarray(Image.open(photo)).shape[:2]
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere; the object is only where it is opaque
    rgba[h - 10:, w - 10:, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "object.png")
    gray = np.zeros((h, w), np.uint8)
    gray[h - 10:, w - 10:] = 255
    Image.fromarray(gray).save(tmp_path / "object_gray.png")
    results = []
    for mask in ("object.png", "object_gray.png"):  # the same object, drawn two ways
        assert main(["evaluate", photo, "--model", scripted, "--method", "occlusion", "--metrics", "pointing_game",
                     "--mask", str(tmp_path / mask), "--json", "--no-progress", "--batch-size", "8"]) == 0
        results.append(json.loads(capsys.readouterr().out)["metrics"]["pointing_game"]["details"])
    assert results[0] == results[1] and results[0]["distance"] > 0  # was 0.0: the white sheet was the object


@pytest.mark.parametrize("extra, message", [
    (["--metrics", "pointing_game"], "needs --box or --mask"),
    (["--box", "0,0,500,10"], "--box: box (0, 0, 500, 10) must satisfy"),  # before any work
    (["--method", "saliency", "--model", "MODEL.onnx"], "needs gradients"),
    (["--method", "lime,occlusion"], "one method"),
    (["--box", "0,0,5,5", "--mask", "x.png"], "not both"),
])
def test_cli_evaluate_errors(scripted, photo, capsys, extra, message, monkeypatch, tmp_path):
    if "MODEL.onnx" in extra:
        pytest.importorskip("onnxruntime")
        import unveil

        onnx_path = tmp_path / "m.onnx"
        from conftest import TinyNet

        unveil.Model(TinyNet(), input_size=(32, 32)).to_onnx(onnx_path)
        extra = [str(onnx_path) if e == "MODEL.onnx" else e for e in extra]
        args = ["evaluate", photo, "--no-progress", *extra]
    else:
        args = ["evaluate", photo, "--model", scripted, "--no-progress", *extra]
    import unveil

    calls = []
    real = unveil.explain
    monkeypatch.setattr(unveil, "explain", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not calls  # refused before explaining


def test_cli_evaluate_rejects_unknown_metric(photo, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", photo, "--metrics", "bogus"])
    assert "unknown metric bogus" in capsys.readouterr().err


def test_names_with_dollar_signs_are_drawn_as_written(image, tmp_path):
    """Matplotlib would read "$...$" as math: "$x_$" failed to parse (after all the work), "costs $5 to $10"
    lost its dollars. Titles are drawn as written, in plots, tables and the report."""
    from conftest import TinyNet

    labels = ["$x_$", "costs $5 to $10"] + [f"class{i}" for i in range(2, 10)]
    model = unveil.Model(TinyNet(), input_size=(32, 32), batch_size=16, labels=labels)
    for target in (0, 1):
        exp = unveil.explain(model, image, method="occlusion", target=target, window=8, progress=False)
        fig = exp.plot(tmp_path / f"t{target}.png")
        title = fig._suptitle.get_text() if fig._suptitle is not None else fig.axes[-1].get_title()
        assert labels[target] in title
        texts = [t for ax in fig.axes for t in (ax.title, *ax.texts)] + ([fig._suptitle] if fig._suptitle else [])
        assert all(not t._parse_math for t in texts)  # drawn literally
    cmp = unveil.compare(model, image, methods=["occlusion"], targets=[0, 1], options=opts("occlusion"), progress=False,
                         step=0.25)
    html = cmp.to_html()
    assert "$x_$" in html and "costs $5 to $10" in html
    table = unveil.explain_tabular(lambda r: np.asarray(r) @ [1.0, -2.0], np.array([1.0, 1.0]),
                                   background=np.zeros((5, 2)), feature_names=["price $", "$x_$"], progress=False)
    table.plot(tmp_path / "table.png")


def test_cli_evaluate_randomization_of_a_constant_map(photo, tmp_path, capsys):
    import textwrap

    (tmp_path / "constmod.py").write_text(textwrap.dedent("""
        import unveil
        from conftest import IgnoresInput

        model = unveil.Model(IgnoresInput(), input_size=(16, 16))
    """))
    with pytest.warns(UserWarning):
        rc = main(["evaluate", photo, "--model", f"{tmp_path / 'constmod.py'}:model", "--method", "saliency",
                   "--metrics", "randomization", "--no-progress"])
    assert rc == 0  # was KeyError: 'ssim'
    assert "undefined: the map is constant" in capsys.readouterr().out


def test_compare_deletion_baseline_is_checked_before_the_methods_run(tiny, image, tmp_path):
    calls = []
    real = tiny.forward

    def counting(x, *args, **kwargs):
        calls.append(len(x))
        return real(x, *args, **kwargs)

    tiny.forward = counting
    with pytest.raises(ValueError, match="deletion_baseline: .*bogus"):
        unveil.compare(tiny, image, methods=["occlusion"], deletion_baseline="bogus", progress=False)
    with pytest.raises(ValueError, match="deletion_baseline: the baseline image is 30 x 10"):
        unveil.compare(tiny, image, methods=["occlusion"], deletion_baseline=np.zeros((30, 10, 3), np.float32),
                       progress=False)
    assert sum(calls) <= 2  # at most the prediction pass: no explanation was made
    del tiny.forward
    grads = [s.name for s in method_specs() if s.family == "gradient"]
    with pytest.raises(ValueError, match=f"'segment_mean' needs segments, and method '{grads[0]}' gives a pixel"):
        unveil.compare(tiny, image, methods=[grads[0]], deletion_baseline="segment_mean", progress=False)
    # with segments everywhere (the floor ranks grid cells, so it has them too) segment_mean works
    cmp = unveil.compare(tiny, image, methods=["lime"], options=opts("lime"), deletion_baseline="segment_mean",
                         step=0.25, progress=False, out=tmp_path / "r.html")
    assert cmp.floor[0][0].details["baseline"] == "segment_mean"
    assert "to the baseline &#x27;segment_mean&#x27;" in (tmp_path / "r.html").read_text()
