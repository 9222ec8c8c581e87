"""Group-balanced sampling (Idrissi et al. 2022, "Simple data balancing achieves competitive worst-group
accuracy"): every group is drawn equally often, plain cross-entropy on what is drawn.

An epoch draws as many samples as the training split holds, with replacement, each sample with
probability ∝ 1 / |D_g| of its group, so each group with training samples fills an equal share of the
batches; a minority's images are seen many times an epoch, the majority's some not at all. Samples in no
group (−1) are drawn like a group of their own.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from fairsearch.judge.fairness import cross_entropy
from fairsearch.methods.base import Loss, Method, TrainingGroups


def _loss(groups: TrainingGroups, params: Mapping[str, float]) -> Loss:
    return cross_entropy


def balanced_order(
    groups: TrainingGroups, params: Mapping[str, float], generator: torch.Generator, loss: Loss | None = None
) -> torch.Tensor:
    """``len(ids)`` sample indices drawn with replacement, every group (and the ungrouped, −1) equally
    likely."""
    ids = torch.as_tensor(np.asarray(groups.ids, dtype=np.int64))
    if ids.numel() == 0:
        raise ValueError("group-balanced sampling needs the training samples' group ids")
    _, inverse, sizes = torch.unique(ids, return_inverse=True, return_counts=True)
    weight = 1.0 / sizes[inverse].to(torch.float64)
    return torch.multinomial(weight, ids.numel(), replacement=True, generator=generator)


METHOD = Method(
    name="balanced",
    summary="group-balanced sampling, cross-entropy (Idrissi et al. 2022)",
    make_loss=_loss,
    order=11,
    draw_order=balanced_order,
)
