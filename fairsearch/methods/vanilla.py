"""Vanilla LoRA: plain cross-entropy, the baseline every fair method is judged against."""

from __future__ import annotations

from collections.abc import Mapping

from fairsearch.judge.fairness import cross_entropy
from fairsearch.methods.base import Loss, Method, TrainingGroups


def _loss(groups: TrainingGroups, params: Mapping[str, float]) -> Loss:
    return cross_entropy


METHOD = Method(name="vanilla", summary="LoRA, cross-entropy", make_loss=_loss, is_fair=False, order=0)
