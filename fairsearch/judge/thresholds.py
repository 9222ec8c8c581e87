"""Decision thresholds chosen after training: the single-threshold curve and per-group thresholds.

The simplest strong baseline for any in-training fairness method is post-processing: keep a trained
model and choose its decision threshold on validation data, one for everyone or one per group (Hardt et
al. 2016; Cruz & Hardt 2024). Here a trial's per-sample validation scores (``p(positive)``, saved by
:mod:`fairsearch.train.trial` as :data:`fairsearch.train.checkpoint.SCORES_FILE`) give, exactly:

* **the single-threshold curve** (kind :data:`THRESHOLD`): every distinct way one threshold can split
  the validation scores, and of those the points not dominated on (accuracy ↑, MaxAccGap ↓). It needs no
  group at inference time.
* **per-group thresholds** (kind :data:`GROUP_THRESHOLDS`): for each gap limit ``g`` of a ladder, the
  thresholds, one per group, of the highest validation accuracy whose MaxAccGap is at most ``g``. They
  need each sample's group at inference time.

A sample is predicted positive when its score is at least its threshold. Candidate thresholds of a set of
scores are 0 (everyone positive), the midpoints of its sorted unique scores, and :data:`ABOVE_ALL` (just
above 1: everyone negative): every distinct split of the scores, each once. Ties between thresholds that
give the same count of correct predictions go to the one nearest :data:`DEFAULT_THRESHOLD` (the trained
model's own 0.5), so a trained point that is already best is kept as it is.

**The per-group search is exact.** Group ``k`` (``n_k`` validation samples) can reach only the correct
counts ``h`` its candidate thresholds give, and its threshold changes no other group's accuracy, so the
overall accuracy is ``Σ_k h_k / N`` (plus the samples outside every group, which get their own best
threshold and do not enter the gap). Let ``S*`` be an optimum for limit ``g`` and ``lo`` its lowest group
accuracy, which is one of the accuracies some group can reach. With the window ``[lo, lo + g]``, choosing
in every group the *highest* reachable accuracy inside the window gives every group at least its
accuracy in ``S*`` and keeps the gap ≤ ``g``; so it is optimal, and equal to ``S*`` when ``S*`` also has
the least gap among optima (counts rise strictly with accuracy). The search therefore tries every
reachable accuracy as ``lo`` (at most ``N + G`` of them), finds each group's choice by binary search, and
keeps the largest total, then the smallest gap: ``O(G · L · log n)`` per limit for ``L`` values of
``lo``, against ``Π_k (n_k + 1)`` combinations for brute force (``tests/test_thresholds.py`` checks it
against that brute force). Comparisons allow :data:`EPS` for floating-point accuracies.

Selection uses only validation scores. :func:`threshold_points` then applies each choice to the test
split and measures both splits with :func:`fairsearch.judge.metrics.evaluate_split` (the one definition of
accuracy, MaxAccGap and their 95 % intervals), on predictions, so AUCs are left out: thresholds do not
change a ranking.

Pure numpy (the metrics, and with them torch, are imported only when points are measured).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fairsearch.errors import FairsearchError
from fairsearch.judge.pareto import pareto_mask

__all__ = [
    "ABOVE_ALL",
    "DEFAULT_THRESHOLD",
    "EPS",
    "GAP_LADDER",
    "GROUP_THRESHOLDS",
    "NO_GROUP",
    "POINT_KINDS",
    "THRESHOLD",
    "GroupThresholds",
    "SplitScores",
    "ThresholdPoint",
    "TrialScores",
    "best_group_thresholds",
    "candidate_thresholds",
    "decisions_at",
    "missing_group_thresholds",
    "single_threshold_curve",
    "threshold_points",
]

THRESHOLD = "threshold"
"""Kind of a point made by one threshold for everyone."""
GROUP_THRESHOLDS = "group_thresholds"
"""Kind of a point made by one threshold per group: needs the group at inference time."""
POINT_KINDS = (THRESHOLD, GROUP_THRESHOLDS)
DEFAULT_THRESHOLD = 0.5
"""The trained model's threshold; also the threshold of a group without validation samples."""
ABOVE_ALL = math.nextafter(1.0, 2.0)
"""A threshold above every probability: everyone predicted negative."""
EPS = 1e-12
"""Slack in comparisons of accuracies against a gap limit (they are ratios of counts, held as floats)."""
GAP_LADDER: tuple[float, ...] = (
    0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 1.0,
)  # fmt: skip
"""The validation MaxAccGap limits for which per-group thresholds are chosen."""
NO_GROUP = "(no group)"
"""Key, in a point's thresholds, of the samples outside every group (id −1, ``exclude_unknown``)."""
_SPLITS = ("val", "test")
_PER_SAMPLE = ("score", "label", "group")


