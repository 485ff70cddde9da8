"""The learned init end to end: checkpoint loading and refusal, the guard, and `cartoonx compare` on tiny models."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from amortized.checkpoint import CheckpointMismatchError, check_compatible, export_checkpoint, read_initializer
from amortized.cli import main
from amortized.initializer import Guard, LearnedInitializer, Warmup
from rde import CartoonX, MaskLayout, create_classifier, load_preset

NO_GUARD = Guard(keep=0.0)
NO_WARMUP = Warmup(steps=0)


@pytest.fixture
def tiny_checkpoint(tiny_initializer_checkpoint):
    return tiny_initializer_checkpoint


@pytest.fixture(scope="module")
def tiny_explainer():
    return CartoonX(create_classifier("tiny-test"), "tiny")


def test_learned_init_loads_and_predicts_a_valid_mask(tiny_checkpoint, tiny_explainer):
    init = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP)
    images = torch.rand(3, 3, 64, 64)
    mask = init(images)
    assert mask.shape == (3, tiny_explainer.representation(64, 64, torch.device("cpu")).layout.num_entries)
    assert float(mask.min()) >= 0.1 - 1e-6 and float(mask.max()) <= 1.0
    # Unguarded, the start costs one forward+backward of the clean image: 1/L of a step with L noisy copies.
    assert init.last_cost.tolist() == [1 / tiny_explainer.config.num_samples] * 3
    result = tiny_explainer.explain(images, init=mask, steps=2)
    assert result.history["loss"].shape == (3, 2)


@pytest.mark.parametrize("classifier,preset,message", [
    ("efficientnet_lite0", "tiny", "classifier 'tiny-test'"),
    ("tiny-test", "cpu", "image_size 64"),
])
def test_mismatched_checkpoint_is_refused(tiny_checkpoint, classifier, preset, message):
    with pytest.raises(CheckpointMismatchError, match=message):
        LearnedInitializer.for_explainer(CartoonX(create_classifier(classifier), preset), tiny_checkpoint)


def test_other_objective_is_refused(tiny_checkpoint):
    payload = read_initializer(tiny_checkpoint)
    with pytest.raises(CheckpointMismatchError, match="lam"):
        check_compatible(payload, "tiny-test", load_preset("tiny").replace(lam=5.0))
    check_compatible(payload, "tiny-test", load_preset("tiny").replace(steps=3))  # steps don't matter


def test_not_a_checkpoint(tmp_path, tiny_explainer):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="x.ckpt"):
        LearnedInitializer.for_explainer(tiny_explainer, bad)
    torch.save({"state_dict": {}}, tmp_path / "lightning.ckpt")
    with pytest.raises(CheckpointMismatchError, match="not a FastCartoonX initializer"):
        LearnedInitializer.for_explainer(tiny_explainer, tmp_path / "lightning.ckpt")
    with pytest.raises(FileNotFoundError):
        LearnedInitializer.for_explainer(tiny_explainer, tmp_path / "missing.ckpt")


def test_guard_backs_off_when_the_mask_destroys_the_class(tiny_checkpoint, tiny_explainer):
    raw = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP)
    init = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=Guard(keep=2.0, max_steps=3, shrinks=()),
                                            warmup=NO_WARMUP)
    images = torch.rand(2, 3, 64, 64)
    # An unreachable keep-ratio forces every back-off step: m -> 1 - 0.7^3 (1 - m).
    assert torch.allclose(init(images), 1 - 0.7**3 * (1 - raw(images)), atol=1e-5)
    assert init.last_backoffs.tolist() == [3, 3]
    # The probe plus 4 checks of 16 forward passes each, charged as steps of L=4 noisy copies.
    assert init.last_cost.tolist() == [(1 + 4 * 16) / 4] * 2


def test_guard_powers_lift_all_but_the_finest_level_before_blending(tiny_checkpoint, tiny_explainer):
    layout = MaskLayout.for_wavelet(64, 64)
    m = torch.rand(2, layout.num_entries) * 0.5
    first, *tries = Guard(powers=(0.5, 0.25), max_steps=2, shrinks=()).candidates(m, layout)
    assert first.equal(m)  # no shrinks: the prediction is checked first
    finest = layout.scale_slice(1)
    assert len(tries) == 4
    for got, p in zip(tries[:2], (0.5, 0.25)):  # by hand: m ** p everywhere except level 1, which stays m
        expected = m**p
        expected[:, finest] = m[:, finest]
        assert torch.allclose(got, expected)
    assert torch.allclose(tries[3], 1 - 0.7**2 * (1 - m))  # then the blends, from the prediction itself
    assert Guard(max_steps=2, shrinks=()).candidates(m, layout)[2].equal(tries[3])  # no powers: straight to the blends
    with pytest.raises(ValueError, match="powers must lie in"):
        Guard(powers=(1.5,))
    raw = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP)
    init = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint,
                                            guard=Guard(keep=2.0, max_steps=1, powers=(0.5,), shrinks=()), warmup=NO_WARMUP)
    images = torch.rand(2, 3, 64, 64)
    assert torch.allclose(init(images), 1 - 0.7 * (1 - raw(images)), atol=1e-5)  # every try failed: the last
    assert init.last_backoffs.tolist() == [2, 2] and init.last_cost.tolist() == [(1 + 3 * 16) / 4] * 2


def test_guard_shrinks_are_tried_first_then_the_mask_itself(tiny_checkpoint, tiny_explainer):
    layout = MaskLayout.for_wavelet(64, 64)
    m = torch.tensor([[0.0, 0.1, 0.2, 0.25, 0.6, 1.0]]).repeat(1, layout.num_entries // 6 + 1)[:, : layout.num_entries]
    tries = Guard(shrinks=(0.2, 0.1), max_steps=1).candidates(m, layout)
    by_hand = {0.2: [0.0, 0.0, 0.0, 0.0625, 0.5, 1.0], 0.1: [0.0, 0.0, 0.1 / 0.9, 0.15 / 0.9, 0.5 / 0.9, 1.0]}
    for got, t in zip(tries[:2], (0.2, 0.1)):
        torch.testing.assert_close(got[0, :6], torch.tensor(by_hand[t]))
    assert tries[2].equal(m) and len(tries) == 4
    torch.testing.assert_close(tries[3], 1 - 0.7 * (1 - m))  # the blends start from the unshrunk mask
    with pytest.raises(ValueError, match="shrinks must lie in"):
        Guard(shrinks=(0.0,))
    images = torch.rand(2, 3, 64, 64)
    raw = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP)(images)
    assert torch.equal(raw, LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=NO_GUARD,
                                                             warmup=NO_WARMUP)(images))  # no guard: no shrink
    passing = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=Guard(keep=1e-9, shrinks=(0.3,)),
                                               warmup=NO_WARMUP)
    torch.testing.assert_close(passing(images), ((raw - 0.3) / 0.7).clamp(0, 1))  # the shrink keeps the class: kept
    assert passing.last_cost.tolist() == [(1 + 16) / 4] * 2 and passing.last_backoffs.tolist() == [0, 0]
    failing = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint,
                                               guard=Guard(keep=2.0, max_steps=0, shrinks=(0.3,)), warmup=NO_WARMUP)
    assert torch.equal(failing(images), raw)  # every check fails: back off from the shrink to the mask itself
    assert failing.last_backoffs.tolist() == [1, 1] and failing.last_cost.tolist() == [(1 + 2 * 16) / 4] * 2


def test_only_the_pruned_images_begin_with_the_shrinks(tiny_checkpoint, tiny_explainer):
    from rde.warmup import WarmStart

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        probs = tiny_explainer.classifier(images).softmax(-1).max(-1).values
    confident = int(probs.argmax())
    warmup = Warmup(steps=2, num_samples=1, prune_steps=2, prune_min_prob=float(probs.mean()))
    start = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=Guard(keep=1e-9, shrinks=(0.3,)),
                                             warmup=warmup, seed=5)
    raw = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP, seed=5)
    warmed = WarmStart(tiny_explainer, warmup, seed=5).warm(images, raw(images))
    mask = start(images)
    torch.testing.assert_close(mask[confident], ((warmed[confident] - 0.3) / 0.7).clamp(0, 1))  # pruned, shrunk
    torch.testing.assert_close(mask[1 - confident], warmed[1 - confident])  # neither pruned nor shrunk
    # the probe, the warm-up (2 steps of 1 copy, 2 more where pruned) and one check, in steps of 4 copies
    assert start.last_cost.tolist() == [1 / 4 + (2 + 2 * (i == confident)) / 4 + 16 / 4 for i in range(2)]


def test_the_prediction_is_warmed_up_before_the_guard_checks_it_and_both_are_charged(tiny_checkpoint, tiny_explainer):
    from rde.warmup import WarmStart

    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    warmup = Warmup(steps=3, num_samples=2, prune_steps=0)
    raw = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP, seed=5)
    warmed = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=warmup, seed=5)
    expected = WarmStart(tiny_explainer, warmup, seed=5).warm(images, raw(images))
    torch.testing.assert_close(warmed(images), expected)
    assert warmed.last_cost.tolist() == [1 / 4 + 3 * 2 / 4] * 2  # the probe, then 3 steps of 2 copies
    checked = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint,
                                               guard=Guard(keep=2.0, max_steps=1, shrinks=()),
                                               warmup=warmup, seed=5)
    mask = checked(images)  # keep 2.0 always fails: one blend of the warmed-up mask toward ones
    torch.testing.assert_close(mask, 1 - 0.7 * (1 - expected))
    assert checked.last_cost.tolist() == [1 / 4 + 3 * 2 / 4 + 2 * 16 / 4] * 2
    assert LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint).warmup == Warmup()  # trained default


def test_guard_keeps_a_mask_that_keeps_the_class(tiny_checkpoint, tiny_explainer):
    init = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=Guard(keep=1e-9, shrinks=()),
                                            warmup=NO_WARMUP)
    raw = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP)
    images = torch.rand(2, 3, 64, 64)
    assert torch.equal(init(images), raw(images))
    assert init.last_backoffs.tolist() == [0, 0]
    assert init.last_cost.tolist() == [(1 + 16) / 4] * 2


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


def test_exported_checkpoint_is_plain_smaller_and_predicts_the_same(tmp_path, tiny_checkpoint, tiny_explainer):
    out = export_checkpoint(tiny_checkpoint, tmp_path / "shipped.pt", guard={"keep": 0.25, "samples": 8})
    assert out.stat().st_size < tiny_checkpoint.stat().st_size
    payload = torch.load(out, weights_only=True)  # plain data: no code runs on load
    assert payload["guard"] == {"keep": 0.25, "samples": 8}
    assert payload["preset"]["image_size"] == 64 and payload["preset"]["wavelet"]["wave"] == "db3"  # the full preset
    a = LearnedInitializer.for_explainer(tiny_explainer, tiny_checkpoint, guard=NO_GUARD)
    b = LearnedInitializer.for_explainer(tiny_explainer, out, guard=NO_GUARD)
    assert LearnedInitializer.for_explainer(tiny_explainer, out).guard == Guard(keep=0.25, samples=8)
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(a(x), b(x))


def test_the_warm_up_ships_in_the_checkpoint_and_older_files_read_as_ones_without(tmp_path, tiny_checkpoint,
                                                                                    tiny_explainer):
    from amortized.checkpoint import FORMAT_VERSION

    out = export_checkpoint(tiny_checkpoint, tmp_path / "shipped.pt", warmup={"steps": 7, "num_samples": 1})
    payload = torch.load(out, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION == 4 and payload["warmup"] == {"steps": 7, "num_samples": 1}
    assert LearnedInitializer.for_explainer(tiny_explainer, out).warmup == Warmup(steps=7, num_samples=1)
    payload["format_version"] = 3  # the bundled initializer of 2026-11-27: a warm-up without pruning, no shrinks
    torch.save(payload, tmp_path / "v3.pt")
    v3 = LearnedInitializer.for_explainer(tiny_explainer, tmp_path / "v3.pt")
    assert v3.warmup == Warmup(steps=7, num_samples=1, prune_steps=0) and v3.guard.shrinks == ()
    del payload["warmup"]
    payload["format_version"] = 2  # what the bundled initializer of 2026-11-26 was written as
    torch.save(payload, tmp_path / "v2.pt")
    assert LearnedInitializer.for_explainer(tiny_explainer, tmp_path / "v2.pt").warmup.total_steps == 0
    payload["format_version"] = 1
    torch.save(payload, tmp_path / "v1.pt")
    with pytest.raises(CheckpointMismatchError, match="format version 1"):
        read_initializer(tmp_path / "v1.pt")


def test_an_exported_initializer_needs_neither_lightning_nor_jsonargparse(tmp_path, tiny_checkpoint):
    out = export_checkpoint(tiny_checkpoint, tmp_path / "shipped.pt")
    code = f"""
