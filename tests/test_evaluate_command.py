"""`harness evaluate` as the user meets it where it refuses: what the message says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_runner import run_cli
from tests.conftest import openai_experiment, write_experiment


def test_a_reference_that_is_no_trained_model_is_not_called_a_base_model(
    tmp_path: Path, tiny_csv: Path
) -> None:
    """On the local backend every reference that is no folder a trial wrote was "a base model":
    a mistyped path, or another provider's model id, read "/nope is a base model", sending the
    user to look for a base model. The message now says what the reference is not, and where
    the trials' models are listed."""
    path = write_experiment(tmp_path, tiny_csv)
    for model in (str(tmp_path / "no-such-model"), "gpt-4.1-nano"):
        result = run_cli("evaluate", str(path), "--model", model)
        assert result.exit_code == 2, result.output
        assert f"{model} is a base model" not in result.output
        assert f"{model} is no model a trial made" in result.output
        assert "harness trials" in result.output
    base = run_cli("evaluate", str(path), "--model", "all-MiniLM-L6-v2")
    assert base.exit_code == 2 and "cannot score a base model untuned" in base.output


def test_a_local_model_is_scored_without_a_price_to_announce(
    tmp_path: Path, tiny_csv: Path
) -> None:
    """The line said before scoring asked the local backend for a trial's estimate with no
    training examples, which it refuses ("cannot draw 0 examples stratified over 2 classes"):
    evaluating a trial's own MiniLM model failed before scoring. On this machine nothing is
    billed: the line says so and asks no estimate."""
    from harness.backends import load_backend
    from harness.config import load_experiment
    from harness.data.prepare import prepare_experiment
    from harness.sweep.evaluation import spending_line

    experiment = load_experiment(str(write_experiment(tmp_path, tiny_csv)))
    data, _ = prepare_experiment(experiment)
    backend = load_backend(experiment.config.backend)
    line = spending_line(backend, experiment, data, str(tmp_path / "models" / "t"), False)
    assert "on this machine" in line and "$" not in line


def test_on_azure_standard_only_a_deployed_model_is_priced_with_hosting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fine-tuned model is deployed to be scored (a Standard deployment bills by the hour);
    a base model is called through the user's own deployment, per token: its price said before
    scoring carried deployment hours it never pays."""
    from harness.backends import load_backend
    from harness.config import load_experiment
    from harness.data.prepare import prepare_experiment
    from harness.sweep.evaluation import spending_line
    from tests.azure_fake import FakeAzure
    from tests.conftest import openai_experiment
    from tests.test_providers import azure_backend

    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "az-test-key-0123456789")
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", "arm-token")
    with FakeAzure(key="az-test-key-0123456789", token="arm-token") as azure:
        backend = azure_backend(azure)
        backend["azure"]["deployment_sku"] = "standard"
        experiment = load_experiment(str(openai_experiment(tmp_path, "az", 1, backend=backend)))
        data, _ = prepare_experiment(experiment)
        scorer = load_backend(experiment.config.backend)
        base = "gpt-4.1-nano-2025-04-14"
        tuned = spending_line(scorer, experiment, data, f"{base}.ft-0123abcd", False)
        untuned = spending_line(scorer, experiment, data, base, True)
    assert "of it hosting a deployment billed by the hour" in tuned
    assert "hosting" not in untuned and "at most $" in untuned


def test_an_encoders_report_does_not_send_the_user_to_evaluate_its_base_model(
    tmp_path: Path, tiny_csv: Path
) -> None:
    """A MiniLM study's report listed "all-MiniLM-L6-v2 without fine-tuning: not scored: ...
    `harness evaluate EXPERIMENT --model BASE` scores it zero-shot", a command the local
    backend refuses. Where the backend cannot score its base model the row says only why."""
    from harness.backends.local.encoder import LocalBackend
    from harness.config import load_experiment
    from harness.report.baselines import base_model_baseline

    assert not LocalBackend.capabilities.scores_base_model  # what the report's kind check says
    local = load_experiment(str(write_experiment(tmp_path, tiny_csv)))
    note = base_model_baseline(local).note
    assert "--model BASE" not in note and "random" in note
    hosted = load_experiment(str(openai_experiment(tmp_path, "oa", 1)))
    assert "harness evaluate EXPERIMENT --model BASE" in base_model_baseline(hosted).note


@pytest.mark.slow
def test_a_trials_own_model_named_by_a_relative_path_is_no_baseline(
    tmp_path: Path, tiny_csv: Path
) -> None:
    """A trial's own model evaluated again is no baseline (it would cost only its scoring). The
    exclusion compared names as typed: the trial records its model's absolute path, so the
    same folder named relatively (`models/.../trial-0000`) became "MODEL (evaluated), made
    before this study, its training not counted", the best baseline of the report."""
    import json
    import os

    from harness.config import load_experiment
    from harness.sweep.loop import run_sweep
    from tests.test_openai_sweep import RecordingView

    space = {"n_epochs": 1, "learning_rate_multiplier": 3.0, "batch_size": 8}
    path = write_experiment(tmp_path, tiny_csv, space=space)
    path.write_text(path.read_text().replace("n_trials: 2", "n_trials: 1"))
    assert run_sweep(load_experiment(str(path)), RecordingView()).results
    (trial,) = json.loads(run_cli("trials", str(path), "--json").output)
    relative = os.path.relpath(trial["model_ref"], tmp_path)
    assert not relative.startswith(("/", ".."))
    evaluated = run_cli("evaluate", str(path), "--model", relative)
    assert evaluated.exit_code == 0, evaluated.output
    # A model that picks among the labels by score cannot answer outside them: "0 outside the
    # label set" read as a finding (a SmolLM2 whose free answers were all outside said so too).
    assert "outside the label set" not in evaluated.output
    report = run_cli("report", str(path), "--out", str(tmp_path / "r"))
    assert report.exit_code == 0, report.output
    assert "(evaluated)" not in (tmp_path / "r" / "report.md").read_text()


