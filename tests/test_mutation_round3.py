"""Third mutation-testing round (model adapter, ONNX models, explain, compare, LIME, KernelSHAP, RISE, tables).

Each test pins a behaviour that a surviving mutant changed, against a value worked out independently (by hand,
by brute force, by another library, or a documented rule), on small models built here.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import unveil


def export_graph(module: nn.Module, path, shape, dynamic: dict) -> str:
    """``module`` exported to ONNX at ``path`` for an example input of ``shape``, with ``dynamic`` axes of the
    input (named "image"); the batch axis of the output is free too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter announces its deprecation
        torch.onnx.export(module.eval(), (torch.rand(*shape),), str(path), input_names=["image"],
                          output_names=["scores"], dynamic_axes={"image": dynamic, "scores": {0: "batch"}},
                          dynamo=False)
    return str(path)


class PooledNHWC(nn.Module):
    """Any image size, channels last (N x H x W x 3): the per-channel means through a fixed linear layer."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[3.0, -1.0, 0.5], [-2.0, 2.0, 1.0], [0.0, 1.0, -3.0], [1.0, 1.0, 1.0]]))
            self.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))

    def forward(self, x):
        return self.fc(x.mean(dim=(1, 2)))


# ============================================================================= models/onnx.py
def test_a_channels_last_graph_with_free_height_and_width_is_read_as_channels_last(tmp_path):
    """The docstring's rule: N x H x W x C when the last dimension is fixed and the second is free. Such a graph
    takes any image size, and a given ``input_size`` is then taken as it is (no graph size to disagree with)."""
    path = export_graph(PooledNHWC(), tmp_path / "nhwc_free.onnx", (2, 20, 20, 3), {0: "batch", 1: "h", 2: "w"})
    m = unveil.Model.from_onnx(path, mean=0.0, std=1.0, batch_size=4)
    assert m.fn.channels_last and m.channels == 3 and m.input_size is None
    rng = np.random.default_rng(0)
    batch = torch.from_numpy(rng.random((3, 3, 12, 16)).astype(np.float32))
    means = batch.mean(dim=(2, 3))  # the graph's own arithmetic, by hand
    expected = torch.softmax(PooledNHWC().fc(means), dim=1)
    assert torch.allclose(m.probabilities(batch), expected.detach(), atol=1e-5)
    sized = unveil.Model.from_onnx(path, mean=0.0, std=1.0, batch_size=4, input_size=(24, 24))
    assert sized.input_size == (24, 24)
    assert torch.allclose(sized.probabilities(batch), expected.detach(), atol=1e-5)


class Pooled(nn.Module):
    """N x 3 x H x W: per-channel means through a fixed linear layer (4 classes)."""

    def __init__(self):
        super().__init__()
        self.inner = PooledNHWC()

    def forward(self, x):
        return self.inner(x.permute(0, 2, 3, 1))


def test_to_onnx_of_a_three_channel_model_without_normalization_adds_none(tmp_path):
    """A torch Model without mean/std feeds its module the batch in [0, 1]; its export must too (ImageNet's
    normalization, the default of a 3-channel graph loaded alone, would change every score)."""
    t = unveil.Model(Pooled(), input_size=(8, 8), batch_size=4)
    o = t.to_onnx(tmp_path / "plain.onnx")
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = torch.softmax(Pooled().inner.fc(x.mean(dim=(2, 3))), dim=1).detach()
    assert torch.allclose(t.probabilities(x), expected, atol=1e-5)
    assert torch.allclose(o.probabilities(x), expected, atol=1e-5)


# ============================================================================= models/base.py
def test_onnxruntime_passes_of_a_torch_model_are_normalized_as_the_torch_passes():
    """``use_onnxruntime``: same preprocessing; (x - mean) / std is applied before the session as before torch."""
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)
    hybrid = unveil.Model(Pooled(), input_size=(8, 8), mean=mean, std=std, batch_size=4).use_onnxruntime()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    z = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    expected = torch.softmax(Pooled().inner.fc(z.mean(dim=(2, 3))), dim=1).detach()
    got = hybrid.probabilities(x)
    assert hybrid._ort is not None  # the passes ran on ONNX Runtime
    assert torch.allclose(got, expected, atol=1e-5)


def test_probabilities_below_zero_beyond_the_rounding_slack_are_refused():
    """Declared probabilities must lie in [0, 1] up to 1e-3 of rounding, on either side."""
    def make(lo):
        return unveil.Model(lambda b: np.tile([[lo, 0.5, 0.5 - lo]], (len(b), 1)), outputs="probabilities")

    x = torch.rand(2, 3, 4, 4)
    assert make(-5e-4).probabilities(x).shape == (2, 3)  # within the slack
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        make(-0.01).probabilities(x)


class SumsToOne(nn.Module):
    """Logits whose rows sum to 1 but hold a negative value: not probabilities."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.tensor([[-1.0, 1.5, 0.5]]).repeat(x.shape[0], 1) + 0 * self.w


