"""Distortion measures on hand-made logits, with the expected numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rde.distortion import DISTORTIONS, get_distortion, kl, l2, label, maximize_target

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
