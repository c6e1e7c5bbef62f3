"""Hand-off: promote a real small sweep's trial into the MLflow registry, load it back as a pyfunc
model, and call it through `harness predict`, for the local backend and (over the fake API) for
the OpenAI backend."""

# The fixture is imported by name, so the test that takes it "redefines" it.
# ruff: noqa: F811

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from harness.config import Experiment, load_experiment
from harness.handoff.promote import Promotion, promote
from harness.report.build import build_report
from harness.sweep.loop import run_sweep
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import ONE_EPOCH_SPACE, review_rows, write_csv, write_experiment
from tests.openai_fake import FakeOpenAI, openai_fake  # noqa: F401 - the fixture
from tests.test_sweep import RecordingView

pytestmark = pytest.mark.slow
NAME = "tiny-classifier"
KEY = "sk-harness-registry-test-0123456789"


@dataclass
class Swept:
    """A finished two-trial local sweep in its own directory, with absolute store URIs."""

    directory: Path
    path: Path
    store: str

    def experiment(self) -> Experiment:
        return load_experiment(str(self.path))

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.store)

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name="tiny", storage=f"sqlite:///{self.directory}/optuna.db")

    def backend_predictions(self, run_id: str) -> pd.DataFrame:
        """What the backend predicted on the test set during the sweep (the trial's artifact)."""
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path="predictions.csv",
            dst_path=str(self.directory / run_id),
            tracking_uri=self.store,
        )
        return pd.read_csv(local, keep_default_na=False)


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Swept]:
    directory = tmp_path_factory.mktemp("swept")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TOKENIZERS_PARALLELISM", "false")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        store = f"sqlite:///{directory}/mlflow.db"
        path = write_experiment(
            directory,
            write_csv(directory / "reviews.csv", review_rows(14)),
            space=ONE_EPOCH_SPACE,
            study={
                "n_trials": 2,
                "sampler": {"kind": "random"},
                "storage": f"sqlite:///{directory}/optuna.db",
            },
            tracking={"uri": store},
        )
        outcome = run_sweep(load_experiment(str(path)), RecordingView())
        assert len(outcome.results) == 2, outcome.failures
        # The module's tests run in the project folder, as a user's commands do: model folders
        # inside it are recorded relative to it (a copied project uses its own).
        yield Swept(directory, path, store)


@pytest.fixture(scope="module")
def promoted(swept: Swept) -> Promotion:
    return promote(swept.experiment())


def test_promote_registers_the_front_best_and_it_predicts_like_the_backend(
    swept: Swept, promoted: Promotion, monkeypatch: pytest.MonkeyPatch
) -> None:
    # By default, the trial `harness report` recommends: promote and report agree (when the
    # report's answer is a baseline, the fine-tuned trial its walk would choose).
    recommendation = build_report(swept.experiment()).recommendation
    assert recommendation.fine_tuned is not None
    recommended = recommendation.fine_tuned.number
    assert promoted.trial_number == recommended
    best = swept.study().trials[recommended]
    assert promoted.run_id == best.user_attrs["mlflow_run_id"]
    assert (promoted.name, promoted.alias) == (NAME, "champion")
    assert promoted.uri == f"models:/{NAME}@champion"
    assert "as `harness report` recommends" in promoted.reason

    client = swept.client()
    version = client.get_model_version_by_alias(NAME, "champion")
    assert str(version.version) == promoted.version
    assert version.run_id == promoted.run_id  # shown under the trial's run in the UI
    run = client.get_run(promoted.run_id)
    assert version.tags["harness.trial_number"] == str(best.number)
    assert float(version.tags["test_accuracy"]) == pytest.approx(best.user_attrs["test_accuracy"])
    assert float(version.tags["cost_usd"]) == pytest.approx(best.user_attrs["cost_usd"], abs=1e-6)
    assert version.tags["data_digest"] == run.data.tags["harness.data_digest"]
    assert run.info.status == "FINISHED"
    assert [o.model_id for o in run.outputs.model_outputs], "the model is logged on the run"

    # A fresh load by registry URI (MLflow reads the store from the environment, as any app
    # would) predicts exactly what the backend predicted on the test set during the sweep.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", swept.store)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    expected = swept.backend_predictions(promoted.run_id)
    frame = model.predict(pd.DataFrame({"text": expected["text"].tolist()}))
    assert frame["label"].tolist() == expected["predicted"].tolist()
    assert frame["confidence"].round(4).tolist() == pytest.approx(expected["confidence"].tolist())
    assert list(frame.columns) == ["label", "confidence", "score_negative", "score_positive"]
    totals = frame["score_negative"] + frame["score_positive"]
    assert totals.tolist() == pytest.approx([1.0] * len(frame))
    # The signature names the input: a bare list of texts is refused, not guessed at.
    with pytest.raises(mlflow.exceptions.MlflowException, match=r"missing inputs \['text'\]"):
        model.predict(expected["text"].tolist()[:2])


