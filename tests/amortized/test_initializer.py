"""The learned start: checkpoint loading and refusal, the policy it ships with, its warm-up and guard, and the cost
it returns with every start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amortized.checkpoint import CheckpointMismatchError, check_compatible, export_checkpoint, read_initializer
from amortized.initializer import LearnedStart
from amortized.policy import Guard, StartPolicy
from rde import CartoonX, InputError, MaskLayout, create_classifier, load_preset
from rde.start import Start
from rde.warmup import Warmup, WarmStart

NO_GUARD = Guard(keep=0.0)
NO_WARMUP = Warmup(steps=0)


def learned(explainer, checkpoint=None, guard=None, warmup=None, seed=0) -> LearnedStart:
    """A learned start whose guard and warm-up, where given, replace the checkpoint's."""
    start_fn = LearnedStart.for_explainer(explainer, checkpoint, seed=seed)
    start_fn.policy = StartPolicy(warmup or start_fn.policy.warmup, guard or start_fn.policy.guard)
    return start_fn


@pytest.fixture
def tiny_checkpoint(tiny_initializer_checkpoint):
    return tiny_initializer_checkpoint


@pytest.fixture(scope="module")
def tiny_explainer():
    return CartoonX(create_classifier("tiny-test"), "tiny")


def test_learned_init_loads_and_predicts_a_valid_mask(tiny_checkpoint, tiny_explainer):
    images = torch.rand(3, 3, 64, 64)
    start = learned(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP)(images)
    assert isinstance(start, Start)
    assert start.mask.shape == (3, tiny_explainer.representation(64, 64, torch.device("cpu")).layout.num_entries)
    assert float(start.mask.min()) >= 0.1 - 1e-6 and float(start.mask.max()) <= 1.0
    # Unguarded, the start costs one forward+backward of the clean image: 1/L of a step with L noisy copies.
    assert start.cost.tolist() == [1 / tiny_explainer.config.num_samples] * 3
    assert start.backoffs.tolist() == [0] * 3 and start.pruned.tolist() == [False] * 3
    result = tiny_explainer.explain(images, init=start, steps=2)
    assert result.history["loss"].shape == (3, 2)


def test_the_cost_is_a_value_of_each_call_not_of_the_object(tiny_checkpoint, tiny_explainer):
    """Two calls with different back-offs each return their own cost, whatever the order they are read in."""
    start_fn = learned(tiny_explainer, tiny_checkpoint, guard=Guard(keep=2.0, max_steps=1, shrinks=()), warmup=NO_WARMUP)
    two = start_fn(torch.rand(2, 3, 64, 64))
    start_fn.policy = StartPolicy(NO_WARMUP, Guard(keep=2.0, max_steps=3, shrinks=()))
    one = start_fn(torch.rand(1, 3, 64, 64))
    assert two.cost.tolist() == [(1 + 2 * 16) / 4] * 2 and one.cost.tolist() == [(1 + 4 * 16) / 4]
    assert not hasattr(start_fn, "last_cost")


@pytest.mark.parametrize("classifier,preset,message", [
    ("efficientnet_lite0", "tiny", "classifier 'tiny-test'"),
    ("tiny-test", "cpu", "image_size 64"),
])
def test_mismatched_checkpoint_is_refused(tiny_checkpoint, classifier, preset, message):
    with pytest.raises(CheckpointMismatchError, match=message):
        LearnedStart.for_explainer(CartoonX(create_classifier(classifier), preset), tiny_checkpoint)


def test_other_objective_is_refused(tiny_checkpoint):
    payload = read_initializer(tiny_checkpoint)
    with pytest.raises(CheckpointMismatchError, match="lam"):
        check_compatible(payload, "tiny-test", load_preset("tiny").replace(lam=5.0))
    check_compatible(payload, "tiny-test", load_preset("tiny").replace(steps=3))  # steps don't matter


