"""The replay benchmark (benchmarks/curve_replay.py, replay.py, record_curves.py) on hand-made curves with
known answers; Syne Tune's MOASHA only where the ``bench`` extra is installed."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from fairsearch.judge.pareto import hypervolume
from fairsearch.search.scheduler import MOASHAScheduler
from fairsearch.spec.config import TrialConfig, objective_keys
from fairsearch.spec.space import load_space
from fairsearch.train.checkpoint import STATE_FILE, write_manifest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
curve_replay = importlib.import_module("curve_replay")
record_curves = importlib.import_module("record_curves")
replay = importlib.import_module("replay")

Curves = curve_replay.Curves
RayDriver = curve_replay.RayDriver
simulate = curve_replay.simulate

CHANCE = (0.5, 0.05)  # one class for everyone: accuracy at chance, a small gap


def make_curves(rows: list[list[tuple[float, float]]], seconds: float = 10.0) -> Any:
    """Curves from per-trial lists of (acc, max_acc_gap), one per report at 0.5-epoch steps."""
    objectives = np.array(rows, dtype=np.float64)
    reports = objectives.shape[1]
    return Curves(
        objectives=objectives,
        budget=np.arange(1, reports + 1) / 2,
        report_seconds=np.full(len(rows), seconds),
        trial_ids=tuple(str(i) for i in range(len(rows))),
    )


def learner(
    final_acc: float, final_gap: float, start: int = 0, reports: int = 8
) -> list[tuple[float, float]]:
    """At chance until report ``start``, then improving steadily to its final point."""
    out = []
    for k in range(reports):
        if k < start:
            out.append(CHANCE)
        else:
            t = (k - start + 1) / (reports - start)
            out.append((0.5 + t * (final_acc - 0.5), CHANCE[1] + t * (final_gap - CHANCE[1])))
    return out


def improver(
    final_acc: float, final_gap: float, start: int = 0, reports: int = 8
) -> list[tuple[float, float]]:
    """Each report weakly dominates the one before: from (0.5, 0.6) to its final point."""
    out = []
    for k in range(reports):
        t = 0.0 if k < start else (k - start + 1) / (reports - start)
        out.append((0.5 + t * (final_acc - 0.5), 0.6 + t * (final_gap - 0.6)))
    return out


@pytest.fixture
def improving() -> Any:
    """10 trials whose every report dominates-or-equals their last, early and late learners, and stuck ones."""
    rows = [improver(0.75 + 0.03 * i, 0.35 - 0.06 * i, start=i) for i in range(5)]
    return make_curves(rows + [improver(0.5, 0.6)] * 5)


@pytest.fixture
def mixed() -> Any:
    """12 trials: 4 good early learners, 2 late bloomers, 6 stuck at chance (all improving or flat)."""
    rows = [learner(0.80 + 0.02 * i, 0.30 - 0.05 * i) for i in range(4)]
    rows += [learner(0.85, 0.12, start=5), learner(0.78, 0.08, start=6)]
    rows += [[CHANCE] * 8 for _ in range(6)]
    return make_curves(rows)


class StopAtFirstRung(FIFOScheduler):
    """Stops every trial at its first report at or past ``rung`` epochs."""

    def __init__(self, rung: float) -> None:
        super().__init__()
        self.rung = rung

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        return TrialScheduler.STOP if result["epoch"] >= self.rung else TrialScheduler.CONTINUE


def test_no_stopping_spends_every_epoch_and_ends_at_the_full_front(mixed: Any) -> None:
    r = simulate(mixed, RayDriver(FIFOScheduler()), workers=3, seed=0)
    assert r.total_epochs == pytest.approx(12 * 4.0)
    assert list(r.reports_made) == [8] * 12
    assert r.final_hypervolume == pytest.approx(mixed.full_hypervolume)
    assert r.front_stopped_share == 0.0
    assert len(r.epochs) == 12 * 8  # one curve point per report


def test_full_front_is_the_hypervolume_of_every_trials_last_report(mixed: Any) -> None:
    expected = hypervolume(mixed.objectives[:, -1], ("max", "min"), (0.0, 1.0))
    assert mixed.full_hypervolume == pytest.approx(expected)
    assert mixed.front_members.sum() >= 2 and mixed.front_members[6:].sum() == 6  # chance ties are on it


def test_stopping_everyone_at_the_first_rung_spends_exactly_that(mixed: Any) -> None:
    r = simulate(mixed, RayDriver(StopAtFirstRung(1.5)), workers=2, seed=3)
    assert r.total_epochs == pytest.approx(12 * 1.5)
    assert list(r.reports_made) == [3] * 12
    assert r.front_stopped_share == 1.0
    assert r.reach(0.95) is None


def test_hypervolume_over_epochs_is_monotone_for_improving_curves(improving: Any) -> None:
    for seed in range(5):
        r = simulate(improving, RayDriver(FIFOScheduler()), workers=4, seed=seed)
        assert np.all(np.diff(r.hypervolume) >= -1e-12)
        assert np.all(np.diff(r.epochs) > 0)
        assert np.all(np.diff(r.seconds) >= 0)
        assert r.hypervolume[-1] == pytest.approx(improving.full_hypervolume)


def test_the_curve_can_fall_when_a_trials_newer_result_is_worse() -> None:
    # one trial, best at its first report: the front holds its latest result, as trials.parquet does
    curves = make_curves([[(0.9, 0.1), (0.6, 0.3)]])
    r = simulate(curves, RayDriver(FIFOScheduler()), workers=1, seed=0)
    assert r.hypervolume.tolist() == pytest.approx([0.9 * 0.9, 0.6 * 0.7])
    assert r.reach(1.0) == (0.5, pytest.approx(r.seconds[0]))


def test_one_worker_without_noise_runs_trials_back_to_back() -> None:
    curves = make_curves([[CHANCE] * 4, [(0.9, 0.1)] * 4], seconds=10.0)
    r = simulate(curves, RayDriver(FIFOScheduler()), workers=1, seed=0, duration_noise=0.0)
    assert r.wall_seconds == pytest.approx(80.0)
    assert list(r.seconds) == pytest.approx([10, 20, 30, 40, 50, 60, 70, 80])
    # the good trial reaches the whole front at its first report: 4 reports (2 epochs) in if it runs second
    epochs, seconds = r.reach(1.0)
    assert (epochs, seconds) in ((2.5, 50.0), (0.5, 10.0))


def test_workers_run_trials_in_parallel() -> None:
    curves = make_curves([[CHANCE] * 4] * 4, seconds=10.0)
    r = simulate(curves, RayDriver(FIFOScheduler()), workers=4, seed=0, duration_noise=0.0)
    assert r.wall_seconds == pytest.approx(40.0)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        simulate(curves, RayDriver(FIFOScheduler()), workers=0, seed=0)


def test_the_seed_fixes_the_order_and_times(mixed: Any) -> None:
    a = simulate(mixed, RayDriver(FIFOScheduler()), workers=2, seed=7)
    b = simulate(mixed, RayDriver(FIFOScheduler()), workers=2, seed=7)
    c = simulate(mixed, RayDriver(FIFOScheduler()), workers=2, seed=8)
    assert np.array_equal(a.seconds, b.seconds) and np.array_equal(a.hypervolume, b.hypervolume)
    assert not np.array_equal(a.seconds, c.seconds)


def test_mo_asha_through_the_driver_stops_only_dominated_trials() -> None:
    # 9 trials, one rung at 1 epoch (report 2), eta 3, min 3: the chance trials come last and are beaten
    rows = [learner(0.80 + 0.02 * i, 0.30 - 0.08 * i) for i in range(3)] + [[(0.5, 0.5)] * 8] * 6
    curves = make_curves(rows)
    scheduler = MOASHAScheduler(time_attr="epoch", max_t=4, grace_period=1, reduction_factor=5)
    r = simulate(curves, RayDriver(scheduler), workers=1, seed=0, duration_noise=0.0)
    stopped = set(np.flatnonzero(r.stopped).tolist())
    assert stopped and stopped <= {3, 4, 5, 6, 7, 8}
    assert r.front_stopped_share == 0.0
    assert set(scheduler.stopped_early) == {str(i) for i in stopped}


def test_random_stopping_spends_the_budget_it_is_given() -> None:
    milestones, max_t = (0.5, 1.5), 4.0
    assert curve_replay.expected_epochs(milestones, max_t, 0.0) == pytest.approx(4.0)
    assert curve_replay.expected_epochs(milestones, max_t, 1.0) == pytest.approx(0.5)
    p = curve_replay.stop_probability_for(milestones, max_t, 2.0)
    assert curve_replay.expected_epochs(milestones, max_t, p) == pytest.approx(2.0, abs=1e-9)
    curves = make_curves([[CHANCE] * 8] * 400)
    rng = np.random.default_rng(0)
    r = simulate(curves, RayDriver(curve_replay.RandomStopScheduler(milestones, p, rng)), workers=8, seed=0)
    assert r.total_epochs / 400 == pytest.approx(2.0, rel=0.08)
    assert set(np.unique(r.reports_made)) == {1, 3, 8}  # stops fall on the rungs only


class Recorder:
    """A driver that continues every trial and keeps every call it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any] | None]] = []

    def add(self, trial_id: str) -> None:
        self.calls.append(("add", trial_id, None))

    def result(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.calls.append(("result", trial_id, result))
        return True

    def end(self, trial_id: str, result: dict[str, Any]) -> None:
        self.calls.append(("end", trial_id, result))


def test_results_carry_progress_objectives_and_the_records_other_signals() -> None:
    curves = make_curves([[CHANCE, (0.7, 0.1)], [CHANCE, CHANCE]])
    curves = Curves(**{**curves.__dict__, "signals": {"auc": np.array([[0.6, 0.8], [0.4, 0.45]])}})
    recorder = Recorder()
    simulate(curves, recorder, workers=1, seed=0)
    kinds = [(kind, tid) for kind, tid, _ in recorder.calls]
    first = kinds[0][1]
    assert kinds[:4] == [("add", first), ("result", first), ("result", first), ("end", first)]
    results = {(tid, r["training_iteration"]): r for kind, tid, r in recorder.calls if kind == "result"}
    assert results[("0", 2)] == {
        "epoch": 1.0,
        "training_iteration": 2,
        "acc": 0.7,
        "max_acc_gap": 0.1,
        "auc": 0.8,
    }
    assert results[("1", 1)]["auc"] == 0.4


def test_curves_from_a_record_and_its_refusals() -> None:
    rows = [
        {
            "trial": t,
            "report": k,
            "epoch": k / 2,
            "acc": 0.5 + 0.01 * k,
            "max_acc_gap": 0.1,
            "auc": 0.1 * k,
            "wall_time_s": 8.0,
        }
        for t in (3, 1)
        for k in (2, 1, 3, 4)
    ]
    curves = Curves.from_record(pd.DataFrame(rows))
    assert curves.trial_ids == ("1", "3")
    assert curves.objectives.shape == (2, 4, 2)
    assert list(curves.budget) == [0.5, 1.0, 1.5, 2.0]
    assert list(curves.report_seconds) == [2.0, 2.0]
    assert curves.objectives[0, :, 0] == pytest.approx([0.51, 0.52, 0.53, 0.54])
    assert list(curves.signals) == ["auc"] and curves.signals["auc"][1] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    uneven = pd.DataFrame(rows).assign(epoch=lambda d: np.where(d.trial == 3, d.epoch * 2, d.epoch))
    with pytest.raises(ValueError, match="same epochs"):
        Curves.from_record(uneven)


def test_record_reads_each_trials_history_from_its_final_checkpoint(tmp_path: Path) -> None:
    history = [{"epoch": 0.5 * (k + 1), "acc": 0.5 + 0.1 * k, "max_acc_gap": 0.1, "auc": 0.6,
                "worst_group_acc": 0.4, "train_loss": 0.7, "loss": 0.7} for k in range(2)]  # fmt: skip
    folders = []
    for number in range(3):
        folder = tmp_path / f"ckpt{number}"
        folder.mkdir()
        config = TrialConfig.from_dict({"method": "gr", "lr": 1e-3 * (number + 1), "w_max": 3.0}).as_dict()
        hist = history if number != 2 else history[:1]  # trial 2 was cut short: left out
        (folder / STATE_FILE).write_text(json.dumps({"epoch": 1.0, "history": hist, "config": config}))
        write_manifest(folder)
        folders.append(str(folder))
    trials = pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d"],
            "number": [0, 1, 2, 3],
            "status": ["completed", "completed", "completed", "failed"],
            "checkpoint": [*folders, None],
            "wall_time_s": [5.0, 6.0, 7.0, 1.0],
        }
    )
    table = record_curves.curves_table(trials, ["lr", "method", "w_max"], reports=2)
    assert list(table["trial"]) == [0, 0, 1, 1]
    assert list(table["report"]) == [1, 2, 1, 2]
    assert table["acc"].tolist() == pytest.approx([0.5, 0.6, 0.5, 0.6])
    assert table["lr"].tolist() == pytest.approx([1e-3, 1e-3, 2e-3, 2e-3])
    assert set(table["method"]) == {"gr"}
    out = tmp_path / "curves.parquet"
    record_curves.write_record(table, out, space_text="name: x\n", reports=2)
    back = pd.read_parquet(out)
    assert back.shape == table.shape
    import pyarrow.parquet as pq

    assert pq.read_schema(out).metadata[b"fairsearch.reports"] == b"2"


