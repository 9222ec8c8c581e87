"""Replay recorded learning curves under an early-stopping scheduler, in simulated time.

A record (``record_curves.py``) holds every trial's validation objectives at each of its ``R`` reports,
trained to the full budget. Replaying it, a scheduler sees the reports it would have seen in a real sweep
and decides after each whether the trial goes on; what a stopped trial would have reported later is never
shown to it. No Ray cluster and no training: a replay of 120 trials takes well under a second.

The simulation (:func:`simulate`):

* ``workers`` trials run at once. Trials start in a random order (a permutation drawn from the seed);
  a worker takes the next trial as soon as its trial ends (finished or stopped).
* Report ``k`` of a trial arrives ``d_i * e_ik`` seconds after its report ``k - 1`` (or its start),
  with ``d_i`` the trial's recorded wall time over ``R`` and ``e_ik`` log-normal noise drawn from the
  seed, so arrivals interleave asynchronously, as in a real sweep.
* A scheduler is driven through a :class:`SchedulerDriver`; :class:`RayDriver` calls a Ray Tune
  ``TrialScheduler`` the way Tune's controller does (``on_trial_add``, ``on_trial_result`` after every
  report, ``on_trial_complete`` when the trial ends, stopped or finished), with stand-in trial objects.
* After every report the hypervolume of the front of every started trial's latest validation result
  (a stopped trial keeps its last one, as ``trials.parquet`` does) is recorded against the epochs and
  the seconds spent so far. Objectives, directions and the reference point are
  :data:`fairsearch.spec.config.OBJECTIVES`; the hypervolume is :func:`fairsearch.judge.pareto.hypervolume`.

The seed fixes the order and the noise, so replays of one seed under different schedulers are paired.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from fairsearch.judge.pareto import hypervolume, pareto_mask
from fairsearch.spec.config import objective_directions, objective_keys, objective_reference

SIGNALS = ("auc", "loss", "worst_group_acc", "train_loss")
"""Other validation results a record may hold; each replayed result carries those it has, as a sweep's
results do (MO-ASHA orders repeats of one point by ``auc``)."""

TIME_ATTR = "epoch"
"""The progress key every replayed result carries (epochs trained, 0.5, 1.0, ... with 2 reports an
epoch), as a sweep's results do; schedulers are given their rungs in it."""