def test_not_a_checkpoint(tmp_path, tiny_explainer):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match="x.ckpt"):
        LearnedStart.for_explainer(tiny_explainer, bad)
    torch.save({"state_dict": {}}, tmp_path / "lightning.ckpt")
    with pytest.raises(CheckpointMismatchError, match="not a FastCartoonX initializer"):
        LearnedStart.for_explainer(tiny_explainer, tmp_path / "lightning.ckpt")
    with pytest.raises(FileNotFoundError):
        LearnedStart.for_explainer(tiny_explainer, tmp_path / "missing.ckpt")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_a_checkpoint_that_would_run_code_is_refused_without_torchs_advice_to_trust_it(tmp_path, tiny_explainer):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": _RunsCode()}, path)
    with pytest.raises(CheckpointMismatchError) as refused:
        LearnedStart.for_explainer(tiny_explainer, path)
    message = str(refused.value)
    assert "pickled.pt" in message and "run code" in message and "\n" not in message
    assert "weights_only" not in message and "trust" not in message


def test_guard_backs_off_when_the_mask_destroys_the_class(tiny_checkpoint, tiny_explainer):
    images = torch.rand(2, 3, 64, 64)
    raw = learned(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP)(images).mask
    start = learned(tiny_explainer, tiny_checkpoint, guard=Guard(keep=2.0, max_steps=3, shrinks=()),
                    warmup=NO_WARMUP)(images)
    # An unreachable keep-ratio forces every back-off step: m -> 1 - 0.7^3 (1 - m).
    assert torch.allclose(start.mask, 1 - 0.7**3 * (1 - raw), atol=1e-5)
    assert start.backoffs.tolist() == [3, 3]
    # The probe plus 4 checks of 16 forward passes each, charged as steps of L=4 noisy copies.
    assert start.cost.tolist() == [(1 + 4 * 16) / 4] * 2


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
    images = torch.rand(2, 3, 64, 64)
    raw = learned(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP)(images).mask
    start = learned(tiny_explainer, tiny_checkpoint, guard=Guard(keep=2.0, max_steps=1, powers=(0.5,), shrinks=()),
                    warmup=NO_WARMUP)(images)
    assert torch.allclose(start.mask, 1 - 0.7 * (1 - raw), atol=1e-5)  # every try failed: the last
    assert start.backoffs.tolist() == [2, 2] and start.cost.tolist() == [(1 + 3 * 16) / 4] * 2


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
    raw = learned(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP)(images).mask
    assert torch.equal(raw, learned(tiny_explainer, tiny_checkpoint, guard=NO_GUARD,
                                    warmup=NO_WARMUP)(images).mask)  # no guard: no shrink
    passing = learned(tiny_explainer, tiny_checkpoint, guard=Guard(keep=1e-9, shrinks=(0.3,)), warmup=NO_WARMUP)(images)
    torch.testing.assert_close(passing.mask, ((raw - 0.3) / 0.7).clamp(0, 1))  # the shrink keeps the class: kept
    assert passing.cost.tolist() == [(1 + 16) / 4] * 2 and passing.backoffs.tolist() == [0, 0]
    failing = learned(tiny_explainer, tiny_checkpoint, guard=Guard(keep=2.0, max_steps=0, shrinks=(0.3,)),
                      warmup=NO_WARMUP)(images)
    assert torch.equal(failing.mask, raw)  # every check fails: back off from the shrink to the mask itself
    assert failing.backoffs.tolist() == [1, 1] and failing.cost.tolist() == [(1 + 2 * 16) / 4] * 2


def test_only_the_pruned_images_begin_with_the_shrinks(tiny_checkpoint, tiny_explainer):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        probs = tiny_explainer.classifier(images).softmax(-1).max(-1).values
    confident = int(probs.argmax())
    warmup = Warmup(steps=2, num_samples=1, prune_steps=2, prune_min_prob=float(probs.mean()))
    start = learned(tiny_explainer, tiny_checkpoint, guard=Guard(keep=1e-9, shrinks=(0.3,)), warmup=warmup,
                    seed=5)(images)
    raw = learned(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP, seed=5)(images).mask
    warmed = WarmStart(tiny_explainer, warmup, seed=5).warm(images, raw).mask
    torch.testing.assert_close(start.mask[confident], ((warmed[confident] - 0.3) / 0.7).clamp(0, 1))  # pruned, shrunk
    torch.testing.assert_close(start.mask[1 - confident], warmed[1 - confident])  # neither pruned nor shrunk
    assert start.pruned.tolist() == [i == confident for i in range(2)]
    # the probe, the warm-up (2 steps of 1 copy, 2 more where pruned) and one check, in steps of 4 copies
    assert start.cost.tolist() == [1 / 4 + (2 + 2 * (i == confident)) / 4 + 16 / 4 for i in range(2)]


