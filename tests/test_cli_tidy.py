"""Issue 16 (parts 2, 5, 6): a tidy CLI. `harness trials` fits 80 columns and writes JSON / CSV,
`harness studies` lists the storage, any command opens a study by its name, every command has
examples, `-h` and clean metavars, and `predict` skips empty rows and keeps the input's columns.

The studies are real Optuna studies in the default storage, created by `open_study` (as a sweep
creates them) with trials added as finished records, so nothing trains; `predict` calls a real
MLflow registry holding a small keyword model.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
import typer
import yaml
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState
from rich.console import Console

from harness import __version__
from harness.cli import EXAMPLES, app
from harness.cli.common import _console_width
from harness.cli.console import trials_table
from harness.cli.trial_rows import CSV_COLUMNS
from harness.config import load_experiment
from harness.handoff.serve import pointed_at
from harness.sweep.search_space import load_search_space
from harness.sweep.storage import quiet_optuna, worker_host
from harness.sweep.study import open_study, pareto_numbers
from harness.tracking.record import StudyOrigin, TrialRecord, reserve_attrs, worker_attrs
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import write_experiment

STUDY = "lr-sweep"
SPACE = {
    "n_epochs": {"type": "int", "low": 1, "high": 3},
    "learning_rate_multiplier": {"type": "float", "low": 0.5, "high": 8.0, "log": True},
    "batch_size": 8,  # fixed: trials do not record it, the JSON still gives it
}
DISTRIBUTIONS = {
    "n_epochs": IntDistribution(1, 3),
    "learning_rate_multiplier": FloatDistribution(0.5, 8.0, log=True),
}


@dataclass(frozen=True)
class Done:
    """A finished trial to add: long numbers on purpose (OpenAI-sized costs, hours of wall
    time, a trial stopped early, a checkpoint of another trial)."""

    valid: float
    test: float
    cost: float
    seconds: float
    n_epochs: int = 3
    epochs_run: int = 3
    lr: float = 1.8537
    checkpoint_of: int | None = None


FINISHED = [
    Done(0.81234, 0.79876, 148.1532, 12345.6),
    Done(0.79011, 0.80123, 12.34567, 4321.0, epochs_run=1),
    Done(0.76543, 0.77777, 0.000123456, 59.4, n_epochs=1, epochs_run=1, lr=7.9),
    Done(0.80999, 0.78001, 98.7654, 999.0, lr=0.5012, checkpoint_of=0),
    Done(0.70001, 0.69999, 0.0456789, 3600.0, n_epochs=2, epochs_run=2),
]
FAILED_RESERVATION = 0.25
RUNNING_RESERVATION = 0.0123


def _attrs(done: Done, number: int) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "valid_accuracy": done.valid,
        "test_accuracy": done.test,
        "test_macro_f1": done.test - 0.01,
        "cost_usd": done.cost,
        "wall_seconds": done.seconds,
        "epochs_run": done.epochs_run,
        "train_examples": 1200,
        "mlflow_run_id": f"run{number:03d}",
        "valid_accuracy_by_epoch": [done.valid - 0.1, done.valid][-done.epochs_run :],
        "cost_usd_by_epoch": [done.cost / 2, done.cost][-done.epochs_run :],
    }
    if done.checkpoint_of is not None:
        attrs.update(checkpoint_of=done.checkpoint_of, spent_usd=done.cost / 1000)
    return attrs


@pytest.fixture
def made(tmp_path: Path, tiny_csv: Path) -> Path:
    """`tiny.yaml`, and its study made with `--set study.name=lr-sweep` in the default storage:
    five finished trials (one a checkpoint), one failed, one running."""
    path = write_experiment(tmp_path, tiny_csv, space=SPACE)
    experiment = load_experiment(str(path), [f"study.name={STUDY}"])
    space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    study = open_study(experiment, space).study
    for number, done in enumerate(FINISHED):
        params = {"n_epochs": done.n_epochs, "learning_rate_multiplier": done.lr}
        study.add_trial(
            optuna.trial.create_trial(
                values=[done.valid, done.cost],
                params=params,
                distributions=DISTRIBUTIONS,
                user_attrs=_attrs(done, number),
            )
        )
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params={"n_epochs": 2, "learning_rate_multiplier": 3.0},
            distributions=DISTRIBUTIONS,
            user_attrs={"failure_reason": "out of memory", "reserved_usd": FAILED_RESERVATION},
        )
    )
    with quiet_optuna():  # Optuna warns that heartbeats belong to optimize(); sweeps beat too
        study.ask()  # a trial still running
    return path


def _study() -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage="sqlite:///mlruns/optuna.db")


def _render(study: optuna.Study, width: int) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(trials_table(study, f"study {STUDY}  (* = Pareto front)"))
    return console.export_text()


# --------------------------------------------------------------------------- trials


def test_the_trials_table_fits_80_columns_without_cutting_a_number(made: Path) -> None:
    study = _study()
    text = _render(study, 80)
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text, text
    for done in FINISHED:
        assert f"{done.valid:.4f}" in text and f"{done.test:.4f}" in text
    for cost in ("148", "12.35", "0.000123", "98.77", "0.0457"):  # the one dollar format (`usd`)
        assert re.search(rf"\s{re.escape(cost)}\s", text), cost
    assert "ckpt of 0" in text and "1/3" in text
    rows = [re.match(r"\s*(\d+)(\*?)\s", line) for line in text.splitlines()]
    starred = {int(row[1]) for row in rows if row and row[2]}
    assert starred == pareto_numbers(study) and len([r for r in rows if r]) == len(study.trials)


def test_a_one_objective_study_stars_its_best_trial_not_a_pareto_front(
    tmp_path: Path, tiny_csv: Path
) -> None:
    # Found walking a study made with `objectives: [accuracy]`: `trials` starred its best trial
    # under "* = Pareto front" and a legend "Pareto front of validation accuracy against cost",
    # a front the study never had (its one objective is accuracy; optuna-dashboard shows a best
    # trial).
    study = {"n_trials": 2, "sampler": {"kind": "random"}, "objectives": ["accuracy"]}
    path = write_experiment(tmp_path, tiny_csv, space=SPACE, study=study)
    experiment = load_experiment(str(path))
    space = load_search_space(experiment.resolve_path(experiment.config.search_space))
    made = open_study(experiment, space).study
    for number, done in enumerate(FINISHED[:3]):
        params = {"n_epochs": done.n_epochs, "learning_rate_multiplier": done.lr}
        made.add_trial(
            optuna.trial.create_trial(
                values=[done.valid],
                params=params,
                distributions=DISTRIBUTIONS,
                user_attrs=_attrs(done, number),
            )
        )
    text = run_cli("trials", str(path)).stdout
    assert "Pareto" not in text, text
    assert "* = best validation accuracy" in text.splitlines()[0], text
    starred = [line.split()[0] for line in text.splitlines() if re.match(r"\s*\d+\*", line)]
    assert starred == [f"{made.best_trial.number}*"], text


def test_a_wider_terminal_gets_every_column(made: Path) -> None:
    wide = _render(_study(), 120)
    header = next(line for line in wide.splitlines() if line.lstrip().startswith("#"))
    assert header.split() == [
        "#",
        "state",
        "ep",
        "lr",
        "batch",
        "n",
        "valid",
        "test",
        "F1",
        "cost",
        "$",
        "time",
    ]
    assert "3:25:46" in wide and "1:00:00" in wide  # 12345.6 s and an hour
    narrow = _render(_study(), 70)
    assert "…" not in narrow and max(len(line) for line in narrow.splitlines()) <= 70


def test_fixed_epochs_and_batch_show_their_value_not_a_dash(tmp_path: Path, tiny_csv: Path) -> None:
    # The space fixes n_epochs and batch_size: a trial records only what it sampled (the rate).
    path = write_experiment(tmp_path, tiny_csv)  # batch_size 8 fixed, n_epochs sampled
    made = run_cli("study", "create", str(path), "--set", "search_space.n_epochs=2")
    assert made.exit_code == 0, made.stderr
    study = optuna.load_study(study_name="tiny", storage="sqlite:///mlruns/optuna.db")
    rate = FloatDistribution(2.0, 6.0, log=True)
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.75, 0.001],
            params={"learning_rate_multiplier": 3.0},
            distributions={"learning_rate_multiplier": rate},
        )
    )
    result = run_cli("trials", str(path), "--set", "search_space.n_epochs=2")
    assert result.exit_code == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.lstrip().startswith("0"))
    assert row.split()[1:5] == ["complete", "2", "3", "8"], row


def test_piped_output_honours_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # not a terminal
    monkeypatch.setenv("COLUMNS", "80")
    assert _console_width() == 80
    monkeypatch.delenv("COLUMNS")
    assert _console_width() == 160  # CI logs and files get a wide table


@pytest.mark.slow  # a fresh interpreter: ~10 s on a busy 2-core machine
def test_a_real_process_at_80_columns(made: Path) -> None:
    harness = str(Path(sys.executable).with_name("harness"))
    env = {**os.environ, "COLUMNS": "80"}
    result = subprocess.run(
        [harness, "trials", STUDY], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
    assert "…" not in result.stdout and f"{FINISHED[0].valid:.4f}" in result.stdout


def test_trials_json_is_every_trial_with_the_same_fields(made: Path) -> None:
    result = run_cli("trials", STUDY, "--json")
    assert result.exit_code == 0, result.stderr
    records = json.loads(result.stdout)
    study = _study()
    trials = {t.number: t for t in study.trials}
    assert [r["number"] for r in records] == sorted(trials)
    assert len({tuple(r) for r in records}) == 1  # one shape for every trial, whatever it holds
    assert {r["number"] for r in records if r["pareto"]} == pareto_numbers(study)
    by_number = {r["number"]: r for r in records}
    for number, trial in trials.items():
        record, stored = by_number[number], TrialRecord.from_attrs(trial.user_attrs)
        assert record["state"] == trial.state.name.lower()
        assert record["params"]["batch_size"] == 8  # the search space's fixed value
        assert record["params"]["n_epochs"] == trial.params.get("n_epochs")
        assert record["metrics"]["test_accuracy"] == stored.test_accuracy
        assert record["metrics"]["valid_accuracy"] == stored.selection_accuracy
        assert record["cost"]["cost_usd"] == stored.cost_usd
        assert record["valid_accuracy_by_epoch"] == list(stored.valid_accuracy_by_epoch)
    checkpoint = FINISHED.index(next(d for d in FINISHED if d.checkpoint_of is not None))
    assert by_number[checkpoint]["checkpoint_of"] == 0
    assert by_number[0]["checkpoints"] == [checkpoint]
    failed = next(r for r in records if r["state"] == "fail")
    assert (
        failed["failure_reason"] == "out of memory" and failed["metrics"]["test_accuracy"] is None
    )
    assert not any(record["synthetic"] for record in records)  # no test server here
    assert run_cli("trials", STUDY, "--json").stdout == result.stdout  # stable


def test_trials_csv_is_a_header_and_one_row_per_trial(made: Path) -> None:
    result = run_cli("trials", STUDY, "--csv")
    assert result.exit_code == 0, result.stderr
    reader = csv.DictReader(io.StringIO(result.stdout))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    rows = list(reader)
    study = _study()
    assert [int(r["number"]) for r in rows] == sorted(t.number for t in study.trials)
    front = pareto_numbers(study)
    for row in rows:
        trial = study.trials[int(row["number"])]
        stored = TrialRecord.from_attrs(trial.user_attrs)
        assert row["pareto"] == ("true" if trial.number in front else "false")
        assert row["param_batch_size"] == "8"
        if stored.test_accuracy is None:
            assert row["test_accuracy"] == "" and row["cost_usd"] == ""
            continue
        assert float(row["test_accuracy"]) == stored.test_accuracy
        assert float(row["cost_usd"]) == stored.cost_usd
        curve = [float(v) for v in row["valid_accuracy_by_epoch"].split(";")]
        assert curve == list(stored.valid_accuracy_by_epoch)


def test_json_and_csv_together_is_one_clear_error(made: Path) -> None:
    result = run_cli("trials", STUDY, "--json", "--csv")
    assert_clean_error(result, "--json and --csv: choose one")
    assert result.exit_code == 2


# --------------------------------------------------------------------------- studies by name


def test_a_study_records_its_experiment_and_opens_by_its_name(made: Path) -> None:
    origin = StudyOrigin.from_attrs(_study().user_attrs)
    assert origin.path == "tiny.yaml" and origin.overrides == (f"study.name={STUDY}",)
    assert yaml.safe_load(origin.yaml or "")["study"]["name"] == STUDY
    made.rename(made.with_name("moved.yaml"))  # the study no longer needs its file
    result = run_cli("trials", STUDY)
    assert result.exit_code == 0, result.stderr
    assert f"study {STUDY}" in result.stdout and f"{FINISHED[0].valid:.4f}" in result.stdout
    # --set still applies on top of what the study recorded, and is validated the same way.
    bad = run_cli("trials", STUDY, "--set", "study.n_trails=3")
    assert_clean_error(bad, f"study {STUDY!r} (made from tiny.yaml) with --set", "n_trails")


def test_a_study_in_another_storage_opens_by_its_name_with_that_storage(
    tmp_path: Path, tiny_csv: Path
) -> None:
    # Found in a real run: `harness trials multi --set study.storage=postgresql://...` looked
    # for the study in mlruns/optuna.db and said it was not there.
    path = write_experiment(tmp_path, tiny_csv, space=SPACE)
    storage = f"study.storage=sqlite:///{tmp_path}/elsewhere.db"
    created = run_cli("study", "create", str(path), "--set", storage, "--set", "study.name=far")
    assert created.exit_code == 0, created.stderr
    found = run_cli("trials", "far", "--set", storage)
    assert found.exit_code == 0, found.stderr
    assert "study far" in found.stdout
    missing = run_cli("trials", "far")
    assert_clean_error(missing, "no study of that name in sqlite:///mlruns/optuna.db")


def test_a_file_in_experiments_wins_over_a_study_and_says_so(made: Path) -> None:
    (made.parent / "experiments").mkdir()
    config = yaml.safe_load(made.read_text())
    config["study"]["name"] = "other"
    (made.parent / "experiments" / f"{STUDY}.yaml").write_text(yaml.safe_dump(config))
    result = run_cli("trials", STUDY)
    # The file's study does not exist: its own clean error, after the note saying what it used.
    assert_clean_error(result, "study 'other' not found")
    assert f"note: '{STUDY}' is both experiments/{STUDY}.yaml (study 'other')" in result.stderr
    assert f"made from tiny.yaml --set study.name={STUDY}" in result.stderr


def test_a_file_named_with_its_study_needs_no_note_and_a_missing_study_keeps_its_sets(
    made: Path,
) -> None:
    # Found in a real run: the README's own `--set study.name=...` recipe printed a note telling
    # the user to do what they had just done, and a missing study's hint dropped the --set.
    (made.parent / "experiments").mkdir()
    (made.parent / "experiments" / f"{STUDY}.yaml").write_text(made.read_text())
    result = run_cli("trials", STUDY, "--set", "study.name=nosuch")
    assert_clean_error(result, "study 'nosuch' not found")
    assert "note:" not in result.stderr
    assert f"run `harness sweep experiments/{STUDY}.yaml --set study.name=nosuch` first" in (
        result.stderr
    )


def test_a_study_keeps_its_overrides_when_opened_through_its_file(
    tmp_path: Path, tiny_csv: Path
) -> None:
    from harness.cli.common import load_target
    from harness.sweep.search_space import experiment_space

    path = write_experiment(tmp_path, tiny_csv, space=SPACE)
    made = run_cli("study", "create", str(path), "--set", "search_space.n_epochs=1")
    assert made.exit_code == 0, made.stderr
    # Opened through the file alone: the study's recorded experiment, and a note saying so.
    result = run_cli("trials", str(path), "--json")
    assert result.exit_code == 0, result.stderr
    assert "note: study 'tiny' was made from tiny.yaml --set search_space.n_epochs=1" in (
        result.stderr
    )
    assert "differs in search_space.n_epochs: using the study's recorded" in result.stderr
    assert experiment_space(load_target(str(path))).fixed["n_epochs"] == 1
    # The same file with the same --set: nothing to say.
    same = run_cli("trials", str(path), "--set", "search_space.n_epochs=1")
    assert same.exit_code == 0 and "note:" not in same.stderr


def test_an_unknown_name_lists_what_is_known_with_the_closest(made: Path) -> None:
    (made.parent / "experiments").mkdir()
    (made.parent / "experiments" / "demo.yaml").write_text(made.read_text())
    result = run_cli("trials", "lr-swep")
    assert_clean_error(
        result,
        "lr-swep: no such experiment file, and no study of that name",
        "Did you mean 'lr-sweep'?",
        "Known experiments: demo.",
        f"Studies: {STUDY}.",
    )
    assert result.exit_code == 2


def test_a_study_name_in_a_storage_that_cannot_be_opened_says_why(tmp_path: Path) -> None:
    # Found walking "Running on several machines" in a shell without PGPASSWORD: `harness trials
    # demo --set study.storage=postgresql://...` said "no such experiment file, and no study of
    # that name ... Studies: none", as if the study were gone, not that the login failed.
    storage = "study.storage=postgresql://harness@127.0.0.1:1/optuna"  # nothing listens there
    result = run_cli("trials", "demo", "--set", storage)
    assert_clean_error(result, "cannot open study storage 'postgresql://harness@127.0.0.1:1/")
    assert "no study of that name" not in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["prepare"],
        ["sweep"],
        ["trials"],
        ["estimate"],
        ["evaluate", "--model", "m"],
        ["report"],
        ["compare", STUDY],
        ["promote"],
        ["study", "create"],
        ["studies", "--experiment"],
        ["predict", "m", "text", "--experiment"],
    ],
    ids=" ".join,
)
def test_every_command_resolves_experiment_names_alike(made: Path, command: list[str]) -> None:
    result = run_cli(*command, "lr-swep")
    assert_clean_error(result, "no study of that name", "Did you mean 'lr-sweep'?")


def test_a_study_older_than_its_recorded_experiment_opens_by_file(made: Path) -> None:
    optuna.create_study(
        study_name="old", storage="sqlite:///mlruns/optuna.db", directions=["maximize", "minimize"]
    )
    assert_clean_error(run_cli("trials", "old"), "'old'", "created before", "--set study.name=old")
    by_file = run_cli("trials", str(made), "--set", "study.name=old")
    assert by_file.exit_code == 0, by_file.stderr


# --------------------------------------------------------------------------- studies


def test_studies_lists_trials_by_state_best_accuracy_money_and_origin(made: Path) -> None:
    optuna.create_study(study_name="empty", storage="sqlite:///mlruns/optuna.db")
    result = run_cli("studies", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == ["empty", STUDY]
    row = rows[STUDY]
    trained = [d for d in FINISHED if d.checkpoint_of is None]
    assert (row["complete"], row["checkpoints"], row["failed"], row["running"]) == (
        len(trained),
        len(FINISHED) - len(trained),
        1,
        1,
    )
    assert row["best_valid_accuracy"] == max(d.valid for d in FINISHED)
    # What the budget ledger counts: costs, a checkpoint's scoring only, a failure's reservation.
    spent = sum(d.cost if d.checkpoint_of is None else d.cost / 1000 for d in FINISHED)
    assert row["spent_usd"] == pytest.approx(spent + FAILED_RESERVATION)
    assert row["experiment"] == "tiny.yaml" and row["last_activity"]
    assert rows["empty"]["complete"] == 0 and rows["empty"]["experiment"] is None

    table = run_cli("studies")
    assert table.exit_code == 0, table.stderr
    assert STUDY in table.stdout and "4 done, 1 ckpt, 1 running, 1 failed" in table.stdout
    assert f"{max(d.valid for d in FINISHED):.4f}" in table.stdout


def test_studies_at_80_columns_break_no_word(made: Path) -> None:
    from harness.cli.common import open_storage
    from harness.cli.studies import studies_table, study_rows

    storage = "sqlite:///mlruns/optuna.db"
    optuna.create_study(study_name="demo-learning-rate", storage=storage)
    rows = study_rows(open_storage(storage))
    console = Console(width=80, file=io.StringIO(), record=True)
    console.print(studies_table(rows, storage))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    words = text.split()
    best = max(d.valid for d in FINISHED)
    when = next(row.last_activity or "" for row in rows if row.name == STUDY).replace("T", " ")
    for word in ("demo-learning-rate", STUDY, "running,", "failed", f"{best:.4f}", "tiny.yaml"):
        assert word in words, (word, text)
    assert when[:10] in words and when[11:16] in words, text
    assert "161" in words  # dollars to three significant digits (160.8...)


def test_studies_of_another_storage_or_an_experiments(made: Path, tmp_path: Path) -> None:
    elsewhere = f"sqlite:///{tmp_path}/elsewhere.db"
    result = run_cli("studies", "--storage", elsewhere)
    assert result.exit_code == 0, result.stderr
    assert "no studies in" in result.stdout and not (tmp_path / "elsewhere.db").exists()
    optuna.create_study(study_name="far", storage=elsewhere)
    by_experiment = run_cli(
        "studies", "--experiment", str(made), "--set", f"study.storage={elsewhere}"
    )
    assert by_experiment.exit_code == 0, by_experiment.stderr
    assert "far" in by_experiment.stdout and STUDY not in by_experiment.stdout


def _hold_the_running_trial(worker: dict[str, Any]) -> int:
    """Give the fixture's running trial a reservation and `worker` (host, pid); its number."""
    study = _study()
    running = study.get_trials(states=(TrialState.RUNNING,))[0]
    for key, value in {**reserve_attrs(RUNNING_RESERVATION), **worker}.items():
        study._storage.set_trial_user_attr(running._trial_id, key, value)
    return running.number


