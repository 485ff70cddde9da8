"""Shared by the subcommands: argparse value types (errors name the bad value), --out filtering, --precision."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# The loss history alone takes 16 bytes a step per image (four float32 curves, allocated up front): 10^6 steps are
# 16 MB an image and days of CPU time; 10^12 would ask for 16 TB before the first step.
MAX_STEPS = 1_000_000


def int_at_least(low: int, high: int = INT64_MAX, why: str = "") -> Callable[[str], int]:
    """An integer in ``[low, high]`` (default: up to int64's largest, what torch's seeds and counters hold)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            bound = f">= {low}" if value < low else f"<= {high:,}{why}"
            raise argparse.ArgumentTypeError(f"expected an integer {bound}, got {value}")
        return value

    return parse


steps_int = int_at_least(0, MAX_STEPS, why=" (the loss history takes 16 bytes a step per image)")
positive_steps = int_at_least(1, MAX_STEPS, why=" (the loss history takes 16 bytes a step per image)")
seed_int = int_at_least(INT64_MIN, INT64_MAX, why=" (a 64-bit seed)")


def float_in(low: float, high: float, high_inclusive: bool = False) -> Callable[[str], float]:
    """A float in ``[low, high)`` (or ``[low, high]``); ``high=inf`` means any finite value >= low."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        inside = low <= value <= high if high_inclusive else low <= value < high
        if not inside:
            bracket = "]" if high_inclusive else ")"
            raise argparse.ArgumentTypeError(f"expected a number in [{low:g}, {high:g}{bracket}, got {text}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_float = float_in(0.0, float("inf"))
fraction = float_in(0.0, 1.0)


def outside(paths: list[Path], folder: Path, command: str) -> list[Path]:
    """``paths`` without those inside ``folder``: a folder input that holds --out must not feed on its outputs.
    How many were left out, and why, is said in one line on stderr."""
    resolved = folder.resolve()
    kept = [p for p in paths if resolved not in Path(p).resolve().parents]
    if len(kept) < len(paths):
        print(f"cartoonx {command}: ignoring {len(paths) - len(kept)} image(s) inside --out {folder} (outputs are not "
              "inputs; move them out of it to explain them)", file=sys.stderr)
    return kept


# rde.precision.PRECISIONS, repeated so that building the parser imports no torch (a test checks they agree).
PRECISION_CHOICES = ("32-true", "bf16-mixed", "16-mixed")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision`` (Lightning's names), passed to the optimizer as a preset override; default: the preset's."""
    parser.add_argument(
        "--precision", choices=PRECISION_CHOICES,
        help="classifier precision: 32-true, bf16-mixed or 16-mixed (CUDA; both run, slowly, on a CPU); mask, Adam and losses "
        "stay float32 (default: the preset's, 32-true)",
    )


def kept_images(out: Path) -> str:
    """What survives a failed write of explain or compare, and how to go on (for :func:`rde.io.write_failure`)."""
    return f"the images finished before are kept in {out}: free space and rerun the same command with --resume"


def add_explainer_arguments(parser: argparse.ArgumentParser, seed_help: str) -> None:
    """The options that choose the exact optimizer, shared by explain and compare: --model, --preset, --lam,
    --checkpoint (a learned start's), --seed, --device and --precision."""
    parser.add_argument(
        "--model", default="efficientnet_lite0",
        help="classifier: a registered name (efficientnet_lite0), a torchvision model name with cached weights, or "
        "package.module:callable (default: %(default)s)",
    )
    parser.add_argument("--preset", default="cpu",
                        help="optimizer preset: cpu, paper, tiny, or a YAML file (default: %(default)s)")
    parser.add_argument("--lam", type=non_negative_float, help="sparsity weight lambda (default: the preset's)")
    parser.add_argument("--checkpoint", type=Path,
                        help="initializer checkpoint for a learned start (default: the one bundled for the model and preset)")
    parser.add_argument("--seed", type=seed_int, default=0, help=f"{seed_help} (default: %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda if available, else cpu (default: %(default)s)")
    add_precision_argument(parser)


def add_rerun_arguments(parser: argparse.ArgumentParser, out_default: str, resume_help: str) -> None:
    """--out and what to do with an earlier run's outputs there: --resume or --overwrite, never silently."""
    parser.add_argument("--out", type=Path, default=Path(out_default), help="output directory (default: %(default)s)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help=resume_help)
    again.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in OUT")
