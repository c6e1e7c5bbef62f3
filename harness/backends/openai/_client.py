"""The `openai` SDK client, built lazily from the environment, and its errors in our terms.

The API key comes only from `OPENAI_API_KEY`; it is never a config field, never logged, and is
scrubbed from any error text that could end up in MLflow (OpenAI's 401 message quotes part of
a wrong key). Retries on 429 and 5xx (with `Retry-After` and exponential backoff) are the SDK's
own, configured by `max_retries`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.backends.openai.config import OpenAIBackendConfig
from harness.errors import BackendError, ConfigError, TrainingRefused

_KEY_LIKE = re.compile(r"\b(sk|sess|key)-[A-Za-z0-9_\-*]{6,}")
REFUSED_MESSAGE = (
    "OpenAI refused to create a fine-tuning job (HTTP 403 training_not_available): OpenAI has "
    "stopped accepting new self-serve fine-tuning jobs (new organisations have been refused since "
    "2026, every organisation from 2027-01-06). Evaluating models that are already fine-tuned "
    "still works: `harness evaluate EXPERIMENT --model ft:...`. To train, point backend.base_url "
    "(or OPENAI_BASE_URL) at any endpoint that speaks the OpenAI fine-tuning API, such as Azure "
    "OpenAI or a compatible server."
)


def scrub(text: str) -> str:
    """`text` with the API key (and anything shaped like a key) replaced by `***`."""
    from harness.backends.openai._providers import ALL_KEY_VARIABLES

    for variable in ALL_KEY_VARIABLES:
        key = os.environ.get(variable, "").strip()
        if key:
            text = text.replace(key, "***")
    return _KEY_LIKE.sub(r"\1-***", text)


def _code(exc: Any) -> str | None:
    code = getattr(exc, "code", None)
    body = getattr(exc, "body", None)
    if code is None and isinstance(body, dict):
        code = body.get("code")
    return str(code) if code is not None else None


def describe(exc: Exception) -> str:
    """One line for an SDK error: status, code and the server's message, key scrubbed."""
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    parts = [f"HTTP {status}" if status else type(exc).__name__]
    code = _code(exc)
    if code:
        parts.append(code)
    return scrub(f"{' '.join(parts)}: {message}")


# Azure calls a model only through a deployment named in the request: the harness makes one for
# each fine-tuned model it scores, but calls a base model by its own name (`harness evaluate`).
NO_DEPLOYMENT = (
    "Azure calls a model only through a deployment: the harness deploys the fine-tuned models it "
    "scores (and deletes them after), but calls a base model through a deployment named as the "
    "model, which it does not make. Create a deployment named {model} (a Standard or Global "
    "Standard deployment of a base model bills per token, no hosting fee) and run again"
)


@contextmanager
def api_errors(
    action: str, config: OpenAIBackendConfig, model: str = "the model"
) -> Iterator[None]:
    """Turn SDK exceptions raised while doing `action` into harness errors.

    403 `training_not_available` becomes `TrainingRefused`; 401 a `ConfigError` about the key;
    Azure's 404 `DeploymentNotFound` for a base `model` says what to deploy (`NO_DEPLOYMENT`);
    everything else (after the SDK's retries) a `BackendError` naming the action.
    """
    import openai

    try:
        yield
    except openai.PermissionDeniedError as exc:
        if _code(exc) == "training_not_available":
            raise TrainingRefused(REFUSED_MESSAGE) from None
        raise BackendError(f"{action}: {describe(exc)}") from None
    except openai.AuthenticationError as exc:
        raise ConfigError(f"{action}: {_rejected_key(config, describe(exc))}") from None
    except (openai.RateLimitError, openai.InternalServerError) as exc:
        if getattr(exc, "status_code", None) == 501:  # no retry or wait serves it
            raise BackendError(
                f"{action}: {describe(exc)} (the endpoint does not implement this request)"
            ) from None
        raise BackendError(
            f"{action}: {describe(exc)} (gave up after {config.max_retries} retries; "
            "raise backend.max_retries or try later)"
        ) from None
    except openai.NotFoundError as exc:
        from harness.backends.hosted.pricing import is_fine_tuned

        base = model != "the model" and not is_fine_tuned(model)  # one the harness never deploys
        if config.azure is not None and base and _code(exc) == "DeploymentNotFound":
            hint = NO_DEPLOYMENT.format(model=model)
            raise BackendError(f"{action}: {describe(exc)}. {hint}") from None
        raise BackendError(f"{action}: {describe(exc)}") from None
    except openai.APIConnectionError as exc:
        from harness.backends.openai._providers import resolve_base_url

        where = resolve_base_url(config) or "api.openai.com"
        raise BackendError(
            f"{action}: cannot reach {where} ({describe(exc)}) after {config.max_retries} retries"
            f"{_pinned_endpoint(config)}"
        ) from None
    except openai.APIError as exc:
        raise BackendError(f"{action}: {describe(exc)}") from None


def _pinned_endpoint(config: OpenAIBackendConfig) -> str:
    """`pinned_endpoint_hint` where `backend.base_url` names the endpoint, else nothing."""
    from harness.backends.hosted.config import pinned_endpoint_hint
    from harness.backends.openai._providers import profile_of

    if not config.base_url:
        return ""
    return pinned_endpoint_hint(profile_of(config).base_url_variable)


def _rejected_key(config: OpenAIBackendConfig, reply: str) -> str:
    """Which endpoint refused which key, and what moves the endpoint for this provider."""
    from harness.backends.openai._providers import profile_of, resolve_base_url

    profile = profile_of(config)
    where = resolve_base_url(config) or "https://api.openai.com/v1"
    if config.azure is not None and not config.base_url:
        moved_by = "backend.azure.resource, or backend.base_url"
    elif config.base_url and profile.base_url_variable:  # which moves no endpoint it names
        moved_by = f"backend.base_url; {profile.base_url_variable} does not move it"
    elif profile.base_url_variable:
        moved_by = f"backend.base_url or {profile.base_url_variable}"
    else:
        moved_by = "backend.base_url"
    return (
        f"{where} rejected {profile.key_variable} ({reply}); check the key and the endpoint "
        f"({moved_by})"
    )


def check_endpoint(client: Any, config: OpenAIBackendConfig, fine_tuning: bool = True) -> None:
    """One cheap authenticated request with few retries (a fine-tuning job listing): a missing
    or rejected key, or an endpoint nobody answers, is said before anything is spent instead of
    after minutes of retries. For scoring only (`fine_tuning` False), an endpoint without a
    fine-tuning API (404: one that only serves models, where a model was moved) passes."""
    import openai

    quick = client.with_options(max_retries=1, timeout=min(15.0, config.request_timeout))
    with api_errors("checking the fine-tuning endpoint", config):
        try:
            quick.fine_tuning.jobs.list(limit=1)
        except openai.NotFoundError as exc:
            if fine_tuning:  # an endpoint that only serves models: no sweep can run there
                from harness.backends.openai._providers import profile_of, resolve_base_url

                where = resolve_base_url(config) or "api.openai.com"
                variable = profile_of(config).base_url_variable
                moved = f"backend.base_url (or {variable})" if variable else "backend.base_url"
                raise BackendError(
                    f"{where} has no fine-tuning API (GET /fine_tuning/jobs: {describe(exc)}), "
                    f"so no job can be made there; point {moved} at an endpoint that "
                    "fine-tunes. `harness evaluate` still scores a model this endpoint serves"
                ) from None
