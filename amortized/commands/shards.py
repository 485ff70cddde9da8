"""Inspect a shard directory written by ``cartoonx generate``: counts, configuration, integrity, preview.

Prints the configuration and sample counts and decodes every sample to check it (readable, complete,
mask length equal to the layout's k, values in range and finite, metadata consistent with the manifest),
reporting every problem in every shard in one pass. With --preview PATH it also renders a PNG grid of a
few sound samples: the image, its target explanation clamp(IDWT(mask * DWT(grey))) and the mask per
scale. Exit code 1 when a check fails, 2 when DIR is not a shard directory.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", type=Path, metavar="DIR", help="shard directory")
    parser.add_argument("--preview", type=Path, metavar="PNG", help="write a preview grid to this PNG (default: none)")
    parser.add_argument("--num-preview", type=int, default=4, help="samples in the preview (default: 4)")
    parser.add_argument("--no-check", dest="check", action="store_false", help="skip decoding every sample")
    parser.add_argument("--val-fraction", type=float, default=1 / 8, help="hash split for the counts (default: 1/8)")


def run(args: argparse.Namespace) -> int:
    from amortized import shards as S
    from rde.io import OutputDirError, check_output_dir

    if args.preview is not None:  # before the (long) check, so that a bad path costs nothing
        if args.preview.is_dir():
            raise OutputDirError(f"--preview {args.preview}: is a folder; give the PNG file to write")
        check_output_dir(args.preview.parent, option="--preview")
    if args.check:
        index, problems = S.verify_shards(args.directory)
    else:
        index, problems = S.open_shard_dir(args.directory), []
    _print_summary(index, args.val_fraction)
    if args.check:
        for p in problems:
            print(f"PROBLEM {p}", file=sys.stderr)
        print(f"check: {'OK' if not problems else f'{len(problems)} problem(s)'} "
              f"({index.num_samples} samples in {len(index.shards)} shards decoded)")
    if args.preview is not None and args.num_preview > 0:
        shown = render_preview(index, args.preview, args.num_preview)
        print(f"preview: {args.preview} ({shown} samples)" if shown else "preview: no sound sample to show")
    return 1 if problems else 0


def _print_summary(index, val_fraction: float) -> None:
    from amortized import shards as S

    cfg, man = index.config, index.manifest
    preset = cfg["preset"]
    print(f"{index.directory}: {index.num_samples} samples in {len(index.shards)} shards, config {index.config_hash}")
    print(f"  classifier {cfg['classifier']}, layout {cfg['layout']} (k={cfg['num_entries']}), seed {cfg['seed']}")
    print("  preset " + ", ".join(f"{k}={v}" for k, v in preset.items()))
    ranks = Counter()
    for path, keys in index.shards:
        ranks[S.parse_shard_name(path).rank] += len(keys)
    print("  per rank: " + ", ".join(f"r{r}: {n}" for r, n in sorted(ranks.items())))
    train, val = sum(index.counts("train", val_fraction)), sum(index.counts("val", val_fraction))
    print(f"  split (val fraction {val_fraction:g}): train {train}, val {val}")
    failed = man.get("failed", [])
    print(f"  failed images: {len(failed)}" + "".join(f"\n    {f['source']}: {f['error']}" for f in failed[:5]))


def render_preview(index, path: Path, num: int) -> int:
    """A grid, one row per sample (the first ``num`` that pass their checks): image, target explanation,
    the mask per scale. Returns the number of samples shown (no file when there is none)."""
    import numpy as np
    import torch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from amortized import shards as S
    from rde.plotting import drawable
    from rde.representation import create_representation, greyscale

    layout = index.layout()
    rep = create_representation("wavelet", layout.height, layout.width, layout.wavelet)
    spec = S.SampleSpec.from_config(index.config, index.config_hash)
    samples = []
    for shard, _ in index.shards:
        for key, raw in S.raw_samples(shard):
            s, problems = S.check_sample(key, raw, spec)
            if not problems:
                samples.append(s)
            if len(samples) == num:
                break
        if len(samples) == num:
            break
    if not samples:
        return 0
    cols = 2 + len(layout.scales)
    fig = Figure(figsize=(2.0 * cols + 0.6, 2.3 * len(samples)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(len(samples), cols))
    for row, s in zip(axes, samples):
        image = torch.from_numpy(s["image"]).permute(2, 0, 1).float()[None] / 255
        mask = torch.from_numpy(s["mask"].astype(np.float32))[None]
        with torch.no_grad():
            explanation = rep.decode(rep.encode(greyscale(image)) * mask.unsqueeze(1)).clamp(0, 1)
        meta = s["meta"]
        row[0].imshow(s["image"])
        row[0].set_title(drawable(f"{s['key'][:28]}\n{meta['target_name'][:24]} p={meta['target_prob']:.2f}"), fontsize=7)
        row[1].imshow(explanation[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
        row[1].set_title(f"target explanation\nloss {meta['final']['loss']:.3g}", fontsize=7)
        for ax in row[:2]:
            ax.set_xticks([])
            ax.set_yticks([])
        _plot_levels(layout.split(mask[0]), [sc.name for sc in layout.scales], row[2:])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return len(samples)


def _plot_levels(parts, names, axes) -> None:
    try:
        from rde.plotting import plot_mask_levels
    except ImportError:  # plotting not available: a plain per-scale view
        for ax, part, name in zip(axes, parts, names):
            ax.imshow(part.mean(0).numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{name}\nmean {float(part.mean()):.3f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        return
    plot_mask_levels(parts, names, axes=axes, colorbar=False)
