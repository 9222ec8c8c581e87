"""The last-layer refit (DFR-style): its halves and its choice on validation alone, the features a trial
keeps for it, and its front in ``pareto.parquet``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from fairsearch.cli import main
from fairsearch.judge.fairness import Grouping
from fairsearch.judge.metrics import evaluate_split
from fairsearch.judge.refit import C_GRID, refit_last_layer
from fairsearch.judge.thresholds import SplitScores, TrialScores
from fairsearch.output.refit_fronts import REFIT_FRONT, REFIT_KIND, derived_fronts, refit_rows
from fairsearch.output.results import TrialRecord, read_front, write_results
from fairsearch.spec.config import OBJECTIVES, TrialConfig
from fairsearch.train.checkpoint import FEATURES_FILE, SCORES_FILE
from fairsearch.train.trial import run_trial

SMALL = {"synthetic_n": 160, "batch_size": 16, "n_boot": 20, "eval_batch_size": 40}


def _features(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A majority whose label shows in feature 0 and a 10 % minority whose label shows in feature 1."""
    group = (rng.random(n) < 0.1).astype(np.int64)
    label = rng.integers(0, 2, n)
    x = rng.normal(0, 1, (n, 4))
    x[:, 0] += np.where(group == 0, 2.0 * (2 * label - 1), 0.0)
    x[:, 1] += np.where(group == 1, 2.0 * (2 * label - 1), 0.0)
    return x, label, group


def test_the_refit_fits_one_half_chooses_on_the_other_and_never_sees_test_labels() -> None:
    rng = np.random.default_rng(0)
    x, y, g = _features(rng, 1200)
    test_x, test_y, test_g = _features(rng, 2000)
    refit = refit_last_layer(x, y, g, test_x, seed=3)
    fit = np.setdiff1d(np.arange(1200), refit.select)
    assert refit.n_fit == fit.size and abs(fit.size - refit.select.size) <= 4  # halves, cell by cell
    for cell in [(0, 0), (0, 1), (1, 0), (1, 1)]:  # every (group, label) cell split evenly
        in_cell = (g == cell[0]) & (y == cell[1])
        assert abs(int(in_cell[fit].sum()) - int(in_cell[refit.select].sum())) <= 1
    # the choice, by brute force: each C's head on the fit half, its worst group on the selection half
    mean, std = x[fit].mean(0), x[fit].std(0) + 1e-6
    size = {0: int((g[fit] == 0).sum()), 1: int((g[fit] == 1).sum())}
    weight = np.array([1.0 / size[int(v)] for v in g[fit]])
    worst = {}
    for c in C_GRID:
        head = LogisticRegression(C=c, max_iter=2000).fit(
            (x[fit] - mean) / std, y[fit], sample_weight=weight * fit.size / weight.sum()
        )
        right = (head.predict_proba((x[refit.select] - mean) / std)[:, 1] >= 0.5) == y[refit.select]
        worst[c] = min(right[g[refit.select] == k].mean() for k in (0, 1))
    assert worst[refit.c] == max(worst.values())
    # the group-balanced head serves the minority, whose sign a plain head on all of validation misses
    plain = LogisticRegression(max_iter=2000).fit(x, y)
    minority = test_g == 1
    assert ((refit.test_prob >= 0.5) == test_y)[minority].mean() > (
        (plain.predict(test_x) == test_y)[minority].mean() + 0.05
    )
    # the test rows only pass through the chosen head: changing one changes its own probability alone
    moved = test_x.copy()
    moved[5] += 3.0
    again = refit_last_layer(x, y, g, moved, seed=3)
    assert np.array_equal(np.delete(again.test_prob, 5), np.delete(refit.test_prob, 5)) and again.c == refit.c
    with pytest.raises(ValueError, match="one class only"):
        refit_last_layer(x, np.zeros(1200), g, test_x)


def test_a_trial_keeps_the_features_its_head_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept features put through the trained head give the trial's own test and validation scores."""
    monkeypatch.setenv("FAIRSEARCH_CACHE", str(tmp_path / "cache"))
    kept: dict[str, Path] = {}

    def report(metrics: dict[str, float], folder: Path) -> None:
        if (folder / SCORES_FILE).exists():
            kept["dir"] = tmp_path / "final"
            shutil.copytree(folder, kept["dir"])

    run_trial(TrialConfig(epochs=1, refit_last_layer=True, **SMALL), report=report)  # type: ignore[arg-type]
    final = kept["dir"]
    with np.load(final / FEATURES_FILE, allow_pickle=False) as f:
        features = {k: f[k] for k in f.files}
    with np.load(final / SCORES_FILE, allow_pickle=False) as f:
        scores = TrialScores.from_arrays(dict(f), "final")
    state = torch.load(final / "trainable.pt", weights_only=True)
    weight, bias = state["head.weight"].double().numpy(), state["head.bias"].double().numpy()
    for split in ("val", "test"):
        x = features[f"{split}_features"].astype(np.float64)
        logits = x @ weight.T + bias
        prob = np.exp(logits[:, 1]) / np.exp(logits).sum(axis=1)
        assert prob == pytest.approx(getattr(scores, split).score, abs=1e-5), split
    manifest = json.loads((final / "manifest.json").read_text())
    assert manifest[FEATURES_FILE] == (final / FEATURES_FILE).stat().st_size


