"""A Together sweep killed between a trial and its checkpoints, then resumed.

The resumed sweep scores the checkpoints the killed one owed (`sweep.checkpoints.due_checkpoints`)
with a fresh backend, which never saw the job: it must still know each checkpoint's base model
(to price it) before it pays for a single request, record the checkpoints, and owe nothing to
the next resume. Against the stateful fake (`tests/together_fake`); every figure is synthetic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.config import load_experiment
from harness.records import TrialResult
from harness.sweep.loop import run_sweep
from tests.conftest import openai_experiment
from tests.test_openai_sweep import RecordingView
from tests.test_together_quote import KEY, MODEL, ROW
from tests.together_fake import FakeTogether

pytestmark = pytest.mark.slow
CHAT = "/v1/chat/completions"


class _KilledAfterTheTrial(RecordingView):
    """Dies in the instant after a trial completes and before its checkpoints are recorded."""

    def trial_finished(self, result: TrialResult) -> None:
        super().trial_finished(result)
        raise KeyboardInterrupt


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeTogether]:
    monkeypatch.setenv("TOGETHER_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    monkeypatch.chdir(tmp_path)
    with FakeTogether(job_duration=0.2) as fake:
        yield fake


def _checkpoints(tmp_path: Path) -> dict[int, list[int]]:
    study = optuna.load_study(
        study_name="resumed", storage=f"sqlite:///{tmp_path}/mlruns/optuna.db"
    )
    found: dict[int, list[int]] = {}
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        if "checkpoint_of" in trial.user_attrs:
            found.setdefault(trial.user_attrs["checkpoint_of"], []).append(
                trial.user_attrs["epochs_run"]
            )
    return {parent: sorted(epochs) for parent, epochs in found.items()}


def test_a_resumed_sweep_prices_and_records_the_checkpoints_it_owes_once(
    tmp_path: Path, server: FakeTogether
) -> None:
    backend = {
        "kind": "together",
        "model": MODEL,
        "base_url": server.base_url,
        "poll_interval": 0.02,
        "poll_max_interval": 0.05,
        "prices": {MODEL: {**ROW, "source": "test figure", "as_of": "2026-11-30"}},
    }
    path = openai_experiment(tmp_path, "resumed", 1, backend=backend)
    (tmp_path / "space.yaml").write_text(
        "n_epochs: 3\nlearning_rate_multiplier: 1.0\nbatch_size: 8\n"
    )
    with pytest.raises(KeyboardInterrupt):
        run_sweep(load_experiment(str(path)), _KilledAfterTheTrial())
    assert _checkpoints(tmp_path) == {}
    asked = server.state.count("POST", CHAT)

    outcome = run_sweep(load_experiment(str(path)), RecordingView())
    assert outcome.results == [] and len(server.state.jobs) == 1  # nothing trained again
    assert _checkpoints(tmp_path) == {0: [1, 2]}
    test_examples = 16  # openai_experiment: 80 reviews, a fifth of them test
    assert server.state.count("POST", CHAT) - asked == 2 * test_examples  # each scored once

    asked = server.state.count("POST", CHAT)
    run_sweep(load_experiment(str(path)), RecordingView())
    assert server.state.count("POST", CHAT) == asked  # nothing owed: nothing paid again


def test_an_evaluation_is_zero_shot_only_for_a_base_model(
    tmp_path: Path, server: FakeTogether
) -> None:
    """`harness evaluate` tags `zero_shot` from what the backend knows of the model: a Together
    fine-tuned model has no `ft:` prefix, and is still no base model."""
    from mlflow import MlflowClient

    from harness.sweep.evaluation import evaluate_model

    backend = {
        "kind": "together",
        "model": MODEL,
        "base_url": server.base_url,
        "poll_interval": 0.02,
        "poll_max_interval": 0.05,
        "evaluate_checkpoints": False,
        "prices": {MODEL: {**ROW, "source": "test figure", "as_of": "2026-11-30"}},
    }
    path = openai_experiment(tmp_path, "resumed", 1, backend=backend)
    (tmp_path / "space.yaml").write_text(
        "n_epochs: 1\nlearning_rate_multiplier: 1.0\nbatch_size: 8\n"
    )
    run_sweep(load_experiment(str(path)), RecordingView())
    (job,) = server.state.jobs.values()
    experiment = load_experiment(str(path))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for model, zero_shot in ((job.output, "false"), (MODEL, "true")):
        assert model and not model.startswith("ft:")
        said: list[str] = []
        run_id = evaluate_model(experiment, model, announce=said.append).run_id
        assert run_id is not None
        assert len(said) == 1 and ": at most $" in said[0], said  # priced before it is paid
        assert client.get_run(run_id).data.tags["zero_shot"] == zero_shot, model