import sys
for name in ("lightning", "lightning.pytorch", "jsonargparse", "pytorch_lightning"):
    sys.modules[name] = None  # any import of them now fails
import torch
from rde import CartoonX, create_classifier
from amortized.initializer import LearnedInitializer
explainer = CartoonX(create_classifier("tiny-test"), "tiny")
mask = LearnedInitializer.for_explainer(explainer, {str(out)!r})(torch.rand(1, 3, 64, 64))
print(tuple(mask.shape))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 5319)"


class _Brightness(torch.nn.Module):
    """Two classes by mean brightness: bright images are class 0 (p ~ 0.92 at mean 0.5), black ones are not."""

    def forward(self, x):
        z = 10 * (x.mean((1, 2, 3)) - 0.25)
        return torch.stack([z, torch.zeros_like(z)], -1)


def test_collapsed_runs_never_count_as_reaching():
    """An init that empties the mask undercuts the ones loss but must not 'reach': it explains nothing."""
    from amortized.compare import compare_inits
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
    from amortized.compare import Comparison, compare_inits

    explainer = CartoonX(create_classifier("tiny-test"), "tiny")
    comp = compare_inits(explainer, torch.rand(2, 3, 64, 64), {"const:0.5": "const:0.5"}, steps=12, names=["a", "b"])
    comp.save(tmp_path)
    back = Comparison.load(tmp_path / "comparison.json")
    assert back.per_image_rows() == comp.per_image_rows()
    assert back.summary_rows() == comp.summary_rows()