@dataclass(frozen=True)
class Curves:
    """Full learning curves of ``N`` trials with ``R`` reports each.

    Attributes:
        objectives: ``[N, R, D]`` validation objectives, ``D`` in the order of
            :func:`fairsearch.spec.config.objective_keys`.
        budget: ``[R]`` epochs trained at each report, ascending; the last is the full budget.
        report_seconds: ``[N]`` mean seconds per report of each trial.
        trial_ids: ``N`` names, for the stand-in trial objects.
        signals: other results by key (:data:`SIGNALS`), each ``[N, R]``.
    """

    objectives: np.ndarray
    budget: np.ndarray
    report_seconds: np.ndarray
    trial_ids: tuple[str, ...]
    signals: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, r, d = self.objectives.shape
        if self.budget.shape != (r,) or not np.all(np.diff(self.budget) > 0) or self.budget[0] <= 0:
            raise ValueError(f"budget must be [R={r}] positive and ascending, got {self.budget.tolist()}")
        if self.report_seconds.shape != (n,) or len(self.trial_ids) != n:
            raise ValueError(f"report_seconds and trial_ids must have one entry per trial ({n})")
        if d != len(objective_keys()):
            raise ValueError(f"objectives must have D={len(objective_keys())} columns, got {d}")
        if any(v.shape != (n, r) for v in self.signals.values()):
            raise ValueError(f"every signal must be [N={n}, R={r}]")

    @classmethod
    def from_record(cls, record: pd.DataFrame) -> Curves:
        """Curves from a record's rows (one per trial and report; ``record_curves.py``'s schema).

        Raises:
            ValueError: If trials have different numbers of reports or report at different epochs.
        """
        record = record.sort_values(["trial", "report"], kind="stable")
        groups = [g for _, g in record.groupby("trial", sort=True)]
        epochs = {tuple(g["epoch"].round(9)) for g in groups}
        if len(epochs) != 1:
            raise ValueError(f"every trial must report at the same epochs; found {len(epochs)} patterns")
        keys = list(objective_keys())
        return cls(
            objectives=np.stack([g[keys].to_numpy(dtype=np.float64) for g in groups]),
            budget=np.asarray(next(iter(epochs)), dtype=np.float64),
            report_seconds=np.array([g["wall_time_s"].iloc[0] / len(g) for g in groups], dtype=np.float64),
            trial_ids=tuple(str(g["trial"].iloc[0]) for g in groups),
            signals={
                key: np.stack([g[key].to_numpy(dtype=np.float64) for g in groups])
                for key in SIGNALS
                if key in record.columns
            },
        )

    @property
    def n_trials(self) -> int:
        """``N``."""
        return int(self.objectives.shape[0])

    @property
    def max_t(self) -> float:
        """Epochs of a full trial."""
        return float(self.budget[-1])

    @property
    def full_epochs(self) -> float:
        """Epochs of every trial trained to the end."""
        return self.n_trials * self.max_t

    @property
    def final(self) -> np.ndarray:
        """``[N, D]`` each trial's objectives at its last report."""
        return self.objectives[:, -1, :]

    @property
    def full_hypervolume(self) -> float:
        """Hypervolume of the full-budget front (every trial at its last report)."""
        return front_hypervolume(self.final)

    @property
    def front_members(self) -> np.ndarray:
        """``[N]`` bool: the trials on the full-budget front."""
        return pareto_mask(self.final, objective_directions())

    @property
    def front_points(self) -> tuple[np.ndarray, ...]:
        """The full-budget front's distinct points, each as the indices of the trials that end on it.

        Trials stuck at chance all end on one point (one class for everyone); that point is lost only
        when every one of them is stopped.
        """
        members = np.flatnonzero(self.front_members)
        _, which = np.unique(self.final[members], axis=0, return_inverse=True)
        return tuple(members[which.ravel() == g] for g in range(int(which.max()) + 1 if members.size else 0))


def front_hypervolume(points: np.ndarray) -> float:
    """Hypervolume of ``points`` ``[N, D]`` under fairsearch's objectives and reference point."""
    return hypervolume(points, objective_directions(), objective_reference())


class SchedulerDriver(Protocol):
    """How the simulation talks to one scheduler (one instance per replay)."""

    def add(self, trial_id: str) -> None:
        """A trial starts."""

    def result(self, trial_id: str, result: dict[str, Any]) -> bool:
        """A report arrives; True when the trial goes on."""

    def end(self, trial_id: str, result: dict[str, Any]) -> None:
        """The trial ended at ``result``: stopped, or finished its budget."""


@dataclass(frozen=True)
class StandInTrial:
    """What Ray Tune's schedulers read of a ``ray.tune.experiment.Trial``: its id (and config)."""

    trial_id: str
    config: dict[str, Any] = field(default_factory=dict)


class RayDriver:
    """Drives a Ray Tune ``TrialScheduler`` as Tune's controller does.

    Tune calls ``on_trial_add`` when a trial is created, ``on_trial_result`` for every result, and
    ``on_trial_complete`` with the last result both when the scheduler said ``STOP`` and when the trial
    returned on its own (``TuneController.stop_trial``). The controller argument is ``None``: neither
    fairsearch's MO-ASHA nor Ray's ASHA reads it.
    """

    def __init__(self, scheduler: TrialScheduler) -> None:
        self.scheduler = scheduler
        self._trials: dict[str, StandInTrial] = {}

    def add(self, trial_id: str) -> None:
        trial = self._trials[trial_id] = StandInTrial(trial_id)
        self.scheduler.on_trial_add(None, trial)  # type: ignore[arg-type]

    def result(self, trial_id: str, result: dict[str, Any]) -> bool:
        decision = self.scheduler.on_trial_result(None, self._trials[trial_id], result)  # type: ignore[arg-type]
        return decision == TrialScheduler.CONTINUE

    def end(self, trial_id: str, result: dict[str, Any]) -> None:
        self.scheduler.on_trial_complete(None, self._trials.pop(trial_id), result)  # type: ignore[arg-type]