def test_the_prediction_is_warmed_up_before_the_guard_checks_it_and_both_are_charged(tiny_checkpoint, tiny_explainer):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    warmup = Warmup(steps=3, num_samples=2, prune_steps=0)
    raw = learned(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP, seed=5)(images).mask
    warmed = learned(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=warmup, seed=5)(images)
    expected = WarmStart(tiny_explainer, warmup, seed=5).warm(images, raw).mask
    torch.testing.assert_close(warmed.mask, expected)
    assert warmed.cost.tolist() == [1 / 4 + 3 * 2 / 4] * 2  # the probe, then 3 steps of 2 copies
    checked = learned(tiny_explainer, tiny_checkpoint, guard=Guard(keep=2.0, max_steps=1, shrinks=()), warmup=warmup,
                      seed=5)(images)
    torch.testing.assert_close(checked.mask, 1 - 0.7 * (1 - expected))  # keep 2.0 always fails: one blend toward ones
    assert checked.cost.tolist() == [1 / 4 + 3 * 2 / 4 + 2 * 16 / 4] * 2


def test_guard_keeps_a_mask_that_keeps_the_class(tiny_checkpoint, tiny_explainer):
    images = torch.rand(2, 3, 64, 64)
    start = learned(tiny_explainer, tiny_checkpoint, guard=Guard(keep=1e-9, shrinks=()), warmup=NO_WARMUP)(images)
    raw = learned(tiny_explainer, tiny_checkpoint, guard=NO_GUARD, warmup=NO_WARMUP)(images).mask
    assert torch.equal(start.mask, raw)
    assert start.backoffs.tolist() == [0, 0]
    assert start.cost.tolist() == [(1 + 16) / 4] * 2


def test_the_policy_round_trips_and_refuses_unknown_fields():
    policy = StartPolicy().replace(prune_steps=0, keep=0.5, shrinks=(0.3,))
    assert policy.warmup.prune_steps == 0 and policy.guard.keep == 0.5 and policy.guard.shrinks == (0.3,)
    assert StartPolicy.from_dict(policy.to_dict()) == policy
    assert StartPolicy.from_dict({"warmup": {"steps": 3}}) == StartPolicy(Warmup(steps=3), Guard())
    with pytest.raises(ValueError, match="bogus"):
        StartPolicy().replace(bogus=1)
    with pytest.raises(ValueError, match="bogus"):
        StartPolicy.from_dict({"guard": {"bogus": 1}})


def test_a_training_checkpoint_records_its_policy_and_the_export_keeps_it(tmp_path, tiny_checkpoint, tiny_explainer):
    assert read_initializer(tiny_checkpoint)["warmup"] == StartPolicy().to_dict()["warmup"]  # the module's default
    assert LearnedStart.for_explainer(tiny_explainer, tiny_checkpoint).policy == StartPolicy()
    policy = StartPolicy(Warmup(steps=7, num_samples=1), Guard(keep=0.25, samples=8))
    out = export_checkpoint(tiny_checkpoint, tmp_path / "shipped.pt", policy=policy)
    assert LearnedStart.for_explainer(tiny_explainer, out).policy == policy
    again = export_checkpoint(out, tmp_path / "again.pt")  # an export without a policy keeps the recorded one
    assert LearnedStart.for_explainer(tiny_explainer, again).policy == policy


def test_exported_checkpoint_is_plain_smaller_and_predicts_the_same(tmp_path, tiny_checkpoint, tiny_explainer):
    out = export_checkpoint(tiny_checkpoint, tmp_path / "shipped.pt", policy=StartPolicy(guard=Guard(keep=0.25, samples=8)))
    assert out.stat().st_size < tiny_checkpoint.stat().st_size
    payload = torch.load(out, weights_only=True)  # plain data: no code runs on load
    assert payload["guard"]["keep"] == 0.25 and payload["guard"]["samples"] == 8
    assert payload["preset"]["image_size"] == 64 and payload["preset"]["wavelet"]["wave"] == "db3"  # the full preset
    x = torch.rand(1, 3, 64, 64)
    a = learned(tiny_explainer, tiny_checkpoint, guard=NO_GUARD)(x)
    b = learned(tiny_explainer, out, guard=NO_GUARD)(x)
    assert torch.equal(a.mask, b.mask)


