"""Does a real sweep find a fairer model? ``search_spaces/literature.yaml`` (every method, their parameters,
weight decay and the last-layer refit searched, the front confirmed with more seeds) run as a user runs it,
once per sampler seed, each judged against the sweep's own thresholded vanilla on the same test images.

``fair_methods.py`` trains each method at the literature's settings; here the settings are searched. Each
sweep is ``fairsearch run`` on the same synthetic set as ``fair_methods.py`` (test split enlarged fourfold:
over 400 minority test images), with the space's sampler seed set to the seed. Then, on validation only:

- the comparator is ``fair_methods.py``'s: vanilla at the literature's settings, trained with the seed
  as its training seed (outside the sweep, which may sample no vanilla trial), at its single threshold
  chosen on validation (``fair_methods.single_threshold``: the highest worst-group accuracy within 1
  point of its accuracy); with ``--out`` the folder of a ``fair_methods.py`` run, its trials are reused;
- the candidates are the models that need no group at inference: every completed trial as trained, and
  every trial with its last layer refitted (``7@refit``; its validation figures are those of the half of
  validation it was chosen on);
- the chosen model is the candidate of the highest worst-group validation accuracy among those whose
  validation accuracy is at most 1 point below the comparator's; and per method, the same rule among
  that method's trials (as trained, and refitted).

Each chosen model is compared with the comparator on the same test images by ``fairsearch compare``'s
paired intervals (:func:`fairsearch.judge.paired.paired_comparison`), against the issue's target: worst group ≥ 3
points above at ≤ 1 point lower accuracy, the interval above 0, no group clearly lower. Where the chosen
trial is on the sweep's confirmed front (a refitted one: on its confirmed refit front), its mean test
figures over its seeds are given too.

    .venv/bin/python benchmarks/fair_sweeps.py --out /tmp/fair_methods    # seeds 0-4, beside fair_methods
    .venv/bin/python benchmarks/fair_sweeps.py --out /tmp/fair_sweeps --seeds 0 --trials 8
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fair_methods import _meets_target, data_folder, decisions, single_threshold, train

from fairsearch.judge.paired import PairedDifference, paired_comparison
from fairsearch.judge.refit import refit_last_layer
from fairsearch.judge.thresholds import TrialScores
from fairsearch.output.fronts import CONFIRMED_FRONT, CONFIRMED_REFIT_FRONT
from fairsearch.output.refit_fronts import refit_rows
from fairsearch.output.results import completed_trials, read_front, read_results
from fairsearch.output.tables import aligned_rows
from fairsearch.train.checkpoint import read_features_at, read_scores_at

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "search_spaces" / "literature.yaml"
logger = logging.getLogger("fair_sweeps")


@dataclass(frozen=True)
class Candidate:
    """A model of a sweep that needs no group at inference, with its validation figures."""

    spec: str  # as compare names it: ``7`` or ``7@refit``
    method: str
    val_acc: float
    val_worst: float
    checkpoint: str

    def test_decisions(self) -> tuple[np.ndarray, TrialScores]:
        """Its 0/1 test decisions (a refit head fitted again: the refit is deterministic, so it is the
        head whose validation figures the candidate holds), and the trial's scores."""
        scores = _scores(self.checkpoint)
        if not self.spec.endswith("@refit"):
            return decisions(scores), scores
        features = read_features_at(self.checkpoint)
        if features is None:
            raise SystemExit(f"{self.checkpoint}: no features to refit")
        val = scores.val
        refit = refit_last_layer(features["val_features"], val.label, val.group, features["test_features"])
        return (refit.test_prob >= 0.5).astype(np.int64), scores


def run_sweep(seed: int, args: argparse.Namespace, data: Path) -> Path:
    """``fairsearch run`` of the literature space with sampler seed ``seed``; its results folder."""
    space = yaml.safe_load(SPACE.read_text())
    name = f"literature-s{seed}-t{args.trials}"
    space["name"] = name
    space["trials"] = args.trials
    space["sampler"] = {**space.get("sampler", {}), "seed": seed}
    space["fixed"] = {**space["fixed"], "data": str(data)}
    space["confirm"] = {**space.get("confirm", {}), "max_trials": args.confirm_trials}
    results = args.out / "results"
    folder = results / name
    if (folder / "pareto.parquet").exists() and "confirmed" in set(
        pd.read_parquet(folder / "pareto.parquet")["front"]
    ):
        return folder  # done in an earlier run of the benchmark
    path = args.out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    fairsearch = Path(sys.executable).with_name("fairsearch")
    started = time.monotonic()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    with open(args.out / f"{name}.log", "w") as log:
        subprocess.run(
            [str(fairsearch), "run", "--space", str(path), "--results", str(results)],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=args.out,
        )
    logger.info("seed %d: sweep of %d trials in %.0f s", seed, args.trials, time.monotonic() - started)
    return folder


