"""Ray Tune's side of a trial: the trainables, the callbacks that write the results files as trials
report and end, the mapping of Tune's statuses to fairsearch's, and which result keys are Tune's own.

Everything that reads Tune's ``Trial`` objects is here, so a change of Ray touches one module;
:mod:`fairsearch.search.sweep` wires these into the Tuners.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from fairsearch.output.confirm import read_plan, write_confirmation
from fairsearch.output.refit_fronts import derived_fronts as refit_fronts
from fairsearch.output.refit_fronts import refit_rows
from fairsearch.output.results import TrialRecord, write_results
from fairsearch.output.threshold_fronts import derived_fronts
from fairsearch.output.trials_table import TrialsTable
from fairsearch.search.tracking import SweepTracking
from fairsearch.spec.config import OBJECTIVES, Constraints, Objectives, TrialConfig, violations
from fairsearch.spec.space import OPTUNA_NUMBER
from fairsearch.train.checkpoint import (
    REPORT_FILE,
    TrialStore,
    read_report_info,
    read_test_metrics_at,
    write_manifest,
)

logger = logging.getLogger("fairsearch.search.sweep")  # the status line is the sweep's

__all__ = [
    "ALLOW_CPU_FOR_GPU",
    "CHECKPOINT",
    "GPU_IDS",
    "REPORT",
    "REPORTED_AT",
    "STATE_FOLDER",
    "STATUS",
    "TRIAL_TIME",
    "ConfirmCallback",
    "ConstraintValues",
    "ResultsCallback",
    "SweepSearch",
    "confirm_trainable",
    "front_summary",
    "trial_device",
    "trial_key",
    "trial_record",
    "tune_trainable",
]

STATUS = {
    "TERMINATED": "completed",
    "ERROR": "failed",
    "RUNNING": "running",
    "PENDING": "pending",
    "PAUSED": "pending",
}


REPORT = "report"
"""Result key: the report's number within its trial, from 1 (``epoch × reports_per_epoch``). A resumed
trial sends its earlier reports again, so Tune may see one twice; every reader keys on (trial, report)."""
REPORTED_AT = "reported_at"
"""Result key: unix time the report was first sent (a re-sent one keeps it); a trial's last one is when
it finished."""
TRIAL_TIME = "trial_time_s"
"""Result key: seconds the trial had run when the report was first sent, over all its restarts."""
GPU_IDS = "gpu_ids"
"""Result key: the GPU ids Ray assigned the trial, comma-separated (empty: none)."""
ALLOW_CPU_FOR_GPU = "FAIRSEARCH_ALLOW_CPU_FOR_GPU"
"""Environment variable of a Ray node: ``1`` lets a trial Ray gave a GPU train on the CPU when the node has
no CUDA (tests of GPU scheduling on CPU-only machines whose nodes declare GPUs); otherwise it stops."""
CHECKPOINT = "checkpoint"
"""Result key: the location of the checkpoint saved with the report (absent from re-sent earlier ones)."""
STATE_FOLDER = "trials"
"""``<storage>/<experiment>/trials/<key>``: each trial's :class:`~fairsearch.train.checkpoint.TrialStore`."""


class ConstraintValues:
    """Optuna's ``constraints_func`` for a sweep's constraints (TPE, NSGA-II and GP take one).

    The sampler calls it when a trial is told, with the frozen trial, which holds the objectives but not
    the other metrics a constraint may name (worst-group accuracy, AUC). :class:`SweepSearch` therefore
    records each trial's violations from its last result just before it tells Optuna, in the same
    thread; the sampler reads them back by trial number. A trial with no record (ended without a result)
    counts as violating every constraint. Optuna keeps the values in the trial's system attributes
    (``constraints``), where optuna-dashboard shows them.

    Args:
        constraints: the sweep's constraints.
    """

    def __init__(self, constraints: Constraints) -> None:
        self.constraints = tuple(constraints)
        self.pending: dict[int, tuple[float, ...]] = {}

    def record(self, number: int, metrics: Mapping[str, Any]) -> None:
        """Keeps trial ``number``'s violations (``<= 0``: met) computed from its flat metrics."""
        self.pending[number] = violations(self.constraints, metrics)

    def __call__(self, trial: Any) -> tuple[float, ...]:
        return self.pending.pop(int(trial.number), (1.0,) * len(self.constraints))


