"""What a new user meets (issue 21): the bare command, --version, python -m, option bounds, one-line errors, a full
disk in explain and compare, Ctrl-C hints, compare's resume (figure, rate-distortion) and --lam, glyphs."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from amortized import cli
from amortized.cli import main
from amortized.commands import compare as compare_command
from amortized.commands import explain as explain_command
from tests.test_cli_explain import TINY, write_photo
from tests.test_cli_inputs_outputs import COMPARE

REPO = Path(__file__).resolve().parent.parent


def last_line(err: str) -> str:
    return [line for line in err.splitlines() if line.strip()][-1].split("\r")[-1]


def test_the_bare_command_lists_the_commands(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in cli.COMMANDS) and "Traceback" not in err


@pytest.mark.parametrize("module", ["rde", "amortized"])
def test_version_and_python_dash_m(module):
    done = subprocess.run([sys.executable, "-m", module, "--version"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"cartoonx {cli.version()}", done.stderr


@pytest.mark.parametrize("command", ["explain", "compare", "generate"])
@pytest.mark.parametrize("option, value, expected", [
    ("--steps", "1000000000000", "argument --steps: expected an integer <= 1,000,000 (the loss history takes 16 bytes a step"),
    ("--seed", str(2**63), "argument --seed: expected an integer <= 9,223,372,036,854,775,807 (a 64-bit seed)"),
])
def test_huge_steps_and_seeds_are_option_errors_before_any_work(tmp_path, capsys, monkeypatch, command, option, value,
                                                                expected):
    import rde

    monkeypatch.setattr(rde, "create_classifier", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(SystemExit) as exc:
        main([command, str(tmp_path), "--out", str(tmp_path / "out"), option, value])
    assert exc.value.code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_failing_model_callable_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "fcx_cli_models.py").write_text("def broken():\n    raise RuntimeError('no weights')\n"
                                                "def number():\n    return 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    photo = write_photo(tmp_path / "a.png", 0)
    for spec, message in (("broken", "broken() failed (RuntimeError: no weights)"), ("number", "returned int")):
        out = tmp_path / f"out-{spec}"
        assert main(["explain", str(photo), "--model", f"fcx_cli_models:{spec}", "--preset", "tiny",
                     "--out", str(out)]) == 2
        assert message in last_line(capsys.readouterr().err) and not out.exists()


def test_explain_with_no_images_exits_2_like_compare_and_generate(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["explain", str(tmp_path / "empty"), *TINY, "--out", str(tmp_path / "out")]) == 2
    assert "no images to explain" in last_line(capsys.readouterr().err)


def test_inputs_inside_out_are_named(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_photo(photos / "a.png", 0)
    out = photos / "explained"
    assert main(["explain", str(photos), *TINY, "--steps", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["explain", str(photos), *TINY, "--steps", "0", "--out", str(out), "--overwrite"]) == 0
    assert f"ignoring 1 image(s) inside --out {out}" in capsys.readouterr().err


@pytest.mark.parametrize("command, argv", [("explain", ["--init", "model.pt"]),
                                           ("compare", ["--inits", "ones,model.pt"])])
def test_a_checkpoint_as_init_points_to_learned(tmp_path, capsys, command, argv):
    photo = write_photo(tmp_path / "a.png", 0)
    assert main([command, str(photo), "--model", "tiny-test", "--preset", "tiny", *argv,
                 "--out", str(tmp_path / "out")]) == 2
    assert "--init learned --checkpoint model.pt" in last_line(capsys.readouterr().err)


@pytest.mark.parametrize("command", ["explain", "compare"])
def test_ctrl_c_prints_how_to_resume(tmp_path, capsys, monkeypatch, command):
    module = {"explain": explain_command, "compare": compare_command}[command]

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "run", interrupted)
    out = tmp_path / "out"
    assert main([command, "x.png", "--out", str(out)]) == 130
    line = last_line(capsys.readouterr().err)
    assert line.startswith(f"cartoonx {command}: interrupted; finished images are kept in {out}") and "--resume" in line


def _disk_full(calls: int):
    """A stand-in that fails with ENOSPC from its ``calls``-th call on, as writing to a full disk does."""
    count = [0]

    def fail_after(real):
        def write(*args, **kwargs):
            count[0] += 1
            if count[0] >= calls:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[1]) if len(args) > 1 else None)
            return real(*args, **kwargs)

        return write

    return fail_after


def test_explain_on_a_full_disk_is_one_line_and_keeps_finished_images(tmp_path, capsys, monkeypatch):
    from rde.explanation import Explanation

    photos = [write_photo(tmp_path / f"p{i}.png", i) for i in range(3)]
    out = tmp_path / "out"
    monkeypatch.setattr(Explanation, "save", _disk_full(2)(Explanation.save))
    assert main(["explain", *map(str, photos), *TINY, "--steps", "1", "--out", str(out)]) == 1
    line = last_line(capsys.readouterr().err)
    assert line.startswith("cartoonx explain: error: ") and "No space left on device" in line and "--resume" in line
    assert json.loads((out / "p0.json").read_text())["seconds"] > 0  # the first image is complete
    monkeypatch.undo()
    assert main(["explain", *map(str, photos), *TINY, "--steps", "1", "--out", str(out), "--resume"]) == 0
    assert all((out / f"p{i}.json").exists() for i in range(3))


def test_compare_on_a_full_disk_is_one_line_and_resumes_with_every_explanation(tmp_path, capsys, monkeypatch):
    from amortized.comparison import Comparison

    photos = [write_photo(tmp_path / f"p{i}.png", i) for i in range(2)]
    out = tmp_path / "cmp"
    monkeypatch.setattr(Comparison, "save", _disk_full(2)(Comparison.save))  # the second image's save fails
    argv = ["compare", *map(str, photos), *COMPARE, "--out", str(out)]
    assert main(argv) == 1
    line = last_line(capsys.readouterr().err)
    assert line.startswith("cartoonx compare: error: ") and "No space left on device" in line and "--resume" in line
    assert json.loads((out / "comparison.json").read_text())["images"] == ["p0"]
    assert not (out / "explanations.png").exists()
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    assert json.loads((out / "comparison.json").read_text())["images"] == ["p0", "p1"]
    import numpy as np

    assert (out / "explanations.png").exists()  # drawn from both images, the resumed one included
    with np.load(out / compare_command.PICTURES) as saved:
        assert list(saved["names"]) == ["p0", "p1"] and saved["explanation/ones"].shape[0] == 2


def test_compare_resume_refuses_to_drop_rate_distortion_and_takes_lam(tmp_path, capsys):
    photo = write_photo(tmp_path / "a.png", 0)
    out = tmp_path / "cmp"
    with_rd = [a for a in COMPARE if a != "--no-rate-distortion"]
    assert main(["compare", str(photo), *with_rd, "--lam", "3", "--out", str(out)]) == 0
    assert json.loads((out / "comparison.json").read_text())["settings"]["preset.lam"] == 3.0
    capsys.readouterr()
    assert main(["compare", str(photo), *COMPARE, "--lam", "3", "--out", str(out), "--resume"]) == 2
    assert "resume without --no-rate-distortion" in last_line(capsys.readouterr().err)
    assert json.loads((out / "comparison.json").read_text())["rate_distortion"]["ones"]["keep"] is not None


def test_unicode_names_give_no_glyph_warnings(tmp_path):
    photo = write_photo(tmp_path / "写真の猫.png", 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["compare", str(photo), *COMPARE, "--out", str(tmp_path / "cmp")]) == 0
    assert not [w for w in caught if "Glyph" in str(w.message)]


def test_warnings_are_one_line(tmp_path, capsys):
    photo = write_photo(tmp_path / "thin.png", 0, size=(200, 20))
    assert main(["explain", str(photo), *TINY, "--steps", "0", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert f"\ncartoonx explain: warning: {photo}: 200x20 pixels is upscaled 3.2x" in "\n" + err.replace("\r", "\n")
    assert "warnings.warn" not in err


@pytest.mark.parametrize("module, user_value, expected", [("rde", None, "PASSIVE"), ("amortized.initializer", None, "PASSIVE"),
                                                          ("rde", "ACTIVE", "ACTIVE")])
def test_the_api_sets_a_passive_openmp_wait_before_torch_loads(module, user_value, expected):
    """OpenMP reads OMP_WAIT_POLICY once, when torch loads it: the API must set it before its first torch import."""
    code = f"""
import builtins, os
real, seen = builtins.__import__, []
def spy(name, *args, **kwargs):
    if name.split(".")[0] == "torch" and not seen:
        seen.append(os.environ.get("OMP_WAIT_POLICY"))
    return real(name, *args, **kwargs)
builtins.__import__ = spy
import {module}
print(seen[0])
"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user_value:
        env["OMP_WAIT_POLICY"] = user_value
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == expected, done.stderr[-2000:]
