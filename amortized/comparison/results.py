"""A comparison's data and its files: :class:`InitRun` (one init over a batch of images) and :class:`Comparison`
(every init over the same images), written as ``comparison.json`` (read back to resume or merge),
``per_image.csv`` and ``summary.csv``."""

from __future__ import annotations

import csv
import json
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from amortized.comparison import stats
from rde.errors import InputError
from rde.io import write_json_atomic

RD_FRACTIONS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0)  # kept fractions of the rate-distortion curves


@dataclass(kw_only=True)
class InitRun:
    """One init's runs over a batch of B images: curves, final masks and what the start cost."""

    name: str
    history: dict[str, Tensor]  # (B, N) each
    seconds: float  # wall time for the batch, init included
    init_seconds: float = 0.0
    mask: Tensor | None = None  # (B, k) final; None for runs loaded from JSON
    steps_to_reach: Tensor = field(default_factory=lambda: torch.empty(0))
    rd_keep: Tensor | None = None
    rd_randomize: Tensor | None = None
    explanation: Tensor | None = None  # (B, 1, H, W) the CartoonX image of the final mask
    collapsed: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.bool))  # (B,) class lost
    start_cost: Tensor | None = None  # (B,) classifier passes the start cost, in optimizer steps (None: free)

    def cost(self) -> Tensor:
        """``(B,)`` the start's cost in optimizer steps (zeros for a free start)."""
        n = len(self.history["loss"])
        return torch.zeros(n, dtype=torch.float64) if self.start_cost is None else self.start_cost.double()


@dataclass
class Comparison:
    """Every init's :class:`InitRun` over the same named images, the same steps and noise seeds."""

    names: list[str]  # one per image
    steps: int
    runs: dict[str, InitRun]
    _: KW_ONLY
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
                name=label,
                history={h: torch.cat([r.history[h] for r in rs]) for h in first.runs[label].history},
                mask=_cat_or_none([r.mask for r in rs]),
                seconds=sum(r.seconds for r in rs),
                init_seconds=sum(r.init_seconds for r in rs),
                steps_to_reach=torch.cat([r.steps_to_reach for r in rs]),
                rd_keep=_cat_or_none([r.rd_keep for r in rs]),
                rd_randomize=_cat_or_none([r.rd_randomize for r in rs]),
                explanation=_cat_or_none([r.explanation for r in rs]),
                collapsed=torch.cat([r.collapsed for r in rs]),
                start_cost=torch.cat([r.cost() for r in rs]),
            )
        return Comparison(
            [n for p in parts for n in p.names], first.steps, runs, window=first.window,
            images=_cat_or_none([p.images for p in parts]), settings=next((p.settings for p in parts if p.settings), {}),
        )

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
                name=init,
                history={h: torch.tensor(v) for h, v in curves.items()},
                seconds=sum(r["seconds"] for r in rows),
                init_seconds=sum(r.get("init_seconds", 0.0) for r in rows),
                rd_keep=None if rd.get("keep") is None else torch.tensor(rd["keep"]),
                rd_randomize=None if rd.get("randomize") is None else torch.tensor(rd["randomize"]),
                collapsed=torch.tensor([bool(r.get("collapsed", False)) for r in rows]),
                start_cost=torch.tensor([float(r.get("start_steps", 0.0)) for r in rows], dtype=torch.float64),
            )
        stats.set_steps_to_reach(runs, data["window"])
        return Comparison(names, data["steps"], runs, window=data["window"], settings=data.get("settings", {}))

    def per_image_rows(self) -> list[dict]:
        """One row per init and image (see :func:`amortized.comparison.stats.per_image_rows`)."""
        return stats.per_image_rows(self)

    def summary_rows(self) -> list[dict]:
        """One row per init (see :func:`amortized.comparison.stats.summary_rows`)."""
        return stats.summary_rows(self)

    def format_table(self) -> str:
        """The summary as the table ``cartoonx compare`` prints."""
        return stats.format_table(self)

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write ``per_image.csv``, ``summary.csv`` and ``comparison.json`` (atomically: an interruption never
        leaves half a file to resume from) into ``out``; returns their paths."""
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
        write_json_atomic(paths["json"], payload)
        return paths


def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _cat_or_none(parts: Sequence[Tensor | None]) -> Tensor | None:
    return None if any(p is None for p in parts) else torch.cat([p.cpu() for p in parts])


def _tolist(t: Tensor | None) -> list | None:
    return None if t is None else t.cpu().tolist()
