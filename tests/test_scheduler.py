"""MO-ASHA scheduler: every test feeds synthetic results and asserts each CONTINUE/STOP decision."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from fairsearch.errors import FairsearchError
from fairsearch.judge.pareto import crowding_distance, nondominated_ranks
from fairsearch.search.scheduler import MOASHAScheduler, scheduler_from_settings

C, S = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _trial(name: str) -> Trial:
    return Trial("__fake", trial_id=name, stub=True)


def _report(
    sched: MOASHAScheduler,
    trial: Trial,
    acc: float,
    gap: float,
    t: float = 1,
    time_attr: str = "training_iteration",
) -> str:
    return sched.on_trial_result(None, trial, {time_attr: t, "acc": acc, "max_acc_gap": gap})


def _quality(q: float) -> tuple[float, float]:
    """A point on a chain: higher q is better in both objectives (more accuracy, smaller gap)."""
    return 0.5 + 0.04 * q, 0.3 - 0.02 * q


def _feed(
    sched: MOASHAScheduler, points: Sequence[tuple[float, float]], t: float = 1, prefix: str = "t"
) -> list[str]:
    return [_report(sched, _trial(f"{prefix}{i}"), acc, gap, t) for i, (acc, gap) in enumerate(points)]


def test_rungs_grow_geometrically_below_max_t() -> None:
    assert MOASHAScheduler(max_t=27, grace_period=1, reduction_factor=3).milestones == (1, 3, 9)
    assert MOASHAScheduler(max_t=10, grace_period=1, reduction_factor=3).milestones == (1, 3, 9)
    assert MOASHAScheduler(max_t=4, grace_period=0.5, reduction_factor=2).milestones == (0.5, 1, 2)
    assert MOASHAScheduler(max_t=1, grace_period=1).milestones == ()


def test_each_decision_continues_the_best_third_on_a_chain() -> None:
    # Chain: each point dominates every lower-q point, so a newcomer's standing is how many recorded
    # trials have a higher q; it continues while that is < ceil(n / 3).
    sched = MOASHAScheduler(max_t=9, min_trials_per_rung=3)
    qualities = [5, 3, 8, 1, 9, 2, 7, 4, 6]
    assert _feed(sched, [_quality(q) for q in qualities]) == [C, C, C, S, C, S, C, S, S]
    assert sched.stopped_early == {"t3": 1, "t5": 1, "t7": 1, "t8": 1}


@pytest.mark.parametrize("position", range(9))
def test_exactly_the_best_ninth_and_its_two_successors_continue(position: int) -> None:
    # Eight incumbents (no company yet: min 9), then a newcomer placed `position`-th best of nine.
    sched = MOASHAScheduler(max_t=9, min_trials_per_rung=9)
    incumbents = [q for q in range(9) if q != 8 - position]
    assert _feed(sched, [_quality(q) for q in incumbents]) == [C] * 8
    expected = C if position < 3 else S
    assert _report(sched, _trial("new"), *_quality(8 - position)) == expected


def test_dominated_trial_is_stopped_once_the_rung_has_company() -> None:
    sched = MOASHAScheduler(max_t=9, min_trials_per_rung=3)
    front = [(0.9, 0.3), (0.8, 0.1), (0.7, 0.05)]
    assert _feed(sched, front) == [C, C, C]  # one front; the newcomer is an extreme (crowding inf)
    assert _report(sched, _trial("dominated"), 0.75, 0.2) == S  # dominated by (0.8, 0.1)


def test_first_trials_continue_for_lack_of_company() -> None:
    bad = [(0.9, 0.0), (0.5, 0.5), (0.4, 0.6)]
    assert _feed(MOASHAScheduler(max_t=9, min_trials_per_rung=3), bad) == [C, C, S]
    assert _feed(MOASHAScheduler(max_t=9, min_trials_per_rung=4), bad) == [C, C, C]
    assert _feed(MOASHAScheduler(max_t=9, min_trials_per_rung=1), bad) == [C, S, S]


def _position_rule_stops(points: np.ndarray, eta: float) -> bool:
    """Syne Tune MOASHA's rule: indices in sorted order read as per-trial priorities; the last is judged."""
    ranks = nondominated_ranks(points, ("max", "min"))
    spread = np.zeros(len(points))
    for r in np.unique(ranks):
        spread[ranks == r] = crowding_distance(points[ranks == r], ("max", "min"))
    order = np.lexsort((-spread, ranks))  # indices, best first
    position = np.searchsorted(np.sort(order), order) / len(order)
    return bool(position[-1] > 1 / eta)


