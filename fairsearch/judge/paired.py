"""Paired comparisons: two models' decisions on the *same* test images, and how sure the difference is.

Two separate 95 % intervals that overlap say little about which model is better on images both saw; the
difference of two models' accuracies on the same images has far less noise than either accuracy, since
both share every easy and every hard image. :func:`paired_comparison` gives, for overall accuracy, each
group's accuracy and predicted-positive rate, the worst group's accuracy and MaxAccGap, the two values,
their difference A − B and a 95 % interval for it from a paired bootstrap over the images, stratified by
group so that every replicate keeps the split's group sizes (the per-group intervals of
:mod:`fairsearch.judge.intervals` are conditional on them too). Pure numpy.

Coverage, simulated in ``tests/test_paired.py`` (true differences of 0 included): ≥ 0.93 for every
reported difference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["PairedDifference", "paired_comparison", "verdict"]

_Z = {0.95: 1.959963984540054, 0.9: 1.6448536269514722, 0.99: 2.5758293035489004}


@dataclass(frozen=True)
class PairedDifference:
    """One metric of two models on the same images.

    Attributes:
        metric: ``acc``, ``acc/<group>``, ``p_pos/<group>``, ``worst_group_acc`` or ``max_acc_gap``.
        a, b: the metric of each model.
        low, high: the 95 % paired interval of ``a − b``.
        n: the images behind it (a group's size for a group metric).
    """

    metric: str
    a: float
    b: float
    low: float
    high: float
    n: int

    @property
    def diff(self) -> float:
        """``a − b``."""
        return self.a - self.b

    @property
    def clear(self) -> bool:
        """The interval excludes 0: the data say which model is higher on this metric."""
        return self.low > 0 or self.high < 0


def _metrics(
    hits_a: np.ndarray,
    hits_b: np.ndarray,
    pos_a: np.ndarray,
    pos_b: np.ndarray,
    sizes: np.ndarray,
    grouped: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every compared metric from per-stratum counts ``[..., S]`` (``grouped``: the strata that are groups,
    not the ungrouped −1)."""
    out: dict[str, np.ndarray] = {}
    total = sizes.sum()
    out["acc:a"], out["acc:b"] = hits_a.sum(-1) / total, hits_b.sum(-1) / total
    acc_a, acc_b = hits_a[..., grouped] / sizes[grouped], hits_b[..., grouped] / sizes[grouped]
    out["group_acc:a"], out["group_acc:b"] = acc_a, acc_b
    out["p_pos:a"], out["p_pos:b"] = (
        pos_a[..., grouped] / sizes[grouped],
        pos_b[..., grouped] / sizes[grouped],
    )
    out["worst:a"], out["worst:b"] = acc_a.min(-1), acc_b.min(-1)
    out["gap:a"], out["gap:b"] = acc_a.max(-1) - acc_a.min(-1), acc_b.max(-1) - acc_b.min(-1)
    return out


def paired_comparison(
    decision_a: ArrayLike,
    decision_b: ArrayLike,
    label: ArrayLike,
    group: ArrayLike,
    group_names: Sequence[str],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[PairedDifference]:
    """Two models' decisions on the same images, compared metric by metric.

    Args:
        decision_a, decision_b: ``[N]`` 0/1 decisions of models A and B on the same images, in one order;
            or ``[R, N]``, the decisions of R runs of a model (its seeds; A and B may have different R):
            then each metric is that of the runs' mean per image (a group's accuracy is the mean of its
            runs' accuracies), and the images are resampled with all their runs, so the interval is for
            these runs on other images like these (how much another seed would move it is not in it).
        label: ``[N]`` true classes, 0 or 1.
        group: ``[N]`` group id per image (−1: in no group: counted overall, in no group's metric).
        group_names: the name of every group id.
        level: the intervals' coverage.
        n_boot: bootstrap replicates.
        seed: the bootstrap's seed (the same inputs and seed give the same intervals).

    Returns:
        ``acc``, then ``acc/<group>`` and ``p_pos/<group>`` for each group with images, then
        ``worst_group_acc`` and ``max_acc_gap`` (these over the groups with images).

    Raises:
        ValueError: arrays of different lengths, no images, or decisions or labels other than 0/1.
    """
    a, b = (np.atleast_2d(np.asarray(v)) for v in (decision_a, decision_b))
    y, g = np.asarray(label).reshape(-1), np.asarray(group).reshape(-1).astype(np.int64)
    if a.ndim != 2 or b.ndim != 2 or not a.shape[1] == b.shape[1] == y.size == g.size or y.size == 0:
        raise ValueError(
            "decisions ([N] or [runs, N]), labels and groups must hold the same N > 0 images: "
            f"{np.shape(decision_a)}, {np.shape(decision_b)}, {y.size}, {g.size}"
        )
    for name, v in (("decision_a", a), ("decision_b", b), ("label", y)):
        if not np.isin(v, (0, 1)).all():
            raise ValueError(f"{name} must hold 0 and 1 only")
    strata, inverse = np.unique(g, return_inverse=True)
    grouped = strata >= 0
    if not grouped.any():
        raise ValueError("no image is in a group")
    # per image: the share of the runs right, and positive (one run: 0 or 1)
    correct_a, correct_b = (a == y).mean(axis=0), (b == y).mean(axis=0)
    a, b = a.mean(axis=0), b.mean(axis=0)
    sizes = np.bincount(inverse, minlength=strata.size).astype(np.float64)

    def counts(values: np.ndarray) -> np.ndarray:
        return np.bincount(inverse, weights=values, minlength=strata.size)

    point = _metrics(
        counts(correct_a), counts(correct_b), counts(a.astype(float)), counts(b.astype(float)), sizes, grouped
    )

    rng = np.random.default_rng(seed)
    boot = [np.zeros((n_boot, strata.size)) for _ in range(4)]
    for s in range(strata.size):
        members = np.flatnonzero(inverse == s)
        draw = members[rng.integers(0, members.size, size=(n_boot, members.size))]
        for column, values in zip(
            boot, (correct_a, correct_b, a.astype(float), b.astype(float)), strict=True
        ):
            column[:, s] = values[draw].sum(axis=1)
    reps = _metrics(boot[0], boot[1], boot[2], boot[3], sizes, grouped)
    alpha = (1.0 - level) / 2

    def diff(name: str, key: str, n: int, column: int | None = None) -> PairedDifference:
        pa, pb, ra, rb = point[f"{key}:a"], point[f"{key}:b"], reps[f"{key}:a"], reps[f"{key}:b"]
        if column is not None:
            pa, pb, ra, rb = pa[column], pb[column], ra[:, column], rb[:, column]
        d, spread = float(pa - pb), ra - rb
        low, high = np.quantile(spread, [alpha, 1 - alpha])
        half = _Z[level] * float(spread.std(ddof=1)) * np.sqrt(n / max(n - 1, 1))
        return PairedDifference(
            name, float(pa), float(pb), min(float(low), d - half), max(float(high), d + half), n
        )

    names = [group_names[int(s)] for s in strata[grouped]]
    group_sizes = sizes[grouped].astype(int)
    result = [diff("acc", "acc", int(sizes.sum()))]
    for k, name in enumerate(names):
        result.append(diff(f"acc/{name}", "group_acc", int(group_sizes[k]), k))
        result.append(diff(f"p_pos/{name}", "p_pos", int(group_sizes[k]), k))
    result.append(diff("worst_group_acc", "worst", int(group_sizes.sum())))
    result.append(diff("max_acc_gap", "gap", int(group_sizes.sum())))
    return result


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def verdict(differences: Sequence[PairedDifference], names: tuple[str, str] = ("A", "B")) -> str:
    """One line on what the paired intervals settle: which side's gap is lower, and whether that came
    from raising the worst group or from lowering the best one (levelling down); then overall accuracy.

    Only differences whose interval excludes 0 are called: a group is "clearly lower" or raised only then.

    Args:
        differences: :func:`paired_comparison`'s, A − B.
        names: how the line names A and B.
    """
    by = {d.metric: d for d in differences}
    gap, acc = by["max_acc_gap"], by["acc"]
    groups = [d for d in differences if d.metric.startswith("acc/")]
    if not gap.clear:
        text = "the data do not settle which side has the lower MaxAccGap"
    else:
        sign = 1 if gap.diff < 0 else -1  # differences from the lower-gap side's view
        down = [d for d in groups if d.clear and sign * d.diff < 0]
        up = [d for d in groups if d.clear and sign * d.diff > 0]
        how = (
            "by levelling down: " + ", ".join(g.metric.split("/", 1)[1] for g in down) + " clearly lower"
            if down
            else "by raising " + ", ".join(g.metric.split("/", 1)[1] for g in up)
            if up
            else "with no group's accuracy clearly different"
        )
        lower = names[0] if sign == 1 else names[1]
        text = f"{lower} has the clearly lower MaxAccGap ({_pct(abs(gap.diff))} points), {how}"
    if acc.clear:
        text += f"; {names[0] if acc.diff > 0 else names[1]} is clearly more accurate overall ({_pct(abs(acc.diff))} points)"
    else:
        text += "; overall accuracy: no clear difference"
    return text
