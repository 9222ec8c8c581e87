"""What a training method is: a name, the parameters it samples, and the loss it builds for a trial.

A method lives in one file of :mod:`fairsearch.methods` that defines ``METHOD = Method(...)``; the
registry finds it there. Everything else reads the registry: the space file's checks and sampler (which
parameters to sample for which method, and their bounds), the trial (the loss), the report (which
methods are fairness-aware).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = [
    "BeforeEpoch",
    "Loss",
    "Method",
    "Order",
    "Parameter",
    "StatefulLoss",
    "TrainingGroups",
    "number_problem",
]


@dataclass(frozen=True)
class Parameter:
    """A setting that only some methods read (``lam``, ``w_max``): sampled only for them.

    Attributes:
        name: as written in space files, ``--set`` and the ``param/<name>`` column.
        default: the value when a space neither fixes nor searches it.
        low: the smallest value allowed (``low_inclusive``: itself too).
        high: the largest value allowed, or ``None``.
        integer: whole numbers only.
        search: the range a space searches by default, ``(low, high, log)`` (a space with
            ``method: all`` searches every parameter over its range).
        help: one line for the docs and error messages.
        below: the name of another trial setting this one must stay below (JTT's stage-1 epochs below
            ``epochs``), or ``None``.
    """

    name: str
    default: float
    low: float
    low_inclusive: bool = True
    high: float | None = None
    integer: bool = False
    search: tuple[float, float, bool] | None = None
    help: str = ""
    below: str | None = None

    @property
    def kind(self) -> type:
        """``int`` or ``float``."""
        return int if self.integer else float

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this parameter (``must be >= 1``), or ``None``."""
        return number_problem(
            value, low=self.low, low_inclusive=self.low_inclusive, high=self.high, integer=self.integer
        )


def number_problem(
    value: Any, *, low: float, low_inclusive: bool = True, high: float | None = None, integer: bool = False
) -> str | None:
    """What is wrong with a setting's number (``must be a number``, ``must be finite``, ``must be an
    integer``, ``must be >= 1``, ``must be <= 10000``: bounds written as given), or ``None``; the one check
    of every numeric trial setting, a method's or not."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return "must be a number"
    number = float(value)
    if not math.isfinite(number):
        return "must be finite"
    if integer and not number.is_integer():
        return "must be an integer"
    if number < low or (number == low and not low_inclusive):
        return f"must be {'>=' if low_inclusive else '>'} {low}"
    if high is not None and number > high:
        return f"must be <= {high}"
    return None


@dataclass(frozen=True)
class TrainingGroups:
    """What a method may know of the training split when a trial builds its loss.

    Attributes:
        counts: ``[G]`` training samples per group id of the optimised grouping (``group_by``).
        device: where the trial trains.
        ids: ``[N]`` the group id of each training sample (−1: in no group); empty where a caller builds
            a loss alone.
    """

    counts: np.ndarray
    device: torch.device
    ids: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))


Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss(logits [N, C], labels [N], groups [N]) -> scalar``: one batch's training loss (group −1 =
excluded from every group). A loss that learns as it goes (group DRO's group weights) is an object with
``state_dict()`` and ``load_state_dict(state)`` as well: the trial keeps that state in its checkpoints,
so a resumed trial goes on with it."""


@runtime_checkable
class StatefulLoss(Protocol):
    """A :data:`Loss` with state of its own that the trial's checkpoints keep (group DRO's weights)."""

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


Order = Callable[[TrainingGroups, Mapping[str, float], torch.Generator, Loss], torch.Tensor]
"""``draw_order(groups, params, generator, loss) -> indices``: the training samples of one epoch, in the
order they are trained: as many as the training split holds (repeats allowed), drawn from ``generator``
(and the trial's ``loss`` object's state, such as JTT's error set) alone, so that a resumed epoch is the
same."""

BeforeEpoch = Callable[[Loss, int, Mapping[str, float], Callable[[], np.ndarray]], None]
"""``before_epoch(loss, epoch, params, train_correct)``: called before each epoch (0-based) is trained,
with a function that evaluates the model on the whole training split and returns ``[N]`` whether each
sample is classified right (only computed when called); what the method learns goes into its ``loss``
object's state, which the checkpoints keep."""

Restart = Callable[[Mapping[str, float]], int]
"""``restart(params) -> T``: before epoch T (0-based; after ``before_epoch``) training starts over as a new
model: the trainable weights as the trial began, a fresh optimizer state, and a learning-rate schedule of
its own (warm-up and cosine decay) over the remaining epochs, the first T having had theirs; the models of
the first T epochs are no candidates of ``select``."""


@dataclass(frozen=True)
class Method:
    """One training method.

    Attributes:
        name: as written in space files (``method: fr``).
        summary: one line for ``--help``, error messages and the report.
        make_loss: builds the trial's loss from the training groups and the method's parameter values
            (every parameter of ``parameters``, by name).
        parameters: the method-specific settings it reads.
        is_fair: a fairness-aware method (anything but the plain baseline); the report compares these
            with the others.
        order: where the registry lists it (the paper's four first, in the paper's order).
        draw_order: the training order of an epoch (:data:`Order`); ``None``: every training sample once,
            in a random order.
        before_epoch: what the method does before each epoch (:data:`BeforeEpoch`); ``None``: nothing.
        restart: the epoch at which training starts over as a new model (:data:`Restart`); ``None``: never.
        uses_groups: whether training reads the samples' group labels (JTT does not: only validation,
            for model selection, and the metrics do).
    """

    name: str
    summary: str
    make_loss: Callable[[TrainingGroups, Mapping[str, float]], Loss]
    parameters: tuple[Parameter, ...] = ()
    is_fair: bool = True
    order: int = 100
    draw_order: Order | None = None
    before_epoch: BeforeEpoch | None = None
    restart: Restart | None = None
    uses_groups: bool = True

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """The names of :attr:`parameters`."""
        return tuple(p.name for p in self.parameters)
