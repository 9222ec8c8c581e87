"""Metrics of one split: accuracy and AUC overall and per group, MaxAccGap, worst-group accuracy, ES-AUC,
and percentile-bootstrap 95 % intervals — each with the group sizes behind it.

Pure numpy/scikit-learn; groupings and the hard MaxAccGap come from :mod:`fairsearch.fairness`. The flat
keys of :meth:`SplitMetrics.flat` are the ones Ray reports, the Parquet columns and the report use
(table in docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

from fairsearch.errors import FairsearchError
from fairsearch.fairness import Grouping, _gap_rows, max_acc_gap

__all__ = ["GroupMetrics", "GroupingMetrics", "SplitMetrics", "evaluate_split"]

_BOOT_CELLS = 4_000_000  # resampled indices held in memory at once by the bootstrap


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
    """

    name: str
    id: int
    n: int
    n_pos: int
    acc: float
    p_pos: float
    auc: float | None
    auc_reason: str | None


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
    """

    name: str
    groups: tuple[GroupMetrics, ...]
    max_acc_gap: float
    worst_group: str | None
    worst_group_acc: float | None
    es_auc: float | None
    es_auc_reason: str | None
    n_excluded: int


@dataclass(frozen=True)
class SplitMetrics:
    """Metrics of one split: overall, per grouping, and bootstrap intervals.

    Attributes:
        n, n_pos: samples and positives. acc: accuracy at threshold 0.5.
        auc: ROC AUC, None when the split holds one class only (``auc_reason`` says so).
        primary: the optimised grouping; its gap, worst-group accuracy and ES-AUC are the unsuffixed keys.
        groupings: metrics per grouping name.
        acc_ci, max_acc_gap_ci: percentile bootstrap 95 % intervals; None when ``n_boot`` is 0.
        n_boot, seed: the bootstrap settings.
    """

    n: int
    n_pos: int
    acc: float
    auc: float | None
    auc_reason: str | None
    primary: str
    groupings: Mapping[str, GroupingMetrics]
    acc_ci: tuple[float, float] | None
    max_acc_gap_ci: tuple[float, float] | None
    n_boot: int
    seed: int

    def flat(self) -> dict[str, float]:
        """The flat metric keys of docs/ARCHITECTURE.md; undefined values (None) are left out."""
        out: dict[str, float] = {"acc": self.acc}
        if self.auc is not None:
            out["auc"] = self.auc
        for key, g in self.groupings.items():
            out[f"max_acc_gap/{key}"] = g.max_acc_gap
            if g.worst_group_acc is not None:
                out[f"worst_group_acc/{key}"] = g.worst_group_acc
            if g.es_auc is not None:
                out[f"es_auc/{key}"] = g.es_auc
            for m in g.groups:
                out[f"acc/{key}/{m.name}"] = m.acc
                out[f"n/{key}/{m.name}"] = float(m.n)
                out[f"n_pos/{key}/{m.name}"] = float(m.n_pos)
                out[f"p_pos/{key}/{m.name}"] = m.p_pos
                if m.auc is not None:
                    out[f"auc/{key}/{m.name}"] = m.auc
        for metric in ("max_acc_gap", "worst_group_acc", "es_auc"):
            if f"{metric}/{self.primary}" in out:
                out[metric] = out[f"{metric}/{self.primary}"]
        for metric, ci in (("acc", self.acc_ci), ("max_acc_gap", self.max_acc_gap_ci)):
            if ci is not None:
                out[f"{metric}_ci_low"], out[f"{metric}_ci_high"] = ci
        return out


def _auc(prob: np.ndarray, label: np.ndarray) -> tuple[float | None, str | None]:
    n_pos = int(label.sum())
    if n_pos in (0, label.size):
        return None, f"one class only (n_pos={n_pos} of {label.size})"
    return float(roc_auc_score(label, prob)), None


def _grouping_metrics(
    name: str, grouping: Grouping, prob: np.ndarray, label: np.ndarray, pred: np.ndarray, auc: float | None
) -> GroupingMetrics:
    ids = grouping.ids
    stats = max_acc_gap(pred, label, ids, n_groups=grouping.n_groups)
    groups = []
    for gid in np.flatnonzero(stats.size > 0):
        mask = ids == gid
        g_auc, reason = _auc(prob[mask], label[mask])
        groups.append(
            GroupMetrics(
                name=grouping.names[gid],
                id=int(gid),
                n=int(stats.size[gid]),
                n_pos=int(label[mask].sum()),
                acc=float(stats.accuracy[gid]),
                p_pos=float(pred[mask].mean()),
                auc=g_auc,
                auc_reason=reason,
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
    )


def _bootstrap(
    correct: np.ndarray, ids: np.ndarray, n_groups: int, n_boot: int, seed: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile 95 % intervals of accuracy and MaxAccGap, resampling the split's samples with replacement.

    A resample in which fewer than two groups have samples has gap 0.0, as ``max_acc_gap``.
    """
    rng = np.random.default_rng(seed)
    n = correct.size
    acc, gap = np.empty(n_boot), np.empty(n_boot)
    chunk = max(1, _BOOT_CELLS // n)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        c, g = correct[idx], ids[idx]
        acc[start : start + b] = c.mean(axis=1)
        keep = g >= 0
        key = (np.arange(b)[:, None] * n_groups + g)[keep]
        hits = np.bincount(key, weights=c[keep], minlength=b * n_groups).reshape(b, n_groups)
        size = np.bincount(key, minlength=b * n_groups).reshape(b, n_groups)
        gap[start : start + b] = _gap_rows(hits, size)
    lo_hi = (2.5, 97.5)
    a_lo, a_hi = np.percentile(acc, lo_hi)
    g_lo, g_hi = np.percentile(gap, lo_hi)
    return (float(a_lo), float(a_hi)), (float(g_lo), float(g_hi))


def evaluate_split(
    prob_pos: ArrayLike,
    labels: ArrayLike,
    groupings: Mapping[str, Grouping],
    *,
    primary: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> SplitMetrics:
    """Accuracy, AUC and fairness metrics of one split, with bootstrap intervals.

    Predictions are ``prob_pos >= 0.5``. AUCs use ``sklearn.metrics.roc_auc_score``; an AUC over one class
    is None with the reason recorded, never NaN. The bootstrap draws ``n_boot`` resamples of the split's
    N samples (seeded ``numpy.random.Generator``, vectorised) for overall accuracy and the primary
    grouping's MaxAccGap.

    Args:
        prob_pos: float ``[N]`` predicted probability of class 1, in [0, 1].
        labels: ``[N]`` true labels in {0, 1}.
        groupings: grouping per name (its ``ids`` are ``[N]``); names become the flat-key infixes.
        primary: the optimised grouping, a key of ``groupings``.
        n_boot: bootstrap resamples; 0 skips the intervals.
        seed: bootstrap seed.

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
    pred = (prob >= 0.5).astype(np.int64)
    correct = pred == label
    auc, auc_reason = _auc(prob, label)
    per = {key: _grouping_metrics(key, g, prob, label, pred, auc) for key, g in groupings.items()}
    acc_ci = gap_ci = None
    if n_boot:
        p = groupings[primary]
        acc_ci, gap_ci = _bootstrap(correct, p.ids, p.n_groups, n_boot, seed)
    return SplitMetrics(
        n=int(label.size),
        n_pos=int(label.sum()),
        acc=float(correct.mean()),
        auc=auc,
        auc_reason=auc_reason,
        primary=primary,
        groupings=per,
        acc_ci=acc_ci,
        max_acc_gap_ci=gap_ci,
        n_boot=n_boot,
        seed=seed,
    )
