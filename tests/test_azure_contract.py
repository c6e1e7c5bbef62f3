"""Azure OpenAI against Azure's own API documents (`tests/azure_fake/azure_openapi_subset.json`).

What the harness sends through the Azure front must validate against the request schemas, and
what the front answers against the response schemas; the front must refuse what the documents do
not declare (job `metadata` among it: there is none at api-version 2025-04-01-preview, which is
why the job key travels in the suffix on Azure); and no deployment may be left billing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from harness.backends.base import MemoryJournal
from harness.backends.openai._azure import DEPLOYMENT_NOTE, AzureDeployments, deployment_name
from harness.backends.openai.backend import OpenAIBackend
from harness.backends.openai.config import AzureSettings, OpenAIBackendConfig
from harness.errors import BackendError
from harness.records import EpochResult, PreparedData, TrialSpec
from tests.azure_fake import FakeAzure
from tests.azure_fake.spec import errors_for, load_subset
from tests.conftest import prepared, review_rows

KEY, TOKEN = "az-test-key-0123456789", "arm-token"
NANO = "gpt-4.1-nano-2025-04-14"
LABELS = ("negative", "positive")
PRICE = {"training_per_1m": 2.0, "fine_tuned_input_per_1m": 0.5, "fine_tuned_output_per_1m": 1.0}
PRICE_NOTE = {"hosting_per_hour": 0.01, "source": "test figure", "as_of": "2026-11-30"}
JOBS = "/openai/fine_tuning/jobs"
_TURNS = [{"role": "user", "content": "good film"}, {"role": "assistant", "content": "positive"}]
LINE = (json.dumps({"messages": _TURNS}) + "\n").encode()


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAzure]:
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_ACCESS_TOKEN", TOKEN)
    with FakeAzure(key=KEY, token=TOKEN, job_duration=0.2) as fake:
        yield fake


def _config(azure: FakeAzure, **options: Any) -> OpenAIBackendConfig:
    return OpenAIBackendConfig(
        kind="openai",
        provider="azure",
        base_url=azure.endpoint,
        poll_interval=0.02,
        poll_max_interval=0.05,
        azure={
            "resource": "harness-test",
            "subscription_id": "sub",
            "resource_group": "rg",
            "management_url": azure.management_url,
        },
        prices={NANO: {**PRICE, **PRICE_NOTE}},
        **options,
    )


def _data() -> PreparedData:
    return prepared(review_rows(20, seed=1), LABELS, "d" * 64, "tiny")


def _spec(number: int = 3) -> TrialSpec:
    return TrialSpec(
        number=number,
        n_epochs=2,
        base_model=NANO,
        learning_rate_multiplier=0.5,
        batch_size=4,
        seed=7,
    )


def _journal(study: str = "contract") -> MemoryJournal:
    return MemoryJournal({"study_name": study})


def _on_epoch(epoch: EpochResult) -> bool:
    return True


# -- the documents ---------------------------------------------------------------------------------


def test_the_subset_names_its_source_and_azure_jobs_have_no_metadata() -> None:
    subset = load_subset()
    header = " ".join(subset["$comment"])
    assert "Azure/azure-rest-api-specs" in header and "MIT License" in header
    for part in ("data_plane", "resource_manager"):
        source = subset[part]["source"]
        assert source["repo"] == "Azure/azure-rest-api-specs"
        assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    plane = subset["data_plane"]
    # the documents are the versions the harness sends by default
    assert plane["api_version"] == AzureSettings.model_fields["api_version"].default
    manager = subset["resource_manager"]["api_version"]
    assert manager == AzureSettings.model_fields["management_api_version"].default
    definitions = plane["definitions"]
    # (a): neither the create body nor the job object has metadata; the listing cannot filter.
    assert "metadata" not in definitions["FineTuningJobCreation"]["properties"]
    assert "metadata" not in definitions["FineTuningJob"]["properties"]
    assert "suffix" in definitions["FineTuningJob"]["properties"]
    assert plane["paths"]["/fine_tuning/jobs"]["get"]["query"] == ["after", "limit"]
    job = {"model": NANO, "training_file": "file-1", "metadata": {"harness_job_key": "k"}}
    assert errors_for("data_plane", "FineTuningJobCreation", job, strict=True)
    bad_state = {"model": NANO, "training_file": "file-1", "status": "queued"}
    assert errors_for("data_plane", "FineTuningJob", bad_state)  # the validator can fail


# -- a trial through the front -------------------------------------------------------------------


def test_a_trial_sends_and_receives_only_what_azures_documents_declare(azure: FakeAzure) -> None:
    backend = OpenAIBackend(_config(azure))
    journal = _journal()
    model = backend.fine_tune(_spec(), _data(), _on_epoch, journal)
    assert model.model_ref.startswith("ft:")
    creates = [r for r in azure.requests if r["method"] == "POST" and r["path"] == JOBS]
    assert len(creates) == 1
    body = creates[0]["json"]
    assert errors_for("data_plane", "FineTuningJobCreation", body, strict=True) == []
    assert body["method"] == {"type": "supervised"}
    assert body["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": 4,
        "learning_rate_multiplier": 0.5,
    }
    # the job key, journalled before the create, travels in the suffix (<= 40 characters)
    key = journal.recall("job_key") or ""
    assert body["suffix"].endswith("-t003-" + key[:8]) and len(body["suffix"]) <= 40
    uploads = [r for r in azure.requests if r["path"] == "/openai/files" and r["method"] == "POST"]
    assert uploads and all(r["form"]["purpose"] == "fine-tune" for r in uploads)
    puts = [r for r in azure.requests if r["method"] == "PUT"]
    assert puts
    for put in puts:
        assert errors_for("resource_manager", "Deployment", put["json"], strict=True) == []
        assert put["json"]["tags"] == {"harness_study": "contract"}
    assert all("api-version" in r["query"] for r in azure.requests)
    assert not [r for r in azure.requests if r["path"].startswith("/openai/chat/")]
    assert azure.errors == [] and azure.refusals == []
    # every deployment was deleted, and the journal no longer holds one
    assert azure.arm.live == {} and all(d.deleted for d in azure.deployments_made)
    assert journal.recall(DEPLOYMENT_NOTE) == ""


def test_a_lost_create_reply_is_found_by_the_suffix_not_paid_twice(azure: FakeAzure) -> None:
    azure.inner.state.fail_next("/fine_tuning/jobs", 500, method="POST", after=True)
    backend = OpenAIBackend(_config(azure, max_retries=2))
    journal = _journal()
    backend.fine_tune(_spec(), _data(), _on_epoch, journal)
    assert len(azure.inner.state.jobs) == 1
    assert journal.recall("job_id") in azure.inner.state.jobs
    listings = [r for r in azure.requests if r["method"] == "GET" and r["path"] == JOBS]
    assert listings and not azure.ignored  # looked up by listing, with no metadata filter


def test_the_front_refuses_what_the_documents_do_not_declare(azure: FakeAzure) -> None:
    version = {"api-version": "2025-04-01-preview"}
    with httpx2.Client(base_url=azure.root, headers={"api-key": KEY}) as http:
        file_id = http.post(
            "/openai/files",
            params=version,
            files={"file": ("t.jsonl", LINE * 10)},
            data={"purpose": "fine-tune"},
        ).json()["id"]
        job = {"model": NANO, "training_file": file_id, "suffix": "harness"}
        for extra in (
            {"metadata": {"harness_job_key": "k"}},
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {}}}},
            {"suffix": "x" * 41},
        ):
            reply = http.post(JOBS, params=version, json={**job, **extra})
            assert reply.status_code == 400, reply.text
            assert reply.json()["error"]["code"] == "invalidPayload"
            assert errors_for("data_plane", "ErrorResponse", reply.json()) == []
        listed = http.get(JOBS, params={**version, "metadata[harness_job_key]": "k"})
        assert listed.status_code == 200 and azure.ignored == ["metadata[harness_job_key]"]
        no_version = http.get(JOBS)
        assert no_version.status_code == 400
        wrong_key = http.get(JOBS, params=version, headers={"api-key": "nope"})
        assert wrong_key.status_code == 401
    arm = (
        f"{azure.root}/subscriptions/s/resourceGroups/r/providers/"
        "Microsoft.CognitiveServices/accounts/a/deployments/d"
    )
    with httpx2.Client(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        body = {
            "sku": {"name": "Standard"},
            "properties": {"model": {"name": NANO}},
            "color": "red",
        }
        assert http.put(arm, params={"api-version": "2024-10-01"}, json=body).status_code == 400
        assert http.delete(arm, params={"api-version": "2024-10-01"}).status_code == 204


# -- no deployment left billing ------------------------------------------------------------------


def _put(azure: FakeAzure, name: str, study: str) -> None:
    url = (
        f"{azure.root}/subscriptions/sub/resourceGroups/rg/providers/"
        f"Microsoft.CognitiveServices/accounts/harness-test/deployments/{name}"
    )
    body = {
        "sku": {"name": "DeveloperTier", "capacity": 1},
        "properties": {"model": {"format": "OpenAI", "name": NANO, "version": "1"}},
        "tags": {"harness_study": study},
    }
    reply = httpx2.put(
        url,
        params={"api-version": "2024-10-01"},
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert reply.status_code == 201, reply.text


def test_a_trials_recorded_deployment_is_deleted_before_anything_else(azure: FakeAzure) -> None:
    config = _config(azure)
    name = deployment_name(NANO, "contract", config.suffix)
    _put(azure, name, "contract")
    journal = _journal()
    journal.record(DEPLOYMENT_NOTE, name)  # what a killed scoring leaves
    OpenAIBackend(config).fine_tune(_spec(), _data(), _on_epoch, journal)
    first = next(r for r in azure.requests if r["method"] in ("DELETE", "POST"))
    assert first["method"] == "DELETE" and first["path"].endswith(f"/deployments/{name}")
    assert name not in azure.arm.live and journal.recall(DEPLOYMENT_NOTE) == ""


def test_release_deletes_the_studys_deployments_no_running_trial_holds(azure: FakeAzure) -> None:
    deployments = AzureDeployments(_config(azure))
    mine = deployment_name("ft:a", "study-a")
    held = deployment_name("ft:b", "study-a")
    other = deployment_name("ft:c", "study-b")
    for name, study in ((mine, "study-a"), (held, "study-a"), (other, "study-b")):
        _put(azure, name, study)
    assert sorted(deployments.live("study-a")) == sorted([mine, held])
    assert deployments.release("study-a", {held}) == [mine]
    assert sorted(azure.arm.live) == sorted([held, other])
    listed = [body for schema, body in azure.arm.replies if schema == "DeploymentListResult"]
    assert listed and all(b["value"] for b in listed)


# -- which deployment scores, and what its hosting costs (issue #24) -----------------------------


@pytest.mark.parametrize(("sku", "billed"), [("developer", False), ("standard", True)])
def test_scoring_deployments_bill_hosting_only_off_the_developer_tier(
    azure: FakeAzure, sku: str, billed: bool
) -> None:
    """Developer deployments (the default) bill no hosting; a Standard one bills the row's
    hourly rate; the trial says which tier scored it."""
    config = _config(azure)
    assert config.azure is not None
    settings = config.azure.model_copy(update={"deployment_sku": sku})
    config = config.model_copy(update={"azure": settings})
    journal = _journal()
    backend = OpenAIBackend(config)
    backend.fine_tune(_spec(), _data(), _on_epoch, journal)
    assert journal.recall("azure_deployment_sku") == sku
    assert journal.recall("serving_hosting_per_hour") == "0.01"  # the row's, for ownership
    estimate = backend.estimate(_spec(), _data()).evaluation
    assert (estimate.hosting_usd > 0) is billed
    scored = backend.evaluations.values()
    assert scored and (sum(e.cost.hosting_usd for e in scored) > 0) is billed
    assert (sum(e.cost.hosting_hours for e in scored) > 0) is billed  # hours billed, not used


def test_a_standard_deployment_never_outlives_the_hour_the_budget_reserved_for_it(
    azure: FakeAzure, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The estimate reserves one hour of hosting per scoring deployment; a deployment slow to
    provision or to score (a capacity-1 Standard deployment serves 1K tokens a minute) would
    bill a second hour nobody reserved. Scoring stops before the hour is out, the deployment is
    deleted and the trial fails: it is never billed past its reservation."""
    import harness.backends.openai._azure as azure_module

    class Clock:  # a deployment takes 50 minutes to provision, then each request a minute
        @staticmethod
        def monotonic() -> float:
            provisioned = any(r["method"] == "PUT" for r in azure.requests)
            return 60.0 * len(azure.requests) + 3000.0 * provisioned

        sleep = staticmethod(time.sleep)

    monkeypatch.setattr(azure_module, "time", Clock)
    config = _config(azure, eval_concurrency=1)
    assert config.azure is not None
    settings = config.azure.model_copy(update={"deployment_sku": "standard"})
    backend = OpenAIBackend(config.model_copy(update={"azure": settings}))
    journal = _journal()
    with pytest.raises(BackendError, match="reserved"):
        backend.fine_tune(_spec(), _data(), _on_epoch, journal)
    assert not azure.arm.live and journal.recall(DEPLOYMENT_NOTE) == ""
    assert all(e.cost.hosting_hours <= 1 for e in backend.evaluations.values())