def test_a_base_model_without_a_price_is_refused_before_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A base model whose price row has only fine-tuned rates was scored in full, every
    request paid, and only then refused ("no input_per_1m price"): nothing recorded, and the
    rerun pays again. The rate is now checked before the first request."""
    from tests.openai_fake import FakeOpenAI
    from tests.test_providers import LLAMA, PRICE, PRICE_NOTE

    monkeypatch.setenv("NEBIUS_API_KEY", "nb-test-key-0123456789")
    with FakeOpenAI(base_models={LLAMA: LLAMA}, dialect="nebius") as server:
        backend = {
            "provider": "nebius",
            "model": LLAMA,
            "base_url": server.base_url,
            "prices": {LLAMA: {**PRICE, **PRICE_NOTE}},  # fine-tuned rates only
        }
        path = openai_experiment(tmp_path, "neb", 1, backend=backend)
        result = run_cli("evaluate", str(path), "--model", LLAMA)
        assert result.exit_code == 2, result.output
        assert "no input_per_1m price" in result.output
        assert server.state.count("POST", "/chat/completions") == 0
        assert server.state.count("POST", "/completions") == 0


def test_a_missing_key_or_a_dead_endpoint_is_said_before_the_price(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harness evaluate` printed "Scoring ... at most $X" and only then said the key was not
    set, or gave up on an endpoint nobody answers: the price line read as if scoring had begun.
    The key and the endpoint are now checked first, and no price is announced."""
    base = "gpt-4.1-nano-2025-04-14"
    path = openai_experiment(tmp_path, "ev", 1, backend={"max_retries": 0})
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # the discard port
    no_key = run_cli("evaluate", str(path), "--model", base)
    assert no_key.exit_code == 2, no_key.output
    assert "OPENAI_API_KEY is not set" in no_key.output and "at most $" not in no_key.output
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    down = run_cli("evaluate", str(path), "--model", base)
    assert down.exit_code == 1, down.output
    assert "cannot reach http://127.0.0.1:9/v1" in down.output
    assert "Scoring" not in down.output and "at most $" not in down.output


def test_an_endpoint_without_a_fine_tuning_api_still_scores_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check made before the price is said lists fine-tuning jobs; an OpenAI-compatible
    endpoint that only serves models (one a fine-tuned model was moved to) answers 404 there,
    and `harness evaluate` must still score on it: a sweep needs that API, scoring does not."""
    from tests.openai_fake import FakeOpenAI

    base = "gpt-4.1-nano-2025-04-14"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    with FakeOpenAI() as server:
        server.state.fail_next("/fine_tuning/jobs", 404, method="GET", count=5)
        path = openai_experiment(tmp_path, "ev", 1, backend={"base_url": server.base_url})
        result = run_cli("evaluate", str(path), "--model", base)
        assert result.exit_code == 0, result.output
        assert server.state.count("POST", "/chat/completions") > 0


def test_a_sweep_at_an_endpoint_without_a_fine_tuning_api_says_so_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It said only "checking the fine-tuning endpoint: HTTP 404: ... no route", naming neither
    the endpoint nor that it has no fine-tuning API (so a sweep cannot run there)."""
    from tests.openai_fake import FakeOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    with FakeOpenAI() as server:
        server.state.fail_next("/fine_tuning/jobs", 404, method="GET", count=5)
        path = openai_experiment(tmp_path, "sw", 1, backend={"base_url": server.base_url})
        result = run_cli("sweep", str(path), "--yes")
        assert server.state.count("POST", "/fine_tuning/jobs") == 0
        url = server.base_url
    assert result.exit_code != 0 and "Traceback" not in result.output
    said = " ".join(result.stderr.split())
    assert f"{url} has no fine-tuning API" in said, said
    assert "harness evaluate" in said and "backend.base_url" in said


