"""Scoring through Together's chat completions: the label from the first token's logprobs.

Together takes `logprobs` as an integer (how many alternatives) and answers `top_logprobs` as one
mapping per token; the label is chosen from the first token's alternatives as for OpenAI
(`hosted._eval.LabelChooser`). A fine-tuned model is priced at its base model's row, or at
nothing per token when it is served on a dedicated endpoint (which bills its minutes); scoring on
an endpoint stops at its deadline (`deadlines`), so an endpoint never outlives what the budget
reserved for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from harness.backends.hosted._eval import Answer, Evaluator
from harness.backends.hosted._files import PromptFormat
from harness.backends.hosted._tokens import TiktokenCounter
from harness.backends.hosted.pricing import PriceTable
from harness.backends.together._client import TogetherClient
from harness.backends.together.config import TogetherBackendConfig
from harness.errors import BackendError


class ScoringBackend(Protocol):
    """What the evaluator needs of the backend it scores for."""

    config: TogetherBackendConfig
    prices: PriceTable
    system_prompt: str

    def base_of(self, model: str) -> str: ...

    def hosts(self, model: str) -> bool: ...


class TogetherEvaluator(Evaluator):
    """Scores through Together's chat endpoint; prices every model at its base model's row."""

    def __init__(self, client: TogetherClient, backend: ScoringBackend) -> None:
        super().__init__(lambda: client, backend.config, backend.prices, backend.system_prompt)
        self.http = client
        self.backend = backend
        self.deadlines: dict[str, float] = {}  # endpoint name -> when scoring on it must stop

    def _asker(
        self, model: str, labels: Sequence[str], counter: TiktokenCounter, served_as: str
    ) -> Callable[[str], Answer]:
        fmt = PromptFormat(chat=True, system_prompt=self.system_prompt)
        budget = max(counter.count(list(labels)) or [1])
        return lambda text: self._ask(served_as, fmt.messages(text), budget)

    def _ask(self, model: str, messages: list[dict[str, str]], budget: int) -> Answer:
        deadline = self.deadlines.get(model)
        if deadline is not None and time.monotonic() > deadline:
            raise BackendError(
                f"scoring on Together endpoint {model} reached backend.serving.max_minutes "
                f"({self.backend.config.serving.max_minutes}, what the budget reserved); the "
                "endpoint is deleted and the rest not scored"
            )
        body = {
            "model": model,
            "messages": messages,
            "max_tokens": budget,
            "temperature": 0,
            "logprobs": self.config.top_logprobs,
        }
        reply = self.http.request("POST", "/chat/completions", f"scoring with {model}", json=body)
        choice = reply["choices"][0]
        top = (choice.get("logprobs") or {}).get("top_logprobs") or {}
        first = top[0] if isinstance(top, list) and top else top
        alternatives = tuple((str(t), float(p)) for t, p in dict(first or {}).items())
        usage = reply.get("usage") or {}
        content = (choice.get("message") or {}).get("content") or ""
        return Answer(
            content, alternatives, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        )

    def _price(self, model: str, tokens_in: int, tokens_out: int) -> float:
        if self.backend.hosts(model):
            return 0.0  # a dedicated endpoint bills its minutes (`TogetherBackend._hosted`)
        price = self.prices.lookup(self.backend.base_of(model))
        return price.inference_usd(tokens_in, tokens_out, fine_tuned=True)