def test_studies_and_the_trial_records_add_up_to_one_ledger_while_a_trial_runs(
    made: Path,
) -> None:
    # Found by walking a sweep: while a trial ran (or after its worker was killed), `studies`
    # said $0.000707 spent and the records' `ledger_usd` added up to $0.000846, the running
    # trial's reservation; the live view says "spent ... reserved ...": now so does `studies`.
    _hold_the_running_trial(worker_attrs(worker_host(), os.getpid()))
    rows = {row["name"]: row for row in json.loads(run_cli("studies", "--json").stdout)}
    records = json.loads(run_cli("trials", STUDY, "--json").stdout)
    row = rows[STUDY]
    assert row["reserved_usd"] == pytest.approx(RUNNING_RESERVATION)
    assert row["spent_usd"] + row["reserved_usd"] == pytest.approx(
        sum(r["cost"]["ledger_usd"] for r in records)
    )
    assert (row["running"], row["killed"]) == (1, 0)
    assert "1 running, $0.0123 reserved" in run_cli("studies").stdout


def test_a_trial_cut_short_has_no_validation_accuracy_as_no_other_client_has(made: Path) -> None:
    # Found by walking a sweep interrupted after its trial's first epoch: `trials` gave that
    # epoch's 0.5917 as the failed trial's validation accuracy, the highest of the study (its
    # completed trials had 0.5792), where the dashboard and MLflow give it none: a script taking
    # the best record would take a trial that delivered no model.
    best = max(d.valid for d in FINISHED) + 0.05
    _study().add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params={"n_epochs": 3, "learning_rate_multiplier": 7.0},
            distributions=DISTRIBUTIONS,
            user_attrs={"failure_reason": "interrupted", "valid_accuracy_by_epoch": [best]},
        )
    )
    records = json.loads(run_cli("trials", STUDY, "--json").stdout)
    cut = next(r for r in records if r["failure_reason"] == "interrupted")
    assert cut["metrics"]["valid_accuracy"] is None and cut["valid_accuracy_by_epoch"] == [best]
    assert f"{best:.4f}" not in run_cli("trials", STUDY).stdout
    assert f"{best:.4f}" not in run_cli("studies").stdout  # nor its best, as before


