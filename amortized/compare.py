"""Compare initial masks for CartoonX by their loss curves, with identical noise seeds.

For every init the exact optimizer runs N steps on the same images with the same per-image seeds.
The report gives, per init: final loss/distortion/sparsity; how many runs collapsed (lost the class:
their low loss is the empty mask's, so where the ones run kept the class they never count as
reaching); steps-to-reach (the first step from which the 10-step moving average stays at or below
the ones-init average at step N, plus what the start itself cost in classifier passes, counted in
optimizer steps: a learned start's probe and guard checks); the speedup N / steps; the moving-average
loss at fixed steps;
wall time including any network forward pass; and rate-distortion curves of the final masks.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from rde import CartoonX
from rde.errors import InputError
from rde.init import InitSpec
from rde.start import Start, StartFn
from rde.io import write_json_atomic
from rde.metrics import collapsed, loss_at, rate_distortion_curve, reference_level, steps_to_reach
from rde.plotting import loss_curves_figure, per_image_loss_figure, side_by_side_figure
from rde.presets import RDEConfig

FIXED_STEPS = (10, 30, 100)
RD_FRACTIONS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0)


@dataclass
class InitRun:
    name: str
    history: dict[str, Tensor]  # (B, N) each
    mask: Tensor | None  # (B, k) final; None for runs loaded from JSON
    seconds: float  # wall time for the batch, init included
    init_seconds: float
    steps_to_reach: Tensor = field(default_factory=lambda: torch.empty(0))
    rd_keep: Tensor | None = None
    rd_randomize: Tensor | None = None
    explanation: Tensor | None = None  # (B, 1, H, W) the CartoonX image of the final mask
    collapsed: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))  # (B,) class lost
    start_cost: Tensor | None = None  # (B,) classifier passes the start cost, in optimizer steps (None: free)

    def cost(self) -> Tensor:
        n = len(self.history["loss"])
        return torch.zeros(n, dtype=torch.float64) if self.start_cost is None else self.start_cost.double()


@dataclass
class Comparison:
    names: list[str]  # one per image
    steps: int
    runs: dict[str, InitRun]
    window: int = 10
    images: Tensor | None = None  # (B, 3, H, W) inputs, for the explanation figure
    settings: dict[str, Any] = field(default_factory=dict)  # what made the curves (classifier, preset, seed,
    # checkpoint): saved, and a resumed or merged comparison must match it

    @staticmethod
    def concat(parts: Sequence[Comparison]) -> Comparison:
        """Join comparisons of disjoint image batches (same inits and steps)."""
        first = parts[0]
        runs = {}
        for label in first.runs:
            rs = [p.runs[label] for p in parts]
            runs[label] = InitRun(
                label,
                {h: torch.cat([r.history[h] for r in rs]) for h in first.runs[label].history},
                _cat_or_none([r.mask for r in rs]),
                sum(r.seconds for r in rs),
                sum(r.init_seconds for r in rs),
                torch.cat([r.steps_to_reach for r in rs]),
                _cat_or_none([r.rd_keep for r in rs]),
                _cat_or_none([r.rd_randomize for r in rs]),
                _cat_or_none([r.explanation for r in rs]),
                torch.cat([r.collapsed for r in rs]),
                torch.cat([r.cost() for r in rs]),
            )
        images = _cat_or_none([p.images for p in parts])
        settings = next((p.settings for p in parts if p.settings), {})
        return Comparison([n for p in parts for n in p.names], first.steps, runs, first.window, images, settings)

    @staticmethod
    def load(path: str | Path) -> Comparison:
        """Read back what :meth:`save` wrote to ``comparison.json`` (curves, flags, times; not masks or images),
        so that a long comparison can resume and be concatenated with new images."""
        try:
            data = json.loads(Path(path).read_text())
            names, runs = data["images"], {}
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise InputError(f"{path}: not a readable comparison ({type(e).__name__}: {e}); "
                             "use --overwrite or another --out") from None
        for init, curves in data["curves"].items():
            rows = {r["image"]: r for r in data["per_image"] if r["init"] == init}
            if len(rows) != len(names):
                raise InputError(f"{path}: per-image rows of {init!r} do not match its {len(names)} images")
            rows = [rows[n] for n in names]
            rd = data.get("rate_distortion", {}).get(init, {})
            runs[init] = InitRun(
                init,
                {h: torch.tensor(v) for h, v in curves.items()},
                mask=None,
                seconds=sum(r["seconds"] for r in rows),
                init_seconds=sum(r.get("init_seconds", 0.0) for r in rows),
                rd_keep=None if rd.get("keep") is None else torch.tensor(rd["keep"]),
                rd_randomize=None if rd.get("randomize") is None else torch.tensor(rd["randomize"]),
                collapsed=torch.tensor([bool(r.get("collapsed", False)) for r in rows]),
                start_cost=torch.tensor([float(r.get("start_steps", 0.0)) for r in rows], dtype=torch.float64),
            )
        _set_steps_to_reach(runs, data["window"])
        return Comparison(names, data["steps"], runs, data["window"], settings=data.get("settings", {}))

    def per_image_rows(self) -> list[dict]:
        rows = []
        for init, run in self.runs.items():
            fixed = loss_at(run.history["loss"], [s for s in FIXED_STEPS if s <= self.steps], self.window)
            for i, name in enumerate(self.names):
                str_ = float(run.steps_to_reach[i])
                row = {
                    "image": name,
                    "init": init,
                    "final_loss": float(run.history["loss"][i, -1]),
                    "final_loss_ma": float(loss_at(run.history["loss"][i : i + 1], [self.steps], self.window)[self.steps]),
                    "final_distortion": float(run.history["distortion"][i, -1]),
                    "final_sparsity": float(run.history["sparsity"][i, -1]),
                    "collapsed": bool(run.collapsed[i]),
                    "steps_to_reach": str_ if math.isfinite(str_) else None,
                    "start_steps": float(run.cost()[i]),
                    "speedup": self.steps / str_ if math.isfinite(str_) else 0.0,
                    "seconds": run.seconds / len(self.names),
                    "init_seconds": run.init_seconds / len(self.names),
                }
                row.update({f"loss_at_{s}": float(v[i]) for s, v in fixed.items()})
                rows.append(row)
        return rows

    def summary_rows(self) -> list[dict]:
        rows = []
        ones = self.runs.get("ones")
        per_image = self.per_image_rows()
        for init, run in self.runs.items():
            per = [r for r in per_image if r["init"] == init]
            speed = [r["speedup"] for r in per]
            row = {
                "init": init,
                "images": len(per),
                "final_loss": statistics.mean(r["final_loss_ma"] for r in per),
                "final_distortion": statistics.mean(r["final_distortion"] for r in per),
                "final_sparsity": statistics.mean(r["final_sparsity"] for r in per),
                "collapsed": sum(r["collapsed"] for r in per),
                "start_steps": statistics.mean(r["start_steps"] for r in per),
                "median_steps_to_reach": _median_or_none([r["steps_to_reach"] or math.inf for r in per]),
                "median_speedup": statistics.median(speed),
                "speedup_q25": float(np.quantile(speed, 0.25)),
                "speedup_q75": float(np.quantile(speed, 0.75)),
                "seconds_per_image": run.seconds / len(per),
            }
            if ones is not None:
                reach = statistics.median(run.steps_to_reach.tolist())
                row["wall_speedup_at_reach"] = wall_speedup(run, ones, self.steps, reach)
            rows.append(row)
        return rows

    def save(self, out: str | Path) -> dict[str, Path]:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"per_image_csv": out / "per_image.csv", "summary_csv": out / "summary.csv", "json": out / "comparison.json"}
        _write_csv(paths["per_image_csv"], self.per_image_rows())
        _write_csv(paths["summary_csv"], self.summary_rows())
        curves = {k: {h: v.tolist() for h, v in r.history.items() if h != "spatial"} for k, r in self.runs.items()}
        rd = {
            k: {"fractions": list(RD_FRACTIONS), "keep": _tolist(r.rd_keep), "randomize": _tolist(r.rd_randomize)}
            for k, r in self.runs.items()
        }
        payload = {
            "steps": self.steps,
            "window": self.window,
            "images": self.names,
            "summary": self.summary_rows(),
            "per_image": self.per_image_rows(),
            "curves": curves,
            "rate_distortion": rd,
            "settings": self.settings,
        }
        write_json_atomic(paths["json"], payload)  # an interruption never leaves half a file to resume from
        return paths

    def format_table(self) -> str:
        head = (f"{'init':<10} {'final loss':>10} {'distortion':>10} {'sparsity':>9} {'collapsed':>9} {'start':>6} {'steps->ones@N':>14} "
                f"{'speedup (q25-q75)':>20} {'s/image':>8}")
        lines = [head, "-" * len(head)]  # start: the start's own classifier passes, in optimizer steps
        for r in self.summary_rows():
            reach = "never" if r["median_steps_to_reach"] is None else f"{r['median_steps_to_reach']:.0f}"
            spd = f"{r['median_speedup']:.1f}x ({r['speedup_q25']:.1f}-{r['speedup_q75']:.1f})"
            lines.append(
                f"{r['init']:<10} {r['final_loss']:>10.4f} {r['final_distortion']:>10.4f} {r['final_sparsity']:>9.4f} "
                f"{r['collapsed']:>9d} {r['start_steps']:>6.2f} {reach:>14} {spd:>20} {r['seconds_per_image']:>8.1f}"
            )
        return "\n".join(lines)


def comparison_settings(classifier: str, preset: RDEConfig, seed: int, checkpoint: str | None) -> dict[str, Any]:
    """What decides a comparison's curves besides the images, inits and steps, flat so that a mismatch reads in
    one line: the classifier, the preset's fields (its name and step count aside), the seed and the learned
    start's checkpoint (``"bundled"``, a path, or ``None`` without a learned start)."""
    fields = {f"preset.{k}": v for k, v in preset.to_dict().items() if k not in ("name", "steps")}
    settings = {"classifier": classifier, **fields, "seed": int(seed), "checkpoint": checkpoint}
    return json.loads(json.dumps(settings))  # as it reads back from comparison.json (tuples become lists)


