"""Parity of a mixed precision (default bf16-mixed) against 32-true on sample photos, with identical seeds.

Every photo is optimized twice at the preset (default: cpu), same init (ones), same per-photo seed, same batch.
Reports, over photos:

* the median ratio of final losses (moving average of the last 10 steps), mixed / 32-true;
* collapsed runs (the class lost: :func:`rde.metrics.collapsed`) under each precision;
* per scale of the mask layout, the mean absolute difference of the final masks.

The issue's bar for making bf16-mixed the CUDA default: median ratio within [0.95, 1.05] and no more collapsed
runs than 32-true. The verdict line says PASS or FAIL against it.

    python benchmarks/bench_precision_parity.py --device cuda --limit 16            # the check
    python benchmarks/bench_precision_parity.py --device cpu --limit 2 --steps 3 --preset tiny   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's rde, not an installed one

import torch  # noqa: E402

from rde import CartoonX, create_classifier, load_preset  # noqa: E402
from rde.io import load_image, preprocess  # noqa: E402
from rde.metrics import collapsed, moving_average  # noqa: E402

SUFFIXES = {".jpeg", ".jpg", ".png"}
DEFAULT_IMAGES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "imagenet-sample"
RATIO_RANGE = (0.95, 1.05)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    cfg = load_preset(args.preset)
    paths = sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in SUFFIXES)[: args.limit]
    if not paths:
        raise SystemExit(f"bench_precision_parity: no .jpeg/.jpg/.png images in {args.images}")
    images = torch.stack([preprocess(load_image(p), cfg.image_size) for p in paths])
    seeds = [args.seed + i for i in range(len(paths))]
    clf = create_classifier(args.model, device=device)
    results = {}
    for precision in ("32-true", args.precision):
        explainer = CartoonX(clf, cfg, precision=precision)
        parts = [
            explainer.explain(images[b : b + args.batch].to(device), seed=seeds[b : b + args.batch], steps=args.steps)
            for b in range(0, len(paths), args.batch)
        ]
        results[precision] = {
            "mask": torch.cat([r.mask.cpu() for r in parts]),
            "loss": torch.cat([r.history["loss"] for r in parts]),
            "distortion": torch.cat([r.history["distortion"] for r in parts]),
            "target_probs": torch.cat([r.target_probs.cpu() for r in parts]),
            "targets": torch.cat([r.targets.cpu() for r in parts]),
            "layout": parts[0].layout,
        }
    ref, mixed = results["32-true"], results[args.precision]
    final = {k: moving_average(v["loss"], 10)[:, -1] for k, v in results.items()}
    ratios = (final[args.precision] / final["32-true"]).tolist()
    coll = {k: int(collapsed(v["distortion"], v["target_probs"]).sum()) for k, v in results.items()}
    layout = ref["layout"]
    per_scale = {
        s.name: float((mixed["mask"][:, layout.scale_slice(i)] - ref["mask"][:, layout.scale_slice(i)]).abs().mean())
        for i, s in enumerate(layout.scales)
    }
    median = statistics.median(ratios)
    passed = RATIO_RANGE[0] <= median <= RATIO_RANGE[1] and coll[args.precision] <= coll["32-true"]
    return {
        "precision": args.precision, "device": str(device), "model": args.model, "preset": cfg.name,
        "steps": args.steps if args.steps is not None else cfg.steps, "photos": [p.name for p in paths],
        "same_targets": bool(torch.equal(ref["targets"], mixed["targets"])),
        "final_loss_32": final["32-true"].tolist(), "final_loss_mixed": final[args.precision].tolist(),
        "loss_ratios": ratios, "median_ratio": median, "collapsed": coll, "mask_mad_per_scale": per_scale,
        "mask_mad": float((mixed["mask"] - ref["mask"]).abs().mean()), "pass": passed,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of photos (default: ../shared sample)")
    p.add_argument("--limit", type=int, default=16, help="photos, first in name order (default: 16)")
    p.add_argument("--steps", type=int, help="Adam steps (default: the preset's)")
    p.add_argument("--batch", type=int, default=16, help="photos per explain call (default: 16)")
    p.add_argument("--precision", default="bf16-mixed", help="compared against 32-true (default: bf16-mixed)")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--seed", type=int, default=0, help="photo i uses seed + i under both precisions")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = p.parse_args(argv)
    report = run(args)
    n = len(report["photos"])
    print(f"parity {report['precision']} vs 32-true: {n} photos, {report['model']}, preset {report['preset']}, "
          f"{report['steps']} steps, {report['device']}; same explained classes: {report['same_targets']}")
    print(f"  final loss ratio (mixed / 32-true, MA10): median {report['median_ratio']:.4f}, "
          f"range [{min(report['loss_ratios']):.4f}, {max(report['loss_ratios']):.4f}]")
    print(f"  collapsed: 32-true {report['collapsed']['32-true']}, {report['precision']} "
          f"{report['collapsed'][report['precision']]} of {n}")
    print("  mask mean |difference| per scale: "
          + ", ".join(f"{k} {v:.4f}" for k, v in report["mask_mad_per_scale"].items())
          + f"; all {report['mask_mad']:.4f}")
    print(f"  verdict: {'PASS' if report['pass'] else 'FAIL'} (median ratio in {list(RATIO_RANGE)}, "
          f"no more collapsed runs than 32-true)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
