"""Datasets: load, deduplicate, split, describe and write the JSONL files every backend trains on.

The textbook order (DESIGN.md): normalise and drop duplicate texts *before* splitting, so no test
text can leak into training; then a stratified, seeded train / validation / test split. The digest
of the result identifies it: two sweeps with the same digest used the same examples.

Reading a source (bundled name, CSV / JSONL / Parquet file, `hf:NAME`) lives in
`harness.data.sources`; `load_frame` and `ensure_bundled` are re-exported here. Every problem a user
can fix raises `DataError` naming the file, column, class or line.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from harness.config import DatasetConfig, Experiment, SplitConfig
from harness.data.bundled import ensure_bundled as ensure_bundled  # re-exported
from harness.data.sources import canonical_label, read_frame
from harness.data.sources import load_frame as load_frame  # re-exported
from harness.data.summary import SPLIT_NAMES, TokenCounter, _report
from harness.data.summary import DataReport as DataReport  # re-exported
from harness.data.summary import LengthStats as LengthStats  # re-exported
from harness.data.summary import SplitReport as SplitReport  # re-exported
from harness.data.text import normalise_text as normalise_text  # re-exported
from harness.errors import DataError
from harness.records import PreparedData, Split


def prepare_data(
    config: DatasetConfig,
    seed: int,
    resolve: Callable[[str], Path],
    name: str,
    count_tokens: TokenCounter | None = None,
) -> tuple[PreparedData, DataReport]:
    """Load, normalise, deduplicate, (sample,) check and split a dataset.

    Texts are normalised (Unicode NFC, whitespace collapsed, stripped) and duplicates dropped
    before splitting, case-insensitively; a text seen with two different labels is dropped in every
    copy. The split is stratified and seeded, and no text appears in two splits.

    Args:
        config: The dataset section of an experiment.
        seed: Seeds the `max_rows` sample and the split; same seed, same data, same digest.
        resolve: Turns a path named in the experiment file into a real path.
        name: Stored as `PreparedData.name` and in the report.
        count_tokens: Optional tokens-per-text counter (e.g. `Backend.count_tokens`); when given,
            the report also has token statistics (`DataReport.with_tokens` does the same later).

    Returns:
        The prepared data and a report of what was read, dropped and kept.

    Raises:
        DataError: The data cannot be read, has a label outside `config.labels`, fewer than two
            classes, or too few rows of a class to put one in every split.
    """
    loaded = read_frame(config, resolve)
    labels = _label_set(loaded.frame["label"].tolist(), config.labels, loaded.where)
    texts, row_labels, duplicates, conflicts = _dedupe(loaded.frame)
    after_dedupe = len(texts)
    sample: _Sample | None = None
    if config.max_rows is not None and config.max_rows < len(texts):
        sample = _Sample(config.max_rows, Counter(row_labels))
        keep = _stratified_indices(row_labels, config.max_rows, seed)
        texts, row_labels = [texts[i] for i in keep], [row_labels[i] for i in keep]
    _check_classes(Counter(row_labels), labels, config.split, loaded.where, sample, conflicts)
    splits = _split(texts, row_labels, config.split, seed, loaded.where)
    _check_split(splits, labels, config.split, loaded.where, sample)
    ordinal = _ordinal(config, labels, loaded.where)
    data = PreparedData(
        *splits, labels=labels, digest=_digest(labels, splits), ordinal=ordinal, name=name
    )
    report = _report(loaded, data, duplicates, conflicts.total(), after_dedupe)
    return data, report.with_tokens(data, count_tokens) if count_tokens else report


def _dedupe(frame: pd.DataFrame) -> tuple[list[str], list[str], int, Counter[str]]:
    """Keep the first copy of each text (case-insensitive); drop all copies of conflicting ones,
    counted by their labels."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for text, label in zip(frame["text"], frame["label"], strict=True):
        normal = normalise_text(text)
        groups.setdefault(normal.casefold(), []).append((normal, label))
    texts, labels, duplicates, conflicts = [], [], 0, Counter[str]()
    for rows in groups.values():
        if len({label for _, label in rows}) > 1:
            conflicts.update(label for _, label in rows)
            continue
        texts.append(rows[0][0])
        labels.append(rows[0][1])
        duplicates += len(rows) - 1
    return texts, labels, duplicates, conflicts


