"""The fast iteration metric for initializers: loss after a short refinement over the exact target's final loss.

A full comparison needs an all-ones run of N steps per photo; this needs only S (default 30) steps from the
start, because the reference comes from the shards: each val-split sample holds its exact target's final loss
(an all-ones optimum with other noise). A ratio near 1 at S=30 is what a 10x start looks like: the exact
target itself, used as the start, gives about 0.96. Prints the median ratio over the photos, the loss at
steps 1 and 10, how many refinements lost the class, the start's cost in optimizer steps and the guard's
back-offs.

    python benchmarks/bench_fast_init.py --limit 24                                # the bundled initializer
    python benchmarks/bench_fast_init.py --limit 24 --checkpoint runs/initializer/checkpoints/last.ckpt --guard-keep 0
    python benchmarks/bench_fast_init.py --limit 24 --guard-powers 0.5,0.3,0.2,0.12     # a guard variant
    python benchmarks/bench_fast_init.py --limit 24 --start target                 # the ceiling: the exact targets
    python benchmarks/bench_fast_init.py --limit 24 --guard-keep 0.5 --warmup-steps 0  # the guarded start, no warm-up
    python benchmarks/bench_fast_init.py --limit 24 --prune-steps 0 --guard-shrinks ''  # warm-up, no pruning (format 3)
    python benchmarks/bench_fast_init.py --limit 24 --start ones --warmup-steps 80 --no-barrier  # a warm-up from ones
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's packages, not an installed one

import rde
from amortized import shards as S
from amortized.commands.export import add_policy_arguments, configured_policy
from amortized.initializer import LearnedStart
from amortized.policy import StartPolicy
from rde.metrics import collapsed, loss_at
from rde.warmup import Warmup, WarmStart


def val_samples(shard_dir: Path, limit: int | None, split: str = "val", offset: int = 0) -> list[dict]:
    """``limit`` samples of a split after the first ``offset``, by key: image (3, H, W) in [0, 1], target mask,
    final loss."""
    from amortized.datasets import in_split

    index = S.open_shard_dir(shard_dir)
    rows = [s for path, _ in index.shards for s in S.read_samples(path) if in_split(s["key"], split)]
    rows.sort(key=lambda s: s["key"])
    return [
        {"key": s["key"], "image": torch.from_numpy(s["image"]).permute(2, 0, 1).float() / 255,
         "mask": torch.from_numpy(s["mask"].astype("float32")), "target": s["meta"]["target"],
         "final_loss": float(s["meta"]["final"]["loss"])}
        for s in rows[offset:][:limit]
    ]


def refine_from(explainer: rde.CartoonX, sample: dict, init, steps: int, seed: int = 0) -> dict:
    """Refine one photo of :func:`val_samples` from ``init`` for ``steps`` exact steps: ``ratio``, the fast metric
    (its loss at ``steps`` over the exact target's final loss), the loss at steps 1 and 10, and ``collapsed``
    (the refinement lost the class)."""
    device = explainer.classifier.mean.device
    x, target = sample["image"][None].to(device), torch.tensor([sample["target"]], device=device)
    res = explainer.explain(x, target=target, init=init, steps=steps, seed=seed)
    at = loss_at(res.history["loss"], [1, 10, steps])
    return {"ratio": float(at[steps][0]) / sample["final_loss"], "loss_1": float(at[1][0]), "loss_10": float(at[10][0]),
            "collapsed": bool(collapsed(res.history["distortion"], res.target_probs)[0])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", type=Path, default=Path(S.DEFAULT_SHARD_DIR))
    p.add_argument("--limit", type=int, default=24, help="first N photos of the split (default: %(default)s)")
    p.add_argument("--offset", type=int, default=0, help="skip the first photos of the split (e.g. to screen on "
                   "photos other than the ones the full comparison reports)")
    p.add_argument("--split", default="val")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--start", choices=("learned", "target", "ones"), default="learned")
    p.add_argument("--checkpoint", type=Path, help="initializer (default: the bundled one)")
    add_policy_arguments(p)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="default: %(default)s")
    p.add_argument("--json", type=Path, help="append the result as one JSON line to this file")
    args = p.parse_args()

    device = torch.device(args.device)
    explainer = rde.CartoonX(rde.create_classifier(args.model, device=device), args.preset)
    samples = val_samples(args.shards, args.limit, args.split, args.offset)
    cost = torch.zeros(len(samples))
    backoffs = None
    ratios, loss1, loss10, lost = [], [], [], 0
    start_time = time.perf_counter()
    policy, start_fn = None, None
    if args.start == "learned":
        start_fn = LearnedStart.for_explainer(explainer, args.checkpoint, seed=args.seed)
        start_fn.policy = policy = configured_policy(args, start_fn.policy)
        backoffs = []
    elif args.start == "ones" and args.warmup_steps:
        policy = configured_policy(args, StartPolicy())
        start_fn = WarmStart(explainer, policy.warmup, seed=args.seed)
    for i, s in enumerate(samples):  # one photo at a time: batching does not pay on a CPU
        x = s["image"][None].to(device)
        target = torch.tensor([s["target"]], device=device)
        if start_fn is not None:
            init = start_fn(x, target)
            cost[i] = init.cost[0]
            if backoffs is not None:
                backoffs.append(int(init.backoffs[0]))
        else:
            init = s["mask"][None].to(device) if args.start == "target" else "ones"
        run = refine_from(explainer, s, init, args.steps, args.seed)
        ratios.append(run["ratio"])
        loss1.append(run["loss_1"])
        loss10.append(run["loss_10"])
        lost += int(run["collapsed"])
    result = {
        "start": args.start, "checkpoint": str(args.checkpoint or "bundled"), "guard": None if args.start != "learned" else dataclasses.asdict(policy.guard),
        "warmup": dataclasses.asdict(policy.warmup if policy else Warmup(steps=0)),
        "photos": len(samples), "offset": args.offset, "steps": args.steps, "median_ratio": statistics.median(ratios),
        "median_loss_1": statistics.median(loss1), "median_loss_10": statistics.median(loss10), "collapsed": lost,
        "median_start_cost_steps": float(cost.median()), "backoffs": backoffs,
        "seconds": time.perf_counter() - start_time, "ratios": {s["key"]: round(r, 3) for s, r in zip(samples, ratios)},
    }
    print(f"{len(samples)} {args.split} photos, start {args.start}, S={args.steps}: median loss@{args.steps} / exact target's "
          f"final loss {result['median_ratio']:.3f}; loss@1 {result['median_loss_1']:.3f}, loss@10 {result['median_loss_10']:.3f}; "
          f"collapsed {lost}/{len(samples)}; start cost {result['median_start_cost_steps']:.2f} steps"
          + (f"; guard back-offs {backoffs}" if backoffs is not None else "") + f"; warm-up {result['warmup']}")
    if args.json:
        with args.json.open("a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
