"""Seed-confirmed fronts: which trials are confirmed, the runs that confirm them, the front of the seed
means, the paired verdict against vanilla, the files, and a confirmation stage that resumes after a kill."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sweep_helpers import assert_each_epoch_trained_once, run_command, start_sweep, trained_parts, write_space

from fairsearch.cli import main
from fairsearch.errors import FairsearchError
from fairsearch.judge.thresholds import SplitScores, TrialScores
from fairsearch.output.confirm import (
    CONFIRM_FILE,
    ConfirmPlan,
    candidates,
    confirmed_front,
    confirmed_refit_front,
    format_confirmed,
    make_plan,
    paired_verdicts,
    read_confirmed,
    read_plan,
    write_confirmation,
    write_plan,
)
from fairsearch.output.fronts import CONFIRMED_REFIT_FRONT, REFIT_FRONT, REFIT_KIND
from fairsearch.output.report import write_report
from fairsearch.output.results import TrialRecord, read_front, read_results, write_results
from fairsearch.search.tune_trials import STATE_FOLDER
from fairsearch.train.checkpoint import SCORES_FILE

GROUPS = "param/group_by"


def _trials(rows: list[tuple[float, float, float]]) -> pd.DataFrame:
    """Completed trials numbered 0.. with (val acc, val gap, lower end of the gap interval)."""
    return pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(len(rows))],
            "number": range(len(rows)),
            "status": "completed",
            "param/method": ["vanilla" if i % 2 else "hybrid" for i in range(len(rows))],
            "param/lora_rank": pd.Series([4] * len(rows), dtype="Int64"),
            "param/seed": pd.Series([0] * len(rows), dtype="Int64"),
            "param/lam": [np.nan if i % 2 else 0.5 for i in range(len(rows))],
            GROUPS: "ethnicity",
            "val/acc": [r[0] for r in rows],
            "val/max_acc_gap": [r[1] for r in rows],
            "val/max_acc_gap_ci_low": [r[2] for r in rows],
            "checkpoint": [f"/ckpt/{i}" for i in range(len(rows))],
        }
    )


def test_candidates_are_the_front_then_trials_whose_gap_interval_reaches_it() -> None:
    trials = _trials(
        [
            (0.90, 0.20, 0.10),  # 0 front
            (0.80, 0.05, 0.00),  # 1 front
            (0.85, 0.30, 0.04),  # 2 off the front; at gap 0.04 it would be on it
            (0.70, 0.40, 0.20),  # 3 off the front, and still dominated by #1 at its lower end
            (0.88, 0.25, np.nan),  # 4 off the front, no interval
        ]
    )
    assert candidates(trials, max_trials=10) == [0, 1, 2]
    assert candidates(trials, max_trials=2) == [0, 1]
    failed = trials.assign(status=["failed", "completed", "completed", "completed", "completed"])
    assert candidates(failed, max_trials=10) == [4, 1, 2]  # without #0, #4 is on the front


def test_a_long_front_is_confirmed_evenly_along_its_length_both_ends_included() -> None:
    trials = _trials([(0.95 - 0.01 * i, 0.30 - 0.05 * i, 0.0) for i in range(5)])  # all on the front
    assert candidates(trials, max_trials=3) == [0, 2, 4]
    assert candidates(trials, max_trials=2) == [0, 4]
    assert candidates(trials, max_trials=1) == [0]


def test_a_plan_repeats_each_candidate_with_the_next_seeds_and_keeps_its_settings(tmp_path: Path) -> None:
    trials = _trials([(0.9, 0.2, 0.1), (0.8, 0.05, 0.0), (0.7, 0.5, 0.4)])
    read = {"/ckpt/0": {"acc": 0.91}, "/ckpt/1": {"acc": 0.79}}
    plan = make_plan(trials, seeds=2, max_trials=8, read_test=lambda path: read.get(path, {}))
    assert plan.candidates == (0, 1)
    assert [(r["confirms"], r["seed"]) for r in plan.runs] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    first = plan.runs[0]
    assert first["method"] == "hybrid" and first["lam"] == 0.5 and type(first["lora_rank"]) is int
    assert "lam" not in plan.runs[2]  # vanilla: no λ, as in its search run
    assert plan.original_test == {0: {"acc": 0.91}, 1: {"acc": 0.79}}
    write_plan(tmp_path, plan)
    assert read_plan(tmp_path) == plan
    (tmp_path / "confirm.json").write_text("{not json")
    with pytest.raises(FairsearchError, match=r"confirm.json: not a confirmation plan"):
        read_plan(tmp_path)
    assert read_plan(tmp_path / "elsewhere") is None


def _runs(rows: list[tuple[int, int, float, float]]) -> pd.DataFrame:
    """Completed confirmation runs: (number confirmed, seed, val acc, val gap)."""
    return pd.DataFrame(
        {
            "trial_id": [f"c{i}" for i in range(len(rows))],
            "number": [r[0] for r in rows],
            "status": "completed",
            "param/seed": [r[1] for r in rows],
            "val/acc": [r[2] for r in rows],
            "val/max_acc_gap": [r[3] for r in rows],
            "val/max_acc_gap_ci_low": 0.0,
            "test/acc": [r[2] - 0.01 for r in rows],
        }
    )


def test_the_confirmed_front_is_the_front_of_seed_means_with_t_intervals() -> None:
    trials = _trials([(0.90, 0.02, 0.0), (0.85, 0.10, 0.0)])  # #0 looked best on both: a lucky seed
    plan = ConfirmPlan((0, 1), (), {0: {"acc": 0.89}, 1: {"acc": 0.84}})
    runs = _runs([(0, 1, 0.80, 0.20), (0, 2, 0.82, 0.18), (1, 1, 0.86, 0.08), (1, 2, 0.84, 0.12)])
    front = confirmed_front(trials, runs, plan)
    assert front["number"].tolist() == [1]  # #0's means (0.84, 0.133) are dominated by #1's (0.85, 0.10)
    row = front.iloc[0]
    assert row["front"] == "confirmed" and row["n_seeds"] == 3 and row["seeds"] == "0,1,2"
    accs = np.array([0.85, 0.86, 0.84])
    assert row["val/acc"] == pytest.approx(accs.mean())
    half = 4.302652729911275 * accs.std(ddof=1) / math.sqrt(3)  # t(0.975, 2)
    assert (row["val/acc_seeds_low"], row["val/acc_seeds_high"]) == pytest.approx(
        (accs.mean() - half, accs.mean() + half)
    )
    assert row["test/acc"] == pytest.approx(np.mean([0.84, 0.85, 0.83]))
    assert row["shift/acc"] == pytest.approx(row["test/acc"] - row["val/acc"])
    assert "val/max_acc_gap_ci_low" not in front  # one run's interval is not averaged over seeds
    assert "param/seed" not in front and row["param/method"] == "vanilla"
    assert row["hypervolume"] == pytest.approx(0.85 * (1 - 0.10))
    # a run that failed or is still running is not a seed
    unfinished = runs.assign(status=["completed", "failed", "running", "completed"])
    spread = confirmed_front(trials, _runs([(1, 1, 0.99, 0.0), (1, 2, 0.99, 0.4)]), plan).set_index("number")
    low, high = spread.loc[1, ["val/max_acc_gap_seeds_low", "val/max_acc_gap_seeds_high"]]
    assert low == 0.0 and high < 1.0 and spread.loc[1, "val/acc_seeds_high"] == 1.0  # clipped to [0, 1]
    partly = confirmed_front(trials, unfinished, plan)  # #0: (0.85, 0.11) beats #1: (0.845, 0.11)
    assert partly["number"].tolist() == [0] and partly["n_seeds"].tolist() == [2]
    one = confirmed_front(trials, runs.iloc[:0], plan)
    assert (one["n_seeds"] == 1).all() and one["val/acc_seeds_low"].isna().all()


def test_the_confirmed_front_s_columns_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    """The same inputs give the same columns in the same order in every process (a set of metric names
    once ordered the ``shift/`` columns by Python's per-process string hashing)."""
    import pickle
    import sys

    trials = _trials([(0.90, 0.02, 0.0), (0.85, 0.10, 0.0)])
    plan = ConfirmPlan((0, 1), (), {0: {"acc": 0.89}, 1: {"acc": 0.84}})
    runs = _runs([(0, 1, 0.80, 0.20), (1, 1, 0.86, 0.08)])
    (tmp_path / "inputs.pkl").write_bytes(pickle.dumps((trials, runs, plan)))
    script = (
        "import pickle, sys; from fairsearch.output.confirm import confirmed_front; "
        "t, r, p = pickle.loads(open(sys.argv[1], 'rb').read()); print(list(confirmed_front(t, r, p).columns))"
    )
    columns = {
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "inputs.pkl")],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
        for seed in range(6)
    }
    assert len(columns) == 1 and "shift/acc" in columns.pop()


