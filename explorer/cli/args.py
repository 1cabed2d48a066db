"""argparse types for numbers: each refuses nan, inf and values out of range with a message that names the
value and the range (argparse adds the flag's name)."""

from __future__ import annotations

import argparse
import math


def int_in(low: int, high: int | None = None):
    """An integer in [low, high] (no upper end when high is None)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
        if high is None and v < low:
            raise argparse.ArgumentTypeError(f'{v} must be at least {low}')
        if high is not None and not low <= v <= high:
            raise argparse.ArgumentTypeError(f'{v} is out of range; allowed [{low}, {high}]')
        return v

    return parse


def number_in(low: float, high: float | None = None, *, low_open: bool = False):
    """A finite number in [low, high] ((low, high] when low_open; no upper end when high is None)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f'{text!r} is not a finite number')
        if v < low or (low_open and v == low) or (high is not None and v > high):
            left = '(' if low_open else '['
            raise argparse.ArgumentTypeError(
                f'{v:g} is out of range; allowed {left}{low:g}, {high if high else "..."}]'
            )
        return v

    return parse
