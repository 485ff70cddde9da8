"""The warm-up start: the same objective with fewer noisy copies and a larger step, charged in preset steps."""

from __future__ import annotations

import pytest
import torch

from rde import CartoonX, InputError, create_classifier
from rde.warmup import WARMUP_SEED_OFFSET, Warmup, WarmStart, split_warmup


@pytest.fixture(scope="module")
def explainer():
    return CartoonX(create_classifier("tiny-test"), "tiny")  # 64 px, 4 noisy copies per step


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


class FixedStart:
    """A callable start with a cost, like a learned initializer; remembers the targets it was given."""

    def __init__(self, mask: torch.Tensor, cost: float):
        self.mask, self.cost, self.targets = mask, cost, "never called"
        self.last_cost = None

    def __call__(self, images, target=None):
        self.targets = target
        self.last_cost = torch.full((len(images),), self.cost)
        return self.mask.expand(len(images), -1)


def test_cost_counts_classifier_passes_in_preset_steps():
    assert Warmup().cost(16) == 5.0  # 40 steps x 2 copies = 80 passes = 5 steps of 16 copies
    assert Warmup(steps=6, num_samples=1).cost(4) == 1.5


@pytest.mark.parametrize("field, value", [("steps", -1), ("num_samples", 0), ("steps", 2.5), ("lr", 0.0), ("lr", -1.0)])
def test_bad_settings_are_refused(field, value):
    with pytest.raises(InputError, match=field):
        Warmup(**{field: value})


def test_labels():
    assert split_warmup("ones+warmup") == ("ones", True)
    assert split_warmup("const:0.5+warmup") == ("const:0.5", True)
    assert split_warmup("ones") == ("ones", False)


def test_from_ones_it_is_the_exact_optimizer_with_fewer_copies_a_larger_step_and_its_own_noise(explainer, images):
    warmup = Warmup(steps=5, num_samples=2, lr=0.05, barrier=False)
    start = WarmStart(explainer, warmup, seed=3)
    mask = start(images)
    reference = CartoonX(explainer.classifier, explainer.config.replace(num_samples=2, lr=0.05))
    expected = reference.explain(images, init="ones", steps=5, seed=3 + WARMUP_SEED_OFFSET).mask
    torch.testing.assert_close(mask, expected)
    assert start.last_cost.tolist() == [5 * 2 / 4] * 2
    assert explainer.config.num_samples == 4 and explainer.config.lr == 0.01  # the exact explainer is untouched


def test_a_callable_start_is_warmed_up_its_cost_added_and_the_targets_passed_on(explainer, images):
    k = explainer.representation(64, 64, torch.device("cpu")).layout.num_entries
    base = FixedStart(torch.full((1, k), 0.7), cost=1.25)
    start = WarmStart(explainer, Warmup(steps=3, num_samples=1, lr=0.02), base=base)
    targets = torch.tensor([5, 9])
    mask = start(images, targets)
    assert torch.equal(base.targets, targets)
    reference = CartoonX(explainer.classifier, explainer.config.replace(num_samples=1, lr=0.02, distortion="label+barrier"))
    expected = reference.explain(images, target=targets, init=base.mask.expand(2, -1), steps=3, seed=WARMUP_SEED_OFFSET)
    torch.testing.assert_close(mask, expected.mask)
    assert start.last_cost.tolist() == [1.25 + 3 / 4] * 2
    start(images)
    assert base.targets is None  # without targets the base is called with the images only


def test_the_warm_start_begins_the_exact_run_lower_than_all_ones(explainer, images):
    start = WarmStart(explainer, Warmup(steps=40, num_samples=2, lr=0.05))
    warm = explainer.explain(images, init=start(images), steps=3).history["loss"][:, 0]
    ones = explainer.explain(images, init="ones", steps=3).history["loss"][:, 0]
    assert (warm < 0.8 * ones).all()  # all-ones pays lambda = 20 for keeping everything


def test_the_barrier_changes_the_warm_up_only(explainer, images):
    with_barrier = WarmStart(explainer, Warmup(steps=5, num_samples=2))(images)
    without = WarmStart(explainer, Warmup(steps=5, num_samples=2, barrier=False))(images)
    assert not torch.allclose(with_barrier, without)
    assert explainer.config.distortion == "label"


def test_an_unknown_named_base_is_refused(explainer):
    with pytest.raises(InputError, match="bogus"):
        WarmStart(explainer, base="bogus")


def test_a_start_that_warms_up_itself_is_not_warmed_up_twice(explainer):
    class SelfWarming:
        warmup = Warmup(steps=3)

        def __call__(self, images, target=None):
            raise AssertionError("never called")

    with pytest.raises(InputError, match="warm-up of its own"):
        WarmStart(explainer, base=SelfWarming())
    SelfWarming.warmup = Warmup(steps=0)
    WarmStart(explainer, base=SelfWarming())  # a start without one is fine
