"""Hand-off: register the chosen model and classify with it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli.common import (
    ExperimentArg,
    SetOption,
    app,
    console,
    err_console,
    load_target,
    stop_signals_as_interrupt,
    user_errors,
)
from harness.errors import ConfigError

StoreOfOption = Annotated[
    str | None,
    typer.Option(
        metavar="EXPERIMENT",
        help="Find the model in this experiment's tracking store (its tracking.uri).",
    ),
]


# The backend settings `promote --set` may change: where the model's files are, on what device,
# and how a hosted model is reached and priced. Any other (max_length, system_prompt, format,
# the model itself...) would change what the registered model predicts, while its tags quote the
# accuracy its trial measured without it.
PROMOTE_SETTABLE = (
    *("models_dir", "device", "eval_batch_size", "calibration", "dollars_per_hour", "instance"),
    *("base_url", "azure", "serving", "prices", "estimate_margin", "request_timeout"),
    *("max_retries", "max_concurrency", "eval_concurrency", "poll_interval", "poll_max_interval"),
)


def _check_promote_settings(overrides: list[str] | None) -> None:
    """Refuse a `--set backend.KEY` that would change what the promoted model predicts."""
    for override in overrides or []:
        key = override.split("=", 1)[0].strip()
        head, _, rest = key.partition(".")
        if head == "backend" and rest.split(".")[0] not in PROMOTE_SETTABLE:
            allowed = ", ".join(f"backend.{k}" for k in PROMOTE_SETTABLE)
            raise ConfigError(
                f"--set {key}: promote registers the model as its trial was trained and scored "
                "(its tags quote that accuracy), so a setting that changes what it predicts "
                f"cannot be set here; the backend settings promote may set: {allowed}"
            )


@app.command()
@user_errors
def promote(
    experiment: ExperimentArg,
    trial: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Trial number to promote (default: the report's recommendation)."
        ),
    ] = None,
    alias: Annotated[
        str, typer.Option(metavar="ALIAS", help="Registry alias to point at the model.")
    ] = "champion",
    set_: SetOption = None,
) -> None:
    """Register a trial's model in the MLflow model registry under an alias."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from harness.handoff.promote import promote as promote_trial
    from harness.records import usd

    _check_promote_settings(set_)
    # A backend --set changes how the model is reached: the version registered before keeps the
    # old endpoint (or folder), so a new one is registered.
    moved = any(item.strip().startswith("backend.") for item in set_ or [])
    target = load_target(experiment, set_)
    done = promote_trial(target, trial_number=trial, alias=alias, new_version=moved)
    another = "" if trial is not None else " Pass --trial N to promote another."
    action = "was already registered as" if done.reused else "registered as"
    synthetic = " (synthetic: test server)" if done.synthetic else ""
    lines = [
        f"Chose {done.reason}{another}",
        f"Trial {done.trial_number} ({done.backend}, test accuracy {done.test_accuracy:.4f}, "
        f"cost {usd(done.cost_usd)}){synthetic} {action} {done.name} version {done.version}; "
        f"alias {done.alias!r} points at it.",
        f"Model URI: {done.uri}  (logged on MLflow run {done.run_id})",
        f'Try it:    harness predict {done.uri} "a sentence of your own"',
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


# Keys a `--json` record gives the prediction; an input column of the same name is renamed.
PREDICTION_KEYS = ("label", "confidence", "scores")


@app.command()
@user_errors
def predict(
    model_uri: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="models:/NAME@ALIAS, models:/NAME/VERSION, NAME@ALIAS, or a registered name "
            "(its champion).",
        ),
    ],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            metavar="PATH",
            help="Texts from a file: one per line, or a CSV / TSV / JSONL / JSON / Parquet "
            "file with a text column.",
        ),
    ] = None,
    column: Annotated[
        str, typer.Option(metavar="NAME", help="The text column of a table (CSV, JSONL, ...).")
    ] = "text",
    json_: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per text: the input row's columns (a table file's), "
            "then label, confidence and every label's score (an input column named label, "
            "confidence or scores becomes input_label, ...).",
        ),
    ] = False,
    experiment: StoreOfOption = None,
    set_: SetOption = None,
) -> None:
    """Classify texts with a registered model, in the prompt format it was trained with.

    Empty and whitespace-only texts are skipped (and counted on stderr). The model carries its
    own prompt format and settings; an experiment only says where the registry is.
    """
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from harness.handoff.pyfunc import read_rows, row_text, skipped_message
    from harness.handoff.serve import classify, load_registered_model

    if set_ and experiment is None:
        raise ConfigError("--set applies to an experiment's config: give --experiment too")
    inputs = [({"text": text}, text) for text in texts or []]
    if file is not None:
        inputs += [(row, row_text(row, column)) for row in read_rows(file, column)]
    kept = [(row, text) for row, text in inputs if text.strip()]
    if len(kept) < len(inputs):
        message = skipped_message(len(inputs) - len(kept))
        err_console.print(message, markup=False, highlight=False)
    if not kept:
        given = f"all {len(inputs)} texts given are empty" if inputs else "no texts given"
        raise ConfigError(f"nothing to classify ({given}): give texts as arguments or --file PATH")
    store = None
    if experiment is not None:
        from harness.tracking.store import tracking_uri

        store = tracking_uri(load_target(experiment, set_))
    # As Ctrl-C: a deployment made to call the model (Azure, billed while it exists) is deleted.
    with stop_signals_as_interrupt():
        frame = classify(load_registered_model(model_uri, store), [text for _, text in kept])
    _print_predictions(kept, frame, json_)


