"""Evaluation by logprobs: ask once per text, pick the most probable label of the label set.

Chat models get the messages they were trained on, `logprobs=True`, `top_logprobs` and a
completion budget of the longest label's tokens; prompt/completion models (babbage-002,
davinci-002) get the trained prompt on the legacy completions endpoint with `logprobs=k`. The
first answer token's alternatives are matched to labels (whole label, else the label's first
token, case-insensitively; a first token shared by several labels is settled by the generated
text) and their probabilities summed per label; the best label wins.

Nothing is dropped: when no label appears among the alternatives, the prediction's label is
the model's raw answer, which scoring counts as wrong, and `Evaluation.out_of_set` counts it.
Answers whose text is not exactly a label are counted too (`answers_not_labels`), even when the
logprobs still found a label.

Requests run concurrently on a thread pool, all of them (across trials) under one semaphore of
`eval_concurrency`; the SDK retries 429 and 5xx with backoff.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from harness.backends.base import NullProgress, Progress
from harness.backends.hosted._files import PromptFormat
from harness.backends.hosted._tokens import TiktokenCounter, is_completion_model
from harness.backends.hosted.pricing import PriceTable, is_fine_tuned
from harness.records import Cost, Prediction


class EvalSettings(Protocol):
    """The settings scoring reads (every remote backend's config has them)."""

    @property
    def eval_concurrency(self) -> int: ...

    @property
    def top_logprobs(self) -> int: ...


LEGACY_MAX_LOGPROBS = 5  # the completions endpoint returns at most 5 alternatives


@dataclass(frozen=True)
class Answer:
    """One response, reduced to what label choice and pricing need."""

    text: str
    alternatives: tuple[tuple[str, float], ...]  # (token, logprob) of the first answer token
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Evaluation:
    """Predictions of one model on some texts, with what they cost and how many missed the set."""

    model: str
    labels: tuple[str, ...]
    predictions: tuple[Prediction, ...]
    cost: Cost
    out_of_set: int  # predictions whose label is not in the label set (scored wrong)
    answers_not_labels: int  # generated answers that were not exactly a label


def _norm(text: str) -> str:
    return text.strip().casefold()


class LabelChooser:
    """Maps a model's answer and first-token alternatives onto the label set."""

    def __init__(self, labels: Sequence[str], counter: TiktokenCounter) -> None:
        self.labels = tuple(labels)
        self._by_norm = {_norm(label): label for label in self.labels}
        self._first = {label: _norm(counter.first_token(label)) for label in self.labels}

    def _candidates(self, token: str) -> list[str]:
        key = _norm(token)
        if not key:
            return []
        if key in self._by_norm:
            return [self._by_norm[key]]
        return [label for label in self.labels if self._first[label] == key]

    def choose(self, answer: Answer) -> Prediction:
        """The most probable label, or the raw answer when no label was among the options."""
        scores = dict.fromkeys(self.labels, 0.0)
        said = self._by_norm.get(_norm(answer.text))
        for token, logprob in answer.alternatives:
            matches = self._candidates(token)
            if len(matches) > 1:  # several labels start alike: the generated text settles it
                matches = [said] if said in matches else []
            if len(matches) == 1:
                scores[matches[0]] += math.exp(logprob)
        best = max(self.labels, key=lambda label: scores[label])
        if scores[best] > 0.0:
            return Prediction(best, min(1.0, scores[best]), scores)
        if said is not None:  # no logprobs came back, but the text is a label
            return Prediction(said, 1.0, {**scores, said: 1.0})
        return Prediction(answer.text.strip(), 0.0, scores)


class Evaluator:
    """Classifies texts with one OpenAI model through the endpoint its format needs."""

    def __init__(
        self,
        client: Callable[[], Any],
        config: EvalSettings,
        prices: PriceTable,
        system_prompt: str,
    ) -> None:
        self._client = client
        self.config = config
        self.prices = prices
        self.system_prompt = system_prompt
        self._slots = threading.BoundedSemaphore(config.eval_concurrency)
        self._answered: dict[str, tuple[int, int]] = {}  # model -> tokens in, out (`paid`)
        self._tally = threading.Lock()

    def paid(self) -> Cost:
        """What every answer this evaluator received has cost, priced as `evaluate` prices
        them: scoring cut short (Ctrl-C, a signal) returns nothing, but its answers are paid."""
        with self._tally:
            answered = dict(self._answered)
        total = Cost()
        for model, (tokens_in, tokens_out) in answered.items():
            usd = self._price(model, tokens_in, tokens_out)
            total += Cost(usd=usd, inference_tokens=tokens_in + tokens_out)
        return total

    def evaluate(
        self,
        model: str,
        texts: Sequence[str],
        labels: Sequence[str],
        progress: Progress | None = None,
        served_as: str | None = None,
        check: Callable[[], None] | None = None,
    ) -> Evaluation:
        """Ask `model` about every text (concurrently) and choose a label for each answer;
        `served_as` is the name requests carry where it differs (an Azure deployment), and
        `check()`, called before each request, may stop the scoring by raising (a deployment's
        reserved hosting is running out)."""
        counter = TiktokenCounter(model)
        chooser = LabelChooser(labels, counter)
        asker = self._asker(model, labels, counter, served_as or model)

        def ask(text: str) -> Answer:
            if check is not None:
                check()
            answer = asker(text)
            with self._tally:
                tokens_in, tokens_out = self._answered.get(model, (0, 0))
                tokens = (tokens_in + answer.input_tokens, tokens_out + answer.output_tokens)
                self._answered[model] = tokens
            return answer

        progress = progress or NullProgress()
        progress.start(f"evaluating {model}", total=len(texts))
        try:
            answers = self._map(ask, texts, progress)
        finally:
            progress.finish()
        predictions = tuple(chooser.choose(answer) for answer in answers)
        known = set(labels)
        tokens_in = sum(a.input_tokens for a in answers)
        tokens_out = sum(a.output_tokens for a in answers)
        usd = self._price(model, tokens_in, tokens_out)
        return Evaluation(
            model=model,
            labels=tuple(labels),
            predictions=predictions,
            cost=Cost(usd=usd, inference_tokens=tokens_in + tokens_out),
            out_of_set=sum(p.label not in known for p in predictions),
            answers_not_labels=sum(a.text.strip() not in known for a in answers),
        )

    def _price(self, model: str, tokens_in: int, tokens_out: int) -> float:
        """Dollars for these tokens of `model` (a fine-tuned model at fine-tuned rates)."""
        price = self.prices.lookup(model)
        return price.inference_usd(tokens_in, tokens_out, fine_tuned=is_fine_tuned(model))

    def _map(
        self, ask: Callable[[str], Answer], texts: Sequence[str], progress: Progress
    ) -> list[Answer]:
        def one(text: str) -> Answer:
            with self._slots:
                answer = ask(text)
            progress.advance()
            return answer

        workers = max(1, min(self.config.eval_concurrency, len(texts)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-eval") as pool:
            futures = [pool.submit(one, text) for text in texts]
            try:
                return [future.result() for future in futures]
            except BaseException:
                for future in futures:
                    future.cancel()  # do not pay for the rest once one request has failed
                raise

    def _asker(
        self, model: str, labels: Sequence[str], counter: TiktokenCounter, served_as: str
    ) -> Callable[[str], Answer]:
        """A function text -> Answer for this model's endpoint and prompt format."""
        completion = is_completion_model(model)
        fmt = PromptFormat(chat=not completion, system_prompt=self.system_prompt)
        # Zero-shot base models have never seen the labels, so they are told them; fine-tuned
        # models get exactly the prompt they were trained on.
        listed = f"Answer with one of: {', '.join(labels)}."
        zero_shot = not is_fine_tuned(model)
        lead = " " if completion else ""
        budget = max(counter.count([lead + label for label in labels]) or [1])
        if completion:
            preamble = f"{listed}\n\n" if zero_shot else ""
            return lambda text: self._complete(served_as, fmt.prompt(text, preamble), budget)
        system = f"{self.system_prompt}\n{listed}" if zero_shot else self.system_prompt
        return lambda text: self._chat(served_as, fmt.messages(text, system), budget)

    def _chat(self, model: str, messages: list[dict[str, str]], budget: int) -> Answer:
        response = self._client().chat.completions.create(
            model=model,
            messages=messages,
            max_completion_tokens=budget,
            temperature=0,
            logprobs=True,
            top_logprobs=self.config.top_logprobs,
        )
        choice = response.choices[0]
        content = choice.logprobs.content if choice.logprobs is not None else None
        alternatives: list[tuple[str, float]] = []
        if content:
            first = content[0]
            alternatives = [(t.token, t.logprob) for t in first.top_logprobs]
            alternatives = alternatives or [(first.token, first.logprob)]
        return Answer(choice.message.content or "", tuple(alternatives), *_usage(response))

    def _complete(self, model: str, prompt: str, budget: int) -> Answer:
        response = self._client().completions.create(
            model=model,
            prompt=prompt,
            max_tokens=budget,
            temperature=0,
            logprobs=min(LEGACY_MAX_LOGPROBS, self.config.top_logprobs),
        )
        choice = response.choices[0]
        logprobs = choice.logprobs
        alternatives: list[tuple[str, float]] = []
        if logprobs is not None and logprobs.top_logprobs:
            alternatives = list((logprobs.top_logprobs[0] or {}).items())
        return Answer(choice.text, tuple(alternatives), *_usage(response))


def _usage(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    if usage is None:
        return 0, 0
    return int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0)
