"""``fairsearch export``: a trained trial taken out of its sweep and loaded, in a process where fairsearch
cannot be imported, with transformers + peft + torch alone; its scores are the trial's; bad input is
refused with nothing written."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from refusals import refused
from scored_sweeps import write_scored_sweep

from fairsearch.cli import main
from fairsearch.export.card import decisions_of
from fairsearch.export.choice import choose_export
from fairsearch.model import LORA_TARGET_MODULES
from fairsearch.output.results import TrialRecord, trials_frame, write_parquet_atomic, write_results
from fairsearch.output.threshold_fronts import derived_fronts
from fairsearch.spec.config import OBJECTIVES, TrialConfig
from fairsearch.train.checkpoint import TEST_METRICS_FILE, read_scores_at
from fairsearch.train.trial import load_splits, run_trial

TOLERANCE = 1e-5
"""The most an exported classifier's p(glaucoma) may differ from the trial's stored test score (fp32, CPU)."""

# A child without fairsearch: no site processing (so no editable install's path hook), no PYTHONPATH, no
# user site; the environment's packages added by hand, then the card's own example run as written.
CHILD = """
import sys
sys.path[:0] = ["", *{paths!r}]
import importlib.util
assert importlib.util.find_spec("fairsearch") is None, "fairsearch is importable"
exec(compile(open("usage.py").read(), "usage.py", "exec"))
"""


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIRSEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _sweep_of_one_trial(root: Path) -> Path:
    """``root/results/one``: a sweep's files around one real trial of the tiny model (2 epochs, 160
    images, images capped at 56×56 so the processor's size matters), its thresholded fronts included."""
    config = TrialConfig(
        method="vanilla", epochs=2, lr=3e-3, lora_rank=4, synthetic_n=160, batch_size=16,
        eval_batch_size=40, n_boot=20, max_pixels=56 * 56 * 2,
    )  # fmt: skip
    checkpoint = root / "checkpoint"

    def keep(metrics: dict[str, float], folder: Path) -> None:
        shutil.rmtree(checkpoint, ignore_errors=True)
        shutil.copytree(folder, checkpoint)

    torch.set_num_threads(1)
    result = run_trial(config, report=keep)
    params = {"method": config.method, "lora_rank": config.lora_rank, "lr": config.lr, "seed": config.seed}
    record = TrialRecord("t0", 0, "completed", params, result.val, 2.0, 10.0, None, str(checkpoint), 1.7e9)
    folder = root / "results" / "one"
    write_results(folder, [record], {"t0": result.test}, OBJECTIVES, (), derived_fronts(OBJECTIVES))
    return folder


def _usage(export: Path) -> str:
    card = (export / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) == 1, "the card holds one Python example"
    return str(blocks[0])