def _scored_record(
    root: Path, trial_id: str, number: int, seed: int, accs: tuple[float, float]
) -> TrialRecord:
    """A completed run whose checkpoint keeps test scores: right on each group's share ``accs`` of the
    same 1900 test images (1500 majority, 400 minority), its errors drawn by ``seed``."""
    rng = np.random.default_rng(100 + seed)
    group = np.repeat([0, 1], [1500, 400])
    label = np.random.default_rng(0).integers(0, 2, group.size)
    right = rng.random(group.size) < np.asarray(accs)[group]
    decision = np.where(right, label, 1 - label)
    split = SplitScores(np.where(decision == 1, 0.9, 0.1), label, group)
    checkpoint = root / f"ckpt-{trial_id}"
    checkpoint.mkdir()
    TrialScores("ethnicity", ("maj", "min"), split, split).save(checkpoint / SCORES_FILE)
    method = "vanilla" if number == 1 else "hybrid"
    params = {"method": method, "seed": seed, "group_by": "ethnicity"}
    metrics = {"acc": 0.9 - 0.01 * (number != 1), "max_acc_gap": 0.2 - 0.1 * (number != 1)}
    return TrialRecord(trial_id, number, "completed", params, metrics, 2.0, checkpoint=str(checkpoint))


@pytest.mark.parametrize(
    ("fair_accs", "expected"),
    [
        (
            (0.92, 0.86),
            (
                "#0 has the clearly lower MaxAccGap (",
                "points), by raising min; #0 is clearly more accurate overall",
            ),
        ),
        (
            (0.75, 0.70),
            (
                "#0 has the clearly lower MaxAccGap (",
                "by levelling down: maj clearly lower; #1 is clearly more accurate",
            ),
        ),
        (
            (0.92, 0.70),
            ("the data do not settle which side has the lower MaxAccGap; overall accuracy: no clear",),
        ),
    ],
    ids=["raises-the-minority", "levels-down", "no-difference"],
)
def test_the_confirmed_front_judges_fair_members_against_vanilla_on_the_same_images(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fair_accs: tuple[float, float],
    expected: tuple[str, ...],
) -> None:
    """Both configurations' three seeds (the search run and two confirmation runs), compared image by image."""
    vanilla_accs = (0.92, 0.70)
    search = [
        _scored_record(tmp_path, "s0", 0, 0, fair_accs),
        _scored_record(tmp_path, "s1", 1, 0, vanilla_accs),
    ]
    write_results(tmp_path, search, {})
    runs = [
        _scored_record(tmp_path, f"c{number}{seed}", number, seed, accs)
        for number, accs in ((0, fair_accs), (1, vanilla_accs))
        for seed in (1, 2)
    ]
    write_confirmation(tmp_path, runs, {}, ConfirmPlan((0, 1), (), {}))
    _, front = read_confirmed(tmp_path)
    assert sorted(front["number"]) == [0, 1]
    verdicts = paired_verdicts(tmp_path, front)
    assert list(verdicts) == [0]
    assert verdicts[0].startswith("vs vanilla #1 (paired, 3 vs 3 seeds): ")
    assert all(fragment in verdicts[0] for fragment in expected), verdicts[0]
    assert f"    {verdicts[0]}" in format_confirmed(front, verdicts).splitlines()
    capsys.readouterr()
    assert main(["pareto", str(tmp_path)]) == 0
    assert f"    {verdicts[0]}" in capsys.readouterr().out.splitlines()  # what `pareto` and `run` print


