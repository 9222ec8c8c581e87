"""Helpers shared by the end-to-end sweep tests: the command a user types, and Tune's per-report rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


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


def tune_reports(experiment: Path) -> dict[str, list[dict[str, Any]]]:
    """Every trial's reports from Ray Tune's ``result.json`` files (one JSON line per report), by trial id.

    Args:
        experiment: the experiment folder, ``<storage>/<name>`` (by default ``results/.tune/<name>``).
    """
    out: dict[str, list[dict[str, Any]]] = {}
    for path in experiment.glob("*/result.json"):
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line still being written
        if rows:
            out[rows[0]["trial_id"]] = rows
    return out


def assert_each_epoch_trained_once(experiment: Path, epochs: int, *, driver_killed: bool) -> None:
    """Every trial of a finished sweep trained epochs 1..``epochs`` once each, in order.

    Tune's ``result.json`` shows no epoch reported twice. After a driver kill it may lack the report that
    was in flight (the driver died before saving it), so there the trial's final checkpoint, whose history
    holds one entry per epoch trained, shows that none was skipped.

    Args:
        experiment: the experiment folder, ``<storage>/<name>``.
        epochs: epochs of a full trial (no early stopping).
        driver_killed: the sweep was resumed after a SIGKILL of its driver.
    """
    for trial_id, rows in tune_reports(experiment).items():
        reported = [int(r["epoch"]) for r in rows]
        if driver_killed:
            assert reported == sorted(set(reported)) and reported[-1] == epochs, (trial_id, reported)
        else:
            assert reported == list(range(1, epochs + 1)), (trial_id, reported)
    finals = sorted(experiment.glob("*/checkpoint_*"))
    assert finals, f"no checkpoint under {experiment}"
    for folder in finals:
        history = json.loads((folder / "state.json").read_text())["history"]
        assert [int(h["epoch"]) for h in history] == list(range(1, epochs + 1)), folder
