"""Prompts and completions as token ids: the textbook's format, or a chat model's messages.

- `completion` (the classic recipe, as OpenAI's babbage-002 was trained): prompt = text +
  `"\\n\\n###\\n\\n"`, completion = `" " + label`, so the label starts a new token.
- `chat`: the tokenizer's chat template over a system message and the text as the user's turn,
  with the assistant's turn opened; completion = the label.

Either completion ends with the end-of-sequence token, so the model learns to stop after the
label. Texts are cut (from the end) so prompt plus the longest completion fit `max_length`; the
separator or the template's closing tokens are never cut. Pieces are tokenized apart (template
before the text, the text, template after it), the same way in training and in scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import BackendError

SEPARATOR = "\n\n###\n\n"
_SLOT = "\x00TEXT\x00"  # stands for the text while the chat template is rendered


@dataclass(frozen=True)
class Formatter:
    """Token ids of prompts and label completions for one tokenizer and format.

    Attributes:
        before: Tokens before the text (the chat template's opening; none for `completion`).
        after: Tokens after the text (the separator, or the template up to the assistant turn).
        lead: What goes before a label in its completion (a space for `completion`).
        eos: The end-of-sequence token id that closes every completion.
        max_length: Prompt plus completion, at most.
    """

    tokenizer: Any
    before: tuple[int, ...]
    after: tuple[int, ...]
    lead: str
    eos: int
    max_length: int

    def completion(self, label: str) -> list[int]:
        """The label's tokens as the model is trained to emit them, end token included."""
        return [*self._ids(self.lead + label), self.eos]

    def text_budget(self, labels: Sequence[str]) -> int:
        """Tokens of a text a prompt keeps: `max_length` less the prompt format and the longest
        label's completion."""
        room = self.max_length - max(len(self.completion(label)) for label in labels)
        budget = room - len(self.before) - len(self.after)
        if budget < 1:
            raise BackendError(
                f"backend.max_length {self.max_length} leaves no room for the text beside the "
                f"prompt format and the labels; raise it above {self.max_length - budget + 8}"
            )
        return budget

    def prompts(self, texts: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
        """Each text's prompt, cut so that the longest label's completion still fits."""
        budget = self.text_budget(labels)
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [[*self.before, *ids[:budget], *self.after] for ids in encoded]

    def examples(
        self, texts: Sequence[str], labels: Sequence[str], label_set: Sequence[str]
    ) -> list[tuple[list[int], int]]:
        """Training sequences (prompt + completion) with the length of each prompt."""
        prompts = self.prompts(texts, label_set)
        return [
            ([*prompt, *self.completion(label)], len(prompt))
            for prompt, label in zip(prompts, labels, strict=True)
        ]

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def formatter(tokenizer: Any, fmt: str, system_prompt: str, max_length: int) -> Formatter:
    """The formatter for `fmt` (`completion` or `chat`) with this tokenizer.

    Raises:
        BackendError: The tokenizer has no end-of-sequence token, or `chat` was asked of a
            tokenizer without a chat template.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise BackendError("the model's tokenizer has no end-of-sequence token to end labels")

    def ids(text: str) -> tuple[int, ...]:
        return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])

    if fmt == "completion":
        return Formatter(tokenizer, (), ids(SEPARATOR), " ", int(eos), max_length)
    if not getattr(tokenizer, "chat_template", None):
        raise BackendError(
            "backend.format: chat needs a model whose tokenizer has a chat template; "
            "use format: completion"
        )
    messages = [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": _SLOT},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    head, _, tail = str(rendered).partition(_SLOT)
    return Formatter(tokenizer, ids(head), ids(tail), "", int(eos), max_length)


def label_sequences(fmt: Formatter, labels: Sequence[str]) -> list[list[int]]:
    """The tokens scored for each label: its completion without the end token, unless one
    label's tokens begin another's (`1` and `10`): then the end token tells them apart."""
    full = [fmt.completion(label) for label in labels]
    bare = [ids[:-1] for ids in full]
    prefixed = any(
        i != j and len(a) <= len(b) and b[: len(a)] == a
        for i, a in enumerate(bare)
        for j, b in enumerate(bare)
    )
    return full if prefixed else bare