def test_a_member_whose_runs_kept_no_scores_is_not_judged(tmp_path: Path) -> None:
    search = [
        _scored_record(tmp_path, "s0", 0, 0, (0.9, 0.8)),
        _scored_record(tmp_path, "s1", 1, 0, (0.9, 0.7)),
    ]
    (Path(str(search[0].checkpoint)) / SCORES_FILE).unlink()
    write_results(tmp_path, search, {})
    write_confirmation(tmp_path, [], {}, ConfirmPlan((0, 1), (), {}))
    _, front = read_confirmed(tmp_path)
    assert paired_verdicts(tmp_path, front) == {
        0: "vs vanilla #1: no paired comparison (a side's checkpoints kept no test scores)"
    }


def _record(trial_id: str, number: int, seed: int, acc: float, gap: float) -> TrialRecord:
    params = {"method": "hybrid" if number == 0 else "vanilla", "seed": seed, "group_by": "ethnicity"}
    metrics = {"acc": acc, "max_acc_gap": gap, "max_acc_gap_ci_low": 0.0}
    metrics |= {"acc/ethnicity/Hispanic": acc - gap, "acc/ethnicity/Non-Hispanic": acc}
    metrics |= {"p_pos/ethnicity/Hispanic": 0.4, "p_pos/ethnicity/Non-Hispanic": 0.5}
    return TrialRecord(trial_id, number, "completed", params, metrics, epochs_done=2.0)


