"""A comparison's figures: loss curves (median and quartile band over images, and per image), rate-distortion
curves, and the explanations each init reached side by side."""

from __future__ import annotations

from pathlib import Path

from amortized.comparison.results import RD_FRACTIONS, Comparison
from rde.metrics import loss_at, reference_level
from rde.plotting import loss_curves_figure, per_image_loss_figure, side_by_side_figure


def plot_comparison(comparison: Comparison, out: str | Path) -> list[Path]:
    """Write ``loss_curves.png`` (with the rate-distortion curves where measured), ``loss_curves_per_image.png`` and,
    where every run kept its final explanations and the inputs are known, ``explanations.png`` (first 8 images)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    losses = {label: run.history["loss"] for label, run in comparison.runs.items()}
    summary = {r["init"]: r for r in comparison.summary_rows()}
    labels = {}
    for label in comparison.runs:
        reach = summary[label]["median_steps_to_reach"]
        labels[label] = f"{label} (median)" + (
            "" if label == "ones" else ": never reaches ones@N" if reach is None
            else f": reaches ones@N at step {reach:.0f}, {summary[label]['median_speedup']:.1f}x")
    reference = float(reference_level(losses["ones"], comparison.window).median())
    rd = {label: (RD_FRACTIONS, run.rd_keep, run.rd_randomize) for label, run in comparison.runs.items()
          if run.rd_keep is not None}
    fig = loss_curves_figure(losses, reference, labels, rd or None, f"ones@{comparison.steps} (10-step avg)")
    paths = [out / "loss_curves.png", out / "loss_curves_per_image.png"]
    fig.savefig(paths[0], dpi=110)
    per_image_loss_figure(losses, comparison.names).savefig(paths[1], dpi=100)
    if comparison.images is not None and all(r.explanation is not None for r in comparison.runs.values()):
        n = min(8, len(comparison.names))
        final = {label: loss_at(run.history["loss"][:n], [comparison.steps], comparison.window)[comparison.steps]
                 for label, run in comparison.runs.items()}
        captions = {label: [f"{label} @{comparison.steps}: loss {float(v):.3f}" for v in final[label]]
                    for label in comparison.runs}
        explanations = {label: run.explanation[:n] for label, run in comparison.runs.items()}
        paths.append(out / "explanations.png")
        side_by_side_figure(comparison.images[:n], explanations, comparison.names[:n], captions).savefig(paths[-1], dpi=100)
    return paths
