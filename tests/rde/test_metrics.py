"""steps-to-reach and moving averages on synthetic curves with hand-computed answers."""

from __future__ import annotations

import math

import pytest
import torch

from rde.metrics import collapsed, loss_at, moving_average, reference_level, steps_to_reach


def test_moving_average_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    assert torch.allclose(moving_average(x, 2), torch.tensor([[1.0, 1.5, 2.5, 3.5, 4.5]]))
    assert torch.allclose(moving_average(x, 3), torch.tensor([[1.0, 1.5, 2.0, 3.0, 4.0]]))
    with pytest.raises(ValueError):
        moving_average(x, 0)


def test_ones_curve_reaches_itself_at_n():
    ones = torch.linspace(10, 1, 300)[None]
    assert steps_to_reach(ones, reference_level(ones)).item() == 300


def test_step_function_reach():
    w = 10
    ref = torch.tensor([1.0])
    # 3.0 at indices 0..19, then 0.5. The window ending at index t holds 29 - t values of 3.0; the mean
    # (3*2 + 0.5*8)/10 = 1.0 first reaches the reference with 2 of them, at index 27, i.e. step 28.
    curve = torch.cat([torch.full((20,), 3.0), torch.full((30,), 0.5)])[None]
    assert steps_to_reach(curve, ref, w).item() == 28


def test_crossing_back_above_delays_reach_and_never():
    ref = torch.tensor([1.0, 1.0])
    a = torch.full((40,), 0.5)
    a[30] = 20.0  # a spike: the average is above 1 for steps 31..40 -> never stays below before the end
    b = torch.full((40,), 0.5)
    b[15] = 6.0  # average (6 + 9*0.5)/10 = 1.05 > 1 for indices 15..24 -> reach at index 25, step 26
    res = steps_to_reach(torch.stack([a, b]), ref)
    assert math.isinf(res[0].item())
    assert res[1].item() == 26


def test_loss_at_uses_moving_average():
    curve = torch.arange(1.0, 101.0)[None]
    got = loss_at(curve, [10, 30, 100])
    assert got[10].item() == pytest.approx(5.5)
    assert got[30].item() == pytest.approx(25.5)
    assert got[100].item() == pytest.approx(95.5)


def test_loss_at_rejects_step_zero():
    with pytest.raises(ValueError):
        loss_at(torch.ones(1, 5), [0])


def test_collapsed_compares_final_distortion_with_the_class_probability():
    # p(x) = 0.4: an empty mask has distortion 0.16; a kept class ~0.01.
    steps = 30
    kept = torch.full((steps,), 0.01)
    empty = torch.cat([torch.full((20,), 0.01), torch.full((10,), 0.16)])
    late_recovery = torch.cat([torch.full((20,), 0.16), torch.full((10,), 0.02)])
    curves = torch.stack([kept, empty, late_recovery])
    flags = collapsed(curves, torch.tensor([0.4, 0.4, 0.4]))
    assert flags.tolist() == [False, True, False]
    # The same distortion is no collapse for a confident image: 0.16 < 0.5 * 0.99^2.
    assert collapsed(empty[None], torch.tensor([0.99])).tolist() == [False]
