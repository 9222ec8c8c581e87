"""What ``fairsearch export`` takes out of a sweep, chosen and checked before anything is written.

A sweep's trial ``N`` (``--trial``), or one of its confirmation runs (``--seed S``), with the decision
thresholds of ``--thresholds``:

- ``none``: the trained model's own rule, p(glaucoma) ≥ 0.5;
- ``single`` / ``group``: the thresholds of a ``threshold`` / ``group_thresholds`` row of trial ``N`` on
  the thresholded fronts of ``pareto.parquet`` (:mod:`fairsearch.output.threshold_fronts`), chosen on
  the trial's validation scores. When the trial has several such rows,
  :func:`~fairsearch.output.threshold_fronts.chosen_threshold_row` takes one (as ``fairsearch compare
  7@group`` does); the card lists the others. Thresholds belong to the run they were chosen on, so they
  are refused with ``--seed`` of another run.

Every read is bounded (:mod:`fairsearch.bounded`); the checkpoint must be complete (its manifest) and hold
its weights, state, scores and test metrics, in a local folder or on the sweep's storage (``s3://…``, read
through ``pyarrow.fs`` as the sweep wrote it). Needs no torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fairsearch.bounded import TRAINABLE_MAX_BYTES, size_text
from fairsearch.errors import FairsearchError, clip_value
from fairsearch.judge.thresholds import (
    DEFAULT_THRESHOLD,
    GROUP_THRESHOLDS,
    THRESHOLD,
    TrialScores,
    missing_group_thresholds,
)
from fairsearch.output.confirm import CONFIRMED_FRONT, read_confirmed
from fairsearch.output.results import completed_trial, completed_trials, read_results, read_sweep_goals
from fairsearch.output.threshold_fronts import chosen_threshold_row, read_threshold_fronts
from fairsearch.spec.config import Constraints, Objectives, TrialConfig
from fairsearch.train.checkpoint import (
    TEST_METRICS_FILE,
    complete_checkpoint_state,
    filesystem_of,
    read_scores_at,
    read_test_metrics_at,
)

__all__ = ["THRESHOLD_CHOICES", "TRAINABLE_FILE", "ExportChoice", "choose_export"]

TRAINABLE_FILE = "trainable.pt"
"""A checkpoint's LoRA + head weights (``GlaucomaClassifier.trainable_state_dict()``)."""
THRESHOLD_CHOICES = {"none": None, "single": THRESHOLD, "group": GROUP_THRESHOLDS}
"""``--thresholds`` and the ``kind`` of the thresholded rows each takes its thresholds from."""


@dataclass(frozen=True)
class ExportChoice:
    """A run of a sweep and the thresholds to export it with, every file it needs checked.

    Attributes:
        folder: the sweep's results folder.
        number: the Optuna trial number.
        seed: the run's seed (the trial's own, or a confirmation run's).
        confirmation: True when the run is one of the trial's confirmation runs.
        row: the run's row (``trials.parquet`` or ``confirm.parquet``).
        checkpoint: the run's last checkpoint folder: a local path, or a URI of the sweep's storage.
        config: the run's settings, from its checkpoint's state.
        selected_epoch: whose model the checkpoint holds (``select``).
        scores: its validation and test scores, labels and groups (``scores.npz``).
        test_metrics: its test split's flat metrics (``test_metrics.json``).
        kind: ``none``, ``threshold`` or ``group_thresholds``.
        thresholds: ``{"all": t}`` or one threshold per group name (positive when p ≥ t).
        threshold_row: the thresholded front row they come from (None for ``none``).
        other_rows: the trial's other rows of that kind, not taken.
        fronts: every row of ``pareto.parquet`` (each front) that is this trial's, for the card.
        front_sizes: the number of rows of each front of ``pareto.parquet``.
        confirmed: the trial's row of the confirmed front, None when it has none.
        objectives, constraints: the sweep's goals.
    """

    folder: Path
    number: int
    seed: int
    confirmation: bool
    row: pd.Series
    checkpoint: str
    config: TrialConfig
    selected_epoch: float
    scores: TrialScores
    test_metrics: dict[str, float]
    kind: str
    thresholds: dict[str, float]
    threshold_row: pd.Series | None
    other_rows: pd.DataFrame
    fronts: pd.DataFrame
    front_sizes: dict[str, int]
    confirmed: pd.Series | None
    objectives: Objectives
    constraints: Constraints


