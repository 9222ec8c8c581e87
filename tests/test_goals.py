"""Objectives from a list and constraints: the space file, the results files (3-D fronts and hypervolume
against brute force), the sampler's constraint values, and MO-ASHA's feasible-first rule."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from fairsearch.errors import FairsearchError
from fairsearch.judge.pareto import hypervolume
from fairsearch.output.results import (
    FEASIBLE_FRONT,
    SEARCH_FRONT,
    TrialRecord,
    read_front,
    read_results,
    read_sweep_goals,
    write_results,
)
from fairsearch.output.tables import constraint_lines, format_front
from fairsearch.search.scheduler import MOASHAScheduler, scheduler_from_settings
from fairsearch.spec.config import METRICS, OBJECTIVES, Constraint, is_feasible, objectives_named
from fairsearch.spec.space import parse_space

THREE = objectives_named(["acc", "worst_group_acc", "max_acc_gap"])


# ------------------------------------------------------------------------------------------ space file
def test_objectives_lists_give_the_sweep_its_objectives_in_order() -> None:
    spec = parse_space(
        {
            "objectives": {
                "group_by": "race",
                "maximize": ["acc", "worst_group_acc"],
                "minimize": ["max_acc_gap"],
            }
        }
    )
    assert [o.key for o in spec.objectives] == ["acc", "worst_group_acc", "max_acc_gap"]
    assert [o.direction for o in spec.objectives] == ["max", "max", "min"]
    assert spec.group_by == "race"
    # one list left out is the default's
    spec = parse_space({"objectives": {"maximize": ["worst_group_acc"]}})
    assert [o.key for o in spec.objectives] == ["worst_group_acc", "max_acc_gap"]
    assert parse_space({}).objectives == OBJECTIVES and parse_space({}).constraints == ()


def test_a_changed_objective_list_is_another_space() -> None:
    a = parse_space({"objectives": {"maximize": ["acc"], "minimize": ["max_acc_gap"]}})
    b = parse_space({"objectives": {"maximize": ["acc", "auc"], "minimize": ["max_acc_gap"]}})
    assert a.digest != b.digest


@pytest.mark.parametrize(
    ("objectives", "message"),
    [
        (
            {"minimize": ["acc"]},
            r"objectives.minimize: 'acc' is maximized, not minimized; allowed: \['max_acc_gap'\]",
        ),
        ({"maximize": ["max_acc_gap"]}, r"objectives.maximize: 'max_acc_gap' is minimized, not maximized"),
        ({"maximize": ["f1"]}, r"objectives.maximize: 'f1' is not a metric; allowed: \['acc', 'auc'"),
        ({"maximize": ["acc", "acc"]}, r"objectives.maximize: 'acc' is named twice"),
        (
            {"maximize": ["acc"], "minimize": []},
            r"objectives: \['acc'\] are 1 objective\(s\); a sweep has 2 or 3",
        ),
        (
            {"maximize": ["acc", "auc", "es_auc"], "minimize": ["max_acc_gap"]},
            r"are 4 objective\(s\); a sweep has 2 or 3",
        ),
        ({"maximize": {"acc": 1}}, r"objectives.maximize: .* must be a list of metrics"),
    ],
)
def test_bad_objective_lists_are_refused_naming_key_and_choices(objectives: dict, message: str) -> None:
    with pytest.raises(FairsearchError, match=message):
        parse_space({"objectives": objectives})


def test_constraints_bound_a_metric_on_its_bad_side_or_the_side_named() -> None:
    spec = parse_space(
        {
            "constraints": {
                "max_acc_gap": 0.02,
                "worst_group_acc": {"min": 0.7},
                "acc": 0.8,
                "auc": {"max": 0.99},
            }
        }
    )
    assert spec.constraints == (
        Constraint("max_acc_gap", 0.02, "max"),
        Constraint("worst_group_acc", 0.7, "min"),
        Constraint("acc", 0.8, "min"),
        Constraint("auc", 0.99, "max"),
    )


def test_a_two_sided_constraint_that_some_value_meets_is_kept() -> None:
    spec = parse_space(
        {"constraints": {"acc": {"min": 0.6, "max": 0.95}, "worst_group_acc": {"min": 0.5, "max": 0.5}}}
    )
    assert spec.constraints == (
        Constraint("acc", 0.6, "min"),
        Constraint("acc", 0.95, "max"),
        Constraint("worst_group_acc", 0.5, "min"),
        Constraint("worst_group_acc", 0.5, "max"),
    )


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        ({"max_gap": 0.02}, r"constraints.max_gap: unknown metric; allowed: \['acc'"),
        ({"max_acc_gap": 2}, r"constraints.max_acc_gap: 2 must be a fraction from 0 to 1"),
        ({"max_acc_gap": "2%"}, r"constraints.max_acc_gap: '2%' must be a fraction"),
        ({"max_acc_gap": True}, r"constraints.max_acc_gap: True must be a fraction"),
        ({"acc": {"least": 0.5}}, r"constraints.acc.least: unknown key; allowed are \['min', 'max'\]"),
        ({"acc": {}}, r"constraints.acc: \{\} names no bound"),
        ({"acc": {"min": -0.1}}, r"constraints.acc.min: -0.1 must be a fraction"),
        (
            {"acc": {"min": 0.9, "max": 0.8}},
            r"^<space>: constraints.acc: min 0.9 is above max 0.8, so no value",
        ),
        (
            {"max_acc_gap": {"min": 0.01}},
            r"^<space>: constraints.max_acc_gap.min: MaxAccGap is minimised, so a",
        ),
        ([0.02], r"constraints: \[0.02\] must be a mapping of metrics to bounds"),
        ({}, r"constraints: \{\} must be a mapping of metrics to bounds"),
    ],
)
def test_bad_constraints_are_refused_naming_key_and_choices(constraints: object, message: str) -> None:
    with pytest.raises(FairsearchError, match=message):
        parse_space({"constraints": constraints})


def test_a_constraint_is_met_on_its_side_and_never_by_a_missing_value() -> None:
    gap = Constraint("max_acc_gap", 0.05, "max")
    floor = Constraint("worst_group_acc", 0.7, "min")
    assert gap.violation(0.03) == pytest.approx(-0.02) and gap.violation(0.08) == pytest.approx(0.03)
    assert floor.violation(0.75) == pytest.approx(-0.05) and floor.violation(0.6) == pytest.approx(0.1)
    assert gap.violation(0.05) == 0  # on the bound: met
    for missing in (None, float("nan"), float("inf")):
        assert gap.violation(missing) == 1.0 and floor.violation(missing) == 1.0
    assert is_feasible((gap, floor), {"max_acc_gap": 0.01, "worst_group_acc": 0.9})
    assert not is_feasible((gap, floor), {"max_acc_gap": 0.01})
    assert gap.label == "MaxAccGap <= 5.0 %" and floor.label == "worst-group accuracy >= 70.0 %"


# ------------------------------------------------------------------------------------------ results files
def _records(points: np.ndarray, statuses: list[str] | None = None) -> list[TrialRecord]:
    statuses = statuses or ["completed"] * len(points)
    return [
        TrialRecord(
            trial_id=f"t{i:03d}",
            number=i,
            status=status,
            params={"method": "vanilla" if i % 2 else "hybrid"},
            val_metrics={"acc": float(a), "worst_group_acc": float(w), "max_acc_gap": float(g), "auc": 0.8},
            epochs_done=1.0,
        )
        for i, ((a, w, g), status) in enumerate(zip(points, statuses, strict=True))
    ]


def _dominates(a: np.ndarray, b: np.ndarray, directions: list[str]) -> bool:
    better_or_equal = all(
        (x >= y) if d == "max" else (x <= y) for x, y, d in zip(a, b, directions, strict=True)
    )
    return better_or_equal and any(x != y for x, y in zip(a, b, strict=True))


def _brute_front(points: np.ndarray, directions: list[str]) -> set[int]:
    return {
        i
        for i in range(len(points))
        if not any(_dominates(points[j], points[i], directions) for j in range(len(points)))
    }


def _brute_hypervolume(points: np.ndarray, directions: list[str], reference: list[float]) -> float:
    """The union of the boxes between each point and the reference, cut into the cells of the grid of
    every coordinate: a cell counts when some point dominates its far corner."""
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    losses, ref = points * sign, np.array(reference) * sign
    losses = losses[np.all(losses <= ref, axis=1)]
    axes = [np.unique(np.append(losses[:, k], ref[k])) for k in range(points.shape[1])]
    total = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        low = np.array([axes[k][c] for k, c in enumerate(cell)])
        high = np.array([axes[k][c + 1] for k, c in enumerate(cell)])
        if np.any(np.all(losses <= low, axis=1)):
            total += float(np.prod(high - low))
    return total


@pytest.mark.parametrize("seed", range(4))
def test_three_objective_front_and_hypervolume_match_brute_force(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 30
    # a coarse grid: ties and duplicates happen, as with accuracies over a few hundred images
    points = np.round(rng.uniform([0.5, 0.2, 0.0], [0.95, 0.9, 0.4], size=(n, 3)), 2)
    points[5] = points[3]
    write_results(tmp_path, _records(points), {}, THREE)
    _trials, front = read_results(tmp_path)
    directions = ["max", "max", "min"]
    assert set(front["number"]) == _brute_front(points, directions)
    expected = _brute_hypervolume(points, directions, [0.0, 0.0, 1.0])
    assert front["hypervolume"].iloc[0] == pytest.approx(expected, rel=1e-12)
    assert hypervolume(points, directions, [0.0, 0.0, 1.0]) == pytest.approx(expected, rel=1e-12)
    assert read_sweep_goals(tmp_path) == (THREE, ())
    # the 2-D projection is not the front: some 3-D member is dominated on (acc, gap) alone
    two = _brute_front(points[:, [0, 2]], ["max", "min"])
    assert two < set(front["number"])


def test_feasible_column_and_front_are_the_brute_force_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    points = np.round(rng.uniform([0.5, 0.2, 0.0], [0.95, 0.9, 0.3], size=(40, 3)), 2)
    statuses = ["completed"] * 36 + ["running", "failed", "pending", "completed"]
    constraints = (Constraint("max_acc_gap", 0.1, "max"), Constraint("worst_group_acc", 0.5, "min"))
    write_results(tmp_path, _records(points, statuses), {}, OBJECTIVES, constraints)
    trials, search = read_results(tmp_path)
    done = np.array([s == "completed" for s in statuses])
    meets = (points[:, 2] <= 0.1) & (points[:, 1] >= 0.5)
    assert trials.loc[done, "feasible"].tolist() == meets[done].tolist()
    assert trials.loc[~done, "feasible"].isna().all()
    # the search's front spans every completed trial and marks each member
    acc_gap = points[:, [0, 2]]
    completed = np.flatnonzero(done)
    assert set(search["number"]) == {int(completed[i]) for i in _brute_front(acc_gap[done], ["max", "min"])}
    assert search["feasible"].tolist() == [bool(meets[n]) for n in search["number"]]
    # the feasible front: non-dominated among the completed trials that meet both
    pool = np.flatnonzero(done & meets)
    feasible = read_front(tmp_path, FEASIBLE_FRONT)
    assert set(feasible["number"]) == {int(pool[i]) for i in _brute_front(acc_gap[pool], ["max", "min"])}
    assert feasible["feasible"].all() and (feasible["front"] == FEASIBLE_FRONT).all()
    assert read_sweep_goals(tmp_path) == (OBJECTIVES, constraints)
    table = format_front(search, OBJECTIVES)
    assert "meets" in table.splitlines()[1] and " no " in table and " yes " in table


def test_a_constraint_no_trial_meets_is_said_with_its_nearest_miss(tmp_path: Path) -> None:
    points = np.array([[0.9, 0.6, 0.12], [0.8, 0.7, 0.05], [0.85, 0.65, 0.2]])
    constraints = (Constraint("max_acc_gap", 0.02, "max"), Constraint("acc", 0.5, "min"))
    write_results(tmp_path, _records(points), {}, OBJECTIVES, constraints)
    trials, _ = read_results(tmp_path)
    assert read_front(tmp_path, FEASIBLE_FRONT).empty
    lines = constraint_lines(trials, constraints)
    assert lines == [
        "constraint MaxAccGap <= 2.0 %: met by 0 of 3 completed trial(s); NO trial meets it (nearest: trial #1 at 5.0 %)",
        "constraint accuracy >= 50.0 %: met by 3 of 3 completed trial(s)",
        "all constraints: met by 0 of 3 completed trial(s); the feasible front is empty",
    ]
    assert constraint_lines(trials, ()) == []


def test_results_of_unknown_objectives_are_refused_as_damaged(tmp_path: Path) -> None:
    write_results(tmp_path, _records(np.array([[0.9, 0.6, 0.1]])), {})
    import pyarrow.parquet as pq

    path = tmp_path / "trials.parquet"
    table = pq.read_table(path)
    metadata = dict(table.schema.metadata)
    metadata[b"objectives"] = json.dumps(["val/f1", "val/max_acc_gap"]).encode()
    pq.write_table(table.replace_schema_metadata(metadata), path)
    with pytest.raises(FairsearchError, match=r"trials.parquet: its metadata names objectives .* \['f1'\]"):
        read_results(tmp_path)


def test_default_sweeps_keep_their_front_and_have_no_feasible_rows(tmp_path: Path) -> None:
    points = np.array([[0.9, 0.6, 0.12], [0.8, 0.7, 0.05], [0.7, 0.6, 0.2]])
    write_results(tmp_path, _records(points), {})
    trials, front = read_results(tmp_path)
    assert "feasible" not in trials and set(front["number"]) == {0, 1}
    written = pd.read_parquet(tmp_path / "pareto.parquet")
    assert FEASIBLE_FRONT not in set(written["front"]) and SEARCH_FRONT in set(written["front"])


# ------------------------------------------------------------------------------------------ the sampler
@pytest.mark.parametrize("sampler", ["tpe", "nsgaii", "gp"])
def test_the_sampler_is_told_each_trials_constraint_values(tmp_path: Path, sampler: str) -> None:
    """OptunaSearch as a sweep builds it, driven as Tune drives it: the study's trials carry the
    violations of their last result, which is what steers TPE, NSGA-II and GP to feasible regions."""
    from fairsearch.search.sweep import _searcher

    spec = parse_space(
        {
            "name": "c",
            "search": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
            "sampler": {"name": sampler, "seed": 0},
            "constraints": {"max_acc_gap": 0.05, "auc": {"min": 0.6}},
            "objectives": {"maximize": ["acc", "worst_group_acc"], "minimize": ["max_acc_gap"]},
        }
    )
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = _searcher(spec, url)
    search.set_search_properties(None, None, {})
    results = [
        {"acc": 0.9, "worst_group_acc": 0.7, "max_acc_gap": 0.03, "auc": 0.8},
        {"acc": 0.8, "worst_group_acc": 0.5, "max_acc_gap": 0.09, "auc": 0.5},
        {"acc": 0.7, "worst_group_acc": 0.6, "max_acc_gap": 0.01},  # no AUC: that constraint is not met
    ]
    for k, metrics in enumerate(results):
        config = search.suggest(f"t{k}")
        assert config is not None
        search.on_trial_complete(f"t{k}", metrics)
    told = sorted(optuna.load_study(study_name="c", storage=url).get_trials(), key=lambda t: t.number)
    assert [t.state for t in told] == [optuna.trial.TrialState.COMPLETE] * 3
    assert [t.values for t in told] == [[0.9, 0.7, 0.03], [0.8, 0.5, 0.09], [0.7, 0.6, 0.01]]
    assert list(told[0].constraints.values()) == pytest.approx([-0.02, -0.2])
    assert list(told[1].constraints.values()) == pytest.approx([0.04, 0.1])
    assert list(told[2].constraints.values()) == pytest.approx([-0.04, 1.0])


def test_a_trial_ended_again_after_a_resume_is_not_told_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The searcher saved with trial t0 running, t0 ended, the driver killed before the next save: the
    resumed searcher sees t0 end again (Tune re-ran it); Optuna keeps the first telling, nobody warns."""
    from fairsearch.search.sweep import _searcher

    spec = parse_space({"name": "r", "search": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}})
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    search = _searcher(spec, url)
    search.set_search_properties(None, None, {})
    assert search.suggest("t0") is not None
    search.save(str(tmp_path / "searcher.pkl"))
    search.on_trial_complete("t0", {"acc": 0.9, "max_acc_gap": 0.1})
    resumed = _searcher(spec, url)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    with caplog.at_level("WARNING"):
        resumed.on_trial_complete("t0", {"acc": 0.5, "max_acc_gap": 0.3})
    assert not [r for r in caplog.records if r.levelname == "WARNING"], caplog.text
    (told,) = optuna.load_study(study_name="r", storage=url).get_trials()
    assert told.state == optuna.trial.TrialState.COMPLETE and told.values == [0.9, 0.1]


