"""The `kind: openai` section: the OpenAI fine-tuning API, or any endpoint that speaks it (Azure
OpenAI, Nebius, a proxy), chosen by `provider` (see `harness.backends.openai._providers`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from harness.backends.hosted.config import HostedConfig, check_extras
from harness.backends.settings import Strict

# Hyperparameters a provider takes beyond the three the sweep samples (`backend.hyperparameters`),
# with the type each must have. OpenAI and Azure OpenAI take none; Nebius's API reference
# (docs.tokenfactory.nebius.com, POST /v1/fine_tuning/jobs) lists these.
PROVIDER_EXTRAS: dict[str, dict[str, type]] = {
    "openai": {},
    "azure": {},
    "nebius": {
        "warmup_ratio": float,
        "weight_decay": float,
        "max_grad_norm": float,
        "lora": bool,
        "lora_r": int,
        "lora_alpha": int,
        "lora_dropout": float,
        "packing": bool,
        "context_length": int,
    },
}


AZURE_SUFFIX_ROOM = 18  # characters of backend.suffix that fit in an Azure job suffix


class AzureSettings(Strict):
    """Where an Azure OpenAI resource lives, and how its fine-tuned models are deployed.

    The data-plane key comes only from `AZURE_OPENAI_API_KEY` (sent as the `api-key` header);
    deployments are made through Azure Resource Manager with the token in `AZURE_ACCESS_TOKEN`
    (`az account get-access-token --query accessToken -o tsv`).
    """

    resource: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")  # {resource}.openai.azure.com
    api_version: str = "2025-04-01-preview"
    subscription_id: str
    resource_group: str
    # A fine-tuned model is called through a deployment; `developer` deployments are the
    # evaluation tier (no SLA), `standard` / `globalstandard` bill hosting per hour.
    deployment_sku: Literal["developer", "standard", "globalstandard"] = "developer"
    management_url: str = "https://management.azure.com"
    management_api_version: str = "2024-10-01"


class OpenAIBackendConfig(HostedConfig):
    """The OpenAI fine-tuning API, or any endpoint that speaks it (Azure OpenAI, a proxy).

    The API key is deliberately not a field: it is read only from the `OPENAI_API_KEY`
    environment variable, so it can never end up in an experiment file or in MLflow.
    """

    kind: Literal["openai"]
    # Whose endpoint: its URL convention, key variable, extra hyperparameters and price list.
    provider: Literal["openai", "azure", "nebius"] = "openai"
    model: str = "gpt-4.1-nano-2025-04-14"
    estimate_margin: float = Field(0.10, ge=0.0, le=1.0)  # added to token-count estimates
    suffix: str = Field("harness", pattern=r"^[a-z0-9-]{1,40}$")
    azure: AzureSettings | None = None

    @model_validator(mode="after")
    def _check_provider(self) -> OpenAIBackendConfig:
        check_extras(self.hyperparameters, PROVIDER_EXTRAS[self.provider], self.provider)
        if (self.provider == "azure") != (self.azure is not None):
            raise ValueError(
                "backend.azure (resource, subscription_id, resource_group) is needed with "
                "provider: azure, and only then"
            )
        if self.azure is not None and len(self.suffix) > AZURE_SUFFIX_ROOM:
            # Azure's job suffix is at most 40 characters and carries the study and job key
            # too (`<suffix>-<study6>-tNNN-<key8>`): that leaves 18 for backend.suffix.
            raise ValueError(
                f"suffix: {self.suffix!r} is {len(self.suffix)} characters; with provider: "
                f"azure at most {AZURE_SUFFIX_ROOM}"
            )
        return self
