"""The Backend contract: every fine-tuning backend (local transformers, OpenAI API) implements it.

The sweep only ever talks to a backend through these methods, so a backend can be swapped by
changing `backend.kind` in an experiment file. Backends are loaded lazily by name (see
`harness.backends.load_backend`) so importing `harness` never imports torch or openai.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from harness.records import Cost, EpochResult, Prediction, PreparedData, TrainedModel, TrialSpec

if TYPE_CHECKING:
    from harness.backends.hosted.pricing import Price

# Called after every epoch a backend can evaluate. Returning True asks the backend to stop
# training early (the trial cannot reach the Pareto front); the backend then returns what it has.
EpochCallback = Callable[[EpochResult], bool]


# The journal note in which a trial scored without hosting fees (an Azure Developer deployment)
# records what hosting its model would bill an hour once served on a Standard or Global one, so
# the cost of ownership never shows a served model cheaper than it is.
SERVING_HOSTING_NOTE = "serving_hosting_per_hour"


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, declared once so callers never probe with `getattr`.

    Attributes:
        synthetic: It talks to a test server on this machine: what it returns proves plumbing,
            never a result, and is labelled synthetic wherever it is shown.
        scores_base_model: `predict` works on the untuned base model (zero-shot), so the base
            model is a baseline the report can show (`harness evaluate --model BASE`).
        max_concurrency: How many trials the sweep may run at once: 1 for a local device, more
            for remote jobs that mostly wait on a server.
        thread_safe: `fine_tune` and `predict` may run in several threads at once on one
            instance (remote backends); False means one call at a time, from one thread.
        stops_early: Stopping after an epoch saves the remaining epochs' cost (local). False
            when a job is paid in full before its epochs can be seen (OpenAI).
        deploys_models: Scoring a fine-tuned model deploys it where hosting bills by the hour
            while it exists (Azure deployments, Together dedicated endpoints). The sweep then
            calls `release_deployments` when it opens and closes, so none a killed sweep left
            keeps billing; elsewhere it never calls it.
        hosting_notes: The journal keys under which a running trial notes the deployments it
            holds (space-separated names), so the sweep neither deletes them under it nor
            reports them as paid hosting nobody owns.
        bills_jobs: Nothing is billed before a provider job exists, and a job's key is noted in
            the journal (`job_key`) before it is created: a trial that failed or was killed
            with no job id (no key, or one whose job was never made) spent nothing, and the
            ledger settles it at $0 instead of keeping its reservation.
    """

    synthetic: bool = False
    scores_base_model: bool = False
    max_concurrency: int = 1
    thread_safe: bool = False
    stops_early: bool = False
    deploys_models: bool = False
    hosting_notes: tuple[str, ...] = ()
    bills_jobs: bool = False

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {self.max_concurrency=}")
        if self.max_concurrency > 1 and not self.thread_safe:
            raise ValueError("a backend running several trials at once must be thread_safe")
        if self.deploys_models and not self.hosting_notes:
            raise ValueError("a backend that deploys models must name its hosting_notes")


@dataclass(frozen=True)
class Estimate:
    """A worst-case cost before anything is spent, split into training and evaluation."""

    train: Cost
    evaluation: Cost

    @property
    def total(self) -> Cost:
        return self.train + self.evaluation


@dataclass(frozen=True)
class ModelPackage:
    """What a registered model carries so it can be called later, on any machine.

    Never a secret: keys are read from the environment when the model is called.

    Attributes:
        config: JSON-able settings that `Backend.open_package` needs again (the backend's own
            config, labels, prompt format); stored as the MLflow model's `model_config`.
        artifacts: Local files or folders to copy into the model (name -> path), such as a local
            model's weights; empty for a model that lives on a provider's servers.
        requirements: The packages calling the model needs, beside `harness`.
    """

    config: dict[str, Any]
    artifacts: dict[str, str] = field(default_factory=dict)
    requirements: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoteJob:
    """A fine-tuning job a provider holds for a study: what it is and what it was billed."""

    id: str
    status: str
    model: str | None
    cost: Cost | None  # None while the provider has not reported what it trained
    # The job key it was created under (whole from metadata, or the head a suffix carries): a
    # trial killed before recording the job's id still owns it by the key in its journal.
    key: str | None = None

    def owned_by(self, job_key: str | None) -> bool:
        """Whether a trial's journalled `job_key` is the key this job was created under (the
        job carries the whole key in its metadata, or its head in its suffix)."""
        return bool(job_key and self.key) and str(job_key).startswith(str(self.key))


