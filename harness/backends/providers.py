"""Provider profiles for endpoints that speak OpenAI's fine-tuning API (`backend.provider`).

Each profile says where the endpoint is by default, which environment variable holds its key and
how the key is sent, which hyperparameters a job takes, and whose price list applies:

- `openai`: https://api.openai.com/v1 (or `OPENAI_BASE_URL`), `Authorization: Bearer
  $OPENAI_API_KEY`; `n_epochs`, `batch_size`, `learning_rate_multiplier`.
- `azure`: `https://{resource}.openai.azure.com/openai` with `api-key: $AZURE_OPENAI_API_KEY` and
  an `api-version` query parameter on every request (the SDK's `AzureOpenAI` client). Same
  hyperparameters as OpenAI. A fine-tuned model is only callable through a deployment, made
  through Azure Resource Manager (`AzureDeployments`) before it is scored and deleted after; its
  hosting price per hour is part of what scoring cost.
- `nebius`: https://api.tokenfactory.nebius.com/v1/ (formerly api.studio.nebius.com; or
  `NEBIUS_BASE_URL`), `Authorization: Bearer $NEBIUS_API_KEY`. Takes an absolute `learning_rate`
  (`base_learning_rate` x the multiplier) and LoRA / warmup / weight-decay extras.

Extras a provider does not take are refused by the config (`harness.backend_config`), naming the
ones it does.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.backend_config import OpenAIBackendConfig
from harness.backends.pricing import Price
from harness.errors import BackendError, ConfigError
from harness.records import TrialSpec


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
        ConfigError: The provider's key variable is not set.
    """
    profile = profile_of(config)
    key = os.environ.get(profile.key_variable, "").strip()
    if not key:
        raise ConfigError(
            f"{profile.key_variable} is not set. The key is read only from the environment, never "
            f"from a file: run `export {profile.key_variable}={profile.key_shape}` (get a key at "
            f"{profile.key_help}; backend.provider is {config.provider})."
        )
    import openai

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


def require_prices(price: Price, hosted: bool = False) -> None:
    """Raise ConfigError, naming the field to set, when a price a trial needs is missing (a
    shipped row whose figure could not be read): before anything is spent."""
    price.training_usd(0)
    price.inference_usd(0, 0, fine_tuned=True)
    if hosted:
        price.hosting_usd(0)


# -- Azure deployments ---------------------------------------------------------------------------

TOKEN_VARIABLE = "AZURE_ACCESS_TOKEN"
SKU_NAMES = {
    "developer": "DeveloperTier",
    "standard": "Standard",
    "globalstandard": "GlobalStandard",
}
_DEPLOY_TIMEOUT = 1800.0  # seconds a deployment may take to become usable


@dataclass(frozen=True)
class Deployment:
    """A deployment made for one evaluation: its name and how long it was hosted."""

    name: str
    hours: float  # billed hours: Azure bills hosting by the hour, a started hour counted whole


class AzureDeployments:
    """Deploys a fine-tuned model through Azure Resource Manager, then deletes it.

    `PUT .../accounts/{resource}/deployments/{name}` with the model and the SKU
    (`backend.azure.deployment_sku`), polled until `provisioningState` is `Succeeded`; `DELETE`
    afterwards, also when scoring failed, so no hosting runs on unnoticed.
    """

    def __init__(
        self, config: OpenAIBackendConfig, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        assert config.azure is not None
        self.azure = config.azure
        self.config = config
        self._sleep = sleep

    def _url(self, name: str) -> str:
        a = self.azure
        return (
            f"{a.management_url.rstrip('/')}/subscriptions/{a.subscription_id}/resourceGroups/"
            f"{a.resource_group}/providers/Microsoft.CognitiveServices/accounts/{a.resource}/"
            f"deployments/{name}?api-version={a.management_api_version}"
        )

    def _client(self) -> Any:
        import httpx2 as httpx

        token = os.environ.get(TOKEN_VARIABLE, "").strip()
        if not token:
            raise ConfigError(
                f"{TOKEN_VARIABLE} is not set: Azure OpenAI deploys fine-tuned models through "
                "Azure Resource Manager; run `export AZURE_ACCESS_TOKEN=$(az account "
                "get-access-token --query accessToken -o tsv)`"
            )
        return httpx.Client(
            headers={"Authorization": f"Bearer {token}"}, timeout=self.config.request_timeout
        )

    def check(self) -> None:
        """Fail early (no spending) when deployments could not be made: no token."""
        self._client().close()

    def run(self, model: str, use: Callable[[str], Any]) -> tuple[Any, Deployment]:
        """Deploy `model`, call `use(deployment_name)`, delete the deployment; the result and
        what hosting it was billed."""
        name = deployment_name(model)
        body = {
            "sku": {"name": SKU_NAMES[self.azure.deployment_sku], "capacity": 1},
            "properties": {"model": {"format": "OpenAI", "name": model, "version": "1"}},
        }
        started = time.monotonic()
        with self._client() as http:
            self._call(http, "PUT", name, json=body)
            try:
                self._until_ready(http, name)
                result = use(name)
            finally:
                self._call(http, "DELETE", name)
        hours = max(1, math.ceil((time.monotonic() - started) / 3600))
        return result, Deployment(name, float(hours))

    def _until_ready(self, http: Any, name: str) -> None:
        waited, interval = 0.0, self.config.poll_interval
        while True:
            state = self._call(http, "GET", name).get("properties", {}).get("provisioningState")
            if state == "Succeeded":
                return
            if state in ("Failed", "Canceled") or waited > _DEPLOY_TIMEOUT:
                raise BackendError(f"Azure deployment {name} is {state} after {waited:.0f} s")
            self._sleep(interval)
            waited += interval
            interval = min(interval * 1.5, self.config.poll_max_interval)

    def _call(self, http: Any, method: str, name: str, **kwargs: Any) -> dict[str, Any]:
        for attempt in range(self.config.max_retries + 1):
            reply = http.request(method, self._url(name), **kwargs)
            if reply.status_code not in (429, 500, 502, 503) or attempt == self.config.max_retries:
                break
            self._sleep(min(2.0**attempt * self.config.poll_interval, 30.0))
        if reply.status_code == 401:
            raise ConfigError(f"Azure Resource Manager rejected {TOKEN_VARIABLE} (HTTP 401)")
        if reply.status_code >= 400:
            raise BackendError(
                f"Azure deployment {name}: {method} answered HTTP {reply.status_code}: "
                f"{reply.text[:300]}"
            )
        return reply.json() if reply.content else {}


def deployment_name(model: str) -> str:
    """A valid, stable deployment name for a model id (letters, digits, `-`, at most 64)."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", model).strip("-")[-64:].lstrip("-") or "harness"
