"""Damaged fronts and goals: ``pareto``, ``report``, ``compare`` and ``export`` refuse a results folder
whose ``pareto.parquet`` holds a front this fairsearch does not know, a row of any front naming a trial
the sweep does not hold as completed, a row of a kind its front does not have or without what its
front's tables read, or whose files' metadata names goals a sweep cannot have; one message, exit 2, no
traceback, nothing written.

The folder is a real sweep's: five completed trials with scores and features (``scored_sweeps``), a
constraint some meet, the thresholded and refit fronts, and a confirmed front of two candidates; every
front holds rows (:func:`test_every_front_of_the_sweep_holds_rows`) and ``pareto``, ``report`` and
``compare`` take it whole (:func:`test_the_undamaged_folder_is_shown`). ``export`` needs a trained
checkpoint that the scored trials lack, so each of its cases passes only on its damage's own message.
Each case damages a copy of the folder.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from refusals import refused
from scored_sweeps import write_scored_sweep

from fairsearch.cli import main
from fairsearch.output import refit_fronts, threshold_fronts
from fairsearch.output.confirm import ConfirmPlan, write_confirmation
from fairsearch.output.fronts import (
    COMBINED_FRONT,
    CONFIRMED_FRONT,
    CONFIRMED_REFIT_FRONT,
    FEASIBLE_FRONT,
    FRONTS,
    REFIT_FRONT,
    SEARCH_FRONT,
    VANILLA_THRESHOLDS_FRONT,
)
from fairsearch.output.results import (
    PARETO_FILE,
    TRIALS_FILE,
    TrialRecord,
    read_front,
    read_parquet_metadata,
    write_parquet_atomic,
    write_results,
)
from fairsearch.spec.config import OBJECTIVES, Constraint
from fairsearch.train.checkpoint import FEATURES_FILE

GAP_AT_MOST_HALF = (Constraint("max_acc_gap", 0.5, "max"),)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results folder holding every front; its checkpoints lie beside it."""
    root = tmp_path_factory.mktemp("sweep")
    records, test, scores = write_scored_sweep(root / "ckpts")
    rng = np.random.default_rng(0)
    for record in records:
        if record.checkpoint is not None:  # features the refit reads: the label shows in them
            split = scores[record.trial_id]
            np.savez(
                Path(record.checkpoint) / FEATURES_FILE,
                val_features=rng.normal(size=(len(split.val.label), 4)) + split.val.label[:, None],
                test_features=rng.normal(size=(len(split.test.label), 4)) + split.test.label[:, None],
            )
    folder = root / "results" / "s"
    derived = (*threshold_fronts.derived_fronts(OBJECTIVES), *refit_fronts.derived_fronts(OBJECTIVES))
    write_results(folder, records, test, constraints=GAP_AT_MOST_HALF, derived_fronts=derived)
    refitted = tuple(int(n) for n in read_front(folder, REFIT_FRONT)["number"])
    confirmed = tuple(dict.fromkeys([0, 1, *refitted]))
    runs = [  # each run's checkpoint is its trial's: the same scores and features, refitted alike
        TrialRecord(
            f"c{n}",
            n,
            "completed",
            {**records[n].params, "seed": 1},
            records[n].val_metrics,
            3.0,
            checkpoint=records[n].checkpoint,
        )
        for n in confirmed
    ]
    plan = ConfirmPlan(confirmed, (), {n: test[f"t{n}"] for n in confirmed}, refit_candidates=refitted)
    write_confirmation(
        folder, runs, {f"c{n}": test[f"t{n}"] for n in confirmed}, plan, refit_fronts.refit_rows
    )
    return folder


@pytest.fixture
def results(sweep: Path, tmp_path: Path) -> Path:
    """A copy of the sweep's results folder in ``tmp_path`` (``results/s``), to damage."""
    folder = tmp_path / "results" / "s"
    shutil.copytree(sweep, folder)
    return folder


def test_every_front_of_the_sweep_holds_rows(sweep: Path) -> None:
    fronts = pd.read_parquet(sweep / PARETO_FILE)["front"]
    assert set(fronts) == set(FRONTS)