class Journal(Protocol):
    """Durable notes about one trial that survive a crash (Optuna user attrs + MLflow tags).

    A remote backend records its job id here *before* waiting on the job; when a killed sweep is
    run again, the retried trial recalls the id and reattaches instead of paying for a new job.
    It also takes what a job reports while it runs (step metrics, its result file), for the
    trial's run; every journal takes them, so no backend asks which kind it was handed.
    """

    def recall(self, key: str) -> str | None: ...

    def record(self, key: str, value: str) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...


# The journal note a remote backend writes before each request that may create a paid job: a
# trial that fails with it and no job id may still have a job (its reply was lost).
CREATE_SENT = "job_create_sent"

# The journal note a remote backend writes as it starts scoring a finished job: the scoring
# part of the trial's worst case. Every run of a job scores anew, so a run killed after this
# counts it in the ledger beside the job another run settles (`harness.sweep.budget`).
SCORING_RESERVED = "scoring_reserved_usd"

# The journal note a remote backend writes when the provider failed its job (no model): what
# the job object says it billed (its trained tokens at the price row's rate; nothing trained,
# $0). The ledger settles the trial at that, not its worst case (`Budget.settle_failed`).
FAILED_JOB_BILLED = "failed_job_billed_usd"

# Journal notes of a backend that bills its scoring only by hosting time (Together's dedicated
# endpoints): what this run's scoring was billed for the hosting it already deleted, and, while
# one runs, since when (Unix time, just before its create request) and its rate. A sweep that
# deletes a killed run's hosting itself then knows all that run's scoring cost
# (`harness.sweep.failures`); without them the run keeps the scoring it reserved.
SCORING_BILLED = "scoring_billed_usd"
HOSTING_SINCE = "hosting_since"
HOSTING_PER_HOUR = "hosting_per_hour"
# Not a journal note: the trial attribute in which the sweep settles that run's scoring.
SETTLED_SCORING_USD = "settled_scoring_usd"


class MemoryJournal:
    """A journal that lives as long as the object: for library use and tests."""

    def __init__(self, notes: dict[str, str] | None = None) -> None:
        self.notes: dict[str, str] = dict(notes or {})
        self.metrics: list[tuple[int, dict[str, float]]] = []  # (step, metrics) as logged
        self.texts: dict[str, str] = {}  # artifact file -> text

    def recall(self, key: str) -> str | None:
        return self.notes.get(key)

    def record(self, key: str, value: str) -> None:
        self.notes[key] = value

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_text(self, text: str, artifact_file: str) -> None:
        self.texts[artifact_file] = text


class Progress(Protocol):
    """Where a backend reports training progress (the CLI draws it as a progress bar)."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, steps: int = 1) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Progress that goes nowhere: for library use and tests."""

    def start(self, description: str, total: int) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass


