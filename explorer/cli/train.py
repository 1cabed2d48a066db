"""`explorer train` and `explorer evaluate`: train a spec on Fashion-MNIST, re-evaluate a checkpoint."""

from __future__ import annotations

import os
import signal
import sys
import threading

from explorer.cli.args import int_in, number_in, print_json, writable_path
from explorer.core.errors import UserError


def register(sub) -> None:
    p = sub.add_parser(
        'train',
        help='train a spec on Fashion-MNIST (in_chans 1, img_size 28-32) or an image folder (ImageNet layout), '
        'in one process or many (torchrun); writes a .safetensors checkpoint with spec, preprocessing and metrics',
        description='Train a spec. Under torchrun (torchrun --nproc_per_node N -m explorer train ...) each process '
        'trains on its share of every batch with DistributedDataParallel (gloo on CPU, NCCL on GPUs); rank 0 '
        'writes the checkpoint and prints. --batch-size is per process.',
    )
    p.add_argument(
        'spec',
        help='preset name, JSON spec file, or a trained .safetensors checkpoint or model name (its architecture: '
        'training starts from scratch)',
    )
    p.add_argument(
        '--dataset',
        default='fashion-mnist',
        choices=['fashion-mnist', 'imagefolder'],
        help="imagefolder: --data-dir holds train/ and val/ with one folder per class (ImageNet's layout)",
    )
    p.add_argument(
        '--epochs',
        type=number_in(0, 1000, low_open=True),
        default=5,
        help='epochs to train (default 5; fractions allowed)',
    )
    p.add_argument(
        '--time-budget',
        type=number_in(0, 30 * 86400, low_open=True),
        default=None,
        metavar='S',
        help='stop after S seconds of training; the cosine schedule is fitted to the steps that fit',
    )
    p.add_argument(
        '--batch-size',
        type=int_in(1, 4096),
        default=128,
        help='per process (default 128); above EXPLORER_MAX_BATCH (256 unless set) it is refused',
    )
    p.add_argument('--lr', type=number_in(0, 10, low_open=True), default=None, help='peak learning rate (default 2e-3)')
    p.add_argument(
        '--erase',
        type=number_in(0, 1),
        default=None,
        metavar='P',
        help='random erasing: chance per image of blanking one rectangle (default 0: off)',
    )
    p.add_argument('--seed', type=int_in(0, 2**63 - 1), default=0)
    p.add_argument('--threads', type=int_in(1, 1024), default=None, help="torch CPU threads (default: torch's setting)")
    p.add_argument(
        '--data-dir',
        default=None,
        metavar='PATH',
        help='Fashion-MNIST: the folder holding its idx files; imagefolder: the folder holding train/ and val/',
    )
    p.add_argument('--device', choices=['cpu', 'cuda'], default=None, help='default: CUDA when there is one')
    p.add_argument(
        '--amp',
        choices=['auto', 'bf16', 'fp16', 'none'],
        default='auto',
        help='mixed precision (default auto: bf16 where the CPU or GPU has it in hardware, else fp32 on a CPU and '
        'fp16 on an older GPU; none: fp32; fp16 needs CUDA). Test accuracy is always measured in fp32',
    )
    p.add_argument(
        '--compile',
        action='store_true',
        help='torch.compile the training step (inductor): the first step compiles (about a minute on 2 cores), then '
        'fused kernels; pays on wide models (fmnist_hybrid_wide), costs on narrow ones (benchmarks/README.md)',
    )
    p.add_argument(
        '--aa',
        default=None,
        metavar='POLICY',
        help="imagefolder: timm's auto-augment policy, e.g. rand-m9-mstd0.5-inc1 (RandAugment)",
    )
    p.add_argument('--workers', type=int_in(0, 64), default=4, help='imagefolder: data-loading processes per rank')
    p.add_argument('--download', action='store_true', help='download with torchvision when no local copy exists')
    p.add_argument('--train-limit', type=int_in(1), default=None, metavar='N', help='use N training images')
    p.add_argument('--test-limit', type=int_in(1), default=None, metavar='N', help='evaluate on N test images')
    p.add_argument('--out', required=True, metavar='FILE', help='checkpoint to write (.safetensors)')
    p.add_argument(
        '--resume',
        action='store_true',
        help='continue the run interrupted at --out (its state, FILE.state, is saved after every epoch and on '
        'Ctrl-C / SIGTERM)',
    )
    p.add_argument(
        '--overwrite',
        action='store_true',
        help='replace the checkpoint at --out and any interrupted run saved beside it (refused otherwise)',
    )
    p.add_argument('--quiet', action='store_true', help='no per-epoch lines')
    p.add_argument('--json', action='store_true', help='print the metrics as JSON at the end')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('evaluate', help='re-evaluate a trained checkpoint on the Fashion-MNIST test set')
    p.add_argument(
        'checkpoint', help="a .safetensors file written by `explorer train`, or a trained model's name (fmnist_hybrid)"
    )
    p.add_argument('--dataset', default='fashion-mnist', choices=['fashion-mnist'])
    p.add_argument('--data-dir', default=None, metavar='PATH')
    p.add_argument('--batch-size', type=int_in(1, 100_000), default=1000)
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
        except ValueError as e:  # a dataset folder's layout (FolderError), a recipe value, a spec (SpecError)
            raise UserError(str(e)) from None

    return wrapped


