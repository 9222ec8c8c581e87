"""Optuna's cost per suggestion in a fairsearch-like two-objective study, by sampler and study size.

Run from the repository root (about 3-5 minutes on 2 cores)::

    .venv/bin/python benchmarks/sampler_cost.py
    .venv/bin/python benchmarks/sampler_cost.py --sizes 100 1000 --samplers tpe random --cap-s 30

A Ray Tune driver asks its ``OptunaSearch`` for one suggestion per new trial: ``study.ask()`` plus the
define-by-run function (fairsearch's ``SweepSpec.define_by_run``). This script times exactly that on a
study that already holds N finished trials (maximise ``acc``, minimise ``max_acc_gap``), for each
sampler fairsearch offers, in fairsearch's own configuration (``fairsearch.search.sweep.make_sampler``). Studies are filled quickly with ``study.add_trials`` of
synthetic ``optuna.trial.create_trial`` results whose objectives depend on the parameters, and a few
RUNNING trials stand for the trials in flight (TPE's constant liar looks at them).

The space is ``search_spaces/all_methods.yaml``'s: a categorical ``method``, categorical integer LoRA
ranks, a log-uniform ``lam`` only for ``fr``/``hybrid``, ``w_max`` only for ``gr``/``hybrid``, a
log-uniform learning rate and a categorical weight decay.

Each (sampler, size, storage) measurement runs in its own process with a wall-clock cap; one that
exceeds it is reported as skipped, with the reason, instead of stalling the run. In-memory storage is
the default; ``--storage-size`` (1,000) also times TPE on SQLite (what ``fairsearch run`` uses unless
``optuna_storage`` names a database) and on a journal file, to show what storage adds.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The space of search_spaces/all_methods.yaml, the largest shipped one, for the synthetic finished trials;
# measure() checks that these are the distributions the space's own define-by-run suggests.
SPACE_FILE = Path(__file__).resolve().parents[1] / "search_spaces" / "all_methods.yaml"
METHODS = ("vanilla", "fr", "gr", "hybrid")
RANKS = (8, 16, 32)
LAM_RANGE = (0.05, 2.0)  # log-uniform
W_MAX_RANGE = (1.0, 20.0)
LR_RANGE = (3e-4, 3e-3)  # log-uniform
WEIGHT_DECAYS = (0.0, 0.01)
DEFAULT_SIZES = (100, 1000, 5000)
DEFAULT_SAMPLERS = ("tpe", "nsgaii", "random", "gp")
STORAGES = ("memory", "sqlite", "journal")
NSGA_POPULATION = 50  # NSGAIISampler's default population size
NSGA_GENERATION_KEY = "NSGAIISampler:generation"


@dataclass
class Measurement:
    """The timing of one (sampler, study size, storage) cell.

    Attributes:
        sampler: ``tpe``, ``nsgaii``, ``random`` or ``gp``.
        n_finished: finished trials in the study before timing.
        storage: ``memory``, ``sqlite`` or ``journal``.
        ms_median: median milliseconds per suggestion (``ask`` + define-by-run); ``nan`` if skipped.
        ms_max: slowest timed suggestion, in milliseconds.
        repeats: suggestions timed.
        fill_s: seconds spent filling the study (``add_trials``).
        tell_ms_median: median milliseconds of ``study.tell`` (a storage write).
        skipped: why the cell has no number, or ``None``.
    """

    sampler: str
    n_finished: int
    storage: str
    ms_median: float = math.nan
    ms_max: float = math.nan
    repeats: int = 0
    fill_s: float = math.nan
    tell_ms_median: float = math.nan
    skipped: str | None = None


@functools.cache
def _define_by_run() -> Any:
    from fairsearch.spec.space import load_space

    return load_space(SPACE_FILE).define_by_run()


def suggest(trial: Any) -> dict[str, Any]:
    """The sweep's own define-by-run function for ``all_methods.yaml``; returns the sampled parameters."""
    _define_by_run()(trial)
    return dict(trial.params)


def _distributions() -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {
        "method": CategoricalDistribution(METHODS),
        "lora_rank": CategoricalDistribution(RANKS),
        "lr": FloatDistribution(*LR_RANGE, log=True),
        "weight_decay": CategoricalDistribution(WEIGHT_DECAYS),
        "lam": FloatDistribution(*LAM_RANGE, log=True),
        "w_max": FloatDistribution(*W_MAX_RANGE),
    }


