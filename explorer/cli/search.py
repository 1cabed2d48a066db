"""`explorer search`: the Pareto frontier of a design space (Optuna), written as spec files and CSV."""

from __future__ import annotations

import sys
import threading

from explorer.cli.args import int_in, print_json, writable_path
from explorer.core.errors import UserError


def register(sub) -> None:
    p = sub.add_parser(
        'search',
        help='search a design space (Optuna, multi-objective) for the Pareto frontier under constraints',
        description='Search a design space: a shipped one (metaformer_hybrid, fmnist_small_budget, mobile_latency) '
        'or a SPACE.json file (format: explorer/search/space.py and README). The study lives in an Optuna '
        'storage (default: a SQLite file under ~/.cache/metaformer-explorer/search), so runs continue it and '
        'several workers, here or on other machines (--storage URL), fill one study.',
    )
    p.add_argument('space', help='a shipped space name or a path to a space JSON file')
    p.add_argument('--trials', type=int_in(1, 100_000), default=200, help='trials to add to the study (default 200)')
    p.add_argument(
        '--storage',
        default=None,
        metavar='URL',
        help='an Optuna storage: sqlite:///FILE, postgresql://..., mysql://..., or journal:FILE (a journal file on '
        'a shared file system); default: the SQLite file in the runs folder',
    )
    p.add_argument('--study', default=None, metavar='NAME', help='study name (default: space name + its hash)')
    p.add_argument('--workers', type=int_in(1, 64), default=1, help='processes sharing the study (default 1)')
    p.add_argument('--sampler', choices=['nsga2', 'tpe', 'random'], default='nsga2')
    p.add_argument('--seed', type=int_in(0, 2**31 - 1), default=None)
    p.add_argument('--out', default=None, metavar='DIR', help='write each frontier design as a spec file + CSV')
    p.add_argument('--json', action='store_true', help='print the frontier as JSON')
    p.set_defaults(func=cmd_search)

    p = sub.add_parser('spaces', help='the shipped design spaces, with their size, objectives and constraints')
    p.set_defaults(func=cmd_spaces)


def cmd_search(args) -> int:
    from explorer.search.space import SpaceError, load_space
    from explorer.search.study import other_study, run_search, study_name, write_frontier

    stop = threading.Event()
    quiet = args.json
    training = set()  # the trials whose training has been announced

    def progress(ev):
        if quiet:
            return
        if ev['kind'] == 'train':  # a trial of a training space: minutes each, so each epoch is said
            if ev['number'] not in training:
                training.add(ev['number'])
                print(f'trial {ev["number"]}: training {ev["total_epochs"]:g} epochs', file=sys.stderr, flush=True)
            if ev['accuracy'] is not None:  # an epoch ended (its test accuracy comes with it)
                print(
                    f'trial {ev["number"]}: epoch {ev["epoch"]:.3g}/{ev["total_epochs"]:g}, test accuracy '
                    f'{ev["accuracy"]:.2%}',
                    file=sys.stderr,
                    flush=True,
                )
            return
        if ev['done'] % max(1, ev['total'] // 10) == 0 or ev['done'] == ev['total']:
            # with --workers K this process runs its share; the others run theirs beside it
            share = f' (this process; {args.trials} in all with {args.workers} workers)' if args.workers > 1 else ''
            print(f'trial {ev["done"]}/{ev["total"]}{share}', file=sys.stderr, flush=True)

    if args.out:  # checked before the trials run (they are kept in the study either way)
        writable_path('--out', args.out, folder=True)
    try:
        space = load_space(args.space)
        trainer = None
        if space.needs_training:  # its progress hook reports each epoch of the trial in training
            from explorer.search.accuracy import Trainer

            trainer = Trainer(space, should_stop=stop.is_set, progress=progress)
        study = study_name(space, args.study, args.storage)
        other = other_study(args.out, study) if args.out else None
        if other:  # its frontier.csv would be replaced, and its spec files left beside the new ones
            raise UserError(
                f'--out: {args.out!r} holds the frontier of another study ({other}); give another folder for study '
                f'{study!r}'
            )
        front = run_search(
            space,
            trials=args.trials,
            storage=args.storage,
            study=args.study,
            workers=args.workers,
            sampler=args.sampler,
            seed=args.seed,
            progress=progress,
            should_stop=stop.is_set,
            trainer=trainer,
        )
    except (SpaceError, ValueError, RuntimeError) as e:  # a worker that failed, a training refused: one line
        raise UserError(str(e)) from None
    except KeyboardInterrupt:
        return 130
    if args.out:
        write_frontier(front, args.out)
    if args.json:
        print_json(front.to_dict())
        return 0
    d = front.to_dict()
    print(
        f'study {d["study"]}: {d["trials"]} trials ({d["feasible"]} within the constraints), '
        f'{len(d["frontier"])} on the frontier of {", ".join(f"{k} ({v})" for k, v in d["objectives"].items())}'
    )
    if d['latency_calibrated_on']:
        print(f'latency predicted for batch {space.latency["batch_size"]}, calibrated on {d["latency_calibrated_on"]}')
    if 'training precision' in d['conditions']:
        print(f'accuracy after training in {d["conditions"]["training precision"]} (every trial of this study)')
    if d['left_out']:
        print(f'{d["left_out"]} trial(s) measured under other conditions than the study records: left out')
    if d['invalid']:
        print(f'{d["invalid"]} trial(s) drew a combination that is no valid network, e.g. {d["invalid_example"]}')
    keys = list(d['objectives']) + [k for k in ('params_m', 'gmacs') if k not in d['objectives']]
    print(f'{"trial":>6}  {"pattern":<8}' + ''.join(f'{k:>12}' for k in keys) + '  design')
    for t in front.frontier:
        vals = ''.join(f'{t["metrics"][k]:>12.4g}' for k in keys)
        print(f'{t["number"]:>6}  {t["pattern"]:<8}{vals}  {t["design"]}')
    if args.out:
        print(f'wrote {len(front.files) - 1} spec files and frontier.csv to {args.out}')
    return 0


def cmd_spaces(args) -> int:
    from explorer.search.space import load_space, space_names

    for name in space_names():
        s = load_space(name)
        objs = ', '.join(f'{k} ({v})' for k, v in s.objectives.items())
        cons = ', '.join(f'{k} {b}' for k, b in s.constraints.items()) or 'none'
        print(f'{name}: {s.size():,} designs; objectives {objs}; constraints {cons}')
    return 0
