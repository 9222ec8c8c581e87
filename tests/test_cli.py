"""The command line: data commands, and bad input giving one message and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fairsearch.cli import main


def test_synth_then_inspect_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synthetic"
    assert main(["data", "synth", str(out), "--n", "120", "--seed", "3"]) == 0
    assert {p.name for p in out.iterdir()} >= {"Training", "Validation", "Test"}
    capsys.readouterr()
    assert main(["data", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    for word in ("ethnicity", "Hispanic", "Non-Hispanic", "race", "White"):
        assert word in text, word
    assert main(["data", "synth", str(out)]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fairsearch.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_missing_data_folder_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = _run("data", "inspect", str(tmp_path / "FairVLMed"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and str(tmp_path / "FairVLMed") in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 3


def test_corrupt_npz_is_named(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    assert main(["data", "synth", str(out), "--n", "80"]) == 0
    victim = sorted((out / "Training").glob("*.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    proc = _run("data", "inspect", str(out))
    assert proc.returncode == 2 and victim.name in proc.stderr and "Traceback" not in proc.stderr


def test_pickled_npz_is_refused_not_executed(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    assert main(["data", "synth", str(out), "--n", "80"]) == 0
    victim = sorted((out / "Training").glob("*.npz"))[0]
    with np.load(victim) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["slo_fundus"] = np.array([{"evil": object()}], dtype=object)  # needs pickle to load
    np.savez(victim, **arrays)
    proc = _run("data", "inspect", str(out))
    assert proc.returncode == 2 and victim.name in proc.stderr and "pickle" in proc.stderr


@pytest.mark.parametrize("command", ["pareto", "report"])
def test_results_commands_on_a_folder_without_results(tmp_path: Path, command: str) -> None:
    proc = _run(command, str(tmp_path / "nothing"))
    assert proc.returncode == 2
    assert "fairsearch run --space" in proc.stderr and "Traceback" not in proc.stderr


def test_help_shows_examples() -> None:
    proc = _run("--help")
    assert proc.returncode == 0 and "fairsearch run --space search_spaces/hybrid.yaml" in proc.stdout


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("space", "results", "message"),
    [
        ({"model": "models/none"}, "results", "no folder 'models/none' either"),
        ({"model": "Qwen/No-Such-Model"}, "results", "model 'Qwen/No-Such-Model' is not in the local"),
        ({"trials": 10**12}, "results", "trials: 1000000000000 must be an integer from 1 to 100000"),
        ({}, "a_file", "a_file is a file, not a folder"),
        ({}, "a_file/results", "a_file is a file, not a folder"),
        ({"confirm": {"seeds": 99}}, "results", "confirm.seeds: 99 must be an integer from 0 to 20"),
    ],
)
def test_run_refuses_bad_input_before_writing_anything(
    tmp_path: Path, space: dict[str, object], results: str, message: str
) -> None:
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump({"name": "s", **space}))
    (tmp_path / "a_file").write_text("not a folder")
    before = _tree(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "fairsearch.cli", "run", "--space", "s.yaml", "--results", results],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "HF_HOME": str(tmp_path / "no-hf-cache")},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert _tree(tmp_path) == before  # nothing written: no results folder, no space.json, no optuna.db


def test_ctrl_c_before_tune_runs_still_prints_the_resume_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fairsearch.search.sweep

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # e.g. while Ray starts, in the first seconds

    monkeypatch.setattr(fairsearch.search.sweep, "run_sweep", interrupted)
    results = tmp_path / "r"
    code = main(["run", "--space", "s.yaml", "--results", str(results), "--name", "n1"])
    assert code == 130
    err = capsys.readouterr().err
    assert f"resume with: fairsearch run --space s.yaml --results {results} --name n1" in err
