"""One sweep: how it opens, records a finished trial and closes.

`harness.sweep.loop` asks and runs; this module records and tells: `open_sweep` validates and
loads everything before the study or the tracking store is touched, `collect` records a
finished trial (its checkpoints, its MLflow run, its settled reservation) and tells the study,
`harness.sweep.failures` fails the trials in flight on Ctrl-C, and `close_sweep` tags the
front and leaves.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, Trial

from harness.backends import load_backend
from harness.config import Experiment
from harness.data.prepare import prepare_experiment
from harness.errors import BackendError, ConfigError, TrainingRefused
from harness.records import Cost, PreparedData, TrialResult, TrialSpec, usd
from harness.sweep import admission, search_space
from harness.sweep.budget import Budget, Confirm, check_worst_case
from harness.sweep.checkpoints import (
    ScoredCheckpoint,
    add_checkpoint_trial,
    checkpoint_epochs,
    checkpoint_run_name,
    due_checkpoints,
    prune_dominated,
    score_checkpoint,
    with_number,
)
from harness.sweep.estimate import corner_specs, cut_texts
from harness.sweep.failures import fail, fail_raised, interrupted
from harness.sweep.orphans import orphaned_jobs, orphans_message, release_deployments
from harness.sweep.outcome import SweepOutcome, SweepView
from harness.sweep.running import Launched, Sweep
from harness.sweep.search_space import experiment_space
from harness.sweep.shared import (
    Recovery,
    join_study_run,
    space_summary,
    tag_front_and_leave,
    tag_prices,
)
from harness.sweep.signals import signals_held
from harness.sweep.stopping import Curve
from harness.sweep.storage import study_exists
from harness.sweep.study import (
    StudyHandle,
    open_study,
    spec_from_trial,
    trained_trials,
)
from harness.sweep.trial import set_attrs
from harness.tracking.journal import ran_on_a_test_server
from harness.tracking.record import (
    CHECKPOINT_OF_TAG,
    SYNTHETIC_TAG,
    TRIAL_TAG,
    TrialRecord,
    checkpoints_due_attrs,
    objective_accuracy,
    result_attrs,
)
from harness.tracking.runs import MlflowTracker
from harness.tracking.store import server_unreachable
from harness.tracking.tracker import NullTracker, Tracker

RUN_NAME_TAG = "mlflow.runName"  # setting it renames a run
DATA_DIGEST = "data_digest"  # the study's user attribute: the data its trials were run on


def open_sweep(
    experiment: Experiment,
    view: SweepView,
    add_trials: int,
    track: bool,
    confirm: Confirm | None,
) -> Sweep:
    """Validate and load everything, check the budget, then open the study and its MLflow run."""
    space = experiment_space(experiment)
    backend = load_backend(experiment.config.backend, progress=view.progress)
    data, report = prepare_experiment(experiment)
    search_space.check_train_examples(space, len(data.labels))
    models = sorted({spec.base_model for spec in corner_specs(experiment, space)})
    backend.preflight(data, models)  # nothing is recorded before every free check passed
    for warning in (
        search_space.oversized_train_examples(space, len(data.train)),
        cut_texts(backend, data, report),
    ):
        if warning:
            view.message(warning)
    confirm = _asked_once(confirm)
    if not study_exists(experiment.config.study.storage, experiment.study_name):
        # Refused before the study exists: a sweep its budget refuses records nothing.
        n_trials = experiment.config.study.n_trials + add_trials
        check_worst_case(experiment, backend, data, space, None, n_trials, confirm)
    handle = open_study(experiment, space, join=True)
    _check_same_data(experiment, handle, data)
    done = len(trained_trials(handle.study))
    target = max(experiment.config.study.n_trials, done) + add_trials
    budget = Budget(experiment.config.budget_usd, handle.study)
    check_worst_case(experiment, backend, data, space, budget, target - done, confirm)
    tracker: Tracker = MlflowTracker(experiment, data, None) if track else NullTracker()
    outcome = SweepOutcome(handle=handle, synthetic=backend.capabilities.synthetic)
    summary = space_summary(space)
    outcome.parent_run_id = join_study_run(handle, tracker, experiment.study_name, summary)
    tag_prices(tracker, outcome.parent_run_id, backend.price_rows(models))
    if outcome.synthetic:
        tracker.tag(outcome.parent_run_id, SYNTHETIC_TAG, "true")
        view.message("(synthetic: the backend is a test server on this machine)")
    recovery = Recovery(handle, tracker)
    recovery(now=True, start=True)
    if released := release_deployments(handle.study, backend):  # first: gone is no orphan
        view.message(released)
    if orphans := orphaned_jobs(handle.study, backend):
        view.message(orphans_message(experiment.study_name, orphans))
    view.sweep_started(experiment.study_name, done, target)
    sweep = Sweep(
        experiment, space, backend, data, handle, tracker, budget, view, outcome, target, recovery
    )
    sweep.live.update()
    _record_owed_checkpoints(sweep)
    sweep.stopper = admission.front_stopper(experiment, backend, data, handle)
    return sweep


def _check_same_data(experiment: Experiment, handle: StudyHandle, data: PreparedData) -> None:
    """Refuse to resume a study on other data (an edited file): its trials' validation set is
    not the new trials', so neither the front nor early stopping could compare them. A study
    that recorded no digest (new, or older than it) records this data's."""
    recorded = handle.study.user_attrs.get(DATA_DIGEST)
    if recorded is None:
        handle.study.set_user_attr(DATA_DIGEST, data.digest)
    elif recorded != data.digest:
        raise ConfigError(
            f"{experiment.path}: study {experiment.study_name!r} was run on other data (digest "
            f"{recorded[:12]}; dataset.source {experiment.config.dataset.source!r} now gives "
            f"{data.digest[:12]}): its trials were scored on another validation set. Restore "
            "the data, or set study.name (--set study.name=NEW) to start a study on it"
        )


