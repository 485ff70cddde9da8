"""The start value: a mask and what it cost, in one unit."""

from __future__ import annotations

import pytest
import torch

from rde import CartoonX, create_classifier
from rde.start import Start, steps_of_passes


def test_steps_of_passes_counts_classifier_passes_in_preset_steps():
    assert float(steps_of_passes(200, 16)) == 12.5
    assert steps_of_passes(torch.tensor([1, 33]), 4).tolist() == [0.25, 8.25]


def test_a_start_checks_its_shapes_and_selects_rows():
    start = Start(torch.rand(3, 5), torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64),
                  torch.tensor([True, False, True]), torch.tensor([0, 1, 2]))
    one = start[1]
    assert len(one) == 1 and one.cost.tolist() == [2.0] and one.backoffs.tolist() == [1] and not one.pruned[0]
    assert start.charged(0.5).cost.tolist() == [1.5, 2.5, 3.5] and start.cost.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="cost"):
        Start(torch.rand(3, 5), torch.zeros(2), torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.long))
    free = Start.free(torch.rand(2, 5))
    assert free.cost.tolist() == [0.0, 0.0] and free.backoffs.tolist() == [0, 0]


def test_explain_takes_a_start_as_its_init():
    explainer = CartoonX(create_classifier("tiny-test"), "tiny")
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    k = explainer.representation(64, 64, torch.device("cpu")).layout.num_entries
    mask = torch.rand(2, k, generator=torch.Generator().manual_seed(2))
    from_start = explainer.explain(images, init=Start.free(mask).charged(3.0), steps=2)
    from_mask = explainer.explain(images, init=mask, steps=2)
    torch.testing.assert_close(from_start.mask, from_mask.mask)
