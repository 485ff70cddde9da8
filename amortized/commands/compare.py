"""Compare initial masks for CartoonX: loss curves, steps-to-reach, speedup and rate-distortion curves.

Every init runs the exact optimizer for N steps on the same images with the same noise seeds. Writes
OUT/loss_curves.png (median and quartiles over images, and rate-distortion curves),
OUT/loss_curves_per_image.png, OUT/summary.csv, OUT/per_image.csv and OUT/comparison.json, and
prints the summary table. ``learned`` uses --checkpoint, or the initializer bundled for the model
and preset, warmed up and guarded as its checkpoint's policy says; ``<init>+warmup`` runs a cheap warm-up after
any other start (rde.warmup.Warmup(): few noisy copies, a large step and a log-probability barrier, then a
pruning phase where the class is confident), charged in preset steps like every start. Inputs are read as by
``cartoonx explain``; those that cannot be read are named and skipped, and the exit code is then 1. An earlier comparison in OUT is continued with --resume or replaced with
--overwrite, never silently. The inputs and explanations of finished images are kept in OUT/pictures.npz, so that
a resumed comparison's explanations.png shows them too.

Examples:
  cartoonx compare examples/ --inits ones,learned --steps 100
  cartoonx compare ../shared/data/imagenet-sample --split val --limit 20 --inits ones,learned,preopt
  cartoonx compare examples/ --inits ones,ones+warmup,learned --steps 100
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amortized.comparison import Comparison

from amortized.commands._args import (
    add_explainer_arguments,
    add_rerun_arguments,
    fraction,
    kept_images,
    outside,
    positive_int,
    positive_steps,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="IMAGES_OR_DATASET",
                        help="image files, folders (searched recursively) or list files (.txt/.lst)")
    parser.add_argument("--inits", default="ones,learned",
                        help="comma-separated: ones, learned, const:C, random, preopt; any but learned with +warmup "
                        "(default: %(default)s)")
    parser.add_argument("--steps", type=positive_steps, help="Adam steps N (default: the preset's)")
    add_explainer_arguments(parser, seed_help="noise seed shared by all inits")
    parser.add_argument("--split", choices=("all", "train", "val"), default="all",
                        help="for a dataset: the hash split to use (val = images the bundled initializer never saw)")
    parser.add_argument("--val-fraction", type=fraction, default=1 / 8, help="validation fraction of the hash split")
    parser.add_argument("--limit", type=positive_int, help="use only the first N images")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="images optimized together (default: 1)")
    parser.add_argument("--no-rate-distortion", action="store_true", help="skip the rate-distortion curves")
    add_rerun_arguments(parser, "outputs/compare",
                        "keep the images already in OUT/comparison.json and run the rest (refused unless the inits, "
                        "steps, classifier, preset, seed and checkpoint are the same)")


PICTURES = "pictures.npz"


def interrupted_hint(args: argparse.Namespace) -> str:
    """After Ctrl-C: what was kept and how to go on (printed by the CLI)."""
    return f"finished images are kept in {args.out}; rerun the same command with --resume to compare the rest"


def save_pictures(out: Path, comparison: Comparison) -> None:
    """The inputs and each init's explanation of every image so far, as 8-bit (for the figure only), atomically."""
    import numpy as np
    import torch

    def u8(t):
        return (t.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()

    arrays = {"names": np.array(comparison.names), "images": u8(comparison.images)}
    arrays.update({f"explanation/{label}": u8(run.explanation) for label, run in comparison.runs.items()})
    tmp = out / f".{PICTURES}.{os.getpid()}.tmp.npz"
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, out / PICTURES)
    finally:
        tmp.unlink(missing_ok=True)


