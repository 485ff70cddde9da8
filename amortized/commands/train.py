"""Train the mask initializer with LightningCLI.

    cartoonx train --config cpu [any LightningCLI flag, e.g. --trainer.max_epochs 5]
    cartoonx train --config configs/train/cpu.yaml                  # the same file, in a checkout
    cartoonx train --config cpu --config mine.yaml                  # cpu, then what mine.yaml changes
    cartoonx train --config shards --trainer.devices 4 --trainer.strategy ddp  # multi-GPU
    cartoonx train --config cpu --ckpt_path runs/.../last.ckpt                 # resume

``--config`` takes a YAML file or the name of a config that ships with the package (``rde/configs/train``).
``cpu`` is the recipe; ``shards`` is an overlay that changes only what differs on many GPUs, so naming it, or
giving its file, loads ``cpu`` first (:func:`config_files`). Several ``--config`` merge in order, a later
value winning. Everything else is handed to LightningCLI's ``fit`` subcommand unchanged.
A package that a config needs but that is not installed (e.g. ``wandb`` for its logger) is named in a
one-line error.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", action="append", required=True,
        help="LightningCLI YAML file, or a packaged config name: cpu, shards (an overlay on cpu); repeatable, "
             "a later file overriding an earlier one",
    )
    parser.set_defaults(_accepts_extra=True)


def resolve_config(text: str) -> str:
    """An existing YAML file as given, else the packaged train config of that name (``cpu`` -> its path)."""
    from rde.configs import config_path, list_configs

    if os.path.isfile(text):
        return text
    if os.sep in text or "/" in text or text.endswith((".yaml", ".yml")):
        raise FileNotFoundError(f"config file not found: {text} (packaged configs: {', '.join(list_configs('train'))})")
    return str(config_path("train", text))


OVERLAYS = {"shards": "cpu"}  # a packaged overlay -> the packaged config it changes


def config_files(text: str) -> list[str]:
    """The files that ``--config text`` loads, in order: a packaged overlay (by name or its file) after the config
    it changes (:data:`OVERLAYS`); anything else alone (:func:`resolve_config`)."""
    from rde.configs import config_path

    path = resolve_config(text)
    name = Path(path).stem
    if name in OVERLAYS and Path(path).resolve() == config_path("train", name).resolve():
        return config_files(OVERLAYS[name]) + [path]
    return [path]


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("WANDB_MODE", "offline")  # a config or WANDB_MODE=online opts in explicitly
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as in explain: spinning threads stall a shared CPU
    argv = ["fit"]
    for text in args.config:
        for path in config_files(text):
            argv += ["--config", path]
    try:
        from amortized.training import cli_main

        cli_main(argv + list(getattr(args, "extra", [])))
    except ModuleNotFoundError as e:  # a package that training, or a logger or callback in the config, needs
        from rde.errors import InputError

        if e.name and e.name.split(".")[0] in ("rde", "amortized"):
            raise  # our own module missing is a bug, not a missing dependency
        what = f"the package {e.name!r}, which is not installed" if e.name else str(e).splitlines()[0]
        raise InputError(
            f"training with {', '.join(args.config)} needs {what}; install it, or drop the logger or callback "
            "that uses it from the config"
        ) from e
    return 0
