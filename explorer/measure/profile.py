"""What the app and the CLI ask of the measuring layer, in one place: the analytic profile of a spec, its
fvcore verification (cached), activation memory and a speed run. Spec dicts, JSON text or preset names in;
plain dicts out.
"""

from __future__ import annotations

import functools
import json

from explorer.core.catalog import matching_preset, parse_spec
from explorer.core.spec import ArchSpec, network_key
from explorer.measure.units import whole_number


def profile(spec: dict | str, img_size: int | None = None) -> dict:
    """Analytic params and MACs (no model is built): the counter's report plus `preset`, the preset this
    spec matches (published figures apply) or None. MACs: one multiply-accumulate = 1, batch 1."""
    from explorer.measure.analytic import analytic_cost

    s = parse_spec(spec)
    out = analytic_cost(s, img_size=whole_number(img_size)).to_dict()  # JSON clients send 256.0 for 256
    out['preset'] = matching_preset(s)
    return out


@functools.lru_cache(maxsize=64)
def _verified(key: str, img_size: int | None) -> str:
    from explorer.measure.fvcore_count import fvcore_cost

    return json.dumps(fvcore_cost(ArchSpec.from_json(key), img_size=img_size).to_dict())


def verify(spec: dict | str, img_size: int | None = None) -> dict:
    """fvcore's count of the built model (slower: builds it). Cached by spec, so asking twice is free."""
    from explorer.measure.guard import check_request

    s, img_size = parse_spec(spec), whole_number(img_size)
    check_request(s, batch_size=1, img_size=img_size)  # before building: refuse what would not fit
    d = s.to_dict()
    d['meta'] = {}
    return json.loads(_verified(json.dumps(d, sort_keys=True), img_size))


def memory(spec: dict | str, batch_size: int = 1, dtype: str = 'fp32', img_size: int | None = None) -> dict:
    """Activation memory per stage and in total (bytes) for a forward pass (explorer.measure.analytic's rule)."""
    from explorer.measure.analytic import activation_memory
    from explorer.measure.guard import check_inputs

    s, batch_size, img_size = parse_spec(spec), whole_number(batch_size), whole_number(img_size)
    check_inputs(s, batch_size, dtype, img_size)  # the same bounds as a run of that batch and size
    return activation_memory(s, batch_size=batch_size, dtype=dtype, img_size=img_size)


def available_devices() -> list[str]:
    """'auto' first, then every device this process can time on."""
    import torch

    out = ['auto', 'cpu']
    if torch.cuda.is_available():
        out += [f'cuda:{i}' for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, 'mps', None) is not None and torch.backends.mps.is_available():
        out.append('mps')
    return out


def network_id(spec) -> str:
    """A short fingerprint of the network a spec builds (its name and metadata aside): 128 bits of SHA-256."""
    import hashlib

    return hashlib.sha256(network_key(parse_spec(spec)).encode()).hexdigest()[:32]


def run_names(history) -> list[str]:
    """Each measurement's name as a table or chart shows it: its own name, and where the history holds another
    network under the same name (a changed preset, or a shared link's design named after one), the one that is the
    preset of that name is marked '(the preset)' and any other carries a short tag of its network (`network_id`)."""
    rows = [r if isinstance(r, dict) else {} for r in history or []]
    nets: dict[str, set] = {}
    for r in rows:
        nets.setdefault(str(r.get('name', '')), set()).add(r.get('network'))
    out = []
    for r in rows:
        name = str(r.get('name', ''))
        if len(nets[name]) < 2:
            out.append(name)
        elif r.get('preset') == name:
            out.append(f'{name} (the preset)')
        else:
            out.append(f'{name} (network {str(r["network"])[:6]})' if r.get('network') else f'{name} (network unknown)')
    return out


def bench(
    spec: dict | str,
    device: str = 'auto',
    batch_size: int = 8,
    dtype: str = 'fp32',
    channels_last: bool = False,
    compile: bool = False,
    progress=None,
    repeats: int = 1,
) -> dict:
    """Measure throughput and latency (explorer.measure.speed.bench) and return its dict plus the spec's name and the
    preset it matches (None when custom). `repeats`: rounds of timed runs (their throughputs show the spread)."""
    from explorer.measure.guard import Limits
    from explorer.measure.speed import bench as speed_bench  # it runs the resource guard before building

    s = parse_spec(spec)
    result = speed_bench(
        s,
        device=device,
        batch_size=whole_number(batch_size),
        dtype=dtype,
        channels_last=channels_last,
        compile=compile,
        progress=progress,
        time_budget_s=Limits.from_env().max_bench_s,  # the app's speed slot is shared: one run may not hold it
        repeats=whole_number(repeats),
    )
    out = result.to_dict()
    out['name'] = s.name
    out['preset'] = matching_preset(s)
    out['network'] = network_id(s)  # what a chart matches a measurement to: two networks may share a name
    return out
