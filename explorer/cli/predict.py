"""`explorer predict`, `explorer attribute`, `explorer mixing-map` and `explorer erf`.

SPEC is a preset name, a JSON spec file, or a MetaFormer Explorer trained checkpoint (.safetensors with the
spec in its metadata; its weights are then the default). --weights: 'pretrained' (timm, through the Hugging
Face cache), 'random', or a checkpoint path; the default is the checkpoint given as SPEC, else 'pretrained'
for presets that have timm weights, else 'random'.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

from explorer.cli.args import int_in, print_json, writable_path  # IG_MAX_STEPS and MAX_BATCH of explain.session: 256
from explorer.core.errors import UserError


def register(sub) -> None:
    p = sub.add_parser('predict', help='top-k classes of an image (pretrained, checkpoint or random weights)')
    _common(p)
    p.add_argument('--topk', type=int, default=5, help='how many classes to list (default 5)')
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser('attribute', help='attribution map of an image (captum) written as a PNG overlay')
    _common(p)
    p.add_argument(
        '--method', default='ig', help='ig, saliency, gradshap, occlusion, gradcam or smoothgrad (default ig)'
    )
    p.add_argument('--target', type=int, default=None, help='class index (default: the predicted class)')
    p.add_argument('--stage', type=int, default=-1, help='stage whose output GradCAM explains (default -1: last)')
    p.add_argument('--smoothgrad', action='store_true', help='average over noisy copies (NoiseTunnel)')
    p.add_argument(
        '--baseline',
        default='black',
        help='what IG starts from, Occlusion paints and GradientShap samples: black, blurred (the input under a '
        'Gaussian blur, same mean colour) or noise (seeded uniform pixels) (default black)',
    )
    p.add_argument(
        '--seed',
        type=int_in(0, 2**31 - 1),
        default=0,
        help="seed of the noise baseline and of GradientShap's and SmoothGrad's samples (default 0)",
    )
    p.add_argument(
        '--steps',
        type=int_in(1, 256),
        default=16,
        help='Integrated Gradients steps to start from; doubled until the completeness gap is under 1%% '
        '(at most 256) (default 16)',
    )
    p.add_argument(
        '--batch', type=int_in(1, 256), default=8, help='rows per forward pass: bounds memory (default 8, at most 256)'
    )
    p.add_argument(
        '--no-deletion',
        action='store_true',
        help='skip the faithfulness scores (deletion and insertion curves beside random orders)',
    )
    p.add_argument('--out', required=True, help='PNG file: input | overlay | colour scale')
    p.set_defaults(func=cmd_attribute)

    p = sub.add_parser('mixing-map', help='token-mixing weights of one block for one query token')
    _common(p, image_required=False)
    p.add_argument('--stage', type=int, default=0, help='stage index (default 0)')
    p.add_argument('--block', type=int, default=0, help='block index within the stage (default 0)')
    p.add_argument('--query', default=None, help='output token as ROW,COL (default: the centre)')
    # '--query -1,0' reaches the range check (argparse before 3.13 read '-1,0' as an option): no option of this
    # command looks like a number
    p._negative_number_matcher = re.compile(r'^-\d')
    p.add_argument('--method', default='auto', choices=('auto', 'exact', 'jacobian'))
    p.add_argument(
        '--reduce',
        default='diag',
        choices=('diag', 'norm'),
        help='Jacobian reduction over channels: diag (signed) or norm (default diag)',
    )
    p.add_argument('--out', default=None, help='optional PNG of the map over the image')
    p.set_defaults(func=cmd_mixing)

    p = sub.add_parser('erf', help='effective receptive field of every stage (area holding 20/50/90%%)')
    p.add_argument('spec', help='preset name, JSON spec file, trained .safetensors checkpoint or trained model name')
    p.add_argument(
        'images',
        nargs='*',
        help='images to average over (default: the shipped examples the model is for: the Fashion-MNIST '
        'images for a grayscale model, else the photos)',
    )
    p.add_argument('--weights', default=None, help='pretrained | random | PATH')
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.set_defaults(func=cmd_erf)


def _common(p, image_required: bool = True) -> None:
    p.add_argument('spec', help='preset name, JSON spec, trained .safetensors checkpoint or trained model name')
    p.add_argument(
        'image',
        nargs=None if image_required else '?',
        help="image file (PNG, JPEG, ...) or a shipped example's file name",
    )
    p.add_argument('--weights', default=None, help='pretrained | random | PATH (default: see `explorer predict -h`)')
    p.add_argument('--json', action='store_true', help='machine-readable output')


def _user_errors(fn):
    """Library errors about the user's input become UserError: one message, exit status 2."""

    @functools.wraps(fn)
    def wrap(args):
        from explorer.core.spec import SpecError
        from explorer.explain.images import ImageError
        from explorer.explain.weights import WeightsError

        try:
            return fn(args)
        except SpecError:
            raise
        except (ImageError, WeightsError, ValueError) as e:
            raise UserError(str(e)) from None

    return wrap