def test_logits_with_a_negative_value_do_not_look_like_probabilities():
    """The warning names rows that are non-negative *and* sum to 1; logits (-1, 1.5, 0.5) are no such row."""
    m = unveil.Model(SumsToOne(), input_size=(4, 4), batch_size=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = m.probabilities(torch.rand(2, 3, 4, 4))
    assert torch.allclose(p, torch.softmax(torch.tensor([[-1.0, 1.5, 0.5]] * 2), dim=1))
    probs = unveil.Model(lambda b: torch.tensor([[0.2, 0.5, 0.3]]).repeat(len(b), 1).numpy(), outputs="logits")
    with pytest.warns(UserWarning, match="look like probabilities"):
        probs.probabilities(torch.rand(2, 3, 4, 4))


class Percentages(nn.Module):
    """Ends in a Softmax, then scales to percent: its rows sum to 100, yet they are probabilities."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.soft = nn.Softmax(dim=1)

    def forward(self, x):
        return self.soft(self.fc(x.mean(dim=(2, 3)))) * 100


def test_a_module_whose_last_layer_is_a_softmax_is_warned_about_when_read_as_logits():
    """The documented rule: a torch module whose last layer is a Sigmoid *or a Softmax* gets the warning, even
    when its rows do not sum to 1."""
    m = unveil.Model(Percentages(), input_size=(4, 4), batch_size=2)
    with pytest.warns(UserWarning, match="last layer is Softmax"):
        m.probabilities(torch.rand(2, 3, 4, 4))


def test_a_callable_returning_another_number_of_rows_than_inputs_is_refused():
    m = unveil.Model(lambda b: np.full((1, 3), 1 / 3), batch_size=8)
    with pytest.raises(ValueError, match=r"for a batch of 3; expected \(3, classes\)"):
        m.probabilities(torch.rand(3, 3, 4, 4))


def test_predict_lists_every_class_when_k_exceeds_their_number():
    m = unveil.Model(lambda b: np.tile([[0.2, 0.5, 0.3]], (len(b), 1)), labels=["a", "b", "c"])
    top = m.predict(np.zeros((4, 4, 3), np.float32), k=5)
    assert [(i, lab) for i, lab, _ in top] == [(1, "b"), (2, "c"), (0, "a")]
    assert [p for _, _, p in top] == pytest.approx([0.5, 0.3, 0.2])
    assert len(m.predict(np.zeros((4, 4, 3), np.float32), k=3)) == 3


# ============================================================================= api.py
def _flat(b):
    """A model that ignores its input: probabilities (0.3, 0.7) always."""
    return np.tile([[0.3, 0.7]], (len(b), 1))


def test_explain_warns_about_a_flat_map():
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match="occlusion: the map is all 0, so it ranks no pixel"):
        unveil.explain(unveil.Model(_flat), img, method="occlusion", window=4, progress=False)


def test_explain_adds_no_flat_map_warning_where_streak_warns_itself():
    """STREAK keeping nothing with ``fill="none"`` says why itself; with another fill a flat map is explain's
    to warn about."""
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    opts = dict(method="streak", segmentation="grid", n_features=4, progress=False)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        unveil.explain(unveil.Model(_flat), img, fill="none", **opts)
    texts = [str(w.message) for w in got]
    assert texts and not any("so it ranks no pixel" in t for t in texts)
    with pytest.warns(UserWarning, match="streak: the map is all 0, so it ranks no pixel"):
        unveil.explain(unveil.Model(_flat), img, fill="singletons", **opts)


def test_explain_refuses_a_method_that_spends_one_evaluation_over_its_budget(monkeypatch):
    """The budget is the most evaluations: one more (a method bug) is a RuntimeError, exactly the budget is not."""
    import dataclasses
    import functools

    import unveil.api as api

    real = api.get_method

    def spending(extra):
        def get(name):
            spec = real(name)

            @functools.wraps(spec.fn)  # the same options
            def fn(ctx, **options):
                result = spec.fn(ctx, **options)
                while ctx.counter[0] < ctx.budget + extra:  # top up to the budget (+ extra) with real passes
                    ctx.model.probabilities(ctx.x.unsqueeze(0), batch_size=1)
                return result
            return dataclasses.replace(spec, fn=fn)
        return get

    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    model = unveil.Model(lambda b: np.stack([b.mean(axis=(1, 2, 3)), 1 - b.mean(axis=(1, 2, 3))], 1))
    monkeypatch.setattr(api, "get_method", spending(0))
    assert unveil.explain(model, img, method="occlusion", window=4, budget=12, progress=False).n_evals == 12
    monkeypatch.setattr(api, "get_method", spending(1))
    with pytest.raises(RuntimeError, match="spent 13 evaluations, over its budget of 12"):
        unveil.explain(model, img, method="occlusion", window=4, budget=12, progress=False)


def test_a_bilinear_map_is_upsampled_bilinearly_to_the_image():
    """RISE's map is made at the model's size and resized to the image's bilinearly (scikit-image's order-1
    resize with edge mode), not copied in blocks. A white image is all ones at any size, so the model sees the
    same input for a 8 x 8 and a 32 x 32 one and makes the same small map."""
    from skimage.transform import resize

    model = unveil.Model(lambda b: np.stack([b.mean(axis=(1, 2, 3)), 1 - b.mean(axis=(1, 2, 3))], 1),
                         input_size=(8, 8), outputs="scores")
    small = unveil.explain(model, np.ones((8, 8, 3), np.float32), method="rise", target=0, n_masks=50, seed=1,
                           progress=False).map
    big = unveil.explain(model, np.ones((32, 32, 3), np.float32), method="rise", target=0, n_masks=50, seed=1,
                         progress=False).map
    assert np.ptp(small) > 0
    np.testing.assert_allclose(big, resize(small.astype(np.float64), (32, 32), order=1, mode="edge"), atol=1e-5)


def test_explanation_params_record_the_budget_given():
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    model = unveil.Model(lambda b: np.stack([b.mean(axis=(1, 2, 3)), 1 - b.mean(axis=(1, 2, 3))], 1))
    exp = unveil.explain(model, img, method="occlusion", window=4, budget=12, progress=False)
    assert exp.params["budget"] == 12 and exp.params["window"] == 4
    assert unveil.explain(model, img, method="occlusion", window=4, progress=False).params["budget"] is None


# ============================================================================= methods/lime.py
def test_lime_first_mask_keeps_every_segment():
    """As the lime package: sample 0 is the unperturbed input; the others keep each segment with probability 1/2."""
    from unveil.methods.lime import sample_masks

    for seed in range(5):
        masks = sample_masks(np.random.default_rng(seed), 40, 12)
        assert masks.shape == (40, 12) and masks[0].all()
        assert not masks[1:].all(axis=1).any()  # 39 random rows of 12 fair coins: none all ones here


def test_all_zero_scores_are_constant_and_give_zero_weights_r2_one_and_their_own_intercept():
    """Scores that do not vary give weights exactly 0, R² 1 and the constant as intercept: the surrogate then
    predicts the scores exactly (as a ridge fit of a constant does: intercept = the weighted mean)."""
    from unveil.methods.lime import constant_scores, fit_surrogate, weighted_ridge

    assert constant_scores(np.zeros(4))
    X = np.random.default_rng(0).integers(0, 2, (20, 5)).astype(float)
    w = np.linspace(0.1, 1, 20)
    coef, intercept, r2 = fit_surrogate(X, np.zeros(20), w)
    assert np.all(coef == 0) and intercept == 0 and r2 == 1.0
    coef, intercept, r2 = fit_surrogate(X, np.full(20, 0.7), w)
    ridge_coef, ridge_intercept = weighted_ridge(X, np.full(20, 0.7), w)
    assert np.all(coef == 0) and r2 == 1.0
    assert intercept == pytest.approx(0.7) and intercept == pytest.approx(ridge_intercept)


@pytest.mark.parametrize("y, pred, w", [
    (np.ones(4), np.array([1.0, 2.0, 1.0, 1.0]), np.ones(4)),  # constant scores, predictions off
    (np.ones(4), np.ones(4), np.ones(4)),  # constant, predicted exactly
    (np.array([1.0, 2.0, 1.0]), np.array([0.0, 2.0, 1.0]), np.array([1.0, 0.0, 1.0])),  # weighted spread 0
    (np.array([1.0, 2.0, 1.0]), np.array([1.0, 5.0, 1.0]), np.array([1.0, 0.0, 1.0])),
    (np.array([0.2, 0.9, 0.4, 0.1]), np.array([0.3, 0.7, 0.4, 0.2]), np.array([0.5, 1.0, 2.0, 0.1])),
])
def test_weighted_r2_is_sklearns_r2_score_with_sample_weights(y, pred, w):
    from sklearn.metrics import r2_score

    from unveil.methods.lime import weighted_r2

    assert weighted_r2(y, pred, w) == pytest.approx(r2_score(y, pred, sample_weight=w), abs=1e-12)


def test_lime_warns_when_samples_do_not_exceed_features():
    """The fit of as many samples as features is underdetermined (an intercept too): it warns at n = k."""
    from unveil.methods.lime import warn_few_samples

    with pytest.warns(UserWarning, match="5 samples"):
        warn_few_samples(5, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_few_samples(6, 5)


def test_highest_weights_selection_ranks_by_absolute_ridge_weight():
    """'highest_weights': the k features with the largest |weight| of a weighted ridge fit (sklearn's Ridge
    here), a strongly negative feature included."""
    from sklearn.linear_model import Ridge

    from unveil.methods.lime import select_highest_weights

    rng = np.random.default_rng(3)
    X = rng.integers(0, 2, (200, 6)).astype(float)
    y = X @ np.array([0.5, -3.0, 0.1, 1.0, -0.05, 0.0]) + 0.01 * rng.standard_normal(200)
    w = rng.random(200) + 0.5
    ref = Ridge(alpha=1.0).fit(X, y, sample_weight=w).coef_
    expected = np.argsort(-np.abs(ref))[:3]
    got = select_highest_weights(X, y, w, 3)
    assert got.tolist() == expected.tolist() == [1, 3, 0]


def _linear_image_model(coef, size=8):
    """A callable scoring class 0 as a fixed linear form of the 4 x 4 grid cells' mean brightness (class 1 the
    rest), so segment effects are additive."""
    coef = np.asarray(coef, np.float64)

    def fn(b):
        cells = b.mean(axis=3).reshape(len(b), 4, size // 4, 4, size // 4).mean(axis=(2, 4)).reshape(len(b), -1)
        s = 0.1 + cells @ coef
        return np.stack([s, 1 - s], axis=1).astype(np.float32)

    return unveil.Model(fn, input_size=(size, size), outputs="scores", batch_size=64)


def test_lime_under_a_budget_takes_the_input_as_a_free_first_sample():
    """Row 0 is the unperturbed input, already scored by the prediction pass: a budget of B evaluations buys B
    samples (B - 1 new masks), never more evaluations than B."""
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    m = _linear_image_model(np.linspace(-0.03, 0.05, 16))
    exp = unveil.explain(m, img, method="lime", target=0, budget=40, n_samples=1000, segmentation="grid",
                         n_features=16, baseline="zero", progress=False)
    assert exp.extras["n_samples"] == 40 and exp.n_evals <= 40


def test_lime_local_prediction_is_the_surrogates_value_at_the_full_mask():
    """``local_prediction``: the surrogate at the all-ones mask (intercept + sum of weights). Scores exactly
    linear in the mask (a zero baseline over the model's own cells) and an unpenalized fit (alpha=0) make the
    surrogate exact, so that value is the model's score of the input itself."""
    img = np.random.default_rng(1).random((8, 8, 3)).astype(np.float32)
    m = _linear_image_model(np.linspace(-0.3, 0.5, 16))
    exp = unveil.explain(m, img, method="lime", target=0, n_samples=80, segmentation="grid", n_features=16,
                         baseline="zero", alpha=0.0, seed=4, progress=False)
    assert exp.extras["r2"] == pytest.approx(1.0)
    assert exp.extras["intercept"] == pytest.approx(0.1, abs=1e-6)  # the score of the all-hidden (black) input
    assert exp.extras["local_prediction"] == pytest.approx(exp.score, abs=1e-5)


def test_lime_n_select_beyond_the_segment_count_is_the_segment_count():
    """A cardinality limit of 100 on 16 segments is the same constraint as 16 (none): STREAK's selection, whose
    thresholds scale with the limit, must come out the same."""
    coef = np.zeros(16)
    coef[[0, 3, 5, 10]] = [0.5, 0.02, -0.3, 0.2]

    def fn(b):
        cells = b.mean(axis=3).reshape(len(b), 4, 2, 4, 2).mean(axis=(2, 4)).reshape(len(b), -1)
        s = 0.1 + cells @ coef + 0.3 * cells[:, 0] * cells[:, 5]
        return np.stack([s, 1 - s], axis=1)

    m = unveil.Model(fn, input_size=(8, 8), outputs="scores")
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    opts = dict(method="lime", target=0, segmentation="grid", n_features=16, baseline="zero", selection="streak",
                n_samples=80, progress=False)
    for seed in (0, 3):
        at_k = unveil.explain(m, img, n_select=16, seed=seed, **opts)
        beyond = unveil.explain(m, img, n_select=100, seed=seed, **opts)
        assert beyond.extras["selected"] == at_k.extras["selected"]
        np.testing.assert_array_equal(beyond.weights, at_k.weights)


# ============================================================================= methods/kernelshap.py
@pytest.mark.parametrize("n", [1, 6, 7])
def test_paired_coalitions_are_n_rows_each_followed_by_its_complement(n):
    """n x K coalitions, in pairs (z, 1 - z), never empty nor full; an odd n ends on an unpaired z."""
    from unveil.methods.kernelshap import sample_coalitions

    z = sample_coalitions(np.random.default_rng(n), n, 5, paired=True)
    assert z.shape == (n, 5)
    assert np.all((z.sum(axis=1) > 0) & (z.sum(axis=1) < 5))
    np.testing.assert_array_equal(z[1::2], 1 - z[0:len(z) - len(z) % 2:2])


def _additive_two_cells(b):
    """Class 0 scores 0.2 + 0.5 * (left half's mean) + 0.1 * (right half's mean); class 1 the rest."""
    left, right = b[:, :, :4].mean(axis=(1, 2, 3)), b[:, :, 4:].mean(axis=(1, 2, 3))
    s = 0.2 + 0.5 * left + 0.1 * right
    return np.stack([s, 1 - s], axis=1)


def test_kernelshap_efficiency_holds_when_no_sample_is_informative():
    """Uniform sampling's first mask is the full coalition (a constraint, not a sample): with one sample nothing
    is left to fit, and the difference f(all) - f(none) is split evenly; the surrogate at the full coalition is
    f(all) (efficiency, exact by construction)."""
    img = np.full((8, 8, 3), 0.8, np.float32)
    model = unveil.Model(_additive_two_cells, input_size=(8, 8), outputs="scores")
    with pytest.warns(UserWarning, match="constant"):  # an even split ranks nothing, and explain says so
        exp = unveil.explain(model, img, method="kernelshap", target=0, segmentation="grid", n_features=2,
                             baseline="zero", sampling="uniform", n_samples=1, progress=False)
    assert exp.extras["n_samples"] == 1  # the coalitions drawn, the full one among them
    f_all, f_none = 0.2 + 0.6 * 0.8, 0.2
    assert exp.extras["f_all"] == pytest.approx(f_all, abs=1e-6)
    assert exp.extras["intercept"] == pytest.approx(f_none, abs=1e-6)
    np.testing.assert_allclose(exp.weights, [(f_all - f_none) / 2] * 2, atol=1e-6)
    assert exp.extras["local_prediction"] == pytest.approx(f_all, abs=1e-6)


def test_kernelshap_of_an_additive_model_and_its_local_prediction():
    """Shapley values of an additive model are its terms: 0.5 * 0.8 and 0.1 * 0.8 over a zero baseline; the
    surrogate at the full coalition is f(all)."""
    img = np.full((8, 8, 3), 0.8, np.float32)
    model = unveil.Model(_additive_two_cells, input_size=(8, 8), outputs="scores")
    exp = unveil.explain(model, img, method="kernelshap", target=0, segmentation="grid", n_features=2,
                         baseline="zero", n_samples=6, progress=False)
    np.testing.assert_allclose(exp.weights, [0.4, 0.08], atol=1e-6)
    assert exp.extras["local_prediction"] == pytest.approx(0.2 + 0.48, abs=1e-6)


def test_kernelshap_pairs_coalitions_with_their_complements_only_when_paired():
    """``paired=True`` evaluates every coalition with its complement; ``paired=False`` draws them independently
    (the set of coalitions seen is then not closed under complement)."""
    seen = []

    def fn(b):
        cells = b.mean(axis=3).reshape(len(b), 2, 4, 3, 4).mean(axis=(2, 4)).reshape(len(b), -1)
        seen.extend(map(tuple, (cells > 0).astype(int)))
        s = 0.1 + cells @ np.linspace(0.1, 0.6, 6)
        return np.stack([s, 1 - s], axis=1)

    img = np.full((8, 12, 3), 0.5, np.float32)
    model = unveil.Model(fn, input_size=(8, 12), outputs="scores")
    for paired in (True, False):
        seen.clear()
        unveil.explain(model, img, method="kernelshap", target=0, segmentation="grid", n_features=6,
                       baseline="zero", n_samples=20, paired=paired, seed=2, progress=False)
        inner = {z for z in seen if 0 < sum(z) < 6}
        closed = all(tuple(1 - v for v in z) in inner for z in inner)
        assert closed == paired


# ============================================================================= compare.py
def test_compare_takes_a_comma_separated_string_of_methods_with_blanks():
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    model = unveil.Model(lambda b: np.stack([b.mean(axis=(1, 2, 3)), 1 - b.mean(axis=(1, 2, 3))], 1))
    cmp = unveil.compare(model, img, methods=" occlusion , ", random_floor=False, progress=False,
                         options={"occlusion": {"window": 4}})
    assert [e.method for e in cmp.entries] == ["occlusion"]
    with pytest.raises(ValueError, match="non-empty list"):
        unveil.compare(model, img, methods=" , ", progress=False)


@pytest.mark.filterwarnings("ignore:occlusion. the map is all 0")  # the model ignores its input
def test_compare_top_classes_break_ties_by_class_number_as_explain_does():
    """``top`` is sorted by probability, ties by class number, so its first class is the one ``explain`` picks
    by default (numpy's argmax: the first of equal maxima) and the one compare explains."""
    img = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    model = unveil.Model(lambda b: np.tile([[0.1, 0.3, 0.3, 0.3]], (len(b), 1)))
    cmp = unveil.compare(model, img, methods=["occlusion"], budget=20, random_floor=False, progress=False,
                         options={"occlusion": {"window": 4}})
    assert [i for i, _, _ in cmp.top] == [1, 2, 3, 0]
    assert cmp.targets == [1] == [unveil.explain(model, img, method="occlusion", window=4, progress=False).target]
    assert cmp.budget == 20 and cmp.table()[0]["n_evals"] <= 20


# ============================================================================= tabular.py
def test_libsvm_labels_of_two_other_values_map_the_larger_to_one(tmp_path):
    from unveil.tabular import load_libsvm

    path = tmp_path / "two.svm"
    path.write_text("5 1:0.5\n2 2:1.5\n5 1:2\n")
    X, y = load_libsvm(path)
    assert y.tolist() == [1, 0, 1]
    np.testing.assert_array_equal(X, [[0.5, 0], [0, 1.5], [2, 0]])


def _logistic_data(seed=0, n=200):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, 2)) * 3
    y = (Z @ [1.0, -0.5] + rng.standard_normal(n) > 0).astype(np.int64)
    return Z, y