@_user_errors
def cmd_train(args) -> int:
    from explorer.cli.specs import resolve_spec
    from explorer.train.loop import train

    if args.aa is not None and args.dataset != 'imagefolder':  # else recorded in the recipe, never applied
        raise UserError(
            f'--aa {args.aa!r}: auto-augment applies to image folders only (--dataset imagefolder); Fashion-MNIST '
            'training has its own crops and flips (--erase adds random erasing)'
        )
    spec, source = resolve_spec(args.spec)  # a checkpoint's weights are not used: it names an architecture
    out = writable_path('--out', args.out, inputs=(source or args.spec,))  # a trained model's name: its file
    main = os.environ.get('RANK', '0') == '0'  # under torchrun, rank 0 alone prints
    state_file = out.with_name(out.name + '.state')
    # SPEC is read by its suffix: a checkpoint named otherwise is no SPEC again. A run interrupted before this
    # rule (run.st and run.st.state) can still be resumed under its name.
    if out.suffix != '.safetensors' and not (args.resume and state_file.is_file()):
        raise UserError(f'--out: {args.out!r} must end in .safetensors')
    if args.resume and args.overwrite:
        raise UserError('--resume continues the run at --out and --overwrite replaces it: give one of them')
    if args.resume and main and not state_file.is_file():
        raise UserError(f'--resume: there is no interrupted run at {str(out)!r} (no {state_file.name} beside it)')
    if main and not args.resume and not args.overwrite:  # hours of training are not replaced by a typo
        if state_file.exists():
            raise UserError(
                f'--out: an interrupted run is saved at {str(out)!r} ({state_file.name} beside it); continue it with '
                '--resume, or start over with --overwrite'
            )
        if out.exists():
            raise UserError(f'--out: {str(out)!r} already exists; give another file, or --overwrite to replace it')
    recipe = {'amp': args.amp, 'auto_augment': args.aa, 'compile': args.compile}
    if args.lr is not None:
        recipe['lr'] = args.lr
    if args.threads is not None:
        recipe['threads'] = args.threads
    if args.erase is not None:
        recipe['erase_prob'] = args.erase
    stop = threading.Event()
    show = _Progress(enabled=main and not args.quiet, stream=sys.stderr if args.json else None)
    try:
        with _stop_on_signals(stop):
            res = train(
                spec,
                args.dataset,
                epochs=args.epochs,
                time_budget=args.time_budget,
                batch_size=args.batch_size,
                seed=args.seed,
                out=out,
                progress=show,
                data_dir=args.data_dir,
                download=args.download,
                train_limit=args.train_limit,
                test_limit=args.test_limit,
                state_file=state_file,
                resume=args.resume,
                device=args.device,
                should_stop=stop.is_set,
                workers=args.workers,
                **recipe,
            )
    finally:
        show.close()
    if not main:
        return 130 if stop.is_set() or res.metrics['stopped_by'] == 'user' else 0
    m = res.metrics
    if args.json:
        print_json(m)
    else:
        procs = f', {m["processes"]} processes' if m['processes'] > 1 else ''
        compiled = f', compiled (first step {m["first_step_s"]:.0f} s)' if m['compile'] else ''
        print(
            f'{spec.name}: test accuracy {100 * m["test_accuracy"]:.2f}% '
            f'({m["test_correct"]}/{m["test_n"]}) after {_n(m["epochs"], "epoch")}{_stopped_by(m)} '
            f'({_n(m["steps"], "step")}, global batch {m["global_batch"]}{procs}), {m["train_time_s"]:.0f} s training '
            f'on {m["device"]} with {_n(m["threads"], "thread")}, {m["amp"] or "fp32"}{compiled}; {m["params"]:,} '
            f'params; wrote {res.checkpoint}'
        )
    if m['stopped_by'] == 'user':
        print(
            'stopped: the checkpoint holds the weights so far; continue with the same command and --resume',
            file=sys.stderr,
        )
        return 130
    return 0


