"""The sweep, the third stage: ask the study for a configuration, run it, record it, tell the study.

Entry point: `run_sweep`. Modules: `loop` (ask -> run trial -> log -> tell), `study` (storage,
samplers, recovery of crashed workers), `search_space`, `budget` (reservations against
`budget_usd`), `stopping` (early stop of trials that cannot reach the front), `checkpoints`
(epoch models as points of the front), `estimate` (cost before anything is spent), `evaluation`
(score an existing model like a trial).
"""

from __future__ import annotations

from harness.sweep.loop import run_sweep

__all__ = ["run_sweep"]