def candidates(trials: pd.DataFrame) -> list[Candidate]:
    """Every completed trial as trained, and with its last layer refitted where it kept its features
    (validation figures of the refit's selection half, as its ``last_layer_refit`` rows give them)."""

    def of(rows: pd.DataFrame, suffix: str) -> list[Candidate]:
        return [
            Candidate(
                f"{int(row['number'])}{suffix}",
                str(row["param/method"]),
                float(row["val/acc"]),
                float(row["val/worst_group_acc"]),
                str(row["checkpoint"]),
            )
            for row in rows.to_dict("records")
        ]

    return of(trials, "") + of(refit_rows(trials), "@refit")


def _scores(checkpoint: str) -> TrialScores:
    arrays = read_scores_at(checkpoint)
    if arrays is None:
        raise SystemExit(f"{checkpoint}: no scores.npz")
    return TrialScores.from_arrays(arrays, checkpoint)


def choose(pool: list[Candidate], floor: float) -> Candidate | None:
    """The highest worst-group validation accuracy among those at or above ``floor`` (ties: the more
    accurate)."""
    eligible = [c for c in pool if c.val_acc >= floor - 1e-12]
    return max(eligible, key=lambda c: (c.val_worst, c.val_acc), default=None)


def _cell(d: PairedDifference) -> str:
    return f"{100 * d.diff:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]{'*' if d.clear else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the data, the sweeps and logs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=16, help="trials per sweep (the space has 24)")
    parser.add_argument("--confirm-trials", type=int, default=2, help="front members confirmed per sweep")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("fairsearch").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    data = data_folder(args.out)

    rows: list[list[str]] = []
    method_rows: list[list[str]] = []
    met_overall = 0
    met_by: dict[str, int] = {}
    for seed in args.seeds:
        vanilla = train("vanilla", seed, data, args.out, "tiny")
        threshold = single_threshold(vanilla)
        versus = decisions(vanilla, threshold)
        floor = float(np.mean((vanilla.val.score >= threshold) == vanilla.val.label))
        folder = run_sweep(seed, args, data)
        trials_all, front = read_results(folder)
        pool = candidates(completed_trials(trials_all))
        confirmed = front[front["front"] == CONFIRMED_FRONT] if "front" in front else front.iloc[:0]
        refits_confirmed = read_front(folder, CONFIRMED_REFIT_FRONT)
        picks = {"any method": choose(pool, floor - 0.01)}
        for method in sorted({c.method for c in pool}):
            picks[method] = choose([c for c in pool if c.method == method], floor - 0.01)
        for label, pick in picks.items():
            if pick is None:
                pool_of = pool if label == "any method" else [c for c in pool if c.method == label]
                best = max(c.val_acc for c in pool_of)
                empty = [
                    str(seed),
                    label,
                    f"none: best val acc {100 * best:.1f} < {100 * (floor - 0.01):.1f}",
                    *[""] * 6,
                ]
                (rows if label == "any method" else method_rows).append(
                    empty + ([""] if label == "any method" else [])
                )
                continue
            pred, scores = pick.test_decisions()
            if not scores.test.same_images(vanilla.test):
                raise SystemExit(f"{folder}: trial {pick.spec} was not tested on the comparator's images")
            test = vanilla.test
            diffs = paired_comparison(
                pred, versus, test.label, test.group, vanilla.group_names, n_boot=1000, seed=seed
            )
            by = {d.metric: d for d in diffs}
            met = _meets_target(by)
            row = [
                str(seed),
                label,
                f"{pick.spec} ({pick.method})",
                f"{100 * by['acc'].a:.1f}",
                f"{100 * by['worst_group_acc'].a:.1f}",
                _cell(by["acc"]),
                _cell(by["worst_group_acc"]),
                _cell(by["max_acc_gap"]),
                "yes" if met else "no",
            ]
            if label == "any method":
                number, _, variant = pick.spec.partition("@")
                seeded = {"": confirmed, "refit": refits_confirmed}.get(variant, confirmed.iloc[:0])
                member = seeded[seeded["number"] == int(number)] if len(seeded) else seeded
                seeds_cell = (
                    f"{int(member['n_seeds'].iloc[0])} seeds: acc {100 * member['test/acc'].iloc[0]:.1f}, "
                    f"worst {100 * member['test/worst_group_acc'].iloc[0]:.1f}"
                    if len(member)
                    else "not confirmed"
                )
                rows.append([*row, seeds_cell])
                met_overall += met
            else:
                method_rows.append(row)
                met_by[label] = met_by.get(label, 0) + met
    print("\nThe chosen model of each sweep against thresholded vanilla of the same seed (test, %; A − B in")
    print("points, 95 % paired intervals, * excludes 0):")
    header = ["seed", "rule", "chosen", "test acc", "worst group", "Δacc", "Δworst", "Δgap", "target"]
    print("\n".join(aligned_rows([*header, "confirmed"], rows)))
    print(f"\nTarget met by the chosen model in {met_overall} of {len(args.seeds)} sweeps.")
    print("\nThe same rule within each method's trials (as trained or refitted):")
    print("\n".join(aligned_rows(header, method_rows)))
    print("\nTarget met, per method, out of " + str(len(args.seeds)) + " sweeps:")
    for label, count in sorted(met_by.items()):
        print(f"  {label}: {count}")


if __name__ == "__main__":
    main()
