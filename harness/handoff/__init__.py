"""Hand-off, the last stage: register the chosen model in MLflow and call it.

Entry point: `promote` (a trial's model into the model registry under an alias) and
`load_registered_model` (call it with the prompt format it was trained on). Modules: `promote`,
`serve` (load a registered model), `pyfunc` (the MLflow model-from-code class that calls it),
`environment` (what a logged model carries: its signature, its code and its requirements) and
`notes` (what a registered version says about itself: its tags and descriptions).
"""

from __future__ import annotations

from harness.handoff.promote import promote
from harness.handoff.serve import load_registered_model

__all__ = ["load_registered_model", "promote"]
