"""Texts longer than the model reads are counted and said before anything is spent.

A local model reads at most `backend.max_length` tokens; a longer text is cut from its end, so
the model learns and is scored on its beginning only. `harness prepare` counts such texts per
split; `harness estimate` and `harness sweep` warn when more than 1% of a split is cut. The
limit each backend reports is checked against what its own encoding keeps.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.backends.local.config import LocalBackendConfig, LocalLMBackendConfig
from harness.backends.local.encoder import LocalBackend, resolve_model_path
from tests.cli_runner import run_cli
from tests.conftest import review_rows, write_csv, write_experiment

LABELS = ("negative", "positive")
FILLER = " ".join(["and the plot went on and on without ever getting anywhere"] * 4)


def _long_rows(n_long: int) -> list[tuple[str, str]]:
    """The tiny set's short reviews, the first `n_long` of them followed by 48 more words."""
    rows = review_rows(20)
    return [(f"{t} {FILLER}" if i < n_long else t, y) for i, (t, y) in enumerate(rows)]


def test_the_encoders_limit_is_what_its_encoding_keeps(tmp_path: Path) -> None:
    backend = LocalBackend(
        LocalBackendConfig.model_validate({"kind": "local", "max_length": 16, "device": "cpu"})
    )
    limit = backend.text_token_limit(LABELS)
    assert limit == 14  # [CLS] and [SEP] take two of the 16
    words = "good " * 40
    tokenizer = backend._tokenizer(resolve_model_path(backend.config.model), backend.config.model)
    for n, kept in ((limit, limit), (limit + 1, limit)):
        text = " ".join(words.split()[:n])
        assert backend.count_tokens([text]) == [n]
        (ids,) = backend._token_ids(tokenizer, [text])
        assert len(ids) - 2 == kept  # the text's tokens the model sees


@pytest.mark.slow
def test_the_lm_limit_is_what_its_prompts_keep(tmp_path: Path) -> None:
    from harness.backends.local.lm import LocalLMBackend

    config = LocalLMBackendConfig.model_validate(
        {"kind": "local_lm", "max_length": 32, "device": "cpu", "models_dir": str(tmp_path)}
    )
    backend = LocalLMBackend(config)
    limit = backend.text_token_limit(LABELS)
    assert limit is not None and 0 < limit < 32
    long_text = " ".join(["good"] * 60)
    assert backend.count_tokens([long_text])[0] > limit
    from harness.backends.local._lm_models import resolve_lm_path

    fmt = backend._format(resolve_lm_path(config.model), config.model)
    (prompt,) = fmt.prompts([long_text], LABELS)
    assert len(prompt) - len(fmt.before) - len(fmt.after) == limit


def test_prepare_counts_the_cut_texts_and_estimate_warns(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "long.csv", _long_rows(8))
    path = write_experiment(tmp_path, data)  # MiniLM at max_length 32: the long ones are cut
    prepared = run_cli("prepare", str(path), "--out", str(tmp_path / "out"))
    assert prepared.exit_code == 0, prepared.output
    assert "over 30 tokens (cut)" in prepared.stdout
    report = (tmp_path / "out" / "report.md").read_text()
    cut = [line.split("|")[-2].strip() for line in report.splitlines() if line.startswith("| ")]
    assert sum(int(c) for c in cut[-3:]) == 8, report  # train, validation, test rows

    estimate = run_cli("estimate", str(path))
    assert estimate.exit_code == 0, estimate.output
    assert "are longer than the 30 tokens the model reads" in estimate.stderr
    assert "raise backend.max_length" in estimate.stderr

    whole = write_experiment(
        tmp_path,
        data,
        backend={"kind": "local", "max_length": 128, "models_dir": str(tmp_path / "models")},
    )
    quiet = run_cli("estimate", str(whole))
    assert quiet.exit_code == 0, quiet.output
    assert "tokens the model reads" not in quiet.output
