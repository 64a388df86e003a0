"""One suite over every registered method: shapes, dtypes, seeds, batch sizes, budgets, model left unchanged."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import unveil
from unveil.methods import method_specs

from conftest import tiny_model

#: options that keep each method to milliseconds on the tiny model; methods not listed run with defaults.
#: One line per method: each method's owner edits only its own line.
FAST = {
    "lime": {"n_samples": 60, "n_features": 16},
    "occlusion": {"window": 8},
    "streak": {"n_features": 16},
    "shapley": {"n_permutations": 3, "segmentation": "grid", "n_features": 4},
    "kernelshap": {"n_samples": 40, "segmentation": "grid", "n_features": 9},
    "rise": {"n_masks": 40, "s": 4},
    "saliency": {},
    "grad_input": {},
    "integrated_gradients": {"n_steps": 8},
    "smoothgrad": {"n_samples": 4},
    "elrp": {},
    "deeplift": {},
    "gradcam": {},
    "meaningful": {"iterations": 5, "mask_size": 8},
    "learned": {"iterations": 5, "dilation": 3},
}

SPECS = method_specs()
NAMES = [s.name for s in SPECS]


def run(name, model, image, **kw):
    return unveil.explain(model, image, method=name, seed=kw.pop("seed", 0), progress=False,
                          **{**FAST.get(name, {}), **kw})


def hook_count(module: torch.nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        + len(getattr(m, "_full_backward_hooks", {}) or {}) + len(getattr(m, "_full_backward_pre_hooks", {}) or {})
        for m in module.modules()
    )


def test_registry_lists_methods():
    assert {"lime", "occlusion"} <= set(unveil.methods())
    for spec in SPECS:
        assert spec.description and spec.family in ("perturbation", "learned", "gradient")


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_metadata(name, tiny, image):
    exp = run(name, tiny, image)
    assert exp.map.shape == image.shape[:2]
    assert exp.map.dtype == np.float32
    assert np.all(np.isfinite(exp.map))
    assert exp.method == name and exp.seed == 0
    assert exp.n_evals >= 1 and exp.seconds > 0
    probs = tiny.probabilities(tiny.prepare(image)[1])[0]
    assert exp.target == int(torch.argmax(probs))
    assert exp.score == pytest.approx(float(probs[exp.target]), abs=1e-6)
    if exp.segments is not None:
        assert exp.segments.shape == image.shape[:2]
        assert exp.weights.shape == (int(exp.segments.max()) + 1,)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_under_seed(name, tiny, image):
    a, b = run(name, tiny, image, seed=3), run(name, tiny, image, seed=3)
    np.testing.assert_array_equal(a.map, b.map)
    assert a.n_evals == b.n_evals


@pytest.mark.parametrize("name", NAMES)
def test_batch_size_invariance(name, image):
    maps = [run(name, tiny_model(batch_size=bs), image).map for bs in (1, 7, 64)]
    # Float rounding differs between batch sizes (other kernels); where a ReLU's input lies within that
    # rounding of zero its gate can flip at one step, moving the few pixels it feeds (seen: 9 of 1920 pixels
    # of integrated gradients, by 0.2 % of the map's range). Everything else must agree to float precision.
    for m in maps[1:]:
        off = ~np.isclose(m, maps[0], rtol=1e-4, atol=1e-5)
        assert off.mean() <= 0.01, f"{off.sum()} of {off.size} pixels differ"
        np.testing.assert_allclose(m, maps[0], rtol=0, atol=1e-5 + 0.01 * float(np.abs(maps[0]).max()))


@pytest.mark.parametrize("name", NAMES)
def test_model_unchanged(name, tiny, image):
    net = tiny.fn
    state = copy.deepcopy(net.state_dict())
    grads = [p.requires_grad for p in net.parameters()]
    training = [m.training for m in net.modules()]
    run(name, tiny, image, target=2)
    after = net.state_dict()
    for k, v in state.items():
        assert torch.equal(v, after[k]), k
    assert [p.requires_grad for p in net.parameters()] == grads
    assert [m.training for m in net.modules()] == training
    assert hook_count(net) == 0
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("name", [s.name for s in SPECS if s.uses_budget])
def test_budget_is_never_exceeded(name, tiny, image):
    for budget in (5, 23):
        exp = run(name, tiny, image, budget=budget)
        assert exp.n_evals <= budget


@pytest.mark.parametrize("name", NAMES)
def test_target_by_name_and_number_agree(name, tiny, image):
    a = run(name, tiny, image, target=4)
    b = run(name, tiny, image, target="class4")
    assert a.target == b.target == 4 and a.label == "class4"
    np.testing.assert_array_equal(a.map, b.map)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_option_is_named(name, tiny, image):
    with pytest.raises(ValueError, match="no option 'bogus'"):
        run(name, tiny, image, bogus=1)
