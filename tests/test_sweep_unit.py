"""Sweep decisions that need no running Ray: GPUs per trial, samplers."""

from __future__ import annotations

import pytest

from fairsearch.errors import FairsearchError
from fairsearch.space import parse_space
from fairsearch.sweep import _gpus_per_trial, make_sampler


@pytest.mark.parametrize(
    ("gpus", "cluster", "joined", "expected"),
    [
        ("auto", 0.0, False, 0.0),
        ("auto", 4.0, False, 1.0),
        (0.5, 2.0, False, 0.5),
        (1, 0.0, True, 1.0),  # an autoscaling cluster may add GPU workers later
    ],
)
def test_gpus_per_trial(gpus: object, cluster: float, joined: bool, expected: float) -> None:
    spec = parse_space({"resources": {"gpus": gpus}})
    assert _gpus_per_trial(spec, cluster, joined=joined) == expected


def test_gpus_asked_of_a_local_ray_without_gpus_is_refused() -> None:
    spec = parse_space({"resources": {"gpus": 1}})
    with pytest.raises(
        FairsearchError, match=r"resources.gpus: 1.0 but the Ray cluster has no GPUs; use 'gpus: auto'"
    ):
        _gpus_per_trial(spec, 0.0, joined=False)


@pytest.mark.parametrize("name", ["tpe", "nsgaii", "gp", "random"])
def test_every_offered_sampler_is_seeded(name: str) -> None:
    import optuna

    a, b = make_sampler(name, 7), make_sampler(name, 7)
    assert type(a) is type(b) and isinstance(a, optuna.samplers.BaseSampler)
    values = []
    for sampler in (a, b):
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        trial = study.ask()
        values.append(trial.suggest_float("lr", 1e-4, 1e-2, log=True))
    assert values[0] == values[1]
