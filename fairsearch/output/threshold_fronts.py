"""Did a fair method beat thresholding? The thresholded fronts of ``pareto.parquet``.

For every completed trial whose checkpoint holds its scores (:data:`fairsearch.train.checkpoint.SCORES_FILE`),
:func:`fairsearch.judge.thresholds.threshold_points` gives its single-threshold curve (kind ``threshold``) and
its per-group thresholds for a ladder of gap limits (kind ``group_thresholds``), chosen on validation and
measured on test. ``pareto.parquet`` then holds three fronts on (``val/acc`` ↑, ``val/max_acc_gap`` ↓),
told apart by its ``front`` column:

- ``search``: the trained trials' own front (kind ``trained``, the model's 0.5 threshold), as before.
- ``vanilla_thresholds``: the front of the thresholded points of the vanilla trials only: the
  post-processing baseline.
- ``combined``: the front of the trained trials and every thresholded point of any trial: it may mix
  kinds.

A thresholded row is its base trial's row (``trial_id``, ``number``, ``param/``, ``checkpoint`` …) with
the point's own ``val/`` and ``test/`` metrics (the ``group_by`` grouping only, no AUC), ``kind``,
``thresholds`` (JSON: ``{"all": t}`` or ``{group: t}``; positive when p(positive) ≥ t) and
``gap_limit`` (the validation gap limit that chose per-group thresholds, else null).

:func:`threshold_front_rows` is handed to :func:`fairsearch.output.results.write_results` by the sweep's
results callback (:mod:`fairsearch.search.tune_trials`) and runs on every write (every few seconds): each trial's points are computed once per (trial, checkpoint) and kept in
memory. A trial whose scores file is damaged is skipped with a logged warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fairsearch.errors import FairsearchError
from fairsearch.judge.pareto import hypervolume, pareto_mask
from fairsearch.judge.thresholds import ABOVE_ALL, POINT_KINDS, ThresholdPoint, TrialScores, threshold_points
from fairsearch.methods import METHODS
from fairsearch.output.fronts import (
    COMBINED_FRONT,
    SEARCH_FRONT,
    THRESHOLD_FRONTS,
    TRAINED_KIND,
    VANILLA_THRESHOLDS_FRONT,
)
from fairsearch.output.results import (
    DIRECTIONS,
    OBJECTIVES,
    REFERENCE,
    DerivedFront,
    completed_trials,
    read_front,
    read_results,
)
from fairsearch.output.tables import aligned_rows, fmt_ci, fmt_pct, left_out_note, thin_front
from fairsearch.spec.config import OBJECTIVES as DEFAULT_OBJECTIVES
from fairsearch.spec.config import Constraints, Objectives
from fairsearch.train.checkpoint import SCORES_FILE, read_scores_at

__all__ = [
    "COMBINED_FRONT",
    "COMPARISON_HEADER",
    "FRONT_TITLES",
    "GROUPS_AT_INFERENCE",
    "KINDS",
    "MEMBER_HEADER",
    "THRESHOLD_FRONTS",
    "VANILLA_THRESHOLDS_FRONT",
    "chosen_threshold_row",
    "derived_fronts",
    "format_threshold_fronts",
    "format_thresholds",
    "front_comparison",
    "member_rows",
    "nondominated_front",
    "read_threshold_fronts",
    "threshold_front_rows",
    "threshold_rows",
    "thresholds_apply",
]

logger = logging.getLogger(__name__)

KINDS = (TRAINED_KIND, *POINT_KINDS)
FRONT_TITLES = {
    SEARCH_FRONT: "trained",
    VANILLA_THRESHOLDS_FRONT: "thresholded vanilla",
    COMBINED_FRONT: "combined",
}
GROUPS_AT_INFERENCE = (
    "Per-group thresholds (kind group_thresholds) need each patient's group at inference time; "
    "a single threshold (kind threshold) and the trained models (kind trained) do not."
)
_points: dict[tuple[str, str], list[ThresholdPoint] | None] = {}
"""Each trial's points by (trial id, checkpoint location): a completed trial's scores never change."""


def _trial_points(trial_id: str, checkpoint: str, number: int) -> list[ThresholdPoint] | None:
    key = (trial_id, checkpoint)
    if key not in _points:
        points = None
        try:
            arrays = read_scores_at(checkpoint)
            if arrays is None:
                logger.info(
                    "trial #%d: its checkpoint holds no %s; it has no threshold points", number, SCORES_FILE
                )
            else:
                scores = TrialScores.from_arrays(arrays, f"{checkpoint.rstrip('/')}/{SCORES_FILE}")
                points = threshold_points(scores)
        except (FairsearchError, ValueError) as err:
            logger.warning("trial #%d is left out of the threshold fronts: %s", number, err)
        _points[key] = points
    return _points[key]


def threshold_rows(trials_df: pd.DataFrame) -> pd.DataFrame:
    """Every thresholded point of every completed trial that has scores, as ``pareto.parquet`` rows
    (without ``front`` and ``hypervolume``).

    Args:
        trials_df: a ``trials.parquet`` table.

    Returns:
        The base trial's columns but its ``val/`` ones, then the point's ``val/`` and ``test/`` metrics,
        ``kind``, ``thresholds`` and ``gap_limit``; no rows when no trial has scores.
    """
    completed = trials_df[(trials_df["status"] == "completed") & trials_df["checkpoint"].notna()]
    base_columns = [c for c in trials_df.columns if not str(c).startswith("val/")]
    frames = []
    for index, row in completed.iterrows():
        points = _trial_points(str(row["trial_id"]), str(row["checkpoint"]), int(row["number"]))
        if not points:
            continue
        base = completed.loc[[index] * len(points), base_columns].reset_index(drop=True)
        metrics = pd.DataFrame(
            [
                {**{f"val/{k}": v for k, v in p.val.items()}, **{f"test/{k}": v for k, v in p.test.items()}}
                for p in points
            ],
            dtype="float64",
        )
        extra = pd.DataFrame(
            {
                "kind": pd.Series([p.kind for p in points], dtype="str"),
                "thresholds": pd.Series([json.dumps(p.thresholds) for p in points], dtype="str"),
                "gap_limit": pd.Series(
                    [np.nan if p.gap_limit is None else p.gap_limit for p in points], dtype="float64"
                ),
            }
        )
        frames.append(pd.concat([base, metrics, extra], axis=1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def nondominated_front(pool: pd.DataFrame, name: str) -> pd.DataFrame:
    """The non-dominated rows of ``pool`` on the objectives, sorted as the search's front, with their
    ``hypervolume`` and ``front`` = ``name``."""
    points = pool[list(OBJECTIVES)].to_numpy(dtype=np.float64)
    front = pool[pareto_mask(points, DIRECTIONS)].copy()
    front["hypervolume"] = hypervolume(points, DIRECTIONS, REFERENCE)
    front["front"] = name
    ascending = [d == "min" for d in DIRECTIONS]
    return front.sort_values([*OBJECTIVES, "number"], ascending=[*ascending, True], kind="stable")


def thresholds_apply(objectives: Objectives) -> bool:
    """Whether a sweep gets thresholded fronts: they trace accuracy against MaxAccGap, so both must be
    among its objectives."""
    return {"acc", "max_acc_gap"} <= {o.key for o in objectives}


def derived_fronts(objectives: Objectives) -> tuple[DerivedFront, ...]:
    """What a sweep hands :func:`fairsearch.output.results.write_results` as ``derived_fronts``: the
    thresholded fronts where they apply (:func:`thresholds_apply`), else nothing."""
    return (threshold_front_rows,) if thresholds_apply(objectives) else ()


def threshold_front_rows(trials_df: pd.DataFrame, search_front: pd.DataFrame) -> pd.DataFrame:
    """The rows of the thresholded-vanilla and the combined front.

    Args:
        trials_df: a ``trials.parquet`` table.
        search_front: its search front (:func:`fairsearch.output.results.pareto_frame`, with test metrics): the
            trained points of the combined front, which no other trained trial can be on.

    Returns:
        The two fronts' rows, ``vanilla_thresholds`` first; no rows when no trial has scores.
    """
    # A sweep's results are rewritten every few seconds while trials run, but these fronts change only
    # when a trial completes (or the search front does): the last answer is kept for the same inputs.
    completed = completed_trials(trials_df)
    key = (
        tuple(trials_df.columns),
        tuple(map(str, completed["trial_id"])),
        tuple(map(str, completed["checkpoint"])),
        pd.util.hash_pandas_object(search_front, index=False).sum() if len(search_front) else 0,
        tuple(search_front.columns),
    )
    if _last_fronts and _last_fronts[0] == key:
        return _last_fronts[1].copy()
    rows = _threshold_front_rows(trials_df, search_front)
    _last_fronts[:] = [key, rows]
    return rows.copy()


_last_fronts: list[Any] = []
"""``[inputs, rows]`` of the last :func:`threshold_front_rows` call in this process."""


def _threshold_front_rows(trials_df: pd.DataFrame, search_front: pd.DataFrame) -> pd.DataFrame:
    candidates = threshold_rows(trials_df)
    if candidates.empty:
        return candidates
    vanilla = candidates["param/method"].map(lambda m: m in METHODS and not METHODS[m].is_fair).astype(bool)
    trained = search_front.drop(columns=["hypervolume", "front"])
    fronts = []
    if vanilla.any():
        fronts.append(nondominated_front(candidates[vanilla], VANILLA_THRESHOLDS_FRONT))
    fronts.append(
        nondominated_front(
            pd.concat([trained, candidates], ignore_index=True) if len(trained) else candidates,
            COMBINED_FRONT,
        )
    )
    return pd.concat(fronts, ignore_index=True)


# ------------------------------------------------------------------------------------------- reading
def read_threshold_fronts(folder: str | Path) -> dict[str, pd.DataFrame]:
    """A sweep's three fronts, by ``front``: ``search`` (trained), ``vanilla_thresholds``, ``combined``;
    the thresholded ones are empty when no trial has scores.

    Raises:
        FairsearchError: a results file is missing, damaged or of another schema, or a row of a front is
            not what the front holds (:func:`fairsearch.output.fronts.front_problems`: a trial that
            ``trials.parquet`` does not hold as completed, an unknown kind, ...).
    """
    _, search = read_results(folder)
    return {SEARCH_FRONT: search, **{name: read_front(folder, name) for name in THRESHOLD_FRONTS}}


def chosen_threshold_row(
    fronts: Mapping[str, pd.DataFrame],
    number: int,
    kind: str,
    constraints: Constraints,
    *,
    folder: str | Path,
    asked: str,
    instead: str,
) -> tuple[pd.Series, pd.DataFrame]:
    """Trial ``number``'s row of ``kind`` on the thresholded fronts that stands for the trial with
    thresholds of that kind (``fairsearch export --thresholds``, ``fairsearch compare 7@group``): of its
    rows of that kind, the most accurate on validation among those meeting the sweep's constraints (all,
    without constraints, or when none meets them), a smaller validation gap breaking ties.

    Args:
        fronts: a sweep's fronts by name (:func:`read_threshold_fronts`'s, others may be added): the
            thresholded ones are searched, the trial's rows on every one give its kinds for a refusal.
        number: the trial.
        kind: :data:`~fairsearch.judge.thresholds.THRESHOLD` or
            :data:`~fairsearch.judge.thresholds.GROUP_THRESHOLDS`.
        constraints: the sweep's constraints.
        folder, asked, instead: for the refusal: the results folder, what the user asked for
            (``--thresholds group``), and what they may do instead.

    Returns:
        ``(row, others)``: the row, and the trial's other rows of that kind (one per distinct thresholds),
        each with its ``front``.

    Raises:
        FairsearchError: the trial has no row of ``kind`` on the thresholded fronts.
    """
    mine = {
        name: rows[rows["number"] == number].assign(front=name) for name, rows in fronts.items() if len(rows)
    }
    parts = [rows for name, rows in mine.items() if name in THRESHOLD_FRONTS and "kind" in rows]
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    rows = rows[rows["kind"] == kind] if len(rows) else rows
    if rows.empty:
        kinds = sorted({str(k) for r in mine.values() if "kind" in r for k in r["kind"].dropna()})
        raise FairsearchError(
            f"{asked}: trial {number} of {folder} has no {kind} row on the thresholded fronts of "
            f"pareto.parquet (its rows there are of kind {kinds or 'none'}); {instead}"
        )
    rows = rows.drop_duplicates("thresholds")
    pool = rows
    if constraints and "feasible" in rows and rows["feasible"].fillna(False).astype(bool).any():
        pool = rows[rows["feasible"].fillna(False).astype(bool)]
    order = pool.sort_values(["val/acc", "val/max_acc_gap"], ascending=[False, True], kind="stable")
    best = order.iloc[0]
    return best, rows[rows["thresholds"] != best["thresholds"]].reset_index(drop=True)


# ------------------------------------------------------------------------------------------- output
def _kind(row: pd.Series) -> str:
    kind = row.get("kind")
    return TRAINED_KIND if kind is None or (isinstance(kind, float) and np.isnan(kind)) else str(kind)


def format_thresholds(row: pd.Series) -> str:
    """A row's thresholds for a table: ``0.42`` or ``Non-Hispanic 0.43, Hispanic 0.21``; ``0.5`` for a
    trained row. 0 puts everyone in the positive class, ∞ no one."""
    raw = row.get("thresholds")
    if not isinstance(raw, str):
        return "0.5"
    shown = {k: "∞" if v >= ABOVE_ALL else f"{v:.3g}" for k, v in json.loads(raw).items()}
    return shown["all"] if list(shown) == ["all"] else ", ".join(f"{k} {v}" for k, v in shown.items())


COMPARISON_HEADER = [
    "front",
    "members",
    "hypervolume",
    "smallest val gap",
    "trial",
    "kind",
    "test acc [CI]",
    "test gap [CI]",
    "most accurate: test acc [CI]",
    "its test gap [CI]",
]


def front_comparison(fronts: Mapping[str, pd.DataFrame]) -> list[list[str]]:
    """The three fronts side by side (rows under :data:`COMPARISON_HEADER`): per front its size and
    hypervolume, the smallest validation gap it reaches with that member's trial, kind and test accuracy
    and gap, and its most accurate member's test accuracy and gap; in %, with 95 % intervals.

    Args:
        fronts: :func:`read_threshold_fronts`'s fronts.
    """
    rows = []
    for name, title in FRONT_TITLES.items():
        front = fronts.get(name, pd.DataFrame())
        if front.empty:
            rows.append([title, "0", *["-"] * (len(COMPARISON_HEADER) - 2)])
            continue
        fair = front.sort_values(list(OBJECTIVES[::-1]), ascending=[True, False], kind="stable").iloc[0]
        top = front.sort_values(list(OBJECTIVES), ascending=[False, True], kind="stable").iloc[0]
        rows.append(
            [
                title,
                str(len(front)),
                f"{float(front['hypervolume'].iloc[0]):.4f}",
                fmt_pct(fair[OBJECTIVES[1]]),
                f"#{fair['number']} {fair.get('param/method', '')}".strip(),
                _kind(fair),
                fmt_ci(fair, "test/acc"),
                fmt_ci(fair, "test/max_acc_gap"),
                fmt_ci(top, "test/acc"),
                fmt_ci(top, "test/max_acc_gap"),
            ]
        )
    return rows


MEMBER_HEADER = [
    "trial",
    "method",
    "kind",
    "thresholds",
    "val acc",
    "val gap",
    "test acc [CI]",
    "test gap [CI]",
]


def member_rows(front: pd.DataFrame) -> list[list[str]]:
    """A front's members as display rows under :data:`MEMBER_HEADER` (accuracies and gaps in %)."""
    return [
        [
            str(row["number"]),
            str(row.get("param/method", "-")),
            _kind(row),
            format_thresholds(row),
            fmt_pct(row[OBJECTIVES[0]]),
            fmt_pct(row[OBJECTIVES[1]]),
            fmt_ci(row, "test/acc"),
            fmt_ci(row, "test/max_acc_gap"),
        ]
        for _, row in front.iterrows()
    ]