def _n(count: float, noun: str) -> str:
    return f'{count:g} {noun}{"" if count == 1 else "s"}'


def _stopped_by(m: dict) -> str:
    """What ended a run early, said in the summary line (the epochs alone read like the plan)."""
    why = {'time_budget': 'time budget reached', 'time_limit': 'time limit reached'}.get(m.get('stopped_by'))
    asked = m.get('epochs_requested')
    return f' ({why}; {_n(asked, "epoch")} asked for)' if why and asked is not None else ''


class _Progress:
    """A progress bar (tqdm, on stderr) with images/s, loss and ETA, and one line per epoch on stdout (on
    `stream` instead when given: stderr under --json, whose stdout holds the JSON only)."""

    def __init__(self, enabled: bool, stream=None):
        self.enabled, self.stream, self.bar, self.done = enabled, stream, None, 0

    def __call__(self, ev: dict) -> None:
        if not self.enabled:
            return
        if ev['kind'] == 'step':
            self._step(ev)
            return
        acc = ev.get('test_accuracy')
        acc = '-' if acc is None else f'{100 * acc:.2f}%'
        line = (
            f'epoch {ev["epoch"]:g}: step {ev["step"]}/{ev["total_steps"]}, train loss {ev["train_loss"]:.4f}, '
            f'test accuracy {acc}, {ev["train_time"]:.0f} s'
        )
        if self.bar:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream)

    def _step(self, ev: dict) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=ev['total_steps'], initial=ev['step'], unit='step', file=sys.stderr, leave=False)
            self.done = ev['step']
        self.bar.total = ev['total_steps']  # a time budget refits the schedule
        self.bar.update(ev['step'] - self.done)
        self.done = ev['step']
        rate = ev['images'] / ev['elapsed'] if ev['elapsed'] > 0 else 0.0
        self.bar.set_postfix_str(f'{rate:,.0f} images/s, loss {ev["loss"]:.4f}, lr {ev["lr"]:.2e}', refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _stop_on_signals:
    """While active, SIGINT (Ctrl-C) and SIGTERM set `stop` instead of ending the process at once: training then
    stops after its current step and saves what it has. A second signal ends the process as usual."""

    def __init__(self, stop: threading.Event):
        self.stop, self.saved = stop, {}

    def handle(self, signum, frame):
        if self.stop.is_set():  # asked twice: the user means it
            signal.signal(signum, self.saved.get(signum, signal.SIG_DFL))
            signal.raise_signal(signum)
        self.stop.set()
        print(f'\n{signal.Signals(signum).name}: stopping after this step and saving...', file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self.handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self.saved.items():
            signal.signal(sig, old)
        return False


def _checkpoint(arg: str) -> str:
    """A checkpoint file, or a trained model's name (as SPEC takes it in every other command)."""
    from pathlib import Path

    from explorer.core.catalog import preset_names
    from explorer.train.checkpoints import trained_path

    if arg.endswith('.safetensors') or Path(arg).exists():
        return arg
    path = trained_path(arg)
    if path is None:
        what = "neither a file nor a trained model's name"
        if arg in preset_names():
            what = 'a preset, not a trained checkpoint'
        raise UserError(
            f"{arg!r} is {what}: give a .safetensors file written by `explorer train` or a trained model's name "
            '(the shipped fmnist_* models, your own runs)'
        )
    return path


@_user_errors
def cmd_evaluate(args) -> int:
    from explorer.train.loop import evaluate

    r = evaluate(_checkpoint(args.checkpoint), args.dataset, args.data_dir, args.batch_size)
    if args.json:
        print_json(r)
        return 0
    rec, rec_n = r['recorded_accuracy'], r.get('recorded_n')
    rec = '-' if rec is None else f'{100 * rec:.2f}%' + (f' on {rec_n:,} images' if isinstance(rec_n, int) else '')
    print(
        f'{r["name"]}: test accuracy {100 * r["accuracy"]:.2f}% ({r["correct"]}/{r["n"]}); recorded at training: '
        f'{rec}; test loss {r["loss"]:.4f}'
    )
    for cls, acc in r['per_class'].items():
        print(f'  {cls:<12} {100 * acc:6.2f}%')
    return 0
