"""Group DRO (Sagawa et al. 2020, "Distributionally robust neural networks for group shifts"): minimise
the worst group's expected loss by online mirror ascent on the groups' weights.

For every batch, each group's mean cross-entropy ℓ_g is computed (0 for a group absent from the batch),
the weights move towards the groups that do worst, q_g ← q_g · exp(η · ℓ_g), normalised to sum to 1,
and the loss is Σ_g q_g · ℓ_g (the weights taken as constants). q starts uniform over the groups with
training samples. Samples in no group (−1, with ``exclude_unknown``) are left out. As in the paper,
group DRO needs strong ℓ2 regularisation or early stopping on an over-parameterised model to help the
worst group on held-out data: search ``weight_decay`` (and ``select``) with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from fairsearch.methods.base import Method, Parameter, TrainingGroups

ETA = Parameter(
    "eta",
    default=0.01,
    low=0,
    high=10,
    search=(0.001, 1.0, True),
    help="η, group DRO's step size on the groups' weights",
)


class GroupDROLoss:
    """The group DRO loss of one trial, holding the groups' weights q ``[G]`` between batches.

    Args:
        counts: ``[G]`` training samples per group (q starts uniform over the groups that have some).
        eta: η ≥ 0; 0 keeps q uniform (the mean of the groups' mean losses).
        device: where q lives.
    """

    def __init__(self, counts: Any, eta: float, device: torch.device) -> None:
        present = torch.as_tensor(counts, dtype=torch.float64) > 0
        self.eta = float(eta)
        self.q = present.to(device=device, dtype=torch.float64) / max(int(present.sum()), 1)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
        ce = F.cross_entropy(x, labels.long(), reduction="none")
        n_groups = self.q.numel()
        keep = groups >= 0
        ids = groups[keep].long()
        if ids.numel() and int(ids.max()) >= n_groups:
            raise ValueError(f"group id {int(ids.max())} has no weight ({n_groups} groups)")
        sums = ce.new_zeros(n_groups).index_add(0, ids, ce[keep])
        sizes = torch.bincount(ids, minlength=n_groups).to(ce.dtype)
        group_loss = sums / sizes.clamp(min=1)
        with torch.no_grad():
            q = self.q * torch.exp(self.eta * group_loss.detach().to(self.q.dtype))
            self.q = q / q.sum()
        return (group_loss * self.q.to(ce.dtype)).sum()

    def state_dict(self) -> dict[str, Any]:
        """``{"q": weights}``, kept in the trial's checkpoints."""
        return {"q": self.q.detach().cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Goes on with the weights of :meth:`state_dict`."""
        q = torch.as_tensor(state["q"], dtype=torch.float64)
        if q.shape != self.q.shape:
            raise ValueError(f"group DRO weights for {q.numel()} groups, this trial has {self.q.numel()}")
        self.q = q.to(self.q.device)


def _loss(groups: TrainingGroups, params: Mapping[str, float]) -> GroupDROLoss:
    return GroupDROLoss(groups.counts, float(params["eta"]), groups.device)


METHOD = Method(
    name="group_dro",
    summary="group DRO, the worst group's loss by online group weights (Sagawa et al. 2020)",
    make_loss=_loss,
    parameters=(ETA,),
    order=10,
)
