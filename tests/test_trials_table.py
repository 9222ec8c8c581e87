"""The trials table kept between writes (:class:`fairsearch.output.trials_table.TrialsTable`) is the table
:func:`trials_frame` builds from scratch, after any sequence of trials starting, reporting, ending,
failing, being resumed or forgotten, with parameters and metrics that come and go and change type."""

from __future__ import annotations

import dataclasses
import random

import pandas as pd
import pytest

from fairsearch.output.results import TrialRecord, trials_frame
from fairsearch.output.trials_table import TrialsTable

STATUSES = ("pending", "running", "completed", "stopped", "failed", "interrupted")
PARAMS = {
    "method": lambda rng: rng.choice(["vanilla", "fr", "hybrid"]),
    "lr": lambda rng: rng.choice([1e-3, 2e-4]),
    "lora_rank": lambda rng: rng.choice([4, 8, 16]),
    "lam": lambda rng: rng.choice([0.5, 1, None]),  # an int beside floats: the column is floats
    "select": lambda rng: rng.choice(["last", "best_acc"]),
    "refit_last_layer": lambda rng: rng.choice([True, False]),
}
METRICS = ("acc", "max_acc_gap", "auc", "acc/ethnicity/Asian", "p_pos/ethnicity/Black", "extra/x")


def _record(rng: random.Random, trial_id: str, number: int) -> TrialRecord:
    params = {k: v(rng) for k, v in PARAMS.items() if rng.random() < 0.8}
    status = rng.choice(STATUSES)
    metrics = {} if status == "pending" else {k: rng.random() for k in METRICS if rng.random() < 0.85}
    return TrialRecord(
        trial_id,
        number,
        status,
        {k: v for k, v in params.items() if v is not None},
        metrics,
        epochs_done=rng.choice([0.0, 1.0, 2.5]),
        wall_time_s=rng.random() * 10,
        error="boom" if status == "failed" else None,
        checkpoint=f"/ck/{trial_id}" if metrics else None,
        finished_at=rng.random() if status in ("completed", "stopped", "failed") else None,
        failures=rng.choice([0, 0, 1]),
    )


def _step(rng: random.Random, records: list[TrialRecord], next_number: int) -> int:
    """One change to the trials: most often one trial reports or ends, sometimes several, a new trial,
    a trial resumed under the same id, or a trial forgotten."""
    roll = rng.random()
    if roll < 0.3 or not records:
        records.append(_record(rng, f"t{next_number}", next_number))
        return next_number + 1
    if roll < 0.85:
        for _ in range(rng.choice([1, 1, 1, 2, 5])):
            at = rng.randrange(len(records))
            records[at] = _record(rng, records[at].trial_id, records[at].number)
    elif roll < 0.92:  # the same values in a new object: built again, the same row
        at = rng.randrange(len(records))
        records[at] = dataclasses.replace(records[at])
    elif roll < 0.97:
        records.pop(rng.randrange(len(records)))
    else:
        rng.shuffle(records)  # Tune may list its trials in another order
    return next_number


@pytest.mark.parametrize("seed", range(8))
def test_the_kept_table_is_the_table_built_from_scratch(seed: int) -> None:
    rng = random.Random(seed)
    table = TrialsTable()
    records: list[TrialRecord] = []
    number = 0
    for _ in range(120):
        number = _step(rng, records, number)
        pd.testing.assert_frame_equal(table.frame(records), trials_frame(records), check_exact=True)


def test_only_the_changed_trials_are_built_again(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(0)
    records = [_record(rng, f"t{n}", n) for n in range(40)]
    table = TrialsTable()
    table.frame(records)
    built: list[int] = []
    real = trials_frame

    def counting(rows: list[TrialRecord]) -> pd.DataFrame:
        built.append(len(rows))
        return real(rows)

    monkeypatch.setattr("fairsearch.output.trials_table.trials_frame", counting)
    records[7] = _record(rng, "t7", 7)
    records.append(_record(rng, "t40", 40))
    frame = table.frame(records)
    assert built == [2]
    monkeypatch.undo()
    pd.testing.assert_frame_equal(frame, trials_frame(records), check_exact=True)


def test_a_caller_editing_the_table_it_got_does_not_change_the_kept_one() -> None:
    rng = random.Random(1)
    records = [_record(rng, f"t{n}", n) for n in range(10)]
    table = TrialsTable()
    first = table.frame(records)
    first["val/acc"] = -1.0
    first.drop(columns="status", inplace=True)
    records[3] = _record(rng, "t3", 3)
    pd.testing.assert_frame_equal(table.frame(records), trials_frame(records), check_exact=True)
