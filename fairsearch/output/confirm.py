"""Seed-confirmed fronts: train the front's members again with other seeds and take the front of the means.

The search's front is the non-dominated set of single-seed validation estimates, so it favours the
trials whose seed and validation draw were lucky (the winner's curse). With ``confirm: {seeds: K}`` in a
space file, when the search has ended fairsearch picks the *candidates*: every member of the front,
then every other completed trial that its MaxAccGap interval could put on the front (the point
(accuracy, lower end of its gap interval) is not dominated by any member), at most ``max_trials`` of them
(a longer front is sampled evenly along its length, so its fairest end is confirmed too). Each candidate is trained again with seeds ``seed + 1 … seed + K`` as
ordinary Ray trials of a second experiment, which resumes like the search's. The *confirmed front* is
the non-dominated set of the candidates' means over all their seeds (the search's run included), each
with a 95 % across-seed interval (mean ± t·s/√n) and the number of seeds behind it.

Pure pandas/numpy: the Ray side is in :mod:`fairsearch.search.sweep`. Files, in the sweep's results folder:

- ``confirm.json``: the plan (candidates and seeds), written once, so a resumed sweep confirms the same.
- ``confirm.parquet``: one row per confirmation run, the columns of ``trials.parquet`` (``number`` is
  the Optuna trial it repeats, ``param/seed`` its seed) and then its ``test/<metric>`` columns.
- ``pareto.parquet``: the search's front (``front == "search"``), the thresholded fronts
  (:mod:`fairsearch.output.threshold_fronts`) and below them the confirmed front (``front == "confirmed"``),
  see :func:`confirmed_front`.

A sweep whose trials keep their features (``refit_last_layer: true``) also confirms its last-layer refit
front: the plan's ``refit_candidates`` are that front's members (at most ``max_trials``), each trained again
with the same seeds, every run refitted as its trial was (the caller hands the refit in: it is
:func:`fairsearch.output.refit_fronts.refit_rows`), and the non-dominated refit means over seeds form the
``confirmed_refit`` front (:func:`confirmed_refit_front`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from fairsearch.bounded import RESULTS_TABLE, check_parquet, read_json
from fairsearch.errors import FairsearchError, clip_value
from fairsearch.folders import write_atomic
from fairsearch.judge.paired import paired_comparison
from fairsearch.judge.paired import verdict as paired_verdict
from fairsearch.judge.pareto import hypervolume, pareto_mask
from fairsearch.judge.thresholds import TrialScores
from fairsearch.output.fronts import (
    CONFIRMED_FRONT,
    CONFIRMED_REFIT_FRONT,
    REFIT_FRONT,
    REFIT_KIND,
    SEARCH_FRONT,
)
from fairsearch.output.results import (
    PARETO_FILE,
    TRIALS_FILE,
    TrialRecord,
    completed_trials,
    feasible_mask,
    read_front,
    read_parquet_metadata,
    read_results,
    read_sweep_goals,
    rows_of_other_fronts,
    same_setting,
    trials_frame,
    write_parquet_atomic,
)
from fairsearch.output.tables import aligned_rows
from fairsearch.spec.config import (
    OBJECTIVES,
    Constraints,
    Objectives,
    objective_directions,
    objective_keys,
    objective_reference,
)
from fairsearch.train.checkpoint import read_scores_at

logger = logging.getLogger(__name__)

__all__ = [
    "CONFIRMED_FRONT",
    "CONFIRMED_REFIT_FRONT",
    "CONFIRM_FILE",
    "PLAN_FILE",
    "ConfirmPlan",
    "candidates",
    "check_confirmation",
    "confirmed_front",
    "confirmed_refit_front",
    "make_plan",
    "paired_verdicts",
    "read_confirmed",
    "read_plan",
    "refresh_confirmed",
    "write_confirmation",
    "write_plan",
]

Refit = Callable[[pd.DataFrame], pd.DataFrame]
"""The refit rows of runs: :func:`fairsearch.output.refit_fronts.refit_rows`, handed in by the sweep."""

CONFIRM_FILE = "confirm.parquet"
PLAN_FILE = "confirm.json"
SEED_SUFFIXES = ("_seeds_low", "_seeds_high")
"""``<split>/<metric>_seeds_low`` / ``_seeds_high``: the across-seed 95 % interval of a mean."""
SUMMARISED = ("acc", "max_acc_gap", "worst_group_acc", "auc", "es_auc")
"""Metrics whose across-seed interval the confirmed front carries (every metric gets its mean)."""


@dataclass(frozen=True)
class ConfirmPlan:
    """Which trials are confirmed, and the runs that do it.

    Attributes:
        candidates: Optuna trial numbers, in the order chosen (front members first).
        runs: one config per confirmation run: the candidate's settings with another ``seed`` and
            ``confirms`` (the candidate's number).
        original_test: each candidate's test metrics from its search run (its final checkpoint's), by
            number; read once, when the plan is made.
        refit_candidates: the last-layer refit front's members whose runs are refitted too (each also
            in ``candidates``, whose runs train it); empty in a plan written before refits were confirmed.
    """

    candidates: tuple[int, ...]
    runs: tuple[dict[str, Any], ...]
    original_test: Mapping[int, Mapping[str, float]]
    refit_candidates: tuple[int, ...] = ()


def _points(df: pd.DataFrame, keys: Sequence[str]) -> np.ndarray:
    cols = [df[k].to_numpy(np.float64) if k in df else np.full(len(df), np.nan) for k in keys]
    return np.stack(cols, axis=1) if len(df) else np.empty((0, len(keys)))


_OPTIMISTIC = {"max_acc_gap": "_ci_low", "worst_group_acc": "_ci_high"}
"""The group metrics whose 95 % interval (wide, as small groups make it) may carry a trial that is off
the front onto it: the end of the interval that is better."""


def candidates(trials: pd.DataFrame, max_trials: int, objectives: Objectives = OBJECTIVES) -> list[int]:
    """The trials worth confirming: the front's members (evenly spread along it in the first objective,
    both ends included, when there are more than ``max_trials``), then the trials that the better end of
    their MaxAccGap or worst-group interval could put on the front, best first in the first objective;
    at most ``max_trials`` in all.

    Args:
        trials: a ``trials.parquet`` table (only ``completed`` rows count).
        max_trials: the most candidates.
        objectives: the sweep's objectives.

    Returns:
        Optuna trial numbers.
    """
    done = completed_trials(trials)
    keys = objective_keys("val/", objectives)
    directions = objective_directions(objectives)
    points = _points(done, keys)
    on_front = pareto_mask(points, directions)
    first = points[:, 0] if directions[0] == "min" else -points[:, 0]
    order = np.argsort(first, kind="stable")
    chosen = _spread([int(done["number"].iloc[i]) for i in order if on_front[i]], max_trials)
    hopeful = points.copy()
    for j, objective in enumerate(objectives):
        end = f"{keys[j]}{_OPTIMISTIC.get(objective.key, '')}"
        if objective.key in _OPTIMISTIC and end in done:
            hopeful[:, j] = done[end].to_numpy(np.float64)
    if not np.array_equal(hopeful, points, equal_nan=True):
        front_points = points[on_front]
        for i in order:
            if on_front[i] or np.isnan(hopeful[i]).any():
                continue
            # off the front even at its best: some member is as good in every objective, better in one
            both = np.vstack([front_points, hopeful[i]])
            if pareto_mask(both, directions)[-1]:
                chosen.append(int(done["number"].iloc[i]))
    return chosen[:max_trials]


def _spread(members: Sequence[int], most: int) -> list[int]:
    """At most ``most`` of a front's members, in its order: evenly along it, both ends included."""
    if len(members) <= most:
        return list(members)
    picks = np.unique(np.round(np.linspace(0, len(members) - 1, most)).astype(int))
    return [members[k] for k in picks]