def _print_predictions(rows: list[tuple[dict[str, Any], str]], frame: Any, as_json: bool) -> None:
    import json

    from rich.table import Table

    scores = [c for c in frame.columns if c.startswith("score_")]
    if as_json:
        for (row, _), found in zip(rows, frame.to_dict(orient="records"), strict=True):
            record = {(f"input_{k}" if k in PREDICTION_KEYS else k): v for k, v in row.items()}
            record["label"], record["confidence"] = found["label"], found["confidence"]
            record["scores"] = {c.removeprefix("score_"): found[c] for c in scores}
            print(json.dumps(record, ensure_ascii=False, default=str))
        return
    table = Table("text", "label", "confidence")
    for (_, text), label, confidence in zip(rows, frame["label"], frame["confidence"], strict=True):
        table.add_row(text, str(label), f"{confidence:.3f}")
    console.print(table)


@app.command()
@user_errors
def serve(
    model_uri: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="models:/NAME@ALIAS, models:/NAME/VERSION, NAME@ALIAS, or a registered name "
            "(its champion).",
        ),
    ],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5001,
    timeout: Annotated[
        int,
        typer.Option(
            min=1,
            help="Seconds one request may take before the server answers 504 (MLflow's 60; a "
            "local LM scores about 15 texts a second on 2 CPU cores).",
        ),
    ] = 60,
    experiment: StoreOfOption = None,
    set_: SetOption = None,
) -> None:
    """Serve a registered model over HTTP on 127.0.0.1 (`mlflow models serve`, this
    environment): POST rows with a `text` column to /invocations. Ctrl-C stops it."""
    import os
    import sys

    from harness.cli._serve import Server, check_port
    from harness.cli._serve import serve as supervise
    from harness.handoff.serve import find_model
    from harness.tracking.store import tracking_uri

    if set_ and experiment is None:
        raise ConfigError("--set applies to an experiment's config: give --experiment too")
    check_port(port)
    # Checked here, as `predict` checks it: a server started on a bad reference would only die
    # with MLflow's traceback.
    uri, store = find_model(
        model_uri, tracking_uri(load_target(experiment, set_) if experiment else None)
    )
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = store
    if not sys.stdout.isatty():  # its download progress bar would fill a log with 100-odd lines
        env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow starts its server as `uvicorn ...`, looked up on PATH: this environment's first.
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(filter(None, (bin_dir, env.get("PATH"))))
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri]
    command += ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--timeout", str(timeout)]
    server = Server(f"model server for {uri}", command, port, "/ping", env)
    console.print(f"Serving {uri} ...", markup=False, highlight=False, soft_wrap=True)

    def ready() -> None:
        for line in (
            f"Model server at {server.base_url}/invocations  (Ctrl-C to stop)",
            f"Try it: curl -s {server.base_url}/invocations -H 'Content-Type: application/json' "
            """-d '{"dataframe_split": {"columns": ["text"], "data": [["a sentence"]]}}'""",
        ):
            console.print(line, markup=False, highlight=False, soft_wrap=True)

    supervise(server, ready)
    err_console.print("Model server stopped.")