def load(spec_arg: str | tuple, weights: str | None):
    """The loaded model (explorer.explain.session.Loaded) for a SPEC argument, or what resolve_spec made of
    one, and a --weights value."""
    from explorer.cli.specs import resolve_spec
    from explorer.explain.session import open_model

    spec, checkpoint = resolve_spec(spec_arg) if isinstance(spec_arg, str) else spec_arg
    random_of = checkpoint if weights == 'random' else None  # a checkpoint's spec, random: its preprocessing
    return open_model(spec, weights or checkpoint, preprocessing_of=random_of)


def _image_path(arg: str) -> str:
    """An image file, or the file of the shipped example image so named (`explorer predict fmnist_hybrid
    00000_ankle_boot.png` works from any directory): what the command reads, so --out is compared with it."""
    from explorer.explain.images import example_path

    example = None if Path(arg).exists() else example_path(arg)
    return str(example or arg)


def _image(arg: str):
    from explorer.explain.images import load_image

    return load_image(_image_path(arg))


def _save_png(image, out: str | Path) -> None:
    """Writes a PIL image as PNG beside `out` and renames it there: an interrupted run leaves the file that was
    there before (a rerun replaces it, like any plot), never half a PNG."""
    from explorer.core.files import atomic_write

    atomic_write(out, lambda tmp: image.save(tmp, format='PNG'))


def _progress(enabled: bool):
    if not (enabled and sys.stderr.isatty()):
        return None

    def show(done: int, total: int, phase: str = '') -> None:
        n = int(30 * done / total)
        end = '' if done < total else '\n'
        print(f'\r{phase:<13}[{"#" * n}{" " * (30 - n)}] {done}/{total}', end=end, file=sys.stderr)

    return show


@_user_errors
def cmd_predict(args) -> int:
    from explorer.explain.predict import predict

    image = _image(args.image)
    m = load(args.spec, args.weights)
    res = predict(m.model, image, m.cfg, topk=args.topk, weights=m.info)
    if args.json:
        print_json({'spec': m.spec.name, 'image': args.image, **res.to_dict()})
        return 0
    print(f'{m.spec.name}: {m.info.banner()}')
    print(f'preprocessing: {_cfg_text(m.cfg)}')
    for p in res.top:
        print(f'{p.prob:7.2%}  {p.index:>5}  {p.label}')
    return 0


def _cfg_text(cfg: dict) -> str:
    c, h, w = cfg['input_size']
    mean = ', '.join(f'{v:.3f}' for v in cfg['mean'])
    std = ', '.join(f'{v:.3f}' for v in cfg['std'])
    pad = f', pad from {cfg["pad_from"]}' if cfg.get('pad_from') else ''
    pad += f', resized from {cfg["resize_from"]} as in training' if cfg.get('resize_from') else ''
    return (
        f'{cfg["interpolation"]} resize, crop_pct {cfg["crop_pct"]:g} -> {c}x{h}x{w}{pad}, mean ({mean}), std ({std})'
    )


