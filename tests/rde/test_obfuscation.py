"""Adaptive Gaussian obfuscation: per-scale statistics against NumPy/PyWavelets and the drawn noise."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
import torch

from rde import MaskLayout, WaveletConfig, WaveletRepresentation
from rde.obfuscation import Obfuscation, scale_statistics


def make_images() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    bright = 0.5 + 0.5 * torch.rand(1, 3, 64, 48, generator=gen)
    dark = 0.1 * torch.rand(1, 3, 64, 48, generator=gen)
    return torch.cat([bright, dark])


def test_scale_statistics_match_numpy_on_pywavelets_coefficients():
    cfg = WaveletConfig()
    images = make_images()
    rep = WaveletRepresentation(64, 48, cfg)
    mean, std = scale_statistics(rep.encode(images), rep.layout)
    assert mean.shape == std.shape == (2, cfg.levels + 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coeffs = pywt.wavedec2(images.double().numpy(), cfg.wave, mode=cfg.mode, level=cfg.levels, axes=(-2, -1))
    for b in range(2):
        groups = [coeffs[0][b]] + [np.stack(coeffs[-j], axis=1)[b] for j in range(1, cfg.levels + 1)]
        for s, group in enumerate(groups):  # all channels (and all three bands) of one scale together
            np.testing.assert_allclose(mean[b, s].item(), group.mean(), rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(std[b, s].item(), group.std(), rtol=1e-4, atol=1e-6)  # population std


def test_scale_statistics_pixel_layout_is_whole_image():
    images = make_images()
    layout = MaskLayout.for_pixels(64, 48)
    mean, std = scale_statistics(images.flatten(2), layout)
    arr = images.numpy()
    np.testing.assert_allclose(mean[:, 0].numpy(), arr.reshape(2, -1).mean(1), rtol=1e-5)
    np.testing.assert_allclose(std[:, 0].numpy(), arr.reshape(2, -1).std(1), rtol=1e-5)


def test_adaptive_noise_has_each_scales_statistics():
    rep = WaveletRepresentation(64, 48, WaveletConfig("haar", 3))
    coefficients = rep.encode(make_images())
    noise = Obfuscation("adaptive-gaussian", coefficients, rep.layout)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    samples = noise.sample(400, gens)
    assert samples.shape == (2, 400, 3, rep.layout.num_entries)
    mean, std = scale_statistics(coefficients, rep.layout)
    for b in range(2):
        for s in range(len(rep.layout.scales)):
            drawn = samples[b, ..., rep.layout.scale_slice(s)]  # >= 400 * 3 * 48 values per scale
            assert abs(drawn.mean() - mean[b, s]) < 0.02 * std[b, s]
            assert abs(drawn.std() / std[b, s] - 1) < 0.02
    # the two images have clearly different lowpass statistics, and each gets its own
    assert mean[0, 0] > 3 * mean[1, 0]


def test_zero_obfuscation_is_zero():
    rep = WaveletRepresentation(64, 48)
    coefficients = rep.encode(make_images())
    samples = Obfuscation("zero", coefficients, rep.layout).sample(5, [torch.Generator()] * 2)
    assert samples.shape == (2, 5, 3, rep.layout.num_entries)
    assert torch.count_nonzero(samples) == 0


def test_same_seed_same_noise_other_seed_other_noise():
    layout = MaskLayout.for_pixels(8, 8)
    coefficients = torch.rand(2, 3, 64)
    noise = Obfuscation("adaptive-gaussian", coefficients, layout)
    a = noise.sample(4, [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)])
    b = noise.sample(4, [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)])
    c = noise.sample(4, [torch.Generator().manual_seed(5), torch.Generator().manual_seed(7)])
    assert torch.equal(a, b)
    assert torch.equal(a[0], c[0]) and not torch.allclose(a[1], c[1])


def test_unknown_obfuscation():
    with pytest.raises(ValueError, match="'blur'.*adaptive-gaussian, zero"):
        Obfuscation("blur", torch.zeros(1, 3, 4), MaskLayout.for_pixels(2, 2))
