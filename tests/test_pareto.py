"""Tests for fairsearch.judge.pareto against brute-force references and hand computations."""

from __future__ import annotations

import itertools

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays

from fairsearch.judge.pareto import (
    Direction,
    crowding_distance,
    hypervolume,
    nondominated_ranks,
    pareto_mask,
    spread_along,
)
from fairsearch.spec.config import objective_directions, objective_reference

DIRECTIONS = objective_directions()
REFERENCE = objective_reference()

# ---------------------------------------------------------------- brute-force references

Dirs = tuple[Direction, ...]


def _losses(points: np.ndarray, directions: Dirs) -> np.ndarray:
    return np.array(
        [[-v if d == "max" else v for v, d in zip(row, directions, strict=True)] for row in points],
        dtype=float,
    )


def _dominates(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(
        all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))
    )


def brute_mask(points: np.ndarray, directions: Dirs) -> np.ndarray:
    losses = _losses(points, directions)
    valid = [not np.isnan(row).any() for row in losses]
    return np.array(
        [
            valid[i] and not any(valid[j] and _dominates(losses[j], losses[i]) for j in range(len(losses)))
            for i in range(len(losses))
        ],
        dtype=bool,
    )


def peeled_ranks(points: np.ndarray, directions: Dirs) -> np.ndarray:
    """Ranks by repeatedly removing the front (brute-force mask on what is left)."""
    ranks = np.full(len(points), -1)
    remaining = np.flatnonzero(~np.isnan(points).any(axis=1)) if len(points) else np.array([], dtype=int)
    rank = 0
    while remaining.size:
        on_front = brute_mask(points[remaining], directions)
        ranks[remaining[on_front]] = rank
        remaining = remaining[~on_front]
        rank += 1
    ranks[ranks == -1] = rank
    return ranks


def textbook_crowding(points: np.ndarray) -> np.ndarray:
    """Deb et al.'s loop, valid when every column holds distinct values."""
    n, d = points.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for m in range(d):
        order = sorted(range(n), key=lambda i: points[i, m])
        lo, hi = points[order[0], m], points[order[-1], m]
        dist[order[0]] = dist[order[-1]] = np.inf
        for k in range(1, n - 1):
            dist[order[k]] += (points[order[k + 1], m] - points[order[k - 1], m]) / (hi - lo)
    return dist


def grid_hypervolume(points: np.ndarray, directions: Dirs, reference: np.ndarray) -> float:
    """Count unit cells dominated by some point (integer coordinates only): exact by enumeration."""
    losses = _losses(points, directions)
    ref = _losses(reference[None, :], directions)[0]
    lo = np.minimum(losses.min(axis=0), ref) if len(losses) else ref
    axes = [range(int(a), int(b)) for a, b in zip(lo, ref, strict=True)]
    count = 0
    for cell in itertools.product(*axes):
        if any(all(p <= c for p, c in zip(row, cell, strict=True)) for row in losses):
            count += 1
    return float(count)


# ---------------------------------------------------------------- strategies

DIRECTION_SETS: st.SearchStrategy[Dirs] = st.sampled_from(
    [("max", "min"), ("min", "min"), ("max", "max"), ("min", "max", "min")]
)


@st.composite
def point_sets(draw: st.DrawFn, allow_nan: bool = True) -> tuple[np.ndarray, Dirs]:
    """Small integer-valued grids (many ties and duplicates), with the odd NaN row."""
    directions = draw(DIRECTION_SETS)
    n = draw(st.integers(0, 14))
    pts = draw(arrays(np.float64, (n, len(directions)), elements=st.integers(0, 4).map(float)))
    if allow_nan and n:
        nan_rows = draw(st.lists(st.integers(0, n - 1), max_size=2))
        pts[nan_rows, 0] = np.nan
    return pts, directions


# ---------------------------------------------------------------- pareto_mask


@settings(max_examples=150, deadline=None)
@given(point_sets())
def test_mask_matches_brute_force(case: tuple[np.ndarray, Dirs]) -> None:
    pts, directions = case
    np.testing.assert_array_equal(pareto_mask(pts, directions), brute_mask(pts, directions))


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (12, 2), elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
)
def test_mask_matches_brute_force_on_real_values(pts: np.ndarray) -> None:
    np.testing.assert_array_equal(pareto_mask(pts, DIRECTIONS), brute_mask(pts, DIRECTIONS))


def test_mask_duplicates_and_nan() -> None:
    pts = [[0.9, 0.1], [0.9, 0.1], [0.8, 0.05], [0.7, 0.2], [np.nan, 0.0], [1.0, np.nan]]
    assert pareto_mask(pts, ("max", "min")).tolist() == [True, True, True, False, False, False]


