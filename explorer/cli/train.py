"""`explorer train` and `explorer evaluate`: train a spec on Fashion-MNIST, re-evaluate a checkpoint."""

from __future__ import annotations

import json

from explorer.core.errors import UserError


def register(sub) -> None:
    p = sub.add_parser(
        'train',
        help='train a spec (in_chans 1, img_size 28-32) on Fashion-MNIST; '
        'writes a .safetensors checkpoint with spec, preprocessing and metrics',
    )
    p.add_argument('spec', help='preset name or path to a JSON spec')
    p.add_argument('--dataset', default='fashion-mnist', choices=['fashion-mnist'])
    p.add_argument('--epochs', type=float, default=5, help='epochs to train (default 5; fractions allowed)')
    p.add_argument(
        '--time-budget',
        type=float,
        default=None,
        metavar='S',
        help='stop after S seconds of training; the cosine schedule is fitted to the steps that fit',
    )
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--lr', type=float, default=None, help='peak learning rate (default 2e-3)')
    p.add_argument(
        '--erase',
        type=float,
        default=None,
        metavar='P',
        help='random erasing: chance per image of blanking one rectangle (default 0: off)',
    )
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=None, help="torch CPU threads (default: torch's setting)")
    p.add_argument('--data-dir', default=None, metavar='PATH', help='directory holding the Fashion-MNIST idx files')
    p.add_argument('--download', action='store_true', help='download with torchvision when no local copy exists')
    p.add_argument('--train-limit', type=int, default=None, metavar='N', help='use the first N training images')
    p.add_argument('--out', required=True, metavar='FILE', help='checkpoint to write (.safetensors)')
    p.add_argument('--quiet', action='store_true', help='no per-epoch lines')
    p.add_argument('--json', action='store_true', help='print the metrics as JSON at the end')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('evaluate', help='re-evaluate a trained checkpoint on the Fashion-MNIST test set')
    p.add_argument('checkpoint', help='a .safetensors file written by `explorer train`')
    p.add_argument('--dataset', default='fashion-mnist', choices=['fashion-mnist'])
    p.add_argument('--data-dir', default=None, metavar='PATH')
    p.add_argument('--batch-size', type=int, default=1000)
    p.add_argument('--json', action='store_true', help='machine-readable output')
    p.set_defaults(func=cmd_evaluate)


def _user_errors(fn):
    """Dataset and recipe problems are the user's to fix: one clear message, exit status 2."""

    def wrapped(args):
        from explorer.train.data import DatasetNotFound

        try:
            return fn(args)
        except DatasetNotFound as e:
            raise UserError(str(e)) from None
        except ValueError as e:
            if type(e) is not ValueError:  # SpecError and friends keep their own handling
                raise
            raise UserError(str(e)) from None

    return wrapped


@_user_errors
def cmd_train(args) -> int:
    from explorer.core.catalog import load_spec
    from explorer.train.loop import train

    spec = load_spec(args.spec)
    recipe = {}
    if args.lr is not None:
        recipe['lr'] = args.lr
    if args.threads is not None:
        recipe['threads'] = args.threads
    if args.erase is not None:
        recipe['erase_prob'] = args.erase

    def progress(ev):
        if ev['kind'] == 'epoch' and not args.quiet:
            acc = ev.get('test_accuracy')
            acc = '-' if acc is None else f'{100 * acc:.2f}%'
            print(
                f'epoch {ev["epoch"]:g}: step {ev["step"]}/{ev["total_steps"]}, train loss {ev["train_loss"]:.4f}, '
                f'test accuracy {acc}, {ev["train_time"]:.0f} s',
                flush=True,
            )

    res = train(
        spec,
        args.dataset,
        epochs=args.epochs,
        time_budget=args.time_budget,
        batch_size=args.batch_size,
        seed=args.seed,
        out=args.out,
        progress=progress,
        data_dir=args.data_dir,
        download=args.download,
        train_limit=args.train_limit,
        **recipe,
    )
    m = res.metrics
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        print(
            f'{spec.name}: test accuracy {100 * m["test_accuracy"]:.2f}% ({m["test_correct"]}/{m["test_n"]}) after '
            f'{m["epochs"]:g} epoch{"" if m["epochs"] == 1 else "s"} ({m["steps"]} steps, batch {args.batch_size}), '
            f'{m["train_time_s"]:.0f} s '
            f'training on {m["device"]} with {m["threads"]} threads; {m["params"]:,} params; '
            f'wrote {res.checkpoint}'
        )
    return 0


@_user_errors
def cmd_evaluate(args) -> int:
    from explorer.train.loop import evaluate

    r = evaluate(args.checkpoint, args.dataset, args.data_dir, args.batch_size)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    rec = r['recorded_accuracy']
    rec = '-' if rec is None else f'{100 * rec:.2f}%'
    print(
        f'{r["name"]}: test accuracy {100 * r["accuracy"]:.2f}% ({r["correct"]}/{r["n"]}); recorded at training: '
        f'{rec}; test loss {r["loss"]:.4f}'
    )
    for cls, acc in r['per_class'].items():
        print(f'  {cls:<12} {100 * acc:6.2f}%')
    return 0
