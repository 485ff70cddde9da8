"""Train the mask initializer with LightningCLI.

    cartoonx train --config configs/train/cpu.yaml [any LightningCLI flag, e.g. --trainer.max_epochs 5]
    cartoonx train --config configs/train/cpu.yaml --trainer.devices 4 --trainer.strategy ddp   # multi-GPU
    cartoonx train --config configs/train/cpu.yaml --ckpt_path runs/.../last.ckpt               # resume

Everything after ``--config`` is handed to LightningCLI's ``fit`` subcommand unchanged.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", required=True, help="LightningCLI YAML config (repeatable)")
    parser.set_defaults(_accepts_extra=True)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("WANDB_MODE", "offline")  # a config or WANDB_MODE=online opts in explicitly
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in explain: spinning threads stall a shared CPU
    from amortized.training import cli_main

    argv = ["fit"]
    for path in args.config:
        if not os.path.exists(path):
            raise FileNotFoundError(f"config file not found: {path}")
        argv += ["--config", path]
    cli_main(argv + list(getattr(args, "extra", [])))
    return 0
