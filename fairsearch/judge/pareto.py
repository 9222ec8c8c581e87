"""Non-dominated sets, non-domination ranks, crowding distance and hypervolume (pure numpy).

Every function takes the objective values as an array ``points[N, D]`` (one row per candidate, one
column per objective) and one direction per column, ``"max"`` or ``"min"``; the directions are handled
here, so callers never flip signs themselves. fairsearch's own objectives, directions and reference
point are in :data:`fairsearch.spec.config.OBJECTIVES`.

A row holding a NaN (a failed or unfinished trial) is never on a front: it is left out of every
comparison and placed after all the valid rows (see each function).

Dominance is the usual one: ``a`` dominates ``b`` when ``a`` is at least as good in every objective and
strictly better in at least one. Equal rows do not dominate each other, so duplicates of a
non-dominated point are all non-dominated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import moocore
import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Direction",
    "crowding_distance",
    "hypervolume",
    "nondominated_ranks",
    "pareto_mask",
    "spread_along",
]

Direction = Literal["max", "min"]
"""Which side of an objective is better."""


def _to_losses(points: ArrayLike, directions: Sequence[Direction]) -> np.ndarray:
    """Return ``points`` as a float array ``[N, D]`` where every objective is to be minimised.

    Args:
        points: Objective values ``[N, D]``.
        directions: ``"max"`` or ``"min"`` per column, length ``D``.

    Returns:
        A new float64 array ``[N, D]``; columns to maximise are negated.

    Raises:
        ValueError: If ``points`` is not 2-D, or ``directions`` does not match its columns.
    """
    if isinstance(directions, str):
        raise ValueError(
            f"directions must be a sequence such as ('max', 'min'), got the string {directions!r}"
        )
    bad = [d for d in directions if d not in ("max", "min")]
    if bad:
        raise ValueError(f"directions must be 'max' or 'min', got {bad!r}")
    arr = np.array(points, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, len(directions))
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D array [N, D], got shape {arr.shape}")
    if arr.shape[1] != len(directions):
        raise ValueError(f"points has {arr.shape[1]} objective columns but {len(directions)} directions")
    sign = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return arr * sign


def _valid_rows(losses: np.ndarray) -> np.ndarray:
    """Rows without NaN: bool ``[N]``."""
    return ~np.isnan(losses).any(axis=1)


def _dominance_matrix(losses: np.ndarray) -> np.ndarray:
    """``dom[i, j]`` is True when row ``i`` dominates row ``j`` (minimisation, no NaN): bool ``[N, N]``."""
    n = losses.shape[0]
    all_le = np.ones((n, n), dtype=bool)
    any_lt = np.zeros((n, n), dtype=bool)
    for column in losses.T:  # one [N, N] comparison per objective keeps memory at O(N^2), not O(N^2 D)
        all_le &= column[:, None] <= column[None, :]
        any_lt |= column[:, None] < column[None, :]
    return all_le & any_lt


def pareto_mask(points: ArrayLike, directions: Sequence[Direction]) -> np.ndarray:
    """Mark the non-dominated rows.

    Rows are visited in lexicographic order of their losses, so a row can only be dominated by an
    earlier one, and (by transitivity) only needs comparing with the front found so far:
    ``O(N log N + N F D)`` for a front of ``F`` rows.

    Args:
        points: Objective values ``[N, D]``.
        directions: ``"max"`` or ``"min"`` per column, length ``D``.

    Returns:
        Bool array ``[N]``: True for rows no other row dominates. Duplicates of a non-dominated row are
        all True; rows holding a NaN are always False.

    Raises:
        ValueError: If the shapes or directions are malformed.
    """
    losses = _to_losses(points, directions)
    mask = np.zeros(losses.shape[0], dtype=bool)
    valid = np.flatnonzero(_valid_rows(losses))
    if valid.size == 0:
        return mask
    candidates = losses[valid]
    order = np.lexsort(candidates.T[::-1])  # primary key: column 0
    if candidates.shape[1] == 2:
        mask[valid[order[_front_of_sorted_pairs(candidates[order])]]] = True
        return mask
    front: list[int] = []  # positions in `candidates`
    for i in order:
        if front:
            members = candidates[front]
            row = candidates[i]
            if np.any(np.all(members <= row, axis=1) & np.any(members < row, axis=1)):
                continue
        front.append(int(i))
    mask[valid[front]] = True
    return mask


def _front_of_sorted_pairs(pairs: np.ndarray) -> np.ndarray:
    """The non-dominated rows of ``[N, 2]`` losses sorted lexicographically, without a loop: a row is
    dominated exactly when some earlier row that is not its duplicate has a second loss no larger (an
    earlier row is no worse in the first loss, and better in one of the two unless it is a duplicate).
    Duplicates are adjacent, so each row is compared with the running minimum of the second loss before
    its block of duplicates: ``O(N log N)`` for the sort, against the loop's ``O(N F)`` Python steps."""
    n = pairs.shape[0]
    new_block = np.ones(n, dtype=bool)
    new_block[1:] = np.any(pairs[1:] != pairs[:-1], axis=1)
    block_start = np.maximum.accumulate(np.where(new_block, np.arange(n), 0))
    best_before = np.concatenate(([np.inf], np.minimum.accumulate(pairs[:, 1])))  # [k]: min of rows < k
    return best_before[block_start] > pairs[:, 1]


