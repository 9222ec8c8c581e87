"""The ground floor: trial settings validated once when built, the method registry read by the sampler
and the loss, the objectives stated once."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch

import fairsearch.spec.config as config_module
from fairsearch.errors import FairsearchError
from fairsearch.judge.fairness import fairness_loss
from fairsearch.spec.config import (
    METHODS,
    OBJECTIVES,
    MethodSpec,
    TrialConfig,
    method_spec,
    objective_directions,
    objective_keys,
    objective_reference,
)
from fairsearch.spec.space import parse_space


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"method": "grr"}, r"^method: 'grr' is not one of \['vanilla', 'fr', 'gr', 'hybrid'\]$"),
        ({"method": "fr", "lam": -0.5}, r"^lam: -0.5 must be >= 0$"),
        ({"method": "gr", "w_max": 0.5}, r"^w_max: 0.5 must be >= 1$"),
        ({"lam": float("nan")}, r"^lam: nan must be finite$"),
        ({"w_max": float("inf")}, r"^w_max: inf must be finite$"),
        ({"lam": "1"}, r"^lam: '1' must be a number$"),
        ({"lora_rank": 2.5}, r"^lora_rank: 2.5 must be an integer$"),
        ({"epochs": 10**9}, r"^epochs: 1000000000 must be <= 10000$"),
        ({"vision_cache": "yes"}, r"^vision_cache: 'yes' must be true or false$"),
        ({"data": 3}, r"^data: 3 must be a string$"),
        (
            {"method": "GR", "lam": -1, "w_max": 0},
            r"^method: 'GR' is not one of .*\nlam: -1 must be >= 0\nw_max: 0 must be >= 1$",
        ),
    ],
)
def test_a_trial_config_is_validated_when_built_with_every_problem_named(
    settings: dict[str, object], match: str
) -> None:
    with pytest.raises(FairsearchError, match=match):
        TrialConfig(**settings)  # type: ignore[arg-type]


def test_a_trial_config_takes_numbers_from_yaml_optuna_and_numpy_in_their_setting_s_type() -> None:
    config = TrialConfig(lora_rank=np.int64(16), w_max=np.float32(10.0), epochs=4.0, lam=1)  # type: ignore[arg-type]
    assert (type(config.lora_rank), type(config.w_max), type(config.epochs), type(config.lam)) == (
        int,
        float,
        int,
        float,
    )
    assert TrialConfig.from_dict({"method": "gr", "unrelated": 1}).method_spec is METHODS["gr"]


def test_the_registry_says_which_method_uses_which_setting() -> None:
    assert {name: spec.parameters for name, spec in METHODS.items()} == {
        "vanilla": (),
        "fr": ("lam",),
        "gr": ("w_max",),
        "hybrid": ("lam", "w_max"),
    }
    assert [name for name, spec in METHODS.items() if spec.is_fair] == ["fr", "gr", "hybrid"]
    with pytest.raises(FairsearchError, match=r"^method: 'x' is not one of"):
        method_spec("x")


def test_objectives_are_stated_once() -> None:
    assert objective_keys() == tuple(o.key for o in OBJECTIVES) == ("acc", "max_acc_gap")
    assert objective_keys("val/") == ("val/acc", "val/max_acc_gap")
    assert objective_directions() == ("max", "min")
    assert objective_reference() == (0.0, 1.0)


def test_a_fifth_method_is_one_registry_entry_for_the_sampler_and_the_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Registering a method (here a λ-only clone of fr) is all the space, the sampler and the loss need."""
    registry = dict(METHODS)
    registry["fr2"] = MethodSpec("fr2", uses_lam=True, uses_weights=False, summary="test")
    monkeypatch.setattr(config_module, "METHODS", registry)
    import fairsearch.judge.fairness as fairness_module
    import fairsearch.spec.space as space_module

    monkeypatch.setattr(space_module, "METHODS", registry)
    monkeypatch.setattr(fairness_module, "METHODS", registry)
    spec = parse_space(
        {"search": {"method": ["vanilla", "fr2"], "lam": {"low": 0.1, "high": 1.0}, "w_max": [2.0, 5.0]}}
    )
    study = optuna.create_study(directions=["maximize", "minimize"])
    sampled = {}
    for _ in range(20):
        trial = study.ask()
        spec.define_by_run()(trial)
        sampled.setdefault(trial.params["method"], set()).update(trial.params)
    assert sampled["fr2"] == {"method", "lam"} and sampled["vanilla"] == {"method"}
    logits, labels, groups = (
        torch.tensor([[2.0, 0.0], [0.0, 2.0]]),
        torch.tensor([0, 0]),
        torch.tensor([0, 1]),
    )
    plain = fairness_loss("vanilla", logits, labels, groups)
    assert fairness_loss("fr2", logits, labels, groups, lam=1.0) > plain
