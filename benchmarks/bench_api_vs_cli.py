"""Seconds per optimizer step: the Python API against ``cartoonx explain``, on an idle and on a loaded CPU.

OpenMP threads that spin-wait between parallel regions stall when another process holds a core. The command line
sets ``OMP_WAIT_POLICY=PASSIVE`` before torch loads OpenMP, and so does ``import rde`` (or ``amortized``) since
issue 21; a program that imports torch first, with the variable unset, gets the spinning default. Each variant runs
in a fresh process (OpenMP reads the variable once), on one example photo at the preset, for a few steps:

  api            ``import rde`` first, then explain (the README's snippet)
  api-torch-first  ``import torch`` first, then rde: what the API was before, and still is for such programs
  cli            ``cartoonx explain --steps N`` (the figure's ``seconds`` / N)

"loaded" runs the same with a busy loop holding one core. Per run it prints seconds per step.

    python benchmarks/bench_api_vs_cli.py                 # cpu preset, 3 steps
    python benchmarks/bench_api_vs_cli.py --steps 5 --preset tiny
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHOTO = REPO / "examples" / "n01440764_tench.JPEG"

API = """
import sys, time
{first}
import rde
clf = rde.create_classifier("efficientnet_lite0")
explainer = rde.CartoonX(clf, preset="{preset}")
images = rde.load_images([r"{photo}"], size=explainer.config.image_size)
explainer.explain(images, steps=1)  # warm-up: allocations, first-call overheads
start = time.perf_counter()
explainer.explain(images, steps={steps})
print((time.perf_counter() - start) / {steps})
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = str(REPO)
    return env


def api(preset: str, steps: int, torch_first: bool) -> float:
    code = API.format(first="import torch" if torch_first else "", preset=preset, photo=PHOTO, steps=steps)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip().splitlines()[-1])


def cli(preset: str, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-m", "amortized", "explain", str(PHOTO), "--preset", preset, "--steps",
                        str(steps), "--out", out], cwd=REPO, env=_env(), capture_output=True, check=True)
        return json.loads((Path(out) / f"{PHOTO.stem}.json").read_text())["seconds"] / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    variants = {
        "api": lambda: api(args.preset, args.steps, torch_first=False),
        "api-torch-first": lambda: api(args.preset, args.steps, torch_first=True),
        "cli": lambda: cli(args.preset, args.steps),
    }
    print(f"{os.cpu_count()} CPUs, preset {args.preset}, {args.steps} steps; seconds per step (the cli's first step "
          "includes first-call overheads, the api's are warmed up)")
    for load in ("idle", "loaded"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "loaded" else None
        try:
            for name, measure in variants.items():
                print(f"{load:<7} {name:<16} {measure():7.2f} s/step", flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()


if __name__ == "__main__":
    main()
