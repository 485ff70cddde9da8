"""`cartoonx compare` and compare_inits on tiny models: steps-to-reach, collapse, the start's cost, resume."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image

from amortized.cli import main
from rde import CartoonX, create_classifier
from rde.start import Start


@pytest.fixture
def tiny_checkpoint(tiny_initializer_checkpoint):
    return tiny_initializer_checkpoint


def test_compare_end_to_end(tmp_path, tiny_checkpoint):
    for i in range(2):
        Image.fromarray((torch.rand(80, 90, 3) * 255).byte().numpy()).save(tmp_path / f"img{i}.png")
    out = tmp_path / "cmp"
    code = main(["compare", str(tmp_path / "img0.png"), str(tmp_path / "img1.png"), "--model", "tiny-test",
                 "--preset", "tiny", "--steps", "12", "--inits", "ones,learned,const:0.5",
                 "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--device", "cpu"])
    assert code == 0
    for name in ("loss_curves.png", "loss_curves_per_image.png", "explanations.png", "summary.csv", "per_image.csv", "comparison.json"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["init"] for r in rows] == ["ones", "learned", "const:0.5"]
    ones = rows[0]
    assert float(ones["median_steps_to_reach"]) == 12 and float(ones["median_speedup"]) == 1.0
    assert float(rows[0]["start_steps"]) == 0.0 and float(rows[1]["start_steps"]) > 0.0  # the learned start is charged
    data = json.loads((out / "comparison.json").read_text())
    assert len(data["curves"]["learned"]["loss"]) == 2 and len(data["curves"]["learned"]["loss"][0]) == 12
    assert len(data["rate_distortion"]["ones"]["keep"][0]) == len(data["rate_distortion"]["ones"]["fractions"])


def test_compare_charges_a_warmed_up_start_and_refuses_an_unused_checkpoint(tmp_path, tiny_checkpoint, capsys):
    Image.fromarray((torch.rand(80, 90, 3) * 255).byte().numpy()).save(tmp_path / "img0.png")
    common = ["compare", str(tmp_path / "img0.png"), "--model", "tiny-test", "--preset", "tiny", "--steps", "5",
              "--device", "cpu", "--no-rate-distortion"]
    out = tmp_path / "cmp"
    assert main([*common, "--inits", "ones,ones+warmup,learned", "--checkpoint", str(tiny_checkpoint),
                 "--out", str(out)]) == 0
    rows = {r["init"]: r for r in csv.DictReader((out / "summary.csv").open())}
    warm = float(rows["ones+warmup"]["start_steps"])
    assert warm in (40 * 2 / 4, (40 + 60) * 2 / 4)  # 60 pruning steps more where the random photo's class has p >= 0.5
    # the learned start warms up itself (its checkpoint's settings, the same pruning decision): its probe and 1 to 9
    # guard checks come on top
    checks = (float(rows["learned"]["start_steps"]) - 1 / 4 - warm) / (16 / 4)
    assert checks in range(1, 10)
    assert main([*common, "--inits", "ones,learned+warmup", "--checkpoint", str(tiny_checkpoint),
                 "--out", str(tmp_path / "twice")]) == 2
    assert "warm-up of its own" in capsys.readouterr().err
    assert main([*common, "--inits", "ones,ones+warmup", "--checkpoint", str(tiny_checkpoint),
                 "--out", str(tmp_path / "unused")]) == 2
    assert "--checkpoint is only used with a learned start" in capsys.readouterr().err


def test_compare_rejects_unknown_init(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "--inits", "ones,bogus", "--model", "tiny-test", "--preset", "tiny"]) == 2
    assert "bogus" in capsys.readouterr().err


class _Brightness(torch.nn.Module):
    """Two classes by mean brightness: bright images are class 0 (p ~ 0.92 at mean 0.5), black ones are not."""

    def forward(self, x):
        z = 10 * (x.mean((1, 2, 3)) - 0.25)
        return torch.stack([z, torch.zeros_like(z)], -1)


def test_collapsed_runs_never_count_as_reaching():
    """An init that empties the mask undercuts the ones loss but must not 'reach': it explains nothing."""
    from amortized.comparison import compare_inits
    from rde.classifiers import Classifier

    clf = Classifier(_Brightness(), class_names=["bright", "dark"])
    explainer = CartoonX(clf, "tiny", obfuscation="zero", lam=1000.0)  # huge lambda: emptying pays
    images = torch.rand(2, 3, 64, 64)
    k = explainer.representation(64, 64, torch.device("cpu")).layout.num_entries
    comp = compare_inits(explainer, images, {"ones": "ones", "empty": torch.zeros(2, k)}, steps=6, rate_distortion=False)
    empty = comp.runs["empty"]
    assert (empty.history["loss"][:, -1] < comp.runs["ones"].history["loss"][:, -1]).all()  # lower loss...
    assert empty.collapsed.all() and torch.isinf(empty.steps_to_reach).all()  # ...but no explanation
    assert not comp.runs["ones"].collapsed.any()
    rows = [r for r in comp.per_image_rows() if r["init"] == "empty"]
    assert all(r["collapsed"] and r["steps_to_reach"] is None and r["speedup"] == 0.0 for r in rows)
    assert comp.summary_rows()[1]["collapsed"] == 2
    assert "collapsed" in comp.format_table()


def test_compare_resumes_from_its_saved_json(tmp_path, tiny_checkpoint, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray((torch.rand(80, 90, 3) * 255).byte().numpy()).save(photos / f"img{i}.png")
    out = tmp_path / "cmp"
    common = ["--model", "tiny-test", "--preset", "tiny", "--steps", "5", "--inits", "ones,learned",
              "--checkpoint", str(tiny_checkpoint), "--out", str(out), "--device", "cpu", "--no-rate-distortion"]
    assert main(["compare", str(photos / "img0.png"), str(photos / "img1.png"), *common]) == 0
    first = json.loads((out / "comparison.json").read_text())
    assert main(["compare", str(photos), "--resume", *common]) == 0
    both = json.loads((out / "comparison.json").read_text())
    assert both["images"] == ["img0", "img1", "img2"]
    for init in ("ones", "learned"):  # the finished images are kept bit for bit, not recomputed
        assert both["curves"][init]["loss"][:2] == first["curves"][init]["loss"]
    other_n = [("7" if a == "5" else a) for a in common]
    assert main(["compare", str(photos), "--resume", *other_n]) == 2  # refused: another N
    for flag, value in (("--seed", "7"), ("--precision", "bf16-mixed")):
        assert main(["compare", str(photos), "--resume", *common, flag, value]) == 2  # refused: other settings
        assert "made with other settings" in capsys.readouterr().err
    other_preset = [("paper" if a == "tiny" else a) for a in common]
    assert main(["compare", str(photos), "--resume", *other_preset]) == 2
    assert "preset.image_size: 64 -> 256" in capsys.readouterr().err
    assert json.loads((out / "comparison.json").read_text()) == both  # nothing was written by the refusals


def test_a_damaged_comparison_is_named_and_not_resumed(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "comparison.json").write_text('{"steps": 5, "images": ["a"')  # cut off mid-write by an older version
    photo = tmp_path / "a.png"
    Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy()).save(photo)
    code = main(["compare", str(photo), "--model", "tiny-test", "--preset", "tiny", "--steps", "3", "--inits", "ones",
                 "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "comparison.json: not a readable comparison" in err


def test_loaded_comparison_matches_the_saved_one(tmp_path):
    from amortized.comparison import Comparison, compare_inits

    explainer = CartoonX(create_classifier("tiny-test"), "tiny")
    comp = compare_inits(explainer, torch.rand(2, 3, 64, 64), {"const:0.5": "const:0.5"}, steps=12, names=["a", "b"])
    comp.save(tmp_path)
    back = Comparison.load(tmp_path / "comparison.json")
    assert back.per_image_rows() == comp.per_image_rows()
    assert back.summary_rows() == comp.summary_rows()


def test_collapse_counts_against_an_init_only_where_ones_kept_the_class():
    from amortized.comparison import compare_inits
    from rde.classifiers import Classifier

    clf = Classifier(_Brightness(), class_names=["bright", "dark"])
    # lr 0.5 with a huge lambda: the ones run empties its mask too, so both end without the class.
    explainer = CartoonX(clf, "tiny", obfuscation="zero", lam=1e6, lr=0.5)
    images = torch.rand(2, 3, 64, 64)
    k = explainer.representation(64, 64, torch.device("cpu")).layout.num_entries
    comp = compare_inits(explainer, images, {"empty": torch.zeros(2, k)}, steps=30, rate_distortion=False)
    assert comp.runs["ones"].collapsed.all() and comp.runs["empty"].collapsed.all()
    assert torch.isfinite(comp.runs["empty"].steps_to_reach).all()  # compared as is


def test_the_start_cost_is_charged_to_steps_to_reach_and_survives_save_and_load(tmp_path):
    """A start that costs 2.5 steps of classifier passes reaches 2.5 steps later than its curve alone says."""
    from amortized.comparison import Comparison, compare_inits

    explainer = CartoonX(create_classifier("tiny-test"), "tiny")
    images = torch.rand(2, 3, 64, 64)

    def paid_ones(x):  # the all-ones mask, but reported as costing 2.5 steps
        k = explainer.representation(64, 64, torch.device("cpu")).layout.num_entries
        return Start.free(torch.ones(len(x), k)).charged(2.5)

    comp = compare_inits(explainer, images, {"paid": paid_ones}, steps=8, rate_distortion=False)
    ones, paid = comp.runs["ones"], comp.runs["paid"]
    assert torch.equal(paid.history["loss"], ones.history["loss"])  # the same optimization, same seeds
    assert torch.equal(paid.steps_to_reach, ones.steps_to_reach + 2.5)
    assert [r["start_steps"] for r in comp.per_image_rows() if r["init"] == "paid"] == [2.5, 2.5]
    comp.save(tmp_path)
    loaded = Comparison.load(tmp_path / "comparison.json")
    assert torch.equal(loaded.runs["paid"].steps_to_reach, paid.steps_to_reach)
