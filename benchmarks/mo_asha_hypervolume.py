"""Hypervolume of the validation front against training epochs spent, with and without MO-ASHA.

Run from the repository root (about 10 minutes on 2 CPU cores with the defaults)::

    .venv/bin/python benchmarks/mo_asha_hypervolume.py
    .venv/bin/python benchmarks/mo_asha_hypervolume.py --trials 12 --epochs 4 --repeats 3 --synthetic-n 800

For each repeat ``r`` (sampler seed ``r``) the same space is swept twice with :func:`fairsearch.search.sweep.run_sweep`
on the built-in synthetic task and the tiny model: once without early stopping and once with
``scheduler: {name: mo_asha, grace_period: 1, reduction_factor: 3, min_trials_per_rung: 3}``. The sampler
is TPE with its default 10 random start-up trials, so with the same seed both sweeps start from the same
configurations (after an early stop the sampler sees a shorter trial's values, so later suggestions may
differ: that is part of what the scheduler does to a sweep). The learning-rate range (1e-3 to 2e-2,
log) holds rates at which the tiny model stays at chance for four epochs and rates (about 1e-2) at which
it learns, so some trials pay off and some are wasted: the situation early stopping is for.

Every epoch report of every trial is read back from Ray's per-trial ``result.json``; ordered by the
time it was made, the k-th report is the k-th epoch the sweep trained. After each report the front of
all trials' latest validation results so far (stopped trials keep their last one) gives a hypervolume
(``fairsearch.judge.pareto.hypervolume`` on ``(acc max, max_acc_gap min)`` against ``(0, 1)``). The table gives
per repeat the final hypervolume and total epochs of both sweeps, the epochs each needed to reach 95 %
of the no-stopping sweep's final hypervolume (``reach95``), and their ratio (with / without). A trial's
newer result can be worse than its last, so the curve can fall again: ``hold95`` is the epoch from which
it stayed at or above that level to the end (``never`` when the sweep ended below it).

``FAIRSEARCH_CACHE`` points at one folder shared by all sweeps (``--cache``, default under ``--out``),
so the synthetic set and the vision-embedding cache are made once. ``--out`` keeps each sweep's results
and writes ``curves.csv`` (every curve point) and ``summary.json`` (the table).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

logger = logging.getLogger("mo_asha_hypervolume")

SCHEDULER = {"name": "mo_asha", "grace_period": 1, "reduction_factor": 3, "min_trials_per_rung": 3}
TARGET = 0.95
"""Share of the no-stopping sweep's final hypervolume that counts as reached."""


@dataclass(frozen=True)
class CurvePoint:
    """The front after one epoch report.

    Attributes:
        epochs: epochs trained in the sweep so far (this report included).
        seconds: time of the report since the sweep's first trial started.
        hypervolume: of the front of every trial's latest validation result so far.
    """

    epochs: int
    seconds: float
    hypervolume: float


@dataclass(frozen=True)
class SweepCurve:
    """One sweep's hypervolume curve and cost."""

    name: str
    scheduler: bool
    seed: int
    trials: int
    stopped: int
    wall_s: float
    points: tuple[CurvePoint, ...]

    @property
    def total_epochs(self) -> int:
        """Epochs the sweep trained in all."""
        return self.points[-1].epochs if self.points else 0

    @property
    def final_hypervolume(self) -> float:
        """Hypervolume once every trial had ended."""
        return self.points[-1].hypervolume if self.points else 0.0

    def epochs_to_reach(self, level: float) -> int | None:
        """Epochs trained when the hypervolume first reached ``level``; ``None`` if it never did."""
        for point in self.points:
            if point.hypervolume >= level - 1e-12:
                return point.epochs
        return None

    def epochs_to_hold(self, level: float) -> int | None:
        """Epochs trained from which on the hypervolume stayed at or above ``level`` to the end.

        The curve can fall (a trial's newer result may be worse than its last), so this can come later
        than :meth:`epochs_to_reach`; ``None`` when the sweep ended below ``level``.
        """
        held = None
        for point in reversed(self.points):
            if point.hypervolume < level - 1e-12:
                break
            held = point.epochs
        return held


