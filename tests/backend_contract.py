"""One contract suite for every backend, in the manner of Optuna's storage test cases.

A backend's test module subclasses `BackendContract` and provides a class-scoped `case` fixture
(a `BackendCase`: how to build the backend, tiny data, a spec to train). Every test here then
runs against that backend, so what `harness.backends.base.Backend` promises holds for all of them:

- preflight spends nothing and makes nothing (the case's spending snapshot is unchanged);
- the actual cost of a trial (training plus scoring the test set) is never above its estimate;
- `on_epoch` is called once per epoch, in order, and asking to stop is honoured where declared;
- predictions come back in input order, one per text, with a score for every label;
- failures are `BackendError`, never a raw library exception;
- a packaged model opens again and predicts the same; `discard` never takes a final model, and
  a checkpoint it says it kept still answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.backends.base import Backend, Capabilities
from harness.errors import BackendError
from harness.records import EpochResult, PreparedData, TrainedModel, TrialSpec


@dataclass
class BackendCase:
    """What the contract needs to know about one backend under test."""

    make: Callable[[], Backend]
    data: PreparedData
    spec: TrialSpec  # at least two epochs, so there is an epoch to stop after
    missing_model: str  # a model reference that does not exist
    # A snapshot of everything the backend could have spent or made (a fake provider's
    # billable requests, a local backend's model and calibration folders): equal snapshots
    # mean nothing was spent. Training must change it, or the snapshot sees nothing.
    spending: Callable[[], object]
    env: dict[str, str] = field(default_factory=dict)  # set around every test (API keys)


def files_of(*folders: Path) -> list[tuple[str, int]]:
    """Every file under `folders` with its modification time: what a local backend made."""
    return sorted(
        (str(p), p.stat().st_mtime_ns) for f in folders for p in f.rglob("*") if p.is_file()
    )


def not_reads(requests: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (method, path) of every request a fake provider saw but GETs: what could be billed."""
    return [(method, path) for method, path in requests if method != "GET"]


@dataclass
class Trained:
    backend: Backend
    model: TrainedModel
    seen: list[EpochResult]


