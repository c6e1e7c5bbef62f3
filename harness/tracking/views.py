"""A saved first view of the trials in the MLflow UI, kept in the tracking store.

The MLflow UI keeps an experiment page's view (columns, sort, charts) in the browser's local
storage, except for one server-side form: its "Share" button writes the view as an experiment tag
`mlflow.sharedViewState.<key>` and links to `#/experiments/<id>/runs?viewStateShareKey=<key>`;
whoever opens that link gets the view (MLflow 2.9 and later; read from the 3.17 UI bundle). The
harness writes such a tag itself, so the link `harness ui` prints opens:

- the trials only (the study's parent run filtered out), sorted by validation accuracy, with
  their hyperparameters, accuracies, costs and the `pareto`, study and `synthetic` tags as
  columns and the run-name column wide enough for `t012 ep=3 lr=1.8 bs=16 @ epoch 1 of t007`;
- in chart mode, validation and test accuracy against cost as scatter plots, a parallel
  coordinates plot of the hyperparameters and per-epoch validation accuracy, every trial shown;
  MLflow's one-bar-chart-per-metric cards are folded away in a collapsed section.

MLflow has no Pareto-front view; `harness trials`, `harness report` and `harness dashboard` have.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from harness.tracking.record import (
    COST_USD,
    PARETO_TAG,
    STUDY_TAG,
    SYNTHETIC_TAG,
    TEST_ACCURACY,
    TRIAL_TAG,
)

# The experiment tag prefix and URL parameter of the MLflow UI's shared views.
SHARED_VIEW_TAG = "mlflow.sharedViewState."
SHARE_KEY_PARAM = "viewStateShareKey"
VALID_ACCURACY_FINAL = "valid_accuracy_final"  # what the study was told (see tracking.runs)
PARAMS = ("n_epochs", "learning_rate_multiplier", "batch_size", "train_examples", "base_model")
METRICS = (  # the first three are widened to show their values in full
    VALID_ACCURACY_FINAL,
    TEST_ACCURACY,
    COST_USD,
    "test_macro_f1",
    "epochs_trained",
    "wall_seconds",
)
RUN_NAME_COLUMN = "attributes.`Run Name`"
RUN_NAME_WIDTH = 330  # pixels: "t012 ep=3 lr=1.8 bs=16 n=800 @ epoch 1 of t007" in full
_TRIALS_ONLY = f"tags.`{TRIAL_TAG}` LIKE '%'"  # every trial and checkpoint has its number
_SECTION_MAIN = "harness-accuracy-vs-cost"
_SECTION_REST = "harness-model-metrics"


@dataclass(frozen=True)
class ViewLinks:
    """Where one experiment's saved view opens: as a table of trials, and as charts."""

    table: str
    charts: str


def trials_view_state() -> dict[str, Any]:
    """The view as the MLflow UI shares it: its search facets and its UI state."""
    metrics = [f"metrics.`{m}`" for m in METRICS]
    params = [f"params.`{p}`" for p in PARAMS]
    # Two studies of one experiment file share its MLflow experiment: each trial's `pareto` is
    # its own study's front, and the study says which (a test server's runs say `synthetic`).
    tags = [f"tags.`{t}`" for t in (PARETO_TAG, STUDY_TAG, SYNTHETIC_TAG)]
    return {
        # Search facets: trials only, most accurate on validation first.
        "searchFilter": _TRIALS_ONLY,
        "orderByKey": f"metrics.`{VALID_ACCURACY_FINAL}`",
        "orderByAsc": False,
        # UI state: columns, charts, and every trial charted (the default is the first 10).
        "selectedColumns": [*metrics, *tags, *params],
        # The order they appear in (and where widths apply): accuracies and cost first, in full.
        "columnOrder": [RUN_NAME_COLUMN, *metrics, *tags, *params],
        "columnWidths": {RUN_NAME_COLUMN: RUN_NAME_WIDTH, **{m: 165 for m in metrics[:3]}},
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": _charts(),
        "compareRunSections": [
            _section(_SECTION_MAIN, "Accuracy vs cost", expanded=True),
            # MLflow adds a bar chart per metric to the section of this name: keep it folded.
            _section(_SECTION_REST, "Model metrics", expanded=False),
        ],
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
        "useGroupedValuesInCharts": True,
        "groupBy": None,
        "viewMaximized": False,
        "runListHidden": False,
    }


def _section(uuid: str, name: str, expanded: bool) -> dict[str, Any]:
    return {
        "uuid": uuid,
        "name": name,
        "display": expanded,
        "isReordered": True,
        "deleted": False,
        "isGenerated": False,
    }


def _charts() -> list[dict[str, Any]]:
    base = {"deleted": False, "isGenerated": False, "metricSectionId": _SECTION_MAIN}

    def scatter(uuid: str, y: str, name: str) -> dict[str, Any]:
        return {
            **base,
            "uuid": uuid,
            "type": "SCATTER",
            "displayName": name,
            "xaxis": {"key": COST_USD, "type": "METRIC"},
            "yaxis": {"key": y, "type": "METRIC"},
            "runsCountToCompare": 1000,
        }

    return [
        scatter("harness-valid-vs-cost", VALID_ACCURACY_FINAL, "Validation accuracy vs cost"),
        scatter("harness-test-vs-cost", TEST_ACCURACY, "Test accuracy vs cost"),
        {
            **base,
            "uuid": "harness-parallel",
            "type": "PARALLEL",
            "displayName": "Hyperparameters",
            # Every numeric hyperparameter (each trial logs all four), the training-set size the
            # demo's fidelity sampler climbs included; the base model is one text in most studies.
            "selectedParams": [p for p in PARAMS if p != "base_model"],
            "selectedMetrics": [VALID_ACCURACY_FINAL, COST_USD],
            "showAllRuns": True,
            "runsCountToCompare": 1000,
        },
        {
            **base,
            "uuid": "harness-valid-by-epoch",
            "type": "LINE",
            "displayName": "Validation accuracy by epoch",
            "metricKey": "valid_accuracy",
            "selectedMetricKeys": ["valid_accuracy"],
            "xAxisKey": "step",
            "scaleType": "linear",
            "xAxisScaleType": "linear",
            "lineSmoothness": 0,
            "runsCountToCompare": 1000,
        },
    ]


def share_key(state: dict[str, Any]) -> str:
    """A key named after the view's content: a changed view gets a new tag, old links still work."""
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()
    return f"harness-trials-{digest[:12]}"


def saved_view_links(uri: str, base_url: str) -> dict[str, ViewLinks]:
    """Per experiment that holds trials (not MLflow's `Default`, nor `harness-compare`, whose
    runs are reports), write the saved view and return its links.

    Writing the tag is idempotent; it needs write access to the tracking store (or server).
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    state = trials_view_state()
    key, value = share_key(state), json.dumps(state, separators=(",", ":"))
    links = {}
    for exp in client.search_experiments():
        if exp.name == "Default" or not client.search_runs(
            [exp.experiment_id], _TRIALS_ONLY, max_results=1
        ):
            # A view of trials opens empty where there are none (`harness-compare`'s reports).
            continue
        if exp.tags.get(SHARED_VIEW_TAG + key) != value:
            client.set_experiment_tag(exp.experiment_id, SHARED_VIEW_TAG + key, value)
        page = f"{base_url}/#/experiments/{exp.experiment_id}/runs?{SHARE_KEY_PARAM}={key}"
        links[exp.name] = ViewLinks(table=page, charts=f"{page}&compareRunsMode=CHART")
    return links