def test_a_trial_dominating_the_whole_rung_is_never_stopped() -> None:
    # Nine incumbents, the worst of them recorded fifth; the newcomer dominates all of them.
    sched = MOASHAScheduler(max_t=9, min_trials_per_rung=1)
    incumbents = [(0.80, 0.10), (0.70, 0.05), (0.85, 0.20), (0.75, 0.15), (0.60, 0.40)]
    incumbents += [(0.78, 0.12), (0.82, 0.18), (0.72, 0.08), (0.65, 0.30)]
    _feed(sched, incumbents)
    newcomer = (0.90, 0.01)
    points = np.array([*incumbents, newcomer])
    assert _position_rule_stops(points, eta=3)  # the sort-position rule would stop it here
    assert _report(sched, _trial("best"), *newcomer) == C
    assert "best" not in sched.stopped_early


def test_dominating_trials_continue_whatever_came_before() -> None:
    rng = np.random.default_rng(0)
    for case in range(40):
        sched = MOASHAScheduler(max_t=9, min_trials_per_rung=1, reduction_factor=int(rng.integers(2, 5)))
        incumbents = rng.uniform([0.5, 0.0], [0.9, 0.5], size=(int(rng.integers(1, 25)), 2))
        _feed(sched, [tuple(p) for p in incumbents], prefix=f"c{case}-")
        newcomer = (incumbents[:, 0].max() + 0.01, incumbents[:, 1].min() - 0.01)
        assert _report(sched, _trial(f"c{case}-best"), *newcomer) == C


def test_crowding_keeps_the_extremes_of_a_front_over_its_crowded_middle() -> None:
    # One front (more accuracy costs more gap). Keep ceil(5 / 3) = 2 of 5 after the newcomer.
    front = [(0.60, 0.10), (0.70, 0.20), (0.71, 0.21), (0.90, 0.40)]
    for newcomer, expected in [((0.705, 0.205), S), ((0.95, 0.45), C), ((0.55, 0.05), C)]:
        sched = MOASHAScheduler(max_t=9, min_trials_per_rung=1)
        _feed(sched, front)
        assert _report(sched, _trial("new"), *newcomer) == expected, newcomer


def test_repeats_of_a_recorded_point_rank_behind_its_first_record() -> None:
    # Trials stuck at chance all report one point (one class for everyone): its first record holds its
    # place at the front's low-gap end, each repeat ranks one front further back and is stopped.
    chance = (0.5, 0.02)
    sched = MOASHAScheduler(max_t=9, min_trials_per_rung=3)
    assert _feed(sched, [(0.8, 0.2), (0.85, 0.25), chance, chance, chance, chance]) == [C, C, C, S, S, S]
    assert sched.stopped_early == {"t3": 1, "t4": 1, "t5": 1}
    # A distinct point next to the repeats is ranked as before: it dominates them all but the first
    assert _report(sched, _trial("near"), 0.55, 0.02) == C


def test_repeats_count_once_among_the_trials_ahead() -> None:
    # Three records of one point, then a trial that point dominates. Plainly four records are ahead of
    # it (keep 3 of 5: stop); the repeats rank behind the point's first record, so two are ahead.
    sched = MOASHAScheduler(max_t=9, min_trials_per_rung=1, reduction_factor=2)
    assert _feed(sched, [(0.9, 0.1), (0.7, 0.3), (0.7, 0.3), (0.7, 0.3)]) == [C, S, S, S]
    assert sched.rung_records(1)["t3"] == (0.7, 0.3)
    assert _report(sched, _trial("worse"), 0.6, 0.4) == C


def test_repeats_are_ordered_by_auc_then_by_arrival() -> None:
    # Nine trials all at chance: among repeats the one with the higher AUC is ahead, as in ASHA on AUC.
    chance = {"training_iteration": 1, "acc": 0.5, "max_acc_gap": 0.02}
    aucs = [0.55, 0.60, 0.50, 0.70, 0.52, 0.80, 0.51, 0.65, 0.90]
    sched = MOASHAScheduler(max_t=9, min_trials_per_rung=3)
    decisions = [
        sched.on_trial_result(None, _trial(f"t{i}"), {**chance, "auc": auc}) for i, auc in enumerate(aucs)
    ]
    # continue while fewer than ceil(n/3) earlier records have a higher AUC
    assert decisions == [C, C, S, C, S, C, S, C, C]
    by_arrival = MOASHAScheduler(max_t=9, min_trials_per_rung=3, repeat_metric="none")
    decisions = [
        by_arrival.on_trial_result(None, _trial(f"t{i}"), {**chance, "auc": auc})
        for i, auc in enumerate(aucs)
    ]
    assert decisions == [C, C, S, S, S, S, S, S, S]  # every earlier record of the point is ahead
    # a trial that reports no AUC ranks after every repeat that does
    assert sched.on_trial_result(None, _trial("no_auc"), chance) == S