def restore_pictures(out: Path, done: Comparison) -> bool:
    """Give the finished images of a resumed comparison their inputs and explanations back from ``pictures.npz``;
    whether every one was there (a comparison made before the file existed has none)."""
    import numpy as np
    import torch

    try:
        with np.load(out / PICTURES) as saved:
            row = {str(n): i for i, n in enumerate(saved["names"])}
            if not all(n in row for n in done.names) or not all(f"explanation/{k}" in saved for k in done.runs):
                return False
            index = [row[n] for n in done.names]
            done.images = torch.from_numpy(saved["images"][index]).float() / 255
            for label, run in done.runs.items():
                run.explanation = torch.from_numpy(saved[f"explanation/{label}"][index]).float() / 255
    except (OSError, KeyError, ValueError):
        return False
    return True


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    import rde
    from amortized.commands.explain import refuse_checkpoint_as_init, resolve_device
    from amortized.comparison import PartialComparison, compare_inits, comparison_settings, plot_comparison
    from rde.errors import InputError
    from rde.init import parse_init
    from rde.io import OutputDirError, check_output_dir, write_failure
    from rde.warmup import WarmStart, split_warmup

    device = resolve_device(args.device)
    preset = rde.load_preset(args.preset).replace(precision=args.precision, lam=args.lam)
    steps = preset.steps if args.steps is None else args.steps
    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    labels = [s.strip() for s in args.inits.split(",") if s.strip()]
    starts = {label: split_warmup(label) for label in labels}  # label -> (base, warmed up)
    for base, _ in starts.values():
        if base != "learned":
            refuse_checkpoint_as_init(base, "--inits")
            parse_init(base)
    uses_learned = any(base == "learned" for base, _ in starts.values())
    if args.checkpoint is not None and not uses_learned:
        raise InputError("--checkpoint is only used with a learned start (--inits ...,learned)")

    check_output_dir(args.out, option="--out")
    checkpoint = (str(args.checkpoint) if args.checkpoint else "bundled") if uses_learned else None
    settings = comparison_settings(args.model, preset, args.seed, checkpoint)
    partial = PartialComparison(args.out, steps, labels, settings, earlier=[args.out] if args.resume else [])
    done = partial.parts[0] if partial.parts else None
    if done is not None:
        had = any(run.rd_keep is not None for run in done.runs.values())
        if had == args.no_rate_distortion:  # concatenating the two would drop the curves of one part
            raise InputError(
                f"--resume: the comparison in {args.out} was made {'with' if had else 'without'} rate-distortion "
                f"curves; resume {'without' if had else 'with'} --no-rate-distortion (or --overwrite to start again)")
    if (args.out / "comparison.json").exists() and not (args.resume or args.overwrite):
        raise OutputDirError(
            f"--out {args.out}: holds an earlier comparison (comparison.json); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )

    from amortized.datasets import list_images

    skipped = 0

    def skip(message: str) -> None:
        nonlocal skipped
        skipped += 1
        print(f"cartoonx compare: skipping {message}", file=sys.stderr)

    # Files, folders (recursively) and list files, the same way `cartoonx explain` and `generate` read them.
    paths = [item.path for item in list_images(args.inputs, args.split, args.val_fraction, on_problem=skip)]
    paths = outside(paths, args.out, "compare")[: args.limit]
    from amortized.image_data import image_batches

    images, names = [], []
    for rows, batch in image_batches(paths, preset.image_size, 1, lambda path, message: skip(message)):
        images.extend(batch)
        names.extend(Path(paths[i]).stem for i in rows)
    if not images:
        raise InputError(f"no readable images to compare ({skipped} input(s) skipped)")

    explainer = rde.CartoonX(rde.create_classifier(args.model, device=device), preset)
    learned = None
    if uses_learned:
        from amortized.initializer import LearnedStart

        learned = LearnedStart.for_explainer(explainer, args.checkpoint, seed=args.seed)
    inits: dict = {}
    for label, (base, warm) in starts.items():
        start = learned if base == "learned" else base
        inits[label] = WarmStart(explainer, base=start, seed=args.seed) if warm else start

    pictures = True  # whether every finished image has its input and explanations (for explanations.png)
    if done is not None:
        pictures = restore_pictures(args.out, done)
        if not pictures:
            print(f"cartoonx compare: {args.out} has no saved explanations of the finished images (made by an older "
                  "version); explanations.png is left out", file=sys.stderr)
        print(f"cartoonx compare: resuming, {len(names) - len(partial.todo(names))} image(s) already in {args.out}",
              file=sys.stderr)

    def compare(batch: list[int]):
        x = torch.stack([images[i] for i in batch]).to(device)
        return compare_inits(explainer, x, inits, steps, [names[i] for i in batch], seed=args.seed,
                             rate_distortion=not args.no_rate_distortion)

    try:
        comparison = partial.finish(names, compare, batch_size=args.batch_size, progress="compare",
                                    after_save=(lambda so_far: save_pictures(args.out, so_far)) if pictures else None)
        files = comparison.save(args.out)
        figures = plot_comparison(comparison, args.out)
    except OSError as e:
        raise write_failure(args.out, e, kept_images(args.out)) from e
    print(comparison.format_table())
    print(f"wrote {', '.join(str(p) for p in [*files.values(), *figures])}")
    if skipped:
        print(f"cartoonx compare: {skipped} input(s) skipped (named above)", file=sys.stderr)
    return 1 if skipped else 0
