"""The DWT representation against PyWavelets, coefficient by coefficient, and its inverse."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
import torch

from rde import PixelRepresentation, WaveletConfig, WaveletRepresentation
from rde.representation import create_representation, greyscale

SIZES = [(64, 64), (96, 80), (65, 70)]
WAVELETS = [WaveletConfig(), WaveletConfig("haar", 3), WaveletConfig("db2", 2)]


def wavedec2(images: np.ndarray, cfg: WaveletConfig) -> list:
    """PyWavelets' DWT over the last two axes: ``[cA_J, (cH_J, cV_J, cD_J), ..., (cH_1, cV_1, cD_1)]``."""
    with warnings.catch_warnings():  # db3 at J=5 exceeds pywt's "useful" level on small images; still exact
        warnings.simplefilter("ignore")
        return pywt.wavedec2(images, cfg.wave, mode=cfg.mode, level=cfg.levels, axes=(-2, -1))


def pywt_flat(images: np.ndarray, cfg: WaveletConfig) -> np.ndarray:
    """The documented flat order built from PyWavelets: lowpass, then levels finest -> coarsest, each (3, h, w)."""
    coeffs = wavedec2(images, cfg)
    b, c = images.shape[:2]
    parts = [coeffs[0].reshape(b, c, -1)]
    for detail in reversed(coeffs[1:]):  # pywt lists the coarsest level first
        parts.append(np.stack(detail, axis=2).reshape(b, c, -1))  # (cH, cV, cD) = pytorch-wavelets yh[:, :, 0..2]
    return np.concatenate(parts, axis=-1)


@pytest.mark.parametrize("cfg", WAVELETS, ids=lambda c: f"{c.wave}-J{c.levels}")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_encode_matches_pywavelets(size, cfg):
    height, width = size
    images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height * width))
    flat = WaveletRepresentation(height, width, cfg).encode(images)
    expected = pywt_flat(images.double().numpy(), cfg)
    assert flat.shape == expected.shape
    # float32 transform vs float64 reference; lowpass magnitudes grow like 2^J
    np.testing.assert_allclose(flat.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_encode_matches_pywavelets_per_band():
    """Locate single bands explicitly: an impulse image's level-1 (cH, cV, cD) appear where the layout says."""
    cfg = WaveletConfig()
    rep = WaveletRepresentation(64, 64, cfg)
    image = torch.zeros(1, 1, 64, 64)
    image[0, 0, 20, 33] = 1.0
    parts = rep.layout.split(rep.encode(image))
    coeffs = wavedec2(image.double().numpy(), cfg)
    np.testing.assert_allclose(parts[0][:, :, 0].numpy(), coeffs[0], atol=1e-6)
    for level in range(1, cfg.levels + 1):
        for band, name in enumerate(("cH", "cV", "cD")):
            np.testing.assert_allclose(
                parts[level][:, :, band].numpy(), coeffs[-level][band], atol=1e-6, err_msg=f"level {level} {name}"
            )


@pytest.mark.parametrize("cfg", WAVELETS, ids=lambda c: f"{c.wave}-J{c.levels}")
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_decode_inverts_encode(size, cfg):
    height, width = size
    rep = WaveletRepresentation(height, width, cfg)
    images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(1))
    restored = rep.decode(rep.encode(images))
    assert restored.shape == images.shape
    torch.testing.assert_close(restored, images, atol=1e-5, rtol=0)


def test_decode_is_linear_and_matches_pywavelets_inverse():
    cfg = WaveletConfig()
    rep = WaveletRepresentation(65, 70, cfg)
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(1, 2, rep.layout.num_entries, generator=gen), torch.randn(1, 2, rep.layout.num_entries, generator=gen)
    torch.testing.assert_close(rep.decode(2 * a - b), 2 * rep.decode(a) - rep.decode(b), atol=1e-4, rtol=1e-5)
    # an arbitrary coefficient vector (not the DWT of an image) against pywt.waverec2, cropped like decode
    parts = rep.layout.split(a.double())
    coeffs = [parts[0][:, :, 0].numpy()] + [tuple(p[:, :, i].numpy() for i in range(3)) for p in reversed(parts[1:])]
    expected = pywt.waverec2(coeffs, cfg.wave, mode=cfg.mode, axes=(-2, -1))[..., :65, :70]
    np.testing.assert_allclose(rep.decode(a).numpy(), expected, rtol=1e-5, atol=1e-4)


def test_encode_rejects_wrong_image_size():
    rep = WaveletRepresentation(64, 64)
    with pytest.raises(ValueError, match=r"64, 64.*\(1, 3, 64, 48\)"):
        rep.encode(torch.zeros(1, 3, 64, 48))
    with pytest.raises(ValueError, match="expected images of shape"):
        rep.encode(torch.zeros(3, 64, 64))


def test_pixel_representation_is_identity_in_layout_order():
    rep = PixelRepresentation(5, 7)
    images = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    flat = rep.encode(images)
    assert flat.shape == (2, 3, 35)
    assert flat[1, 2, 7 * 2 + 3] == images[1, 2, 2, 3]  # row-major
    assert torch.equal(rep.decode(flat), images)


def test_create_representation_and_greyscale():
    assert isinstance(create_representation("wavelet", 64, 64), WaveletRepresentation)
    assert isinstance(create_representation("pixel", 8, 8), PixelRepresentation)
    with pytest.raises(ValueError, match="'fourier'.*wavelet.*pixel"):
        create_representation("fourier", 8, 8)
    images = torch.tensor([0.0, 0.3, 0.9]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    torch.testing.assert_close(greyscale(images), torch.full((1, 1, 2, 2), 0.4))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"wave": "db99"}, "unknown wavelet"), ({"levels": 0}, "positive int"), ({"mode": "wrap"}, "padding mode")],
)
def test_wavelet_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WaveletConfig(**kwargs)
