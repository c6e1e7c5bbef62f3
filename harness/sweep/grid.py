"""Grid search (`study.sampler.kind: grid`): every configuration of the search space once.

Optuna's `GridSampler` calls `study.stop()` from `tell` once every point has run, which only works
inside `Study.optimize`; the harness asks and tells itself, so there it raised a RuntimeError
after the last point's result was stored. `GridSearch` leaves that out, and the sweep asks
`grid_done` before each trial instead: a grid whose every point has started has nothing new to
give (Optuna would re-run a point already paid for), so the sweep stops there and says why, even
short of `study.n_trials`.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.samplers import GridSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class GridSearch(GridSampler):
    """Optuna's grid sampler without its `study.stop()` (see the module docstring)."""

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        # A retry queued with its params (`study.requeue`) runs those: Optuna would give it the
        # grid point of its new trial number, which would then count as run and never run.
        if not trial.params:
            super().before_trial(study, trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None

    def points_left(self, study: Study) -> int:
        """Grid points no trial has started (running or finished, in any state)."""
        started = {
            t.system_attrs["grid_id"]
            for t in study._storage.get_all_trials(study._study_id, deepcopy=False)
            if "grid_id" in t.system_attrs
            and self._same_search_space(t.system_attrs["search_space"])
            and t.state != TrialState.WAITING
        }
        return len(set(range(self._n_min_trials)) - started)


def grid_done(study: optuna.Study) -> str | None:
    """Why the sweep stops asking: a grid search whose every point has started and that has no
    trial queued (a retry, a cut); None otherwise, and for every other sampler."""
    sampler = study.sampler
    if not isinstance(sampler, GridSearch) or sampler.points_left(study):
        return None
    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return None
    size = sampler._n_min_trials
    return (
        f"grid: the search space's {size} configurations have all run (a grid runs each once; "
        "study.n_trials counts more than the grid holds)"
    )
