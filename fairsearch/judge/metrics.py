"""Metrics of one split: accuracy and AUC overall and per group, MaxAccGap, worst-group accuracy, ES-AUC,
and 95 % intervals — each with the group sizes behind it.

Pure numpy/scikit-learn; groupings and the hard MaxAccGap come from :mod:`fairsearch.judge.fairness`, the
intervals (analytic, no resampling) from :mod:`fairsearch.judge.intervals`. The flat keys of
:meth:`SplitMetrics.flat` are the ones Ray reports, the Parquet columns and the report use (table in
docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

from fairsearch.errors import FairsearchError
from fairsearch.judge.fairness import Grouping, max_acc_gap
from fairsearch.judge.intervals import (
    auc_interval,
    max_gap_interval,
    proportion_interval,
    worst_group_interval,
)

__all__ = ["GroupMetrics", "GroupingMetrics", "SplitMetrics", "evaluate_split"]

Interval = tuple[float, float]


@dataclass(frozen=True)
class GroupMetrics:
    """One group of one grouping in one split (only groups with samples are reported).

    Attributes:
        name: group name (``"Black"``, ``"Black*Female"``, ``"unknown"``).
        id: group id in the grouping's domain.
        n: samples; ``n_pos``: samples with label 1.
        acc: accuracy at threshold 0.5.
        p_pos: fraction predicted positive (prob_pos ≥ 0.5); 0 or 1 shows a group collapsed to one class.
        auc: ROC AUC, None when undefined; ``auc_reason`` then says why (e.g. one class only).
        acc_ci, auc_ci: 95 % intervals (Clopper–Pearson; DeLong-logit ∪ Newcombe score); None when the
            intervals are off or, for ``auc_ci``, the AUC is undefined.
    """

    name: str
    id: int
    n: int
    n_pos: int
    acc: float
    p_pos: float
    auc: float | None
    auc_reason: str | None
    acc_ci: Interval | None = None
    auc_ci: Interval | None = None


@dataclass(frozen=True)
class GroupingMetrics:
    """Fairness metrics of one grouping.

    Attributes:
        name: the grouping (``"race"``).
        groups: the groups with samples, in id order.
        max_acc_gap: max − min group accuracy; 0.0 when fewer than two groups have samples.
        worst_group, worst_group_acc: the lowest-accuracy group; None when no group has samples.
        es_auc: AUC / (1 + Σ_g |AUC_g − AUC|) over groups with a defined AUC (FairCLIP); None when the
            overall AUC or every group AUC is undefined, ``es_auc_reason`` then says why.
        n_excluded: samples with group id −1.
        max_acc_gap_ci, worst_group_acc_ci: 95 % intervals over all the groups with samples (pairwise
            MOVER-Clopper–Pearson; Clopper–Pearson limits); None when the intervals are off or, for
            ``worst_group_acc_ci``, no group has samples. ES-AUC has no interval.
    """

    name: str
    groups: tuple[GroupMetrics, ...]
    max_acc_gap: float
    worst_group: str | None
    worst_group_acc: float | None
    es_auc: float | None
    es_auc_reason: str | None
    n_excluded: int
    max_acc_gap_ci: Interval | None = None
    worst_group_acc_ci: Interval | None = None


@dataclass(frozen=True)
class SplitMetrics:
    """Metrics of one split: overall, per grouping, and 95 % intervals.

    Attributes:
        n, n_pos: samples and positives. acc: accuracy at threshold 0.5.
        auc: ROC AUC, None when the split holds one class only (``auc_reason`` says so).
        primary: the optimised grouping; its gap, worst-group accuracy and ES-AUC are the unsuffixed keys.
        groupings: metrics per grouping name (with their groups' and their own intervals).
        acc_ci, auc_ci: 95 % intervals of the overall accuracy and AUC; None when the intervals are off
            or, for ``auc_ci``, the AUC is undefined.
    """

    n: int
    n_pos: int
    acc: float
    auc: float | None
    auc_reason: str | None
    primary: str
    groupings: Mapping[str, GroupingMetrics]
    acc_ci: Interval | None = None
    auc_ci: Interval | None = None

    @property
    def max_acc_gap_ci(self) -> Interval | None:
        """The primary grouping's MaxAccGap interval."""
        return self.groupings[self.primary].max_acc_gap_ci

    def flat(self) -> dict[str, float]:
        """The flat metric keys of docs/ARCHITECTURE.md; undefined values (None) are left out.

        A key with an interval has ``<key>_ci_low`` and ``<key>_ci_high`` beside it.
        """
        out: dict[str, float] = {}

        def put(key: str, value: float | None, ci: Interval | None = None) -> None:
            if value is None:
                return
            out[key] = value
            if ci is not None:
                out[f"{key}_ci_low"], out[f"{key}_ci_high"] = ci

        put("acc", self.acc, self.acc_ci)
        put("auc", self.auc, self.auc_ci)
        for key, g in self.groupings.items():
            put(f"max_acc_gap/{key}", g.max_acc_gap, g.max_acc_gap_ci)
            put(f"worst_group_acc/{key}", g.worst_group_acc, g.worst_group_acc_ci)
            put(f"es_auc/{key}", g.es_auc)
            for m in g.groups:
                put(f"acc/{key}/{m.name}", m.acc, m.acc_ci)
                put(f"n/{key}/{m.name}", float(m.n))
                put(f"n_pos/{key}/{m.name}", float(m.n_pos))
                put(f"p_pos/{key}/{m.name}", m.p_pos)
                put(f"auc/{key}/{m.name}", m.auc, m.auc_ci)
        for metric in ("max_acc_gap", "worst_group_acc", "es_auc"):
            for suffix in ("", "_ci_low", "_ci_high"):
                if f"{metric}/{self.primary}{suffix}" in out:
                    out[f"{metric}{suffix}"] = out[f"{metric}/{self.primary}{suffix}"]
        return out


def _auc(prob: np.ndarray, label: np.ndarray) -> tuple[float | None, str | None]:
    n_pos = int(label.sum())
    if n_pos in (0, label.size):
        return None, f"one class only (n_pos={n_pos} of {label.size})"
    return float(roc_auc_score(label, prob)), None


def _pair(low: np.ndarray | float, high: np.ndarray | float) -> Interval:
    return float(low), float(high)


def _auc_ci(prob: np.ndarray, label: np.ndarray, auc: float | None) -> Interval | None:
    if auc is None:
        return None
    low, high = auc_interval(prob, label)
    return min(low, auc), max(high, auc)  # the rank AUC and sklearn's can differ in the last bit


def _grouping_metrics(
    name: str,
    grouping: Grouping,
    prob: np.ndarray,
    label: np.ndarray,
    pred: np.ndarray,
    auc: float | None,
    intervals: bool,
    aucs: bool = True,
) -> GroupingMetrics:
    ids = grouping.ids
    stats = max_acc_gap(pred, label, ids, n_groups=grouping.n_groups)
    present = np.flatnonzero(stats.size > 0)
    size = stats.size[present]
    hits = np.rint(stats.accuracy[present] * size)  # correct predictions per group: integers again
    acc_low, acc_high = proportion_interval(hits, size)
    groups = []
    for k, gid in enumerate(present):
        mask = ids == gid
        g_auc, reason = _auc(prob[mask], label[mask]) if aucs else (None, _NO_AUC)
        groups.append(
            GroupMetrics(
                name=grouping.names[gid],
                id=int(gid),
                n=int(size[k]),
                n_pos=int(label[mask].sum()),
                acc=float(stats.accuracy[gid]),
                p_pos=float(pred[mask].mean()),
                auc=g_auc,
                auc_reason=reason,
                acc_ci=_pair(acc_low[k], acc_high[k]) if intervals else None,
                auc_ci=_auc_ci(prob[mask], label[mask], g_auc) if intervals and aucs else None,
            )
        )
    worst = min(groups, key=lambda m: m.acc, default=None)
    defined = [m.auc for m in groups if m.auc is not None]
    es_auc, es_reason = None, None
    if auc is None:
        es_reason = "overall AUC undefined"
    elif not defined:
        es_reason = "no group has a defined AUC"
    else:
        es_auc = auc / (1.0 + sum(abs(a - auc) for a in defined))
    return GroupingMetrics(
        name=name,
        groups=tuple(groups),
        max_acc_gap=stats.gap,
        worst_group=None if worst is None else worst.name,
        worst_group_acc=None if worst is None else worst.acc,
        es_auc=es_auc,
        es_auc_reason=es_reason,
        n_excluded=int((ids < 0).sum()),
        max_acc_gap_ci=_pair(*max_gap_interval(hits, size)) if intervals else None,
        worst_group_acc_ci=_pair(*worst_group_interval(hits, size)) if intervals and groups else None,
    )


def evaluate_split(
    prob_pos: ArrayLike,
    labels: ArrayLike,
    groupings: Mapping[str, Grouping],
    *,
    primary: str,
    n_boot: int = 1000,
    seed: int = 0,
    aucs: bool = True,
) -> SplitMetrics:
    """Accuracy, AUC and fairness metrics of one split, with 95 % intervals.

    Predictions are ``prob_pos >= 0.5``. AUCs use ``sklearn.metrics.roc_auc_score``; an AUC over one class
    is None with the reason recorded, never NaN. Every accuracy and AUC (overall and per group of every
    grouping) and every grouping's MaxAccGap and worst-group accuracy get a 95 % interval from
    :mod:`fairsearch.judge.intervals`: Clopper–Pearson for accuracies, pairwise MOVER-Clopper–Pearson for the gap,
    DeLong-logit ∪ Newcombe score for AUCs. They are computed, not resampled: nothing is bootstrapped any
    more, so ``n_boot`` only switches them on or off and ``seed`` changes nothing (both stay for callers
    and configs that pass them). ES-AUC has no interval.

    Args:
        prob_pos: float ``[N]`` predicted probability of class 1, in [0, 1].
        labels: ``[N]`` true labels in {0, 1}.
        groupings: grouping per name (its ``ids`` are ``[N]``); names become the flat-key infixes.
        primary: the optimised grouping, a key of ``groupings``.
        n_boot: 0 skips the intervals; any positive value computes them (the value itself is unused).
        seed: unused; the intervals are deterministic.
        aucs: False leaves every AUC and ES-AUC out (None, with the reason): for predictions that are
            decisions already (a threshold applied), where no AUC is of the decision.

    Returns:
        The structured metrics; ``.flat()`` gives the flat metric keys.

    Raises:
        FairsearchError: ``primary`` is not a key of ``groupings``.
        ValueError: empty split, mismatched lengths, probabilities outside [0, 1], labels not in {0, 1},
            or negative ``n_boot``.
    """
    if primary not in groupings:
        raise FairsearchError(f"primary: {primary!r} is not one of {list(groupings)}")
    prob = np.asarray(prob_pos, dtype=np.float64).reshape(-1)
    label = np.asarray(labels).reshape(-1)
    if prob.size == 0 or prob.size != label.size:
        raise ValueError(f"prob_pos and labels must be non-empty and equally long: {prob.size}, {label.size}")
    if not np.all((prob >= 0) & (prob <= 1)):
        raise ValueError("prob_pos must be probabilities in [0, 1] (no NaN)")
    if not np.all((label == 0) | (label == 1)):
        raise ValueError(f"labels must be 0 or 1, got values {np.unique(label)[:5].tolist()}")
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    label = label.astype(np.int64)
    for key, grouping in groupings.items():
        if grouping.ids.shape != label.shape:
            raise ValueError(f"grouping {key!r} has {grouping.ids.size} ids for {label.size} samples")
    intervals = n_boot > 0
    pred = (prob >= 0.5).astype(np.int64)
    correct = pred == label
    auc, auc_reason = _auc(prob, label) if aucs else (None, _NO_AUC)
    per = {
        key: _grouping_metrics(key, g, prob, label, pred, auc, intervals, aucs)
        for key, g in groupings.items()
    }
    return SplitMetrics(
        n=int(label.size),
        n_pos=int(label.sum()),
        acc=float(correct.mean()),
        auc=auc,
        auc_reason=auc_reason,
        primary=primary,
        groupings=per,
        acc_ci=_pair(*proportion_interval(correct.sum(), label.size)) if intervals else None,
        auc_ci=_auc_ci(prob, label, auc) if intervals and aucs else None,
    )


_NO_AUC = "not computed (aucs=False)"