def _label_set(present: list[str], configured: list[str] | None, where: str) -> tuple[str, ...]:
    counts = Counter(present)
    if configured is None:
        found = list(counts)
        _check_case(counts, where)
        numeric = all(_is_number(x) for x in found)
        return tuple(sorted(found, key=float) if numeric else sorted(found))
    wanted = [canonical_label(x) or "" for x in configured]
    if len(set(wanted)) != len(wanted) or "" in wanted:
        raise DataError(f"dataset.labels {configured}: labels must be distinct and non-empty")
    extra = {label: n for label, n in counts.items() if label not in wanted}
    if extra:
        listed = ", ".join(f"{label!r} ({_rows(n)})" for label, n in sorted(extra.items()))
        folded = {label.casefold(): label for label in wanted}
        cased = [
            f"{x!r} is {folded[x.casefold()]!r}" for x in sorted(extra) if x.casefold() in folded
        ]
        if cased:  # `positive` for the data's `Positive`: one class, typed two ways
            listed += f"; {', '.join(cased)} but for case: write dataset.labels as the data does"
        raise DataError(f"{where}: labels not in dataset.labels {wanted}: {listed}")
    return tuple(wanted)


def _check_case(counts: Counter[str], where: str) -> None:
    """Labels equal but for case ("Positive", "positive") are one class typed two ways far more
    often than two classes: refused, unless `dataset.labels` lists both."""
    spellings: dict[str, list[str]] = {}
    for label in sorted(counts):
        spellings.setdefault(label.casefold(), []).append(label)
    clash = next((group for group in spellings.values() if len(group) > 1), None)
    if clash:
        named = " and ".join(f"{label!r} ({_rows(counts[label])})" for label in clash)
        raise DataError(
            f"{where}: labels {named} differ only in case, so they would be separate classes: "
            "write them one way in the data, or list each in dataset.labels to keep them apart"
        )


def _ordinal(config: DatasetConfig, labels: tuple[str, ...], where: str) -> bool:
    """Whether MAE means something: numbers (stars, half stars) are ordinal unless the config says
    not; words only with `ordinal: true` and their order in `dataset.labels`, since the sorted
    order the data gives them (bad, good, ok) would make every MAE wrong."""
    numeric = all(_is_number(x) for x in labels)
    if config.ordinal and not numeric and config.labels is None:
        raise DataError(
            f"{where}: dataset.ordinal is true but the labels {', '.join(map(repr, labels))} are "
            "not numbers, so their order is unknown: list them in order in dataset.labels "
            "(e.g. labels: [bad, ok, good])"
        )
    return config.ordinal if config.ordinal is not None else numeric


def _is_number(label: str) -> bool:
    try:
        return math.isfinite(float(label))
    except ValueError:
        return False


@dataclass(frozen=True)
class _Sample:
    """A `max_rows` sample: its size and the class counts it was drawn from."""

    max_rows: int
    deduped: Counter[str]


def _check_classes(
    counts: Counter[str],
    labels: tuple[str, ...],
    split: SplitConfig,
    where: str,
    sample: _Sample | None = None,
    conflicts: Counter[str] | None = None,
) -> None:
    if len(labels) < 2:
        only = f"one class: {labels[0]!r}" if labels else "no classes"
        raise DataError(f"{where}: {only}; a classifier needs at least two")
    for label in labels:
        if counts[label] < 3:
            lost = conflicts[label] if conflicts else 0
            raise DataError(_too_few(where, label, counts[label], split, sample, lost))


def _rows(count: int) -> str:
    return f"{count} row" if count == 1 else f"{count} rows"


def _too_few(
    where: str,
    label: str,
    count: int,
    split: SplitConfig,
    sample: _Sample | None = None,
    conflicted: int = 0,
) -> str:
    needed = max(3, math.ceil(1 / min(split.validation, split.test)) + 1)
    found = f"{_rows(count)} after deduplication"
    if conflicted:  # not duplicates: say why they went
        found += f" ({conflicted} more were dropped: their texts also appear with another label)"
    hint = ""
    if sample is not None:  # the sample, not the data, is short of rows: say so
        found = (
            f"{_rows(count)} in the dataset.max_rows={sample.max_rows} sample "
            f"({sample.deduped[label]} after deduplication)"
        )
        hint = "; raise dataset.max_rows or remove it"
    return (
        f"{where}: class {label!r} has {found}; each of train, validation and test needs at "
        f"least one (about {needed} rows with validation={split.validation}, "
        f"test={split.test}){hint}"
    )


def _split(
    texts: list[str], labels: list[str], split: SplitConfig, seed: int, where: str
) -> tuple[Split, Split, Split]:
    """Stratified, seeded train / validation / test; train_test_split also shuffles each part."""
    index = np.arange(len(texts))
    try:
        rest, test = train_test_split(
            index, test_size=split.test, stratify=labels, random_state=seed
        )
        rest_labels = [labels[i] for i in rest]
        fraction = split.validation / (1 - split.test)
        train, valid = train_test_split(
            rest, test_size=fraction, stratify=rest_labels, random_state=seed
        )
    except ValueError:  # e.g. fewer test rows than classes
        n_classes = len(set(labels))
        raise DataError(
            f"{where}: {len(texts)} rows after deduplication are too few to split stratified "
            f"into train / validation / test with validation={split.validation}, "
            f"test={split.test}: each split needs at least one row of each of the {n_classes} "
            f"classes (about {math.ceil(n_classes / min(split.validation, split.test))} rows); "
            "add rows or raise dataset.split.validation / dataset.split.test"
        ) from None
    parts = [
        Split(tuple(texts[i] for i in p), tuple(labels[i] for i in p)) for p in (train, valid, test)
    ]
    return parts[0], parts[1], parts[2]


