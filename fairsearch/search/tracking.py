"""MLflow tracking of a sweep: one parent run per sweep and one nested run per trial, through MLflow's public
:class:`mlflow.MlflowClient` (Ray's ``MLflowLoggerCallback`` does not nest runs, ray-project/ray#19909).

A sweep logs when its space file says ``tracking: {mlflow: URI}`` or ``fairsearch run --mlflow URI`` names
one. What goes where:

=====================  =========================================================================================
the sweep's run        params: the space's settings (sampler, trials, objectives, …); the space file as an
                       artifact; status FINISHED once the sweep (and its confirmation) has ended
a trial's nested run   params: its settings; metrics: every validation report, ``step`` the report's number;
                       tags: ``fairsearch.trial``, ``fairsearch.status``; at the end, for the members of a front,
                       the test metrics and the tags ``front``, ``kind`` and ``feasible``
=====================  =========================================================================================

The results folder keeps ``mlflow.json`` (the tracking URI, the experiment and the sweep's run): a resumed
sweep logs into the same runs. A trial's run is found again by its tags, and a report already logged
(the steps a killed trial trained past its checkpoint) is not logged twice. MLflow is a side channel: a
server that stops answering costs warnings, never the sweep (the results folder has every figure).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fairsearch.bounded import read_json
from fairsearch.errors import FairsearchError, clip_value
from fairsearch.folders import write_atomic
from fairsearch.spec.config import mlflow_uri_problem

__all__ = ["TRACKING_FILE", "SweepTracking", "read_tracking"]

logger = logging.getLogger("fairsearch.search.sweep")  # its lines are the sweep's

TRACKING_FILE = "mlflow.json"
"""In the results folder: ``{"uri", "experiment_id", "run_id"}`` of the sweep's MLflow run."""
_TRACKING_MAX_BYTES = 16 << 10
TRIAL_TAG = "fairsearch.trial"
"""A trial's run's tag: the trial's number, by which a resumed sweep finds the run again."""
_PARENT_TAG = "mlflow.parentRunId"
"""MLflow's own tag that nests a run under another (what ``mlflow.start_run(nested=True)`` sets)."""
_STEP_METRIC = "epoch"
"""Logged with every report: its history says which reports a run has."""
_MAX_FAILURES = 3
"""Calls in a row that may fail before this driver stops logging (and says so once)."""
_BATCH = 1000
"""Metrics per ``log_batch`` (MLflow's limit)."""
_PARAM_BATCH = 100
"""Params per ``log_batch`` (MLflow's limit)."""
_NAME_CHARS = re.compile(r"[^\w\-. /:]")
"""What MLflow refuses in a metric, param or tag name (a group of ``race*gender`` holds ``*``)."""
_CLIENT_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
"""A server that does not answer holds the driver for a minute at most per call, not MLflow's default
seven retries with backoff (the user's own settings win)."""


def read_tracking(results_dir: Path) -> dict[str, str] | None:
    """``mlflow.json`` of a results folder, checked, or ``None`` when the sweep logs nowhere.

    Raises:
        FairsearchError: the file is there but is not such a record (damaged, foreign, too large).
    """
    path = results_dir / TRACKING_FILE
    if not path.is_file():
        return None
    try:
        record = read_json(path, _TRACKING_MAX_BYTES)
    except (ValueError, OSError) as err:
        record = f"unreadable: {err}"
    keys = ("uri", "experiment_id", "run_id")
    if (
        not isinstance(record, dict)
        or set(record) != set(keys)
        or not all(isinstance(record[k], str) and record[k] for k in keys)
        or mlflow_uri_problem("uri", record["uri"])
    ):
        raise FairsearchError(
            f"{path}: not the record of this sweep's MLflow run (expected {{uri, experiment_id, run_id}}, "
            f"found {clip_value(record, 120)}); delete it to log the sweep into a new MLflow run"
        )
    return {k: record[k] for k in keys}


def _name(key: str) -> str:
    return _NAME_CHARS.sub("_", key)[:250]


def _client(uri: str) -> Any:
    from mlflow import MlflowClient  # an optional extra: imported once a sweep asks for it

    for key, value in _CLIENT_SETTINGS.items():
        os.environ.setdefault(key, value)
    return MlflowClient(uri)


