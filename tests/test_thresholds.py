"""Tests for fairsearch.judge.thresholds: the exact searches against brute force over every threshold, and the
scores file they read."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairsearch.errors import FairsearchError
from fairsearch.judge.fairness import max_acc_gap
from fairsearch.judge.thresholds import (
    GAP_LADDER,
    GROUP_THRESHOLDS,
    NO_GROUP,
    THRESHOLD,
    SplitScores,
    TrialScores,
    best_group_thresholds,
    candidate_thresholds,
    single_threshold_curve,
    threshold_points,
)
from fairsearch.train.checkpoint import SCORES_FILE, read_scores_at

TOL = 1e-12


def random_split(
    rng: np.random.Generator, sizes: list[int], *, no_group: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores on a coarse grid (ties within and across groups, 0 and 1 included), labels leaning with
    the score, group ids 0..G-1 with ``sizes`` samples each and ``no_group`` samples of id −1."""
    group = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)] + [np.full(no_group, -1)])
    score = rng.integers(0, 11, group.size) / 10
    label = (rng.random(group.size) < 0.25 + 0.5 * score).astype(np.int64)
    return score, label, group.astype(np.int64)


def brute_outcomes(
    score: np.ndarray, label: np.ndarray, group: np.ndarray, n_groups: int
) -> list[tuple[float, float]]:
    """(acc, gap) of every combination of per-group thresholds (each group's unique scores and +inf),
    the samples of id −1 with thresholds of their own, measured with fairness.max_acc_gap."""
    cells = [k for k in range(n_groups) if (group == k).any()] + ([-1] if (group < 0).any() else [])
    choices = [[*np.unique(score[group == k]).tolist(), np.inf] for k in cells]
    out = []
    for combo in itertools.product(*choices):
        threshold = np.empty(score.size)
        for k, t in zip(cells, combo, strict=True):
            threshold[group == k] = t
        pred = (score >= threshold).astype(np.int64)
        out.append((float((pred == label).mean()), max_acc_gap(pred, label, group, n_groups).gap))
    return out


def brute_best(outcomes: list[tuple[float, float]], limit: float) -> tuple[float, float] | None:
    """The highest accuracy with gap <= limit, then the smallest gap."""
    feasible = [(a, g) for a, g in outcomes if g <= limit + TOL]
    return max(feasible, key=lambda p: (p[0], -p[1])) if feasible else None


@pytest.mark.parametrize("n_groups", [2, 3])
@pytest.mark.parametrize("seed", range(12))
def test_group_thresholds_match_brute_force(n_groups: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 9 if n_groups == 2 else 6, n_groups).tolist()
    no_group = int(rng.integers(0, 4)) if seed % 3 == 0 else 0
    score, label, group = random_split(rng, sizes, no_group=no_group)
    outcomes = brute_outcomes(score, label, group, n_groups)
    achieved_gaps = sorted({g for _, g in outcomes})
    limits = [*GAP_LADDER, *achieved_gaps[:6], *(g - 1e-6 for g in achieved_gaps[1:4])]
    for limit in limits:
        expected = brute_best(outcomes, limit)
        got = best_group_thresholds(score, label, group, n_groups, limit)
        if expected is None:
            assert got is None, limit
            continue
        assert got is not None, limit
        assert got.acc == pytest.approx(expected[0], abs=TOL) and got.gap == pytest.approx(
            expected[1], abs=TOL
        )
        # the thresholds themselves give what the search says they give
        threshold = np.where(group >= 0, got.thresholds[np.maximum(group, 0)], got.no_group)
        pred = (score >= threshold).astype(np.int64)
        assert (pred == label).mean() == pytest.approx(got.acc, abs=TOL)
        assert max_acc_gap(pred, label, group, n_groups).gap == pytest.approx(got.gap, abs=TOL)
        assert got.gap <= limit + TOL


