"""95 % confidence intervals for accuracy, MaxAccGap, worst-group accuracy and ROC AUC, without resampling.

Pure numpy/scipy, deterministic, and every interval contains its point estimate:

* **Accuracy** (overall, each group): Clopper–Pearson, the exact binomial interval. Its coverage is at
  least the level for every true accuracy and group size, which matters for groups of 30 whose accuracy
  is near 0.9, where the Jeffreys and Wilson intervals dip to 89–92 %.
* **MaxAccGap** ``max_g θ_g − min_g θ_g`` over the G groups with samples (no group is ever dropped): each
  pair's difference θ_i − θ_j gets a MOVER interval (Newcombe 1998; Zou & Donner 2008) built from the
  groups' Clopper–Pearson limits, and half of α goes to each end. The gap's *upper* limit is the largest
  pair upper limit at one-sided α/2: the gap is one fixed pair's difference, so it exceeds that limit only
  if that pair's does. The *lower* limit is ``max(0, largest pair lower limit)``, the pairs' two-sided
  intervals Bonferroni-adjusted over the G(G−1)/2 pairs, since any pair's lower limit could be the largest.
  The interval reaches 0 whenever no pair differs clearly, so a true gap of 0 is covered.
* **Worst-group accuracy** ``min_g θ_g``: ``[min_g lo_g, min_g hi_g]``, the lower limits at one-sided α/2
  (the worst group alone can undercut its own limit), the upper ones at one-sided α/(2G).
* **AUC**: the union of DeLong's interval on the logit scale (nonparametric variance from the placement
  values) and Newcombe's (2006) score interval with the modified Hanley–McNeil variance. DeLong's
  undercovers when one class has few samples, the score interval when the classes' score spreads differ;
  each covers where the other fails. The score interval alone is used at AUC 0 or 1 or with fewer than
  two samples of a class, where DeLong's variance is 0 or undefined.

The simulated coverage and widths are in docs/ARCHITECTURE.md ("Intervals") and ``tests/test_intervals.py``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, special, stats

__all__ = ["LEVEL", "auc_interval", "max_gap_interval", "proportion_interval", "worst_group_interval"]

LEVEL = 0.95


def _counts(hits: ArrayLike, n: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, size = np.broadcast_arrays(np.asarray(hits, dtype=np.float64), np.asarray(n, dtype=np.float64))
    if np.any(size < 1) or np.any(x < 0) or np.any(x > size):
        raise ValueError("need 0 <= hits <= n and n >= 1 for every group")
    return x, size


def _check_level(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return 1.0 - level


def proportion_interval(
    hits: ArrayLike, n: ArrayLike, *, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson (exact) interval of each proportion ``hits / n``.

    Args:
        hits: ``[...]`` successes (correct predictions).
        n: ``[...]`` trials, ≥ 1, broadcastable with ``hits``.
        level: two-sided confidence level; each tail holds at most (1 − level) / 2.

    Returns:
        ``(low, high)``, float64 arrays of the broadcast shape; 0 ≤ low ≤ hits/n ≤ high ≤ 1.

    Raises:
        ValueError: a count outside ``0 <= hits <= n``, ``n < 1``, or ``level`` outside (0, 1).
    """
    alpha = _check_level(level)
    x, size = _counts(hits, n)
    # beta.ppf needs shape parameters > 0: the limits at x = 0 and x = n are 0 and 1 by definition
    low = np.where(x > 0, stats.beta.ppf(alpha / 2, np.maximum(x, 1), size - x + 1), 0.0)
    high = np.where(x < size, stats.beta.ppf(1 - alpha / 2, x + 1, np.maximum(size - x, 1)), 1.0)
    p = x / size
    return np.minimum(low, p), np.maximum(high, p)


def _pairs(g: int) -> tuple[np.ndarray, np.ndarray]:
    i, j = np.nonzero(~np.eye(g, dtype=bool))
    return i, j


