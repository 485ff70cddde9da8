"""Learned init vs all-ones on images the initializer never trained on (the val hash split).

Prints the median and quartiles of steps-to-reach and speedup (N / steps-to-reach), the median
wall-time speedup (network forward included), the zero-step loss ratio (the predicted mask's loss
at step 0 over the ones run's final 10-step-average loss at N), and the final distortion and
sparsity of both inits.

    python benchmarks/bench_learned_init.py --limit 8                 # cpu preset, N=300, bundled initializer
    python benchmarks/bench_learned_init.py --checkpoint runs/.../best.ckpt --steps 300 --out outputs/bench-learned
    python benchmarks/bench_learned_init.py --limit 24 --start target --out outputs/bench-oracle  # the ceiling

``--start target`` starts from each photo's exact target in the shards (an all-ones optimum with other
noise, free of charge): the oracle row that shows how fast any start can be.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import rde
from amortized import shards as S
from amortized.commands.export import add_policy_arguments, configured_policy
from amortized.comparison import (
    PartialComparison, compare_inits, comparison_settings, ones_run, plot_comparison, wall_speedup,
)
from amortized.datasets import list_images
from amortized.initializer import LearnedStart
from bench_fast_init import val_samples
from rde.io import load_image, preprocess
from rde.metrics import reference_level


def quartiles(values: list[float], reached: list[bool]) -> str:
    """Nearest-rank quartiles (no interpolation, so 'never' = inf stays inf)."""
    q = np.quantile(values, [0.25, 0.5, 0.75], method="nearest") if values else [math.nan] * 3
    fmt = lambda v: "never" if math.isinf(v) else f"{v:.1f}"  # noqa: E731
    return f"median {fmt(q[1])} (q25 {fmt(q[0])}, q75 {fmt(q[2])}; {sum(reached)}/{len(values)} reached)"


def cached_ones(explainer: rde.CartoonX, x: torch.Tensor, path: Path, steps: int, seed: int):
    """The image's all-ones run (seed ``seed``, ``steps`` steps), computed once and kept at ``path``."""
    if not path.exists():
        start = time.perf_counter()
        res = explainer.explain(x, init="ones", steps=steps, seed=seed)
        torch.save({"history": res.history, "target_probs": res.target_probs.cpu(), "seconds": time.perf_counter() - start},
                   path)
    saved = torch.load(path, weights_only=True)
    return ones_run(saved["history"], saved["target_probs"], saved["seconds"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", default="../shared/data/imagenet-sample")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--offset", type=int, default=0, help="skip the first photos of the split; --limit photos follow (to split a run over processes)")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--steps", type=int, help="N (default: the preset's)")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--start", choices=("learned", "target"), default="learned",
                   help="target: each photo's exact target from --shards, at no cost (the oracle)")
    p.add_argument("--shards", type=Path, default=Path(S.DEFAULT_SHARD_DIR))
    add_policy_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("outputs/bench-learned-init"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--resume", action="store_true", help="keep the images already in OUT/comparison.json")
    p.add_argument("--merge", type=Path, nargs="*", default=[],
                   help="also keep the images of these earlier outputs (e.g. other --offset runs)")
    p.add_argument("--ones-cache", type=Path, help="reuse/save each image's all-ones run here (default: OUT/ones); "
                   "it does not depend on the initializer, so comparing another checkpoint costs half")
    args = p.parse_args()

    preset = rde.load_preset(args.preset)
    steps = args.steps or preset.steps
    device = torch.device(args.device)
    explainer = rde.CartoonX(rde.create_classifier(args.model, device=device), preset)
    ckpt = args.checkpoint or "bundled"
    items = list_images(args.images, args.split)[args.offset : args.offset + args.limit]
    earlier = [args.out] if args.resume else []
    if args.start == "learned":
        learned = LearnedStart.for_explainer(explainer, args.checkpoint, seed=args.seed)
        learned.policy = configured_policy(args, learned.policy)
        settings = {**comparison_settings(args.model, preset, args.seed, str(ckpt)),
                    **json.loads(json.dumps(learned.policy.to_dict()))}
        described = f"checkpoint {ckpt}, {learned.policy}"
    else:  # the oracle: no initializer is loaded
        targets = {s["key"]: s["mask"] for s in val_samples(args.shards, None, args.split)}
        settings = {**comparison_settings(args.model, preset, args.seed, None), "start": f"target from {args.shards}"}
        described = f"start: the exact targets in {args.shards}"
    partial = PartialComparison(args.out, steps, ["ones", args.start], settings, [*earlier, *args.merge])
    keys = [i.key for i in items]
    if args.start == "target" and (missing := [keys[i] for i in partial.todo(keys) if keys[i] not in targets]):
        p.error(f"no exact target in {args.shards} for {', '.join(missing)}")
    cache = args.ones_cache or args.out / "ones"
    cache.mkdir(parents=True, exist_ok=True)

    def compare(batch: list[int]):  # one image at a time: batching does not pay on a CPU
        item = items[batch[0]]
        x = preprocess(load_image(item.path), preset.image_size)[None].to(device)
        ones = cached_ones(explainer, x, cache / f"{item.key}-{preset.name}-n{steps}-s{args.seed}.pt", steps, args.seed)
        init = learned if args.start == "learned" else targets[item.key][None].to(device)
        return compare_inits(explainer, x, {args.start: init}, steps, [item.key], seed=args.seed,
                             rate_distortion=False, ones=ones)

    comp = partial.finish(keys, compare)
    comp.save(args.out)
    plot_comparison(comp, args.out)

    ones, lrn = comp.runs["ones"], comp.runs[args.start]
    n = len(comp.names)
    reach = lrn.steps_to_reach.tolist()
    speed = [r["speedup"] for r in comp.per_image_rows() if r["init"] == args.start]
    init_s = lrn.init_seconds / n
    wall = [wall_speedup(lrn, ones, steps, r) for r in reach]  # batch totals: per-image ratios are the same
    ref = reference_level(ones.history["loss"])
    zero = (lrn.history["loss"][:, 0] / ref).tolist()
    print(f"{n} {args.split} images, {args.model}, preset {preset.name}, N={steps}, {described}")
    print(f"start cost:               median {lrn.cost().median():.2f} steps (probe, guard checks and warm-up, charged to steps-to-reach)")
    hit = [math.isfinite(r) for r in reach]
    print(f"steps-to-reach ones@{steps}: {quartiles(reach, hit)}")
    print(f"speedup N/steps:          {quartiles(speed, hit)}")
    print(f"wall-time speedup:        median {statistics.median(wall):.1f}x (init {init_s * 1000:.0f} ms/image)")
    print(f"collapsed (class lost):   {args.start} {int(lrn.collapsed.sum())}/{n}, ones {int(ones.collapsed.sum())}/{n}")
    print(f"zero-step loss ratio:     median {statistics.median(zero):.2f} (predicted mask at step 0 / ones final)")
    for name, run in comp.runs.items():
        h = run.history
        print(f"final @N {name:>8}: loss {h['loss'][:, -10:].mean():.4f}  distortion {h['distortion'][:, -10:].mean():.4f}  "
              f"sparsity {h['sparsity'][:, -1].mean():.4f}")
    print(comp.format_table())


if __name__ == "__main__":
    main()
