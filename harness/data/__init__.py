"""Data, the first stage: read a source, dedupe and split it, describe it, write JSONL.

Entry point: `prepare_experiment` (an experiment's dataset as `PreparedData` plus a `DataReport`).
Modules: `sources` (bundled names, CSV / JSONL / Parquet files, `hf:NAME`; `columnar` reads
Parquet and `hf:NAME`), `prepare` (dedupe,
stratified split, digest), `summary` (the data report), `jsonl` (the chat and prompt/completion
files).
"""

from __future__ import annotations

from harness.data.prepare import prepare_data, prepare_experiment

__all__ = ["prepare_data", "prepare_experiment"]
