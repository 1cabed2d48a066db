"""argparse types for numbers: each refuses nan, inf and values out of range with a message that names the
value and the range (argparse adds the flag's name)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from explorer.core.errors import UserError


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


def writable_path(
    flag: str, path: str | Path, folder: bool = False, inputs: tuple = (), make_parents: bool = False
) -> Path:
    """An output path, checked before any work: for a file (folder=False) not a folder, in a folder that exists
    and takes a new file (tried, not asked: os.access answers yes to root everywhere, /proc included), and not
    one of `inputs` (writing there would replace what the command reads; with make_parents, a missing folder is
    made now, under a writable one); for a folder (folder=True) not a file, and either writable or creatable
    under a writable folder. Raises UserError naming `flag` and what is wrong."""
    out = Path(path)
    if folder:
        if out.exists() and not out.is_dir():
            raise UserError(f'{flag}: {str(out)!r} is a file, not a folder')
        base = out
        while not base.exists():  # the folder is made later; its nearest existing parent must take it
            base = base.parent
        if not base.is_dir():
            raise UserError(f'{flag}: {str(base)!r} is a file, so {str(out)!r} cannot be a folder under it')
        _try_write(flag, base, out)
        return out
    if out.is_dir():
        raise UserError(f'{flag}: {str(out)!r} is a folder; give a file name in it')
    if make_parents and not out.parent.exists():
        writable_path(flag, out.parent, folder=True)
        out.parent.mkdir(parents=True, exist_ok=True)
    if not out.parent.is_dir():
        what = 'is a file' if out.parent.exists() else 'does not exist; create it first'
        raise UserError(f'{flag}: the folder {str(out.parent)!r} {what}')
    for source in inputs:
        if source is not None and Path(source).exists() and out.exists() and out.samefile(source):
            raise UserError(f'{flag}: {str(out)!r} is the input {str(source)!r}; writing there would replace it')
    _try_write(flag, out.parent, out)
    return out


def _try_write(flag: str, folder: Path, out: Path) -> None:
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix='.explorer-check-'):
            pass
    except OSError as e:
        raise UserError(f'{flag}: {str(out)!r} cannot be written here ({(e.strerror or str(e)).lower()})') from None


def strict_json(value):
    """`value` with every float that is not finite (NaN, infinity) as None: strict JSON has no such numbers, and
    Python's json writes them as bare NaN / Infinity, which other readers (jq, JavaScript) refuse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def print_json(value) -> None:
    """What --json prints: strict JSON (see strict_json), indented."""
    print(json.dumps(strict_json(value), indent=2, allow_nan=False))
