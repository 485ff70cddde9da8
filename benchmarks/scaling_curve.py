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
    python benchmarks/scaling_curve.py --out outputs/scaling --n '' --reference bundled   # the shipped file alike
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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

    from rde import MaskLayout

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

    done = _finished(run_dir, steps)
    if done is not None:  # trained before (e.g. a run stopped while measuring): nothing computed is redone
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    overlay = run_dir / "overlay.yaml"
    overlay.write_text(yaml.safe_dump(_overlay(n, steps, run_dir, shards)))
    cmd = [sys.executable, "-m", "amortized", "train", "--config", "cpu", "--config", str(overlay)]
    with (run_dir / "train.log").open("w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    done = _finished(run_dir, steps)
    if done is None:
        raise FileNotFoundError(f"{run_dir}: training wrote no last.ckpt of {steps} steps "
                                f"(see {run_dir / 'train.log'})")
    return done


def _finished(run_dir: Path, steps: int) -> tuple[Path, dict] | None:
    """The newest last.ckpt under ``run_dir`` that reached ``steps`` optimizer steps, with its run's val metrics."""
    import torch

    for ckpt in sorted(run_dir.glob("csv/version_*/checkpoints/last.ckpt"), key=lambda p: -p.stat().st_mtime):
        if int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]) >= steps:
            metrics = ckpt.parent.parent / "metrics.csv"
            return ckpt, _last_val_metrics(metrics) if metrics.exists() else {}
    return None


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


def miss_rates(start: Tensor, target: Tensor, layout: MaskLayout) -> dict[int, float]:
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
    from benchmarks.bench_fast_init import refine_from, val_samples

    explainer = rde.CartoonX(rde.create_classifier("efficientnet_lite0"), "cpu")
    layout = S.open_shard_dir(shards).layout()
    samples = val_samples(shards, photos)
    start_fn = LearnedStart.for_explainer(explainer, initializer, seed=seed)
    ratios, costs, lost, misses = {}, [], 0, []
    per_photo = {}
    for s in samples:
        x, target = s["image"][None], torch.tensor([s["target"]])
        init = start_fn(x, target)
        run = refine_from(explainer, s, init, steps, seed)
        ratios[s["key"]] = run["ratio"]
        costs.append(float(init.cost[0]))
        lost += int(run["collapsed"])
        misses.append(miss_rates(init.mask[0].detach(), s["mask"], layout))
        per_photo[s["key"]] = {"ratio": round(ratios[s["key"]], 4), "cost": costs[-1], "collapsed": run["collapsed"],
                               "miss": {str(j): None if math.isnan(v) else round(v, 4) for j, v in misses[-1].items()}}
        print(f"  {s['key']}: fast {ratios[s['key']]:.3f}, cost {costs[-1]:.2f}", flush=True)
    per_level = {}
    for level in LEVELS:
        vals = [m[level] for m in misses if not math.isnan(m[level])]
        per_level[str(level)] = statistics.median(vals) if vals else None
    return {"photos": len(samples), "fast_metric": statistics.median(ratios.values()), "collapsed": lost,
            "median_start_cost_steps": statistics.median(costs), "miss_rate": per_level, "per_photo": per_photo}


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
PROBE_VAL_LOSS = {100: 0.103, 250: 0.073, 400: 0.069, 708: 0.064}  # issue 20's probe: val supervised loss, 92 photos


def value(row: dict, key: str) -> float | None:
    """``fast_metric``, or ``val_supervised``: the supervised loss on all val photos that training logged."""
    return row.get("val", {}).get("val/supervised") if key == "val_supervised" else row.get(key)


def photo_ratios(row: dict) -> dict[str, float]:
    """The fast metric per photo key of a result row (older rows kept only ``ratios``)."""
    return {k: p["ratio"] for k, p in row["per_photo"].items()} if "per_photo" in row else dict(row["ratios"])


def median_interval(values: list[float], level: float = 0.68, draws: int = 4000, seed: int = 0) -> tuple[float, float]:
    """A bootstrap interval of the median over photos (seeded): how much the photo sample alone moves it."""
    rng = np.random.default_rng(seed)
    meds = np.median(rng.choice(np.asarray(values), size=(draws, len(values))), axis=1)
    return float(np.quantile(meds, (1 - level) / 2)), float(np.quantile(meds, (1 + level) / 2))


def fit_power(n: np.ndarray, y: np.ndarray) -> dict:
    """y = a n^-b by least squares in log-log; residuals in log y."""
    slope, intercept = np.polyfit(np.log(n), np.log(y), 1)
    res = np.log(y) - np.log(np.exp(intercept) * n ** slope)
    return {"model": "a*n^-b", "a": float(np.exp(intercept)), "b": float(-slope), "c": 0.0,
            "log_residuals": [float(r) for r in res], "sse": float(np.sum(res ** 2)), "dof": len(n) - 2}


