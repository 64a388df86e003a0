"""The unveil command, in-process, on a small exported (.pt2) model (and once on the real model, marked slow)."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from unveil.cli import main


class Small1000(torch.nn.Module):
    """224 x 224 -> ``n_classes`` (1000) logits, cheap: a strided conv, pooling and a linear layer."""

    def __init__(self, n_classes: int = 1000):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 16, stride=16)
        self.fc = torch.nn.Linear(4 * 14 * 14, n_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _export(path, n_classes: int = 1000) -> str:
    """A torch.export (.pt2) file of :class:`Small1000` with a free batch dimension."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(Small1000(n_classes).eval(), (torch.rand(2, 3, 224, 224),),
                                  dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return str(path)


@pytest.fixture
def scripted(tmp_path):
    return _export(tmp_path / "small.pt2")


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_methods_lists_every_registered_method(capsys):
    import unveil

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in unveil.methods():
        assert name in out
    assert main(["methods", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == unveil.methods()
    lime = next(m for m in listed if m["name"] == "lime")["options"]
    assert lime["n_samples"] == 1000 and lime["segmentation"] == "slic" and lime["alpha"] is None  # JSON values


def test_explain_writes_png_npz_json_per_image_and_method(tmp_path, scripted, photo, capsys):
    out = tmp_path / "res"
    rc = main(["explain", photo, photo, "--model", scripted, "--method", "lime,occlusion", "--samples", "30",
               "-o", "n_features=30", "-o", "segmentation=grid", "--target", "7", "--out", str(out), "--no-progress",
               "--batch-size", "8"])
    assert rc == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["photo_lime.json", "photo_lime.npz", "photo_lime.png",
                     "photo_occlusion.json", "photo_occlusion.npz", "photo_occlusion.png"]
    meta = json.loads((out / "photo_lime.json").read_text())
    assert meta["target"] == 7 and meta["n_evals"] == 30 and meta["params"]["n_features"] == 30
    text = capsys.readouterr().out
    assert text.count("photo.png:") == 2 and "lime: target 7" in text


def test_budget_flag_caps_evaluations(tmp_path, scripted, photo):
    out = tmp_path / "b"
    assert main(["explain", photo, "--model", scripted, "--method", "occlusion", "--budget", "12",
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "photo_occlusion.json").read_text())["n_evals"] <= 12


@pytest.mark.parametrize("args, message", [
    (["explain", "missing.jpg"], "not found"),
    (["explain", "{photo}", "--model", "nonexistent.pt"], "neither 'default', 'module:attribute' nor"),
    (["explain", "{photo}", "--model", "no_such_module_xyz:f"], "cannot import module 'no_such_module_xyz'"),
    (["explain", "{photo}", "--model", "json:no_such_attr"], "has no attribute 'no_such_attr'"),
    (["explain", "{photo}", "--model", "{scripted}", "-o", "bogus=1"], "--option bogus"),
    (["explain", "{photo}", "--model", "{scripted}", "--target", "5000"], "out of range"),
])
def test_errors_are_one_clear_line(args, message, photo, scripted, capsys):
    args = [a.format(photo=photo, scripted=scripted) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("unveil: error:") and message in err


USER_MODELS = """
import numpy as np
import torch
import unveil

def brightness(batch):                 # a model function: N x H x W x 3 in [0, 1] -> N x 2 probabilities
    m = batch.mean(axis=(1, 2, 3))
    return np.stack([m, 1 - m], axis=1)

def build():                           # a factory returning a configured unveil.Model
    return unveil.Model(brightness, labels=["bright", "dark"], name="brightness")

class Net(torch.nn.Module):            # a module class: instantiated with no arguments
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)
    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))
"""


@pytest.mark.parametrize("attr, n_classes, label", [("brightness", 2, "class 0"), ("build", 2, "bright"),
                                                     ("Net", 4, "class")])
def test_model_from_a_python_file_attribute(tmp_path, photo, capsys, attr, n_classes, label):
    from unveil.cli import load_cli_model

    user = tmp_path / "user_models.py"
    user.write_text(USER_MODELS)
    model = load_cli_model(f"{user}:{attr}")
    _, x = model.prepare(photo)
    p = model.probabilities(x)
    assert p.shape == (1, n_classes) and abs(float(p.sum()) - 1) < 1e-5
    out = tmp_path / "r"
    assert main(["explain", photo, "--model", f"{user}:{attr}", "--method", "occlusion", "--target", "0",
                 "--out", str(out), "--no-progress"]) == 0
    assert label in capsys.readouterr().out
    assert (out / "photo_occlusion.npz").is_file()


def test_model_from_a_module_in_the_current_folder(tmp_path, photo, monkeypatch):
    """`--model name:attr` finds name.py in the current folder, as under `python -m` (the console script's
    sys.path does not hold the current folder), which then stays on sys.path, so the module's later imports of
    its neighbours work; a failed import leaves sys.path as it was."""
    from unveil.cli import load_cli_model

    (tmp_path / "unveil_cwd_models_xyz.py").write_text(USER_MODELS + "\ndef lazy():\n"
                                                     "    import unveil_cwd_helper_xyz\n"
                                                     "    return unveil_cwd_helper_xyz.build()\n")
    (tmp_path / "unveil_cwd_helper_xyz.py").write_text("from unveil_cwd_models_xyz import build\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    path_before = list(sys.path)
    with pytest.raises(ValueError, match=r"no_such_module_xyz.py must be in the current folder"):
        load_cli_model("no_such_module_xyz:build")
    with pytest.raises(ValueError, match=r"a package folder no_such_pkg_xyz/ must be in the current folder"):
        load_cli_model("no_such_pkg_xyz.sub:build")
    assert sys.path == path_before
    model = load_cli_model("unveil_cwd_models_xyz:lazy")
    assert model.labels == ["bright", "dark"] and sys.path == [str(tmp_path)] + path_before


def test_unknown_method_is_rejected_by_the_parser(photo, capsys):
    with pytest.raises(SystemExit) as info:
        main(["explain", photo, "--method", "lime,nope"])
    assert info.value.code == 2
    assert "unknown method nope" in capsys.readouterr().err


@pytest.mark.parametrize("args, flag", [
    (["explain", "{photo}", "--budget", "0"], "--budget"),
    (["explain", "{photo}", "--samples", "-3"], "--samples"),
    (["explain-table", "t.csv", "--row", "0", "--model", "m.py:f", "--batch-size", "auto"], "--batch-size"),
    (["explain-table", "t.csv", "--row", "0", "--model", "m.py:f", "--budget", "0"], "--budget"),
    (["explain-table", "t.csv", "--row", "0", "--model", "m.py:f", "--background-rows", "0"], "--background-rows"),
])
def test_counts_are_checked_by_the_parser_naming_the_flag(args, flag, photo, capsys):
    with pytest.raises(SystemExit) as info:
        main([a.format(photo=photo) for a in args])
    assert info.value.code == 2
    assert f"argument {flag}: expected a positive int" in capsys.readouterr().err


@pytest.mark.slow
def test_explain_on_the_default_model(tmp_path, capsys):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "photos" / "cat.jpg"
    if not path.exists():
        pytest.skip("shared data not present")
    assert main(["explain", str(path), "--method", "occlusion", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "tabby" in out or "Egyptian cat" in out or "tiger cat" in out
    assert (tmp_path / "cat_occlusion.png").exists()


def test_a_torch_file_that_does_not_score_1000_classes_gets_numbered_classes(tmp_path, photo):
    path = _export(tmp_path / "ten.pt2", n_classes=10)
    out = tmp_path / "out"
    assert main(["explain", photo, "--model", path, "--method", "saliency", "--out", str(out),
                 "--no-progress"]) == 0
    meta = json.loads(next(out.glob("*.json")).read_text())
    assert meta["label"] == f"class {meta['target']}" and 0 <= meta["target"] < 10


def test_files_sharing_a_stem_keep_their_own_results(tmp_path, scripted, photo, capsys):
    from unveil.cli import output_stems

    other = tmp_path / "sub" / "photo.jpg"
    other.parent.mkdir()
    Image.open(photo).save(other)
    assert output_stems([photo, str(other), photo]) == ["photo_png", "photo_jpg", "photo_png"]
    assert output_stems(["a/x.png", "b/x.png", "c/y.png"]) == ["x_png", "x_png_2", "y"]
    out = tmp_path / "res"
    assert main(["explain", photo, str(other), "--model", scripted, "--method", "occlusion", "--out", str(out),
                 "--no-progress", "--batch-size", "8"]) == 0
    assert sorted(p.name for p in out.glob("*.npz")) == ["photo_jpg_occlusion.npz", "photo_png_occlusion.npz"]


def test_dotted_names_links_and_counters_keep_every_result(tmp_path, scripted, photo, capsys):
    from unveil.cli import output_stems

    a, b = tmp_path / "cat.2023.png", tmp_path / "dog.2023.png"
    Image.open(photo).save(a)
    Image.open(photo).rotate(90).save(b)
    out = tmp_path / "res"
    assert main(["explain", str(a), str(b), "--model", scripted, "--method", "occlusion,saliency", "--out", str(out),
                 "--no-progress", "--batch-size", "8"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{stem}_{m}{ext}" for stem in ("cat.2023", "dog.2023") for m in ("occlusion", "saliency")
                           for ext in (".png", ".npz", ".json"))  # was cat.{png,npz,json}: each overwrote the last
    assert f"-> {out / 'cat.2023_saliency'}.png/.npz/.json" in capsys.readouterr().out
    # a counter never takes a name another input already has; a link is named as given
    assert output_stems(["a/cat.jpg", "b/cat.jpg", "cat_jpg_2.jpg"]) == ["cat_jpg", "cat_jpg_3", "cat_jpg_2"]
    link = tmp_path / "latest.png"
    link.symlink_to(a)
    assert output_stems([str(link)]) == ["latest"] and output_stems([str(link), str(a)]) == ["latest", "latest"]


def test_samples_and_budget_reach_every_method_that_takes_them_and_are_refused_otherwise(tmp_path, scripted,
                                                                                          photo, capsys):
    out = tmp_path / "res"
    assert main(["explain", photo, "--model", scripted, "--method", "rise,shapley,lime", "--samples", "6",
                 "--out", str(out), "--no-progress", "--batch-size", "8", "-o", "n_features=4"]) == 0
    params = {m: json.loads((out / f"photo_{m}.json").read_text())["params"] for m in ("rise", "shapley", "lime")}
    assert params["rise"]["n_masks"] == 6 and params["shapley"]["n_permutations"] == 6  # were ignored
    assert params["lime"]["n_samples"] == 6
    assert main(["explain", photo, "--model", scripted, "--method", "rise,lime", "--samples", "6", "-o", "n_masks=5",
                 "-o", "n_features=4", "--out", str(out), "--no-progress", "--batch-size", "8"]) == 0  # -o wins
    assert json.loads((out / "photo_rise.json").read_text())["params"]["n_masks"] == 5
    assert json.loads((out / "photo_lime.json").read_text())["params"]["n_samples"] == 6
    capsys.readouterr()
    for flags, message in ((["--method", "occlusion", "--samples", "10"], "--samples: none of the methods occlusion "
                                                                          "draws samples (those that do: "),
                           (["--method", "saliency,gradcam", "--budget", "50"],
                            "--budget: none of the methods saliency, gradcam takes a budget")):
        assert main(["explain", photo, "--model", scripted, "--out", str(out), "--no-progress", *flags]) == 2
        assert message in capsys.readouterr().err


def test_explain_refuses_gradient_methods_on_an_onnx_model_before_any_work(tmp_path, photo, capsys):
    pytest.importorskip("onnxruntime")
    from conftest import TinyNet

    import unveil

    path = tmp_path / "m.onnx"
    unveil.Model(TinyNet(), input_size=(32, 32)).to_onnx(path)
    out = tmp_path / "res"
    assert main(["explain", photo, "--model", str(path), "--method", "occlusion,saliency", "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "saliency" in err and "gradients" in err
    assert not out.exists() or not any(out.iterdir())  # occlusion's results were written, then it failed


def test_target_text_is_a_class_name_first_as_in_the_api(tmp_path, photo, capsys):
    (tmp_path / "digits.py").write_text(textwrap.dedent("""
        import torch
        import unveil

        def build():
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
            return unveil.Model(net.eval(), input_size=(16, 16), labels=["a", "Egyptian_cat", "5", "c"])
    """))
    spec = f"{tmp_path / 'digits.py'}:build"
    out = tmp_path / "res"
    for text, target in (("5", 2), ("egyptian cat", 1), ("3", 3)):
        assert main(["explain", photo, "--model", spec, "--method", "saliency", "--target", text, "--out", str(out),
                     "--no-progress"]) == 0  # "5" was read as class 5: out of range
        assert json.loads((out / "photo_saliency.json").read_text())["target"] == target
    capsys.readouterr()
    assert main(["explain", photo, "--model", spec, "--method", "saliency", "--target", "²", "--out", str(out),
                 "--no-progress"]) == 2
    assert "target '²': no class of that name" in capsys.readouterr().err


def test_samples_given_twice_is_refused(tmp_path, scripted, photo, capsys):
    assert main(["explain", photo, "--model", scripted, "--method", "kernelshap,lime", "-o", "n_samples=5",
                 "--samples", "10", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--samples 10: every chosen method's sample count is already set with -o (n_samples)" in \
        capsys.readouterr().err


def test_mask_pictures_by_colour_or_by_transparency():
    from unveil.cli import mask_from_image

    h, w = 6, 8
    rgba = np.zeros((h, w, 4), np.float32)
    rgba[..., 3] = 1.0
    rgba[:2, :3, :3] = 1.0  # opaque white object on opaque black
    rgba[5, 7, 3] = 254 / 255  # one pixel a shade less opaque: still read by colour
    np.testing.assert_array_equal(mask_from_image(rgba), rgba[..., 0] > 0.5)
    faint = np.zeros((h, w, 2), np.float32)
    faint[:2, :3, 1] = 127 / 255  # a translucent object on a transparent sheet: its opaque part
    np.testing.assert_array_equal(mask_from_image(faint), faint[..., 1] > 0)
    gray = np.zeros((h, w, 1), np.float32)
    gray[3:, 4:] = 1.0
    np.testing.assert_array_equal(mask_from_image(gray), gray[..., 0] > 0.5)


def test_an_output_folder_that_is_a_file_is_one_clear_line(tmp_path, scripted, photo, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    assert main(["explain", photo, "--model", scripted, "--method", "occlusion", "--out", str(blocker),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unveil: error: --out") and "exists and is not a folder" in err
    assert blocker.read_text() == "x"


def test_option_values_read_json_and_pythons_constants():
    from unveil.cli import _option

    assert _option("paired=False") == ("paired", False)
    assert _option("paired=true") == ("paired", True)
    assert _option("alpha=None") == ("alpha", None)
    assert _option("n_features=30") == ("n_features", 30)
    assert _option("segmentation=grid") == ("segmentation", "grid")
    assert _option("window=[8, 8]") == ("window", [8, 8])


@pytest.mark.parametrize("top", ["0", "-1", "x"])
def test_explain_table_top_must_be_positive_before_any_work(top, capsys):
    with pytest.raises(SystemExit) as err:
        main(["explain-table", "missing.csv", "--row", "0", "--model", "m.py:f", "--top", top])
    assert err.value.code == 2 and "--top: expected a positive int" in capsys.readouterr().err
