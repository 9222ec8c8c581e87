"""End-to-end sweeps with the MO-ASHA scheduler on the tiny model: early stops, the front, resume.

Each sweep runs the CLI in a subprocess on the built-in synthetic set. The scheduler's decisions are
checked against what the trials really reported: Ray's per-trial ``result.json`` (one line per epoch) and
the scheduler's rung records, which :class:`~fairsearch.search.scheduler.MOASHAStateCallback` saves with Tune's
experiment checkpoint (``callback-states-*.pkl``).

Why these settings: ``synthetic_n`` is 800 (166 to train on, 317 to validate), not the helpers' 580,
because on few validation images the tiny models that still predict one class after an epoch all score
exactly the same ``(acc, max_acc_gap)``; a rung full of ties stops no one (ties favour the newcomer), and
the test would show nothing. The random sampler makes the nine
configurations the same in every run, whatever the timing of the two concurrent trials.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from sweep_helpers import distinct_reports, run_command, start_sweep, tune_reports

from fairsearch.judge.pareto import crowding_distance
from fairsearch.spec.config import objective_directions

pytestmark = pytest.mark.slow

EPOCHS = 4
ETA = 3
MIN_TRIALS = 2
N_TRIALS = 9
RUNGS = (1, 3)  # grace_period * ETA**k below EPOCHS
NAME_RESUME = "moasha_resume"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One FAIRSEARCH_CACHE for the module: the synthetic set and the vision cache are made once."""
    return tmp_path_factory.mktemp("fairsearch-cache")


def _space(tmp_path: Path, name: str) -> Path:
    doc = {
        "name": name,
        "objectives": {"group_by": "ethnicity"},
        "search": {
            "method": ["vanilla", "gr", "hybrid"],
            "lora_rank": [2, 4],
            "lam": {"low": 0.1, "high": 1.0, "log": True},
            "w_max": {"low": 1.0, "high": 10.0},
            "lr": {"low": 3e-5, "high": 3e-3, "log": True},
            "seed": {"low": 0, "high": 99},
        },
        "fixed": {"epochs": EPOCHS, "synthetic_n": 800, "batch_size": 16, "n_boot": 20},
        "trials": N_TRIALS,
        "concurrency": 2,
        "sampler": {"name": "random", "seed": 0},
        "resources": {"cpus": 1},
        "scheduler": {
            "name": "mo_asha",
            "grace_period": 1,
            "reduction_factor": ETA,
            "min_trials_per_rung": MIN_TRIALS,
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FAIRSEARCH_CACHE": str(cache),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
    }


def _scheduler_state(results: Path, name: str) -> dict[str, Any]:
    """The MO-ASHA state Tune saved last with its experiment checkpoint: the newest session's file, by
    name as Tune picks it on restore (mtimes do not tell: a resumed sweep re-uploads older sessions' files)."""
    files = sorted((results / ".tune" / name).glob("callback-states-*.pkl"))
    assert files, f"no callback state saved under {results / '.tune' / name}"
    with open(files[-1], "rb") as f:
        states = pickle.load(f)
    found = [s for s in states.values() if isinstance(s, dict) and "stopped_at" in s and "records" in s]
    assert len(found) == 1, f"expected one MO-ASHA state among the callbacks', got {states!r}"
    return found[0]


def _ranks(points: np.ndarray) -> np.ndarray:
    """Non-domination ranks of ``points[N, 2]`` (acc max, gap min) by peeling fronts, brute force."""
    n = len(points)
    ranks = np.full(n, -1)
    rank = 0
    while (ranks < 0).any():
        left = np.flatnonzero(ranks < 0)
        for i in left:
            a = points[i]
            dominated = any(
                points[j][0] >= a[0] and points[j][1] <= a[1] and (points[j][0] > a[0] or points[j][1] < a[1])
                for j in left
                if j != i
            )
            if not dominated:
                ranks[i] = rank
        rank += 1
    return ranks


def _expected_stop(records: list[tuple[str, tuple[float, ...]]], aucs: list[float], eta: float = ETA) -> bool:
    """The MO-ASHA rule for the last of ``records`` (those at one rung, in the order recorded): stop when
    at least ``max(1, ceil(n / eta))`` records are in a better front, or in its front and more spread.
    The k-th record of one identical point (by validation AUC, higher first, then by arrival) is k fronts
    behind the point's first."""
    n = len(records)
    if n < MIN_TRIALS:
        return False
    points = np.array([values for _, values in records], dtype=np.float64)
    ranks = _ranks(points)
    for i in range(n):
        same = [j for j in range(n) if tuple(points[j]) == tuple(points[i])]
        same.sort(key=lambda j: (-aucs[j] if not math.isnan(aucs[j]) else math.inf, j))
        ranks[i] += same.index(i)
    spread = np.zeros(n)
    for rank in np.unique(ranks):
        members = ranks == rank
        spread[members] = crowding_distance(points[members], objective_directions())
    me = n - 1
    ahead = int(np.sum((ranks < ranks[me]) | ((ranks == ranks[me]) & (spread > spread[me]))))
    return ahead >= max(1, math.ceil(n / eta))


def _check_decisions(
    state: Mapping[str, Any],
    reports: Mapping[str, list[dict[str, Any]]],
    trials: pd.DataFrame,
    rungs: tuple[float, ...] = RUNGS,
    eta: float = ETA,
) -> None:
    """The scheduler's records are the trials' real reports, and its stops follow the rule and the files.
    Progress is the trials' ``epoch`` (MO-ASHA's default ``time_attr``), fractional with more than one
    report per epoch."""
    assert sorted(state["records"]) == list(rungs)
    reports = {trial_id: distinct_reports(trial_id, rows) for trial_id, rows in reports.items()}
    for trial_id, rows in reports.items():  # reports 1..n, none missing (a repeat was sent alike)
        assert [int(r["report"]) for r in rows] == list(range(1, len(rows) + 1)), trial_id
    stopped_at = state["stopped_at"]
    by_id = trials.set_index("trial_id")
    for rung in rungs:
        records = list(state["records"][rung].items())
        reached = {tid for tid, rows in reports.items() if any(r["epoch"] == rung for r in rows)}
        assert {tid for tid, _ in records} == reached, (
            f"rung {rung}: records differ from trials that got there"
        )
        aucs = [state["repeat_values"][rung][trial_id] for trial_id, _ in records]
        for k, (trial_id, values) in enumerate(records):
            row = next(r for r in reports[trial_id] if r["epoch"] == rung)
            assert values == pytest.approx((row["acc"], row["max_acc_gap"])), (rung, trial_id)
            assert aucs[k] == pytest.approx(row["auc"]), (rung, trial_id)
            stopped = _expected_stop(records[: k + 1], aucs[: k + 1], eta)
            assert (stopped_at.get(trial_id) == rung) == stopped, (
                f"rung {rung}: trial {trial_id} {'should' if stopped else 'should not'} have been stopped "
                f"after {records[: k + 1]}"
            )
            last = reports[trial_id][-1]["epoch"]
            if stopped:
                assert last == rung and by_id.loc[trial_id, "status"] == "stopped", (trial_id, last)
                assert by_id.loc[trial_id, "epochs_done"] == rung
            else:
                assert last > rung, f"trial {trial_id} kept at rung {rung} but reported last at {last}"
    for trial_id, rows in reports.items():
        assert by_id.loc[trial_id, "epochs_done"] == rows[-1]["epoch"]  # the row is the trial's last report


def _check_results(results: Path, name: str) -> pd.DataFrame:
    """The Parquet files after a finished sweep: trials stopped early, a front of full-length trials."""
    trials = pd.read_parquet(results / name / "trials.parquet")
    assert len(trials) == N_TRIALS and trials["trial_id"].is_unique
    assert set(trials["status"]) <= {"completed", "stopped"}, trials["status"].tolist()
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) >= 1, "MO-ASHA stopped no trial"
    assert (stopped["epochs_done"] < EPOCHS).all() and stopped["epochs_done"].isin(RUNGS).all()
    assert (trials.loc[trials["status"] == "completed", "epochs_done"] == EPOCHS).all()
    front = pd.read_parquet(results / name / "pareto.parquet")
    assert len(front) >= 1
    assert (front["status"] == "completed").all() and (front["epochs_done"] == EPOCHS).all()
    assert set(front["trial_id"]) <= set(trials["trial_id"])
    return trials


