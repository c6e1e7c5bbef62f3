"""Together's own price quote for a job, asked just before the job is created.

The budget reserves what the price row says a trial costs (`TogetherBackend.estimate`). When the
row under-prices (a stale override, a rate card that changed, a tokenizer counting more than
tiktoken), a job could bill more than was reserved. `POST /v1/fine-tunes/estimate-price`, asked
with the same parameters as the create body, prices the job with Together's own tokenizer and
rates, and says whether the account may proceed. A quote above the reservation, or a job the
account may not start, is refused before anything is paid, and the sweep stops on it: every
other trial would be refused alike (`TrainingRefused`).

Only a new job is quoted: a job recalled from the journal or found again by its key after a lost
create reply is already paid for and is never quoted (nor created) twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.backends.hosted.pricing import PER_MILLION, Price, price_setting
from harness.backends.together._client import TogetherClient
from harness.errors import TrainingRefused
from harness.records import Cost, usd

# The create body's fields the quote takes (its OpenAPI request body).
QUOTED_FIELDS = (
    "training_file",
    "validation_file",
    "model",
    "n_epochs",
    "n_evals",
    "training_method",
    "training_type",
    "from_checkpoint",
)


class QuoteRefused(TrainingRefused):
    """Together's quote says the job must not be created (over the reservation or the limit)."""


@dataclass(frozen=True)
class Quote:
    """What Together says a job will cost (`usd` None: it gave no estimate)."""

    usd: float | None
    allowed: bool
    user_limit: float | None
    train_tokens: float | None

    def note(self) -> str:
        """The journal's `provider_quote_usd` entry."""
        return "unavailable" if self.usd is None else f"{self.usd:.6f}"


def ask_quote(client: TogetherClient, body: dict[str, Any]) -> Quote:
    """Together's quote for the job `body` would create (a free request, retried as usual)."""
    request = {k: body[k] for k in QUOTED_FIELDS if k in body}
    action = "asking Together for a quote"
    reply = client.request("POST", "/fine-tunes/estimate-price", action, json=request)
    usd = reply.get("estimated_total_price")
    limit = reply.get("user_limit")
    tokens = reply.get("estimated_train_token_count")
    return Quote(
        usd=None if usd is None else float(usd),
        # Absent means not refused: the document does not say it is always sent.
        allowed=reply.get("allowed_to_proceed") is not False,
        user_limit=None if limit is None else float(limit),
        train_tokens=None if tokens is None else float(tokens),
    )


def check_quote(quote: Quote, reserved: Cost, price: Price, trial: int) -> None:
    """Refuse a job Together will not start, or one quoted above what the budget reserved for
    its training (`reserved`, the backend's own estimate at `price`).

    Raises:
        QuoteRefused: Naming the quote, the limit or the reservation, and what to change.
    """
    quoted = "no figure" if quote.usd is None else f"${quote.usd:.6g}"
    if not quote.allowed:
        # `usd` keeps a small limit's figure: two decimals made $0.005 read $0.01, above a quote
        # of $0.008 said to be more than it.
        limit = "not given" if quote.user_limit is None else usd(quote.user_limit)
        raise QuoteRefused(
            f"Together will not start trial {trial}'s job: it quotes {quoted}, more than the "
            f"account may spend (its credit limit: {limit}); nothing was created. Add credit or "
            "raise the limit at https://api.together.ai/settings/billing, or sweep smaller jobs."
        )
    if quote.usd is None or quote.usd <= reserved.usd * (1 + 1e-9) + 1e-9:
        return
    rate = price.training_per_1m or 0.0
    needed = _round_up(quote.usd / max(reserved.trained_tokens, 1) * PER_MILLION)
    raise QuoteRefused(
        f"Together quotes {quoted} for trial {trial}'s job, but the price row ({price.source}) "
        f"gives ${reserved.usd:.6g} for its {reserved.trained_tokens} worst-case tokens, and "
        "that is all the budget reserved; nothing was created. Fix "
        f"{price_setting(price.model, 'training_per_1m')} (now {rate:g}; Together's quote needs "
        f"at least {needed:g}) from your rate card."
    )


def _round_up(value: float, digits: int = 4) -> float:
    """`value` to `digits` significant figures, rounded up: a rate printed for the user to set
    must cover the quote, never fall just short of it."""
    if value <= 0:
        return value
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(value)))
    return math.ceil(value * scale - 1e-9) / scale