def max_gap_interval(hits: ArrayLike, n: ArrayLike, *, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Interval of MaxAccGap ``max_g θ_g − min_g θ_g`` from per-group counts (see the module docstring).

    Args:
        hits: ``[..., G]`` correct predictions per group; every group listed must have samples.
        n: ``[..., G]`` samples per group, ≥ 1.
        level: two-sided confidence level.

    Returns:
        ``(low, high)``, float64 arrays of shape ``[...]``, with ``0 <= low <= gap <= high <= 1`` where gap
        is the observed ``max(hits/n) − min(hits/n)``; both 0 when G < 2.

    Raises:
        ValueError: as :func:`proportion_interval`.
    """
    alpha = _check_level(level)
    x, size = _counts(hits, n)
    g = x.shape[-1] if x.ndim else 0
    if g < 2:
        zero = np.zeros(x.shape[:-1])
        return zero, zero.copy()
    p = x / size
    i, j = _pairs(g)
    d = p[..., i] - p[..., j]
    lo_u, hi_u = proportion_interval(x, size, level=1 - alpha)  # one-sided alpha/2 per limit
    high = d + np.hypot(hi_u[..., i] - p[..., i], p[..., j] - lo_u[..., j])
    n_pairs = g * (g - 1) // 2
    lo_l, hi_l = proportion_interval(x, size, level=1 - alpha / 2 / n_pairs)
    low = d - np.hypot(p[..., i] - lo_l[..., i], hi_l[..., j] - p[..., j])
    gap = p.max(axis=-1) - p.min(axis=-1)
    return np.clip(np.minimum(low.max(axis=-1), gap), 0.0, None), np.maximum(high.max(axis=-1), gap)


def worst_group_interval(
    hits: ArrayLike, n: ArrayLike, *, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray]:
    """Interval of the worst-group accuracy ``min_g θ_g`` (see the module docstring).

    Args:
        hits: ``[..., G]`` correct predictions per group, G ≥ 1; every group listed must have samples.
        n: ``[..., G]`` samples per group, ≥ 1.
        level: two-sided confidence level.

    Returns:
        ``(low, high)``, float64 arrays of shape ``[...]`` containing the observed ``min(hits/n)``.

    Raises:
        ValueError: as :func:`proportion_interval`, or no group (G = 0).
    """
    alpha = _check_level(level)
    x, size = _counts(hits, n)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError("worst-group accuracy needs at least one group")
    low, _ = proportion_interval(x, size, level=1 - alpha)
    _, high = proportion_interval(x, size, level=1 - alpha / x.shape[-1])
    return low.min(axis=-1), high.min(axis=-1)


def _score_variance(theta: float, m: int, n: int) -> float:
    """Newcombe's (2006) Hanley–McNeil variance of the AUC at ``theta``, with N* = (m + n) / 2."""
    half = (m + n) / 2
    return theta * (1 - theta) / (m * n) * (2 * half - 1 - 3 * (half - 1) / ((2 - theta) * (1 + theta)))


def _score_lower(auc: float, m: int, n: int, z: float) -> float:
    """The score interval's lower limit: the root θ < auc of (auc − θ)² = z² V(θ)."""
    if auc <= 0:
        return 0.0
    if auc >= 1:  # (1 − θ)² = z² V(θ) has the factor (1 − θ) on both sides; the root left of 1 is wanted
        half = (m + n) / 2

        def f(t: float) -> float:
            spread = 2 * half - 1 - 3 * (half - 1) / ((2 - t) * (1 + t))
            return 1 - t - z * z * t * spread / (m * n)

        return float(optimize.brentq(f, 0.0, 1.0))
    return float(optimize.brentq(lambda t: (auc - t) ** 2 - z * z * _score_variance(t, m, n), 0.0, auc))


def _delong(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float | None]:
    """AUC and DeLong's variance from midrank placement values; variance None with < 2 of a class."""
    m, n = pos.size, neg.size
    ranks = stats.rankdata(np.concatenate([pos, neg]))
    below = (ranks[:m] - stats.rankdata(pos)) / n  # per positive: share of negatives below it (ties ½)
    above = 1 - (ranks[m:] - stats.rankdata(neg)) / m  # per negative: share of positives above it
    auc = float(below.mean())
    if m < 2 or n < 2:
        return auc, None
    return auc, float(below.var(ddof=1) / m + above.var(ddof=1) / n)


def auc_interval(scores: ArrayLike, labels: ArrayLike, *, level: float = LEVEL) -> tuple[float, float]:
    """Interval of the ROC AUC of ``scores`` for ``labels`` (see the module docstring).

    Args:
        scores: float ``[N]``, higher means class 1 (ties count one half).
        labels: ``[N]`` in {0, 1}, both classes present.
        level: two-sided confidence level.

    Returns:
        ``(low, high)`` containing the rank (Mann–Whitney) AUC, within [0, 1].

    Raises:
        ValueError: mismatched lengths, labels not 0/1, one class only, or ``level`` outside (0, 1).
    """
    alpha = _check_level(level)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.size != y.size or not np.all((y == 0) | (y == 1)):
        raise ValueError(
            f"scores and labels must be equally long with labels in {{0, 1}}: {s.size}, {y.size}"
        )
    pos, neg = s[y == 1], s[y == 0]
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"AUC needs both classes, got {pos.size} positives and {neg.size} negatives")
    auc, var = _delong(pos, neg)
    z = float(stats.norm.ppf(1 - alpha / 2))
    m, n = pos.size, neg.size
    low, high = _score_lower(auc, m, n, z), 1 - _score_lower(1 - auc, n, m, z)
    if var is not None and var > 0 and 0 < auc < 1:
        half_width = z * np.sqrt(var) / (auc * (1 - auc))
        low = min(low, float(special.expit(special.logit(auc) - half_width)))
        high = max(high, float(special.expit(special.logit(auc) + half_width)))
    return min(low, auc), max(high, auc)
