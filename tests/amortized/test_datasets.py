"""Image lists, canonical labels and the hash split (amortized/datasets.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from amortized.datasets import (
    find_images,
    image_suffixes,
    in_split,
    key_seed,
    label_of,
    list_images,
    parse_view_key,
    sample_key,
    split_of,
    view_key,
    wnid_of,
)
from rde.errors import InputError

# (wnid, canonical index): tench is class 0, goldfish 1, toilet tissue 999 in the standard ImageNet-1k order.
KNOWN = [("n01440764", 0), ("n01443537", 1), ("n15075141", 999)]


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def test_sample_key_replaces_dots_and_drops_suffix():
    assert sample_key("/a/b/n01440764_10026.JPEG") == "n01440764_10026"
    assert sample_key("x/photo.v2.final.png") == "photo_v2_final"


def test_wnid_from_folder_or_prefix():
    assert wnid_of("root/n01440764/img.JPEG") == "n01440764"
    assert wnid_of("flat/n01443537_goldfish.JPEG") == "n01443537"
    assert wnid_of("flat/holiday.jpg") is None
    assert wnid_of("flat/n123_x.jpg") is None


@pytest.mark.parametrize("wnid,index", KNOWN)
def test_labels_are_canonical_indices(wnid, index):
    assert label_of(wnid) == index


def test_unknown_wnid_gets_minus_one():
    assert label_of(None) == -1
    assert label_of("n99999999") == -1


def test_three_input_forms_give_the_same_items(tmp_path):
    names = [f"{w}_img{i}" for i, (w, _) in enumerate(KNOWN)]
    flat = tmp_path / "flat"
    tree = tmp_path / "tree"
    for name, (w, _) in zip(names, KNOWN):
        _png(flat / f"{name}.png")
        _png(tree / w / f"{name}.png")
    listing = tmp_path / "lists" / "images.txt"
    listing.parent.mkdir()
    listing.write_text("# a comment\n\n" + "\n".join(f"../flat/{n}.png  # trailing" for n in reversed(names)) + "\n")

    for src in (flat, tree, listing):
        items = list_images(src)
        assert [i.key for i in items] == sorted(names), src
        assert [i.label for i in items] == [idx for _, idx in sorted(zip(names, [i for _, i in KNOWN]))]
        assert all(i.path.is_file() for i in items)


def test_labels_do_not_come_from_enumerating_folders(tmp_path):
    # Only two classes present: indices must still be the canonical 1 and 999, not 0 and 1.
    _png(tmp_path / "n01443537" / "a.JPEG")
    _png(tmp_path / "n15075141" / "b.JPEG")
    assert [(i.key, i.label) for i in list_images(tmp_path)] == [("a", 1), ("b", 999)]


def test_hidden_files_and_non_images_are_ignored(tmp_path):
    _png(tmp_path / "n01440764_a.png")
    _png(tmp_path / ".cache" / "n01440764_b.png")
    _png(tmp_path / "._n01440764_c.png")
    (tmp_path / "notes.txt").write_text("x")
    assert [i.key for i in list_images(tmp_path)] == ["n01440764_a"]


def test_duplicate_keys_are_refused_naming_both(tmp_path):
    a = _png(tmp_path / "n01440764" / "x.png")
    b = _png(tmp_path / "n01443537" / "x.png")
    with pytest.raises(ValueError, match="same sample key 'x'") as err:
        list_images(tmp_path)
    assert str(a) in str(err.value) and str(b) in str(err.value)


def test_missing_sources_and_listed_files_are_named_and_skipped(tmp_path):
    good = _png(tmp_path / "n01440764_good.png")
    listing = tmp_path / "l.txt"
    listing.write_text("missing.png\nn01440764_good.png\n")
    (tmp_path / "empty").mkdir()
    problems: list[str] = []
    items = list_images([tmp_path / "nowhere", listing, tmp_path / "empty"], on_problem=problems.append)
    assert [i.path for i in items] == [good]
    assert problems == [
        f"{tmp_path / 'nowhere'}: no such file or directory",
        f"{listing}:1: listed image 'missing.png' not found ({tmp_path / 'missing.png'})",
        f"{tmp_path / 'empty'}: folder holds no image files",
    ]
    with pytest.raises(ValueError, match="no images found"):
        list_images(tmp_path / "empty", on_problem=problems.append)


def test_the_same_file_named_twice_is_one_item(tmp_path):
    a = _png(tmp_path / "n01440764_a.png")
    assert [i.path for i in list_images([tmp_path, a])] == [a]


def test_every_format_pil_reads_and_unknown_suffixes_given_by_name(tmp_path):
    """A folder's GIFs, TGAs... count (PIL's registered formats); a named file of any suffix is an image, not a list."""
    for name, fmt in [("a.gif", "GIF"), ("b.tga", "TGA"), ("c.PNG", "PNG"), ("d.webp", "WEBP")]:
        Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(_dir(tmp_path / "in") / name, fmt)
    (tmp_path / "in" / "notes.json").write_text("{}")
    assert [p.name for p, _ in find_images(tmp_path / "in")] == ["a.gif", "b.tga", "c.PNG", "d.webp"]
    odd = tmp_path / "photo.jpeg_large"  # not a list: handed to the image loader, which names it if it fails
    odd.write_bytes((tmp_path / "in" / "a.gif").read_bytes())
    assert find_images([odd, tmp_path / "in" / "a.gif"]) == [(odd, odd.name), (tmp_path / "in" / "a.gif", "a.gif")]
    assert {".gif", ".tga", ".png", ".jpeg", ".webp", ".bmp"} <= image_suffixes()


def test_a_list_that_is_not_text_is_named_and_skipped(tmp_path):
    binary = tmp_path / "list.txt"
    binary.write_bytes(b"\xff\xfe\x00 not utf-8")
    problems: list[str] = []
    assert find_images([binary], problems.append) == []
    assert len(problems) == 1 and problems[0].startswith(f"{binary}: not a readable text list")


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_split_is_a_hash_of_the_key():
    keys = [f"n{i:08d}_img" for i in range(8000)]
    val = [k for k in keys if split_of(k) == "val"]
    # sha1-based: an independent recomputation of the rule.
    expected = [k for k in keys if int.from_bytes(hashlib.sha1(k.encode()).digest()[:8], "big") / 2**64 < 1 / 8]
    assert val == expected
    assert 8000 / 8 - 4 * 30 < len(val) < 8000 / 8 + 4 * 30  # binomial sd ~ 30
    assert all(in_split(k, "train") != in_split(k, "val") for k in keys[:500])
    assert all(in_split(k, "all") for k in keys[:10])
    assert not any(in_split(k, "val", 0.0) for k in keys[:500])


def test_split_filters_list_and_is_order_independent(tmp_path):
    for i in range(40):
        _png(tmp_path / f"n01440764_{i}.png", i)
    all_keys = {i.key for i in list_images(tmp_path)}
    train = {i.key for i in list_images(tmp_path, split="train", val_fraction=0.25)}
    val = {i.key for i in list_images(tmp_path, split="val", val_fraction=0.25)}
    assert train | val == all_keys and not train & val and val
    assert val == {k for k in all_keys if split_of(k, 0.25) == "val"}
    with pytest.raises(ValueError, match="split"):
        list_images(tmp_path, split="test")
    with pytest.raises(ValueError, match="val_fraction"):
        list_images(tmp_path, val_fraction=1.5)


def test_key_seed_depends_on_key_and_base_seed_only():
    assert key_seed("a", 0) == key_seed("a", 0)
    seeds = {key_seed(f"k{i}", 0) for i in range(1000)}
    assert len(seeds) == 1000
    assert key_seed("a", 0) != key_seed("a", 1)
    assert all(0 <= s < 2**63 for s in seeds)


# The 92 val photos of ../shared (800 photos, hash split), pinned: sha256 of their sorted keys, space-joined.
VAL_KEYS_SHA256 = "8e9a84b707332cbc"


def test_view_keys_name_photo_and_index():
    assert view_key("n01440764_tench", 0) == "n01440764_tench"
    assert view_key("n01440764_tench", 3) == "n01440764_tench@v3"
    assert parse_view_key("n01440764_tench@v3") == ("n01440764_tench", 3)
    assert parse_view_key("n01440764_tench") == ("n01440764_tench", 0)
    assert parse_view_key("a@v0") == ("a@v0", 0) and parse_view_key("a@v") == ("a@v", 0)
    with pytest.raises(InputError, match="at least 0"):
        view_key("a", -1)


def test_views_keep_their_photos_split():
    keys = [f"n{i:08d}_img" for i in range(2000)]
    assert sum(split_of(k) == "val" for k in keys) > 200
    for k in keys:
        assert {split_of(view_key(k, v), 0.25) for v in range(1, 6)} == {split_of(k, 0.25)}
        assert {split_of(view_key(k, v)) for v in (1, 17, 100)} == {split_of(k)}


def test_no_val_photo_of_the_shared_sample_changes_split(imagenet_sample):
    keys = [i.key for i in list_images(imagenet_sample)]
    val = sorted(k for k in keys if split_of(k) == "val")
    assert len(keys) == 800 and len(val) == 92
    assert hashlib.sha256(" ".join(val).encode()).hexdigest()[:16] == VAL_KEYS_SHA256
    assert all(split_of(view_key(k, v)) == "val" for k in val for v in (1, 2, 50))
    assert not any(split_of(view_key(k, 1)) == "val" for k in keys if k not in set(val))


def test_a_photo_whose_key_reads_as_a_view_is_refused(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "n01440764_x@v2.png")
    with pytest.raises(InputError, match=r"x@v2.png.*reads as a view of photo 'n01440764_x'"):
        list_images(tmp_path)