def _own_seed(row: pd.Series) -> int:
    seed = row.get("param/seed")
    return int(seed) if seed is not None and pd.notna(seed) else TrialConfig.seed


def choose_export(
    folder: str | Path, number: int, seed: int | None = None, thresholds: str = "none"
) -> ExportChoice:
    """Picks and checks what to export; reads, writes nothing.

    Args:
        folder: ``results/<name>``.
        number: the trial (``--trial``).
        seed: a seed of the trial's own run or of one of its confirmation runs (``--seed``); None: its own.
        thresholds: a key of :data:`THRESHOLD_CHOICES`.

    Returns:
        The choice.

    Raises:
        FairsearchError: no such completed trial, seed or thresholded row; a checkpoint that is missing,
            incomplete, remote or lacks a file; unreadable results.
    """
    folder = Path(folder)
    if thresholds not in THRESHOLD_CHOICES:
        raise FairsearchError(
            f"--thresholds {clip_value(thresholds)}: must be one of {list(THRESHOLD_CHOICES)}"
        )
    trials, _ = read_results(folder)
    objectives, constraints = read_sweep_goals(folder)
    row = completed_trial(trials, number, f"--trial {number}: {folder}")
    runs, confirmed_rows = read_confirmed(folder)
    own = _own_seed(row)
    confirmation = False
    if seed is not None and seed != own:
        mine = completed_trials(runs)[completed_trials(runs)["number"] == number] if len(runs) else runs
        seeds = sorted(int(s) for s in mine["param/seed"]) if len(mine) and "param/seed" in mine else []
        matching = mine[mine["param/seed"] == seed] if seeds else mine.iloc[:0]
        if matching.empty:
            raise FairsearchError(
                f"--seed {seed}: trial {number} of {folder} has no completed run with that seed; its seeds: "
                f"{[own, *seeds]} (its own run's first; others come from 'confirm: {{seeds: K}}')"
            )
        row, confirmation = matching.iloc[0], True
        if thresholds != "none":
            raise FairsearchError(
                f"--seed {seed} --thresholds {thresholds}: the thresholds of trial {number} were chosen on "
                f"its own run's (seed {own}) validation scores, not on this run's; export this run with "
                "--thresholds none, or the trial's own run without --seed"
            )
    every_front = {**read_threshold_fronts(folder), CONFIRMED_FRONT: confirmed_rows}
    fronts, front_sizes = _trial_fronts(every_front, number)
    kind = THRESHOLD_CHOICES[thresholds]
    chosen_row, others = None, fronts.iloc[:0]
    chosen = {"all": DEFAULT_THRESHOLD}
    if kind is not None:
        chosen_row, others = chosen_threshold_row(
            every_front,
            number,
            kind,
            constraints,
            folder=folder,
            asked=f"--thresholds {thresholds}",
            instead=f"choose another --thresholds, or a trial that `fairsearch pareto {folder} --kind {kind}` lists",
        )
        chosen = {str(k): float(v) for k, v in json.loads(str(chosen_row["thresholds"])).items()}
    checkpoint, state = _checkpoint(row, number, folder)
    try:
        config = TrialConfig.from_dict(state["config"])
    except (FairsearchError, TypeError, ValueError, KeyError) as err:
        raise FairsearchError(
            f"{checkpoint}/state.json: its config is not a trial's ({clip_value(str(err))})"
        ) from None
    arrays = read_scores_at(checkpoint)
    test_metrics = read_test_metrics_at(checkpoint)
    if arrays is None or not test_metrics:
        raise FairsearchError(
            f"{checkpoint}: no scores.npz or {TEST_METRICS_FILE}: it is not the checkpoint of a trial's last "
            "report (only that one holds the test split's scores)"
        )
    scores = TrialScores.from_arrays(arrays, f"{checkpoint}/scores.npz")
    if kind == GROUP_THRESHOLDS and (
        missing := missing_group_thresholds(chosen, scores.group_names, scores.test)
    ):
        raise FairsearchError(
            f"--thresholds group: trial {number}'s row in {folder}/pareto.parquet has no threshold for "
            f"group(s) {missing[:5]} of its scores' grouping {scores.group_by!r}; the file is damaged"
        )
    mine_confirmed = (
        confirmed_rows[confirmed_rows["number"] == number] if len(confirmed_rows) else confirmed_rows
    )
    history = state.get("history") or [{}]
    return ExportChoice(
        folder=folder,
        number=number,
        seed=int(row.get("param/seed")) if confirmation else own,
        confirmation=confirmation,
        row=row,
        checkpoint=checkpoint,
        config=config,
        selected_epoch=float(history[-1].get("selected_epoch", state.get("epoch", math.nan))),
        scores=scores,
        test_metrics=test_metrics,
        kind=kind or "none",
        thresholds=chosen,
        threshold_row=chosen_row,
        other_rows=others,
        fronts=fronts,
        front_sizes=front_sizes,
        confirmed=mine_confirmed.iloc[0] if len(mine_confirmed) else None,
        objectives=objectives,
        constraints=constraints,
    )


