"""End-to-end sweeps on the tiny model: results files, the front, resume after SIGINT and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from sweep_helpers import (
    assert_each_epoch_trained_once,
    run_command,
    start_sweep,
    trained_parts,
    tune_reports,
    write_space,
)

from fairsearch.output.results import search_rows
from fairsearch.output.threshold_fronts import COMBINED_FRONT, VANILLA_THRESHOLDS_FRONT

pytestmark = pytest.mark.slow

EPOCHS = 2


def _space(tmp_path: Path, name: str, trials: int) -> Path:
    return write_space(tmp_path, name, trials, fixed={"epochs": EPOCHS, "n_boot": 50})


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "FAIRSEARCH_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}


def _brute_force_front(trials: pd.DataFrame) -> set[str]:
    done = trials[trials["status"] == "completed"]
    front = set()
    for i, a in done.iterrows():
        dominated = any(
            b["val/acc"] >= a["val/acc"]
            and b["val/max_acc_gap"] <= a["val/max_acc_gap"]
            and (b["val/acc"] > a["val/acc"] or b["val/max_acc_gap"] < a["val/max_acc_gap"])
            for j, b in done.iterrows()
            if j != i
        )
        if not dominated:
            front.add(a["trial_id"])
    return front


def test_small_sweep_writes_trials_front_and_study(tmp_path: Path) -> None:
    space = _space(tmp_path, "small", trials=4)
    results = tmp_path / "results"
    proc = subprocess.run(
        run_command(space, results), env=_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "built-in tiny random Qwen2.5-VL" in proc.stderr and "built-in synthetic" in proc.stderr
    assert (
        "[1 done, " in proc.stderr and "[4 done, 0 running, 0 pending, 0 failed] front: acc " in proc.stderr
    )

    trials = pd.read_parquet(results / "small" / "trials.parquet")
    assert len(trials) == 4 and trials["trial_id"].is_unique
    assert (trials["status"] == "completed").all()
    assert (trials["epochs_done"] == EPOCHS).all()
    for column in ("param/method", "param/lora_rank", "param/lr", "val/acc", "val/max_acc_gap", "val/auc"):
        assert trials[column].notna().all(), column
    assert any(c.startswith("val/acc/ethnicity/") for c in trials.columns)
    # lam is sampled only for hybrid: null for vanilla rows
    vanilla = trials["param/method"] == "vanilla"
    assert trials.loc[vanilla, "param/lam"].isna().all()
    assert trials.loc[~vanilla, "param/lam"].notna().all()

    written = pd.read_parquet(results / "small" / "pareto.parquet")
    front = search_rows(written)  # the trained front; the threshold fronts follow it
    assert set(front["trial_id"]) == _brute_force_front(trials)
    # thresholded vanilla: points of the vanilla trials only; the combined front mixes kinds
    thresholded = written[written["front"] == VANILLA_THRESHOLDS_FRONT]
    assert len(thresholded) and set(thresholded["trial_id"]) <= set(trials.loc[vanilla, "trial_id"])
    assert set(thresholded["kind"]) <= {"threshold", "group_thresholds"}
    assert len(written[written["front"] == COMBINED_FRONT])
    for column in (
        "test/acc",
        "test/max_acc_gap",
        "test/acc_ci_low",
        "test/max_acc_gap_ci_high",
        "hypervolume",
    ):
        assert front[column].notna().all(), column
    assert front["hypervolume"].nunique() == 1 and 0 < front["hypervolume"].iloc[0] <= 1

    with sqlite3.connect(results / "small" / "optuna.db") as db:
        n_values = db.execute("select count(*) from trial_values").fetchone()[0]
        n_complete = db.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    assert n_complete == 4 and n_values == 8  # two objectives per trial: a multi-objective study
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{results / 'small' / 'optuna.db'}")
    by_number = {t.number: t.params for t in study.trials}
    assert sorted(by_number) == sorted(trials["number"])
    for _, row in trials.iterrows():  # Parquet's number is the study's: the same trial, the same values
        sampled = by_number[int(row["number"])]
        assert row["param/lr"] == pytest.approx(sampled["lr"]) and row["param/method"] == sampled["method"]
    assert "param/optuna_number" not in trials

    table = subprocess.run(
        [sys.executable, "-m", "fairsearch.cli", "pareto", str(results / "small")],
        capture_output=True,
        text=True,
    )
    assert (
        table.returncode == 0 and str(front["trial_id"].iloc[0])[:8] in table.stdout
    ) or "hybrid" in table.stdout

    # the report from this real sweep's files: plots embedded, the front's numbers as in the Parquet file
    report = subprocess.run(
        [sys.executable, "-m", "fairsearch.cli", "report", str(results / "small")],
        capture_output=True,
        text=True,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    html = Path(report.stdout.strip().splitlines()[-1]).read_text()
    assert html.count("data:image/png;base64,") >= 3 and "http://" not in html and "https://" not in html
    for _, row in front.iterrows():
        assert f"{100 * row['val/acc']:.1f}" in html and f"{100 * row['val/max_acc_gap']:.1f}" in html

    # the same command again resumes a finished sweep: nothing more runs, nothing is lost
    again = subprocess.run(
        run_command(space, results), env=_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    after = pd.read_parquet(results / "small" / "trials.parquet")
    assert sorted(after["trial_id"]) == sorted(trials["trial_id"])

    # a changed space is refused, naming the fix
    doc = yaml.safe_load(space.read_text())
    doc["trials"] = 5
    space.write_text(yaml.safe_dump(doc))
    changed = subprocess.run(
        run_command(space, results), env=_env(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert changed.returncode == 2
    assert "different space file" in changed.stderr and "--restart" in changed.stderr
    assert "Traceback" not in changed.stderr


def _wait_for_completed(path: Path, at_least: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            try:
                with open(path, "rb") as f:  # one handle: a path read twice could straddle a replace
                    frame = pd.read_parquet(f)
            except Exception:
                raise AssertionError(f"{path} was not a valid Parquet file while the sweep ran") from None
            if (frame["status"] == "completed").sum() >= at_least:
                return
        time.sleep(0.5)
    raise AssertionError(f"no {at_least} completed trials in {path} after {timeout} s")


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_interrupted_sweep_resumes_without_losing_or_repeating_trials(
    tmp_path: Path, how: signal.Signals
) -> None:
    n_trials = 5
    space = _space(tmp_path, "resume", trials=n_trials)
    results = tmp_path / "results"
    proc = start_sweep(run_command(space, results), _env(tmp_path))
    _wait_for_completed(results / "resume" / "trials.parquet", at_least=1, timeout=400)
    if how == signal.SIGKILL:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started, no clean-up at all
    else:
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if how == signal.SIGINT:
        assert proc.returncode == 130, err[-3000:]
        assert "resume with: fairsearch run --space" in err
    before = pd.read_parquet(results / "resume" / "trials.parquet")  # valid after any kill: atomic writes
    assert len(before) < n_trials or (before["status"] != "completed").any()

    resumed = subprocess.run(
        run_command(space, results), env=_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = pd.read_parquet(results / "resume" / "trials.parquet")
    assert len(after) == n_trials and after["trial_id"].is_unique
    assert (after["status"] == "completed").all() and (after["epochs_done"] == EPOCHS).all(), after[
        ["trial_id", "status", "epochs_done", "error"]
    ].to_string()
    done_before = before.loc[before["status"] == "completed"].set_index("trial_id")
    assert set(done_before.index) <= set(after["trial_id"])  # finished trials kept
    # as they were, even one Tune's snapshot had not yet seen end, which it runs again (re-sending only)
    kept = after.set_index("trial_id").loc[done_before.index]
    for column in ("finished_at", "wall_time_s", "val/acc", "val/max_acc_gap", "checkpoint"):
        assert (kept[column] == done_before[column]).all(), column
    assert_each_epoch_trained_once(results / ".tune" / "resume", EPOCHS)
    assert np.isfinite(after["val/acc"]).all()


# Run as the driver: the sweep's CLI, killed (with the Ray it started) the moment a report of epoch 2
# reaches it, before any callback has seen it: the trial saved that epoch's checkpoint, and neither Tune's
# log nor its snapshot nor the results files know of it.
_KILL_AT_REPORT = """
import os, signal, sys
from fairsearch import cli
from fairsearch.search import tune_trials

