"""What a comparison measures, per init: steps-to-reach the ones run's final level (the start's own cost charged,
a collapse where ones kept the class never reaching), the speedup N / steps, the moving-average loss at fixed
steps, the wall-time speedup; as per-image rows, summary rows and the printed table."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

import numpy as np

from rde.metrics import loss_at, reference_level, steps_to_reach

if TYPE_CHECKING:
    from amortized.comparison.results import Comparison, InitRun

FIXED_STEPS = (10, 30, 100)  # the moving-average loss is reported at these steps (those <= N)


def set_steps_to_reach(runs: dict[str, InitRun], window: int) -> None:
    """Steps-to-reach the ones run's final level, plus the start's own cost; losing the class where ones keeps it
    never counts as reaching."""
    ones = runs["ones"]
    ref = reference_level(ones.history["loss"], window)
    for label, run in runs.items():
        run.steps_to_reach = steps_to_reach(run.history["loss"], ref, window) + run.cost()
        if label != "ones":
            run.steps_to_reach[run.collapsed & ~ones.collapsed] = float("inf")


def per_image_rows(comparison: Comparison) -> list[dict]:
    """One row per init and image: final loss (and its moving average), distortion, sparsity, collapse,
    steps-to-reach (None: never), the start's steps, speedup, times and the loss at :data:`FIXED_STEPS`."""
    c = comparison
    rows = []
    for init, run in c.runs.items():
        fixed = loss_at(run.history["loss"], [s for s in FIXED_STEPS if s <= c.steps], c.window)
        for i, name in enumerate(c.names):
            str_ = float(run.steps_to_reach[i])
            row = {
                "image": name,
                "init": init,
                "final_loss": float(run.history["loss"][i, -1]),
                "final_loss_ma": float(loss_at(run.history["loss"][i : i + 1], [c.steps], c.window)[c.steps]),
                "final_distortion": float(run.history["distortion"][i, -1]),
                "final_sparsity": float(run.history["sparsity"][i, -1]),
                "collapsed": bool(run.collapsed[i]),
                "steps_to_reach": str_ if math.isfinite(str_) else None,
                "start_steps": float(run.cost()[i]),
                "speedup": c.steps / str_ if math.isfinite(str_) else 0.0,
                "seconds": run.seconds / len(c.names),
                "init_seconds": run.init_seconds / len(c.names),
            }
            row.update({f"loss_at_{s}": float(v[i]) for s, v in fixed.items()})
            rows.append(row)
    return rows


def summary_rows(comparison: Comparison) -> list[dict]:
    """One row per init: means over the images, collapses, median steps-to-reach, median and quartile speedups,
    seconds per image and (with a ones run) the wall-time speedup at the median steps-to-reach."""
    rows = []
    ones = comparison.runs.get("ones")
    per_image = per_image_rows(comparison)
    for init, run in comparison.runs.items():
        per = [r for r in per_image if r["init"] == init]
        speed = [r["speedup"] for r in per]
        row = {
            "init": init,
            "images": len(per),
            "final_loss": statistics.mean(r["final_loss_ma"] for r in per),
            "final_distortion": statistics.mean(r["final_distortion"] for r in per),
            "final_sparsity": statistics.mean(r["final_sparsity"] for r in per),
            "collapsed": sum(r["collapsed"] for r in per),
            "start_steps": statistics.mean(r["start_steps"] for r in per),
            "median_steps_to_reach": _median_or_none([r["steps_to_reach"] or math.inf for r in per]),
            "median_speedup": statistics.median(speed),
            "speedup_q25": float(np.quantile(speed, 0.25)),
            "speedup_q75": float(np.quantile(speed, 0.75)),
            "seconds_per_image": run.seconds / len(per),
        }
        if ones is not None:
            reach = statistics.median(run.steps_to_reach.tolist())
            row["wall_speedup_at_reach"] = wall_speedup(run, ones, comparison.steps, reach)
        rows.append(row)
    return rows


def format_table(comparison: Comparison) -> str:
    """The summary rows as a fixed-width table (``start``: the start's own classifier passes, in optimizer steps)."""
    head = (f"{'init':<10} {'final loss':>10} {'distortion':>10} {'sparsity':>9} {'collapsed':>9} {'start':>6} {'steps->ones@N':>14} "
            f"{'speedup (q25-q75)':>20} {'s/image':>8}")
    lines = [head, "-" * len(head)]
    for r in summary_rows(comparison):
        reach = "never" if r["median_steps_to_reach"] is None else f"{r['median_steps_to_reach']:.0f}"
        spd = f"{r['median_speedup']:.1f}x ({r['speedup_q25']:.1f}-{r['speedup_q75']:.1f})"
        lines.append(
            f"{r['init']:<10} {r['final_loss']:>10.4f} {r['final_distortion']:>10.4f} {r['final_sparsity']:>9.4f} "
            f"{r['collapsed']:>9d} {r['start_steps']:>6.2f} {reach:>14} {spd:>20} {r['seconds_per_image']:>8.1f}"
        )
    return "\n".join(lines)


def wall_speedup(run: InitRun, ones: InitRun, steps: int, reach: float) -> float:
    """Wall-time speedup to reach the ones@N level in ``reach`` steps: the ones run's time for N steps over
    this init's time for its network forward pass plus ``reach`` steps; 0 where it never reaches."""
    if not math.isfinite(reach) or run.seconds <= 0:
        return 0.0
    per_step = (run.seconds - run.init_seconds) / steps
    return ones.seconds / (run.init_seconds + per_step * reach)


def _median_or_none(values: list[float]) -> float | None:
    m = statistics.median(values)
    return None if math.isinf(m) else m
