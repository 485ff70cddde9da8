"""MaskNet: output layout for several sizes and wavelet depths, value range, gradients."""

from __future__ import annotations

import pytest
import torch

from amortized.net import MaskNet
from rde import MaskLayout, WaveletConfig


@pytest.mark.parametrize(
    "size,wavelet",
    [
        ((64, 64), WaveletConfig()),
        ((128, 128), WaveletConfig()),
        ((96, 80), WaveletConfig()),
        ((64, 64), WaveletConfig("haar", 3)),
        ((48, 48), WaveletConfig("db2", 4)),
    ],
)
def test_output_matches_optimizer_layout(size, wavelet):
    net = MaskNet(wavelet, width=4, decoder_width=8, floor=0.1)
    out = net(torch.rand(2, 3, *size))
    layout = MaskLayout.for_wavelet(*size, wavelet)
    assert out.shape == (2, layout.num_entries)
    parts = layout.split(out)
    assert [tuple(p.shape[1:]) for p in parts] == [s.shape for s in layout.scales]
    assert float(out.min()) >= 0.1 - 1e-6 and float(out.max()) <= 1.0


def test_floor_and_gradient_reach_every_head():
    net = MaskNet(width=4, decoder_width=8, floor=0.2)
    x = torch.rand(1, 3, 64, 64)
    net(x).sum().backward()
    for i, head in enumerate([net.lowpass_head, *net.heads]):
        assert head[-1].bias.grad is not None and head[-1].bias.grad.abs().sum() > 0, f"head {i} gets no gradient"
    with torch.no_grad():
        for head in [net.lowpass_head, *net.heads]:
            head[-1].bias.fill_(-50.0)
        assert torch.allclose(net(x), torch.full_like(net(x), 0.2))


def test_per_scale_floor():
    floors = [0.3, 0.0, 0.05, 0.1, 0.2, 0.25]
    net = MaskNet(width=4, decoder_width=8, floor=floors)
    with torch.no_grad():
        for head in [net.lowpass_head, *net.heads]:
            head[-1].bias.fill_(-50.0)
        parts = net.layout(64, 64).split(net(torch.rand(2, 3, 64, 64)))
    for part, f in zip(parts, floors):
        assert torch.allclose(part, torch.full_like(part, f))


def test_bad_input_and_floor():
    with pytest.raises(ValueError, match="floor"):
        MaskNet(floor=1.0)
    with pytest.raises(ValueError, match="one value per scale"):
        MaskNet(floor=[0.1, 0.1])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        MaskNet()(torch.rand(3, 64, 64))


def test_coefficient_inputs_switch_changes_parameters():
    with_c = sum(p.numel() for p in MaskNet(width=4, decoder_width=8).parameters())
    without = sum(p.numel() for p in MaskNet(width=4, decoder_width=8, coefficient_inputs=False).parameters())
    assert with_c > without


def test_default_net_is_small_enough_to_ship():
    params = sum(p.numel() for p in MaskNet().parameters())
    assert params * 4 < 2.5e6, f"{params} parameters"
