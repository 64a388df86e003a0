"""`unveil explain-table` and the table API from a user's side: the CSV rules (header, numbers, repeated names),
the model's columns (scikit-learn's feature_names_in_ / n_features_in_), errors raised inside the model,
flags that -o must not set, number printing, degenerate inputs and the shown output labels as targets."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from unveil.cli import main
from unveil.tabular_explain import explain_tabular, load_csv

W = np.array([1.0, -2.0, 0.5, 3.0])


def _write_csv(path, header, rows):
    lines = ([",".join(header)] if header else []) + [",".join(f"{v:.6f}" for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(30, 4))
    labels = (data[:, 0] > 0).astype(float)[:, None]
    csv = _write_csv(tmp_path / "t.csv", ["a", "b", "c", "d", "label"], np.hstack([data, labels]))
    (tmp_path / "models.py").write_text(textwrap.dedent("""
        from pathlib import Path

        import numpy as np
        W = np.array([1.0, -2.0, 0.5, 3.0])

        def linear(rows):
            with open(Path(__file__).with_name("calls.txt"), "a") as f:
                f.write("called ")
            return rows @ W

        def broken(rows):
            raise KeyError("weights not loaded")

        def tiny(rows):
            return 1e-9 * (rows @ W)

        def constant(rows):
            return np.full(len(rows), 0.25)
    """))
    return csv, data, str(tmp_path / "models.py")


def _run(capsys, *argv):
    code = main(["explain-table", *argv, "--no-progress"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_output_folder_is_refused_before_any_model_call(table, tmp_path, capsys):
    csv, _, models = table
    (tmp_path / "file").write_text("x")
    code, _, err = _run(capsys, csv, "--row", "0", "--label-column", "label", "--model", f"{models}:linear",
                        "--out", str(tmp_path / "file" / "sub"))
    assert code == 2 and "--out" in err and "cannot be created" in err
    assert not (tmp_path / "calls.txt").exists()  # the model was never called
    code, _, _ = _run(capsys, csv, "--row", "0", "--label-column", "label", "--model", f"{models}:linear",
                      "--out", str(tmp_path / "fine"))
    assert code == 0 and (tmp_path / "calls.txt").exists()  # the same call with a good folder does call it


def test_an_error_inside_the_model_is_reported_as_the_models(table, tmp_path, capsys):
    csv, _, models = table
    code, _, err = _run(capsys, csv, "--row", "0", "--label-column", "label", "--model", f"{models}:broken",
                        "--out", str(tmp_path / "o"))
    assert code == 1
    assert err.startswith("unveil: error: the model broken failed on 1 row of 4 features, at ")
    assert f"{models}:" in err and "KeyError: 'weights not loaded'" in err
    assert "Traceback" not in err
    # forgetting --label-column: the row has 5 values for a model of 4; the error says so and suggests it
    code, _, err = _run(capsys, csv, "--row", "0", "--model", f"{models}:linear", "--out", str(tmp_path / "o"))
    assert code == 1 and "1 row of 5 features" in err and "--label-column" in err
    # the Python API re-raises the model's own exception, unchanged, with a note where Python has them
    with pytest.raises(KeyError, match="weights not loaded") as info:
        explain_tabular(lambda rows: {}["weights not loaded"], np.zeros(3), np.ones((5, 3)), progress=False)
    if hasattr(info.value, "add_note"):
        assert any("called on 1 row of 3 features" in n for n in info.value.__notes__)


def test_an_error_inside_an_image_callable_names_the_batch():
    import unveil

    def broken(batch):
        raise RuntimeError("no weights")

    model = unveil.Model(broken, input_size=(8, 8), batch_size=4)
    with pytest.raises(RuntimeError, match="no weights") as info:
        unveil.explain(model, np.zeros((8, 8, 3), np.float32), method="occlusion", window=4, stride=4)
    assert getattr(info.value, "unveil_model_failed").startswith("'broken' failed on 1 image of 8 x 8 x 3")


def test_csv_header_rules(tmp_path):
    rows = np.arange(12.0).reshape(4, 3) / 7
    no_header = _write_csv(tmp_path / "nh.csv", None, rows)
    with pytest.warns(UserWarning, match=r"holds only numbers and was read as the column names.*--no-header"):
        data, names = load_csv(no_header)
    assert len(data) == 3  # the first line became names: what the warning is about
    data, names = load_csv(no_header, header=False)
    assert names == ["x0", "x1", "x2"]
    np.testing.assert_allclose(data, np.round(rows, 6))
    data, names = load_csv(no_header, label_column="x1", header=False)
    assert names == ["x0", "x2"] and data.shape == (4, 2)

    (tmp_path / "dup.csv").write_text("a,b,a\n1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match=r"dup.csv: the header names the columns \['a'\] more than once"):
        load_csv(tmp_path / "dup.csv")
    for cell in ("nan", "inf", "-Infinity"):
        (tmp_path / "nan.csv").write_text(f"a,b\n1,2\n3,{cell}\n")
        with pytest.raises(ValueError, match=rf"nan.csv, line 3, column 'b': '{cell}' is not a finite number"):
            load_csv(tmp_path / "nan.csv")
    (tmp_path / "svm.txt").write_text("1 1:0.5 3:0.25\n0 2:1\n")
    with pytest.raises(ValueError, match=r"looks like a libsvm file.*load_libsvm"):
        load_csv(tmp_path / "svm.txt")
    with pytest.raises(ValueError, match=r"is a folder, not a CSV file"):
        load_csv(tmp_path)


def test_no_header_flag_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(12, 4))
    csv = _write_csv(tmp_path / "nh.csv", None, rows)
    (tmp_path / "m.py").write_text("import numpy as np\n"
                                   "def f(rows):\n    return rows @ np.array([1.0, -2.0, 0.5, 3.0])\n")
    code, out, _ = _run(capsys, csv, "--no-header", "--row", "2", "--model", f"{tmp_path / 'm.py'}:f",
                        "--method", "kernelshap", "--json", "--out", str(tmp_path / "o"))
    assert code == 0
    result = json.loads(out)
    weights = {f["name"]: f["weight"] for f in result["features"]}
    background = np.delete(np.round(rows, 6), 2, axis=0)
    truth = W * (np.round(rows[2], 6) - background.mean(axis=0))  # exact for a linear model, mean baseline
    np.testing.assert_allclose([weights[f"x{j}"] for j in range(4)], truth, atol=1e-9)


def test_flags_are_not_set_through_options(table, tmp_path, capsys):
    csv, _, models = table
    for key, flag in (("seed", "--seed"), ("budget", "--budget"), ("target", "--target"), ("x", "--row")):
        code, _, err = _run(capsys, csv, "--row", "0", "--model", f"{models}:linear", "-o", f"{key}=1",
                            "--out", str(tmp_path / "o"))
        assert code == 2 and f"-o {key}: set by {flag}, not by -o" in err
    with pytest.raises(SystemExit) as info:
        _run(capsys, csv, "--row", "0", "--model", f"{models}:linear", "--seed", "-1")
    assert info.value.code == 2
    assert "argument --seed: expected an int from 0" in capsys.readouterr().err


def test_small_and_large_numbers_are_printed_readably(table, tmp_path, capsys):
    csv, data, models = table
    code, out, _ = _run(capsys, csv, "--row", "0", "--label-column", "label", "--model", f"{models}:tiny",
                        "--method", "kernelshap", "--out", str(tmp_path / "o"))
    assert code == 0
    background = np.delete(np.round(data, 6), 0, axis=0)
    truth = 1e-9 * W * (np.round(data[0], 6) - background.mean(axis=0))
    printed = {line.split()[0]: float(line.split()[-1]) for line in out.splitlines()[1:5]}
    np.testing.assert_allclose([printed[c] for c in "abcd"], truth, rtol=1e-5)
    assert "score=0.0000" not in out


def test_constant_model_and_too_few_samples_warn(table):
    _, data, _ = table
    with pytest.warns(UserWarning, match=r"lime: the weights are all 0, so they rank no feature"):
        exp = explain_tabular(lambda r: np.full(len(r), 0.25), data[0], data[1:], progress=False)
    assert not exp.weights.any()
    with pytest.warns(UserWarning, match=r"lime: 3 samples \(the unperturbed input included\) for 4 features.*"
                                         r"num_samples"):
        explain_tabular(lambda r: r @ W, data[0], data[1:], budget=3, progress=False)
    import unveil

    model = unveil.Model(lambda b: b.mean(axis=(1, 2)), input_size=(8, 8), outputs="scores")
    with pytest.warns(UserWarning, match=r"lime: 5 samples .* for 16 segments.*n_samples"):
        unveil.explain(model, np.random.default_rng(0).random((8, 8, 3)), method="lime", n_samples=5,
                       segmentation="grid", n_features=16)


def test_lime_refuses_values_whose_spread_overflows(table):
    _, data, _ = table
    big = data.copy()
    big[:, 2] *= 1e300
    with pytest.raises(ValueError, match=r"lime: the feature\(s\) \['x2'\] hold values beyond 1e\+150"):
        explain_tabular(lambda r: r[:, :2] @ W[:2], big[0], big[1:], progress=False)
    exp = explain_tabular(lambda r: r[:, :2] @ W[:2], big[0], big[1:], method="kernelshap", progress=False)
    truth = W[:2] * (big[0, :2] - big[1:, :2].mean(axis=0))
    np.testing.assert_allclose(exp.weights[:2], truth, atol=1e-9)


def test_shown_output_labels_can_be_targets():
    rows = np.random.default_rng(1).normal(size=(20, 3))
    two = explain_tabular(lambda r: np.stack([r.sum(1), -r.sum(1)], 1), rows[0], rows[1:], target="class 1",
                          method="kernelshap", progress=False)
    assert two.target == 1 and two.label == "class 1"
    one = explain_tabular(lambda r: r.sum(1), rows[0], rows[1:], target="output", method="kernelshap",
                          progress=False)
    assert one.target == 0 and one.label == "output"
    with pytest.raises(ValueError, match=r"target 1 is out of range: the model gives 1 output \(0\)$"):
        explain_tabular(lambda r: r.sum(1), rows[0], rows[1:], target=1, progress=False)
    import unveil

    model = unveil.Model(lambda b: np.stack([b.mean((1, 2, 3)), -b.mean((1, 2, 3))], 1), input_size=(8, 8))
    assert model.class_index("class 1") == 1 and model.label(1) == "class 1"
    with pytest.raises(ValueError, match=r"out of range: the model has 2 classes \(0..1\)"):
        model.class_index("class 2", num_classes=2)  # a callable's class count is known after its first call


def test_an_image_model_is_refused_for_rows():
    torch = pytest.importorskip("torch")
    import unveil

    lin = torch.nn.Linear(3, 2)
    image_model = unveil.Model(lin, mean=[0.5] * 3, std=[0.2] * 3, channels=3)
    with pytest.raises(ValueError, match=r"is an image Model \(it normalizes with mean and std\)"):
        explain_tabular(image_model, np.zeros(3), np.ones((4, 3)), progress=False)
    plain = unveil.Model(lin, outputs="scores", channels=None)
    exp = explain_tabular(plain, np.zeros(3), np.ones((4, 3)), method="kernelshap", target=0, progress=False)
    with torch.no_grad():
        truth = lin.weight[0].numpy() * (0.0 - 1.0)  # linear: coefficient x (x - background mean)
    np.testing.assert_allclose(exp.weights, truth, atol=1e-6)


def test_methods_tables_lists_the_table_methods(capsys):
    from unveil.tabular_explain import TABULAR_METHODS

    assert main(["methods", "--tables", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == sorted(TABULAR_METHODS)
    assert listed[[m["name"] for m in listed].index("lime")]["options"]["num_samples"] == 5000


def test_pickles_get_a_hint(tmp_path, capsys):
    (tmp_path / "clf.pkl").write_bytes(b"\x80\x04N.")
    _write_csv(tmp_path / "t.csv", ["a", "b"], np.eye(3, 2))
    for command in (["explain-table", str(tmp_path / "t.csv"), "--row", "0"], ["explain", str(tmp_path / "x.png")]):
        assert main([*command, "--model", str(tmp_path / "clf.pkl")]) == 2
        assert "pickles are not loaded here" in capsys.readouterr().err


def test_the_command_prints_warnings_as_its_own_lines(table, tmp_path):
    import subprocess
    import sys

    csv, _, models = table  # a process of its own: the terminal's view, not pytest's recorded warnings
    r = subprocess.run([sys.executable, "-m", "unveil", "explain-table", csv, "--row", "0", "--label-column",
                        "label", "--model", f"{models}:constant", "--method", "kernelshap", "--no-progress",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("unveil: warning: kernelshap: the weights are all 0")
    assert "warnings.warn" not in r.stderr and "UserWarning" not in r.stderr


def test_an_estimator_fitted_on_a_frame_gets_the_columns_by_name(tmp_path, capsys):
    pytest.importorskip("pandas")
    rng = np.random.default_rng(5)
    data = rng.normal(size=(15, 4))
    (tmp_path / "est.py").write_text(f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\n"
                                     "from fitted import make\nest = make()\n")
    (tmp_path / "fitted.py").write_text(textwrap.dedent('''
        import numpy as np
        class Est:
            classes_ = np.array([0, 1])
            feature_names_in_ = np.array(["a", "b", "c", "d"], dtype=object)
            n_features_in_ = 4
            def predict_proba(self, frame):
                assert list(frame.columns) == ["a", "b", "c", "d"], list(frame.columns)
                z = frame["a"].to_numpy() - 2 * frame["b"].to_numpy() + 0.5 * frame["c"].to_numpy() \\
                    + 3 * frame["d"].to_numpy()
                return np.stack([-z, z], 1)
        def make():
            return Est()
    '''))
    results = []
    for name, order in (("ordered", [0, 1, 2, 3]), ("reordered", [3, 1, 0, 2])):
        header = [list("abcd")[j] for j in order]
        csv = _write_csv(tmp_path / f"{name}.csv", header, data[:, order])
        code, out, err = _run(capsys, csv, "--row", "0", "--model", f"{tmp_path / 'est.py'}:est", "--target", "1",
                              "--method", "kernelshap", "--json", "--out", str(tmp_path / "o"))
        assert code == 0, err
        results.append({f["name"]: f["weight"] for f in json.loads(out)["features"]})
    bg = np.round(data, 6)[1:]
    truth = dict(zip("abcd", W * (np.round(data[0], 6) - bg.mean(axis=0))))
    for weights in results:
        np.testing.assert_allclose([weights[c] for c in "abcd"], [truth[c] for c in "abcd"], atol=1e-9)
    # a column the model never saw, or one it needs missing: named before any call
    csv = _write_csv(tmp_path / "extra.csv", ["a", "b", "c", "d", "label"], np.hstack([data, data[:, :1]]))
    code, _, err = _run(capsys, csv, "--row", "0", "--model", f"{tmp_path / 'est.py'}:est")
    assert code == 2 and "has ['label'] besides" in err and "--label-column" in err
    csv = _write_csv(tmp_path / "short.csv", ["a", "b", "d"], data[:, [0, 1, 3]])
    code, _, err = _run(capsys, csv, "--row", "0", "--model", f"{tmp_path / 'est.py'}:est")
    assert code == 2 and "short.csv lacks ['c']" in err


def test_a_model_spec_naming_a_number_says_an_int(tmp_path):
    from unveil.models.loading import load_object

    (tmp_path / "spec.py").write_text("N = 5\nS = 'x'\n")
    with pytest.raises(ValueError, match=r"'N' is an int, not a model"):
        load_object(f"{tmp_path / 'spec.py'}:N")
    with pytest.raises(ValueError, match=r"'S' is a str, not a model"):
        load_object(f"{tmp_path / 'spec.py'}:S")


def test_a_callable_returning_a_reversed_view_is_read():
    import unveil

    m = unveil.Model(lambda b: np.tile([[0.3, 0.7]], (len(b), 1))[:, ::-1], outputs="probabilities")
    exp = unveil.explain(m, np.random.default_rng(0).random((16, 16, 3)).astype(np.float32), method="occlusion",
                         window=4)
    assert exp.target == 0 and exp.score == pytest.approx(0.7)  # the reversed row: class 0 holds 0.7
