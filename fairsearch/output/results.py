"""The results files of a sweep: ``results/<name>/trials.parquet`` and ``results/<name>/pareto.parquet``.

The schema is the contract in ``docs/ARCHITECTURE.md`` ("Results files"); in short:

``trials.parquet``, one row per trial, columns in this order:

==================  ===============  ==========================================================
``trial_id``        string           Ray Tune trial id
``number``          int64            Optuna trial number (order of suggestion); rows sorted by it
``status``          string           ``completed``, ``stopped``, ``failed``, ``running``,
                                     ``pending`` or ``interrupted``
``param/<name>``    per type         ``method`` first, then by name; str -> string, int -> Int64,
                                     float -> float64, bool -> boolean; null where a trial has no
                                     such parameter (``lam`` for vanilla); mixed types -> string
``val/<metric>``    float64          latest validation metrics, flat keys of ``fairsearch.judge.fairness``;
                                     headline keys first, then by name; NaN where absent
``epochs_done``     float64          epochs trained (fractions with ``reports_per_epoch`` > 1)
``wall_time_s``     float64          seconds the trial trained up to its last report, over its
                                     restarts (an epoch cut short by a kill is not counted)
``error``           string           error message of a failed trial, else null
``failures``        Int64            times the trial's process failed and Tune restarted it (a
                                     completed trial with failures recovered from its checkpoint)
``checkpoint``      string           path/URI of the last checkpoint, else null
``finished_at``     float64          unix time the trial ended (NaN while it runs)
==================  ===============  ==========================================================

``pareto.parquet``: the non-dominated completed trials on the sweep's objectives (by default ``val/acc``
max, ``val/max_acc_gap`` min), sorted by the first objective, best first; the columns of
``trials.parquet``, then ``test/<metric>`` (float64, from the trial's checkpoint on the test split), then
``hypervolume`` (of the validation front against the objectives' worst corner, ``(0, 1)`` by default,
the same on every row), ``front`` (``search``) and ``kind`` (``trained``). A sweep with ``constraints:``
adds a boolean ``feasible`` column to both files (null for a trial not completed) and the ``feasible``
front: the trials non-dominated among those meeting every constraint. The thresholded
fronts follow (:mod:`fairsearch.output.threshold_fronts`): ``front`` = ``vanilla_thresholds`` and ``combined``,
rows of ``kind`` ``threshold`` or ``group_thresholds`` (and ``trained`` in ``combined``) with their
``thresholds`` (JSON) and ``gap_limit``; each front's own ``hypervolume``. The seed-confirmed front's rows,
written by :mod:`fairsearch.output.confirm`, follow with ``confirmed``. Its key-value metadata also holds
``hypervolume`` (the search front's) and ``search_columns`` (JSON; the search rows' columns). Both files'
metadata holds the sweep's ``objectives`` (their columns), ``directions``, ``reference`` and
``constraints`` (JSON; :func:`read_sweep_goals` reads them). Both files are written atomically
(:func:`write_parquet_atomic`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fairsearch.bounded import RESULTS_TABLE, check_parquet
from fairsearch.errors import FairsearchError, clip_value
from fairsearch.judge.pareto import hypervolume, pareto_mask
from fairsearch.output.fronts import FEASIBLE_FRONT, FRONTS, SEARCH_FRONT, TRAINED_KIND, front_problems
from fairsearch.spec.config import (
    MAX_OBJECTIVES,
    MIN_OBJECTIVES,
    Constraint,
    Constraints,
    Objectives,
    constraint_problems,
    objective_directions,
    objective_keys,
    objective_reference,
    objectives_named,
)
from fairsearch.spec.config import OBJECTIVES as DEFAULT_OBJECTIVES

__all__ = [
    "DIRECTIONS",
    "FEASIBLE_FRONT",
    "OBJECTIVES",
    "PARETO_FILE",
    "REFERENCE",
    "SEARCH_FRONT",
    "STATUSES",
    "TRAINED_KIND",
    "TRIALS_FILE",
    "DerivedFront",
    "TrialRecord",
    "WrittenResults",
    "completed_trial",
    "completed_trials",
    "constraint_violations",
    "feasible_mask",
    "front_hypervolume",
    "param_column",
    "pareto_frame",
    "read_front",
    "read_parquet_metadata",
    "read_results",
    "read_sweep_goals",
    "rows_of_other_fronts",
    "same_setting",
    "search_rows",
    "trials_frame",
    "trials_frame_columns",
    "write_parquet_atomic",
    "write_results",
]

logger = logging.getLogger(__name__)

DerivedFront = Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]
"""A front made from ``trials.parquet``'s table and the search front's rows, e.g. the thresholded fronts."""

TRIALS_FILE = "trials.parquet"
PARETO_FILE = "pareto.parquet"
STATUSES = ("completed", "stopped", "failed", "running", "pending", "interrupted")
"""``stopped``: ended early by the scheduler (MO-ASHA); its metrics are those of its last epoch.
``interrupted``: it was running when the sweep was interrupted (Ctrl-C); resuming the sweep continues it."""
OBJECTIVES = objective_keys("val/")
"""The default objectives' columns (``val/acc``, ``val/max_acc_gap``), from
:data:`fairsearch.spec.config.OBJECTIVES`; a sweep's own are in its files' metadata (:func:`read_sweep_goals`)."""
DIRECTIONS = objective_directions()
REFERENCE = objective_reference()
SCHEMA_VERSION = "1"

_TAIL_DTYPES = {
    "epochs_done": "float64",
    "wall_time_s": "float64",
    "error": "str",
    "failures": "Int64",
    "checkpoint": "str",
    "finished_at": "float64",
}
_FIRST_PARAMS = ("method",)
_FIRST_METRICS = (
    "acc",
    "auc",
    "max_acc_gap",
    "worst_group_acc",
    "es_auc",
    "acc_ci_low",
    "acc_ci_high",
    "auc_ci_low",
    "auc_ci_high",
    "max_acc_gap_ci_low",
    "max_acc_gap_ci_high",
    "worst_group_acc_ci_low",
    "worst_group_acc_ci_high",
    "loss",
)


@dataclass
class TrialRecord:
    """What the sweep knows about one trial; one row of ``trials.parquet``.

    Attributes:
        trial_id: Ray Tune trial id.
        number: Optuna trial number (order of suggestion).
        status: One of :data:`STATUSES`.
        params: Every sampled or fixed parameter, by name (``method``, ``lora_rank``, ``lam``, ...).
        val_metrics: Latest validation metrics, flat keys as in ``SplitMetrics.flat()``.
        epochs_done: Epochs trained (1.5: one and a half, with ``reports_per_epoch`` 2).
        wall_time_s: Seconds the trial trained up to its last report, summed over its restarts; time
            spent on an epoch that a kill cut short is not counted (the epoch is trained again).
        error: Error message of a failed trial, else None.
        checkpoint: Path or URI of the last checkpoint, else None.
        finished_at: Unix time the trial ended, None while it runs or waits.
        failures: Times the trial's process failed (a lost node, a killed worker, an exception) and Tune
            restarted it from its checkpoint; a failed trial's count includes its last failure. (Last
            among the fields, so that positional records written before it keep their meaning; its column
            follows ``error``.)
    """

    trial_id: str
    number: int
    status: str
    params: dict[str, Any] = field(default_factory=dict)
    val_metrics: dict[str, float] = field(default_factory=dict)
    epochs_done: float = 0.0
    wall_time_s: float = 0.0
    error: str | None = None
    checkpoint: str | None = None
    finished_at: float | None = None
    failures: int = 0


def _metric_order(keys: Iterable[str]) -> list[str]:
    """Headline metric keys first (in :data:`_FIRST_METRICS` order), then the rest by name."""
    keys = set(keys)
    return [k for k in _FIRST_METRICS if k in keys] + sorted(keys - set(_FIRST_METRICS))


def _param_order(names: Iterable[str]) -> list[str]:
    """:data:`_FIRST_PARAMS` first, then the rest by name."""
    names = set(names)
    return [p for p in _FIRST_PARAMS if p in names] + sorted(names - set(_FIRST_PARAMS))


def trials_frame_columns(params: Iterable[str], metrics: Iterable[str]) -> list[str]:
    """The columns of :func:`trials_frame`'s table, in its order, for trials holding ``params`` and
    ``metrics`` (keys without their ``param/`` and ``val/`` prefixes)."""
    return [
        "trial_id",
        "number",
        "status",
        *(f"param/{name}" for name in _param_order(params)),
        *(f"val/{key}" for key in _metric_order(metrics)),
        *_TAIL_DTYPES,
    ]


def param_column(values: list[Any]) -> pd.Series:
    """One ``param/<name>`` column from per-trial values (None where a trial lacks the parameter)."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, (bool, np.bool_)) for v in present):
        return pd.Series(values, dtype="boolean")
    if present and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present):
        return pd.Series(values, dtype="Int64")
    numeric = (int, float, np.integer, np.floating)
    if present and all(isinstance(v, numeric) and not isinstance(v, bool) for v in present):
        return pd.Series([np.nan if v is None else float(v) for v in values], dtype="float64")
    return pd.Series([None if v is None else str(v) for v in values], dtype="str")