def test_collapse_counts_against_an_init_only_where_ones_kept_the_class():
    from amortized.compare import compare_inits
    from rde.classifiers import Classifier

    clf = Classifier(_Brightness(), class_names=["bright", "dark"])
    # lr 0.5 with a huge lambda: the ones run empties its mask too, so both end without the class.
    explainer = CartoonX(clf, "tiny", obfuscation="zero", lam=1e6, lr=0.5)
    images = torch.rand(2, 3, 64, 64)
    k = explainer.representation(64, 64, torch.device("cpu")).layout.num_entries
    comp = compare_inits(explainer, images, {"empty": torch.zeros(2, k)}, steps=30, rate_distortion=False)
    assert comp.runs["ones"].collapsed.all() and comp.runs["empty"].collapsed.all()
    assert torch.isfinite(comp.runs["empty"].steps_to_reach).all()  # compared as is


def test_bundled_initializer_ships_inside_the_package_as_plain_data():
    from amortized.initializer import bundled_checkpoint

    path = bundled_checkpoint("efficientnet_lite0", "cpu")
    assert path.is_file() and path.stat().st_size < 10 * 2**20
    payload = torch.load(path, weights_only=True)
    check_compatible(payload, "efficientnet_lite0", load_preset("cpu"))
    assert payload["preset"]["image_size"] == 128 and payload["training"]["loss"]["under_weight"] == 4.0
    with pytest.raises(ValueError, match="no bundled initializer"):
        bundled_checkpoint("tiny-test", "cpu")


