"""Where the shipped data lives: `presets/` and `assets/` sit at the top of the source tree and are installed
inside the package (`explorer/presets`, `explorer/assets`; see pyproject.toml), so an installed explorer
works from any directory and a checkout works without installing."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parents[2]


def data_path(name: str) -> Path:
    """The folder of shipped data `name` ('presets' or 'assets')."""
    if name not in ('presets', 'assets'):
        raise ValueError(f'no shipped data folder {name!r}; there are presets and assets')
    installed = Path(str(resources.files('explorer'))) / name
    if installed.is_dir():  # a wheel: package data beside the code
        return installed
    return _SOURCE_ROOT / name  # a source checkout (plain or editable install)
