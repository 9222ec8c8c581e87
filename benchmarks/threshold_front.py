"""Did a fair method beat thresholding? The trained front, thresholded vanilla and the combined front.

Runs ``search_spaces/hybrid.yaml`` (the main command's sweep) once per sampler seed, or reads sweeps that
have run, and prints per sweep the three validation fronts of ``pareto.parquet``
(:mod:`fairsearch.output.threshold_fronts`) side by side: the trained trials' own front, the front of the
vanilla trials with their decision thresholds chosen again on validation (one threshold for everyone, or
one per group for each gap limit of a ladder), and the front of everything together. For each front: the
smallest validation MaxAccGap it reaches, that member's test accuracy and test gap, and the most
accurate member's, all with exact 95 % intervals (``fairsearch.judge.intervals``). Every choice is made on
validation; the test split is only measured.

    .venv/bin/python benchmarks/threshold_front.py --out /tmp/threshold_front          # seed 0, ~4 min idle
    .venv/bin/python benchmarks/threshold_front.py --out /tmp/tf --seeds 0 1 2
    .venv/bin/python benchmarks/threshold_front.py results/hybrid                      # a sweep that has run

Per-group thresholds need each patient's group at inference time; the output says so.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from fair_front import seeded_space  # this folder is sys.path[0] when run as a script
from scipy import stats

from fairsearch.errors import FairsearchError
from fairsearch.output.results import OBJECTIVES, SEARCH_FRONT
from fairsearch.output.tables import aligned_rows, fmt_ci, fmt_pct
from fairsearch.output.threshold_fronts import (
    COMPARISON_HEADER,
    FRONT_TITLES,
    GROUPS_AT_INFERENCE,
    front_comparison,
    read_threshold_fronts,
)

logger = logging.getLogger("threshold_front")


def run_seed(space: Path, seed: int, out: Path) -> Path:
    """Runs (or resumes) the space with sampler seed ``seed``; returns its results folder."""
    from fairsearch.search.sweep import run_sweep

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    outcome = run_sweep(seeded_space(space, seed, out), results_root=out / "results")
    logger.info("seed %d: %d trials in %.0f s", seed, outcome.completed, time.perf_counter() - start)
    return outcome.results_dir


def at_trained_gap(fronts: dict[str, pd.DataFrame]) -> list[list[str]]:
    """Per front, its most accurate member whose validation gap is at most the trained front's smallest:
    the fronts compared at one level of fairness, rather than at each one's own extreme."""
    acc, gap = OBJECTIVES
    limit = float(fronts[SEARCH_FRONT][gap].min())
    rows = []
    for name, title in FRONT_TITLES.items():
        within = fronts[name][fronts[name][gap] <= limit]
        if within.empty:
            rows.append([title, fmt_pct(limit), "-", "-", "-", "-", "-"])
            continue
        best = within.sort_values([acc, gap], ascending=[False, True], kind="stable").iloc[0]
        rows.append(
            [title, fmt_pct(limit), f"#{best['number']} {best['param/method']}", str(best.get("kind") or "trained"),
             f"{fmt_pct(best[acc])} / {fmt_pct(best[gap])}", fmt_ci(best, "test/acc"), fmt_ci(best, "test/max_acc_gap")]
        )  # fmt: skip
    return rows


def matched_points(fronts: dict[str, pd.DataFrame]) -> dict[str, dict[str, float]]:
    """Per front, the test accuracy, MaxAccGap and worst-group accuracy of its most accurate member
    whose validation gap is at most the trained front's smallest (NaN when it has none)."""
    acc, gap = OBJECTIVES
    limit = float(fronts[SEARCH_FRONT][gap].min())
    out = {}
    for name, title in FRONT_TITLES.items():
        within = fronts[name][fronts[name][gap] <= limit]
        best = (
            within.sort_values([acc, gap], ascending=[False, True], kind="stable").iloc[0]
            if len(within)
            else {}
        )
        out[title] = {
            k: float(best.get(f"test/{k}", math.nan)) for k in ("acc", "max_acc_gap", "worst_group_acc")
        }
    return out


