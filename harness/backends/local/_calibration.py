"""What a token of work costs on this machine: the local backend's calibrated rates.

A local trial is priced by the work it does, not by the seconds it happened to take: seconds
move with whatever else runs on the machine (identical trials cost $0.0118 and $0.0090 on a
shared one), tokens do not. The rates that turn tokens into seconds, and so into dollars, are

- measured once per machine (CPU model and threads, or GPU; torch version), model architecture,
  device and max_length: a short timed run of the backend's own training step and inference on
  synthetic batches, best of `REPEATS`, timed on a CPU in this process's CPU seconds per thread
  (`_clock`), which other processes on the machine do not inflate as they do wall time;
- kept as one JSON file per key under `$XDG_CACHE_HOME/harness/local-calibration/` (default
  `~/.cache/harness`) with the date and a description of the machine, and reused by every later
  process (delete the file to measure again);
- or pinned in the experiment (`backend.calibration`), so two machines price alike.

The architecture (the config fields that set the compute), not the folder, names the model, so a
fine-tuned model and its checkpoints share their base model's rates. Batch size is not part of
the key: like a provider's per-token price, the rate is one number for every batch size (it is
measured at `TRAIN_BATCH`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from harness.backends.base import Progress
from harness.backends.local._embedding_rows import lazy_input_embeddings
from harness.backends.local._machine import busy, describe, hardware
from harness.backends.local._models import load_error
from harness.backends.local._torch_utils import (
    Timed,
    Workload,
    build_optimizer,
    load_model_folder,
    ordered_logits,
)
from harness.backends.local._training import Run, train_step
from harness.backends.local.config import LocalBackendConfig, LocalCalibration, LocalLMBackendConfig
from harness.locations import cache_dir
from harness.records import Cost

TRAIN_BATCH = 16  # the batch of the throughput figures in DESIGN.md
EVAL_BATCH = 64  # the default `eval_batch_size`
STEPS = 2  # training steps per timed repeat
REPEATS = 3  # best of: load elsewhere on the machine can only make a repeat slower
N_SEQUENCES = 64  # synthetic texts: STEPS batches for training, all of them for inference
FOLDER = "local-calibration"
_HOW = (
    f"best of {REPEATS}: {STEPS} length-bucketed training steps at batch {TRAIN_BATCH} (AdamW, "
    f"the trial's own step) and inference on {N_SEQUENCES} synthetic texts at batch {EVAL_BATCH}, "
    "lengths between 1/8 and 5/8 of max_length; on a CPU, timed in this process's CPU seconds "
    "per thread, which other processes on the machine do not inflate"
)
METHOD = 4  # bumped when measuring changes (3: bucketed batches, 4: lazy embedding rows)
# Config fields that decide how much compute a token takes (whichever the architecture has).
ARCHITECTURE_FIELDS = (
    *("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "hidden_act"),
    *("num_key_value_heads", "intermediate_size", "vocab_size", "max_position_embeddings"),
    *("n_layer", "n_head", "n_embd", "d_model", "dim", "n_layers", "n_heads", "hidden_dim"),
)


@dataclass(frozen=True)
class Rates:
    """Seconds of compute per 1,000 tokens, and where the numbers came from.

    Attributes:
        as_of: When they were measured (ISO 8601), or the date a pinned calibration gives.
        machine: What they were measured on (host, CPU or GPU, threads, torch version).
        source: `measured` (by this process), `cache` (by an earlier one) or `config` (pinned).
    """

    train_seconds_per_1k_tokens: float
    infer_seconds_per_1k_tokens: float
    as_of: str
    machine: str
    source: str

    def seconds(self, trained_tokens: int, inference_tokens: int) -> float:
        """The calibrated seconds of that much work: what it costs, whatever it took today."""
        return (
            trained_tokens * self.train_seconds_per_1k_tokens
            + inference_tokens * self.infer_seconds_per_1k_tokens
        ) / 1000.0

    def setting(self) -> dict[str, Any]:
        """These rates as a pinned `backend.calibration` (what a packaged model carries)."""
        return {
            "train_seconds_per_1k_tokens": self.train_seconds_per_1k_tokens,
            "infer_seconds_per_1k_tokens": self.infer_seconds_per_1k_tokens,
            "as_of": self.as_of[:10],  # the date of an ISO 8601 time
            "source": self.machine,
        }

    def note(self, dollars_per_hour: float) -> str:
        """One line of JSON a trial records, so its price can be recomputed and compared."""
        return json.dumps({**asdict(self), "dollars_per_hour": dollars_per_hour}, sort_keys=True)


class Pricing:
    """One backend's prices: each model's rates, found once per process (pinned in the config,
    stored by an earlier process, or measured now), and one formula for estimates and actual
    costs, so that an estimate of the same tokens is the same number."""

    def __init__(
        self,
        config: LocalBackendConfig | LocalLMBackendConfig,
        device: torch.device,
        progress: Progress,
        workload: Workload | None = None,
    ):
        self.config = config
        self.device = device
        self.progress = progress
        self.workload = workload or ENCODER
        self.calibrations = 0  # measured by this object: tests see the cache work
        self._rates: dict[str, Rates] = {}  # by cache file name, so a process reads it once

    def rates(self, path: str, name: str, settings: Any = None) -> Rates:
        """Seconds per token for the model at `path`, called `name` in messages; `settings` is
        its config when it is loaded already (read from `path` otherwise).

        Raises:
            BackendError: No model config at `path` (the model cannot be loaded).
        """
        if isinstance(self.config.calibration, LocalCalibration):
            return pinned(self.config.calibration)
        if settings is None:
            try:
                settings = AutoConfig.from_pretrained(path)
            except (OSError, ValueError) as exc:
                raise load_error(name, path, exc) from None
        key = calibration_key(settings, self.device, self.config.max_length, self.workload.name)
        memo = cache_file(key).name
        if memo not in self._rates:
            stored, loaded = cached_record(key), busy(self.device)
            # A measurement marked busy is replaced by the first quiet one (`_machine`).
            if stored is None or (not loaded and stored.busy):
                self.calibrations += 1
                max_length, progress = self.config.max_length, self.progress
                measured = measure(path, self.device, max_length, progress, name, self.workload)
                self._rates[memo] = store(key, measured, name, loaded, replace=stored is not None)
            else:
                self._rates[memo] = stored.rates
        return self._rates[memo]

    def cost(self, rates: Rates, trained: int, scored: int, seconds: float | None = None) -> Cost:
        """`trained` and `scored` tokens priced; `seconds` is what the work took (None in an
        estimate: the calibrated seconds)."""
        calibrated = rates.seconds(trained, scored)
        return Cost(
            usd=calibrated * self.config.dollars_per_hour / 3600.0,
            compute_seconds=calibrated if seconds is None else seconds,
            trained_tokens=trained,
            inference_tokens=scored,
        )


def pinned(calibration: LocalCalibration) -> Rates:
    """The rates an experiment pins, used as given."""
    return Rates(
        train_seconds_per_1k_tokens=calibration.train_seconds_per_1k_tokens,
        infer_seconds_per_1k_tokens=calibration.infer_seconds_per_1k_tokens,
        as_of=calibration.as_of.isoformat(),
        machine=calibration.source,
        source="config",
    )


def calibration_key(
    model_config: Any, device: torch.device, max_length: int, workload: str = ""
) -> dict[str, Any]:
    """What the rates depend on: machine, model architecture, device, max_length and the
    workload (named only where it is not the encoder's, so older keys stay valid)."""
    settings = model_config.to_dict()
    architecture = {k: settings[k] for k in ARCHITECTURE_FIELDS if settings.get(k) is not None}
    key = {
        "machine": hardware(device),
        "model": architecture,
        "device": device.type,
        "max_length": max_length,
        "method": METHOD,
    }
    return {**key, "workload": workload} if workload else key


def cache_file(key: dict[str, Any]) -> Path:
    """`$XDG_CACHE_HOME/harness/local-calibration/<digest of key>.json` (`~/.cache` by default:
    the harness's one cache folder, `harness.locations`)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir(FOLDER) / f"{digest}.json"


@dataclass(frozen=True)
class Stored:
    """Rates an earlier process measured, and whether its machine was busy then (`_machine`)."""

    rates: Rates
    busy: bool


def cached_record(key: dict[str, Any]) -> Stored | None:
    """What an earlier process stored for `key`, read once, or None (none yet, unreadable, for
    another key, or rates that are not positive numbers)."""
    try:
        record = json.loads(cache_file(key).read_text(encoding="utf-8"))
        if record["key"] != key:  # a digest collision, or a file edited by hand
            return None
        rates = Rates(
            float(record["train_seconds_per_1k_tokens"]),
            float(record["infer_seconds_per_1k_tokens"]),
            str(record["as_of"]),
            str(record["machine"]),
            "cache",
        )
        busy_then = record.get("busy") is True
    except (OSError, ValueError, KeyError, TypeError):
        return None
    usable = all(
        math.isfinite(r) and r > 0
        for r in (rates.train_seconds_per_1k_tokens, rates.infer_seconds_per_1k_tokens)
    )
    return Stored(rates, busy_then) if usable else None


def cached(key: dict[str, Any]) -> Rates | None:
    """The rates an earlier process measured for `key`, or None (none yet, or unreadable)."""
    stored = cached_record(key)
    return stored.rates if stored is not None else None


def store(
    key: dict[str, Any], rates: Rates, model: str, loaded: bool = False, replace: bool = False
) -> Rates:
    """Write `rates` for `key` unless another process got there first; return the ones kept.

    First writer wins (a hard link never replaces a file), so processes that measured at the
    same moment still all price with one set of numbers; `replace` (a quiet measurement taking
    the place of one marked busy) writes over it instead. `loaded`: measured on a busy machine,
    so marked to be measured again. A cache that cannot be written leaves the rates to this
    process alone.
    """
    path = cache_file(key)
    record = {**asdict(rates), "key": key, "model": model, "how": _HOW, "busy": loaded}
    record.pop("source")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump(record, f, indent=2, sort_keys=True)
        try:
            (os.replace if replace else os.link)(f.name, path)
        except FileExistsError:
            if cached(key) is None:  # unreadable or for another key: ours replaces it
                os.replace(f.name, path)
        except OSError:  # a filesystem without hard links: last writer wins instead
            os.replace(f.name, path)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(f.name)
    except OSError:
        return rates
    kept = cached(key)
    ours = (rates.train_seconds_per_1k_tokens, rates.infer_seconds_per_1k_tokens)
    if kept is None or (kept.train_seconds_per_1k_tokens, kept.infer_seconds_per_1k_tokens) == ours:
        return rates
    return kept  # another process stored its numbers first


def measure(
    path: str,
    device: torch.device,
    max_length: int,
    progress: Progress,
    description: str,
    workload: Workload | None = None,
) -> Rates:
    """Time the training step and inference of the model at `path` on synthetic texts.

    Lengths are spread between 1/8 and 5/8 of `max_length`, padded per batch as in a trial,
    because short classification texts seldom fill `max_length` and per-token time depends on
    length. Token values do not change the compute, so they are drawn at random (seeded).
    """
    workload = workload or ENCODER
    timed = workload.prepare(path, device)
    generator = torch.Generator().manual_seed(0)
    low, high = max(2, max_length // 8), max(2, max_length * 5 // 8)
    n = max(workload.n_sequences, STEPS * workload.train_batch)
    lengths = torch.randint(low, high + 1, (n,), generator=generator).tolist()
    vocab = timed.vocab_size
    sequences = [torch.randint(0, vocab, (k,), generator=generator).tolist() for k in lengths]
    progress.start(f"calibrating local cost for {description} (once per machine)", 2 * REPEATS)
    try:
        train = _time_training(timed, workload.train_batch, device, sequences, progress)
        infer = _time_inference(timed, workload.eval_batch, device, sequences, progress)
    finally:
        progress.finish()
    return Rates(train, infer, _now(), describe(device), "measured")


def _prepare_encoder(path: str, device: torch.device) -> Timed:
    """The local encoder's model with a two-label head, its trial step and its inference."""
    model = load_model_folder(path, ("a", "b")).to(device)
    rows = lazy_input_embeddings(model)  # as `start_run`: the trial's own step
    optimizer, scheduler = build_optimizer(
        model, lr=1e-6, weight_decay=0.01, warmup_ratio=0.0, steps=1 + STEPS * REPEATS, rows=rows
    )
    run = Run(
        model=model,
        device=device,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=torch.Generator().manual_seed(0),
        ids=[],
        labels=torch.zeros(TRAIN_BATCH, dtype=torch.long),
        batch_size=TRAIN_BATCH,
        pad=(0, False),
    )

    def train(batch: list[list[int]]) -> None:
        run.ids = batch
        train_step(run, list(range(len(batch))))

    def infer(sequences: list[list[int]]) -> None:
        ordered_logits(model, sequences, EVAL_BATCH, (0, False), device)  # copies to the CPU

    model.train()
    return Timed(train, infer, int(model.config.vocab_size))


ENCODER = Workload("", _prepare_encoder, TRAIN_BATCH, EVAL_BATCH, N_SEQUENCES)


def _time_training(
    timed: Timed, batch: int, device: torch.device, sequences: list[list[int]], progress: Progress
) -> float:
    rows = sorted(sequences[: STEPS * batch], key=len)  # bucketed, as a trial's batches are
    batches = [rows[i : i + batch] for i in range(0, STEPS * batch, batch)]
    tokens = sum(len(ids) for rows in batches for ids in rows)
    timed.train(batches[0])  # warm-up: first-call allocations and kernel choice
    clock, best = _clock(device), math.inf
    for _ in range(REPEATS):
        began = clock()
        for rows in batches:
            timed.train(rows)
        _synchronize(device)
        best = min(best, clock() - began)
        progress.advance()
    return best / tokens * 1000.0


def _time_inference(
    timed: Timed, batch: int, device: torch.device, sequences: list[list[int]], progress: Progress
) -> float:
    tokens = sum(len(ids) for ids in sequences)
    timed.infer(sequences[:batch])  # warm-up
    clock, best = _clock(device), math.inf
    for _ in range(REPEATS):
        began = clock()
        timed.infer(sequences)
        _synchronize(device)
        best = min(best, clock() - began)
        progress.advance()
    return best / tokens * 1000.0


def _clock(device: torch.device) -> Callable[[], float]:
    """Seconds as the rates count them. On a CPU, this process's CPU time divided by torch's
    threads: what the work takes with the cores to itself, which other processes cannot inflate
    (measured: 1.23 idle, 1.25 beside two busy loops, where wall time went 1.37 to 3.11). On a
    GPU, wall time after synchronising: the device is not shared with the CPU's load."""
    if device.type != "cpu":
        return time.perf_counter
    threads = max(1, torch.get_num_threads())
    return lambda: time.process_time() / threads


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so the clock stops when the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
