"""What a report is made of: the reader's options, trial rows, steps along the front, the answer.

Plain data, built by `harness.report.build` and `harness.report.front`, read by the renderers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import ConfigError
from harness.report.baselines import Baseline
from harness.report.decide import Move, Walk
from harness.report.evidence import ValidationComparison
from harness.report.formats import ratio, usd
from harness.report.significance import PairedComparison
from harness.scoring import unpack_correct
from harness.tracking.record import TrialRecord


@dataclass(frozen=True)
class ReportOptions:
    """What the reader tells the report: inference volume and what accuracy is worth to them.

    `value_per_point` is dollars one accuracy point (1 percentage point of accuracy) is worth;
    `risk` the quantile of the true gain a purchase is decided on (0.5: its expected value);
    `budget` is the most one configuration may cost (training plus test evaluation, the study's
    cost axis; with `weigh_running`, its first year of ownership, the cost the front is then
    formed on). With neither, the walk along the front stops at its knee at the latest. `alpha`
    is the family-wise one-sided level of every step up the walk (shared among the candidates
    dearer than the current choice) and the two-sided level of the test-set check.
    """

    monthly_requests: int = 10_000
    value_per_point: float | None = None
    budget: float | None = None
    alpha: float = 0.05
    power: float = 0.8
    n_resamples: int = 2000
    seed: int = 0
    sample_size: int = 12
    risk: float = 0.5
    # The reader stated a volume (`--monthly-requests`): the front and the choice weigh the first
    # year's cost of ownership (training, then 12 months of serving and hosting), not the sweep's.
    weigh_running: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.risk <= 0.5:
            raise ConfigError(f"--risk must be in (0, 0.5], got {self.risk}")
        if self.monthly_requests < 0:
            raise ConfigError(f"--monthly-requests must be 0 or more, got {self.monthly_requests}")
        for option, dollars in (
            ("--value-per-point", self.value_per_point),
            ("--budget", self.budget),
        ):
            if dollars is not None and not math.isfinite(dollars):  # nan, inf: no price to weigh
                raise ConfigError(f"{option} must be a positive number of dollars, got {dollars}")
            if dollars is not None and dollars <= 0:
                raise ConfigError(f"{option} must be positive, got {dollars}")


@dataclass(frozen=True)
class Origin:
    """Where a row of a comparison across studies comes from (`harness compare`): its
    experiment, backend kind, base model and its trial number in that study."""

    experiment: str
    backend: str
    model: str
    trial: int

    def columns(self) -> dict[str, str]:
        return {"experiment": self.experiment, "backend": self.backend, "base_model": self.model}


@dataclass(eq=False)  # rows are compared by identity: they carry DataFrames
class TrialRow:
    """One completed trial as the report sees it, or a baseline taking part in the front.

    `accuracy` is test accuracy (reported, never chosen on); `valid_accuracy` is the validation
    accuracy of the model the trial delivered, which the front and the walk are formed on. In a
    comparison across studies `origin` says which study the trial is from and `number` is only
    a key unique within the report (the trial's own number is `trial_number`).
    """

    number: int
    params: dict[str, Any]
    accuracy: float
    cost: float
    record: TrialRecord
    run_id: str | None
    predictions: pd.DataFrame | None = None
    on_front: bool = False
    valid_accuracy: float | None = None
    baseline: Baseline | None = None
    origin: Origin | None = None
    # What the choice weighs when it is not `cost`: the first year's cost of ownership, where
    # the reader gave a monthly volume (None: `cost`).
    decision_cost: float | None = None
    # Dollars an hour its model bills once served where scoring paid none (an Azure Developer
    # deployment scored it; serving takes a Standard one): None where nothing says so.
    serving_hosting_per_hour: float | None = None
    # It ran on a test server on this machine: its figures prove the plumbing, never a result.
    synthetic: bool = False

    @property
    def trial_number(self) -> int:
        """The trial's number in its own study."""
        return self.origin.trial if self.origin is not None else self.number

    @property
    def source(self) -> str | None:
        """The experiment the row is from, in a comparison across studies (else None)."""
        return self.origin.experiment if self.origin is not None else None

    @property
    def weighed_cost(self) -> float:
        """What the front, its steps and the choice weigh: the first year's cost of ownership
        where the reader gave a volume (`decision_cost`), else the sweep's `cost`."""
        return self.cost if self.decision_cost is None else self.decision_cost

    def cost_text(self) -> str:
        """`$1.24`, the sweep's cost; where the choice weighed the first year's, `$1.24 to
        sweep, $1,201 in its first year`."""
        if self.decision_cost is None:
            return usd(self.cost)
        done = "to score" if self.is_baseline else "to sweep"  # a baseline trains nothing here
        return f"{usd(self.cost)} {done}, {usd(self.decision_cost)} in its first year"

    @property
    def selection_accuracy(self) -> float:
        """What the front is formed on: validation accuracy (test accuracy only where none was
        recorded, which the report then says)."""
        return self.valid_accuracy if self.valid_accuracy is not None else self.accuracy

    @property
    def correct(self) -> np.ndarray | None:
        if self.baseline is not None:
            return self.baseline.correct
        if self.predictions is None:
            return None
        return (self.predictions["true"] == self.predictions["predicted"]).to_numpy(dtype=bool)

    @property
    def valid_correct(self) -> np.ndarray | None:
        """Which validation examples the model got right (None: not recorded, as in a study
        made before it was kept, or unreadable)."""
        if self.baseline is not None:
            return self.baseline.valid_correct
        packed = self.record.valid_correct
        if not packed:
            return None
        try:
            return unpack_correct(packed)
        except ValueError:
            return None

    @property
    def is_baseline(self) -> bool:
        return self.baseline is not None

    @property
    def name(self) -> str:
        if self.baseline is not None:
            return self.baseline.name
        o = self.origin
        return f"{o.experiment} trial {o.trial}" if o is not None else f"trial {self.number}"

    @property
    def short(self) -> str:
        """A chart label: `t7` (`demo:t7` across studies), or the baseline's name."""
        if self.baseline is not None:
            return self.baseline.name
        o = self.origin
        return f"{o.experiment}:t{o.trial}" if o is not None else f"t{self.number}"

    def describe(self) -> str:
        """Hyperparameters in words, e.g. `3 epochs, learning rate x2.1, batch 16`, or for a
        checkpoint `epoch 1 of 3 (checkpoint of trial 7), ...`; a baseline's note."""
        if self.baseline is not None:
            return self.baseline.note
        p = self.params
        parts = (
            [f"{p['n_epochs']} epoch{'s' if p['n_epochs'] != 1 else ''}"] if "n_epochs" in p else []
        )
        ran = self.record.epochs_run
        if parts and isinstance(ran, int) and ran < p["n_epochs"]:
            # A checkpoint, or a trial stopped early: the schedule was for more epochs.
            parts[0] = f"epoch {ran} of {p['n_epochs']}"
            if self.record.is_checkpoint:
                parts[0] += f" (checkpoint of trial {self.record.checkpoint_of})"
        if "learning_rate_multiplier" in p:
            parts.append(f"learning rate x{float(p['learning_rate_multiplier']):.3g}")
        if "batch_size" in p:
            parts.append(f"batch {p['batch_size']}")
        if p.get("train_examples") not in (None, "all"):
            parts.append(f"{p['train_examples']} training examples")
        if "base_model" in p:
            parts.append(str(p["base_model"]))
        elif self.origin is not None:
            parts.append(f"{self.origin.model} ({self.origin.backend})")
        return ", ".join(parts)


@dataclass(frozen=True)
class Step:
    """Moving from one front member to the next dearer one, judged on validation accuracy.

    `valid` tests the validation gain (None: the validation size is unknown). The test accuracies
    of both ends are shown, never tested: the test set checks only the chosen model (see
    `Recommendation.confirmation`).
    """

    cheaper: TrialRow
    dearer: TrialRow
    valid: ValidationComparison | None

    @property
    def gain_points(self) -> float:
        """Validation accuracy gained, in points."""
        return 100.0 * (self.dearer.selection_accuracy - self.cheaper.selection_accuracy)

    @property
    def test_gain_points(self) -> float:
        return 100.0 * (self.dearer.accuracy - self.cheaper.accuracy)

    @property
    def first_year(self) -> bool:
        """Its costs are first-year costs of ownership (the reader gave a volume), not the
        sweep's: the front was formed on them."""
        return self.dearer.decision_cost is not None or self.cheaper.decision_cost is not None

    @property
    def extra_cost(self) -> float:
        """On the cost the front was formed on (`TrialRow.weighed_cost`)."""
        return self.dearer.weighed_cost - self.cheaper.weighed_cost

    @property
    def cost_ratio(self) -> float | None:
        cheaper = self.cheaper.weighed_cost
        return self.dearer.weighed_cost / cheaper if cheaper > 0 else None

    @property
    def price(self) -> str:
        """`4.0x the cost ($6.00 per point)` (`the first-year cost` where that is what the
        front was formed on), in words for the report."""
        cost = "first-year cost" if self.first_year else "cost"
        more = (
            f"{ratio(self.cost_ratio)} the {cost}"
            if self.cost_ratio
            else f"{usd(self.extra_cost)} more {'in the first year' if self.first_year else ''}"
        ).rstrip()
        return f"{more} ({usd(self.dollars_per_point)} per point)"

    @property
    def dollars_per_point(self) -> float | None:
        return self.extra_cost / self.gain_points if self.gain_points > 0 else None


@dataclass(frozen=True)
class Recommendation:
    """The model to choose, why (the walk along the validation front), and its test-set check.

    `deciding` is the step whose verdict settled the choice; `rival` the model the chosen one
    was chosen over, named before the test set is read; `confirmation` the one paired test on
    the test set, chosen (B) against rival (A). `fine_tuned` is the walk's choice among the
    fine-tuned trials alone: the answer itself when that is a trial, else what to fine-tune if
    one fine-tunes anyway (what `harness promote` registers by default).
    """

    chosen: TrialRow
    mode: str
    text: str
    walk: Walk
    deciding: Step | None = None
    deciding_move: Move | None = None
    rival: TrialRow | None = None
    confirmation: PairedComparison | None = None
    fine_tuned: TrialRow | None = None


@dataclass(frozen=True)
class Ownership:
    """Training once plus serving at the stated monthly volume; `monthly` includes
    `hosting_per_month` (a deployment billed by the hour; None where none is)."""

    number: int
    training: float
    per_request: float | None
    monthly: float | None
    hosting_per_month: float | None = None

    def months(self, count: int) -> float | None:
        return None if self.monthly is None else self.training + count * self.monthly


@dataclass(frozen=True)
class EpochSummary:
    """Where validation accuracy peaked and what the epochs after the peak cost."""

    number: int
    epochs: int
    peak_epoch: int
    peak_accuracy: float
    cost_after_peak: float
    last_accuracy: float = 0.0


@dataclass
class Report:
    """Everything the rendered report shows; built by `build_report`."""

    study: str  # what the heading names: the study, since one file makes many studies
    options: ReportOptions
    trials: list[TrialRow]
    front: list[TrialRow]
    steps: list[Step]
    baselines: list[Baseline]
    baseline_comparisons: dict[int, ValidationComparison]
    ownership: list[Ownership]
    epochs: list[EpochSummary]
    recommendation: Recommendation
    neighbour: TrialRow | None
    sample: pd.DataFrame
    n_test: int | None
    backend: str
    notes: list[str] = field(default_factory=list)
    running: int = 0
    tracking_uri: str = ""
    parent_run_id: str | None = None
    n_valid: int | None = None
    selected_on: str = "validation"  # "test" only for a study that recorded no validation
    data_digest: str = ""  # set by `harness compare`: the data every study shares

    @property
    def synthetic(self) -> bool:
        """Some of its trials ran on a test server: the report says so before anything else."""
        return any(row.synthetic for row in self.trials)

    def name_of(self, number: int) -> str:
        """The name of the trial row keyed `number` (`trial 7`, `demo trial 7` across studies)."""
        return next((t.name for t in self.trials if t.number == number), f"trial {number}")

    @property
    def candidates(self) -> int:
        """How many candidates the front was formed from (README, "Candidates"): every
        completed trial and checkpoint, plus every scored baseline and evaluated model."""
        return len(self.trials) + sum(b.candidate for b in self.baselines)

    @property
    def best_baseline(self) -> Baseline | None:
        """The baseline most accurate on what the front is formed on (validation)."""
        scored = [b for b in self.baselines if b.accuracy is not None]
        return max(scored, key=lambda b: b.selection_accuracy) if scored else None