def trials_frame(records: Sequence[TrialRecord]) -> pd.DataFrame:
    """Build the ``trials.parquet`` table from trial records.

    Args:
        records: One record per trial, in any order.

    Returns:
        One row per trial sorted by ``number``, columns and dtypes as in the module docstring. An empty
        ``records`` gives the fixed columns with their dtypes and no ``param/``/``val/`` columns.

    Raises:
        ValueError: If a record's status is not one of :data:`STATUSES`.
    """
    bad = sorted({r.status for r in records} - set(STATUSES))
    if bad:
        raise ValueError(f"trial status must be one of {list(STATUSES)}, got {bad}")
    records = sorted(records, key=lambda r: (r.number, r.trial_id))
    columns: dict[str, pd.Series] = {
        "trial_id": pd.Series([r.trial_id for r in records], dtype="str"),
        "number": pd.Series([r.number for r in records], dtype="int64"),
        "status": pd.Series([r.status for r in records], dtype="str"),
    }
    for name in _param_order({name for r in records for name in r.params}):
        columns[f"param/{name}"] = param_column([r.params.get(name) for r in records])
    for key in _metric_order(k for r in records for k in r.val_metrics):
        values = [r.val_metrics.get(key) for r in records]
        columns[f"val/{key}"] = pd.Series(
            [np.nan if v is None else float(v) for v in values], dtype="float64"
        )
    tail: dict[str, list[Any]] = {
        "epochs_done": [r.epochs_done for r in records],
        "wall_time_s": [r.wall_time_s for r in records],
        "error": [r.error for r in records],
        "failures": [r.failures for r in records],
        "checkpoint": [r.checkpoint for r in records],
        "finished_at": [np.nan if r.finished_at is None else r.finished_at for r in records],
    }
    for name, values in tail.items():
        columns[name] = pd.Series(values, dtype=_TAIL_DTYPES[name])
    return pd.DataFrame(columns)