def load_finished(
    out: str | Path, steps: int, inits: Sequence[str], settings: dict[str, Any] | None = None
) -> Comparison | None:
    """The comparison an interrupted run left in ``out``, if any; refused if its steps, inits or ``settings``
    (classifier, preset, seed, checkpoint: whatever the caller records) differ."""
    path = Path(out) / "comparison.json"
    if not path.exists():
        return None
    done = Comparison.load(path)
    expected = ["ones", *[i for i in inits if i != "ones"]]
    if done.steps != steps or list(done.runs) != expected:
        raise InputError(
            f"{path} holds a comparison of {list(done.runs)} over {done.steps} steps, not {expected} over {steps}; "
            "use another --out, or --overwrite instead of --resume to replace it"
        )
    if settings is not None and done.settings and done.settings != settings:  # files from before settings: as is
        keys = sorted(k for k in {*settings, *done.settings} if settings.get(k) != done.settings.get(k))
        changes = "; ".join(f"{k}: {done.settings.get(k)!r} -> {settings.get(k)!r}" for k in keys)
        raise InputError(f"{path} was made with other settings ({changes}); "
                         "use another --out, or --overwrite instead of --resume to replace it")
    return done


def compare_inits(
    explainer: CartoonX,
    images: Tensor,
    inits: dict[str, InitSpec | StartFn],
    steps: int,
    names: Sequence[str] | None = None,
    seed: int = 0,
    rate_distortion: bool = True,
    rd_samples: int = 8,
    show_progress: bool = False,
    window: int = 10,
    ones: InitRun | None = None,
) -> Comparison:
    """Run every init on ``images`` with the same seeds; ``ones`` is added as the reference if absent.

    ``inits`` maps a label to an init spec accepted by :meth:`CartoonX.explain` or to a start function
    ``images -> Start`` (e.g. a :class:`~amortized.initializer.LearnedStart`) or ``images -> init``; its time
    counts toward the init's wall time, and the :attr:`~rde.start.Start.cost` it returns toward its steps-to-reach.
    ``ones``: a finished ones run of these images with this seed (it does not depend on the other inits, so
    benchmarks reuse it; see :func:`ones_run`); default: run it.
    """
    inits = {"ones": inits.get("ones", "ones"), **inits}
    names = list(names) if names is not None else [f"image{i}" for i in range(len(images))]
    runs: dict[str, InitRun] = {}
    if ones is not None:
        runs["ones"] = ones
    for label, spec in inits.items():
        if label in runs:
            continue
        start = time.perf_counter()
        init = spec(images) if callable(spec) else spec
        init_seconds = time.perf_counter() - start
        cost = init.cost if isinstance(init, Start) else None
        res = explainer.explain(images, init=init, steps=steps, seed=seed, show_progress=show_progress)
        runs[label] = InitRun(
            label, res.history, res.mask, time.perf_counter() - start, init_seconds,
            explanation=res.explanation.detach().cpu(),
            collapsed=collapsed(res.history["distortion"], res.target_probs, window),
            start_cost=None if cost is None else cost.detach().cpu().double(),
        )
    _set_steps_to_reach(runs, window)
    for run in runs.values():
        if rate_distortion and run.mask is not None:
            run.rd_keep = rate_distortion_curve(explainer, images, run.mask.to(images.device), RD_FRACTIONS, "keep", rd_samples, seed)
            run.rd_randomize = rate_distortion_curve(
                explainer, images, run.mask.to(images.device), RD_FRACTIONS, "randomize", rd_samples, seed
            )
    return Comparison(names, steps, runs, window, images.detach().cpu())


