"""Paired comparisons: the intervals cover the true differences (0 included) in simulation, and
``fairsearch compare`` gives them for two trials of a sweep, on the very images both were tested on, a
trial's side deciding as trained, at a threshold, or at the group or single thresholds of the row of the
thresholded fronts that ``fairsearch export`` takes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from refusals import refused
from scored_sweeps import write_scored_sweep

from fairsearch.cli import main
from fairsearch.errors import FairsearchError
from fairsearch.export.choice import TRAINABLE_FILE, choose_export
from fairsearch.judge.paired import paired_comparison, verdict
from fairsearch.judge.thresholds import NO_GROUP, SplitScores, TrialScores
from fairsearch.output.compare import compare_trials, format_comparison
from fairsearch.output.results import (
    TrialRecord,
    read_parquet_metadata,
    write_parquet_atomic,
    write_results,
)
from fairsearch.output.threshold_fronts import derived_fronts, format_thresholds
from fairsearch.spec.config import OBJECTIVES, Constraint, Constraints, TrialConfig
from fairsearch.train.checkpoint import SCORES_FILE, STATE_FILE, TEST_METRICS_FILE, write_manifest


def _pair(
    rng: np.random.Generator, sizes: list[int], acc_a: list[float], acc_b: list[float], rho: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decisions of two models on the same images: right with each group's probability, their errors
    shared on a share ``rho`` of the images (models trained alike err on the same hard images)."""
    group = np.concatenate([np.full(n, g) for g, n in enumerate(sizes)])
    label = rng.integers(0, 2, group.size)
    u = rng.random(group.size)
    v = np.where(rng.random(group.size) < rho, u, rng.random(group.size))
    a = np.where(u < np.asarray(acc_a)[group], label, 1 - label)
    b = np.where(v < np.asarray(acc_b)[group], label, 1 - label)
    return a, b, label, group


@pytest.mark.parametrize(
    ("sizes", "acc_a", "acc_b", "rho"),
    [
        ([900, 100], [0.95, 0.80], [0.95, 0.80], 0.8),  # no difference at all
        ([900, 100], [0.95, 0.85], [0.95, 0.78], 0.7),  # A raises the minority by 7 points
        ([500, 150, 50], [0.90, 0.85, 0.80], [0.92, 0.85, 0.74], 0.6),  # three groups, mixed
    ],
    ids=["no-difference", "minority-raised", "three-groups"],
)
def test_paired_intervals_cover_the_true_differences(
    sizes: list[int], acc_a: list[float], acc_b: list[float], rho: float
) -> None:
    """Share of 400 simulated test sets whose interval holds the true difference: at least 0.93 for
    every metric (the estimate's own spread at 400 draws is about ±0.011)."""
    truth = {
        "acc": float(np.dot(sizes, np.subtract(acc_a, acc_b)) / sum(sizes)),
        "worst_group_acc": min(acc_a) - min(acc_b),
        "max_acc_gap": (max(acc_a) - min(acc_a)) - (max(acc_b) - min(acc_b)),
        **{f"acc/g{g}": acc_a[g] - acc_b[g] for g in range(len(sizes))},
    }
    rng = np.random.default_rng(7)
    hits: dict[str, list[bool]] = {key: [] for key in truth}
    for draw in range(400):
        a, b, label, group = _pair(rng, sizes, acc_a, acc_b, rho)
        for d in paired_comparison(
            a, b, label, group, [f"g{g}" for g in range(len(sizes))], n_boot=400, seed=draw
        ):
            if d.metric in truth:
                hits[d.metric].append(d.low <= truth[d.metric] <= d.high)
    coverage = {key: float(np.mean(v)) for key, v in hits.items()}
    assert min(coverage.values()) >= 0.93, coverage