class RandomStopScheduler(FIFOScheduler):
    """Baseline: at each rung a trial stops with probability ``p``, whatever it reported.

    Args:
        milestones: Rungs in ``time_attr`` units (ascending).
        stop_probability: ``p``; :func:`stop_probability_for` finds the ``p`` that spends a given budget.
        rng: The generator the coin flips come from.
        time_attr: The result key of progress.
    """

    def __init__(
        self,
        milestones: Sequence[float],
        stop_probability: float,
        rng: np.random.Generator,
        time_attr: str = TIME_ATTR,
    ) -> None:
        super().__init__()
        self._milestones = tuple(milestones)
        self._p = stop_probability
        self._rng = rng
        self._time_attr = time_attr
        self._passed: dict[str, int] = {}  # trial_id -> rungs decided so far

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        progress = float(result[self._time_attr])
        passed = self._passed.get(trial.trial_id, 0)
        reached = sum(progress >= m - 1e-9 for m in self._milestones)
        for _ in range(passed, reached):
            if self._rng.random() < self._p:
                self._passed[trial.trial_id] = reached
                return TrialScheduler.STOP
        self._passed[trial.trial_id] = reached
        return TrialScheduler.CONTINUE


def expected_epochs(milestones: Sequence[float], max_t: float, p: float) -> float:
    """Expected epochs of one trial when each rung stops it with probability ``p`` (rungs < ``max_t``)."""
    edges = [*milestones, max_t]
    total, alive = edges[0], 1.0
    for low, high in itertools.pairwise(edges):
        alive *= 1 - p
        total += alive * (high - low)
    return total


def stop_probability_for(milestones: Sequence[float], max_t: float, epochs_per_trial: float) -> float:
    """The ``p`` at which :class:`RandomStopScheduler` spends ``epochs_per_trial`` on average.

    Clipped to ``[0, 1]``: a budget below the first rung cannot be met by stopping at rungs.
    """
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if expected_epochs(milestones, max_t, mid) > epochs_per_trial:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@dataclass(frozen=True)
class Replay:
    """One replay: the hypervolume curve and what the scheduler did.

    Attributes:
        epochs: ``[K]`` epochs spent after each of the ``K`` reports made.
        seconds: ``[K]`` simulated time of each report.
        hypervolume: ``[K]`` hypervolume of the front after each report.
        reports_made: ``[N]`` reports each trial made (``R`` when it ran to the end).
        full_hypervolume: of the full-budget front.
        front_points: the full-budget front's distinct points, as trial indices (:attr:`Curves.front_points`).
        reports: ``R``.
    """

    epochs: np.ndarray
    seconds: np.ndarray
    hypervolume: np.ndarray
    reports_made: np.ndarray
    full_hypervolume: float
    front_points: tuple[np.ndarray, ...]
    reports: int

    @property
    def total_epochs(self) -> float:
        """Epochs spent in all."""
        return float(self.epochs[-1])

    @property
    def wall_seconds(self) -> float:
        """Simulated time until the last trial ended."""
        return float(self.seconds[-1])

    @property
    def final_hypervolume(self) -> float:
        """Hypervolume once every trial had ended."""
        return float(self.hypervolume[-1])

    @property
    def stopped(self) -> np.ndarray:
        """``[N]`` bool: trials stopped before their last report."""
        return self.reports_made < self.reports

    @property
    def front_stopped_share(self) -> float:
        """Share of the full-budget front's distinct points lost: every trial ending on it was stopped."""
        return float(np.mean([self.stopped[g].all() for g in self.front_points]))

    def reach(self, share: float) -> tuple[float, float] | None:
        """``(epochs, seconds)`` when the hypervolume first reached ``share`` of the full front's.

        Returns:
            ``None`` when it never did.
        """
        hit = np.flatnonzero(self.hypervolume >= share * self.full_hypervolume - 1e-12)
        if hit.size == 0:
            return None
        return float(self.epochs[hit[0]]), float(self.seconds[hit[0]])