@pytest.mark.parametrize("beta0", [None, [0.0, 30.0, 30.0], [5.0, -40.0, 20.0]])
def test_fit_logistic_reaches_sklearns_optimum_from_a_far_warm_start(beta0):
    """Newton steps from far away overshoot; step halving keeps the objective increasing, so any warm start
    ends at the one optimum: scikit-learn's L2 logistic regression with C = 1 / l2."""
    from sklearn.linear_model import LogisticRegression

    from unveil.tabular import fit_logistic

    Z, y = _logistic_data()
    ref = LogisticRegression(C=1 / 1e-3, tol=1e-10, max_iter=10000).fit(Z, y)
    coef, intercept, ll = fit_logistic(Z, y, 1e-3, beta0=None if beta0 is None else np.array(beta0))
    np.testing.assert_allclose(coef, ref.coef_[0], rtol=1e-5)
    assert intercept == pytest.approx(ref.intercept_[0], abs=1e-5)
    p = ref.predict_proba(Z)[:, 1]
    assert ll == pytest.approx(float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))), rel=1e-8)


def test_logistic_likelihood_takes_no_penalty():
    """``l2`` is a number >= 0: 0 is the plain maximum likelihood fit (scikit-learn's penalty=None)."""
    from sklearn.linear_model import LogisticRegression

    from unveil.tabular import LogisticLikelihood

    Z, y = _logistic_data(1)
    f = LogisticLikelihood(Z, y, l2=0)
    coef, intercept, ll = f.fit((0, 1))
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10000).fit(Z, y)
    np.testing.assert_allclose(coef, ref.coef_[0], rtol=1e-5)
    assert f([(0, 1)])[0] == pytest.approx(ll, rel=1e-9)


