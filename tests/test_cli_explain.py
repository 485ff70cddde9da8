"""``cartoonx explain`` end to end through ``amortized.cli.main`` (tiny-test classifier, tiny preset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rde
from amortized.cli import main
from rde.io import load_image, preprocess

TINY = ["--model", "tiny-test", "--preset", "tiny", "--device", "cpu"]
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def write_photo(path: Path, seed: int, size: tuple[int, int] = (90, 70)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def reference(path: Path, steps: int, method=rde.CartoonX, init="ones", seed: int = 0) -> rde.Explanation:
    """The same explanation through the Python API, one image at a time."""
    images = preprocess(load_image(path), 64)[None]
    return method("tiny-test", preset="tiny").explain(images, init=init, steps=steps, seed=seed)


def load_outputs(out: Path, stem: str) -> tuple[dict, dict]:
    with np.load(out / f"{stem}.npz") as data:
        arrays = dict(data)
    return arrays, json.loads((out / f"{stem}.json").read_text())


def test_explain_writes_figure_mask_and_metadata(tmp_path, capsys):
    photos = [write_photo(tmp_path / f"img{i}.jpg", i) for i in range(3)]
    out = tmp_path / "out"
    code = main(["explain", *map(str, photos), *TINY, "--steps", "3", "--seed", "5", "--batch-size", "2",
                 "--out", str(out)])
    assert code == 0
    stdout = capsys.readouterr().out
    k = rde.MaskLayout.for_wavelet(64, 64).num_entries
    for photo in photos:
        arrays, meta = load_outputs(out, photo.stem)
        with Image.open(out / f"{photo.stem}.png") as img:
            assert img.format == "PNG" and img.size[0] > 2 * img.size[1]
        assert arrays["mask"].shape == (k,) and arrays["explanation"].shape == (64, 64)
        assert arrays["history_loss"].shape == (3,)
        assert meta["layout"]["signature"] == "wavelet:db3:J5:zero:64x64" and meta["layout"]["num_entries"] == k
        assert len(meta["history"]["loss"]) == 3 and set(meta["history"]) == set(rde.explanation.HISTORY_KEYS)
        config = meta["config"]
        assert config["model"] == config["classifier"] == "tiny-test"
        assert config["preset_name"] == "tiny" and config["preset"]["num_samples"] == 4
        assert config["seed"] == 5 and config["init"] == "ones" and config["steps"] == 3
        assert config["image"] == str(photo)
        # Batching in the CLI must not mix images up: each output equals a lone API run on its file.
        ref = reference(photo, steps=3, seed=5)
        np.testing.assert_allclose(arrays["mask"], ref.mask[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(meta["history"]["loss"], ref.loss[0].numpy(), rtol=1e-4)
        assert meta["class_name"] == ref.class_names[0] and meta["target"] == int(ref.targets[0])
        assert f"{photo}: {ref.class_names[0]}" in stdout
    assert "explained 3 of 3" in stdout


def test_directory_input_and_overrides(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    write_photo(folder / "b.png", 1)
    write_photo(folder / "a.jpg", 2)
    (folder / "notes.txt").write_text("not an image, and not picked up: wrong suffix")
    out = tmp_path / "out"
    code = main(["explain", str(folder), *TINY, "--steps", "2", "--lam", "3", "--num-samples", "2",
                 "--init", "const:0.5", "--out", str(out)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert stdout.index("a.jpg") < stdout.index("b.png")
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.npz", "a.png", "b.json", "b.npz", "b.png"]
    _, meta = load_outputs(out, "a")
    assert meta["config"]["preset"]["lam"] == 3 and meta["config"]["preset"]["num_samples"] == 2
    assert meta["config"]["init"] == "const:0.5"
    # the first history entry is at the initial mask: sparsity 0.5 exactly
    assert meta["history"]["sparsity"][0] == pytest.approx(0.5)


def test_bad_files_are_reported_and_skipped(tmp_path, capsys):
    good = [write_photo(tmp_path / "good1.png", 1), write_photo(tmp_path / "good2.jpg", 2)]
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    truncated = tmp_path / "truncated.jpg"
    write_photo(truncated, 3, size=(200, 150))
    truncated.write_bytes(truncated.read_bytes()[:-2000])
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    args = [good[0], text, truncated, empty_dir, missing, good[1]]
    code = main(["explain", *map(str, args), *TINY, "--steps", "1", "--batch-size", "2", "--out", str(out)])
    assert code == 1
    captured = capsys.readouterr()
    for bad in (text, truncated, empty_dir, missing):
        assert str(bad) in captured.err
    assert "truncated" in captured.err and "no image files" in captured.err
    for photo in good:
        assert (out / f"{photo.stem}.png").exists() and (out / f"{photo.stem}.npz").exists()
    assert not (out / "notes.png").exists() and not (out / "truncated.png").exists()
    assert "explained 2 of 6" in captured.out and "4 skipped" in captured.out


@pytest.mark.parametrize(
    "option, value, expected",
    [
        ("--model", "no-such-classifier", "no-such-classifier"),
        ("--preset", "no-such-preset", "no-such-preset"),
        ("--preset", "missing-preset.yaml", "missing-preset.yaml"),
        ("--init", "sideways", "sideways"),
        ("--init", "learned", "no bundled initializer for classifier 'tiny-test'"),
        ("--init", "nowhere.npz", "nowhere.npz"),
    ],
)
def test_bad_options_exit_2(tmp_path, capsys, option, value, expected):
    photo = write_photo(tmp_path / "a.png", 0)
    args = ["explain", str(photo), *TINY, "--steps", "1", "--out", str(tmp_path / "out"), option, value]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "cartoonx explain: error" in err
    assert not (tmp_path / "out").exists()


def test_argparse_rejects_bad_numbers(tmp_path, capsys):
    photo = write_photo(tmp_path / "a.png", 0)
    for bad in (["--steps", "-1"], ["--batch-size", "0"], ["--lam", "nan"], ["--device", "tpu"]):
        with pytest.raises(SystemExit) as exc:
            main(["explain", str(photo), *TINY, *bad])
        assert exc.value.code == 2
        assert bad[0] in capsys.readouterr().err


def test_init_from_saved_mask_and_pixel_rde(tmp_path):
    photo = write_photo(tmp_path / "a.png", 0)
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["explain", str(photo), *TINY, "--steps", "2", "--init", "random", "--out", str(first)]) == 0
    saved, _ = load_outputs(first, "a")
    # zero steps from a saved mask: the result is that mask
    assert main(["explain", str(photo), *TINY, "--steps", "0", "--init", str(first / "a.npz"), "--out", str(second)]) == 0
    again, meta = load_outputs(second, "a")
    np.testing.assert_array_equal(again["mask"], saved["mask"])
    assert meta["config"]["init"] == str(first / "a.npz") and meta["history"]["loss"] == []

    pixel = tmp_path / "pixel"
    assert main(["explain", str(photo), *TINY, "--steps", "2", "--method", "pixel-rde", "--out", str(pixel)]) == 0
    arrays, meta = load_outputs(pixel, "a")
    assert arrays["mask"].shape == (64 * 64,) and meta["layout"]["signature"] == "pixel:64x64"
    ref = reference(photo, steps=2, method=rde.PixelRDE)
    np.testing.assert_allclose(arrays["mask"], ref.mask[0].numpy(), atol=1e-6)
    assert (pixel / "a.png").exists()


def test_init_mask_with_other_layout_is_refused(tmp_path, capsys):
    photo = write_photo(tmp_path / "a.png", 0)
    pixel = tmp_path / "pixel"
    assert main(["explain", str(photo), *TINY, "--steps", "0", "--method", "pixel-rde", "--out", str(pixel)]) == 0
    capsys.readouterr()
    code = main(["explain", str(photo), *TINY, "--init", str(pixel / "a.npz"), "--out", str(tmp_path / "x")])
    assert code == 2
    err = capsys.readouterr().err
    assert "pixel:64x64" in err and "wavelet:db3:J5:zero:64x64" in err


def test_same_stem_twice_does_not_overwrite(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    a, b = write_photo(tmp_path / "x" / "a.png", 0), write_photo(tmp_path / "y" / "a.png", 1)
    out = tmp_path / "out"
    assert main(["explain", str(a), str(b), *TINY, "--steps", "0", "--out", str(out)]) == 0
    assert json.loads((out / "a.json").read_text())["config"]["image"] == str(a)
    assert json.loads((out / "a-2.json").read_text())["config"]["image"] == str(b)


@pytest.mark.slow
def test_explain_example_photo_with_efficientnet(tmp_path, capsys):
    photo = EXAMPLES / "n01440764_tench.JPEG"
    if not photo.exists():
        pytest.skip(f"{photo} is missing")
    out = tmp_path / "out"
    code = main(["explain", str(photo), "--preset", "cpu", "--steps", "20", "--device", "cpu", "--out", str(out)])
    assert code == 0
    arrays, meta = load_outputs(out, photo.stem)
    assert meta["class_name"] == "tench" and meta["target"] == rde.imagenet_class_index("n01440764")
    assert meta["target_prob"] > 0.9
    assert arrays["mask"].shape == (rde.MaskLayout.for_wavelet(128, 128).num_entries,)
    loss = meta["history"]["loss"]
    assert len(loss) == 20 and loss[-1] < loss[0]
    assert (out / f"{photo.stem}.png").stat().st_size > 10_000
    assert "tench" in capsys.readouterr().out


def test_init_learned_with_checkpoint(tmp_path, tiny_initializer_checkpoint):
    photo = write_photo(tmp_path / "a.png", 0)
    out = tmp_path / "out"
    args = ["explain", str(photo), *TINY, "--init", "learned", "--checkpoint", str(tiny_initializer_checkpoint)]
    assert main([*args, "--out", str(out)]) == 0
    meta = json.loads((out / "a.json").read_text())
    assert meta["config"]["init"] == "learned"
    assert len(meta["history"]["loss"]) == 3  # a third of the tiny preset's 10 steps by default
    assert main([*args, "--out", str(tmp_path / "pix"), "--method", "pixel-rde"]) == 2
    assert main(["explain", str(photo), *TINY, "--checkpoint", str(tiny_initializer_checkpoint)]) == 2


def test_dotted_stems_do_not_overwrite_each_other(tmp_path):
    a = write_photo(tmp_path / "a.v1.png", 0)
    b = write_photo(tmp_path / "a.v2.png", 1)
    out = tmp_path / "out"
    assert main(["explain", str(a), str(b), *TINY, "--steps", "1", "--out", str(out)]) == 0
    for stem in ("a.v1", "a.v2"):
        for ext in (".png", ".npz", ".json"):
            assert (out / f"{stem}{ext}").exists(), f"{stem}{ext}"


def test_learned_init_refuses_pixel_rde_before_any_work(tmp_path, capsys, tiny_initializer_checkpoint):
    photo = write_photo(tmp_path / "a.png", 0)
    args = ["explain", str(photo), *TINY, "--method", "pixel-rde", "--init", "learned",
            "--checkpoint", str(tiny_initializer_checkpoint), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    assert "cannot start Pixel RDE" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_warmup_init_records_its_cost_and_refuses_a_bad_base_before_any_work(tmp_path, capsys):
    photo = write_photo(tmp_path / "a.png", 0)
    out = tmp_path / "out"
    assert main(["explain", str(photo), *TINY, "--steps", "2", "--init", "ones+warmup", "--out", str(out)]) == 0
    meta = json.loads((out / "a.json").read_text())
    assert meta["config"]["init"] == "ones+warmup"
    # the default warm-up and its pruning (the tiny classifier is confident), in steps of the tiny preset's 4 copies
    assert meta["config"]["start_steps"] == (40 + 60) * 2 / 4
    assert meta["history"]["loss"][0] < 0.8 * 20  # all-ones would start at lambda = 20
    assert main(["explain", str(photo), *TINY, "--init", "bogus+warmup", "--out", str(tmp_path / "bad")]) == 2
    assert "bogus" in capsys.readouterr().err and not (tmp_path / "bad").exists()
