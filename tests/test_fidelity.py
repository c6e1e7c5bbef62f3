"""Multi-fidelity search (`harness.sweep.fidelity`): who is promoted, never twice, rungs priced
with fixed costs, and a sweep through the real loop that keeps `n_trials` and the budget."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from harness.config import load_experiment
from harness.data.prepare import prepare_experiment
from harness.errors import ConfigError
from harness.records import PreparedData, Split
from harness.sweep.admission import tell_chance
from harness.sweep.estimate import estimate_sweep
from harness.sweep.fidelity import FIDELITY, FidelitySampler, config_key
from harness.sweep.loop import run_sweep
from harness.sweep.search_space import experiment_space
from harness.sweep.study import make_sampler, requeue, spec_from_trial
from harness.tracking.record import CHECKPOINT_OF, TrialRecord, skipped_attrs
from tests.conftest import review_rows, write_csv, write_experiment
from tests.memory_backend import MemoryBackend
from tests.test_sweep import RecordingView
from tests.test_sweep_fast import SPACE, _records, backend  # noqa: F401  (fixture)

DISTRIBUTIONS = {
    "n_epochs": IntDistribution(1, 3),
    "learning_rate_multiplier": FloatDistribution(0.5, 4.0, log=True),
    FIDELITY: CategoricalDistribution([400, 800, 1200]),
}


def _sampler(pricer: Any = None, values: tuple[int, ...] = (400, 800, 1200)) -> FidelitySampler:
    sampler = FidelitySampler(optuna.samplers.RandomSampler(seed=0), values)
    if pricer is not None:
        sampler.set_pricer(pricer)
    return sampler


def _finished(study: optuna.Study, lr: float, size: int, accuracy: float, cost: float) -> None:
    params = {"n_epochs": 1, "learning_rate_multiplier": lr, FIDELITY: size}
    study.add_trial(
        optuna.trial.create_trial(
            params=params, distributions=DISTRIBUTIONS, values=[accuracy, cost]
        )
    )


def _study(sampler: FidelitySampler, storage: Any = None, name: str = "s") -> optuna.Study:
    return optuna.create_study(
        study_name=name,
        storage=storage,
        directions=["maximize", "minimize"],
        sampler=sampler,
        load_if_exists=True,
    )


def test_the_best_of_a_rung_is_promoted_once_and_the_rest_wait() -> None:
    study = _study(_sampler())
    # Four finished at 400 examples, same cost: the top half (two) may be promoted.
    for lr, accuracy in ((0.5, 0.60), (1.0, 0.80), (2.0, 0.70), (4.0, 0.55)):
        _finished(study, lr, 400, accuracy, 1.0)
    first = study.ask(DISTRIBUTIONS)
    assert first.params == {"n_epochs": 1, "learning_rate_multiplier": 1.0, FIDELITY: 800}
    # Still running, the first promotion counts as taken: the second best goes next.
    second = study.ask(DISTRIBUTIONS)
    assert second.params == {"n_epochs": 1, "learning_rate_multiplier": 2.0, FIDELITY: 800}
    # The top half is used up: a new configuration at the lowest rung.
    third = study.ask(DISTRIBUTIONS)
    assert third.params[FIDELITY] == 400
    assert third.params["learning_rate_multiplier"] not in (1.0, 2.0)


def test_a_cheaper_configuration_nearly_as_good_ranks_with_the_best() -> None:
    study = _study(_sampler())
    _finished(study, 1.0, 400, 0.80, 10.0)  # best, dear
    _finished(study, 2.0, 400, 0.79, 1.0)  # nearly as good, a tenth of the money: on the front
    _finished(study, 0.5, 400, 0.70, 5.0)  # dominated
    _finished(study, 4.0, 400, 0.60, 9.0)  # dominated
    promoted = {study.ask(DISTRIBUTIONS).params["learning_rate_multiplier"] for _ in range(2)}
    assert promoted == {1.0, 2.0}


def _knowing_chance(values: tuple[int, ...] = (400, 800, 1200)) -> FidelitySampler:
    # Always answering the majority class scores 0.5 on 300 validation examples: a model
    # learned something above 0.5 + one standard error (0.529).
    sampler = _sampler(values=values)
    sampler.set_chance(0.5, 300)
    return sampler


def test_models_that_learned_nothing_rank_after_every_model_that_learned() -> None:
    for knows, expected in ((False, {1.0, 4.0}), (True, {1.0, 2.0})):
        sampler = _knowing_chance() if knows else _sampler()
        study = _study(sampler, name=f"s{knows}")
        _finished(study, 0.5, 400, 0.50, 0.1)  # learned nothing, cheapest: on the front
        _finished(study, 1.0, 400, 0.70, 1.0)  # learned, on the front
        _finished(study, 2.0, 400, 0.65, 2.0)  # learned, dominated by the one above
        _finished(study, 4.0, 400, 0.52, 0.2)  # within noise of chance: learned nothing
        promoted = {study.ask(DISTRIBUTIONS).params["learning_rate_multiplier"] for _ in range(2)}
        # Told what chance scores, the two that learned rise; not told, a cheap one does.
        assert promoted == expected


def test_models_that_learned_nothing_fill_places_that_learners_leave() -> None:
    study = _study(_knowing_chance())
    for lr, accuracy in ((0.5, 0.50), (1.0, 0.70), (2.0, 0.51), (4.0, 0.50)):
        _finished(study, lr, 400, accuracy, 1.0)
    promoted = [study.ask(DISTRIBUTIONS).params for _ in range(2)]
    assert [p[FIDELITY] for p in promoted] == [800, 800]
    assert promoted[0]["learning_rate_multiplier"] == 1.0  # the one that learned goes first


def test_the_floor_rises_past_a_rung_where_too_few_learned() -> None:
    sampler = _knowing_chance()
    study = _study(sampler)
    for lr in (0.5, 1.0, 2.0):
        _finished(study, lr, 400, 0.50, 1.0)
    assert sampler.floor(study.get_trials()) == 400  # three are not enough to judge
    _finished(study, 4.0, 400, 0.71, 1.0)  # one of four learned: fewer than 1/eta
    assert sampler.floor(study.get_trials()) == 800
    asked = [study.ask(DISTRIBUTIONS) for _ in range(3)]
    assert [t.params[FIDELITY] for t in asked] == [800, 800, 800]  # two promoted, one new
    new = asked[2].params
    assert config_key(new) not in {config_key(t.params) for t in study.get_trials()[:4]}
    # Promoted trials are not starters: the floor is judged on configurations started there.
    for trial in asked[:2]:
        study.tell(trial, [0.5, 2.0])
    assert sampler.floor(study.get_trials()) == 800


def test_the_floor_stays_where_enough_learned_or_chance_is_unknown() -> None:
    knowing, blind = _knowing_chance(), _sampler()
    study = _study(knowing)
    for lr, accuracy in ((0.5, 0.50), (1.0, 0.50), (2.0, 0.70), (4.0, 0.72)):
        _finished(study, lr, 400, accuracy, 1.0)
    assert knowing.floor(study.get_trials()) == 400  # two of four learned: half, as promoted
    _finished(study, 3.0, 400, 0.50, 1.0)
    _finished(study, 3.5, 400, 0.50, 1.0)
    assert knowing.floor(study.get_trials()) == 800  # two of six
    assert blind.floor(study.get_trials()) == 400  # not told what chance scores: all learned


def test_the_base_sampler_sees_a_model_that_learned_nothing_as_dominated() -> None:
    sampler = _knowing_chance()
    study = _study(sampler)
    _finished(study, 0.5, 400, 0.50, 0.1)  # cheap, learned nothing
    _finished(study, 1.0, 400, 0.70, 3.0)
    shown = {t.params["learning_rate_multiplier"]: t.values for t in sampler._view(study).trials}
    # Always answering the majority class is free: shown at the dearest cost in view, never as
    # the cheap end of the front; the study itself keeps what it was told.
    assert shown == {0.5: [0.50, 3.0], 1.0: [0.70, 3.0]}
    assert [t.values for t in study.trials] == [[0.50, 0.1], [0.70, 3.0]]


def test_chance_is_checked_and_told_by_the_sweep() -> None:
    with pytest.raises(ValueError, match="accuracy"):
        _sampler().set_chance(1.5, 300)
    sampler = _sampler()
    rows = [("good", "positive"), ("fine", "positive"), ("bad", "negative")]
    split = Split(tuple(t for t, _ in rows), tuple(label for _, label in rows))
    data = PreparedData(split, split, split, ("negative", "positive"), "d", False, "tiny")
    tell_chance(data, SimpleNamespace(study=_study(sampler)))  # type: ignore[arg-type]
    # Two of three validation examples are the majority label: 2/3 learns nothing.
    assert not sampler.learned(optuna.trial.create_trial(values=[2 / 3, 1.0]))
    assert sampler.learned(optuna.trial.create_trial(values=[1.0, 1.0]))


def test_checkpoints_and_failed_trials_are_never_candidates() -> None:
    study = _study(_sampler())
    params = {"n_epochs": 2, "learning_rate_multiplier": 1.0, FIDELITY: 400}
    for accuracy in (0.9, 0.95):  # epoch checkpoints of one trial: not trials of their own
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=DISTRIBUTIONS,
                values=[accuracy, 1.0],
                user_attrs={CHECKPOINT_OF: 0},
            )
        )
    study.add_trial(
        optuna.trial.create_trial(
            params={**params, "learning_rate_multiplier": 2.0},
            distributions=DISTRIBUTIONS,
            state=TrialState.FAIL,
        )
    )
    assert _sampler().promotion(study) is None
    assert study.ask(DISTRIBUTIONS).params[FIDELITY] == 400


def test_two_workers_sharing_a_study_never_promote_the_same_configuration(
    tmp_path: Path,
) -> None:
    storage = f"sqlite:///{tmp_path}/optuna.db"
    one = _study(_sampler(), storage)
    two = _study(_sampler(), storage)  # a second worker: its own sampler, the same storage
    for lr, accuracy in ((0.5, 0.60), (1.0, 0.80), (2.0, 0.70), (4.0, 0.55)):
        _finished(one, lr, 400, accuracy, 1.0)
    # Asks alternate as the `launch` lock serialises them; every one is still RUNNING.
    asked = [study.ask(DISTRIBUTIONS) for study in (one, two, one, two)]
    promoted = [t.params for t in asked if t.params[FIDELITY] == 800]
    assert len(promoted) == 2
    assert len({config_key(p) for p in promoted}) == 2
    # A requeued (WAITING) promotion is taken too.
    one.enqueue_trial({"n_epochs": 1, "learning_rate_multiplier": 0.5, FIDELITY: 800})
    _finished(one, 4.0, 400, 0.9, 1.0)  # five at 400: still two promotable (0.9 and 0.8)
    sampler = _sampler()
    due = sampler.promotion(one)
    assert due is not None and due["learning_rate_multiplier"] == 4.0


def test_the_retry_of_a_killed_promotion_claims_no_other_promotion() -> None:
    # Found walking a kill during a promoted trial: its retry (queued again with its params,
    # by `requeue`) was asked for like a new trial, and the sampler noted the next promotion
    # due on it; the retry ran its own params, so that other promotion was never run.
    study = _study(_sampler())
    for lr, accuracy in ((0.5, 0.60), (1.0, 0.80), (2.0, 0.70), (4.0, 0.55)):
        _finished(study, lr, 400, accuracy, 1.0)
    killed = study.ask(DISTRIBUTIONS)
    assert killed.params == {"n_epochs": 1, "learning_rate_multiplier": 1.0, FIDELITY: 800}
    study.tell(killed, state=TrialState.FAIL)
    requeue(study, study._storage.get_trial(killed._trial_id))
    retry = study.ask(DISTRIBUTIONS)
    assert retry.params == killed.params  # the killed promotion runs again, once
    # The second promotion due is still due, and asked for next.
    assert _sampler().promotion(study) == {**killed.params, "learning_rate_multiplier": 2.0}
    assert study.ask(DISTRIBUTIONS).params == {**killed.params, "learning_rate_multiplier": 2.0}


def test_a_promotion_skipped_for_the_budget_waits_for_the_next_sweep() -> None:
    # Within a sweep, a promotion its budget skipped is passed over (the next is asked for,
    # not the same again and again, each skipped and cut); a later sweep, a new sampler on the
    # same study (the budget raised), finds it due.
    study = _study(_sampler())
    for lr, accuracy in ((0.5, 0.60), (1.0, 0.80), (2.0, 0.70), (4.0, 0.55)):
        _finished(study, lr, 400, accuracy, 1.0)
    skipped = study.ask(DISTRIBUTIONS)
    assert skipped.params["learning_rate_multiplier"] == 1.0
    for key, value in skipped_attrs("budget: ...").items():
        skipped.set_user_attr(key, value)
    study.tell(skipped, state=TrialState.PRUNED)
    assert study.ask(DISTRIBUTIONS).params["learning_rate_multiplier"] == 2.0
    later = _sampler().promotion(study)
    assert later == skipped.params


def test_a_rung_whose_fixed_cost_dominates_is_skipped() -> None:
    # A hosted job minimum: $10 whatever the size, plus a little per example.
    flat = _sampler(lambda p: 10.0 + 0.001 * p[FIDELITY])
    assert flat.rungs({"n_epochs": 1, "learning_rate_multiplier": 1.0}) == [1200]
    # Priced by the work: every size is a rung.
    linear = _sampler(lambda p: 0.001 * p[FIDELITY] * p["n_epochs"], values=(200, 400, 800))
    assert linear.rungs({"n_epochs": 2, "learning_rate_multiplier": 1.0}) == [200, 400, 800]
    # A $0.35 minimum: 200 examples cost nearly what 400 do, 400 half of 800.
    floor = _sampler(lambda p: max(0.35, 0.001 * p[FIDELITY]), values=(200, 400, 800))
    assert floor.rungs({"n_epochs": 1, "learning_rate_multiplier": 1.0}) == [400, 800]
    # A fee above 400 examples: 800 costs 73% of 1200 (skipped), 400 a third of it.
    mixed = _sampler(lambda p: max(0.5, 0.001 * p[FIDELITY]) + 0.3 * (p[FIDELITY] > 400))
    assert mixed.rungs({"n_epochs": 1, "learning_rate_multiplier": 1.0}) == [400, 1200]
    # New configurations start on the lowest rung kept, and promote straight to the top.
    study = _study(flat)
    assert study.ask(DISTRIBUTIONS).params[FIDELITY] == 1200
    study = _study(mixed, name="m")
    _finished(study, 1.0, 400, 0.8, 1.0)
    _finished(study, 2.0, 400, 0.7, 1.0)
    assert study.ask(DISTRIBUTIONS).params[FIDELITY] == 1200


def test_a_range_of_training_set_sizes_is_priced_without_pricing_every_size() -> None:
    # Found with `train_examples: {type: int, low: 100, high: 1800}`: the sampler priced each
    # of the 1,701 sizes for every new configuration (the local backend's estimate takes about
    # 4 ms: 7 s before each trial), where the ladder it keeps has a few rungs.
    calls: list[int] = []

    def price(params: dict[str, Any]) -> float:
        calls.append(params[FIDELITY])
        return 0.05 + 0.001 * params[FIDELITY]  # a fixed cost, then by the example

    sizes = tuple(range(100, 1801))
    sampler = _sampler(price, values=sizes)
    ladder = sampler.rungs({"n_epochs": 1, "learning_rate_multiplier": 1.0})
    # The rule, walked size by size: kept when at most 2/3 of the last size kept.
    expected = [1800]
    for size in reversed(sizes[:-1]):
        if price({FIDELITY: size}) <= 2 / 3 * price({FIDELITY: expected[0]}):
            expected.insert(0, size)
    assert ladder == expected and len(ladder) > 2
    calls.clear()
    sampler.rungs({"n_epochs": 2, "learning_rate_multiplier": 1.0})
    assert len(calls) < 100


def _experiment(tmp_path: Path, **overrides: object) -> Path:
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))  # 120 training rows
    space = {**SPACE, FIDELITY: {"type": "categorical", "choices": [30, 120]}}
    study = {"n_trials": 6, "sampler": {"kind": "fidelity"}}
    return write_experiment(tmp_path, data, space, study=study, **overrides)


def test_a_fidelity_sweep_keeps_n_trials_and_reserves_every_trial(
    tmp_path: Path,
    backend: MemoryBackend,  # noqa: F811
) -> None:
    path = _experiment(tmp_path)
    experiment = load_experiment(str(path))
    outcome = run_sweep(experiment, RecordingView())
    assert len(outcome.results) == 6 and not outcome.failures
    trials = [r for r in _records() if not r.is_checkpoint]
    assert len(trials) == 6  # promoted trials count toward n_trials, checkpoints do not
    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    done = [t for t in study.get_trials(states=(TrialState.COMPLETE,)) if _trained(t)]
    small = {config_key(t.params) for t in done if t.params[FIDELITY] == 30}
    large = [config_key(t.params) for t in done if t.params[FIDELITY] == 120]
    assert large, "nothing was promoted"
    assert set(large) <= small and len(set(large)) == len(large)  # promoted, each once
    # Every trial, promoted or not, reserved the backend's estimate of its own configuration.
    space, data = experiment_space(experiment), prepare_experiment(experiment)[0]
    for trial in done:
        spec = spec_from_trial(trial, space, experiment)
        record = TrialRecord.from_attrs(trial.user_attrs)
        assert record.estimated_cost_usd == pytest.approx(backend.estimate(spec, data).total.usd)
    assert len({t.params[FIDELITY] for t in done}) == 2  # the two sizes cost differently


def test_a_fidelity_sweep_stops_at_its_budget(
    tmp_path: Path,
    backend: MemoryBackend,  # noqa: F811
) -> None:
    path = _experiment(tmp_path, budget_usd=0.003)
    outcome = run_sweep(load_experiment(str(path)), RecordingView(), confirm=lambda *_: True)
    assert outcome.stopped is not None and "budget" in outcome.stopped
    assert 0 < sum(r.spent for r in _records()) <= 0.003


def _trained(trial: optuna.trial.FrozenTrial) -> bool:
    return not TrialRecord.from_attrs(trial.user_attrs).is_checkpoint


def test_a_space_that_names_the_training_set_size_first_prices_drawn_configurations(
    tmp_path: Path,
    backend: MemoryBackend,  # noqa: F811
) -> None:
    # Found writing a search-space file by hand: with train_examples above n_epochs, the first
    # rung was priced before the epochs were drawn, and the sweep ended in a KeyError traceback.
    path = _experiment(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text(
        "train_examples: {type: categorical, choices: [30, 120]}\n"
        "n_epochs: {type: int, low: 1, high: 3}\n"
        "learning_rate_multiplier: {type: float, low: 0.5, high: 4.0, log: true}\n"
        "batch_size: 8\n"
    )
    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert len(outcome.results) == 6 and not outcome.failures


def _tight_budget(tmp_path: Path) -> Path:
    """One epoch, 30 or 120 examples: $0.000725 a configuration at 30, $0.00132 at 120. Two
    configurations at 30 leave too little of $0.0025 to promote one, enough for a third."""
    data = write_csv(tmp_path / "reviews.csv", review_rows(100, seed=2))  # 120 training rows
    space = {**SPACE, "n_epochs": 1, FIDELITY: {"type": "categorical", "choices": [30, 120]}}
    study = {"n_trials": 6, "sampler": {"kind": "fidelity"}}
    return write_experiment(tmp_path, data, space, study=study, budget_usd=0.0025)


def _trained_params(study: optuna.Study) -> list[dict[str, Any]]:
    return [t.params for t in study.get_trials(states=(TrialState.COMPLETE,)) if _trained(t)]


def test_a_promotion_the_budget_cannot_cover_is_not_cut_to_its_own_smaller_rung(
    tmp_path: Path,
    backend: MemoryBackend,  # noqa: F811
) -> None:
    # Found walking a sweep at its budget: the promotion did not fit, and the cut that ran
    # instead ("fewer training examples") was the configuration at the rung it had already
    # run on: the same trial paid for twice, counted toward n_trials, learning nothing new.
    path = _tight_budget(tmp_path)
    outcome = run_sweep(load_experiment(str(path)), RecordingView(), confirm=lambda *_: True)
    assert outcome.stopped is not None and "budget" in outcome.stopped
    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    trained = [config_key(p) + repr(p[FIDELITY]) for p in _trained_params(study)]
    assert len(trained) == len(set(trained)) == 2
    assert sum(r.spent for r in _records()) <= 0.0025


def test_a_promotion_skipped_for_the_budget_runs_once_the_budget_is_raised(
    tmp_path: Path,
    backend: MemoryBackend,  # noqa: F811
) -> None:
    # Found walking a sweep at its budget: the skipped promotion was kept as a trial of that
    # configuration on the next rung, so it counted as taken; raising budget_usd, as the
    # message says to, went on without ever promoting it.
    path = _tight_budget(tmp_path)
    run_sweep(load_experiment(str(path)), RecordingView(), confirm=lambda *_: True)
    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    (skipped,) = study.get_trials(states=(TrialState.PRUNED,))
    assert skipped.params[FIDELITY] == 120
    run_sweep(load_experiment(str(path), ["budget_usd=0.01"]), RecordingView())
    assert skipped.params in _trained_params(study)


def test_sampler_kinds_are_checked(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "reviews.csv", review_rows(20, seed=2))
    path = write_experiment(tmp_path, data, SPACE)
    with pytest.raises(ConfigError) as bad:
        load_experiment(str(path), ["study.sampler.kind=hyperband"])
    assert "study.sampler.kind" in str(bad.value)
    assert all(k in str(bad.value) for k in ("'tpe'", "'random'", "'grid'", "'fidelity'"))
    # Fidelity needs a training-set size to search over.
    experiment = load_experiment(str(path), ["study.sampler.kind=fidelity"])
    with pytest.raises(ConfigError, match="train_examples"):
        make_sampler(experiment, experiment_space(experiment))
    # `harness estimate` says so too (it read "Within budget_usd" for a sweep that cannot run).
    with pytest.raises(ConfigError, match="train_examples"):
        estimate_sweep(experiment)
