"""Azure OpenAI specifics, as Azure's own API documents state them.

Fine-tuning jobs (data plane, api-version 2025-04-01-preview; `Azure/azure-rest-api-specs`,
`.../AzureOpenAI/authoring/preview/2025-04-01-preview/azureopenai.json`): the create body
`FineTuningJobCreation` declares `model`, `training_file`, `validation_file`, `hyperparameters`
(`n_epochs`, `batch_size`, `learning_rate_multiplier`), `suffix` (up to 40 characters of
`a-z A-Z 0-9 - _`), `seed`, `integrations` and `method` (`{"type": "supervised"}`, no nested
hyperparameters). There is no `metadata`, the job object has none either, and the job listing
takes only `after` and `limit`. So the trial's job key cannot travel in metadata as on OpenAI:
it travels in the suffix, `<backend.suffix>-<study6>-tNNN-<key8>` (at most 40 characters, so
`backend.suffix` has at most 18 here), which the job object returns; a job is found again by it
and a study's jobs by `<backend.suffix>-<study6>-t` (`_jobs.JobRunner`, as for Nebius).

Deployments (Resource Manager, api-version 2024-10-01): a fine-tuned model is callable only
through a deployment, hosted (and billed) by the hour while it exists, used or not. Each is
named `<prefix>-<study6>-<model6>-<model tail>` and tagged `harness_study`, recorded in the
trial's journal before the `PUT` and cleared after the `DELETE`; a rerun of the trial deletes a
recorded one first (`clear_recorded`), and a sweep deletes the study's deployments no running
trial holds (`release`), so a killed sweep leaves nothing billing.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from harness.backends.base import SERVING_HOSTING_NOTE, Journal
from harness.backends.hosted._job_keys import study_tag
from harness.backends.hosted.pricing import PriceTable
from harness.backends.openai.config import OpenAIBackendConfig
from harness.errors import BackendError, ConfigError
from harness.records import Cost

TOKEN_VARIABLE = "AZURE_ACCESS_TOKEN"
SKU_NAMES = {
    "developer": "DeveloperTier",
    "standard": "Standard",
    "globalstandard": "GlobalStandard",
}
DEPLOYMENT_NOTE = "azure_deployments"  # journal key: the trial's live deployments, space-separated
STUDY_TAG = "harness_study"  # the Resource Manager tag naming a deployment's study
_DEPLOY_TIMEOUT = 1800.0  # seconds a deployment may take to become usable
# Hours of hosting the budget reserves for each scoring deployment (`OpenAIBackend.estimate`):
# provisioning and scoring stop before they are out, so none bills an hour nobody reserved.
RESERVED_HOURS = 1
_PREFIX = 12  # characters of `backend.suffix` kept in job suffixes and deployment names


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")


# -- fine-tuning jobs ----------------------------------------------------------------------------


def create_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """OpenAI-shaped `fine_tuning.jobs.create` arguments as `FineTuningJobCreation` declares
    them: hyperparameters top-level, `method` as `{"type": ...}`, no `metadata` (the key is in
    the suffix), no nulls."""
    shaped = {k: v for k, v in arguments.items() if v is not None and k != "metadata"}
    method = dict(shaped.pop("method", None) or {"type": "supervised"})
    kind = str(method.get("type", "supervised"))
    hyperparameters = (method.get(kind) or {}).get("hyperparameters")
    if hyperparameters:
        shaped["hyperparameters"] = hyperparameters
    shaped["method"] = {"type": kind}
    return shaped


# -- deployments ---------------------------------------------------------------------------------


def deployment_name(model: str, study: str | None = None, prefix: str = "harness") -> str:
    """`<prefix>-<study6>-<model6>-<model tail>`: at most 64 of letters, digits and `-`, the
    same for the same study and model, different for different models (the model's digest)."""
    digest = hashlib.sha256(model.encode("utf-8")).hexdigest()[:6]
    head = f"{_slug(prefix)[:_PREFIX] or 'harness'}-{study_tag(study or '')}-{digest}"
    tail = _slug(model)[-(63 - len(head)) :].lstrip("-")
    return f"{head}-{tail}" if tail else head


@dataclass(frozen=True)
class Deployment:
    """A deployment made for one evaluation: its name and how long it was hosted."""

    name: str
    hours: float  # billed hours: Azure bills hosting by the hour, a started hour counted whole


class AzureDeployments:
    """Deploys a fine-tuned model through Azure Resource Manager, then deletes it.

    `PUT .../accounts/{resource}/deployments/{name}` with the model, the SKU
    (`backend.azure.deployment_sku`) and a `harness_study` tag, polled until `provisioningState`
    is `Succeeded`; `DELETE` afterwards, also when scoring failed. Thread safety: one instance
    serves every trial thread; the journal of the trial a thread scores for is set with
    `journalled` (thread-local).
    """

    def __init__(
        self,
        config: OpenAIBackendConfig,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] | None = None,
    ) -> None:
        assert config.azure is not None
        self.azure = config.azure
        self.config = config
        self.study: str | None = None  # the study of the last journalled trial
        self._sleep = sleep
        self._clock = clock or time.monotonic
        self._local = threading.local()
        self._inflight: set[str] = set()  # deployments this process is using now
        self._guard = threading.Lock()
        # Where a promoted model's call says each deployment it makes and deletes (minutes,
        # maybe billed by the hour); a sweep's trials say nothing: their journal records them.
        self.announce: Callable[[str], None] | None = None
        self.made: list[tuple[str, Deployment]] = []  # (model, deployment): `hosting_billed`

    def note_tier(self, journal: Journal, hosting_per_hour: float | None) -> None:
        """Say which deployment tier scores the trial (`azure_deployment_sku`) and what serving
        its model bills an hour on a Standard or Global deployment (`serving_hosting_per_hour`,
        for its cost of ownership): a Developer deployment bills no hosting, but Azure deletes
        it after 24 h, so production needs one that does."""
        journal.record("azure_deployment_sku", self.azure.deployment_sku)
        if hosting_per_hour is not None:
            journal.record(SERVING_HOSTING_NOTE, f"{hosting_per_hour:g}")

    @contextlib.contextmanager
    def journalled(self, journal: Journal) -> Iterator[None]:
        """Deployments made in this thread inside the block are noted in `journal`."""
        self.study = journal.recall("study_name") or self.study
        previous = getattr(self._local, "journal", None)
        self._local.journal = journal
        try:
            yield
        finally:
            self._local.journal = previous

    def _account(self) -> str:
        a = self.azure
        return (
            f"{a.management_url.rstrip('/')}/subscriptions/{a.subscription_id}/resourceGroups/"
            f"{a.resource_group}/providers/Microsoft.CognitiveServices/accounts/{a.resource}"
        )

    def _url(self, name: str | None) -> str:
        where = "/deployments" + (f"/{name}" if name else "")
        return f"{self._account()}{where}?api-version={self.azure.management_api_version}"

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

    def run(
        self, model: str, use: Callable[[str, Callable[[], None]], Any]
    ) -> tuple[Any, Deployment]:
        """Deploy `model`, call `use(deployment_name, check)`, delete the deployment; the result
        and what hosting it was billed. The name is in the trial's journal from before the `PUT`
        until the `DELETE` has succeeded. `check()`, called before each request, raises
        BackendError once the deployment nears the `RESERVED_HOURS` the budget reserved for it
        (also while it is provisioned), so it is deleted before it bills an hour more."""
        name = deployment_name(model, self.study, self.config.suffix)
        body = {
            "sku": {"name": SKU_NAMES[self.azure.deployment_sku], "capacity": 1},
            "properties": {"model": {"format": "OpenAI", "name": model, "version": "1"}},
            "tags": {STUDY_TAG: (self.study or "")[:256]},
        }
        journal: Journal | None = getattr(self._local, "journal", None)
        started = self._clock()
        # Time for the requests in flight to end (one request timeout) and a minute to delete.
        deadline = started + RESERVED_HOURS * 3600 - self.config.request_timeout - 60

        def check() -> None:
            if self._clock() > deadline:
                raise BackendError(
                    f"Azure deployment {name} reached the {RESERVED_HOURS} h of hosting the "
                    "budget reserved for it; it is deleted and the rest is not scored"
                )

        say = self.announce or (lambda text: None)
        with self._client() as http, self._using(name):
            _note(journal, add=name)  # before the PUT: a kill from here on leaves a record
            try:
                say(self._creating(name, model))
                self._call(http, "PUT", self._url(name), json=body)
                self._until_ready(http, name, check)
                say(f"Azure deployment {name} ready after {self._clock() - started:.0f} s")
                result = use(name, check)
            finally:
                # Also after a failed PUT: a lost reply may have made the deployment all the same.
                self._call(http, "DELETE", self._url(name))
                _note(journal, remove=name)
                hours = max(1, math.ceil((self._clock() - started) / 3600))
                with self._guard:
                    self.made.append((model, Deployment(name, float(hours))))
                say(f"deleted Azure deployment {name} after {self._clock() - started:.0f} s")
        return result, Deployment(name, float(hours))

    def hosting_billed(self, prices: PriceTable) -> Cost:
        """What hosting every deployment this process made was billed (none on the Developer
        tier): for a call cut short, which returned no cost, so nothing counts it twice."""
        if self.azure.deployment_sku == "developer":
            return Cost()
        with self._guard:
            made = list(self.made)
        billed = Cost()
        for model, deployment in made:
            usd = prices.lookup(model).hosting_usd(deployment.hours)
            billed += Cost(usd=usd, hosting_usd=usd, hosting_hours=deployment.hours)
        return billed

    def _creating(self, name: str, model: str) -> str:
        """What making a deployment means for the caller: a wait, and hosting by the hour."""
        sku = self.azure.deployment_sku
        billing = (
            "a Developer deployment: no hosting fee"
            if sku == "developer"
            else f"a {SKU_NAMES[sku]} deployment bills hosting by the hour while it exists, a "
            "started hour counted whole"
        )
        return (
            f"creating Azure deployment {name} for {model} to call it (this can take minutes; "
            f"{billing}); it is deleted after this call"
        )

    @contextlib.contextmanager
    def _using(self, name: str) -> Iterator[None]:
        with self._guard:
            self._inflight.add(name)
        try:
            yield
        finally:
            with self._guard:
                self._inflight.discard(name)

    def clear_recorded(self, journal: Journal) -> list[str]:
        """Delete the deployments a killed run of this trial left (noted in its journal)."""
        names = (journal.recall(DEPLOYMENT_NOTE) or "").split()
        if not names:
            return []
        with self._client() as http:
            for name in names:
                self._call(http, "DELETE", self._url(name))
                _note(journal, remove=name)
        return names

    def live(self, study: str) -> list[str]:
        """The names of this study's deployments on the resource (by tag or name)."""
        head = f"{_slug(self.config.suffix)[:_PREFIX] or 'harness'}-{study_tag(study)}-"
        found: list[str] = []
        url: str | None = self._url(None)
        with self._client() as http:
            while url:
                page = self._call(http, "GET", url)
                for item in page.get("value", []):
                    name = str(item.get("name", ""))
                    tagged = (item.get("tags") or {}).get(STUDY_TAG) == study
                    if tagged or name.startswith(head):
                        found.append(name)
                url = page.get("nextLink")
        return found

    def release(self, study: str, held: Collection[str]) -> list[str]:
        """Delete this study's deployments that no running trial holds; their names."""
        with self._guard:
            busy = set(held) | self._inflight
        leftover = [name for name in self.live(study) if name not in busy]
        with self._client() as http:
            for name in leftover:
                self._call(http, "DELETE", self._url(name))
        return leftover

    def _until_ready(self, http: Any, name: str, check: Callable[[], None]) -> None:
        waited, interval = 0.0, self.config.poll_interval
        while True:
            check()
            found = self._call(http, "GET", self._url(name))
            state = found.get("properties", {}).get("provisioningState")
            if state == "Succeeded":
                return
            if state in ("Failed", "Canceled") or waited > _DEPLOY_TIMEOUT:
                raise BackendError(f"Azure deployment {name} is {state} after {waited:.0f} s")
            self._sleep(interval)
            waited += interval
            interval = min(interval * 1.5, self.config.poll_max_interval)

    def _call(self, http: Any, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        for attempt in range(self.config.max_retries + 1):
            reply = http.request(method, url, **kwargs)
            if reply.status_code not in (429, 500, 502, 503) or attempt == self.config.max_retries:
                break
            self._sleep(min(2.0**attempt * self.config.poll_interval, 30.0))
        if reply.status_code == 401:
            raise ConfigError(f"Azure Resource Manager rejected {TOKEN_VARIABLE} (HTTP 401)")
        if method == "DELETE" and reply.status_code == 404:
            return {}  # already gone: what a DELETE wants
        if reply.status_code >= 400:
            where = url.split("/accounts/", 1)[-1].split("?", 1)[0]
            raise BackendError(
                f"Azure deployments ({where}): {method} answered HTTP {reply.status_code}: "
                f"{reply.text[:300]}"
            )
        return reply.json() if reply.content else {}


def _note(journal: Journal | None, add: str | None = None, remove: str | None = None) -> None:
    """Add or remove a name in the trial's note of live deployments."""
    if journal is None:
        return
    names = [n for n in (journal.recall(DEPLOYMENT_NOTE) or "").split() if n != remove]
    if add is not None and add not in names:
        names.append(add)
    journal.record(DEPLOYMENT_NOTE, " ".join(names))
