"""Throughput of the exact CartoonX optimizer step, per precision and batch size B, against its floor.

The floor is a bare forward+backward of the same classifier, in the same precision and memory format, on the
same B*L images: what a step cannot beat. Floor and step are measured in the same process, interleaved, so
their ratio is robust to machine noise. Per (precision, B) at the preset (default: cpu) it prints:

  samples/s = B*L / step s;  step s;  floor s;  step / floor;  images/hour = 3600 * B / (N * step s)

and then the seconds per image at the paper preset (256 px, L=64, N=2000): a few steps are timed at one B and
extrapolated to N (the paper reports 45-82 s per image on a Titan RTX).

    python benchmarks/bench_step.py --device cuda --precision 32-true,bf16-mixed,16-mixed --batch 16,64,128
    python benchmarks/bench_step.py --tiny          # seconds on a CPU: 64 px, L=4, B=1,2, a few steps
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spin-waiting threads slow a shared CPU
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's rde, not an installed one

import torch  # noqa: E402

from rde import CartoonX, RDEConfig, create_classifier, load_preset  # noqa: E402
from rde.precision import autocast, check_precision_device  # noqa: E402

PAPER_SECONDS = "45-82 s per image (paper, Titan RTX)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _csv(kind):
    return lambda text: [kind(v) for v in text.split(",") if v.strip()]


def time_floor(explainer: CartoonX, batch: int, device: torch.device, repeats: int) -> list[float]:
    """Forward + backward of the classifier on B*L images (gradient w.r.t. the input only), as a step runs it."""
    cfg = explainer.config
    x = torch.rand(batch * cfg.num_samples, 3, cfg.image_size, cfg.image_size, device=device)
    if explainer._use_channels_last(device):
        x = x.contiguous(memory_format=torch.channels_last)
    out = []
    for _ in range(repeats):
        inp = x.clone().requires_grad_(True)
        _sync(device)
        t = time.perf_counter()
        with autocast(cfg.precision, device):
            logits = explainer.classifier(inp)
        logits.float().softmax(-1)[:, 0].square().sum().backward()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


def time_steps(explainer: CartoonX, batch: int, device: torch.device, steps: int) -> list[float]:
    """Seconds of each optimizer step but the first (which includes the set-up of ``explain``)."""
    size = explainer.config.image_size
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    stamps: list[float] = []

    def record(step, mask, losses):
        _sync(device)
        stamps.append(time.perf_counter())

    _sync(device)
    start = time.perf_counter()
    explainer.explain(images, steps=steps + 1, seed=list(range(batch)), callback=record)
    times = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    return times[1:]


def bench(clf, cfg: RDEConfig, precision: str, batch: int, device, steps: int, rounds: int, channels_last) -> dict:
    explainer = CartoonX(clf, cfg, precision=precision, channels_last=channels_last)
    time_floor(explainer, batch, device, 2)  # warm-up (cuDNN autotuning, allocator)
    floors, step_times = [], []
    for _ in range(rounds):
        floors += time_floor(explainer, batch, device, max(2, steps // 2))
        step_times += time_steps(explainer, batch, device, steps)
    f, s = statistics.median(floors), statistics.median(step_times)
    samples = batch * cfg.num_samples
    return {
        "precision": precision, "batch": batch, "image_size": cfg.image_size, "num_samples": cfg.num_samples,
        "steps_N": cfg.steps, "channels_last": explainer._use_channels_last(device), "floor_s": f, "step_s": s,
        "ratio": s / f, "samples_per_s": samples / s, "floor_samples_per_s": samples / f,
        "images_per_hour": 3600 * batch / (cfg.steps * s), "timed_steps": len(step_times),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--preset", default="cpu", help="the preset throughput is measured at (default: cpu)")
    p.add_argument("--precision", type=_csv(str), default=["32-true"], help="comma-separated, e.g. 32-true,bf16-mixed")
    p.add_argument("--batch", type=_csv(int), default=[1, 4], help="comma-separated B, e.g. 16,64,128")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps timed per round (default: 10)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of (floor, optimizer) (default: 2)")
    p.add_argument("--channels-last", choices=("auto", "on", "off"), default="auto",
                   help="classifier memory format (auto: channels-last on CUDA for a convolutional classifier)")
    p.add_argument("--paper-preset", default="paper", help="preset for the seconds-per-image line ('' skips it)")
    p.add_argument("--paper-batch", type=int, default=8, help="B for the paper-preset timing (default: 8)")
    p.add_argument("--paper-steps", type=int, default=4, help="steps timed at the paper preset (default: 4)")
    p.add_argument("--tiny", action="store_true", help="64 px, L=4, B=1,2, 2 steps, paper preset at 64 px L=8")
    p.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_step: --device cuda but CUDA is not available")
    channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    cfg, paper = load_preset(args.preset), load_preset(args.paper_preset) if args.paper_preset else None
    if args.tiny:
        cfg = cfg.replace(image_size=64, num_samples=4)
        paper = paper.replace(image_size=64, num_samples=8) if paper else None
        args.batch, args.steps, args.rounds, args.paper_batch, args.paper_steps = [1, 2], 2, 1, 1, 2
    for precision in args.precision:
        RDEConfig(precision=precision)  # one-line refusal of unknown names before any work
        check_precision_device(precision, device)
    clf = create_classifier(args.model, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{args.model} on {name}, torch {torch.__version__}; preset {cfg.name}: {cfg.image_size} px, "
          f"L={cfg.num_samples}, N={cfg.steps}; channels_last {args.channels_last}")
    print(f"{'precision':>10} {'B':>4} {'samples/s':>10} {'step s':>8} {'floor s':>8} {'step/floor':>10} {'images/hour':>12}")
    rows: list[dict] = []

    def save() -> None:  # after every row: a run stopped by a time limit keeps what it measured
        if args.json:
            args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "model": args.model,
                                             "rows": rows}, indent=1))

    for precision in args.precision:
        for batch in args.batch:
            r = bench(clf, cfg, precision, batch, device, args.steps, args.rounds, channels_last)
            rows.append({"preset": cfg.name, **r})
            print(f"{precision:>10} {batch:>4} {r['samples_per_s']:>10.0f} {r['step_s']:>8.4f} {r['floor_s']:>8.4f} "
                  f"{r['ratio']:>10.3f} {r['images_per_hour']:>12.0f}", flush=True)
            save()
    if paper is not None and args.paper_steps > 0:
        for precision in args.precision:
            explainer = CartoonX(clf, paper, precision=precision, channels_last=channels_last)
            times = time_steps(explainer, args.paper_batch, device, args.paper_steps)
            s = statistics.median(times)
            per_image = s * paper.steps / args.paper_batch
            rows.append({"preset": paper.name, "precision": precision, "batch": args.paper_batch, "step_s": s,
                         "seconds_per_image": per_image, "timed_steps": len(times), "steps_N": paper.steps})
            print(f"preset {paper.name} ({paper.image_size} px, L={paper.num_samples}), {precision}, B={args.paper_batch}: "
                  f"{s:.3f} s/step -> {per_image:.1f} s per image, extrapolated from {len(times)} timed steps to "
                  f"N={paper.steps} (vs {PAPER_SECONDS})", flush=True)
            save()
    return rows


if __name__ == "__main__":
    main()
