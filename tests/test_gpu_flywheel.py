"""benchmarks/gpu_flywheel.sh at tiny sizes on the CPU: every stage runs and leaves what the GPU run returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from amortized import shards as S
from amortized.checkpoint import read_initializer
from amortized.datasets import parse_view_key, split_of

REPO = Path(__file__).resolve().parent.parent


def test_tiny_flywheel_runs_every_stage(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    names = [f"n01440764_img{i}" for i in range(24)]
    assert sum(split_of(n) == "val" for n in names) >= 2  # the metric needs 2 val photos
    for n in names:
        Image.fromarray(rng.integers(0, 256, (240, 300, 3), dtype=np.uint8)).save(photos / f"{n}.png")
    out = tmp_path / "out"
    env = {**os.environ, "GPU_FLYWHEEL_TINY": "1", "PYTHON": sys.executable, "OUT": str(out),
           "FLYWHEEL_SOURCE": str(photos), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "benchmarks/gpu_flywheel.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=170)
    log = (out / "flywheel.log").read_text()
    assert done.returncode == 0, log[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["flywheel.log", "initializer.pt", "metrics.json", "views-1.tar"]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["parity"]["photos"] and metrics["precision"] == ("bf16-mixed" if metrics["parity"]["pass"] else "32-true")
    assert metrics["generate"]["views"] == 8 and metrics["generate"]["failed"] == 0  # 4 train photos x 2 views
    assert {k: v["photos"] for k, v in metrics["fast_metric"].items()} == {"trained": 2, "baseline": 2}
    assert all(v["median_ratio"] > 0 and 0 <= v["collapsed"] <= 2 for v in metrics["fast_metric"].values())
    assert read_initializer(out / "initializer.pt")["classifier"] == "tiny-test"

    shard_dir = tmp_path / "returned"
    with tarfile.open(out / "views-1.tar") as tf:
        tf.extractall(shard_dir)
    index, problems = S.verify_shards(shard_dir)
    assert problems == [] and index.num_samples == 8
    assert metrics["pack"]["left_out"] == [] and metrics["pack"]["shards"] == len(index.shards)
    for path, _ in index.shards:
        for s in S.read_samples(path):
            photo, view = parse_view_key(s["key"])
            assert view in (1, 2) and split_of(s["key"]) == "train" and s["meta"]["view"]["index"] == view
            assert s["meta"]["preset"]["precision"] == metrics["precision"]
            assert Path(s["meta"]["source"]).stem == photo
            assert s["meta"]["view"]["source_size"] == [275, 220]  # cut from the photo shrunk to a 220-px short side
