"""How results read as text: percentages with their intervals, aligned text tables, the Pareto front as
one, and what a sweep's constraints came to.

The data itself (the results files, the fronts, which trials meet the constraints) lives in
:mod:`fairsearch.output.results`; this module only renders it as text, for the terminal and the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fairsearch.judge.pareto import spread_along
from fairsearch.methods import METHODS
from fairsearch.output.results import completed_trials, constraint_violations
from fairsearch.spec.config import OBJECTIVES as DEFAULT_OBJECTIVES
from fairsearch.spec.config import Constraints, Objectives, objective_keys

__all__ = [
    "SHOWN_MEMBERS",
    "aligned_rows",
    "constraint_lines",
    "fmt_ci",
    "fmt_pct",
    "format_front",
    "left_out_note",
    "method_settings",
    "same_in_every_trial",
    "thin_front",
]

SHOWN_MEMBERS = 10
"""The most members of one front that the text output (without ``--all``) and a report figure show."""


def fmt_pct(value: Any) -> str:
    """A fraction as a percentage with one decimal (``0.9321`` -> ``93.2``); ``-`` when missing."""
    return "-" if value is None or pd.isna(value) else f"{100 * float(value):.1f}"


def fmt_ci(row: pd.Series, key: str) -> str:
    """``row[key]`` with its 95 % interval (``<key>_ci_low``/``_high``): ``93.0 [91.0, 94.8]``.

    Any key of :meth:`fairsearch.judge.metrics.SplitMetrics.flat` with an interval works: ``acc``, ``auc``,
    ``max_acc_gap``, ``worst_group_acc`` and their per-grouping and per-group forms, with a prefix such as
    ``test/``. The methods are in :mod:`fairsearch.judge.intervals`.
    """
    point = fmt_pct(row.get(key))
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if point == "-" or low is None or high is None or pd.isna(low) or pd.isna(high):
        return point
    return f"{point} [{fmt_pct(low)}, {fmt_pct(high)}]"


def aligned_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A text table's lines: the header, a rule, then one line per row, columns padded to one width."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return [line.rstrip() for line in lines]


_SHORT = {"acc": "acc", "max_acc_gap": "gap", "worst_group_acc": "worst", "auc": "auc", "es_auc": "es-auc"}
"""Column headings of the objectives in :func:`format_front`."""


def _fmt_param(value: Any, kind: str = "") -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "-"
    if kind == "lr":
        return f"{float(value):.1e}"
    if isinstance(value, float) and not math.isclose(value, round(value)):
        return f"{value:.3g}"
    return str(value)


def method_settings(row: Mapping[str, Any]) -> str:
    """The settings a row's method reads, as ``lam=0.3 w_max=5`` (``-`` for a method that reads none),
    and ``(no group labels)`` for a method that trains without them (JTT)."""
    method = METHODS.get(str(row.get("param/method")))
    names = method.parameter_names if method is not None else ()
    text = " ".join(f"{name}={_fmt_param(row.get(f'param/{name}'))}" for name in names) or "-"
    return text if method is None or method.uses_groups else f"{text} (no group labels)"


def same_in_every_trial(trials_df: pd.DataFrame) -> dict[str, str]:
    """The settings (``param/`` columns, and ``epochs_done`` as ``epochs trained``) that hold one value in
    every completed trial, as shown text by column: a table of these trials can leave them out and say
    them once. Nothing with fewer than two completed trials, and never ``param/method``.

    Args:
        trials_df: a ``trials.parquet`` table.

    Returns:
        ``{"param/batch_size": "16", "param/data": "-", "epochs_done": "3", …}`` in the table's column order.
    """
    done = completed_trials(trials_df)
    if len(done) < 2:
        return {}
    same = {}
    for column in done.columns:
        if not (str(column).startswith("param/") or column == "epochs_done") or column == "param/method":
            continue
        if done[column].nunique(dropna=False) == 1:
            value = done[column].iloc[0]
            shown = (
                f"{float(value):g}"
                if column == "epochs_done"
                else _fmt_param(value, str(column).removeprefix("param/"))
            )
            same[str(column)] = shown
    return same


def _fmt_feasible(value: Any) -> str:
    """``yes``/``no`` for a row's ``feasible``; ``-`` when unknown."""
    return "-" if value is None or pd.isna(value) else ("yes" if bool(value) else "no")


