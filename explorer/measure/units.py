"""Numbers for people: counts and byte sizes with three significant figures."""

from __future__ import annotations


def whole_number(value):
    """A whole-number float as an int (JSON clients and Gradio's number fields send 8.0 for 8); anything else,
    and floats past 2**53 (where a float no longer says which integer it is), unchanged for the caller to check."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def fmt_count(n: int | float | None, unit: str = '') -> str:
    """12.3 M, 4.13 G, 815 k: three significant figures."""
    if n is None:
        return '—'
    for div, suffix in ((1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
        if abs(n) >= div:
            v = n / div
            return f'{v:.3g}{suffix}{unit}' if abs(v) < 100 else f'{v:.0f}{suffix}{unit}'
    return f'{n:g}{unit}'


def fmt_bytes(n: int | float) -> str:
    for div, suffix in ((2**30, 'GiB'), (2**20, 'MiB'), (2**10, 'KiB')):
        if n >= div:
            return f'{n / div:.3g} {suffix}'
    return f'{n:g} B'