@pytest.mark.parametrize("n_groups", [2, 3])
@pytest.mark.parametrize("seed", range(10))
def test_single_threshold_curve_matches_brute_force(n_groups: int, seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    score, label, group = random_split(rng, rng.integers(1, 15, n_groups).tolist(), no_group=seed % 3)
    points = []
    for t in [*np.unique(score).tolist(), np.inf]:
        pred = (score >= t).astype(np.int64)
        points.append(((pred == label).mean(), max_acc_gap(pred, label, group, n_groups).gap))
    front = {
        (round(a, 12), round(g, 12))
        for a, g in points
        if not any(a2 >= a and g2 <= g and (a2 > a or g2 < g) for a2, g2 in points)
    }
    thresholds, acc, gap = single_threshold_curve(score, label, group, n_groups)
    assert {(round(a, 12), round(g, 12)) for a, g in zip(acc, gap, strict=True)} == front
    assert len(thresholds) == len(front) and np.all(np.diff(gap) > 0)  # one threshold per point, by gap
    for t, a, g in zip(thresholds, acc, gap, strict=True):
        pred = (score >= t).astype(np.int64)
        assert (pred == label).mean() == pytest.approx(a, abs=TOL)
        assert max_acc_gap(pred, label, group, n_groups).gap == pytest.approx(g, abs=TOL)


def test_candidate_thresholds_split_every_way_once() -> None:
    score = np.array([0.2, 0.2, 0.7, 1.0, np.nextafter(0.7, 1.0)])
    cand = candidate_thresholds(score)
    splits = {tuple(score >= t) for t in cand}
    assert len(cand) == len(splits) == 5  # 4 unique scores: all positive, 3 cuts, all negative
    assert cand[0] == 0.0 and cand[-1] > 1.0 and np.all(np.diff(cand) > 0)


def test_ties_keep_the_trained_threshold() -> None:
    """When 0.5 is already best in each group, the search keeps 0.5's predictions."""
    score = np.array([0.1, 0.3, 0.6, 0.9, 0.2, 0.45, 0.55, 0.8])
    label = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    got = best_group_thresholds(score, label, group, 2, 1.0)
    assert got is not None and got.acc == 1.0 and got.gap == 0.0
    assert np.all((score >= got.thresholds[group]) == (score >= 0.5))
    assert got.thresholds.tolist() == pytest.approx([0.45, 0.5])  # the midpoints nearest 0.5


def trial_scores(seed: int = 0, *, no_group: int = 0) -> TrialScores:
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(2):
        score, label, group = random_split(rng, [40, 12, 6], no_group=no_group)
        score = np.clip(score + rng.normal(0, 0.03, score.size), 0, 1)  # fewer ties: longer curves
        splits.append(SplitScores(score, label, group))
    return TrialScores("ethnicity", ("Non-Hispanic", "Hispanic", "unknown"), *splits)


def test_threshold_points_are_measured_by_evaluate_split() -> None:
    scores = trial_scores(no_group=5)
    points = threshold_points(scores)
    single = [p for p in points if p.kind == THRESHOLD]
    per_group = [p for p in points if p.kind == GROUP_THRESHOLDS]
    assert single and per_group and points == single + per_group
    _, acc, gap = single_threshold_curve(scores.val.score, scores.val.label, scores.val.group, 3)
    assert [p.val["acc"] for p in single] == pytest.approx(acc.tolist(), abs=TOL)
    assert [p.val["max_acc_gap"] for p in single] == pytest.approx(gap.tolist(), abs=TOL)
    for p in per_group:
        assert set(p.thresholds) == {"Non-Hispanic", "Hispanic", "unknown", NO_GROUP}
        assert p.gap_limit is not None and p.val["max_acc_gap"] <= p.gap_limit + TOL
        test = scores.test
        by_group = np.array([p.thresholds[n] for n in scores.group_names])
        pred = test.score >= np.where(
            test.group >= 0, by_group[np.maximum(test.group, 0)], p.thresholds[NO_GROUP]
        )
        assert p.test["acc"] == pytest.approx((pred == test.label).mean(), abs=TOL)
        assert p.test["max_acc_gap"] == pytest.approx(
            max_acc_gap(pred, test.label, test.group, 3).gap, abs=TOL
        )
        assert p.test["acc_ci_low"] <= p.test["acc"] <= p.test["acc_ci_high"]
        assert "test/auc" not in p.test and not any(k.startswith(("auc", "es_auc")) for k in p.test)
    limits = [p.gap_limit for p in per_group]
    assert limits == sorted(limits) and len({tuple(p.thresholds.values()) for p in per_group}) == len(
        per_group
    )
    # more room never costs accuracy
    accs = [p.val["acc"] for p in per_group]
    assert accs == sorted(accs)


def test_scores_file_round_trip_and_damage(tmp_path: Path) -> None:
    scores = trial_scores(1)
    scores.save(tmp_path / SCORES_FILE)
    arrays = read_scores_at(str(tmp_path))
    assert arrays is not None
    back = TrialScores.from_arrays(arrays, "x")
    assert back.group_by == "ethnicity" and back.group_names == scores.group_names
    np.testing.assert_array_equal(back.test.score, scores.test.score)
    np.testing.assert_array_equal(back.val.group, scores.val.group)
    assert read_scores_at(str(tmp_path / "nothing-here")) is None

    (tmp_path / SCORES_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(
        FairsearchError, match=r"cannot read .*scores\.npz: damaged or not an \.npz of plain arrays"
    ):
        read_scores_at(str(tmp_path))
    np.savez(
        tmp_path / SCORES_FILE, **{**scores.to_arrays(), "group_names": np.array(["a", None], dtype=object)}
    )
    with pytest.raises(
        FairsearchError,
        match=r"cannot read .*scores\.npz: array 'group_names' is an object array \(object\), which needs pickle",
    ):
        read_scores_at(str(tmp_path))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"val_score": None}, r"not a fairsearch scores file \(no \['val_score'\]\)"),
        ({"test_score": np.array([0.5, 1.5])}, "test split: score, label and group are not three arrays"),
        ({"val_score": np.full(58, 1.5)}, r"val split: scores must be probabilities in \[0, 1\]"),
        ({"val_label": np.full(58, 2)}, "val split: labels must be integers 0 or 1"),
        ({"val_group": np.full(58, 3)}, r"val split: group ids must be integers in \[-1, 3\)"),
        ({"group_by": np.array(1)}, "group_by and group_names must be text"),
    ],
)
def test_scores_file_contents_checked(change: dict[str, np.ndarray | None], message: str) -> None:
    arrays = {k: v for k, v in {**trial_scores().to_arrays(), **change}.items() if v is not None}
    with pytest.raises(FairsearchError, match=f"^ckpt/scores.npz: {message}"):
        TrialScores.from_arrays(arrays, "ckpt/scores.npz")


def test_threshold_fronts_follow_a_trial_completing_and_the_search_front_moving(tmp_path: Path) -> None:
    """The fronts are kept between rewrites of one sweep's files; they must change when their inputs do."""
    from scored_sweeps import write_scored_sweep

    from fairsearch.output.results import pareto_frame, trials_frame
    from fairsearch.output.threshold_fronts import threshold_front_rows

    records, test, _ = write_scored_sweep(tmp_path / "ckpts")
    running = [*records[:-2], dataclasses.replace(records[-2], status="running")]
    fronts = []
    for recs in (running, records, records):
        trials = trials_frame(recs)
        fronts.append(threshold_front_rows(trials, pareto_frame(trials, test)))
    assert "t4" not in set(fronts[0]["trial_id"]) and "t4" in set(fronts[1]["trial_id"])  # t4 completed
    pd.testing.assert_frame_equal(fronts[1], fronts[2])
    trials = trials_frame(records)
    moved = pareto_frame(trials, test).head(1).assign(**{"val/acc": 1.0, "val/max_acc_gap": 0.0})
    combined = threshold_front_rows(trials, moved)  # a trained point that beats every threshold
    assert combined.loc[combined["front"] == "combined", "kind"].tolist() == ["trained"]
