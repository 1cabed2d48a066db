"""`explorer export`: a design as a timm model (a module registering it, its spec, trained weights) and ONNX."""

from __future__ import annotations

import sys

from explorer.cli.args import print_json, writable_path


def register(sub) -> None:
    p = sub.add_parser(
        'export',
        help='write a design as a timm model (timm.create_model(NAME)) and optionally ONNX',
        description='Write NAME.py (registers NAME with timm), NAME.json (the spec), NAME.safetensors (a trained '
        "checkpoint's weights: timm.create_model(NAME, pretrained=True) loads them offline) and with --onnx "
        'NAME.onnx, checked against PyTorch with onnxruntime. The module needs the explorer package installed.',
    )
    p.add_argument('spec', help='preset name, JSON spec file, trained .safetensors checkpoint or trained model name')
    p.add_argument('--to', required=True, metavar='DIR', help='folder to write into (created if missing)')
    p.add_argument(
        '--name',
        default=None,
        help="timm model name, a Python identifier (default: the checkpoint's file stem or the spec's name)",
    )
    p.add_argument('--onnx', action='store_true', help='also write NAME.onnx and compare it with PyTorch')
    p.add_argument('--overwrite', action='store_true', help='replace files that exist already')
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    """0 when everything asked for was written and checked; 1 when the ONNX export or its check failed (the other
    files are written; the reason is printed); 2 (raised) for input errors."""
    from explorer.train.export import export_design

    writable_path('--to', args.to, folder=True)
    # SPEC is resolved as everywhere (explorer.cli.specs.resolve_spec) but by export_design, which also needs
    # the checkpoint's preprocessing and where the spec came from (the default model name)
    res = export_design(args.spec, args.to, name=args.name, onnx=args.onnx, overwrite=args.overwrite)
    ok = res.onnx is None or res.onnx.ok
    if args.json:
        print_json(res.to_dict())
    else:
        _print(res)
    if not ok:
        print(f'error: ONNX: {res.onnx.error}', file=sys.stderr)
    return 0 if ok else 1


def _print(res) -> None:
    cfg = res.pretrained_cfg
    print(f'{res.name}: from {res.source}; weights: {res.weights}')
    for kind, path in res.files.items():
        print(f'  {kind:<8} {path}')
    print(
        f'  pretrained_cfg: input_size {cfg["input_size"]}, mean {cfg["mean"]}, std {cfg["std"]}, '
        f'{cfg["interpolation"]}, crop_pct {cfg["crop_pct"]}, {cfg["num_classes"]} classes'
    )
    if res.onnx is not None and res.onnx.max_abs_diff is not None:
        o = res.onnx
        verdict = 'match' if o.ok else 'DIFFER'
        print(
            f'  ONNX (opset {o.opset}, batch axis dynamic): onnxruntime and PyTorch {verdict} on {o.inputs}; '
            f'max |diff| {o.max_abs_diff:.2e} (rtol {o.rtol:g}, atol {o.atol:g})'
        )
    pretrained = ', pretrained=True' if 'weights' in res.files else ''
    print(
        f'Use: import sys; sys.path.insert(0, {res.out_dir!r}); import {res.name}; '
        f"model = timm.create_model('{res.name}'{pretrained})"
    )