def across_seeds(folders: dict[str, Path]) -> str:
    """Each front's matched-gap test figures as means over the sweeps with 95 % t-intervals across them,
    and each thresholded front's paired difference from the trained front (same sweep, same trials)."""
    points = [matched_points(read_threshold_fronts(folder)) for folder in folders.values()]
    n = len(points)
    rows = []
    for title in FRONT_TITLES.values():
        cells = [title]
        for key in ("acc", "max_acc_gap", "worst_group_acc"):
            mean, low, high = mean_interval([p[title][key] for p in points])
            cells.append(f"{fmt_pct(mean)} [{fmt_pct(low)}, {fmt_pct(high)}]")
        for key in ("acc", "worst_group_acc"):
            diffs = [p[title][key] - p[FRONT_TITLES[SEARCH_FRONT]][key] for p in points]
            mean, low, high = mean_interval(diffs)
            cells.append("-" if title == FRONT_TITLES[SEARCH_FRONT] else _signed(mean, low, high))
        rows.append(cells)
    header = [
        "front",
        "test acc",
        "test gap",
        "test worst group",
        "Δ acc vs trained",
        "Δ worst group vs trained",
    ]
    return "\n".join(
        [
            f"Across {n} sweep(s) (sampler seeds), at each sweep's trained-front smallest validation gap: means "
            "with 95 % t-intervals across sweeps (a single sweep has none); Δ paired within a sweep, in points.",
            *aligned_rows(header, rows),
        ]
    )


def _signed(mean: float, low: float, high: float) -> str:
    """``+2.7 [+0.4, +5.0]`` in points; ``-`` for what is not a number."""
    point = "-" if math.isnan(mean) else f"{100 * mean:+.1f}"
    return point if math.isnan(low) else f"{point} [{100 * low:+.1f}, {100 * high:+.1f}]"


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and the 95 % t-interval of the mean over the finite values (``nan`` for none)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    if x.size == 1:
        return float(x[0]), math.nan, math.nan
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return float(x.mean()), float(x.mean()) - half, float(x.mean()) + half


def table(folders: dict[str, Path]) -> str:
    """The three fronts of each sweep side by side, then compared at the trained front's smallest gap."""
    rows, matched = [], []
    for label, folder in folders.items():
        fronts = read_threshold_fronts(folder)
        rows += [[label, *row] for row in front_comparison(fronts)]
        matched += [[label, *row] for row in at_trained_gap(fronts)]
    header = ["sweep", *COMPARISON_HEADER]
    matched_header = [
        "sweep",
        "front",
        "val gap ≤",
        "trial",
        "kind",
        "val acc / gap",
        "test acc [CI]",
        "test gap [CI]",
    ]
    return "\n".join(
        [
            f"{len(folders)} sweep(s). Test accuracy and MaxAccGap in %, exact 95 % intervals; 'smallest val gap' is "
            "the lowest validation MaxAccGap on the front, the test figures are that member's.",
            *aligned_rows(header, rows),
            "",
            "At the trained front's smallest validation gap: each front's most accurate member within it.",
            *aligned_rows(matched_header, matched),
            "",
            across_seeds(folders),
            GROUPS_AT_INFERENCE,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="results folders of sweeps that have run")
    parser.add_argument("--space", type=Path, default=Path("search_spaces/hybrid.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampler seeds to run")
    parser.add_argument("--out", type=Path, default=Path("/tmp/threshold_front"), help="where sweeps go")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.folders:
            folders = {str(f): f for f in args.folders}
        else:
            folders = {f"seed {s}": run_seed(args.space, s, args.out / f"seed{s}") for s in args.seeds}
        print(table(folders))
    except FairsearchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
