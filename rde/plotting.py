"""Figures for RDE results: the explanation figure and a per-scale view of a mask.

Everything here draws on :class:`matplotlib.figure.Figure` objects with the Agg canvas and never
touches ``matplotlib.pyplot``, so no global figure state is created or leaked. Plotting reads
:class:`~rde.explanation.Explanation` objects and per-scale mask tensors only; it does not depend on
the optimizer.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from rde.errors import InputError
from rde.explanation import Explanation

METHOD_TITLES = {"cartoonx": "CartoonX", "pixel-rde": "Pixel RDE"}
LOG_SCALE_RATIO = 30.0  # use a log y-axis when the plotted loss terms span more than this factor
LOG_FLOOR = 1e-4  # on a log axis, the lowest value shown relative to the largest (step-0 distortion is ~0)


@functools.lru_cache(maxsize=4)
def _font_codepoints(family: tuple[str, ...]) -> frozenset[int]:
    from matplotlib import font_manager

    path = font_manager.findfont(font_manager.FontProperties(family=list(family)))
    return frozenset(font_manager.get_font(path).get_charmap())


def drawable(text: str) -> str:
    """``text`` with the characters that the figure font cannot draw replaced by ``?``: a file name in a script the
    font lacks reads as ``??.png`` instead of empty boxes and one matplotlib warning per missing glyph."""
    import matplotlib

    codepoints = _font_codepoints(tuple(matplotlib.rcParams["font.family"]))
    return "".join(c if ord(c) in codepoints or c in "\n\t" else "?" for c in text)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _hwc(image: Tensor) -> np.ndarray:
    """``(3, H, W)`` tensor in [0, 1] -> ``(H, W, 3)`` float array for ``imshow``."""
    return image.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy()


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def explanation_figure(explanation: Explanation, index: int = 0) -> Figure:
    """The three-panel figure of image ``index``: input, explanation, loss curves.

    * the input image, titled with the explained class name and the classifier's probability of it;
    * CartoonX: the explanation image in greyscale; Pixel RDE: the mask as a heatmap over the image;
    * total loss, distortion, ``lam * sparsity`` (and ``spatial_weight * spatial`` when nonzero) per step,
      on a log axis (at most 4 decades deep) when the terms span more than a factor of 30.
    """
    if not -len(explanation) <= index < len(explanation):
        raise IndexError(f"index {index} out of range for an explanation of {len(explanation)} images")
    one = explanation[index]
    fig = _new_figure(12.0, 4.0)
    ax_img, ax_exp, ax_loss = fig.subplots(1, 3, width_ratios=[1, 1, 1.25])

    target, prob = int(one.targets[0]), float(one.target_probs[0])
    name = one.class_names[0] if one.class_names else str(target)
    ax_img.imshow(_hwc(one.images[0]))
    title = f"{name} (class {target})\np = {prob:.3f}"
    if int(one.predicted[0]) != target:
        title += f", predicted class {int(one.predicted[0])}"
    ax_img.set_title(title, fontsize=10)

    method = str(one.config.get("method", "cartoonx" if one.layout.kind == "wavelet" else "pixel-rde"))
    mean_mask = float(one.mask.mean())
    if one.layout.kind == "pixel":
        (mask,) = one.layout.split(one.mask[0])
        grey = one.images[0].mean(0).cpu().numpy()
        ax_exp.imshow(grey, cmap="gray", vmin=0, vmax=1)
        heat = ax_exp.imshow(mask[0].cpu().numpy(), cmap="inferno", vmin=0, vmax=1, alpha=0.6)
        fig.colorbar(heat, ax=ax_exp, fraction=0.046, pad=0.02, label="mask")
    else:
        ax_exp.imshow(one.explanation[0, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    ax_exp.set_title(f"{METHOD_TITLES.get(method, method)}\nmean mask {mean_mask:.3f}", fontsize=10)
    for ax in (ax_img, ax_exp):
        ax.set_xticks([])
        ax.set_yticks([])

    _plot_losses(ax_loss, one)
    return fig


def _plot_losses(ax: Axes, one: Explanation) -> None:
    history = {k: v[0].cpu().double().numpy() for k, v in one.history.items()}
    steps = len(history["loss"])
    ax.set_title(f"loss over {steps} steps", fontsize=10)
    ax.set_xlabel("step")
    if steps == 0:
        ax.text(0.5, 0.5, "no optimization steps", ha="center", va="center", transform=ax.transAxes)
        return
    preset = one.config.get("preset", {}) if isinstance(one.config, dict) else {}
    lam = preset.get("lam")
    spatial_weight = preset.get("spatial_weight") or 0.0
    curves = {"total loss": history["loss"], "distortion": history["distortion"]}
    if lam is not None:
        curves[f"λ·sparsity (λ={lam:g})"] = lam * history["sparsity"]
    else:
        curves["sparsity"] = history["sparsity"]
    if spatial_weight and np.any(history["spatial"] != 0):
        curves[f"spatial (w={spatial_weight:g})"] = spatial_weight * history["spatial"]
    x = np.arange(steps)
    for label, values in curves.items():
        ax.plot(x, values, label=label, lw=1.5 if label == "total loss" else 1.0)
    positive = np.concatenate([v[v > 0] for v in curves.values()])
    if positive.size and positive.max() / positive.min() > LOG_SCALE_RATIO:
        ax.set_yscale("log")
        top = positive.max()
        ax.set_ylim(max(positive.min(), top * LOG_FLOOR) / 1.5, top * 1.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_explanation(explanation: Explanation, index: int, path: str | Path, dpi: int = 100) -> Path:
    """Write :func:`explanation_figure` of image ``index`` as a PNG to ``path``; returns the path."""
    return _save(explanation_figure(explanation, index), path, dpi)


def plot_mask_levels(
    mask_parts: Sequence[Tensor],
    names: Sequence[str] | None = None,
    path: str | Path | None = None,
    title: str | None = None,
    axes: Sequence[Axes] | None = None,
    colorbar: bool = True,
    dpi: int = 100,
) -> Figure:
    """Show a mask scale by scale: one panel per part from :meth:`rde.MaskLayout.split` of one mask.

    Args:
        mask_parts: per-scale masks of one image, each ``(C, h, w)`` (``C`` is 1 for the lowpass and
            pixel scales, 3 orientations for a wavelet level; orientations are averaged for display).
        names: panel titles, e.g. ``[s.name for s in layout.scales]``. Default: ``scale 0``, ``scale 1``, ...
        path: also write the figure there as a PNG.
        title: figure title.
        axes: draw into these axes (one per part, e.g. a row of a larger preview grid) instead of a
            new figure; the returned figure is theirs.
        colorbar: add one colorbar (0 to 1) for the panels.

    Returns:
        The figure drawn on.
    """
    parts = list(mask_parts)
    if not parts:
        raise InputError("plot_mask_levels needs at least one mask part")
    for i, p in enumerate(parts):
        if p.dim() != 3:
            raise InputError(
                f"mask part {i} has shape {tuple(p.shape)}; expected (C, h, w) from MaskLayout.split of one mask"
            )
    names = list(names) if names is not None else [f"scale {i}" for i in range(len(parts))]
    if len(names) != len(parts):
        raise InputError(f"got {len(names)} names for {len(parts)} mask parts")
    if axes is None:
        fig = _new_figure(2.0 * len(parts) + 0.6, 2.4)
        axes = np.atleast_1d(fig.subplots(1, len(parts))).tolist()
    else:
        axes = list(axes)
        if len(axes) != len(parts):
            raise InputError(f"got {len(axes)} axes for {len(parts)} mask parts")
        fig = axes[0].figure
    image = None
    for ax, part, name in zip(axes, parts, names):
        values = part.detach().cpu().float().mean(0).numpy()
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name} {values.shape[0]}×{values.shape[1]}\nmean {float(part.mean()):.3f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if colorbar:
        fig.colorbar(image, ax=list(axes), fraction=0.02, pad=0.01)
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        _save(fig, path, dpi)
    return fig


CURVE_COLORS = ("#444444", "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e")


def loss_curves_figure(
    losses: dict[str, Tensor],
    reference: float | None = None,
    labels: dict[str, str] | None = None,
    rate_distortion: dict[str, tuple[Sequence[float], Tensor, Tensor]] | None = None,
    reference_label: str = "reference",
) -> Figure:
    """Loss curves of several runs on the same images: median and quartile band over images, log scale.

    Args:
        losses: run name -> ``(B, N)`` loss per image and step.
        reference: a horizontal reference level (e.g. the all-ones run's loss at step N), drawn dotted and
            named ``reference_label`` in the legend.
        labels: run name -> legend text. Default: ``"<name> (median)"``.
        rate_distortion: run name -> ``(fractions, keep, randomize)`` with ``keep``/``randomize`` of shape
            ``(B, len(fractions))``; drawn in a second panel (mean over images) when given.
    """
    colors = dict(zip(losses, CURVE_COLORS))
    fig = _new_figure(11, 4.2)
    ax, ax_rd = fig.subplots(1, 2)
    for name, loss in losses.items():
        values = loss.detach().cpu().float().numpy()
        q25, med, q75 = np.quantile(values, [0.25, 0.5, 0.75], axis=0)
        x = np.arange(1, values.shape[1] + 1)
        ax.plot(x, med, color=colors[name], label=(labels or {}).get(name, f"{name} (median)"))
        ax.fill_between(x, q25, q75, color=colors[name], alpha=0.2, lw=0)
    if reference is not None:
        ax.axhline(reference, color="k", ls=":", lw=1, label=reference_label)
    count = next(iter(losses.values())).shape[0] if losses else 0
    ax.set(yscale="log", xlabel="Adam step", ylabel="loss = distortion + λ·‖s‖₁/k",
           title=f"Loss over {count} image(s): median and quartiles")
    ax.legend(fontsize=8)
    if rate_distortion:
        for name, (fractions, keep, randomize) in rate_distortion.items():
            ax_rd.plot(fractions, keep.mean(0).cpu().numpy(), "o-", color=colors.get(name), ms=3, label=f"{name}: keep top")
            ax_rd.plot(fractions, randomize.mean(0).cpu().numpy(), "s--", color=colors.get(name), ms=3, alpha=0.6,
                       label=f"{name}: randomize top")
        ax_rd.set(xlabel="fraction of coefficients (most relevant first)", ylabel="distortion",
                  title="Rate-distortion of the final masks")
        ax_rd.set_xscale("symlog", linthresh=0.01)
        ax_rd.legend(fontsize=7)
    else:
        ax_rd.axis("off")
    return fig


def per_image_loss_figure(losses: dict[str, Tensor], names: Sequence[str], columns: int = 4) -> Figure:
    """One small log-scale panel per image with every run's loss curve (``losses``: run -> ``(B, N)``)."""
    colors = dict(zip(losses, CURVE_COLORS))
    n = len(names)
    cols = max(1, min(columns, n))
    rows = -(-n // cols)
    fig = _new_figure(3.2 * cols, 2.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, image_name in enumerate(names):
        for run, loss in losses.items():
            axes[i].plot(np.arange(1, loss.shape[1] + 1), loss[i].detach().cpu().float().numpy(),
                         color=colors[run], lw=0.8, label=run)
        axes[i].set(yscale="log", title=drawable(image_name[:32]))
        axes[i].tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.axis("off")
    axes[0].legend(fontsize=7)
    return fig


def side_by_side_figure(images: Tensor, explanations: dict[str, Tensor], names: Sequence[str],
                        captions: dict[str, Sequence[str]] | None = None) -> Figure:
    """Rows: images ``(B, 3, H, W)``; columns: the input, then each run's ``(B, 1, H, W)`` explanation,
    titled by ``captions[run][i]`` when given."""
    n = images.shape[0]
    cols = 1 + len(explanations)
    fig = _new_figure(2.3 * cols, 2.5 * n)
    axes = np.asarray(fig.subplots(n, cols, squeeze=False))
    for i in range(n):
        axes[i, 0].imshow(_hwc(images[i]))
        axes[i, 0].set_title(drawable(names[i][:28]), fontsize=8)
        for j, (run, explanation) in enumerate(explanations.items(), start=1):
            axes[i, j].imshow(explanation[i, 0].detach().cpu().float().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[i, j].set_title(captions[run][i] if captions else run, fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
