"""The learned-perturbation methods (meaningful, learned) on a tiny model whose score depends on one known square."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import unveil
from unveil.methods import learned as learned_mod
from unveil.methods import meaningful as meaningful_mod
from unveil.methods._optimize import _adam_rows

@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids thread hand-off stalls on a busy machine (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


R0, R1, C0, C1 = 8, 16, 18, 26  # the square the model looks at (rows R0..R1-1, cols C0..C1-1)


class RegionNet(torch.nn.Module):
    """Two classes; class 0's logit is 20 * mean(relu(R - G)) over the square minus 8, class 1's is 0.
    Nothing outside the square changes the output."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([1.0, -1.0, 0.0]))
        self.scale = torch.nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        crop = x[:, :, R0:R1, C0:C1]
        f = torch.relu((crop * self.weight.view(1, 3, 1, 1)).sum(1)).mean((1, 2))
        z = self.scale * f - 8.0
        return torch.stack([z, torch.zeros_like(z)], 1)


def region_model(batch_size=4) -> unveil.Model:
    return unveil.Model(RegionNet(), input_size=(32, 32), batch_size=batch_size, labels=["red", "other"])


def region_image(seed=0, colour=(0.9, 0.1, 0.1)) -> np.ndarray:
    """Grey noise (R = G = B, so the model sees nothing there) with a red square where the model looks."""
    rng = np.random.default_rng(seed)
    img = np.repeat(rng.random((32, 32, 1)) * 0.6, 3, axis=2).astype(np.float32)
    img[R0:R1, C0:C1] = colour
    return img


FAST = {
    "meaningful": {"mask_size": 16, "iterations": 120},
    "learned": {"dilation": 3, "iterations": 120},
}


def run(method, model, image, **kw):
    return unveil.explain(model, image, method=method, progress=False, **{**FAST[method], **kw})


def true_probability(model, perturbed: np.ndarray) -> float:
    """Class 0's probability of an h x w x 3 image, computed directly with the module (independent path)."""
    x = torch.from_numpy(perturbed.transpose(2, 0, 1)).unsqueeze(0)
    with torch.no_grad():
        return float(torch.softmax(model.fn(x), 1)[0, 0])


@pytest.mark.parametrize("method", ["meaningful", "learned"])
def test_points_inside_the_square_and_erases_the_score(method):
    model = region_model()
    image = region_image()
    exp = run(method, model, image)
    r, c = np.unravel_index(np.argmax(exp.map), exp.map.shape)
    assert R0 - 1 <= r <= R1 and C0 - 1 <= c <= C1, (r, c)
    # the perturbed input really has a low score (checked through the module itself, not our bookkeeping)
    after = true_probability(model, exp.extras["perturbed"])
    assert after == pytest.approx(exp.extras["score_after"], abs=1e-5)
    assert exp.extras["score_before"] == pytest.approx(exp.score)
    assert after < 0.1 * exp.score  # the score drop is > 90 %
    assert exp.extras["stopped_early"] and exp.extras["iterations"] < FAST[method]["iterations"]
    # perturbed input differs from the image mostly inside the square
    diff = np.abs(exp.extras["perturbed"] - image).mean(2)
    inside = np.zeros(diff.shape, bool)
    inside[R0:R1, C0:C1] = True
    assert diff[inside].mean() > diff[~inside].mean()


def test_learned_extras_raw_difference_and_centre_of_mass():
    model = region_model()
    exp = run("learned", model, region_image())
    d = exp.extras["difference"]
    perturbed = exp.extras["perturbed"]
    np.testing.assert_allclose(d, np.abs(region_image() - perturbed).mean(2), atol=1e-6)
    com = exp.extras["center_of_mass"]
    assert R0 - 2 <= com[0] <= R1 + 1 and C0 - 2 <= com[1] <= C1 + 1, com
    expected, com_in = learned_mod.postprocess(d, 6.0, 0.1, 3)
    np.testing.assert_allclose(exp.map, expected, rtol=1e-5, atol=1e-12)  # input size == image size here
    assert com == pytest.approx(com_in)


def test_postprocess_power_border_dilation():
    d = np.zeros((20, 20))
    d[10, 12] = 0.5
    d[0, 5] = 1.0  # in the 10 % border: removed
    heat, com = learned_mod.postprocess(d, power=2.0, border=0.1, dilation=3)
    assert heat[0, 5] == 0 and heat.max() == pytest.approx(0.25)
    assert np.count_nonzero(heat) == 9 and heat[9:12, 11:14].min() == pytest.approx(0.25)
    assert com == pytest.approx((10.0, 12.0))


