"""The Python steps of benchmarks/gpu_flywheel.sh: photos for the carry, the fast metric's merge, the summary, packing.

    python benchmarks/flywheel_steps.py photos SRC DEST --train 192 --val 0     # downsized JPEGs to cut views from
    python benchmarks/flywheel_steps.py metric OUT.json CHUNK.jsonl...            # merge bench_fast_init chunks
    python benchmarks/flywheel_steps.py pack SHARD_DIR OUT --parts 4 --part-mib 15  # shards into returnable tars

Photos are shrunk (bilinear with antialias, as rde.io.preprocess resizes) so that the shorter side is ``--side``
(default 220 px: a crop of 0.35 of the area is then still ~130 px wide, enough for 128-px views) and saved as
JPEG quality 85, about 18 KB each. A view records the size of the photo it was cut from, so its image is remade
from these files (rerunning ``photos`` writes the same ones), not from the originals.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's packages

SIDE = 220
QUALITY = 85


def photos(args: argparse.Namespace) -> None:
    """The first ``--train`` train and ``--val`` val photos of SRC, in generate's fixed order, shrunk into DEST."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    from amortized.datasets import key_fraction, list_images, split_of
    from rde.io import load_image

    items = sorted(list_images(args.src), key=lambda i: key_fraction(i.key, salt="order:"))
    chosen = [i for i in items if split_of(i.key) == "train"][: args.train]
    chosen += [i for i in items if split_of(i.key) == "val"][: args.val]
    args.dest.mkdir(parents=True, exist_ok=True)
    for item in chosen:
        tensor = TF.pil_to_tensor(load_image(item.path))
        if min(tensor.shape[1:]) > args.side:
            tensor = TF.resize(tensor, args.side, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        Image.fromarray(tensor.permute(1, 2, 0).numpy()).save(args.dest / f"{item.path.stem}.jpg", quality=QUALITY)
    total = sum(p.stat().st_size for p in args.dest.iterdir())
    print(f"{len(chosen)} photos ({args.train} train, {args.val} val asked) in {args.dest}: {total / 2**20:.1f} MiB")


def metric(args: argparse.Namespace) -> None:
    """Merge the JSON lines of bench_fast_init chunks (one start per file name prefix) into one summary."""
    runs: dict[str, dict] = {}
    for path in (c for c in args.chunks if c.is_file()):  # a chunk stopped by its time limit wrote none
        for line in Path(path).read_text().splitlines():
            row = json.loads(line)
            run = runs.setdefault(Path(path).name.split(".")[0], {"ratios": {}, "collapsed": 0, "start_cost": [],
                                                                   "start": row["start"], "checkpoint": row["checkpoint"]})
            run["ratios"].update(row["ratios"])
            run["collapsed"] += row["collapsed"]
            run["start_cost"].append(row["median_start_cost_steps"])
    summary = {}
    for name, run in sorted(runs.items()):
        ratios = list(run["ratios"].values())
        summary[name] = {"photos": len(ratios), "median_ratio": statistics.median(ratios) if ratios else None,
                         "collapsed": run["collapsed"], "start": run["start"], "checkpoint": run["checkpoint"],
                         "chunk_median_start_cost_steps": run["start_cost"], "ratios": run["ratios"]}
        print(f"fast metric {name}: {len(ratios)} photos, median loss@S / exact final "
              f"{summary[name]['median_ratio']}, collapsed {run['collapsed']}")
    Path(args.out).write_text(json.dumps(summary, indent=1))


def pack(args: argparse.Namespace) -> None:
    """SHARD_DIR's manifest and whole shards into at most ``--parts`` tars of at most ``--part-mib`` MiB each
    (``OUT-1.tar``, ...; extract them all into one folder to get the shard directory back). Shards that do not
    fit are left out and named; prints a JSON record of what was packed."""
    limit = int(args.part_mib * 2**20) - 64 * 1024  # room for tar headers and the manifest
    files = sorted(p for p in args.shard_dir.iterdir() if p.name.startswith("masks-") and not p.name.endswith(".tmp"))
    parts: list[list[Path]] = [[]]
    sizes = [0]
    left_out = []
    for f in files:
        size = f.stat().st_size + 1024
        if sizes[-1] + size > limit and parts[-1]:
            if len(parts) == args.parts:
                left_out.append(f.name)
                continue
            parts.append([])
            sizes.append(0)
        parts[-1].append(f)
        sizes[-1] += size
    written = []
    for n, part in enumerate(parts, 1):
        if not part and n > 1:
            continue
        path = Path(f"{args.out}-{n}.tar")
        with tarfile.open(path, "w") as tf:
            for extra in ("manifest.json", *(p.name for p in args.shard_dir.glob("failed-r*.jsonl"))):
                if n == 1 and (args.shard_dir / extra).is_file():
                    tf.add(args.shard_dir / extra, arcname=extra)
            for f in part:
                tf.add(f, arcname=f.name)
        written.append({"file": path.name, "bytes": path.stat().st_size, "shards": len(part)})
    record = {"parts": written, "shards": len(files) - len(left_out), "left_out": left_out,
              "bytes": sum(w["bytes"] for w in written)}
    print(json.dumps(record))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    ph = sub.add_parser("photos")
    ph.add_argument("src", type=Path)
    ph.add_argument("dest", type=Path)
    ph.add_argument("--train", type=int, default=192)
    ph.add_argument("--val", type=int, default=0)
    ph.add_argument("--side", type=int, default=SIDE)
    me = sub.add_parser("metric")
    me.add_argument("out", type=Path)
    me.add_argument("chunks", nargs="*", type=Path)
    pa = sub.add_parser("pack")
    pa.add_argument("shard_dir", type=Path)
    pa.add_argument("out")
    pa.add_argument("--parts", type=int, default=4)
    pa.add_argument("--part-mib", type=float, default=15)
    args = p.parse_args()
    {"photos": photos, "metric": metric, "pack": pack}[args.step](args)


if __name__ == "__main__":
    main()
