"""MaskNet: output layout for several sizes and wavelet depths, floors, inputs, and every head learning."""

from __future__ import annotations

import pytest
import torch

from amortized.features import ProbeResult, feature_channels, feature_taps, probe
from amortized.net import MaskNet
from rde import MaskLayout, WaveletConfig, create_classifier
from rde.representation import WaveletRepresentation


@pytest.fixture(scope="module")
def classifier():
    return create_classifier("tiny-test")


def _probe(classifier, size, wavelet, batch=2) -> tuple[ProbeResult, MaskLayout]:
    rep = WaveletRepresentation(*size, wavelet)
    return probe(classifier, rep, torch.rand(batch, 3, *size)), rep.layout


def _net(classifier, wavelet=None, **kw) -> MaskNet:
    channels = feature_channels(classifier, feature_taps(classifier.name), 64)
    return MaskNet(wavelet, channels, width=4, head_width=8, **kw)


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
def test_output_matches_optimizer_layout(classifier, size, wavelet):
    net = _net(classifier, wavelet, floor=0.1)
    inputs, layout = _probe(classifier, size, wavelet)
    out = net(inputs, layout)
    assert out.shape == (2, layout.num_entries)
    parts = layout.split(out)
    assert [tuple(p.shape[1:]) for p in parts] == [s.shape for s in layout.scales]
    assert float(out.min()) >= 0.1 - 1e-6 and float(out.max()) <= 1.0


def test_per_scale_floor_and_gradient_reach_every_head(classifier):
    floors = [0.3, 0.0, 0.05, 0.1, 0.2, 0.25]
    net = _net(classifier, floor=floors)
    inputs, layout = _probe(classifier, (64, 64), WaveletConfig())
    net(inputs, layout).sum().backward()
    for i, head in enumerate(net.heads):
        assert head[-1].bias.grad is not None and head[-1].bias.grad.abs().sum() > 0, f"head {i} gets no gradient"
    assert all(lat.weight.grad is not None and lat.weight.grad.abs().sum() > 0 for lat in net.lateral.values())
    with torch.no_grad():
        for head in net.heads:
            head[-1].bias.fill_(-50.0)
        parts = layout.split(net(inputs, layout))
    for part, f in zip(parts, floors):
        assert torch.allclose(part, torch.full_like(part, f))


def test_inputs_switch_changes_what_the_heads_see(classifier):
    full = _net(classifier)
    magnitude_only = _net(classifier, inputs=["magnitude"])
    assert not magnitude_only.lateral and magnitude_only.strides == []
    assert sum(p.numel() for p in full.parameters()) > sum(p.numel() for p in magnitude_only.parameters())
    inputs, layout = _probe(classifier, (64, 64), WaveletConfig())
    assert magnitude_only(inputs, layout).shape == full(inputs, layout).shape


def test_bad_configuration(classifier):
    with pytest.raises(ValueError, match="floor"):
        _net(classifier, floor=1.0)
    with pytest.raises(ValueError, match="one value per scale"):
        _net(classifier, floor=[0.1, 0.1])
    with pytest.raises(ValueError, match="inputs"):
        _net(classifier, inputs=["colour"])
    with pytest.raises(ValueError, match="sees nothing"):
        MaskNet(None, {}, inputs=["features"])


def test_config_round_trip(classifier):
    net = _net(classifier, floor=[0.1, 0.0, 0.02, 0.1, 0.1, 0.1])
    config = {"wavelet": {"wave": "db3", "levels": 5, "mode": "zero"},
              "feature_channels": feature_channels(classifier, feature_taps(classifier.name), 64),
              "width": 4, "head_width": 8, "floor": [0.1, 0.0, 0.02, 0.1, 0.1, 0.1],
              "inputs": ["features", "gradient", "magnitude"], "init_bias": 0.0}
    other = MaskNet.from_config(config)
    other.load_state_dict(net.state_dict())
    inputs, layout = _probe(classifier, (64, 64), WaveletConfig())
    assert torch.equal(net(inputs, layout), other(inputs, layout))


def test_default_net_for_efficientnet_is_small_enough_to_ship():
    clf = create_classifier("efficientnet_lite0")
    net = MaskNet(None, feature_channels(clf, feature_taps(clf.name), 128))
    params = sum(p.numel() for p in net.parameters())
    assert params * 4 < 1e6, f"{params} parameters"
