"""Specs as text to share: the compact form, the `?spec=` link token, pretty JSON and a Python snippet."""

from __future__ import annotations

import base64
import json
import pprint
import string
from dataclasses import fields

from explorer.core.catalog import matching_preset, parse_spec, with_published_meta
from explorer.core.registry import show
from explorer.core.spec import ArchSpec, SpecError, StageSpec, default_res_scale

MAX_SHARE_CHARS = 20_000  # a share token longer than this is not a spec anybody composed
SHARE_ALPHABET = frozenset(string.ascii_letters + string.digits + '-_')  # URL-safe base64; padding stripped


def compact_spec(spec: dict | str) -> dict:
    """The spec without metadata and without fields at their defaults: what ArchSpec.from_dict rebuilds
    into the same network. Shortest form for links and snippets."""
    s = parse_spec(spec)
    full = s.to_dict()
    defaults = ArchSpec(stages=[]).to_dict()
    out = {}
    for k, v in full.items():
        if k in ('meta', 'stages'):
            continue
        if k == 'res_scale_init':
            if v != default_res_scale(s.num_stages):
                out[k] = v
        elif v != defaults[k]:
            out[k] = v
    sdef = {f.name: f.default for f in fields(StageSpec) if f.name in ('mlp_ratio', 'downsample', 'pos_embed')}
    out['stages'] = [
        {k: v for k, v in st.items() if not (k in sdef and v == sdef[k]) and not (k == 'mixer_args' and not v)}
        for st in full['stages']
    ]
    return out


def encode_share(spec: dict | str) -> str:
    """URL-safe base64 (no padding) of the compact JSON: the value of the app's `?spec=` query parameter."""
    text = json.dumps(compact_spec(spec), separators=(',', ':'))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip('=')


def decode_share(token: str) -> dict:
    """The spec dict a share token describes (validated; published figures restored if it is a preset)."""
    token = (token or '').strip()
    if not token or len(token) > MAX_SHARE_CHARS:
        raise SpecError(
            [('spec', f'the share link parameter must be 1 to {MAX_SHARE_CHARS} characters, got {len(token)}')]
        )
    # checked, not left to urlsafe_b64decode: it drops every character outside its alphabet, so '@@@@' decoded
    # to nothing and was reported as text that is not JSON
    data = token.rstrip('=')
    bad = next((i for i, c in enumerate(data) if c not in SHARE_ALPHABET), None)
    if bad is not None:
        raise _not_share(f'character {bad + 1} ({show(data[bad])}) is not allowed; allowed: A-Z, a-z, 0-9, - and _')
    if not data or len(data) % 4 == 1:  # the one length b64decode refuses once the alphabet is right
        raise _not_share(f'{len(data):,} characters (padding aside) is a length no base64 text has; cut short?')
    try:
        text = base64.b64decode(data + '=' * (-len(data) % 4), altchars=b'-_', validate=True).decode('utf-8')
    except UnicodeDecodeError:
        raise _not_share('it decodes to bytes that are not UTF-8 text') from None
    return with_published_meta(ArchSpec.from_json(text)).to_dict()


def _not_share(why: str) -> SpecError:
    return SpecError([('spec', f'the share link parameter (?spec=) is not URL-safe base64 of a JSON spec: {why}')])


def python_snippet(spec: dict | str) -> str:
    """Python that rebuilds the composed model with this package."""
    s = parse_spec(spec)
    preset = matching_preset(s)
    body = pprint.pformat(compact_spec(s), indent=1, width=96, sort_dicts=False)
    lines = ['from explorer import ArchSpec, build_model', '']
    if preset:
        lines += [
            f'# the preset {preset!r}: explorer.load_spec({preset!r}) also gives it,',
            '# with its published figures',
        ]
    lines += [
        f'spec = ArchSpec.from_dict({body})',
        'model = build_model(spec).eval()',
        f'# input: (batch, {s.in_chans}, {s.img_size}, {s.img_size}) -> logits (batch, {s.num_classes})',
    ]
    return '\n'.join(lines) + '\n'


def spec_json(spec: dict | str) -> str:
    """Pretty JSON of the validated spec (published figures kept only while it matches a preset)."""
    return with_published_meta(parse_spec(spec)).to_json()


def load_json_text(text: str) -> dict:
    """An uploaded spec file's text -> validated spec dict."""
    return with_published_meta(ArchSpec.from_json(text)).to_dict()
