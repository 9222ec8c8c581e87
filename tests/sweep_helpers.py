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