class SweepSearch(OptunaSearch):
    """Ray Tune's ``OptunaSearch``, telling the sampler each trial's constraint values as it ends.

    Args:
        constraint_values: the ``constraints_func`` the sampler was built with, or ``None`` for a sweep
            without constraints (then this is ``OptunaSearch`` as it is).
        **kwargs: ``OptunaSearch``'s arguments.
    """

    def __init__(self, *, constraint_values: ConstraintValues | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.constraint_values = constraint_values
        self.numbers: dict[str, int] = {}  # Tune's trial id -> Optuna's trial number, kept with the searcher
        self.study_name, self.study_storage = kwargs.get("study_name"), kwargs.get("storage")

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        if isinstance(config, dict) and OPTUNA_NUMBER in config:
            self.numbers[trial_id] = int(config[OPTUNA_NUMBER])
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = getattr(self, "numbers", {}).get(trial_id)  # a searcher saved before numbers were kept: none
        if number is not None and self._told(number):
            # A trial that ended just before a driver kill, while Tune's last snapshot still saw it running:
            # Tune ran it again (it re-sent its reports) and ends it again. Optuna keeps the first telling.
            logger.debug("Optuna trial %d was told before the sweep resumed; not told again", number)
            return
        if self.constraint_values is not None and result and number is not None:
            self.constraint_values.record(number, result)
        super().on_trial_complete(trial_id, result, error)

    def _told(self, number: int) -> bool:
        """Whether the study already holds trial ``number`` as finished: two indexed lookups in the storage
        (loading the study and scanning its trials cost ≈ 1 s at 2,000 trials, at every completion)."""
        storage = getattr(self, "study_storage", None)
        if storage is None or self.study_name is None:
            return False
        import optuna

        if isinstance(storage, str):
            storage = optuna.storages.get_storage(storage)
        try:
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        except KeyError:  # no such study or trial
            return False
        return bool(storage.get_trial(trial_id).state.is_finished())


def trial_key(config: Mapping[str, Any]) -> str:
    """A trial's identity, stable across Tune's restarts and reorderings: its Optuna number in the search,
    the trial it confirms and its seed in a confirmation run."""
    if "confirms" in config:
        return f"confirm-{int(config['confirms']):05d}-seed-{int(config['seed'])}"
    if OPTUNA_NUMBER in config:
        return f"trial-{int(config[OPTUNA_NUMBER]):05d}"
    return f"tune-{tune.get_context().get_trial_id()}"  # a trial of a sweep made before numbers were kept


def tune_trainable(config: dict[str, Any], state_root: str) -> None:
    """Ray Tune's function trainable: one trial, resumed from the newest complete checkpoint in its own
    :class:`~fairsearch.train.checkpoint.TrialStore`, whatever Tune restarted it with.

    A resumed trial first sends the reports its checkpoint's history holds (Tune, the scheduler and the
    results writer may have missed the last ones when the sweep was interrupted: a report in flight when
    the driver was killed, an epoch finished while Ctrl-C shut the trial down); then it trains the parts
    after it. No part that was saved is trained again.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # workers on other machines do not get the driver's env
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from fairsearch.train.trial import run_trial

    started = time.monotonic()
    # in a Ray worker, its assigned GPUs; called outside Ray (a test), none: asking would start a Ray
    gpu_ids = [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
    device = trial_device(gpu_ids)
    trial_config = TrialConfig.from_dict(config)
    store = TrialStore(state_root, trial_key(config))
    store.sweep_staging()  # what a process of this trial killed while saving left
    parts = trial_config.reports_per_epoch
    newest = store.newest()
    info = {} if newest is None else read_report_info(store.fs, newest[0])
    spent_before = info.get(TRIAL_TIME, 0.0)  # by the checkpoint it resumes from

    def report(metrics: dict[str, float], checkpoint_dir: Path) -> None:
        number = round(float(metrics["epoch"]) * parts)
        times = {REPORTED_AT: time.time(), TRIAL_TIME: spent_before + time.monotonic() - started}
        (checkpoint_dir / REPORT_FILE).write_text(json.dumps(times))
        write_manifest(checkpoint_dir)  # anew, with the report's times
        location = store.save(checkpoint_dir, number)
        tune.report({**metrics, REPORT: number, **times, CHECKPOINT: location, GPU_IDS: ",".join(gpu_ids)})

    if newest is None:
        run_trial(trial_config, report=report, staging=store.staging, device=device)
        return
    path, state = newest
    history = state["history"]
    for number, metrics in enumerate(history, start=1):
        extra = {**info, CHECKPOINT: store.location(path)} if number == len(history) else {}
        tune.report({**metrics, REPORT: number, **extra})
    if len(history) >= trial_config.epochs * parts:
        return  # it had ended: its last report is sent again, nothing is trained
    try:
        resume_from = store.fetch(path, store.resume_copy)
        run_trial(trial_config, report=report, resume_from=resume_from, staging=store.staging, device=device)
    finally:
        shutil.rmtree(store.resume_copy, ignore_errors=True)


def trial_device(gpu_ids: Sequence[str]) -> str | None:
    """The device of a trial Ray assigned ``gpu_ids``: ``None`` (the trial's own choice: CUDA when there
    is one) without GPUs; ``cuda`` with them (Ray's ``CUDA_VISIBLE_DEVICES`` makes them the process's
    only ones).

    Raises:
        RuntimeError: GPUs assigned on a node where torch sees no CUDA, unless :data:`ALLOW_CPU_FOR_GPU`
            is ``1`` there (then ``cpu``): training silently on the CPU would take the GPU's share of
            the sweep and days.
    """
    if not gpu_ids:
        return None
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get(ALLOW_CPU_FOR_GPU) == "1":
        return "cpu"
    raise RuntimeError(
        f"Ray gave this trial GPU(s) {', '.join(gpu_ids)} on {socket.gethostname()}, but torch sees no CUDA "
        f"device there (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}): install a CUDA "
        f"build of torch on the GPU nodes, or set {ALLOW_CPU_FOR_GPU}=1 in the node's environment to train "
        "on its CPU (tests only)"
    )


class ResultsCallback(tune.Callback):
    """Rewrites the Parquet files as trials report, finish and fail, logs a live status line, and logs
    each report into the trial's MLflow run when the sweep is tracked (:mod:`fairsearch.search.tracking`).

    A trial's end is written at once while writing is cheap; once a write costs more than
    ``write_share`` of the time between two writes (a sweep of thousands of trials), the ends that follow
    are joined into the next write, which comes within ``write cost / write_share`` seconds (the driver's
    next step writes it if no trial ends by then) and always when the experiment ends or is interrupted. A
    driver killed outright loses at most that much of the files, which a resume rewrites from Tune's state.

    The status line (trials done/running/pending/failed and the front as last written) is logged when a
    trial ends and at least every ``status_interval_s`` while trials run. The callback is pickled with the
    experiment and unpickled on resume, so it holds plain values only (the MLflow client is left out and
    made again from ``mlflow.json``); the class-level defaults let a callback pickled by an older
    fairsearch resume.
    """

    status_interval_s = 30.0
    write_share = 0.05
    """The most of the driver's time the results writes may take (see the class's description)."""
    _last_status = 0.0
    _last_write = 0.0
    _last_cost = 0.0  # seconds the last write took
    _unwritten = False  # a trial ended or failed since the last write
    _front = "none yet"
    _ended: set[str] | None = None  # None: a callback saved before ended trials were tracked
    objectives: Objectives = OBJECTIVES
    constraints: Constraints = ()

    def __init__(
        self,
        results_dir: str,
        min_interval_s: float = 10.0,
        status_interval_s: float = 30.0,
        objectives: Objectives = OBJECTIVES,
        constraints: Constraints = (),
    ) -> None:
        self.results_dir = results_dir
        self.objectives = objectives
        self.constraints = constraints
        self.min_interval_s = min_interval_s
        self.status_interval_s = status_interval_s
        self._last_write = 0.0
        self._last_status = 0.0
        self._front = "none yet"
        self._ended = set()

    tracks = True
    """Logs the trials into the sweep's MLflow runs (the confirmation runs are not the search's trials)."""

    _UNPICKLED = frozenset({"_tracking", "_kept", "_table", "_last_write", "_last_status", "_last_cost"})
    """Made again on the driver that resumes: the MLflow client, the records and table kept between
    writes (the first write after a resume builds them once), and the times of the last write and status
    line (another process's ``time.monotonic``, which on another machine could hold writes back for as
    long as that machine had been up)."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._UNPICKLED}

    def tracking(self) -> SweepTracking | None:
        """The sweep's MLflow runs, as ``mlflow.json`` names them when this driver first asks; ``None``:
        the sweep is not tracked."""
        if not self.tracks:
            return None
        if "_tracking" not in self.__dict__:
            self._tracking = SweepTracking.of(Path(self.results_dir))
        return self._tracking

    def get_state(self) -> dict[str, Any]:
        """The trials that really ended (Tune saves this with each experiment snapshot)."""
        return {"ended": sorted(self._ended or ())}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores :meth:`get_state`'s trials on ``Tuner.restore``."""
        self._ended = set(state.get("ended", ()))

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        tracking, number = self.tracking(), _number(trial)
        if tracking is not None and number is not None and REPORT in result:
            # as trials.parquet names them; ``result``, as Tune has not yet made it trial.last_result
            metrics = {f"val/{k}": float(v) for k, v in result.items() if _is_metric(k, v)}
            metrics["epoch"] = float(result.get("epoch", 0.0) or 0.0)
            tracking.report(number, _settings(trial.config), metrics, int(result[REPORT]))
        if self._due(self.min_interval_s):
            self._write(trials)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if self._ended is not None:  # a failed trial runs again when its sweep is resumed
            self._ended.discard(str(trial.trial_id))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # Tune marks the trial TERMINATED only after this callback returns.
        if self._ended is not None:
            self._ended.add(str(trial.trial_id))
        self._unwritten = True
        if self._due():
            self._write(trials, completed=trial)
        self.announce(trials, completed=trial)
        self._track_end(trial, completed=True)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        if self._ended is not None:
            self._ended.add(str(trial.trial_id))
        self._unwritten = True
        if self._due():
            self._write(trials)
        self.announce(trials)
        self._track_end(trial, completed=False)

    def _track_end(self, trial: Any, *, completed: bool) -> None:
        """Ends a tracked trial's MLflow run: completed (or stopped early, as its record says), or failed."""
        tracking, number = self.tracking(), _number(trial)
        if tracking is not None and number is not None:
            status = self._record(number, trial, trial).status if completed else "failed"
            tracking.ended(number, _settings(trial.config), status)

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if self._unwritten and self._due():
            self._write(trials)
        if trials and time.monotonic() - self._last_status >= self.status_interval_s:
            self.announce(trials)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        self._write(trials)

    def _due(self, at_least: float = 0.0) -> bool:
        """Whether a write may come now: ``at_least`` seconds after the last, and late enough that writing
        takes no more than ``write_share`` of the driver's time."""
        return time.monotonic() - self._last_write >= max(at_least, self._last_cost / self.write_share)

    def _write(self, trials: Sequence[Any], completed: Any = None) -> None:
        """:meth:`write`, timed for :meth:`_due` (every write of a sweep comes through here)."""
        started = time.monotonic()
        self.write(trials, completed)
        self._last_write = time.monotonic()
        self._last_cost = self._last_write - started
        self._unwritten = False

    def records(self, trials: Sequence[Any], completed: Any = None) -> list[TrialRecord]:
        """The Parquet rows of Tune's trials, numbered as the Optuna study numbers them (a trial made
        before the number was in its config keeps its place in Tune's list, which Tune may reorder)."""
        return [
            self._record(int(trial.config.get(OPTUNA_NUMBER, position)), trial, completed)
            for position, trial in enumerate(trials)
        ]

    def _record(
        self, number: int, trial: Any, completed: Any, config: Mapping[str, Any] | None = None
    ) -> TrialRecord:
        """:func:`trial_record` of ``trial``, the same object as last time while nothing it is made of
        changed (its status, failures, error file and last result), so that a write builds rows only for
        the trials that reported or ended since (:class:`~fairsearch.output.trials_table.TrialsTable`)."""
        interrupted = self._interrupted(trial)
        result = trial.last_result
        key = (
            number,
            str(trial.status),
            trial is completed,
            interrupted,
            trial.num_failures,
            trial.error_file,
        )
        kept = self.__dict__.setdefault("_kept", {})
        old = kept.get(trial.trial_id)
        if old is not None and old[0] == key and old[1] is result:
            return old[2]
        record = trial_record(
            number, trial, completed=trial is completed, interrupted=interrupted, config=config
        )
        kept[trial.trial_id] = (key, result, record)
        return record

    def _interrupted(self, trial: Any) -> bool:
        # After Ctrl-C Tune marks the trials it shuts down TERMINATED, as if they had finished; only
        # those this callback saw end did.
        return (
            self._ended is not None
            and str(trial.status) == "TERMINATED"
            and str(trial.trial_id) not in self._ended
        )

    def write(self, trials: Sequence[Any], completed: Any = None) -> None:
        """Writes both Parquet files from Tune's trials, atomically, and remembers the front.

        Args:
            trials: every trial of the experiment, in creation order.
            completed: a trial that has just completed but that Tune still marks RUNNING.
        """
        records = self.records(trials, completed)
        table = self.__dict__.setdefault("_table", TrialsTable())
        # each front asks for its members' test metrics: only those checkpoints are read, each once
        written = write_results(
            Path(self.results_dir),
            records,
            _TestMetrics(trials),
            self.objectives,
            self.constraints,
            derived_fronts=(*derived_fronts(self.objectives), *refit_fronts(self.objectives)),
            table=table.frame,
        )
        self._front = front_summary(written.search_front)

    stage = ""
    """Written before the status line: empty for the search, ``confirming: `` for confirmation runs."""

    def announce(self, trials: Sequence[Any], completed: Any = None) -> None:
        """Logs ``[3 done, 2 running, 7 pending, 0 failed] front: …``."""
        counts = Counter(
            "completed" if t is completed else STATUS.get(str(t.status), "pending") for t in trials
        )
        logger.info(
            "%s[%d done, %d running, %d pending, %d failed] front: %s",
            self.stage,
            counts["completed"],
            counts["running"],
            counts["pending"],
            counts["failed"],
            self._front,
        )
        self._last_status = time.monotonic()


