"""Views (amortized/views.py, `generate --views`): deterministic crops and flips (keys and split: test_datasets),
the metadata that rebuilds them, and the pipeline reading view samples unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from amortized import shards as S
from amortized.cli import main as cli_main
from amortized.datamodule import MaskShardDataModule
from amortized.datasets import list_images, parse_view_key, split_of
from amortized.generate import generate_targets
from amortized.generate_data import with_views
from amortized.views import RATIO, SCALE, View, draw_view, load_view, rebuild_view, view_seed
from rde import load_image, preprocess
from rde.errors import InputError
from tests.amortized.test_generate import TINY, make_images, samples_by_key

def test_draw_view_is_deterministic_in_range_and_leaves_the_global_stream_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    views = [draw_view(f"photo{i % 40}", 1 + i // 40, 500, 375) for i in range(400)]
    assert torch.equal(torch.random.get_rng_state(), before)
    assert views == [draw_view(f"photo{i % 40}", 1 + i // 40, 500, 375) for i in range(400)]
    assert len({v.box for v in views}) > 390
    for v in views:
        top, left, h, w = v.box
        assert 0 <= top and top + h <= 375 and 0 <= left and left + w <= 500 and v.source_size == (500, 375)
        assert SCALE[0] - 0.01 <= h * w / (500 * 375) <= SCALE[1]
        assert RATIO[0] - 0.01 <= w / h <= RATIO[1] + 0.01
    assert 160 < sum(v.flip for v in views) < 240  # p = 1/2, sd 10
    assert view_seed("a", 1) != view_seed("a", 2) != view_seed("b", 1)
    with pytest.raises(InputError, match="at least 1"):
        draw_view("a", 0, 10, 10)


def test_a_view_is_torchvisions_random_resized_crop_and_flip_under_its_seed(tmp_path):
    """An independent reference: torchvision's own transforms, seeded with the view's seed."""
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(path)
    flips = set()
    for index in range(1, 9):
        got, view = load_view(path, "photo", index, 48)
        torch.manual_seed(view_seed("photo", index))
        reference = T.Compose([T.PILToTensor(), T.RandomResizedCrop(48, scale=SCALE, ratio=RATIO, antialias=True),
                               T.RandomHorizontalFlip(0.5)])(Image.open(path).convert("RGB"))
        assert torch.equal(got, reference.float() / 255)
        flips.add(view.flip)
    assert flips == {True, False}
    photo, none = load_view(path, "photo", 0, 48)
    assert none is None and torch.equal(photo, preprocess(load_image(path), 48))


def test_view_meta_round_trip_and_malformed_records():
    view = View(2, (1, 2, 30, 40), True, (64, 48))
    assert View.from_meta(json.loads(json.dumps(view.to_meta()))) == view
    for bad in (None, {"index": 1}, {"index": 1, "box": [1, 2], "flip": False, "source_size": [3, 4]}):
        with pytest.raises(InputError, match="malformed view record"):
            View.from_meta(bad)


def test_with_views_orders_photos_then_view_by_view():
    items = list_images_of(["b", "a"])
    keys = [i.key for i in with_views(items, 2)]
    assert keys == ["b", "a", "b@v1", "a@v1", "b@v2", "a@v2"]
    assert [i.view for i in with_views(items, 2, photos_too=False)] == [1, 1, 2, 2]
    assert with_views(items, 0) == items


def list_images_of(keys):
    from pathlib import Path

    from amortized.datasets import ImageItem

    return [ImageItem(k, Path(f"{k}.png"), f"{k}.png", None, -1) for k in keys]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("photos"), 3)


@pytest.fixture(scope="module")
def with_view_samples(photos, tmp_path_factory):
    """Photos first without views, then the same folder with 2 views each: a resume that adds views."""
    out = tmp_path_factory.mktemp("views") / "shards"
    first = generate_targets(photos, out, shard_size=4, steps=2, **TINY)
    photo_shards = {p.name: p.read_bytes() for p in S.list_shards(out)}
    second = generate_targets(photos, out, shard_size=4, steps=2, views=2, **TINY)
    return out, first, second, photo_shards


def test_generate_views_resumes_beside_the_photos(photos, with_view_samples):
    out, first, second, photo_shards = with_view_samples
    assert (first.done, second.done, second.skipped, second.failed) == (3, 6, 3, 0)
    assert {p.name: p.read_bytes() for p in S.list_shards(out) if p.name in photo_shards} == photo_shards
    photo_keys = sorted(i.key for i in list_images(photos))
    assert sorted(samples_by_key(out)) == sorted(photo_keys + [f"{k}@v{v}" for k in photo_keys for v in (1, 2)])
    assert S.verify_shards(out)[1] == []


def test_view_samples_record_their_view_and_rebuild_exactly(photos, with_view_samples):
    out, *_ = with_view_samples
    paths = {i.key: i.path for i in list_images(photos)}
    for key, s in samples_by_key(out).items():
        photo, index = parse_view_key(key)
        meta = s["meta"]
        assert meta["source"] == paths[photo].name and meta["label"] == s["label"] >= 0
        rebuilt = (rebuild_view(paths[photo], meta) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(rebuilt, s["image"])
        if index == 0:
            assert "view" not in meta
            continue
        width, height = Image.open(paths[photo]).size
        assert meta["view"] == draw_view(photo, index, width, height).to_meta() and meta["view"]["index"] == index
        assert not np.array_equal(s["image"], samples_by_key(out)[photo]["image"])
        small = paths[photo].parent.parent / f"small_{photo}.png"
        Image.open(paths[photo]).resize((width // 2, height // 2)).save(small)
        with pytest.raises(InputError, match=rf"small_{photo}.png: view {index} was cut from a {width}x{height}"):
            rebuild_view(small, meta)


def test_training_reads_view_samples_in_their_photos_split(with_view_samples):
    out, *_ = with_view_samples
    dm = MaskShardDataModule(str(out), preset="tiny", batch_size=2, val_fraction=0.5)
    dm.setup("fit")
    seen = {split: [k for b in loader() for k in b["key"]]
            for split, loader in (("train", dm.train_dataloader), ("val", dm.val_dataloader))}
    assert sorted(seen["val"]) == sorted(k for k in samples_by_key(out) if split_of(k, 0.5) == "val")
    assert {parse_view_key(k)[0] for k in seen["train"]}.isdisjoint({parse_view_key(k)[0] for k in seen["val"]})
    assert any("@v" in k for k in seen["train"] + seen["val"])


def test_cli_views_only_and_a_negative_count(photos, tmp_path, capsys):
    out = tmp_path / "views"
    args = ["generate", str(photos), "--out", str(out), "--model", "tiny-test", "--preset", "tiny", "--steps", "1",
            "--limit", "1", "--views", "2", "--views-only", "--no-progress"]
    assert cli_main(args) == 0
    keys = sorted(samples_by_key(out))
    assert len(keys) == 2 and [parse_view_key(k)[1] for k in keys] == [1, 2]
    with pytest.raises(SystemExit):
        cli_main(args[:-4] + ["--views", "-1"])
    assert "expected an integer >= 0, got -1" in capsys.readouterr().err


def test_training_reads_photos_and_views_made_at_another_precision_together(photos, with_view_samples, tmp_path):
    """Views written beside targets of another configuration (here bf16-mixed) train with them, as the flywheel does."""
    out, *_ = with_view_samples
    views = tmp_path / "bf16-views"
    generate_targets(photos, views, steps=2, views=1, views_only=True, precision="bf16-mixed", **TINY)
    assert S.open_shard_dir(views).config_hash != S.open_shard_dir(out).config_hash
    photo_dir = tmp_path / "photos-only"
    generate_targets(photos, photo_dir, steps=2, **TINY)
    dm = MaskShardDataModule([str(photo_dir), str(views)], preset="tiny", batch_size=2, val_fraction=0.0)
    dm.setup("fit")
    keys = [k for b in dm.train_dataloader() for k in b["key"]]
    assert sorted(keys) == sorted(list(samples_by_key(photo_dir)) + list(samples_by_key(views)))
    assert any(k.endswith("@v1") for k in keys) and len(keys) == 6
    for shards, problem in (([str(out), str(views)], r"@v1' is in both"), ([str(out), str(out)], "given twice")):
        with pytest.raises(InputError, match=problem):
            MaskShardDataModule(shards, preset="tiny", batch_size=2).setup("fit")
