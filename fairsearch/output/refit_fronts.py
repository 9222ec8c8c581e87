"""The last-layer refit front of ``pareto.parquet``: every trial whose last checkpoint kept its
features (``refit_last_layer: true``) gets a new head fitted on half of validation and chosen on the
other half (:func:`fairsearch.judge.refit.refit_last_layer`), and the non-dominated of those heads form
the ``last_layer_refit`` front (rows of kind ``last_layer_refit``), beside the thresholded fronts.

A refit row is its trial's row with the refit head's own metrics: ``val/`` measured on the selection
half of validation (the fit half is the head's training data), ``test/`` on the whole test split, the
grouping of ``group_by`` only; ``refit`` (JSON) holds the chosen ``C`` and the halves' sizes. The test
split is measured once, by the head chosen on validation. Each trial is refitted once per process.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairsearch.errors import FairsearchError
from fairsearch.judge.fairness import Grouping
from fairsearch.judge.metrics import evaluate_split
from fairsearch.judge.refit import refit_last_layer
from fairsearch.judge.thresholds import TrialScores
from fairsearch.output.fronts import REFIT_FRONT, REFIT_KIND
from fairsearch.output.results import DerivedFront, completed_trials
from fairsearch.output.threshold_fronts import nondominated_front, thresholds_apply
from fairsearch.spec.config import Objectives
from fairsearch.train.checkpoint import FEATURES_FILE, read_features_at, read_scores_at

__all__ = ["REFIT_FRONT", "REFIT_KIND", "derived_fronts", "refit_front_rows", "refit_rows"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Refit:
    val: dict[str, float]
    test: dict[str, float]
    info: dict[str, float]


_refits: dict[tuple[str, str], _Refit | None] = {}
"""Each trial's refit by (trial id, checkpoint location): a completed trial's features never change."""


def _trial_refit(trial_id: str, checkpoint: str, number: int) -> _Refit | None:
    key = (trial_id, checkpoint)
    if key not in _refits:
        result: _Refit | None = None
        try:
            features = read_features_at(checkpoint)
            arrays = read_scores_at(checkpoint) if features is not None else None
            if features is not None and arrays is not None:
                scores = TrialScores.from_arrays(arrays, f"{checkpoint.rstrip('/')}/scores.npz")
                val_x, test_x = features.get("val_features"), features.get("test_features")
                if (
                    val_x is None
                    or test_x is None
                    or len(val_x) != len(scores.val.label)
                    or len(test_x) != len(scores.test.label)
                ):
                    raise FairsearchError(f"{FEATURES_FILE} does not match the trial's scores")
                refit = refit_last_layer(val_x, scores.val.label, scores.val.group, test_x)
                pick = refit.select

                def metrics(prob: np.ndarray, label: np.ndarray, group: np.ndarray) -> dict[str, float]:
                    grouping = Grouping(scores.group_by, group, scores.group_names)
                    return evaluate_split(
                        prob, label, {scores.group_by: grouping}, primary=scores.group_by
                    ).flat()

                result = _Refit(
                    val=metrics(refit.select_prob, scores.val.label[pick], scores.val.group[pick]),
                    test=metrics(refit.test_prob, scores.test.label, scores.test.group),
                    info={"C": refit.c, "fit": refit.n_fit, "select": int(pick.size)},
                )
        except (FairsearchError, ValueError) as err:
            logger.warning("trial #%d is left out of the last-layer refit front: %s", number, err)
        _refits[key] = result
    return _refits[key]


def refit_rows(trials_df: pd.DataFrame) -> pd.DataFrame:
    """Every completed trial's refit head that has features, as ``pareto.parquet`` rows (without
    ``front`` and ``hypervolume``); no rows when no trial kept its features."""
    completed = completed_trials(trials_df)
    completed = completed[completed["checkpoint"].notna()]
    base_columns = [c for c in trials_df.columns if not str(c).startswith("val/")]
    rows = []
    for _, row in completed.iterrows():
        refit = _trial_refit(str(row["trial_id"]), str(row["checkpoint"]), int(row["number"]))
        if refit is None:
            continue
        record = {c: row[c] for c in base_columns}
        record |= {f"val/{k}": float(v) for k, v in refit.val.items()}
        record |= {f"test/{k}": float(v) for k, v in refit.test.items()}
        record |= {"kind": REFIT_KIND, "refit": json.dumps(refit.info)}
        rows.append(record)
    return pd.DataFrame(rows) if rows else pd.DataFrame()


def refit_front_rows(trials_df: pd.DataFrame, search_front: pd.DataFrame) -> pd.DataFrame:
    """The ``last_layer_refit`` front's rows (a :data:`~fairsearch.output.results.DerivedFront`)."""
    rows = refit_rows(trials_df)
    return nondominated_front(rows, REFIT_FRONT) if len(rows) else rows


def derived_fronts(objectives: Objectives) -> tuple[DerivedFront, ...]:
    """What a sweep hands ``write_results``: the refit front where accuracy and MaxAccGap are objectives."""
    return (refit_front_rows,) if thresholds_apply(objectives) else ()