@dataclass(frozen=True)
class RepeatRow:
    """One line of the table: the two sweeps of one sampler seed."""

    seed: int
    hv_without: float
    hv_with: float
    epochs_without: int
    epochs_with: int
    stopped_with: int
    reach_without: int | None
    reach_with: int | None
    reach_ratio: float | None
    hold_without: int | None
    hold_with: int | None
    hold_ratio: float | None
    wall_s_without: float
    wall_s_with: float


def space_document(
    name: str, *, trials: int, epochs: int, synthetic_n: int, seed: int, scheduler: bool
) -> dict:
    """The space file of one sweep: the same search for both modes, ``scheduler`` on or off.

    Args:
        name: the sweep's name.
        trials: trials in the sweep.
        epochs: epochs of a full trial.
        synthetic_n: size of the built-in synthetic set.
        seed: the TPE sampler's seed.
        scheduler: add the MO-ASHA block.

    Returns:
        The YAML document as a dict.
    """
    doc: dict[str, Any] = {
        "name": name,
        "objectives": {"group_by": "ethnicity"},
        "search": {
            "method": ["vanilla", "gr", "hybrid"],
            "lora_rank": [2, 4, 8],
            "lam": {"low": 0.1, "high": 1.0, "log": True},
            "w_max": {"low": 1.0, "high": 10.0},
            "lr": {"low": 1e-3, "high": 2e-2, "log": True},
        },
        "fixed": {"epochs": epochs, "synthetic_n": synthetic_n, "batch_size": 16, "n_boot": 20},
        "trials": trials,
        "concurrency": 2,
        "sampler": {"name": "tpe", "seed": seed},
        "resources": {"cpus": 1},
    }
    if scheduler:
        doc["scheduler"] = dict(SCHEDULER)
    return doc


