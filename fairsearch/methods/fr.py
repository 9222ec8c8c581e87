"""FR-LoRA (Gu et al. 2025): cross-entropy + λ · soft MaxAccGap, the soft accuracy of a group being its
mean p(y_true | x) in the batch."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fairsearch.judge.fairness import cross_entropy, soft_max_acc_gap
from fairsearch.methods.base import Loss, Method, Parameter, TrainingGroups

LAM = Parameter(
    "lam",
    default=0.0,
    low=0,
    search=(0.05, 1.0, True),
    help="λ, the weight of the soft MaxAccGap term",
)


def _loss(groups: TrainingGroups, params: Mapping[str, float]) -> Loss:
    lam = float(params["lam"])

    def loss(logits: torch.Tensor, labels: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, labels, group_ids) + lam * soft_max_acc_gap(logits, labels, group_ids)

    return loss


METHOD = Method(
    name="fr", summary="FR-LoRA, CE + λ·soft MaxAccGap", make_loss=_loss, parameters=(LAM,), order=1
)
