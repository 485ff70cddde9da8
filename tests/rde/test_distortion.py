"""Distortion measures on hand-made logits, with the expected numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rde.distortion import DISTORTIONS, get_distortion, kl, l2, label, maximize_target
from rde.errors import InputError

# reference probabilities Phi(x) for two images, three classes
REFERENCE = torch.tensor([[0.2, 0.3, 0.5], [0.0, 0.5, 0.5]])
# logits of two obfuscations per image; softmax(log q + c) = q for any shift c
Q = [[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], [[0.5, 0.25, 0.25], [0.0001, 0.4999, 0.5]]]
LOGITS = torch.log(torch.tensor(Q)) + torch.tensor([[[3.0]], [[-7.0]]])
TARGET = torch.tensor([2, 1])


def test_label():
    expected = [[(0.5 - 0.25) ** 2, (0.5 - 0.8) ** 2], [(0.5 - 0.25) ** 2, (0.5 - 0.4999) ** 2]]
    torch.testing.assert_close(label(REFERENCE, LOGITS, TARGET), torch.tensor(expected))


def test_maximize_target_ignores_the_reference():
    expected = [[(1 - 0.25) ** 2, (1 - 0.8) ** 2], [(1 - 0.25) ** 2, (1 - 0.4999) ** 2]]
    torch.testing.assert_close(maximize_target(REFERENCE, LOGITS, TARGET), torch.tensor(expected))
    torch.testing.assert_close(maximize_target(torch.rand(2, 3), LOGITS, TARGET), torch.tensor(expected))


def test_l2():
    def sq(p, q):
        return sum((a - b) ** 2 for a, b in zip(p, q))

    expected = [[sq(REFERENCE[b].tolist(), Q[b][l]) for l in range(2)] for b in range(2)]
    assert expected[0][0] == pytest.approx(0.09 + 0.0025 + 0.0625)
    torch.testing.assert_close(l2(REFERENCE, LOGITS, TARGET), torch.tensor(expected))


def test_kl():
    def kl_ref(p, q):  # 0 * log 0 = 0
        return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)

    expected = [[kl_ref(REFERENCE[b].tolist(), Q[b][l]) for l in range(2)] for b in range(2)]
    assert expected[1][0] == pytest.approx(math.log(2))  # 0.5 ln 2 + 0.5 ln 2
    torch.testing.assert_close(kl(REFERENCE, LOGITS, TARGET), torch.tensor(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_zero_when_obfuscation_matches_and_positive_otherwise(name):
    fn = get_distortion(name)
    probs = torch.tensor([[0.1, 0.2, 0.7]])
    same = probs.log().unsqueeze(1).expand(1, 4, 3)
    target = torch.tensor([2])
    out = fn(probs, same, target)
    assert out.shape == (1, 4)
    if name == "maximize-target":
        torch.testing.assert_close(out, torch.full((1, 4), 0.3**2))
    else:
        torch.testing.assert_close(out, torch.zeros(1, 4), atol=1e-6, rtol=0)
    assert torch.all(fn(probs, LOGITS[:1], target) > 0)


def test_unknown_distortion_lists_choices():
    with pytest.raises(ValueError, match="'mse'.*label, maximize-target, l2, kl"):
        get_distortion("mse")


def test_log_prob_barrier_against_a_hand_computed_value_and_its_gradient_survives_saturation():
    from rde.distortion import get_distortion, log_prob_barrier

    reference = torch.tensor([[0.5, 0.25, 0.25]])
    logits = torch.tensor([[[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]])  # p_0(y) = 1/3 (below p_0(x)), then above it
    barrier = log_prob_barrier(reference, logits, torch.tensor([0]))
    p_high = math.exp(3) / (math.exp(3) + 2)
    assert barrier[0, 0].item() == pytest.approx(math.log(0.5) - math.log(1 / 3))
    assert barrier[0, 1].item() == 0.0 and p_high > 0.5  # no penalty once the class is as likely as on x
    combined = get_distortion("label+barrier")(reference, logits, torch.tensor([0]))
    torch.testing.assert_close(combined, get_distortion("label")(reference, logits, torch.tensor([0])) + barrier)
    # a class that has all but vanished: the label distortion's gradient is gone, the barrier's is not
    faded = torch.tensor([[[-30.0, 0.0, 0.0]]], requires_grad=True)
    get_distortion("label")(reference, faded, torch.tensor([0])).sum().backward()
    label_grad = faded.grad.abs().max().item()
    faded.grad = None
    log_prob_barrier(reference, faded, torch.tensor([0])).sum().backward()
    assert label_grad < 1e-10 and faded.grad[0, 0, 0].item() == pytest.approx(-1.0, abs=1e-6)


def test_an_unknown_distortion_with_a_barrier_is_refused():
    from rde.distortion import get_distortion

    with pytest.raises(InputError, match="bogus"):
        get_distortion("bogus+barrier")