class ConfirmCallback(ResultsCallback):
    """The confirmation runs' :class:`ResultsCallback`: writes ``confirm.parquet`` and the confirmed front
    into ``pareto.parquet`` (:func:`fairsearch.output.confirm.write_confirmation`)."""

    stage = "confirming: "
    tracks = False

    def records(self, trials: Sequence[Any], completed: Any = None) -> list[TrialRecord]:
        """One row per run, numbered by the trial it confirms, with the candidate's settings."""
        return [
            self._record(int(trial.config["run"]["confirms"]), trial, completed, config=trial.config["run"])
            for trial in trials
        ]

    def write(self, trials: Sequence[Any], completed: Any = None) -> None:
        records = self.records(trials, completed)
        tests = {
            r.trial_id: _read_test_metrics(t)
            for r, t in zip(records, trials, strict=True)
            if r.status == "completed"
        }
        plan = read_plan(Path(self.results_dir))
        if plan is None:  # removed by hand while the runs went on: nothing to combine them with
            return
        front = write_confirmation(Path(self.results_dir), records, tests, plan, refit_rows)
        self._front = front_summary(front)


_NOT_SETTINGS = frozenset({OPTUNA_NUMBER, "confirms"})
"""Config keys that are bookkeeping, not trial settings: left out of the ``param/`` columns."""