def thin_front(
    front: pd.DataFrame,
    objectives: Objectives = DEFAULT_OBJECTIVES,
    constraints: Constraints = (),
    limit: int = SHOWN_MEMBERS,
) -> pd.DataFrame:
    """The members of a front a reader is shown: at most ``limit`` rows spread along it in the objectives,
    both ends kept, and for each constraint the member nearest its bound on either side (the last that
    meets it and the first that misses it); every row when there are no more than ``limit``.

    Args:
        front: front rows with the objectives' ``val/`` columns (any front of ``pareto.parquet``).
        objectives: the objectives the front is on.
        constraints: the sweep's constraints; one whose column the rows lack is passed over.
        limit: the most rows (:data:`SHOWN_MEMBERS`); the ends and the members nearest a bound are kept
            even past it.

    Returns:
        The chosen rows of ``front``, in its order (:func:`fairsearch.judge.pareto.spread_along` picks them).
    """
    if len(front) <= limit:
        return front
    columns = objective_keys("val/", objectives)
    points = np.stack(
        [front[c].to_numpy(np.float64) if c in front else np.full(len(front), np.nan) for c in columns], 1
    )
    bounded = [c for c in constraints if c.column in front]
    keep: list[int] = []
    for miss in constraint_violations(front, tuple(bounded)).T:
        meets = miss <= 0
        if meets.any():
            keep.append(int(np.flatnonzero(meets)[np.argmax(miss[meets])]))
        if (~meets).any():
            keep.append(int(np.flatnonzero(~meets)[np.argmin(miss[~meets])]))
    return front.iloc[spread_along(points, limit, keep)]


def left_out_note(total: int, shown: int) -> str:
    """What a thinned table says under its rows (``… 47 of 57 members left out …; --all lists them``);
    empty when none is."""
    if shown >= total:
        return ""
    return (
        f"… {total - shown} of {total} members left out ({shown} shown, spread along the front: both ends "
        "and those nearest a constraint's bound kept); --all lists them"
    )


def format_front(
    pareto_df: pd.DataFrame,
    objectives: Objectives = DEFAULT_OBJECTIVES,
    title: str = "Pareto front",
    *,
    constraints: Constraints = (),
    show_all: bool = False,
) -> str:
    """Render a ``pareto.parquet`` table as an aligned text table (accuracies in percent).

    Args:
        pareto_df: A front from :func:`fairsearch.output.results.pareto_frame` or
            :func:`fairsearch.output.results.read_results`.
        objectives: the sweep's objectives (their validation values are shown).
        title: what the first line calls the front.
        constraints: the sweep's constraints (the members nearest their bounds are always shown).
        show_all: every member; otherwise at most :data:`SHOWN_MEMBERS` (:func:`thin_front`), and a
            line saying how many were left out.

    Returns:
        A title line with the front size and hypervolume, then one line per front member: trial number,
        method, LoRA rank, the method's own settings (``lam=0.3 w_max=5``), learning rate, each objective on validation, whether it meets the
        constraints (when the table says), test acc [95 % CI], test gap [CI]; and what was left out.
    """
    if pareto_df.empty:
        return f"{title}: no completed trials yet."
    hv = float(pareto_df["hypervolume"].iloc[0]) if "hypervolume" in pareto_df else float("nan")
    header = [
        "trial",
        "method",
        "rank",
        "settings",
        "lr",
        *(f"val {_SHORT.get(o.key, o.key)}" for o in objectives),
        *(["meets"] if "feasible" in pareto_df else []),
        "test acc [CI]",
        "test gap [CI]",
    ]
    shown = pareto_df if show_all else thin_front(pareto_df, objectives, constraints)
    rows = []
    for _, row in shown.iterrows():
        rows.append(
            [
                str(row["number"]),
                _fmt_param(row.get("param/method")),
                _fmt_param(row.get("param/lora_rank")),
                method_settings(row),
                _fmt_param(row.get("param/lr"), "lr"),
                *(fmt_pct(row.get(o.column)) for o in objectives),
                *([_fmt_feasible(row.get("feasible"))] if "feasible" in pareto_df else []),
                fmt_ci(row, "test/acc"),
                fmt_ci(row, "test/max_acc_gap"),
            ]
        )
    goals = ", ".join(f"val {o.label} {o.direction}" for o in objectives)
    line = f"{title}: {len(pareto_df)} trial(s), hypervolume {hv:.4f} ({goals}; in %)"
    note = left_out_note(len(pareto_df), len(shown))
    return "\n".join([line, *aligned_rows(header, rows), *([note] if note else [])])


def constraint_lines(trials_df: pd.DataFrame, constraints: Constraints) -> list[str]:
    """What the end of a run and ``fairsearch pareto`` say of a sweep's constraints: how many completed
    trials meet each and all of them, and, when none does, the nearest miss (never an empty front left
    unexplained).

    Args:
        trials_df: a ``trials.parquet`` table.
        constraints: the sweep's constraints.

    Returns:
        One line per constraint and one for all of them together; none without constraints.
    """
    if not constraints:
        return []
    done = completed_trials(trials_df)
    misses = constraint_violations(done, constraints)
    lines = []
    for c, miss in zip(constraints, misses.T, strict=True):
        met = int((miss <= 0).sum())
        line = f"constraint {c.label}: met by {met} of {len(done)} completed trial(s)"
        if met == 0 and len(done):
            nearest = done.iloc[int(np.argmin(miss))]
            line += f"; NO trial meets it (nearest: trial #{int(nearest['number'])} at {fmt_pct(nearest.get(c.column))} %)"
        lines.append(line)
    together = int(np.all(misses <= 0, axis=1).sum())
    lines.append(
        f"all constraints: met by {together} of {len(done)} completed trial(s)"
        + ("; the feasible front is empty" if together == 0 else "")
    )
    return lines