@pytest.mark.parametrize("command", ["pareto", "report", "compare"])
def test_the_undamaged_folder_is_shown(
    results: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.chdir(results.parent.parent)
    argv = ["0", "0@single"] if command == "compare" else []  # the scored trials' test images differ
    assert main([command, "results/s", *argv]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    if command == "pareto":
        assert "Confirmed front: 1 configuration(s)" in out and "Last-layer refit front" in out


# --- damage -----------------------------------------------------------------------------------------


def _pareto(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    """``pareto.parquet`` rewritten as a sweep writes it (atomically, metadata kept) after ``edit``."""

    def damage(folder: Path) -> None:
        path = folder / PARETO_FILE
        metadata = read_parquet_metadata(path)
        write_parquet_atomic(edit(pd.read_parquet(path)), path, metadata)

    return damage


def _set(front: str, column: str, value: object, row: int = 0) -> Callable[[Path], None]:
    """The ``row``-th row of ``front`` with ``column`` set to ``value``."""

    def edit(df: pd.DataFrame) -> pd.DataFrame:
        index = df.index[df["front"] == front][row]
        if isinstance(value, str) and column in df and pd.api.types.is_numeric_dtype(df[column]):
            df[column] = df[column].astype(str)  # a column of text, as another writer might leave it
        df.loc[index, column] = value
        return df

    return _pareto(edit)


def _trials(edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    """``trials.parquet`` with its metadata after ``edit``."""

    def damage(folder: Path) -> None:
        path = folder / TRIALS_FILE
        table = pq.read_table(path)
        frame = pa.Table.from_pandas(edit(table.to_pandas()), preserve_index=False)
        pq.write_table(frame.replace_schema_metadata(table.schema.metadata), path)

    return damage


def _drop(column: str) -> Callable[[Path], None]:
    return _pareto(lambda df: df.drop(columns=column))


def _metadata(name: str, **changes: str) -> Callable[[Path], None]:
    """``name``'s key-value metadata with ``changes`` (the goals it names)."""

    def damage(folder: Path) -> None:
        path = folder / name
        table = pq.read_table(path)
        metadata = {**table.schema.metadata, **{k.encode(): v.encode() for k, v in changes.items()}}
        pq.write_table(table.replace_schema_metadata(metadata), path)

    return damage


def _constraints(*constraints: dict[str, object]) -> Callable[[Path], None]:
    return _metadata(TRIALS_FILE, constraints=json.dumps(list(constraints)))


def _objectives(*columns: object) -> Callable[[Path], None]:
    return _metadata(TRIALS_FILE, objectives=json.dumps(list(columns)))


NOT_KNOWN = "this fairsearch does not know"
NOT_COMPLETED = "that trials.parquet does not hold as completed"
GOALS = "trials.parquet: its metadata names objectives or constraints this fairsearch does not read"

DAMAGED: list[tuple[str, Callable[[Path], None], str]] = [
    # every front value is known
    ("unknown-front", _set(CONFIRMED_FRONT, "front", "bogus"), f"rows of front(s) bogus {NOT_KNOWN}"),
    (
        "front-in-capitals",
        _set(COMBINED_FRONT, "front", "Combined"),
        f"rows of front(s) Combined {NOT_KNOWN}",
    ),
    ("null-front", _set(REFIT_FRONT, "front", None), f"rows of front(s) null {NOT_KNOWN}"),
    (
        "front-with-an-escape",
        _set(FEASIBLE_FRONT, "front", "feas\x1b]0;owned\x07ible"),
        f"rows of front(s) feas\\x1b]0;owned\\x07ible {NOT_KNOWN}",
    ),
    # every member of every front is a completed trial of the sweep
    ("search-stranger", _set(SEARCH_FRONT, "number", 77), "its search front holds trial(s) t"),
    ("feasible-stranger", _set(FEASIBLE_FRONT, "number", 77), "its feasible front holds trial(s) t"),
    (
        "feasible-other-objectives",
        _set(FEASIBLE_FRONT, "val/acc", 0.123),
        "its feasible front holds trial(s) t",
    ),
    (
        "feasible-member-not-feasible",
        _trials(lambda df: df.assign(feasible=df["feasible"] & False)),  # the members' too
        "that trials.parquet does not mark as meeting every constraint",
    ),
    ("vanilla-thresholds-stranger", _set(VANILLA_THRESHOLDS_FRONT, "number", 77), f"(#77) {NOT_COMPLETED}"),
    ("combined-stranger", _set(COMBINED_FRONT, "trial_id", "ghost"), "combined front holds trial(s) ghost"),
    ("refit-stranger", _set(REFIT_FRONT, "number", 77), "its last_layer_refit front holds trial(s) t"),
    (
        "refit-failed-trial",
        _pareto(
            lambda df: df.assign(
                trial_id=df["trial_id"].where(df["front"] != REFIT_FRONT, "t9"),
                number=df["number"].where(df["front"] != REFIT_FRONT, 9),
            )
        ),
        f"t9 (#9) {NOT_COMPLETED}",
    ),
    (
        "confirmed-stranger-number",
        _set(CONFIRMED_FRONT, "number", 77),
        "its confirmed front holds trial(s) t",
    ),
    ("confirmed-stranger-id", _set(CONFIRMED_FRONT, "trial_id", "c0"), "confirmed front holds trial(s) c0"),
    (
        "confirmed-refit-stranger",
        _set(CONFIRMED_REFIT_FRONT, "number", 77),
        "its confirmed_refit front holds trial(s) t",
    ),
    # every row is of a kind its front has
    ("refit-row-of-threshold-kind", _set(REFIT_FRONT, "kind", "threshold"), "kind(s) threshold; allowed"),
    (
        "search-row-of-refit-kind",
        _set(SEARCH_FRONT, "kind", "last_layer_refit"),
        "its search front holds rows of kind(s) last_layer_refit",
    ),
    (
        "vanilla-row-trained",
        _set(VANILLA_THRESHOLDS_FRONT, "kind", "trained"),
        "kind(s) trained; allowed ['threshold', 'group_thresholds']",
    ),
    (
        "confirmed-row-with-kind",
        _set(CONFIRMED_FRONT, "kind", "trained"),
        "its confirmed front holds rows of kind(s) trained; allowed ['null']",
    ),
    (
        "confirmed-refit-row-trained",
        _set(CONFIRMED_REFIT_FRONT, "kind", "trained"),
        "its confirmed_refit front holds rows of kind(s) trained; allowed ['last_layer_refit']",
    ),
    ("kind-unknown", _set(COMBINED_FRONT, "kind", "magic"), "its combined front holds rows of kind(s) magic"),
    # what the fronts' tables read
    (
        "confirmed-n-seeds-missing",
        _set(CONFIRMED_FRONT, "n_seeds", np.nan),
        "confirmed front holds rows whose n_seeds is not a whole number >= 1",
    ),
    ("confirmed-n-seeds-column-dropped", _drop("n_seeds"), "whose n_seeds is not a whole number >= 1"),
    ("confirmed-n-seeds-zero", _set(CONFIRMED_FRONT, "n_seeds", 0), "whose n_seeds is not a whole number"),
    (
        "confirmed-refit-n-seeds-missing",
        _set(CONFIRMED_REFIT_FRONT, "n_seeds", np.nan),
        "confirmed_refit front holds rows whose n_seeds is not a whole number >= 1",
    ),
    ("confirmed-n-seeds-fraction", _set(CONFIRMED_FRONT, "n_seeds", 2.5), "whose n_seeds is not a whole"),
    (
        "confirmed-hypervolume-text",
        _set(CONFIRMED_FRONT, "hypervolume", "big"),
        "its confirmed front lacks the float column(s) ['hypervolume']",
    ),
    (
        "objective-as-text",
        _set(COMBINED_FRONT, "val/max_acc_gap", "small"),
        "(column 'val/max_acc_gap' missing or not float, though trials completed)",
    ),
    (
        "number-as-text",
        _set(REFIT_FRONT, "number", "seven"),
        "not a fairsearch results table (column 'number' is",
    ),
    # the goals in the files' metadata are a sweep's
    (
        "one-objective",
        _objectives("val/acc"),
        f"{GOALS} (1 objective(s) ['acc']; a sweep has 2 or 3, each once)",
    ),
    (
        "four-objectives",
        _objectives("val/acc", "val/auc", "val/es_auc", "val/max_acc_gap"),
        "(4 objective(s)",
    ),
    ("no-objectives", _objectives(), "(0 objective(s) []; a sweep has 2 or 3"),
    (
        "objective-twice",
        _objectives("val/acc", "val/acc"),
        "(2 objective(s) ['acc', 'acc']; a sweep has 2 or 3, each once",
    ),
    ("unknown-objective", _objectives("val/acc", "val/f1"), "objectives ['f1'] are not among"),
    ("objective-not-text", _objectives("val/acc", 3), "objectives are not a list of column names"),
    ("objectives-a-string", _metadata(TRIALS_FILE, objectives='"val/acc"'), "objectives are not a list"),
    (
        "nan-bound",
        _constraints({"key": "max_acc_gap", "bound": float("nan"), "side": "max"}),
        "constraints max_acc_gap.max: nan must be a fraction from 0 to 1",
    ),
    (
        "infinite-bound",
        _constraints({"key": "acc", "bound": float("inf"), "side": "min"}),
        "constraints acc.min: inf must be a fraction",
    ),
    (
        "bound-above-one",
        _constraints({"key": "acc", "bound": 2, "side": "min"}),
        "acc.min: 2.0 must be a fraction",
    ),
    (
        "floor-on-gap",
        _constraints({"key": "max_acc_gap", "bound": 0.1, "side": "min"}),
        "max_acc_gap.min: MaxAccGap is minimised",
    ),
    (
        "constraints-contradict",
        _constraints(
            {"key": "acc", "bound": 0.9, "side": "min"}, {"key": "acc", "bound": 0.8, "side": "max"}
        ),
        "constraints acc: min 0.9 is above max 0.8, so no value can meet both",
    ),
    (
        "nan-reference",
        _metadata(TRIALS_FILE, reference="[NaN, 1.0]"),
        "reference [NaN, 1.0] is not one finite number per objective",
    ),
    (
        "short-reference",
        _metadata(TRIALS_FILE, reference="[0.0]"),
        "reference [0.0] is not one finite number",
    ),
    (
        "pareto-one-objective",
        _metadata(PARETO_FILE, objectives='["val/acc"]'),
        "pareto.parquet: its metadata names objectives or constraints this fairsearch does not read (1 objective(s)",
    ),
]


@pytest.mark.parametrize("command", ["pareto", "report", "compare", "export"])
@pytest.mark.parametrize(("damage", "fragment"), [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_damaged_front_or_goals(
    results: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    damage: Callable[[Path], None],
    fragment: str,
) -> None:
    damage(results)
    root = results.parent.parent
    monkeypatch.chdir(root)
    argv = {"compare": ["0", "0@single"], "export": ["--trial", "0", "--out", "exported"]}.get(command, [])
    refused(capsys, root, [command, "results/s", *argv], fragment)
