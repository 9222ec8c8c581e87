"""Do constraints steer the sampler? Feasible trials proposed with and without them, on recorded trials.

A sweep with ``constraints:`` gives Optuna each finished trial's constraint values
(:class:`fairsearch.search.tune_trials.ConstraintValues`), which TPE and GP use to propose configurations that
meet them. Training a trial per proposal costs minutes, so this benchmark answers each proposal with the
nearest of the 100 trials recorded in ``benchmarks/data/curves.parquet`` (the same method; nearest in
log learning rate, log2 rank and, where the method has them, log λ and w_max, each scaled by its range):
their final validation metrics stand in for training. Each arm uses the sampler exactly as a sweep builds
it (:func:`fairsearch.search.sweep.make_sampler`), the space of ``benchmarks/spaces/curves.yaml`` through its
define-by-run function, and the same sampler seed; the arms differ only in whether the constraint values
are given. Per seed: how many of the proposals after the first ``--startup`` (the sampler's random start)
meet every constraint, and the most accurate feasible trial found. Means over seeds with 95 %
t-intervals, and the paired difference (with − without).

    .venv/bin/python benchmarks/constrained_search.py                      # TPE, 10 seeds, ~1 min
    .venv/bin/python benchmarks/constrained_search.py --samplers tpe gp --seeds 10 --trials 40

The surrogate is coarse (100 points; nearest-neighbour answers are piecewise constant), so the figures
say whether the constraint values reach and move the sampler, not how much a real sweep gains.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
from scipy import stats

from fairsearch.methods import METHODS
from fairsearch.search.sweep import make_sampler
from fairsearch.search.tune_trials import ConstraintValues
from fairsearch.spec.config import Constraint, is_feasible, objective_directions, objective_keys
from fairsearch.spec.space import OPTUNA_NUMBER, load_space

HERE = Path(__file__).parent
RECORD = HERE / "data" / "curves.parquet"
SPACE = HERE / "spaces" / "curves.yaml"
CONSTRAINTS = (Constraint("max_acc_gap", 0.10, "max"), Constraint("worst_group_acc", 0.70, "min"))
"""Met by about one recorded trial in five (printed): a requirement a sweep must search for."""


class Surrogate:
    """The recorded trials' final validation metrics, answered for the nearest recorded configuration."""

    def __init__(self, record: pd.DataFrame) -> None:
        last = record.sort_values("report").groupby("trial").tail(1).reset_index(drop=True)
        self.trials = last
        self.features = {
            "lr": np.log(last["lr"].to_numpy(float)),
            "lora_rank": np.log2(last["lora_rank"].to_numpy(float)),
            "lam": np.log(np.where(last["lam"].to_numpy(float) > 0, last["lam"].to_numpy(float), np.nan)),
            "w_max": last["w_max"].to_numpy(float),
        }
        self.scale = {k: float(np.nanmax(v) - np.nanmin(v)) or 1.0 for k, v in self.features.items()}

    def metrics(self, params: dict) -> dict[str, float]:
        """The final metrics of the recorded trial of the same method nearest to ``params``."""
        method = params["method"]
        names = ("lr", "lora_rank", *METHODS[method].parameter_names)
        point = {
            "lr": math.log(params["lr"]),
            "lora_rank": math.log2(params["lora_rank"]),
            "lam": math.log(params["lam"]) if "lam" in params else 0.0,
            "w_max": params.get("w_max", 0.0),
        }
        same = (self.trials["method"] == method).to_numpy()
        with np.errstate(invalid="ignore"):  # other methods' rows lack λ or w_max: they are not chosen
            distance = sum(((self.features[k] - point[k]) / self.scale[k]) ** 2 for k in names)
        row = self.trials.iloc[int(np.argmin(np.where(same, distance, np.inf)))]
        return {k: float(row[k]) for k in ("acc", "max_acc_gap", "worst_group_acc", "auc")}


def run_arm(surrogate: Surrogate, sampler: str, seed: int, trials: int, constrained: bool) -> list[dict]:
    """One study of ``trials`` proposals, the sampler given the constraint values or not."""
    spec = load_space(SPACE)
    values = ConstraintValues(CONSTRAINTS) if constrained else None
    study = optuna.create_study(
        directions=["maximize" if d == "max" else "minimize" for d in objective_directions()],
        sampler=make_sampler(sampler, seed, values),
    )
    define = spec.define_by_run()
    rows = []
    for _ in range(trials):
        trial = study.ask()
        config = define(trial)
        sampled = {**trial.params, **(config or {})}  # the suggested values and the fixed ones
        params = {k: v for k, v in sampled.items() if k in ("method", "lr", "lora_rank", "lam", "w_max")}
        metrics = surrogate.metrics(params)
        if values is not None:
            values.record(int(sampled[OPTUNA_NUMBER]), metrics)
        study.tell(trial, [metrics[k] for k in objective_keys()])
        rows.append({**metrics, "feasible": is_feasible(CONSTRAINTS, metrics)})
    return rows


def mean_interval(values: list[float]) -> str:
    """``mean [low, high]`` of a 95 % t-interval, in the values' own units."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return f"{x.mean():.2f}" if x.size else "-"
    half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return f"{x.mean():.2f} [{x.mean() - half:.2f}, {x.mean() + half:.2f}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samplers", nargs="+", default=["tpe"], choices=["tpe", "gp", "nsgaii"])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--startup", type=int, default=10, help="proposals not counted (the random start)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("fairsearch").setLevel(logging.WARNING)
    surrogate = Surrogate(pd.read_parquet(RECORD))
    met = int(sum(is_feasible(CONSTRAINTS, r) for _, r in surrogate.trials.iterrows()))
    print(
        f"constraints {', '.join(c.label for c in CONSTRAINTS)}: met by {met} of {len(surrogate.trials)} recorded "
        f"trials; {args.trials} proposals per study, the first {args.startup} not counted; {args.seeds} seeds"
    )
    for sampler in args.samplers:
        counts: dict[bool, list[float]] = {True: [], False: []}
        best: dict[bool, list[float]] = {True: [], False: []}
        for seed in range(args.seeds):
            for constrained in (False, True):
                rows = run_arm(surrogate, sampler, seed, args.trials, constrained)
                counted = rows[args.startup :]
                counts[constrained].append(sum(r["feasible"] for r in counted))
                feasible_acc = [r["acc"] for r in rows if r["feasible"]]
                best[constrained].append(max(feasible_acc) if feasible_acc else math.nan)
        diff = [a - b for a, b in zip(counts[True], counts[False], strict=True)]
        print(
            f"\n{sampler}: feasible proposals of {args.trials - args.startup} (mean [95 % t-interval] over seeds)"
        )
        print(f"  without constraint values  {mean_interval(counts[False])}")
        print(f"  with constraint values     {mean_interval(counts[True])}")
        print(f"  paired difference          {mean_interval(diff)}")
        print(
            f"  best feasible accuracy: without {mean_interval(best[False])}, with {mean_interval(best[True])} "
            f"(seeds with none: {sum(math.isnan(b) for b in best[False])} / {sum(math.isnan(b) for b in best[True])})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
