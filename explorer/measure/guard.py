"""Resource guard: refuse a request whose cost would take the machine down, before anything is built or run.

Costs come from the analytic counter (no model is built): parameters, MACs per call (batch x per-image MACs)
and activation memory (batch x activation elements x bytes per element). Limits default to what is safe on
a 24 GiB machine without a GPU and can be changed with environment variables (for a team server) or by
passing `Limits(...)`:

    EXPLORER_MAX_PARAMS_M     parameters, millions                    (default 500)
    EXPLORER_MAX_GMACS        GMACs of one forward call, whole batch   (default 2000)
    EXPLORER_MAX_ACT_GIB      activation memory of one call, GiB       (default 8)
    EXPLORER_MAX_BATCH        batch size of a speed run or training    (default 256)
    EXPLORER_MAX_IMG_SIZE     input resolution of any run              (default 1024)
    EXPLORER_MAX_BENCH_S      wall-clock seconds of one speed run      (default 60; the app's, not the CLI's)
    EXPLORER_MAX_TRAIN_S      wall-clock seconds of one training       (default 3600; the app's, not the CLI's)
    EXPLORER_MAX_VERIFY_S     wall-clock seconds of one fvcore verification in the app (default 30)
    EXPLORER_MAX_RUNS_GB      trained models the app keeps in its runs folder, GiB (default 20; not the CLI's)
    EXPLORER_MAX_RUNS         trained models the app keeps in its runs folder, files (default 1000; not the CLI's)
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

from explorer.core.registry import show
from explorer.core.spec import ArchSpec, SpecError
from explorer.measure.analytic import BYTES_PER_ELEMENT, analytic_cost


class ResourceError(SpecError):
    """A request over a resource limit. Subclass of SpecError: the same clear-message path everywhere."""


@dataclass(frozen=True)
class Limits:
    max_params_m: float = 500.0
    max_gmacs: float = 2000.0
    max_act_gib: float = 8.0
    max_batch: int = 256
    max_img_size: int = 1024
    max_bench_s: float = 60.0
    max_train_s: float = 3600.0
    max_runs_gb: float = 20.0
    max_verify_s: float = 30.0
    max_runs: int = 1000

    @classmethod
    def from_env(cls, environ=None) -> Limits:
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(f'EXPLORER_{f.name.upper()}')
            if raw is None:
                continue
            try:
                value = type(f.default)(raw)  # int or float, as the default
            except ValueError:
                raise SpecError([('', f'EXPLORER_{f.name.upper()}={raw!r} is not a number')]) from None
            if not math.isfinite(value) or value <= 0:
                raise SpecError([('', f'EXPLORER_{f.name.upper()}={raw!r} must be positive')])
            values[f.name] = value
        return cls(**values)


def check_inputs(
    spec: ArchSpec, batch_size: int = 1, dtype: str = 'fp32', img_size: int | None = None, limits: Limits | None = None
) -> int:
    """Check the numbers that size a request (batch, resolution, dtype) against the limits; return the
    resolution. Raises ResourceError naming each bad one."""
    limits = limits or Limits.from_env()
    size = spec.img_size if img_size is None else img_size
    errors = []
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or not 1 <= batch_size <= limits.max_batch:
        errors.append(
            ('batch_size', f'{show(batch_size)} is not allowed; allowed 1 to {limits.max_batch} (EXPLORER_MAX_BATCH)')
        )
    if not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= limits.max_img_size:
        errors.append(
            ('img_size', f'{show(size)} is not allowed; allowed 8 to {limits.max_img_size} (EXPLORER_MAX_IMG_SIZE)')
        )
    if not isinstance(dtype, str) or dtype not in BYTES_PER_ELEMENT:  # a list is unhashable: TypeError
        errors.append(('dtype', f'{show(dtype)} is not allowed; choose from {", ".join(BYTES_PER_ELEMENT)}'))
    if errors:
        raise ResourceError(errors)
    return size


def largest_batch(spec: ArchSpec, wanted: int, dtype: str = 'fp32', limits: Limits | None = None) -> int:
    """The largest inference batch up to `wanted` whose activations and MACs stay within the limits (at least 1):
    for batches the server sizes itself, such as a training run's evaluation (1000 test images at a time), which
    no request field names and so `check_request` never saw (a 64 px stride-1 design that trains at batch 128
    within 8 GiB needed about 17 GiB to evaluate)."""
    limits = limits or Limits.from_env()
    cost = analytic_cost(spec)
    per_image = cost.act_elements * BYTES_PER_ELEMENT[dtype] / 2**30
    b = wanted
    if per_image > 0:
        b = min(b, int(limits.max_act_gib / per_image))
    if cost.macs > 0:
        b = min(b, int(limits.max_gmacs * 1e9 / cost.macs))
    return max(1, b)


def check_request(
    spec: ArchSpec,
    batch_size: int = 1,
    dtype: str = 'fp32',
    img_size: int | None = None,
    limits: Limits | None = None,
    training: bool = False,
) -> dict:
    """Check a build/run of `spec` against the limits; return the estimated costs, or raise ResourceError
    naming each figure and its limit. Training keeps activations for the backward pass: counted as 3x."""
    limits = limits or Limits.from_env()
    size = check_inputs(spec, batch_size, dtype, img_size, limits)
    errors = []
    cost = analytic_cost(spec, img_size=size)
    batch = batch_size
    gmacs = cost.macs * batch / 1e9
    act_gib = cost.act_elements * batch * BYTES_PER_ELEMENT[dtype] * (3 if training else 1) / 2**30
    params_m = cost.params / 1e6
    checks = [
        ('params', params_m, limits.max_params_m, f'{params_m:,.1f} M parameters', 'M', 'EXPLORER_MAX_PARAMS_M'),
        (
            'macs',
            gmacs,
            limits.max_gmacs,
            f'{gmacs:,.1f} GMACs per call (batch {batch})',
            'GMACs',
            'EXPLORER_MAX_GMACS',
        ),
        (
            'activations',
            act_gib,
            limits.max_act_gib,
            f'{act_gib:,.2f} GiB of activations (batch {batch}, {dtype}{", training" if training else ""})',
            'GiB',
            'EXPLORER_MAX_ACT_GIB',
        ),
    ]
    for key, value, limit, text, unit, env in checks:
        if value > limit:
            errors.append((key, f'{text} is over the limit of {limit:,g} {unit} (set {env} to change it)'))
    if errors:
        raise ResourceError(errors)
    return {
        'params': cost.params,
        'macs_per_call': cost.macs * batch,
        'act_bytes': int(act_gib * 2**30),
        'batch_size': batch,
        'img_size': size,
        'dtype': dtype,
    }
