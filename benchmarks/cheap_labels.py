"""Cheap labels against exact targets at matched compute: cut a shard folder to a budget, and score cheap labels.

``subset`` writes the first samples of a split (in ``cartoonx generate``'s photo order) of a shard folder into a new
folder of the same configuration: the first ``--n``, or as many as ``--budget`` preset steps buy (each sample's
recorded cost, :func:`amortized.generate.sample_cost`: 300 for an exact target at the cpu preset, start + refinement
for a cheap label). ``quality`` compares cheap labels with the exact targets of the same photos: the mean absolute
mask error per scale, and both masks' objective on the same noise (``--samples`` copies, forward only).

    python benchmarks/cheap_labels.py subset ../shared/targets/efficientnet_lite0-cpu runs/exact-n5 --n 5
    python benchmarks/cheap_labels.py subset runs/cheap runs/cheap-matched --budget 1500
    python benchmarks/cheap_labels.py quality runs/cheap ../shared/targets/efficientnet_lite0-cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's packages, not an installed one

from amortized import shards as S
from amortized.datasets import in_split, key_fraction
from amortized.generate import sample_cost
from amortized.losses import per_scale_abs_error


def _ordered(index: S.ShardIndex, split: str) -> list[tuple[str, dict[str, bytes]]]:
    """The split's raw samples in generate's photo order (views after their photos' turn, as generate writes them)."""
    rows = [(k, raw) for path, _ in index.shards for k, raw in S.raw_samples(path) if in_split(k, split)]
    return sorted(rows, key=lambda r: ("@" in r[0], key_fraction(r[0].split("@")[0], salt="order:")))


def subset(src: Path, out: Path, n: int | None, budget: float | None, split: str) -> dict:
    index = S.open_shard_dir(src)
    chosen, spent = [], 0.0
    for key, raw in _ordered(index, split):
        cost = sample_cost(json.loads(raw["meta.json"]))
        if (n is not None and len(chosen) >= n) or (budget is not None and spent + cost > budget):
            break
        chosen.append((key, raw))
        spent += cost
    out.mkdir(parents=True, exist_ok=False)
    path = Path(S.shard_pattern(out, index.config_hash, 0, True) % 0)
    S.rewrite_shard(path, [(f"{k}.{f}", data) for k, raw in chosen for f, data in raw.items()])
    S.write_manifest(out, index.config, index.config_hash)
    return {"samples": len(chosen), "cost_steps": spent, "out": str(out)}


@torch.no_grad()
def quality(cheap_dir: Path, exact_dir: Path, samples: int, seed: int) -> dict:
    from rde import CartoonX, RDEConfig, create_classifier

    cheap_index, exact_index = S.open_shard_dir(cheap_dir), S.open_shard_dir(exact_dir)
    exact = {s["key"]: s for path, _ in exact_index.shards for s in S.read_samples(path)}
    layout = cheap_index.layout()
    explainer = CartoonX(create_classifier(cheap_index.config["classifier"]), RDEConfig.from_dict(cheap_index.config["preset"]))
    rows = []
    for path, _ in cheap_index.shards:
        for s in S.read_samples(path):
            e = exact.get(s["key"])
            if e is None:
                continue
            image = torch.from_numpy(s["image"]).permute(2, 0, 1).float()[None] / 255
            masks = torch.stack([torch.from_numpy(m.astype("float32")) for m in (s["mask"], e["mask"])])
            target = s["meta"]["target"]
            obj = explainer.objective(image.expand(2, -1, -1, -1), masks, target=[target, target],
                                      num_samples=samples, seed=seed)
            rows.append({
                "key": s["key"], "same_target": target == e["meta"]["target"], "cost": sample_cost(s["meta"]),
                "loss_ratio": float(obj["loss"][0] / obj["loss"][1]),
                "distortion": [float(obj["distortion"][0]), float(obj["distortion"][1])],
                "mae": {k: float(v) for k, v in per_scale_abs_error(masks[:1], masks[1:], layout).items()},
            })
    if not rows:
        raise SystemExit(f"no photo of {cheap_dir} has an exact target in {exact_dir}")
    median = lambda xs: statistics.median(xs)  # noqa: E731
    ratios = sorted(r["loss_ratio"] for r in rows)
    return {
        "photos": len(rows),
        "same_target": sum(r["same_target"] for r in rows),
        "mean_cost_steps": statistics.fmean(r["cost"] for r in rows),
        "loss_ratio_median": median(ratios),
        "loss_ratio_quartiles": [ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]],
        "mae_median": {name: median([r["mae"][name] for r in rows]) for name in rows[0]["mae"]},
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("subset", help="the first samples of a split, by count or by cost budget, into a new folder")
    a.add_argument("src", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--n", type=int)
    a.add_argument("--budget", type=float, help="preset steps to spend (the samples' recorded costs)")
    a.add_argument("--split", default="train", choices=("all", "train", "val"))
    q = sub.add_parser("quality", help="cheap labels against the exact targets of the same photos")
    q.add_argument("cheap", type=Path)
    q.add_argument("exact", type=Path)
    q.add_argument("--samples", type=int, default=64, help="noisy copies for the objective (default: 64)")
    q.add_argument("--seed", type=int, default=12345)
    q.add_argument("--json", type=Path, help="also write the per-photo rows here")
    args = p.parse_args()
    if args.command == "subset":
        print(json.dumps(subset(args.src, args.out, args.n, args.budget, args.split)))
        return
    result = quality(args.cheap, args.exact, args.samples, args.seed)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
