"""The precision switch (32-true, bf16-mixed, 16-mixed) and channels_last, on CPU with the tiny classifier."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import rde
import rde.explainer as explainer_module
from amortized.cli import main
from amortized.commands._args import PRECISION_CHOICES
from rde import CartoonX, RDEConfig, create_classifier
from rde.precision import PRECISIONS, LossScale, check_precision_device

SEEDS = [1, 2, 3]


def images(batch: int = 3, size: int = 64) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def conv_dtypes(clf: nn.Module) -> tuple[list[torch.dtype], list]:
    """Record the output dtype of every Conv2d/Linear call of ``clf``."""
    seen: list[torch.dtype] = []
    handles = [
        m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
        for m in clf.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    return seen, handles


class RecordingAdam(torch.optim.Adam):
    """Adam that records the dtypes of its parameter, gradient and moment estimates after every step."""

    seen: list[tuple[torch.dtype, ...]] = []

    def step(self, closure=None):
        out = super().step(closure)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                RecordingAdam.seen.append((p.dtype, p.grad.dtype, state["exp_avg"].dtype, state["exp_avg_sq"].dtype))
        return out


@pytest.mark.parametrize("precision, classifier_dtype", [("32-true", torch.float32), ("bf16-mixed", torch.bfloat16)])
def test_only_the_classifier_runs_in_the_mixed_dtype(monkeypatch, precision, classifier_dtype):
    clf = create_classifier("tiny-test")
    seen, handles = conv_dtypes(clf)
    distortion_logits: list[torch.dtype] = []
    real_get = explainer_module.get_distortion

    def recording_get(name):
        fn = real_get(name)
        return lambda ref, logits, target: (distortion_logits.append(logits.dtype), fn(ref, logits, target))[1]

    monkeypatch.setattr(explainer_module, "get_distortion", recording_get)
    RecordingAdam.seen = []
    monkeypatch.setattr(explainer_module.torch.optim, "Adam", RecordingAdam)
    masks, losses = [], []
    result = CartoonX(clf, "tiny", precision=precision).explain(
        images(), seed=SEEDS, steps=3, callback=lambda s, m, l: (masks.append(m.dtype), losses.append(l["loss"].dtype))
    )
    for h in handles:
        h.remove()
    # the first calls are the float32 prediction of the clean images; every obfuscation call is in the mixed dtype
    assert seen[:3] == [torch.float32] * 3
    assert set(seen[3:]) == {classifier_dtype}
    assert distortion_logits and set(distortion_logits) == {torch.float32}
    assert RecordingAdam.seen and set(RecordingAdam.seen) == {(torch.float32,) * 4}
    assert set(masks) == set(losses) == {torch.float32}
    assert result.mask.dtype == result.history["loss"].dtype == torch.float32
    assert result.config["precision"] == result.config["preset"]["precision"] == precision


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_result_is_close_to_float32(precision):
    clf = create_classifier("tiny-test")
    try:
        check_precision_device(precision, torch.device("cpu"))
    except ValueError as e:
        pytest.skip(str(e))
    x = images()
    ref = CartoonX(clf, "tiny", lam=0.1).explain(x, seed=SEEDS, steps=10)
    mixed = CartoonX(clf, "tiny", lam=0.1, precision=precision).explain(x, seed=SEEDS, steps=10)
    moved = (ref.mask - 1).abs().mean()
    diff = (mixed.mask - ref.mask).abs().mean()
    assert not torch.equal(mixed.mask, ref.mask)  # the switch changed the arithmetic
    assert moved > 0.05  # the mask moved: the comparison below is not between two untouched masks
    assert diff < 0.1 * moved  # measured: 8.5e-4 (bf16) and 6.7e-4 (fp16) against 0.099 moved
    torch.testing.assert_close(mixed.loss[:, -1], ref.loss[:, -1], rtol=0.01, atol=0)


def test_all_ones_mask_stays_exactly_ones_at_lam0_in_bf16():
    """The distortion reference goes through the same autocast path, so its zero-distortion property survives."""
    result = CartoonX("tiny-test", "tiny", lam=0.0, precision="bf16-mixed").explain(images(2), steps=3)
    assert torch.equal(result.mask, torch.ones_like(result.mask))
    assert float(result.history["distortion"].abs().max()) == 0.0


@pytest.mark.parametrize("bad", ["bf16", "fp16", "32", "", "BF16-MIXED"])
def test_invalid_precision_names_are_refused_in_one_line(bad):
    message = rf"unknown precision '{bad}'; choose one of 32-true, bf16-mixed, 16-mixed$"
    with pytest.raises(ValueError, match=message):
        RDEConfig(precision=bad)
    with pytest.raises(ValueError, match=message):
        CartoonX("tiny-test", "tiny", precision=bad)


def test_cli_choices_are_the_library_precisions():
    assert PRECISION_CHOICES == PRECISIONS
    assert RDEConfig().precision == rde.load_preset("cpu").precision == "32-true"


def test_a_device_without_autocast_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.amp, "is_autocast_available", lambda device_type: False)
    with pytest.raises(ValueError, match=r"^precision 16-mixed is not available on cpu: .*use 32-true or bf16-mixed$"):
        CartoonX("tiny-test", "tiny", precision="16-mixed").explain(images(1), steps=1)
    CartoonX("tiny-test", "tiny").explain(images(1), steps=1)  # 32-true needs no autocast


def test_loss_scale_halves_on_overflow_and_is_off_unless_float16():
    scale = LossScale("16-mixed", init_scale=8.0)
    grad = torch.tensor([8.0, -16.0])
    assert scale.unscale(grad) and grad.tolist() == [1.0, -2.0] and scale.scale == 8.0
    assert not scale.unscale(torch.tensor([1.0, float("inf")])) and scale.scale == 4.0
    for precision in ("32-true", "bf16-mixed"):
        off = LossScale(precision)
        grad = torch.tensor([float("inf")])
        assert not off.enabled and off.scale == 1.0 and off.unscale(grad) and grad.isinf().all()
    with pytest.raises(FloatingPointError, match="not finite even at loss scale 1"):
        LossScale("16-mixed", init_scale=1.0).unscale(torch.tensor([float("nan")]))


def test_16_mixed_recomputes_an_overflowing_step_at_a_lower_scale(monkeypatch):
    """A scale that overflows float32 (2^200) is halved until it fits; every step is still taken."""
    try:
        check_precision_device("16-mixed", torch.device("cpu"))
    except ValueError as e:
        pytest.skip(str(e))
    made: list[LossScale] = []

    class Huge(LossScale):
        def __init__(self, precision):
            super().__init__(precision, init_scale=2.0**200)
            made.append(self)

    monkeypatch.setattr(explainer_module, "LossScale", Huge)
    x = images(2)
    result = CartoonX("tiny-test", "tiny", lam=0.1, precision="16-mixed").explain(x, seed=[1, 2], steps=4)
    ref = CartoonX("tiny-test", "tiny", lam=0.1).explain(x, seed=[1, 2], steps=4)
    assert made[0].scale < 2.0**128  # halved below float32's range
    assert torch.isfinite(result.mask).all() and result.history["loss"].shape == (2, 4)
    assert (result.mask - ref.mask).abs().mean() < 0.1 * (ref.mask - 1).abs().mean()


def test_channels_last_runs_the_classifier_channels_last_with_the_same_result():
    clf = create_classifier("tiny-test")
    formats: list[bool] = []
    handle = clf.model[0].register_forward_pre_hook(
        lambda mod, inp: formats.append(inp[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = images(2)
    plain = CartoonX(create_classifier("tiny-test"), "tiny").explain(x, seed=[1, 2], steps=3)
    nhwc = CartoonX(clf, "tiny", channels_last=True).explain(x, seed=[1, 2], steps=3)
    handle.remove()
    assert any(formats) and nhwc.config["channels_last"] and not plain.config["channels_last"]
    torch.testing.assert_close(nhwc.mask, plain.mask, atol=1e-5, rtol=0)


def test_cli_precision_flag_reaches_the_explainer(tmp_path):
    """The explainer records the precision it ran with; the CLI's mask is the Python API's bf16 mask."""
    import numpy as np
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray((images(1)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(photo)
    out = tmp_path / "out"
    args = ["explain", str(photo), "--model", "tiny-test", "--preset", "tiny", "--device", "cpu", "--steps", "3"]
    assert main([*args, "--lam", "0.1", "--precision", "bf16-mixed", "--out", str(out)]) == 0
    meta = json.loads((out / "photo.json").read_text())
    assert meta["config"]["precision"] == meta["config"]["preset"]["precision"] == "bf16-mixed"
    x = rde.io.preprocess(rde.io.load_image(photo), 64)[None]
    api = CartoonX("tiny-test", "tiny", lam=0.1, precision="bf16-mixed").explain(x, steps=3)
    with np.load(out / "photo.npz") as saved:
        mask = torch.from_numpy(saved["mask"]).float().reshape(api.mask.shape)
    torch.testing.assert_close(mask, api.mask, atol=1e-6, rtol=0)


def test_cli_refuses_an_unknown_precision(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["explain", "x.png", "--precision", "bf16"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'bf16'" in capsys.readouterr().err