def test_directions_are_the_schedulers_business_not_the_users() -> None:
    rng = np.random.default_rng(1)
    points = rng.uniform([0.5, 0.0], [0.9, 0.5], size=(30, 2))
    base = MOASHAScheduler(max_t=9, min_trials_per_rung=2)
    negated = MOASHAScheduler(
        metrics=("acc", "neg_gap"), modes=("max", "max"), max_t=9, min_trials_per_rung=2
    )
    swapped = MOASHAScheduler(
        metrics=("max_acc_gap", "acc"), modes=("min", "max"), max_t=9, min_trials_per_rung=2
    )
    decisions = _feed(base, [tuple(p) for p in points])
    assert C in decisions and S in decisions
    neg = [
        negated.on_trial_result(None, _trial(f"t{i}"), {"training_iteration": 1, "acc": a, "neg_gap": -g})
        for i, (a, g) in enumerate(points)
    ]
    assert neg == decisions
    assert _feed(swapped, [tuple(p) for p in points]) == decisions
    assert base.rung_records(1)["t0"] == tuple(points[0])  # recorded in the user's own units


def test_max_t_stops_and_later_reports_repeat_the_rung_decision() -> None:
    sched = MOASHAScheduler(max_t=4, grace_period=1, reduction_factor=2, min_trials_per_rung=2)
    good, bad = _trial("good"), _trial("bad")
    assert _report(sched, good, 0.9, 0.1, t=1) == C
    assert _report(sched, bad, 0.5, 0.4, t=1) == S
    assert _report(sched, bad, 0.5, 0.4, t=1.5) == S  # a resumed trial repeating its rung
    assert _report(sched, good, 0.1, 0.9, t=1.5) == C  # decided at rung 1 already, not re-ranked
    assert _report(sched, good, 0.9, 0.1, t=2) == C  # rung 2: alone there
    assert _report(sched, good, 0.9, 0.1, t=3) == C
    assert _report(sched, good, 0.9, 0.1, t=4) == S  # the full length
    assert sched.stopped_early == {"bad": 1}


def test_fractional_rungs_with_a_float_epoch_counter() -> None:
    sched = MOASHAScheduler(
        time_attr="epoch", max_t=2, grace_period=0.25, reduction_factor=2, min_trials_per_rung=2
    )
    assert sched.milestones == (0.25, 0.5, 1.0)
    a, b = _trial("a"), _trial("b")
    assert _report(sched, a, 0.9, 0.1, t=0.1, time_attr="epoch") == C  # before the first rung
    assert (
        _report(sched, a, 0.9, 0.1, t=0.7 - 0.45, time_attr="epoch") == C
    )  # 0.2499...: 0.25 up to float error
    assert _report(sched, b, 0.5, 0.4, t=0.25, time_attr="epoch") == S
    assert sched.rung_records(0.25).keys() == {"a", "b"}


def test_missing_metrics_and_nan_values() -> None:
    sched = MOASHAScheduler(max_t=9, min_trials_per_rung=2)
    assert sched.on_trial_result(None, _trial("x"), {"training_iteration": 1, "acc": 0.9}) == C
    assert sched.rung_records(1) == {}
    assert _report(sched, _trial("ok"), 0.6, 0.3) == C
    assert _report(sched, _trial("nan"), math.nan, 0.0) == S  # a NaN row ranks after every valid one


def test_completed_trials_give_company_to_later_ones() -> None:
    sched = MOASHAScheduler(max_t=9, min_trials_per_rung=2)
    sched.on_trial_complete(None, _trial("done"), {"training_iteration": 2, "acc": 0.9, "max_acc_gap": 0.1})
    assert sched.rung_records(1) == {"done": (0.9, 0.1)}
    assert _report(sched, _trial("late"), 0.8, 0.2) == S