def read_reports(experiment: Path) -> list[dict[str, Any]]:
    """Every epoch report of a sweep from Ray's ``result.json`` files, in the order they were made.

    Ray stamps a report with whole seconds (``timestamp``) and the trial's running time
    (``time_total_s``, float). A trial's start ``S`` satisfies ``timestamp <= S + time_total_s <
    timestamp + 1`` for each of its reports; the middle of the tightest such interval, plus
    ``time_total_s``, orders reports to well under a second.

    Args:
        experiment: the sweep's Ray Tune folder (``<results>/.tune/<name>``).

    Returns:
        One dict per report with ``trial_id``, ``time`` (unix seconds, float), ``acc``, ``max_acc_gap``
        and ``training_iteration``, sorted by ``time``.
    """
    reports: list[dict[str, Any]] = []
    for path in sorted(experiment.glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        low = max(r["timestamp"] - r["time_total_s"] for r in rows)
        high = min(r["timestamp"] + 1 - r["time_total_s"] for r in rows)
        start = (low + high) / 2 if high > low else low
        for r in rows:
            reports.append(
                {
                    "trial_id": r["trial_id"],
                    "time": start + r["time_total_s"],
                    "acc": float(r["acc"]),
                    "max_acc_gap": float(r["max_acc_gap"]),
                    "training_iteration": int(r["training_iteration"]),
                }
            )
    reports.sort(key=lambda r: (r["time"], r["trial_id"], r["training_iteration"]))
    return reports


def hypervolume_curve(reports: Sequence[dict[str, Any]]) -> tuple[CurvePoint, ...]:
    """The hypervolume after each report, of the front of every trial's latest result so far.

    Args:
        reports: epoch reports in time order (:func:`read_reports`).

    Returns:
        One point per report.
    """
    from fairsearch.judge.pareto import hypervolume
    from fairsearch.spec.config import objective_directions, objective_reference

    latest: dict[str, tuple[float, float]] = {}
    points = []
    t0 = reports[0]["time"] if reports else 0.0
    for k, report in enumerate(reports, start=1):
        latest[report["trial_id"]] = (report["acc"], report["max_acc_gap"])
        values = np.array(list(latest.values()), dtype=np.float64)
        hv = hypervolume(values, objective_directions(), objective_reference())
        points.append(CurvePoint(epochs=k, seconds=report["time"] - t0, hypervolume=float(hv)))
    return tuple(points)


def run_one(
    out: Path, *, seed: int, scheduler: bool, trials: int, epochs: int, synthetic_n: int
) -> SweepCurve:
    """Run one sweep (fresh) and read its hypervolume curve.

    Args:
        out: results root; the sweep goes to ``out/<name>`` and Ray's files to ``out/.tune/<name>``.
        seed: sampler seed.
        scheduler: MO-ASHA on or off.
        trials: trials in the sweep.
        epochs: epochs of a full trial.
        synthetic_n: size of the built-in synthetic set.

    Returns:
        The sweep's curve.
    """
    import pandas as pd

    from fairsearch.search.sweep import run_sweep

    name = f"{'mo_asha' if scheduler else 'fifo'}-seed{seed}"
    doc = space_document(
        name, trials=trials, epochs=epochs, synthetic_n=synthetic_n, seed=seed, scheduler=scheduler
    )
    space = out / "spaces" / f"{name}.yaml"
    space.parent.mkdir(parents=True, exist_ok=True)
    space.write_text(yaml.safe_dump(doc, sort_keys=False))
    started = time.perf_counter()
    outcome = run_sweep(space, results_root=out, restart=True)
    wall = time.perf_counter() - started
    if outcome.failed or outcome.unfinished:
        raise RuntimeError(f"sweep {name}: {outcome.failed} failed, {outcome.unfinished} unfinished trials")
    table = pd.read_parquet(outcome.results_dir / "trials.parquet")
    points = hypervolume_curve(read_reports(out / ".tune" / name))
    curve = SweepCurve(
        name=name,
        scheduler=scheduler,
        seed=seed,
        trials=len(table),
        stopped=int((table["status"] == "stopped").sum()),
        wall_s=wall,
        points=points,
    )
    logger.info(
        "%s: %d trials (%d stopped), %d epochs, final hypervolume %.4f, %.0f s",
        name,
        curve.trials,
        curve.stopped,
        curve.total_epochs,
        curve.final_hypervolume,
        wall,
    )
    return curve


def compare(without: SweepCurve, with_: SweepCurve) -> RepeatRow:
    """The table row of one seed: both sweeps measured against the no-stopping sweep's final front."""
    target = TARGET * without.final_hypervolume
    reach = without.epochs_to_reach(target), with_.epochs_to_reach(target)
    hold = without.epochs_to_hold(target), with_.epochs_to_hold(target)
    return RepeatRow(
        seed=without.seed,
        hv_without=without.final_hypervolume,
        hv_with=with_.final_hypervolume,
        epochs_without=without.total_epochs,
        epochs_with=with_.total_epochs,
        stopped_with=with_.stopped,
        reach_without=reach[0],
        reach_with=reach[1],
        reach_ratio=_ratio(reach[1], reach[0]),
        hold_without=hold[0],
        hold_with=hold[1],
        hold_ratio=_ratio(hold[1], hold[0]),
        wall_s_without=without.wall_s,
        wall_s_with=with_.wall_s,
    )


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


# (header, RepeatRow field, format of a repeat's value, format of the mean)
COLUMNS = (
    ("seed", "seed", "d", ""),
    ("HV w/o", "hv_without", ".4f", ".4f"),
    ("HV with", "hv_with", ".4f", ".4f"),
    ("epochs w/o", "epochs_without", "d", ".1f"),
    ("epochs with", "epochs_with", "d", ".1f"),
    ("stopped", "stopped_with", "d", ".1f"),
    ("reach95 w/o", "reach_without", "d", ".1f"),
    ("reach95 with", "reach_with", "d", ".1f"),
    ("ratio", "reach_ratio", ".2f", ".2f"),
    ("hold95 w/o", "hold_without", "d", ".1f"),
    ("hold95 with", "hold_with", "d", ".1f"),
    ("ratio", "hold_ratio", ".2f", ".2f"),
    ("wall s w/o", "wall_s_without", ".0f", ".0f"),
    ("wall s with", "wall_s_with", ".0f", ".0f"),
)


def _cell(value: float | None, fmt: str) -> str:
    return "never" if value is None else format(value, fmt)


def format_table(rows: Sequence[RepeatRow]) -> str:
    """The per-repeat table and the mean line, as fixed-width text.

    ``reach95``: epochs trained when the hypervolume first reached 95 % of the no-stopping sweep's final
    one; ``hold95``: from when it stayed there to the end; ``ratio``: with / without; ``never``: not
    reached (or, for a mean, not reached in some repeat).
    """
    widths = [max(len(header), 6) for header, *_ in COLUMNS]
    lines = ["  ".join(f"{header:>{w}}" for (header, *_), w in zip(COLUMNS, widths, strict=True))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        cells = [_cell(getattr(r, field), fmt) for _, field, fmt, _ in COLUMNS]
        lines.append("  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    mean = mean_row(rows)
    cells = ["mean"] + [_cell(mean[field], fmt) for _, field, _, fmt in COLUMNS[1:]]
    lines.append("-" * len(lines[0]))
    lines.append("  ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def mean_row(rows: Sequence[RepeatRow]) -> dict[str, float | None]:
    """Means over repeats; an epochs-to-95 % or ratio mean is ``None`` when any repeat never got there."""
    mean: dict[str, float | None] = {}
    for key in RepeatRow.__dataclass_fields__:
        if key == "seed":
            continue
        values = [getattr(r, key) for r in rows]
        mean[key] = None if any(v is None for v in values) else statistics.fmean(values)
    return mean


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12, help="trials per sweep (default 12)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of a full trial (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="sampler seeds 0..R-1 (default 3)")
    parser.add_argument("--synthetic-n", type=int, default=800, help="synthetic set size (default 800)")
    parser.add_argument(
        "--out", type=Path, help="folder for the sweeps, curves.csv, summary.json (default: temp)"
    )
    parser.add_argument(
        "--cache", type=Path, help="FAIRSEARCH_CACHE shared by the sweeps (default: <out>/cache)"
    )
    args = parser.parse_args(argv)
    if args.epochs <= SCHEDULER["grace_period"]:
        parser.error(f"--epochs must be > the grace period {SCHEDULER['grace_period']} (no rung otherwise)")

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("ray", "fairsearch.train.trial"):
        logging.getLogger(name).setLevel(logging.WARNING)
    out = (args.out or Path(tempfile.mkdtemp(prefix="mo_asha_hv-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Before Ray starts: its workers inherit the driver's environment.
    os.environ["FAIRSEARCH_CACHE"] = str((args.cache or out / "cache").resolve())
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logger.info("benchmark folder %s, FAIRSEARCH_CACHE %s", out, os.environ["FAIRSEARCH_CACHE"])

    import ray

    rows, curves = [], []
    started = time.perf_counter()
    try:
        for seed in range(args.repeats):
            pair = [
                run_one(
                    out,
                    seed=seed,
                    scheduler=scheduler,
                    trials=args.trials,
                    epochs=args.epochs,
                    synthetic_n=args.synthetic_n,
                )
                for scheduler in (False, True)
            ]
            curves.extend(pair)
            rows.append(compare(*pair))
            print(format_table(rows), flush=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()

    with open(out / "curves.csv", "w") as f:
        f.write("sweep,scheduler,seed,epochs,seconds,hypervolume\n")
        for c in curves:
            for p in c.points:
                f.write(
                    f"{c.name},{int(c.scheduler)},{c.seed},{p.epochs},{p.seconds:.3f},{p.hypervolume:.6f}\n"
                )
    total_wall_s = time.perf_counter() - started
    summary = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "scheduler": SCHEDULER,
        "target": TARGET,
        "rows": [asdict(r) for r in rows],
        "mean": mean_row(rows),
        "total_wall_s": total_wall_s,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    print()
    print(
        f"MO-ASHA vs no early stopping: {args.repeats} repeats x {args.trials} trials x {args.epochs} epochs, "
        f"synthetic_n {args.synthetic_n}, in {total_wall_s / 60:.1f} min"
    )
    print(format_table(rows))
    print(f"curves and summary in {out}")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
