"""The initializer's probe: class gradient on wavelet coefficients against finite differences, features, hooks."""

from __future__ import annotations

import copy

import pytest
import torch

from amortized.features import FEATURE_TAPS, feature_channels, probe
from rde import create_classifier
from rde.representation import WaveletRepresentation


@pytest.fixture(scope="module")
def classifier():
    return create_classifier("tiny-test")


def test_class_gradient_matches_finite_differences(classifier):
    torch.manual_seed(0)
    rep = WaveletRepresentation(64, 64)
    images = torch.rand(2, 3, 64, 64) * 0.8 + 0.1  # away from the clamp at 0 and 1
    targets = torch.tensor([3, 7])
    result = probe(classifier, rep, images, targets)

    # Independent reference in float64: central differences of the target logit in each coefficient.
    clf64 = copy.deepcopy(classifier).double()
    rep64 = copy.deepcopy(rep).double()
    h = rep64.encode(images.double())
    eps = 1e-5
    for b in range(2):
        for j in torch.randint(0, h.shape[-1], (6,)).tolist():
            grad = []
            for c in range(3):
                plus, minus = h[b : b + 1].clone(), h[b : b + 1].clone()
                plus[0, c, j] += eps
                minus[0, c, j] -= eps
                diff = clf64(rep64.decode(plus))[0, targets[b]] - clf64(rep64.decode(minus))[0, targets[b]]
                grad.append(float(diff) / (2 * eps))
            grad = torch.tensor(grad, dtype=torch.float64)
            expected_gxi = abs(float((grad * h[b, :, j]).sum()))
            expected_abs = float(grad.abs().sum())
            assert result.grad_x_input[b, j].item() == pytest.approx(expected_gxi, rel=1e-3, abs=1e-6)
            assert result.grad_abs[b, j].item() == pytest.approx(expected_abs, rel=1e-3, abs=1e-6)


def test_magnitudes_targets_probabilities_and_features(classifier):
    rep = WaveletRepresentation(64, 64)
    images = torch.rand(3, 3, 64, 64)
    result = probe(classifier, rep, images)
    with torch.no_grad():
        logits = classifier(images)
    assert torch.equal(result.targets, logits.argmax(-1))
    assert torch.allclose(result.probs, logits.softmax(-1).max(-1).values, atol=1e-5)
    assert result.magnitude.shape == (3, rep.layout.num_entries) and bool((result.magnitude >= 0).all())
    assert set(result.features) == set(FEATURE_TAPS["tiny-test"])
    assert result.features["s2"].shape[-2:] == (32, 32) and result.features["s4"].shape[-2:] == (16, 16)
    assert not any(m._forward_hooks for m in classifier.modules()), "probe must remove its hooks"
    assert feature_channels(classifier, FEATURE_TAPS["tiny-test"], 64) == {"s2": 8, "s4": 16}


def test_unknown_tap_is_a_clear_error(classifier):
    with pytest.raises(ValueError, match="no module"):
        probe(classifier, WaveletRepresentation(64, 64), torch.rand(1, 3, 64, 64), taps={"s2": "model.99"})


def test_efficientnet_taps_exist_at_the_expected_strides():
    clf = create_classifier("efficientnet_lite0")
    result = probe(clf, WaveletRepresentation(128, 128), torch.rand(1, 3, 128, 128))
    sizes = {name: f.shape[-1] for name, f in result.features.items()}
    assert sizes == {"s2": 64, "s4": 32, "s8": 16, "s16": 8, "s32": 4}
