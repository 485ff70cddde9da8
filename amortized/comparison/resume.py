"""One comparison built over several runs: resumed after an interruption, merged from runs over other images,
continued image batch by image batch and saved after each, so that nothing finished is lost or recomputed.
``cartoonx compare`` and ``benchmarks/bench_learned_init.py`` both build theirs with :class:`PartialComparison`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from amortized.comparison.results import Comparison
from rde.errors import InputError
from rde.presets import RDEConfig


def comparison_settings(classifier: str, preset: RDEConfig, seed: int, checkpoint: str | None) -> dict[str, Any]:
    """What decides a comparison's curves besides the images, inits and steps, flat so that a mismatch reads in
    one line: the classifier, the preset's fields (its name and step count aside), the seed and the learned
    start's checkpoint (``"bundled"``, a path, or ``None`` without a learned start)."""
    fields = {f"preset.{k}": v for k, v in preset.to_dict().items() if k not in ("name", "steps")}
    settings = {"classifier": classifier, **fields, "seed": int(seed), "checkpoint": checkpoint}
    return json.loads(json.dumps(settings))  # as it reads back from comparison.json (tuples become lists)


def load_finished(
    out: str | Path, steps: int, inits: Sequence[str], settings: dict[str, Any] | None = None
) -> Comparison | None:
    """The comparison an interrupted run left in ``out``, if any; refused if its steps, inits or ``settings``
    (classifier, preset, seed, checkpoint: whatever the caller records) differ."""
    path = Path(out) / "comparison.json"
    if not path.exists():
        return None
    done = Comparison.load(path)
    expected = ["ones", *[i for i in inits if i != "ones"]]
    if done.steps != steps or list(done.runs) != expected:
        raise InputError(
            f"{path} holds a comparison of {list(done.runs)} over {done.steps} steps, not {expected} over {steps}; "
            "use another --out, or --overwrite instead of --resume to replace it"
        )
    if settings is not None and done.settings and done.settings != settings:  # files from before settings: as is
        keys = sorted(k for k in {*settings, *done.settings} if settings.get(k) != done.settings.get(k))
        changes = "; ".join(f"{k}: {done.settings.get(k)!r} -> {settings.get(k)!r}" for k in keys)
        raise InputError(f"{path} was made with other settings ({changes}); "
                         "use another --out, or --overwrite instead of --resume to replace it")
    return done


class PartialComparison:
    """A comparison in ``out`` made of the finished parts of earlier runs and the images still to run.

    Construction loads the comparisons the folders ``earlier`` hold (``out`` itself to resume; other runs' outputs
    to merge them; a folder without ``comparison.json`` adds nothing) and refuses, with an
    :class:`~rde.errors.InputError`, any made over other steps, inits or ``settings`` (see :func:`load_finished`):
    callers do it before the expensive setup, so that a mismatch is reported at once. :meth:`finish` then runs
    what none of them holds.
    """

    def __init__(self, out: str | Path, steps: int, inits: Sequence[str], settings: dict[str, Any],
                 earlier: Sequence[str | Path] = ()) -> None:
        self.out = Path(out)
        self.settings = settings
        self.parts: list[Comparison] = [
            c for c in (load_finished(d, steps, inits, settings) for d in earlier) if c is not None
        ]

    @property
    def finished(self) -> set[str]:
        """The names of the images already compared."""
        return {name for part in self.parts for name in part.names}

    def todo(self, names: Sequence[str]) -> list[int]:
        """Indices of the ``names`` still to compare, in order."""
        finished = self.finished
        return [i for i, name in enumerate(names) if name not in finished]

    def finish(self, names: Sequence[str], compare: Callable[[list[int]], Comparison], batch_size: int = 1,
               progress: str | None = None, after_save: Callable[[Comparison], None] | None = None) -> Comparison:
        """Compare the ``names`` not finished, ``batch_size`` at a time (``compare(indices into names)`` returns
        their comparison), save the whole comparison to ``out`` after each batch, and return it with ``settings``.
        ``progress``: a progress bar with this description (default: none); ``after_save(comparison so far)``:
        what else to save after each batch (e.g. the pictures for the figure)."""
        todo = self.todo(names)
        size = max(1, batch_size)
        batches = [todo[i : i + size] for i in range(0, len(todo), size)]
        if progress is not None:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=progress, unit="batch")
        for batch in batches:
            part = compare(batch)
            part.settings = self.settings
            self.parts.append(part)
            so_far = self.comparison()
            so_far.save(self.out)  # finished batches survive an interruption
            if after_save is not None:
                after_save(so_far)
        return self.comparison()

    def comparison(self) -> Comparison:
        """The parts so far as one comparison, with ``settings``."""
        if not self.parts:
            raise InputError(f"{self.out}: nothing to compare (no images left to run and no finished comparison)")
        whole = Comparison.concat(self.parts)
        whole.settings = self.settings
        return whole
