"""Hand-off, the last stage: register the chosen model in MLflow and call it.

Entry point: `promote` (a trial's model into the model registry under an alias) and
`load_registered_model` (call it with the prompt format it was trained on). Modules: `promote`
and `pyfunc` (the MLflow models-from-code classes that serve a registered model).
"""

from __future__ import annotations

from harness.handoff.promote import load_registered_model, promote

__all__ = ["load_registered_model", "promote"]
