"""JTT, "Just Train Twice" (Liu et al. 2021): learn without group labels which training samples the
model gets wrong, then up-weight them.

The first ``jtt_epochs`` epochs (T) train with plain cross-entropy. Before epoch T the model classifies
the whole training split once, and the samples it gets wrong form the error set E. From then on every
epoch draws as many samples as the split holds, with replacement, a sample of E ``jtt_up`` (λ_up) times
as likely as any other: the up-sampling of the paper, in expectation. Training never reads a group label;
only validation (``select``, the metrics) does, as the paper's model selection does, so JTT answers the
paper's open question of fairness without demographics. As in the paper, the second stage trains a new
model: at epoch T the trial starts over from its initial weights with a fresh optimizer and a learning
rate schedule of its own over the remaining ``epochs`` − T (:data:`fairsearch.methods.base.Restart`), and
only second-stage models are candidates of ``select``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from fairsearch.judge.fairness import cross_entropy
from fairsearch.methods.base import Loss, Method, Parameter, TrainingGroups

JTT_EPOCHS = Parameter(
    "jtt_epochs",
    default=1,
    low=1,
    integer=True,
    search=(1, 2, False),
    help="T, the epochs of plain training before the error set is taken",
    below="epochs",
)
JTT_UP = Parameter(
    "jtt_up",
    default=5.0,
    low=1,
    high=1000,
    search=(2.0, 50.0, True),
    help="λ_up, how much likelier a sample of the error set is drawn",
)


class JTTLoss:
    """Cross-entropy, holding the error set E (``[N]`` bool, ``None`` until it is taken)."""

    def __init__(self) -> None:
        self.errors: np.ndarray | None = None

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, labels, torch.full_like(groups, -1))  # no group labels in training

    def state_dict(self) -> dict[str, Any]:
        """``{"errors": [N] bool tensor}``, empty before E is taken."""
        errors = np.zeros(0, dtype=bool) if self.errors is None else self.errors
        return {"errors": torch.as_tensor(errors), "taken": torch.tensor(self.errors is not None)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Goes on with the error set of :meth:`state_dict`."""
        self.errors = np.asarray(state["errors"], dtype=bool) if bool(state["taken"]) else None


def _loss(groups: TrainingGroups, params: Mapping[str, float]) -> JTTLoss:
    return JTTLoss()


def take_error_set(
    loss: Loss, epoch: int, params: Mapping[str, float], train_correct: Callable[[], np.ndarray]
) -> None:
    """Before epoch T: the training samples the model gets wrong become the error set."""
    if isinstance(loss, JTTLoss) and epoch >= int(params["jtt_epochs"]) and loss.errors is None:
        loss.errors = ~np.asarray(train_correct(), dtype=bool)


def second_stage(params: Mapping[str, float]) -> int:
    """T: the second stage trains a new model from epoch T on."""
    return int(params["jtt_epochs"])


def upsampled_order(
    groups: TrainingGroups, params: Mapping[str, float], generator: torch.Generator, loss: Loss | None = None
) -> torch.Tensor:
    """A plain permutation before E is taken; after, ``N`` draws with E ``jtt_up`` times as likely."""
    n = int(groups.ids.size)
    errors = loss.errors if isinstance(loss, JTTLoss) else None
    if errors is None:
        return torch.randperm(n, generator=generator)
    weight = torch.where(torch.as_tensor(errors), float(params["jtt_up"]), 1.0).to(torch.float64)
    return torch.multinomial(weight, n, replacement=True, generator=generator)


METHOD = Method(
    name="jtt",
    summary="JTT, up-weights what a first stage got wrong; no group labels in training (Liu et al. 2021)",
    make_loss=_loss,
    parameters=(JTT_EPOCHS, JTT_UP),
    order=12,
    draw_order=upsampled_order,
    before_epoch=take_error_set,
    restart=second_stage,
    uses_groups=False,
)
