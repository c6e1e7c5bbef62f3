"""Experiment files: every shipped file loads; typos and bad values name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.config import load_experiment
from harness.errors import ConfigError
from harness.sweep.search_space import load_search_space
from tests.conftest import ROOT

SHIPPED_EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_EXPERIMENTS, ids=lambda p: p.name)
def test_every_shipped_experiment_loads_with_its_search_space(path: Path) -> None:
    experiment = load_experiment(str(path))
    space_path = experiment.resolve_path(experiment.config.search_space)
    assert space_path.is_file(), space_path
    space = load_search_space(space_path)
    assert {"n_epochs", "learning_rate_multiplier", "batch_size"} <= set(space.distributions) | set(
        space.fixed
    )


def test_shipped_files_exist() -> None:
    assert SHIPPED_EXPERIMENTS, "experiments/ must ship at least the demo"
    assert (ROOT / "experiments" / "demo.yaml") in SHIPPED_EXPERIMENTS


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


BASE = """
dataset: {source: data.csv}
backend: {kind: local}
search_space: space.yaml
"""


def test_minimal_experiment_gets_defaults(tmp_path: Path) -> None:
    exp = load_experiment(str(_write(tmp_path, BASE)))
    assert exp.name == "exp"
    assert exp.config.study.objectives == ["accuracy", "cost"]
    assert exp.config.study.storage == "sqlite:///mlruns/optuna.db"
    assert exp.config.backend.model == "all-MiniLM-L6-v2"


def test_unknown_key_is_an_error_naming_file_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "study: {n_trails: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(str(path))
    assert str(path) in str(err.value)
    assert "study.n_trails: unknown key (did you mean 'n_trials'?)" in str(err.value)


@pytest.mark.parametrize(
    ("extra", "field", "suggestion"),
    [
        ("dataset: {source: data.csv, lable_column: y}\n", "dataset.lable_column", "label_column"),
        ("budget: 3\n", "budget", "budget_usd"),
    ],
)
def test_a_misspelt_key_gets_a_suggestion(
    tmp_path: Path, extra: str, field: str, suggestion: str
) -> None:
    text = BASE.replace("dataset: {source: data.csv}\n", "") + extra
    with pytest.raises(
        ConfigError, match=rf"{field}: unknown key \(did you mean '{suggestion}'\?\)"
    ):
        load_experiment(str(_write(tmp_path, text)))


def test_a_backend_typo_names_the_key_as_written_in_the_file(tmp_path: Path) -> None:
    text = BASE.replace("backend: {kind: local}", "backend: {kind: local, max_lenght: 64}")
    with pytest.raises(ConfigError, match=r"backend\.max_lenght: unknown key \(did you mean"):
        load_experiment(str(_write(tmp_path, text)))


def test_unknown_backend_kind_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("kind: local", "kind: locall"))
    with pytest.raises(ConfigError, match=r"backend.*locall"):
        load_experiment(str(path))


def test_missing_required_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "backend: {kind: local}\nsearch_space: s.yaml\n")
    with pytest.raises(ConfigError, match="dataset: required key is missing"):
        load_experiment(str(path))


def test_bad_value_names_field(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "study: {n_trials: 0}\n")
    with pytest.raises(
        ConfigError, match=r"study\.n_trials: Input should be greater than or equal to 1"
    ):
        load_experiment(str(path))


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "dataset: {source: x\nbackend: [\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml:\d+:\d+: invalid YAML"):
        load_experiment(str(path))


def test_missing_experiment_lists_known(tmp_path: Path) -> None:
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "demo.yaml").write_text(BASE)
    with pytest.raises(ConfigError, match=r"no such experiment file\. Known experiments: demo"):
        load_experiment("dmeo")
    assert load_experiment("demo").name == "demo"


def test_set_overrides_are_revalidated(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE)
    exp = load_experiment(str(path), ["study.n_trials=3", "backend.base_learning_rate=2e-4"])
    assert exp.config.study.n_trials == 3
    assert exp.config.backend.base_learning_rate == pytest.approx(2e-4)
    with pytest.raises(ConfigError, match=r"\(with --set\): study.n_trails: unknown key"):
        load_experiment(str(path), ["study.n_trails=3"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_experiment(str(path), ["study.n_trials"])
    with pytest.raises(ConfigError, match="Input should be a valid integer"):
        load_experiment(str(path), ["study.n_trials=many"])


def test_set_search_space_fixes_a_value_or_sets_a_range(tmp_path: Path) -> None:
    from optuna.distributions import FloatDistribution

    from harness.sweep.search_space import experiment_space

    (tmp_path / "space.yaml").write_text(
        "n_epochs: {type: int, low: 1, high: 3}\n"
        "learning_rate_multiplier: {type: float, low: 1.0, high: 4.0, log: true}\n"
        "batch_size: 8\n"
    )
    path = _write(tmp_path, BASE)
    overrides = [
        "search_space.n_epochs=1",
        "search_space.learning_rate_multiplier={type: float, low: 0.5, high: 2}",
    ]
    exp = load_experiment(str(path), overrides)
    space = experiment_space(exp)
    assert space.fixed == {"n_epochs": 1, "batch_size": 8}
    assert space.distributions == {
        "learning_rate_multiplier": FloatDistribution(0.5, 2.0, log=False)
    }
    assert experiment_space(load_experiment(str(path))).fixed == {"batch_size": 8}  # file kept
    with pytest.raises(ConfigError, match=r"search_space: n_epochs: expected int, got 'one'"):
        experiment_space(load_experiment(str(path), ["search_space.n_epochs=one"]))
    with pytest.raises(ConfigError, match="unknown parameter 'n_epoch'"):
        experiment_space(load_experiment(str(path), ["search_space.n_epoch=1"]))


def test_objectives_are_checked(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "study: {objectives: [cost]}\n")
    with pytest.raises(ConfigError, match=r"study\.objectives"):
        load_experiment(str(path))


def test_numeric_labels_may_be_written_as_numbers(tmp_path: Path) -> None:
    # Found by QA: `labels: [1, 2, 3]` for star ratings, the way YAML writes numbers, failed
    # with "dataset.labels.0: Input should be a valid string" once per label, though the data's
    # own labels (`3`, ` 3 `, `3.0`) are read as numbers and written as "3".
    from harness.data.prepare import prepare_experiment

    rows = "\n".join(f"review number {i},{[' 1 ', '2.0', '3'][i % 3]}" for i in range(60))
    (tmp_path / "stars.csv").write_text("text,stars\n" + rows + "\n")
    text = "dataset:\n  source: stars.csv\n  label_column: stars\n  labels: [1, 2.0, 3]\n"
    path = _write(tmp_path, text + BASE.split("\n", 2)[2])
    experiment = load_experiment(str(path))
    assert experiment.config.dataset.labels == ["1", "2", "3"]
    data, _ = prepare_experiment(experiment)
    assert data.labels == ("1", "2", "3") and data.ordinal


def test_zero_padded_codes_in_labels_are_read_as_written(tmp_path: Path) -> None:
    # Found by QA: the data keeps codes `01` and `010` as written, but YAML read `labels: [01,
    # 010]` as the octal numbers 1 and 8, so the data was refused: "labels not in dataset.labels
    # ['1', '8']: '01' (20 rows), '010' (20 rows)"; `seed: 010` was seed 8, and a search
    # space's `batch_size: 016` was 14.
    from harness.data.prepare import prepare_experiment

    rows = "\n".join(f"review number {i},{['01', '010', '02'][i % 3]}" for i in range(60))
    (tmp_path / "codes.csv").write_text("text,code\n" + rows + "\n")
    text = "seed: 010\ndataset:\n  source: codes.csv\n  label_column: code\n"
    path = _write(tmp_path, text + "  labels: [01, 010, 02]\n" + BASE.split("\n", 2)[2])
    experiment = load_experiment(str(path))
    assert experiment.config.dataset.labels == ["01", "010", "02"]
    assert experiment.config.seed == 10
    data, _ = prepare_experiment(experiment)
    assert data.labels == ("01", "010", "02")
    again = load_experiment(str(path), overrides=["dataset.labels=[02, 010, 01]"])
    assert again.config.dataset.labels == ["02", "010", "01"]
    choices = "{type: categorical, choices: [016, 032]}"
    (tmp_path / "space.yaml").write_text(
        f"n_epochs: 02\nlearning_rate_multiplier: 1.0\nbatch_size: {choices}\n"
    )
    space = load_search_space(tmp_path / "space.yaml")
    assert space.fixed == {"n_epochs": 2, "learning_rate_multiplier": 1.0}
    assert list(space.distributions["batch_size"].choices) == [16, 32]  # type: ignore[attr-defined]


def test_a_backend_system_prompt_is_the_one_prepare_writes(tmp_path: Path) -> None:
    # Found by QA: `backend.system_prompt` alone (local_lm, format: chat) trained the model on
    # it, while `harness prepare` wrote chat JSONL with the default "Classify the text. ..."
    text = BASE.replace("{kind: local}", "{kind: local_lm, format: chat, system_prompt: Rate it.}")
    experiment = load_experiment(str(_write(tmp_path, text)))
    assert experiment.config.dataset.system_prompt == "Rate it."
    assert experiment.config.backend.system_prompt == "Rate it."  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        # scikit-learn refused -1 deep in the split, reported as "too few rows to split".
        ("seed: -1\n", "seed: Input should be greater than or equal to 0"),
        ("budget_usd: .inf\n", "budget_usd: Input should be a finite number"),
        ("study: {max_trial_cost_usd: .inf}\n", "study.max_trial_cost_usd: Input should be a fin"),
        ("dataset: {source: d.csv, labels: []}\n", "dataset.labels: give at least two labels"),
        ("dataset: {source: d.csv, labels: [a]}\n", "dataset.labels: give at least two labels"),
        ("dataset: {source: d.csv, labels: [a, b, a]}\n", "dataset.labels: 'a' is given twice"),
        (
            "tracking: {uri: 'notaurl://x'}\n",
            "tracking.uri: unsupported scheme 'notaurl' (use sqlite:///PATH, a folder, http(s)://",
        ),
        ("dataset: fast\n", "dataset: expected a mapping (keys: source, text_column,"),
        ("study: {sampler: tpe}\n", "study.sampler: expected a mapping (keys: kind)"),
        ("search_space: 3\n", "search_space: expected a search-space file or a mapping of"),
        # YAML reads true / yes / on as booleans, which pydantic took as the number 1: a sweep
        # of `n_trials: true` ran one trial; `budget_usd: yes` was a $1 budget.
        ("study: {n_trials: true}\n", "study.n_trials: expected a number, got true"),
        ("budget_usd: yes\n", "budget_usd: expected a number, got true"),
        ("seed: off\n", "seed: expected a number, got false"),
        # Found by QA: `labels: [yes, no]`, a natural label set, failed with "dataset.labels.0:
        # Input should be a valid string" twice: YAML reads unquoted yes / no as booleans.
        (
            "dataset: {source: d.csv, labels: [yes, no]}\n",
            "dataset.labels: YAML reads an unquoted true (written yes, true or on) as a boolean, "
            "not a label: quote each such label, e.g. labels: ['yes', 'no']",
        ),
        # Found by QA: one column named as both read each text as its own label, and the
        # error blamed the data: "class 'no' has 1 rows after deduplication".
        (
            "dataset: {source: d.csv, text_column: label}\n",
            "dataset.label_column: 'label' is dataset.text_column too: the texts would be their "
            "own labels; name the column holding the labels",
        ),
        # hf_split was read only for hf: sources and ignored silently for a file.
        (
            "dataset: {source: d.csv, hf_split: test}\n",
            "dataset.hf_split: applies only to an hf:NAME source, not to 'd.csv' (a file's "
            "rows are split by dataset.split)",
        ),
    ],
)
def test_bad_values_name_file_field_and_what_is_allowed(
    tmp_path: Path, extra: str, message: str
) -> None:
    text = BASE.replace("dataset: {source: data.csv}\n", "") if "dataset:" in extra else BASE
    text = text.replace("search_space: space.yaml\n", "") if "search_space:" in extra else text
    path = _write(tmp_path, text + extra)
    with pytest.raises(ConfigError) as err:
        load_experiment(str(path))
    assert f"{path}: {message}" in str(err.value)
    assert len(str(err.value).splitlines()) == 1, str(err.value)


def test_a_backend_without_kind_lists_the_kinds(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.replace("backend: {kind: local}", "backend: {max_length: 32}"))
    with pytest.raises(ConfigError) as err:
        load_experiment(str(path))
    assert f"{path}: backend.kind: required key is missing (one of: local, " in str(err.value)


def test_tracking_uris_that_mlflow_opens_are_accepted(tmp_path: Path) -> None:
    for uri in (
        "sqlite:///x.db",
        "mlruns",
        "file:///tmp/m",
        "http://h:5000",
        "postgresql+psycopg://u@h/d",
    ):
        exp = load_experiment(str(_write(tmp_path, BASE + f"tracking: {{uri: '{uri}'}}\n")))
        assert exp.config.tracking.uri == uri


def test_a_value_of_no_type_a_union_takes_is_one_line(tmp_path: Path) -> None:
    # Was one line per member, each naming a key that is not in the file (lora_r.float, ...).
    text = BASE.replace("backend: {kind: local}", "backend: {kind: together, model: m}")
    path = _write(tmp_path, text + "")
    with pytest.raises(ConfigError) as err:
        load_experiment(str(path), ["backend.hyperparameters.lora_r=eight"])
    assert str(err.value) == (
        f"{path} (with --set): backend.hyperparameters.lora_r: expected float or int or bool, "
        "got 'eight'"
    )


def test_a_key_given_twice_is_an_error_naming_its_line(tmp_path: Path) -> None:
    # YAML keeps the last silently: the second `study:` replaced the first without a word.
    path = _write(tmp_path, BASE + "study: {n_trials: 3}\nseed: 1\nstudy: {n_trials: 5}\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(str(path))
    assert str(err.value) == f"{path}:7:1: invalid YAML (key 'study' is given twice in one mapping)"


def test_a_file_that_is_not_utf8_names_the_line_and_byte(tmp_path: Path) -> None:
    # Was UnicodeDecodeError with a traceback (an experiment saved as latin-1 / cp1252).
    path = tmp_path / "exp.yaml"
    path.write_bytes(BASE.encode() + b"description: caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        load_experiment(str(path))
    assert (
        str(err.value) == f"{path}:5: not UTF-8 text (byte 0xe9 does not decode); save it as UTF-8"
    )