# --------------------------------------------------------------------------------------------- scores
@dataclass(frozen=True, eq=False)
class SplitScores:
    """One split's per-sample scores.

    Attributes:
        score: float64 ``[N]`` p(positive), in [0, 1].
        label: int64 ``[N]`` true class, 0 or 1.
        group: int64 ``[N]`` group id of the trial's ``group_by`` grouping; −1 = in no group.
    """

    score: np.ndarray
    label: np.ndarray
    group: np.ndarray

    def same_images(self, other: SplitScores) -> bool:
        """Whether ``other`` holds the same samples in the same order: the same labels and groups (what
        a paired comparison of the two needs)."""
        return self.label.shape == other.label.shape and bool(
            np.array_equal(self.label, other.label) and np.array_equal(self.group, other.group)
        )


@dataclass(frozen=True, eq=False)
class TrialScores:
    """A trial's validation and test scores, as its checkpoint's ``scores.npz`` holds them.

    Attributes:
        group_by: the grouping whose MaxAccGap the trial optimised (``"ethnicity"``, ``"race*gender"``).
        group_names: the name of every group id of its domain.
        val, test: the two splits.
    """

    group_by: str
    group_names: tuple[str, ...]
    val: SplitScores
    test: SplitScores

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez`` (names as a unicode array: loadable with ``allow_pickle=False``)."""
        out = {
            "group_by": np.array(self.group_by, dtype=str),
            "group_names": np.array(self.group_names, dtype=str),
        }
        for name in _SPLITS:
            split: SplitScores = getattr(self, name)
            out |= {f"{name}_score": split.score, f"{name}_label": split.label, f"{name}_group": split.group}
        return out

    def save(self, path: str | Path) -> None:
        """Writes :meth:`to_arrays` to ``path`` (``.npz``), object arrays refused."""
        arrays: dict[str, Any] = self.to_arrays()
        np.savez(path, allow_pickle=False, **arrays)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], source: str) -> TrialScores:
        """Checks and wraps the arrays of :meth:`to_arrays` (as read back from the file).

        Args:
            arrays: array by name.
            source: where they came from, for messages.

        Raises:
            FairsearchError: a missing array, or one of the wrong shape, type or values.
        """
        names_needed = ["group_by", "group_names", *(f"{s}_{a}" for s in _SPLITS for a in _PER_SAMPLE)]
        missing = [k for k in names_needed if k not in arrays]
        if missing:
            raise FairsearchError(f"{source}: not a fairsearch scores file (no {missing})")
        group_by, names = np.asarray(arrays["group_by"]), np.asarray(arrays["group_names"])
        if group_by.dtype.kind != "U" or group_by.ndim != 0 or names.dtype.kind != "U" or names.ndim != 1:
            raise FairsearchError(f"{source}: group_by and group_names must be text (a name, a list)")
        splits = {}
        for name in _SPLITS:
            score, label, group = (np.asarray(arrays[f"{name}_{a}"]) for a in _PER_SAMPLE)
            problem = None
            if not score.ndim == label.ndim == group.ndim == 1 or not score.size == label.size == group.size:
                problem = f"score, label and group are not three arrays of one length: {score.shape}, {label.shape}, {group.shape}"
            elif score.size == 0:
                problem = "no samples"
            elif score.dtype.kind != "f" or not np.all((score >= 0) & (score <= 1)):
                problem = "scores must be probabilities in [0, 1]"
            elif label.dtype.kind not in "iu" or not np.all((label == 0) | (label == 1)):
                problem = "labels must be integers 0 or 1"
            elif group.dtype.kind not in "iu" or group.min() < -1 or group.max() >= names.size:
                problem = f"group ids must be integers in [-1, {names.size})"
            if problem:
                raise FairsearchError(f"{source}: {name} split: {problem}")
            splits[name] = SplitScores(
                score.astype(np.float64), label.astype(np.int64), group.astype(np.int64)
            )
        return cls(str(group_by), tuple(str(n) for n in names), splits["val"], splits["test"])


# --------------------------------------------------------------------------------------------- search
def candidate_thresholds(score: np.ndarray) -> np.ndarray:
    """Every distinct split of ``score`` [N] (values in [0, 1]) by ``score >= t``, once each.

    Returns:
        float64 ``[U + 1]`` ascending for ``U`` unique scores: 0, the midpoints of neighbouring unique
        scores (the upper one where the two are adjacent floats), :data:`ABOVE_ALL`.
    """
    u = np.unique(np.asarray(score, dtype=np.float64))
    mid = (u[:-1] + u[1:]) / 2
    mid = np.where(mid > u[:-1], mid, u[1:])
    return np.concatenate([[0.0], mid, [ABOVE_ALL]])


def _hits(score: np.ndarray, label: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Correct predictions among ``score``/``label`` [n] at each of ``thresholds`` [M]: int64 [M]."""
    pos, neg = np.sort(score[label == 1]), np.sort(score[label == 0])
    pos_hits = pos.size - np.searchsorted(pos, thresholds, side="left")  # positives with score >= t
    return (pos_hits + np.searchsorted(neg, thresholds, side="left")).astype(np.int64)


