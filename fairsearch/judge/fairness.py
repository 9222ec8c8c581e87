"""Fairness math: groupings, MaxAccGap (hard and soft), group weights, (group-weighted) cross-entropy.

Pure numpy/torch/scikit-learn. A *grouping* assigns each sample a group id from the attribute domains
(``"race"`` or the intersection ``"race*gender"``); id −1 means "excluded from every group". The terms
here are what the training methods of :mod:`fairsearch.methods` build their losses from (Gu et al. 2025:
cross-entropy, λ·soft MaxAccGap, group weights w_s = min(N/|D_s|, w_max)).
The metrics of a whole split (AUC, ES-AUC, 95 % intervals) are in :mod:`fairsearch.judge.metrics`.
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike

from fairsearch.errors import FairsearchError

__all__ = [
    "UNKNOWN", "GroupAccuracy", "Grouping", "cross_entropy", "encode_groups", "group_weights", "max_acc_gap",
    "soft_max_acc_gap",
]  # fmt: skip

UNKNOWN = "unknown"


# --------------------------------------------------------------------------------------------- groupings
@dataclass(frozen=True, eq=False)
class Grouping:
    """Group id per sample for one attribute or an intersection of attributes.

    Attributes:
        name: ``"race"`` or ``"race*gender"``.
        ids: int64 ``[N]`` group id per sample; −1 = excluded (unknown, when ``exclude_unknown=True``).
        names: ``names[g]`` for every group id ``g`` of the domain, present in this split or not.
    """

    name: str
    ids: np.ndarray
    names: tuple[str, ...]

    @property
    def n_groups(self) -> int:
        """G, the number of group ids in the domain."""
        return len(self.names)

    def counts(self) -> np.ndarray:
        """Samples per group id, int64 ``[G]`` (excluded samples are not counted)."""
        return np.bincount(self.ids[self.ids >= 0], minlength=self.n_groups).astype(np.int64)


def _parse_by(by: str | Sequence[str]) -> list[str]:
    parts = by.split("*") if isinstance(by, str) else list(by)
    parts = [p.strip() for p in parts]
    if not parts or any(not p for p in parts):
        raise FairsearchError(f"by: {by!r} must name one attribute or several joined by '*' (race*gender)")
    if len(set(parts)) != len(parts):
        raise FairsearchError(f"by: {by!r} names an attribute more than once")
    return parts


def _integer_codes(attr: str, values: ArrayLike) -> np.ndarray:
    codes = np.asarray(values)
    if codes.ndim != 1:
        raise FairsearchError(f"{attr}: codes must be one-dimensional, got shape {codes.shape}")
    if codes.dtype.kind in "iu" or codes.size == 0:
        return codes.astype(np.int64)
    if codes.dtype.kind == "f" and np.all(np.isfinite(codes)) and np.all(codes == np.round(codes)):
        return codes.astype(np.int64)
    bad = codes[:3].tolist()
    raise FairsearchError(f"{attr}: codes must be integers, got dtype {codes.dtype} (e.g. {bad})")


def encode_groups(
    attributes: Mapping[str, ArrayLike],
    by: str | Sequence[str],
    value_names: Mapping[str, Mapping[int, str]],
    *,
    exclude_unknown: bool = False,
) -> Grouping:
    """Group id per sample from one sensitive attribute or the intersection of several.

    Ids come from the attribute *domains* (``value_names``), so a group keeps its id in every split. For
    attributes ``a1*a2`` with known codes sorted ascending, the id is the mixed-radix index of the pair
    (first attribute most significant) and the name joins the value names (``"Black*Female"``). A sample
    with code −1 in *any* of the attributes belongs to one extra group named ``UNKNOWN`` (the last id),
    or gets id −1 when ``exclude_unknown`` is true; that extra group exists even if no sample is unknown.

    Args:
        attributes: integer code arrays ``[N]`` per attribute name (as ``fairsearch.data.Split``).
        by: ``"race"``, ``"race*gender"`` or ``["race", "gender"]``.
        value_names: attribute domains, code → name (``fairsearch.data.ATTRIBUTE_VALUES``); −1 is unknown.
        exclude_unknown: give unknown samples id −1 instead of the ``unknown`` group.

    Returns:
        The grouping, named with the attributes joined by ``*``.

    Raises:
        FairsearchError: an attribute in ``by`` is not in ``value_names`` or ``attributes``; a code is
            not in its domain (the message names the attribute, the bad codes and the allowed ones); the
            arrays have different lengths or non-integer codes.
    """
    parts = _parse_by(by)
    for attr in parts:
        if attr not in value_names:
            raise FairsearchError(f"by: attribute {attr!r} is not one of {sorted(value_names)}")
        if attr not in attributes:
            raise FairsearchError(f"by: no codes for attribute {attr!r}; the split has {sorted(attributes)}")
    n = _integer_codes(parts[0], attributes[parts[0]]).size
    ids, unknown = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
    level_names: list[list[str]] = []
    for attr in parts:
        codes = _integer_codes(attr, attributes[attr])
        if codes.size != n:
            raise FairsearchError(f"{attr}: {codes.size} codes, but {parts[0]!r} has {n}")
        domain = np.array(sorted(int(c) for c in value_names[attr] if int(c) != -1), dtype=np.int64)
        if domain.size == 0:
            raise FairsearchError(f"{attr}: the domain {dict(value_names[attr])} has no known values")
        pos = np.minimum(np.searchsorted(domain, codes), domain.size - 1)
        is_unknown = codes == -1
        bad = ~is_unknown & (domain[pos] != codes)
        if bad.any():
            allowed = ", ".join(f"{c} ({value_names[attr][int(c)]})" for c in domain)
            raise FairsearchError(
                f"{attr}: code(s) {sorted(set(codes[bad].tolist()))} not in the domain; "
                f"allowed: {allowed}, -1 ({UNKNOWN})"
            )
        ids = ids * domain.size + pos
        unknown |= is_unknown
        level_names.append([str(value_names[attr][int(c)]) for c in domain])
    names = tuple("*".join(combo) for combo in itertools.product(*level_names))
    if exclude_unknown:
        ids[unknown] = -1
    else:
        ids[unknown] = len(names)
        names = (*names, UNKNOWN)
    return Grouping(name="*".join(parts), ids=ids, names=names)


# --------------------------------------------------------------------------------------------- hard gap
@dataclass(frozen=True, eq=False)
class GroupAccuracy:
    """Per-group accuracy and MaxAccGap.

    Attributes:
        gap: max − min accuracy over groups with samples; 0.0 when fewer than two groups have samples.
        accuracy: float ``[G]`` accuracy per group id, NaN for groups without samples.
        size: int64 ``[G]`` samples per group id.
    """

    gap: float
    accuracy: np.ndarray
    size: np.ndarray

    @property
    def worst(self) -> float | None:
        """Lowest accuracy over groups with samples, None when no group has samples."""
        present = self.size > 0
        return float(self.accuracy[present].min()) if present.any() else None


def _gap_rows(hits: np.ndarray, size: np.ndarray) -> np.ndarray:
    """MaxAccGap per row of ``[B, G]`` correct counts and sizes; 0.0 for rows with < 2 groups."""
    present = size > 0
    acc = np.divide(hits, size, out=np.zeros(hits.shape), where=present)
    hi = np.where(present, acc, -np.inf).max(axis=1)
    lo = np.where(present, acc, np.inf).min(axis=1)
    return np.where(present.sum(axis=1) >= 2, hi - lo, 0.0)


def max_acc_gap(
    pred: ArrayLike, label: ArrayLike, group: ArrayLike, n_groups: int | None = None
) -> GroupAccuracy:
    """Accuracy per group and the gap max − min over groups that have samples.

    Equals fairlearn's ``MetricFrame(metrics=accuracy_score, ...).difference(method="between_groups")``
    on the samples with group id ≥ 0.

    Args:
        pred: ``[N]`` predicted classes.
        label: ``[N]`` true classes.
        group: ``[N]`` int group ids in ``[0, G)``; −1 = excluded.
        n_groups: G; default ``max(group) + 1``.

    Returns:
        The per-group accuracies, sizes and the gap (0.0 if fewer than two groups have samples).

    Raises:
        ValueError: mismatched shapes or group ids outside ``[-1, G)``.
    """
    p, y, g = (np.asarray(a).reshape(-1) for a in (pred, label, group))
    if not p.size == y.size == g.size:
        raise ValueError(f"pred, label, group lengths differ: {p.size}, {y.size}, {g.size}")
    g = g.astype(np.int64)
    n = int(g.max(initial=-1)) + 1 if n_groups is None else int(n_groups)
    if g.size and (g.min() < -1 or g.max() >= n):
        raise ValueError(f"group ids must lie in [-1, {n}), got [{g.min()}, {g.max()}]")
    keep = g >= 0
    size = np.bincount(g[keep], minlength=n).astype(np.int64)
    hits = np.bincount(g[keep], weights=(p == y)[keep], minlength=n)
    accuracy = np.divide(hits, size, out=np.full(n, np.nan), where=size > 0)
    gap = float(_gap_rows(hits[None], size[None])[0]) if n else 0.0
    return GroupAccuracy(gap=gap, accuracy=accuracy, size=size)


# --------------------------------------------------------------------------------------------- losses
def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _check_batch(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> None:
    if logits.ndim != 2 or labels.shape != (logits.shape[0],) or groups.shape != labels.shape:
        raise ValueError(
            "expected logits [N, C], labels [N], groups [N]; got "
            f"{tuple(logits.shape)}, {tuple(labels.shape)}, {tuple(groups.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("empty batch: a loss needs at least one sample")


def soft_max_acc_gap(logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Differentiable MaxAccGap: max − min over groups of the mean p(y_true | x).

    Soft accuracy of group s is the mean softmax probability of the true class over its samples in the
    batch. The gradient raises p(y_true) on the worst group's samples and lowers it on the best group's
    (ties share the gradient); other groups get none.

    Args:
        logits: ``[N, C]`` class logits.
        labels: ``[N]`` int64 true classes.
        groups: ``[N]`` int group ids; −1 = excluded.

    Returns:
        Scalar tensor (float32, or float64 for float64 logits). Zero, still attached to the graph of
        ``logits`` (zero gradients), when fewer than two groups are present in the batch.
    """
    _check_batch(logits, labels, groups)
    x = _as_float(logits)
    p_true = torch.softmax(x, dim=-1).gather(1, labels.long().unsqueeze(1)).squeeze(1)
    keep = groups >= 0
    present, inverse = torch.unique(groups[keep], return_inverse=True)
    if present.numel() < 2:
        return x.sum() * 0.0
    sums = p_true.new_zeros(present.numel()).index_add(0, inverse, p_true[keep])
    soft_acc = sums / torch.bincount(inverse, minlength=present.numel()).to(p_true.dtype)
    return soft_acc.amax() - soft_acc.amin()