def test_older_files_read_as_ones_without_what_their_format_lacked(tmp_path, tiny_checkpoint, tiny_explainer):
    from amortized.checkpoint import FORMAT_VERSION

    out = export_checkpoint(tiny_checkpoint, tmp_path / "shipped.pt", policy=StartPolicy(Warmup(steps=7, num_samples=1)))
    payload = torch.load(out, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION == 5 and payload["refiner"] is None
    payload["format_version"] = 3  # the bundled initializer of 2026-11-27: a warm-up without pruning, no shrinks
    torch.save(payload, tmp_path / "v3.pt")
    v3 = LearnedStart.for_explainer(tiny_explainer, tmp_path / "v3.pt").policy
    assert v3.warmup == Warmup(steps=7, num_samples=1, prune_steps=0) and v3.guard.shrinks == ()
    del payload["warmup"]
    payload["format_version"] = 2  # what the bundled initializer of 2026-11-26 was written as
    torch.save(payload, tmp_path / "v2.pt")
    assert LearnedStart.for_explainer(tiny_explainer, tmp_path / "v2.pt").policy.warmup.total_steps == 0
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
from amortized.initializer import LearnedStart
explainer = CartoonX(create_classifier("tiny-test"), "tiny")
start = LearnedStart.for_explainer(explainer, {str(out)!r})(torch.rand(1, 3, 64, 64))
print(tuple(start.mask.shape))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 5319)"


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
    start_fn = LearnedStart.for_explainer(CartoonX(clf, load_preset("cpu").replace(steps=100)))
    assert start_fn.preset.steps == 100
    with pytest.raises(CheckpointMismatchError, match="lam"):
        LearnedStart.for_explainer(CartoonX(clf, load_preset("cpu").replace(lam=5.0)))


@pytest.mark.slow
def test_bundled_initializer_starts_a_real_photo_below_ones():
    """On an example photo, the warmed-up, guarded learned start is well below all-ones after 5 steps."""
    from rde.io import load_images

    explainer = CartoonX(create_classifier("efficientnet_lite0"), "cpu")
    images = load_images([Path(__file__).parents[2] / "examples" / "n01531178_goldfinch.JPEG"], size=128)
    start_fn = LearnedStart.for_explainer(explainer)
    start = start_fn(images)
    assert start.mask.shape == (1, 18631) and float(start.mask.min()) >= 0.0 and float(start.mask.max()) <= 1.0
    assert start_fn.policy == StartPolicy()  # the bundled checkpoint ships the shipped policy
    # the probe, the warm-up (with its pruning phase where the class is confident) and 1 to 9 guard checks
    warmup, steps = start_fn.policy.warmup, explainer.config.num_samples
    least = 1 / steps + float(warmup.cost(steps, pruned=False)) + start_fn.policy.guard.samples / steps
    most = 1 / steps + float(warmup.cost(steps, pruned=True)) + 9 * start_fn.policy.guard.samples / steps
    assert least <= float(start.cost[0]) <= most
    refined = explainer.explain(images, init=start, steps=5).history["loss"][0, -1]
    ones = explainer.explain(images, init="ones", steps=5).history["loss"][0, -1]
    assert float(refined) < 0.75 * float(ones), (float(refined), float(ones))


def refiner_checkpoint(tmp_path, tiny_checkpoint, explainer, value: float, mode: str = "select"):
    """An exported checkpoint whose refiner opens its gate everywhere and outputs ``sigmoid(value)``."""
    from amortized.checkpoint import refiner_entry
    from amortized.refiner import Refiner

    refiner = Refiner(num_scales=len(explainer.representation(64, 64, torch.device("cpu")).layout.scales), width=4)
    with torch.no_grad():
        refiner.head.weight.zero_()
        refiner.head.bias.copy_(torch.tensor([40.0, value]))
    path = tmp_path / f"refined-{value}-{mode}.pt"
    policy = StartPolicy(Warmup(steps=2, num_samples=1, prune_steps=2, prune_min_prob=0.0), NO_GUARD)
    export_checkpoint(tiny_checkpoint, path, policy=policy,
                      refiner=refiner_entry(refiner.config, refiner.state_dict(), mode, samples=3))
    return path