def _options(score: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The correct counts one group can reach, ascending [K], and for each the candidate threshold
    nearest :data:`DEFAULT_THRESHOLD` that reaches it (the lower one of two as near) [K]."""
    cand = candidate_thresholds(score)
    hits = _hits(score, label, cand)
    order = np.lexsort((cand, np.abs(cand - DEFAULT_THRESHOLD), hits))
    hits, cand = hits[order], cand[order]
    first = np.r_[True, hits[1:] != hits[:-1]]
    return hits[first], cand[first]


@dataclass(frozen=True)
class GroupThresholds:
    """Per-group thresholds and the validation figures they were chosen by.

    Attributes:
        thresholds: float64 ``[G]`` threshold per group id (:data:`DEFAULT_THRESHOLD` for groups without
            validation samples).
        no_group: threshold of the samples with group id −1 (the one most accurate on them).
        acc: overall validation accuracy; ``gap``: validation MaxAccGap over groups with samples.
    """

    thresholds: np.ndarray
    no_group: float
    acc: float
    gap: float


def best_group_thresholds(
    score: np.ndarray, label: np.ndarray, group: np.ndarray, n_groups: int, gap_limit: float
) -> GroupThresholds | None:
    """The most accurate per-group thresholds whose MaxAccGap is at most ``gap_limit`` (the module
    docstring gives the algorithm and why it is exact).

    Args:
        score: float64 ``[N]`` p(positive). label: int ``[N]`` in {0, 1}.
        group: int ``[N]`` group ids in ``[-1, n_groups)``; −1 = in no group (not in the gap).
        n_groups: G. gap_limit: the largest MaxAccGap allowed, ≥ 0.

    Returns:
        The thresholds of the highest accuracy (then the smallest gap); None when no thresholds reach a
        gap this small.
    """
    thresholds = np.full(n_groups, DEFAULT_THRESHOLD)
    hits_total, no_group = 0, DEFAULT_THRESHOLD
    if (group < 0).any():
        hits, cand = _options(score[group < 0], label[group < 0])
        hits_total, no_group = int(hits[-1]), float(cand[-1])
    present = [k for k in range(n_groups) if (group == k).any()]
    if not present:
        return GroupThresholds(thresholds, no_group, hits_total / score.size, 0.0)
    options = [_options(score[group == k], label[group == k]) for k in present]
    accs = [hits / np.count_nonzero(group == k) for k, (hits, _) in zip(present, options, strict=True)]
    lows = np.unique(np.concatenate(accs))
    chosen = np.empty((len(present), lows.size), dtype=np.int64)
    feasible = np.ones(lows.size, dtype=bool)
    for j, acc in enumerate(accs):
        idx = np.searchsorted(acc, lows + gap_limit + EPS, side="right") - 1
        chosen[j] = np.maximum(idx, 0)
        feasible &= (idx >= 0) & (acc[chosen[j]] >= lows - EPS)
    if not feasible.any():
        return None
    total = sum(options[j][0][chosen[j]] for j in range(len(present)))
    picked = np.stack([accs[j][chosen[j]] for j in range(len(present))])
    gap = picked.max(axis=0) - picked.min(axis=0)
    best = np.lexsort((gap, -total))  # largest total, then smallest gap, then lowest window
    best = best[feasible[best]][0]
    for j, k in enumerate(present):
        thresholds[k] = options[j][1][chosen[j, best]]
    return GroupThresholds(
        thresholds, no_group, (hits_total + int(total[best])) / score.size, float(gap[best])
    )


def single_threshold_curve(
    score: np.ndarray, label: np.ndarray, group: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The single thresholds not dominated on (accuracy ↑, MaxAccGap ↓) over the groups with samples.

    Args:
        score, label, group, n_groups: as in :func:`best_group_thresholds`.

    Returns:
        ``(thresholds, acc, gap)``, float64 ``[K]`` each, by gap ascending; one threshold per distinct
        (acc, gap), the one nearest :data:`DEFAULT_THRESHOLD`.
    """
    cand = candidate_thresholds(score)
    present = [k for k in range(n_groups) if (group == k).any()]
    per_group = np.stack(
        [_hits(score[group == k], label[group == k], cand) / np.count_nonzero(group == k) for k in present]
        or [np.zeros(cand.size)],
        axis=1,
    )  # [M, G present]
    acc = _hits(score, label, cand) / score.size
    gap = per_group.max(axis=1) - per_group.min(axis=1)
    keep = np.flatnonzero(pareto_mask(np.stack([acc, gap], axis=1), ("max", "min")))
    keep = keep[np.lexsort((cand[keep], np.abs(cand[keep] - DEFAULT_THRESHOLD), -acc[keep], gap[keep]))]
    first = np.r_[True, (gap[keep][1:] != gap[keep][:-1]) | (acc[keep][1:] != acc[keep][:-1])]
    keep = keep[first]
    return cand[keep], acc[keep], gap[keep]


# --------------------------------------------------------------------------------------------- points
@dataclass(frozen=True)
class ThresholdPoint:
    """A trial's scores under chosen thresholds: one row of ``pareto.parquet`` in waiting.

    Attributes:
        kind: :data:`THRESHOLD` or :data:`GROUP_THRESHOLDS`.
        thresholds: ``{"all": t}``, or the threshold per group name (every group of the domain, and
            :data:`NO_GROUP` when some sample is in no group).
        gap_limit: the validation gap limit it was chosen for (per-group thresholds); None for one threshold.
        val, test: flat metrics of :meth:`fairsearch.judge.metrics.SplitMetrics.flat` for the ``group_by``
            grouping, with 95 % intervals, without AUC keys.
    """

    kind: str
    thresholds: dict[str, float]
    gap_limit: float | None
    val: dict[str, float]
    test: dict[str, float]


def _metrics(scores: TrialScores, split: SplitScores, pred: np.ndarray) -> dict[str, float]:
    # imported here: fairness imports torch, which readers of the fronts (``fairsearch pareto``) never need
    from fairsearch.judge.fairness import Grouping
    from fairsearch.judge.metrics import evaluate_split

    grouping = Grouping(scores.group_by, split.group, scores.group_names)
    # no AUC or ES-AUC: they are of the scores, not of a threshold (flat() leaves the missing ones out)
    return evaluate_split(
        pred.astype(np.float64), split.label, {scores.group_by: grouping}, primary=scores.group_by, aucs=False
    ).flat()


def _per_sample(split: SplitScores, by_group: np.ndarray, no_group: float) -> np.ndarray:
    return np.where(split.group >= 0, by_group[np.maximum(split.group, 0)], no_group)


def missing_group_thresholds(
    thresholds: Mapping[str, float], group_names: Sequence[str], split: SplitScores
) -> list[str]:
    """The group names that per-group ``thresholds`` lack: every group of the domain, and
    :data:`NO_GROUP` when a sample of ``split`` is in no group; sorted, empty when none is missing."""
    needed = set(group_names) | ({NO_GROUP} if (split.group < 0).any() else set())
    return sorted(needed - set(thresholds))


def decisions_at(
    split: SplitScores, thresholds: Mapping[str, float], group_names: Sequence[str]
) -> np.ndarray:
    """``split``'s decisions at a point's thresholds: positive when a sample's score is at least its
    threshold.

    Args:
        split: the scores decided.
        thresholds: ``{"all": t}``, or one threshold per name of ``group_names`` (and :data:`NO_GROUP`
            for the samples in no group), as :class:`ThresholdPoint` holds them.
        group_names: the name of every group id of ``split.group``.

    Returns:
        int64 ``[N]`` 0/1.

    Raises:
        ValueError: per-group thresholds that lack a group (:func:`missing_group_thresholds`).
    """
    if list(thresholds) == ["all"]:
        return (split.score >= thresholds["all"]).astype(np.int64)
    if missing := missing_group_thresholds(thresholds, group_names, split):
        raise ValueError(f"no threshold for group(s) {missing[:5]}")
    by_group = np.array([thresholds[name] for name in group_names], dtype=np.float64)
    cut = _per_sample(split, by_group, thresholds.get(NO_GROUP, DEFAULT_THRESHOLD))
    return (split.score >= cut).astype(np.int64)


def threshold_points(scores: TrialScores, gap_limits: Sequence[float] = GAP_LADDER) -> list[ThresholdPoint]:
    """The single-threshold curve and the per-group thresholds for each gap limit, chosen on validation
    and measured on validation and test.

    Args:
        scores: a trial's scores.
        gap_limits: validation MaxAccGap limits for the per-group thresholds.

    Returns:
        The single-threshold points by validation gap, then the per-group points by gap limit (a limit
        that gives the same thresholds as a smaller one, or none, adds no point).
    """
    val, g = scores.val, len(scores.group_names)
    points = []
    for t, _, _ in zip(*single_threshold_curve(val.score, val.label, val.group, g), strict=True):
        preds = {name: getattr(scores, name).score >= t for name in _SPLITS}
        points.append(
            ThresholdPoint(
                THRESHOLD,
                {"all": float(t)},
                None,
                *(_metrics(scores, getattr(scores, s), preds[s]) for s in _SPLITS),
            )
        )
    seen: set[tuple[float, ...]] = set()
    has_no_group = bool((val.group < 0).any() or (scores.test.group < 0).any())
    for limit in sorted(gap_limits):
        chosen = best_group_thresholds(val.score, val.label, val.group, g, limit)
        if chosen is None:
            continue
        key = (*chosen.thresholds.tolist(), chosen.no_group)
        if key in seen:
            continue
        seen.add(key)
        named = {n: float(t) for n, t in zip(scores.group_names, chosen.thresholds, strict=True)}
        if has_no_group:
            named[NO_GROUP] = chosen.no_group
        metrics = [
            _metrics(scores, split, split.score >= _per_sample(split, chosen.thresholds, chosen.no_group))
            for split in (scores.val, scores.test)
        ]
        points.append(ThresholdPoint(GROUP_THRESHOLDS, named, float(limit), *metrics))
    return points
