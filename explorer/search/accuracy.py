"""Trained accuracy as an objective: each feasible trial trains its design on Fashion-MNIST under a small budget
(explorer.train.loop.train, the app's and CLI's training) and is pruned when it falls behind.

Optuna's own pruners (`trial.report` / `should_prune`) serve single-objective studies only, so the explorer
applies the median stopping rule itself, as Optuna's MedianPruner does: after each epoch, a trial whose test
accuracy is below the median of the completed trials' accuracy at the same epoch is pruned (state PRUNED, left
out of the frontier), once `min_trials` trials have completed. Each trial's curve is stored in the study
(user attribute 'curve'), so the rule sees every worker's trials.

The space's "training" object sets the budget: epochs (default 2), train_limit (10,000 images), test_limit
(2,000 images), batch_size (128), time_budget (seconds per trial, default none), seed (0), min_trials (3),
amp ('auto': bf16 where this machine has it in hardware, else fp32; 'bf16', or 'none' for fp32; trials train on
the CPU, so not 'fp16'; see
explorer.train.loop.resolve_amp). The precision it resolves to on this machine is `Trainer.precision`; a study
records it, and a worker that would train in another precision is refused (explorer.search.study.open_study),
so a study shared by machines with and without bf16 does not mix the two silently.

A screen follows and stops a trial through the Trainer's hooks: progress(event) gets {'kind': 'train', 'number',
'epoch', 'total_epochs', 'accuracy'} while a trial trains (accuracy: after each epoch, a fraction; else None), and
should_stop() is asked after every training step: a trial stopped that way is pruned (its accuracy would be a
half-trained one), and the search ends after it (explorer.search.study.run_search's should_stop).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from explorer.core.spec import ArchSpec, SpecError
from explorer.search.space import TRAINING_AMPS, Space, SpaceError, design, first_choices, training_errors

DEFAULTS = {  # one per TRAINING_FIELDS (parse_space refuses any other)
    'epochs': 2,
    'train_limit': 10_000,
    'test_limit': 2_000,
    'batch_size': 128,
    'time_budget': None,
    'seed': 0,
    'min_trials': 3,
    'amp': 'auto',
}
AMPS = TRAINING_AMPS


class Trainer:
    def __init__(
        self,
        space: Space,
        should_stop: Callable[[], bool] | None = None,
        progress: Callable[[dict], None] | None = None,
    ):
        from explorer.train.fit import check_trainable

        self.cfg = {**DEFAULTS, **space.training}
        errors = training_errors(space.training)  # before any trial: a bad value stopped the first one midway
        if errors:
            raise SpaceError('; '.join(errors))
        if self.cfg['amp'] not in AMPS:
            raise SpaceError(f'training.amp {self.cfg["amp"]!r} must be one of {", ".join(AMPS)}')
        self.should_stop, self.progress = should_stop, progress
        self.precision = precision(self.cfg['amp'])
        try:  # every input size the space may choose, before any trial trains
            for size in space.choices.get('img_size', [None]):
                check_trainable(design(space, {**first_choices(space), **({'img_size': size} if size else {})}))
        except ValueError as e:
            raise SpaceError(
                f"the accuracy objective trains on Fashion-MNIST, and this space's designs do not fit: {e}"
            ) from None

    def __call__(self, spec: ArchSpec, trial) -> float:
        """Train `spec`; the test accuracy (fraction). Raises optuna.TrialPruned when the trial falls behind."""
        import optuna

        cfg, curve = self.cfg, []

        def progress(ev):
            if self.progress and ev['kind'] in ('step', 'epoch'):
                acc = ev.get('test_accuracy') if ev['kind'] == 'epoch' else None
                self.progress(
                    {
                        'kind': 'train',
                        'number': trial.number,
                        'epoch': ev['epoch'],
                        'total_epochs': cfg['epochs'],
                        'accuracy': acc,
                    }
                )
            if ev['kind'] != 'epoch' or ev.get('test_accuracy') is None:
                return
            curve.append(ev['test_accuracy'])
            trial.set_user_attr('curve', list(curve))
            if self.behind(trial, len(curve) - 1, curve[-1]):
                raise optuna.TrialPruned(f'accuracy {curve[-1]:.4f} after epoch {len(curve)} is below the median')

        from explorer.train.loop import Diverged

        try:
            res = self._train(spec, progress)
        except SpecError as e:  # over this machine's limits (explorer.measure.guard): this design is not trained
            raise SpaceError(f'{spec.name} cannot be trained here: {e}') from None
        except Diverged as e:  # its loss became NaN: no accuracy to compare; the study goes on
            raise optuna.TrialPruned(str(e)) from None
        if res.metrics['stopped_by'] == 'user':  # should_stop(): half trained, so no accuracy to compare
            raise optuna.TrialPruned(f'stopped after {res.metrics["epochs"]:g} of {cfg["epochs"]:g} epochs')
        trial.set_user_attr('train_time_s', res.metrics['train_time_s'])
        return res.metrics['test_accuracy']

    def _train(self, spec: ArchSpec, progress):
        from explorer.train.loop import train

        cfg = self.cfg
        return train(
            spec,
            epochs=cfg['epochs'],
            time_budget=cfg['time_budget'],
            batch_size=cfg['batch_size'],
            seed=cfg['seed'],
            train_limit=cfg['train_limit'],
            test_limit=cfg['test_limit'],
            progress=progress,
            should_stop=self.should_stop,
            amp=cfg['amp'],
        )

    def behind(self, trial, epoch: int, accuracy: float) -> bool:
        """The median stopping rule over the study's completed trials (every worker's)."""
        import optuna

        done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        at = [t.user_attrs['curve'][epoch] for t in done if len(t.user_attrs.get('curve', [])) > epoch]
        return len(at) >= self.cfg['min_trials'] and accuracy < statistics.median(at)


def precision(amp: str) -> str:
    """What `amp` trains in on this machine's CPU (the device the search's trials train on): 'bf16' or 'fp32'."""
    import torch

    from explorer.train.loop import resolve_amp

    return resolve_amp(amp, torch.device('cpu')) or 'fp32'
