"""Search-space files in Optuna's short form."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from harness.errors import ConfigError
from harness.sweep.search_space import load_search_space
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_search_space_loads(path: Path) -> None:
    space = load_search_space(path)
    assert space.distributions


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


GOOD = """
n_epochs: {type: int, low: 1, high: 4}
learning_rate_multiplier: {type: float, low: 0.1, high: 2.0, log: true}
batch_size: {type: categorical, choices: [8, 16]}
base_model: all-MiniLM-L6-v2
"""


def test_short_form_becomes_optuna_distributions(tmp_path: Path) -> None:
    space = load_search_space(_space(tmp_path, GOOD))
    assert space.distributions["n_epochs"] == IntDistribution(1, 4)
    assert space.distributions["learning_rate_multiplier"] == FloatDistribution(0.1, 2.0, log=True)
    assert space.distributions["batch_size"] == CategoricalDistribution([8, 16])
    assert space.fixed == {"base_model": "all-MiniLM-L6-v2"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD + "warmup: 3\n", "unknown parameter 'warmup'"),
        (
            GOOD.replace("n_epochs: {type: int, low: 1, high: 4}\n", ""),
            "missing parameter 'n_epochs'",
        ),
        (
            GOOD.replace("type: int", "type: integer"),
            "n_epochs: type must be int, float or categorical",
        ),
        (GOOD.replace("low: 1, high: 4", "low: 4, high: 1"), "n_epochs: "),
        (GOOD.replace("low: 0.1,", "low: -0.1,"), "learning_rate_multiplier: must be positive"),
        (
            GOOD.replace("choices: [8, 16]", "choices: []"),
            "batch_size: choices must be a non-empty list",
        ),
        (
            GOOD.replace("choices: [8, 16]", "choices: [8, big]"),
            "batch_size: expected int, got 'big'",
        ),
        (GOOD.replace("high: 4}", "high: 4, lgo: true}"), "n_epochs: unknown key 'lgo'"),
        ("[1, 2]", "expected a mapping"),
        # Optuna would only warn and quietly shrink the range to [1, 3].
        (
            GOOD.replace("low: 1, high: 4}", "low: 1, high: 4, step: 2}"),
            "n_epochs: step 2 does not divide the range 1 to 4",
        ),
        (
            GOOD.replace("high: 2.0, log: true}", "high: 2.0, step: 0.5}"),
            "learning_rate_multiplier: step 0.5 does not divide the range 0.1 to 2.0",
        ),
        (
            GOOD.replace("high: 4}", "high: 4, step: two}"),
            "n_epochs: step must be a positive int, got 'two'",
        ),
        (
            GOOD.replace("log: true", "log: maybe"),
            "learning_rate_multiplier: log must be true or false",
        ),
        (
            GOOD.replace("choices: [8, 16]", "choices: [8, 16, 8]"),
            "batch_size: choices must be distinct, 8 is given twice",
        ),
    ],
)
def test_bad_search_space_names_file_and_parameter(tmp_path: Path, text: str, message: str) -> None:
    path = _space(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_grid_needs_discrete_values(tmp_path: Path) -> None:
    space = load_search_space(_space(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="grid sampler needs choices"):
        space.grid()
    stepped = GOOD.replace("low: 0.1, high: 2.0, log: true", "low: 0.5, high: 1.5, step: 0.5")
    grid = load_search_space(_space(tmp_path, stepped)).grid()
    assert grid == {
        "n_epochs": [1, 2, 3, 4],
        "learning_rate_multiplier": [0.5, 1.0, 1.5],
        "batch_size": [8, 16],
    }
    # Found walking a one-value space: a float range of one value, and a whole-number range on
    # a log scale, are discrete too; both were refused as "a continuous range".
    single = GOOD.replace("low: 0.1, high: 2.0, log: true", "low: 1.5, high: 1.5")
    single = single.replace("low: 1, high: 4}", "low: 1, high: 4, log: true}")
    assert load_search_space(_space(tmp_path, single)).grid() == {
        "n_epochs": [1, 2, 3, 4],
        "learning_rate_multiplier": [1.5],
        "batch_size": [8, 16],
    }


def test_sizes_beyond_the_training_split_are_named(tmp_path: Path) -> None:
    from harness.sweep.search_space import oversized_train_examples

    path = tmp_path / "space.yaml"
    path.write_text(
        "n_epochs: 1\nlearning_rate_multiplier: 1.0\nbatch_size: 8\n"
        "train_examples: {type: categorical, choices: [100, 400, 1200]}\n"
    )
    space = load_search_space(path)
    warning = oversized_train_examples(space, 171)
    assert warning is not None
    assert "train_examples 400, 1,200 exceed the 171 training rows" in warning
    assert oversized_train_examples(space, 1200) is None


SHIPPED = sorted((ROOT / "experiments").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_search_space_fits_its_training_split(path: Path) -> None:
    """A shipped experiment never asks for more training examples than its split holds (the
    Azure and OpenAI examples offered 800 of 720, which `harness estimate` warned about)."""
    from harness.config import load_experiment
    from harness.data.prepare import prepare_experiment
    from harness.sweep.search_space import experiment_space, oversized_train_examples

    experiment = load_experiment(str(path))
    data, _ = prepare_experiment(experiment)
    assert oversized_train_examples(experiment_space(experiment), len(data.train)) is None


def test_a_missing_search_space_file_names_the_experiment_field_and_where_it_looked(
    tmp_path: Path,
) -> None:
    # Found by QA: a typo in `search_space:` said only "search_spaces/strs.yaml: cannot read
    # (No such file or directory)", naming neither the experiment file nor the key.
    from harness.config import load_experiment
    from harness.sweep.search_space import experiment_space

    path = tmp_path / "exp.yaml"
    path.write_text(
        "dataset: {source: d.csv}\nbackend: {kind: local}\nsearch_space: spaces/strs.yaml\n"
    )
    with pytest.raises(ConfigError) as info:
        experiment_space(load_experiment(str(path)))
    message = str(info.value)
    assert f"{path}: search_space: spaces/strs.yaml: no such file" in message
    assert "beside the experiment file" in message


def test_a_lora_parameter_on_a_backend_without_lora_is_refused(tmp_path: Path) -> None:
    # The local encoder ignored it: trials were named r=8 and the sampler spent draws on it.
    from harness.config import load_experiment
    from harness.sweep.search_space import experiment_space

    space = _space(tmp_path, GOOD + "lora_rank: {type: categorical, choices: [4, 8]}\n")
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"dataset: {{source: d.csv}}\nbackend: {{kind: local}}\nsearch_space: {space}\n"
    )
    with pytest.raises(ConfigError) as err:
        experiment_space(load_experiment(str(path)))
    assert f"{space}: lora_rank: the local backend does not use it" in str(err.value)
    path.write_text(path.read_text().replace("kind: local", "kind: local_lm"))
    assert "lora_rank" in experiment_space(load_experiment(str(path))).distributions


@pytest.mark.parametrize("name", ["n_epochs", "batch_size", "train_examples", "lora_rank"])
def test_a_float_range_for_a_whole_number_parameter_is_refused(tmp_path: Path, name: str) -> None:
    # Found by QA: `lora_rank: {type: float, low: 2, high: 8}` was accepted; Optuna drew 5.7,
    # the trial cut it to int 5 (so `high` was never reached) and the study recorded 5.7.
    others = {
        "n_epochs": "{type: int, low: 1, high: 4}",
        "learning_rate_multiplier": "1.0",
        "batch_size": "8",
    }
    others[name] = "{type: float, low: 2, high: 8}"
    text = "".join(f"{key}: {value}\n" for key, value in others.items())
    path = _space(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_search_space(path)
    assert f"{path}: {name}: type float draws fractions" in str(err.value)
    assert "type: int" in str(err.value)


def test_a_lora_range_beyond_the_backends_own_limit_is_refused(tmp_path: Path) -> None:
    # Found by QA: `backend.lora_rank: 512` is refused (at most 256), but a search space could
    # sample 512 and every such trial ran with it.
    from harness.config import load_experiment
    from harness.sweep.search_space import experiment_space

    space = _space(tmp_path, GOOD + "lora_rank: {type: int, low: 4, high: 512}\n")
    path = tmp_path / "exp.yaml"
    path.write_text(
        f"dataset: {{source: d.csv}}\nbackend: {{kind: local_lm}}\nsearch_space: {space}\n"
    )
    with pytest.raises(ConfigError) as err:
        experiment_space(load_experiment(str(path)))
    assert f"{space}: lora_rank: 512 is more than the local_lm backend takes (256)" in str(
        err.value
    )
    space.write_text(GOOD + "lora_rank: {type: categorical, choices: [4, 256]}\n")
    assert "lora_rank" in experiment_space(load_experiment(str(path))).distributions