def test_identical_decisions_differ_by_nothing_and_the_intervals_hold_their_points() -> None:
    rng = np.random.default_rng(0)
    a, b, label, group = _pair(rng, [200, 40], [0.9, 0.7], [0.85, 0.75], 0.5)
    same = paired_comparison(a, a, label, group, ["big", "small"], n_boot=300)
    assert all(d.diff == d.low == d.high == 0.0 and not d.clear for d in same)
    result = paired_comparison(a, b, label, group, ["big", "small"], n_boot=300, seed=3)
    assert [d.metric for d in result] == [
        "acc", "acc/big", "p_pos/big", "acc/small", "p_pos/small", "worst_group_acc", "max_acc_gap",
    ]  # fmt: skip
    assert all(d.low <= d.diff <= d.high for d in result)
    by = {d.metric: d for d in result}
    assert by["acc/small"].a == pytest.approx(np.mean(a[group == 1] == label[group == 1]))
    assert by["p_pos/big"].b == pytest.approx(np.mean(b[group == 0]))
    assert by["acc"].n == 240 and by["acc/small"].n == 40
    assert paired_comparison(a, b, label, group, ["big", "small"], n_boot=300, seed=3) == result  # seeded
    with pytest.raises(ValueError, match="must hold the same N > 0 images"):
        paired_comparison(a[:-1], b, label, group, ["big", "small"])
    with pytest.raises(ValueError, match="label must hold 0 and 1 only"):
        paired_comparison(a, b, label + 1, group, ["big", "small"])


def test_runs_of_a_model_are_compared_by_their_mean_per_image() -> None:
    """Seeds of a configuration ([R, N] decisions): each metric is the runs' mean (a group's accuracy the
    mean of its runs' accuracies), the images are resampled with all their runs, and one run, or R equal
    runs, compare as that run alone."""
    rng = np.random.default_rng(4)
    a, b, label, group = _pair(rng, [300, 60], [0.9, 0.7], [0.85, 0.8], 0.5)
    a2, b2, _, _ = _pair(rng, [300, 60], [0.9, 0.7], [0.85, 0.8], 0.5)
    names = ["big", "small"]
    single = paired_comparison(a, b, label, group, names, n_boot=300, seed=1)
    assert paired_comparison(np.stack([a, a, a]), b[None], label, group, names, n_boot=300, seed=1) == single
    runs = paired_comparison(np.stack([a, a2]), np.stack([b, b2, b]), label, group, names, n_boot=300, seed=1)
    by = {d.metric: d for d in runs}
    small = group == 1
    runs_acc = [np.mean(x[small] == label[small]) for x in (a, a2)]
    assert by["acc/small"].a == pytest.approx(np.mean(runs_acc))
    assert by["p_pos/big"].b == pytest.approx(np.mean([np.mean(x[group == 0]) for x in (b, b2, b)]))
    accs = {
        g: np.mean([np.mean(x[group == k] == label[group == k]) for x in (a, a2)])
        for k, g in enumerate(names)
    }
    assert by["max_acc_gap"].a == pytest.approx(max(accs.values()) - min(accs.values()))
    assert all(d.low <= d.diff <= d.high for d in runs)
    with pytest.raises(ValueError, match="must hold the same N > 0 images"):
        paired_comparison(np.stack([a, a2])[:, :-1], b, label, group, names)


def test_pairing_is_what_makes_a_small_difference_clear() -> None:
    """Two models that differ on 25 of 1000 images (A right on 20 of them): separately their accuracy
    intervals overlap, paired the difference is clear."""
    label = np.zeros(1000, dtype=np.int64)
    a = np.zeros(1000, dtype=np.int64)
    a[:100] = 1  # both wrong on the first 100 images, …
    b = a.copy()
    b[100:120] = 1  # … B also wrong on 20 more,
    a[120:125] = 1  # … A on 5 others
    group = np.zeros(1000, dtype=np.int64)
    d = paired_comparison(a, b, label, group, ["all"], n_boot=1000)[0]
    assert d.diff == pytest.approx(0.015) and d.clear and d.low > 0


# ----------------------------------------------------------------------------------- fairsearch compare
GROUPS = ("Non-Hispanic", "Hispanic", "unknown")


