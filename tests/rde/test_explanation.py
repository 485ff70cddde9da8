"""The Explanation result: indexing, per-scale masks, saving and self-checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rde import CartoonX, Explanation, MaskLayout


@pytest.fixture(scope="module")
def result(tiny_classifier) -> Explanation:
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    return CartoonX(tiny_classifier, preset="tiny").explain(x, seed=[1, 2, 3], steps=3)


def test_indexing_gives_a_batch_of_one(result):
    assert len(result) == 3
    for index, expected in ((1, 1), (-1, 2)):
        one = result[index]
        assert len(one) == 1
        assert torch.equal(one.mask[0], result.mask[expected])
        assert torch.equal(one.explanation[0], result.explanation[expected])
        assert torch.equal(one.loss[0], result.history["loss"][expected])
        assert one.class_names == [result.class_names[expected]] and one.layout == result.layout


def test_masks_per_scale(result):
    parts = result.masks_per_scale()
    assert [tuple(p.shape[1:]) for p in parts] == [s.shape for s in result.layout.scales]
    assert all(p.shape[0] == 3 for p in parts)
    assert torch.equal(result.layout.join(parts), result.mask)


def test_save_and_load_mask(result, tmp_path):
    npz, js = result.save(tmp_path / "out" / "img", index=2)
    assert npz.name == "img.npz" and js.name == "img.json"
    layout, mask, meta = Explanation.load_mask(tmp_path / "out" / "img")
    assert layout == result.layout and torch.equal(mask, result.mask[2])
    assert meta["target"] == int(result.targets[2]) and meta["config"]["seeds"] == [1, 2, 3]
    assert meta["final"]["loss"] == pytest.approx(float(result.loss[2, -1]))
    with np.load(npz) as data:
        np.testing.assert_array_equal(data["history_distortion"], result.history["distortion"][2].numpy())
        assert data["explanation"].shape == (64, 64)
    json.loads(js.read_text())


def test_inconsistent_explanation_is_refused(result):
    fields = {name: getattr(result, name) for name in result.__dataclass_fields__}
    with pytest.raises(ValueError, match="must lie in"):
        Explanation(**{**fields, "mask": result.mask + 1})
    with pytest.raises(ValueError, match="targets has batch 2, mask has 3"):
        Explanation(**{**fields, "targets": result.targets[:2]})
    with pytest.raises(ValueError, match="lacks"):
        Explanation(**{**fields, "history": {"loss": result.loss}})
    with pytest.raises(ValueError, match="k="):
        Explanation(**{**fields, "layout": MaskLayout.for_pixels(64, 64)})