def test_mask_directions_matter() -> None:
    pts = [[0.9, 0.1], [0.8, 0.2]]
    assert pareto_mask(pts, ("max", "min")).tolist() == [True, False]
    assert pareto_mask(pts, ("min", "max")).tolist() == [False, True]
    assert pareto_mask(pts, ("max", "max")).tolist() == [True, True]


def test_empty_input() -> None:
    assert pareto_mask(np.empty((0, 2)), ("max", "min")).shape == (0,)
    assert pareto_mask([], ("max", "min")).shape == (0,)
    assert nondominated_ranks(np.empty((0, 2)), ("max", "min")).shape == (0,)
    assert crowding_distance(np.empty((0, 2)), ("max", "min")).shape == (0,)
    assert hypervolume(np.empty((0, 2)), ("max", "min"), (0.0, 1.0)) == 0.0


@pytest.mark.parametrize(
    ("points", "directions", "message"),
    [
        ([[1.0, 2.0]], ("max",), "2 objective columns but 1 directions"),
        ([[1.0, 2.0]], ("max", "down"), "directions must be 'max' or 'min', got \\['down'\\]"),
        ([[1.0, 2.0]], "mx", "must be a sequence"),
        ([1.0, 2.0], ("max", "min"), "must be a 2-D array"),
    ],
)
def test_malformed_input(points: list, directions: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pareto_mask(points, directions)


# ---------------------------------------------------------------- nondominated_ranks


@settings(max_examples=150, deadline=None)
@given(point_sets())
def test_ranks_match_repeated_peeling(case: tuple[np.ndarray, Dirs]) -> None:
    pts, directions = case
    ranks = nondominated_ranks(pts, directions)
    assert ranks.dtype == np.int64
    np.testing.assert_array_equal(ranks, peeled_ranks(pts, directions))
    valid = ~np.isnan(pts).any(axis=1)
    np.testing.assert_array_equal((ranks == 0) & valid, pareto_mask(pts, directions))


def test_ranks_put_nan_rows_last() -> None:
    pts = [[0.9, 0.1], [np.nan, 0.0], [0.8, 0.2], [0.7, 0.3]]
    assert nondominated_ranks(pts, ("max", "min")).tolist() == [0, 3, 1, 2]
    assert nondominated_ranks([[np.nan, 0.0]], ("max", "min")).tolist() == [0]


# ---------------------------------------------------------------- crowding_distance


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10), st.integers(0, 2**32 - 1))
def test_crowding_matches_textbook_on_distinct_values(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pts = np.stack([rng.permutation(n), rng.permutation(n)], axis=1).astype(float) * 0.1
    np.testing.assert_allclose(crowding_distance(pts, ("max", "min")), textbook_crowding(pts))


@settings(max_examples=100, deadline=None)
@given(point_sets(allow_nan=False), st.integers(0, 2**32 - 1))
def test_crowding_ignores_row_order_even_with_ties(case: tuple[np.ndarray, Dirs], seed: int) -> None:
    pts, directions = case
    perm = np.random.default_rng(seed).permutation(len(pts))
    np.testing.assert_array_equal(
        crowding_distance(pts, directions)[perm], crowding_distance(pts[perm], directions)
    )


def test_crowding_hand_values() -> None:
    # A 2-D front: x ascending, y descending; ranges 3 and 6.
    pts = [[0.0, 6.0], [1.0, 4.0], [2.0, 1.0], [3.0, 0.0]]
    expected = [np.inf, (2 - 0) / 3 + (6 - 1) / 6, (3 - 1) / 3 + (4 - 0) / 6, np.inf]
    np.testing.assert_allclose(crowding_distance(pts, ("max", "min")), expected)


def test_crowding_small_sets_zero_range_ties_and_nan() -> None:
    assert crowding_distance([[0.5, 0.1]], ("max", "min")).tolist() == [np.inf]
    assert crowding_distance([[0.5, 0.1], [0.5, 0.1]], ("max", "min")).tolist() == [np.inf, np.inf]
    # every value equal: no objective has a range, nothing is an extreme
    assert crowding_distance([[1.0, 1.0]] * 4, ("max", "min")).tolist() == [0.0] * 4
    # column 1 has zero range and contributes nothing; ties at the extremes are all inf
    got = crowding_distance([[0.0, 5.0], [0.0, 5.0], [1.0, 5.0], [3.0, 5.0]], ("min", "min"))
    np.testing.assert_allclose(got, [np.inf, np.inf, 1.0, np.inf])
    got = crowding_distance([[0.0, 1.0], [np.nan, 1.0], [1.0, 1.0]], ("max", "min"))
    assert got.tolist() == [np.inf, 0.0, np.inf]


# ---------------------------------------------------------------- hypervolume


def test_hypervolume_two_d_staircase_by_hand() -> None:
    # (acc, gap) front [0.9, 0.3], [0.8, 0.1], [0.6, 0.05] against the reference (0, 1):
    # slabs by accuracy: acc in [0, 0.6] -> 0.95 tall, (0.6, 0.8] -> 0.9, (0.8, 0.9] -> 0.7.
    front = [[0.9, 0.3], [0.8, 0.1], [0.6, 0.05]]
    expected = 0.6 * 0.95 + 0.2 * 0.9 + 0.1 * 0.7
    assert hypervolume(front, DIRECTIONS, REFERENCE) == pytest.approx(expected)
    # dominated rows, duplicates, NaN rows and rows outside the reference box change nothing
    noisy = [*front, [0.5, 0.5], [0.8, 0.1], [np.nan, 0.0], [0.95, 1.2], [-0.1, 0.0]]
    assert hypervolume(noisy, DIRECTIONS, REFERENCE) == pytest.approx(expected)
    assert hypervolume([[0.95, 1.2]], DIRECTIONS, REFERENCE) == 0.0
    assert hypervolume([[1.0, 0.0]], DIRECTIONS, REFERENCE) == pytest.approx(1.0)


@settings(max_examples=80, deadline=None)
@given(point_sets())
def test_hypervolume_matches_cell_count(case: tuple[np.ndarray, Dirs]) -> None:
    pts, directions = case
    # reference at the worst corner of the 0..4 grid, plus one unit so boundary rows count
    reference = np.array([-1.0 if d == "max" else 5.0 for d in directions])
    finite = pts[~np.isnan(pts).any(axis=1)]
    assert hypervolume(pts, directions, reference) == pytest.approx(
        grid_hypervolume(finite, directions, reference)
    )


def test_hypervolume_rejects_bad_reference() -> None:
    with pytest.raises(ValueError, match="reference must be finite"):
        hypervolume([[0.5, 0.5]], DIRECTIONS, (np.nan, 1.0))
    with pytest.raises(ValueError, match="1 objective columns but 2 directions"):
        hypervolume([[0.5, 0.5]], DIRECTIONS, (0.0,))


# ---------------------------------------------------------------- spread_along


def test_spread_along_keeps_the_ends_and_the_kept_rows_and_spreads_the_rest() -> None:
    # 200 members of a front, 180 of them crowded into its first tenth: picking every 20th row would
    # leave 90 % of its length with one member
    t = np.r_[np.linspace(0.0, 0.1, 180, endpoint=False), np.linspace(0.1, 1.0, 20)]
    points = np.c_[0.7 + 0.2 * t, 0.3 * t]  # accuracy and gap both rising along the front
    picks = spread_along(points, 10, keep=[150])
    assert len(picks) == 10 and list(picks) == sorted(set(picks))
    assert {0, 199, 150} <= set(picks)
    assert np.diff(t[picks]).max() < 0.2  # evenly spaced would be 1/9; the index-spaced pick leaves 0.9
    np.testing.assert_array_equal(spread_along(points[::-1], 10, keep=[49]), sorted(199 - picks))
    np.testing.assert_array_equal(spread_along(points, 10, keep=[150]), picks)  # the same every time


def test_spread_along_takes_every_row_of_a_short_front_and_nan_rows_last() -> None:
    np.testing.assert_array_equal(spread_along(np.zeros((4, 2)), 10), [0, 1, 2, 3])
    points = np.c_[np.linspace(0, 1, 12), np.linspace(0, 1, 12)]
    points[[3, 5]] = np.nan
    picks = spread_along(points, 10)
    assert 3 not in picks and 5 not in picks and len(picks) == 10
    assert list(spread_along(points, 11)) == [i for i in range(12) if i != 5]  # a NaN row only to fill
    three = np.random.default_rng(0).random((50, 3))
    picks = spread_along(three, 10)
    ends = {int(np.argmin(c)) for c in three.T} | {int(np.argmax(c)) for c in three.T}
    assert ends <= set(picks) and len(picks) == 10


def test_spread_along_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match=r"keep \[7\] names rows outside 0..4"):
        spread_along(np.zeros((5, 2)), 3, keep=[7])
    with pytest.raises(ValueError, match="limit must be at least 1, got 0"):
        spread_along(np.zeros((5, 2)), 0)
    with pytest.raises(ValueError, match=r"points must be a 2-D array \[N, D\], got shape \(5,\)"):
        spread_along(np.zeros(5), 3)