def simulate(
    curves: Curves,
    driver: SchedulerDriver,
    *,
    workers: int,
    seed: int,
    duration_noise: float = 0.25,
) -> Replay:
    """Replay every trial of ``curves`` under one scheduler (see the module docstring).

    Args:
        curves: The record.
        driver: The scheduler, fresh.
        workers: Trials running at once.
        seed: Draws the trial order and the report-time noise.
        duration_noise: Standard deviation of the log of each report's time factor.

    Returns:
        The hypervolume curve and the scheduler's stops.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    rng = np.random.default_rng(seed)
    n, r, d = curves.objectives.shape
    order = rng.permutation(n)
    durations = curves.report_seconds[:, None] * np.exp(rng.normal(0.0, duration_noise, size=(n, r)))
    increments = np.diff(curves.budget, prepend=0.0)
    keys = objective_keys()

    latest = np.full((n, d), np.nan)
    reports_made = np.zeros(n, dtype=np.int64)
    epochs: list[float] = []
    seconds: list[float] = []
    volumes: list[float] = []
    spent = 0.0
    events: list[tuple[float, int, int, int]] = []  # (time, tie-break, trial, report index)
    counter = 0
    queue = iter(order.tolist())

    def start(trial: int, now: float) -> None:
        nonlocal counter
        driver.add(curves.trial_ids[trial])
        heapq.heappush(events, (now + durations[trial, 0], counter, trial, 0))
        counter += 1

    for trial in (next(queue) for _ in range(min(workers, n))):
        start(trial, 0.0)
    while events:
        now, _, trial, k = heapq.heappop(events)
        spent += increments[k]
        values = curves.objectives[trial, k]
        changed = not np.array_equal(latest[trial], values)
        latest[trial] = values
        reports_made[trial] = k + 1
        if changed or not volumes:
            volume = front_hypervolume(latest[~np.isnan(latest).any(axis=1)])
        epochs.append(spent)
        seconds.append(now)
        volumes.append(volume)
        result: dict[str, Any] = {
            TIME_ATTR: float(curves.budget[k]),
            "training_iteration": k + 1,
            **{key: float(v) for key, v in zip(keys, values, strict=True)},
            **{key: float(v[trial, k]) for key, v in curves.signals.items()},
        }
        goes_on = driver.result(curves.trial_ids[trial], result) and k + 1 < r
        if goes_on:
            heapq.heappush(events, (now + durations[trial, k + 1], counter, trial, k + 1))
            counter += 1
            continue
        driver.end(curves.trial_ids[trial], result)
        following = next(queue, None)
        if following is not None:
            start(following, now)
    return Replay(
        epochs=np.asarray(epochs),
        seconds=np.asarray(seconds),
        hypervolume=np.asarray(volumes),
        reports_made=reports_made,
        full_hypervolume=curves.full_hypervolume,
        front_points=curves.front_points,
        reports=r,
    )


def replay_seeds(
    curves: Curves,
    make_driver: Callable[[int], SchedulerDriver],
    seeds: Sequence[int],
    *,
    workers: int,
) -> list[Replay]:
    """One replay per seed, each with a fresh driver (``make_driver(seed)``)."""
    return [simulate(curves, make_driver(seed), workers=workers, seed=seed) for seed in seeds]


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and the 95 % t-interval of the mean: ``(mean, low, high)`` (``nan`` for no values)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, mean, mean
    from scipy import stats

    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half
