"""`explorer presets` and `explorer show`."""

from __future__ import annotations

from explorer.cli.args import print_json


def register(sub) -> None:
    p = sub.add_parser('presets', help='list the preset architectures (published models)')
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser('show', help='module summary of a spec: per-stage mixer, depth, dim, output shape, params')
    p.add_argument('spec', help='preset name, JSON spec file, trained .safetensors checkpoint or trained model name')
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.set_defaults(func=cmd_show)


def cmd_presets(args) -> int:
    from explorer.core.catalog import load_spec, preset_names

    rows = []
    for name in preset_names():
        m = load_spec(name).meta
        rows.append(
            {
                'name': name,
                'family': m.get('family', ''),
                'top1': m.get('top1'),
                'params_m': m.get('params_m'),
                'gmacs': m.get('gmacs'),
                'timm': m.get('timm_name'),
                'pretrained_tag': m.get('pretrained_tag'),
            }
        )
    if args.json:
        print_json(rows)
        return 0
    fmt = '{:<28} {:<15} {:>6} {:>9} {:>7}  {}'
    print(fmt.format('name', 'family', 'top-1', 'params(M)', 'GMACs', 'timm pretrained'))
    for r in rows:
        tag = f'{r["timm"]}.{r["pretrained_tag"]}' if r['pretrained_tag'] else '-'
        print(fmt.format(r['name'], r['family'], _num(r['top1']), _num(r['params_m']), _num(r['gmacs']), tag))
    print('Published figures (ImageNet-1k, 224x224); MACs: one multiply-accumulate = 1. Source in each preset file.')
    return 0


def _num(v) -> str:
    return '-' if v is None else f'{v:g}'


def cmd_show(args) -> int:
    from explorer.cli.specs import resolve_spec
    from explorer.measure.summary import summarize

    spec, _ = resolve_spec(args.spec)
    info = summarize(spec)
    if args.json:
        print_json(info)
        return 0
    print(
        f'{spec.name}: {spec.num_stages} stages, input {spec.in_chans}x{spec.img_size}x{spec.img_size}, '
        f'{spec.num_classes} classes, act {spec.mlp_act}, norm {spec.norm}, head {spec.head}'
    )
    fmt = '{:<5} {:<12} {:>5} {:>5} {:>6} {:>16} {:>12}'
    print(fmt.format('stage', 'mixer', 'depth', 'dim', 'mlp', 'output (C,H,W)', 'params'))
    for row in info['stages']:
        c, h, w = row['out_shape']
        print(
            fmt.format(
                f'S{row["index"] + 1}',
                row['mixer'],
                row['depth'],
                row['dim'],
                f'{row["mlp_ratio"]:g}',
                f'{c}x{h}x{w}',
                f'{row["params"]:,}',
            )
        )
    print(
        f'stem {info["stem_params"]:,} params; head {info["head_params"]:,} params; '
        f'total {info["params"]:,} params ({info["frozen_params"]:,} frozen)'
    )
    return 0