def _objective_points(df: pd.DataFrame, objectives: Objectives = DEFAULT_OBJECTIVES) -> np.ndarray:
    """``[N, D]`` objective columns of ``df``; NaN where a column is absent."""
    columns = objective_keys("val/", objectives)
    cols = [df[c].to_numpy(dtype=np.float64) if c in df else np.full(len(df), np.nan) for c in columns]
    return np.stack(cols, axis=1) if len(df) else np.empty((0, len(columns)))


def constraint_violations(df: pd.DataFrame, constraints: Constraints) -> np.ndarray:
    """Float ``[N, C]``: each row's violation of each constraint on its validation metrics (``val/<key>``;
    ``<= 0``: met); a missing column or value counts as not met
    (:meth:`fairsearch.spec.config.Constraint.violation`)."""
    out = np.empty((len(df), len(constraints)), dtype=np.float64)
    for j, c in enumerate(constraints):
        values = df[c.column].to_numpy(dtype=np.float64) if c.column in df else np.full(len(df), np.nan)
        out[:, j] = [c.violation(v) for v in values]
    return out


def feasible_mask(df: pd.DataFrame, constraints: Constraints) -> np.ndarray:
    """Bool ``[N]``: the rows that meet every constraint (:func:`constraint_violations`)."""
    return np.all(constraint_violations(df, constraints) <= 0, axis=1)


def completed_trials(trials_df: pd.DataFrame) -> pd.DataFrame:
    """The rows of a ``trials.parquet`` table whose status is ``completed`` (none without a ``status``
    column)."""
    return trials_df[trials_df["status"] == "completed"] if "status" in trials_df else trials_df.iloc[:0]