def test_save_restore_round_trip_gives_the_same_later_decisions(tmp_path: Path) -> None:
    points = [tuple(p) for p in np.random.default_rng(2).uniform([0.5, 0.0], [0.9, 0.5], size=(24, 2))]
    first, rest = points[:12], points[12:]
    running = MOASHAScheduler(max_t=9, min_trials_per_rung=3)
    _feed(running, first)
    running.save(str(tmp_path / "moasha.pkl"))
    resumed = MOASHAScheduler(max_t=9, min_trials_per_rung=3)
    resumed.restore(str(tmp_path / "moasha.pkl"))
    fresh = MOASHAScheduler(max_t=9, min_trials_per_rung=3)
    expected = _feed(running, rest, prefix="r")
    assert _feed(resumed, rest, prefix="r") == expected
    assert _feed(fresh, rest, prefix="r") != expected  # the records are what makes the difference
    assert resumed.stopped_early == running.stopped_early


def test_repeat_values_survive_a_restore_and_older_states_still_load() -> None:
    chance = {"training_iteration": 1, "acc": 0.5, "max_acc_gap": 0.02}
    sched = MOASHAScheduler(max_t=9, min_trials_per_rung=1)
    assert sched.on_trial_result(None, _trial("a"), {**chance, "auc": 0.9}) == C
    state = sched.get_state()
    resumed = MOASHAScheduler(max_t=9, min_trials_per_rung=1)
    resumed.set_state(state)
    assert resumed.on_trial_result(None, _trial("b"), {**chance, "auc": 0.8}) == S  # a's 0.9 is ahead
    older = MOASHAScheduler(max_t=9, min_trials_per_rung=1)
    older.set_state({k: v for k, v in state.items() if k != "repeat_values"})  # saved before they were kept
    assert older.on_trial_result(None, _trial("b"), {**chance, "auc": 0.8}) == C  # a's AUC unknown: last


def test_state_callback_and_incompatible_state() -> None:
    sched = MOASHAScheduler(max_t=9)
    _feed(sched, [(0.8, 0.1), (0.7, 0.2)])
    callback = sched.state_callback()
    other = MOASHAScheduler(max_t=9)
    state = callback.get_state()
    assert state is not None
    other.state_callback().set_state(state)
    assert other.rung_records(1) == sched.rung_records(1)
    wrong = MOASHAScheduler(metrics=("acc", "auc"), modes=("max", "max"), max_t=9)
    with pytest.raises(ValueError, match="not \\(\\('acc', 'auc'\\)"):
        wrong.set_state(sched.get_state())
    shorter = MOASHAScheduler(max_t=9, grace_period=3)  # rung 1 is gone
    shorter.set_state(sched.get_state())
    assert shorter.rung_records(3) == {}


def test_set_search_properties_keeps_the_objectives() -> None:
    sched = MOASHAScheduler()
    assert sched.set_search_properties(None, None)
    assert sched.set_search_properties(["acc", "max_acc_gap"], ["max", "min"], config={})
    assert not sched.set_search_properties("acc", "max")  # TuneConfig(metric="acc"): Tune raises
    assert not sched.set_search_properties(None, ["min", "min"])
    assert sched.metrics == ("acc", "max_acc_gap") and sched.modes == ("max", "min")
    assert sched.metric == "acc"  # the one name Tune's strict result check looks for


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reduction_factor": 1.5}, "reduction_factor: 1.5 must be >= 2"),
        ({"grace_period": 0}, "grace_period: 0 must be > 0 and <= max_t"),
        ({"modes": ("max",)}, "modes must hold"),
        ({"metrics": "acc", "modes": "max"}, "must be sequences"),
        ({"tie_break": "eps_net"}, "tie_break: 'eps_net' is not one of \\['crowding'\\]"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MOASHAScheduler(**kwargs)


def test_settings_build_the_scheduler_or_none() -> None:
    for off in (None, {}, "none", {"name": "none"}, {"name": "none", "grace_period": 2}):
        assert scheduler_from_settings(off, max_epochs=10) is None
    sched = scheduler_from_settings({"name": "mo_asha"}, max_epochs=10)
    assert isinstance(sched, MOASHAScheduler) and sched.milestones == (1, 3, 9)
    assert sched.metrics == ("acc", "max_acc_gap") and sched.modes == ("max", "min")
    sched = scheduler_from_settings(
        {"name": "mo_asha", "grace_period": 2, "reduction_factor": 2, "min_trials_per_rung": 1}, max_epochs=10
    )
    assert isinstance(sched, MOASHAScheduler) and sched.milestones == (2, 4, 8)
    # progress is the trial's reported epoch (fractional with reports_per_epoch > 1)
    trials = [_trial("a"), _trial("b")]
    decisions = [
        _report(sched, t, acc, gap, t=2, time_attr="epoch")
        for t, (acc, gap) in zip(trials, [(0.9, 0.1), (0.5, 0.4)], strict=True)
    ]
    assert decisions == [C, S]
    assert _report(sched, _trial("c"), 0.1, 0.9, t=2, time_attr="training_iteration") == C  # not progress


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"name": "mo_asha", "reduction_factor": 1}, "scheduler.reduction_factor: 1 must be >= 2"),
        ({"name": "asha"}, "scheduler.name: 'asha' is not one of ['none', 'mo_asha']"),
        ({"grace_period": 1}, "scheduler.name: missing is not one of ['none', 'mo_asha']"),
        (
            {"name": "mo_asha", "brackets": 2},
            "scheduler: unknown key 'brackets'; allowed: ['name', 'grace_period', 'reduction_factor', "
            "'min_trials_per_rung', 'tie_break', 'repeat_metric', 'time_attr']",
        ),
        ({"name": "mo_asha", "grace_period": -1}, "scheduler.grace_period: -1 must be a number > 0"),
        (
            {"name": "mo_asha", "grace_period": 4},
            "scheduler.grace_period: 4 must be < the longest trial's 4 epochs (no rung otherwise)",
        ),
        (
            {"name": "mo_asha", "min_trials_per_rung": 2.5},
            "scheduler.min_trials_per_rung: 2.5 must be an integer >= 1",
        ),
        ({"name": "mo_asha", "tie_break": "eps"}, "scheduler.tie_break: 'eps' is not one of ['crowding']"),
        (
            {"name": "mo_asha", "repeat_metric": "acc"},
            "scheduler.repeat_metric: 'acc' is not one of ['auc', 'loss', 'none']",
        ),
        (
            {"name": "mo_asha", "time_attr": ""},
            "scheduler.time_attr: '' must be a result key such as 'training_iteration'",
        ),
    ],
)
def test_settings_errors_name_key_value_and_what_is_allowed(block: dict, message: str) -> None:
    with pytest.raises(FairsearchError) as err:
        scheduler_from_settings(block, max_epochs=4)
    assert str(err.value) == message


