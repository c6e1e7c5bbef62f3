"""The one text normalisation: what training, scoring and every hand-off put to a model.

`harness prepare` normalises each text before deduplicating and splitting, so every model is
trained and scored on normalised texts. A promoted model (`harness predict`, the pyfunc model,
`harness serve`) and a hosted model's request apply the same function to the caller's text, so
a trailing newline, a doubled space or a decomposed accent cannot give a text another prompt or
encoding than the one it was trained and scored on (train/serve skew).
"""

from __future__ import annotations

import unicodedata


def normalise_text(text: str) -> str:
    """Unicode NFC, every run of whitespace (`str.split`'s, so NEL, NBSP and the line and
    information separators too) collapsed to one space, stripped. Idempotent."""
    return " ".join(unicodedata.normalize("NFC", text).split())
