"""Inputs and output folders of ``cartoonx explain`` and ``compare``: bad entries are named and skipped
(exit 1 after the good ones), unusable or already-used output folders are refused before any work (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from amortized.cli import main
from tests.rde.test_io import bomb_png
from tests.test_cli_explain import TINY, write_photo

COMPARE = ["--model", "tiny-test", "--preset", "tiny", "--device", "cpu", "--steps", "2", "--inits", "ones",
           "--no-rate-distortion"]


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", ["explain", "compare"])
@pytest.mark.parametrize("where", ["file", "under-file"])
def test_an_out_that_cannot_be_a_folder_is_refused_before_any_work(tmp_path, capsys, monkeypatch, command, where):
    import rde

    def no_classifier(*args, **kwargs):
        raise AssertionError("the classifier was loaded before the output folder was checked")

    monkeypatch.setattr(rde, "create_classifier", no_classifier)
    photo = write_photo(tmp_path / "a.png", 0)
    blocker = tmp_path / "taken"
    blocker.write_text("a file")
    out = blocker if where == "file" else blocker / "sub"
    opts = TINY if command == "explain" else COMPARE
    assert main([command, str(photo), *opts, "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"cartoonx {command}: error: --out {out}: ") and str(blocker) in line
    assert blocker.read_text() == "a file"


def test_explain_replaces_earlier_outputs_only_with_overwrite(tmp_path, capsys):
    photo = write_photo(tmp_path / "a.png", 0)
    out = tmp_path / "out"
    assert main(["explain", str(photo), *TINY, "--steps", "1", "--out", str(out)]) == 0
    first = (out / "a.json").read_text()
    capsys.readouterr()
    assert main(["explain", str(photo), *TINY, "--steps", "2", "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"--out {out}: holds outputs of an earlier run for a" in line and "--overwrite" in line
    assert (out / "a.json").read_text() == first  # untouched
    assert main(["explain", str(photo), *TINY, "--steps", "2", "--out", str(out), "--overwrite"]) == 0
    assert len(json.loads((out / "a.json").read_text())["history"]["loss"]) == 2
    # another image into the same folder is no conflict
    assert main(["explain", str(write_photo(tmp_path / "b.png", 1)), *TINY, "--steps", "0", "--out", str(out)]) == 0


def test_explain_resume_keeps_finished_images_and_refuses_other_settings(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    a, b, c = (write_photo(photos / f"{n}.png", i) for i, n in enumerate("abc"))
    out = tmp_path / "out"
    assert main(["explain", str(a), str(b), *TINY, "--steps", "2", "--out", str(out)]) == 0
    finished = (out / "a.json").read_text()
    cut = json.loads((out / "b.json").read_text())
    del cut["seconds"]  # as if killed between b's files
    (out / "b.json").write_text(json.dumps(cut))
    capsys.readouterr()
    assert main(["explain", str(photos), *TINY, "--steps", "2", "--out", str(out), "--resume"]) == 0
    captured = capsys.readouterr()
    assert "resuming, 1 image(s) already in" in captured.err and "explained 2 of 2" in captured.out
    assert (out / "a.json").read_text() == finished  # kept, not recomputed
    assert "seconds" in json.loads((out / "b.json").read_text()) and (out / "c.json").exists()
    assert main(["explain", str(photos), *TINY, "--steps", "3", "--out", str(out), "--resume"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "a.json was made with other settings (preset)" in line
    with pytest.raises(SystemExit):  # argparse: not both
        main(["explain", str(c), *TINY, "--out", str(out), "--resume", "--overwrite"])


def test_compare_replaces_an_earlier_comparison_only_with_overwrite_or_resume(tmp_path, capsys):
    photo = write_photo(tmp_path / "a.png", 0)
    out = tmp_path / "cmp"
    assert main(["compare", str(photo), *COMPARE, "--out", str(out)]) == 0
    first = (out / "comparison.json").read_text()
    capsys.readouterr()
    assert main(["compare", str(photo), *COMPARE, "--out", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "holds an earlier comparison" in line and "--resume" in line and "--overwrite" in line
    assert (out / "comparison.json").read_text() == first
    assert main(["compare", str(photo), *COMPARE, "--out", str(out), "--overwrite"]) == 0
    assert main(["compare", str(photo), *COMPARE, "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "comparison.json").read_text())["images"] == ["a"]
    with pytest.raises(SystemExit):  # one or the other
        main(["compare", str(photo), *COMPARE, "--out", str(out), "--resume", "--overwrite"])


def _bad_inputs(tmp_path: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """Sources (a GIF, a folder, a list file), bad entries (a list line, a bomb, a text file, a missing file),
    and the good images the sources hold: the GIF, a PNG two folders down and a JPEG named in the list."""
    good_gif = tmp_path / "x.gif"
    Image.open(write_photo(tmp_path / "x-src.png", 1)).save(good_gif)
    nested = tmp_path / "folder" / "deeper"
    nested.mkdir(parents=True)
    good_png = write_photo(nested / "y.png", 2)
    (tmp_path / "listed").mkdir()
    listed = write_photo(tmp_path / "listed" / "z.jpg", 3)
    listing = tmp_path / "inputs.txt"
    listing.write_text("# photos\nlisted/z.jpg\nlisted/gone.jpg\n")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png())
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    return [good_gif, tmp_path / "folder", listing], [listing, bomb, text, tmp_path / "missing.png"], [good_gif, good_png, listed]


def test_explain_reads_every_form_and_names_every_bad_entry(tmp_path, capsys):
    sources, bad, good = _bad_inputs(tmp_path)
    out = tmp_path / "out"
    code = main(["explain", *map(str, sources), *map(str, bad[1:]), *TINY, "--steps", "1", "--out", str(out)])
    assert code == 1
    captured = capsys.readouterr()
    for photo in good:
        assert json.loads((out / f"{photo.stem}.json").read_text())["config"]["image"] == str(photo)
    skipped = [line for line in captured.err.splitlines() if line.startswith("cartoonx explain: skipping")]
    assert len(skipped) == 4, captured.err
    assert "inputs.txt:3: listed image 'listed/gone.jpg' not found" in captured.err
    assert f"{tmp_path / 'bomb.png'}: 361,000,000 pixels exceed the bound" in captured.err
    assert str(tmp_path / "notes.jpg") in captured.err and str(tmp_path / "missing.png") in captured.err
    assert "explained 3 of 7 inputs" in captured.out and "4 skipped" in captured.out


def test_compare_takes_a_gif_and_skips_bad_entries_with_exit_1(tmp_path, capsys):
    sources, bad, good = _bad_inputs(tmp_path)
    out = tmp_path / "cmp"
    code = main(["compare", *map(str, sources), *map(str, bad[1:]), *COMPARE, "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert sorted(json.loads((out / "comparison.json").read_text())["images"]) == ["x", "y", "z"]
    assert "gone.jpg" in err and "361,000,000 pixels" in err and "notes.jpg" in err and "missing.png" in err
    assert "cartoonx compare: 4 input(s) skipped" in err


def test_generate_refuses_zero_steps(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["generate", str(tmp_path), "--out", str(tmp_path / "out"), "--steps", "0"])
    assert exc.value.code == 2
    assert "argument --steps: expected an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_folder_that_holds_out_does_not_feed_on_earlier_outputs(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_photo(photos / "a.png", 0)
    out = photos / "explained"
    args = ["explain", str(photos), *TINY, "--steps", "0", "--out", str(out)]
    assert main(args) == 0
    assert main([*args, "--overwrite"]) == 0  # a.png again; not explained/a.png, the figure written the first time
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.npz", "a.png"]
    assert "explained 1 of 1" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["explain", "compare", "generate"])
def test_a_malformed_pixel_bound_is_refused_once_before_any_work(tmp_path, capsys, monkeypatch, command):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    monkeypatch.setenv("CARTOONX_MAX_PIXELS", "lots")
    photo = write_photo(tmp_path / "a.png", 0)
    opts = {"explain": TINY, "compare": COMPARE, "generate": ["--model", "tiny-test", "--preset", "tiny"]}[command]
    assert main([command, str(photo), *opts, "--out", str(tmp_path / "out")]) == 2
    assert "CARTOONX_MAX_PIXELS='lots': expected a number of pixels" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out" / "manifest.json").exists()
