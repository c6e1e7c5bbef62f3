"""What every backend's section of an experiment file (`backend:`) shares.

Each kind's own model lives with its backend (`harness.backends.local.config`, `...openai.config`,
...) and is named once, in `harness.backends.registry`, from which the union `harness.config`
validates against is derived. `extra="forbid"` makes a typo an error.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

# What compute is priced at unless a config says otherwise (the local backends' training, and
# the TF-IDF baseline everywhere): a 2-vCPU general-purpose cloud instance, the size of the
# machine the demo was measured on.
REFERENCE_INSTANCE = "AWS c7i.large on-demand, us-east-1 (Linux), list price 2026"
REFERENCE_DOLLARS_PER_HOUR = 0.08925


class Strict(BaseModel):
    """A config section: unknown keys are errors, and a number is never a boolean."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_numbers(cls, data: Any) -> Any:
        """YAML reads `true`, `yes` and `on` as booleans, which pydantic takes for the number
        1 (`n_trials: true` ran one trial, `budget_usd: yes` was a $1 budget). Raised as the
        field's own error, so the message names `study.n_trials`."""
        if not isinstance(data, dict):
            return data
        errors = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "number_type", "expected a number, got {given}", {"given": str(value).lower()}
                ),
                loc=(name,),
                input=value,
            )
            for name, value in data.items()
            if isinstance(value, bool)
            and name in cls.model_fields
            and _numeric(cls.model_fields[name].annotation)
        ]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data


def _numeric(annotation: Any) -> bool:
    """Whether a field takes numbers and not booleans (`int`, `float | None`, ...)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = set(typing.get_args(annotation))
        return bool(members & {int, float}) and bool not in members
    return False


class BackendSettings(Strict):
    """The fields every kind has. A kind narrows `kind` to its own literal tag (the
    registry checks that the tag is the name it is registered under) and gives `model` a
    default."""

    kind: str
    model: str

    @property
    def compute_dollars_per_hour(self) -> float:
        """What an hour of this machine's compute costs (the TF-IDF baseline runs here)."""
        return REFERENCE_DOLLARS_PER_HOUR