def confirm_trainable(config: dict[str, Any], state_root: str) -> None:
    """Ray Tune's trainable of a confirmation run: the candidate's settings are under ``run``."""
    tune_trainable(dict(config["run"]), state_root)


def trial_record(
    number: int,
    trial: Any,
    *,
    completed: bool = False,
    interrupted: bool = False,
    config: Mapping[str, Any] | None = None,
) -> TrialRecord:
    """The Parquet row of one Tune trial.

    Args:
        number: the Optuna study's number of the trial (its place in creation order when unknown).
        trial: Tune's trial.
        completed: it has just ended, whatever Tune says yet.
        interrupted: Tune shut it down with the sweep (Ctrl-C) before it ended; it resumes with the sweep.
        config: the trial's settings, when they are not Tune's config itself.
    """
    config = trial.config if config is None else config
    result = dict(trial.last_result or {})
    status = "completed" if completed else STATUS.get(str(trial.status), "pending")
    if interrupted and not completed:
        status = "interrupted"
    epochs = float(result.get("epoch", 0.0) or 0.0)  # fractional with reports_per_epoch > 1
    if status == "completed" and epochs < int(config.get("epochs", TrialConfig.epochs)) - 1e-9:
        status = "stopped"  # stopped early by the scheduler
    checkpoint = result.get(CHECKPOINT)
    ended = result.get(REPORTED_AT, result.get("timestamp"))  # a re-sent report keeps its first time
    return TrialRecord(
        trial_id=str(trial.trial_id),
        number=number,
        status=status,
        params=_settings(config),
        val_metrics={k: float(v) for k, v in result.items() if _is_metric(k, v)},
        epochs_done=epochs,
        wall_time_s=float(result.get(TRIAL_TIME, result.get("time_total_s", 0.0)) or 0.0),
        error=_error_message(trial) if status == "failed" else None,
        failures=int(trial.num_failures),
        checkpoint=checkpoint if isinstance(checkpoint, str) else None,
        finished_at=float(ended)
        if status in ("completed", "stopped", "failed") and ended is not None
        else None,
    )


