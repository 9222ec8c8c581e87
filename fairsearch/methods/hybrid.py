"""Hybrid-LoRA (Gu et al. 2025): GR-LoRA's group-weighted cross-entropy + FR-LoRA's λ · soft MaxAccGap."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fairsearch.judge.fairness import cross_entropy, group_weights, soft_max_acc_gap
from fairsearch.methods.base import Loss, Method, TrainingGroups
from fairsearch.methods.fr import LAM
from fairsearch.methods.gr import W_MAX


def _loss(groups: TrainingGroups, params: Mapping[str, float]) -> Loss:
    table = group_weights(groups.counts, float(params["w_max"])).to(groups.device)
    lam = float(params["lam"])

    def loss(logits: torch.Tensor, labels: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, labels, group_ids, weights=table) + lam * soft_max_acc_gap(
            logits, labels, group_ids
        )

    return loss


METHOD = Method(name="hybrid", summary="Hybrid-LoRA, both", make_loss=_loss, parameters=(LAM, W_MAX), order=3)
