"""Write the plain initializer file of a training checkpoint: what ``--checkpoint`` of ``cartoonx explain`` and
``compare`` reads and what ships in the package, without Lightning's optimizer and loop state.

The file keeps the start policy the checkpoint records (amortized.policy.StartPolicy: the warm-up, its pruning
phase and the guard); the options below change single fields of it. SOURCE may also be an exported file
(to change its policy). DEST is written atomically; an existing DEST is replaced only with --overwrite.

Examples:
  cartoonx export runs/initializer/csv/version_0/checkpoints/last.ckpt my.pt
  cartoonx export my.pt my-unguarded.pt --guard-keep 0
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from amortized.policy import StartPolicy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, metavar="SOURCE", help="training checkpoint (.ckpt) or exported file")
    parser.add_argument("dest", type=Path, metavar="DEST", help="the initializer file to write (.pt)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DEST")
    add_policy_arguments(parser)


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that change single fields of a learned start's policy (default: what the checkpoint records);
    :func:`configured_policy` applies them."""
    add = parser.add_argument
    add("--guard-keep", type=float, metavar="P", help="the guard's threshold (0: no guard)")
    add("--guard-powers", type=_floats, metavar="P,...",
        help="lifts m**p on all but the finest level, tried before the blends, e.g. 0.5,0.3,0.2,0.12")
    add("--guard-shrinks", type=_floats, metavar="T,...", help="soft thresholds tried first, e.g. 0.2,0.1 ('': none)")
    add("--warmup-steps", type=int, metavar="N", help="warm-up steps after the start (0: none)")
    add("--prune-steps", type=int, metavar="N", help="pruning steps after the warm-up (0: none)")
    add("--prune-lam", type=float, metavar="X", help="the pruning phase's multiple of the preset's lambda")
    add("--warmup-samples", type=int, metavar="N", help="noisy copies per warm-up step")
    add("--warmup-lr", type=float, metavar="LR", help="warm-up learning rate")
    add("--no-barrier", action="store_true", help="warm up on the plain objective")


def configured_policy(args: argparse.Namespace, base: StartPolicy) -> StartPolicy:
    """``base`` with the warm-up and guard fields the options of :func:`add_policy_arguments` name replaced."""
    fields = {"steps": args.warmup_steps, "num_samples": args.warmup_samples, "lr": args.warmup_lr,
              "prune_steps": args.prune_steps, "prune_lam": args.prune_lam, "keep": args.guard_keep,
              "powers": args.guard_powers, "shrinks": args.guard_shrinks}
    changes = {k: v for k, v in fields.items() if v is not None}
    if args.no_barrier:
        changes["barrier"] = False
    return base.replace(**changes)


def run(args: argparse.Namespace) -> int:
    from amortized.checkpoint import export_checkpoint, read_initializer
    from amortized.policy import StartPolicy
    from rde.io import OutputDirError, check_output_dir

    if args.dest.is_dir():
        raise OutputDirError(f"{args.dest}: is a folder; give the file to write")
    if args.dest.exists() and not args.overwrite:
        raise OutputDirError(f"{args.dest}: exists; pass --overwrite to replace it, or choose another DEST")
    check_output_dir(args.dest.parent)
    recorded = StartPolicy.from_dict(read_initializer(args.source))  # a missing or foreign SOURCE: one line
    policy = configured_policy(args, recorded)
    partial = args.dest.with_name(f".{args.dest.name}.tmp")
    try:  # SOURCE may be DEST: it is replaced only once the new file is complete
        export_checkpoint(args.source, partial, policy=policy)
        os.replace(partial, args.dest)
    finally:
        partial.unlink(missing_ok=True)
    payload = read_initializer(args.dest)
    written = StartPolicy.from_dict(payload)
    how = f"as {args.source} records it" if written == recorded else f"changed from {args.source}'s"
    print(f"wrote {args.dest} ({args.dest.stat().st_size / 1024:.0f} KiB, {payload['classifier']}, preset "
          f"{payload['preset']['name']}); start policy {how}: {written.warmup}, {written.guard}")
    return 0


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
