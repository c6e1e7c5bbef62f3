"""Hand-off: register the chosen model and classify with it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli.common import ExperimentArg, SetOption, app, console, user_errors


@app.command()
@user_errors
def promote(
    experiment: ExperimentArg,
    trial: Annotated[
        int | None,
        typer.Option(help="Trial number to promote (default: the report's recommendation)."),
    ] = None,
    alias: Annotated[str, typer.Option(help="Registry alias to point at the model.")] = "champion",
    set_: SetOption = None,
) -> None:
    """Register a trial's model in the MLflow model registry under an alias."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from harness.config import load_experiment
    from harness.handoff.promote import promote as promote_trial

    done = promote_trial(load_experiment(experiment, set_), trial_number=trial, alias=alias)
    console.print(f"Chose {done.reason}", markup=False, highlight=False, soft_wrap=True)
    action = "was already registered as" if done.reused else "registered as"
    lines = [
        f"Trial {done.trial_number} ({done.backend}, test accuracy {done.test_accuracy:.4f}, "
        f"cost ${done.cost_usd:.6f}) {action} {done.name} version {done.version}; "
        f"alias {done.alias!r} points at it.",
        f"Model URI: {done.uri}  (logged on MLflow run {done.run_id})",
        f'Try it:    harness predict {done.uri} "a sentence of your own"',
    ]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command()
@user_errors
def predict(
    model_uri: Annotated[
        str,
        typer.Argument(
            help="models:/NAME@ALIAS, models:/NAME/VERSION, or a registered name (its champion)."
        ),
    ],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(help="Texts from a file: one per line, or a CSV / JSONL with a text column."),
    ] = None,
    column: Annotated[str, typer.Option(help="The text column of a CSV / JSONL file.")] = "text",
    json_: Annotated[
        bool, typer.Option("--json", help="One JSON object per text, with every label's score.")
    ] = False,
) -> None:
    """Classify texts with a registered model, in the prompt format it was trained with."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from harness.errors import ConfigError
    from harness.handoff.pyfunc import read_texts
    from harness.handoff.serve import load_registered_model

    inputs = list(texts or []) + (read_texts(file, column) if file else [])
    if not inputs:
        raise ConfigError("nothing to classify: give texts as arguments or --file PATH")
    frame = load_registered_model(model_uri).predict(inputs)
    _print_predictions(inputs, frame, json_)


def _print_predictions(texts: list[str], frame: Any, as_json: bool) -> None:
    import json

    from rich.table import Table

    scores = [c for c in frame.columns if c.startswith("score_")]
    if as_json:
        for text, row in zip(texts, frame.to_dict(orient="records"), strict=True):
            record = {"text": text, "label": row["label"], "confidence": row["confidence"]}
            record["scores"] = {c.removeprefix("score_"): row[c] for c in scores}
            print(json.dumps(record, ensure_ascii=False))
        return
    table = Table("text", "label", "confidence")
    for text, label, confidence in zip(texts, frame["label"], frame["confidence"], strict=True):
        table.add_row(text, str(label), f"{confidence:.3f}")
    console.print(table)