def same_setting(value: Any, cell: Any) -> bool:
    """Whether a setting kept elsewhere (a confirmation plan's JSON, an Optuna study) is the one a
    ``trials.parquet`` cell holds: numbers to 1e-9, anything else as text; a missing cell never is."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return False
    if isinstance(value, int | float) and isinstance(cell, int | float | np.number):
        return math.isclose(float(value), float(cell), rel_tol=1e-9, abs_tol=1e-12)
    return str(value) == str(cell)


def completed_trial(trials_df: pd.DataFrame, number: int, where: str) -> pd.Series:
    """The ``trials.parquet`` row of completed trial ``number``.

    Raises:
        FairsearchError: ``{where} has no completed trial N; completed trials: [...]`` (the first 30).
    """
    done = completed_trials(trials_df)
    rows = done[done["number"] == number]
    if rows.empty:
        known = sorted(int(n) for n in done["number"])
        raise FairsearchError(
            f"{where} has no completed trial {number}; completed trials: {known[:30]}"
            + (" ..." if len(known) > 30 else "")
        )
    return rows.iloc[0]


def front_hypervolume(trials_df: pd.DataFrame, objectives: Objectives = DEFAULT_OBJECTIVES) -> float:
    """Hypervolume of the completed trials' validation front against the objectives' worst corner
    (``(0, 1)`` for accuracy and MaxAccGap).

    Args:
        trials_df: A ``trials.parquet`` table (other statuses are ignored).
        objectives: the sweep's objectives.

    Returns:
        The hypervolume in objective space, ``0.0`` without completed trials.
    """
    return hypervolume(
        _objective_points(completed_trials(trials_df), objectives),
        objective_directions(objectives),
        objective_reference(objectives),
    )


def pareto_frame(
    trials_df: pd.DataFrame,
    test_metrics: Mapping[str, Mapping[str, float]],
    objectives: Objectives = DEFAULT_OBJECTIVES,
    constraints: Constraints = (),
    *,
    front_name: str = SEARCH_FRONT,
) -> pd.DataFrame:
    """Build the ``pareto.parquet`` table: the completed trials nobody beats on every objective.

    Args:
        trials_df: A ``trials.parquet`` table, e.g. from :func:`trials_frame`.
        test_metrics: Test-split metrics (flat keys) by ``trial_id``; front members missing here get NaN.
        objectives: the sweep's objectives (2 or 3).
        constraints: the sweep's constraints: with ``front_name=FEASIBLE_FRONT`` only the trials meeting
            them all are candidates (the ``feasible`` column itself comes from :func:`with_feasible`).
        front_name: :data:`SEARCH_FRONT` (every completed trial) or :data:`FEASIBLE_FRONT`.

    Returns:
        The non-dominated rows (duplicates of a front point included) sorted by the objectives (best
        first, in order) and ``number``; the trials columns, then ``test/<metric>`` float64 columns, then
        ``hypervolume``, ``front`` and ``kind`` (:data:`TRAINED_KIND`).
    """
    directions = objective_directions(objectives)
    completed = completed_trials(trials_df)
    if front_name == FEASIBLE_FRONT:
        completed = completed[feasible_mask(completed, constraints)]
    points = _objective_points(completed, objectives)
    front = completed[pareto_mask(points, directions)].copy()
    keys = _metric_order(k for tid in front["trial_id"] for k in test_metrics.get(tid, {}))
    columns = {
        f"test/{key}": pd.Series(
            [test_metrics.get(tid, {}).get(key, np.nan) for tid in front["trial_id"]],
            index=front.index,
            dtype="float64",
        )
        for key in keys
    }
    hv = hypervolume(points, directions, objective_reference(objectives))  # from the points at hand
    columns["hypervolume"] = pd.Series(hv, index=front.index, dtype="float64")
    columns["front"] = pd.Series(front_name, index=front.index, dtype="str")
    columns["kind"] = pd.Series(TRAINED_KIND, index=front.index, dtype="str")
    front = pd.concat(
        [front, pd.DataFrame(columns, index=front.index)], axis=1
    )  # one insert: no fragmentation
    if len(front):
        ascending = [d == "min" for d in directions]
        front = front.sort_values(
            [*objective_keys("val/", objectives), "number"], ascending=[*ascending, True], kind="stable"
        )
    return front.reset_index(drop=True)


def write_parquet_atomic(
    df: pd.DataFrame, path: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write ``df`` to ``path`` as Parquet so readers see the old file or the new one, never a part.

    The table goes to a temporary file in the same folder, is flushed and fsynced, then moved over
    ``path`` with :func:`os.replace`. On any error the temporary file is removed and ``path`` is left
    as it was. The file keeps the mode of the one it replaces (a new one gets ``0o666`` less the umask).

    Args:
        df: The table (the index is not stored).
        path: Destination file; its folder must exist.
        metadata: Extra key-value pairs for the Parquet schema metadata (read back with
            :func:`read_parquet_metadata`). ``pandas`` and ``ARROW:`` keys are reserved.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: If a metadata key is reserved.
    """
    path = Path(path)
    extra = dict(metadata or {})
    reserved = [k for k in extra if k == "pandas" or k.startswith("ARROW:")]
    if reserved:
        raise ValueError(f"metadata keys {reserved} are reserved by pandas/pyarrow")
    table = pa.Table.from_pandas(df, preserve_index=False)
    merged = {**(table.schema.metadata or {}), **{k.encode(): str(v).encode() for k, v in extra.items()}}
    table = table.replace_schema_metadata(merged)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the mode an ordinary write would have
        os.chmod(tmp_name, path.stat().st_mode & 0o777 if path.exists() else _NEW_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, write_page_checksum=True)  # read_results verifies them
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_folder(path.parent)
    return path