def fit_power_floor(n: np.ndarray, y: np.ndarray) -> dict:
    """y = c + a n^-b: for each floor c on a grid in [0, min(y)), a log-log line through y - c; the best in log y."""
    best = None
    for c in np.linspace(0.0, float(y.min()) * 0.999, 1000):
        slope, intercept = np.polyfit(np.log(n), np.log(y - c), 1)
        res = np.log(y) - np.log(c + np.exp(intercept) * n ** slope)
        sse = float(np.sum(res ** 2))
        if best is None or sse < best[0]:
            best = (sse, c, float(np.exp(intercept)), float(-slope), res)
    sse, c, a, b, res = best
    return {"model": "c+a*n^-b", "a": a, "b": b, "c": float(c), "log_residuals": [float(r) for r in res],
            "sse": sse, "dof": len(n) - 3}


def slope_interval(rows: list[dict], draws: int = 2000, seed: int = 0) -> dict:
    """The power law's exponent b and the n where it reaches the oracle, over bootstrap draws of the photos (the
    same draw for every n, as every n is measured on the same photos): how far the photo sample alone moves them."""
    per_n = sorted((r["n"], photo_ratios(r)) for r in rows)
    keys = sorted(set.intersection(*(set(d) for _, d in per_n)))
    n = np.array([x for x, _ in per_n], dtype=float)
    table = np.array([[d[k] for k in keys] for _, d in per_n])  # (len(n), photos)
    rng = np.random.default_rng(seed)
    bs, reach = [], []
    for _ in range(draws):
        pick = rng.integers(0, len(keys), len(keys))
        f = fit_power(n, np.median(table[:, pick], axis=1))
        bs.append(f["b"])
        reach.append(targets_for(f) or math.inf)
    q = (0.16, 0.5, 0.84)
    return {"b": [float(x) for x in np.quantile(bs, q)], "n_oracle": [float(x) for x in np.quantile(reach, q)],
            "p_no_gain": float(np.mean(np.array(bs) <= 0)), "photos": len(keys)}


def targets_for(fit: dict, level: float = ORACLE) -> float | None:
    """n at which the fitted curve reaches ``level`` (None: never, it levels off above it or does not fall)."""
    a, b, c = fit["a"], fit["b"], fit["c"]
    if b <= 0 or level <= c:
        return None
    try:
        return float(((level - c) / a) ** (-1 / b))
    except OverflowError:  # a nearly flat curve: beyond any float
        return math.inf


def fits(rows: list[dict], key: str = "fast_metric") -> dict:
    pts = sorted((r["n"], value(r, key)) for r in rows if value(r, key) is not None)
    if len(pts) < 2:
        return {}
    n, y = (np.array(v, dtype=float) for v in zip(*pts))
    out = {"power": fit_power(n, y)}
    if len(pts) >= 3:
        out["power_floor"] = fit_power_floor(n, y)
    return out


def _fit_label(f: dict, reach: float | None, show_reach: bool = True) -> str:
    label = f"{f['model']}: a={f['a']:.3g}, b={f['b']:.3g}" + (f", c={f['c']:.3g}" if f["c"] else "")
    if show_reach:
        label += f"; {ORACLE} at n≈{reach:.2g}" if reach else f"; never {ORACLE}"
    return label


def _reference_path(text: str) -> Path:
    from amortized.initializer import bundled_checkpoint

    return bundled_checkpoint("efficientnet_lite0", "cpu") if text == "bundled" else Path(text)


def plot(rows: list[dict], dest: Path, refs: list[dict] = ()) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["n"])
    n = np.array([r["n"] for r in rows], dtype=float)
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(16, 4.6))
    y = np.array([r["fast_metric"] for r in rows])
    lo, hi = np.array([median_interval(list(photo_ratios(r).values())) for r in rows]).T
    ax.errorbar(n, y, yerr=np.clip([y - lo, hi - y], 0, None), fmt="o", color="C0", capsize=3,
                label="learned start, shipped policy (bootstrap 68 % of the median)")
    grid = np.geomspace(50, 1e7, 200)
    for name, style in (("power", "--"), ("power_floor", ":")):
        f = fits(rows).get(name)
        if f:
            ax.plot(grid, f["c"] + f["a"] * grid ** -f["b"], style, color="C0", alpha=0.7,
                    label=_fit_label(f, targets_for(f)))
    for r in refs:
        ax.plot([708], [r["fast_metric"]], "*", ms=11, color="C3",
                label=f"{Path(r['initializer']).name} (708, shipped)")
    ax.axhline(ORACLE, color="k", lw=1, label=f"the exact target as the start ({ORACLE})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("train targets n (440 optimizer steps each)")
    ax.set_ylabel("fast metric: loss@30 ÷ exact target's final loss")
    ax.set_title(f"Fast metric, first {rows[0]['photos']} val photos (median)")
    ax.legend(fontsize=7)
    for level in LEVELS:
        vals = [r["miss_rate"].get(str(level)) for r in rows]
        xs = [x for x, v in zip(n, vals) if v is not None]
        line, = bx.semilogx(xs, [v for v in vals if v is not None], "o-",
                            label=f"level {level}" + (" (finest)" if level == 1 else ""))
        for r in refs:
            if r["miss_rate"].get(str(level)) is not None:
                bx.plot([708], [r["miss_rate"][str(level)]], "*", ms=10, color=line.get_color())
    bx.set_xlabel("train targets n")
    bx.set_ylabel("the target's kept (> 0.5) that the start has < 0.5")
    bx.set_ylim(0, 1)
    bx.set_title("Miss rate per wavelet level (median over photos)")
    bx.legend(fontsize=8)
    vals = [(r["n"], value(r, "val_supervised")) for r in rows if value(r, "val_supervised") is not None]
    if vals:
        cx.loglog(*zip(*vals), "o", color="C1", label="this run (val supervised loss, 92 photos)")
        for name, style in (("power", "--"), ("power_floor", ":")):
            f = fits(rows, "val_supervised").get(name)
            if f:
                cx.loglog(grid, f["c"] + f["a"] * grid ** -f["b"], style, color="C1", alpha=0.7,
                          label=_fit_label(f, None, False))
    cx.loglog(list(PROBE_VAL_LOSS), list(PROBE_VAL_LOSS.values()), "x", color="k", label="issue 20's probe")
    cx.set_xlabel("train targets n")
    cx.set_ylabel("val supervised loss")
    cx.set_title("Supervised loss at the end of training")
    cx.legend(fontsize=7)
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, dpi=100)
    plt.close(fig)


