"""Collect what the learned start's warm-up saw, per photo, to train and screen a second stage on.

For each photo of a split (sorted by key, ``--offset`` / ``--limit``), runs the start's probe, the network's
prediction and the warm-up with its pruning phase (no guard: the second stage acts before it), and saves one
record per photo (:func:`record`): the masks before, after the warm-up and after pruning, both phases' Adam
moments and gradient statistics, the image's greyscale coefficient magnitudes, the exact target mask, the target
class, its probability, the exact target's final loss and the start's cost in preset steps.

Records go into one ``.pt`` file per chunk of ``--chunk`` photos, rewritten (atomically) after every photo, so a
stopped run resumes where it was: photos already in a chunk are skipped. A photo that fails is named on stderr
and skipped; the others still complete.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/collect_warmup_signals.py --split train --limit 300 \\
        --out outputs/warmup-signals
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/collect_warmup_signals.py --split val --limit 48 \\
        --out outputs/warmup-signals
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

import torch
from torch import Tensor

import rde
from amortized.initializer import LearnedStart
from amortized.shards import DEFAULT_SHARD_DIR
from bench_fast_init import val_samples
from rde.explanation import SIGNAL_KEYS
from rde.start import steps_of_passes
from rde.warmup import WarmupSignals


def record(start_fn: LearnedStart, sample: dict) -> dict:
    """The warm-up signals of one shard sample (``val_samples``' dict) as plain CPU tensors."""
    x = sample["image"][None]
    inputs, start, seen = start_fn.warmed(x, torch.tensor([sample["target"]]), signals=True)
    cost = start.cost + steps_of_passes(1, start_fn.preset.num_samples)  # the probe
    out = {
        "key": sample["key"], "target": int(sample["target"]), "target_prob": float(seen.target_probs[0]),
        "final_loss": sample["final_loss"], "cost": float(cost[0]), "pruned": bool(start.pruned[0]),
        "exact": sample["mask"].float(), "magnitude": inputs.magnitude[0].float().cpu(),
        "before": seen.before[0].cpu(), "warmed": seen.warmed[0].cpu(), "pruned_mask": seen.pruned_mask[0].cpu(),
    }
    for phase in ("warmup", "prune"):
        for k in SIGNAL_KEYS:
            out[f"{phase}_{k}"] = getattr(seen, phase)[k][0].float().cpu()
    return out


def load_records(folder: Path, split: str | None = None) -> list[dict]:
    """Every record saved under ``folder`` (of ``split``'s chunks only, where given), sorted by key."""
    pattern = f"{split}-*.pt" if split else "*.pt"
    rows = [r for path in sorted(folder.glob(pattern)) for r in torch.load(path, weights_only=True).values()]
    return sorted(rows, key=lambda r: r["key"])


def as_signals(records: list[dict]) -> tuple[WarmupSignals, Tensor, Tensor]:
    """A batch of records as the warm-up's :class:`~rde.warmup.WarmupSignals`, the coefficient magnitudes
    ``(B, k)`` and the exact target masks ``(B, k)``."""
    stack = lambda name: torch.stack([r[name] for r in records])  # noqa: E731
    signals = WarmupSignals(
        before=stack("before"), warmed=stack("warmed"), pruned_mask=stack("pruned_mask"),
        warmup={k: stack(f"warmup_{k}") for k in SIGNAL_KEYS}, prune={k: stack(f"prune_{k}") for k in SIGNAL_KEYS},
        target_probs=torch.tensor([r["target_prob"] for r in records]),
        targets=torch.tensor([r["target"] for r in records]),
    )
    return signals, stack("magnitude"), stack("exact")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, default=Path(DEFAULT_SHARD_DIR))
    p.add_argument("--split", default="train")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=300)
    p.add_argument("--chunk", type=int, default=16, help="photos per file (default: %(default)s)")
    p.add_argument("--checkpoint", type=Path, help="initializer (default: the bundled one)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/warmup-signals"))
    args = p.parse_args()

    explainer = rde.CartoonX(rde.create_classifier(args.model), args.preset)
    start_fn = LearnedStart.for_explainer(explainer, args.checkpoint, seed=args.seed)
    samples = val_samples(args.shards, args.limit, args.split, args.offset)
    args.out.mkdir(parents=True, exist_ok=True)
    done = failed = 0
    for first in range(0, len(samples), args.chunk):
        # a chunk is named by its first photo's position in the split: a rerun (or one with a larger --limit)
        # resumes the same files
        path = args.out / f"{args.split}-{args.offset + first:04d}.pt"
        chunk = torch.load(path, weights_only=True) if path.exists() else {}
        for sample in samples[first : first + args.chunk]:
            if sample["key"] in chunk:
                continue
            began = time.perf_counter()
            try:
                chunk[sample["key"]] = record(start_fn, sample)
            except Exception as e:  # noqa: BLE001 - one bad photo never stops the collection
                failed += 1
                print(f"{sample['key']}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
                continue
            tmp = path.with_suffix(".pt.tmp")
            torch.save(chunk, tmp)
            os.replace(tmp, path)
            done += 1
            print(f"{path.name} {sample['key']}: {time.perf_counter() - began:.1f} s, cost "
                  f"{chunk[sample['key']]['cost']:.2f} steps", flush=True)
    print(f"collected {done} photos, {failed} failed, {len(samples) - done - failed} already there", flush=True)


if __name__ == "__main__":
    main()
