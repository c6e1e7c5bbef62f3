"""The data report: rows read and dropped, class balance per split, text length and tokens.

What `harness prepare` prints and writes beside the JSONL files; built by `harness.data.prepare`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from harness.data.sources import LoadedFrame
from harness.records import PreparedData, Split

SPLIT_NAMES = ("train", "validation", "test")
TokenCounter = Callable[[Sequence[str]], list[int]]


@dataclass(frozen=True)
class LengthStats:
    """Lengths of the texts of one split (characters or tokens)."""

    mean: float
    median: float
    p95: float
    max: int

    @classmethod
    def of(cls, lengths: Iterable[int]) -> LengthStats:
        values = np.asarray(list(lengths), dtype=float)
        if values.size == 0:
            return cls(0.0, 0.0, 0.0, 0)
        return cls(
            mean=round(float(values.mean()), 2),
            median=float(np.median(values)),
            p95=round(float(np.percentile(values, 95)), 2),
            max=int(values.max()),
        )


@dataclass(frozen=True)
class SplitReport:
    """Size, examples per class and text lengths of one split."""

    size: int
    class_counts: dict[str, int]
    chars: LengthStats
    tokens: LengthStats | None = None
    cut: int | None = None  # texts longer than the report's `token_limit`, cut from the end


def _report(
    loaded: LoadedFrame, data: PreparedData, duplicates: int, conflicts: int, after_dedupe: int
) -> DataReport:
    splits = (data.train, data.validation, data.test)
    return DataReport(
        name=data.name,
        source=loaded.where,
        labels=data.labels,
        ordinal=data.ordinal,
        digest=data.digest,
        rows_read=loaded.rows_read,
        rows_dropped_empty=loaded.rows_dropped_empty,
        duplicates_removed=duplicates,
        conflicting_labels_removed=conflicts,
        rows_after_dedupe=after_dedupe,
        rows_used=sum(len(s) for s in splits),
        splits={n: _split_report(s, data.labels) for n, s in zip(SPLIT_NAMES, splits, strict=True)},
    )


def _split_report(split: Split, labels: tuple[str, ...]) -> SplitReport:
    counts = Counter(split.labels)
    return SplitReport(
        size=len(split),
        class_counts={label: counts[label] for label in labels},
        chars=LengthStats.of(len(t) for t in split.texts),
    )


@dataclass(frozen=True)
class DataReport:
    """What preparation read, dropped and kept; written as `report.json` and `report.md`."""

    name: str
    source: str
    labels: tuple[str, ...]
    ordinal: bool
    digest: str
    rows_read: int
    rows_dropped_empty: int
    duplicates_removed: int
    conflicting_labels_removed: int
    rows_after_dedupe: int
    rows_used: int
    splits: dict[str, SplitReport] = field(default_factory=dict)
    token_limit: int | None = None  # the most tokens of a text the model reads

    def with_tokens(
        self, data: PreparedData, counter: TokenCounter, limit: int | None = None
    ) -> DataReport:
        """A copy with token-length statistics per split; `counter` gives one count per text.
        With `limit` (`Backend.text_token_limit`), each split also counts the texts longer than
        that, which the model reads cut."""
        parts = {"train": data.train, "validation": data.validation, "test": data.test}
        splits = {}
        for name, report in self.splits.items():
            counts = counter(list(parts[name].texts))
            cut = None if limit is None else sum(n > limit for n in counts)
            splits[name] = replace(report, tokens=LengthStats.of(counts), cut=cut)
        return replace(self, splits=splits, token_limit=limit)

    def cut_warning(self, setting: str, least_share: float = 0.0) -> str | None:
        """Which splits hold texts longer than `token_limit`, in words naming `setting` (what
        raises the limit); None when no split has more than `least_share` of its texts cut."""
        cut = {name: (s.cut or 0, s.size) for name, s in self.splits.items() if s.cut and s.size}
        if self.token_limit is None or all(n / size <= least_share for n, size in cut.values()):
            return None
        parts = [
            f"{n:,} of {size:,} {name} texts ({n / size:.1%})" for name, (n, size) in cut.items()
        ]
        longest = max((s.tokens.max for s in self.splits.values() if s.tokens), default=0)
        return (
            f"{'; '.join(parts)} are longer than the {self.token_limit:,} tokens the model reads "
            f"and are cut from the end (the longest has {longest:,}); raise {setting} to keep "
            "them whole (every token costs training time)."
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (lists, dicts, numbers, strings)."""
        result = asdict(self)
        result["labels"] = list(self.labels)
        return result

    def to_markdown(self) -> str:
        """A readable summary: row accounting, then one table row per split."""
        lines = [
            f"# Data: {self.name}",
            "",
            f"Source `{self.source}`; labels {', '.join(map(md_cell, self.labels))}"
            f"{' (ordinal)' if self.ordinal else ''}; digest `{self.digest[:16]}`.",
            "",
            "| rows | count |",
            "|---|---:|",
            f"| read | {self.rows_read:,} |",
            f"| dropped: empty text or label | {self.rows_dropped_empty:,} |",
            f"| dropped: duplicate texts | {self.duplicates_removed:,} |",
            f"| dropped: same text, conflicting labels | {self.conflicting_labels_removed:,} |",
            f"| after deduplication | {self.rows_after_dedupe:,} |",
            f"| used (after `max_rows`) | {self.rows_used:,} |",
            "",
        ]
        if self.conflicting_labels_removed:
            lines += [
                f"{self.conflicting_labels_removed:,} rows carried a text that also appears with "
                "another label; every copy was dropped.",
                "",
            ]
        return "\n".join(lines + self._split_table()) + "\n"

    def _split_table(self) -> list[str]:
        with_tokens = any(s.tokens is not None for s in self.splits.values())
        header = ["split", "size", *map(md_cell, self.labels), "chars mean", "median", "p95"]
        header.append("max")
        header += ["tokens mean", "p95", "max"] if with_tokens else []
        header += [f"over {self.token_limit:,} tokens (cut)"] if self.token_limit else []
        rows = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
        for name, s in self.splits.items():
            cells = [name, f"{s.size:,}", *(f"{s.class_counts.get(c, 0):,}" for c in self.labels)]
            cells += [
                f"{s.chars.mean:.1f}",
                f"{s.chars.median:g}",
                f"{s.chars.p95:g}",
                str(s.chars.max),
            ]
            if with_tokens:
                t = s.tokens or LengthStats(0.0, 0.0, 0.0, 0)
                cells += [f"{t.mean:.1f}", f"{t.p95:g}", str(t.max)]
            cells += [f"{s.cut or 0:,}"] if self.token_limit else []
            rows.append("| " + " | ".join(cells) + " |")
        return rows


# Characters markdown reads as markup in text (emphasis, code, links, strikethrough, a table's
# cell separator, GitHub's `$...$` maths) and the backslash, each escaped with a backslash, in
# one pass (CommonMark shows `\$` as `$`).
_MD_SPECIAL = re.compile(r"([\\`*_\[\]~|$])")


def md_cell(text: str) -> str:
    """User data (a label, a test text) as markdown shows it verbatim: a `|` would split its
    table column, `*` or `_` would emphasise, `[x](y)` would link, `$5 and $10` would be maths
    on GitHub, a tag would be read as HTML; a newline would end its table row."""
    escaped = _MD_SPECIAL.sub(r"\\\1", text).replace("\n", " ")
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", escaped)


# --- JSONL -----------------------------------------------------------------------------------
