"""A normal (non-editable) install carries everything it reads: presets, train configs, the synset list
and the bundled initializer, found through one loader (rde.configs) from any folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from amortized.cli import main
from amortized.commands.train import resolve_config
from rde.configs import config_path, list_configs

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DATA = {
    "rde/configs/presets/cpu.yaml",
    "rde/configs/presets/paper.yaml",
    "rde/configs/presets/tiny.yaml",
    "rde/configs/train/cpu.yaml",
    "rde/configs/train/shards.yaml",
    "rde/resources/imagenet-synsets.tsv",
    "amortized/initializers/efficientnet_lite0-cpu.pt",
}


def build_wheel(dest: Path) -> Path:
    """``pip wheel`` of a copy of the project (the checkout stays clean), offline with this venv's setuptools."""
    src = dest / "src"
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in ("rde", "amortized"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(dest)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = dest.glob("fastcartoonx-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_the_wheel_carries_presets_train_configs_synsets_and_initializer(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert PACKAGE_DATA <= names, sorted(PACKAGE_DATA - names)
    with zipfile.ZipFile(wheel) as zf:  # the packaged files are the ones the checkout uses
        for kind, name in [("presets", "cpu"), ("train", "cpu")]:
            assert zf.read(f"rde/configs/{kind}/{name}.yaml") == (REPO / "configs" / kind / f"{name}.yaml").read_bytes()


@pytest.mark.parametrize("kind", ["presets", "train"])
def test_the_checkout_configs_are_the_packaged_files(kind):
    """One copy: configs/<kind> in the checkout is a link to the package's folder."""
    names = list_configs(kind)
    assert names == sorted(p.stem for p in (REPO / "configs" / kind).glob("*.yaml"))
    assert {"cpu"} <= set(names) and ({"paper", "tiny"} <= set(names) if kind == "presets" else "shards" in names)
    for name in names:
        assert (REPO / "configs" / kind / f"{name}.yaml").samefile(config_path(kind, name))


def test_train_config_by_name_or_file(tmp_path, capsys):
    assert resolve_config("cpu") == str(config_path("train", "cpu"))
    mine = tmp_path / "mine.yaml"
    mine.write_text("trainer: {}\n")
    assert resolve_config(str(mine)) == str(mine)
    assert main(["train", "--config", "cpuu"]) == 2
    assert "unknown train config 'cpuu'; available: cpu, shards. Did you mean cpu?" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_a_missing_logger_package_is_named(tmp_path):
    """The shipped cpu recipe logs to wandb; without wandb, `cartoonx train --config cpu` says so in one line."""
    code = "import sys; sys.modules['wandb'] = None; from amortized.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    (tmp_path / "shards").mkdir()
    argv = ["train", "--config", "cpu", "--data.init_args.shards", "shards"]
    done = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cartoonx train: error: training with cpu needs the package 'wandb'"), done.stderr[-2000:]
    assert not (tmp_path / "runs").exists()


def test_a_missing_shard_directory_is_named_before_any_set_up(tmp_path, monkeypatch, capsys):
    """Run outside the checkout, the shipped recipe's relative ../shared path finds nothing: one line with the flag."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "cpu"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("cartoonx train: error: ../shared/targets/efficientnet_lite0-cpu: no shard directory")
    assert "--data.init_args.shards DIR" in last and list(tmp_path.iterdir()) == []  # no runs/, no wandb/


def fresh_install(wheel: Path, venv: Path) -> Path:
    """A new virtual environment (no system or dev-venv site packages) with the wheel installed by pip,
    its dependencies resolved from the package registry as pyproject.toml declares them. Returns its python."""
    done = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return python


@pytest.mark.slow
def test_the_installed_wheel_works_from_another_folder(wheel, tmp_path):
    """``pip install`` the wheel into a fresh venv, then run ``cartoonx explain`` and ``cartoonx compare
    --inits ones,learned`` from a folder outside the checkout. Takes ~1.5 min here (pip unpacks torch);
    the venv (~6 GB) is deleted afterwards."""
    venv = tmp_path / "venv"
    try:
        python = fresh_install(wheel, venv)
        work = tmp_path / "elsewhere"
        work.mkdir()
        photo = REPO / "examples" / "n01440764_tench.JPEG"
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env["OMP_NUM_THREADS"] = "1"

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True, timeout=600)

        where = run(str(python), "-c", "import rde, amortized, sys; print(rde.__file__, amortized.__file__, sys.prefix)")
        assert where.returncode == 0, where.stderr
        rde_file, amortized_file, prefix = where.stdout.split()
        assert Path(prefix) == venv  # the fresh environment, not the dev venv
        for f in (rde_file, amortized_file):  # the installed copy, not the checkout
            assert Path(f).is_relative_to(venv / "lib") and "site-packages" in f, where.stdout
        cartoonx = str(venv / "bin" / "cartoonx")  # the console script the wheel declares

        done = run(cartoonx, "explain", str(photo), "--model", "tiny-test", "--preset", "tiny", "--steps", "1",
                   "--out", "x")
        assert done.returncode == 0, done.stderr[-3000:]
        assert sorted(p.name for p in (work / "x").iterdir()) == [
            "n01440764_tench.json", "n01440764_tench.npz", "n01440764_tench.png"]
        assert "explained 1 of 1 inputs into x" in done.stdout + done.stderr

        done = run(cartoonx, "compare", str(photo), "--preset", "cpu", "--steps", "2", "--inits", "ones,learned",
                   "--no-rate-distortion", "--device", "cpu", "--out", "cmp")
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads((work / "cmp" / "comparison.json").read_text())
        assert result["steps"] == 2 and result["images"] == ["n01440764_tench"]
        summary = {row["init"]: row for row in result["summary"]}
        assert set(summary) == {"ones", "learned"} and all(row["images"] == 1 for row in summary.values())
        # the bundled initializer was found and used: it starts ahead of the all-ones mask
        assert summary["ones"]["start_steps"] == 0 and summary["learned"]["start_steps"] > 0
        assert summary["learned"]["final_loss"] < summary["ones"]["final_loss"]
        assert {"per_image.csv", "summary.csv", "loss_curves.png"} <= {p.name for p in (work / "cmp").iterdir()}
    finally:
        shutil.rmtree(venv, ignore_errors=True)
