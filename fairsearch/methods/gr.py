"""GR-LoRA (Gu et al. 2025): each sample's cross-entropy weighted by its group's inverse frequency in
the training split, w_s = min(N / |D_s|, w_max), normalised by the batch's weights."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fairsearch.judge.fairness import cross_entropy, group_weights
from fairsearch.methods.base import Loss, Method, Parameter, TrainingGroups

W_MAX = Parameter(
    "w_max",
    default=10.0,
    low=1,
    search=(1.0, 10.0, False),
    help="the clip of the inverse-frequency group weights",
)


def _loss(groups: TrainingGroups, params: Mapping[str, float]) -> Loss:
    table = group_weights(groups.counts, float(params["w_max"])).to(groups.device)

    def loss(logits: torch.Tensor, labels: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, labels, group_ids, weights=table)

    return loss


METHOD = Method(
    name="gr", summary="GR-LoRA, group-weighted CE", make_loss=_loss, parameters=(W_MAX,), order=2
)