def on_trial_result(self, iteration, trials, trial, result, **info):
    if result.get("epoch") == 2:
        os.killpg(0, signal.SIGKILL)

tune_trials.ResultsCallback.on_trial_result = on_trial_result
sys.exit(cli.main(sys.argv[1:]))
"""


def _run_killing_driver(script: str, space: Path, results: Path, tmp_path: Path) -> None:
    """Runs ``fairsearch run`` under ``script``, a driver that SIGKILLs itself and its Ray at some point."""
    killed = subprocess.run(
        [sys.executable, "-c", script, *run_command(space, results)[3:]],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]


@pytest.mark.parametrize("epochs", [3, 2], ids=["mid-trial", "final-epoch"])
def test_driver_killed_with_a_report_in_flight_neither_loses_it_nor_trains_it_again(
    tmp_path: Path, epochs: int
) -> None:
    # With 3 epochs the trial trains epoch 3 on resume; with 2 it has nothing left to train, and its
    # results must still be those of epoch 2, whose report died with the driver.
    space = write_space(tmp_path, "inflight", 1, fixed={"epochs": epochs})
    results = tmp_path / "results"
    _run_killing_driver(_KILL_AT_REPORT, space, results, tmp_path)
    experiment = results / ".tune" / "inflight"
    (trained,) = trained_parts(experiment).values()
    assert trained == [1, 2]  # epoch 2's checkpoint was saved before its report was sent

    resumed = subprocess.run(
        run_command(space, results), env=_env(tmp_path), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = pd.read_parquet(results / "inflight" / "trials.parquet")
    assert after["status"].tolist() == ["completed"], after[["status", "error"]].to_string()
    assert after["epochs_done"].tolist() == [epochs]
    # the row holds the final epoch's validation metrics, and names the checkpoint that holds them
    final = Path(after["checkpoint"].iloc[0])
    assert final.is_relative_to(experiment / "trials")
    last = json.loads((final / "state.json").read_text())["history"][-1]
    assert last["epoch"] == epochs
    assert after["val/acc"].iloc[0] == pytest.approx(last["acc"])
    assert after["val/max_acc_gap"].iloc[0] == pytest.approx(last["max_acc_gap"])
    # the resumed trial sent epochs 1 and 2 again from its checkpoint, then trained only what was left
    (rows,) = tune_reports(experiment).values()
    assert [int(r["report"]) for r in rows][-epochs:] == list(range(1, epochs + 1))
    assert int(rows[-epochs]["iterations_since_restore"]) == 1
    assert_each_epoch_trained_once(experiment, epochs)
