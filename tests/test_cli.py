"""The CLI: bad input gives one clear line, a non-zero exit, no traceback, and leaves what was
recorded alone.

The commands run in-process (`tests.cli_runner`); the entry points themselves, and one clean
error through a real process, run as a user runs them, in a fresh interpreter.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import write_csv, write_experiment

# The `harness` console script installed next to this interpreter, and `python -m harness`.
ENTRY_POINTS = {
    "script": [str(Path(sys.executable).with_name("harness"))],
    "module": [sys.executable, "-m", "harness"],
}


def _process(entry: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The real entry point in a fresh process, as a user runs it."""
    command = [*ENTRY_POINTS[entry], *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_entry_points_list_commands(entry: str) -> None:
    result = _process(entry, "--help")
    assert result.returncode == 0, result.stderr
    for command in ("prepare", "sweep", "trials", "ui"):
        assert command in result.stdout


def test_a_real_process_exits_with_one_clear_line() -> None:
    result = _process("script", "sweep", "nope")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: nope: no such experiment file"), line


def test_importing_harness_does_not_import_torch_or_openai() -> None:
    code = (
        "import sys, harness, harness.cli, harness.config, harness.sweep.loop;"
        "print(sorted(m for m in ('torch', 'transformers', 'openai') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_config_typo(tmp_path: Path, tiny_csv: Path) -> None:
    path = write_experiment(tmp_path, tiny_csv, study={"n_trails": 2})
    assert_clean_error(run_cli("sweep", str(path)), str(path), "study.n_trails: unknown key")


def test_missing_experiment(tmp_path: Path) -> None:
    assert_clean_error(run_cli("sweep", "nope"), "nope: no such experiment file")


def test_missing_data_file(tmp_path: Path) -> None:
    path = write_experiment(tmp_path, tmp_path / "absent.csv")
    assert_clean_error(run_cli("prepare", str(path)), "absent.csv")


def test_missing_column(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "d.csv", [("good", "positive")] * 3, header=("review", "label"))
    path = write_experiment(tmp_path, data)
    assert_clean_error(run_cli("prepare", str(path)), "d.csv", "text")


def test_one_class_data(tmp_path: Path) -> None:
    rows = [(f"good film number {i}", "positive") for i in range(30)]
    path = write_experiment(tmp_path, write_csv(tmp_path / "one.csv", rows))
    assert_clean_error(run_cli("prepare", str(path)), "one class")


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "fine", "label": "a"}\n{"text": "broken", \n')
    path = write_experiment(tmp_path, data)
    assert_clean_error(run_cli("prepare", str(path)), "d.jsonl", "line 2")


def test_multi_label_jsonl_and_unordered_ordinal_words_are_clean_errors(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "fine", "label": "a"}\n{"text": "both", "label": ["a", "b"]}\n')
    path = write_experiment(tmp_path, data)
    assert_clean_error(run_cli("prepare", str(path)), "d.jsonl:2: line 2", "holds a list")
    rows = [(f"film number {i}", ["bad", "ok", "good"][i % 3]) for i in range(60)]
    path = write_experiment(tmp_path, write_csv(tmp_path / "w.csv", rows))
    config = yaml.safe_load(path.read_text())
    config["dataset"]["ordinal"] = True
    path.write_text(yaml.safe_dump(config))
    assert_clean_error(run_cli("sweep", str(path)), "dataset.ordinal is true", "dataset.labels")
    assert not (tmp_path / "mlruns").exists()  # refused before anything was recorded


def test_unknown_dataset_name(tmp_path: Path) -> None:
    path = write_experiment(tmp_path, Path("rotten_tomatos"))
    config = yaml.safe_load(path.read_text())
    config["dataset"]["source"] = "rotten_tomatos"
    path.write_text(yaml.safe_dump(config))
    assert_clean_error(run_cli("prepare", str(path)), "rotten_tomatos", "rotten_tomatoes")
    # The field to change, and the closest bundled name.
    assert_clean_error(
        run_cli("prepare", str(path)),
        "dataset.source 'rotten_tomatos' is unknown (did you mean 'rotten_tomatoes'?)",
    )


def test_bad_search_space(tmp_path: Path, tiny_csv: Path) -> None:
    space = {
        "n_epochs": {"type": "int", "low": 1},
        "learning_rate_multiplier": 1.0,
        "batch_size": 8,
    }
    path = write_experiment(tmp_path, tiny_csv, space=space)
    assert_clean_error(run_cli("sweep", str(path)), "space.yaml: n_epochs: needs both low and high")


def test_trials_before_any_sweep(tmp_path: Path, tiny_csv: Path) -> None:
    path = write_experiment(tmp_path, tiny_csv)
    assert_clean_error(run_cli("trials", str(path)), "run `harness sweep")


@pytest.mark.slow
def test_prepare_writes_both_jsonl_formats(tmp_path: Path, tiny_csv: Path) -> None:
    path = write_experiment(tmp_path, tiny_csv)
    result = run_cli("prepare", str(path), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"train.chat.jsonl", "train.prompt_completion.jsonl", "test.chat.jsonl"} <= written
    assert "digest" in result.stdout
    # A file where the folder should be: one clear line, not a FileExistsError traceback.
    afile = tmp_path / "afile"
    afile.write_text("")
    bad = run_cli("prepare", str(path), "--out", str(afile))
    assert_clean_error(bad, f"--out {afile}: cannot write the prepared data there")


@pytest.mark.slow
def test_sweep_then_trials_then_bad_rerun_keeps_the_study(tmp_path: Path, tiny_csv: Path) -> None:
    path = write_experiment(tmp_path, tiny_csv)
    first = run_cli("sweep", str(path))
    assert first.exit_code == 0, first.stderr
    assert "Pareto front" in first.stdout
    table = run_cli("trials", str(path))
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    rows = [line for line in lines if "complete" in line]
    checkpoints = [line for line in lines if "ckpt of" in line]
    assert len(rows) == 2 and any("*" in line for line in rows + checkpoints)
    # The epoch checkpoints of 2-epoch trials are listed as theirs, "1/2" epochs.
    assert all("1/2" in line for line in checkpoints)

    # A typo on the command line is rejected before anything is touched...
    bad = run_cli("sweep", str(path), "--set", "study.n_trails=5")
    assert_clean_error(bad, "study.n_trails: unknown key")
    # ...and the study is still there, intact.
    again = run_cli("trials", str(path))
    assert again.stdout == table.stdout


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["study.objectives=[cost]"], ["study.objectives", "[accuracy, cost] or [accuracy]"]),
        (["backend.max_lenght=64"], ["backend.max_lenght: unknown key"]),
        (["study.storage=sqlite:////proc/no/such/optuna.db"], ["study.storage", "/proc/no"]),
        (["study.sampler.kind=grid"], ["grid sampler needs choices"]),
    ],
)
def test_bad_settings_name_the_field_and_the_allowed_values_and_record_nothing(
    tmp_path: Path, tiny_csv: Path, overrides: list[str], needles: list[str]
) -> None:
    path = write_experiment(tmp_path, tiny_csv)
    args = [item for override in overrides for item in ("--set", override)]
    assert_clean_error(run_cli("sweep", str(path), *args), *needles)
    assert not (tmp_path / "mlruns").exists()


def test_a_yaml_error_names_the_line_the_problem_starts_on(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndataset:\n  source: a.csv\n  labels: [a, b\nbackend: {kind: local}\n")
    assert_clean_error(run_cli("sweep", str(path)), f"{path}:4:11: invalid YAML")


def test_too_few_rows_to_split_names_the_file_and_the_fix(tmp_path: Path) -> None:
    rows = [(f"good film number {i}", "positive") for i in range(3)]
    rows += [(f"bad film number {i}", "negative") for i in range(3)]
    csv = write_csv(tmp_path / "few.csv", rows)
    path = write_experiment(tmp_path, csv)
    assert_clean_error(run_cli("prepare", str(path)), str(csv), "too few to split", "dataset.split")