def test_promote_with_trial_moves_the_alias_and_never_registers_a_trial_twice(
    swept: Swept, promoted: Promotion
) -> None:
    other = next(
        t.number
        for t in swept.study().get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        if t.number != promoted.trial_number
    )
    second = promote(swept.experiment(), trial_number=other)
    assert second.trial_number == other and not second.reused
    assert int(second.version) == int(promoted.version) + 1
    assert "as asked" in second.reason
    client = swept.client()
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == second.version

    again = promote(swept.experiment(), trial_number=other, alias="challenger")
    assert again.reused and again.version == second.version
    back = promote(swept.experiment())  # the default choice again: its version, not a new one
    assert back.reused and back.version == promoted.version
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == promoted.version
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == second.version
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 2


def test_predict_command_classifies_texts_and_files_like_the_backend(
    swept: Swept, promoted: Promotion, tmp_path: Path
) -> None:
    expected = swept.backend_predictions(promoted.run_id)
    texts = expected["text"].tolist()
    csv = tmp_path / "new.csv"
    pd.DataFrame({"id": range(len(texts) - 1), "text": texts[1:]}).to_csv(csv, index=False)

    args = ("predict", NAME, texts[0], "--file", str(csv), "--json")
    result = run_cli(*args, env={"MLFLOW_TRACKING_URI": swept.store})
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == expected["predicted"].tolist()
    assert all(set(r["scores"]) == {"negative", "positive"} for r in rows)
    assert [round(r["confidence"], 4) for r in rows] == pytest.approx(expected["confidence"])


def test_predict_prints_a_table_and_promote_says_which_trial_and_why(
    swept: Swept, promoted: Promotion, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", swept.store)
    lines = tmp_path / "texts.txt"
    lines.write_text("The sequel is a delight, 7.\n\nThe film is dull, 9.\n", encoding="utf-8")
    result = run_cli("predict", f"models:/{NAME}@champion", "--file", str(lines))
    assert result.exit_code == 0, result.output
    assert "The sequel is a delight, 7." in result.stdout and "confidence" in result.stdout
    assert "positive" in result.stdout or "negative" in result.stdout

    result = run_cli("promote", str(swept.path))
    assert result.exit_code == 0, result.output
    assert f"Chose trial {promoted.trial_number}, as `harness report` recommends" in result.stdout
    assert f"models:/{NAME}@champion" in result.stdout and "harness predict" in result.stdout


def test_bad_model_uri_and_bad_trial_are_one_clear_message(
    swept: Swept, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", swept.store)
    result = run_cli("predict", "models:/nope@champion", "hello")
    # Names the models that do exist.
    assert_clean_error(result, "models:/nope@champion", NAME)
    assert result.exit_code == 2

    bad_trial = run_cli("promote", str(swept.path), "--trial", "99")
    assert_clean_error(bad_trial, "trial 99 is not a completed trial")
    assert bad_trial.exit_code == 2
    alias = run_cli("predict", f"models:/{NAME}@nope", "hello")
    assert_clean_error(alias, "nope", f"Registered models: {NAME}.")
    assert ".." not in alias.stderr.replace("...", ""), alias.stderr
    reserved = run_cli("promote", str(swept.path), "--alias", "v1")
    assert_clean_error(reserved, "--alias 'v1'")
    assert reserved.exit_code == 2
    nothing = run_cli("predict", NAME)
    assert_clean_error(nothing, "nothing to classify")
    assert nothing.exit_code == 2


# --------------------------------------------------------------------------- OpenAI backend


def _openai_experiment(tmp_path: Path) -> Path:
    csv = write_csv(tmp_path / "reviews.csv", review_rows(20, seed=2))
    space = tmp_path / "space.yaml"
    space.write_text("n_epochs: 1\nlearning_rate_multiplier: 1.0\nbatch_size: 8\n")
    config: dict[str, Any] = {
        "name": "oa-promote",
        "seed": 5,
        "dataset": {"source": str(csv), "split": {"validation": 0.2, "test": 0.2}},
        "backend": {
            "kind": "openai",
            "model": "babbage-002",
            "poll_interval": 0.05,
            "poll_max_interval": 0.1,
        },
        "search_space": str(space),
        "study": {"n_trials": 1, "storage": f"sqlite:///{tmp_path}/optuna.db"},
        "tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db"},
    }
    path = tmp_path / "oa.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_promote_openai_trial_keeps_its_id_and_prompt_format_and_never_the_key(
    openai_fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_fake.base_url)
    openai_fake.state.job_duration = 0.2
    openai_fake.state.set_oracle(
        lambda model, prompt: (
            {"positive": 0.8, "negative": 0.2}
            if "delight" in prompt or "wonderful" in prompt
            else {"positive": 0.3, "negative": 0.7}
        )
    )
    experiment = load_experiment(str(_openai_experiment(tmp_path)))
    outcome = run_sweep(experiment, RecordingView())
    assert len(outcome.results) == 1, outcome.failures
    model_id = outcome.results[0].model.model_ref

    done = promote(experiment)
    assert (done.name, done.backend) == ("oa-promote-classifier", "openai")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model(done.uri)
    config = model.model_config
    assert config["model"] == model_id and model_id.startswith("ft:babbage-002:")
    assert config["backend"]["base_url"] == openai_fake.base_url
    assert config["prompt_format"] == "prompt_completion"
    assert config["separator"] == "\n\n###\n\n" and config["completion_prefix"] == " "
    assert config["labels"] == ["negative", "positive"]
    stored = Path(mlflow.artifacts.download_artifacts(done.uri, dst_path=str(tmp_path / "m")))
    for file in stored.rglob("*"):
        if file.is_file():
            assert KEY not in file.read_text(encoding="utf-8", errors="ignore"), file

    before = openai_fake.state.count("POST", "/completions")
    frame = model.predict(pd.DataFrame({"text": ["The film is a delight", "The sequel is dull"]}))
    assert frame["label"].tolist() == ["positive", "negative"]
    assert frame["confidence"].tolist() == pytest.approx([0.8, 0.7])
    calls = [r for r in openai_fake.state.requests if r.path.endswith("/completions")][before:]
    assert {r.body["model"] for r in calls} == {model_id}
    assert sorted(r.body["prompt"] for r in calls) == [
        "The film is a delight\n\n###\n\n",
        "The sequel is dull\n\n###\n\n",
    ]

    monkeypatch.delenv("OPENAI_API_KEY")
    result = run_cli("predict", done.uri, "Was it good?")
    assert_clean_error(result, "OPENAI_API_KEY is not set")
    assert result.exit_code == 2


