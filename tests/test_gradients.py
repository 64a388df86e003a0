"""Gradient methods against independent truth: captum on the same tensors, exact formulas, completeness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import unveil
from unveil.methods.gradients import ig_nodes, input_gradients
from unveil.methods.modified_rules import (
    Gradient,
    ModifiedChainRule,
    Rescale,
    UnsupportedNonlinearity,
    deeplift_rules,
    elrp_rules,
    modified_gradients,
)

from test_conformance import hook_count

captum_attr = pytest.importorskip("captum.attr")

SIZE = 12


def _init(net: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return net.eval()


class SmallNet(nn.Module):
    """conv-ReLU-conv-Tanh-avgpool-linear-Sigmoid-linear: 3 x 12 x 12 -> 5 logits; distinct module per use."""

    def __init__(self, seed=0, bias=True):
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1, bias=bias)
        self.a1 = nn.ReLU()
        self.c2 = nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=bias)
        self.a2 = nn.Tanh()
        self.pool = nn.AvgPool2d(2)
        self.l1 = nn.Linear(8 * 3 * 3, 16, bias=bias)
        self.a3 = nn.Sigmoid()
        self.l2 = nn.Linear(16, 5, bias=bias)
        _init(self, seed)

    def forward(self, x):
        z = self.pool(self.a2(self.c2(self.a1(self.c1(x)))))
        return self.l2(self.a3(self.l1(z.flatten(1))))


class ReluNet(nn.Module):
    """Only linear layers and ReLU (optionally bias-free, in-place, or one ReLU module used twice)."""

    def __init__(self, seed=0, bias=True, inplace=False, reuse=False, act=None):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=bias)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, bias=bias)
        self.act1 = act if act is not None else nn.ReLU(inplace=inplace)
        self.act2 = self.act1 if reuse else (act if act is not None else nn.ReLU(inplace=inplace))
        self.fc = nn.Linear(8, 4, bias=bias)
        _init(self, seed)
        if not bias:
            with torch.no_grad():
                self.bn.bias.zero_()
                self.bn.running_mean.zero_()
        else:
            with torch.no_grad():
                self.bn.running_var.abs_().add_(0.5)

    def forward(self, x):
        z = self.act2(self.c2(self.act1(self.bn(self.c1(x)))))
        return self.fc(z.mean(dim=(2, 3)))


def wrap(net, batch_size=16):
    """A unveil.Model without normalization, so captum and unveil see the same input tensor."""
    return unveil.Model(net, input_size=(SIZE, SIZE), batch_size=batch_size)


@pytest.fixture
def img():
    rng = np.random.default_rng(1)
    return rng.random((SIZE, SIZE, 3)).astype(np.float32)


def explain(model, image, method, **kw):
    return unveil.explain(model, image, method=method, progress=False, **kw)


def as_input(model, image):
    return model.prepare(image)[1].unsqueeze(0)


# ----------------------------------------------------------------------------- captum agreement
def test_saliency_and_grad_input_match_captum(img):
    net = SmallNet()
    model = wrap(net)
    x = as_input(model, img)
    sal = explain(model, img, "saliency", target=2)
    ref = captum_attr.Saliency(net).attribute(x.clone().requires_grad_(True), target=2, abs=True)[0]
    np.testing.assert_allclose(sal.extras["attribution"], ref.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(sal.map, ref.amax(0).detach().numpy(), atol=1e-6)
    gi = explain(model, img, "grad_input", target=2)
    ref = captum_attr.InputXGradient(net).attribute(x.clone().requires_grad_(True), target=2)[0]
    np.testing.assert_allclose(gi.extras["attribution"], ref.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(gi.map, ref.sum(0).detach().numpy(), atol=1e-6)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle"])
@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_integrated_gradients_match_captum(img, rule, baseline):
    net = SmallNet(seed=3)
    model = wrap(net, batch_size=7)  # chunks that do not divide the 20 steps
    x = as_input(model, img)
    exp = explain(model, img, "integrated_gradients", target=1, n_steps=20, integration=rule, baseline=baseline)
    base = unveil.perturb.make_baseline(x[0], baseline).unsqueeze(0)
    ref = captum_attr.IntegratedGradients(net).attribute(x.clone().requires_grad_(True), base, target=1, n_steps=20,
                                                         method=rule)
    np.testing.assert_allclose(exp.extras["attribution"], ref[0].detach().numpy(), atol=1e-4)
    assert exp.n_evals == 1 + 20 + 2  # target probabilities, the path, s(x) and s(baseline)


def test_trapezoid_is_the_true_trapezoid_rule():
    """Our trapezoid weights sum to 1 (alpha = k/(n-1)); captum's sum to (n-1)/n, so its result is ours x (n-1)/n."""
    from captum.attr._utils.approximation_methods import approximation_parameters

    for n in (2, 5, 50):
        a, w = ig_nodes(n, "riemann")
        steps, alphas = approximation_parameters("riemann_trapezoid")
        np.testing.assert_allclose(a, alphas(n), atol=1e-6)
        np.testing.assert_allclose(w * (n - 1) / n, steps(n), atol=1e-12)
        assert w.sum() == pytest.approx(1.0)
        for m in ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle"):
            a, w = ig_nodes(n, m)
            steps, alphas = approximation_parameters(m)
            np.testing.assert_allclose(a, alphas(n), atol=1e-6)
            np.testing.assert_allclose(w, steps(n), atol=1e-12)


