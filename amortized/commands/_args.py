"""Shared by the subcommands: argparse value types and the output-folder check; errors name the bad value."""

from __future__ import annotations

import argparse
import os
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


class OutputDirError(ValueError):
    """An output folder that cannot be used; raised before any work starts."""


def check_output_dir(path: Path, option: str = "--out") -> None:
    """Refuse an output folder that is a file, lies under a file, or cannot be created or written.

    Creates nothing, so that a run refused later for another reason leaves no empty folder behind.
    """
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"{option} {path}: exists and is not a folder")
    existing = path
    while not existing.exists():  # the nearest existing ancestor must be a writable folder
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise OutputDirError(f"{option} {path}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputDirError(f"{option} {path}: {existing} is not writable")


def outside(paths: list[Path], folder: Path) -> list[Path]:
    """``paths`` without those inside ``folder``: a folder input that holds --out must not feed on its outputs."""
    folder = folder.resolve()
    return [p for p in paths if folder not in p.resolve().parents]