def objectives(params: dict[str, Any], rng: np.random.Generator) -> tuple[float, float]:
    """Synthetic (acc, max_acc_gap) with a trade-off: fairness terms cut the gap and cost accuracy."""
    lr_fit = -abs(math.log10(params["lr"]) + 3.0)  # best near 1e-3
    rank_fit = 0.01 * math.log2(params["lora_rank"])
    lam = params.get("lam", 0.0)
    weighting = (params.get("w_max", 1.0) - 1.0) / (W_MAX_RANGE[1] - 1.0)
    acc = 0.86 + 0.03 * lr_fit + rank_fit - 0.02 * lam - 0.03 * weighting + rng.normal(0, 0.01)
    gap = 0.20 - 0.05 * lam - 0.10 * weighting + rng.normal(0, 0.02)
    return float(np.clip(acc, 0.0, 1.0)), float(np.clip(gap, 0.0, 1.0))


def synthetic_trials(n: int, seed: int, *, running: bool = False) -> list[Any]:
    """``n`` finished trials with random parameters of the space and synthetic objectives.

    With ``running``, the trials are RUNNING instead (trials in flight: parameters, no values).
    """
    import optuna

    dists = _distributions()
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n):
        method = METHODS[int(rng.integers(len(METHODS)))]
        params: dict[str, Any] = {
            "method": method,
            "lora_rank": RANKS[int(rng.integers(len(RANKS)))],
            "lr": _log_uniform(rng, *LR_RANGE),
            "weight_decay": WEIGHT_DECAYS[int(rng.integers(len(WEIGHT_DECAYS)))],
        }
        if method in ("fr", "hybrid"):
            params["lam"] = _log_uniform(rng, *LAM_RANGE)
        if method in ("gr", "hybrid"):
            params["w_max"] = float(rng.uniform(*W_MAX_RANGE))
        trials.append(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.RUNNING if running else optuna.trial.TrialState.COMPLETE,
                params=params,
                distributions={k: dists[k] for k in params},
                values=None if running else list(objectives(params, rng)),
                system_attrs={} if running else {NSGA_GENERATION_KEY: i // NSGA_POPULATION},
            )
        )
    return trials


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(math.log(low), math.log(high))))


def make_storage(kind: str, folder: str) -> Any:
    """An Optuna storage: in memory, SQLite (as ``fairsearch run`` defaults to), or a journal file."""
    import optuna

    if kind == "memory":
        return optuna.storages.InMemoryStorage()
    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{Path(folder) / 'optuna.db'}")
    if kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(Path(folder) / "optuna.journal")))
    raise ValueError(f"unknown storage {kind!r}")


