"""MLflow pyfunc wrappers for promoted models: what `mlflow.pyfunc.load_model` gives back.

Both wrappers classify with the backend code the sweep itself used, so a registered model puts a
text to the model exactly as it was trained and scored (same tokenizer and `max_length` for a
local encoder; same chat messages or prompt + separator, and the same logprob label choice, for
an OpenAI fine-tune). Everything a wrapper needs travels with the model: the local weights as an
artifact, the OpenAI model id, endpoint, label set and prompt format in `model_config` (never
the API key, which is read from `OPENAI_API_KEY` when predicting).

They are logged as "models from code" (`ENTRY_POINTS` below: a two-line file that MLflow copies
into the model) rather than pickled: pickled models are what MLflow is moving away from, and the
file keeps the model readable. Loading needs `harness` importable, nothing else of its state.

`predict` takes a DataFrame with a `text` column (or one column of texts), a Series, a list of
strings or one string, and returns one row per text: `label`, `confidence` and `score_<label>`
for every label of the label set. `read_texts` reads the texts of `harness predict --file`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel

from harness.errors import ConfigError
from harness.records import Prediction

TEXT_COLUMN = "text"
SCORE_PREFIX = "score_"
LOCAL_ARTIFACT = "model"  # the artifact key of the saved transformers directory

# Models-from-code entry points, written next to the model by `harness.handoff.promote`.
ENTRY_POINTS = {
    "local": (
        "from mlflow.models import set_model\n"
        "from harness.handoff.pyfunc import LocalClassifier\n\n"
        "set_model(LocalClassifier())\n"
    ),
    "openai": (
        "from mlflow.models import set_model\n"
        "from harness.handoff.pyfunc import OpenAIClassifier\n\n"
        "set_model(OpenAIClassifier())\n"
    ),
}


def texts_of(model_input: Any) -> list[str]:
    """The texts in whatever shape a pyfunc caller hands over.

    Raises:
        ValueError: A DataFrame with several columns and none named `text`, or no texts at all
            in a shape this does not understand.
    """
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            column = model_input[TEXT_COLUMN]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ValueError(
                f"expected a {TEXT_COLUMN!r} column, got columns {list(model_input.columns)}"
            )
        return [str(t) for t in column.tolist()]
    if isinstance(model_input, pd.Series):
        return [str(t) for t in model_input.tolist()]
    if hasattr(model_input, "tolist"):  # numpy arrays
        model_input = model_input.tolist()
    if isinstance(model_input, Sequence):
        return [str(t) for t in model_input]
    raise ValueError(f"cannot read texts from a {type(model_input).__name__}")


def read_texts(path: Path, column: str = TEXT_COLUMN) -> list[str]:
    """Texts from a file: a CSV or JSONL with a `column`, else plain text, one per line.

    Raises:
        ConfigError: The file cannot be read, or a CSV / JSONL has no such column.
    """
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif path.suffix.lower() in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True, dtype=False)
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            return [line for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read texts ({exc})") from None
    if column not in frame.columns:
        raise ConfigError(f"{path}: no {column!r} column (columns: {', '.join(frame.columns)})")
    return [str(text) for text in frame[column].tolist()]


def predictions_frame(predictions: Sequence[Prediction], labels: Sequence[str]) -> pd.DataFrame:
    """One row per prediction: label, confidence and the score of every label."""
    rows = [
        {
            "label": p.label,
            "confidence": float(p.confidence),
            **{f"{SCORE_PREFIX}{label}": float(p.scores.get(label, 0.0)) for label in labels},
        }
        for p in predictions
    ]
    columns = ["label", "confidence", *(f"{SCORE_PREFIX}{label}" for label in labels)]
    return pd.DataFrame(rows, columns=columns)


class LocalClassifier(PythonModel):
    """A fine-tuned transformers encoder saved by the local backend.

    Artifacts: `model`, the directory `save_pretrained` wrote (weights, config with id2label,
    tokenizer). Config: `labels` (in the head's order) and `max_length` (the truncation the model
    was trained and scored with).
    """

    def load_context(self, context: Any) -> None:
        """Load the weights and tokenizer once, on the CPU unless a GPU is available."""
        from harness.backends.local import LocalBackend
        from harness.config import LocalBackendConfig

        config = context.model_config or {}
        self.labels = [str(label) for label in config["labels"]]
        self.model_dir = context.artifacts[LOCAL_ARTIFACT]
        self.backend = LocalBackend(
            LocalBackendConfig(
                kind="local",
                model=self.model_dir,
                max_length=int(config["max_length"]),
                eval_batch_size=int(config.get("eval_batch_size", 64)),
            )
        )
        self.backend.predict(self.model_dir, ["warm-up"])  # load now, not on the first request

    # `model_input` is hinted as a DataFrame, the shape MLflow's signature check hands over (a
    # hint MLflow does not try to infer a schema from); `texts_of` accepts the other shapes too.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Label, confidence and per-label scores for every text."""
        predictions, _ = self.backend.predict(self.model_dir, texts_of(model_input))
        return predictions_frame(predictions, self.labels)


class OpenAIClassifier(PythonModel):
    """A fine-tuned OpenAI model (or one on a compatible endpoint), called over the API.

    Config: `model` (the `ft:...` id), `base_model`, `base_url` (None: `OPENAI_BASE_URL`, else
    OpenAI), `labels`, `prompt_format` (`chat` or `prompt_completion`), `system_prompt` (chat),
    `separator` (prompt/completion) and `prices` (the experiment's price overrides). The key comes
    from `OPENAI_API_KEY` at predict time.
    """

    def load_context(self, context: Any) -> None:
        """Check the stored prompt format is the one the backend writes; no request is made."""
        from harness.backends.openai import OpenAIBackend
        from harness.config import OpenAIBackendConfig
        from harness.data.jsonl import PROMPT_SEPARATOR

        config = context.model_config or {}
        self.model_id = str(config["model"])
        self.labels = tuple(str(label) for label in config["labels"])
        self.backend = OpenAIBackend(
            OpenAIBackendConfig(
                kind="openai",
                model=str(config["base_model"]),
                base_url=config.get("base_url"),
                system_prompt=config.get("system_prompt"),
                prices=config.get("prices") or {},
            )
        )
        trained = self.backend.format_for(self.model_id)
        if config.get("prompt_format") != trained.name or (
            not trained.chat and config.get("separator") != PROMPT_SEPARATOR
        ):
            raise ValueError(
                f"{self.model_id} was trained with prompt format {config.get('prompt_format')!r} "
                f"(separator {config.get('separator')!r}); this harness version writes "
                f"{trained.name!r} with separator {PROMPT_SEPARATOR!r}"
            )

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Ask the model once per text and pick the most probable label of the label set."""
        from harness.records import Split

        texts = tuple(texts_of(model_input))
        split = Split(texts, tuple("" for _ in texts))
        evaluation = self.backend.evaluate(self.model_id, split, self.labels)
        return predictions_frame(evaluation.predictions, self.labels)