def test_scoring_cut_short_by_a_signal_records_what_it_had_paid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harness evaluate` killed mid-scoring on a hosted backend said "interrupted (SIGTERM)"
    and recorded nothing, though every answer received so far was paid for. It now logs an
    MLflow run KILLED with the tokens and dollars paid, and says both in the interrupt line."""
    import signal

    from mlflow import MlflowClient

    from harness.backends.hosted._eval import Evaluator
    from harness.records import usd
    from tests.openai_fake import FakeOpenAI

    base = "gpt-4.1-nano-2025-04-14"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    chat, asked = Evaluator._chat, []

    def killed_on_the_fifth(self: Evaluator, *args: object) -> object:
        asked.append(1)
        if len(asked) == 5:
            signal.raise_signal(signal.SIGTERM)  # `kill`, while the fifth request is answered
        return chat(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Evaluator, "_chat", killed_on_the_fifth)
    with FakeOpenAI() as server:
        backend = {"base_url": server.base_url, "eval_concurrency": 1}
        path = openai_experiment(tmp_path, "ev", 1, backend=backend)
        result = run_cli("evaluate", str(path), "--model", base)
        answered = server.state.count("POST", "/chat/completions")
    assert result.exit_code == 143, result.output
    assert 5 <= answered < 32, "cut short"
    (run,) = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("ev").experiment_id]  # type: ignore[union-attr]
    )
    assert run.info.status == "KILLED"
    assert run.data.tags["harness.kind"] == "evaluation" and run.data.tags["harness.model"] == base
    paid = run.data.metrics["eval_cost_usd"]
    assert paid > 0 and run.data.metrics["inference_tokens"] > 0
    said = result.stderr.replace("\n", " ")
    assert f"had paid {usd(paid)}" in said and f"run {run.info.run_id} (KILLED)" in said, said


def test_scoring_cut_short_whose_record_fails_still_ends_on_the_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording what was paid runs while the interrupt is handled: should it fail (a store
    that cannot be written, say), the user still gets the interrupt line and its exit code,
    told that nothing was recorded, never a traceback."""
    import signal

    from harness.backends.hosted._eval import Evaluator
    from harness.tracking.runs import MlflowTracker
    from tests.openai_fake import FakeOpenAI

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    chat = Evaluator._chat

    def killed(self: Evaluator, *args: object) -> object:
        signal.raise_signal(signal.SIGTERM)
        return chat(self, *args)  # type: ignore[arg-type]

    def unwritable(*args: object, **kwargs: object) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(Evaluator, "_chat", killed)
    monkeypatch.setattr(MlflowTracker, "__init__", unwritable)
    with FakeOpenAI() as server:
        backend = {"base_url": server.base_url, "eval_concurrency": 1}
        path = openai_experiment(tmp_path, "ev", 1, backend=backend)
        result = run_cli("evaluate", str(path), "--model", "gpt-4.1-nano-2025-04-14")
    assert result.exit_code == 143, result.output
    said = result.stderr.replace("\n", " ")
    assert "interrupted (SIGTERM)" in said and "was not recorded (read-only file system)" in said


def test_scores_paid_for_are_shown_when_the_tracking_server_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scoring paid for every answer, then logging its run met a tracking server that no longer
    answered: `harness evaluate` said only that the server did not answer, and the scores and
    what they cost were lost. They are now printed, then the error (exit 1) says they were not
    recorded."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from tests.openai_fake import FakeOpenAI

    def gone(*args: object, **kwargs: object) -> None:
        raise MlflowException(
            "API request to http://127.0.0.1:9/api/2.0/mlflow/runs/create failed with exception "
            "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded (Caused by "
            "NewConnectionError('Failed to establish a new connection: [Errno 111] Connection "
            "refused'))"
        )

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    monkeypatch.setattr(MlflowClient, "create_run", gone)
    with FakeOpenAI() as server:
        path = openai_experiment(tmp_path, "ev", 1, backend={"base_url": server.base_url})
        result = run_cli("evaluate", str(path), "--model", "gpt-4.1-nano-2025-04-14")
    assert result.exit_code == 1, result.output
    assert "accuracy" in result.stdout and "cost $" in result.stdout, result.stdout
    said = result.stderr.replace("\n", " ")
    assert "did not answer" in said and "not recorded" in said, said
    assert "Traceback" not in result.output