def nondominated_ranks(points: ArrayLike, directions: Sequence[Direction]) -> np.ndarray:
    """Non-domination rank of every row by the fast non-dominated sort of NSGA-II (Deb et al. 2002).

    Rank 0 is the Pareto front; rank ``k`` is the front of what remains after removing ranks ``< k``.
    Builds the ``[N, N]`` dominance matrix once: ``O(N^2 D)`` time, ``O(N^2)`` memory.

    Args:
        points: Objective values ``[N, D]``.
        directions: ``"max"`` or ``"min"`` per column, length ``D``.

    Returns:
        Int64 array ``[N]``. Rows holding a NaN all get one rank after the last rank of the valid rows
        (rank 0 when every row holds a NaN).

    Raises:
        ValueError: If the shapes or directions are malformed.
    """
    losses = _to_losses(points, directions)
    n = losses.shape[0]
    ranks = np.zeros(n, dtype=np.int64)
    valid = np.flatnonzero(_valid_rows(losses))
    dom = _dominance_matrix(losses[valid])
    dominated_by = dom.sum(axis=0)  # how many not-yet-ranked rows dominate each row
    unranked = np.ones(valid.size, dtype=bool)
    rank = 0
    while unranked.any():
        current = unranked & (dominated_by == 0)
        ranks[valid[current]] = rank
        unranked &= ~current
        dominated_by -= dom[current].sum(axis=0)
        rank += 1
    ranks[np.setdiff1d(np.arange(n), valid)] = rank
    return ranks


def crowding_distance(points: ArrayLike, directions: Sequence[Direction]) -> np.ndarray:
    """NSGA-II crowding distance of every row, within the one set given (normally one front).

    For each objective, a row's contribution is the distance between its two neighbours along that
    objective divided by the objective's range; rows at the minimum or maximum of an objective get
    ``inf``. Ties are handled symmetrically: the neighbours of a value are the nearest *different*
    values, and every row tied at an extreme gets ``inf``, so the result does not depend on the order
    of the rows (for distinct values this is exactly Deb et al.'s definition). An objective whose
    range is zero contributes nothing. Directions do not change the distance (it is symmetric); they
    are taken for a uniform API and validated.

    Args:
        points: Objective values ``[N, D]``.
        directions: ``"max"`` or ``"min"`` per column, length ``D``.

    Returns:
        Float64 array ``[N]``: larger means less crowded. With two valid rows or fewer every valid row
        gets ``inf``. Rows holding a NaN get ``0.0`` (never preferred).

    Raises:
        ValueError: If the shapes or directions are malformed.
    """
    losses = _to_losses(points, directions)
    distance = np.zeros(losses.shape[0], dtype=np.float64)
    valid = np.flatnonzero(_valid_rows(losses))
    if valid.size <= 2:
        distance[valid] = np.inf
        return distance
    total = np.zeros(valid.size, dtype=np.float64)
    for column in losses[valid].T:
        values = np.unique(column)  # sorted distinct values
        if values.size == 1:
            continue  # zero range: this objective says nothing about crowding
        pos = np.searchsorted(values, column)
        extreme = (pos == 0) | (pos == values.size - 1)
        inner = np.clip(pos, 1, values.size - 2)
        with np.errstate(invalid="ignore"):
            gap = (values[inner + 1] - values[inner - 1]) / (values[-1] - values[0])
        total += np.where(extreme, np.inf, np.nan_to_num(gap, nan=0.0))
    distance[valid] = total
    return distance