@_user_errors
def cmd_attribute(args) -> int:
    from explorer.cli.specs import resolve_spec
    from explorer.explain.methods import resolve_baseline, resolve_method
    from explorer.explain.session import completeness_text, explain
    from explorer.viz.predict import overlay_png

    method, implied = resolve_method(args.method)  # 'smoothgrad' names SmoothGrad saliency
    baseline = resolve_baseline(args.baseline)
    if Path(args.out).suffix.lower() != '.png':
        raise UserError(f'--out: {args.out!r} must end in .png')
    resolved = resolve_spec(args.spec)  # the spec and the image are checked before --out's folders are made
    image = _image(args.image)
    out = writable_path('--out', args.out, inputs=(_image_path(args.image),), make_parents=True)
    m = load(resolved, args.weights)
    e = explain(
        m,
        image,
        method,
        target=args.target,
        stage=args.stage,
        smoothgrad=args.smoothgrad or implied,
        n_steps=args.steps,
        batch=args.batch,
        deletion=not args.no_deletion,
        progress=_progress(not args.json),
        baseline=baseline,
        seed=args.seed,
    )
    _save_png(overlay_png(e.image, e.map, f'{m.spec.name} {e.title}: {e.label} ({e.target})'), out)
    result = {
        'spec': m.spec.name,
        'image': args.image,
        'method': method,
        'smoothgrad': e.smoothgrad,  # --method smoothgrad implies it
        'baseline': e.baseline,  # None for the methods without one (saliency, gradcam)
        'baseline_text': e.baseline_text,
        'warning': e.warning,  # set when the weights are random: nothing to attribute
        'target': e.target,
        'label': e.label,
        'target_prob': e.prob,
        'map': {
            'shape': list(e.map.shape),
            'min': float(e.map.min()),
            'max': float(e.map.max()),
            'sum': float(e.map.sum()),
        },
        'deletion_auc': e.curve.auc if e.curve else None,
        'faithfulness': e.faithfulness.to_dict() if e.faithfulness else None,
        'completeness': e.completeness,  # Integrated Gradients: steps, gap, converged
        'completeness_text': completeness_text(e.completeness, e.baseline) if e.completeness else None,
        'settings': e.settings,  # layout and dtypes of the passes
        'seconds': round(e.seconds, 3),
        'out': str(out),
        'weights': m.info.to_dict(),
    }
    if args.json:
        print_json(result)
        return 0
    print(f'{m.spec.name}: {m.info.banner()}')
    if e.warning:
        print(f'WARNING: {e.warning}')
    print(
        f'{e.title} for class {e.target} ({e.label}, p = {e.prob:.3f}); '
        f'map {e.map.shape[0]}x{e.map.shape[1]}, range [{e.map.min():.3g}, {e.map.max():.3g}]; {e.seconds:.1f} s'
    )
    print(e.baseline_text)
    if e.completeness:
        print(completeness_text(e.completeness, e.baseline))
    if e.faithfulness:
        print(f'how far to trust it: {e.faithfulness.text()}')
    print(f'wrote {out}')
    return 0