def format_threshold_fronts(
    fronts: Mapping[str, pd.DataFrame],
    kind: str | None = None,
    *,
    constraints: Constraints = (),
    show_all: bool = False,
    members_at: str | None = None,
) -> str:
    """The three fronts side by side, then the thresholded fronts' members, and the sentence on groups at
    inference time.

    Args:
        fronts: :func:`read_threshold_fronts`'s fronts.
        kind: list only the members of this kind (the side-by-side table stays whole).
        constraints: the sweep's constraints (the members nearest their bounds are always listed).
        show_all: list every member; otherwise at most :data:`~fairsearch.output.tables.SHOWN_MEMBERS` of
            each front (:func:`~fairsearch.output.tables.thin_front`), saying how many were left out.
        members_at: the command that lists the members, said in one line instead of listing them (the
            end of ``run``, where the side-by-side table is the answer); ``None``: list them.
    """
    if all(fronts.get(name, pd.DataFrame()).empty for name in THRESHOLD_FRONTS):
        return (
            "Threshold fronts: none yet (no completed trial's checkpoint holds scores.npz; trials run "
            "before fairsearch wrote it have none)."
        )
    lines = [
        "Did a fair method beat thresholding? Three validation fronts side by side; test figures of the member "
        "with the smallest validation gap and of the most accurate one (%, 95 % intervals):",
        *aligned_rows(COMPARISON_HEADER, front_comparison(fronts)),
        GROUPS_AT_INFERENCE,
    ]
    if members_at is not None:
        sizes = ", ".join(f"{FRONT_TITLES[n]} {len(fronts.get(n, pd.DataFrame()))}" for n in THRESHOLD_FRONTS)
        return "\n".join([*lines, f"Their members ({sizes}): {members_at}"])
    for name in THRESHOLD_FRONTS:
        front = fronts.get(name, pd.DataFrame())
        shown = front if kind is None or front.empty else front[front["kind"].fillna(TRAINED_KIND) == kind]
        title = f"{FRONT_TITLES[name].capitalize()} front: {len(front)} point(s)"
        if len(shown) < len(front):
            title += f", {len(shown)} of kind {kind}"
        listed = shown if show_all else thin_front(shown, DEFAULT_OBJECTIVES, constraints)
        note = left_out_note(len(shown), len(listed))
        lines += [
            "",
            title + (":" if len(shown) else "."),
            *(aligned_rows(MEMBER_HEADER, member_rows(listed)) if len(listed) else []),
            *([note] if note else []),
        ]
    return "\n".join(lines)
