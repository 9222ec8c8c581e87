"""The space file's ``scheduler:`` block, checked when the space is read.

The block (every key but ``name`` optional)::

    scheduler:
      name: mo_asha           # or none (the default: no early stopping)
      grace_period: 1         # first rung, in epochs; nobody is stopped before it
      reduction_factor: 3     # η >= 2: rungs at 1, 3, 9, ... epochs; the best 1/η continue
      min_trials_per_rung: 3  # a rung stops no one until this many trials reached it
      tie_break: crowding     # order inside a Pareto front (NSGA-II crowding distance)
      repeat_metric: auc      # orders trials that report the very same point (auc, loss, none)
      time_attr: epoch        # progress in epochs, as the trial reports it (0.5, 1.0, ... with
                              # reports_per_epoch: 2, so rungs may sit at fractions of an epoch)

:func:`scheduler_settings` turns it into :class:`SchedulerSettings`; MO-ASHA itself
(:mod:`fairsearch.search.scheduler`) is built from those, on the driver.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fairsearch.errors import FairsearchError
from fairsearch.judge.pareto import Direction

__all__ = [
    "REPEAT_METRICS",
    "SCHEDULER_NAMES",
    "TIE_BREAKS",
    "SchedulerSettings",
    "scheduler_settings",
]

SCHEDULER_NAMES = ("none", "mo_asha")
"""Values of the space file's ``scheduler.name``."""

TIE_BREAKS = ("crowding",)
"""Spread measures that order trials inside one front. ``crowding``: NSGA-II crowding distance."""

REPEAT_METRICS: Mapping[str, Direction | None] = {"auc": "max", "loss": "min", "none": None}
"""Result keys that order the repeats of one point (see :mod:`fairsearch.search.scheduler`), with their
direction; ``none``: by arrival only."""

_SETTINGS_KEYS = (
    "name",
    "grace_period",
    "reduction_factor",
    "min_trials_per_rung",
    "tie_break",
    "repeat_metric",
    "time_attr",
)


@dataclass(frozen=True)
class SchedulerSettings:
    """MO-ASHA's settings from a checked ``scheduler:`` block (the module docstring shows the block)."""

    grace_period: float = 1
    reduction_factor: float = 3
    min_trials_per_rung: int = 3
    tie_break: str = "crowding"
    repeat_metric: str = "auc"
    time_attr: str = "epoch"


def scheduler_settings(
    settings: Mapping[str, Any] | str | None, *, max_epochs: int
) -> SchedulerSettings | None:
    """Check a space file's ``scheduler:`` block.

    Args:
        settings: The block: a mapping, ``None``/empty or ``"none"`` (off), or ``"mo_asha"`` (defaults).
        max_epochs: Epochs of the longest trial (the rungs lie below it).

    Returns:
        The settings, or ``None`` when early stopping is off.

    Raises:
        FairsearchError: Naming every bad key and value, one per line.
    """
    if settings is None or (isinstance(settings, Mapping) and not settings):
        return None
    block: Mapping[str, Any] = {"name": settings} if isinstance(settings, str) else settings
    problems = [
        f"scheduler: unknown key {key!r}; allowed: {list(_SETTINGS_KEYS)}"
        for key in block
        if key not in _SETTINGS_KEYS
    ]
    name = block.get("name")
    if name not in SCHEDULER_NAMES:
        shown = "missing" if name is None else repr(name)
        problems.append(f"scheduler.name: {shown} is not one of {list(SCHEDULER_NAMES)}")
    grace = block.get("grace_period", 1)
    if not _is_number(grace) or grace <= 0:
        problems.append(f"scheduler.grace_period: {grace!r} must be a number > 0")
    elif grace >= max_epochs:
        problems.append(
            f"scheduler.grace_period: {grace!r} must be < the longest trial's {max_epochs} epochs (no rung otherwise)"
        )
    eta = block.get("reduction_factor", 3)
    if not _is_number(eta) or eta < 2:
        problems.append(f"scheduler.reduction_factor: {eta!r} must be >= 2")
    min_trials = block.get("min_trials_per_rung", 3)
    if isinstance(min_trials, bool) or not isinstance(min_trials, int) or min_trials < 1:
        problems.append(f"scheduler.min_trials_per_rung: {min_trials!r} must be an integer >= 1")
    tie_break = block.get("tie_break", "crowding")
    if tie_break not in TIE_BREAKS:
        problems.append(f"scheduler.tie_break: {tie_break!r} is not one of {list(TIE_BREAKS)}")
    repeat_metric = block.get("repeat_metric", "auc")
    if repeat_metric not in REPEAT_METRICS:
        problems.append(f"scheduler.repeat_metric: {repeat_metric!r} is not one of {list(REPEAT_METRICS)}")
    time_attr = block.get("time_attr", "epoch")
    if not isinstance(time_attr, str) or not time_attr:
        problems.append(
            f"scheduler.time_attr: {time_attr!r} must be a result key such as 'training_iteration'"
        )
    if problems:
        raise FairsearchError("\n".join(problems))
    if name == "none":
        return None
    return SchedulerSettings(
        grace_period=grace,
        reduction_factor=eta,
        min_trials_per_rung=min_trials,
        tie_break=tie_break,
        repeat_metric=repeat_metric,
        time_attr=time_attr,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
