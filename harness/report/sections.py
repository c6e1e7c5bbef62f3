"""The report's per-trial sections: cost of ownership, per-epoch summaries, a qualitative sample."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.report.model import EpochSummary, Ownership, TrialRow
from harness.tracking.record import TrialRecord

# --- ownership, epochs, qualitative sample ---------------------------------------------------


# Hours in a month (365 x 24 / 12): a deployment billed by the hour is billed all of them.
HOURS_PER_MONTH = 730.0


def ownership(rows: list[TrialRow], n_test: int | None, monthly_requests: int) -> list[Ownership]:
    """Training cost plus a month of serving `monthly_requests`, plus a month of hosting.

    Per request = (eval cost - eval hosting) / test size: hosting a deployment (Azure, a Together
    dedicated endpoint: billed by the hour or minute whether or not it is called) is not a
    per-request price, so it is taken out and
    counted as its hourly rate (hosting paid / hours billed) x `HOURS_PER_MONTH`.

    A checkpoint runs like its parent (the same model, an epoch earlier), so it is priced at its
    parent's per-request cost and hosting: its own test scoring may have been served from a
    cache for free.
    """
    # By study and trial number: across studies (`harness compare`) trial numbers repeat.
    by_trial = {(row.source, row.trial_number): row for row in rows}
    result = []
    for row in rows:
        record = row.record
        training = record.train_cost_usd if record.train_cost_usd is not None else row.cost
        of = record.checkpoint_of
        parent = by_trial.get((row.source, of)) if of is not None else None
        priced = (parent or row).record
        serving = (parent or row).serving_hosting_per_hour
        hosting = hosting_per_month(priced)
        if hosting is None and serving:  # scored without hosting fees; served, it bills
            hosting = serving * HOURS_PER_MONTH
        scoring = (priced.eval_cost_usd or 0.0) - priced.eval_hosting_usd
        per_request = max(scoring, 0.0) / n_test if n_test else None
        monthly = per_request * monthly_requests if per_request is not None else None
        if monthly is not None and hosting is not None:
            monthly += hosting
        result.append(Ownership(row.number, training, per_request, monthly, hosting))
    return result


def hosting_per_month(record: TrialRecord) -> float | None:
    """A month of hosting the trial's model at the hourly rate its scoring paid; None where its
    scoring billed no hosting hours."""
    if record.eval_hosting_hours <= 0:
        return None
    return record.eval_hosting_usd / record.eval_hosting_hours * HOURS_PER_MONTH


def epoch_numbers(record: TrialRecord) -> list[int]:
    """The epoch of each point of `record`'s curve: every epoch it ran, except that a remote
    job's curve holds only the epochs its provider kept, its last (OpenAI: 2, 3, 4 of 4)."""
    count = len(record.valid_accuracy_by_epoch)
    ran = record.epochs_run if isinstance(record.epochs_run, int) else count
    first = max(ran - count, 0) + 1
    return list(range(first, first + count))


def epoch_summary(
    row: TrialRow, peaks: dict[tuple[str | None, int, int], float]
) -> EpochSummary | None:
    """Peak validation epoch (the first, on ties) and the cost of the epochs after it: the
    trial's cost less its checkpoint's at the peak (`peaks`, by study, trial and epoch), which
    is what stopping there would have paid; without one, the difference of costs so far."""
    curve = [float(v) for v in row.record.valid_accuracy_by_epoch]
    costs = [float(v) for v in row.record.cost_usd_by_epoch]
    if not curve:
        return None
    peak = int(np.argmax(curve))
    epochs = epoch_numbers(row.record)
    stopped = peaks.get((row.source, row.trial_number, epochs[peak]))
    if peak == len(curve) - 1:
        after = 0.0
    elif stopped is not None and row.record.cost_usd is not None:
        after = float(row.record.cost_usd) - stopped
    else:
        after = costs[-1] - costs[peak] if len(costs) == len(curve) else 0.0
    return EpochSummary(
        row.number, epochs[-1], epochs[peak], curve[peak], max(after, 0.0), curve[-1]
    )


def epoch_summaries(rows: list[TrialRow]) -> list[EpochSummary]:
    """The per-epoch summary of every trial with a curve. An epoch checkpoint's curve is its
    parent's first epochs, paid for once by the parent: summed again, the cost after a peak
    would count the same epochs twice."""
    peaks = {
        (r.source, r.record.checkpoint_of, r.record.epochs_run): float(r.record.cost_usd)
        for r in rows
        if r.record.checkpoint_of is not None
        and isinstance(r.record.epochs_run, int)
        and r.record.cost_usd is not None
    }
    trials = [r for r in rows if not r.record.is_checkpoint]
    return [s for s in (epoch_summary(r, peaks) for r in trials) if s is not None]


def qualitative_sample(
    chosen: TrialRow, neighbour: TrialRow | None, size: int, seed: int
) -> pd.DataFrame:
    """Test examples the chosen model or its cheaper neighbour got wrong, side by side."""
    if chosen.predictions is None:
        return pd.DataFrame()
    frame = chosen.predictions[["text", "true"]].copy()
    frame["chosen"] = chosen.predictions["predicted"]
    frame["chosen_confidence"] = chosen.predictions["confidence"]
    wrong = frame["chosen"] != frame["true"]
    if neighbour is not None and neighbour.predictions is not None:
        frame["neighbour"] = neighbour.predictions["predicted"].to_numpy()
        frame["neighbour_confidence"] = neighbour.predictions["confidence"].to_numpy()
        wrong |= frame["neighbour"] != frame["true"]
    candidates = frame[wrong]
    picked = np.random.default_rng(seed).permutation(len(candidates))[:size]
    sample = candidates.iloc[np.sort(picked)]
    # Examples the dearer model fixed come first: they are what the extra money bought.
    order = (sample["chosen"] != sample["true"]).astype(int)
    return sample.assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order")