def test_confirmation_files_keep_the_search_front_and_add_the_confirmed_one(tmp_path: Path) -> None:
    search = [_record("s0", 0, 0, 0.90, 0.05), _record("s1", 1, 0, 0.92, 0.20)]
    test = {"s0": {"acc": 0.89, "max_acc_gap": 0.07}, "s1": {"acc": 0.91, "max_acc_gap": 0.22}}
    write_results(tmp_path, search, test)
    _, before = read_results(tmp_path)
    plan = ConfirmPlan((0, 1), (), {0: test["s0"], 1: test["s1"]})
    runs = [_record("c0", 0, 1, 0.88, 0.07), _record("c1", 1, 1, 0.93, 0.18)]
    run_test = {"c0": {"acc": 0.87, "max_acc_gap": 0.08, "acc/ethnicity/Hispanic": 0.8}}
    front = write_confirmation(tmp_path, runs, run_test, plan)

    _, after = read_results(tmp_path)
    pd.testing.assert_frame_equal(after, before)  # the search's front is read back unchanged
    table, confirmed = read_confirmed(tmp_path)
    assert len(table) == 2 and table["param/seed"].tolist() == [1, 1]
    assert table.loc[table["trial_id"] == "c0", "test/acc"].item() == 0.87
    assert np.isnan(table.loc[table["trial_id"] == "c1", "test/acc"].item())
    assert confirmed["number"].tolist() == front["number"].tolist() == [1, 0]
    assert confirmed.set_index("number").loc[0, "test/acc"] == pytest.approx((0.89 + 0.87) / 2)
    text = format_confirmed(confirmed)
    assert text.startswith("Confirmed front: 2 configuration(s)")
    assert "#0     hybrid   2" in text and "test groups:" in text and "vs vanilla" not in text  # none given
    assert read_confirmed(tmp_path / "none")[1].empty

    html = write_report(tmp_path).read_text()
    assert "<h2>Seed-confirmed front</h2>" in html and '<table id="confirmed">' in html
    section = html[html.index("<h2>Seed-confirmed front</h2>") :]
    mean_acc = confirmed.set_index("number").loc[0, "val/acc"]
    assert f"{100 * mean_acc:.1f}" in section and "vs vanilla #1: no paired comparison" in section
    assert section.count("data:image/png;base64,") == 1


