"""Local LM backend: LoRA fine-tuning of a causal language model that learns to emit the label.

The textbook's generative recipe, run on this machine: the prompt is the text plus
`"\\n\\n###\\n\\n"` and the completion the label with a leading space (or chat messages with
`format: chat`), the loss is on the completion tokens only, and a label is chosen by its
log-probability restricted to the label set (`_lm_training`). The protocol is documented on
`harness.backends.base.Backend`; choices shared with the encoder backend (`local.py`):

- Hyperparameters as for OpenAI: learning rate = `base_learning_rate` (a LoRA rate, 2e-4) x
  `learning_rate_multiplier`, `n_epochs`, `batch_size`; LoRA rank and alpha from the search
  space (`lora_rank`, `lora_alpha`) where it samples them, else from the config.
- Validation after every epoch; a checkpoint (the adapter) after every epoch but the last
  (`evaluate_checkpoints`); stopping when `on_epoch` says so; a stopped trial hands back the
  checkpoint of its epoch.
- Cost is the work done, priced at rates calibrated on this machine (`_calibration`, with
  this backend's own training step and scoring as the workload): tokens trained (prompt and
  completion, every example, every epoch) and tokens scored (every prompt, once per group of
  labels sharing their leading tokens). `estimate` counts the same tokens, so it is exact for a
  trial that runs all its epochs.
- Models are saved as LoRA adapters (a few MB) beside `harness_lm.json` naming the base model;
  `package` adds the base model (hard links) so a registered model predicts on its own.
- Greedy decoding's answers outside the label set are counted on validation every epoch and
  recorded in the trial's journal (`greedy_out_of_set`); predictions are always labels.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

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
from harness.backends.local._epochs import run_epochs
from harness.backends.local._lm_epochs import LMEpochs, LoadedLM
from harness.backends.local._lm_format import Formatter, formatter, label_sequences
from harness.backends.local._lm_models import (
    adapter_folder,
    base_of,
    is_adapter_folder,
    is_checkpoint_folder,
    load_error,
    package_adapter,
    read_meta,
    resolve_lm_path,
    write_meta,
)
from harness.backends.local._lm_training import (
    LMRun,
    attach_lora,
    check_inputs,
    lora_shape,
    predictions,
    score_labels,
    scored_tokens,
    start_lm_run,
)
from harness.backends.local._lm_workload import LM_WORKLOAD, load_causal_lm, load_tokenizer
from harness.backends.local._models import LocalFolders, model_field
from harness.backends.local._torch_utils import (
    out_of_memory_as_backend_error,
    quiet_transformers,
    start_device,
)
from harness.backends.local.config import LocalLMBackendConfig
from harness.data.prepare import priced_subset, subsample
from harness.errors import BackendError
from harness.records import Cost, Prediction, PreparedData, Split, TrainedModel, TrialSpec

MODEL_ARTIFACT = "model"
PRICING_NOTE = "local_pricing"
DEFAULT_SYSTEM_PROMPT = "Classify the text. Answer with the label only."
PROMPT_VERSION = 1  # bumped if the prompt layout changes: older packages are refused


class LocalLMBackend(LocalFolders):
    """LoRA-tunes a causal LM on this machine (CUDA, Apple MPS or CPU); one trial at a time."""

    kind = "local_lm"
    capabilities = Capabilities(max_concurrency=1, stops_early=True, scores_base_model=True)

    def __init__(self, config: LocalLMBackendConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.progress: Progress = progress or NullProgress()
        self.device, self.cpu_threads = start_device(config.device)
        self._formats: dict[str, Formatter] = {}
        self._loaded: LoadedLM | None = None
        self.pricing = Pricing(config, self.device, self.progress, LM_WORKLOAD)

    # ----------------------------------------------------------------- estimates and tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text with the configured model's tokenizer, without special tokens."""
        fmt = self._format(resolve_lm_path(self.config.model), self.config.model)
        encoded = fmt.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def text_token_limit(self, labels: Sequence[str]) -> int | None:
        """`max_length` less the prompt format and the longest label (`Formatter.text_budget`)."""
        path = resolve_lm_path(self.config.model)
        return self._format(path, self.config.model).text_budget(labels)

    def estimate(self, spec: TrialSpec, data: PreparedData) -> Estimate:
        """The tokens `spec` will train and score, at the calibrated rates; exact for a trial
        that runs all its epochs (checkpoints' test scoring included)."""
        path = resolve_lm_path(spec.base_model, model_field(spec.base_model, self.config.model))
        fmt = self._format(path, spec.base_model)
        rates = self.pricing.rates(path, spec.base_model)

        def lengths(split: Split) -> list[int]:
            return [len(ids) for ids, _ in fmt.examples(split.texts, split.labels, data.labels)]

        # The trial's own subset, or a bound over any subset a seed draws (`spec.bound`).
        subset = priced_subset(data.train, spec.train_examples, spec.seed, spec.bound, lengths)
        trained = spec.n_epochs * sum(lengths(subset))
        valid = self._scored(fmt, data.validation.texts, data.labels)
        train = self.pricing.cost(rates, trained, spec.n_epochs * valid)
        models = 1 + (spec.n_epochs - 1 if self.config.evaluate_checkpoints else 0)
        test = self._scored(fmt, data.test.texts, data.labels)
        return Estimate(train, self.pricing.cost(rates, 0, models * test))

    def preflight(self, data: PreparedData, models: Sequence[str]) -> None:
        """Each base model resolves (SmolLM2 converted once) and its tokenizer and prompt
        format load; nothing is trained."""
        for model in models:
            path = resolve_lm_path(model, model_field(model, self.config.model))
            fmt = self._format(path, model)
            fmt.prompts(data.train.texts[:1], data.labels)  # max_length leaves room for text

    # ----------------------------------------------------------------------------- training

    def fine_tune(
        self,
        spec: TrialSpec,
        data: PreparedData,
        on_epoch: EpochCallback,
        journal: Journal | None = None,
    ) -> TrainedModel:
        """Train LoRA adapters for `spec`, validating after every epoch; see the module doc.

        The journal gets `local_pricing` (the rates) and, after every epoch, the validation
        answers greedy decoding would put outside the label set (`greedy_out_of_set`).
        """
        check_inputs(spec, data)
        self._loaded = None
        hint = f"{spec.run_name()}: out of memory; try a smaller batch_size or backend.max_length"
        with out_of_memory_as_backend_error(hint):
            path = resolve_lm_path(spec.base_model)
            rates = self.pricing.rates(path, spec.base_model)
            if journal is not None:
                journal.record(PRICING_NOTE, rates.note(self.config.dollars_per_hour))
            return self._fine_tune(spec, data, on_epoch, (path, rates), journal)

    def _fine_tune(
        self,
        spec: TrialSpec,
        data: PreparedData,
        on_epoch: EpochCallback,
        base: tuple[str, Rates],
        journal: Journal | None,
    ) -> TrainedModel:
        started = time.perf_counter()
        path, rates = base
        run, fmt = self._start(spec, data, path)
        steps = LMEpochs(self, spec, data, (run, fmt, path), (rates, journal))
        return run_epochs(spec, on_epoch, steps, self.config.evaluate_checkpoints, started)

    def _start(self, spec: TrialSpec, data: PreparedData, path: str) -> tuple[LMRun, Formatter]:
        """The trial's examples, a fresh base model with new adapters, optimizer and schedule."""
        fmt = self._format(path, spec.base_model)
        subset = subsample(data.train, spec.train_examples, spec.seed)
        examples = fmt.examples(subset.texts, subset.labels, data.labels)
        try:
            model = load_causal_lm(path)
        except (OSError, ValueError) as exc:
            raise load_error(spec.base_model, path, exc) from None
        torch.manual_seed(spec.seed)  # the adapters' initialisation and dropout
        rank, alpha = lora_shape(spec, self.config)
        c = self.config
        model = attach_lora(model, rank, alpha, c.lora_dropout, c.target_modules).to(self.device)
        lr = c.base_learning_rate * spec.learning_rate_multiplier
        hyper = (lr, spec.batch_size, spec.n_epochs, c.weight_decay, c.warmup_ratio)
        return start_lm_run(model, self.device, examples, hyper, spec.seed, fmt.eos), fmt

    def _save(
        self,
        run: LMRun,
        fmt: Formatter,
        data: PreparedData,
        spec: TrialSpec,
        base: str,
        epoch: int | None = None,
    ) -> str:
        """Save the adapter, tokenizer and `harness_lm.json` (a checkpoint with `epoch`)."""
        out = adapter_folder(self.config.models_dir, data.digest, spec, epoch)
        rank, alpha = lora_shape(spec, self.config)
        meta = {
            "base_model": spec.base_model,
            "base_path": str(Path(base).resolve()) if Path(base).is_dir() else base,
            "format": self.config.format,
            "system_prompt": self._system_prompt(),
            "labels": list(data.labels),
            "lora_rank": rank,
            "lora_alpha": alpha,
            "prompt_version": PROMPT_VERSION,
        }
        try:
            out.mkdir(parents=True, exist_ok=True)
            with quiet_transformers():
                run.model.save_pretrained(out)
                fmt.tokenizer.save_pretrained(out)
            write_meta(out, meta)
        except OSError as exc:
            raise BackendError(f"cannot save the model to {out}: {exc.strerror or exc}") from None
        if epoch is None:
            self._loaded = LoadedLM(out.resolve(), run.model, fmt)
        return str(out)

    # ---------------------------------------------------------------------------- inference

    def predict(
        self, model_ref: str, texts: Sequence[str], labels: Sequence[str]
    ) -> tuple[list[Prediction], Cost]:
        """Score every label for every text with the adapter at `model_ref` (or, zero-shot, a
        base model name or folder); see `Backend.predict`."""
        started = time.perf_counter()
        if not texts:
            return [], Cost()
        model, fmt, base = self._model_at(model_ref)
        loading = time.perf_counter() - started
        hint = f"{model_ref}: out of memory; lower eval_batch_size"
        with out_of_memory_as_backend_error(hint):
            rates = self.pricing.rates(base, model_ref)
            began = time.perf_counter()
            prompts = fmt.prompts(texts, labels)
            sequences = label_sequences(fmt, labels)
            scores = score_labels(
                model, prompts, sequences, self.config.eval_batch_size, fmt.eos, self.device
            )
        seconds = loading + time.perf_counter() - began
        return predictions(scores.logprobs, labels), self.pricing.cost(
            rates, 0, scores.tokens, seconds
        )

    def is_base_model(self, model_ref: str) -> bool:
        """A reference that is no adapter folder `fine_tune` wrote: scored zero-shot."""
        return not is_adapter_folder(Path(model_ref).expanduser())

    def _model_at(self, model_ref: str) -> tuple[Any, Formatter, str]:
        """The in-memory model if `model_ref` is it, else load adapter and base (and keep them).
        A reference that is no adapter folder is a base model, scored zero-shot."""
        path = Path(model_ref).expanduser()
        if self._loaded is not None and self._loaded.ref == path.resolve():
            return self._loaded.model, self._loaded.fmt, self._base_path(path)
        self._loaded = None
        if not is_adapter_folder(path):
            is_base = (path / "config.json").is_file()
            if not is_base and (path.exists() or model_ref.startswith(("/", ".", "~"))):
                raise BackendError(
                    f"no fine-tuned model at {model_ref} (expected a folder written by fine_tune)"
                )
            base = resolve_lm_path(model_ref)
            model = self._load(base, model_ref)
            fmt = self._format(base, model_ref)
            self._loaded = LoadedLM(path.resolve(), model, fmt)
            return model, fmt, base
        base = base_of(path)
        model = self._load(base, model_ref, adapter=path)
        fmt = self._format(str(path), model_ref, read_meta(path))
        self._loaded = LoadedLM(path.resolve(), model, fmt)
        return model, fmt, base

    def _base_path(self, path: Path) -> str:
        return base_of(path) if is_adapter_folder(path) else resolve_lm_path(str(path))

    def _load(self, base: str, name: str, adapter: Path | None = None) -> Any:
        try:
            model = load_causal_lm(base)
            if adapter is not None:
                from peft import PeftModel

                with quiet_transformers():
                    model = PeftModel.from_pretrained(model, str(adapter))
        except (OSError, ValueError) as exc:
            raise load_error(name, base, exc) from None
        return model.to(self.device).eval()

    def _is_checkpoint(self, folder: Path) -> bool:
        return is_checkpoint_folder(folder)  # an adapter inside, not a whole model

    # ----------------------------------------------------------------------------- hand-off

    def package(self, model_ref: str, labels: Sequence[str]) -> ModelPackage:
        """The adapter folder with its base model inside, the settings it was trained and
        scored with, and its per-token rates pinned (a serving process never calibrates)."""
        folder = package_adapter(Path(model_ref).expanduser())
        meta = read_meta(folder)
        settings: dict[str, Any] = {
            "kind": self.kind,
            "format": meta["format"],
            "system_prompt": meta["system_prompt"],
            "max_length": self.config.max_length,
            "eval_batch_size": self.config.eval_batch_size,
            "calibration": self.pricing.rates(base_of(folder), model_ref).setting(),
        }
        return ModelPackage(
            config={"labels": list(meta["labels"]), "backend": settings},
            artifacts={MODEL_ARTIFACT: str(folder.resolve())},
            requirements=("torch", "transformers", "tokenizers", "safetensors", "peft"),
        )

    def open_package(self, config: Mapping[str, Any], artifacts: Mapping[str, str]) -> str:
        """The copied folder, checked and loaded now rather than on the first request."""
        folder = artifacts[MODEL_ARTIFACT]
        version = read_meta(Path(folder)).get("prompt_version")
        if version != PROMPT_VERSION:
            raise BackendError(
                f"{folder}: packaged for prompt layout {version}, this harness writes "
                f"{PROMPT_VERSION}; predict with the harness version that trained it"
            )
        self._model_at(folder)
        return folder

    # ------------------------------------------------------------------------ model loading

    def _system_prompt(self) -> str:
        return self.config.system_prompt or DEFAULT_SYSTEM_PROMPT

    def _format(self, path: str, name: str, meta: Mapping[str, Any] | None = None) -> Formatter:
        """The prompt format of the tokenizer at `path`: the config's, or an adapter's own."""
        fmt_name = str(meta["format"]) if meta else self.config.format
        system = str(meta["system_prompt"]) if meta else self._system_prompt()
        key = json.dumps([path, fmt_name, system])
        if key not in self._formats:
            try:
                tokenizer = load_tokenizer(path)
            except (OSError, ValueError) as exc:
                raise load_error(name, path, exc) from None
            self._formats[key] = formatter(tokenizer, fmt_name, system, self.config.max_length)
        return self._formats[key]

    def _scored(self, fmt: Formatter, texts: Sequence[str], labels: Sequence[str]) -> int:
        return scored_tokens(fmt.prompts(texts, labels), label_sequences(fmt, labels))
