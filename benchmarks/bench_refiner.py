"""The fast metric of the second stage, from collected warm-up signals: the shipped start, the start corrected by a
refiner always, and the start with the refiner's selection by the objective, on the same val photos.

Reads the val records of ``benchmarks/collect_warmup_signals.py`` (the shipped start's probe, prediction, warm-up
and pruning, bit for bit what :class:`~amortized.initializer.LearnedStart` computes with the same seed), so the
warm-up is not run again. Per photo it guards and refines (``--steps``, default 30) two starts: (a) the warmed-up
start, (b) the refiner's correction of it; (c) keeps per photo the one with the lower RDE objective at step 0 (16
noisy copies, charged), whose refinement is then (a)'s or (b)'s: the same mask, guard and seed give the same run.
Prints, per start, the median of loss@steps over the exact target's final loss, the collapses and the median start
cost in preset steps (the probe, warm-up, pruning, selection checks and guard checks).

    python benchmarks/bench_refiner.py --refiner outputs/refiner/all.pt --limit 24
    python benchmarks/bench_refiner.py --refiner outputs/refiner/all.pt outputs/refiner/no-moments.pt \\
        --offset 24 --limit 24 --screen         # step-0 objective and per-level error only (no refinement)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import rde
from amortized.initializer import LearnedStart
from amortized.losses import per_scale_abs_error
from amortized.refiner import Refiner
from amortized.shards import DEFAULT_SHARD_DIR
from bench_fast_init import refine_from, val_samples
from collect_warmup_signals import as_signals, load_records
from rde.start import Start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--refiner", type=Path, nargs="+", required=True)
    p.add_argument("--data", type=Path, default=Path("outputs/warmup-signals"))
    p.add_argument("--shards", type=Path, default=Path(DEFAULT_SHARD_DIR))
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--samples", type=int, default=16, help="noisy copies of the selection's objective check")
    p.add_argument("--screen", action="store_true", help="step-0 objective and per-level error only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="append the result as one JSON line")
    args = p.parse_args()

    explainer = rde.CartoonX(rde.create_classifier("efficientnet_lite0"), "cpu")
    start_fn = LearnedStart.for_explainer(explainer, seed=args.seed)
    start_fn.refiner_samples = args.samples
    samples = {s["key"]: s for s in val_samples(args.shards, args.limit, "val", args.offset)}
    records = [r for r in load_records(args.data, "val") if r["key"] in samples]
    missing = sorted(set(samples) - {r["key"] for r in records})
    if missing:
        print(f"no signals collected for {len(missing)} photos (skipped): {missing}")
    refiners = {path.stem: Refiner.from_saved(torch.load(path, weights_only=True)) for path in args.refiner}
    layout = explainer.representation(128, 128, torch.device("cpu")).layout
    began = time.perf_counter()
    rows: list[dict] = []
    for r in records:
        x = samples[r["key"]]["image"][None]
        target = torch.tensor([r["target"]])
        probs = torch.tensor([r["target_prob"]])
        signals, magnitude, exact = as_signals([r])
        start = Start(signals.pruned_mask, torch.tensor([r["cost"]], dtype=torch.float64), torch.tensor([r["pruned"]]),
                      torch.zeros(1, dtype=torch.long))
        row = {"key": r["key"], "final_loss": r["final_loss"]}

        def refine(name: str, candidate: Start) -> None:
            guarded = start_fn.guarded(x, target, probs, candidate)
            run = refine_from(explainer, samples[r["key"]], guarded, args.steps, args.seed)
            row[name] = {"ratio": run["ratio"], "cost": float(guarded.cost[0]), "collapsed": run["collapsed"],
                         "backoffs": int(guarded.backoffs[0])}

        if not args.screen:
            refine("start", start)
        for name, refiner in refiners.items():
            start_fn.refiner = refiner
            start_fn.refine = "always"
            always = start_fn.corrected(x, target, start, signals, magnitude)[0]
            start_fn.refine = "select"
            chosen, took = start_fn.corrected(x, target, start, signals, magnitude)
            with torch.no_grad():
                losses = [float(explainer.objective(x, m, target, args.samples, seed=args.seed)["loss"][0])
                          for m in (start.mask, always.mask)]
            mae = lambda m: {k: round(float(v), 4) for k, v in per_scale_abs_error(m, exact, layout).items()}  # noqa: E731
            row[f"{name}:screen"] = {"objective_start": losses[0], "objective_refined": losses[1],
                                     "took": bool(took[0]), "mae_start": mae(start.mask), "mae_refined": mae(always.mask)}
            if not args.screen:
                refine(f"{name}:always", always)
                picked = row[f"{name}:always"] if bool(took[0]) else row["start"]
                guard_cost = picked["cost"] - r["cost"]  # the guard's checks of the picked mask
                row[f"{name}:select"] = {**picked, "cost": float(chosen.cost[0]) + guard_cost, "took": bool(took[0])}
        rows.append(row)
        print(json.dumps(row), flush=True)

    summary = {"photos": len(rows), "offset": args.offset, "steps": args.steps, "keys": [r["key"] for r in rows],
               "seconds": round(time.perf_counter() - began)}
    names = ([] if args.screen else ["start"]) + [f"{n}:{m}" for n in refiners for m in ("always", "select")
                                                  if not args.screen]
    for name in names:
        summary[name] = {"median_ratio": statistics.median(r[name]["ratio"] for r in rows),
                         "collapsed": sum(r[name]["collapsed"] for r in rows),
                         "median_cost": statistics.median(r[name]["cost"] for r in rows)}
    for n in refiners:
        screen = [r[f"{n}:screen"] for r in rows]
        summary[f"{n}:screen"] = {
            "median_objective_ratio": statistics.median(s["objective_refined"] / s["objective_start"] for s in screen),
            "refined_lower": sum(s["objective_refined"] < s["objective_start"] for s in screen),
            "mean_mae_start": {k: round(statistics.mean(s["mae_start"][k] for s in screen), 4) for k in screen[0]["mae_start"]},
            "mean_mae_refined": {k: round(statistics.mean(s["mae_refined"][k] for s in screen), 4)
                                 for k in screen[0]["mae_refined"]},
        }
    print(json.dumps(summary, indent=1))
    if args.json:
        with args.json.open("a") as f:
            f.write(json.dumps({"summary": summary, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