@pytest.mark.parametrize("baseline", ["zero", "gray"])
def test_deeplift_matches_captum(img, baseline):
    net = SmallNet(seed=5)
    model = wrap(net)
    x = as_input(model, img)
    exp = explain(model, img, "deeplift", target=4, baseline=baseline)
    base = unveil.perturb.make_baseline(x[0], baseline).unsqueeze(0)
    ref = captum_attr.DeepLift(net).attribute(x.clone().requires_grad_(True), base, target=4)
    np.testing.assert_allclose(exp.extras["attribution"], ref[0].detach().numpy(), atol=1e-4)
    assert exp.extras["completeness_error"] < 1e-4


# ----------------------------------------------------------------------------- exact answers
@pytest.mark.parametrize("kw", [{}, {"inplace": True}, {"reuse": True}])
def test_deeplift_sums_to_the_difference_on_relu_nets(img, kw):
    net = ReluNet(seed=2, **kw)
    model = wrap(net, batch_size=1)
    x = as_input(model, img)
    for baseline in ("zero", "blur", "mean"):
        exp = explain(model, img, "deeplift", target=3, baseline=baseline)
        base = unveil.perturb.make_baseline(x[0], baseline).unsqueeze(0)
        with torch.no_grad():
            delta = float(net(x)[0, 3] - net(base)[0, 3])  # independent of the hooks
        assert abs(delta) > 1e-3
        assert float(exp.extras["attribution"].astype(np.float64).sum()) == pytest.approx(delta, rel=1e-5, abs=1e-6)
    if kw:  # in-place and reused activations give the plain net's answer
        plain = explain(wrap(ReluNet(seed=2)), img, "deeplift", target=3)
        np.testing.assert_allclose(explain(model, img, "deeplift", target=3).map, plain.map, atol=1e-6)


def test_elrp_on_bias_free_relu_net_is_gradient_times_input(img):
    net = ReluNet(seed=4, bias=False)
    model = wrap(net)
    x = as_input(model, img).requires_grad_(True)
    (g,) = torch.autograd.grad(net(x)[0, 1], x)
    truth = (g * x).detach()[0].numpy()  # plain autograd, no unveil code
    for eps in (1e-4, 1e-7, 0.0):
        exp = explain(model, img, "elrp", target=1, eps=eps)
        np.testing.assert_allclose(exp.extras["attribution"], truth, rtol=1e-4, atol=1e-6 + 10 * eps)
    np.testing.assert_allclose(explain(model, img, "grad_input", target=1).extras["attribution"], truth, atol=1e-6)
    # epsilon-LRP conserves relevance on a bias-free ReLU net: sum = f(x)
    exp = explain(model, img, "elrp", target=1, eps=0.0)
    assert exp.extras["attribution_sum"] == pytest.approx(exp.extras["score_input"], rel=1e-4)


def test_elrp_formula_on_a_tanh_mlp():
    """x * W1^T (m * W2^T e_t) with m = tanh(z) / (z + eps sign z): the rule written out by hand."""
    net = _init(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 10), nn.Tanh(), nn.Linear(10, 3)), 7)
    model = unveil.Model(net, input_size=(4, 4))
    image = np.random.default_rng(3).random((4, 4, 3)).astype(np.float32)
    x = as_input(model, image).flatten(1).double()
    w1, b1 = net[1].weight.double(), net[1].bias.double()
    w2 = net[3].weight.double()
    eps = 0.05
    z = x @ w1.T + b1
    m = torch.tanh(z) / (z + eps * torch.where(z >= 0, 1.0, -1.0))
    truth = (x * ((m * w2[2]) @ w1)).reshape(3, 4, 4).detach().numpy()
    exp = unveil.explain(model, image, method="elrp", target=2, eps=eps, progress=False)
    np.testing.assert_allclose(exp.extras["attribution"], truth, rtol=1e-4, atol=1e-6)
    # and it is not the plain gradient x input
    gi = unveil.explain(model, image, method="grad_input", target=2, progress=False).extras["attribution"]
    assert np.abs(gi - truth).max() > 1e-3


def test_probability_output_is_the_softmax_gradient(img):
    net = SmallNet(seed=1)
    model = wrap(net)
    x = as_input(model, img).requires_grad_(True)
    (g,) = torch.autograd.grad(torch.softmax(net(x), 1)[0, 0], x)
    exp = explain(model, img, "saliency", target=0, output="probability")
    np.testing.assert_allclose(exp.extras["attribution"], g.abs()[0].numpy(), atol=1e-7)
    with pytest.raises(ValueError, match="output"):
        explain(model, img, "saliency", output="logits")


def test_ig_chunks_respect_batch_size(img):
    sizes = []

    class Spy(SmallNet):
        def forward(self, x):
            sizes.append(x.shape[0])
            return super().forward(x)

    model = wrap(Spy())
    exp = explain(model, img, "integrated_gradients", n_steps=200, batch_size=16)
    assert max(sizes) <= 16 and exp.n_evals == 1 + 200 + 2
    assert sum(sizes) == exp.n_evals
    assert exp.extras["completeness_error"] < 0.01