def ones_run(history: dict[str, Tensor], target_probs: Tensor, seconds: float, window: int = 10) -> InitRun:
    """An all-ones :class:`InitRun` from a saved explanation's curves (e.g. a cached reference run)."""
    return InitRun("ones", history, None, seconds, 0.0,
                   collapsed=collapsed(history["distortion"], target_probs, window))


def _set_steps_to_reach(runs: dict[str, InitRun], window: int) -> None:
    """Steps-to-reach the ones run's final level, plus the start's own cost; losing the class where ones keeps it
    never counts as reaching."""
    ones = runs["ones"]
    ref = reference_level(ones.history["loss"], window)
    for label, run in runs.items():
        run.steps_to_reach = steps_to_reach(run.history["loss"], ref, window) + run.cost()
        if label != "ones":
            run.steps_to_reach[run.collapsed & ~ones.collapsed] = float("inf")


def plot_comparison(comparison: Comparison, out: str | Path) -> list[Path]:
    """Loss curves (median and quartile band over images, and per image), rate-distortion curves, and the
    explanations each init reached after N steps side by side (``explanations.png``, first 8 images)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    losses = {label: run.history["loss"] for label, run in comparison.runs.items()}
    summary = {r["init"]: r for r in comparison.summary_rows()}
    labels = {}
    for label in comparison.runs:
        reach = summary[label]["median_steps_to_reach"]
        labels[label] = f"{label} (median)" + (
            "" if label == "ones" else ": never reaches ones@N" if reach is None
            else f": reaches ones@N at step {reach:.0f}, {summary[label]['median_speedup']:.1f}x")
    reference = float(reference_level(losses["ones"], comparison.window).median())
    rd = {label: (RD_FRACTIONS, run.rd_keep, run.rd_randomize) for label, run in comparison.runs.items()
          if run.rd_keep is not None}
    fig = loss_curves_figure(losses, reference, labels, rd or None, f"ones@{comparison.steps} (10-step avg)")
    paths = [out / "loss_curves.png", out / "loss_curves_per_image.png"]
    fig.savefig(paths[0], dpi=110)
    per_image_loss_figure(losses, comparison.names).savefig(paths[1], dpi=100)
    if comparison.images is not None and all(r.explanation is not None for r in comparison.runs.values()):
        n = min(8, len(comparison.names))
        final = {label: loss_at(run.history["loss"][:n], [comparison.steps], comparison.window)[comparison.steps]
                 for label, run in comparison.runs.items()}
        captions = {label: [f"{label} @{comparison.steps}: loss {float(v):.3f}" for v in final[label]]
                    for label in comparison.runs}
        explanations = {label: run.explanation[:n] for label, run in comparison.runs.items()}
        paths.append(out / "explanations.png")
        side_by_side_figure(comparison.images[:n], explanations, comparison.names[:n], captions).savefig(paths[-1], dpi=100)
    return paths


def _median_or_none(values: list[float]) -> float | None:
    m = statistics.median(values)
    return None if math.isinf(m) else m


def wall_speedup(run: InitRun, ones: InitRun, steps: int, reach: float) -> float:
    """Wall-time speedup to reach the ones@N level in ``reach`` steps: the ones run's time for N steps over
    this init's time for its network forward pass plus ``reach`` steps; 0 where it never reaches."""
    if not math.isfinite(reach) or run.seconds <= 0:
        return 0.0
    per_step = (run.seconds - run.init_seconds) / steps
    return ones.seconds / (run.init_seconds + per_step * reach)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _cat_or_none(parts: Sequence[Tensor | None]) -> Tensor | None:
    return None if any(p is None for p in parts) else torch.cat([p.cpu() for p in parts])


def _tolist(t: Tensor | None) -> list | None:
    return None if t is None else t.cpu().tolist()