def test_a_sweep_without_constraints_tells_optuna_none() -> None:
    from fairsearch.search.sweep import _searcher

    spec = parse_space({"name": "u", "search": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}})
    search = _searcher(spec, "sqlite:///:memory:")
    assert search.constraint_values is None


# ------------------------------------------------------------------------------------------ MO-ASHA
def _trial(name: str) -> Trial:
    return Trial("__fake", trial_id=name, stub=True)


def test_mo_asha_ranks_the_trials_meeting_the_constraints_first() -> None:
    """Four trials, η = 2: two keep going. The two that dominate everyone miss the gap bound, so the two
    that meet it continue and the dominant ones stop, the smaller violation ahead of the larger."""
    sched = scheduler_from_settings(
        {"name": "mo_asha", "grace_period": 1, "reduction_factor": 2, "min_trials_per_rung": 1},
        max_epochs=4,
        constraints=(Constraint("max_acc_gap", 0.05, "max"),),
    )
    assert isinstance(sched, MOASHAScheduler)
    reports = [("ok1", 0.70, 0.04), ("bad1", 0.95, 0.06), ("ok2", 0.72, 0.05), ("bad2", 0.96, 0.30)]
    decisions = [
        sched.on_trial_result(None, _trial(name), {"epoch": 1, "acc": acc, "max_acc_gap": gap, "auc": 0.5})
        for name, acc, gap in reports
    ]
    C, S = TrialScheduler.CONTINUE, TrialScheduler.STOP
    # ok1 alone: kept; bad1 behind ok1 (1 ahead, keep 1): stopped; ok2 and ok1 share the front: kept;
    # bad2 behind three (keep 2): stopped
    assert decisions == [C, S, C, S]
    restored = MOASHAScheduler(
        metrics=("acc", "max_acc_gap"),
        modes=("max", "min"),
        time_attr="epoch",
        max_t=4,
        grace_period=1,
        reduction_factor=2,
        min_trials_per_rung=1,
        constraints=(Constraint("max_acc_gap", 0.05, "max"),),
    )
    restored.set_state(sched.get_state())
    assert restored.get_state()["violations"] == sched.get_state()["violations"]
    assert sched.get_state()["violations"][1] == pytest.approx(
        {"ok1": 0, "bad1": 0.01, "ok2": 0, "bad2": 0.25}
    )