def test_studies_calls_a_trial_the_budget_skipped_skipped_as_trials_does(made: Path) -> None:
    # Found by walking a sweep on a small budget: `trials` said "skipped", `studies` said
    # "1 queued/pruned" of the same trial.
    _study().add_trial(
        optuna.trial.create_trial(
            state=TrialState.PRUNED,
            params={"n_epochs": 3, "learning_rate_multiplier": 7.0},
            distributions=DISTRIBUTIONS,
            user_attrs={"skipped_reason": "budget: $0.0604 committed of $0.07"},
        )
    )
    records = json.loads(run_cli("trials", STUDY, "--json").stdout)
    row = next(r for r in json.loads(run_cli("studies", "--json").stdout) if r["name"] == STUDY)
    assert row["skipped"] == sum(r["state"] == "skipped" for r in records) == 1
    text = run_cli("studies").stdout
    assert "1 skipped" in text and "queued/pruned" not in text, text


def test_studies_calls_a_queued_retry_waiting_as_trials_does(made: Path) -> None:
    # Found by walking a killed sweep: the next sweep failed the killed trial and queued its
    # parameters again; `trials` said "waiting", `studies` said "1 queued/pruned", which could be
    # a trial pruned for good as well as one about to run.
    for state in (TrialState.WAITING, TrialState.PRUNED):
        _study().add_trial(
            optuna.trial.create_trial(
                state=state,
                params={"n_epochs": 3, "learning_rate_multiplier": 7.0},
                distributions=DISTRIBUTIONS,
                values=None if state == TrialState.WAITING else [0.5, 0.01],
            )
        )
    states = [r["state"] for r in json.loads(run_cli("trials", STUDY, "--json").stdout)]
    row = next(r for r in json.loads(run_cli("studies", "--json").stdout) if r["name"] == STUDY)
    assert row["waiting"] == states.count("waiting") == 1
    assert row["pruned"] == states.count("pruned") == 1
    text = run_cli("studies").stdout
    assert "1 waiting" in text and "1 pruned" in text and "queued" not in text, text


