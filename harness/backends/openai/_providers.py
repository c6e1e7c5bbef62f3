"""Provider profiles for endpoints that speak OpenAI's fine-tuning API (`backend.provider`).

Each profile says where the endpoint is by default, which environment variable holds its key and
how the key is sent, which hyperparameters a job takes, and whose price list applies:

- `openai`: https://api.openai.com/v1 (or `OPENAI_BASE_URL`), `Authorization: Bearer
  $OPENAI_API_KEY`; `n_epochs`, `batch_size`, `learning_rate_multiplier`.
- `azure`: `https://{resource}.openai.azure.com/openai` with `api-key: $AZURE_OPENAI_API_KEY` and
  an `api-version` query parameter on every request (the SDK's `AzureOpenAI` client). Same
  hyperparameters as OpenAI, sent top-level as Azure's document declares them; no job metadata
  (the document has none), so the trial's job key travels in the job's suffix. A fine-tuned
  model is only callable through a deployment, made through Azure Resource Manager
  (`AzureDeployments`) before it is scored and deleted after; its hosting price per hour is part
  of what scoring cost. See `harness.backends.openai._azure`.
- `nebius`: https://api.tokenfactory.nebius.com/v1/ (formerly api.studio.nebius.com; or
  `NEBIUS_BASE_URL`), `Authorization: Bearer $NEBIUS_API_KEY`. Takes an absolute `learning_rate`
  (`base_learning_rate` x the multiplier) and LoRA / warmup / weight-decay extras.

Extras a provider does not take are refused by the config (`harness.backends.openai.config`),
naming the ones it does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.backends.hosted.live_prices import price_nebius
from harness.backends.hosted.pricing import Price, PriceTable
from harness.backends.openai import _azure
from harness.backends.openai._azure import (
    DEPLOYMENT_NOTE,
    SKU_NAMES,
    TOKEN_VARIABLE,
    AzureDeployments,
    Deployment,
    deployment_name,
)
from harness.backends.openai.config import OpenAIBackendConfig
from harness.errors import ConfigError
from harness.records import TrialSpec

__all__ = [
    "DEPLOYMENT_NOTE",
    "PROFILES",
    "SKU_NAMES",
    "TOKEN_VARIABLE",
    "AzureDeployments",
    "Deployment",
    "Profile",
    "bills_hosting",
    "create_arguments",
    "deployment_name",
    "job_hyperparameters",
    "make_client",
    "read_live_prices",
    "resolve_base_url",
    "scoring_hosting_usd",
]


@dataclass(frozen=True)
class Profile:
    """How to reach one provider's OpenAI-compatible fine-tuning endpoint."""

    key_variable: str
    key_help: str  # where a user gets a key
    base_url_variable: str | None  # an environment variable that overrides the default URL
    default_base_url: str | None  # None: the SDK's own default (OpenAI)
    key_shape: str = "..."  # how a key starts, for the message that says how to set it


PROFILES: dict[str, Profile] = {
    "openai": Profile(
        "OPENAI_API_KEY", "https://platform.openai.com/api-keys", "OPENAI_BASE_URL", None, "sk-..."
    ),
    "azure": Profile(
        "AZURE_OPENAI_API_KEY",
        "the Azure portal: your Azure OpenAI resource > Keys and Endpoint",
        None,
        None,  # built from backend.azure.resource
    ),
    "nebius": Profile(
        "NEBIUS_API_KEY",
        "https://tokenfactory.nebius.com (API keys)",
        "NEBIUS_BASE_URL",
        "https://api.tokenfactory.nebius.com/v1/",
    ),
}
ALL_KEY_VARIABLES = tuple(profile.key_variable for profile in PROFILES.values())


def profile_of(config: OpenAIBackendConfig) -> Profile:
    return PROFILES[config.provider]


def resolve_base_url(config: OpenAIBackendConfig) -> str | None:
    """`backend.base_url`, else the provider's environment variable, else its convention."""
    if config.base_url:
        return config.base_url
    if config.azure is not None:
        return f"https://{config.azure.resource}.openai.azure.com/openai"
    profile = profile_of(config)
    from_env = os.environ.get(profile.base_url_variable or "") if profile.base_url_variable else ""
    return from_env or profile.default_base_url


def make_client(config: OpenAIBackendConfig) -> Any:
    """An SDK client for the provider: `openai.OpenAI`, or `openai.AzureOpenAI` for Azure.

    Raises:
        ConfigError: The provider's key variable is not set, or `openai` is not installed.
    """
    try:
        import openai
    except ImportError:
        raise ConfigError(
            "the OpenAI backend needs the `openai` package: pip install 'harness[openai]'"
        ) from None
    profile = profile_of(config)
    key = os.environ.get(profile.key_variable, "").strip()
    if not key:
        raise ConfigError(
            f"{profile.key_variable} is not set. The key is read only from the environment, never "
            f"from a file: run `export {profile.key_variable}={profile.key_shape}` (get a key at "
            f"{profile.key_help}; backend.provider is {config.provider})."
        )

    common: dict[str, Any] = {
        "api_key": key,
        "max_retries": config.max_retries,
        "timeout": config.request_timeout,
    }
    if config.azure is not None:
        url = resolve_base_url(config) or ""  # never empty: built from backend.azure.resource
        return openai.AzureOpenAI(base_url=url, api_version=config.azure.api_version, **common)
    return openai.OpenAI(base_url=resolve_base_url(config), **common)


def job_hyperparameters(config: OpenAIBackendConfig, spec: TrialSpec) -> dict[str, Any]:
    """The `method.supervised.hyperparameters` of a trial's job, in the provider's terms."""
    sampled: dict[str, Any] = {"n_epochs": spec.n_epochs, "batch_size": spec.batch_size}
    if config.provider == "nebius":
        sampled["learning_rate"] = config.base_learning_rate * spec.learning_rate_multiplier
    else:
        sampled["learning_rate_multiplier"] = spec.learning_rate_multiplier
    return {**sampled, **config.hyperparameters}


def bills_hosting(config: OpenAIBackendConfig) -> bool:
    """Azure Standard and Global deployments bill hosting by the hour; Developer deployments
    (the default for scoring) bill none: tokens at the Global rate, deleted after 24 h."""
    return config.azure is not None and config.azure.deployment_sku != "developer"


def scoring_hosting_usd(config: OpenAIBackendConfig, price: Price, hours: float) -> float:
    """What `hours` of a scoring deployment bill: the row's hourly rate, none on Developer."""
    return price.hosting_usd(hours) if bills_hosting(config) else 0.0


def read_live_prices(
    config: OpenAIBackendConfig, base_url: str | None, prices: PriceTable, models: Sequence[str]
) -> None:
    """Nebius publishes its fine-tuning prices only through its models API: read each model's
    row from it before anything is spent (`harness.backends.hosted.live_prices.price_nebius`),
    unless the experiment gives that model's prices itself. Other providers: nothing to read."""
    if config.provider == "nebius":
        own = [model for model in models if model not in config.prices]
        key = os.environ.get(PROFILES["nebius"].key_variable, "").strip()
        if own and not key:
            make_client(config)  # says how to set the key
        price_nebius(prices, base_url, own, key)


# -- jobs in each provider's terms ----------------------------------------------------------------


def create_arguments(config: OpenAIBackendConfig, arguments: dict[str, Any]) -> dict[str, Any]:
    """`fine_tuning.jobs.create` arguments (OpenAI's shapes) in the provider's own terms: as
    they are, or for Azure as its document declares them (`harness.backends.openai._azure`)."""
    if config.azure is not None:
        return _azure.create_arguments(arguments)
    return arguments
