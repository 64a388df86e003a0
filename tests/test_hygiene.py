"""What a long-running process needs: a first call interrupted during the method imports is tried again,
threads do not disturb each other's random streams, training flags or warnings filters, and the model's
counters count what was scored."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

import unveil


def small_model(**kwargs) -> unveil.Model:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    return unveil.Model(net, input_size=(16, 16), **kwargs)


IMAGE = np.random.default_rng(0).random((20, 20, 3)).astype(np.float32)


def methods_after_an_interrupt(patch: str, restore: str) -> list[str]:
    """In a fresh process: ``patch`` makes the first listing of the methods raise KeyboardInterrupt (a Ctrl-C in
    a notebook), ``restore`` undoes it; the methods a second listing finds."""
    code = f"""
import importlib, sys
import unveil
from unveil.methods import registry
{patch}
try:
    unveil.methods()
except KeyboardInterrupt:
    pass
{restore}
print(",".join(unveil.methods()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(",")


def test_an_interrupted_first_import_of_the_methods_is_tried_again():
    """Interrupted while the method modules are imported: the next call must find every method (it used to
    find only those imported before)."""
    patch = """
real = importlib.import_module
def interrupted(name, *a, **k):
    if name.endswith(".lime"):
        raise KeyboardInterrupt
    return real(name, *a, **k)
importlib.import_module = interrupted
"""
    assert methods_after_an_interrupt(patch, "importlib.import_module = real") == unveil.methods()


def test_two_threads_making_the_first_calls_of_a_process_both_work():
    code = """
import threading, numpy as np, torch, unveil
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
model = unveil.Model(net, input_size=(16, 16), batch_size=4)
img = np.random.default_rng(0).random((16, 16, 3)).astype("float32")
errors = []
def run(m):
    try:
        unveil.explain(model, img, method=m, progress=False)
    except Exception as err:
        errors.append(repr(err))
ts = [threading.Thread(target=run, args=(m,)) for m in ("saliency", "occlusion", "rise")]
for t in ts: t.start()
for t in ts: t.join()
print(errors)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"  # was "unknown method 'occlusion'; available: " in one of them


def test_explain_leaves_other_threads_random_streams_alone():
    model = small_model(batch_size=8)
    unveil.explain(model, IMAGE, method="lime", n_samples=20, progress=False)  # warm: imports, sizes

    def work():
        for _ in range(5):
            unveil.explain(model, IMAGE, method="lime", n_samples=20, progress=False)

    torch.manual_seed(123)
    t = threading.Thread(target=work)
    t.start()
    draws = []
    while t.is_alive() or len(draws) < 100:
        draws.append(torch.rand(1).item())
    t.join()
    torch.manual_seed(123)
    expected = [torch.rand(1).item() for _ in draws]
    assert draws == expected  # a save and restore of the global state around each call rewound them


def test_an_export_beside_a_running_pass_keeps_the_users_training_flags():
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    net.train()
    model = unveil.Model(net, input_size=(16, 16), batch_size=4)
    stop = threading.Event()

    def passes():
        while not stop.is_set():
            unveil.explain(model, IMAGE, method="saliency", progress=False)

    t = threading.Thread(target=passes)
    t.start()
    try:
        for _ in range(8):
            model.use_onnxruntime()
            unveil.explain(model, IMAGE, method="occlusion", window=4, progress=False)
    finally:
        stop.set()
        t.join()
    assert all(m.training for m in net.modules())  # the export read cleared flags and wrote them back


def test_warning_filters_survive_concurrent_exports_and_image_loads(tmp_path):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    path = tmp_path / "img.png"
    Image.fromarray((IMAGE * 255).astype(np.uint8)).save(path)
    before = list(warnings.filters)
    model = small_model(batch_size=4)
    stop = threading.Event()

    def loads():
        while not stop.is_set():
            unveil.load_image(path)

    t = threading.Thread(target=loads)
    t.start()
    try:
        for _ in range(6):
            model.use_onnxruntime()
            unveil.explain(model, str(path), method="occlusion", window=4, progress=False)
    finally:
        stop.set()
        t.join()
    assert list(warnings.filters) == before


def test_nested_counting_and_failed_passes():
    model = small_model(batch_size=8)
    with model.counting() as outer:
        exp = unveil.explain(model, IMAGE, method="occlusion", window=8, progress=False)
        model.predict(IMAGE)
    assert outer[0] == exp.n_evals + 1  # the inner counter was removed, not the outer one
    assert getattr(model._local, "counters") == []

    calls = [0]

    def flaky(batch):
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("model failed")
        return np.tile([0.2, 0.8], (len(batch), 1))

    callable_model = unveil.Model(flaky, input_size=(16, 16), batch_size=32)
    with pytest.raises(RuntimeError, match="model failed"):
        unveil.explain(callable_model, IMAGE, method="occlusion", window=4, progress=False)
    assert callable_model.n_evals == 1  # the failed batch was never scored (was 33)


def test_a_calibration_takes_back_only_its_own_passes():
    model = small_model(batch_size="auto")
    model.probabilities(torch.rand(3, 3, 16, 16), batch_size=3)
    assert model.n_evals == 3
    started, calibrated = threading.Event(), threading.Event()
    passes = [0]

    def other_thread():  # scores inputs of its own all through the calibration
        x = torch.rand(2, 3, 16, 16)
        while not calibrated.is_set() or passes[0] < 5:
            model.probabilities(x, batch_size=2)
            passes[0] += 2
            started.set()

    t = threading.Thread(target=other_thread)
    t.start()
    started.wait()
    model.resolve_batch_size()  # a synthetic calibration: its passes are no explanation's
    calibrated.set()
    t.join()
    assert model.n_evals == 3 + passes[0]  # the other thread's inputs stay counted (a reset dropped them)


def test_a_method_module_imported_again_after_an_interrupt_registers_again():
    patch = """
real = registry.register
def register(name, **kw):
    deco = real(name, **kw)
    def wrapped(fn):
        out = deco(fn)
        if name == "lime" and not hasattr(registry, "_hit"):
            registry._hit = True
            raise KeyboardInterrupt  # after lime registered, before its module finished
        return out
    return wrapped
registry.register = register
"""
    # was "method 'lime' is already registered", for good
    assert methods_after_an_interrupt(patch, "registry.register = real") == unveil.methods()


def test_an_export_beside_gradcam_does_not_deadlock():
    pytest.importorskip("onnxruntime")
    model = small_model(batch_size=4)
    stop, failures = threading.Event(), []

    def gradcams():
        while not stop.is_set():
            try:
                unveil.explain(model, IMAGE, method="gradcam", progress=False)
            except Exception as err:  # noqa: BLE001
                failures.append(err)

    t = threading.Thread(target=gradcams, daemon=True)
    t.start()
    done = threading.Event()

    def exports():
        for _ in range(6):
            model.use_onnxruntime()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                unveil.explain(model, IMAGE, method="occlusion", window=4, progress=False)
        done.set()

    e = threading.Thread(target=exports, daemon=True)
    e.start()
    finished = done.wait(timeout=120)
    stop.set()
    assert finished, "the export and a Grad-CAM pass waited for each other's lock"
    t.join(timeout=30)
    assert not failures


def test_progress_off_starts_no_thread_and_tune_cpu_says_when_it_keeps_the_first_settings():
    code = """
import threading, numpy as np, torch, unveil
net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
model = unveil.Model(net, input_size=(16, 16), batch_size=4)
img = np.random.default_rng(0).random((16, 16, 3)).astype("float32")
for m in ("integrated_gradients", "smoothgrad", "occlusion"):
    unveil.explain(model, img, method=m, progress=False)
print(sorted(t.name for t in threading.enumerate()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "monitor" not in out.stdout  # tqdm's monitor thread, started even by a disabled bar
    code = """
import warnings, unveil
first = unveil.tune_cpu()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    again = unveil.tune_cpu()
    other = unveil.tune_cpu(top_pad=1 << 20)
print(first == again == other, len(w), str(w[0].message) if w else "")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    same, count, message = out.stdout.strip().split(" ", 2)
    assert same == "True" and count == "1" and message.startswith("tune_cpu: already tuned with")