def _settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's settings: its config without the bookkeeping of :data:`_NOT_SETTINGS`."""
    return {k: v for k, v in config.items() if not isinstance(v, dict) and k not in _NOT_SETTINGS}


def _number(trial: Any) -> int | None:
    """The Optuna study's number of a search trial (``None``: a trial made before its config held it)."""
    number = trial.config.get(OPTUNA_NUMBER)
    return None if number is None else int(number)


_TUNE_KEYS = frozenset(
    {
        "epoch",
        "time_total_s",
        "time_this_iter_s",
        "timestamp",
        "training_iteration",
        "iterations_since_restore",
        "time_since_restore",
        "pid",
        "done",
        "date",
        "hostname",
        "node_ip",
        "trial_id",
        "experiment_tag",
        "checkpoint_dir_name",
        "should_checkpoint",
        "timesteps_total",
        "episodes_total",
        "timesteps_since_restore",
        REPORT,
        REPORTED_AT,
        TRIAL_TIME,
        GPU_IDS,
    }
)


def _is_metric(key: str, value: Any) -> bool:
    return key not in _TUNE_KEYS and not isinstance(value, bool) and isinstance(value, int | float)


ERROR_TAIL_BYTES = 64 << 10
"""The end of Tune's ``error.txt`` read for a failed trial's ``error``: its last line is the exception."""