def test_tv_norm_matches_the_formula():
    rng = np.random.default_rng(1)
    m = rng.random((2, 1, 5, 6))
    beta = 3.0
    got = meaningful_mod.tv_norm(torch.from_numpy(m), beta).numpy()
    for i in range(2):
        a = m[i, 0]
        total = 0.0
        for u in range(5):
            for v in range(6):
                dr = a[u + 1, v] - a[u, v] if u + 1 < 5 else 0.0
                dc = a[u, v + 1] - a[u, v] if v + 1 < 6 else 0.0
                total += (dr**2 + dc**2) ** (beta / 2)
        assert got[i] == pytest.approx(total, rel=1e-9)


def test_row_adam_equals_torch_adam():
    """Rows stepped together (one frozen part-way) follow torch.optim.Adam run on each row alone."""
    g = torch.Generator().manual_seed(0)
    target = torch.randn(3, 4, generator=g, dtype=torch.float64)
    p = torch.zeros(3, 4, dtype=torch.float64)
    state = {"t": torch.zeros(3, dtype=torch.long), "m": [torch.zeros_like(p)], "v": [torch.zeros_like(p)]}
    for step in range(20):
        rows = torch.tensor([0, 1, 2] if step < 7 else [0, 2])  # row 1 stops after 7 steps
        grad = 2 * (p - target) * torch.arange(1, 5, dtype=torch.float64)
        _adam_rows([p], [grad], state, rows, lr=0.05)
    for row, steps in ((0, 20), (1, 7), (2, 20)):
        q = torch.zeros(4, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([q], lr=0.05)
        for _ in range(steps):
            opt.zero_grad()
            ((q - target[row]) ** 2 * torch.arange(1, 5, dtype=torch.float64)).sum().backward()
            opt.step()
        torch.testing.assert_close(p[row], q.detach(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["meaningful", "learned"])
def test_deterministic_under_seed_and_seed_matters(method):
    model = region_model()
    image = region_image(3)
    a = run(method, model, image, seed=5, iterations=15, stop_below=0)
    b = run(method, model, image, seed=5, iterations=15, stop_below=0)
    c = run(method, model, image, seed=6, iterations=15, stop_below=0)
    np.testing.assert_array_equal(a.map, b.map)
    assert a.n_evals == b.n_evals == 15 + 2
    assert not np.array_equal(a.map, c.map)


@pytest.mark.parametrize("method", ["meaningful", "learned"])
def test_batch_equals_one_by_one(method):
    model = region_model(batch_size=1)
    images = [region_image(s, colour) for s, colour in
              enumerate([(0.9, 0.1, 0.1), (0.8, 0.2, 0.3), (0.95, 0.0, 0.5), (0.7, 0.1, 0.9)])]
    targets = [0, 0, "red", 0]
    module = meaningful_mod if method == "meaningful" else learned_mod
    before = model.n_evals
    batch = module.explain_batch(model, images, targets, seed=2, progress=False, **FAST[method])
    spent = model.n_evals - before
    assert sum(e.n_evals for e in batch) == spent
    for img, t, got in zip(images, targets, batch):
        alone = run(method, model, img, target=t, seed=2)
        assert got.target == alone.target == 0 and got.method == method
        assert got.n_evals == alone.n_evals
        np.testing.assert_allclose(got.map, alone.map, rtol=1e-4, atol=1e-5 * max(1.0, float(alone.map.max())))
        assert got.extras["score_after"] == pytest.approx(alone.extras["score_after"], abs=1e-5)
    # batches of two give the same as one batch of four
    pairs = module.explain_batch(model, images, targets, seed=2, progress=False, group_size=2, **FAST[method])
    for a, b in zip(batch, pairs):
        np.testing.assert_allclose(a.map, b.map, rtol=1e-4, atol=1e-5 * max(1.0, float(a.map.max())))


class Exploding(torch.nn.Module):
    """RegionNet that raises on its third forward pass."""

    def __init__(self):
        super().__init__()
        self.inner = RegionNet()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom")
        return self.inner(x)


@pytest.mark.parametrize("method", ["meaningful", "learned"])
def test_model_unchanged_also_after_an_exception(method):
    net = Exploding()
    net.inner.weight.requires_grad_(False)  # a mixed setting must survive as it was
    net.train()
    state = copy.deepcopy(net.state_dict())
    flags = [p.requires_grad for p in net.parameters()]
    model = unveil.Model(net, input_size=(32, 32))
    with pytest.raises(RuntimeError, match="boom"):
        run(method, model, region_image())
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(p.grad is None for p in net.parameters())
    assert all(m.training for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k])
    assert not net._forward_hooks and not net._backward_hooks and not net._forward_pre_hooks
    # and a normal run, inside a caller's no_grad block, leaves no gradients either
    net.calls = -10**9
    with torch.no_grad():
        exp = run(method, model, region_image(), iterations=5, stop_below=0)
    assert exp.n_evals == 5 + 2 and all(p.grad is None for p in net.parameters())


def test_bad_options_are_named():
    model = region_model()
    with pytest.raises(ValueError, match="mask_size"):
        run("meaningful", model, region_image(), mask_size=0)
    with pytest.raises(ValueError, match="perturbation"):
        run("meaningful", model, region_image(), perturbation="smudge")
    with pytest.raises(ValueError, match="kernel_size"):
        run("learned", model, region_image(), kernel_size=4)
    with pytest.raises(ValueError, match="stop_below"):
        run("learned", model, region_image(), stop_below=1.5)
    with pytest.raises(ValueError, match="iterations"):
        run("learned", model, region_image(), iterations=-1)
    with pytest.raises(ValueError, match="targets"):
        learned_mod.explain_batch(model, [region_image()] * 2, [0], progress=False)
    with pytest.raises(TypeError, match="gradients"):
        unveil.explain(lambda b: np.ones((len(b), 2)) / 2, region_image(), method="meaningful", progress=False)
    with pytest.raises(ValueError, match="blocks x layers"):
        run("learned", model, region_image(), blocks=10**9)
    with pytest.raises(ValueError, match="jitter: expected at most"):
        run("meaningful", model, region_image(), jitter=10**9)


def test_meaningful_defaults_run_on_an_image_smaller_than_the_default_jitter():
    """The default jitter (4 pixels) is taken at most the input's longer side: a 3 x 3 image runs as it is."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(2, 3))
    img = np.random.default_rng(0).random((3, 3, 3)).astype(np.float32)
    exp = unveil.explain(unveil.Model(net), img, method="meaningful", iterations=3, progress=False)
    assert exp.map.shape == (3, 3) and np.isfinite(exp.map).all()


def test_a_dilation_wider_than_the_image_equals_the_widest_useful_one():
    rng = np.random.default_rng(0)
    diff = rng.random((9, 13))
    widest, _ = learned_mod.postprocess(diff, border=0.0, dilation=2 * 13 + 1)
    huge, _ = learned_mod.postprocess(diff, border=0.0, dilation=10**9)
    np.testing.assert_array_equal(huge, widest)
    from scipy import ndimage

    direct = ndimage.grey_dilation(diff ** 6.0, size=(60, 60), mode="constant", cval=0.0)
    np.testing.assert_allclose(huge, direct, rtol=1e-6)


@pytest.mark.parametrize("perturbation", ["constant", "noise"])
def test_other_perturbations_erase_the_score(perturbation):
    model = region_model()
    exp = run("meaningful", model, region_image(), perturbation=perturbation, iterations=150)
    assert true_probability(model, exp.extras["perturbed"]) < 0.1 * exp.score
    r, c = np.unravel_index(np.argmax(exp.map), exp.map.shape)
    assert R0 - 1 <= r <= R1 and C0 - 1 <= c <= C1, (r, c)


def test_learned_and_explain_say_so_when_nothing_moves_the_target():
    import warnings as _w

    from conftest import IgnoresInput as Const

    model = unveil.Model(Const(), input_size=(32, 32), batch_size=16)
    img = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match=r"^learned: the target's probability did not drop"):
        unveil.explain(model, img, method="learned", iterations=3, dilation=2, progress=False)
    for method in ("occlusion", "saliency", "kernelshap"):  # exact zeros, with a word on why
        with pytest.warns(UserWarning, match=rf"^{method}: the map is all 0, so it ranks no pixel"):
            exp = unveil.explain(model, img, method=method, progress=False)
        assert not exp.map.any()
    with _w.catch_warnings():
        _w.simplefilter("error")  # a flat image still gets SmoothGrad's noise (sigma of the [0, 1] range)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                  torch.nn.Flatten(), torch.nn.Linear(4, 3))
        flat = unveil.explain(unveil.Model(net.eval(), input_size=(32, 32)), np.full((32, 32, 3), 0.5, np.float32),
                              method="smoothgrad", n_samples=2, noise=0.1, progress=False)
    assert flat.extras["sigma"] == pytest.approx(0.1)
