"""A whole sweep of many stand-in trials: fairsearch's driver against bare Ray Tune + OptunaSearch.

Both sides run the same stand-in trial, 16 at once: no training, two reports a trial (``--seconds`` apart),
metrics drawn from the trial's settings (accuracy and MaxAccGap as a fair sweep's trade them, and the group
figures a real report carries, 230 values). The fairsearch side is the search's own Tune experiment
(:func:`fairsearch.search.sweep.search_tuner`: Optuna in SQLite through ``SweepSearch``, the results
callback rewriting ``trials.parquet`` and ``pareto.parquet``, Tune's JSON and CSV loggers); the bare side is
``tune.Tuner`` with ``OptunaSearch`` (in-memory study, the same define-by-run space and TPE seed) and
nothing else. Per size: each side's wall time and their ratio, the fairsearch driver's time inside the
results callback per completion (first and last tenth of the sweep: does it grow?), the Parquet files'
sizes, and the time of ``fairsearch pareto`` and ``fairsearch report`` on the result.

Tune's JSON and CSV loggers on both sides (a bare Tune's defaults); Ray's workers are started by an untimed
warm-up sweep first. Not measured: the thresholded and refit fronts (the stand-in writes no checkpoint, so no scores), Ray's
per-trial cost on a real cluster (one 2-core machine here, 16 logical CPUs).

    .venv/bin/python benchmarks/driver_scale.py --out /tmp/driver_scale --trials 100 500
    .venv/bin/python benchmarks/driver_scale.py --out /tmp/driver_scale --trials 2000 --seconds 1
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import ray
import yaml
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search.optuna import OptunaSearch

from fairsearch.output.tables import aligned_rows
from fairsearch.search.sweep import search_tuner
from fairsearch.search.tune_trials import REPORT, ResultsCallback
from fairsearch.spec.config import objective_directions, objective_keys
from fairsearch.spec.space import load_space

CONCURRENCY = 16
GROUPS = {
    "race": ("Asian", "Black", "White"),
    "gender": ("Female", "Male"),
    "ethnicity": ("Hispanic", "Non-Hispanic", "unknown"),
    "language": ("English", "Other", "Spanish", "unknown"),
    "maritalstatus": (
        "Divorced",
        "Legally Separated",
        "Marriage or Partnered",
        "Single",
        "Widowed",
        "unknown",
    ),
}


def _unit(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def report_metrics(key: str, fair: float, report: int) -> dict[str, float]:
    """A stand-in report of the trial with settings ``key``: accuracy and MaxAccGap traded off (``fair``, 0
    for vanilla, costs accuracy and narrows the gap), each group's figures around them; 230 values."""
    acc = 0.80 + 0.12 * _unit(key + "acc") - 0.05 * fair + 0.02 * report
    gap = 0.02 + 0.15 * _unit(key + "gap") * (1.0 - 0.6 * fair)
    metrics: dict[str, float] = {
        "acc": acc,
        "max_acc_gap": gap,
        "auc": acc + 0.03,
        "worst_group_acc": acc - gap,
        "loss": 1.0 - acc,
    }
    for attribute, groups in GROUPS.items():
        metrics[f"max_acc_gap/{attribute}"] = gap
        for i, group in enumerate(groups):
            for what in ("acc", "auc", "p_pos"):
                value = acc - gap * _unit(f"{key}{attribute}{group}{what}") + 0.001 * i
                metrics[f"{what}/{attribute}/{group}"] = value
                metrics[f"{what}/{attribute}/{group}_ci_low"] = value - 0.05
                metrics[f"{what}/{attribute}/{group}_ci_high"] = value + 0.05
    return metrics


def stand_in(config: dict[str, Any], seconds: float) -> None:
    """Two reports, ``seconds`` apart, of :func:`report_metrics` for the trial's settings."""
    key = repr(sorted((k, v) for k, v in config.items() if k != "optuna_number"))
    fair = 0.0 if config.get("method") == "vanilla" else float(config.get("lam", 0.5))
    for report in (1, 2):
        time.sleep(seconds)
        tune.report({**report_metrics(key, fair, report), "epoch": float(report), REPORT: report})


