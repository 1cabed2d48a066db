"""MetaFormer Explorer: compose MetaFormer vision networks stage by stage, count, measure, explain and compare them.

The short forms below load lazily, so `import explorer` stays as light as the spec (no torch until a model is
built):

    from explorer import ArchSpec, load_spec, build_model, analytic_cost
"""

from __future__ import annotations

import importlib

__version__ = '0.1.0'

_EXPORTS = {
    'ArchSpec': 'explorer.core.spec',
    'SpecError': 'explorer.core.spec',
    'load_spec': 'explorer.core.catalog',
    'preset_names': 'explorer.core.catalog',
    'build_model': 'explorer.core.build',
    'analytic_cost': 'explorer.measure.analytic',
    'fvcore_cost': 'explorer.measure.fvcore_count',
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(_EXPORTS[name]), name)
