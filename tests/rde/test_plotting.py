"""Figures from hand-built Explanation objects (no optimizer involved)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from rde import Explanation, MaskLayout
from rde.plotting import explanation_figure, plot_explanation, plot_mask_levels


def make_explanation(layout: MaskLayout, batch: int = 2, steps: int = 20, lam: float = 20.0) -> Explanation:
    gen = torch.Generator().manual_seed(0)
    h, w = layout.height, layout.width
    sparsity = torch.linspace(1.0, 0.2, steps).repeat(batch, 1)
    distortion = torch.linspace(1e-6, 0.05, steps).repeat(batch, 1)
    return Explanation(
        mask=torch.rand(batch, layout.num_entries, generator=gen),
        explanation=torch.rand(batch, 1, h, w, generator=gen),
        images=torch.rand(batch, 3, h, w, generator=gen),
        targets=torch.tensor([3, 7][:batch]),
        target_probs=torch.tensor([0.9, 0.4][:batch]),
        predicted=torch.tensor([3, 1][:batch]),
        history={
            "loss": distortion + lam * sparsity,
            "distortion": distortion,
            "sparsity": sparsity,
            "spatial": torch.zeros(batch, steps),
        },
        layout=layout,
        config={"method": "cartoonx" if layout.kind == "wavelet" else "pixel-rde", "preset": {"lam": lam}},
        class_names=["tench", "goldfinch"][:batch],
    )


@pytest.mark.parametrize("layout", [MaskLayout.for_wavelet(64, 64), MaskLayout.for_pixels(48, 48)], ids=str)
@pytest.mark.parametrize("steps", [20, 0])
def test_plot_explanation_writes_png(tmp_path, layout, steps):
    ex = make_explanation(layout, steps=steps)
    path = plot_explanation(ex, 1, tmp_path / "sub" / "fig.png")
    assert path == tmp_path / "sub" / "fig.png"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        width, height = img.size
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("L"))
    assert 800 <= width <= 2000 and 250 <= height <= 700 and width > 2 * height
    assert pixels.std() > 10  # something was drawn


def test_explanation_figure_panels_and_titles():
    ex = make_explanation(MaskLayout.for_wavelet(64, 64))
    fig = explanation_figure(ex, 1)
    img_ax, exp_ax, loss_ax = fig.axes[:3]
    assert "goldfinch" in img_ax.get_title() and "0.400" in img_ax.get_title()
    assert "predicted class 1" in img_ax.get_title()  # target 7 differs from the prediction
    labels = [line.get_label() for line in loss_ax.get_lines()]
    assert labels[:2] == ["total loss", "distortion"] and labels[2].startswith("λ·sparsity")
    lam_line = loss_ax.get_lines()[2]
    np.testing.assert_allclose(lam_line.get_ydata(), 20.0 * ex.history["sparsity"][1].numpy(), rtol=1e-6)
    assert loss_ax.get_yscale() == "log"  # distortion spans ~1e-6 .. 20
    shown = exp_ax.get_images()[0].get_array()
    np.testing.assert_allclose(shown, ex.explanation[1, 0].numpy())


def test_explanation_figure_spatial_curve_only_when_used():
    ex = make_explanation(MaskLayout.for_wavelet(64, 64), batch=1)
    assert len(explanation_figure(ex).axes[2].get_lines()) == 3
    ex.history["spatial"] = torch.full((1, 20), 0.1)
    ex.config = {**ex.config, "preset": {"lam": 20.0, "spatial_weight": 2.0}}
    lines = explanation_figure(ex).axes[2].get_lines()
    assert len(lines) == 4
    np.testing.assert_allclose(lines[3].get_ydata(), 0.2)


def test_pixel_rde_shows_mask_over_image():
    ex = make_explanation(MaskLayout.for_pixels(48, 48))
    exp_ax = explanation_figure(ex, 0).axes[1]
    grey, heat = exp_ax.get_images()
    np.testing.assert_allclose(heat.get_array(), ex.mask[0].view(48, 48).numpy())
    np.testing.assert_allclose(grey.get_array(), ex.images[0].mean(0).numpy(), rtol=1e-6)


def test_explanation_figure_rejects_bad_index():
    with pytest.raises(IndexError, match="index 5"):
        explanation_figure(make_explanation(MaskLayout.for_wavelet(64, 64)), 5)


def test_plot_mask_levels_one_panel_per_scale(tmp_path):
    layout = MaskLayout.for_wavelet(64, 64)
    mask = torch.rand(layout.num_entries, generator=torch.Generator().manual_seed(1))
    parts = layout.split(mask)
    names = [s.name for s in layout.scales]
    fig = plot_mask_levels(parts, names, path=tmp_path / "levels.png", title="levels")
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert len(panels) == len(layout.scales) == 6
    for ax, part, name in zip(panels, parts, names):
        assert ax.get_title().startswith(name)
        np.testing.assert_allclose(ax.get_images()[0].get_array(), part.mean(0).numpy(), rtol=1e-6)
    with Image.open(tmp_path / "levels.png") as img:
        assert img.format == "PNG" and img.size[0] > img.size[1]


def test_plot_mask_levels_into_given_axes():
    layout = MaskLayout.for_wavelet(64, 64)
    masks = torch.rand(3, layout.num_entries, generator=torch.Generator().manual_seed(2))
    fig = Figure()
    grid = fig.subplots(3, len(layout.scales))
    for row, mask in zip(grid, masks):
        assert plot_mask_levels(layout.split(mask), axes=row, colorbar=False) is fig
    assert len(fig.axes) == 3 * len(layout.scales)  # no colorbar axes added


def test_plot_mask_levels_rejects_batched_parts():
    layout = MaskLayout.for_wavelet(64, 64)
    with pytest.raises(ValueError, match="expected \\(C, h, w\\)"):
        plot_mask_levels(layout.split(layout.ones(2)))
    with pytest.raises(ValueError, match="2 names for 6"):
        plot_mask_levels(layout.split(layout.ones(1)[0]), names=["a", "b"])


def test_plotting_leaves_pyplot_alone(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    before = plt.get_fignums()
    plot_explanation(make_explanation(MaskLayout.for_wavelet(64, 64)), 0, tmp_path / "a.png")
    plot_mask_levels(MaskLayout.for_pixels(32, 32).split(torch.rand(32 * 32)))
    assert plt.get_fignums() == before


def test_loss_curves_figure_draws_median_band_and_reference():
    from rde.plotting import loss_curves_figure

    losses = {"ones": torch.tensor([[4.0, 2.0, 1.0], [6.0, 4.0, 3.0], [8.0, 6.0, 5.0]]), "learned": torch.ones(3, 3)}
    fig = loss_curves_figure(losses, reference=2.5, labels={"learned": "learned: 3x"}, reference_label="ones@3")
    ax, ax_rd = fig.axes[:2]
    median = ax.lines[0].get_ydata()
    assert np.allclose(median, [6.0, 4.0, 3.0])  # the middle image's curve, step by step
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ones (median)", "learned: 3x", "ones@3"]
    assert ax.get_yscale() == "log" and not ax_rd.axison  # no rate-distortion data -> panel off


def test_loss_curves_figure_rate_distortion_panel_is_the_mean_over_images():
    from rde.plotting import loss_curves_figure

    keep = torch.tensor([[1.0, 0.5], [3.0, 0.5]])
    fig = loss_curves_figure({"ones": torch.ones(2, 4)}, rate_distortion={"ones": ((0.0, 1.0), keep, keep * 2)})
    rd = fig.axes[1]
    assert np.allclose(rd.lines[0].get_ydata(), [2.0, 0.5]) and np.allclose(rd.lines[1].get_ydata(), [4.0, 1.0])


def test_per_image_and_side_by_side_figures(tmp_path):
    from rde.plotting import per_image_loss_figure, side_by_side_figure

    losses = {"ones": torch.rand(5, 7) + 0.1, "learned": torch.rand(5, 7) + 0.1}
    fig = per_image_loss_figure(losses, [f"img{i}" for i in range(5)])
    drawn = [ax for ax in fig.axes if ax.axison]
    assert len(fig.axes) == 8 and len(drawn) == 5 and [ax.get_title() for ax in drawn] == [f"img{i}" for i in range(5)]
    assert np.allclose(drawn[3].lines[1].get_ydata(), losses["learned"][3].numpy())
    images, masks = torch.rand(2, 3, 8, 8), {"ones": torch.rand(2, 1, 8, 8), "learned": torch.rand(2, 1, 8, 8)}
    fig = side_by_side_figure(images, masks, ["a", "b"], {"ones": ["o0", "o1"], "learned": ["l0", "l1"]})
    assert [ax.get_title() for ax in fig.axes] == ["a", "o0", "l0", "b", "o1", "l1"]
    fig.savefig(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").size[0] > 100
