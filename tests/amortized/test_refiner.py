"""The second stage: a gated correction of the warmed-up start from its warm-up's signals."""

from __future__ import annotations

import pytest
import torch

from amortized.refiner import INPUT_GROUPS, Refiner, fit_refiner, refiner_features
from rde import CartoonX, InputError, MaskLayout, create_classifier
from amortized.losses import risk_averse_mask_loss
from rde.warmup import Warmup, WarmStart

LAYOUT = MaskLayout.for_wavelet(64, 64)


@pytest.fixture(scope="module")
def signals():
    explainer = CartoonX(create_classifier("tiny-test"), "tiny")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    warmup = Warmup(steps=3, num_samples=2, prune_steps=2, prune_min_prob=0.0)
    start, seen = WarmStart(explainer, warmup).warm_with_signals(images, "const:0.6")
    magnitude = explainer.representation(64, 64, images.device).encode(images).abs().mean(1)
    return seen, magnitude


def test_features_have_the_start_first_then_each_chosen_group(signals):
    seen, magnitude = signals
    full = refiner_features(seen, magnitude, LAYOUT, tuple(INPUT_GROUPS))
    expected = 1 + sum(len(LAYOUT.scales) if k == "level" else n for k, n in INPUT_GROUPS.items())
    assert full.shape == (2, expected, LAYOUT.num_entries) and bool(torch.isfinite(full).all())
    assert torch.equal(full[:, 0], seen.pruned_mask)
    assert torch.equal(refiner_features(seen, magnitude, LAYOUT, ("trajectory",))[:, 1], seen.before)
    level = refiner_features(seen, magnitude, LAYOUT, ("level",))[:, 1:]
    assert torch.equal(level.argmax(1)[0], LAYOUT.scale_index) and torch.equal(level.sum(1), torch.ones(2, LAYOUT.num_entries))
    assert Refiner(("moments", "level")).inputs == ("moments", "level")
    with pytest.raises(InputError, match="unknown refiner input"):
        Refiner(("moments", "hessian"))


def test_a_shut_gate_returns_the_start_and_an_open_one_the_networks_value(signals):
    seen, magnitude = signals
    refiner = Refiner(num_scales=len(LAYOUT.scales))
    with torch.no_grad():
        refiner.head.weight.zero_()
        refiner.head.bias.copy_(torch.tensor([-40.0, 0.0]))
        torch.testing.assert_close(refiner.correct(seen, magnitude, LAYOUT), seen.pruned_mask, atol=1e-12, rtol=0)
        refiner.head.bias.copy_(torch.tensor([40.0, 2.0]))  # open gate, value sigmoid(2) everywhere
        out = refiner.correct(seen, magnitude, LAYOUT)
    torch.testing.assert_close(out, torch.full_like(out, float(torch.sigmoid(torch.tensor(2.0)))))
    with pytest.raises(InputError, match="scales"):
        Refiner(num_scales=3).correct(seen, magnitude, LAYOUT)


def test_training_learns_a_per_coefficient_rule_from_the_signals(signals):
    """The target keeps exactly the coefficients the warm-up's mean gradient pushed down: learnable from the inputs."""
    seen, magnitude = signals
    features = list(refiner_features(seen, magnitude, LAYOUT, ("gradients", "level")).unbind(0))
    targets = list((seen.warmup["grad_mean"] < 0).float().unbind(0))
    refiner = Refiner(("gradients", "level"), num_scales=len(LAYOUT.scales), width=8, depth=1)
    loss = lambda: float(risk_averse_mask_loss(refiner(torch.stack(features), LAYOUT).detach(),  # noqa: E731
                                               torch.stack(targets), LAYOUT)[0])
    before = loss()
    history = fit_refiner(refiner, features, targets, LAYOUT, epochs=60, batch_size=2, lr=1e-2)
    after = loss()
    assert after < 0.3 * before and history[-1] < history[0]
    assert not refiner.training  # left in eval mode


def test_a_raise_only_refiner_never_lowers_the_start(signals):
    seen, magnitude = signals
    refiner = Refiner(num_scales=len(LAYOUT.scales), raise_only=True)
    assert Refiner.from_config(refiner.config).raise_only
    with torch.no_grad():
        refiner.head.weight.zero_()
        refiner.head.bias.copy_(torch.tensor([40.0, -40.0]))  # open gate toward 0: a plain refiner empties the mask
        torch.testing.assert_close(refiner.correct(seen, magnitude, LAYOUT), seen.pruned_mask)
        refiner.head.bias.copy_(torch.tensor([40.0, 40.0]))  # toward 1: raised everywhere
        torch.testing.assert_close(refiner.correct(seen, magnitude, LAYOUT), torch.ones_like(seen.pruned_mask))