class SweepTracking:
    """The MLflow runs of one sweep, as the driver logs into them.

    Attributes:
        uri: the tracking URI.
        experiment_id: the MLflow experiment (named as the sweep).
        run_id: the sweep's run; the trials' runs are nested under it.
    """

    def __init__(self, uri: str, experiment_id: str, run_id: str, client: Any = None) -> None:
        self.uri = uri
        self.experiment_id = experiment_id
        self.run_id = run_id
        self._client = client if client is not None else _client(uri)
        self._runs: dict[int, str] = {}  # trial number -> its run
        self._logged: dict[int, int] = {}  # trial number -> the last report logged
        self._failures = 0

    @classmethod
    def start(
        cls, uri: str, name: str, results_dir: Path, settings: Mapping[str, Any], space_file: Path
    ) -> SweepTracking:
        """The sweep's run: the one ``mlflow.json`` names when it is on this server, else a new one (in the
        experiment named ``name``, made when missing), recorded in ``mlflow.json``.

        Args:
            uri: the tracking URI.
            name: the sweep's name: the experiment's, and the run's.
            results_dir: the sweep's results folder (it exists).
            settings: the sweep's settings, logged as the run's params when it is new.
            space_file: the space file, logged as the run's artifact when it is new.

        Raises:
            FairsearchError: the server refused (the message says which call and why).
        """
        client = _client(uri)
        recorded = read_tracking(results_dir)
        try:
            if recorded is not None and recorded["uri"] == uri and _run_exists(client, recorded["run_id"]):
                client.update_run(recorded["run_id"], status="RUNNING")
                return cls(uri, recorded["experiment_id"], recorded["run_id"], client)
            experiment = client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
            run = client.create_run(
                experiment_id,
                run_name=name,
                tags={"fairsearch.sweep": name, "fairsearch.results": str(results_dir)},
            )
            _log_params(client, run.info.run_id, settings)
            client.log_artifact(run.info.run_id, str(space_file))
        except Exception as err:  # MlflowException, a refused connection, …: the server's reason
            raise FairsearchError(f"MLflow at {uri}: {clip_value(str(err), 300)}") from None
        tracking = cls(uri, experiment_id, run.info.run_id, client)
        record = {"uri": uri, "experiment_id": experiment_id, "run_id": run.info.run_id}
        write_atomic(results_dir / TRACKING_FILE, json.dumps(record).encode("utf-8"))
        logger.info(
            "MLflow: logging the sweep into run %s of experiment %r at %s", run.info.run_id, name, uri
        )
        return tracking

    @classmethod
    def of(cls, results_dir: Path) -> SweepTracking | None:
        """The tracking ``mlflow.json`` records, or ``None`` when the sweep logs nowhere."""
        recorded = read_tracking(results_dir)
        return (
            None if recorded is None else cls(recorded["uri"], recorded["experiment_id"], recorded["run_id"])
        )

    # --------------------------------------------------------------------------------------- per trial
    def report(
        self, number: int, settings: Mapping[str, Any], metrics: Mapping[str, float], step: int
    ) -> None:
        """Logs one validation report of trial ``number`` at ``step`` into its run (made when missing),
        unless that run has it already."""
        self._call(self._report, number, settings, metrics, step)

    def ended(self, number: int, settings: Mapping[str, Any], status: str) -> None:
        """Marks trial ``number``'s run ended: FINISHED (completed, stopped early) or FAILED."""
        self._call(self._ended, number, settings, status)

    def finish(self, fronts: pd.DataFrame, ended: bool) -> None:
        """Tags the front members' runs and logs their test metrics; marks the sweep's run FINISHED when the
        sweep has ``ended``.

        Args:
            fronts: ``pareto.parquet``'s rows (``front``, ``number``, ``kind``, ``feasible``, ``test/…``).
            ended: every trial (and confirmation run) has ended.
        """
        self._call(self._finish, fronts, ended)

    def _call(self, fn: Any, *args: Any) -> None:
        if self._failures >= _MAX_FAILURES:
            return
        try:
            fn(*args)
            self._failures = 0
        except Exception as err:  # a side channel: the sweep goes on, the results folder has it all
            self._failures += 1
            stop = self._failures >= _MAX_FAILURES
            logger.warning(
                "MLflow at %s: %s%s",
                self.uri,
                clip_value(str(err), 300),
                "; stopped logging to it for this run of the sweep (the results folder has every figure)"
                if stop
                else "",
            )

    def _trial_run(self, number: int, settings: Mapping[str, Any], *, reopen: bool = False) -> str:
        """Trial ``number``'s run: found by its tags, else made; ``reopen``: a found run is RUNNING again
        (a trial that a resumed sweep trains on)."""
        if number in self._runs:
            return self._runs[number]
        found = self._client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{_PARENT_TAG}` = '{self.run_id}' and tags.`{TRIAL_TAG}` = '{number}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            history = self._client.get_metric_history(run_id, _STEP_METRIC)
            self._logged[number] = max((m.step for m in history), default=-1)
            if reopen:
                self._client.update_run(run_id, status="RUNNING")
        else:
            run = self._client.create_run(
                self.experiment_id,
                run_name=f"trial {number}",
                tags={_PARENT_TAG: self.run_id, TRIAL_TAG: str(number), "fairsearch.status": "running"},
            )
            run_id = run.info.run_id
            _log_params(self._client, run_id, settings)
            self._logged[number] = -1
        self._runs[number] = run_id
        return run_id

    def _report(
        self, number: int, settings: Mapping[str, Any], metrics: Mapping[str, float], step: int
    ) -> None:
        run_id = self._trial_run(number, settings, reopen=True)
        if step <= self._logged[number]:
            return  # logged before the driver was killed: the trial trained it again from its checkpoint
        _log_metrics(self._client, run_id, metrics, step)
        self._logged[number] = step

    def _ended(self, number: int, settings: Mapping[str, Any], status: str) -> None:
        run_id = self._trial_run(number, settings)
        self._client.set_tag(run_id, "fairsearch.status", status)
        self._client.update_run(run_id, status="FAILED" if status == "failed" else "FINISHED")

    def _finish(self, fronts: pd.DataFrame, ended: bool) -> None:
        for number, rows in fronts.groupby("number"):
            run_id = self._trial_run(int(number), {})  # a member is a trial whose run exists
            tags = {
                "front": ", ".join(dict.fromkeys(str(f) for f in rows["front"])),
                "kind": ", ".join(
                    dict.fromkeys(str(k) for k in rows.get("kind", pd.Series(dtype=str)).dropna())
                ),
            }
            if "feasible" in rows:
                tags["feasible"] = str(bool(rows["feasible"].dropna().all())).lower()
            for key, value in tags.items():
                if value:
                    self._client.set_tag(run_id, key, value)
            own = rows[rows["kind"] == "trained"] if "kind" in rows else rows.iloc[:0]
            if len(own):  # the trial's own model (a thresholded point or a refit head is not the run's)
                row = own.iloc[0]
                test = {k: row[k] for k in row.index if k.startswith("test/")}
                _log_metrics(self._client, run_id, test, 0)
        if ended:
            self._client.update_run(self.run_id, status="FINISHED")


def _run_exists(client: Any, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_run(run_id).info.lifecycle_stage) == "active"
    except MlflowException:
        return False


def _log_params(client: Any, run_id: str, settings: Mapping[str, Any]) -> None:
    """``settings`` as the run's params: names MLflow accepts, values cut to its 6,000 characters."""
    from mlflow.entities import Param

    items = [Param(_name(k), clip_value(v, 6000)) for k, v in settings.items()]
    for start in range(0, len(items), _PARAM_BATCH):
        client.log_batch(run_id, params=items[start : start + _PARAM_BATCH])


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, Any], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(_name(k), float(v), now, step) for k, v in _finite(metrics.items())]
    for start in range(0, len(items), _BATCH):
        client.log_batch(run_id, metrics=items[start : start + _BATCH])


def _finite(items: Iterable[tuple[str, Any]]) -> Iterable[tuple[str, float]]:
    for key, value in items:
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            yield key, number
