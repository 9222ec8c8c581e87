"""The fronts of ``pareto.parquet``: the one registry of their names (its ``front`` column), what the rows
of each hold, and the check every row of every front passes when the file is read.

=====================  =============================================  ==========================================
``front``              written by                                     its rows
=====================  =============================================  ==========================================
``search``             :func:`fairsearch.output.results.pareto_frame`  trials' own rows (kind ``trained``)
``feasible``           the same, with ``constraints:``                 trials' own rows meeting every constraint
``vanilla_thresholds``  :mod:`fairsearch.output.threshold_fronts`       thresholded points of vanilla trials
``combined``           the same                                       trained rows and thresholded points
``last_layer_refit``   :mod:`fairsearch.output.refit_fronts`           refit heads (kind ``last_layer_refit``)
``confirmed``          :mod:`fairsearch.output.confirm`                seed means (``n_seeds`` of them), no kind
``confirmed_refit``    the same                                       refit heads' seed means (kind
                                                                      ``last_layer_refit``)
=====================  =============================================  ==========================================

Every row of every front names a completed trial of the sweep's ``trials.parquet`` by ``trial_id`` and
``number`` (a thresholded point, a refit head and a seed mean are of that trial); the search and feasible
fronts' rows are those trials' own rows, so their objectives are the trials' too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fairsearch.errors import clip_value
from fairsearch.judge.thresholds import POINT_KINDS
from fairsearch.spec.config import Objectives, objective_keys

__all__ = [
    "COMBINED_FRONT",
    "CONFIRMED_FRONT",
    "CONFIRMED_REFIT_FRONT",
    "FEASIBLE_FRONT",
    "FRONTS",
    "REFIT_FRONT",
    "REFIT_KIND",
    "SEARCH_FRONT",
    "THRESHOLD_FRONTS",
    "TRAINED_KIND",
    "VANILLA_THRESHOLDS_FRONT",
    "Front",
    "front_problems",
]

TRAINED_KIND = "trained"
"""``kind`` of a row that is a trained model at its own threshold (0.5); :mod:`fairsearch.judge.thresholds`
names the thresholded kinds."""
REFIT_KIND = "last_layer_refit"
"""``kind`` of a row that is a trial's features with a refitted last layer."""

SEARCH_FRONT = "search"
"""The search's own front; the other fronts' rows follow its rows in the file."""
FEASIBLE_FRONT = "feasible"
"""The rows non-dominated among the trials meeting every constraint (written only for a sweep with
``constraints:``; the search front itself spans every completed trial and marks each row ``feasible``)."""
VANILLA_THRESHOLDS_FRONT = "vanilla_thresholds"
"""The front of the vanilla trials' thresholded points: the post-processing baseline."""
COMBINED_FRONT = "combined"
"""The front of the trained trials and every thresholded point of any trial."""
THRESHOLD_FRONTS = (VANILLA_THRESHOLDS_FRONT, COMBINED_FRONT)
"""The thresholded fronts, in the order they follow the search's."""
REFIT_FRONT = "last_layer_refit"
"""The front of the trials' refitted last layers (DFR-style)."""
CONFIRMED_FRONT = "confirmed"
"""The front of the confirmation candidates' means over seeds."""
CONFIRMED_REFIT_FRONT = "confirmed_refit"
"""The front of the refit front's members' means over seeds: each seed's run refitted as its trial's was."""

_ACC_GAP = ("val/acc", "val/max_acc_gap")
"""Every trial reports both: the thresholded, refit and confirmed fronts are fronts on them whatever the
sweep's objectives, and their tables and figures read them."""


@dataclass(frozen=True)
class Front:
    """What the rows of one front hold.

    Attributes:
        kinds: the ``kind`` values its rows may have; ``None``: no kind (a row of a file written before
            the column, read as ``trained``; a confirmed row, which is a mean of several).
        trial_rows: its rows are their trials' own rows, so their objectives equal ``trials.parquet``'s.
        feasible_only: its rows are trials that ``trials.parquet`` marks ``feasible``.
        measured: float columns its rows are placed or shown by, beside the sweep's objectives.
        counts: columns each of its rows holds as a whole number >= 1.
    """

    kinds: tuple[str | None, ...]
    trial_rows: bool = False
    feasible_only: bool = False
    measured: tuple[str, ...] = ()
    counts: tuple[str, ...] = ()


FRONTS: Mapping[str, Front] = {
    SEARCH_FRONT: Front((TRAINED_KIND, None), trial_rows=True),
    FEASIBLE_FRONT: Front((TRAINED_KIND, None), trial_rows=True, feasible_only=True),
    VANILLA_THRESHOLDS_FRONT: Front(POINT_KINDS, measured=_ACC_GAP),
    COMBINED_FRONT: Front((TRAINED_KIND, *POINT_KINDS), measured=_ACC_GAP),
    REFIT_FRONT: Front((REFIT_KIND,), measured=_ACC_GAP),
    CONFIRMED_FRONT: Front((None,), measured=(*_ACC_GAP, "hypervolume"), counts=("n_seeds",)),
    CONFIRMED_REFIT_FRONT: Front((REFIT_KIND,), measured=(*_ACC_GAP, "hypervolume"), counts=("n_seeds",)),
}
"""Every front ``pareto.parquet`` may hold, by its ``front`` value; a writer of a new front registers it
here, or its file is refused when read."""


