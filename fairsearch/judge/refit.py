"""A last-layer refit (DFR-style; Kirichenko et al. 2023, "Last layer re-training is sufficient for
robustness to spurious correlations"): keep a trained model's features, fit a new linear head on a
group-balanced half of the validation split, choose its regularisation on the other half.

The validation split is cut in two halves, stratified by group and label (from ``seed``): the *fit* half
trains L2-regularised logistic regressions on standardised features, each sample weighted by the inverse
of its group's size in that half, so every group counts alike (the balanced subsets of DFR, in
expectation); the *selection* half picks the regularisation strength ``C`` of the highest worst-group
accuracy (ties: the higher accuracy, then the stronger regularisation). The chosen head is then applied
once to the test features; test labels are never an input here. Pure numpy and scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["C_GRID", "LastLayerRefit", "refit_last_layer"]

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
"""The inverse regularisation strengths tried, strongest first."""


@dataclass(frozen=True)
class LastLayerRefit:
    """A refit head's outputs.

    Attributes:
        c: the chosen inverse regularisation strength.
        select: ``[M]`` indices (into the validation split) of the selection half.
        select_prob: ``[M]`` p(positive) on the selection half.
        test_prob: ``[T]`` p(positive) on the test split.
        n_fit: samples in the fit half.
    """

    c: float
    select: np.ndarray
    select_prob: np.ndarray
    test_prob: np.ndarray
    n_fit: int


def _halves(label: np.ndarray, group: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation indices cut in two, every (group, label) cell split as evenly as it can be."""
    rng = np.random.default_rng(seed)
    fit, select = [], []
    for cell in np.unique(np.stack([group, label], axis=1), axis=0):
        members = rng.permutation(np.flatnonzero((group == cell[0]) & (label == cell[1])))
        half = (members.size + int(rng.integers(0, 2))) // 2  # an odd cell's extra sample by coin
        fit.append(members[:half])
        select.append(members[half:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(select))


def _worst_and_acc(prob: np.ndarray, label: np.ndarray, group: np.ndarray) -> tuple[float, float]:
    right = (prob >= 0.5) == label.astype(bool)
    groups = [g for g in np.unique(group) if g >= 0]
    worst = min((float(right[group == g].mean()) for g in groups), default=float(right.mean()))
    return worst, float(right.mean())


def refit_last_layer(
    val_features: ArrayLike,
    val_label: ArrayLike,
    val_group: ArrayLike,
    test_features: ArrayLike,
    *,
    seed: int = 0,
) -> LastLayerRefit:
    """Fits a head on half the validation features, selects on the other half, applies it to test.

    Args:
        val_features: ``[N, H]`` the validation split's last-token features.
        val_label: ``[N]`` its labels (0/1).
        val_group: ``[N]`` its group ids (−1: in no group: fitted with weight 1, never a group).
        test_features: ``[T, H]`` the test split's features (no labels: they are not needed).
        seed: how the validation split is cut.

    Returns:
        The chosen ``C``, the selection half and its probabilities, and the test probabilities.

    Raises:
        ValueError: mismatched shapes, or a fit half holding one class only.
    """
    from sklearn.linear_model import LogisticRegression

    x, y = np.asarray(val_features, dtype=np.float64), np.asarray(val_label).astype(np.int64)
    g, t = np.asarray(val_group).astype(np.int64), np.asarray(test_features, dtype=np.float64)
    if x.ndim != 2 or t.ndim != 2 or x.shape[1] != t.shape[1] or not len(x) == len(y) == len(g):
        raise ValueError(
            f"features [N, H] and [T, H] with N labels and groups; got {x.shape}, {t.shape}, {y.shape}, {g.shape}"
        )
    fit, select = _halves(y, g, seed)
    if np.unique(y[fit]).size < 2:
        raise ValueError("the fit half of the validation split holds one class only")
    mean, std = x[fit].mean(axis=0), x[fit].std(axis=0) + 1e-6
    xf, xs, xt = (x[fit] - mean) / std, (x[select] - mean) / std, (t - mean) / std
    ids, sizes = np.unique(g[fit], return_counts=True)
    size_of = dict(zip(ids.tolist(), sizes.tolist(), strict=True))
    weight = np.array([1.0 / size_of[int(v)] if v >= 0 else 1.0 / len(fit) for v in g[fit]])
    weight *= len(fit) / weight.sum()
    best: tuple[float, float, float] | None = None
    chosen = None
    for c in C_GRID:
        head = LogisticRegression(C=c, max_iter=2000).fit(xf, y[fit], sample_weight=weight)
        worst, acc = _worst_and_acc(head.predict_proba(xs)[:, 1], y[select], g[select])
        key = (worst, acc, -c)
        if best is None or key > best:
            best, chosen = key, (c, head)
    assert chosen is not None
    c, head = chosen
    return LastLayerRefit(
        c=float(c),
        select=select,
        select_prob=head.predict_proba(xs)[:, 1],
        test_prob=head.predict_proba(xt)[:, 1],
        n_fit=len(fit),
    )