def _space(out: Path, trials: int) -> Path:
    doc = {
        "name": f"scale{trials}",
        "objectives": {"group_by": "ethnicity"},
        "search": {
            "method": ["vanilla", "fr", "gr", "hybrid"],
            "lora_rank": [4, 8, 16],
            "lam": {"low": 0.1, "high": 1.0},
            "w_max": {"low": 1.0, "high": 10.0},
            "lr": {"low": 1e-4, "high": 1e-2, "log": True},
        },
        "fixed": {"epochs": 2},
        "trials": trials,
        "concurrency": CONCURRENCY,
        "sampler": {"name": "tpe", "seed": 0},
        "resources": {"cpus": 1},
    }
    path = out / f"scale{trials}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@contextlib.contextmanager
def _timed_writes(times: list[float]) -> Iterator[None]:
    """Every rewrite of the results files by the results callback, timed."""
    write = ResultsCallback.write

    def timed(self: ResultsCallback, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        write(self, *args, **kwargs)
        times.append(time.perf_counter() - start)

    ResultsCallback.write = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        ResultsCallback.write = write  # type: ignore[method-assign]


def fairsearch_side(out: Path, trials: int, seconds: float) -> tuple[float, list[float], Path]:
    out.mkdir(parents=True, exist_ok=True)
    spec = load_space(_space(out, trials))
    results = out / "results" / spec.name
    results.mkdir(parents=True)
    trainable = tune.with_resources(tune.with_parameters(stand_in, seconds=seconds), {"cpu": 1})
    tuner = search_tuner(spec, trainable, results, str(out / "tune"), f"sqlite:///{results / 'optuna.db'}")
    writes: list[float] = []
    start = time.perf_counter()
    with _timed_writes(writes):
        tuner.fit()
    return time.perf_counter() - start, writes, results


def bare_side(out: Path, trials: int, seconds: float) -> float:
    out.mkdir(parents=True, exist_ok=True)
    spec = load_space(_space(out, trials))
    searcher = OptunaSearch(
        space=spec.define_by_run(),
        metric=list(objective_keys(objectives=spec.objectives)),
        mode=list(objective_directions(spec.objectives)),
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(stand_in, seconds=seconds), {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=trials, max_concurrent_trials=CONCURRENCY
        ),
        run_config=tune.RunConfig(
            name=f"bare{trials}",
            storage_path=str(out / "bare"),
            callbacks=[JsonLoggerCallback(), CSVLoggerCallback()],  # Tune's default loggers, as ours
            verbose=0,
        ),
    )
    start = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - start


def _command_seconds(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fairsearch.cli", *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="a new folder for both sides' files")
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--seconds", type=float, default=0.5, help="between a stand-in trial's reports")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ray.init(num_cpus=CONCURRENCY, include_dashboard=False, log_to_driver=False, configure_logging=False)
    bare_side(args.out / "warm-up", CONCURRENCY, args.seconds)  # Ray's workers started, not timed
    rows = []
    for trials in args.trials:
        out = args.out / f"n{trials}"
        bare = bare_side(out, trials, args.seconds)
        ours, writes, results = fairsearch_side(out, trials, args.seconds)
        tenth = max(1, len(writes) // 10)
        first, last = sum(writes[:tenth]) / tenth, sum(writes[-tenth:]) / tenth
        floor = trials * 2 * args.seconds / CONCURRENCY
        pareto = _command_seconds("pareto", str(results))
        report = _command_seconds("report", str(results), "--out", str(out / "report.html"))
        sizes = sum((results / name).stat().st_size for name in ("trials.parquet", "pareto.parquet"))
        rows.append(
            [
                str(trials),
                f"{floor:.0f}",
                f"{bare:.0f}",
                f"{ours:.0f}",
                f"{ours / bare:.2f}",
                f"{len(writes)}",
                f"{1000 * first:.0f} → {1000 * last:.0f}",
                f"{sum(writes):.0f}",
                f"{sizes / 1e6:.1f}",
                f"{pareto:.1f}",
                f"{report:.1f}",
            ]
        )
        print(f"{trials} trials: bare {bare:.0f} s, fairsearch {ours:.0f} s", flush=True)
    header = [
        "trials",
        "floor s",
        "bare Tune s",
        "fairsearch s",
        "ratio",
        "writes",
        "ms per write (first → last tenth)",
        "writing s",
        "Parquet MB",
        "pareto s",
        "report s",
    ]
    print("\n".join(aligned_rows(header, rows)))


if __name__ == "__main__":
    main()