def measure(
    sampler: str, n_finished: int, storage: str, repeats: int, n_running: int, budget_s: float, seed: int
) -> Measurement:
    """Times ``repeats`` suggestions (or as many as fit in ``budget_s``, at least one) on a filled study."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    from fairsearch.search.sweep import make_sampler  # the samplers exactly as a sweep builds them

    rng = np.random.default_rng(seed + 1)
    with tempfile.TemporaryDirectory() as folder:
        study = optuna.create_study(
            directions=["maximize", "minimize"],
            sampler=make_sampler(sampler, seed),
            storage=make_storage(storage, folder),
            study_name="sampler-cost",
        )
        start = time.perf_counter()
        study.add_trials(synthetic_trials(n_finished, seed))
        fill_s = time.perf_counter() - start
        study.add_trials(synthetic_trials(n_running, seed + 2, running=True))  # in flight, never told
        # One untimed suggestion pays for lazy imports (scipy, torch for GP) and caches.
        warm = study.ask()
        study.tell(warm, list(objectives(suggest(warm), rng)))
        expected = _distributions()
        if any(expected[name] != dist for name, dist in warm.distributions.items()):
            raise RuntimeError(f"the synthetic trials' space differs from {SPACE_FILE}: {warm.distributions}")

        times: list[float] = []
        tells: list[float] = []
        deadline = time.perf_counter() + budget_s
        while len(times) < repeats and (not times or time.perf_counter() < deadline):
            t0 = time.perf_counter()
            trial = study.ask()
            params = suggest(trial)
            t1 = time.perf_counter()
            study.tell(trial, list(objectives(params, rng)))
            t2 = time.perf_counter()
            times.append(t1 - t0)
            tells.append(t2 - t1)
    return Measurement(
        sampler=sampler,
        n_finished=n_finished,
        storage=storage,
        ms_median=1e3 * statistics.median(times),
        ms_max=1e3 * max(times),
        repeats=len(times),
        fill_s=fill_s,
        tell_ms_median=1e3 * statistics.median(tells),
    )


def _child(queue: Any, args: tuple[Any, ...]) -> None:
    queue.put(asdict(measure(*args)))


def measure_capped(
    sampler: str,
    n_finished: int,
    storage: str,
    *,
    repeats: int,
    n_running: int,
    cap_s: float,
    seed: int,
) -> Measurement:
    """Runs :func:`measure` in a fresh process; reports it skipped if it runs past ``cap_s`` seconds."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    budget_s = cap_s / 3  # the rest is for filling the study and the first suggestion
    proc = ctx.Process(
        target=_child, args=(queue, (sampler, n_finished, storage, repeats, n_running, budget_s, seed))
    )
    start = time.perf_counter()
    proc.start()
    proc.join(cap_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return Measurement(
            sampler,
            n_finished,
            storage,
            skipped=f"killed at the {cap_s:.0f} s cap (over ~{cap_s / 3:.0f} s per suggestion)",
        )
    if proc.exitcode != 0 or queue.empty():
        return Measurement(sampler, n_finished, storage, skipped=f"failed (exit code {proc.exitcode})")
    result = Measurement(**queue.get())
    result.fill_s = min(result.fill_s, time.perf_counter() - start)
    return result


def format_table(results: Sequence[Measurement], sizes: Sequence[int], samplers: Sequence[str]) -> str:
    """Markdown table: finished trials × sampler → median ms per suggestion (in-memory storage)."""
    cell = {(m.sampler, m.n_finished): m for m in results if m.storage == "memory"}
    lines = [
        "| finished trials | " + " | ".join(samplers) + " |",
        "| ---: | " + " | ".join("---:" for _ in samplers) + " |",
    ]
    for n in sizes:
        row = []
        for s in samplers:
            m = cell.get((s, n))
            row.append("—" if m is None or m.skipped else f"{m.ms_median:,.1f}")
        lines.append(f"| {n:,} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def format_storage_table(results: Sequence[Measurement], n_finished: int) -> str:
    """Markdown table of TPE at one study size on each storage: ask + suggest, tell, and the fill time."""
    rows = [m for m in results if m.sampler == "tpe" and m.n_finished == n_finished]
    if not any(m.storage != "memory" for m in rows):
        return ""
    lines = [
        "| storage (tpe) | finished trials | ask + suggest, ms | tell, ms | filling the study, s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for m in sorted(rows, key=lambda m: STORAGES.index(m.storage)):
        if m.skipped:
            lines.append(f"| {m.storage} | {m.n_finished:,} | {m.skipped} | | |")
        else:
            lines.append(
                f"| {m.storage} | {m.n_finished:,} | {m.ms_median:,.1f} | {m.tell_ms_median:,.1f} | {m.fill_s:,.1f} |"
            )
    return "\n".join(lines)


def driver_cost_s(m: Measurement) -> float:
    """Seconds the driver spends on one trial in Optuna: one suggestion when it starts, one tell at its end."""
    return (m.ms_median + m.tell_ms_median) / 1e3


def _count(x: float) -> str:
    return f"~{x:,.0f}" if x < 10_000 else "over 10,000"


def recommendation(results: Sequence[Measurement], sizes: Sequence[int], storage_size: int) -> str:
    """What to pick for a large sweep, and how many concurrent trials Optuna's cost allows.

    A multi-objective ``OptunaSearch`` ignores per-epoch reports, so Optuna costs the driver one
    suggestion per trial start and one ``tell`` per trial end: with ``c`` seconds per trial and trials
    lasting ``T`` seconds, the driver keeps at most about ``T / c`` trials running (Optuna alone; Ray
    Tune's own bookkeeping and the Parquet rewrites come on top).
    """
    largest = max(sizes)
    lines = [
        f"At {largest:,} finished trials, in memory: Optuna's cost per trial (suggest + tell), and T / c"
    ]
    for m in sorted(results, key=lambda m: m.sampler):
        if m.storage != "memory" or m.n_finished != largest:
            continue
        if m.skipped:
            lines.append(f"  {m.sampler}: {m.skipped}")
            continue
        c = driver_cost_s(m)
        lines.append(
            f"  {m.sampler}: {1e3 * c:,.1f} ms -> {_count(20 / c)} concurrent 20 s trials, "
            f"{_count(1800 / c)} concurrent 30 min trials"
        )
    by_storage = {m.storage: m for m in results if m.sampler == "tpe" and m.n_finished == storage_size}
    memory, sqlite = by_storage.get("memory"), by_storage.get("sqlite")
    if memory and sqlite and not memory.skipped and not sqlite.skipped:
        c = driver_cost_s(sqlite)
        lines.append(
            f"tpe at {storage_size:,} trials on SQLite (fairsearch's default): {1e3 * c:,.0f} ms per trial, "
            f"{sqlite.ms_median / memory.ms_median:,.1f}x the in-memory suggestion -> {_count(20 / c)} "
            f"concurrent 20 s trials, {_count(1800 / c)} concurrent 30 min trials."
        )
    measured_gp = [m for m in results if m.sampler == "gp" and m.storage == "memory" and not m.skipped]
    gp_note = ""
    if measured_gp:
        last = max(measured_gp, key=lambda m: m.n_finished)
        gp_note = f" ({last.ms_median / 1e3:,.1f} s per suggestion at {last.n_finished:,} trials)"
    lines.append(
        "Pick tpe (multivariate, grouped, constant liar) for large sweeps: it models both objectives and "
        "costs little next to a GPU trial; nsgaii costs almost nothing at any size; gp only for budgets of "
        f"a few hundred trials{gp_note}; random as the baseline. Keep the Optuna storage close to the "
        "driver (SQLite on the head's local disk, or a PostgreSQL server near it)."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs every measurement, prints the tables and the recommendation; ``--json`` saves the raw cells."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="finished trials")
    parser.add_argument("--samplers", nargs="+", default=list(DEFAULT_SAMPLERS), choices=DEFAULT_SAMPLERS)
    parser.add_argument("--repeats", type=int, default=7, help="suggestions timed per cell (at most)")
    parser.add_argument(
        "--running", type=int, default=8, help="RUNNING trials in the study (trials in flight)"
    )
    parser.add_argument("--cap-s", type=float, default=45.0, help="wall-clock cap per cell, seconds")
    parser.add_argument(
        "--storage-size", type=int, default=1000, help="study size for the storage variants; 0: none"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    args = parser.parse_args(argv)

    print(
        f"samplers from fairsearch.search.sweep.make_sampler; optuna {_optuna_version()}; {os.cpu_count()} CPUs",
        flush=True,
    )

    def cell(sampler: str, n: int, storage: str, cap_s: float = args.cap_s) -> Measurement:
        return measure_capped(
            sampler, n, storage, repeats=args.repeats, n_running=args.running, cap_s=cap_s, seed=args.seed
        )

    results: list[Measurement] = []
    for sampler in args.samplers:
        previous: Measurement | None = None
        for n in sorted(args.sizes):
            if previous is not None and previous.skipped is not None:
                reason = f"not run: {previous.skipped} already at {previous.n_finished:,} finished trials"
                m = Measurement(sampler, n, "memory", skipped=reason)
            else:
                m = cell(sampler, n, "memory")
            results.append(m)
            previous = m
            _progress(m)
    if args.storage_size > 0:
        for storage in ("sqlite", "journal"):
            m = cell("tpe", args.storage_size, storage, cap_s=args.cap_s * 2)
            results.append(m)
            _progress(m)
        if not any(
            r.sampler == "tpe" and r.storage == "memory" and r.n_finished == args.storage_size
            for r in results
        ):
            m = cell("tpe", args.storage_size, "memory")
            results.append(m)

    print(f"\nms per suggestion (median of up to {args.repeats}; ask + define-by-run; in-memory storage)\n")
    print(format_table(results, sorted(args.sizes), args.samplers))
    storage_table = format_storage_table(results, args.storage_size)
    if storage_table:
        print("\n" + storage_table)
    print("\n" + recommendation(results, args.sizes, args.storage_size))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(m) for m in results], indent=2))
    return 0


def _optuna_version() -> str:
    import optuna

    return optuna.__version__


def _progress(m: Measurement) -> None:
    if m.skipped:
        print(f"  {m.sampler:>7} n={m.n_finished:>5} {m.storage:>7}: {m.skipped}", flush=True)
    else:
        print(
            f"  {m.sampler:>7} n={m.n_finished:>5} {m.storage:>7}: {m.ms_median:9.1f} ms/suggestion "
            f"(max {m.ms_max:.1f}, {m.repeats} timed; fill {m.fill_s:.1f} s; tell {m.tell_ms_median:.1f} ms)",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