def _checkpoint(row: pd.Series, number: int, folder: Path) -> tuple[str, dict[str, Any]]:
    """The run's last checkpoint, a local folder or a URI of the sweep's storage (``s3://…``), checked
    complete, holding a trial config and weights of a bounded size; and its saved state."""
    location = row.get("checkpoint")
    what = f"trial {number}'s run (seed {_own_seed(row)})"
    if not isinstance(location, str) or not location:
        raise FairsearchError(f"--trial {number}: {what} in {folder} has no checkpoint")
    try:
        fs, path = filesystem_of(location)
        state = complete_checkpoint_state(fs, path)
        trainable = fs.get_file_info(f"{path}/{TRAINABLE_FILE}")
    except (OSError, ValueError) as err:  # an unknown scheme, storage that cannot be reached
        raise FairsearchError(
            f"--trial {number}: {what}'s checkpoint at {clip_value(location)} cannot be read "
            f"({clip_value(str(err), 300)})"
        ) from None
    if state is None:
        raise FairsearchError(
            f"--trial {number}: {what} has no complete checkpoint at {clip_value(location)} (missing, moved, "
            "or cut short)"
        )
    if not isinstance(state.get("config"), dict):
        raise FairsearchError(f"{location}/state.json: no trial config in it")
    if trainable.type.name != "File":
        raise FairsearchError(f"{location}: no {TRAINABLE_FILE}, so no weights to export")
    if (trainable.size or 0) > TRAINABLE_MAX_BYTES:
        raise FairsearchError(
            f"{location}/{TRAINABLE_FILE}: {size_text(trainable.size or 0)}; a LoRA adapter and head take at most "
            f"{size_text(TRAINABLE_MAX_BYTES)}"
        )
    return location, state


def _trial_fronts(fronts: Mapping[str, pd.DataFrame], number: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every row of ``fronts`` (by name) that is trial ``number``'s, with its ``front``, and the number
    of rows of each front."""
    parts, sizes = [], {}
    for name, rows in fronts.items():
        sizes[name] = len(rows)
        if len(rows):
            parts.append(rows[rows["number"] == number].assign(front=name))
    mine = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["number", "front"])
    return mine, sizes
