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


def test_checkpoint_uri_keeps_the_scheme() -> None:
    from types import SimpleNamespace

    from fairsearch.sweep import checkpoint_uri

    local = SimpleNamespace(filesystem=SimpleNamespace(type_name="local"), path="/r/ckpt")
    s3 = SimpleNamespace(filesystem=SimpleNamespace(type_name="s3"), path="bucket/sweeps/ckpt")
    gcs = SimpleNamespace(filesystem=SimpleNamespace(type_name="gcs"), path="bucket/ckpt")
    assert checkpoint_uri(local) == "/r/ckpt"
    assert checkpoint_uri(s3) == "s3://bucket/sweeps/ckpt"
    assert checkpoint_uri(gcs) == "gs://bucket/ckpt"


def test_callback_pickled_without_newer_fields_still_works(tmp_path: object) -> None:
    from fairsearch.sweep import ResultsCallback

    old = ResultsCallback.__new__(ResultsCallback)
    old.__dict__.update({"results_dir": str(tmp_path), "min_interval_s": 10.0, "_last_write": 0.0})
    assert old._last_status == 0.0 and old._front == "none yet" and old.status_interval_s == 30.0
    old.announce([])  # logs a status line from the class defaults
