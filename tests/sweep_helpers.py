"""Helpers shared by the end-to-end sweep tests: the command a user types, and Tune's per-report rows."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml


def run_command(space: Path, results: Path, *extra: str) -> list[str]:
    """``fairsearch run --space SPACE --results RESULTS …`` with this interpreter."""
    return [
        sys.executable,
        "-m",
        "fairsearch.cli",
        "run",
        "--space",
        str(space),
        "--results",
        str(results),
        *extra,
    ]


def write_space(
    folder: Path, name: str, trials: int, *, fixed: dict[str, Any] | None = None, **top: Any
) -> Path:
    """``<folder>/<name>.yaml``: a tiny sweep of the built-in model on 580 synthetic images (120 to train
    on, as the split is 1200:2300:2300), 2 epochs,
    two trials at a time with one CPU each, TPE seeded.

    Args:
        folder: where the file goes.
        name: the sweep's name.
        trials: the number of trials.
        fixed: settings that replace or join the fixed trial settings (``epochs``, ``n_boot``, …).
        **top: top-level keys that replace the defaults (``search``, ``resources``, ``scheduler``, …).
    """
    doc: dict[str, Any] = {
        "name": name,
        "objectives": {"group_by": "ethnicity"},
        "search": {
            "method": ["vanilla", "hybrid"],
            "lora_rank": [2, 4],
            "lam": {"low": 0.1, "high": 1.0, "log": True},
            "w_max": {"low": 1.0, "high": 10.0},
            "lr": {"low": 1e-3, "high": 3e-3, "log": True},
        },
        "fixed": {"epochs": 2, "synthetic_n": 580, "batch_size": 16, "n_boot": 20, **(fixed or {})},
        "trials": trials,
        "concurrency": 2,
        "sampler": {"name": "tpe", "seed": 0},
        "resources": {"cpus": 1},
        **top,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def start_sweep(
    command: list[str], env: dict[str, str], *, new_session: bool = True
) -> subprocess.Popen[str]:
    """Starts a sweep's command in the background, output captured (``new_session``: in its own process
    group, so that ``os.killpg(proc.pid, …)`` reaches the local Ray it starts too)."""
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def completed_trials(path: Path) -> int:
    """The completed trials in a sweep's ``trials.parquet`` (0 before it is written)."""
    if not path.exists():
        return 0
    with open(path, "rb") as f:  # one handle: a path read twice could straddle a replace
        return int((pd.read_parquet(f)["status"] == "completed").sum())


def kill_after_first_completion(proc: subprocess.Popen[str], trials: Path, *, within: float = 500) -> None:
    """Waits until ``trials`` (a ``trials.parquet``) records a completed trial while the sweep ``proc`` still
    runs, then SIGKILLs its process group: the driver and the local Ray it started, trials still running,
    no clean-up at all. Fails the test if the sweep ends first or no trial completes ``within`` s."""
    deadline = time.monotonic() + within
    try:
        while completed_trials(trials) < 1:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, f"no trial completed within {within:g} s"
            time.sleep(0.5)
        assert proc.poll() is None, "the sweep ended before it could be killed"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=120)


def run_to_end(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs a sweep's command to its end, output captured. One that has not ended after ``timeout`` s fails
    the test with where its driver stood: it gets SIGABRT, on which Python's fault handler (on here)
    writes every thread's stack to its stderr, and the failure shows that stderr's end; then its process
    group (the local Ray it started) is killed."""
    proc = start_sweep(command, {**env, "PYTHONFAULTHANDLER": "1"})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(
            f"{shlex.join(command)} had not ended after {timeout:g} s; its stderr ends:\n{err[-6000:]}"
        )
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def tune_reports(experiment: Path) -> dict[str, list[dict[str, Any]]]:
    """Every trial's reports from Ray Tune's ``result.json`` files (one JSON line per report), by trial id.

    Args:
        experiment: the experiment folder, ``<storage>/<name>`` (by default ``results/.tune/<name>``).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for path in experiment.glob("*/result.json"):
        rows = result_rows(path)
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def result_rows(path: Path) -> list[dict[str, Any]]:
    """The reports in one of Tune's ``result.json`` files (one JSON line each), up to a line being written."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line still being written
    return rows


def distinct_reports(trial_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trial's Tune rows, each report once, in order of report number; a report seen twice (sent again
    by a resumed trial, see :func:`fairsearch.search.tune_trials.tune_trainable`) must carry the same metrics
    both times."""
    seen: dict[int, dict[str, Any]] = {}
    for row in rows:
        first = seen.setdefault(int(row["report"]), row)
        same = ("acc", "max_acc_gap", "epoch")
        assert [first[k] for k in same] == [row[k] for k in same], (trial_id, row["report"])
    return [seen[n] for n in sorted(seen)]


def assert_reports_reached_tune(trial_id: str, rows: list[dict[str, Any]], reports: int) -> None:
    """Every report of a trial, 1..``reports``, reached Tune (a repeated one with the same metrics)."""
    numbers = [int(r["report"]) for r in distinct_reports(trial_id, rows)]
    assert numbers == list(range(1, reports + 1)), (trial_id, [int(r["report"]) for r in rows])


def trained_parts(experiment: Path) -> dict[str, list[int]]:
    """Each trial's log of the parts it trained to their end (by report number, one entry per time it
    was trained), from its :class:`fairsearch.train.checkpoint.TrialStore`, by the trial's key."""
    from fairsearch.search.tune_trials import STATE_FOLDER
    from fairsearch.train.checkpoint import TrialStore

    root = experiment / STATE_FOLDER
    return {d.name: TrialStore(str(root), d.name).trained() for d in sorted(root.iterdir()) if d.is_dir()}


def assert_each_epoch_trained_once(experiment: Path, epochs: int, *, reports_per_epoch: int = 1) -> None:
    """Every trial of a finished sweep trained each part of each epoch once, in order, and every report
    reached Tune.

    - Each Tune trial's own log of trained parts (:func:`trained_parts`) is 1..K, each once. (A store
      with no Tune trial belongs to a trial created after Tune's last snapshot before a driver kill:
      Tune never heard of it, and its Optuna trial is marked FAIL when the sweep ends.)
    - Its newest complete checkpoint holds K reports, the last at ``epochs``.
    - Tune's ``result.json`` holds each report 1..K, a repeated one with the same metrics.

    Args:
        experiment: the experiment folder, ``<storage>/<name>``.
        epochs: epochs of a full trial (no early stopping).
        reports_per_epoch: reports per epoch.
    """
    from fairsearch.search.tune_trials import STATE_FOLDER, trial_key
    from fairsearch.train.checkpoint import TrialStore

    reports = epochs * reports_per_epoch
    trained = trained_parts(experiment)
    tune_rows = tune_reports(experiment)
    assert tune_rows, f"no trial reported under {experiment}"
    for trial_id, rows in tune_rows.items():
        assert_reports_reached_tune(trial_id, rows, reports)
        config = rows[0]["config"]
        key = trial_key(config.get("run", config))  # a confirmation run's settings are under "run"
        assert trained.get(key) == list(range(1, reports + 1)), (trial_id, key, trained.get(key))
        newest = TrialStore(str(experiment / STATE_FOLDER), key).newest()
        assert newest is not None, key
        assert [h["epoch"] for h in newest[1]["history"]] == pytest.approx(
            [(i + 1) / reports_per_epoch for i in range(reports)]
        ), key