def test_the_record_space_file_loads_and_trains_every_trial_fully() -> None:
    path = ROOT / "benchmarks" / "spaces" / "curves.yaml"
    assert path.read_text().splitlines()[0].startswith("# .venv/bin/python benchmarks/record_curves.py")
    spec = load_space(path)
    fixed = TrialConfig.from_dict(spec.fixed)
    assert spec.scheduler is None
    assert spec.trials >= 100
    assert fixed.epochs * fixed.reports_per_epoch >= 8


def test_the_shipped_record_has_enough_full_curves() -> None:
    path = ROOT / "benchmarks" / "data" / "curves.parquet"
    record = pd.read_parquet(path)
    curves = Curves.from_record(record)
    assert curves.n_trials >= 100 and len(curves.budget) >= 8
    assert set(objective_keys()) | {"method", "lr", "lora_rank"} <= set(record.columns)
    assert path.stat().st_size < 1 << 20


def test_the_replay_table_runs_every_scheduler_on_hand_made_curves(improving: Any) -> None:
    mixed = improving
    rows = replay.scheduler_rows(mixed, {"grace_period": 1, "reduction_factor": 3}, random_budget=2.0)
    assert set(rows) >= {"no stopping", "fairsearch MO-ASHA", "Ray ASHA (accuracy)", "random stopping"}
    rows.pop("Syne Tune MOASHA")  # needs the bench extra; its own test below
    results = {
        name: curve_replay.replay_seeds(mixed, make, [0, 1, 2], workers=3) for name, make in rows.items()
    }
    table = [replay.summary(name, replays, mixed) for name, replays in results.items()]
    text = replay.format_table(table)
    assert text.splitlines()[2].startswith("no stopping")
    assert table[0]["epochs"] == pytest.approx((1.0, 1.0, 1.0))
    assert table[0]["front cut"] == pytest.approx((0.0, 0.0, 0.0))
    curves = replay.mean_curves(results, mixed)
    assert curves["no stopping"].iloc[-1] == pytest.approx(1.0)
    assert np.all(np.diff(curves["no stopping"]) >= -1e-12)


def test_syne_tune_moasha_is_driven_as_its_tuner_drives_it(mixed: Any) -> None:
    make = replay.scheduler_rows(mixed, {"grace_period": 1, "reduction_factor": 3}, random_budget=None)
    driver = make["Syne Tune MOASHA"](0)
    r = simulate(mixed, driver, workers=3, seed=0)
    assert 0 < r.stopped.sum() < 12  # it stops some at rung 1 or 3, not all
    assert set(np.unique(r.reports_made)) <= {2, 6, 8}  # its rungs: 1 and 3 epochs (reports 2 and 6)
    assert not driver._trials  # every started trial was removed or completed
    assert replay.SyneDriver.metric_names() == ["neg_acc", "max_acc_gap"]