def _sweep(tmp_path: Path, other_images: bool = False) -> Path:
    """A sweep of three completed trials tested on the same 400 images (trial 2 on other images when
    ``other_images``), and trial 3 without scores."""
    rng = np.random.default_rng(1)
    group = rng.choice(3, size=400, p=[0.8, 0.15, 0.05]).astype(np.int64)
    label = (rng.random(400) < 0.4).astype(np.int64)
    records = []
    for number, bias in enumerate([1.5, 0.0, 0.7, 0.0]):
        logit = 2.0 * (2 * label - 1) + rng.normal(0, 1.5, 400) - bias * (group == 1)
        test = SplitScores(1 / (1 + np.exp(-logit)), label, group)
        if other_images and number == 2:
            test = SplitScores(test.score, 1 - label, group)
        checkpoint = tmp_path / f"ckpt{number}"
        checkpoint.mkdir()
        if number < 3:
            TrialScores("ethnicity", GROUPS, test, test).save(checkpoint / SCORES_FILE)
        records.append(
            TrialRecord(f"t{number}", number, "completed", {"method": ["vanilla", "fr", "gr", "vanilla"][number],
                        "lam": 0.3, "w_max": 4.0}, {"acc": 0.8, "max_acc_gap": 0.1 + number / 10}, 3.0, 1.0,
                        None, str(checkpoint), 1.0)
        )  # fmt: skip
    write_results(tmp_path / "sweep", records, {})
    return tmp_path / "sweep"


def test_compare_gives_the_paired_differences_of_two_trials_on_their_test_scores(tmp_path: Path) -> None:
    folder = _sweep(tmp_path)
    side_a, side_b, result = compare_trials(folder, "1", "0@0.3", n_boot=300)
    scores = TrialScores.from_arrays(dict(np.load(tmp_path / "ckpt0" / SCORES_FILE)), "t0")
    expected = paired_comparison(
        (
            TrialScores.from_arrays(dict(np.load(tmp_path / "ckpt1" / SCORES_FILE)), "t1").test.score >= 0.5
        ).astype(int),
        (scores.test.score >= 0.3).astype(int),
        scores.test.label,
        scores.test.group,
        GROUPS,
        n_boot=300,
    )
    assert result == expected and side_b.how == "at threshold 0.3" and int(side_a.row["number"]) == 1
    text = format_comparison(side_a, side_b, result)
    assert text.splitlines()[0] == "A: trial 1 (fr, lam=0.3)"
    assert text.splitlines()[1] == "B: trial 0 (vanilla, -) at threshold 0.3"
    assert "on the same 400 test images, groups of ethnicity" in text
    assert f"acc Hispanic (n={int((scores.test.group == 1).sum())})" in text
    assert text.splitlines()[-1] == "verdict: " + verdict(result)