def _sweep_with_features(tmp_path: Path) -> list[TrialRecord]:
    rng = np.random.default_rng(4)
    records = []
    for number in range(3):
        val_x, val_y, val_g = _features(rng, 600)
        test_x, test_y, test_g = _features(rng, 800)
        folder = tmp_path / f"ckpt{number}"
        folder.mkdir()

        def split(y: np.ndarray, g: np.ndarray) -> SplitScores:
            return SplitScores(rng.random(len(y)), y, g)

        TrialScores(
            "ethnicity", ("Non-Hispanic", "Hispanic"), split(val_y, val_g), split(test_y, test_g)
        ).save(folder / SCORES_FILE)
        if number < 2:  # trial 2 kept no features
            np.savez(folder / FEATURES_FILE, allow_pickle=False, val_features=val_x, test_features=test_x)
        records.append(
            TrialRecord(f"t{number}", number, "completed", {"method": "vanilla"}, {"acc": 0.5, "max_acc_gap": 0.1},
                        1.0, 1.0, None, str(folder), 1.0)
        )  # fmt: skip
    return records


def test_the_refit_front_holds_each_trial_s_refit_head_measured_on_the_selection_half(tmp_path: Path) -> None:
    records = _sweep_with_features(tmp_path)
    write_results(tmp_path / "sweep", records, {}, derived_fronts=derived_fronts(OBJECTIVES))
    trials = pd.read_parquet(tmp_path / "sweep" / "trials.parquet")
    rows = refit_rows(trials)
    assert sorted(rows["number"]) == [0, 1] and (rows["kind"] == REFIT_KIND).all()
    front = read_front(tmp_path / "sweep", REFIT_FRONT)
    assert 1 <= len(front) <= 2 and set(front["number"]) <= {0, 1} and front["hypervolume"].notna().all()
    row = rows[rows["number"] == 0].iloc[0]
    with np.load(tmp_path / "ckpt0" / FEATURES_FILE) as f:
        val_x, test_x = f["val_features"], f["test_features"]
    with np.load(tmp_path / "ckpt0" / SCORES_FILE) as f:
        scores = TrialScores.from_arrays(dict(f), "t0")
    refit = refit_last_layer(val_x, scores.val.label, scores.val.group, test_x)
    grouping = Grouping("ethnicity", scores.test.group, scores.group_names)
    test = evaluate_split(
        refit.test_prob, scores.test.label, {"ethnicity": grouping}, primary="ethnicity"
    ).flat()
    assert row["test/acc"] == pytest.approx(test["acc"]) and row["test/max_acc_gap"] == pytest.approx(
        test["max_acc_gap"]
    )
    pick = refit.select
    sel = Grouping("ethnicity", scores.val.group[pick], scores.group_names)
    val = evaluate_split(
        refit.select_prob, scores.val.label[pick], {"ethnicity": sel}, primary="ethnicity"
    ).flat()
    assert row["val/acc"] == pytest.approx(val["acc"]) and json.loads(row["refit"])["C"] == refit.c
    assert json.loads(row["refit"])["select"] == pick.size and len(trials) == 3


def test_pareto_shows_the_refit_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_results(
        tmp_path / "sweep", _sweep_with_features(tmp_path), {}, derived_fronts=derived_fronts(OBJECTIVES)
    )
    assert main(["pareto", str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "Last-layer refit front (a new head fitted on half of validation; val = the other half)" in out


def test_compare_takes_a_trial_with_its_last_layer_refitted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``7@refit``: the decisions of the trial's refit row, paired against another side."""
    from fairsearch.output.compare import compare_trials

    write_results(
        tmp_path / "sweep", _sweep_with_features(tmp_path), {}, derived_fronts=derived_fronts(OBJECTIVES)
    )
    side_a, side_b, _ = compare_trials(tmp_path / "sweep", "0@refit", "0", n_boot=200)
    with np.load(tmp_path / "ckpt0" / FEATURES_FILE) as f:
        val_x, test_x = f["val_features"], f["test_features"]
    refit = refit_last_layer(val_x, side_a.scores.val.label, side_a.scores.val.group, test_x)
    assert np.array_equal(side_a.decisions, (refit.test_prob >= 0.5).astype(np.int64))
    assert side_a.title.endswith(f"with its last layer refitted on validation (C {refit.c:g})")
    assert np.array_equal(side_b.decisions, (side_b.scores.test.score >= 0.5).astype(np.int64))
    assert main(["compare", str(tmp_path / "sweep"), "2@refit", "0"]) == 2  # trial 2 kept no features
    err = capsys.readouterr().err
    assert "trial 2 of" in err and "kept no features to refit" in err and "Traceback" not in err