class BackendContract:
    """Subclass with a class-scoped `case` fixture returning a `BackendCase`."""

    @pytest.fixture(autouse=True)
    def _env(self, case: BackendCase, monkeypatch: pytest.MonkeyPatch) -> None:
        for key, value in case.env.items():
            monkeypatch.setenv(key, value)

    @pytest.fixture(scope="class")
    def trained(self, case: BackendCase) -> Iterator[Trained]:
        """One full training run shared by the tests that only read its outcome."""
        with pytest.MonkeyPatch.context() as patch:
            for key, value in case.env.items():
                patch.setenv(key, value)
            backend = case.make()
            seen: list[EpochResult] = []

            def record(epoch: EpochResult) -> bool:
                seen.append(epoch)
                return False

            model = backend.fine_tune(case.spec, case.data, record)
            yield Trained(backend, model, seen)

    def test_capabilities_are_declared(self, case: BackendCase) -> None:
        backend = case.make()
        assert isinstance(backend.capabilities, Capabilities)
        assert backend.capabilities.max_concurrency >= 1
        assert isinstance(backend.kind, str) and backend.kind
        # What a backend may do is declared, never probed: a backend that deploys nothing has
        # nothing to release, and one that does names where its trials note what they hold.
        if not backend.capabilities.deploys_models:
            assert backend.release_deployments("no-such-study", ()) == []
        else:
            assert backend.capabilities.hosting_notes

    def test_preflight_passes_for_a_healthy_backend_and_spends_nothing(
        self, case: BackendCase
    ) -> None:
        backend = case.make()
        before = case.spending()
        backend.preflight(case.data, [case.spec.base_model])
        assert case.spending() == before, "preflight spent or made something"

    def test_actual_cost_is_never_above_the_estimate(self, case: BackendCase) -> None:
        backend = case.make()
        estimate = backend.estimate(case.spec, case.data)
        before = case.spending()
        model = backend.fine_tune(case.spec, case.data, lambda epoch: False)
        assert case.spending() != before, "the case's spending snapshot does not see training"
        _, scoring = backend.predict(model.model_ref, case.data.test.texts, case.data.labels)
        actual = model.train_cost + scoring
        assert 0.0 < actual.usd <= estimate.total.usd
        assert model.train_cost.usd <= estimate.train.usd

    def test_on_epoch_is_called_once_per_epoch_in_order(self, trained: Trained) -> None:
        numbers = [epoch.epoch for epoch in trained.seen]
        assert numbers == list(range(1, len(numbers) + 1)) and numbers
        # Which validation examples each epoch got right travels with it (paired comparisons),
        # from the one local epoch loop as from the hosted one.
        assert all(epoch.valid_correct for epoch in trained.seen)
        assert list(trained.model.epochs) == trained.seen
        costs = [epoch.cost_so_far.usd for epoch in trained.seen]
        assert costs == sorted(costs), "cost so far never goes down"
        assert all(0.0 <= epoch.valid_accuracy <= 1.0 for epoch in trained.seen)
        assert not trained.model.stopped_early

    def test_asking_to_stop_after_the_first_epoch(self, case: BackendCase) -> None:
        backend = case.make()
        calls: list[int] = []

        def stop_now(epoch: EpochResult) -> bool:
            calls.append(epoch.epoch)
            return True

        model = backend.fine_tune(case.spec, case.data, stop_now)
        assert calls[0] == 1 and model.stopped_early
        if backend.capabilities.stops_early:
            # Training itself stopped: one epoch ran and was paid for.
            assert calls == [1] and len(model.epochs) == 1
        # Either way the model handed back is the one of the epoch it stopped at.
        stopped_at = next(e for e in model.epochs if e.epoch == calls[-1])
        assert model.model_ref == stopped_at.checkpoint

    def test_predictions_in_input_order_with_every_label_scored(
        self, case: BackendCase, trained: Trained
    ) -> None:
        texts = case.data.test.texts
        labels = case.data.labels
        forward, _ = trained.backend.predict(trained.model.model_ref, texts, labels)
        backward, _ = trained.backend.predict(trained.model.model_ref, texts[::-1], labels)
        assert len(forward) == len(texts)
        assert [p.label for p in backward] == [p.label for p in forward][::-1]
        for prediction in forward:
            assert set(prediction.scores) == set(labels)
            assert 0.0 <= prediction.confidence <= 1.0
        empty, cost = trained.backend.predict(trained.model.model_ref, [], labels)
        assert empty == [] and cost.usd == 0.0

    def test_a_missing_model_is_a_backend_error(self, case: BackendCase) -> None:
        with pytest.raises(BackendError):
            case.make().predict(case.missing_model, ["any text"], case.data.labels)

    def test_a_package_opens_again_and_predicts_the_same(
        self, case: BackendCase, trained: Trained
    ) -> None:
        labels = case.data.labels
        package = trained.backend.package(trained.model.model_ref, labels)
        assert sorted(package.config["labels"]) == sorted(labels)
        assert not any(value in str(package.config) for value in case.env.values())
        reopened = case.make()
        ref = reopened.open_package(package.config, package.artifacts)
        texts = case.data.test.texts[:4]
        before, _ = trained.backend.predict(trained.model.model_ref, texts, labels)
        after, _ = reopened.predict(ref, texts, labels)
        assert [p.label for p in after] == [p.label for p in before]

    def test_discard_deletes_only_checkpoints_it_owns(
        self, case: BackendCase, trained: Trained
    ) -> None:
        final = trained.model.model_ref
        # Never a trial's final model, for any backend (a path check alone held for every
        # remote model reference, which is no path).
        assert trained.backend.discard(final) is False
        earlier = [e.checkpoint for e in trained.model.epochs if e.checkpoint not in (None, final)]
        assert earlier, "a two-epoch run keeps the first epoch's model"
        for checkpoint in earlier:
            assert checkpoint is not None
            deleted = trained.backend.discard(checkpoint)
            if deleted:
                with pytest.raises(BackendError):
                    case.make().predict(checkpoint, ["any text"], case.data.labels)
            else:  # nothing deleted: it still answers
                kept, _ = case.make().predict(checkpoint, ["any text"], case.data.labels)
                assert len(kept) == 1
        # The final model is untouched by discarding its checkpoints.
        predictions, _ = trained.backend.predict(final, case.data.test.texts[:2], case.data.labels)
        assert len(predictions) == 2
