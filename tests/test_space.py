"""Space files: every shipped one loads, bad ones fail with every problem named, conditionals hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from fairsearch.cli import main
from fairsearch.errors import FairsearchError
from fairsearch.methods import METHOD_PARAMETERS, METHODS
from fairsearch.spec.config import TrialConfig
from fairsearch.spec.space import load_space, parse_space, trial_config

SPACES = sorted((Path(__file__).parent.parent / "search_spaces").glob("*.yaml"))


def test_the_five_documented_spaces_ship() -> None:
    assert {p.name for p in SPACES} >= {
        "hybrid.yaml",
        "vanilla.yaml",
        "fr_lora.yaml",
        "gr_lora.yaml",
        "all_methods.yaml",
    }


def test_method_all_searches_every_method_and_each_parameter_over_its_method_s_default_range() -> None:
    """``literature.yaml``'s ``method: all``: the registry's methods, and every method parameter the space
    leaves out searched over its method's declared range (one it fixes or searches stays the space's)."""
    spec = load_space(Path(__file__).parent.parent / "search_spaces" / "literature.yaml")
    assert spec.methods == tuple(METHODS)
    for name, parameter in METHOD_PARAMETERS.items():
        dist = spec.search[name]
        assert parameter.search == (dist.low, dist.high, dist.log), name
    narrowed = parse_space({"search": {"method": ["fr", "gr"], "lam": [0.1, 0.2]}, "fixed": {"w_max": 2.0}})
    assert list(narrowed.search) == ["method", "lam"]  # w_max fixed, eta read by neither method
    assert narrowed.search["lam"].choices == (0.1, 0.2)


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_space_loads_and_shows_its_command(path: Path) -> None:
    spec = load_space(path)
    first = path.read_text().splitlines()[0]
    assert first == f"# fairsearch run --space search_spaces/{path.name}"
    assert spec.name == path.stem
    assert spec.trials >= 1 and spec.concurrency >= 1
    # the built-in defaults: no model or data named in a shipped space
    assert spec.uses_builtin_data() and spec.fixed["model"] == "tiny"


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_define_by_run_samples_conditionals_only_where_they_apply(path: Path) -> None:
    spec = load_space(path)
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=1)
    )
    sample = spec.define_by_run()
    seen = set()
    for _ in range(40):
        trial = study.ask()
        constants = sample(trial)
        assert constants.pop("optuna_number") == trial.number  # results rows use the study's numbering
        method = trial.params.get("method", constants.get("method", TrialConfig.method))
        seen.add(method)
        assert ("lam" in trial.params) == (method in ("fr", "hybrid") and "lam" in spec.search)
        assert ("w_max" in trial.params) == (method in ("gr", "hybrid") and "w_max" in spec.search)
        assert set(trial.params).isdisjoint(constants)  # a parameter is either fixed or searched
        config = TrialConfig.from_dict({**constants, **trial.params})
        assert config.group_by == spec.group_by
        study.tell(trial, [0.5, 0.1])
    assert seen == set(spec.methods)


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_unknown_method_message_names_key_value_and_choices(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": "x", "search": {"method": ["vanilla", "grr"]}})
    with pytest.raises(FairsearchError) as err:
        load_space(path)
    assert str(err.value) == f"{path}: search.method: 'grr' is not one of {list(METHODS)}"


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    doc = {
        "name": "bad name!",
        "colour": "red",
        "objectives": {"group_by": "race*shoe_size"},
        "search": {"lam": {"low": -1, "high": 2}, "lora_rank": {"low": 16, "high": 4}, "epochs_x": [1]},
        "fixed": {"w_max": 0.5, "method": "vanilla"},
        "trials": 0,
        "sampler": {"name": "cmaes"},
        "resources": {"gpus": -1},
    }
    with pytest.raises(FairsearchError) as err:
        parse_space(doc, source=Path("s.yaml"))
    lines = str(err.value).splitlines()
    expected = [
        "s.yaml: colour: unknown key;",
        "s.yaml: name: 'bad name!' must be",
        "s.yaml: objectives.group_by: 'race*shoe_size' must be an attribute",
        "s.yaml: fixed.w_max: 0.5 must be >= 1",
        "s.yaml: search.lam.low: -1 must be >= 0",
        "s.yaml: search.lora_rank: low 16 must be < high 4",
        "s.yaml: search.epochs_x: not a searchable parameter",
        "s.yaml: trials: 0 must be an integer from 1 to 100000",
        "s.yaml: sampler.name: 'cmaes' is not one of ['tpe', 'nsgaii', 'gp', 'random']",
        "s.yaml: resources.gpus: -1 must be 'auto' or a number >= 0",
    ]
    for prefix in expected:
        assert sum(line.startswith(prefix) for line in lines) == 1, (prefix, lines)
    assert len(lines) == len(expected)


def test_fixed_and_searched_at_once_is_refused() -> None:
    with pytest.raises(FairsearchError, match=r"search.lr: also set in 'fixed'"):
        parse_space({"fixed": {"lr": 0.001}, "search": {"lr": {"low": 1e-4, "high": 1e-2}}})


def test_log_range_needs_positive_low() -> None:
    with pytest.raises(FairsearchError, match=r"search.weight_decay: a log range needs low > 0, got 0.0"):
        parse_space({"search": {"weight_decay": {"low": 0.0, "high": 0.1, "log": True}}})


def test_scheduler_settings_are_validated_with_the_space() -> None:
    with pytest.raises(FairsearchError, match=r"scheduler.name: 'asha' is not one of \['none', 'mo_asha'\]"):
        parse_space({"scheduler": {"name": "asha"}})
    spec = parse_space({"scheduler": {"name": "mo_asha", "reduction_factor": 2}})
    assert spec.scheduler == {"name": "mo_asha", "reduction_factor": 2}
    assert parse_space({"scheduler": {"name": "none"}}).scheduler is None


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nsearch:\n  method: [vanilla, fr\n")
    with pytest.raises(FairsearchError, match=rf"{path}: not valid YAML at line \d+"):
        load_space(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FairsearchError, match=r"nope.yaml: cannot read the space file"):
        load_space(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(FairsearchError, match="not valid YAML"):
        load_space(path)


def test_intersection_group_by_as_list() -> None:
    assert parse_space({"objectives": {"group_by": ["race", "gender"]}}).group_by == "race*gender"


def test_trial_config_takes_overrides_and_representative_values() -> None:
    spec = parse_space(
        {
            "search": {
                "method": ["fr", "gr"],
                "lr": {"low": 1e-4, "high": 1e-2, "log": True},
                "lora_rank": [4, 8],
            }
        }
    )
    config = trial_config(spec, {"method": "gr", "lora_rank": "16", "w_max": "5"})
    assert (config.method, config.lora_rank, config.params["w_max"]) == ("gr", 16, 5.0)
    assert config.lr == pytest.approx(1e-3)  # geometric middle of the log range
    with pytest.raises(FairsearchError, match=r"--set method: 'grr' is not one of"):
        trial_config(spec, {"method": "grr"})
    with pytest.raises(FairsearchError, match=r"--set colour: unknown trial setting"):
        trial_config(spec, {"colour": "red"})


def test_cli_bad_space_exits_2_with_one_clear_message(tmp_path: Path) -> None:
    path = _write(tmp_path, {"search": {"method": ["grr"]}})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fairsearch.cli",
            "run",
            "--space",
            str(path),
            "--results",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}: search.method: 'grr' is not one of {list(METHODS)}"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()  # nothing half-written


def test_cli_train_bad_set_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = SPACES[0]
    assert main(["train", "--space", str(space), "--set", "method", "--out", str(tmp_path)]) == 2
    assert "--set 'method': expected KEY=VALUE" in capsys.readouterr().err


def test_define_by_run_pickles_for_ray_checkpoints() -> None:
    import pickle

    sample = load_space(SPACES[0]).define_by_run()
    clone = pickle.loads(pickle.dumps(sample))
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3)
    )
    a, b = study.ask(), study.ask()
    assert sample(a) == {**clone(b), "optuna_number": a.number} and (a.number, b.number) == (0, 1)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"seeds": -1}, "confirm.seeds: -1 must be an integer from 0 to 20"),
        ({"seeds": 2.5}, "confirm.seeds: 2.5 must be an integer from 0 to 20"),
        ({"seeds": True}, "confirm.seeds: True must be an integer from 0 to 20"),
        ({"max_trials": 0}, "confirm.max_trials: 0 must be an integer from 1 to 100"),
        ({"runs": 3}, "confirm.runs: unknown key; allowed are ['seeds', 'max_trials']"),
        ([2], "confirm: [2] must be a mapping such as {seeds: 2}"),
    ],
)
def test_confirm_block_is_validated(block: object, message: str) -> None:
    with pytest.raises(FairsearchError) as err:
        parse_space({"confirm": block}, source=Path("s.yaml"))
    assert str(err.value) == f"s.yaml: {message}"


def test_confirm_block_defaults_to_no_confirmation() -> None:
    assert (parse_space({}).confirm_seeds, parse_space({}).confirm_max_trials) == (0, 8)
    spec = parse_space({"confirm": {"seeds": 2, "max_trials": 4}})
    assert (spec.confirm_seeds, spec.confirm_max_trials) == (2, 4)