def test_a_trial_whose_worker_was_killed_reads_killed_not_running(made: Path) -> None:
    # Found by walking a sweep: after `kill -9` of `harness sweep` mid-trial, `trials` and
    # `studies` went on saying "running" for a trial nothing ran, until the next sweep.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    number = _hold_the_running_trial(worker_attrs(worker_host(), dead.pid))
    records = {r["number"]: r for r in json.loads(run_cli("trials", STUDY, "--json").stdout)}
    assert records[number]["state"] == "killed"
    assert f"pid {dead.pid}" in records[number]["failure_reason"]
    assert "next `harness sweep`" in records[number]["failure_reason"]
    table = run_cli("trials", STUDY).stdout
    row = next(line for line in table.splitlines() if line.lstrip().startswith(str(number)))
    assert row.split()[1] == "killed", table
    studies = json.loads(run_cli("studies", "--json").stdout)
    row = next(r for r in studies if r["name"] == STUDY)
    assert (row["running"], row["killed"]) == (0, 1)
    assert "1 killed" in run_cli("studies").stdout
    # A worker still alive on this machine is running, whatever the others.
    _hold_the_running_trial(worker_attrs(worker_host(), os.getpid()))
    records = {r["number"]: r for r in json.loads(run_cli("trials", STUDY, "--json").stdout)}
    assert records[number]["state"] == "running" and records[number]["failure_reason"] is None


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--storage", "sqlite:///a.db", "--experiment", "x"], "--storage and --experiment"),
        (["--set", "study.n_trials=2"], "--set applies to an experiment's config"),
        (["--storage", "nosuchdb://host/db"], "cannot open study storage 'nosuchdb://host/db'"),
    ],
)
def test_bad_studies_options_are_one_clear_error(args: list[str], needle: str) -> None:
    assert_clean_error(run_cli("studies", *args), needle)