def test_mo_asha_sweep_stops_trials_by_pareto_rank(tmp_path: Path, cache: Path) -> None:
    space = _space(tmp_path, "moasha")
    results = tmp_path / "results"
    proc = subprocess.run(
        run_command(space, results), env=_env(cache), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    trials = _check_results(results, "moasha")
    state = _scheduler_state(results, "moasha")
    reports = tune_reports(results / ".tune" / "moasha")
    assert set(reports) == set(trials["trial_id"])
    assert set(state["stopped_at"]) == set(trials.loc[trials["status"] == "stopped", "trial_id"])
    _check_decisions(state, reports, trials)
    assert "MO-ASHA stops trial" in proc.stderr


def test_mo_asha_stops_trials_at_fractions_of_an_epoch(tmp_path: Path, cache: Path) -> None:
    """``reports_per_epoch: 2`` and ``grace_period: 0.5``: rungs at half an epoch and at one epoch."""
    doc = yaml.safe_load(_space(tmp_path, "halves").read_text())
    doc["fixed"].update(epochs=2, reports_per_epoch=2)
    doc["trials"] = 6
    doc["scheduler"].update(grace_period=0.5, reduction_factor=2)
    space = tmp_path / "halves.yaml"
    space.write_text(yaml.safe_dump(doc))
    results = tmp_path / "results"
    proc = subprocess.run(
        run_command(space, results), env=_env(cache), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    trials = pd.read_parquet(results / "halves" / "trials.parquet")
    assert len(trials) == 6 and set(trials["status"]) <= {"completed", "stopped"}
    assert (trials.loc[trials["status"] == "completed", "epochs_done"] == 2.0).all()
    assert trials.loc[trials["status"] == "stopped", "epochs_done"].isin([0.5, 1.0]).all()
    reports = tune_reports(results / ".tune" / "halves")
    for trial_id, rows in reports.items():
        assert [r["epoch"] for r in rows] == [0.5 * (i + 1) for i in range(len(rows))], trial_id
    state = _scheduler_state(results, "halves")
    assert set(state["stopped_at"]) == set(trials.loc[trials["status"] == "stopped", "trial_id"])
    _check_decisions(state, reports, trials, rungs=(0.5, 1.0), eta=2)


def _wait_for_stopped(path: Path, proc: subprocess.Popen[str], timeout: float) -> None:
    """Return once ``trials.parquet`` holds a trial stopped early (the sweep must still be running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the sweep ended before MO-ASHA stopped a trial"
        if path.exists() and (_read_one_handle(path)["status"] == "stopped").any():
            return
        time.sleep(0.5)
    raise AssertionError(f"no stopped trial in {path} after {timeout} s")


@dataclass(frozen=True)
class Interrupted:
    """A sweep interrupted by SIGINT once MO-ASHA had stopped a trial, then run again to its end."""

    sigint_stderr: str
    before: pd.DataFrame  # trials.parquet right after the interrupt
    state_before: dict[str, Any]  # the scheduler's state Tune saved at the interrupt
    reports_before: dict[str, list[dict[str, Any]]]
    resumed: subprocess.CompletedProcess[str]
    results: Path


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Interrupted:
    tmp_path = tmp_path_factory.mktemp("interrupted")
    space = _space(tmp_path, NAME_RESUME)
    results = tmp_path / "results"
    proc = start_sweep(run_command(space, results), _env(cache))
    try:
        _wait_for_stopped(results / NAME_RESUME / "trials.parquet", proc, timeout=500)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    before = pd.read_parquet(results / NAME_RESUME / "trials.parquet")
    state_before = _scheduler_state(results, NAME_RESUME)
    reports_before = tune_reports(results / ".tune" / NAME_RESUME)
    resumed = subprocess.run(
        run_command(space, results), env=_env(cache), capture_output=True, text=True, timeout=600
    )
    return Interrupted(err, before, state_before, reports_before, resumed, results)


def test_interrupted_mo_asha_sweep_resumes_with_its_rung_records(interrupted: Interrupted) -> None:
    run = interrupted
    assert "resume with: fairsearch run --space" in run.sigint_stderr
    assert len(run.state_before["stopped_at"]) >= 1
    assert run.resumed.returncode == 0, run.resumed.stderr[-3000:]
    assert "MO-ASHA restored" in run.resumed.stderr

    after = _check_results(run.results, NAME_RESUME)
    state_after = _scheduler_state(run.results, NAME_RESUME)
    reports_after = tune_reports(run.results / ".tune" / NAME_RESUME)
    # the records and stops made before the interrupt came back, unchanged and in their order (trials that
    # had ended do not report again, so their records can only come from the saved state)
    for rung in RUNGS:
        before_items = list(run.state_before["records"][rung].items())
        assert list(state_after["records"][rung].items())[: len(before_items)] == before_items, rung
    assert run.state_before["stopped_at"].items() <= state_after["stopped_at"].items()
    # trials stopped before the interrupt stay stopped, at the same epoch, and did not run again
    by_id = after.set_index("trial_id")
    for trial_id, rung in run.state_before["stopped_at"].items():
        assert by_id.loc[trial_id, "status"] == "stopped" and by_id.loc[trial_id, "epochs_done"] == rung
        assert reports_after[trial_id] == run.reports_before[trial_id], trial_id
    _check_decisions(state_after, reports_after, after)  # also: no report differs from its first sending


def test_interrupted_trials_are_not_labelled_stopped(interrupted: Interrupted) -> None:
    # Tune marks the trials it shuts down after SIGINT TERMINATED, as if they had ended; the results
    # callback knows which really did.
    before = interrupted.before
    assert set(before["status"]) <= {"completed", "stopped", "interrupted", "pending"}, before["status"]
    cut = before[before["status"] == "interrupted"]
    # at EPOCHS: Ctrl-C came after its final report, before Tune saw it end; it ends on resume
    assert (cut["epochs_done"] <= EPOCHS).all()
    after = pd.read_parquet(interrupted.results / NAME_RESUME / "trials.parquet").set_index("trial_id")
    assert set(after.loc[list(cut["trial_id"]), "status"]) <= {"completed", "stopped"}
    assert not set(cut["trial_id"]) & set(interrupted.state_before["stopped_at"])
    stopped = set(before.loc[before["status"] == "stopped", "trial_id"])
    by_scheduler = set(interrupted.state_before["stopped_at"])
    assert stopped == by_scheduler, (
        "labelled 'stopped' after SIGINT but not stopped by MO-ASHA (they resumed): "
        f"{before[before['trial_id'].isin(stopped - by_scheduler)][['trial_id', 'status', 'epochs_done']]}"
    )


def _read_one_handle(path: Path) -> pd.DataFrame:
    """A results file the sweep may be replacing, read through one handle (not a path opened twice)."""
    with open(path, "rb") as f:
        return pd.read_parquet(f)