def test_mo_asha_without_constraints_stops_the_dominated_trials_as_before() -> None:
    sched = scheduler_from_settings(
        {"name": "mo_asha", "grace_period": 1, "reduction_factor": 2, "min_trials_per_rung": 1}, max_epochs=4
    )
    assert sched is not None
    reports = [("ok1", 0.70, 0.04), ("bad1", 0.95, 0.06), ("ok2", 0.72, 0.05), ("bad2", 0.96, 0.30)]
    decisions = [
        sched.on_trial_result(None, _trial(name), {"epoch": 1, "acc": acc, "max_acc_gap": gap})
        for name, acc, gap in reports
    ]
    C, _S = TrialScheduler.CONTINUE, TrialScheduler.STOP
    assert decisions[1] == C  # bad1 dominates ok1: without the constraint it goes on


def test_mo_asha_takes_three_objectives() -> None:
    sched = scheduler_from_settings({"name": "mo_asha", "grace_period": 1}, max_epochs=4, objectives=THREE)
    assert sched is not None
    assert sched.metrics == ("acc", "worst_group_acc", "max_acc_gap") and sched.modes == ("max", "max", "min")


def test_every_metric_a_space_may_name_is_a_flat_key_a_trial_reports() -> None:
    from fairsearch.judge.fairness import Grouping
    from fairsearch.judge.metrics import evaluate_split

    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, 300)
    prob = np.clip(label * 0.3 + rng.uniform(0, 0.7, 300), 0, 1)
    grouping = Grouping("ethnicity", rng.integers(0, 3, 300), ("a", "b", "c"))
    flat = evaluate_split(prob, label, {"ethnicity": grouping}, primary="ethnicity").flat()
    for key in METRICS:
        assert np.isfinite(flat[key]), key


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_a_constrained_three_objective_sweep_agrees_with_optuna_and_brute_force(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from sweep_helpers import run_command, write_space

    bound = 0.15
    space = write_space(
        tmp_path,
        "goals",
        4,
        fixed={"epochs": 1, "n_boot": 20},
        objectives={
            "group_by": "ethnicity",
            "maximize": ["acc", "worst_group_acc"],
            "minimize": ["max_acc_gap"],
        },
        constraints={"max_acc_gap": bound},
    )
    results = tmp_path / "results"
    env = {**os.environ, "FAIRSEARCH_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(run_command(space, results), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = results / "goals"
    trials, front = read_results(folder)
    done = trials[trials["status"] == "completed"]
    assert len(done) == 4
    keys = ["val/acc", "val/worst_group_acc", "val/max_acc_gap"]
    points = done[keys].to_numpy(dtype=np.float64)
    assert set(front["number"]) == {
        int(done["number"].iloc[i]) for i in _brute_front(points, ["max", "max", "min"])
    }
    meets = done["val/max_acc_gap"].to_numpy() <= bound
    assert done["feasible"].tolist() == meets.tolist()
    feasible = read_front(folder, FEASIBLE_FRONT)
    pool = np.flatnonzero(meets)
    expected = {int(done["number"].iloc[pool[i]]) for i in _brute_front(points[pool], ["max", "max", "min"])}
    assert set(feasible["number"]) == expected
    assert feasible["test/acc"].notna().all() if len(feasible) else True
    # Optuna's study: three objectives, each trial's values and constraint values those of its row
    study = optuna.load_study(study_name="goals", storage=f"sqlite:///{folder / 'optuna.db'}")
    assert len(study.directions) == 3
    rows = done.set_index("number")
    for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert trial.values == pytest.approx(rows.loc[trial.number, keys].tolist())
        assert list(trial.constraints.values()) == pytest.approx(
            [rows.loc[trial.number, "val/max_acc_gap"] - bound]
        )
    # what the run printed and `fairsearch pareto --feasible` prints
    met = int(meets.sum())
    assert f"constraint MaxAccGap <= 15.0 %: met by {met} of 4 completed trial(s)" in proc.stdout
    shown = subprocess.run(
        [sys.executable, "-m", "fairsearch.cli", "pareto", str(folder), "--feasible"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("Feasible front" if met else "Feasible front: no completed trials yet.")
    assert "val worst" in shown.stdout or not met
    report = subprocess.run(
        [sys.executable, "-m", "fairsearch.cli", "report", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    page = (folder / "report.html").read_text()
    assert "<h2>Constraints</h2>" in page and "<h2>The objectives, pair by pair</h2>" in page
    assert "worst-group accuracy ↑, MaxAccGap ↓" in page


def test_a_mo_asha_pickled_before_constraints_resumes_and_decides() -> None:
    """Tune pickles the scheduler once, when the sweep starts; a sweep started by a fairsearch without
    constraints resumes with that object, which lacks their attributes."""
    import pickle

    sched = MOASHAScheduler(
        time_attr="epoch", max_t=4, grace_period=1, reduction_factor=2, min_trials_per_rung=1
    )
    del sched.__dict__["_constraints"], sched.__dict__["_violations"]
    old = pickle.loads(pickle.dumps(sched))
    decisions = [
        old.on_trial_result(None, _trial(name), {"epoch": 1, "acc": acc, "max_acc_gap": gap})
        for name, acc, gap in [("a", 0.7, 0.1), ("b", 0.9, 0.05), ("c", 0.6, 0.2)]
    ]
    assert decisions == [TrialScheduler.CONTINUE, TrialScheduler.CONTINUE, TrialScheduler.STOP]
    assert old.get_state()["violations"][1] == {"a": 0, "b": 0, "c": 0}


# ------------------------------------------------------------------------------------------ confirmation
def test_confirmation_candidates_meet_the_constraints_and_follow_the_objectives() -> None:
    from fairsearch.output.confirm import make_plan

    trials = pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(4)],
            "number": range(4),
            "status": ["completed"] * 4,
            "param/method": ["vanilla"] * 4,
            "param/seed": [0] * 4,
            "val/acc": [0.95, 0.80, 0.85, 0.70],
            "val/worst_group_acc": [0.60, 0.75, 0.70, 0.72],
            "val/max_acc_gap": [0.30, 0.05, 0.08, 0.02],
            "checkpoint": [None] * 4,
        }
    )
    gap = (Constraint("max_acc_gap", 0.1, "max"),)
    # unconstrained, the front on (acc, gap) is 0, 2, 1, 3; constrained, trial 0 (gap 0.30) is left out
    assert make_plan(trials, 1, 8, lambda p: {}).candidates == (0, 2, 1, 3)
    assert make_plan(trials, 1, 8, lambda p: {}, OBJECTIVES, gap).candidates == (2, 1, 3)
    # on (worst group, gap) trial 2 is dominated by trial 1
    pair = objectives_named(["worst_group_acc", "max_acc_gap"])
    assert make_plan(trials, 1, 8, lambda p: {}, pair, gap).candidates == (1, 3)
    # a constraint no trial meets: every trial is a candidate source again
    none_meet = (Constraint("max_acc_gap", 0.01, "max"),)
    assert make_plan(trials, 1, 8, lambda p: {}, OBJECTIVES, none_meet).candidates == (0, 2, 1, 3)


def test_thresholded_rows_are_marked_by_their_own_metrics_and_their_trials_auc() -> None:
    """A threshold moves accuracy, the gap and the worst group, not the scores: a thresholded row is
    feasible by its own metrics, and by its trial's AUC for a constraint on AUC."""
    from fairsearch.output.results import _marked

    trials = pd.DataFrame({"number": [0, 1], "val/auc": [0.9, 0.6], "val/max_acc_gap": [0.3, 0.3]})
    rows = pd.DataFrame(
        {"number": [0, 0, 1], "val/max_acc_gap": [0.05, 0.2, 0.05], "kind": ["threshold"] * 3}
    )
    constraints = (Constraint("max_acc_gap", 0.1, "max"), Constraint("auc", 0.8, "min"))
    marked = _marked(rows, trials, constraints)
    assert marked["feasible"].tolist() == [True, False, False]
    assert "val/auc" not in marked  # the rows themselves are left as they were
    assert _marked(rows, trials, ()) is rows
