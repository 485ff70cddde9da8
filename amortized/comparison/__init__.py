"""Compare initial masks for CartoonX by their loss curves, with identical noise seeds.

For every init the exact optimizer runs N steps on the same images with the same per-image seeds.
The report gives, per init: final loss/distortion/sparsity; how many runs collapsed (lost the class:
their low loss is the empty mask's, so where the ones run kept the class they never count as
reaching); steps-to-reach (the first step from which the 10-step moving average stays at or below
the ones-init average at step N, plus what the start itself cost in classifier passes, counted in
optimizer steps: a learned start's probe and guard checks); the speedup N / steps; the moving-average
loss at fixed steps; wall time including any network forward pass; and rate-distortion curves of the final masks.

Modules: :mod:`.results` (the data and its files), :mod:`.stats` (steps-to-reach, rows, the table),
:mod:`.figures`, :mod:`.run` (:func:`compare_inits`), :mod:`.resume` (resuming and merging over runs).
"""

from amortized.comparison.figures import plot_comparison
from amortized.comparison.results import RD_FRACTIONS, Comparison, InitRun
from amortized.comparison.resume import PartialComparison, comparison_settings, load_finished
from amortized.comparison.run import compare_inits, ones_run
from amortized.comparison.stats import FIXED_STEPS, wall_speedup

__all__ = [
    "FIXED_STEPS", "RD_FRACTIONS", "Comparison", "InitRun", "PartialComparison", "compare_inits",
    "comparison_settings", "load_finished", "ones_run", "plot_comparison", "wall_speedup",
]
