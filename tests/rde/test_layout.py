"""MaskLayout: scale shapes and sizes against PyWavelets, the flat order, and saving."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import pywt
import torch

from rde import MaskLayout, WaveletConfig
from rde.layout import Scale

CASES = [
    (64, 64, WaveletConfig()),
    (128, 128, WaveletConfig()),
    (96, 80, WaveletConfig()),
    (65, 70, WaveletConfig()),
    (40, 33, WaveletConfig("haar", 3)),
    (50, 50, WaveletConfig("db3", 1)),
    (64, 48, WaveletConfig("sym4", 4, "symmetric")),
]
IDS = [f"{h}x{w}-{c.wave}-J{c.levels}-{c.mode}" for h, w, c in CASES]


def wavedec2(array: np.ndarray, cfg: WaveletConfig) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pywt.wavedec2(array, cfg.wave, mode=cfg.mode, level=cfg.levels, axes=(-2, -1))


@pytest.mark.parametrize("height, width, cfg", CASES, ids=IDS)
def test_scale_shapes_and_count_match_pywavelets(height, width, cfg):
    layout = MaskLayout.for_wavelet(height, width, cfg)
    channels = 3
    coeffs = wavedec2(np.zeros((channels, height, width)), cfg)
    assert [s.name for s in layout.scales] == ["lowpass"] + [f"level{j}" for j in range(1, cfg.levels + 1)]
    assert layout.scales[0].shape == (1, *coeffs[0].shape[-2:])
    for j in range(1, cfg.levels + 1):
        detail = coeffs[-j]  # pywt: coarsest first; layout: level1 = finest
        assert all(d.shape == detail[0].shape for d in detail)
        assert layout.scales[j].shape == (3, *detail[0].shape[-2:])
    total = coeffs[0].size + sum(d.size for detail in coeffs[1:] for d in detail)
    assert layout.num_entries == sum(s.size for s in layout.scales) == total // channels


def test_paper_layout_numbers():
    """128 px, db3 (6 taps), J=5, zero padding: each level has floor((n + 5) / 2) coefficients per side."""
    sides, n = [], 128
    for _ in range(5):
        n = (n + 5) // 2
        sides.append(n)
    assert sides == [66, 35, 20, 12, 8]
    layout = MaskLayout.for_wavelet(128, 128)
    assert [s.shape for s in layout.scales] == [(1, 8, 8)] + [(3, n, n) for n in sides]
    assert layout.num_entries == 8 * 8 + 3 * sum(n * n for n in sides) == 18631
    assert layout.signature == "wavelet:db3:J5:zero:128x128"


def test_offsets_slices_and_scale_index_are_consistent():
    layout = MaskLayout.for_wavelet(96, 80)
    sizes = [s.size for s in layout.scales]
    assert list(layout.offsets) == list(np.cumsum([0] + sizes[:-1]))
    counts = torch.bincount(layout.scale_index, minlength=len(sizes))
    assert counts.tolist() == sizes
    for i in range(len(sizes)):
        assert torch.all(layout.scale_index[layout.scale_slice(i)] == i)


def test_split_join_round_trip_and_order():
    layout = MaskLayout.for_wavelet(65, 70)
    flat = torch.arange(2 * 3 * layout.num_entries, dtype=torch.float32).view(2, 3, -1)
    parts = layout.split(flat)
    assert [tuple(p.shape) for p in parts] == [(2, 3, *s.shape) for s in layout.scales]
    # entries are stored scale by scale, each scale row-major
    level2 = layout.scales[2]
    band, row, col = 1, 3, 5
    index = layout.offsets[2] + (band * level2.shape[1] + row) * level2.shape[2] + col
    assert parts[2][1, 2, band, row, col] == flat[1, 2, index]
    assert torch.equal(layout.join(parts), flat)
    mask = torch.rand(4, layout.num_entries)
    assert torch.equal(layout.join(layout.split(mask)), mask)


def test_flatten_coefficients_matches_pytorch_wavelets_tensors():
    cfg = WaveletConfig()
    layout = MaskLayout.for_wavelet(96, 80, cfg)
    yl, yh = cfg.forward_transform()(torch.rand(2, 3, 96, 80))
    flat = layout.flatten_coefficients(yl, yh)
    assert flat.shape == (2, 3, layout.num_entries)
    assert torch.equal(flat[..., layout.scale_slice(0)], yl.flatten(2))
    for j, y in enumerate(yh, start=1):
        assert torch.equal(flat[..., layout.scale_slice(j)], y.flatten(2))
    yl2, yh2 = layout.unflatten_coefficients(flat)
    assert torch.equal(yl2, yl)
    assert len(yh2) == len(yh) and all(torch.equal(a, b) for a, b in zip(yh2, yh))


def test_pixel_layout():
    layout = MaskLayout.for_pixels(48, 40)
    assert layout.kind == "pixel"
    assert layout.scales == (Scale("pixels", (1, 48, 40)),)
    assert layout.num_entries == 48 * 40
    assert layout.signature == "pixel:48x40"
    assert torch.all(layout.scale_index == 0)
    mask = torch.rand(2, 48 * 40)
    assert torch.equal(layout.split(mask)[0], mask.view(2, 1, 48, 40))


def test_signature_identifies_the_layout():
    a = MaskLayout.for_wavelet(64, 64)
    assert a.signature == "wavelet:db3:J5:zero:64x64"
    assert MaskLayout.for_wavelet(64, 64, WaveletConfig("haar", 3)).signature == "wavelet:haar:J3:zero:64x64"
    others = [
        MaskLayout.for_wavelet(64, 65),
        MaskLayout.for_wavelet(64, 64, WaveletConfig(levels=4)),
        MaskLayout.for_wavelet(64, 64, WaveletConfig(mode="symmetric")),
        MaskLayout.for_pixels(64, 64),
    ]
    assert len({a.signature, *(o.signature for o in others)}) == 5
    assert a == MaskLayout.for_wavelet(64, 64, WaveletConfig("db3", 5, "zero"))


@pytest.mark.parametrize(
    "layout", [MaskLayout.for_wavelet(96, 80), MaskLayout.for_wavelet(40, 33, WaveletConfig("haar", 3)), MaskLayout.for_pixels(7, 9)],
    ids=lambda l: l.signature,
)
def test_dict_round_trip(layout):
    d = json.loads(json.dumps(layout.to_dict()))
    assert d["signature"] == layout.signature and d["num_entries"] == layout.num_entries
    back = MaskLayout.from_dict(d)
    assert back == layout
    assert back.scales == layout.scales and back.signature == layout.signature


@pytest.mark.parametrize("batched", [True, False])
def test_save_load_round_trip(tmp_path, batched):
    layout = MaskLayout.for_wavelet(65, 70)
    mask = torch.rand(3, layout.num_entries) if batched else torch.rand(layout.num_entries)
    layout.save(tmp_path / "masks.npy", mask)
    assert (tmp_path / "masks.layout.json").exists()
    loaded_layout, loaded = MaskLayout.load(tmp_path / "masks.npy")
    assert loaded_layout == layout and loaded_layout.scales == layout.scales
    assert loaded.dtype == torch.float32 and torch.equal(loaded, mask)


@pytest.mark.parametrize("name", ["masks", "run.v1", "masks.npy"])
def test_save_load_with_any_file_name(tmp_path, name):
    layout = MaskLayout.for_pixels(6, 5)
    mask = torch.rand(2, 30)
    layout.save(tmp_path / name, mask)
    loaded_layout, loaded = MaskLayout.load(tmp_path / name)
    assert loaded_layout == layout and torch.equal(loaded, mask)
    stem = name.removesuffix(".npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{stem}.layout.json", f"{stem}.npy"]


def test_load_without_layout_file_names_it(tmp_path):
    np.save(tmp_path / "orphan.npy", np.zeros(10, dtype=np.float32))
    with pytest.raises(FileNotFoundError, match="orphan.layout.json"):
        MaskLayout.load(tmp_path / "orphan.npy")


def test_load_mask_of_other_layout_is_refused(tmp_path):
    MaskLayout.for_wavelet(64, 64).save(tmp_path / "m.npy", torch.zeros(MaskLayout.for_wavelet(64, 64).num_entries))
    meta = tmp_path / "m.layout.json"
    meta.write_text(json.dumps(MaskLayout.for_pixels(8, 8).to_dict()))
    with pytest.raises(ValueError, match="pixel:8x8 has k=64"):
        MaskLayout.load(tmp_path / "m.npy")


def test_wrong_sizes_raise_clear_errors(tmp_path):
    layout = MaskLayout.for_wavelet(64, 64)
    k = layout.num_entries
    with pytest.raises(ValueError, match=rf"{k + 1} entries.*wavelet:db3:J5:zero:64x64 has k={k}"):
        layout.split(torch.zeros(2, k + 1))
    with pytest.raises(ValueError, match=rf"k={k}"):
        layout.save(tmp_path / "bad.npy", torch.zeros(k - 1))
    parts = layout.split(torch.zeros(1, k))
    with pytest.raises(ValueError, match=r"expected 6 scales.*got 5"):
        layout.join(parts[:-1])
    parts[3] = torch.zeros(1, 3, 2, 2)
    with pytest.raises(ValueError, match=r"scale level3: expected trailing shape"):
        layout.join(parts)


@pytest.mark.parametrize("height, width, cfg", [(31, 64, WaveletConfig()), (64, 16, WaveletConfig()), (7, 7, WaveletConfig("haar", 3))])
def test_image_too_small_for_depth(height, width, cfg):
    with pytest.raises(ValueError, match=rf"{height}x{width} px is too small for a {cfg.levels}-level DWT"):
        MaskLayout.for_wavelet(height, width, cfg)


def test_full_and_ones():
    layout = MaskLayout.for_pixels(4, 4)
    assert torch.equal(layout.ones(2), torch.ones(2, 16))
    assert torch.equal(layout.full(3, 0.25), torch.full((3, 16), 0.25))