def test_the_verdict_says_whether_a_lower_gap_raised_the_worst_group_or_levelled_down() -> None:
    rng = np.random.default_rng(2)
    raised = paired_comparison(*_pair(rng, [2000, 400], [0.90, 0.88], [0.90, 0.70], 0.9), ["maj", "min"])
    assert verdict(raised).startswith("A has the clearly lower MaxAccGap (") and "by raising min" in verdict(
        raised
    )
    down = paired_comparison(*_pair(rng, [2000, 400], [0.72, 0.70], [0.90, 0.70], 0.9), ["maj", "min"])
    assert "by levelling down: maj clearly lower" in verdict(
        down
    ) and "B is clearly more accurate" in verdict(down)
    same = paired_comparison(*_pair(rng, [200, 40], [0.9, 0.8], [0.9, 0.8], 0.9), ["maj", "min"])
    assert verdict(same).startswith("the data do not settle")


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ("7", "0", "has no completed trial 7; completed trials: [0, 1, 2, 3]"),
        ("1@1.5", "0", "1@1.5 is not a trial: give a trial number (7), a trial at a decision threshold"),
        ("one", "0", "compare: one is not a trial"),
        ("3", "0", "trial 3 of"),  # no scores in its checkpoint
    ],
)
def test_compare_refuses_what_it_cannot_compare_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], a: str, b: str, message: str
) -> None:
    folder = _sweep(tmp_path)
    assert main(["compare", str(folder), a, b]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_compare_refuses_trials_tested_on_different_images(tmp_path: Path) -> None:
    with pytest.raises(FairsearchError, match="were not tested on the same images"):
        compare_trials(_sweep(tmp_path, other_images=True), "2", "0")


# ------------------------------------------------------------- fairsearch compare 7@group / 7@single
def _thresholded_sweep(root: Path, constraints: Constraints = ()) -> Path:
    """``scored_sweeps``' sweep with its thresholded fronts, its ``unknown`` images put in no group (id −1,
    so group thresholds hold a :data:`NO_GROUP` one), and trial 0's checkpoint complete enough for
    ``choose_export``: a state, a weights file, test metrics and the manifest."""
    records, test, by_trial = write_scored_sweep(root / "checkpoints")
    for number, scores in enumerate(by_trial.values()):
        out = [
            SplitScores(s.score, s.label, np.where(s.group == 2, -1, s.group))
            for s in (scores.val, scores.test)
        ]
        TrialScores(scores.group_by, scores.group_names, *out).save(
            root / "checkpoints" / f"ckpt{number}" / SCORES_FILE
        )
    checkpoint = root / "checkpoints" / "ckpt0"
    state = {"epoch": 3, "history": [{}], "config": TrialConfig().as_dict()}
    (checkpoint / STATE_FILE).write_text(json.dumps(state))
    (checkpoint / TRAINABLE_FILE).write_bytes(b"weights")
    (checkpoint / TEST_METRICS_FILE).write_text(json.dumps(test["t0"]))
    write_manifest(checkpoint)
    folder = root / "results" / "scored"
    write_results(folder, records, test, OBJECTIVES, constraints, derived_fronts(OBJECTIVES))
    return folder


def _export_rule_row(folder: Path, number: int, kind: str, feasible_only: bool = False) -> pd.Series:
    """Trial ``number``'s row of ``kind`` on the thresholded fronts as export's rule picks it, read straight
    from ``pareto.parquet``: the most accurate on validation (of the feasible ones), the smaller gap on ties."""
    rows = pd.read_parquet(folder / "pareto.parquet")
    rows = rows[
        (rows["number"] == number)
        & (rows["kind"] == kind)
        & rows["front"].isin(["vanilla_thresholds", "combined"])
    ]
    if feasible_only:
        rows = rows[rows["feasible"].astype(bool)]
    return rows.sort_values(["val/acc", "val/max_acc_gap"], ascending=[False, True]).iloc[0]


def test_the_group_side_decides_each_image_at_its_groups_threshold(tmp_path: Path) -> None:
    folder = _thresholded_sweep(tmp_path)
    row = _export_rule_row(folder, 0, "group_thresholds")
    side, plain, result = compare_trials(folder, "0@group", "0", n_boot=200)
    thresholds = json.loads(str(row["thresholds"]))
    arrays = np.load(tmp_path / "checkpoints" / "ckpt0" / SCORES_FILE)
    names = [str(n) for n in arrays["group_names"]]
    score, label, group = arrays["test_score"], arrays["test_label"], arrays["test_group"]
    assert (group < 0).any() and NO_GROUP in thresholds  # images in no group have their own threshold
    cut = np.array([thresholds[names[g]] if g >= 0 else thresholds[NO_GROUP] for g in group])
    decided = (score >= cut).astype(np.int64)
    assert side.thresholds == thresholds and np.array_equal(side.decisions, decided)
    assert not np.array_equal(decided, score >= 0.5)  # the thresholds change some decisions

    by = {d.metric: d for d in result}
    acc_group, acc_plain = np.mean(decided == label), np.mean((score >= 0.5) == label)
    assert by["acc"].a == pytest.approx(acc_group) and by["acc"].a == pytest.approx(row["test/acc"])
    assert by["acc"].b == pytest.approx(acc_plain)
    assert by["acc"].diff == pytest.approx(acc_group - acc_plain) and by["acc"].diff != 0
    assert format_comparison(side, plain, result).splitlines()[:2] == [
        f"A: trial 0 (vanilla, -) with group thresholds chosen on validation for a gap of at most "
        f"{100 * row['gap_limit']:g} % ({format_thresholds(row)}); they need each image's group at inference",
        "B: trial 0 (vanilla, -)",
    ]


@pytest.mark.parametrize(
    "constraints",
    [(), (Constraint("max_acc_gap", 0.005, "max"),)],
    ids=["no-constraints", "gap-at-most-0.5%"],
)
def test_the_group_side_takes_the_row_export_takes(tmp_path: Path, constraints: Constraints) -> None:
    folder = _thresholded_sweep(tmp_path, constraints)
    rows = pd.read_parquet(folder / "pareto.parquet")
    mine = rows[(rows["number"] == 0) & (rows["kind"] == "group_thresholds")]
    assert mine["thresholds"].nunique() >= 2, "trial 0 has several group rows to choose from"
    expected = _export_rule_row(folder, 0, "group_thresholds", feasible_only=bool(constraints))
    # the constraint leaves the most accurate row out
    assert (expected["val/acc"] < mine["val/acc"].max()) == bool(constraints)
    side, _, _ = compare_trials(folder, "0@group", "0", n_boot=50)
    export = choose_export(folder, 0, thresholds="group")
    assert export.threshold_row is not None
    assert side.thresholds == export.thresholds == json.loads(str(expected["thresholds"]))


def test_the_single_side_is_the_trial_at_that_threshold(tmp_path: Path) -> None:
    folder = _thresholded_sweep(tmp_path)
    t = json.loads(str(_export_rule_row(folder, 0, "threshold")["thresholds"]))["all"]
    assert t != 0.5
    single, at, result = compare_trials(folder, "0@single", f"0@{t!r}", n_boot=50)
    assert single.thresholds == at.thresholds == {"all": t}
    assert np.array_equal(single.decisions, at.decisions)
    assert all(d.diff == d.low == d.high == 0 for d in result)
    assert single.how == f"at its single threshold chosen on validation ({t:.3g})"


def test_a_trial_without_a_group_row_is_refused_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _thresholded_sweep(tmp_path)
    rows = pd.read_parquet(folder / "pareto.parquet")
    kinds = sorted(set(rows.loc[rows["number"] == 2, "kind"].dropna()))
    assert "threshold" in kinds and "group_thresholds" not in kinds
    refused(
        capsys,
        tmp_path,
        ["compare", str(folder), "2@group", "0"],
        f"error: compare: 2@group: trial 2 of {folder} has no group_thresholds row on the thresholded fronts "
        f"of pareto.parquet (its rows there are of kind {kinds}); `fairsearch pareto {folder} --kind "
        "group_thresholds` lists the trials that have one\n",
    )


def test_a_group_row_without_a_groups_threshold_is_refused_as_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _thresholded_sweep(tmp_path)
    path = folder / "pareto.parquet"
    rows = pd.read_parquet(path)
    grouped = rows["kind"] == "group_thresholds"
    rows.loc[grouped, "thresholds"] = [
        json.dumps({k: v for k, v in json.loads(t).items() if k != "Hispanic"})
        for t in rows.loc[grouped, "thresholds"]
    ]
    write_parquet_atomic(rows, path, read_parquet_metadata(path))
    refused(
        capsys,
        tmp_path,
        ["compare", str(folder), "0", "0@group"],
        f"compare: 0@group: trial 0's row in {folder}/pareto.parquet has no threshold for group(s) ['Hispanic'] "
        "of its scores' grouping 'ethnicity'; the file is damaged",
    )