def _check_split(
    splits: tuple[Split, Split, Split],
    labels: tuple[str, ...],
    split: SplitConfig,
    where: str,
    sample: _Sample | None = None,
) -> None:
    seen: set[str] = set()
    for part in splits:
        if seen.intersection(part.texts):  # cannot happen after dedupe; a bug if it does
            raise RuntimeError("a text appears in two splits")
        seen.update(part.texts)
        counts = Counter(part.labels)
        for label in labels:
            if counts[label] == 0:
                total = sum(s.labels.count(label) for s in splits)
                raise DataError(_too_few(where, label, total, split, sample))


def _digest(labels: tuple[str, ...], splits: tuple[Split, Split, Split]) -> str:
    payload: dict[str, Any] = {"labels": list(labels)}
    for name, part in zip(SPLIT_NAMES, splits, strict=True):
        payload[name] = [list(part.texts), list(part.labels)]
    canonical = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _stratified_indices(labels: Sequence[str], n: int, seed: int) -> list[int]:
    """Indices (ascending) of a seeded stratified sample of `n`; every class keeps one if it can."""
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    if n < len(by_class):
        raise DataError(f"cannot draw {n} examples stratified over {len(by_class)} classes")
    quota = _allocate({c: len(ix) for c, ix in by_class.items()}, n)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for label in sorted(by_class):
        chosen += rng.choice(by_class[label], size=quota[label], replace=False).tolist()
    return sorted(chosen)


def _allocate(counts: dict[str, int], n: int) -> dict[str, int]:
    """Split `n` over classes in proportion (largest remainder), at least one per class."""
    total = sum(counts.values())
    exact = {c: n * k / total for c, k in counts.items()}
    quota = {c: min(counts[c], max(1, math.floor(exact[c]))) for c in counts}
    order = sorted(counts)
    while (missing := n - sum(quota.values())) != 0:
        if missing > 0:
            pick = max(
                (c for c in order if quota[c] < counts[c]), key=lambda c: exact[c] - quota[c]
            )
            quota[pick] += 1
        else:
            pick = min((c for c in order if quota[c] > 1), key=lambda c: exact[c] - quota[c])
            quota[pick] -= 1
    return quota


def subsample(split: Split, n: int | None, seed: int) -> Split:
    """A seeded, stratified subset of `n` examples, in the split's order.

    Args:
        split: The split to draw from (usually `PreparedData.train`).
        n: How many examples; None, or at least `len(split)`, returns the split unchanged.
        seed: Same seed, same subset.

    Returns:
        A split of `n` examples whose class proportions follow `split`'s; every class keeps at
        least one example.

    Raises:
        DataError: `n` is smaller than the number of classes.
    """
    if n is None or n >= len(split):
        return split
    keep = _stratified_indices(split.labels, n, seed)
    return Split(tuple(split.texts[i] for i in keep), tuple(split.labels[i] for i in keep))


def priced_subset(
    split: Split,
    n: int | None,
    seed: int,
    bound: Literal["dearest", "cheapest"] | None = None,
    lengths: Callable[[Split], Sequence[int]] | None = None,
) -> Split:
    """The training subset a cost estimate counts tokens on.

    Without `bound`: the trial's own (`subsample` with its seed), so the estimate is exact. With
    `bound` "dearest" (or "cheapest"): the `n` examples with the most (or fewest) tokens, by
    `lengths` (one count per example of the split), so no subset any seed draws costs more (or
    less): what a corner of the search space needs (`TrialSpec.bound`).
    """
    if bound is None or lengths is None or n is None or n >= len(split):
        return subsample(split, n, seed)
    sizes = lengths(split)
    ranked = sorted(range(len(split)), key=lambda i: sizes[i], reverse=bound == "dearest")
    keep = sorted(ranked[:n])
    return Split(tuple(split.texts[i] for i in keep), tuple(split.labels[i] for i in keep))


def prepare_experiment(
    experiment: Experiment, count_tokens: TokenCounter | None = None
) -> tuple[PreparedData, DataReport]:
    """Load, dedupe and split the experiment's dataset (token statistics given a counter)."""
    return prepare_data(
        experiment.config.dataset,
        seed=experiment.config.seed,
        resolve=experiment.resolve_path,
        name=experiment.name,
        count_tokens=count_tokens,
    )
