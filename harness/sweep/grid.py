"""Grid search (`study.sampler.kind: grid`): every configuration of the search space once.

Optuna's `GridSampler` is made for `Study.optimize` in processes seeded alike; the harness asks
and tells itself, resumes studies in new processes and cuts trials to fit its budget, so
`GridSearch` changes three things:

- A grid point counts as run when a trial of the study has its params (in any state but
  skipped for the budget), not when a trial carries its `grid_id`: the grid's order is shuffled
  by the sampler's seed, which differs in a resumed process and between workers (seeded past the
  trials held), so an id means another point there; and a budget cut or a retry runs a point
  without an id. A point the budget skipped is due again once `budget_usd` is raised.
- A retry queued with its params (`study.requeue`) and an enqueued cut run those params and are
  given no grid point.
- No `study.stop()` once every point has run (it raises outside `optimize`): the sweep asks
  `grid_done` before each trial and stops there, saying why, even short of `study.n_trials`
  (Optuna would pay for a point again).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.samplers import GridSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class GridSearch(GridSampler):
    """Optuna's grid sampler, its points tracked by params (see the module docstring)."""

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if trial.params or {"fixed_params", "grid_id"} & set(trial.system_attrs):
            return  # a retry or a cut runs its own params
        left = self.points_left(study) or list(range(len(self._all_grids)))
        grid_id = int(self._rng.rng.choice(left))
        study._storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
        study._storage.set_trial_system_attr(trial._trial_id, "grid_id", grid_id)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None

    def points_left(self, study: Study) -> list[int]:
        """The grid points no trial of the study has the params of (a skipped one aside)."""
        run = {
            self._point(t.params)
            for t in study._storage.get_all_trials(study._study_id, deepcopy=False)
            if t.state != TrialState.PRUNED  # the harness prunes only what its budget skips
        }
        return [i for i, point in enumerate(self._all_grids) if point not in run]

    def _point(self, params: dict[str, Any]) -> tuple[Any, ...] | None:
        if not set(self._param_names) <= set(params):
            return None
        return tuple(params[name] for name in self._param_names)


def grid_done(study: optuna.Study) -> str | None:
    """Why the sweep stops asking: a grid search whose every point has a trial and that has no
    trial queued (a retry, a cut); None otherwise, and for every other sampler."""
    sampler = study.sampler
    if not isinstance(sampler, GridSearch) or sampler.points_left(study):
        return None
    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return None
    return (
        f"grid: the search space's {len(sampler._all_grids)} configurations have all been tried "
        "(a grid runs each once; study.n_trials counts more than the grid holds)"
    )