def test_confirmation_keeps_every_other_front_as_the_search_wrote_it(tmp_path: Path) -> None:
    """Fronts the confirmation does not write (a derived one, here a stand-in refit front) stay, row for
    row."""
    search = [_record("s0", 0, 0, 0.90, 0.05), _record("s1", 1, 0, 0.92, 0.20)]
    test = {"s0": {"acc": 0.89, "max_acc_gap": 0.07}, "s1": {"acc": 0.91, "max_acc_gap": 0.22}}

    def other_front(trials: pd.DataFrame, front: pd.DataFrame) -> pd.DataFrame:
        return front.drop(columns=["front", "hypervolume"]).assign(
            front=REFIT_FRONT, kind=REFIT_KIND, hypervolume=0.5
        )

    write_results(tmp_path, search, test, derived_fronts=(other_front,))
    before = pd.read_parquet(tmp_path / "pareto.parquet")
    plan = ConfirmPlan((0, 1), (), {0: test["s0"], 1: test["s1"]})
    write_confirmation(tmp_path, [_record("c0", 0, 1, 0.88, 0.07)], {}, plan)
    after = pd.read_parquet(tmp_path / "pareto.parquet")
    kept = after[after["front"] == REFIT_FRONT].reset_index(drop=True)
    expected = before[before["front"] == REFIT_FRONT].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept[expected.columns], expected)
    assert set(after["front"]) == {"search", REFIT_FRONT, "confirmed"}


def test_the_refit_front_s_members_are_confirmed_too_at_most_max_trials_of_them(tmp_path: Path) -> None:
    trials = _trials([(0.9, 0.2, 0.1), (0.8, 0.05, 0.0), (0.7, 0.5, 0.4), (0.6, 0.6, 0.5), (0.5, 0.7, 0.6)])
    refit = pd.DataFrame({"number": [2, 1, 3, 4], "feasible": [True, True, False, True]})
    plan = make_plan(trials, seeds=1, max_trials=4, read_test=lambda path: {}, refit_front=refit)
    assert plan.candidates == (0, 1, 2, 3, 4) and plan.refit_candidates == (2, 1, 3, 4)
    assert [r["confirms"] for r in plan.runs] == [0, 1, 2, 3, 4]  # #1 is both: trained once
    fewer = make_plan(trials, seeds=1, max_trials=2, read_test=lambda path: {}, refit_front=refit)
    assert fewer.candidates == (0, 1, 2, 4) and fewer.refit_candidates == (2, 4)  # both ends of the front
    write_plan(tmp_path, plan)
    assert read_plan(tmp_path) == plan
    # a plan written before refits were confirmed has none; one naming a stranger is not a plan
    old = (tmp_path / "confirm.json").read_text().replace(', "refit_candidates": [2, 1, 3, 4]', "")
    (tmp_path / "confirm.json").write_text(old)
    assert read_plan(tmp_path) == ConfirmPlan(plan.candidates, plan.runs, plan.original_test)
    (tmp_path / "confirm.json").write_text(old[:-1] + ', "refit_candidates": [7]}')
    with pytest.raises(FairsearchError, match=r"refit_candidates \[7\] are not among its candidates"):
        read_plan(tmp_path)
    # with constraints, the refit members that meet them where any does (here #3 is left out first)
    meets = trials.assign(feasible=True)
    from fairsearch.spec.config import Constraint

    limit = (Constraint(key="max_acc_gap", bound=1.0, side="max"),)
    plan = make_plan(meets, 1, 8, lambda path: {}, constraints=limit, refit_front=refit)
    assert plan.refit_candidates == (2, 1, 4)
    assert make_plan(trials, 1, 8, lambda path: {}).refit_candidates == ()


