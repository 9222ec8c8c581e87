"""MO-ASHA on replayed learning curves, beside Syne Tune's MOASHA, ASHA on accuracy and two baselines.

Run from the repository root (seconds; Syne Tune from the ``bench`` extra: ``pip install -e '.[bench]'``)::

    .venv/bin/python benchmarks/replay.py
    .venv/bin/python benchmarks/replay.py --record benchmarks/data/curves.parquet --seeds 0-49 --workers 4 \\
        --out /tmp/replay      # also the mean curves (CSV) and a figure (PNG)

Every scheduler replays the same recorded curves (``record_curves.py``) with the same seeds, so each
seed's trial order and report times are shared by all (``curve_replay.simulate``):

=====================  =========================================================================
no stopping            Ray Tune's ``FIFOScheduler``: every trial to its full budget
fairsearch MO-ASHA     :class:`fairsearch.search.scheduler.MOASHAScheduler` as ``scheduler_from_settings``
                       builds it from ``--mo-asha`` (default: the block of
                       ``search_spaces/all_methods.yaml``; unset keys take the module's defaults)
Syne Tune MOASHA       ``syne_tune...MOASHA`` (0.16), its own class with the same rungs
                       (``grace_period``, ``reduction_factor``, ``max_t``), driven as Syne Tune's
                       ``Tuner`` drives it; every objective minimised (accuracy negated)
Ray ASHA (accuracy)    Ray Tune's ``ASHAScheduler`` on validation accuracy alone, the same rungs
random stopping        at each of MO-ASHA's rungs a trial stops with the probability that spends,
                       on average, the epochs MO-ASHA spent on the same replays
=====================  =========================================================================

Columns: ``epochs`` spent in all, as a share of every trial trained fully; ``HV`` the final hypervolume
over the full-budget front's; ``to 95 %`` / ``to 99 %`` the epochs spent (share of full) when the
hypervolume first reached that share of the full-budget front's (a seed that never did counts as
1.0, every trial trained fully; ``never`` says how many), and the simulated minutes then (over the
seeds that got there); ``wall min`` simulated minutes until the last trial ended; ``stopped`` trials
stopped early; ``front cut`` the share of the full-budget front's distinct points lost, every trial
that ends on one stopped early (the chance that a front member was cut). Each cell is the mean over
seeds with its 95 % t-interval.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from curve_replay import (  # the sibling module, found through the path set above
    TIME_ATTR,
    Curves,
    RandomStopScheduler,
    RayDriver,
    Replay,
    SchedulerDriver,
    mean_interval,
    replay_seeds,
    stop_probability_for,
)

logger = logging.getLogger("replay")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECORD = ROOT / "benchmarks" / "data" / "curves.parquet"
SHIPPED_SPACE = ROOT / "search_spaces" / "all_methods.yaml"
SHARES = (0.95, 0.99)


def shipped_mo_asha() -> dict[str, Any]:
    """The ``scheduler:`` block of the shipped space that turns MO-ASHA on."""
    from fairsearch.spec.space import load_space

    block = load_space(SHIPPED_SPACE).scheduler
    if not block:
        raise SystemExit(f"{SHIPPED_SPACE} has no scheduler block")
    return dict(block)


class SyneDriver:
    """Drives Syne Tune's ``MOASHA`` as Syne Tune's ``Tuner`` does (``syne_tune/tuner.py``, 0.16).

    ``on_trial_add`` when a trial starts, ``on_trial_result`` for every result; when it answers ``STOP``
    the tuner calls ``on_trial_remove``, and ``on_trial_complete`` only for a trial that finished
    without being stopped. Syne Tune minimises every objective (``do_minimize``): maximised ones are
    negated.
    """

    def __init__(self, scheduler: Any) -> None:
        from syne_tune.backend.trial_status import Trial
        from syne_tune.optimizer.scheduler import SchedulerDecision

        from fairsearch.spec.config import OBJECTIVES

        self.scheduler = scheduler
        self._trial_type = Trial
        self._stop = SchedulerDecision.STOP
        self._signs = {o.key: (1.0 if o.direction == "min" else -1.0) for o in OBJECTIVES}
        self._trials: dict[str, Any] = {}
        self._stopped: set[str] = set()

    @staticmethod
    def metric_names() -> list[str]:
        """Syne Tune's names of fairsearch's objectives, all minimised (``neg_acc``, ``max_acc_gap``)."""
        from fairsearch.spec.config import OBJECTIVES

        return [o.key if o.direction == "min" else f"neg_{o.key}" for o in OBJECTIVES]

    def _minimised(self, result: Mapping[str, Any]) -> dict[str, Any]:
        values = [self._signs[key] * float(result[key]) for key in self._signs]
        return {TIME_ATTR: result[TIME_ATTR], **dict(zip(self.metric_names(), values, strict=True))}

    def add(self, trial_id: str) -> None:
        trial = self._trial_type(trial_id=trial_id, config={}, creation_time=datetime.datetime.now())
        self._trials[trial_id] = trial
        self.scheduler.on_trial_add(trial)

    def result(self, trial_id: str, result: dict[str, Any]) -> bool:
        decision = self.scheduler.on_trial_result(self._trials[trial_id], self._minimised(result))
        if decision == self._stop:
            self._stopped.add(trial_id)
            return False
        return True

    def end(self, trial_id: str, result: dict[str, Any]) -> None:
        trial = self._trials.pop(trial_id)
        if trial_id in self._stopped:
            self.scheduler.on_trial_remove(trial)
        else:
            self.scheduler.on_trial_complete(trial, self._minimised(result))


def scheduler_rows(
    curves: Curves, settings: Mapping[str, Any], *, random_budget: float | None
) -> dict[str, Callable[[int], SchedulerDriver]]:
    """The schedulers compared, by row name: a fresh driver per seed.

    Args:
        curves: The record (its full budget is every scheduler's ``max_t``).
        settings: fairsearch's ``scheduler:`` block for MO-ASHA; its rungs are everyone's.
        random_budget: Epochs per trial random stopping should spend; ``None`` leaves it out.
    """
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from fairsearch.search.scheduler import scheduler_from_settings

    block = {**settings, "name": "mo_asha", "time_attr": TIME_ATTR}
    max_t = curves.max_t
    probe = scheduler_from_settings(block, max_epochs=int(max_t))
    assert probe is not None
    milestones = probe.milestones
    grace, eta = float(block.get("grace_period", 1)), float(block.get("reduction_factor", 3))

    def mo_asha(seed: int) -> SchedulerDriver:
        scheduler = scheduler_from_settings(block, max_epochs=int(max_t))
        assert scheduler is not None
        return RayDriver(scheduler)

    def syne(seed: int) -> SchedulerDriver:
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

        scheduler = MOASHA(
            config_space={},
            metrics=SyneDriver.metric_names(),
            do_minimize=True,
            time_attr=TIME_ATTR,
            max_t=max_t,
            grace_period=grace,
            reduction_factor=eta,
            random_seed=seed,
        )
        return SyneDriver(scheduler)

    def asha(seed: int) -> SchedulerDriver:
        from fairsearch.spec.config import OBJECTIVES

        first = OBJECTIVES[0]
        return RayDriver(
            ASHAScheduler(
                time_attr=TIME_ATTR,
                metric=first.key,
                mode=first.direction,
                max_t=max_t,  # type: ignore[arg-type]
                grace_period=grace,  # type: ignore[arg-type]
                reduction_factor=eta,
            )
        )

    rows: dict[str, Callable[[int], SchedulerDriver]] = {
        "no stopping": lambda seed: RayDriver(FIFOScheduler()),
        "fairsearch MO-ASHA": mo_asha,
        "Syne Tune MOASHA": syne,
        "Ray ASHA (accuracy)": asha,
    }
    if random_budget is not None:
        p = stop_probability_for(milestones, max_t, random_budget)
        rows["random stopping"] = lambda seed: RayDriver(
            RandomStopScheduler(milestones, p, np.random.default_rng(10_000 + seed))
        )
    return rows


def summary(name: str, replays: list[Replay], curves: Curves) -> dict[str, Any]:
    """One table row: means and 95 % intervals over the replays of one scheduler."""
    full = curves.full_epochs
    row: dict[str, Any] = {"scheduler": name, "seeds": len(replays)}
    row["epochs"] = mean_interval([r.total_epochs / full for r in replays])
    row["HV"] = mean_interval([r.final_hypervolume / r.full_hypervolume for r in replays])
    for share in SHARES:
        hits = [r.reach(share) for r in replays]
        label = f"to {share * 100:.0f} %"
        row[label] = mean_interval([h[0] / full if h else 1.0 for h in hits])
        row[f"{label} min"] = mean_interval([h[1] / 60 for h in hits if h])
        row[f"{label} never"] = sum(h is None for h in hits)
    row["wall min"] = mean_interval([r.wall_seconds / 60 for r in replays])
    row["stopped"] = mean_interval([float(r.stopped.sum()) for r in replays])
    row["front cut"] = mean_interval([r.front_stopped_share for r in replays])
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table (``mean [low, high]`` per cell)."""

    def cell(value: Any, digits: int) -> str:
        if isinstance(value, tuple):
            mean, low, high = value
            return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
        return str(value)

    columns = [
        ("scheduler", "scheduler", 0),
        ("epochs", "epochs", 3),
        ("HV", "HV", 3),
        ("to 95 %", "to 95 %", 3),
        ("to 95 % never", "never", 0),
        ("to 95 % min", "min to 95 %", 1),
        ("to 99 %", "to 99 %", 3),
        ("to 99 % never", "never", 0),
        ("wall min", "wall min", 1),
        ("stopped", "stopped", 1),
        ("front cut", "front cut", 3),
    ]
    table = [[title for _, title, _ in columns]]
    table += [[cell(row[key], digits) for key, _, digits in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = [
        "  ".join(
            text.ljust(w) if i == 0 else text.rjust(w)
            for i, (text, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def mean_curves(results: Mapping[str, list[Replay]], curves: Curves, points: int = 101) -> pd.DataFrame:
    """Mean hypervolume share against epochs share on a grid, one column per scheduler."""
    grid = np.linspace(0.0, 1.0, points)
    frame = pd.DataFrame({"epochs_share": grid})
    for name, replays in results.items():
        values = []
        for r in replays:
            at = np.searchsorted(r.epochs / curves.full_epochs, grid, side="right") - 1
            hv = np.where(at >= 0, r.hypervolume[np.clip(at, 0, None)], 0.0) / r.full_hypervolume
            values.append(hv)
        frame[name] = np.mean(values, axis=0)
    return frame


def parse_seeds(text: str) -> list[int]:
    """``0-49`` or ``0,3,7`` (or both mixed) as a list of integers (seeds, trial numbers)."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", type=Path, default=DEFAULT_RECORD, help="the curves (record_curves.py)")
    parser.add_argument("--seeds", default="0-49", help="replay seeds: trial order and report-time noise")
    parser.add_argument("--workers", type=int, default=4, help="trials running at once")
    parser.add_argument("--trials", help="replay only these trial numbers of the record, e.g. 50-99")
    parser.add_argument(
        "--mo-asha",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="fairsearch MO-ASHA settings over the shipped space's block, e.g. grace_period=0.5",
    )
    parser.add_argument("--out", type=Path, help="folder for mean_curves.csv, replays.csv and curves.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import yaml

    settings = shipped_mo_asha()
    for item in args.mo_asha:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    record = pd.read_parquet(args.record)
    if args.trials:
        record = record[record["trial"].isin(parse_seeds(args.trials))]
    curves = Curves.from_record(record)
    seeds = parse_seeds(args.seeds)
    print(
        f"{curves.n_trials} trials × {len(curves.budget)} reports (full budget {curves.max_t:g} epochs), "
        f"{len(seeds)} seeds, {args.workers} workers; full-budget front: "
        f"{int(curves.front_members.sum())} trials, hypervolume {curves.full_hypervolume:.4f}"
    )
    print(f"MO-ASHA settings: {settings}")

    rows = scheduler_rows(curves, settings, random_budget=None)
    results = {name: replay_seeds(curves, make, seeds, workers=args.workers) for name, make in rows.items()}
    budget = float(np.mean([r.total_epochs for r in results["fairsearch MO-ASHA"]])) / curves.n_trials
    random_row = scheduler_rows(curves, settings, random_budget=budget)["random stopping"]
    results["random stopping"] = replay_seeds(curves, random_row, seeds, workers=args.workers)
    table = [summary(name, replays, curves) for name, replays in results.items()]
    print(format_table(table))

    ours, syne = results["fairsearch MO-ASHA"], results["Syne Tune MOASHA"]
    full = curves.full_epochs
    diff = [
        ((a.reach(0.95) or (full,))[0] - (b.reach(0.95) or (full,))[0]) / full
        for a, b in zip(ours, syne, strict=True)
    ]
    mean, low, high = mean_interval(diff)
    print(f"paired, epochs to 95 %: fairsearch − Syne Tune = {mean:+.3f} [{low:+.3f}, {high:+.3f}] of full")

    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        frame = mean_curves(results, curves)
        frame.to_csv(args.out / "mean_curves.csv", index=False)
        pd.DataFrame(table).to_csv(args.out / "table.csv", index=False)
        plot_curves(frame, args.out / "curves.png")
        print(f"mean curves, table and figure in {args.out}")
    return 0


def plot_curves(frame: pd.DataFrame, path: Path) -> None:
    """Mean hypervolume share against epochs share, one line per scheduler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in frame.columns[1:]:
        ax.plot(frame["epochs_share"], frame[name], label=name)
    for share in SHARES:
        ax.axhline(share, color="grey", lw=0.5, ls=":")
    ax.axvline(1 / 3, color="grey", lw=0.5, ls="--")
    ax.set_xlabel("epochs spent / every trial to the full budget")
    ax.set_ylabel("hypervolume / full-budget front's")
    ax.set_ylim(0.5, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