@_user_errors
def cmd_mixing(args) -> int:
    from explorer.cli.specs import resolve_spec
    from explorer.explain.mixing import mixing_map
    from explorer.explain.predict import preprocess, to_display
    from explorer.viz.predict import overlay_png

    query = None
    if args.query:
        try:
            query = tuple(int(v) for v in args.query.split(','))
            assert len(query) == 2
        except (ValueError, AssertionError):
            raise UserError(f'--query: {args.query!r} must be ROW,COL (two integers)') from None
    if args.out and Path(args.out).suffix.lower() != '.png':
        raise UserError(f'--out: {args.out!r} must end in .png')
    resolved = resolve_spec(args.spec)  # the spec and the image are checked before --out's folders are made
    image = _image(args.image) if args.image else None
    if args.out:
        inputs = (_image_path(args.image),) if args.image else ()
        writable_path('--out', args.out, inputs=inputs, make_parents=True)
    m = load(resolved, args.weights)
    spec, info, cfg = m.spec, m.info, m.cfg
    x = preprocess(image, cfg) if image is not None else None
    mm = mixing_map(m.model, args.stage, args.block, query, x, method=args.method, reduce=args.reduce)
    if args.out:
        import numpy as np
        from PIL import Image

        H, W = cfg['input_size'][1:]
        up = np.kron(mm.mean, np.ones((H // mm.grid[0], W // mm.grid[1])))
        img = to_display(x, cfg) if x is not None else np.full((up.shape[0], up.shape[1], 3), 128, np.uint8)
        if img.shape[:2] != up.shape:
            img = np.asarray(Image.fromarray(img).resize(up.shape[::-1]))
        title = f'{spec.name} S{mm.stage + 1} block {mm.block + 1} {mm.mixer} {mm.method} q={mm.query}'
        _save_png(overlay_png(img, up, title), args.out)
    if args.json:
        # 'weights' is the mixing array: the provenance (and a random model's warning) is 'weights_info'
        source = 'image' if x is not None else 'seeded random mixer input'  # as the API's /mixing_map says
        print_json({'spec': spec.name, 'weights_info': info.to_dict(), 'input': source, **mm.to_dict()})
        return 0
    print(f'{spec.name}: {info.banner()}')
    print(
        f'stage {mm.stage} block {mm.block} (S{mm.stage + 1} block {mm.block + 1}): {mm.mixer}, {mm.method}'
        f'{f" ({mm.reduce})" if mm.reduce else ""}, query token {mm.query} on a {mm.grid[0]}x{mm.grid[1]} grid'
        f'{f", {mm.weights.shape[0]} heads (mean shown)" if mm.weights.shape[0] > 1 else ""}'
        f'{"; input: a seeded random mixer input (no IMAGE given)" if mm.depends_on_input and x is None else ""}'
    )
    m = mm.mean
    if max(m.shape) <= 16:
        for row in m:
            print(' '.join(f'{v:7.3f}' for v in row))
    else:
        r, c = mm.query
        print(f'{m.shape[0]}x{m.shape[1]} map; 7x7 neighbourhood of the query:')
        for row in m[max(0, r - 3) : r + 4, max(0, c - 3) : c + 4]:
            print(' '.join(f'{v:7.3f}' for v in row))
    if args.out:
        print(f'wrote {args.out}')
    return 0


@_user_errors
def cmd_erf(args) -> int:
    from explorer.explain.images import examples_for
    from explorer.explain.session import receptive_fields

    m = load(args.spec, args.weights)
    paths = args.images or [str(p) for p in examples_for(m.spec.in_chans)]
    images = (_image(p) for p in paths)  # decoded as they are used: a few at a time, whatever the count
    rows = [{k: v for k, v in r.items() if k != 'map'} for r in receptive_fields(m, images)]
    if args.json:
        print_json({'spec': m.spec.name, 'weights': m.info.banner(), 'images': paths, 'stages': rows})
        return 0
    print(f'{m.spec.name}: {m.info.banner()}; {len(paths)} images at {m.cfg["input_size"][1]}x{m.cfg["input_size"][2]}')
    print('effective receptive field of the centre token: fraction of the image area holding 20/50/90% of |gradient|')
    print(f'{"stage":<6}{"mixer":<13}{"20%":>8}{"50%":>8}{"90%":>8}')
    for r in rows:
        a = r['area']
        print(f'S{r["stage"] + 1:<5}{r["mixer"]:<13}{a["20%"]:>8.2%}{a["50%"]:>8.2%}{a["90%"]:>8.2%}')
    return 0