def hypervolume(points: ArrayLike, directions: Sequence[Direction], reference: ArrayLike) -> float:
    """Hypervolume dominated by ``points`` and bounded by ``reference``, exact, via ``moocore``.

    Max objectives are negated (with the reference) to feed ``moocore.hypervolume``, which minimises. Rows that do not dominate-or-equal the reference in every objective, and rows
    holding a NaN, contribute nothing. Dominated rows may be passed; they add nothing either.

    Args:
        points: Objective values ``[N, D]``.
        directions: ``"max"`` or ``"min"`` per column, length ``D``.
        reference: Reference point ``[D]``, the worst corner of the measured region, e.g. ``(0.0, 1.0)``
            for ``(acc, max_acc_gap)`` with directions ``("max", "min")``.

    Returns:
        The hypervolume (``0.0`` when no row counts).

    Raises:
        ValueError: If the shapes or directions are malformed, or the reference is not finite.
    """
    losses = _to_losses(points, directions)
    ref = _to_losses(np.asarray(reference, dtype=np.float64).reshape(1, -1), directions)[0]
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"reference must be finite, got {np.asarray(reference).tolist()}")
    counted = _valid_rows(losses) & np.all(losses <= ref, axis=1)
    if not counted.any():
        return 0.0
    return float(moocore.hypervolume(losses[counted], ref=ref))


def spread_along(points: ArrayLike, limit: int, keep: Sequence[int] = ()) -> np.ndarray:
    """Pick at most ``limit`` rows of a front spread along it, for a reader who cannot take in every row.

    The ends of the front (each objective's lowest and highest row) and the rows of ``keep`` are always
    picked; the rest are added one at a time, each the row farthest from every row picked so far
    (farthest-point sampling), with each objective scaled by its range over the rows so that no unit
    dominates. Distances need no directions. Ties go to the earlier row, so the pick is deterministic.

    Args:
        points: Objective values ``[N, D]`` of the front's rows. Rows holding a NaN are picked last.
        limit: The most rows to pick (at least 1). The ends and ``keep`` are picked even when they
            alone are more.
        keep: Row indices that must be picked (e.g. the rows nearest a constraint's bound).

    Returns:
        Sorted int64 row indices ``[K]``, ``K = min(N, max(limit, |ends ∪ keep|))``; every row when
        ``N <= limit``.

    Raises:
        ValueError: If ``points`` is not 2-D, ``limit`` is below 1, or ``keep`` names a row not there.
    """
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"points must be a 2-D array [N, D], got shape {arr.shape}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    n = arr.shape[0]
    if any(not 0 <= k < n for k in keep):
        raise ValueError(f"keep {list(keep)} names rows outside 0..{n - 1}")
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    valid = _valid_rows(arr)
    picked = np.zeros(n, dtype=bool)
    picked[list(keep)] = True
    scaled = np.zeros_like(arr)
    if valid.any():
        low, high = arr[valid].min(axis=0), arr[valid].max(axis=0)
        scaled[valid] = (arr[valid] - low) / np.where(high > low, high - low, 1.0)
        rows = np.flatnonzero(valid)
        for column in arr[valid].T:  # the first row at each end of each objective
            picked[rows[np.argmin(column)]] = picked[rows[np.argmax(column)]] = True
    # each valid row's distance to the nearest picked one; -1 puts a NaN row after every valid one
    nearest = np.where(valid, np.inf, -1.0)

    def distances(row: int) -> np.ndarray:
        return np.where(valid, np.linalg.norm(scaled - scaled[row], axis=1), -1.0)

    for row in np.flatnonzero(picked & valid):
        nearest = np.minimum(nearest, distances(int(row)))
    while picked.sum() < limit:
        farthest = int(np.argmax(np.where(picked, -np.inf, nearest)))
        picked[farthest] = True
        if valid[farthest]:
            nearest = np.minimum(nearest, distances(farthest))
    return np.flatnonzero(picked).astype(np.int64)