def test_settings_report_every_problem_at_once() -> None:
    with pytest.raises(FairsearchError) as err:
        scheduler_from_settings({"name": "asha", "reduction_factor": True, "foo": 1}, max_epochs=4)
    assert str(err.value).splitlines() == [
        "scheduler: unknown key 'foo'; allowed: ['name', 'grace_period', 'reduction_factor', "
        "'min_trials_per_rung', 'tie_break', 'repeat_metric', 'time_attr']",
        "scheduler.name: 'asha' is not one of ['none', 'mo_asha']",
        "scheduler.reduction_factor: True must be >= 2",
    ]


@pytest.mark.slow
def test_ray_tune_stops_dominated_trials_and_restores_the_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import tune

    def synthetic_trainable(config: dict) -> None:  # nested: Ray workers cannot import tests/ modules
        """Higher q: better accuracy and smaller gap at every epoch."""
        for epoch in range(1, 10):
            tune.report(
                {"acc": 0.5 + 0.4 * config["q"] * (1 - 0.5**epoch), "max_acc_gap": 0.4 - 0.3 * config["q"]}
            )

    qualities = [i / 11 for i in (6, 11, 3, 9, 0, 5, 10, 1, 7, 2, 8, 4)]  # not best-last: some must stop
    scheduler = MOASHAScheduler(max_t=9, grace_period=1, reduction_factor=3, min_trials_per_rung=3)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        run_config = tune.RunConfig(
            name="moasha", storage_path=str(tmp_path), callbacks=[scheduler.state_callback()], verbose=0
        )
        tuner = tune.Tuner(
            synthetic_trainable,
            param_space={"q": tune.grid_search(qualities)},
            tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=2, reuse_actors=True),
            run_config=run_config,
        )
        results = tuner.fit()
        table = results.get_dataframe()
        assert results.num_errors == 0 and len(table) == 12
        epochs = dict(zip(table["config/q"], table["training_iteration"], strict=True))
        assert epochs[1.0] == 9  # dominates every rung it reaches
        assert sum(e < 9 for e in epochs.values()) >= 4
        assert len(scheduler.stopped_early) == sum(e < 9 for e in epochs.values())

        with caplog.at_level(logging.INFO, logger="fairsearch.search.scheduler"):
            tune.Tuner.restore(str(tmp_path / "moasha"), synthetic_trainable).fit()
        recorded = sum(len(scheduler.rung_records(m)) for m in scheduler.milestones)
        assert (
            f"MO-ASHA restored {recorded} rung records, {len(scheduler.stopped_early)} trials stopped"
            in caplog.text
        )
    finally:
        ray.shutdown()