def test_smoothgrad_composes_any_base(img):
    lin = _init(nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 4)), 9)
    model = wrap(lin)
    w = lin[1].weight[2].detach().reshape(3, SIZE, SIZE)
    exp = explain(model, img, "smoothgrad", target=2, n_samples=6, noise=0.3, batch_size=4)
    np.testing.assert_allclose(exp.map, w.abs().amax(0).numpy(), atol=1e-6)  # gradient of a linear model
    assert exp.n_evals == 1 + 6
    net = SmallNet()
    model = wrap(net)
    for base, opts in [("grad_input", None), ("deeplift", {"baseline": "gray"}), ("integrated_gradients",
                                                                                    {"n_steps": 4})]:
        plain = explain(model, img, base, target=1, **(opts or {}))
        same = explain(model, img, "smoothgrad", target=1, base=base, base_options=opts, noise=0.0, n_samples=3)
        np.testing.assert_allclose(same.map, plain.map, rtol=1e-5, atol=1e-6)
        noisy = explain(model, img, "smoothgrad", target=1, base=base, base_options=opts, n_samples=3)
        assert np.abs(noisy.map - plain.map).max() > 1e-4
    sg = explain(model, img, "smoothgrad", base="integrated_gradients", base_options={"n_steps": 4}, n_samples=3)
    assert sg.n_evals == 1 + 3 * 4
    with pytest.raises(ValueError, match="base"):
        explain(model, img, "smoothgrad", base="lime")
    with pytest.raises(ValueError, match="base_options"):
        explain(model, img, "smoothgrad", base="saliency", base_options={"n_steps": 3})
    # output= reaches the base, as every gradient method's option (same as giving it in base_options)
    prob = explain(model, img, "grad_input", target=1, output="probability")
    for kw in ({"output": "probability"}, {"base_options": {"output": "probability"}}):
        same = explain(model, img, "smoothgrad", target=1, base="grad_input", noise=0.0, n_samples=2, **kw)
        np.testing.assert_allclose(same.map, prob.map, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="disagree"):
        explain(model, img, "smoothgrad", output="probability", base_options={"output": "logit"})
    with pytest.raises(ValueError, match="output: expected one of"):
        explain(model, img, "smoothgrad", output="logits")
    with pytest.raises(ValueError, match="output: expected one of .* got 'logits'"):
        explain(model, img, "smoothgrad", output="logit", base_options={"output": "logits"})


def test_smoothgrad_output_with_a_base_that_has_no_such_option(img, monkeypatch):
    from unveil.methods import gradients

    monkeypatch.setitem(gradients._ATTRIBUTORS, "plain_saliency", lambda ctx: gradients.build_saliency(ctx))
    model = wrap(SmallNet())
    same = explain(model, img, "smoothgrad", target=1, base="plain_saliency", noise=0.0, n_samples=2)
    np.testing.assert_allclose(same.map, explain(model, img, "saliency", target=1).map, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="output: the base method 'plain_saliency' has no option 'output'"):
        explain(model, img, "smoothgrad", base="plain_saliency", output="probability")


# ----------------------------------------------------------------------------- rules and errors
def test_unsupported_nonlinearities_are_named(img):
    model = wrap(ReluNet(act=nn.Hardswish()))
    with pytest.raises(UnsupportedNonlinearity, match="Hardswish"):
        explain(model, img, "deeplift")
    with pytest.raises(UnsupportedNonlinearity, match="Hardswish"):
        explain(model, img, "elrp")
    # rules are data: extend the list and it works (and sums to the difference)
    exp = explain(model, img, "deeplift", target=0, rules=[(nn.Hardswish, Rescale())])
    assert exp.extras["completeness_error"] < 1e-4
    with pytest.raises(TypeError, match="rules"):
        explain(model, img, "deeplift", rules=[(nn.Hardswish, "rescale")])

    class Functional(ReluNet):
        def forward(self, x):
            return torch.sigmoid(super().forward(x))

    with pytest.raises(UnsupportedNonlinearity, match="SigmoidBackward0"):
        explain(wrap(Functional()), img, "deeplift")
    assert explain(wrap(Functional()), img, "saliency").map.shape == (SIZE, SIZE)  # plain gradients are fine