def _asked_once(confirm: Confirm | None) -> Confirm | None:
    """`confirm`, asked at most once: its answer stands for the checks after it."""
    if confirm is None:
        return None
    answers: list[bool] = []

    def once(worst: Cost, limit: float) -> bool:
        if not answers:
            answers.append(confirm(worst, limit))
        return answers[0]

    return once


def _record_owed_checkpoints(sweep: Sweep) -> None:
    """Checkpoints a killed sweep scored but did not record: score and record them now."""

    def spec_of(trial: FrozenTrial) -> TrialSpec:
        return spec_from_trial(trial, sweep.space, sweep.experiment)

    for parent, epoch, result in due_checkpoints(sweep.handle.study, spec_of):
        try:
            checkpoint = score_checkpoint(sweep.backend, sweep.data, result, epoch)
        except (BackendError, ConfigError) as exc:  # a missing price: said, not a crash
            sweep.view.message(f"trial {parent.number}: epoch {epoch.epoch} not scored: {exc}")
            continue
        record_checkpoint(sweep, parent, checkpoint)


def close_sweep(sweep: Sweep) -> None:
    """Tag the front on the trial runs, close the study's run unless another worker still runs
    trials (see `shared.tag_front_and_leave`), delete checkpoints off the front."""
    try:
        # The last status line, as of now: it stands above the trials table, which counts what
        # other workers finished since this one's last trial ended.
        sweep.live.update()
        front = tag_front_and_leave(sweep.handle, sweep.tracker)
        pruned = prune_dominated(sweep.handle.study, front, sweep.backend)
        if pruned:
            off = "that are off the Pareto front"
            sweep.view.message(f"deleted {pruned} epoch checkpoint(s) {off}")
    finally:  # hosting bills by the hour: deleted also when the tracking server is gone
        released = release_deployments(sweep.handle.study, sweep.backend)
        if released:
            sweep.view.message(released)


def collect(sweep: Sweep, launched: Launched) -> None:
    """Record a finished trial: tell the study, close its MLflow run, settle its reservation."""
    trial = launched.trial
    try:
        result = launched.future.result()
    except KeyboardInterrupt:  # a local trial runs inline: Ctrl-C or SIGTERM ends it here
        interrupted(sweep, launched)
        raise
    except TrainingRefused as exc:
        # Said once, by whoever shows `stopped`; every trial in flight is refused alike.
        fail(sweep, launched, str(exc), announce=False)
        sweep.outcome.stopped, sweep.outcome.refused = str(exc), True
        return
    except BackendError as exc:
        fail(sweep, launched, str(exc))
        return
    except BaseException as exc:
        fail_raised(sweep, launched, exc)
        raise
    sweep.accepted = True
    try:  # the loop has let go of the trial: a signal until it is told is settled here
        checkpoints = _score_checkpoints(sweep, result)
        _share_model(sweep, launched.run_id, result)
        sweep.tracker.finish_trial(launched.run_id, result, sweep.data)
        # Owed before the trial completes: a kill before they are recorded leaves them to `_open`.
        due = [(c.epoch, c.result.model.model_ref) for c in checkpoints]
        set_attrs(trial, checkpoints_due_attrs(due))
    except KeyboardInterrupt:
        interrupted(sweep, launched)
        raise
    except Exception as exc:
        if server_unreachable(exc) is not None:  # else left RUNNING, for recovery to rerun
            fail_raised(sweep, launched, exc)
        raise
    with signals_held() as held:  # told whole, or not at all
        _tell(trial, sweep.handle, result, len(sweep.data.train))
    held.deliver()
    if sweep.stopper is not None:
        sweep.stopper.add(Curve.of(TrialRecord.from_attrs(trial.user_attrs)))
    sweep.outcome.results.append(result)
    sweep.view.trial_finished(result)
    for checkpoint in checkpoints:
        record_checkpoint(sweep, trial, checkpoint)
    # After its checkpoints: the status line reads the ledger, which counts their scoring.
    sweep.live.finished(launched.spec, result.wall_seconds)