def _bound_problem(key: str, value: Any, low: float) -> str | None:
    """The problem with a config number that must be finite and >= low, or None."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{key}: {value!r} must be a number >= {low:g}"
    if not math.isfinite(float(value)):
        return f"{key}: {value!r} must be finite"
    return None if float(value) >= low else f"{key}: {value!r} must be >= {low:g}"


def group_weights(counts: ArrayLike, w_max: float) -> torch.Tensor:
    """Inverse-frequency group weights w_s = min(N / |D_s|, w_max), N = total of ``counts``.

    Args:
        counts: ``[G]`` samples per group id, usually ``Grouping.counts()`` of the *training* split.
        w_max: clip, ≥ 1 (the paper uses 10).

    Returns:
        float32 ``[G]``; groups with zero count get ``w_max`` (no sample will use it). Per-sample weights
        are ``table[groups]``.

    Raises:
        FairsearchError: ``w_max`` < 1 or not finite.
        ValueError: counts not one-dimensional or negative.
    """
    problem = _bound_problem("w_max", w_max, 1.0)
    if problem:
        raise FairsearchError(problem)
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or (c < 0).any():
        raise ValueError(f"counts must be a one-dimensional array of non-negative numbers, got {c}")
    total = c.sum()
    w = np.divide(total, c, out=np.full(c.shape, float(w_max)), where=c > 0)
    return torch.as_tensor(np.minimum(w, w_max), dtype=torch.float32)


def cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean cross-entropy of a batch, or its group-weighted mean.

    With ``weights``, the weighted mean Σ w_i · CE_i / Σ w_i over the batch, w_i = ``weights[groups[i]]``;
    samples with group −1 get weight 1. Normalised by the batch's weights (as ``F.cross_entropy``'s
    ``weight=`` is), so the weights set how much the groups count relative to each other and not also
    the step size: unnormalised, a batch holding minority samples took steps up to ``w_max`` times
    larger, and at w_max 10–20 trials lost 10–30 points of accuracy (see ``search_spaces/``).

    Args:
        logits: ``[N, C]`` class logits (half precision is computed in float32).
        labels: ``[N]`` int64 true classes.
        groups: ``[N]`` int group ids; −1 = excluded.
        weights: ``[G]`` group weight table (:func:`group_weights`), or ``None`` for the plain mean.

    Returns:
        Scalar loss tensor.

    Raises:
        ValueError: bad shapes, an empty batch, or a group id without a weight.
    """
    _check_batch(logits, labels, groups)
    x = _as_float(logits)
    ce = F.cross_entropy(x, labels.long(), reduction="none")
    if weights is None:
        return ce.mean()
    table = weights.to(device=x.device, dtype=x.dtype).reshape(-1)
    if int(groups.max()) >= table.numel():
        raise ValueError(f"group id {int(groups.max())} has no weight (table has {table.numel()})")
    w = torch.where(groups >= 0, table[groups.clamp(min=0).long()], torch.ones_like(ce))
    return (w * ce).sum() / w.sum()