def _refit_rows(rows: list[tuple[int, int, float, float, float]]) -> pd.DataFrame:
    """Refit rows: (number, seed, val acc, val gap, test worst group)."""
    return pd.DataFrame(
        {
            "trial_id": [f"t{r[0]}" if r[1] == 0 else f"c{r[0]}-{r[1]}" for r in rows],
            "number": [r[0] for r in rows],
            "status": "completed",
            "param/method": "vanilla",
            "param/seed": [r[1] for r in rows],
            "val/acc": [r[2] for r in rows],
            "val/max_acc_gap": [r[3] for r in rows],
            "val/acc_ci_low": 0.0,
            "test/worst_group_acc": [r[4] for r in rows],
            "kind": REFIT_KIND,
        }
    )


def test_the_confirmed_refit_front_is_the_front_of_the_refit_heads_seed_means() -> None:
    first = _refit_rows([(0, 0, 0.90, 0.02, 0.85), (1, 0, 0.85, 0.10, 0.80)])  # #0 looked best on both
    runs = _refit_rows([(0, 1, 0.80, 0.20, 0.70), (0, 2, 0.82, 0.18, 0.72), (1, 1, 0.86, 0.08, 0.81)])
    plan = ConfirmPlan((0, 1, 2), (), {}, refit_candidates=(0, 1))
    front = confirmed_refit_front(first, runs, plan)
    assert front["number"].tolist() == [1]  # #0's means (0.84, 0.133) are dominated by #1's (0.855, 0.09)
    row = front.iloc[0]
    assert row["front"] == CONFIRMED_REFIT_FRONT and row["kind"] == REFIT_KIND
    assert row["n_seeds"] == 2 and row["seeds"] == "0,1"
    assert row["val/acc"] == pytest.approx(0.855) and row["test/worst_group_acc"] == pytest.approx(0.805)
    assert "val/acc_ci_low" not in front and not np.isnan(row["val/acc_seeds_low"])
    assert confirmed_refit_front(first, runs, ConfirmPlan((0, 1), (), {})).empty  # no refit candidates
    assert confirmed_refit_front(first.iloc[:0], runs, plan).empty  # no refit front to start from


def test_confirmation_refits_each_run_and_writes_the_confirmed_refit_front(tmp_path: Path) -> None:
    search = [_record("s0", 0, 0, 0.90, 0.05), _record("s1", 1, 0, 0.92, 0.20)]
    test = {"s0": {"acc": 0.89, "max_acc_gap": 0.07}, "s1": {"acc": 0.91, "max_acc_gap": 0.22}}

    def search_refit(trials: pd.DataFrame, front: pd.DataFrame) -> pd.DataFrame:
        rows = front.drop(columns=["front", "hypervolume"]).assign(kind=REFIT_KIND)
        return rows.assign(**{"val/acc": rows["val/acc"] - 0.01, "test/acc": 0.5}, front=REFIT_FRONT)

    write_results(tmp_path, search, test, derived_fronts=(search_refit,))
    seen: list[list[str]] = []

    def refit(runs: pd.DataFrame) -> pd.DataFrame:  # as refit_rows makes them: one per completed run
        seen.append(list(runs.columns))
        done = runs[runs["status"] == "completed"]
        return done.assign(**{"val/acc": done["val/acc"] - 0.02, "test/acc": 0.6}, kind=REFIT_KIND)

    plan = ConfirmPlan((0, 1), (), {0: test["s0"], 1: test["s1"]}, refit_candidates=(0,))
    runs = [_record("c0", 0, 1, 0.88, 0.07), _record("c1", 1, 1, 0.93, 0.18)]
    write_confirmation(tmp_path, runs, {"c0": {"acc": 0.87}}, plan, refit)
    assert seen and not any(
        c.startswith("test/") for c in seen[-1]
    )  # the trained model's test is not the refit's
    front = read_front(tmp_path, CONFIRMED_REFIT_FRONT)  # read back as every reader reads it
    assert front["number"].tolist() == [0] and front["n_seeds"].tolist() == [2]
    assert front["val/acc"].item() == pytest.approx(((0.90 - 0.01) + (0.88 - 0.02)) / 2)
    assert front["test/acc"].item() == pytest.approx((0.5 + 0.6) / 2)
    assert len(read_front(tmp_path, REFIT_FRONT)) == 2  # the search's refit front is kept
    # a resume's refresh without the refit keeps the confirmed refit rows as they were
    from fairsearch.output.confirm import refresh_confirmed

    refresh_confirmed(tmp_path, plan)
    pd.testing.assert_frame_equal(read_front(tmp_path, CONFIRMED_REFIT_FRONT), front)
    assert "Confirmed refit front (each seed's run" in main_output(["pareto", str(tmp_path)])