def test_a_base_model_without_a_deployment_says_what_to_deploy(azure: FakeAzure) -> None:
    """`harness evaluate --model BASE` on Azure: a base model is called only through a
    deployment, which the harness makes for fine-tuned models only. The user saw Azure's bare
    "404 DeploymentNotFound: The API deployment for this resource does not exist", nothing on
    what to deploy; the error now says, and the harness made no deployment."""
    backend = OpenAIBackend(_config(azure))
    data = _data()
    with pytest.raises(BackendError) as raised:
        backend.predict(NANO, data.test.texts, LABELS)
    message = str(raised.value)
    assert "DeploymentNotFound" in message
    assert f"a deployment named {NANO}" in message and "bills per token" in message
    assert not azure.arm.live and KEY not in message


@pytest.mark.parametrize(
    ("sku", "billing"), [("developer", "no hosting fee"), ("standard", "by the hour")]
)
def test_a_promoted_models_deployment_is_said_as_it_is_made_and_deleted(
    azure: FakeAzure, capsys: pytest.CaptureFixture[str], sku: str, billing: str
) -> None:
    """`harness predict` and `harness serve` deploy a promoted Azure model for each call and
    delete it after (minutes on real Azure, hosting billed by the hour off the Developer tier)
    and said nothing meanwhile: the call looked hung. Each step is now said on stderr."""
    from types import SimpleNamespace

    import pandas as pd

    from harness.handoff.pyfunc import HarnessClassifier

    config = _config(azure)
    assert config.azure is not None
    config = config.model_copy(
        update={"azure": config.azure.model_copy(update={"deployment_sku": sku})}
    )
    backend = OpenAIBackend(config)
    model = backend.fine_tune(_spec(), _data(), _on_epoch, _journal()).model_ref
    package = backend.package(model, LABELS)
    classifier = HarnessClassifier()
    origin = {"study": "contract", "trial": 3}
    context = SimpleNamespace(model_config={**package.config, **origin}, artifacts={})
    classifier.load_context(context)
    capsys.readouterr()
    classifier.predict(None, pd.DataFrame({"text": ["good film"]}))
    said = capsys.readouterr()
    (made,) = [d for d in azure.deployments_made if d.name.startswith("harness-")][-1:]
    lines = said.err.splitlines()
    assert any(f"creating Azure deployment {made.name}" in line for line in lines), said.err
    assert any(billing in line for line in lines), said.err
    assert any(f"deleted Azure deployment {made.name}" in line for line in lines), said.err
    assert said.out == ""


