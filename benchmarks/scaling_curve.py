"""The data-scaling curve of the image-to-mask initializer: train on the first n train targets, measure the start.

For each n, the bundled recipe (``cartoonx train --config cpu``) trains on the datamodule's ``train_limit`` subset
(the first n train targets in a fixed hash order; a smaller subset is part of a larger one) for the SAME number
of optimizer steps (default 440, what the recipe gives on all 708 targets: 10 epochs of 44 batches), so the
points differ in data, not in compute; the one-cycle schedule spans those steps. The last checkpoint is
exported with the shipped start policy (warm-up, pruning, guard: ``amortized.policy.StartPolicy()``), and its
start is measured on the first val photos as ``bench_fast_init.py`` does (30 refinement steps from the start,
the 10-step average loss over the exact target's final loss; seed 0), plus the per-level miss rate: of the exact
target's coefficients above 0.5 at wavelet level j, the fraction the start (after its guard) has below 0.5,
median over the photos that keep any at that level. Each finished n appends one JSON line to ``--jsonl``
and is skipped on a rerun; a failed n is logged and the next one runs. Finally it fits the fast metric against
n (a power law, and a power law plus floor) and draws the figure from the JSON lines.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/scaling_curve.py --out outputs/scaling
    python benchmarks/scaling_curve.py --out outputs/scaling --plot-only    # the fit and figure from the JSON lines
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's packages, not an installed one

ORACLE = 0.96  # the fast metric of the exact target used as the start (docs/initializer.md)
LEVELS = (1, 2, 3, 4, 5)


def _overlay(n: int, steps: int, run_dir: Path, shards: Path) -> dict:
    """What changes in the recipe for one point: the subset, a fixed step budget, one validation at the end,
    no refinement metric (measured here instead) and a CSV logger in ``run_dir``."""
    return {
        "trainer": {
            "max_steps": steps, "max_epochs": -1, "check_val_every_n_epoch": None, "val_check_interval": steps,
            "default_root_dir": str(run_dir),
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": str(run_dir), "name": "csv"}}],
        },
        "refinement": {"steps": 0},
        "data": {"init_args": {"train_limit": n, "shards": str(shards)}},
    }


def train(n: int, steps: int, run_dir: Path, shards: Path) -> tuple[Path, dict]:
    """Train the recipe on n targets for ``steps`` optimizer steps; the last checkpoint and the logged val metrics."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    overlay = run_dir / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(_overlay(n, steps, run_dir, shards)))
    cmd = [sys.executable, "-m", "amortized", "train", "--config", "cpu", "--config", str(overlay)]
    with (run_dir / "train.log").open("w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    found = sorted(run_dir.glob("csv/version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"{run_dir}: training wrote no last.ckpt (see {run_dir / 'train.log'})")
    metrics = sorted(run_dir.glob("csv/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    return found[-1], _last_val_metrics(metrics[-1]) if metrics else {}


def _last_val_metrics(path: Path) -> dict:
    import csv

    out: dict[str, float] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            out.update({k: float(v) for k, v in row.items() if v not in ("", None) and k.startswith("val/")})
    return out


def export(ckpt: Path, dest: Path) -> None:
    """The checkpoint as an initializer file with the shipped start policy (not whatever the run recorded)."""
    from amortized.checkpoint import export_checkpoint
    from amortized.policy import StartPolicy

    export_checkpoint(ckpt, dest, policy=StartPolicy())


def miss_rates(start: "torch.Tensor", target: "torch.Tensor", layout) -> dict[int, float]:
    """Per level: the fraction of the target's coefficients above 0.5 that the start has below 0.5 (NaN: none)."""
    out = {}
    for level in LEVELS:
        sl = layout.scale_slice(level)
        kept = target[sl] > 0.5
        out[level] = float((start[sl][kept] < 0.5).float().mean()) if kept.any() else math.nan
    return out


def measure(initializer: Path, shards: Path, photos: int, steps: int = 30, seed: int = 0) -> dict:
    """The fast metric of the learned start (shipped policy) on the first val photos, with the per-level miss rate."""
    import torch

    import rde
    from amortized import shards as S
    from amortized.initializer import LearnedStart
    from benchmarks.bench_fast_init import val_samples
    from rde.metrics import collapsed, loss_at

    explainer = rde.CartoonX(rde.create_classifier("efficientnet_lite0"), "cpu")
    layout = S.open_shard_dir(shards).layout()
    samples = val_samples(shards, photos)
    start_fn = LearnedStart.for_explainer(explainer, initializer, seed=seed)
    ratios, costs, lost, misses = {}, [], 0, []
    for s in samples:
        x, target = s["image"][None], torch.tensor([s["target"]])
        init = start_fn(x, target)
        res = explainer.explain(x, target=target, init=init, steps=steps, seed=seed)
        ratios[s["key"]] = float(loss_at(res.history["loss"], [steps])[steps][0]) / s["final_loss"]
        costs.append(float(init.cost[0]))
        lost += int(collapsed(res.history["distortion"], res.target_probs)[0])
        misses.append(miss_rates(init.mask[0].detach(), s["mask"], layout))
    per_level = {}
    for level in LEVELS:
        vals = [m[level] for m in misses if not math.isnan(m[level])]
        per_level[str(level)] = statistics.median(vals) if vals else None
    return {"photos": len(samples), "fast_metric": statistics.median(ratios.values()), "collapsed": lost,
            "median_start_cost_steps": statistics.median(costs), "miss_rate": per_level, "ratios": ratios}


def run_point(n: int, args: argparse.Namespace) -> dict:
    run_dir = args.out / f"n{n}"
    t0 = time.perf_counter()
    ckpt, val = train(n, args.steps, run_dir, args.shards)
    train_s = time.perf_counter() - t0
    import torch

    global_step = int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
    initializer = run_dir / f"initializer-n{n}.pt"
    export(ckpt, initializer)
    t1 = time.perf_counter()
    result = measure(initializer, args.shards, args.photos)
    return {"n": n, "optimizer_steps": global_step, "step_budget": args.steps, **result,
            "val_loss": val.get("val/loss"), "val": val, "train_seconds": round(train_s),
            "measure_seconds": round(time.perf_counter() - t1), "initializer": str(initializer)}


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the fit and the figure -----------------------------------------------------------------------------
def fit_power(n: np.ndarray, y: np.ndarray) -> dict:
    """y = a n^-b by least squares in log-log; residuals in log y."""
    slope, intercept = np.polyfit(np.log(n), np.log(y), 1)
    pred = np.exp(intercept) * n ** slope
    return {"model": "a*n^-b", "a": float(np.exp(intercept)), "b": float(-slope), "c": 0.0,
            "log_residuals": [float(r) for r in np.log(y) - np.log(pred)]}


def fit_power_floor(n: np.ndarray, y: np.ndarray) -> dict:
    """y = c + a n^-b: for each floor c on a grid below min(y), a log-log line through y - c; the best in log y."""
    best = None
    for c in np.linspace(0.0, float(y.min()) * 0.999, 400):
        slope, intercept = np.polyfit(np.log(n), np.log(y - c), 1)
        pred = c + np.exp(intercept) * n ** slope
        sse = float(np.sum((np.log(y) - np.log(pred)) ** 2))
        if best is None or sse < best[0]:
            best = (sse, c, float(np.exp(intercept)), float(-slope), np.log(y) - np.log(pred))
    _, c, a, b, res = best
    return {"model": "c+a*n^-b", "a": a, "b": b, "c": float(c), "log_residuals": [float(r) for r in res]}


def targets_for(fit: dict, level: float = ORACLE) -> float | None:
    """n at which the fitted curve reaches ``level`` (None: never, it levels off above it or does not fall)."""
    a, b, c = fit["a"], fit["b"], fit["c"]
    if b <= 0 or level <= c:
        return None
    return float(((level - c) / a) ** (-1 / b))


def fits(rows: list[dict], key: str = "fast_metric") -> dict:
    pts = sorted((r["n"], r[key]) for r in rows if r.get(key) is not None)
    if len(pts) < 2:
        return {}
    n, y = (np.array(v, dtype=float) for v in zip(*pts))
    out = {"power": fit_power(n, y)}
    if len(pts) >= 3:
        out["power_floor"] = fit_power_floor(n, y)
    return out


def plot(rows: list[dict], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["n"])
    n = np.array([r["n"] for r in rows], dtype=float)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax.loglog(n, [r["fast_metric"] for r in rows], "o", color="C0", label="learned start (shipped policy)")
    grid = np.geomspace(min(n.min(), 50), 1e5, 200)
    for name, style in (("power", "--"), ("power_floor", ":")):
        f = fits(rows).get(name)
        if f:
            reach = targets_for(f)
            label = (f"{f['model']}: a={f['a']:.3g}, b={f['b']:.3g}" + (f", c={f['c']:.3g}" if f["c"] else "")
                     + (f"; oracle at n≈{reach:.3g}" if reach else "; never reaches the oracle"))
            ax.loglog(grid, f["c"] + f["a"] * grid ** -f["b"], style, color="C0", alpha=0.7, label=label)
    ax.axhline(ORACLE, color="k", lw=1, label=f"the exact target as the start ({ORACLE})")
    ax.set_xlabel("train targets n (same optimizer steps each)")
    ax.set_ylabel("fast metric: loss@30 ÷ exact target's final loss")
    ax.set_title(f"Fast metric on the first {rows[0]['photos']} val photos")
    ax.legend(fontsize=7)
    for level in LEVELS:
        vals = [r["miss_rate"].get(str(level)) for r in rows]
        xs = [x for x, v in zip(n, vals) if v is not None]
        bx.semilogx(xs, [v for v in vals if v is not None], "o-", label=f"level {level}")
    bx.set_xlabel("train targets n")
    bx.set_ylabel("miss rate (target > 0.5, start < 0.5), median")
    bx.set_ylim(0, 1)
    bx.set_title("Which coefficients: the start's misses per wavelet level")
    bx.legend(fontsize=8)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=110)
    plt.close(fig)


def report(rows: list[dict]) -> None:
    for r in sorted(rows, key=lambda r: r["n"]):
        miss = " / ".join("–" if r["miss_rate"][str(j)] is None else f"{r['miss_rate'][str(j)]:.2f}" for j in LEVELS)
        val = "–" if r.get("val_loss") is None else f"{r['val_loss']:.4f}"
        print(f"n={r['n']:4d} steps={r['optimizer_steps']} fast={r['fast_metric']:.3f} collapsed={r['collapsed']}/"
              f"{r['photos']} cost={r['median_start_cost_steps']:.2f} val_loss={val} miss L1..5={miss} "
              f"train {r['train_seconds']}s measure {r['measure_seconds']}s")
    for key in ("fast_metric", "val_loss"):
        for name, f in fits(rows, key).items():
            reach = targets_for(f) if key == "fast_metric" else None
            print(f"fit {key} {f['model']}: a={f['a']:.4g} b={f['b']:.4g} c={f['c']:.4g} log residuals "
                  f"{[round(x, 3) for x in f['log_residuals']]}"
                  + (f"; reaches {ORACLE} at n={reach:.3g}" if reach else "; never reaches" if key == "fast_metric" else ""))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="100,250,400,708", help="train-set sizes, in the order to run (default: %(default)s)")
    p.add_argument("--steps", type=int, default=440, help="optimizer steps for every n (default: %(default)s)")
    p.add_argument("--photos", type=int, default=24, help="first val photos measured (default: %(default)s)")
    p.add_argument("--shards", type=Path, default=Path("../shared/targets/efficientnet_lite0-cpu"))
    p.add_argument("--out", type=Path, default=Path("outputs/scaling"))
    p.add_argument("--jsonl", type=Path, help="results, one JSON line per n (default: OUT/results.jsonl)")
    p.add_argument("--figure", type=Path, default=Path("docs/figures/scaling-curve.png"))
    p.add_argument("--plot-only", action="store_true", help="no training: fit and draw from the JSON lines")
    args = p.parse_args()
    args.shards = args.shards.resolve()
    jsonl = args.jsonl or args.out / "results.jsonl"
    if not args.plot_only:
        args.out.mkdir(parents=True, exist_ok=True)
        for n in (int(x) for x in args.n.split(",") if x.strip()):
            done = {(r["n"], r["step_budget"], r["photos"]) for r in read_rows(jsonl)}
            if (n, args.steps, args.photos) in done:
                print(f"n={n}: done, skipped", flush=True)
                continue
            print(f"n={n}: training {args.steps} steps, then measuring {args.photos} photos", flush=True)
            try:
                row = run_point(n, args)
            except Exception:  # one bad n never kills the run
                print(f"n={n}: FAILED\n{traceback.format_exc()}", flush=True)
                continue
            with jsonl.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"n={n}: fast metric {row['fast_metric']:.3f}, miss {row['miss_rate']}", flush=True)
    rows = [r for r in read_rows(jsonl) if r["step_budget"] == args.steps and r["photos"] == args.photos]
    if rows:
        report(rows)
        plot(rows, args.figure)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
