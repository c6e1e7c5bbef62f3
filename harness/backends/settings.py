"""What every backend's section of an experiment file (`backend:`) shares.

Each kind's own model lives with its backend (`harness.backends.local.config`, `...openai.config`,
...) and is named once, in `harness.backends.registry`, from which the union `harness.config`
validates against is derived. `extra="forbid"` makes a typo an error.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# What compute is priced at unless a config says otherwise (the local backends' training, and
# the TF-IDF baseline everywhere): a 2-vCPU general-purpose cloud instance, the size of the
# machine the demo was measured on.
REFERENCE_INSTANCE = "AWS c7i.large on-demand, us-east-1 (Linux), list price 2026"
REFERENCE_DOLLARS_PER_HOUR = 0.08925


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
