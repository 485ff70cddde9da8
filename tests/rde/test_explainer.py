"""The exact RDE optimizer (CartoonX, Pixel RDE) on the tiny classifier and on stubs whose behaviour is known."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
import torch
import torch.nn.functional as F
from torch import nn

from rde import CartoonX, MaskLayout, PixelRDE
from rde.distortion import DISTORTIONS
from rde.layout import Scale
from rde.representation import greyscale

SIZE = 64


def images(batch: int = 2, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


class Recording(nn.Module):
    """A fixed linear model on 4x4-pooled pixels that records the range of every input it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(48, 1000, generator=torch.Generator().manual_seed(0)))
        self.ranges: list[tuple[float, float]] = []
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.ranges.append((float(x.detach().min()), float(x.detach().max())))
        self.batch_sizes.append(x.shape[0])
        return 10 * F.adaptive_avg_pool2d(x, 4).flatten(1) @ self.weight


class Constant(nn.Module):
    """Logits that do not depend on the image (but keep it in the graph): the distortion gradient is 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 1000) + 0.0 * x.mean()


class Brightness(nn.Module):
    """Class 0 wins while the mean pixel exceeds ``threshold``; every other logit is 0."""

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 100 * (x.mean(dim=(1, 2, 3)) - self.threshold)
        return torch.cat([score[:, None], torch.zeros(x.shape[0], 999)], dim=1)


def record_masks() -> tuple[list[torch.Tensor], callable]:
    masks: list[torch.Tensor] = []
    return masks, lambda step, mask, losses: masks.append(mask.clone())


# -- the sanity property -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [CartoonX, PixelRDE])
def test_all_ones_mask_explanation_is_the_greyscale_image(tiny_classifier, method):
    x = images()
    ex = method(tiny_classifier, preset="tiny", lam=0.0).explain(x, steps=0)
    assert torch.equal(ex.mask, torch.ones_like(ex.mask))
    torch.testing.assert_close(ex.explanation, greyscale(x).clamp(0, 1), atol=1e-5, rtol=0)


def test_lam0_distortion_of_all_ones_mask_is_zero(tiny_classifier):
    """With s = 1 every obfuscation is the image itself, so the label distortion vanishes (up to rounding)."""
    ex = CartoonX(tiny_classifier, preset="tiny", lam=0.0).explain(images(3), steps=1)
    assert torch.all(ex.history["distortion"][:, 0] < 1e-10)
    assert torch.all(ex.history["loss"][:, 0] == ex.history["distortion"][:, 0])


def test_lam0_all_ones_mask_stays_exactly_ones(tiny_classifier):
    x = images(3)
    ex = CartoonX(tiny_classifier, preset="tiny", lam=0.0).explain(x, steps=20)
    assert torch.equal(ex.mask, torch.ones_like(ex.mask))
    torch.testing.assert_close(ex.explanation, greyscale(x).clamp(0, 1), atol=1e-5, rtol=0)


def test_zero_distortion_gradient_leaves_ones_exactly_when_lam0():
    ex = CartoonX(Constant(), preset="tiny", lam=0.0).explain(images(), steps=5)
    assert torch.equal(ex.mask, torch.ones_like(ex.mask))


# -- optimizer dynamics ------------------------------------------------------------------------------------------
def test_sparsity_alone_lowers_every_entry_by_lr_per_step_then_clamps_at_zero():
    """Adam with a constant gradient lam/k moves each entry by exactly lr per step; clamping stops it at 0."""
    masks, callback = record_masks()
    ex = CartoonX(Constant(), preset="tiny", lam=20.0, lr=0.15).explain(images(), steps=9, callback=callback)
    for step, mask in enumerate(masks):
        expected = max(1.0 - 0.15 * (step + 1), 0.0)
        torch.testing.assert_close(mask, torch.full_like(mask, expected), atol=1e-5, rtol=0)
    assert torch.count_nonzero(ex.mask) == 0
    assert torch.all(ex.history["distortion"] == 0)
    torch.testing.assert_close(ex.history["loss"], 20.0 * ex.history["sparsity"])


def test_mask_stays_in_unit_interval_with_huge_lr(tiny_classifier):
    masks, callback = record_masks()
    ex = CartoonX(tiny_classifier, preset="tiny", lam=0.0, lr=10.0).explain(images(), init="const:0.5", steps=4, callback=callback)
    stacked = torch.stack(masks)
    assert stacked.min() == 0.0 and stacked.max() <= 1.0
    assert (stacked == 1.0).any(), "some entries should have been pushed above 1 and clamped"
    assert ex.mask.min() >= 0 and ex.mask.max() <= 1


@pytest.mark.parametrize("method", [CartoonX, PixelRDE])
def test_obfuscations_are_clamped_to_unit_interval(method):
    clf = Recording()
    x = 0.2 + 0.6 * images()  # the image itself never touches 0 or 1
    method(clf, preset="tiny").explain(x, init="const:0.2", steps=2)
    lows, highs = zip(*clf.ranges)
    assert min(lows) == 0.0 and max(highs) == 1.0  # noise went out of range and was clamped
    assert len(clf.ranges) == 4  # the image, the distortion reference f(h), then one call per step


# -- determinism and batching ------------------------------------------------------------------------------------
def test_same_seed_same_mask_other_seed_other_mask(tiny_classifier):
    cx = CartoonX(tiny_classifier, preset="tiny", lam=0.0)  # lam=0: the noise alone decides each step
    x = images()
    a, b = cx.explain(x, init="const:0.5", seed=3, steps=4), cx.explain(x, init="const:0.5", seed=3, steps=4)
    c = cx.explain(x, init="const:0.5", seed=4, steps=4)
    assert torch.equal(a.mask, b.mask) and torch.equal(a.loss, b.loss)
    assert not torch.allclose(a.mask, c.mask)
    assert a.config["seeds"] == [3, 3] and c.config["seeds"] == [4, 4]


@pytest.mark.parametrize("method", [CartoonX, PixelRDE])
def test_batch_equals_one_at_a_time(tiny_classifier, method):
    rde = method(tiny_classifier, preset="tiny")
    x = images(3)
    batch = rde.explain(x, seed=[11, 12, 13], steps=5)
    for i in range(3):
        single = rde.explain(x[i : i + 1], seed=11 + i, steps=5)
        torch.testing.assert_close(single.mask, batch.mask[i : i + 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(single.loss, batch.loss[i : i + 1], atol=1e-5, rtol=1e-5)
        assert single.targets.item() == batch.targets[i].item()


def test_batched_noise_is_each_images_own_torch_randn_stream():
    """The whole batch's noise is filled in one buffer, yet image b's values are bitwise what
    ``mean_b + std_b * torch.randn(shape, generator=g_b)`` gives alone (the streams of earlier versions)."""
    from rde.obfuscation import Obfuscation

    layout = MaskLayout.for_wavelet(SIZE, SIZE)
    coefficients = torch.randn(3, 3, layout.num_entries, generator=torch.Generator().manual_seed(5))
    noise = Obfuscation("adaptive-gaussian", coefficients, layout)
    seeds = [7, 8, 7]
    batch = noise.sample(4, [torch.Generator().manual_seed(s) for s in seeds])
    for b, s in enumerate(seeds):
        z = torch.randn((4, 3, layout.num_entries), generator=torch.Generator().manual_seed(s))
        assert torch.equal(batch[b], noise.mean[b] + noise.std[b] * z)
    other = noise.mean[1] + noise.std[1] * torch.randn((4, 3, layout.num_entries), generator=torch.Generator().manual_seed(7))
    assert not torch.allclose(batch[1], other)  # image 1 really draws from its own seed
    with pytest.raises(ValueError, match="2 noise generators for a batch of 3 images"):
        noise.sample(4, [torch.Generator(), torch.Generator()])


def test_samples_per_call_chunking_gives_the_same_result(tiny_classifier):
    x = images()
    whole = CartoonX(tiny_classifier, preset="tiny").explain(x, seed=[1, 2], steps=5)
    clf = Recording()
    chunked = CartoonX(tiny_classifier, preset="tiny", samples_per_call=2).explain(x, seed=[1, 2], steps=5)
    torch.testing.assert_close(chunked.mask, whole.mask, atol=1e-5, rtol=0)
    for key in whole.history:
        torch.testing.assert_close(chunked.history[key], whole.history[key], atol=1e-6, rtol=1e-5)
    # with B=2, L=4 and samples_per_call=4, each classifier call sees the 4 samples of one image
    CartoonX(clf, preset="tiny", samples_per_call=4).explain(x, steps=1)
    assert len(clf.ranges) == 1 + 2 + 2  # the images, the distortion reference per image, then 2 chunks


# -- targets -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target, expected",
    [(None, None), (7, [7, 7]), ([3, 999], [3, 999]), ((5, 6), [5, 6]), (torch.tensor([1, 2]), [1, 2]), (torch.tensor(4), [4, 4])],
    ids=["none", "int", "list", "tuple", "tensor", "0d-tensor"],
)
def test_target_forms(tiny_classifier, target, expected):
    x = images()
    with torch.no_grad():
        probs = tiny_classifier(x).softmax(-1)
    ex = CartoonX(tiny_classifier, preset="tiny").explain(x, target=target, steps=0)
    if expected is None:
        expected = probs.argmax(-1).tolist()
    assert ex.targets.tolist() == expected
    assert ex.predicted.tolist() == probs.argmax(-1).tolist()
    torch.testing.assert_close(ex.target_probs, probs[torch.arange(2), torch.tensor(expected)])
    assert ex.class_names == [tiny_classifier.class_name(t) for t in expected]


def test_target_changes_the_optimization(tiny_classifier):
    cx = CartoonX(tiny_classifier, preset="tiny", lam=0.0)
    x = images(1)
    with torch.no_grad():
        top2 = tiny_classifier(x)[0].topk(2).indices.tolist()  # classes with non-negligible probability
    one, two = (cx.explain(x, target=t, init="const:0.5", steps=3).mask for t in top2)
    assert not torch.allclose(one, two)


def test_wrong_number_of_targets_or_seeds_names_both_numbers(tiny_classifier):
    cx = CartoonX(tiny_classifier, preset="tiny")
    with pytest.raises(ValueError, match=r"target has 3 entries but the batch has 2 images"):
        cx.explain(images(), target=[1, 2, 3], steps=0)
    with pytest.raises(ValueError, match=r"seed has 1 entries but the batch has 2 images"):
        cx.explain(images(), seed=[1], steps=0)


@pytest.mark.parametrize(
    "target", [1.5, "3", True, [1.5, 2], [True, False], torch.tensor([1.0, 2.0]), {1: 2}.items()],
    ids=["float", "str", "bool", "float-list", "bool-list", "float-tensor", "items"],
)
def test_wrong_target_type_raises_type_error(tiny_classifier, target):
    with pytest.raises(TypeError, match="target"):
        CartoonX(tiny_classifier, preset="tiny").explain(images(), target=target, steps=0)


@pytest.mark.parametrize("seed", [1.5, "7", [1.0, 2.0]], ids=["float", "str", "float-list"])
def test_wrong_seed_type_raises_type_error(tiny_classifier, seed):
    with pytest.raises(TypeError, match="seed"):
        CartoonX(tiny_classifier, preset="tiny").explain(images(), seed=seed, steps=0)


@pytest.mark.parametrize(
    "target, message",
    [(1000, r"\[1000, 1000\] out of range.*1000 classes"), ([-1, 0], r"\[-1\] out of range"), (torch.zeros(2, 1, dtype=torch.long), "1-D")],
)
def test_bad_target_values_raise_value_error(tiny_classifier, target, message):
    with pytest.raises(ValueError, match=message):
        CartoonX(tiny_classifier, preset="tiny").explain(images(), target=target, steps=0)


# -- bad images ------------------------------------------------------------------------------------------------
def _with(value: float, index: tuple = (1, 0, 3, 3)) -> torch.Tensor:
    x = images()
    x[index] = value
    return x


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (_with(float("nan")), ValueError, r"NaN or inf.*batch indices \[1\]"),
        (_with(float("inf")), ValueError, "NaN or inf"),
        (_with(-float("inf")), ValueError, "NaN or inf"),
        (images() * 255, ValueError, r"must lie in \[0, 1\]"),
        (_with(-0.5), ValueError, r"range \[-0.5"),
        (torch.rand(3, SIZE, SIZE), ValueError, r"shape \(B, 3, H, W\), got \(3, 64, 64\)"),
        (torch.rand(1, 1, SIZE, SIZE), ValueError, r"got \(1, 1, 64, 64\)"),
        (torch.rand(1, 4, SIZE, SIZE), ValueError, r"got \(1, 4, 64, 64\)"),
        (torch.rand(0, 3, SIZE, SIZE), ValueError, "empty batch"),
        (torch.rand(1, 3, 16, 16), ValueError, "too small"),
        (torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8), TypeError, "float tensor"),
        (np.zeros((1, 3, SIZE, SIZE), dtype=np.float32), TypeError, "torch.Tensor"),
    ],
    ids=["nan", "inf", "-inf", "0-255", "negative", "3d", "1-channel", "4-channel", "empty", "too-small", "uint8", "numpy"],
)
def test_bad_images_are_rejected(tiny_classifier, bad, error, message):
    with pytest.raises(error, match=message):
        CartoonX(tiny_classifier, preset="tiny").explain(bad, steps=0)


@pytest.mark.parametrize("steps", [-1, 2.5, "10"])
def test_bad_steps(tiny_classifier, steps):
    with pytest.raises(ValueError, match="steps must be a non-negative int"):
        CartoonX(tiny_classifier, preset="tiny").explain(images(), steps=steps)


# -- initial masks --------------------------------------------------------------------------------------------------
def test_named_inits(tiny_classifier):
    cx = CartoonX(tiny_classifier, preset="tiny")
    x = images()
    k = MaskLayout.for_wavelet(SIZE, SIZE).num_entries
    assert torch.equal(cx.explain(x, init="ones", steps=0).mask, torch.ones(2, k))
    assert torch.equal(cx.explain(x, init="const:0.3", steps=0).mask, torch.full((2, k), 0.3))
    assert torch.equal(cx.explain(x, init=0.3, steps=0).mask, torch.full((2, k), 0.3))
    rand = cx.explain(x, init="random", seed=[5, 6], steps=0)
    assert rand.config["init"] == "random"
    assert 0 <= rand.mask.min() and rand.mask.max() <= 1
    assert abs(rand.mask.mean() - 0.5) < 0.02 and abs(rand.mask.var() - 1 / 12) < 0.01  # uniform on [0, 1]
    assert torch.equal(cx.explain(x, init="random", seed=[5, 6], steps=0).mask, rand.mask)
    again = cx.explain(x, init="random", seed=[5, 7], steps=0).mask
    assert torch.equal(again[0], rand.mask[0]) and not torch.equal(again[1], rand.mask[1])


def test_preopt_finds_the_lowest_constant_that_keeps_the_class():
    """Zero obfuscation: a constant mask s turns an image of brightness b into one of brightness s*b.
    Class 0 holds while s*b > 0.2025, so preopt must stop at 0.41 for b=0.5 and at 0.26 for b=0.8."""
    x = torch.cat([torch.full((1, 3, SIZE, SIZE), 0.5), torch.full((1, 3, SIZE, SIZE), 0.8)])
    cx = CartoonX(Brightness(0.2025), preset="tiny", obfuscation="zero")
    ex = cx.explain(x, init="preopt", steps=0)
    assert ex.targets.tolist() == [0, 0]
    torch.testing.assert_close(ex.mask, torch.tensor([[0.41], [0.26]]).expand_as(ex.mask), atol=1e-5, rtol=0)
    assert ex.config["init"] == "preopt"


def test_tensor_init_is_used_as_given():
    x = images()
    k = MaskLayout.for_wavelet(SIZE, SIZE).num_entries
    init = torch.rand(2, k, generator=torch.Generator().manual_seed(0)).clamp(0.2, 1.0)
    cx = CartoonX(Constant(), preset="tiny", lam=20.0, lr=0.05)
    assert torch.equal(cx.explain(x, init=init, steps=0).mask, init)
    torch.testing.assert_close(cx.explain(x, init=init, steps=1).mask, init - 0.05, atol=1e-5, rtol=0)
    shared = cx.explain(x, init=init[0], steps=0)
    assert torch.equal(shared.mask, init[:1].expand(2, k)) and shared.config["init"] == "tensor"


@pytest.mark.parametrize(
    "init, error, message",
    [
        (torch.ones(2, 10), ValueError, r"shape \(2, 10\); expected \(2, \d+\) for layout wavelet:db3:J5:zero:64x64"),
        (torch.ones(3, MaskLayout.for_wavelet(SIZE, SIZE).num_entries), ValueError, r"expected \(2, "),
        (torch.full((MaskLayout.for_wavelet(SIZE, SIZE).num_entries,), 1.5), ValueError, r"lie in \[0, 1\]"),
        (torch.full((MaskLayout.for_wavelet(SIZE, SIZE).num_entries,), float("nan")), ValueError, "NaN"),
        ("twos", ValueError, "unknown init 'twos'"),
        ("ones:1", ValueError, "unknown init"),
        ("const:2", ValueError, r"lie in \[0, 1\], got 2"),
        ("const:abc", ValueError, "const:<number"),
        ([1.0, 1.0], TypeError, "init must be"),
    ],
)
def test_bad_inits(tiny_classifier, init, error, message):
    with pytest.raises(error, match=message):
        CartoonX(tiny_classifier, preset="tiny").explain(images(), init=init, steps=0)


# -- history and loss ------------------------------------------------------------------------------------------------
def test_history_shapes_and_loss_composition(tiny_classifier):
    masks, callback = record_masks()
    ex = CartoonX(tiny_classifier, preset="tiny", lam=7.0).explain(images(), init="const:0.6", steps=6, callback=callback)
    assert set(ex.history) == {"loss", "distortion", "sparsity", "spatial"}
    assert all(v.shape == (2, 6) for v in ex.history.values())
    h = ex.history
    torch.testing.assert_close(h["loss"], h["distortion"] + 7.0 * h["sparsity"])
    assert torch.all(h["spatial"] == 0)
    # entry t is evaluated at the mask before update t+1
    torch.testing.assert_close(h["sparsity"][:, 0], torch.full((2,), 0.6))
    for t in range(1, 6):
        torch.testing.assert_close(h["sparsity"][:, t], masks[t - 1].mean(1))
    assert len(masks) == 6 and torch.equal(masks[-1], ex.mask)


@pytest.mark.parametrize("method", [CartoonX, PixelRDE])
def test_distortion_value_against_a_direct_computation(tiny_classifier, method):
    """Zero obfuscation and a constant mask 0.5 turn x into 0.5 x: the recorded distortion is (p_j(x) - p_j(x/2))^2."""
    x = images()
    ex = method(tiny_classifier, preset="tiny", obfuscation="zero").explain(x, init="const:0.5", steps=1)
    with torch.no_grad():
        p, q = tiny_classifier(x).softmax(-1), tiny_classifier(0.5 * x).softmax(-1)
    j = ex.targets
    expected = (p[torch.arange(2), j] - q[torch.arange(2), j]) ** 2
    torch.testing.assert_close(ex.history["distortion"][:, 0], expected, atol=1e-7, rtol=1e-4)
    torch.testing.assert_close(ex.history["loss"][:, 0], expected + 20.0 * 0.5, atol=1e-5, rtol=1e-6)


def test_spatial_term(tiny_classifier):
    x = images()
    plain = CartoonX(tiny_classifier, preset="tiny", lam=0.0).explain(x, steps=4)
    ex = CartoonX(tiny_classifier, preset="tiny", lam=2.0, spatial_weight=3.0).explain(x, steps=4)
    h = ex.history
    assert torch.all(h["spatial"] > 0)
    torch.testing.assert_close(h["loss"], h["distortion"] + 2.0 * h["sparsity"] + 3.0 * h["spatial"])
    # at the all-ones mask the spatial energy is mean |IDWT(DWT(grey))| = mean(grey)
    torch.testing.assert_close(h["spatial"][:, 0], greyscale(x).mean(dim=(1, 2, 3)), atol=1e-5, rtol=0)
    assert not torch.allclose(ex.mask, plain.mask)


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_each_distortion_runs(tiny_classifier, name):
    ex = CartoonX(tiny_classifier, preset="tiny", distortion=name).explain(images(), steps=3)
    assert ex.config["distortion"] == name
    assert all(torch.isfinite(v).all() for v in ex.history.values())
    assert 0 <= ex.mask.min() and ex.mask.max() <= 1
    if name == "maximize-target":  # at s = 1 the obfuscation is the image: (1 - p_j(x))^2
        torch.testing.assert_close(ex.history["distortion"][:, 0], (1 - ex.target_probs) ** 2, atol=1e-5, rtol=1e-4)
    else:
        assert torch.all(ex.history["distortion"][:, 0] < 1e-8)


def test_objective_matches_the_first_recorded_step(tiny_classifier):
    cx = CartoonX(tiny_classifier, preset="tiny", spatial_weight=1.0)
    x = images()
    ex = cx.explain(x, init="const:0.7", seed=[4, 5], steps=1)
    mask = torch.full_like(ex.mask, 0.7).requires_grad_(True)
    out = cx.objective(x, mask, seed=[4, 5])
    for key in ex.history:
        torch.testing.assert_close(out[key].detach(), ex.history[key][:, 0], atol=1e-6, rtol=1e-5)
    out["loss"].sum().backward()
    assert mask.grad is not None and torch.isfinite(mask.grad).all() and mask.grad.abs().sum() > 0


# -- outputs ---------------------------------------------------------------------------------------------------------
def test_pixel_rde_layout_and_explanation(tiny_classifier):
    x = images(size=40)
    ex = PixelRDE(tiny_classifier, preset="tiny").explain(x, steps=3)
    assert ex.layout.scales == (Scale("pixels", (1, 40, 40)),) and ex.layout.signature == "pixel:40x40"
    assert ex.mask.shape == (2, 1600) and ex.explanation.shape == (2, 1, 40, 40)
    torch.testing.assert_close(ex.explanation, (greyscale(x) * ex.mask.view(2, 1, 40, 40)).clamp(0, 1))
    assert ex.config["method"] == "pixel-rde"


def test_cartoonx_explanation_against_pywavelets(tiny_classifier):
    """explanation = clamp(IDWT(mask * DWT(grey))), rebuilt with pywt from the returned mask."""
    x = images(1, size=65)[..., :61]
    ex = CartoonX(tiny_classifier, preset="tiny", lr=0.1).explain(x, steps=3)
    assert ex.explanation.shape == (1, 1, 65, 61) and ex.config["method"] == "cartoonx"
    grey = greyscale(x)[0, 0].double().numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coeffs = pywt.wavedec2(grey, "db3", mode="zero", level=5)
    parts = [p[0].double().numpy() for p in ex.masks_per_scale()]
    masked = [coeffs[0] * parts[0][0]] + [
        tuple(c * parts[j][band] for band, c in enumerate(coeffs[-j])) for j in range(5, 0, -1)
    ]
    expected = np.clip(pywt.waverec2(masked, "db3", mode="zero")[:65, :61], 0, 1)
    assert not np.allclose(expected, np.clip(grey, 0, 1), atol=1e-3)  # the mask did something
    np.testing.assert_allclose(ex.explanation[0, 0].numpy(), expected, atol=1e-5)


def test_predict_probabilities_with_all_ones_mask_is_the_classifier_output(tiny_classifier):
    x = images()
    cx = CartoonX(tiny_classifier, preset="tiny")
    probs = cx.predict_probabilities(x, torch.ones(2, MaskLayout.for_wavelet(SIZE, SIZE).num_entries), num_samples=3)
    with torch.no_grad():
        torch.testing.assert_close(probs, tiny_classifier(x).softmax(-1), atol=1e-5, rtol=1e-4)


def test_classifier_forms_and_overrides(tiny_classifier):
    cx = CartoonX("tiny-test", preset="tiny", lam=5.0, num_samples=2)
    assert cx.classifier.name == "tiny-test"
    assert (cx.config.lam, cx.config.num_samples, cx.config.steps) == (5.0, 2, 10)
    wrapped = CartoonX(Constant(), preset="tiny")
    assert wrapped.classifier.name == "Constant" and not wrapped.classifier.training
    with pytest.raises(TypeError, match="expected a classifier name or an nn.Module"):
        CartoonX(42, preset="tiny")
    with pytest.raises(TypeError):
        CartoonX(tiny_classifier, preset="tiny", lamda=1.0)


def test_float64_images_are_accepted(tiny_classifier):
    images = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    res = CartoonX(tiny_classifier, "tiny").explain(images, steps=2)
    ref = CartoonX(tiny_classifier, "tiny").explain(images.float(), steps=2)
    assert torch.equal(res.mask, ref.mask)


def test_every_init_sees_the_same_optimization_noise(tiny_classifier, monkeypatch):
    """random and preopt draw from their own streams, so all inits get the same noise for a seed."""
    from rde import obfuscation

    draws: dict[str, list[torch.Tensor]] = {}
    real_sample = obfuscation.Obfuscation.sample
    current = []

    def recording(self, num_samples, generators):
        out = real_sample(self, num_samples, generators)
        draws.setdefault(current[0], []).append(out.clone())
        return out

    monkeypatch.setattr(obfuscation.Obfuscation, "sample", recording)
    images = torch.rand(1, 3, 64, 64)
    ex = CartoonX(tiny_classifier, "tiny")
    for init in ("ones", "random", "preopt"):
        current[:] = [init]
        ex.explain(images, init=init, steps=2, seed=7)
    assert torch.equal(draws["ones"][0], draws["random"][0]) and torch.equal(draws["ones"][1], draws["random"][1])
    # preopt's own flip checks come first; the last two draws are the optimization's
    assert torch.equal(draws["ones"][0], draws["preopt"][-2]) and torch.equal(draws["ones"][1], draws["preopt"][-1])


def test_samples_per_call_below_the_batch_size_is_respected(tiny_classifier):
    clf = Recording()
    x = images(3)
    whole = CartoonX(tiny_classifier, preset="tiny").explain(x, seed=[1, 2, 3], steps=3)
    capped = CartoonX(tiny_classifier, preset="tiny", samples_per_call=2).explain(x, seed=[1, 2, 3], steps=3)
    torch.testing.assert_close(capped.mask, whole.mask, atol=1e-5, rtol=0)
    CartoonX(clf, preset="tiny", samples_per_call=2).explain(x, steps=1)
    sizes = clf.batch_sizes[1:]  # after the call on the images themselves
    # the distortion reference (3 images x a 2-sample chunk), then one step (3 images x 4 samples)
    assert max(sizes) <= 2 and sum(sizes) == 3 * 2 + 3 * 4


def test_recorded_signals_match_a_hand_computed_adam():
    """With zero noise and a reference-free distortion each step's gradient is the objective's gradient at the mask
    the step starts from, so Adam's moments and the gradients' mean and spread can be computed by hand."""
    steps, (b1, b2) = 5, (0.9, 0.999)
    cx = CartoonX(Recording(), preset="tiny", obfuscation="zero", distortion="maximize-target", lr=0.05)
    x = images(2)
    masks = [torch.full((2, cx.representation(SIZE, SIZE, x.device).layout.num_entries), 0.6)]
    res = cx.explain(x, init=masks[0], steps=steps, record_signals=True,
                     callback=lambda step, mask, losses: masks.append(mask.clone()))
    grads = []
    for m in masks[:-1]:
        m = m.clone().requires_grad_(True)
        cx.objective(x, m, target=res.targets, num_samples=cx.config.num_samples)["loss"].sum().backward()
        grads.append(m.grad.double())
    first = second = torch.zeros_like(grads[0])
    for g in grads:
        first, second = b1 * first + (1 - b1) * g, b2 * second + (1 - b2) * g.square()
    g = torch.stack(grads)
    assert float(g.std(0).max()) > 1e-6  # the gradients changed along the run, so the spread is a real check
    signals = res.signals
    torch.testing.assert_close(signals["exp_avg"].double(), first, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(signals["exp_avg_sq"].double(), second, rtol=1e-4, atol=1e-12)
    torch.testing.assert_close(signals["grad_mean"].double(), g.mean(0), rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(signals["grad_std"].double(), g.std(0, unbiased=False), rtol=1e-3, atol=1e-7)
    assert res[1].signals["exp_avg"].shape == (1, res.mask.shape[1])  # indexing keeps the signals


def test_signals_are_off_by_default_and_recording_changes_nothing(tiny_classifier):
    cx = CartoonX(tiny_classifier, preset="tiny")
    plain = cx.explain(images(1), steps=3)
    recorded = cx.explain(images(1), steps=3, record_signals=True)
    assert plain.signals is None
    assert torch.equal(plain.mask, recorded.mask) and torch.equal(plain.history["loss"], recorded.history["loss"])
    none = cx.explain(images(1), steps=0, record_signals=True).signals  # no step: zero moments, zero gradients
    assert all(float(v.abs().max()) == 0 for v in none.values())


def test_objective_kept_is_the_guards_share_of_the_class_probability(tiny_classifier):
    cx = CartoonX(tiny_classifier, preset="tiny")
    x = images()
    mask = torch.full((2, cx.representation(SIZE, SIZE, x.device).layout.num_entries), 0.3)
    out = cx.objective(x, mask, num_samples=5, seed=[4, 5])
    probs = cx.predict_probabilities(x, mask, 5, seed=[4, 5])  # the same noise: the same seeds and copies
    clean = tiny_classifier(x).softmax(-1)
    target = clean.argmax(-1, keepdim=True)
    torch.testing.assert_close(out["kept"], (probs.gather(1, target) / clean.gather(1, target)).squeeze(1))
    ones = cx.objective(x, torch.ones_like(mask), num_samples=5)["kept"]
    torch.testing.assert_close(ones, torch.ones(2), atol=1e-5, rtol=0)  # all-ones: the image itself
