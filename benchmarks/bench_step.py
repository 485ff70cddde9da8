"""Seconds per CartoonX optimizer step vs the floor: a bare forward+backward of the same classifier on the
same B*L batch of images. Both are measured in the same process, interleaved, so the ratio is robust to
machine noise. Also prints the wall time per image at a preset (default: cpu, extrapolated from --steps).

    python benchmarks/bench_step.py                      # EfficientNet-Lite0, 128 px, L=16, B=1 and B=4
    python benchmarks/bench_step.py --device cuda --batches 1 4 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rde import CartoonX, create_classifier, load_preset


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_floor(clf, batch: int, samples: int, size: int, device: torch.device, repeats: int) -> list[float]:
    """Forward + backward of the classifier on B*L images with gradients w.r.t. the input only."""
    x = torch.rand(batch * samples, 3, size, size, device=device)
    out = []
    for _ in range(repeats):
        inp = x.clone().requires_grad_(True)
        _sync(device)
        t = time.perf_counter()
        clf(inp).softmax(-1)[:, 0].square().sum().backward()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


def time_steps(explainer: CartoonX, batch: int, size: int, device: torch.device, steps: int) -> list[float]:
    images = torch.rand(batch, 3, size, size, device=device)
    stamps: list[float] = []

    def record(step, mask, losses):
        _sync(device)
        stamps.append(time.perf_counter())

    _sync(device)
    start = time.perf_counter()
    explainer.explain(images, steps=steps, callback=record)
    times = [b - a for a, b in zip([start] + stamps[:-1], stamps)]
    return times[1:]  # the first step includes one-off set-up


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--steps", type=int, default=12, help="optimizer steps timed per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of (floor, optimizer)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    device = torch.device(args.device)
    cfg = load_preset(args.preset)
    clf = create_classifier(args.model, device=device)
    explainer = CartoonX(clf, cfg)
    size, samples = cfg.image_size, cfg.num_samples
    print(f"{args.model} on {device} ({torch.get_num_threads()} threads), {size} px, L={samples}, preset {cfg.name}")
    print(f"{'B':>3} {'floor s':>9} {'step s':>9} {'ratio':>7} {'s/image/step':>13}")
    per_image = {}
    for batch in args.batches:
        time_floor(clf, batch, samples, size, device, 2)  # warm-up
        floors, steps = [], []
        for _ in range(args.rounds):
            floors += time_floor(clf, batch, samples, size, device, args.steps // 2)
            steps += time_steps(explainer, batch, size, device, args.steps)
        f, s = statistics.median(floors), statistics.median(steps)
        per_image[batch] = s / batch
        print(f"{batch:>3} {f:>9.3f} {s:>9.3f} {s / f:>7.3f} {s / batch:>13.3f}")
    best = min(per_image, key=per_image.get)
    print(
        f"wall time per image at preset {cfg.name} ({cfg.steps} steps): "
        f"{per_image[1] * cfg.steps:.0f} s at B=1; {per_image[best] * cfg.steps:.0f} s at B={best}"
        if 1 in per_image
        else ""
    )


if __name__ == "__main__":
    main()