class Backend(Protocol):
    """What the sweep, the report and the hand-off need from a fine-tuning backend.

    Every backend (local encoder, OpenAI and compatible endpoints) implements all of it; what
    differs is declared in `capabilities`, never probed. One contract test suite
    (`tests/backend_contract.py`) runs against every backend.

    Thread safety:
        The sweep calls `estimate` from its main thread only. Where `capabilities.thread_safe`
        is True, `fine_tune` and `predict` run in trial worker threads, several at once; else
        one call at a time. `on_epoch` and the journal are called from the thread that runs
        `fine_tune`.

    Errors:
        Anything that goes wrong on the backend's side (a model that cannot be loaded, an API
        refusal, a failed job) is raised as `BackendError` (or `TrainingRefused`), with a
        message a user can act on; a bad setting is `ConfigError`.
    """

    kind: str
    capabilities: Capabilities

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per text with this backend's tokenizer (for data reports and estimates)."""
        ...

    def text_token_limit(self, labels: Sequence[str]) -> int | None:
        """The most tokens of a text (as `count_tokens` counts them) a model reads when trained
        or asked; a longer text is cut from its end. None where no text a classification set
        holds is cut (a hosted model's context)."""
        ...

    def estimate(self, spec: TrialSpec, data: PreparedData) -> Estimate:
        """Worst-case cost of `fine_tune` plus test-set `predict` for `spec`, before spending.

        The actual cost of the trial (training plus scoring the test set) is never above
        `estimate(...).total`: budgets reserve it before the trial starts. With `spec.bound`
        ("dearest" / "cheapest", a corner of the search space rather than one trial), the cost
        bounds every trial with these parameters, whichever training subset its seed draws.

        Args:
            spec: The configuration to price.
            data: The prepared data the trial will use.

        Returns:
            Training and evaluation worst cases in dollars with the quantities they came from.
        """
        ...

    def preflight(self, data: PreparedData, models: Sequence[str]) -> None:
        """Every check that can fail without spending, made before a sweep records anything:
        credentials set and accepted, the endpoint reachable, the base `models` available and
        priced, the examples within the provider's limits. With no `models`, only the key and
        the endpoint (what `harness evaluate` needs before it says its price).

        Raises:
            ConfigError: A setting, key or price is missing or wrong.
            BackendError: The endpoint cannot be reached or a model cannot be loaded.
            DataError: An example breaks the provider's limits.
        """
        ...

    def price_rows(self, models: Sequence[str]) -> list[Price]:
        """The dated price rows `estimate` uses for these base models (empty when the backend
        is priced by compute time, not by a price table).

        Raises:
            ConfigError: A model has no price row.
        """
        ...

    def fine_tune(
        self,
        spec: TrialSpec,
        data: PreparedData,
        on_epoch: EpochCallback,
        journal: Journal | None = None,
    ) -> TrainedModel:
        """Train one configuration on `data.train`, evaluating on `data.validation` each epoch.

        Args:
            spec: Hyperparameters, base model, training-set size and seed.
            data: The prepared data; `data.test` must not be touched here.
            on_epoch: Called with every epoch's validation result, in epoch order; if it
                returns True the backend stops (where `capabilities.stops_early`) and returns
                the model as it stands.
            journal: Where to record what must survive a crash (a remote job id) and where to
                find it again when the trial is retried; None means nothing is kept.

        Returns:
            A reference `predict` accepts, the per-epoch results and the training cost.

        Raises:
            BackendError: The model cannot be loaded or training failed.
        """
        ...

    def predict(
        self, model_ref: str, texts: Sequence[str], labels: Sequence[str]
    ) -> tuple[list[Prediction], Cost]:
        """Classify `texts` with a model; one prediction per text, in input order.

        Args:
            model_ref: A reference `fine_tune` returned (or an epoch checkpoint it named), or a
                base model where `capabilities.scores_base_model`.
            texts: The texts to classify.
            labels: The label set; every prediction carries a score for each label. A
                generative model's answer outside it is returned as given (and counted wrong).

        Returns:
            The predictions (label, confidence, per-label scores) and what inference cost.

        Raises:
            BackendError: The model cannot be loaded or called.
        """
        ...

    def is_base_model(self, model_ref: str) -> bool:
        """Whether `model_ref` names an untuned base model (scored zero-shot) rather than a
        model `fine_tune` made or one of its checkpoints; decided from what the backend knows
        of its own models, never from the shape of a provider's names."""
        ...

    def discard(self, model_ref: str) -> bool:
        """Delete a kept model the sweep no longer needs (a checkpoint off the Pareto front).

        Returns:
            True if something was deleted; False where nothing is stored by the harness (a
            provider's model) or it is already gone.
        """
        ...

    def release_deployments(self, study_name: str, held: Collection[str]) -> list[str]:
        """Delete this study's deployed models that no running trial holds (`held`: the names
        running trials noted under `capabilities.hosting_notes`), so none a killed sweep left
        bills by the hour; returns the names deleted. Called only where
        `capabilities.deploys_models`.

        Raises:
            HarnessError: The provider could not be asked or refused a deletion.
        """
        ...

    def remote_jobs(self, study_name: str) -> list[RemoteJob]:
        """The paid jobs the provider holds for this study (by the study name in their
        metadata), so a sweep can report the ones no trial owns; empty for a local backend."""
        ...

    def package(self, model_ref: str, labels: Sequence[str]) -> ModelPackage:
        """What a registered model must carry to be called later with `open_package`.

        Raises:
            BackendError: The model is gone (a local checkpoint deleted, weights moved).
        """
        ...

    def open_package(self, config: Mapping[str, Any], artifacts: Mapping[str, str]) -> str:
        """The `model_ref` to `predict` with for a package made by `package` (its artifacts now
        at the paths given), after checking this harness calls it the way it was trained.

        Raises:
            BackendError: The package was made for a prompt format this version does not write.
        """
        ...
