"""The warm-up start: the same objective with fewer noisy copies and a larger step, charged in preset steps."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from rde import CartoonX, InputError, create_classifier
from rde.start import Start
from rde.warmup import PRUNE_SEED_OFFSET, WARMUP_SEED_OFFSET, Warmup, WarmStart, split_warmup


@pytest.fixture(scope="module")
def explainer():
    return CartoonX(create_classifier("tiny-test"), "tiny")  # 64 px, 4 noisy copies per step


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


class FixedStart:
    """A start function with a cost, like a learned start; remembers the targets it was given."""

    def __init__(self, mask: torch.Tensor, cost: float):
        self.mask, self.cost, self.targets = mask, cost, "never called"

    def __call__(self, images, target=None):
        self.targets = target
        return Start.free(self.mask.expand(len(images), -1)).charged(self.cost)


def test_cost_counts_classifier_passes_in_preset_steps():
    warmup = Warmup(steps=40, num_samples=2, prune_steps=60)
    assert warmup.cost(16) == 12.5  # (40 + 60 pruning) steps x 2 copies = 200 passes = 12.5 steps of 16 copies
    assert warmup.cost(16, pruned=False) == 5.0  # a class below prune_min_prob: no pruning phase
    assert warmup.cost(16, pruned=torch.tensor([True, False])).tolist() == [12.5, 5.0]
    assert Warmup(steps=6, num_samples=1, prune_steps=0).cost(4) == 1.5
    assert Warmup(steps=0).cost(16) == 0 and Warmup(steps=0).total_steps == 0  # no warm-up, so no pruning either


@pytest.mark.parametrize("field, value", [("steps", -1), ("num_samples", 0), ("steps", 2.5), ("lr", 0.0), ("lr", -1.0),
                                          ("prune_steps", -1), ("prune_lam", 0.0)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(InputError, match=field):
        Warmup(**{field: value})


def test_labels():
    assert split_warmup("ones+warmup") == ("ones", True)
    assert split_warmup("const:0.5+warmup") == ("const:0.5", True)
    assert split_warmup("ones") == ("ones", False)


def test_from_ones_it_is_the_exact_optimizer_with_fewer_copies_a_larger_step_and_its_own_noise(explainer, images):
    warmup = Warmup(steps=5, num_samples=2, lr=0.05, barrier=False, prune_steps=0)
    start = WarmStart(explainer, warmup, seed=3)(images)
    mask = start.mask
    reference = CartoonX(explainer.classifier, explainer.config.replace(num_samples=2, lr=0.05))
    expected = reference.explain(images, init="ones", steps=5, seed=3 + WARMUP_SEED_OFFSET).mask
    torch.testing.assert_close(mask, expected)
    assert start.cost.tolist() == [5 * 2 / 4] * 2 and start.pruned.tolist() == [False, False]
    assert explainer.config.num_samples == 4 and explainer.config.lr == 0.01  # the exact explainer is untouched


def test_the_pruning_phase_is_a_second_run_at_a_larger_lambda_and_is_charged(explainer, images):
    warmup = Warmup(steps=3, num_samples=2, lr=0.05, prune_steps=4, prune_lam=5.0, prune_min_prob=0.0)
    start = WarmStart(explainer, warmup, seed=3)(images)
    mask = start.mask
    config = explainer.config.replace(num_samples=2, lr=0.05, distortion="label+barrier")
    first = CartoonX(explainer.classifier, config).explain(images, init="ones", steps=3, seed=3 + WARMUP_SEED_OFFSET)
    first = first.mask
    pruned = CartoonX(explainer.classifier, config.replace(lam=5.0 * explainer.config.lam))
    torch.testing.assert_close(mask, pruned.explain(images, init=first, steps=4, seed=3 + PRUNE_SEED_OFFSET).mask)
    assert start.cost.tolist() == [(3 + 4) * 2 / 4] * 2 and warmup.total_steps == 7
    assert start.pruned.tolist() == [True, True] and explainer.config.lam == 20.0


def test_only_a_confident_class_is_pruned_and_charged_for_it(explainer, images):
    with torch.no_grad():
        probs = explainer.classifier(images).softmax(-1).max(-1).values
    assert probs[0] != probs[1]
    confident = int(probs.argmax())
    warmup = Warmup(steps=3, num_samples=2, prune_steps=4, prune_lam=5.0, prune_min_prob=float(probs.mean()))
    start = WarmStart(explainer, warmup, seed=3)(images)
    mask = start.mask
    assert start.pruned.tolist() == [i == confident for i in range(2)]
    assert start.cost.tolist() == [(3 + 4 * (i == confident)) * 2 / 4 for i in range(2)]
    everyone = WarmStart(explainer, dataclasses.replace(warmup, prune_min_prob=0.0), seed=3)(images).mask
    nobody = WarmStart(explainer, dataclasses.replace(warmup, prune_min_prob=1.0), seed=3)(images).mask
    other = 1 - confident
    torch.testing.assert_close(mask[confident], everyone[confident])  # pruning a subset: each image its own result
    torch.testing.assert_close(mask[other], nobody[other])
    assert not torch.allclose(everyone[other], nobody[other])


def test_pruning_at_a_larger_lambda_leaves_a_sparser_mask(explainer, images):
    def warm(lam_scale):
        warmup = Warmup(steps=10, num_samples=2, prune_steps=10, prune_lam=lam_scale, prune_min_prob=0.0)
        return WarmStart(explainer, warmup)(images).mask

    # Adam's step does not grow with lambda where the sparsity gradient alone acts (every coefficient moves lr per
    # step either way); a larger lambda wins where the distortion gradient pushes back, so the masks end sparser.
    pruned, plain = warm(8.0).sum(1), warm(1.0).sum(1)
    assert (pruned < plain).all() and pruned.sum() < 0.95 * plain.sum()
    none = WarmStart(explainer, Warmup(steps=0, prune_steps=2))(images)  # no warm-up, so no pruning either
    assert torch.equal(none.mask, torch.ones_like(none.mask)) and none.cost.tolist() == [0.0, 0.0]


def test_a_callable_start_is_warmed_up_its_cost_added_and_the_targets_passed_on(explainer, images):
    k = explainer.representation(64, 64, torch.device("cpu")).layout.num_entries
    base = FixedStart(torch.full((1, k), 0.7), cost=1.25)
    start_fn = WarmStart(explainer, Warmup(steps=3, num_samples=1, lr=0.02, prune_steps=0), base=base)
    targets = torch.tensor([5, 9])
    start = start_fn(images, targets)
    assert torch.equal(base.targets, targets)
    reference = CartoonX(explainer.classifier, explainer.config.replace(num_samples=1, lr=0.02, distortion="label+barrier"))
    expected = reference.explain(images, target=targets, init=base.mask.expand(2, -1), steps=3, seed=WARMUP_SEED_OFFSET)
    torch.testing.assert_close(start.mask, expected.mask)
    assert start.cost.tolist() == [1.25 + 3 / 4] * 2
    start_fn(images)
    assert base.targets is None  # without targets the base is called with the images only


def test_the_warm_start_begins_the_exact_run_lower_than_all_ones(explainer, images):
    start = WarmStart(explainer, Warmup(steps=40, num_samples=2, lr=0.05))
    warm = explainer.explain(images, init=start(images), steps=3).history["loss"][:, 0]
    ones = explainer.explain(images, init="ones", steps=3).history["loss"][:, 0]
    assert (warm < 0.8 * ones).all()  # all-ones pays lambda = 20 for keeping everything


def test_the_barrier_changes_the_warm_up_only(explainer, images):
    with_barrier = WarmStart(explainer, Warmup(steps=5, num_samples=2, prune_steps=0))(images)
    without = WarmStart(explainer, Warmup(steps=5, num_samples=2, barrier=False, prune_steps=0))(images)
    assert not torch.allclose(with_barrier.mask, without.mask)
    assert explainer.config.distortion == "label"


def test_an_unknown_named_base_is_refused(explainer):
    with pytest.raises(InputError, match="bogus"):
        WarmStart(explainer, base="bogus")


def test_a_start_that_warms_up_itself_is_not_warmed_up_twice(explainer):
    class SelfWarming:  # a learned start: its policy holds the warm-up it runs itself
        policy = SimpleNamespace(warmup=Warmup(steps=3))

        def __call__(self, images, target=None):
            raise AssertionError("never called")

    with pytest.raises(InputError, match="warm-up of its own"):
        WarmStart(explainer, base=SelfWarming())
    SelfWarming.policy = SimpleNamespace(warmup=Warmup(steps=0))
    WarmStart(explainer, base=SelfWarming())  # a start without one is fine


def test_warm_with_signals_is_the_same_start_and_reports_each_phase(explainer, images):
    warmup = Warmup(steps=3, num_samples=2, lr=0.05, prune_steps=4, prune_lam=5.0, prune_min_prob=0.0)
    warm = WarmStart(explainer, warmup, seed=3)
    init = torch.full((2, 1), 0.7).expand(2, explainer.representation(64, 64, images.device).layout.num_entries)
    start = warm.warm(images, init)
    again, seen = warm.warm_with_signals(images, init)
    assert torch.equal(start.mask, again.mask) and torch.equal(start.cost, again.cost)
    assert torch.equal(seen.pruned_mask, start.mask) and torch.equal(seen.before, init)
    config = explainer.config.replace(num_samples=2, lr=0.05, distortion="label+barrier")
    first = CartoonX(explainer.classifier, config).explain(images, init=init, steps=3, seed=3 + WARMUP_SEED_OFFSET,
                                                           record_signals=True)
    assert torch.equal(seen.warmed, first.mask)
    for k, v in first.signals.items():
        torch.testing.assert_close(seen.warmup[k], v)
    second = CartoonX(explainer.classifier, config.replace(lam=5.0 * explainer.config.lam)).explain(
        images, init=first.mask, steps=4, seed=3 + PRUNE_SEED_OFFSET, record_signals=True)
    for k, v in second.signals.items():
        torch.testing.assert_close(seen.prune[k], v)
    assert float(seen.prune["grad_std"].abs().max()) > 0


def test_signals_of_an_unpruned_image_are_zero_in_the_pruning_phase(explainer, images):
    warmup = Warmup(steps=2, num_samples=2, prune_steps=3, prune_min_prob=1.0)  # no class is that confident
    start, seen = WarmStart(explainer, warmup)(images), WarmStart(explainer, warmup).warm_with_signals(images, "ones")[1]
    assert start.pruned.tolist() == [False, False] and torch.equal(seen.pruned_mask, seen.warmed)
    assert all(float(v.abs().max()) == 0 for v in seen.prune.values())
    assert float(seen.warmup["exp_avg_sq"].max()) > 0 and torch.equal(seen.before, torch.ones_like(seen.before))
