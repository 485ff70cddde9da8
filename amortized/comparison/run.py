"""Running a comparison: every init on the same images with the same noise seeds (:func:`compare_inits`)."""

from __future__ import annotations

import time
from typing import Sequence

from torch import Tensor

from amortized.comparison.results import RD_FRACTIONS, Comparison, InitRun
from amortized.comparison.stats import set_steps_to_reach
from rde import CartoonX
from rde.init import InitSpec
from rde.metrics import collapsed, rate_distortion_curve
from rde.start import Start, StartFn


def compare_inits(
    explainer: CartoonX,
    images: Tensor,
    inits: dict[str, InitSpec | StartFn],
    steps: int,
    names: Sequence[str] | None = None,
    seed: int = 0,
    rate_distortion: bool = True,
    rd_samples: int = 8,
    show_progress: bool = False,
    window: int = 10,
    ones: InitRun | None = None,
) -> Comparison:
    """Run every init on ``images`` with the same seeds; ``ones`` is added as the reference if absent.

    ``inits`` maps a label to an init spec accepted by :meth:`CartoonX.explain` or to a start function
    ``images -> Start`` (e.g. a :class:`~amortized.initializer.LearnedStart`) or ``images -> init``; its time
    counts toward the init's wall time, and the :attr:`~rde.start.Start.cost` it returns toward its steps-to-reach.
    ``ones``: a finished ones run of these images with this seed (it does not depend on the other inits, so
    benchmarks reuse it; see :func:`ones_run`); default: run it.
    """
    inits = {"ones": inits.get("ones", "ones"), **inits}
    names = list(names) if names is not None else [f"image{i}" for i in range(len(images))]
    runs: dict[str, InitRun] = {}
    if ones is not None:
        runs["ones"] = ones
    for label, spec in inits.items():
        if label in runs:
            continue
        start = time.perf_counter()
        init = spec(images) if callable(spec) else spec
        init_seconds = time.perf_counter() - start
        cost = init.cost if isinstance(init, Start) else None
        res = explainer.explain(images, init=init, steps=steps, seed=seed, show_progress=show_progress)
        runs[label] = InitRun(
            name=label, history=res.history, mask=res.mask, seconds=time.perf_counter() - start,
            init_seconds=init_seconds, explanation=res.explanation.detach().cpu(),
            collapsed=collapsed(res.history["distortion"], res.target_probs, window),
            start_cost=None if cost is None else cost.detach().cpu().double(),
        )
    set_steps_to_reach(runs, window)
    for run in runs.values():
        if rate_distortion and run.mask is not None:
            mask = run.mask.to(images.device)
            run.rd_keep = rate_distortion_curve(explainer, images, mask, RD_FRACTIONS, "keep", rd_samples, seed)
            run.rd_randomize = rate_distortion_curve(explainer, images, mask, RD_FRACTIONS, "randomize", rd_samples, seed)
    return Comparison(names, steps, runs, window=window, images=images.detach().cpu())


def ones_run(history: dict[str, Tensor], target_probs: Tensor, seconds: float, window: int = 10) -> InitRun:
    """An all-ones :class:`InitRun` from a saved explanation's curves (e.g. a cached reference run)."""
    return InitRun(name="ones", history=history, seconds=seconds,
                   collapsed=collapsed(history["distortion"], target_probs, window))