def _error_message(trial: Any) -> str:
    path = trial.error_file
    if path and os.path.exists(path):
        with open(path, "rb") as f:  # a traceback of any length: its end only
            f.seek(max(0, os.fstat(f.fileno()).st_size - ERROR_TAIL_BYTES))
            tail = f.read(ERROR_TAIL_BYTES).decode("utf-8", errors="replace")
        lines = [line for line in tail.splitlines() if line.strip()]
        if lines:
            return lines[-1][:2000]
    return "trial failed (no error file)"


class _TestMetrics(Mapping[str, Mapping[str, float]]):
    """Tune's trials' test metrics by trial id, each read from its checkpoint when first asked for."""

    def __init__(self, trials: Sequence[Any]) -> None:
        self._trials = {str(t.trial_id): t for t in trials}
        self._read: dict[str, dict[str, float]] = {}

    def __getitem__(self, trial_id: str) -> dict[str, float]:
        if trial_id not in self._read:
            self._read[trial_id] = _read_test_metrics(self._trials[trial_id])  # KeyError: not a trial
        return self._read[trial_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._trials)

    def __len__(self) -> int:
        return len(self._trials)


def _read_test_metrics(trial: Any) -> dict[str, float]:
    checkpoint = (trial.last_result or {}).get(CHECKPOINT)
    return read_test_metrics_at(checkpoint) if isinstance(checkpoint, str) else {}


def front_summary(front: pd.DataFrame, most: int = 4) -> str:
    """``acc 0.912 / gap 0.041 (hybrid) | …`` for the first ``most`` members of a front table."""
    members = [
        f"acc {row['val/acc']:.3f} / gap {row['val/max_acc_gap']:.3f} ({row.get('param/method', '?')})"
        for _, row in front.head(most).iterrows()
    ]
    more = f" (+{len(front) - most} more)" if len(front) > most else ""
    return " | ".join(members) + more if members else "none yet"