def test_logistic_likelihood_counts_every_set_it_fits():
    from unveil.tabular import LogisticLikelihood

    Z, y = _logistic_data(2)
    f = LogisticLikelihood(Z, y)
    f([(0,), (1,), (0, 1)])
    assert f.fits == 3
    f([(1, 0)])
    assert f.fits == 4


def test_streak_feature_selection_streams_the_features_in_a_seeded_random_order(monkeypatch):
    import unveil.tabular as tab

    orders = {}

    def recording(f, order, k, eps, **kw):
        orders.setdefault(seed, []).append(list(order))
        return real(f, order, k, eps, **kw)

    real = tab.streak
    monkeypatch.setattr(tab, "streak", recording)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 8))
    y = (X[:, 0] + 0.5 * rng.standard_normal(60) > 0).astype(int)
    for seed in (0, 1, 2, 0):
        tab.select_features(X, y, 2, method="streak", seed=seed)
    assert all(sorted(o) == list(range(8)) for runs in orders.values() for o in runs)
    assert orders[0][0] == orders[0][1]  # the same seed, the same order
    assert len({tuple(runs[0]) for runs in orders.values()}) == 3  # other seeds, other orders
    assert any(runs[0] != list(range(8)) for runs in orders.values())


def test_logistic_likelihood_falls_back_to_a_full_fit_when_the_warm_iteration_does_not_converge():
    """With one warm (chord Newton) iteration allowed, the batched values must still be the exact optima:
    the full fit's, and scikit-learn's."""
    from sklearn.linear_model import LogisticRegression

    from unveil.tabular import LogisticLikelihood

    Z, y = _logistic_data(3)
    f = LogisticLikelihood(Z, y, max_iter=1)
    one = f([(0,), (1,)])
    two = f([(0, 1)])
    for s, value in (((0,), one[0]), ((1,), one[1]), ((0, 1), two[0])):
        ref = LogisticRegression(C=1 / 1e-3, tol=1e-10, max_iter=10000).fit(Z[:, list(s)], y)
        p = ref.predict_proba(Z[:, list(s)])[:, 1]
        assert value == pytest.approx(float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))), rel=1e-7)


