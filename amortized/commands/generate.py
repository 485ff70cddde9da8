"""Generate exact CartoonX mask targets for a set of images into WebDataset shards.

INPUT is an ImageFolder tree (ROOT/<wnid>/*.JPEG), a flat directory of <wnid>_*.JPEG files, a list file
(.txt/.lst, one image path per line), or image files; folders are searched recursively. Every image is optimized with the exact CartoonX optimizer for its predicted
class; each finished shard (masks-<config hash>-r<rank>-NNNNNN.tar.gz) appears atomically in OUT, with
OUT/manifest.json summarizing config, shards, counts and failed images.

--labels cheap writes cheap labels instead: the learned start (the bundled initializer, or --checkpoint) refined
for --label-steps exact steps, each sample's cost in preset steps in its metadata, into a directory of their own.

Rerun the same command to resume: finished samples are skipped, partial shards of a killed run are
discarded and finished samples that fail their checks are recomputed. A directory holding shards of a
different configuration is refused. SIGTERM (exit code 143) or Ctrl-C (130) stops a run within seconds
and keeps every finished sample; rerun the command to resume.

Several GPUs (each rank writes its own shard series; Lightning starts the processes):
  cartoonx generate DATA --out OUT --accelerator gpu --devices 8 --batch-size 32 --shard-size 1000 --num-workers 4
Several nodes: run the same command on every node with --num-nodes N, under SLURM (srun --ntasks-per-node 8)
or with MASTER_ADDR, MASTER_PORT and NODE_RANK set; OUT must be a shared file system.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amortized.commands._args import add_precision_argument, fraction, int_at_least, positive_int, positive_steps, seed_int


def _devices(text: str) -> int | str:
    return text if text == "auto" else positive_int(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT",
        help="image folders (searched recursively), list files (.txt/.lst, one image path per line) or image files",
    )
    parser.add_argument("--out", type=Path, required=True, help="shard directory (created; rerun to resume)")
    parser.add_argument(
        "--model", "--classifier", dest="model", default="efficientnet_lite0",
        help="classifier to explain (default: %(default)s)",
    )
    parser.add_argument("--preset", default="cpu", help="optimizer preset: cpu, paper, tiny or a YAML file (default: %(default)s)")
    parser.add_argument("--steps", type=positive_steps, help="Adam steps, at least 1 (default: the preset's)")
    parser.add_argument("--num-samples", type=positive_int, help="noise samples L per step (default: the preset's)")
    parser.add_argument("--lam", type=float, help="sparsity weight lambda (default: the preset's)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default: the preset's)")
    parser.add_argument("--image-size", type=positive_int, help="image side in pixels (default: the preset's)")
    parser.add_argument("--samples-per-call", type=positive_int, help="cap on obfuscations per classifier call (memory)")
    parser.add_argument("--seed", type=seed_int, default=0, help="base noise seed; per image it is hashed with the key (default: 0)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=1,
        help="images optimized together; pays off on a GPU (e.g. 32), not on a CPU (default: %(default)s)",
    )
    parser.add_argument("--shard-size", type=positive_int, default=8, help="samples per shard (default: %(default)s)")
    parser.add_argument("--no-compress", dest="compress", action="store_false", help="write .tar instead of .tar.gz")
    parser.add_argument("--limit", type=positive_int, help="only the first N images of the fixed hash order")
    parser.add_argument(
        "--views", type=int_at_least(0), default=0, metavar="K",
        help="also explain K views (random resized crop and flip) of each photo, keys <key>@v1..K (default: 0)",
    )
    parser.add_argument("--views-only", action="store_true", help="with --views: the views only, not the photos themselves")
    parser.add_argument(
        "--labels", choices=("exact", "cheap"), default="exact",
        help="exact: the preset's full run from all-ones; cheap: the learned start refined for --label-steps steps, "
        "its cost per sample in the metadata; each kind needs its own --out (default: %(default)s)",
    )
    parser.add_argument("--checkpoint", type=Path,
                        help="with --labels cheap: initializer checkpoint of the start (default: the bundled one)")
    parser.add_argument("--label-steps", type=positive_int, metavar="K",
                        help="with --labels cheap: exact refinement steps after the start (default: 30)")
    parser.add_argument("--label-samples", type=positive_int, metavar="L",
                        help="with --labels cheap: noisy copies per refinement step (default: the preset's)")
    parser.add_argument("--split", choices=("all", "train", "val"), default="all", help="hash split to generate (default: all)")
    parser.add_argument("--val-fraction", type=fraction, default=1 / 8, help="validation fraction of the hash split (default: 1/8)")
    parser.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu (default: auto)")
    parser.add_argument("--devices", type=_devices, default=1, help="devices per node, or auto (default: 1)")
    parser.add_argument("--num-nodes", type=positive_int, default=1, help="nodes (default: 1)")
    parser.add_argument("--num-workers", type=int_at_least(0), default=0, help="image-loading workers per rank (default: 0)")
    parser.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_precision_argument(parser)


def run(args: argparse.Namespace) -> int:
    from amortized.signals import Stopped

    try:
        return _run(args)
    except Stopped as e:  # SIGTERM or SIGINT: finished shards and the manifest are consistent
        if e.summary is not None:
            print(f"generate: {e.summary}", file=sys.stderr)
        print(f"cartoonx generate: stopped by {e.name}; finished shards are kept in {args.out}, "
              "rerun the same command to resume", file=sys.stderr)
        return e.exit_code


def _run(args: argparse.Namespace) -> int:
    import logging
    import os

    # OpenMP threads that spin-wait make a shared, busy CPU ~8x slower (measured: 9.7 s vs 1.2 s per
    # step at the cpu preset with another job running). Must be set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from amortized.generate import DEFAULT_LABEL_STEPS, Labels, generate_targets
    from rde.errors import InputError

    if args.threads:
        torch.set_num_threads(args.threads)

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if args.labels == "exact":
        given = [o for o, v in (("--checkpoint", args.checkpoint), ("--label-steps", args.label_steps),
                                ("--label-samples", args.label_samples)) if v is not None]
        if given:
            raise InputError(f"{', '.join(given)}: only used with --labels cheap")
        labels = Labels()
    else:
        labels = Labels("cheap", args.checkpoint, args.label_steps or DEFAULT_LABEL_STEPS, args.label_samples)
    overrides = {
        "steps": args.steps,
        "num_samples": args.num_samples,
        "lam": args.lam,
        "lr": args.lr,
        "image_size": args.image_size,
        "samples_per_call": args.samples_per_call,
        "precision": args.precision,
    }
    summary = generate_targets(
        args.inputs,
        args.out,
        classifier=args.model,
        preset=args.preset,
        seed=args.seed,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        compress=args.compress,
        limit=args.limit,
        split=args.split,
        val_fraction=args.val_fraction,
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        num_workers=args.num_workers,
        show_progress=args.progress,
        views=args.views,
        views_only=args.views_only,
        labels=labels,
        **overrides,
    )
    print(f"generate: {summary}", file=sys.stderr)
    return 1 if summary.failed or summary.unlisted else 0