def _misses(row: dict) -> str:
    return " / ".join("–" if row["miss_rate"][str(j)] is None else f"{row['miss_rate'][str(j)]:.2f}" for j in LEVELS)


def report(rows: list[dict]) -> None:
    for r in sorted(rows, key=lambda r: r["n"]):
        miss = _misses(r)
        val = value(r, "val_supervised")
        lo, hi = median_interval(list(photo_ratios(r).values()))
        print(f"n={r['n']:4d} steps={r['optimizer_steps']} fast={r['fast_metric']:.3f} ({lo:.3f}-{hi:.3f}) "
              f"collapsed={r['collapsed']}/{r['photos']} above 2: {sum(x > 2 for x in photo_ratios(r).values())} "
              f"cost={r['median_start_cost_steps']:.2f} "
              f"val_supervised={'–' if val is None else f'{val:.4f}'} miss L1..5={miss} "
              f"train {r['train_seconds']}s measure {r['measure_seconds']}s")
    if len(rows) >= 3:
        si = slope_interval(rows)
        print(f"fast metric power law over bootstrap draws of the {si['photos']} photos: b {si['b'][1]:.3f} "
              f"({si['b'][0]:.3f}-{si['b'][2]:.3f}, 16-84 %), b <= 0 in {si['p_no_gain']:.0%} of draws; n at {ORACLE}: "
              f"{si['n_oracle'][1]:.3g} ({si['n_oracle'][0]:.3g}-{si['n_oracle'][2]:.3g})")
    for key in ("fast_metric", "val_supervised"):
        for f in fits(rows, key).values():
            reach = targets_for(f)
            print(f"fit {key} {f['model']}: a={f['a']:.4g} b={f['b']:.4g} c={f['c']:.4g} sse={f['sse']:.4g} "
                  f"dof={f['dof']} log residuals {[round(x, 3) for x in f['log_residuals']]}"
                  + ("" if key != "fast_metric" else
                     f"; reaches {ORACLE} at n={reach:.3g}" if reach else "; never reaches"))


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
    p.add_argument("--reference", help="also measure this initializer file the same way ('bundled': the shipped one), "
                   "once, into OUT/reference.jsonl; drawn as a star at n=708")
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
    ref_jsonl = args.out / "reference.jsonl"
    if args.reference and not args.plot_only:
        path = _reference_path(args.reference)
        if any(r["initializer"] == str(path) and r["photos"] == args.photos for r in read_rows(ref_jsonl)):
            print(f"reference {path}: done, skipped")
        else:
            t0 = time.perf_counter()
            ref = {**measure(path, args.shards, args.photos), "initializer": str(path),
                   "measure_seconds": round(time.perf_counter() - t0)}
            with ref_jsonl.open("a") as f:
                f.write(json.dumps(ref) + "\n")
    rows = [r for r in read_rows(jsonl) if r["step_budget"] == args.steps and r["photos"] == args.photos]
    refs = [r for r in read_rows(ref_jsonl) if r["photos"] == args.photos]
    for r in refs:
        print(f"reference {r['initializer']}: fast {r['fast_metric']:.3f} collapsed {r['collapsed']}/{r['photos']} "
              f"above 2: {sum(x > 2 for x in photo_ratios(r).values())} cost {r['median_start_cost_steps']:.2f} miss L1..5 "
              + _misses(r))
    if rows:
        report(rows)
        plot(rows, args.figure, refs)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
