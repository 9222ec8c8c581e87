"""The sweep's vocabulary: trial settings validated once when built, the method registry (one file a
method) read by the sampler and the loss, the objectives stated once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fairsearch.errors import FairsearchError
from fairsearch.methods import METHOD_PARAMETERS, METHODS, method_named
from fairsearch.spec.config import (
    OBJECTIVES,
    TrialConfig,
    objective_directions,
    objective_keys,
    objective_reference,
)

OTHER_METHODS = "".join(f", '{name}'" for name in list(METHODS)[4:])
"""The methods after the paper's four, as a message lists them."""


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        (
            {"method": "grr"},
            rf"^method: 'grr' is not one of \['vanilla', 'fr', 'gr', 'hybrid'{OTHER_METHODS}\]$",
        ),
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
        TrialConfig.from_dict(settings)


def test_a_trial_config_takes_numbers_from_yaml_optuna_and_numpy_in_their_setting_s_type() -> None:
    config = TrialConfig.from_dict(
        {"lora_rank": np.int64(16), "w_max": np.float32(10.0), "epochs": 4.0, "lam": 1}
    )
    assert [
        type(v) for v in (config.lora_rank, config.params["w_max"], config.epochs, config.params["lam"])
    ] == [
        int,
        float,
        int,
        float,
    ]
    assert TrialConfig.from_dict({"method": "gr", "unrelated": 1}).method_spec is METHODS["gr"]
    # every method parameter has a value (its default when not given); a method reads its own
    assert TrialConfig(method="gr").params == {name: p.default for name, p in METHOD_PARAMETERS.items()}
    assert TrialConfig(method="gr").params["lam"] == 0.0 and TrialConfig(method="gr").params["w_max"] == 10.0
    assert TrialConfig.from_dict({"method": "gr", "lam": 0.4, "w_max": 3}).method_params == {"w_max": 3.0}
    with pytest.raises(FairsearchError, match=r"^zeta: unknown method parameter; allowed are \[.*'lam'"):
        TrialConfig(params={"zeta": 1.0})


def test_the_registry_says_which_method_uses_which_setting() -> None:
    """The paper's four come first, in the paper's order; every other method is fairness-aware."""
    assert {name: m.parameter_names for name, m in list(METHODS.items())[:4]} == {
        "vanilla": (),
        "fr": ("lam",),
        "gr": ("w_max",),
        "hybrid": ("lam", "w_max"),
    }
    assert [name for name, m in METHODS.items() if not m.is_fair] == ["vanilla"]
    with pytest.raises(FairsearchError, match=r"^method: 'x' is not one of"):
        method_named("x")


def test_objectives_are_stated_once() -> None:
    assert objective_keys() == tuple(o.key for o in OBJECTIVES) == ("acc", "max_acc_gap")
    assert objective_keys("val/") == ("val/acc", "val/max_acc_gap")
    assert objective_directions() == ("max", "min")
    assert objective_reference() == (0.0, 1.0)


_FIFTH_METHOD = '''
"""A test method: cross-entropy plus eta times the soft MaxAccGap."""
import torch
from fairsearch.judge.fairness import cross_entropy, soft_max_acc_gap
from fairsearch.methods.base import Method, Parameter

KAPPA = Parameter("kappa", default=0.5, low=0, high=2, search=(0.1, 1.0, True))

def _loss(groups, params):
    kappa = float(params["kappa"])
    return lambda logits, labels, g: cross_entropy(logits, labels, g) + kappa * soft_max_acc_gap(logits, labels, g)

METHOD = Method(name="fr2", summary="test", make_loss=_loss, parameters=(KAPPA,))
'''

_USE_IT = """
import optuna, torch
from fairsearch.errors import FairsearchError
from fairsearch.methods import METHODS, TrainingGroups
from fairsearch.spec.config import TrialConfig
from fairsearch.spec.space import parse_space

spec = parse_space({"search": {"method": ["vanilla", "fr2"], "kappa": {"low": 0.1, "high": 1.0}, "w_max": [2.0, 5.0]}})
study = optuna.create_study(directions=["maximize", "minimize"])
sampled = {}
for _ in range(20):
    trial = study.ask()
    spec.define_by_run()(trial)
    sampled.setdefault(trial.params["method"], set()).update(trial.params)
assert sampled["fr2"] == {"method", "kappa"} and sampled["vanilla"] == {"method"}, sampled
try:
    TrialConfig.from_dict({"method": "fr2", "kappa": 3.0})
except FairsearchError as err:
    assert str(err) == "kappa: 3.0 must be <= 2", err
else:
    raise AssertionError("kappa 3.0 was accepted")
config = TrialConfig.from_dict({"method": "fr2", "kappa": 1.0})
logits, labels, groups = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]), torch.tensor([0, 1])
make = lambda name, params: METHODS[name].make_loss(TrainingGroups(torch.tensor([1, 1]).numpy(), torch.device("cpu")), params)
assert make("fr2", config.method_params)(logits, labels, groups) > make("vanilla", {})(logits, labels, groups)
print(list(METHODS))
"""


def test_a_new_method_is_one_new_file_for_the_space_the_sampler_and_the_loss(tmp_path: Path) -> None:
    """A copy of the package with one file added to ``fairsearch/methods/`` and nothing else changed:
    the space accepts the method and its parameter, the sampler samples the parameter for it alone, the
    trial config checks the parameter's bounds, and the loss is the new file's."""
    package = Path(__file__).resolve().parents[1] / "fairsearch"
    shutil.copytree(package, tmp_path / "fairsearch", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "fairsearch" / "methods" / "fr2.py").write_text(textwrap.dedent(_FIFTH_METHOD))
    result = subprocess.run(
        [sys.executable, "-c", _USE_IT],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str([*METHODS, "fr2"])