def test_the_bundled_initializer_serves_the_preset_with_other_steps_not_another_lambda():
    clf = create_classifier("efficientnet_lite0")
    start = LearnedInitializer.for_explainer(CartoonX(clf, load_preset("cpu").replace(steps=100)))
    assert start.preset.steps == 100
    with pytest.raises(CheckpointMismatchError, match="lam"):
        LearnedInitializer.for_explainer(CartoonX(clf, load_preset("cpu").replace(lam=5.0)))


@pytest.mark.slow
def test_bundled_initializer_starts_a_real_photo_below_ones():
    """On an example photo, the warmed-up, guarded learned start is well below all-ones after 5 steps."""
    from rde.io import load_images

    explainer = CartoonX(create_classifier("efficientnet_lite0"), "cpu")
    images = load_images([Path(__file__).parents[2] / "examples" / "n01531178_goldfinch.JPEG"], size=128)
    start = LearnedInitializer.for_explainer(explainer)
    mask = start(images)
    assert mask.shape == (1, 18631) and float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    # what the bundled checkpoint ships
    assert start.warmup == Warmup(prune_steps=60, prune_lam=6.0) and start.guard == Guard(keep=0.3, shrinks=(0.2, 0.1))
    # the probe (1/16), the warm-up (5 steps, 12.5 with its pruning phase) and 1 to 9 guard checks
    assert 6 <= float(start.last_cost[0]) <= 1 / 16 + 12.5 + 9
    learned = explainer.explain(images, init=mask, steps=5).history["loss"][0, -1]
    ones = explainer.explain(images, init="ones", steps=5).history["loss"][0, -1]
    assert float(learned) < 0.75 * float(ones), (float(learned), float(ones))


def test_the_start_cost_is_charged_to_steps_to_reach_and_survives_save_and_load(tmp_path):
    """A start that costs 2.5 steps of classifier passes reaches 2.5 steps later than its curve alone says."""
    from amortized.compare import Comparison, compare_inits

    explainer = CartoonX(create_classifier("tiny-test"), "tiny")
    images = torch.rand(2, 3, 64, 64)

    class PaidOnes:  # the all-ones mask, but reported as costing 2.5 steps
        last_cost = torch.tensor([2.5, 2.5])

        def __call__(self, x):
            return torch.ones(len(x), explainer.representation(64, 64, torch.device("cpu")).layout.num_entries)

    comp = compare_inits(explainer, images, {"paid": PaidOnes()}, steps=8, rate_distortion=False)
    ones, paid = comp.runs["ones"], comp.runs["paid"]
    assert torch.equal(paid.history["loss"], ones.history["loss"])  # the same optimization, same seeds
    assert torch.equal(paid.steps_to_reach, ones.steps_to_reach + 2.5)
    assert [r["start_steps"] for r in comp.per_image_rows() if r["init"] == "paid"] == [2.5, 2.5]
    comp.save(tmp_path)
    loaded = Comparison.load(tmp_path / "comparison.json")
    assert torch.equal(loaded.runs["paid"].steps_to_reach, paid.steps_to_reach)