def _start_child(export: Path, images: np.ndarray, groups: list[str]) -> subprocess.Popen[str]:
    np.save(export / "images.npy", images)
    (export / "groups.txt").write_text("\n".join(groups))
    (export / "usage.py").write_text(_usage(export) + "np.save('decisions.npy', decisions)\n")
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    command = [sys.executable, "-S", "-E", "-s", "-c", CHILD.format(paths=paths)]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(export), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command, cwd=export, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.mark.slow
def test_an_export_loads_without_fairsearch_and_gives_the_trials_test_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _sweep_of_one_trial(tmp_path)
    checkpoint = tmp_path / "checkpoint"
    plain, grouped = tmp_path / "exports" / "plain", tmp_path / "exports" / "grouped"
    assert main(["export", str(folder), "--trial", "0", "--out", str(plain)]) == 0
    assert main(["export", str(folder), "--trial", "0", "--thresholds", "group", "--out", str(grouped)]) == 0
    assert sorted(p.name for p in plain.parent.iterdir()) == ["grouped", "plain"]  # no staging folder left

    names = {p.relative_to(plain).as_posix() for p in plain.rglob("*")}
    assert {
        "adapter_config.json", "adapter_model.safetensors", "head.safetensors", "tokenizer.json",
        "preprocessor_config.json", "classifier.json", "thresholds.json", "README.md", "fairness.json",
        "load.py", "base_model/config.json", "base_model/model.safetensors", "base_model/tokenizer.json",
    } <= names  # fmt: skip
    adapter = json.loads((plain / "adapter_config.json").read_text())
    assert (adapter["peft_type"], adapter["r"], adapter["target_modules"]) == ("LORA", 4, LORA_TARGET_MODULES)
    assert adapter["base_model_name_or_path"] == "base_model"

    config = choose_export(folder, 0).config
    test = load_splits(config)["test"]
    images = np.stack([test.image(i) for i in range(len(test))])
    arrays = read_scores_at(str(checkpoint))
    assert arrays is not None
    expected = arrays["test_score"]
    group_choice = choose_export(folder, 0, thresholds="group")
    names_of = group_choice.scores.group_names
    groups = [names_of[g] if g >= 0 else "(no group)" for g in group_choice.scores.test.group]
    children = {export: _start_child(export, images, groups) for export in (plain, grouped)}
    for export, child in children.items():
        output, _ = child.communicate(timeout=600)
        assert child.returncode == 0, output[-3000:]
        scores = np.load(export / "scores.npy")
        assert scores.shape == expected.shape
        difference = float(np.abs(scores - expected).max())
        print(f"{export.name}: max |p(glaucoma) − stored test score| = {difference:.3g}")
        assert difference <= TOLERANCE
    # the per-group thresholds decide as fairsearch's thresholded row does (but on a hair's breadth)
    decided = np.load(grouped / "decisions.npy")
    theirs = decisions_of(group_choice)
    cut = np.array([group_choice.thresholds[g] for g in groups])
    clear = np.abs(expected - cut) > TOLERANCE
    assert clear.sum() > 0.9 * len(clear) and np.array_equal(decided[clear], theirs[clear])
    clear = np.abs(expected - 0.5) > TOLERANCE
    assert np.array_equal(np.load(plain / "decisions.npy")[clear], (expected >= 0.5)[clear])

    # the card's and fairness.json's figures are the trial's own test metrics, for every attribute
    test_metrics = json.loads((checkpoint / TEST_METRICS_FILE).read_text())
    records = json.loads((plain / "fairness.json").read_text())["performance_metrics"]
    by = {(r["metric"], r["slice"]): r for r in records}
    assert by[("accuracy", "overall")]["value"] == pytest.approx(test_metrics["acc"])
    assert by[("auc", "overall")]["value"] == pytest.approx(test_metrics["auc"])
    for attribute in ("race", "gender", "ethnicity", "language", "maritalstatus"):
        groups_seen = [k.split("/")[2] for k in test_metrics if k.startswith(f"n/{attribute}/")]
        assert groups_seen
        for group in groups_seen:
            record = by[("accuracy", f"{attribute}={group}")]
            assert record["n"] == test_metrics[f"n/{attribute}/{group}"]
            assert record["value"] == pytest.approx(test_metrics[f"acc/{attribute}/{group}"])
            interval = record["confidence_interval"]
            assert interval["lower_bound"] == pytest.approx(test_metrics[f"acc/{attribute}/{group}_ci_low"])
            assert interval["upper_bound"] == pytest.approx(test_metrics[f"acc/{attribute}/{group}_ci_high"])
            rate = by[("predicted_positive_rate", f"{attribute}={group}")]["value"]
            assert rate == pytest.approx(test_metrics[f"p_pos/{attribute}/{group}"])
    card = (plain / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "peft" and "base_model" not in meta  # the tiny model is on no hub
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["accuracy"] == pytest.approx(test_metrics["acc"], abs=1e-6)
    assert "## Where it sits on the front" in card and "need each patient's group" in card

    # the grouped export's thresholds are its front row's, named by group, and its figures that row's
    row = group_choice.threshold_row
    assert row is not None
    saved = json.loads((grouped / "thresholds.json").read_text())
    assert saved["kind"] == "group_thresholds" and saved["groups"] == list(names_of)
    assert saved["thresholds"] == json.loads(str(row["thresholds"]))
    grouped_records = json.loads((grouped / "fairness.json").read_text())["performance_metrics"]
    grouped_by = {(r["metric"], r["slice"]): r["value"] for r in grouped_records}
    assert grouped_by[("accuracy", "overall")] == pytest.approx(row["test/acc"])
    assert grouped_by[("max_acc_gap", "ethnicity")] == pytest.approx(row["test/max_acc_gap"])


def _refusal_sweep(root: Path) -> Path:
    """A sweep of scores only (``scored_sweeps``), a completed trial 7 without a checkpoint, and a
    confirmation run of trial 0 with seed 1 (no checkpoint either)."""
    records, test, _ = write_scored_sweep(root / "checkpoints")
    records.append(
        TrialRecord("t7", 7, "completed", {"method": "vanilla"}, dict(records[0].val_metrics), 3.0)
    )
    folder = root / "results" / "scored"
    write_results(folder, records, test, OBJECTIVES, (), derived_fronts(OBJECTIVES))
    run = TrialRecord("c0", 0, "completed", {"method": "vanilla", "seed": 1}, dict(records[0].val_metrics))
    write_parquet_atomic(trials_frame([run]), folder / "confirm.parquet", {})
    return folder


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--trial", "99"], "has no completed trial 99; completed trials: [0, 1, 2, 3, 4, 7]"),
        (["--trial", "9"], "has no completed trial 9"),  # the failed one
        (["--trial", "7"], "--trial 7: trial 7's run (seed 0) in"),  # completed, no checkpoint
        (["--trial", "0"], "has no complete checkpoint at"),  # a folder of scores only, no manifest
        (["--trial", "7", "--thresholds", "group"], "trial 7 of"),  # no thresholded row at all
        (["--trial", "0", "--seed", "5"], "--seed 5: trial 0 of"),
        (["--trial", "0", "--seed", "1", "--thresholds", "single"], "were chosen on its own run's (seed 0)"),
        (["--trial", "0", "--seed", "1"], "has no checkpoint"),  # the confirmation run's
        (["--trial", "0", "--thresholds", "some"], "invalid choice: 'some'"),
        (["--trial", "x"], "invalid int value: 'x'"),
        (["--trial", "0", "--out", "{root}/busy"], "the folder is not empty"),
        (["--trial", "0", "--out", "{root}/a_file"], "it is a file"),
        (["--trial", "0", "--out", "{root}/a_file/below"], "a_file is a file, not a folder"),
    ],
)
def test_bad_export_input_is_refused_with_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    folder = _refusal_sweep(tmp_path)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    (tmp_path / "a_file").write_text("x")
    args = [a.format(root=tmp_path) for a in argv]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "export")]
    refused(capsys, tmp_path, ["export", str(folder), *args], fragment.format(root=tmp_path))


def test_a_folder_without_results_and_a_trial_without_group_rows_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _refusal_sweep(tmp_path)
    rows = pd.read_parquet(folder / "pareto.parquet")
    grouped = set(rows.loc[rows["kind"] == "group_thresholds", "number"])
    without = sorted({0, 1, 2, 3, 4} - grouped)
    assert without, "a scored trial without a group_thresholds row"
    err = refused(
        capsys, tmp_path,
        ["export", str(folder), "--trial", str(without[0]), "--thresholds", "group", "--out", str(tmp_path / "e")],
        "has no group_thresholds row on the thresholded fronts",
    )  # fmt: skip
    assert f"fairsearch pareto {folder} --kind group_thresholds" in err
    refused(
        capsys,
        tmp_path,
        ["export", str(tmp_path), "--trial", "0", "--out", str(tmp_path / "e")],
        "no results in",
    )
