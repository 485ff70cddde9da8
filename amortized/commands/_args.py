"""argparse value types shared by the subcommands: each rejects bad values with a message naming them."""

from __future__ import annotations

import argparse
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
