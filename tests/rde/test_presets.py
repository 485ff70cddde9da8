"""Presets: the YAML files, overrides and validation."""

from __future__ import annotations

import pytest

from rde import RDEConfig, WaveletConfig, list_presets, load_preset
from rde.errors import InputError


def test_named_presets():
    assert {"cpu", "paper", "tiny"} <= set(list_presets())
    paper = load_preset("paper")
    assert (paper.image_size, paper.num_samples, paper.steps, paper.lr, paper.lam) == (256, 64, 2000, 1e-3, 20.0)
    assert paper.distortion == "label" and paper.obfuscation == "adaptive-gaussian"
    assert paper.wavelet == WaveletConfig("db3", 5, "zero") and paper.name == "paper"
    tiny = load_preset("tiny")
    assert (tiny.image_size, tiny.num_samples, tiny.steps) == (64, 4, 10)
    assert load_preset(tiny) is tiny


def test_replace_and_dict_round_trip():
    cpu = load_preset("cpu")
    changed = cpu.replace(lam=5.0, steps=None)
    assert changed.lam == 5.0 and changed.steps == cpu.steps and changed.name == "cpu+"
    assert cpu.replace() == cpu
    d = changed.to_dict()
    assert d["wavelet"] == {"wave": "db3", "levels": 5, "mode": "zero"}
    assert RDEConfig.from_dict({k: v for k, v in d.items() if k != "name"}, name="cpu+") == changed


def test_yaml_file_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("image_size: 96\nlam: 3\nwavelet: {wave: haar, levels: 3, mode: zero}\n")
    cfg = load_preset(path)
    assert (cfg.image_size, cfg.lam, cfg.name) == (96, 3, "mine")
    assert cfg.wavelet == WaveletConfig("haar", 3)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_preset(tmp_path / "missing.yaml")
    (tmp_path / "typo.yaml").write_text("lamda: 3\n")
    with pytest.raises(InputError, match=r"unknown preset keys \['lamda'\]"):
        load_preset(tmp_path / "typo.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="YAML mapping"):
        load_preset(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("lam: [3\n")
    with pytest.raises(InputError, match="broken.yaml: not valid YAML"):
        load_preset(tmp_path / "broken.yaml")


def test_unknown_preset_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown preset 'papr'.*Did you mean paper"):
        load_preset("papr")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", -1, "non-negative int"),
        ("num_samples", 0, "positive int"),
        ("image_size", 64.0, "positive int"),
        ("lr", float("nan"), "finite non-negative"),
        ("lam", -1.0, "finite non-negative"),
        ("spatial_weight", float("inf"), "finite non-negative"),
        ("distortion", "mse", "unknown distortion 'mse'"),
        ("obfuscation", "blur", "unknown obfuscation 'blur'"),
        ("samples_per_call", 0, "samples_per_call must be positive"),
    ],
)
def test_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        RDEConfig(**{field: value})