# ============================================================================= methods/rise.py
def test_rise_shifts_span_a_whole_cell_when_the_side_is_not_a_multiple_of_s():
    """Shifts are in [0, cell) with cell = ceil(side / s) (the paper's code): 10 pixels in 3 cells are cells of
    4 pixels, so shifts 0..3 appear, uniformly."""
    from unveil.methods.rise import draw_grids

    _, shifts = draw_grids(np.random.default_rng(0), 4000, 3, 0.5, (10, 7))
    assert sorted(set(shifts[:, 0].tolist())) == [0, 1, 2, 3]
    assert sorted(set(shifts[:, 1].tolist())) == [0, 1, 2]
    assert np.bincount(shifts[:, 0]) == pytest.approx([1000] * 4, rel=0.15)


def test_rise_default_grid_fits_a_narrow_input():
    """Without ``s``: the paper's 7 x 7, or the input's shorter side when smaller (here 4 of a 16 x 4 input)."""
    model = unveil.Model(lambda b: np.stack([b.mean(axis=(1, 2, 3)), 1 - b.mean(axis=(1, 2, 3))], 1),
                         input_size=(16, 4), outputs="scores")
    img = np.random.default_rng(0).random((16, 4, 3)).astype(np.float32)
    exp = unveil.explain(model, img, method="rise", target=0, n_masks=20, progress=False)
    assert exp.extras["s"] == 4 and exp.map.shape == (16, 4)
    wide = unveil.explain(unveil.Model(model.fn, input_size=(4, 16), outputs="scores"), img.transpose(1, 0, 2),
                          method="rise", target=0, n_masks=20, progress=False)
    assert wide.extras["s"] == 4

