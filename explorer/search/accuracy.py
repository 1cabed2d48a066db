"""Trained accuracy as an objective: each feasible trial trains its design on Fashion-MNIST under a small budget
(explorer.train.loop.train, the app's and CLI's training) and is pruned when it falls behind.

Optuna's own pruners (`trial.report` / `should_prune`) serve single-objective studies only, so the explorer
applies the median stopping rule itself, as Optuna's MedianPruner does: after each epoch, a trial whose test
accuracy is below the median of the completed trials' accuracy at the same epoch is pruned (state PRUNED, left
out of the frontier), once `min_trials` trials have completed. Each trial's curve is stored in the study
(user attribute 'curve'), so the rule sees every worker's trials.

The space's "training" object sets the budget: epochs (default 2), train_limit (10,000 images), test_limit
(2,000 images), batch_size (128), time_budget (seconds per trial, default none), seed (0), min_trials (3).
"""

from __future__ import annotations

import statistics

from explorer.core.spec import ArchSpec
from explorer.search.space import Space, SpaceError, design, first_choices

DEFAULTS = {
    'epochs': 2,
    'train_limit': 10_000,
    'test_limit': 2_000,
    'batch_size': 128,
    'time_budget': None,
    'seed': 0,
    'min_trials': 3,
}


class Trainer:
    def __init__(self, space: Space):
        from explorer.train.fit import check_trainable

        unknown = sorted(set(space.training) - set(DEFAULTS))
        if unknown:
            raise SpaceError(f'training: unknown field(s) {unknown}; allowed {", ".join(DEFAULTS)}')
        self.cfg = {**DEFAULTS, **space.training}
        try:
            check_trainable(design(space, first_choices(space)))
        except ValueError as e:
            raise SpaceError(
                f"the accuracy objective trains on Fashion-MNIST, and this space's designs do not fit: {e}"
            ) from None

    def __call__(self, spec: ArchSpec, trial) -> float:
        """Train `spec`; the test accuracy (fraction). Raises optuna.TrialPruned when the trial falls behind."""
        import optuna

        from explorer.train.loop import train

        cfg, curve = self.cfg, []

        def progress(ev):
            if ev['kind'] != 'epoch' or ev.get('test_accuracy') is None:
                return
            curve.append(ev['test_accuracy'])
            trial.set_user_attr('curve', list(curve))
            if self.behind(trial, len(curve) - 1, curve[-1]):
                raise optuna.TrialPruned(f'accuracy {curve[-1]:.4f} after epoch {len(curve)} is below the median')

        res = train(
            spec,
            epochs=cfg['epochs'],
            time_budget=cfg['time_budget'],
            batch_size=cfg['batch_size'],
            seed=cfg['seed'],
            train_limit=cfg['train_limit'],
            test_limit=cfg['test_limit'],
            progress=progress,
        )
        trial.set_user_attr('train_time_s', res.metrics['train_time_s'])
        return res.metrics['test_accuracy']

    def behind(self, trial, epoch: int, accuracy: float) -> bool:
        """The median stopping rule over the study's completed trials (every worker's)."""
        import optuna

        done = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        at = [t.user_attrs['curve'][epoch] for t in done if len(t.user_attrs.get('curve', [])) > epoch]
        return len(at) >= self.cfg['min_trials'] and accuracy < statistics.median(at)
