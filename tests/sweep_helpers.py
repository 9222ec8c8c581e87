"""Helpers shared by the end-to-end sweep tests: the command a user types, and Tune's per-report rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def assert_reported_once(trial_id: str, reported: list[int], epochs: int, *, driver_killed: bool) -> None:
    """A trial's reported epochs are 1..``epochs``, each once and in order; after a driver kill one of
    them may be missing (see :func:`assert_each_epoch_trained_once`)."""
    if driver_killed:
        lost = set(range(1, epochs + 1)) - set(reported)
        assert reported == sorted(set(reported)) and len(lost) <= 1, (trial_id, reported)
    else:
        assert reported == list(range(1, epochs + 1)), (trial_id, reported)


def assert_each_epoch_trained_once(experiment: Path, epochs: int, *, driver_killed: bool) -> None:
    """Every trial of a finished sweep trained epochs 1..``epochs`` once each, in order.

    Tune's ``result.json`` shows no epoch reported twice. After a driver kill it may lack the one report
    that was in flight (the driver died before logging it, and the trial resumed from that report's
    checkpoint: see :mod:`fairsearch.resume`), the final one included, so there the trial's final
    checkpoint, whose history holds one entry per epoch trained, shows that none was skipped.

    Args:
        experiment: the experiment folder, ``<storage>/<name>``.
        epochs: epochs of a full trial (no early stopping).
        driver_killed: the sweep was resumed after a SIGKILL of its driver.
    """
    for trial_id, rows in tune_reports(experiment).items():
        assert_reported_once(trial_id, [int(r["epoch"]) for r in rows], epochs, driver_killed=driver_killed)
    finals = sorted(experiment.glob("*/checkpoint_*"))
    assert finals, f"no checkpoint under {experiment}"
    for folder in finals:
        history = json.loads((folder / "state.json").read_text())["history"]
        assert [int(h["epoch"]) for h in history] == list(range(1, epochs + 1)), folder