def _settings(row: pd.Series) -> dict[str, Any]:
    """A trial's settings from its ``param/`` columns, in plain Python types (nulls left out)."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        if not str(column).startswith("param/") or value is None or value is pd.NA:
            continue
        if isinstance(value, float) and math.isnan(value):
            continue
        out[str(column)[len("param/") :]] = value.item() if isinstance(value, np.generic) else value
    return out


def make_plan(
    trials: pd.DataFrame,
    seeds: int,
    max_trials: int,
    read_test: Callable[[str], Mapping[str, float]],
    objectives: Objectives = OBJECTIVES,
    constraints: Constraints = (),
    refit_front: pd.DataFrame | None = None,
) -> ConfirmPlan:
    """The candidates of a finished search and one run per (candidate, extra seed).

    Args:
        trials: the search's ``trials.parquet`` table.
        seeds: K, further seeds per candidate; the run for the k-th uses the candidate's seed + k.
        max_trials: the most candidates.
        read_test: a checkpoint's test metrics from its path or URI (``trials.parquet``'s ``checkpoint``).
        objectives: the sweep's objectives.
        constraints: the sweep's constraints: the candidates are drawn from the trials that meet them all
            (from every trial, with a warning, when none does).
        refit_front: the search's last-layer refit front (``pareto.parquet``'s rows, in its order): its
            members, at most ``max_trials`` and those meeting the constraints where any does, are
            ``refit_candidates``, and trained again like the other candidates.
    """
    pool = completed_trials(trials)
    refit = refit_front if refit_front is not None and len(refit_front) else pd.DataFrame(columns=["number"])
    if constraints:
        meets = feasible_mask(pool, constraints)
        if meets.any():
            pool = pool[meets]
        else:
            logger.warning("no trial meets the constraints: the confirmation candidates are drawn from all")
        feasible = refit["feasible"].fillna(False).astype(bool) if "feasible" in refit else None
        if feasible is not None and feasible.any():
            refit = refit[feasible]
    refitted = _spread(list(dict.fromkeys(int(n) for n in refit["number"])), max_trials)
    numbers = list(dict.fromkeys([*candidates(pool, max_trials, objectives), *refitted]))
    rows = trials.set_index("number")
    runs, tests = [], {}
    for number in numbers:
        row = rows.loc[number]
        settings = _settings(row)
        base = int(settings.get("seed", 0))
        runs += [{**settings, "seed": base + k, "confirms": number} for k in range(1, seeds + 1)]
        checkpoint = row.get("checkpoint")
        tests[number] = dict(read_test(str(checkpoint))) if isinstance(checkpoint, str) else {}
    return ConfirmPlan(tuple(numbers), tuple(runs), tests, tuple(refitted))


def write_plan(folder: Path, plan: ConfirmPlan) -> None:
    """Writes ``confirm.json`` atomically."""
    payload = json.dumps(
        {
            "candidates": list(plan.candidates),
            "runs": list(plan.runs),
            "original_test": {str(k): dict(v) for k, v in plan.original_test.items()},
            "refit_candidates": list(plan.refit_candidates),
        },
        default=str,
    )
    write_atomic(folder / PLAN_FILE, payload.encode("utf-8"))


def read_plan(folder: Path) -> ConfirmPlan | None:
    """The plan a sweep wrote, or None when it has none.

    Raises:
        FairsearchError: the file is there but is not a plan, or holds more than
            :data:`~fairsearch.bounded.JSON_MAX_BYTES`.
    """
    path = folder / PLAN_FILE
    if not path.is_file():
        return None
    try:
        raw = read_json(path)
        plan = ConfirmPlan(
            tuple(int(n) for n in raw["candidates"]),
            tuple(dict(r) for r in raw["runs"]),
            {int(k): {m: float(x) for m, x in v.items()} for k, v in raw["original_test"].items()},
            tuple(int(n) for n in raw.get("refit_candidates", ())),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise FairsearchError(f"{path}: not a confirmation plan ({clip_value(str(err), 200)})") from None
    strays = sorted(set(plan.refit_candidates) - set(plan.candidates))
    if strays:
        raise FairsearchError(
            f"{path}: not a confirmation plan (refit_candidates {clip_value(str(strays), 200)} are not "
            "among its candidates)"
        )
    return plan


def check_confirmation(folder: Path, trials: pd.DataFrame, experiment: str) -> None:
    """Checks a sweep's confirmation files against each other and against its trials, reading only:
    the plan (``confirm.json``) names completed trials of ``trials.parquet`` and repeats their settings
    with other seeds; every run of ``confirm.parquet`` is one the plan made; confirmed rows in
    ``pareto.parquet`` come with their runs.

    Args:
        folder: the sweep's results folder.
        trials: its ``trials.parquet`` (read and checked by the caller).
        experiment: the confirmation's Tune experiment, named in the way out.

    Raises:
        FairsearchError: one message naming the file, what does not fit, and the way out.
    """
    again = (
        f"delete {folder / PLAN_FILE}, {folder / CONFIRM_FILE} and {experiment} to plan the confirmation "
        "again (its runs are trained again), or run with --restart to start the sweep over"
    )
    try:
        plan = read_plan(folder)
        runs = _read(folder / CONFIRM_FILE)
        _, confirmed = read_confirmed(folder) if (folder / PARETO_FILE).is_file() else (None, pd.DataFrame())
        if (folder / PARETO_FILE).is_file() and confirmed.empty:
            confirmed = read_front(folder, CONFIRMED_REFIT_FRONT)
    except FairsearchError as err:
        raise FairsearchError(f"{err}; {again}") from None
    if plan is None:
        if len(runs) or len(confirmed):
            what = folder / CONFIRM_FILE if len(runs) else folder / PARETO_FILE
            raise FairsearchError(
                f"{what} holds confirmation runs but {folder / PLAN_FILE} is missing; {again}"
            )
        return
    done = completed_trials(trials).set_index("number")
    for number in plan.candidates:
        if number not in done.index:
            raise FairsearchError(
                f"{folder / PLAN_FILE} plans to confirm trial {number}, which {folder / TRIALS_FILE} has not "
                f"completed (a plan of another sweep?); {again}"
            )
    seeds: dict[int, set[int]] = {n: set() for n in plan.candidates}
    for run in plan.runs:
        confirms, seed = run.get("confirms"), run.get("seed")
        if not isinstance(confirms, int) or confirms not in seeds or not isinstance(seed, int):
            raise FairsearchError(
                f"{folder / PLAN_FILE}: a run confirms {clip_value(repr(confirms))} with seed {clip_value(repr(seed))}, "
                f"not a seed of one of its candidates; {again}"
            )
        recorded = _settings(done.loc[confirms])
        differs = sorted(
            k
            for k, v in run.items()
            if k not in ("seed", "confirms") and (k not in recorded or not same_setting(v, recorded[k]))
        )
        if differs:
            raise FairsearchError(
                f"{folder / PLAN_FILE}: its run of trial {confirms} has settings {clip_value(', '.join(differs))} "
                f"other than the trial's in {folder / TRIALS_FILE} (a plan of another sweep?); {again}"
            )
        seeds[confirms].add(seed)
    for _, row in runs.iterrows():
        number, run_seed = row.get("number"), row.get("param/seed")
        if number not in seeds or pd.isna(run_seed) or int(run_seed) not in seeds[int(number)]:
            raise FairsearchError(
                f"{folder / CONFIRM_FILE}: a run of trial {clip_value(number)} with seed {clip_value(run_seed)} "
                f"that {folder / PLAN_FILE} did not plan; {again}"
            )
    if len(confirmed) and runs.empty:
        raise FairsearchError(
            f"{folder / PARETO_FILE} has a confirmed front but {folder / CONFIRM_FILE} is missing; {again}"
        )


def _interval(values: np.ndarray) -> tuple[float, float]:
    """95 % t-interval of the mean of ``values`` (NaN for fewer than two), within [0, 1], where every
    summarised metric lies (with 3 seeds t is 4.3, so the raw interval can pass 0 or 1)."""
    values = values[np.isfinite(values)]
    if values.size < 2:
        return math.nan, math.nan
    mean, half = float(values.mean()), float(stats.t.ppf(0.975, values.size - 1))
    half *= float(values.std(ddof=1)) / math.sqrt(values.size)
    return max(mean - half, 0.0), min(mean + half, 1.0)


def confirmed_front(
    trials: pd.DataFrame, runs: pd.DataFrame, plan: ConfirmPlan, objectives: Objectives = OBJECTIVES
) -> pd.DataFrame:
    """The non-dominated candidates on their validation means over seeds.

    Args:
        trials: the search's ``trials.parquet`` table (each candidate's first seed).
        runs: ``confirm.parquet`` (other statuses than ``completed`` are ignored); ``test/`` columns too.
        plan: the confirmation plan.
        objectives: the sweep's objectives.

    Returns:
        One row per member, sorted by mean ``val/acc`` descending: ``trial_id`` and ``number`` of the
        search's run, ``front`` (``confirmed``), the ``param/`` columns but ``seed``, ``n_seeds``,
        ``seeds`` (``"0,1,2"``), the mean of every ``val/`` and ``test/`` metric over the seeds (without
        the single-run ``_ci_`` intervals), ``<split>/<metric>_seeds_low/_high`` for the metrics of
        :data:`SUMMARISED`, ``shift/acc`` and ``shift/max_acc_gap`` (test mean − validation mean) and
        ``hypervolume`` (of the confirmed front). Empty when no candidate has a completed run.
    """
    by_number = trials.set_index("number")
    firsts = {
        number: (
            by_number.loc[number],
            {k: v for k, v in by_number.loc[number].items() if str(k).startswith("val/")}
            | {f"test/{k}": v for k, v in plan.original_test.get(number, {}).items()},
        )
        for number in plan.candidates
        if number in by_number.index
    }
    return _seed_means(firsts, completed_trials(runs), CONFIRMED_FRONT, objectives)


def confirmed_refit_front(
    refit_front: pd.DataFrame, refit_runs: pd.DataFrame, plan: ConfirmPlan
) -> pd.DataFrame:
    """The non-dominated refit candidates on their refit heads' validation means over seeds.

    Args:
        refit_front: the search's last-layer refit front (each candidate's first seed, refitted).
        refit_runs: the refit rows of the completed confirmation runs (``number``: the trial each
            confirms; ``val/`` on its own selection half, ``test/`` on the test split).
        plan: the confirmation plan (its ``refit_candidates``).

    Returns:
        Rows as :func:`confirmed_front`'s, ``front`` ``confirmed_refit`` and ``kind`` ``last_layer_refit``,
        on accuracy and MaxAccGap (as the refit front is, whatever the sweep's objectives).
    """
    by_number = refit_front.drop_duplicates("number").set_index("number") if len(refit_front) else None
    firsts = {
        number: (
            by_number.loc[number],
            {k: v for k, v in by_number.loc[number].items() if str(k).startswith(("val/", "test/"))},
        )
        for number in plan.refit_candidates
        if by_number is not None and number in by_number.index
    }
    front = _seed_means(firsts, refit_runs, CONFIRMED_REFIT_FRONT, OBJECTIVES)
    if len(front):
        front.insert(3, "kind", REFIT_KIND)
    return front


def _seed_means(
    firsts: Mapping[int, tuple[pd.Series, Mapping[str, Any]]],
    done: pd.DataFrame,
    name: str,
    objectives: Objectives,
) -> pd.DataFrame:
    """A confirmed front: each candidate's means over its first run (its row and metrics, by number) and
    its completed runs (``done``), and the non-dominated of those means."""
    rows: list[dict[str, Any]] = []
    for number, (first, first_metrics) in firsts.items():
        metrics = [dict(first_metrics)]
        seeds = [int(first.get("param/seed", 0) if pd.notna(first.get("param/seed", 0)) else 0)]
        mine = done[done["number"] == number] if len(done) else done
        for _, run in mine.iterrows():
            metrics.append({k: v for k, v in run.items() if str(k).startswith(("val/", "test/"))})
            seeds.append(int(run["param/seed"]))
        table = pd.DataFrame(metrics)
        table = table[[c for c in table.columns if "_ci_" not in str(c)]].astype("float64")
        row: dict[str, Any] = {"trial_id": str(first["trial_id"]), "number": int(number)}
        row["front"] = name
        row |= {k: v for k, v in first.items() if str(k).startswith("param/") and k != "param/seed"}
        row |= {"n_seeds": len(seeds), "seeds": ",".join(str(s) for s in sorted(seeds))}
        row |= table.mean(axis=0, skipna=True).to_dict()
        for split in ("val", "test"):
            for metric in SUMMARISED:
                key = f"{split}/{metric}"
                if key in table:
                    low, high = _interval(table[key].to_numpy(np.float64))
                    row[key + SEED_SUFFIXES[0]], row[key + SEED_SUFFIXES[1]] = low, high
        for metric in dict.fromkeys([*objective_keys(), *objective_keys(objectives=objectives)]):
            row[f"shift/{metric}"] = row.get(f"test/{metric}", math.nan) - row.get(f"val/{metric}", math.nan)
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=["trial_id", "number", "front", "n_seeds", "hypervolume"])
    means = pd.DataFrame(rows)
    keys, directions = objective_keys("val/", objectives), objective_directions(objectives)
    points = _points(means, keys)
    front = means[pareto_mask(points, directions)].copy()
    front["hypervolume"] = hypervolume(points, directions, objective_reference(objectives))
    ascending = [d == "min" for d in directions]
    front = front.sort_values([*keys, "number"], ascending=[*ascending, True], kind="stable")
    return front.reset_index(drop=True)


def write_confirmation(
    folder: Path,
    records: Sequence[TrialRecord],
    run_test: Mapping[str, Mapping[str, float]],
    plan: ConfirmPlan,
    refit: Refit | None = None,
) -> pd.DataFrame:
    """Writes ``confirm.parquet`` and adds the confirmed fronts to ``pareto.parquet``, each atomically.

    Args:
        folder: the sweep's results folder, holding the search's ``trials.parquet`` and ``pareto.parquet``.
        records: every confirmation run so far (``number`` = the trial it confirms).
        run_test: test metrics of the completed runs, by ``trial_id``.
        plan: the confirmation plan.
        refit: the refit rows of runs (:data:`Refit`), for a plan with ``refit_candidates``; ``None``: the
            ``confirmed_refit`` front is left as it was.

    Returns:
        The confirmed front.
    """
    runs = trials_frame(records)
    tests = [
        pd.Series([run_test.get(t, {}).get(k, np.nan) for t in runs["trial_id"]], name=f"test/{k}")
        for k in sorted({k for m in run_test.values() for k in m})
    ]
    runs = pd.concat([runs, *tests], axis=1) if tests else runs
    common = read_parquet_metadata(folder / PARETO_FILE) if (folder / PARETO_FILE).is_file() else {}
    write_parquet_atomic(runs, folder / CONFIRM_FILE, common)
    return _write_front(folder, runs, plan, refit)


def refresh_confirmed(folder: Path, plan: ConfirmPlan, refit: Refit | None = None) -> pd.DataFrame:
    """Writes the confirmed fronts into ``pareto.parquet`` again from ``confirm.parquet`` (after the
    search's own writer has rewritten the file on a resume), and returns the confirmed front."""
    runs = _read(folder / CONFIRM_FILE)
    return _write_front(folder, runs, plan, refit) if len(runs) else runs


def _write_front(folder: Path, runs: pd.DataFrame, plan: ConfirmPlan, refit: Refit | None) -> pd.DataFrame:
    trials, search = read_results(folder)
    objectives, _ = read_sweep_goals(folder)
    front = confirmed_front(trials, runs, plan, objectives)
    if plan.refit_candidates and refit is not None:
        trained = runs[[c for c in runs.columns if not str(c).startswith("test/")]]  # the refit's own
        refitted = refit(trained) if len(runs) else pd.DataFrame()
        refit_front = confirmed_refit_front(read_front(folder, REFIT_FRONT), refitted, plan)
    else:
        refit_front = read_front(folder, CONFIRMED_REFIT_FRONT)
    common = read_parquet_metadata(folder / PARETO_FILE) if (folder / PARETO_FILE).is_file() else {}
    hv = float(front["hypervolume"].iloc[0]) if len(front) else 0.0
    # every other front (feasible, thresholded, refit, ...) is kept as the search wrote it
    others = rows_of_other_fronts(folder, but=(SEARCH_FRONT, CONFIRMED_FRONT, CONFIRMED_REFIT_FRONT))
    parts = [rows for rows in [search, others, front, refit_front] if len(rows)]
    both = pd.concat(parts, ignore_index=True) if len(parts) > 1 else search
    common |= {"confirmed_hypervolume": json.dumps(hv), "search_columns": json.dumps(list(search.columns))}
    write_parquet_atomic(both, folder / PARETO_FILE, common)
    return front


def read_confirmed(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A sweep's confirmation runs and confirmed front; both empty when it has none (yet).

    Raises:
        FairsearchError: a file is there but unreadable, or a front of ``pareto.parquet`` is not what it
            holds (:func:`fairsearch.output.results.read_front`).
    """
    folder = Path(folder)
    return _read(folder / CONFIRM_FILE), read_front(folder, CONFIRMED_FRONT)


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        return pd.DataFrame()
    try:
        with open(path, "rb") as f:  # one handle: a path opened twice could straddle an atomic replace
            check_parquet(f, path, RESULTS_TABLE)
            return pd.read_parquet(f)
    except (OSError, pa.ArrowException) as err:
        raise FairsearchError(f"cannot read {path}: {err}") from None


@dataclass(frozen=True)
class _SeedRuns:
    """A configuration's seed runs on the test split: the first run's scores (labels, groups) and every
    run's decisions at the trial's own threshold of 0.5, ``[runs, N]``."""

    scores: TrialScores
    decisions: np.ndarray


def _seed_runs(number: int, trials: pd.DataFrame, runs: pd.DataFrame) -> _SeedRuns | None:
    """The search run and the completed confirmation runs of trial ``number`` whose checkpoints kept
    their scores, all on the same test images; None when none did (a sweep from before scores were kept)."""
    locations = [*trials.loc[trials["number"] == number, "checkpoint"]]
    if len(runs):
        done = completed_trials(runs)
        locations += [*done.loc[done["number"] == number, "checkpoint"]]
    first: TrialScores | None = None
    decisions = []
    for location in locations:
        arrays = read_scores_at(location) if isinstance(location, str) and location else None
        if arrays is None:
            continue
        scores = TrialScores.from_arrays(arrays, f"{location}'s scores")
        if first is None:
            first = scores
        elif not (scores.test.same_images(first.test) and scores.group_names == first.group_names):
            raise FairsearchError(
                f"trial {number}'s seed runs were not tested on the same images: {location} differs from its first run"
            )
        decisions.append((scores.test.score >= 0.5).astype(np.int64))
    return None if first is None else _SeedRuns(first, np.stack(decisions))


def paired_verdicts(folder: str | Path, front: pd.DataFrame) -> dict[int, str]:
    """For each fair member of a confirmed front, how it compares with the front's vanilla member on
    the same test images: :func:`fairsearch.judge.paired.paired_comparison` of their seed runs (each
    side's decisions averaged per image over its seeds) and its verdict.

    Args:
        folder: the sweep's results folder.
        front: its confirmed front (:func:`read_confirmed`).

    Returns:
        ``{number: "vs vanilla #1 (paired, 3 vs 3 seeds): ..."}`` for every non-vanilla member; empty when
        the front has no vanilla member; a member whose runs (or vanilla's) kept no scores says so.

    Raises:
        FairsearchError: a scores file is damaged, or seed runs were tested on different images.
    """
    method = front.get("param/method", pd.Series(dtype=str))
    vanillas = front[method == "vanilla"]
    if front.empty or vanillas.empty:
        return {}
    folder = Path(folder)
    trials, _ = read_results(folder)
    runs = _read(folder / CONFIRM_FILE)
    base_number = int(vanillas.iloc[0]["number"])
    base = _seed_runs(base_number, trials, runs)
    out: dict[int, str] = {}
    for number in (int(n) for n in front.loc[method != "vanilla", "number"]):
        head = f"vs vanilla #{base_number}"
        fair = _seed_runs(number, trials, runs)
        if base is None or fair is None:
            out[number] = f"{head}: no paired comparison (a side's checkpoints kept no test scores)"
            continue
        if not fair.scores.test.same_images(base.scores.test):
            out[number] = f"{head}: no paired comparison (not tested on the same images)"
            continue
        differences = paired_comparison(
            fair.decisions,
            base.decisions,
            base.scores.test.label,
            base.scores.test.group,
            base.scores.group_names,
        )
        sides = f"{len(fair.decisions)} vs {len(base.decisions)} seeds"
        out[number] = f"{head} (paired, {sides}): " + paired_verdict(
            differences, (f"#{number}", f"#{base_number}")
        )
    return out


def _pct(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{100 * float(value):.1f}"


def _with_interval(row: pd.Series, key: str) -> str:
    low, high = row.get(key + SEED_SUFFIXES[0]), row.get(key + SEED_SUFFIXES[1])
    point = _pct(row.get(key))
    if point == "-" or low is None or pd.isna(low):
        return point
    return f"{point} [{_pct(low)}, {_pct(high)}]"


def group_summary(row: Mapping[str, Any], split: str = "test") -> str:
    """``Hispanic 88.0 (pred+ 47 %, n 112) · Non-Hispanic 94.1 (pred+ 51 %, n 2200)`` for the primary
    grouping: each group's accuracy, predicted-positive rate and size (a rate near 0 or 100 % shows a
    group collapsed to one class)."""
    group_by = row.get("param/group_by")
    prefix = f"{split}/acc/{group_by}/"
    parts = []
    for key in sorted(k for k in row.keys() if str(k).startswith(prefix)):  # noqa: SIM118 (a Series too)
        group = str(key)[len(prefix) :]
        if "_ci_" in group or group.endswith(SEED_SUFFIXES) or pd.isna(row[key]):
            continue
        p_pos = row.get(f"{split}/p_pos/{group_by}/{group}")
        n = row.get(f"{split}/n/{group_by}/{group}")
        size = "" if n is None or pd.isna(n) else f", n {round(float(n))}"
        parts.append(f"{group} {_pct(row[key])} (pred+ {_pct(p_pos)} %{size})")
    return " · ".join(parts) if parts else "-"


def format_confirmed(
    front: pd.DataFrame, verdicts: Mapping[int, str] | None = None, title: str = "Confirmed front"
) -> str:
    """The confirmed front as text: each member's seed means with across-seed 95 % intervals, how far
    its gap moved from validation to test, its groups on the test split, and how it compares with the
    vanilla member.

    Args:
        front: the confirmed rows of ``pareto.parquet`` (:func:`read_confirmed`), or the confirmed refit
            rows.
        verdicts: :func:`paired_verdicts` of the front, by member.
        title: what the table is.
    """
    if front.empty:
        return f"{title}: none (no confirmation runs completed yet)."
    hv = float(front["hypervolume"].iloc[0])
    header = ["trial", "method", "seeds", "val acc", "val gap", "test acc", "test gap", "gap val→test"]
    rows = []
    for _, row in front.iterrows():
        rows.append(
            [
                f"#{row['number']}",
                str(row.get("param/method", "?")),
                str(int(row["n_seeds"])),
                _with_interval(row, "val/acc"),
                _with_interval(row, "val/max_acc_gap"),
                _with_interval(row, "test/acc"),
                _with_interval(row, "test/max_acc_gap"),
                f"{_pct(row.get('val/max_acc_gap'))} → {_pct(row.get('test/max_acc_gap'))}",
            ]
        )
    table = aligned_rows(header, rows)
    lines = [
        f"{title}: {len(front)} configuration(s), hypervolume {hv:.4f} — means over seeds with "
        "95 % across-seed intervals (t), in %",
        *table[:2],
    ]
    for (_, row), line in zip(front.iterrows(), table[2:], strict=True):
        lines.append(line)
        lines.append(f"    test groups: {group_summary(row)}")
        if verdicts and int(row["number"]) in verdicts:
            lines.append(f"    {verdicts[int(row['number'])]}")
    return "\n".join(line.rstrip() for line in lines)
