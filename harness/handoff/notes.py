"""What a promoted model says about itself in the registry: its version's tags (trial, test
accuracy, cost, data digest, whether a test server made it) and descriptions (why the version was
promoted; how to call the model). Read by people in the MLflow UI and by scripts.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial

from harness.config import Experiment
from harness.tracking.journal import ran_on_a_test_server
from harness.tracking.record import (
    DATA_DIGEST_TAG,
    FINE_TUNED_MODEL_TAG,
    STUDY_TAG,
    SYNTHETIC_TAG,
    TRIAL_TAG,
    TrialRecord,
)


def trial_test_accuracy(trial: FrozenTrial) -> float:
    """Test accuracy (what the registry's version is tagged with; never what it was chosen on)."""
    accuracy = TrialRecord.from_attrs(trial.user_attrs).test_accuracy
    return float(accuracy if accuracy is not None else trial.values[0])


def trial_cost(trial: FrozenTrial) -> float:
    """What the trial cost in all, in US dollars (0 where it recorded none)."""
    return float(TrialRecord.from_attrs(trial.user_attrs).cost_usd or 0.0)


def is_synthetic(study: Any, trial: FrozenTrial, run: Any) -> bool:
    """Whether the trial's model came from a test server: its run's tag or its trial's journal
    says so; an epoch checkpoint's is its trial's (the backend notes it on the trial only)."""
    if run.data.tags.get(SYNTHETIC_TAG) == "true":
        return True
    parent = TrialRecord.from_attrs(trial.user_attrs).checkpoint_of
    trials = [t for t in study.get_trials(deepcopy=False) if t.number in (trial.number, parent)]
    return ran_on_a_test_server(trials)


def version_tags(trial: FrozenTrial, run: Any, synthetic: bool) -> dict[str, str]:
    """The version's tags, from the trial and its MLflow run; empty values left out."""
    import numpy as np

    tags = run.data.tags
    values = {
        TRIAL_TAG: str(trial.number),
        STUDY_TAG: tags.get(STUDY_TAG, ""),
        "test_accuracy": f"{trial_test_accuracy(trial):.6f}",
        # Six significant digits, never an exponent: a local trial costs $0.0000824, which six
        # decimals would round to 0.000082, and a cheaper one to 0.000000.
        "cost_usd": np.format_float_positional(
            trial_cost(trial), precision=6, unique=False, fractional=False, trim="-"
        ),
        "data_digest": tags.get(DATA_DIGEST_TAG, ""),
        "backend": run.data.params.get("backend", ""),
        "base_model": run.data.params.get("base_model", ""),
        FINE_TUNED_MODEL_TAG: tags.get(FINE_TUNED_MODEL_TAG, ""),
        "mlflow_run_name": tags.get("mlflow.runName", ""),
        SYNTHETIC_TAG: str(synthetic).lower(),
    }
    return {key: value for key, value in values.items() if value}


def version_description(alias: str, reason: str, synthetic: bool) -> str:
    """Why this version was promoted, as the CLI said it; a test server's model says so first."""
    warning = (
        "SYNTHETIC: trained and scored on a test server on this machine; its figures prove the "
        "plumbing, never a result. "
        if synthetic
        else ""
    )
    return f"{warning}Promoted by `harness promote` as @{alias}: {reason}"


MODEL_DESCRIPTION_START = "Text classifier promoted by `harness promote`"


def model_description(experiment: Experiment) -> str:
    """The registered model's description: where it came from and how to call it."""
    return (
        f"{MODEL_DESCRIPTION_START} from experiment {experiment.name} "
        f"({experiment.path}). Call it with `harness predict models:/NAME@ALIAS TEXT` or "
        "`mlflow.pyfunc.load_model(...).predict(pd.DataFrame({'text': [...]}))`, or serve it "
        "with `harness serve NAME` (`mlflow models serve`); it carries its own harness code."
    )