def _score_checkpoints(sweep: Sweep, result: TrialResult) -> list[ScoredCheckpoint]:
    """Score the trial's epoch checkpoints on the test set (one that fails is skipped)."""
    scored = []
    for epoch in checkpoint_epochs(result):
        try:
            scored.append(score_checkpoint(sweep.backend, sweep.data, result, epoch))
        except (BackendError, ConfigError) as exc:
            sweep.view.message(f"{result.spec.run_name()}: epoch {epoch.epoch} not scored: {exc}")
    return scored


def record_checkpoint(
    sweep: Sweep, parent: Trial | FrozenTrial, checkpoint: ScoredCheckpoint
) -> None:
    """A checkpoint becomes a completed trial with its own MLflow run (see `checkpoints`)."""
    study = sweep.handle.study
    number = len(study.get_trials(deepcopy=False))  # the number add_trial will give it
    checkpoint = with_number(checkpoint, number)
    result = checkpoint.result
    rows = len(sweep.data.train)
    name = checkpoint_run_name(checkpoint, rows)
    run_id = sweep.tracker.start_trial(result.spec, sweep.backend.kind, name=name)
    sweep.tracker.tag(run_id, CHECKPOINT_OF_TAG, str(checkpoint.parent))
    if ran_on_a_test_server([parent]):  # its model is a test server's, as its trial's is
        sweep.tracker.tag(run_id, SYNTHETIC_TAG, "true")
    for epoch in result.model.epochs:
        sweep.tracker.log_epoch(run_id, epoch)
    _share_model(sweep, run_id, result)
    sweep.tracker.finish_trial(run_id, result, sweep.data)
    limit = sweep.experiment.config.study.max_trial_cost_usd
    objectives = len(sweep.handle.objectives)
    added, record = add_checkpoint_trial(study, parent, checkpoint, run_id, objectives, limit)
    if added != number:  # another worker added a trial meanwhile: the run takes its number
        sweep.tracker.tag(run_id, TRIAL_TAG, str(added))
        renamed = checkpoint_run_name(with_number(checkpoint, added), rows)
        sweep.tracker.tag(run_id, RUN_NAME_TAG, renamed)  # MLflow renames the run
    # A remote job's checkpoint was scored with its trial (its cost so far includes that).
    scored = f"scoring it: {usd(result.eval_cost.usd)}"
    if result.eval_cost.usd == 0 < result.total_cost.usd:
        scored = "scored on the test set with its trial, paid in the trial's cost"
    sweep.view.message(
        f"  t{added:03d} = its epoch {checkpoint.epoch}: test acc "
        f"{result.metrics.accuracy:.4f}  cost {usd(result.total_cost.usd)} ({scored})"
    )
    if sweep.stopper is not None:
        sweep.stopper.add(Curve.of(record))


def _share_model(sweep: Sweep, run_id: str | None, result: TrialResult) -> None:
    """A model kept on this machine goes to the run too where other machines read the store."""
    if not sweep.tracker.shares_files:
        return  # nothing to package: the files stay where promote finds them
    files = sweep.backend.package(result.model.model_ref, sweep.data.labels).artifacts
    sweep.tracker.log_model_files(run_id, files)


def _tell(trial: Trial, handle: StudyHandle, result: TrialResult, train_rows: int) -> None:
    """Record the trial and tell the study its validation accuracy (never the test set's: the
    front is formed on validation, the test set only confirms) and its cost."""
    set_attrs(trial, result_attrs(result, train_rows))
    values = [objective_accuracy(result), result.total_cost.usd][: len(handle.objectives)]
    handle.study.tell(trial, values)
