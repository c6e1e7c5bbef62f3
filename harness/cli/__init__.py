"""The `harness` command: thin commands over the library, one module per stage.

Importing this package registers every command on `app`, gives each the clean help of
`HarnessCommand`, and an `Examples:` epilog (its own, else the one below).
"""

from __future__ import annotations

import importlib

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command_name

from harness.cli.common import HarnessCommand, HarnessGroup, app, examples

# `--help` lists commands in the order they are registered: the workflow's, not the alphabet's.
for _module in ("run", "studies", "report", "handoff", "view", "prices"):
    importlib.import_module(f"harness.cli.{_module}")

__all__ = ["EXAMPLES", "app", "main"]

# Every command's examples, by its path (`study create`); a command may set its own `epilog`.
EXAMPLES: dict[str, str] = {
    "prepare": examples(
        "harness prepare demo",
        "harness prepare tweets --out data/tweets --set dataset.max_rows=500",
    ),
    "sweep": examples(
        "harness sweep demo",
        "harness sweep demo --add 4          # 4 trials beyond study.n_trials",
        "harness sweep demo --set study.name=demo-lr --set study.n_trials=4",
    ),
    "trials": examples(
        "harness trials demo",
        "harness trials demo-lr              # a study, by its name",
        "harness trials demo --json > trials.json",
        "harness trials demo --csv > trials.csv",
    ),
    "studies": examples(
        "harness studies",
        "harness studies --json",
        "harness studies --storage postgresql://user@db.example/optuna",
    ),
    "estimate": examples("harness estimate demo", "harness estimate demo --set study.n_trials=20"),
    "evaluate": examples(
        "harness evaluate openai_gpt41nano --model gpt-4.1-nano-2025-04-14",
        "harness evaluate openai_gpt41nano --model ft:gpt-4.1-nano:my-org::abc123",
    ),
    "report": examples(
        "harness report demo",
        "harness report demo --value-per-point 0.002 --monthly-requests 50000",
        "harness report demo-lr --budget 0.01 --out reports/demo-lr",
    ),
    "compare": examples(
        "harness compare demo smollm2_lora",
        "harness compare demo demo_mpnet --value-per-point 0.002",
    ),
    "promote": examples(
        "harness promote demo                # the report's recommendation",
        "harness promote demo --trial 3 --alias challenger",
    ),
    "predict": examples(
        'harness predict demo-classifier "A warm, funny film that never drags."',
        "harness predict models:/demo-classifier@champion --file reviews.csv --json",
        "harness predict models:/demo-classifier/2 --file in.jsonl --column review",
    ),
    "serve": examples(
        "harness serve demo-classifier       # on http://127.0.0.1:5001",
        "harness serve models:/demo-classifier/2 --port 5002",
    ),
    "ui": examples("harness ui", "harness ui --port 5001 --experiment demo"),
    "dashboard": examples("harness dashboard demo"),
    "prices": examples("harness prices", "harness prices --provider azure"),
    "prices refresh": examples(
        "harness prices refresh                  # Azure needs no key",
        "harness prices refresh --only azure --region swedencentral",
    ),
    "study create": examples(
        "harness study create demo --set study.storage=postgresql://db.host/optuna",
    ),
}


def _finish(group: typer.Typer, prefix: str = "") -> None:
    """Clean help and examples on every command of `group` and its subgroups."""
    for info in group.registered_commands:
        path = prefix + (info.name or get_command_name(getattr(info.callback, "__name__", "")))
        if info.cls in (None, TyperCommand):
            info.cls = HarnessCommand
        info.epilog = info.epilog or EXAMPLES.get(path)
    for sub in group.registered_groups:
        if sub.cls in (None, TyperGroup):
            sub.cls = HarnessGroup
        if sub.typer_instance is not None:
            _finish(sub.typer_instance, f"{prefix}{sub.name} ")


_finish(app)


def main() -> None:
    """Entry point of the `harness` script and `python -m harness`."""
    app()