def _new_file_mode() -> int:
    """``0o666`` less the process umask (read once, at import: ``os.umask`` is process-wide)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


_NEW_FILE_MODE = _new_file_mode()


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows opening a folder (POSIX)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_parquet_metadata(path: str | Path) -> dict[str, str]:
    """The key-value metadata written by :func:`write_parquet_atomic` (pandas/Arrow keys left out).

    Args:
        path: A Parquet file.

    Returns:
        The extra metadata as ``str -> str``.

    Raises:
        FairsearchError: the file's footer declares more than :data:`~fairsearch.bounded.RESULTS_TABLE`.
        OSError, pyarrow.ArrowException: the file cannot be read.
    """
    with open(path, "rb") as f:
        check_parquet(f, path, RESULTS_TABLE)
        raw = pq.read_schema(f).metadata or {}
    pairs = {k.decode(): v.decode() for k, v in raw.items()}
    return {k: v for k, v in pairs.items() if k != "pandas" and not k.startswith("ARROW:")}


def with_feasible(trials_df: pd.DataFrame, constraints: Constraints) -> pd.DataFrame:
    """``trials_df`` with a boolean ``feasible`` column before ``epochs_done`` (null for a trial not yet
    completed); unchanged without constraints."""
    if not constraints:
        return trials_df
    done = (trials_df["status"] == "completed").to_numpy(dtype=bool)
    values = pd.array(np.where(done, feasible_mask(trials_df, constraints), False), dtype="boolean")
    values[~done] = pd.NA
    out = trials_df.drop(columns="feasible", errors="ignore")
    out.insert(list(out.columns).index("epochs_done"), "feasible", values)
    return out


def goals_metadata(objectives: Objectives, constraints: Constraints) -> dict[str, str]:
    """The results files' metadata naming the sweep's objectives and constraints (read back by
    :func:`read_sweep_goals`)."""
    return {
        "objectives": json.dumps(list(objective_keys("val/", objectives))),
        "directions": json.dumps(list(objective_directions(objectives))),
        "reference": json.dumps(list(objective_reference(objectives))),
        "constraints": json.dumps([c.as_dict() for c in constraints]),
    }


def sweep_goals(metadata: Mapping[str, str], path: Path | str = "") -> tuple[Objectives, Constraints]:
    """A results file's objectives and constraints from its metadata (the defaults for a file written
    before either was kept).

    Raises:
        FairsearchError: the metadata names metrics this fairsearch does not know, fewer or more
            objectives than a sweep has, a reference point that is not finite, or constraints a space file
            could not hold (:func:`fairsearch.spec.config.constraint_problems`).
    """
    try:
        columns = json.loads(metadata.get("objectives", "null"))
        columns = list(OBJECTIVES) if columns is None else columns
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ValueError("objectives are not a list of column names")
        objectives = objectives_named([c.removeprefix("val/") for c in columns])
        if not MIN_OBJECTIVES <= len(set(objectives)) == len(objectives) <= MAX_OBJECTIVES:
            raise ValueError(
                f"{len(objectives)} objective(s) {[o.key for o in objectives][:5]}; a sweep has "
                f"{MIN_OBJECTIVES} or {MAX_OBJECTIVES}, each once"
            )
        reference = json.loads(metadata.get("reference", "null"))
        if reference is not None and (
            not isinstance(reference, list)
            or len(reference) != len(objectives)
            or not all(isinstance(r, int | float) and math.isfinite(r) for r in reference)
        ):
            raise ValueError(
                f"reference {clip_value(metadata['reference'], 60)} is not one finite number per objective"
            )
        constraints = tuple(
            Constraint(str(c["key"]), float(c["bound"]), c["side"])
            for c in json.loads(metadata.get("constraints", "[]"))
        )
        objectives_named([c.key for c in constraints])
        if any(c.side not in ("min", "max") for c in constraints):
            raise ValueError("a constraint's side is neither min nor max")
        problems = constraint_problems(constraints)
        if problems:
            raise ValueError("constraints " + "; ".join(problems))
    except (ValueError, TypeError, KeyError, FairsearchError, RecursionError) as err:
        raise FairsearchError(
            f"{path}: its metadata names objectives or constraints this fairsearch does not read ({err}); "
            "it is damaged or of another version"
        ) from None
    return objectives, constraints


def read_sweep_goals(folder: str | Path) -> tuple[Objectives, Constraints]:
    """The objectives and constraints a sweep's ``trials.parquet`` was written with.

    Raises:
        FairsearchError: the file is missing or unreadable, or its metadata is damaged.
    """
    path = Path(folder) / TRIALS_FILE
    try:
        metadata = read_parquet_metadata(path)
    except (OSError, pa.ArrowException) as err:
        raise FairsearchError(f"cannot read {path}: {' '.join(str(err).split())[:200]}") from None
    return sweep_goals(metadata, path)


class WrittenResults(NamedTuple):
    """What :func:`write_results` wrote: the two files, and the search front's rows."""

    trials_path: Path
    pareto_path: Path
    search_front: pd.DataFrame