class _Act(nn.Module):
    """ReluNet's ReLU written as another op: the same function, no nonlinearity module."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, z):
        return self.f(z)


@pytest.mark.parametrize("name, f", [
    ("Clamp", lambda z: z.clamp(min=0)),
    ("Maximum", lambda z: torch.maximum(z, torch.zeros(()))),
    ("Where", lambda z: torch.where(z > 0, z, 0.01 * z)),
])
@pytest.mark.parametrize("method", ["deeplift", "elrp"])
def test_relus_written_as_other_ops_are_named_not_passed_as_gradients(img, name, f, method):
    """A ReLU written as clamp / maximum / where is the same function as nn.ReLU but gets no rule: an error
    naming its autograd node (was: plain gradient x input, DeepLIFT's completeness error 0.85)."""
    net = ReluNet(seed=2, act=_Act(f))
    with pytest.raises(UnsupportedNonlinearity, match=name):
        explain(wrap(net), img, method)
    assert hook_count(net) == 0
    ok = explain(wrap(ReluNet(seed=2)), img, method)  # the same network with nn.ReLU modules runs
    if method == "deeplift":
        assert ok.extras["completeness_error"] < 1e-4
    else:  # eps-LRP with ReLU modules: its maps sum (up to eps and biases) to a finite, non-zero total
        assert np.isfinite(ok.map).all() and np.abs(ok.map).max() > 0


def test_efficientnet_package_swish_has_a_rule(img):
    from efficientnet_lite_pytorch.utils import MemoryEfficientSwish

    model = wrap(ReluNet(act=MemoryEfficientSwish()))
    exp = explain(model, img, "deeplift", target=1, baseline="gray")
    assert exp.extras["completeness_error"] < 1e-4


def test_callable_model_gets_type_error(img):
    model = unveil.Model(lambda b: np.ones((len(b), 3)) / 3, input_size=(SIZE, SIZE))
    for name in ("saliency", "grad_input", "integrated_gradients", "smoothgrad", "elrp", "deeplift", "gradcam"):
        with pytest.raises(TypeError, match="gradients"):
            explain(model, img, name)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        input_gradients(model, torch.zeros(1, 3, SIZE, SIZE), 0)


class FailsOnCall(ReluNet):
    def __init__(self, fail_at):
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return super().forward(x)


@pytest.mark.parametrize("name,fail_at", [("deeplift", 1), ("deeplift", 2), ("elrp", 1), ("gradcam", 1),
                                          ("integrated_gradients", 3), ("smoothgrad", 2), ("saliency", 1)])
def test_nothing_left_after_an_exception(img, name, fail_at):
    net = FailsOnCall(fail_at)
    before = set(vars(net)) | {k for m in net.modules() for k in vars(m)}
    grads = [p.requires_grad for p in net.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        explain(wrap(net, batch_size=2), img, name, n_steps=4) if name == "integrated_gradients" else \
            explain(wrap(net, batch_size=2), img, name)
    assert hook_count(net) == 0
    assert [p.requires_grad for p in net.parameters()] == grads
    assert all(p.grad is None for p in net.parameters())
    assert set(vars(net)) | {k for m in net.modules() for k in vars(m)} == before
    assert not torch.overrides._get_current_function_mode_stack()
    # and the same module still explains correctly afterwards
    net.fail_at = -1
    exp = explain(wrap(net), img, "deeplift", target=0)
    assert exp.extras["completeness_error"] < 1e-4


def test_context_manager_leaves_no_trace():
    net = ReluNet()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with ModifiedChainRule(net, deeplift_rules()) as mcr:
        assert mcr.n_units == 2 and hook_count(net) > 0
    assert hook_count(net) == 0 and not torch.overrides._get_current_function_mode_stack()
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("rules", [elrp_rules(), deeplift_rules()], ids=["elrp", "deeplift"])
def test_ruled_units_keep_the_layout_of_their_output(rules):
    """A one-image channels-last activation stays channels-last after a ruled unit: returned as a view of
    itself, its batch stride changed and the next padding and convolution copied it to another layout."""
    act, seen = nn.ReLU6(), []
    net = nn.Sequential(nn.Conv2d(3, 4, 3), act, nn.Conv2d(4, 2, 3)).to(memory_format=torch.channels_last)
    net[2].register_forward_pre_hook(lambda m, a: seen.append(a[0].stride()))
    x = torch.rand(1, 3, 9, 9).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    plain = act(net[0](x))
    with ModifiedChainRule(net, rules) as mcr:
        if rules[0][1].needs_reference:
            with mcr.reference(), torch.no_grad():
                net(torch.zeros_like(x))
        net(x)
    assert seen[-1] == plain.stride() and plain.is_contiguous(memory_format=torch.channels_last)

class ScalesInPlace(nn.Module):
    """A ruled unit's output changed in place after the unit ran (``h = relu(z); h.mul_(1.5).add_(0.3)``), or
    the same out of place."""

    def __init__(self, inplace):
        super().__init__()
        self.c1, self.a1, self.a2, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Tanh(), nn.Linear(6, 4)
        _init(self, 3)
        self.inplace = inplace

    def forward(self, x):
        h = self.a1(self.c1(x))
        h = h.mul_(1.5).add_(0.3) if self.inplace else h * 1.5 + 0.3
        return self.fc(self.a2(h).mean((2, 3)))


@pytest.mark.parametrize("method", ["elrp", "deeplift"])
def test_outputs_changed_in_place_after_a_ruled_unit_give_the_out_of_place_maps(img, method):
    """DeepLIFT's reference pass records each unit's output; changed in place later in the pass, the record was
    overwritten (completeness 0.48 off); the pass is then made again with copies (one more evaluation)."""
    kw = {"baseline": "gray"} if method == "deeplift" else {}
    plain = explain(wrap(ScalesInPlace(False)), img, method, target=1, **kw)
    inplace = explain(wrap(ScalesInPlace(True)), img, method, target=1, **kw)
    np.testing.assert_allclose(inplace.map, plain.map, rtol=1e-5, atol=1e-6)
    if method == "deeplift":
        assert plain.extras["completeness_error"] < 1e-4 and inplace.extras["completeness_error"] < 1e-4
        assert inplace.n_evals == plain.n_evals + 1


# ----------------------------------------------------------------------------- grad-cam
class ColourNet(nn.Module):
    """Channel 0 of the 1x1 conv detects red, channel 1 blue; logit k = spatial mean of channel k."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]]).view(2, 3, 1, 1))
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.act(self.conv(x))).flatten(1)


def test_gradcam_points_at_the_region_the_target_depends_on():
    image = np.full((24, 24, 3), 0.2, np.float32)
    image[2:8, 3:9] = [1.0, 0.0, 0.0]  # red, top left
    image[15:22, 14:21] = [0.0, 0.0, 1.0]  # blue, bottom right
    model = unveil.Model(ColourNet(), input_size=(24, 24))
    for target, (ys, xs) in [(0, (slice(2, 8), slice(3, 9))), (1, (slice(15, 22), slice(14, 21)))]:
        exp = unveil.explain(model, image, method="gradcam", target=target, progress=False)
        assert exp.extras["layer"] == "conv"
        inside = np.zeros((24, 24), bool)
        inside[ys, xs] = True
        y, x = np.unravel_index(np.argmax(exp.map), exp.map.shape)
        assert inside[y, x]
        assert exp.map[inside].mean() > 10 * max(exp.map[~inside].mean(), 1e-6)
    # formula: ReLU(sum_k mean(dS/dA_k) A_k) at the layer's resolution
    x = as_input(model, image)
    a = model.fn.conv(x)
    truth = torch.relu(a[0, 0] * (a[0, 0] > 0).float().mean() / a[0, 0].numel())
    exp = unveil.explain(model, image, method="gradcam", target=0, layer="conv", progress=False)
    np.testing.assert_allclose(np.maximum(exp.extras["raw_map"], 0), truth.detach().numpy(), atol=1e-6)


def test_gradcam_layer_option(img):
    net = SmallNet()
    model = wrap(net)
    assert explain(model, img, "gradcam").extras["layer"] == "c2"
    first = explain(model, img, "gradcam", layer="c1")
    assert first.extras["layer"] == "c1" and first.extras["raw_map"].shape == (SIZE, SIZE)
    with pytest.raises(ValueError, match="no submodule 'nope'"):
        explain(model, img, "gradcam", layer="nope")


# ----------------------------------------------------------------------------- the default model
@pytest.mark.slow
def test_integrated_gradients_completeness_on_the_default_model(default_model):
    image = "/work/shared/data/photos/cat.jpg"
    import os

    if not os.path.exists(image):
        from skimage.data import chelsea

        image = chelsea().astype(np.float32) / 255
    errors = {}
    for n in (50, 200, 500):
        exp = unveil.explain(default_model, image, method="integrated_gradients", n_steps=n, progress=False,
                             batch_size=32)
        errors[n] = exp.extras["completeness_error"]
    print(f"\nintegrated gradients completeness error (default model, {exp.label}): "
          + ", ".join(f"{n} steps {e:.4%}" for n, e in errors.items()))
    assert errors[500] < errors[200] < errors[50]
    assert errors[500] < 0.02


@pytest.mark.slow
def test_modified_rules_on_the_default_model(default_model):
    from skimage.data import chelsea

    image = chelsea().astype(np.float32) / 255
    net = default_model.fn
    exp = unveil.explain(default_model, image, method="deeplift", progress=False)
    assert exp.extras["completeness_error"] < 1e-3  # ReLU6, depthwise convs, batch norm: Rescale sums exactly
    lrp = unveil.explain(default_model, image, method="elrp", progress=False)
    assert np.isfinite(lrp.map).all() and np.abs(lrp.map).max() > 0
    cam = unveil.explain(default_model, image, method="gradcam", progress=False)
    assert cam.extras["layer"] == "_conv_head" and cam.map.min() >= 0
    assert hook_count(net) == 0 and all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("module", [torch.nn.ReLU(), torch.nn.ReLU6(), torch.nn.Hardtanh(-0.5, 2.0),
                                    torch.nn.LeakyReLU(0.2), torch.nn.Sigmoid(), torch.nn.Tanh(), torch.nn.SiLU()])
def test_closed_form_local_gradients_equal_autograd(module):
    from unveil.methods import modified_rules as mr

    z = torch.cat([torch.randn(500, generator=torch.Generator().manual_seed(0)) * 4,
                   torch.tensor([0.0, -0.0, 6.0, -0.5, 2.0, 1e-8, -1e-8])])  # the kinks included
    leaf = z.clone().requires_grad_(True)
    (ref,) = torch.autograd.grad(module(leaf), leaf, torch.ones_like(z))
    assert type(module) in mr._DERIVATIVES
    got = mr.local_gradient(module, z)
    assert got.dtype == z.dtype and got.shape == z.shape
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_saliency_and_grad_input_reuse_the_prediction_pass(img):
    """One forward+backward pass in all (the prediction pass keeps its graph): n_evals 1, the same gradients
    as a separate pass, the same score as the inference pass; a method that does not reuse it is unchanged."""
    net = ReluNet()
    model = wrap(net)
    calls = []
    handle = net.register_forward_pre_hook(lambda m, a: calls.append(torch.is_grad_enabled()))
    try:
        sal = explain(model, img, "saliency")
        gi = explain(model, img, "grad_input")
    finally:
        handle.remove()
    assert sal.n_evals == gi.n_evals == 1 and calls == [True, True]
    _, x = model.prepare(img)
    g = input_gradients(model, x.unsqueeze(0), sal.target)[0]
    np.testing.assert_allclose(sal.extras["attribution"], g.abs().numpy(), atol=1e-6)
    np.testing.assert_allclose(gi.extras["attribution"], (x * g).numpy(), atol=1e-6)
    assert sal.score == pytest.approx(float(model.probabilities(x)[0, sal.target]), abs=1e-6)
    assert all(p.grad is None for p in net.parameters())
    assert explain(model, img, "smoothgrad", n_samples=3).n_evals == 1 + 3


def test_elrp_and_deeplift_reuse_the_prediction_pass(img):
    """The prediction pass runs under the rules (after DeepLIFT's reference pass) and is the method's forward
    pass: n_evals 1 and 2, the same attributions and scores as a separate modified pass, no hooks left."""
    from unveil.perturb import make_baseline

    net = ReluNet()
    model = wrap(net)
    calls = []
    handle = net.register_forward_pre_hook(lambda m, a: calls.append(torch.is_grad_enabled()))
    try:
        el = explain(model, img, "elrp", eps=1e-3)
        dl = explain(model, img, "deeplift", baseline="gray")
    finally:
        handle.remove()
    assert (el.n_evals, dl.n_evals) == (1, 2) and calls == [True, False, True]
    assert hook_count(net) == 0
    _, x = model.prepare(img)
    xs = x.unsqueeze(0)
    g, info = modified_gradients(model, xs, el.target, elrp_rules(1e-3))
    np.testing.assert_allclose(el.extras["attribution"], (xs * g)[0].numpy(), atol=1e-6)
    assert el.extras["score_input"] == pytest.approx(float(info["score_input"][0]), abs=1e-6)
    gray = make_baseline(x, "gray")
    g, info = modified_gradients(model, xs, dl.target, deeplift_rules(), baseline=gray)
    np.testing.assert_allclose(dl.extras["attribution"], ((xs - gray) * g)[0].numpy(), atol=1e-6)
    assert dl.extras["score_baseline"] == pytest.approx(info["score_baseline"], abs=1e-6)
    assert dl.extras["completeness_error"] < 1e-4
    assert el.score == pytest.approx(float(model.probabilities(x)[0, el.target]), abs=1e-6)


@pytest.mark.parametrize("module", [torch.nn.ReLU(), torch.nn.ReLU6(), torch.nn.LeakyReLU(0.2), torch.nn.GELU(),
                                    torch.nn.Hardswish()])
def test_rescale_multiplier_is_the_secant_or_the_derivative(module):
    """Rescale's multiplier against its definition computed element by element in float64: the secant
    (g(z) - g(z0)) / (z - z0), and autograd's g'(z) where |z - z0| <= threshold (z0 = z exactly included);
    the reference is one input broadcast over a batch of 3."""
    gen = torch.Generator().manual_seed(1)
    z0 = torch.randn(1, 4, 5, 5, generator=gen) * 3
    z = z0 + torch.randn(3, 4, 5, 5, generator=gen) * 2
    z[0, 0] = z0[0, 0]  # dz = 0
    z[1, 1] = z0[0, 1] + 5e-6  # |dz| under the threshold
    z[2, 2, :, :2] = torch.tensor([0.0, 6.0, -1e-6, 2e-6, 1.0])[:, None].expand(5, 2)  # kinks
    z0[0, 2, :, :2] = torch.tensor([0.0, 6.0, 1e-6, -2e-6, 1.0])[:, None].expand(5, 2)
    with torch.no_grad():
        y, y0 = module(z), module(z0)
    got = Rescale(1e-5).multiplier(module, z, y, z0, y0)
    leaf = z.double().clone().requires_grad_(True)
    (deriv,) = torch.autograd.grad(module.double()(leaf).sum(), leaf)
    module.float()
    dz = (z - z0).double()
    secant = (y.double() - y0.double()) / torch.where(dz == 0, 1.0, dz)
    ref = torch.where(dz.abs() <= 1e-5, deriv, secant)
    assert got.shape == z.shape and torch.isfinite(got).all()
    assert int((dz.abs() <= 1e-5).sum()) >= 25 + 25 + 8
    torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-4)


def test_gradcam_reuses_the_prediction_pass(img):
    """Grad-CAM records its layer's output during the prediction pass and backpropagates from that pass's
    score: n_evals 1, the same maps as a separate pass, no hooks left; SmoothGrad over it runs its own passes."""
    from unveil.methods.gradcam import gradcam_maps

    net = ReluNet()
    model = wrap(net)
    for layer in (None, "c1"):
        exp = explain(model, img, "gradcam", layer=layer)
        assert exp.n_evals == 1 and hook_count(net) == 0
        _, x = model.prepare(img)
        maps, raw, used = gradcam_maps(model, x.unsqueeze(0), exp.target, layer=layer)
        assert used == exp.extras["layer"] == (layer or "c2")
        np.testing.assert_allclose(exp.extras["raw_map"], raw[0, 0].numpy(), atol=1e-6)
    sg = explain(model, img, "smoothgrad", base="gradcam", n_samples=3)
    assert sg.n_evals == 1 + 3 and np.isfinite(sg.map).all()


def test_gradcam_of_a_layer_whose_output_is_changed_in_place(img):
    """Conv2d followed by ReLU(inplace=True) (VGG's layout): the map is still the conv output's Grad-CAM, equal
    to that of the same network without in-place ReLUs, at one more pass; a layer not changed in place keeps
    the single pass; no hooks left."""
    plain, inplace = ReluNet(seed=3), ReluNet(seed=3, inplace=True)
    for layer, passes in ((None, 2), ("c2", 2), ("c1", 1)):  # c1 is followed by batch norm, not in place
        ref = explain(wrap(plain), img, "gradcam", layer=layer)
        got = explain(wrap(inplace), img, "gradcam", layer=layer)
        assert got.extras["layer"] == ref.extras["layer"] == (layer or "c2")
        np.testing.assert_allclose(got.extras["raw_map"], ref.extras["raw_map"], atol=1e-6)
        np.testing.assert_allclose(got.map, ref.map, atol=1e-6)
        assert ref.n_evals == 1 and got.n_evals == passes and hook_count(inplace) == 0
    sg = explain(wrap(inplace), img, "smoothgrad", base="gradcam", n_samples=3, seed=1)
    sg_ref = explain(wrap(plain), img, "smoothgrad", base="gradcam", n_samples=3, seed=1)
    np.testing.assert_allclose(sg.map, sg_ref.map, atol=1e-6)


class _WithAux(nn.Module):
    """The classifier's path, and an auxiliary conv head computed after it that the output does not use."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8, 3))
        self.aux = nn.Conv2d(3, 2, 1)
        _init(self, 4)

    def forward(self, x):
        out = self.body(x)
        self.aux_out = self.aux(x)
        return out


def test_gradcam_default_layer_is_on_the_output_path_and_empty_maps_are_reported(img):
    """The default layer is the last convolution the score depends on (not an auxiliary head called later); a
    named layer the score does not depend on is an error; an all-0 map (negative everywhere) is a warning."""
    model = wrap(_WithAux())
    exp = explain(model, img, "gradcam")
    named = explain(model, img, "gradcam", layer="body.0")
    assert exp.extras["layer"] == "body.0" and exp.map.any()
    np.testing.assert_array_equal(exp.map, named.map)
    with pytest.raises(ValueError, match="does not depend on layer 'aux'"):
        explain(model, img, "gradcam", layer="aux")
    neg = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():  # positive feature maps, a negative weight from them to class 0
        neg[0].weight.fill_(1.0), neg[0].bias.fill_(1.0), neg[3].weight.copy_(torch.tensor([[-1.0, -1.0], [1, 1]]))
    with pytest.warns(UserWarning, match="negative everywhere"):
        e = explain(wrap(neg), img, "gradcam", target=0)
    assert not e.map.any() and (e.extras["raw_map"] < 0).all()


class _FrozenBackbone(nn.Module):
    """Fine-tuning's pattern: the backbone runs under no_grad, only the head has a graph."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 3)
        _init(self, 5)

    def forward(self, x):
        with torch.no_grad():
            f = self.backbone(x)
        return self.head(f.mean((2, 3)))


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "deeplift", "gradcam", "meaningful",
                                    "learned"])
def test_a_model_whose_scores_do_not_depend_on_the_input_through_autograd_is_named(img, method):
    """Scores with a graph (the head's parameters) that does not reach the input: a clear error in every
    gradient and learned method (not torch's "appears to not have been used in the graph", not an empty map)."""
    net = _FrozenBackbone()
    with pytest.raises(ValueError, match="do not depend differentiably on its input"):
        explain(wrap(net), img, method)
    assert hook_count(net) == 0
    assert explain(wrap(net), img, "occlusion", window=4).map.any()  # black-box methods still work


def test_modules_in_other_float_dtypes_are_run_in_their_dtype(img):
    """A .double() or .bfloat16() module gets its input cast to its dtype and its scores read back as float32:
    float64 gives the float32 module's maps (to float32 rounding), bfloat16 close ones (8-bit mantissa)."""
    ref_net = ReluNet(seed=6)
    for method, kw in (("occlusion", {"window": 4}), ("saliency", {}), ("integrated_gradients", {"n_steps": 8})):
        ref = explain(wrap(ref_net), img, method, **kw)
        got = explain(wrap(ReluNet(seed=6).double()), img, method, **kw)
        assert got.map.dtype == np.float32 and got.target == ref.target
        scale = np.abs(ref.map).max()
        np.testing.assert_allclose(got.map / scale, ref.map / scale, atol=1e-5)
        low = explain(wrap(ReluNet(seed=6).bfloat16()), img, method, **kw)
        assert low.map.dtype == np.float32 and np.corrcoef(low.map.ravel(), ref.map.ravel())[0, 1] > 0.9
    assert unveil.Model(ReluNet().double()).dtype == torch.float64
    assert unveil.Model(lambda b: b.mean(axis=(1, 2))).dtype is None


class _PerImageStandardized(nn.Module):
    """Standardizes each image in its forward: a constant image (the zero baseline) has std 0 -> NaN scores."""

    def __init__(self):
        super().__init__()
        self.c, self.act, self.fc = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Linear(4, 3)
        _init(self, 7)

    def forward(self, x):
        x = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True)
        return self.fc(self.act(self.c(x)).mean((2, 3)))


@pytest.mark.parametrize("method", ["integrated_gradients", "deeplift"])
def test_a_nan_score_on_the_baseline_is_named(img, method):
    """IG's completeness and DeepLIFT's reference pass read the baseline's score: NaN there is an error that
    names the baseline (IG returned a map of noise and a NaN completeness error)."""
    model = wrap(_PerImageStandardized())
    with pytest.raises(ValueError, match="score of nan on the baseline"):
        explain(model, img, method)
    if method == "integrated_gradients":
        ok = explain(model, img, method, baseline="blur", n_steps=16)
        assert np.isfinite(ok.map).all() and np.isfinite(ok.extras["completeness_error"])


def test_long_gradient_methods_report_progress(img, monkeypatch):
    """Integrated gradients counts its path points on a progress bar; SmoothGrad counts its samples on one bar
    and keeps the bar of the method it wraps off; progress=False turns them off."""
    import importlib

    gm = importlib.import_module("unveil.methods.gradients")  # (unveil.methods is also a function)
    bars = []

    class Bar:
        def __init__(self, total, desc, enabled, unit="img"):
            self.record = {"total": total, "desc": desc, "enabled": enabled, "done": 0}
            bars.append(self.record)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.record["done"] += n

    monkeypatch.setattr(gm, "progress_bar", Bar)
    model = wrap(ReluNet(), batch_size=3)
    unveil.explain(model, img, method="integrated_gradients", n_steps=20, progress=True)
    assert bars == [{"total": 20, "desc": "integrated gradients", "enabled": True, "done": 20}]
    bars.clear()
    unveil.explain(model, img, method="smoothgrad", base="integrated_gradients", base_options={"n_steps": 4},
                   n_samples=5, progress=True)
    assert bars[0] == {"total": 5, "desc": "smoothgrad (integrated_gradients)", "enabled": True, "done": 5}
    assert len(bars) == 1 + 2 and not any(b["enabled"] for b in bars[1:])  # one IG call per chunk of 3 samples
    bars.clear()
    unveil.explain(model, img, method="integrated_gradients", n_steps=20, progress=False)
    assert bars[0]["enabled"] is False


def test_threads_sharing_one_model_get_the_same_maps_as_one_thread():
    """The modified chain rules and Grad-CAM put hooks on the module for a while: other threads' passes wait
    for them instead of running through them (they did: saliency maps changed, ε-LRP lost its units)."""
    import threading

    from conftest import tiny_model

    model = tiny_model()
    img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    methods = ("saliency", "elrp", "deeplift", "gradcam", "grad_input", "occlusion")
    ref = {m: unveil.explain(model, img, method=m, progress=False).map for m in methods}
    errors, worst = [], {m: 0.0 for m in methods}

    def work(method):
        try:
            for _ in range(6):
                got = unveil.explain(model, img, method=method, progress=False).map
                worst[method] = max(worst[method], float(np.abs(got - ref[method]).max()))
        except Exception as err:  # noqa: BLE001 - collected and asserted below
            errors.append(f"{method}: {err!r}")

    threads = [threading.Thread(target=work, args=(m,)) for m in methods * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert max(worst.values()) <= 1e-6, worst


def test_completeness_error_by_hand():
    """completeness_error = |sum of attributions - (s(x) - s(b))| / |s(x) - s(b)|, with s from the bare module."""
    from unveil.methods.gradients import completeness_error
    assert completeness_error(2.5, 5.0, 2.0) == pytest.approx(0.5 / 3.0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.Tanh(),
                              torch.nn.Linear(16, 3))
    model = unveil.Model(net, input_size=(8, 8))
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="integrated_gradients", target=1, n_steps=1, integration="riemann_left",
                         progress=False)  # one left point: a large, well-defined completeness gap
    x = torch.from_numpy(img.transpose(2, 0, 1))[None]
    with torch.no_grad():
        delta = float(net(x)[0, 1] - net(torch.zeros_like(x))[0, 1])
    total = float(exp.extras["attribution"].astype(np.float64).sum())
    assert exp.extras["completeness_error"] == pytest.approx(abs(total - delta) / abs(delta), rel=1e-4)


class _Temperature(nn.Module):
    """A learned temperature: exp of a parameter, a branch that never touches the input."""

    def __init__(self):
        super().__init__()
        self.body = ReluNet(seed=8)
        self.logit_scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        return self.body(x) * self.logit_scale.exp()


class _HandNorm(nn.Module):
    """A hand-written normalization (pow, sqrt: nonlinear ops, not an activation module)."""

    def forward(self, z):
        return z / (z.pow(2).mean(dim=1, keepdim=True) + 1e-5).sqrt()


def test_modified_rules_ignore_parameter_only_branches_and_honour_gradient_rules(img):
    """Only nonlinearities on the way from the input count: a learned temperature passes (its exp is a
    function of a parameter); a where/clamp inside a module ruled by Gradient() is accepted as its gradient."""
    t = explain(wrap(_Temperature()), img, "deeplift")
    plain = explain(wrap(ReluNet(seed=8)), img, "deeplift")
    np.testing.assert_allclose(t.map, plain.map * np.exp(0.5), rtol=1e-4, atol=1e-6)  # a constant factor
    net = ReluNet(seed=2, act=_Act(lambda z: torch.where(z > 0, z, 0.01 * z)))
    with pytest.raises(UnsupportedNonlinearity, match="Where"):
        explain(wrap(net), img, "elrp")
    assert np.isfinite(explain(wrap(net), img, "elrp", rules=[(_Act, Gradient())]).map).all()
    normed = ReluNet(seed=2, act=nn.Sequential(_HandNorm(), nn.ReLU()))
    assert np.isfinite(explain(wrap(normed), img, "deeplift").map).all()  # pow/sqrt: not flagged


class _SharedConv(nn.Module):
    """One conv called twice: on the output's path (then an in-place ReLU), and on an auxiliary branch."""

    def __init__(self, inplace):
        super().__init__()
        self.c0, self.c, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.Linear(4, 3)
        self.inplace = inplace
        _init(self, 9)

    def forward(self, x):
        h = self.c(torch.relu(self.c0(x)))
        h = torch.relu_(h) if self.inplace else torch.relu(h)
        self.aux = self.c(h)  # stored, not returned
        return self.fc(h.mean((2, 3)))


def test_gradcam_of_a_layer_called_twice_uses_the_call_the_score_depends_on(img):
    """A named layer (or the default) called more than once: the last call whose output reaches the score,
    with or without an in-place ReLU after it; all four give the same map."""
    maps = []
    for inplace in (False, True):
        for layer in (None, "c"):
            exp = explain(wrap(_SharedConv(inplace)), img, "gradcam", layer=layer, target=0)
            assert exp.extras["layer"] == "c"
            maps.append(exp.extras["raw_map"])
    for m in maps[1:]:
        np.testing.assert_allclose(m, maps[0], atol=1e-6)