@pytest.mark.parametrize("value", [-40.0, 40.0], ids=["empty", "full"])
def test_the_refiner_selection_keeps_the_lower_objective_and_is_charged(tmp_path, tiny_checkpoint, tiny_explainer, value):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    path = refiner_checkpoint(tmp_path, tiny_checkpoint, tiny_explainer, value)
    start_fn = LearnedStart.for_explainer(tiny_explainer, path)
    assert start_fn.refine == "select" and start_fn.refiner_samples == 3
    plain = LearnedStart.for_explainer(tiny_explainer, path, refine="off")(images)
    always = LearnedStart.for_explainer(tiny_explainer, path, refine="always")(images)
    chosen = start_fn(images)
    candidate = torch.full_like(plain.mask, 0.0 if value < 0 else 1.0)
    torch.testing.assert_close(always.mask, candidate, atol=1e-12, rtol=0)
    targets = tiny_explainer.classifier(images).argmax(-1)
    losses = [tiny_explainer.objective(images, m, targets, 3, seed=0)["loss"] for m in (plain.mask, candidate)]
    expected = torch.where((losses[1] < losses[0])[:, None], candidate, plain.mask)
    torch.testing.assert_close(chosen.mask, expected, atol=1e-12, rtol=0)
    # unguarded: the probe, 2 + 2 steps of 1 copy, and (select only) two checks of 3 copies + the clean image
    assert always.cost.tolist() == plain.cost.tolist() == [1 / 4 + 4 / 4] * 2
    assert chosen.cost.tolist() == [1 / 4 + 4 / 4 + 2 * (3 + 1) / 4] * 2


def test_the_selection_picks_each_candidate_where_its_objective_is_lower(tmp_path, tiny_checkpoint, tiny_explainer):
    """An empty mask (loss: the distortion alone, <= 1) beats a warmed-up start at lambda 20; a full one (loss 20)
    loses to it: so the two cases above take different branches."""
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    empty = LearnedStart.for_explainer(tiny_explainer, refiner_checkpoint(tmp_path, tiny_checkpoint, tiny_explainer, -40.0))
    full = LearnedStart.for_explainer(tiny_explainer, refiner_checkpoint(tmp_path, tiny_checkpoint, tiny_explainer, 40.0))
    assert float(empty(images).mask.max()) < 1e-12 and float(full(images).mask.min()) < 1.0


def test_a_file_without_a_refiner_reads_as_one_and_the_bundled_start_loads(tmp_path, tiny_checkpoint, tiny_explainer):
    path = refiner_checkpoint(tmp_path, tiny_checkpoint, tiny_explainer, 0.0)
    payload = torch.load(path, weights_only=True)
    assert payload["refiner"]["mode"] == "select"
    del payload["refiner"]
    payload["format_version"] = 4  # written before the refiner existed
    torch.save(payload, tmp_path / "v4.pt")
    old = LearnedStart.for_explainer(tiny_explainer, tmp_path / "v4.pt")
    assert old.refiner is None and old.refine == "off" and read_initializer(tmp_path / "v4.pt")["refiner"] is None
    assert read_initializer(_bundled())["refiner"] is None  # the shipped file (format 4) still loads
    with pytest.raises(InputError, match="refine must be one of"):
        LearnedStart.for_explainer(tiny_explainer, path, refine="sometimes")


def _bundled():
    from amortized.initializer import bundled_checkpoint

    return bundled_checkpoint("efficientnet_lite0", "cpu")


def test_the_selection_refuses_a_correction_the_guard_would_back_off_from(tmp_path, tiny_checkpoint, tiny_explainer):
    """An empty mask has the lower objective (above) but keeps little of the class: with a guard it is not taken."""
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    start_fn = LearnedStart.for_explainer(tiny_explainer, refiner_checkpoint(tmp_path, tiny_checkpoint, tiny_explainer, -40.0))
    inputs, start, signals = start_fn.warmed(images, signals=True)
    targets = inputs.targets
    kept = tiny_explainer.objective(images, torch.zeros_like(start.mask), targets, 3)["kept"]
    start_fn.policy = StartPolicy(start_fn.policy.warmup, Guard(keep=float(kept.max()) + 1e-3))
    chosen, took = start_fn.corrected(images, targets, start, signals, inputs.magnitude)
    assert took.tolist() == [False, False] and torch.equal(chosen.mask, start.mask)
    start_fn.policy = StartPolicy(start_fn.policy.warmup, Guard(keep=float(kept.min()) - 1e-3))
    assert start_fn.corrected(images, targets, start, signals, inputs.magnitude)[1].tolist() == [True, True]
