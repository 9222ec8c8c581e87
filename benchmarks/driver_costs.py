"""What a trial's ending costs the sweep's driver at 100, 500 and 2,000 finished trials.

Two costs that grew with the trials at every ending, measured in one run on the same study:

- the searcher's "already told?" check: loading the Optuna study and scanning its trials (before) against
  two indexed lookups by number in the storage (``SweepSearch._told`` now);
- rewriting ``trials.parquet`` and ``pareto.parquet`` (``write_results``, without derived fronts), which the
  results callback does at every ending;
- the results callback's whole write (``ResultsCallback.write``: Tune's trials to records, both files, the
  status line's front) of ended Tune trials each carrying a real report's 230 values
  (``driver_scale.report_metrics``), one trial's report new at each write, as when a trial ends: with
  every record and row built again (what each write did before the callback kept them, and what the
  first write after a resume still does) and with the records and rows of unchanged trials kept
  (:class:`fairsearch.output.trials_table.TrialsTable`).

Not measured here: a whole sweep of thousands of stand-in trials beside bare Ray Tune + OptunaSearch (the
issue's ``driver_scale.py``), nor TPE's own suggestion time (``sampler_cost.py``).

    .venv/bin/python benchmarks/driver_costs.py --out /tmp/driver_costs
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import optuna
from driver_scale import report_metrics
from optuna.distributions import CategoricalDistribution, FloatDistribution

from fairsearch.output.results import TrialRecord, write_results
from fairsearch.output.tables import aligned_rows
from fairsearch.search.tune_trials import REPORT, ResultsCallback


def _study(url: str, n: int) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"])
    dists = {
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "method": CategoricalDistribution(["vanilla", "hybrid"]),
    }
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={"lr": 1e-3 + i * 1e-6, "method": "vanilla" if i % 2 else "hybrid"},
                distributions=dists,
                values=[0.8 + (i % 97) / 1000, 0.1 + (i % 89) / 1000],
            )
            for i in range(n)
        ]
    )
    return study


def _told_by_scan(url: str, number: int) -> bool:
    study = optuna.load_study(study_name="s", storage=url)
    return any(t.number == number and t.state.is_finished() for t in study.get_trials(deepcopy=False))


def _told_by_lookup(storage: optuna.storages.BaseStorage, number: int) -> bool:
    study_id = storage.get_study_id_from_name("s")
    return bool(
        storage.get_trial(
            storage.get_trial_id_from_study_id_trial_number(study_id, number)
        ).state.is_finished()
    )


def _records(n: int) -> list[TrialRecord]:
    return [
        TrialRecord(
            f"t{i}",
            i,
            "completed",
            {"method": "vanilla" if i % 2 else "hybrid", "lr": 1e-3, "lora_rank": 8},
            {"acc": 0.8 + (i % 97) / 1000, "max_acc_gap": 0.1 + (i % 89) / 1000, "worst_group_acc": 0.7},
            2.0,
            10.0,
        )
        for i in range(n)
    ]


def _tune_trials(n: int) -> list[SimpleNamespace]:
    """``n`` ended Tune trials as the results callback sees them (stand-ins with Tune's attributes)."""
    return [
        SimpleNamespace(
            trial_id=f"t{i}",
            config={"optuna_number": i, "method": "fr", "lam": 0.5, "lr": 1e-3, "epochs": 2},
            last_result={**report_metrics(str(i), 0.5, 2), "epoch": 2.0, REPORT: 2, "timestamp": 1.0},
            status="TERMINATED",
            num_failures=0,
            error_file=None,
        )
        for i in range(n)
    ]


def _one_trial_reports(callback: ResultsCallback, trials: list[SimpleNamespace], *, rebuild: bool) -> None:
    """A new report of one trial (a new ``last_result``, as Tune gives it), then the callback's write;
    with ``rebuild`` the callback first forgets what it kept."""
    trial = trials[len(trials) // 2]
    trial.last_result = {**trial.last_result, "timestamp": trial.last_result["timestamp"] + 1.0}
    if rebuild:
        callback.__dict__.pop("_kept", None)
        callback.__dict__.pop("_table", None)
    callback.write(trials)


def _time(repeats: int, fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    """Mean seconds of ``fn(*args)`` over ``repeats`` calls."""
    started = time.perf_counter()
    for _ in range(repeats):
        fn(*args, **kwargs)
    return (time.perf_counter() - started) / repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="a new folder for the studies and files")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 2000])
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=False)
    rows = []
    for n in args.sizes:
        url = f"sqlite:///{args.out / f'study-{n}.db'}"
        _study(url, n)
        storage = optuna.storages.RDBStorage(url)
        scan = _time(5, _told_by_scan, url, n - 1)
        lookup = _time(50, _told_by_lookup, storage, n - 1)
        folder = args.out / f"results-{n}"
        folder.mkdir()
        records = _records(n)
        write = _time(3, write_results, folder, records, {})
        callback = ResultsCallback(str(args.out / f"callback-{n}"))
        trials = _tune_trials(n)
        callback._ended = {t.trial_id for t in trials}  # they ended under its eyes
        callback.write(trials)  # the first write makes the folder
        rebuilt = _time(3, _one_trial_reports, callback, trials, rebuild=True)
        kept = _time(5, _one_trial_reports, callback, trials, rebuild=False)
        rows.append(
            [
                str(n),
                f"{scan * 1000:.0f}",
                f"{lookup * 1000:.1f}",
                f"{scan / lookup:.0f}×",
                f"{write * 1000:.0f}",
                f"{rebuilt * 1000:.0f}",
                f"{kept * 1000:.0f}",
                f"{rebuilt / kept:.1f}×",
            ]
        )
    print(
        "\n".join(
            aligned_rows(
                [
                    "trials",
                    "told? scan ms",
                    "told? lookup ms",
                    "ratio",
                    "Parquet write ms",
                    "callback write, all rebuilt ms",
                    "callback write, rows kept ms",
                    "ratio",
                ],
                rows,
            )
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
