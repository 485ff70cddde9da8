"""Shared by the subcommands: argparse value types (errors name the bad value), --out filtering, --precision."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


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


def outside(paths: list[Path], folder: Path) -> list[Path]:
    """``paths`` without those inside ``folder``: a folder input that holds --out must not feed on its outputs."""
    folder = folder.resolve()
    return [p for p in paths if folder not in p.resolve().parents]


# rde.precision.PRECISIONS, repeated so that building the parser imports no torch (a test checks they agree).
PRECISION_CHOICES = ("32-true", "bf16-mixed", "16-mixed")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision`` (Lightning's names), passed to the optimizer as a preset override; default: the preset's."""
    parser.add_argument(
        "--precision", choices=PRECISION_CHOICES,
        help="classifier precision: 32-true, bf16-mixed or 16-mixed (CUDA; both run, slowly, on a CPU); mask, Adam and losses "
        "stay float32 (default: the preset's, 32-true)",
    )
