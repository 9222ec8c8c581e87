"""MO-ASHA: Pareto-aware asynchronous successive halving for Ray Tune.

Ray Tune's schedulers rank trials by one metric, and Optuna cannot prune multi-objective studies. This
scheduler stops trials the way ASHA does (Li et al. 2020), but ranks them on all objectives at once, in
the spirit of MO-ASHA (Schmucker et al., "Multi-objective multi-fidelity hyperparameter optimization with
application to fairness", 2021):

* Rungs sit at ``grace_period * reduction_factor**k`` (``k = 0, 1, ...``) below ``max_t``, in the units
  of ``time_attr``.
* When a trial first reports at or past a rung, its objective vector is recorded there. With fewer than
  ``min_trials_per_rung`` trials recorded at the rung it continues. Otherwise all vectors recorded at the
  rung are ordered by non-domination rank, then by crowding distance within their front (larger first),
  and the trial continues when fewer than ``ceil(n / reduction_factor)`` (at least one) recorded trials
  are strictly ahead of it. Ties therefore favour the newcomer, as ASHA's ``reward < cutoff`` does.
* Identical records are not ties. Trials stuck at chance all report one point (one class for everyone),
  and the first records of a task are often nearly all that point; ranked equal, every one of them
  would continue and push the trials that learned (whose points are less extreme, so less crowded)
  out of the best ``1/η``. So the ``k``-th record of a point that is already recorded ranks ``k``
  fronts behind the point's best record, the repeats ordered by ``repeat_metric`` (validation AUC by
  default: threshold-free, it rises while accuracy still sits at chance) and then by arrival. The
  first trials at chance thus compete among themselves as in ASHA on AUC, and never with a trial
  whose point is its own.
* With constraints (a space file's ``constraints:``), feasible records come first, as in Deb's
  constrained domination: the records meeting every constraint are ranked among themselves as above,
  and every record that misses one ranks behind them all, ordered by its total violation (the sum of
  how far it misses each bound), smallest first. A trial that meets the constraints is thus never
  stopped for a trial that does not.
* The newcomer's *own* rank decides. A trial that dominates every other trial recorded at its rung is
  alone in the first front, nobody is ahead of it, and it always continues. (Syne Tune's MOASHA can stop
  it: its non-dominated sort returns the trials' indices in sorted order, which it then reads as
  per-trial priorities, so the newcomer is judged by the index of whichever trial sorts last.)

Objectives keep their own units and directions (``modes``): :mod:`fairsearch.judge.pareto` takes the
directions, so no sign flips reach records, logs or saved state.

Ray Tune does not save a scheduler's state in its experiment checkpoint, so a resumed sweep would start
with empty rungs. Pass :meth:`MOASHAScheduler.state_callback` to ``RunConfig(callbacks=[...])``: Tune
saves callback state with every experiment checkpoint and hands it back on ``Tuner.restore``.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from ray.tune import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from fairsearch.judge.pareto import Direction, crowding_distance, nondominated_ranks
from fairsearch.spec.config import (
    OBJECTIVES,
    Constraint,
    Objectives,
    objective_directions,
    objective_keys,
    violations,
)
from fairsearch.spec.scheduler_settings import REPEAT_METRICS, TIE_BREAKS, scheduler_settings

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

__all__ = [
    "MOASHAScheduler",
    "MOASHAStateCallback",
    "scheduler_from_settings",
]

logger = logging.getLogger(__name__)

_STATE_VERSION = 1


class MOASHAScheduler(FIFOScheduler):
    """Multi-objective asynchronous successive halving (see the module docstring for the rule).

    Args:
        metrics: Result keys of the objectives, e.g. ``("acc", "max_acc_gap")``.
        modes: ``"max"`` or ``"min"`` per metric.
        time_attr: Result key that measures progress; it must grow monotonically. The default,
            Tune's ``training_iteration``, counts reports, which is epochs for a trial that reports once
            per epoch. For rungs at fractions of an epoch, have the trial report more often and name a
            counter it reports (e.g. a float ``epoch`` such as 0.5, 1.0, ... or ``steps``), with
            ``grace_period`` and ``max_t`` in the same unit.
        max_t: Length of a full trial in ``time_attr`` units; a result at or past it gets ``STOP`` (the
            trial is done). Rungs lie strictly below it.
        grace_period: First rung: no trial is stopped before this much progress.
        reduction_factor: η: rungs grow by this factor and the best ``1/η`` of a rung continue.
        min_trials_per_rung: Trials recorded at a rung before it stops anyone; the first ones continue
            for lack of company.
        tie_break: Spread measure inside a front, one of :data:`TIE_BREAKS`.
        repeat_metric: Result key that orders records of one identical point, one of
            :data:`REPEAT_METRICS` (``auc``: validation AUC, higher first; ``none``: by arrival).
        constraints: requirements on result keys; records that meet them all rank first.

    Raises:
        ValueError: If an argument is out of range or the metrics and modes do not match.
    """

    _constraints: tuple[Constraint, ...] = ()  # a scheduler pickled before constraints: none

    def __init__(
        self,
        metrics: Sequence[str] = ("acc", "max_acc_gap"),
        modes: Sequence[str] = ("max", "min"),
        time_attr: str = "training_iteration",
        max_t: float = 100,
        grace_period: float = 1,
        reduction_factor: float = 3,
        min_trials_per_rung: int = 3,
        tie_break: str = "crowding",
        repeat_metric: str = "auc",
        constraints: Sequence[Constraint] = (),
    ) -> None:
        if isinstance(metrics, str) or isinstance(modes, str):
            raise ValueError(
                f"metrics and modes must be sequences such as ('acc', 'max_acc_gap'), got {metrics!r}"
            )
        metrics, modes = tuple(metrics), tuple(modes)
        if not metrics or len(set(metrics)) != len(metrics):
            raise ValueError(f"metrics must be distinct result keys, got {metrics!r}")
        if len(modes) != len(metrics) or any(m not in ("max", "min") for m in modes):
            raise ValueError(f"modes must hold 'max' or 'min' for each of {list(metrics)}, got {list(modes)}")
        if not max_t > 0:
            raise ValueError(f"max_t: {max_t!r} must be > 0")
        if not 0 < grace_period <= max_t:
            raise ValueError(f"grace_period: {grace_period!r} must be > 0 and <= max_t ({max_t!r})")
        if not reduction_factor >= 2:
            raise ValueError(f"reduction_factor: {reduction_factor!r} must be >= 2")
        if min_trials_per_rung < 1:
            raise ValueError(f"min_trials_per_rung: {min_trials_per_rung!r} must be >= 1")
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break: {tie_break!r} is not one of {list(TIE_BREAKS)}")
        if repeat_metric not in REPEAT_METRICS:
            raise ValueError(f"repeat_metric: {repeat_metric!r} is not one of {list(REPEAT_METRICS)}")
        super().__init__()
        self._metrics: tuple[str, ...] = metrics
        self._modes = cast("tuple[Direction, ...]", modes)  # checked above
        self._metric = metrics[0]  # Tune's strict metric check takes one name; the rest are ours
        self._time_attr = time_attr
        self._max_t = max_t
        self._reduction_factor = reduction_factor
        self._min_trials = int(min_trials_per_rung)
        self._tie_break = tie_break
        self._repeat_metric = repeat_metric
        self._constraints = tuple(constraints)
        milestones = []
        k = 0
        while grace_period * reduction_factor**k < max_t:
            milestones.append(grace_period * reduction_factor**k)
            k += 1
        self._milestones: tuple[float, ...] = tuple(milestones)
        # milestone -> trial_id -> objective values, in the order they were recorded
        self._records: dict[float, dict[str, tuple[float, ...]]] = {m: {} for m in milestones}
        # milestone -> trial_id -> the repeat metric's value (NaN when not reported)
        self._repeat_values: dict[float, dict[str, float]] = {m: {} for m in milestones}
        # milestone -> trial_id -> total constraint violation (0 when every constraint is met)
        self._violations: dict[float, dict[str, float]] = {m: {} for m in milestones}
        self._stopped_at: dict[str, float] = {}  # trial_id -> milestone where it was stopped
        self._warned_missing: set[str] = set()

    # ----------------------------------------------------------------------------- properties

    @property
    def metrics(self) -> tuple[str, ...]:
        """The objectives' result keys."""
        return self._metrics

    @property
    def modes(self) -> tuple[str, ...]:
        """``"max"`` or ``"min"`` per objective."""
        return self._modes

    @property
    def milestones(self) -> tuple[float, ...]:
        """Rungs in ``time_attr`` units, ascending."""
        return self._milestones

    @property
    def stopped_early(self) -> dict[str, float]:
        """``trial_id -> rung`` of every trial this scheduler stopped at a rung (not at ``max_t``)."""
        return dict(self._stopped_at)

    def rung_records(self, milestone: float) -> dict[str, tuple[float, ...]]:
        """Objective values recorded at one rung, by trial id (a copy).

        Args:
            milestone: One of :attr:`milestones`.

        Returns:
            ``trial_id -> values`` in the order of :attr:`metrics`.
        """
        return dict(self._records[milestone])

    # ----------------------------------------------------------------------------- Tune hooks

    def set_search_properties(
        self, metric: str | list[str] | None, mode: str | list[str] | None, **spec: Any
    ) -> bool:
        """Accept ``TuneConfig``'s metric/mode when absent or equal to this scheduler's own.

        Tune calls this with ``TuneConfig(metric=..., mode=...)``, which fairsearch leaves unset (a
        metric there turns OptunaSearch single-objective). ``None`` keeps the scheduler's objectives;
        the same metrics and modes (as lists, or a string for one objective) are accepted too; anything
        else returns False, and Tune then raises that the scheduler already has its own metric.

        Args:
            metric: ``TuneConfig.metric``.
            mode: ``TuneConfig.mode``.
            **spec: Experiment properties; unused.

        Returns:
            True when the scheduler's settings stand unchanged.
        """
        for given, own in ((metric, self._metrics), (mode, self._modes)):
            if given is None:
                continue
            names = (given,) if isinstance(given, str) else tuple(given)
            if names != own:
                return False
        return True

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        """Decide whether a trial continues after one of its results.

        Args:
            tune_controller: Tune's controller; unused.
            trial: The reporting trial (only ``trial_id`` is read).
            result: The flattened result; needs ``time_attr`` and every metric.

        Returns:
            ``TrialScheduler.CONTINUE`` or ``TrialScheduler.STOP``.
        """
        progress = self._progress(result)
        if progress is None:
            return TrialScheduler.CONTINUE
        if progress >= self._max_t:
            return TrialScheduler.STOP
        milestone = self._reached_rung(progress)
        if milestone is None:
            return TrialScheduler.CONTINUE
        trial_id = trial.trial_id
        if trial_id in self._records[milestone]:  # decided already (or a resumed trial repeats the rung)
            stopped = self._stopped_at.get(trial_id) == milestone
            return TrialScheduler.STOP if stopped else TrialScheduler.CONTINUE
        values = self._values(result)
        if values is None:
            return TrialScheduler.CONTINUE
        self._record(milestone, trial_id, values, result)
        if self._keeps(milestone, trial_id):
            return TrialScheduler.CONTINUE
        self._stopped_at[trial_id] = milestone
        logger.info(
            "MO-ASHA stops trial %s at %s=%s: %s outranked by the best 1/%s of %d trials",
            trial_id,
            self._time_attr,
            milestone,
            dict(zip(self._metrics, values, strict=True)),
            self._reduction_factor,
            len(self._records[milestone]),
        )
        return TrialScheduler.STOP

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        """Record a finished trial's last result at its highest rung, for the trials that come later.

        Args:
            tune_controller: Tune's controller; unused.
            trial: The finished trial.
            result: Its last result.
        """
        progress = self._progress(result) if result else None
        milestone = None if progress is None else self._reached_rung(progress)
        if milestone is None or trial.trial_id in self._records[milestone]:
            return
        values = self._values(result)
        if values is not None:
            self._record(milestone, trial.trial_id, values, result)

    def debug_string(self) -> str:
        """One line for Tune's status output: trials recorded at each rung and how many were stopped."""
        rungs = " | ".join(f"{m}: {len(self._records[m])}" for m in self._milestones)
        return f"Using MO-ASHA ({', '.join(self._metrics)}): stopped {len(self._stopped_at)}; rungs {rungs}"

    # ----------------------------------------------------------------------------- state

    def get_state(self) -> dict[str, Any]:
        """The scheduler's records as plain data (what :meth:`save` pickles).

        Returns:
            A dict with the objectives, the rungs, the values recorded at each and the stopped trials.
        """
        return {
            "version": _STATE_VERSION,
            "metrics": self._metrics,
            "modes": self._modes,
            "time_attr": self._time_attr,
            "records": {m: dict(r) for m, r in self._records.items()},
            "repeat_values": {m: dict(r) for m, r in self._repeat_values.items()},
            "violations": {m: dict(self._violations_at(m)) for m in self._milestones},
            "stopped_at": dict(self._stopped_at),
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore records saved by :meth:`get_state`, replacing the current ones.

        Records at rungs this scheduler no longer has (a changed ``grace_period`` or
        ``reduction_factor``) are dropped with a warning.

        Args:
            state: What :meth:`get_state` returned.

        Raises:
            ValueError: If the state is of another version or for other objectives or ``time_attr``.
        """
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"MO-ASHA state version {state.get('version')!r} is not {_STATE_VERSION}")
        saved = (tuple(state["metrics"]), tuple(state["modes"]), state["time_attr"])
        own = (self._metrics, self._modes, self._time_attr)
        if saved != own:
            raise ValueError(f"MO-ASHA state is for (metrics, modes, time_attr) {saved}, not {own}")
        dropped = sorted(set(state["records"]) - set(self._milestones))
        if dropped:
            logger.warning("MO-ASHA: dropping saved records at rungs %s, not rungs of %s", dropped, self)
        self._records = {m: dict(state["records"].get(m, {})) for m in self._milestones}
        saved_repeats = state.get("repeat_values", {})  # absent in states saved before it was kept
        self._repeat_values = {m: dict(saved_repeats.get(m, {})) for m in self._milestones}
        saved_violations = state.get("violations", {})  # absent in states saved before constraints
        self._violations = {m: dict(saved_violations.get(m, {})) for m in self._milestones}
        self._stopped_at = dict(state["stopped_at"])
        logger.info(
            "MO-ASHA restored %d rung records, %d trials stopped",
            sum(len(r) for r in self._records.values()),
            len(self._stopped_at),
        )

    def save(self, checkpoint_path: str) -> None:
        """Pickle the scheduler's records to a file (its own state file, never user input).

        Args:
            checkpoint_path: File to write.
        """
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        """Load records written by :meth:`save`.

        Args:
            checkpoint_path: File written by :meth:`save`.
        """
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))

    def state_callback(self) -> MOASHAStateCallback:
        """A Tune callback that saves and restores this scheduler with Tune's experiment checkpoints.

        Returns:
            The callback; put it in ``RunConfig(callbacks=[...])``.
        """
        return MOASHAStateCallback(self)

    def __repr__(self) -> str:
        return (
            f"MOASHAScheduler(metrics={self._metrics}, modes={self._modes}, time_attr={self._time_attr!r}, "
            f"max_t={self._max_t}, milestones={self._milestones}, reduction_factor={self._reduction_factor}, "
            f"min_trials_per_rung={self._min_trials}, tie_break={self._tie_break!r}, "
            f"repeat_metric={self._repeat_metric!r}, constraints={self._constraints})"
        )

    # ----------------------------------------------------------------------------- internals

    def _progress(self, result: Mapping[str, Any]) -> float | None:
        value = result.get(self._time_attr)
        if value is None:
            self._warn_missing(self._time_attr)
            return None
        return float(value)

    def _values(self, result: Mapping[str, Any]) -> tuple[float, ...] | None:
        values = []
        for name in self._metrics:
            value = result.get(name)
            if value is None:
                self._warn_missing(name)
                return None
            values.append(float(value))  # NaN is kept: fairsearch.judge.pareto ranks it after every valid row
        return tuple(values)

    def _record(
        self, milestone: float, trial_id: str, values: tuple[float, ...], result: Mapping[str, Any]
    ) -> None:
        self._records[milestone][trial_id] = values
        value = result.get(self._repeat_metric) if REPEAT_METRICS[self._repeat_metric] else None
        self._repeat_values[milestone][trial_id] = math.nan if value is None else float(value)
        self._violations_at(milestone)[trial_id] = sum(
            max(v, 0.0) for v in violations(self._constraints, result)
        )

    def _violations_at(self, milestone: float) -> dict[str, float]:
        """The total constraint violations recorded at a rung (a scheduler pickled by a fairsearch
        without constraints, restored on resume, starts them empty)."""
        if "_violations" not in self.__dict__:
            self._violations = {m: {} for m in self._milestones}
        return self._violations.setdefault(milestone, {})

    def _warn_missing(self, key: str) -> None:
        if key not in self._warned_missing:
            self._warned_missing.add(key)
            logger.warning("MO-ASHA: results lack %r; trials continue without a decision", key)

    def _reached_rung(self, progress: float) -> float | None:
        """The highest rung at or below ``progress`` (tolerant of float counters such as 0.1 * 3)."""
        reached = [m for m in self._milestones if progress >= m - 1e-9 * max(1.0, abs(m))]
        return reached[-1] if reached else None

    def _keeps(self, milestone: float, trial_id: str) -> bool:
        """Whether the trial just recorded at ``milestone`` is among the best ``1/η`` there."""
        records = self._records[milestone]
        n = len(records)
        if n < self._min_trials:
            return True
        ids = list(records)
        points = np.array([records[i] for i in ids], dtype=np.float64)
        direction = REPEAT_METRICS[self._repeat_metric]
        repeat_values = self._repeat_values[milestone]
        order = np.array([repeat_values.get(i, math.nan) for i in ids], dtype=np.float64)
        order = np.full(n, np.nan) if direction is None else (-order if direction == "max" else order)
        violation = np.array([self._violations_at(milestone).get(i, 0.0) for i in ids], dtype=np.float64)
        ranks = _feasible_first(points, self._modes, order, violation)
        spread = np.zeros(n, dtype=np.float64)
        for rank in np.unique(ranks):
            front = ranks == rank
            spread[front] = crowding_distance(points[front], self._modes)
        me = ids.index(trial_id)
        ahead = int(np.sum((ranks < ranks[me]) | ((ranks == ranks[me]) & (spread > spread[me]))))
        keep = max(1, math.ceil(n / self._reduction_factor))
        # Alone in the first front (it dominates every other record) means nobody is ahead of it.
        assert not (ranks[me] == 0 and np.all(np.delete(ranks, me) > 0)) or ahead == 0
        return ahead < keep


class MOASHAStateCallback(Callback):
    """Carries a :class:`MOASHAScheduler`'s records through Tune's experiment checkpoints.

    Tune pickles the ``Tuner`` (scheduler and callbacks together) once, saves callback state with every
    experiment checkpoint, and on ``Tuner.restore(...).fit()`` unpickles both and calls
    :meth:`set_state` before any trial resumes, so the restored scheduler gets its rung records back.

    Args:
        scheduler: The scheduler passed to ``TuneConfig(scheduler=...)``.
    """

    def __init__(self, scheduler: MOASHAScheduler) -> None:
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any] | None:
        """The scheduler's state (see :meth:`MOASHAScheduler.get_state`)."""
        return self.scheduler.get_state()

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore the scheduler's state.

        Args:
            state: What :meth:`get_state` returned.
        """
        self.scheduler.set_state(state)


def scheduler_from_settings(
    settings: Mapping[str, Any] | str | None,
    *,
    max_epochs: int,
    objectives: Objectives = OBJECTIVES,
    constraints: Sequence[Constraint] = (),
) -> MOASHAScheduler | None:
    """Build the scheduler a space file's ``scheduler:`` block asks for
    (:mod:`fairsearch.spec.scheduler_settings` shows and checks the block).

    The objectives and constraints are the sweep's (by default ``acc`` max and ``max_acc_gap`` min, no
    constraint); ``max_t`` is ``max_epochs``.

    Args:
        settings: The block: a mapping, ``None``/empty or ``"none"`` (off), or ``"mo_asha"`` (defaults).
        max_epochs: Epochs of the longest trial (the rungs lie below it).
        objectives: the sweep's objectives.
        constraints: the sweep's constraints: trials meeting them are promoted first.

    Returns:
        The scheduler, or ``None`` when early stopping is off.

    Raises:
        FairsearchError: Naming every bad key and value, one per line.
    """
    checked = scheduler_settings(settings, max_epochs=max_epochs)
    if checked is None:
        return None
    return MOASHAScheduler(
        metrics=objective_keys(objectives=objectives),
        modes=objective_directions(objectives),
        time_attr=checked.time_attr,
        max_t=max_epochs,
        grace_period=checked.grace_period,
        reduction_factor=checked.reduction_factor,
        min_trials_per_rung=checked.min_trials_per_rung,
        tie_break=checked.tie_break,
        repeat_metric=checked.repeat_metric,
        constraints=constraints,
    )


def _ranks_behind_repeats(
    points: np.ndarray, modes: Sequence[Direction], repeat_order: np.ndarray
) -> np.ndarray:
    """Non-domination ranks of the records at a rung where the ``k``-th record of one identical point
    ranks ``k`` fronts behind the point's first (see the module docstring); other records keep their
    plain ranks.

    Args:
        points: Objective values ``[N, D]``, earliest record first.
        modes: ``"max"`` or ``"min"`` per column.
        repeat_order: ``[N]`` the order among records of one point, smaller first; NaN after any
            number; equal values by arrival.

    Returns:
        Int64 ranks ``[N]`` (0 is the front); rows holding a NaN rank after every valid row.
    """
    ranks = nondominated_ranks(points, modes)
    valid = ~np.isnan(points).any(axis=1)
    if not valid.any():
        return ranks
    _, first, group = np.unique(points[valid], axis=0, return_index=True, return_inverse=True)
    if len(first) == int(valid.sum()):
        return ranks  # no repeats: the plain ranks
    # Rank the distinct points, then give the k-th record of a point k fronts more than its first.
    rows = np.flatnonzero(valid)
    key = np.where(np.isnan(repeat_order[rows]), np.inf, repeat_order[rows])
    repeat = np.zeros(len(points), dtype=np.int64)
    seen: dict[int, int] = {}
    for row in rows[np.lexsort((rows, key))]:  # by the order key, then by arrival
        g = int(group.ravel()[np.searchsorted(rows, row)])
        repeat[row] = seen.get(g, 0)
        seen[g] = repeat[row] + 1
    out = ranks.copy()
    out[valid] = ranks[valid] + repeat[valid]
    out[~valid] = out[valid].max() + 1
    return out


def _feasible_first(
    points: np.ndarray, modes: Sequence[Direction], repeat_order: np.ndarray, violation: np.ndarray
) -> np.ndarray:
    """Ranks with the records that meet every constraint (``violation == 0``) first, ranked among
    themselves by :func:`_ranks_behind_repeats`, then the others by their total violation, smallest
    first (equal violations share a rank)."""
    feasible = violation <= 0
    if feasible.all():
        return _ranks_behind_repeats(points, modes, repeat_order)
    ranks = np.zeros(len(points), dtype=np.int64)
    top = 0
    if feasible.any():
        ranks[feasible] = _ranks_behind_repeats(points[feasible], modes, repeat_order[feasible])
        top = int(ranks[feasible].max()) + 1
    _, dense = np.unique(violation[~feasible], return_inverse=True)
    ranks[~feasible] = top + dense.ravel()
    return ranks