def write_results(
    folder: str | Path,
    records: Sequence[TrialRecord],
    test_metrics: Mapping[str, Mapping[str, float]],
    objectives: Objectives = DEFAULT_OBJECTIVES,
    constraints: Constraints = (),
    derived_fronts: Sequence[DerivedFront] = (),
    table: Callable[[Sequence[TrialRecord]], pd.DataFrame] = trials_frame,
) -> WrittenResults:
    """Write ``trials.parquet`` and ``pareto.parquet`` of a sweep, each atomically.

    ``pareto.parquet`` holds the search's front, the front of the trials meeting every constraint (with
    constraints), and the rows of each of ``derived_fronts`` (a sweep hands in
    :func:`fairsearch.output.threshold_fronts.threshold_front_rows` when accuracy and MaxAccGap are among
    its objectives).

    Args:
        folder: The sweep's results folder (``results/<name>``); created if missing.
        records: Every trial so far, whatever its status.
        test_metrics: Test-split metrics by ``trial_id``; looked up (``.get``) for the fronts' members only,
            so a mapping that reads them on demand reads no more than it must.
        objectives: the sweep's objectives.
        constraints: the sweep's constraints.
        derived_fronts: Fronts made from the trials and the search front (``(trials_df, search_front)
            -> rows``), written below the search's own; their rows are marked ``feasible`` like it.
            Each row's ``front`` is one of :data:`fairsearch.output.fronts.FRONTS`.
        table: builds the trials table of ``records``: :func:`trials_frame`, or a
            :class:`fairsearch.output.trials_table.TrialsTable`'s ``frame``, which keeps rows between a
            sweep's writes.

    Returns:
        The two paths and the search front's rows as written (a caller that shows the front needs not
        build the trials table again).

    Raises:
        ValueError: a derived front's rows name a front that is not registered (nothing is written).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    trials_df = with_feasible(table(records), constraints)
    pareto_df = pareto_frame(trials_df, test_metrics, objectives, constraints)
    search_front = pareto_df
    search_columns = list(pareto_df.columns)
    parts = [pareto_df]
    if constraints:
        parts.append(
            pareto_frame(trials_df, test_metrics, objectives, constraints, front_name=FEASIBLE_FRONT)
        )
    for derived in derived_fronts:
        rows = derived(trials_df, pareto_df)
        strays = sorted(set(rows["front"]) - set(FRONTS)) if len(rows) else []
        if strays:  # a reader would refuse the file: not written
            raise ValueError(
                f"derived front(s) {strays} are not registered in fairsearch.output.fronts.FRONTS"
            )
        parts.append(_marked(rows, trials_df, constraints))
    parts = [p for p in parts[1:] if len(p)]
    if parts:
        pareto_df = pd.concat([pareto_df, *parts], ignore_index=True)
    common = {"fairsearch_schema": SCHEMA_VERSION, **goals_metadata(objectives, constraints)}
    hv = front_hypervolume(trials_df, objectives)
    trials_path = write_parquet_atomic(trials_df, folder / TRIALS_FILE, common)
    pareto_path = write_parquet_atomic(
        pareto_df,
        folder / PARETO_FILE,
        {**common, "hypervolume": json.dumps(hv), "search_columns": json.dumps(search_columns)},
    )
    logger.debug(
        "wrote %d trials, %d on the front (hypervolume %.4f) to %s",
        len(trials_df),
        len(pareto_df),
        hv,
        folder,
    )
    return WrittenResults(trials_path, pareto_path, search_front)


def _marked(rows: pd.DataFrame, trials_df: pd.DataFrame, constraints: Constraints) -> pd.DataFrame:
    """Thresholded rows with their ``feasible`` column: their own validation metrics, and for a metric a
    threshold does not change and they do not carry (AUC, ES-AUC: of the scores) their trial's."""
    if not constraints or rows.empty:
        return rows
    own = rows.copy()
    trial = trials_df.drop_duplicates("number").set_index("number")
    for c in constraints:
        theirs = trial[c.column].reindex(own["number"]).to_numpy() if c.column in trial else np.nan
        mine = own[c.column] if c.column in own else pd.Series(np.nan, index=own.index)
        own[c.column] = mine.where(mine.notna(), pd.Series(theirs, index=own.index)).astype("float64")
    rows = rows.copy()
    rows["feasible"] = pd.array(feasible_mask(own, constraints), dtype="boolean")
    return rows


