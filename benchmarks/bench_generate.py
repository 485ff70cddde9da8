"""Throughput of ``cartoonx generate`` (images/hour) and its ratio to the classifier floor.

For each batch size B the real generation path (Lightning predict loop, shard writer, gzip) runs on
real photos at two reduced step counts; the per-image time is fitted as ``fixed + steps * per_step``
and extrapolated to the preset's steps (300 for ``cpu``). The floor is N bare forward+backward passes
of the classifier on B*L images (gradients w.r.t. the input only), divided by B, measured in the same
process between the generation runs.

    nice python benchmarks/bench_generate.py                          # cpu preset, efficientnet_lite0, B=1 4 8
    python benchmarks/bench_generate.py --device gpu --batches 8 32 64
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `cartoonx generate` does, before torch is imported

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from amortized.generate import generate_targets
from rde import create_classifier, load_preset

REPO = Path(__file__).resolve().parent.parent


def time_floor(clf, batch: int, samples: int, size: int, device: torch.device, repeats: int) -> float:
    """Median seconds of one forward+backward of the classifier on B*L random images."""
    x = torch.rand(batch * samples, 3, size, size, device=device)
    out = []
    for _ in range(repeats):
        inp = x.clone().requires_grad_(True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        clf(inp).softmax(-1)[:, 0].square().sum().backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def time_generate(listing: Path, model: str, preset: str, batch: int, steps: int, accelerator: str) -> float:
    """Seconds per image of a fresh generation run (predict loop only: model loading excluded)."""
    with tempfile.TemporaryDirectory() as out:
        s = generate_targets(listing, Path(out) / "shards", classifier=model, preset=preset, steps=steps,
                             batch_size=batch, shard_size=8, accelerator=accelerator, show_progress=False)
    if s.failed or not s.done:
        raise RuntimeError(f"benchmark run failed: {s}")
    return s.seconds / s.done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "imagenet-sample")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--steps", type=int, nargs=2, default=[2, 10], help="the two reduced step counts timed")
    p.add_argument("--images-per-batch-size", type=int, default=8, help="photos per run (at least B)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="gpu" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)

    cfg = load_preset(args.preset)
    device = torch.device("cuda" if args.device == "gpu" else "cpu")
    clf = create_classifier(args.model, device=device)
    photos = sorted(args.images.glob("*.JPEG"))
    if not photos:
        raise SystemExit(f"no *.JPEG photos in {args.images}")
    lo, hi = args.steps
    print(f"{args.model} on {device} ({torch.get_num_threads()} threads), preset {cfg.name}: {cfg.image_size} px, "
          f"L={cfg.num_samples}, N={cfg.steps}; timed at {lo} and {hi} steps, extrapolated to {cfg.steps}")
    print(f"{'B':>3} {'s/img@' + str(lo):>9} {'s/img@' + str(hi):>10} {'s/step/img':>11} {'fixed s/img':>12} "
          f"{'s/img@' + str(cfg.steps):>10} {'img/hour':>9} {'floor s/img':>12} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batches:
            n = max(batch, args.images_per_batch_size // batch * batch)
            listing = Path(tmp) / f"b{batch}.txt"
            listing.write_text("\n".join(str(x) for x in photos[:n]))
            time_floor(clf, batch, cfg.num_samples, cfg.image_size, device, 1)  # warm-up
            floor_a = time_floor(clf, batch, cfg.num_samples, cfg.image_size, device, 3)
            t_lo = time_generate(listing, args.model, args.preset, batch, lo, args.device)
            t_hi = time_generate(listing, args.model, args.preset, batch, hi, args.device)
            floor_b = time_floor(clf, batch, cfg.num_samples, cfg.image_size, device, 3)
            per_step = (t_hi - t_lo) / (hi - lo)
            fixed = max(0.0, t_lo - lo * per_step)
            full = fixed + cfg.steps * per_step
            floor = cfg.steps * statistics.mean([floor_a, floor_b]) / batch
            print(f"{batch:>3} {t_lo:>9.2f} {t_hi:>10.2f} {per_step:>11.3f} {fixed:>12.2f} {full:>10.0f} "
                  f"{3600 / full:>9.1f} {floor:>12.0f} {full / floor:>6.2f}")


if __name__ == "__main__":
    main()