def _shown(values: list[str], most: int = 5) -> str:
    """Values from a file, for a message: at most ``most``, each cut and with control characters escaped."""
    return ", ".join(clip_value(v, 40) for v in values[:most]) + (", …" if len(values) > most else "")


def front_problems(pareto: pd.DataFrame, completed: pd.DataFrame, objectives: Objectives) -> list[str]:
    """What is wrong with the rows of a ``pareto.parquet`` table, one line per problem (none: it is sound).

    Args:
        pareto: the table, with its ``front`` column.
        completed: the completed trials of the sweep's ``trials.parquet``.
        objectives: the sweep's objectives.

    Returns:
        Lines such as ``its confirmed front holds trial(s) t7 (#7) that trials.parquet does not hold as
        completed``, to follow the file's name: an unknown or missing ``front``, a row naming a trial the
        sweep does not hold as completed (or, for the search and feasible fronts, holds with other
        objective values), a ``kind`` its front does not have, an objective or measured column missing or
        not float, a count that is not a whole number >= 1.
    """
    missing = [c for c in ("trial_id", "number") if c not in pareto]
    if missing:
        return [f"no column(s) {missing}"]
    if not pd.api.types.is_integer_dtype(pareto["number"]):
        return [f"column 'number' is {pareto['number'].dtype}, not integer"]
    names = pareto["front"]
    unknown = sorted({str(n) for n in names.dropna()} - set(FRONTS))
    problems = []
    if unknown or names.isna().any():
        found = unknown + (["null"] if names.isna().any() else [])
        problems.append(
            f"rows of front(s) {_shown(found)} this fairsearch does not know (known: {list(FRONTS)})"
        )
    trials = completed.drop_duplicates(["trial_id", "number"]).set_index(["trial_id", "number"])
    keys = list(objective_keys("val/", objectives))
    for name, front in FRONTS.items():
        rows = pareto[names == name]
        if rows.empty:
            continue
        problems += _row_problems(name, front, rows, trials, keys)
    return problems


def _row_problems(
    name: str, front: Front, rows: pd.DataFrame, trials: pd.DataFrame, keys: list[str]
) -> list[str]:
    problems = []
    floats = [
        c
        for c in dict.fromkeys([*keys, *front.measured])
        if c not in rows or not pd.api.types.is_float_dtype(rows[c])
    ]
    if floats:
        problems.append(f"its {name} front lacks the float column(s) {floats}")
    kinds = rows["kind"] if "kind" in rows else pd.Series(None, index=rows.index, dtype=object)
    found = {None if pd.isna(k) else str(k) for k in kinds}
    if found - set(front.kinds):
        wrong = sorted("null" if k is None else k for k in found - set(front.kinds))
        allowed = ["null" if k is None else k for k in front.kinds]
        problems.append(f"its {name} front holds rows of kind(s) {_shown(wrong)}; allowed {allowed}")
    for column in front.counts:
        values = rows[column] if column in rows else pd.Series(np.nan, index=rows.index)
        if not all(_is_count(v) for v in values):
            problems.append(f"its {name} front holds rows whose {column} is not a whole number >= 1")
    pairs = pd.MultiIndex.from_arrays([rows["trial_id"], rows["number"]])
    known = pairs.isin(trials.index)
    if front.trial_rows and known.all() and not floats:
        mine = rows[keys].to_numpy(dtype=np.float64)
        theirs = trials.loc[pairs, keys].to_numpy(dtype=np.float64)
        known = ((mine == theirs) | (np.isnan(mine) & np.isnan(theirs))).all(axis=1)
    if not known.all():
        strangers = list(dict.fromkeys(f"{t} (#{n})" for t, n in pairs[~known]))
        same = " with the same objectives" if front.trial_rows else ""
        problems.append(
            f"its {name} front holds trial(s) {_shown(strangers)} that trials.parquet does not "
            f"hold as completed{same}"
        )
    elif front.feasible_only:
        marked = trials.loc[pairs, "feasible"] if "feasible" in trials else pd.Series(pd.NA, index=pairs)
        unmet = [f"{t} (#{n})" for (t, n), ok in zip(pairs, marked, strict=True) if pd.isna(ok) or not ok]
        if unmet:
            problems.append(
                f"its {name} front holds trial(s) {_shown(unmet)} that trials.parquet does not mark as "
                "meeting every constraint"
            )
    return problems


def _is_count(value: object) -> bool:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and number >= 1 and number == int(number)