def test_an_evaluate_cut_short_on_a_standard_deployment_records_its_hour_of_hosting(
    azure: FakeAzure, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`harness evaluate` killed while it scores a fine-tuned model through a Standard
    deployment: the deployment is deleted, but its started hour is billed. What the interrupt
    records as paid counts that hour, not only the answers' tokens."""
    import signal

    from mlflow import MlflowClient

    from harness.backends.hosted._eval import Evaluator
    from tests.cli_runner import run_cli
    from tests.conftest import openai_experiment
    from tests.test_providers import azure_backend

    standard = {**azure_backend(azure)["azure"], "deployment_sku": "standard"}
    config = _config(azure)
    assert config.azure is not None
    settings = config.azure.model_copy(update={"deployment_sku": "standard"})
    backend = OpenAIBackend(config.model_copy(update={"azure": settings}))
    model = backend.fine_tune(_spec(), _data(), _on_epoch, _journal()).model_ref
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    chat, asked = Evaluator._chat, []

    def killed_on_the_third(self: Evaluator, *args: object) -> object:
        asked.append(1)
        if len(asked) == 3:
            signal.raise_signal(signal.SIGTERM)
        return chat(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Evaluator, "_chat", killed_on_the_third)
    experiment = {**azure_backend(azure, eval_concurrency=1), "azure": standard}
    path = openai_experiment(tmp_path, "ev", 1, backend=experiment)
    result = run_cli("evaluate", str(path), "--model", model)
    assert result.exit_code == 143, result.output
    assert azure.arm.live == {}
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("ev").experiment_id])  # type: ignore[union-attr]
    assert run.info.status == "KILLED"
    assert run.data.metrics["eval_hosting_hours"] == 1
    assert run.data.metrics["eval_hosting_usd"] == pytest.approx(0.01)
    assert run.data.metrics["eval_cost_usd"] > 0.01  # and the answers' tokens
    assert "1 h of hosting" in result.stderr.replace("\n", " "), result.stderr
