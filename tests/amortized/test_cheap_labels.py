"""Cheap labels (`cartoonx generate --labels cheap`): a learned start refined K exact steps, its cost recorded,
a configuration of their own, resumable, and read by the training datamodule beside exact targets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from amortized import shards as S
from amortized.cli import main as cli_main
from amortized.datamodule import MaskShardDataModule
from amortized.datasets import key_seed, list_images
from amortized.generate import Labels, generate_targets, label_kind, sample_cost, target_config
from amortized.checkpoint import export_checkpoint
from amortized.initializer import LearnedStart
from amortized.policy import StartPolicy
from rde import CartoonX, create_classifier, load_image, load_preset, preprocess
from rde.errors import InputError
from tests.amortized.test_generate import TINY, all_keys, make_images, samples_by_key

STEPS, SAMPLES = 3, 2  # the tiny preset has 4 noisy copies: a refinement step of 2 copies costs half a step


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("images"), 4)


@pytest.fixture(scope="module")
def start_checkpoint(tiny_initializer_checkpoint, tmp_path_factory):
    """The tiny initializer with a short warm-up and pruning phase (the shipped policy's 100 steps, shortened)."""
    policy = StartPolicy().replace(steps=6, prune_steps=4, prune_min_prob=0.0)
    return export_checkpoint(tiny_initializer_checkpoint, tmp_path_factory.mktemp("start") / "tiny.pt", policy)


@pytest.fixture(scope="module")
def cheap(images, start_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("cheap") / "shards"
    labels = Labels("cheap", start_checkpoint, STEPS, SAMPLES)
    summary = generate_targets(images, out, batch_size=2, shard_size=3, labels=labels, **TINY)
    return out, summary


def test_a_cheap_label_is_the_learned_start_refined_k_steps(images, cheap, start_checkpoint):
    """Each stored mask is the learned start of that image alone, refined STEPS steps with SAMPLES copies and the
    key's seed; its recorded cost is the start's plus STEPS * SAMPLES / preset samples."""
    out, summary = cheap
    assert summary.done == 4
    clf = create_classifier("tiny-test")
    explainer = CartoonX(clf, "tiny")
    refiner = CartoonX(clf, load_preset("tiny").replace(num_samples=SAMPLES))
    start_fn = LearnedStart.for_explainer(explainer, start_checkpoint, seed=0)
    stored = samples_by_key(out)
    assert len(stored) == 4
    moved = []
    for item in list_images(images):
        x = preprocess(load_image(item.path), 64)[None]
        start = start_fn(x)
        ref = refiner.explain(x, init=start, steps=STEPS, seed=key_seed(item.key, 0))
        got = stored[item.key]
        meta = got["meta"]
        np.testing.assert_allclose(got["mask"].astype(np.float32), ref.mask[0].numpy(), atol=1e-3)
        np.testing.assert_allclose(got["curves"][0], ref.history["loss"][0].numpy(), rtol=1e-4, atol=1e-6)
        moved.append(not np.allclose(got["mask"].astype(np.float32), start.mask[0].numpy(), atol=1e-3))
        assert meta["target"] == int(ref.targets[0]) and meta["steps"] == STEPS
        assert meta["start_cost"] == pytest.approx(float(start.cost[0])) and meta["start_cost"] > 0
        assert meta["cost"] == pytest.approx(float(start.cost[0]) + STEPS * SAMPLES / 4)
        assert sample_cost(meta) == meta["cost"] and label_kind(meta) == "cheap" and meta["init"] == "learned"
        assert (meta["label_steps"], meta["label_samples"]) == (STEPS, SAMPLES)
    assert any(moved)  # the refinement ran: not the start itself


def test_cheap_labels_have_a_configuration_of_their_own(images, cheap, tmp_path):
    out, summary = cheap
    manifest = json.loads((out / S.MANIFEST).read_text())
    preset = load_preset("tiny")
    exact = S.config_hash(target_config("tiny-test", preset, 0))
    assert summary.config_hash == manifest["config_hash"] != exact
    assert manifest["config"]["labels"]["steps"] == STEPS and manifest["config"]["init"] == "learned"
    with pytest.raises(S.ConfigMismatchError, match=r"init: 'learned' -> 'ones'; labels: \{'kind': 'cheap'.*-> '<missing>'"):
        generate_targets(images, out, **TINY)  # exact targets never land in a folder of cheap labels
    # the exact targets' hash is the one it was before cheap labels existed (the shared targets' folder name)
    assert S.config_hash(target_config("efficientnet_lite0", load_preset("cpu"), 0)) == "65b7a38a4b"
    exact_run = generate_targets(images, tmp_path / "exact", limit=1, **TINY)
    (sample,) = samples_by_key(tmp_path / "exact").values()
    assert exact_run.config_hash == exact and label_kind(sample["meta"]) == "exact"
    assert sample_cost(sample["meta"]) == preset.steps and "cost" not in sample["meta"]


def test_other_label_settings_are_another_configuration(images, cheap, start_checkpoint):
    out, _ = cheap
    for labels, diff in ((Labels("cheap", start_checkpoint, STEPS + 1, SAMPLES), "labels.steps: 3 -> 4"),
                         (Labels("cheap", start_checkpoint, STEPS), "labels.num_samples: 2 -> 4")):
        with pytest.raises(S.ConfigMismatchError, match=diff):
            generate_targets(images, out, labels=labels, **TINY)


def test_rerun_resumes(images, start_checkpoint, tmp_path):
    out = tmp_path / "cheap"
    labels = Labels("cheap", start_checkpoint, STEPS, SAMPLES)
    first = generate_targets(images, out, limit=2, shard_size=2, labels=labels, **TINY)
    before = {p.name: p.read_bytes() for p in S.list_shards(out)}
    second = generate_targets(images, out, shard_size=2, labels=labels, **TINY)
    assert (first.done, second.done, second.skipped) == (2, 2, 2)
    assert sorted(all_keys(out)) == sorted(i.key for i in list_images(images))
    assert {p.name: p.read_bytes() for p in S.list_shards(out) if p.name in before} == before


def test_a_folder_of_cheap_labels_trains_beside_exact_targets(images, cheap, tmp_path):
    out, _ = cheap
    exact = tmp_path / "exact"
    more = make_images(tmp_path / "more", 6)  # other keys than the cheap folder's four photos
    for p in list(more.iterdir())[:4]:
        p.unlink()
    generate_targets(more, exact, steps=2, **TINY)
    dm = MaskShardDataModule([str(out), str(exact)], preset="tiny", batch_size=2, val_fraction=0.0)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    keys = [k for b in batches for k in b["key"]]
    assert sorted(keys) == sorted(all_keys(out) + all_keys(exact))
    batch = batches[0]
    assert batch["mask"].shape == (2, 5319) and torch.isfinite(batch["final_loss"]).all()


def test_cli_cheap_labels_and_one_line_refusals(images, start_checkpoint, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["generate", str(images), "--out", str(out), "--model", "tiny-test", "--preset", "tiny", "--no-progress",
            "--limit", "1"]
    assert cli_main(args + ["--labels", "cheap", "--checkpoint", str(start_checkpoint), "--label-steps", "2"]) == 0
    (sample,) = samples_by_key(out).values()
    assert sample["meta"]["label_steps"] == 2 and sample["meta"]["label_samples"] == 4
    capsys.readouterr()
    assert cli_main(args + ["--label-steps", "2"]) == 2  # exact labels take no label options
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert cli_main(args + ["--labels", "cheap"]) == 2  # no bundled initializer for the tiny preset
    err = capsys.readouterr().err.strip()
    assert "no bundled initializer" in err and err.count("\n") == 0
    with pytest.raises(InputError, match="only used with cheap labels"):
        Labels("exact", start_checkpoint)
