"""``fairsearch compare``: two trials of a sweep on the same test images, with paired intervals.

A side is

- a trial number (``7``: the trial as trained, deciding positive at p ≥ 0.5);
- a trial at a decision threshold of its own (``7@0.42``, as the thresholded fronts of
  :mod:`fairsearch.output.threshold_fronts` decide);
- a trial with the thresholds of its row of kind ``group_thresholds`` (``7@group``: one threshold per
  group, which needs each image's group at inference) or ``threshold`` (``7@single``) on the thresholded
  fronts of ``pareto.parquet``, chosen on validation; of several such rows, the one ``fairsearch export
  --thresholds group|single`` takes (:func:`~fairsearch.output.threshold_fronts.chosen_threshold_row`);
- or a trial with its last layer refitted on validation (``7@refit``, as its row of the
  ``last_layer_refit`` front; the trial must have kept its features).

Both sides' decisions come from their trials' checkpointed test scores (``scores.npz``), so the comparison
is on the very same images; the differences and their intervals are
:func:`fairsearch.judge.paired.paired_comparison`'s.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fairsearch.errors import FairsearchError, clip_value
from fairsearch.judge.paired import PairedDifference, paired_comparison, verdict
from fairsearch.judge.refit import refit_last_layer
from fairsearch.judge.thresholds import (
    GROUP_THRESHOLDS,
    THRESHOLD,
    TrialScores,
    decisions_at,
    missing_group_thresholds,
)
from fairsearch.output.results import completed_trial, read_results, read_sweep_goals
from fairsearch.output.tables import aligned_rows, fmt_pct, method_settings
from fairsearch.output.threshold_fronts import chosen_threshold_row, format_thresholds, read_threshold_fronts
from fairsearch.train.checkpoint import read_features_at, read_scores_at

__all__ = ["Side", "compare_trials", "format_comparison"]

_SIDE = re.compile(r"^(\d{1,9})(?:@(refit|group|single|0(?:\.\d+)?|1(?:\.0+)?|\.\d+))?$")
REFIT = "refit"
"""``7@refit``: trial 7 with its last layer refitted on validation, as its ``last_layer_refit`` row."""
CHOSEN_THRESHOLDS = {"group": GROUP_THRESHOLDS, "single": THRESHOLD}
"""``7@group`` / ``7@single``: the ``kind`` of trial 7's thresholded row whose thresholds decide."""


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a trial's row, its test scores, and the test decisions compared.

    Attributes:
        spec: as written (``7``, ``7@0.42``, ``7@group``, ``7@single``, ``7@refit``).
        row: the trial's ``trials.parquet`` row.
        scores: its checkpointed scores (labels and groups of both splits).
        decisions: ``[N]`` 0/1 test decisions.
        how: how they were made, beyond the trial's own threshold of 0.5 (empty for that).
        thresholds: the thresholds they were made at, ``{"all": t}`` or one per group name; None for a
            refitted layer.
    """

    spec: str
    row: pd.Series
    scores: TrialScores
    decisions: np.ndarray
    how: str = ""
    thresholds: dict[str, float] | None = None

    @property
    def title(self) -> str:
        """``trial 7 (hybrid, lam=0.3 w_max=5)``, then how its decisions were made when not at 0.5."""
        text = (
            f"trial {int(self.row['number'])} ({self.row.get('param/method')}, {method_settings(self.row)})"
        )
        return f"{text} {self.how}" if self.how else text


def _side(spec: str, trials: pd.DataFrame, folder: Path) -> Side:
    match = _SIDE.match(spec.strip())
    if match is None:
        raise FairsearchError(
            f"compare: {clip_value(spec)} is not a trial: give a trial number (7), a trial at a decision "
            "threshold in [0, 1] (7@0.42), at the group or single thresholds of its row on the thresholded "
            "fronts (7@group, 7@single), or a trial with its last layer refitted (7@refit)"
        )
    number, how = int(match.group(1)), match.group(2) or "0.5"
    row = completed_trial(trials, number, f"compare: {folder}")
    location = row.get("checkpoint")
    arrays = read_scores_at(str(location)) if isinstance(location, str) and location else None
    if arrays is None:
        raise FairsearchError(
            f"compare: trial {number} of {folder} has no test scores in its checkpoint {location!s} "
            "(a sweep from before scores were kept, or its checkpoint was moved)"
        )
    scores = TrialScores.from_arrays(arrays, f"trial {number}'s scores")
    if how in CHOSEN_THRESHOLDS:
        return _chosen_thresholds_side(spec, row, scores, CHOSEN_THRESHOLDS[how], folder)
    if how != REFIT:
        decisions = (scores.test.score >= float(how)).astype(np.int64)
        at = "" if float(how) == 0.5 else f"at threshold {float(how):g}"
        return Side(spec, row, scores, decisions, at, {"all": float(how)})
    features = read_features_at(str(location))
    if features is None or "val_features" not in features or "test_features" not in features:
        raise FairsearchError(
            f"compare: trial {number} of {folder} kept no features to refit; run it with "
            "'refit_last_layer: true' in the space's fixed settings"
        )
    refit = refit_last_layer(
        features["val_features"], scores.val.label, scores.val.group, features["test_features"]
    )
    decisions = (refit.test_prob >= 0.5).astype(np.int64)
    return Side(spec, row, scores, decisions, f"with its last layer refitted on validation (C {refit.c:g})")


def _chosen_thresholds_side(spec: str, row: pd.Series, scores: TrialScores, kind: str, folder: Path) -> Side:
    """The side of ``7@group`` / ``7@single``: the trial's test scores at the thresholds of its row of
    ``kind`` on the thresholded fronts, the row ``fairsearch export --thresholds`` takes."""
    number = int(row["number"])
    _, constraints = read_sweep_goals(folder)
    chosen, _ = chosen_threshold_row(
        read_threshold_fronts(folder),
        number,
        kind,
        constraints,
        folder=folder,
        asked=f"compare: {spec}",
        instead=f"`fairsearch pareto {folder} --kind {kind}` lists the trials that have one",
    )
    thresholds = {str(k): float(v) for k, v in json.loads(str(chosen["thresholds"])).items()}
    if kind == GROUP_THRESHOLDS:
        missing = missing_group_thresholds(thresholds, scores.group_names, scores.test)
    else:
        missing = [] if list(thresholds) == ["all"] else ["all"]
    if missing:
        raise FairsearchError(
            f"compare: {spec}: trial {number}'s row in {folder}/pareto.parquet has no threshold for "
            f"group(s) {missing[:5]} of its scores' grouping {scores.group_by!r}; the file is damaged"
        )
    decisions = decisions_at(scores.test, thresholds, scores.group_names)
    how = f"at its single threshold chosen on validation ({format_thresholds(chosen)})"
    if kind == GROUP_THRESHOLDS:
        limit = chosen.get("gap_limit")
        within = f" for a gap of at most {100 * float(limit):g} %" if pd.notna(limit) else ""
        how = (
            f"with group thresholds chosen on validation{within} ({format_thresholds(chosen)}); "
            "they need each image's group at inference"
        )
    return Side(spec, row, scores, decisions, how, thresholds)


def compare_trials(
    folder: str | Path, a: str, b: str, *, n_boot: int = 2000, seed: int = 0
) -> tuple[Side, Side, list[PairedDifference]]:
    """Two trials of a sweep, compared on the test images both were evaluated on.

    Args:
        folder: the sweep's results folder.
        a, b: the sides: ``7``, ``7@0.42``, ``7@group``, ``7@single`` or ``7@refit`` (the module's
            docstring says what each decides).
        n_boot: bootstrap replicates of the paired intervals.
        seed: their seed.

    Returns:
        ``(side_a, side_b, differences)``: differences A − B, as :func:`paired_comparison` gives them.

    Raises:
        FairsearchError: a side that is not a completed trial with test scores, a ``7@group`` /
            ``7@single`` of a trial without such a row (or with a damaged one), or two trials tested on
            different images or groupings.
    """
    folder = Path(folder)
    trials, _ = read_results(folder)
    side_a, side_b = _side(a, trials, folder), _side(b, trials, folder)
    sa, sb = side_a.scores, side_b.scores
    if sa.group_by != sb.group_by or sa.group_names != sb.group_names or not sa.test.same_images(sb.test):
        raise FairsearchError(
            f"compare: trials {a} and {b} were not tested on the same images with the same groups "
            f"({sa.group_by}: {len(sa.test.label)} images, {sb.group_by}: {len(sb.test.label)}); "
            "a paired comparison needs both"
        )
    differences = paired_comparison(
        side_a.decisions,
        side_b.decisions,
        sa.test.label,
        sa.test.group,
        sa.group_names,
        n_boot=n_boot,
        seed=seed,
    )
    return side_a, side_b, differences


_LABELS = {"acc": "accuracy", "worst_group_acc": "worst-group accuracy", "max_acc_gap": "MaxAccGap"}


def _label(d: PairedDifference) -> str:
    if d.metric in _LABELS:
        return _LABELS[d.metric]
    kind, group = d.metric.split("/", 1)
    return f"{'acc' if kind == 'acc' else 'P(positive)'} {group} (n={d.n})"


def format_comparison(side_a: Side, side_b: Side, differences: list[PairedDifference]) -> str:
    """The comparison as text: both sides, one row per metric with A, B and A − B [95 % paired CI]."""
    n = differences[0].n
    lines = [
        f"A: {side_a.title}",
        f"B: {side_b.title}",
        f"on the same {n} test images, groups of {side_a.scores.group_by}; in %, A − B with 95 % paired intervals "
        "(bootstrap over the images; '*' where the interval excludes 0)",
        "",
    ]
    rows = [
        [
            _label(d),
            fmt_pct(d.a),
            fmt_pct(d.b),
            f"{100 * d.diff:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]{' *' if d.clear else ''}",
        ]
        for d in differences
    ]
    lines += aligned_rows(["metric", "A", "B", "A − B [95 % CI]"], rows)
    lines += ["", "verdict: " + verdict(differences)]
    return "\n".join(lines)
