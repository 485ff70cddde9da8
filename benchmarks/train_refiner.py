"""Train the learned start's second stage (:class:`amortized.refiner.Refiner`) on collected warm-up signals, and
export an initializer checkpoint that includes it.

Reads the records of ``benchmarks/collect_warmup_signals.py`` (``--data``: train chunks to train on, val chunks to
report on), trains with the risk-averse per-scale loss against the exact targets, prints the supervised loss and
the per-level mean absolute error on the val records for the start itself and for its correction, and saves the
network (``--out``: a refiner entry, :func:`amortized.checkpoint.refiner_entry`).

    python benchmarks/train_refiner.py --data outputs/warmup-signals --out outputs/refiner/all.pt
    python benchmarks/train_refiner.py --data outputs/warmup-signals --out outputs/refiner/no-moments.pt \\
        --inputs trajectory,gradients,level,magnitude                       # an ablation
    python benchmarks/train_refiner.py --export outputs/refiner/all.pt --to outputs/initializer-refiner.pt
        # the bundled initializer (or --base CHECKPOINT) with the refiner, used as in --mode (default select)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from amortized.checkpoint import export_checkpoint, read_initializer, refiner_entry
from amortized.initializer import bundled_checkpoint
from amortized.losses import per_scale_abs_error, risk_averse_mask_loss
from amortized.refiner import INPUT_GROUPS, SELECT_MODES, Refiner, fit_refiner, refiner_features
from collect_warmup_signals import as_signals, load_records
from rde.layout import MaskLayout
from rde.presets import load_preset


def features_of(records: list[dict], layout: MaskLayout, inputs: tuple[str, ...]) -> tuple[list, list]:
    """Per-photo features ``(F, k)`` and exact targets ``(k,)``."""
    feats, targets = [], []
    for i in range(0, len(records), 16):
        signals, magnitude, exact = as_signals(records[i : i + 16])
        feats += list(refiner_features(signals, magnitude, layout, inputs).unbind(0))
        targets += list(exact.unbind(0))
    return feats, targets


@torch.no_grad()
def report(refiner: Refiner, feats: list, targets: list, layout: MaskLayout) -> dict:
    """Supervised loss and per-level MAE of the start (feature channel 0) and of the refiner's correction."""
    x, y = torch.stack(feats), torch.stack(targets)
    out = {}
    for name, pred in (("start", x[:, 0]), ("refined", refiner(x, layout))):
        loss = float(risk_averse_mask_loss(pred, y, layout)[0])
        mae = {k: round(float(v), 4) for k, v in per_scale_abs_error(pred, y, layout).items()}
        out[name] = {"loss": round(loss, 4), "mae": mae}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("outputs/warmup-signals"))
    p.add_argument("--out", type=Path, default=Path("outputs/refiner/all.pt"))
    p.add_argument("--inputs", default=",".join(INPUT_GROUPS), help="input groups (default: all: %(default)s)")
    p.add_argument("--limit", type=int, help="train on the first N train records only")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--raise-only", action="store_true", help="correct only upward (Refiner raise_only)")
    p.add_argument("--under-weight", type=float, default=4.0,
                   help="the loss's cost of missing a needed coefficient over keeping a spare one (1: MSE)")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--export", type=Path, help="a refiner file written by this script: export a checkpoint with it")
    p.add_argument("--to", type=Path, help="with --export: the checkpoint to write")
    p.add_argument("--base", type=Path, help="with --export: the initializer to add it to (default: the bundled one)")
    p.add_argument("--mode", choices=SELECT_MODES, default="select")
    p.add_argument("--samples", type=int, default=16, help="with --export: noisy copies of the selection's check")
    args = p.parse_args()

    if args.export:
        if args.to is None:
            p.error("--export needs --to")
        saved = torch.load(args.export, weights_only=True)
        base = args.base or bundled_checkpoint("efficientnet_lite0", "cpu")
        read_initializer(base)  # refuse a bad base before writing anything
        entry = refiner_entry(saved["config"], saved["state_dict"], args.mode, args.samples, saved.get("training"))
        print(export_checkpoint(base, args.to, refiner=entry))
        return

    torch.manual_seed(0)
    preset = load_preset(args.preset)
    layout = MaskLayout.for_wavelet(preset.image_size, preset.image_size, preset.wavelet)
    inputs = tuple(i for i in args.inputs.split(",") if i)
    train = load_records(args.data, "train")[: args.limit]
    val = load_records(args.data, "val")
    print(f"{len(train)} train and {len(val)} val photos; inputs {inputs}", flush=True)
    began = time.perf_counter()
    train_x, train_y = features_of(train, layout, inputs)
    val_x, val_y = features_of(val, layout, inputs)
    refiner = Refiner(inputs, num_scales=len(layout.scales), width=args.width, depth=args.depth,
                      raise_only=args.raise_only)
    history = fit_refiner(refiner, train_x, train_y, layout, epochs=args.epochs, lr=args.lr,
                          under_weight=args.under_weight, log=print)
    metrics = report(refiner, val_x, val_y, layout) if val else {}
    print(f"trained in {time.perf_counter() - began:.0f} s; val: {metrics}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    training = {"photos": len(train), "keys": [r["key"] for r in train], "epochs": args.epochs, "lr": args.lr,
                "under_weight": args.under_weight, "inputs": list(inputs),
                "train_loss": history, "val": metrics}
    torch.save({"config": refiner.config, "state_dict": refiner.state_dict(), "training": training}, args.out)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