# --------------------------------------------------------------------------- help


def _command_paths() -> list[tuple[str, ...]]:
    def walk(command: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        children = getattr(command, "commands", None)
        if not children:
            return [path]
        return [p for name, sub in children.items() for p in walk(sub, (*path, name))]

    return walk(typer.main.get_command(app), ())


@pytest.mark.parametrize("path", _command_paths(), ids=" ".join)
def test_every_command_has_examples_short_help_and_clean_metavars(path: tuple[str, ...]) -> None:
    result = run_cli(*path, "-h")
    assert result.exit_code == 0, result.output
    assert f"Usage: harness {' '.join(path)} [OPTIONS]" in result.stdout
    for python_type in ("{", "......", "<bool>", "<int>", "<str>", "<float>", "<path>", "<list"):
        assert python_type not in result.stdout, python_type
    examples = result.stdout.split("Examples:")[1].splitlines()
    commands = [line.strip() for line in examples if line.strip().startswith("harness")]
    assert commands and all(f"{c} ".startswith(f"harness {' '.join(path)} ") for c in commands)
    assert " ".join(path) in EXAMPLES or "Examples:" in result.stdout


def test_examples_fit_80_columns_and_flags_show_no_value() -> None:
    assert all(len(line) <= 74 for text in EXAMPLES.values() for line in text.splitlines())
    sweep = run_cli("sweep", "--help").stdout
    assert "KEY=VALUE" in sweep and "EXPERIMENT" in sweep
    yes = next(line for line in sweep.splitlines() if line.lstrip("│ ").startswith("--yes"))
    assert yes.split("--yes")[1].split()[0] == "Go"  # no metavar between the flag and its help


def test_version_and_short_help_at_the_top() -> None:
    version = run_cli("--version")
    assert version.exit_code == 0 and version.stdout.strip() == f"harness {__version__}"
    top = run_cli("-h")
    assert top.exit_code == 0 and "studies" in top.stdout and "--version" in top.stdout


# --------------------------------------------------------------------------- predict

MODEL_CODE = '''
import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from harness.handoff.pyfunc import texts_of


class Keywords(PythonModel):
    """positive when a text says "delight", with every label's score, as harness models do."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        scores = [0.9 if "delight" in text else 0.2 for text in texts_of(model_input)]
        return pd.DataFrame(
            {
                "label": ["positive" if s > 0.5 else "negative" for s in scores],
                "confidence": [max(s, 1 - s) for s in scores],
                "score_negative": [1 - s for s in scores],
                "score_positive": scores,
            }
        )


set_model(Keywords())
'''


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real MLflow store holding version 1 of the registered model `keywords`."""
    import mlflow

    directory = tmp_path_factory.mktemp("registry")
    store = f"sqlite:///{directory}/mlflow.db"
    code = directory / "keywords.py"
    code.write_text(MODEL_CODE, encoding="utf-8")
    # `pointed_at` puts MLflow's global URI back as it was (unset), so no later test inherits it.
    with pointed_at(store):
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(code),
            registered_model_name="keywords",
            pip_requirements=["mlflow", "pandas"],
        )
    return store


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.slow  # the registry fixture logs a model: ~10-20 s once
def test_predict_skips_empty_rows_and_keeps_the_csv_columns(registry: str, tmp_path: Path) -> None:
    rows = [
        ("1", "A delight, 3.", "positive"),
        ("2", "", "negative"),
        ("3", "   ", "negative"),
        ("4", "Dull and long.", "negative"),
    ]
    data = tmp_path / "in.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("id", "text", "label"), *rows])
    args = ("predict", "models:/keywords/1", "--file", str(data), "--json")
    result = run_cli(*args, env={"MLFLOW_TRACKING_URI": registry})
    assert result.exit_code == 0, result.stderr
    assert "skipped 2 empty rows" in result.stderr
    records = _json_lines(result.stdout)
    kept = [row for row in rows if row[1].strip()]
    assert [r["id"] for r in records] == [int(row[0]) for row in kept]  # whole numbers: ints
    assert [r["input_label"] for r in records] == [row[2] for row in kept]  # the true label
    assert [r["label"] for r in records] == ["positive", "negative"]  # the model's
    assert all(
        set(r) == {"id", "text", "input_label", "label", "confidence", "scores"} for r in records
    )
    assert records[0]["scores"] == {"negative": pytest.approx(0.1), "positive": 0.9}


@pytest.mark.slow  # the registry fixture logs a model: ~10-20 s once
def test_predict_keeps_jsonl_values_and_a_named_column(registry: str, tmp_path: Path) -> None:
    lines = [
        {"id": 7, "review": "A delight.", "meta": {"source": "web"}},
        {"id": 8, "review": None},
        {"id": 9},
        {"id": 10, "review": "Tedious."},
    ]
    data = tmp_path / "in.jsonl"
    data.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    args = ("predict", "models:/keywords/1", "--file", str(data), "--column", "review", "--json")
    result = run_cli(*args, env={"MLFLOW_TRACKING_URI": registry})
    assert result.exit_code == 0, result.stderr
    assert "skipped 2 empty rows" in result.stderr
    records = _json_lines(result.stdout)
    assert [r["id"] for r in records] == [7, 10]
    assert records[0]["meta"] == {"source": "web"} and records[0]["review"] == "A delight."
    assert [r["label"] for r in records] == ["positive", "negative"]


@pytest.mark.slow  # the registry fixture logs a model: ~10-20 s once
def test_predict_finds_the_registry_through_an_experiment(
    registry: str, tmp_path: Path, tiny_csv: Path
) -> None:
    path = write_experiment(tmp_path, tiny_csv)
    args = ("predict", "models:/keywords/1", "A delight.", "--experiment", str(path))
    result = run_cli(*args, "--set", f"tracking.uri={registry}", "--json")
    assert result.exit_code == 0, result.stderr
    assert _json_lines(result.stdout)[0]["label"] == "positive"


@pytest.mark.slow  # the registry fixture logs a model: ~10-20 s once
def test_bad_predict_input_is_one_clear_error(registry: str, tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": registry}
    blank = run_cli("predict", "models:/keywords/1", "", "  ", env=env)
    assert_clean_error(blank, "nothing to classify (all 2 texts given are empty)")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "fine"}\n{"text": \n', encoding="utf-8")
    bad_line = run_cli("predict", "keywords", "--file", str(broken), env=env)
    assert_clean_error(bad_line, str(broken), "line 2")
    alone = run_cli("predict", "keywords", "hello", "--set", "tracking.uri=x", env=env)
    assert_clean_error(alone, "--set applies to an experiment's config: give --experiment too")


def test_a_cost_column_keeps_three_significant_digits_down_its_rows() -> None:
    # Found in a real run: 0.00053 and 0.00032 beside 0.000787 in the trials table.
    from harness.cli.console import dollars

    shown = [dollars(v) for v in (0.00053, 0.00032, 0.000787)]
    assert shown == ["0.000530", "0.000320", "0.000787"]
    assert [dollars(v) for v in (0.1, 1.5, 148.2, 0, None)] == ["0.100", "1.50", "148", "0", "-"]


@pytest.mark.parametrize(
    ("setting", "env", "needle"),
    [
        (["--set", "tracking.uri=notaurl://x"], {}, "tracking.uri: unsupported scheme 'notaurl'"),
        ([], {"MLFLOW_TRACKING_URI": "notaurl://x"}, "MLFLOW_TRACKING_URI=notaurl://x: unsup"),
    ],
    ids=["config", "environment"],
)
def test_a_tracking_uri_mlflow_cannot_open_is_one_message_and_creates_nothing(
    tmp_path: Path, tiny_csv: Path, setting: list[str], env: dict[str, str], needle: str
) -> None:
    # Was MLflow's UnsupportedModelRegistryStoreURIException with its traceback.
    experiment = write_experiment(tmp_path, tiny_csv)
    for command, options in ((["study", "create"], []), (["sweep"], ["--yes"])):
        result = run_cli(*command, str(experiment), *options, *setting, env=env)
        assert_clean_error(result, needle, "sqlite")
    assert not (tmp_path / "mlruns").exists()


def test_a_negative_add_is_refused_before_anything_runs(tmp_path: Path, tiny_csv: Path) -> None:
    experiment = write_experiment(tmp_path, tiny_csv)
    result = run_cli("sweep", str(experiment), "--add", "-2")
    assert_clean_error(result, "--add")
    assert not (tmp_path / "mlruns").exists()


def test_study_create_refuses_what_sweep_would_refuse_before_creating_the_study(
    tmp_path: Path, tiny_csv: Path
) -> None:
    # `study create` made the study, and every worker's `sweep` then refused its search space.
    space = {"n_epochs": 1, "learning_rate_multiplier": 1.0, "batch_size": 8, "train_examples": 1}
    experiment = write_experiment(tmp_path, tiny_csv, space=space)
    result = run_cli("study", "create", str(experiment))
    assert_clean_error(result, "space.yaml: train_examples: 1 is fewer than the data's 2 classes")
    assert not (tmp_path / "mlruns").exists()