def _read_table(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """A results table read whole, with the checksums of its pages verified (files written since
    :func:`write_parquet_atomic` writes them), and its key-value metadata.

    Raises:
        FairsearchError: the file is unreadable or damaged (a cut or changed byte), or it or its footer is
            over :data:`~fairsearch.bounded.RESULTS_TABLE`.
    """
    if not path.is_file():
        raise FairsearchError(f"cannot read {path}: it is a folder, not a Parquet file")
    try:
        with open(path, "rb") as f:  # one handle: a path opened twice could straddle an atomic replace
            check_parquet(f, path, RESULTS_TABLE)
            table = pq.read_table(f, page_checksum_verification=True)
        metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        return table.to_pandas(), metadata
    except FairsearchError:
        raise
    except Exception as exc:  # anything pyarrow or pandas meets in a damaged file
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        reason = reason if len(reason) <= 200 else reason[:199] + "…"
        raise FairsearchError(
            f"cannot read {path}: the file is damaged or not a Parquet file ({reason}); "
            "results are not shown from a damaged file"
        ) from None


def _check_table(path: Path, df: pd.DataFrame, metadata: Mapping[str, str], *, trials: bool) -> None:
    """Refuses a results table of another schema: ``trials.parquet`` needs fairsearch's schema version,
    and both need ``trial_id``, an integer ``number``, known statuses and numeric objectives."""
    problems = []
    version = metadata.get("fairsearch_schema")
    if trials and version != SCHEMA_VERSION:
        problems.append(
            "no fairsearch_schema in its metadata"
            if version is None
            else f"schema {version[:20]!r}, and this fairsearch reads schema {SCHEMA_VERSION!r}"
        )
    missing = [c for c in ("trial_id", "number", "status") if c not in df]
    if missing:
        problems.append(f"no column(s) {missing}")
    if "number" in df and not pd.api.types.is_integer_dtype(df["number"]):
        problems.append(f"column 'number' is {df['number'].dtype}, not integer")
    if "status" in df:
        unknown = sorted({str(s) for s in df["status"].dropna().unique()} - set(STATUSES))
        if unknown or df["status"].isna().any():
            problems.append(f"unknown status(es) {[s[:20] for s in unknown[:5]]}; allowed {list(STATUSES)}")
    objectives, _ = sweep_goals(metadata, path)
    if len(completed_trials(df)):
        for key in objective_keys("val/", objectives):
            if key not in df or not pd.api.types.is_float_dtype(df[key]):
                problems.append(f"column {key!r} missing or not float, though trials completed")
    if problems:
        raise FairsearchError(
            f"{path}: not a fairsearch results table ({'; '.join(problems)}); it is damaged or of "
            f"another schema (docs/ARCHITECTURE.md, 'Results files')"
        )


def read_results(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a sweep's results, also while it is still running.

    Args:
        folder: The sweep's results folder (``results/<name>``).

    Returns:
        ``(trials_df, pareto_df)``, the search's front only (``fairsearch.output.confirm.read_confirmed`` reads
        the confirmed one). When ``pareto.parquet`` is missing, or empty while the trials have
        completed ones (a sweep stopped between the two writes), the front is recomputed from the
        trials, without test metrics.

    Raises:
        FairsearchError: If ``trials.parquet`` is missing, or either file is unreadable, damaged (a page
            whose checksum fails) or of another schema, or any row of any front of ``pareto.parquet`` is
            not what its front holds (:func:`fairsearch.output.fronts.front_problems`).
    """
    folder = Path(folder)
    trials_df, objectives, constraints = _read_trials(folder)
    pareto_path = folder / PARETO_FILE
    state = "missing"
    if pareto_path.exists():
        every, metadata = _read_table(pareto_path)
        pareto_df = search_rows(every, metadata.get("search_columns"))
        if len(pareto_df):
            _check_table(pareto_path, pareto_df, metadata, trials=False)
        if len(every):
            _check_fronts(pareto_path, every, trials_df, objectives)
        if len(pareto_df) or completed_trials(trials_df).empty:
            return trials_df, pareto_df
        state = "empty, older than the trials' completed ones"
    logger.warning(
        "%s is %s; recomputing the front from %s without test metrics",
        pareto_path,
        state,
        folder / TRIALS_FILE,
    )
    return trials_df, pareto_frame(trials_df, {}, objectives, constraints)


def _read_trials(folder: Path) -> tuple[pd.DataFrame, Objectives, Constraints]:
    """``trials.parquet``, checked, with the sweep's objectives and constraints from its metadata."""
    path = folder / TRIALS_FILE
    if not path.exists():
        raise FairsearchError(f"no results in {folder}: run `fairsearch run --space ...` first")
    trials_df, metadata = _read_table(path)
    _check_table(path, trials_df, metadata, trials=True)
    return trials_df, *sweep_goals(metadata, path)


def read_front(folder: str | Path, front: str) -> pd.DataFrame:
    """The rows of one front of a sweep's ``pareto.parquet`` (its ``front`` column), read with the page
    checksums verified and every front checked against ``trials.parquet`` as :func:`read_results` does;
    empty when the file or the front is missing.

    Raises:
        FairsearchError: a results file is missing, unreadable or damaged, or a front's rows are not what
            it holds.
    """
    df = _rows_with_front(folder)
    return df[df["front"] == front].reset_index(drop=True) if len(df) else df


def rows_of_other_fronts(folder: str | Path, but: Sequence[str]) -> pd.DataFrame:
    """Every row of a sweep's ``pareto.parquet`` whose ``front`` is none of ``but``, in file order (the
    fronts another writer keeps as they are while it rewrites its own); empty when there is no file.

    Raises:
        FairsearchError: as :func:`read_front`.
    """
    df = _rows_with_front(folder)
    return df[~df["front"].isin(list(but))].reset_index(drop=True) if len(df) else df


def _rows_with_front(folder: str | Path) -> pd.DataFrame:
    """``pareto.parquet``'s rows, checked against ``trials.parquet``, when it has a ``front`` column; else
    (no file, or a file from before the column) no rows."""
    folder = Path(folder)
    path = folder / PARETO_FILE
    if not path.exists():
        return pd.DataFrame()
    trials_df, objectives, _ = _read_trials(folder)  # first, as a sweep writes it first
    df, _ = _read_table(path)
    if "front" not in df:
        return df.iloc[:0]
    _check_fronts(path, df, trials_df, objectives)
    return df


def _check_fronts(
    path: Path, pareto_df: pd.DataFrame, trials_df: pd.DataFrame, objectives: Objectives
) -> None:
    """Refuses a ``pareto.parquet`` table any of whose fronts' rows is not what the front holds (a file
    from before the ``front`` column holds the search front only)."""
    rows = pareto_df if "front" in pareto_df else pareto_df.assign(front=SEARCH_FRONT)
    problems = front_problems(rows, completed_trials(trials_df), objectives)
    if problems:
        raise FairsearchError(
            f"{path}: {'; '.join(problems)}; it is damaged or from another sweep or version, so its fronts "
            "are not shown"
        )


def search_rows(pareto_df: pd.DataFrame, columns: str | None = None) -> pd.DataFrame:
    """The search's own front of a ``pareto.parquet`` table (all of a file written before ``front``).

    Args:
        pareto_df: the table.
        columns: the file's ``search_columns`` metadata (JSON list), written beside confirmed rows, whose
            columns the search's rows do not have.
    """
    if "front" not in pareto_df:
        return pareto_df
    rows = pareto_df[pareto_df["front"] == SEARCH_FRONT]
    if columns is not None:
        rows = rows[[c for c in json.loads(columns) if c in rows]]
    return rows.reset_index(drop=True)
