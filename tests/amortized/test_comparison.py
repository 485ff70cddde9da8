"""The one resume/merge path (PartialComparison): merged parts equal one run, finished images survive an
interruption and are not recomputed, other settings are refused."""

from __future__ import annotations

import json

import pytest
import torch

from amortized.comparison import Comparison, PartialComparison, compare_inits, comparison_settings
from rde import CartoonX, create_classifier, load_preset
from rde.errors import InputError

STEPS = 6
INITS = ["ones", "const:0.5"]
NAMES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def explainer():
    return CartoonX(create_classifier("tiny-test"), "tiny")


@pytest.fixture(scope="module")
def images():
    return torch.rand(len(NAMES), 3, 64, 64, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def settings():
    return comparison_settings("tiny-test", load_preset("tiny"), 0, None)


def _runner(explainer, images, names, calls=None):
    """``compare(indices into names)`` over the rows of ``images`` that ``names`` name."""

    def compare(batch):
        if calls is not None:
            calls.append([names[i] for i in batch])
        rows = [NAMES.index(names[i]) for i in batch]
        return compare_inits(explainer, images[rows], {"const:0.5": "const:0.5"}, STEPS, [names[i] for i in batch],
                             rate_distortion=False)

    return compare


def _comparable(comparison):  # everything but the wall times
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in comparison.per_image_rows()]


def test_a_merge_of_two_partial_comparisons_equals_the_one_shot_comparison(tmp_path, explainer, images, settings):
    one_shot = compare_inits(explainer, images, {"const:0.5": "const:0.5"}, STEPS, NAMES, rate_distortion=False)
    first, second = NAMES[:2], NAMES[2:]
    PartialComparison(tmp_path / "a", STEPS, INITS, settings).finish(first, _runner(explainer, images, first))
    PartialComparison(tmp_path / "b", STEPS, INITS, settings).finish(second, _runner(explainer, images, second))
    calls = []
    partial = PartialComparison(tmp_path / "merged", STEPS, INITS, settings, [tmp_path / "a", tmp_path / "b"])
    assert partial.finished == set(NAMES) and partial.todo(NAMES) == []
    merged = partial.finish(NAMES, _runner(explainer, images, NAMES, calls))
    assert calls == []  # nothing recomputed
    assert merged.names == NAMES and merged.settings == settings
    for label in ("ones", "const:0.5"):
        for curve in ("loss", "distortion", "sparsity"):
            torch.testing.assert_close(merged.runs[label].history[curve], one_shot.runs[label].history[curve])
    for got, want in zip(_comparable(merged), _comparable(one_shot), strict=True):  # float32 batch noise aside
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == (pytest.approx(value, rel=1e-4, abs=1e-5) if isinstance(value, float) else value), key
    merged.save(tmp_path / "merged")
    assert _comparable(Comparison.load(tmp_path / "merged" / "comparison.json")) == _comparable(merged)


def test_finished_images_survive_an_interruption_and_are_not_run_again(tmp_path, explainer, images, settings):
    out = tmp_path / "cmp"
    calls = []
    compare = _runner(explainer, images, NAMES, calls)

    def interrupted(batch):
        if len(calls) == 2:
            raise KeyboardInterrupt
        return compare(batch)

    with pytest.raises(KeyboardInterrupt):
        PartialComparison(out, STEPS, INITS, settings).finish(NAMES, interrupted)
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["images"] == ["a", "b"] and saved["settings"] == settings  # saved after each image
    calls.clear()
    resumed = PartialComparison(out, STEPS, INITS, settings, [out])
    assert resumed.todo(NAMES) == [2]
    whole = resumed.finish(NAMES, compare)
    assert calls == [["c"]] and whole.names == NAMES
    kept = json.loads((out / "comparison.json").read_text())["curves"]["ones"]["loss"][:2]
    assert kept == saved["curves"]["ones"]["loss"]  # the finished images as they were, not recomputed


def test_batches_of_several_images(tmp_path, explainer, images, settings):
    calls = []
    comp = PartialComparison(tmp_path, STEPS, INITS, settings).finish(
        NAMES, _runner(explainer, images, NAMES, calls), batch_size=2)
    assert calls == [["a", "b"], ["c"]] and comp.names == NAMES


def test_other_settings_steps_or_inits_are_refused(tmp_path, explainer, images, settings):
    PartialComparison(tmp_path, STEPS, INITS, settings).finish(NAMES[:1], _runner(explainer, images, NAMES[:1]))
    with pytest.raises(InputError, match=r"made with other settings \(seed: 0 -> 1\)"):
        PartialComparison(tmp_path / "new", STEPS, INITS, {**settings, "seed": 1}, [tmp_path])
    with pytest.raises(InputError, match=r"over 6 steps, not \['ones', 'const:0.5'\] over 7"):
        PartialComparison(tmp_path / "new", STEPS + 1, INITS, settings, [tmp_path])
    with pytest.raises(InputError, match="not \\['ones', 'random'\\]"):
        PartialComparison(tmp_path / "new", STEPS, ["ones", "random"], settings, [tmp_path])
    assert not (tmp_path / "new").exists()


def test_nothing_to_compare_is_one_line(tmp_path, settings):
    with pytest.raises(InputError, match="nothing to compare"):
        PartialComparison(tmp_path, STEPS, INITS, settings, [tmp_path]).finish([], lambda batch: None)