def main_output(argv: list[str]) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_confirmation_runs_after_the_search_and_resume_after_a_driver_kill(tmp_path: Path) -> None:
    space = write_space(
        tmp_path, "conf", 3, fixed={"refit_last_layer": True}, confirm={"seeds": 1, "max_trials": 3}
    )
    results = tmp_path / "results"
    env = {**os.environ, "FAIRSEARCH_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}
    proc = start_sweep(run_command(space, results), env)
    confirm_dir = results / ".tune" / ".confirm" / "conf"
    deadline = time.monotonic() + 500
    while time.monotonic() < deadline and not list(confirm_dir.glob(f"{STATE_FOLDER}/*/report-*")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-confirmation: the driver and its Ray, no clean-up
    proc.communicate(timeout=120)
    plan = read_plan(results / "conf")
    assert plan is not None and len(plan.runs) == len(plan.candidates) >= 1

    resumed = subprocess.run(
        run_command(space, results), env=env, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Confirmed front:" in resumed.stdout
    assert read_plan(results / "conf") == plan  # the same candidates, not a new plan
    runs = pd.read_parquet(results / "conf" / CONFIRM_FILE)
    assert sorted(zip(runs["number"], runs["param/seed"], strict=True)) == sorted(
        (r["confirms"], r["seed"]) for r in plan.runs
    )
    assert (runs["status"] == "completed").all() and runs["trial_id"].is_unique
    assert runs["test/acc"].notna().all()
    trials = pd.read_parquet(results / "conf" / "trials.parquet")
    assert len(trials) == 3 and "param/seed" not in trials  # the search ran the default seed, 0
    # each confirmation run trained each epoch once, in its own store, and every report reached Tune
    assert len(trained_parts(confirm_dir)) == len(plan.runs)
    assert_each_epoch_trained_once(confirm_dir, 2)
    _, confirmed = read_confirmed(results / "conf")
    assert len(confirmed) >= 1 and (confirmed["n_seeds"] == 2).all()
    assert set(confirmed["number"]) <= set(plan.candidates)
    # the refit front's members were confirmed too: each seed's run refitted, its means a front of their own
    assert len(plan.refit_candidates) >= 1 and set(plan.refit_candidates) <= set(plan.candidates)
    refit = read_front(results / "conf", REFIT_FRONT)
    assert set(plan.refit_candidates) <= set(refit["number"])
    refitted = read_front(results / "conf", CONFIRMED_REFIT_FRONT)
    assert len(refitted) >= 1 and (refitted["n_seeds"] == 2).all() and (refitted["kind"] == REFIT_KIND).all()
    assert set(refitted["number"]) <= set(plan.refit_candidates)
    assert "Confirmed refit front" in resumed.stdout