def test_a_promoted_models_unreachable_endpoint_says_how_to_register_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promoted OpenAI model calls the endpoint it was registered with, whatever
    OPENAI_BASE_URL says. When that endpoint was gone, `harness predict` said only "cannot reach
    URL" (and a rejected key "check ... OPENAI_BASE_URL"), pointing at a variable that cannot
    move it; it now says so and names `harness promote ... --set backend.base_url=...`."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    path = _openai_experiment(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["backend"]["max_retries"] = 0
    path.write_text(yaml.safe_dump(raw))
    with FakeOpenAI(job_duration=0.2) as gone:
        gone_url = gone.base_url
        monkeypatch.setenv("OPENAI_BASE_URL", gone_url)
        experiment = load_experiment(str(path))
        assert len(run_sweep(experiment, RecordingView()).results) == 1
        done = promote(experiment)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    with FakeOpenAI() as live:
        monkeypatch.setenv("OPENAI_BASE_URL", live.base_url)
        result = run_cli("predict", done.uri, "Was it good?")
        assert live.state.count("POST", "/completions") == 0  # the recorded endpoint, only
    assert result.exit_code == 1, result.output
    assert f"cannot reach {gone_url}" in result.output
    assert "OPENAI_BASE_URL does not move it" in result.output
    # Named for this model: its study and trial (the placeholders read as if they were unknown).
    assert "harness promote oa-promote --trial 0 --set backend.base_url=URL" in result.output
    # A model promoted before its package named its trial: the version's tags name it.
    from harness.handoff.pyfunc import HarnessClassifier

    load = HarnessClassifier.load_context

    def older(self: HarnessClassifier, context: Any) -> None:
        load(self, context)
        self.trial = None

    with FakeOpenAI(), pytest.MonkeyPatch.context() as patch:
        patch.setattr(HarnessClassifier, "load_context", older)
        result = run_cli("predict", done.uri, "Was it good?")
    assert "harness promote oa-promote --trial 0 --set backend.base_url=URL" in result.output
    # Doing so registered nothing: "was already registered as version 1", the old endpoint kept.
    with FakeOpenAI() as live:
        moved = ["--set", f"backend.base_url={live.base_url}"]
        again = run_cli("promote", str(path), "--trial", "0", *moved)
        assert again.exit_code == 0, again.output
        assert "registered as oa-promote-classifier version 2" in again.output
        run_cli("predict", done.name, "Was it good?")  # this fake knows no such model: a 404
        assert live.state.count("POST", "/completions") >= 1
