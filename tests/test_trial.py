"""One trial on the tiny model: exact resume, cache equivalence, divergence detection, the train command."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import torch

import fairsearch.train.trial as trial_module
from fairsearch.cli import main
from fairsearch.errors import FairsearchError
from fairsearch.judge.fairness import max_acc_gap
from fairsearch.judge.thresholds import TrialScores
from fairsearch.methods import METHODS, Loss, TrainingGroups
from fairsearch.spec.config import TrialConfig
from fairsearch.train.checkpoint import (
    MANIFEST_FILE,
    STATE_FILE,
    TEST_METRICS_FILE,
    complete_checkpoint_state,
    read_scores_at,
)
from fairsearch.train.trial import run_trial

SMALL = {"synthetic_n": 160, "batch_size": 16, "n_boot": 20, "eval_batch_size": 40}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIRSEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    torch.set_num_threads(1)


class _Collect:
    """A ``report`` that keeps the metrics and a copy of the last checkpoint."""

    def __init__(self, keep: Path | None = None) -> None:
        self.metrics: list[dict[str, float]] = []
        self.keep = keep

    def __call__(self, metrics: dict[str, float], folder: Path) -> None:
        self.metrics.append(dict(metrics))
        if self.keep is not None:
            import shutil

            shutil.rmtree(self.keep, ignore_errors=True)
            shutil.copytree(folder, self.keep)


@pytest.mark.slow
def test_resumed_trial_matches_uninterrupted_run(tmp_path: Path) -> None:
    config = TrialConfig(method="hybrid", params={"lam": 0.5, "w_max": 5.0}, epochs=2, lr=2e-3, **SMALL)
    straight = _Collect(keep=tmp_path / "straight")
    result = run_trial(config, report=straight)

    first = _Collect(keep=tmp_path / "ckpt")
    with pytest.raises(_Interrupted):
        run_trial(config, report=_StopAfter(first, epochs=1))
    assert [m["epoch"] for m in first.metrics] == [1.0]
    assert not (tmp_path / "ckpt" / TEST_METRICS_FILE).exists()  # the test split waits for the last report
    _check_manifest(tmp_path / "ckpt", tmp_path / "copy")

    resumed = _Collect(keep=tmp_path / "resumed")
    run_trial(config, report=resumed, resume_from=tmp_path / "ckpt")
    assert [m["epoch"] for m in resumed.metrics] == [2.0]  # epoch 1 is not run again
    for key in ("acc", "max_acc_gap", "loss", "train_loss", "auc"):
        assert resumed.metrics[0][key] == pytest.approx(straight.metrics[1][key], abs=1e-5), key
    test = json.loads((tmp_path / "straight" / TEST_METRICS_FILE).read_text())
    assert test == result.test and 0 <= test["acc"] <= 1
    # the last checkpoint's scores give its metrics again at threshold 0.5; earlier ones hold none
    assert read_scores_at(str(tmp_path / "ckpt")) is None
    arrays = read_scores_at(str(tmp_path / "straight"))
    assert arrays is not None
    scores = TrialScores.from_arrays(arrays, "straight")
    assert scores.group_by == config.group_by and "Hispanic" in scores.group_names
    for split, metrics in ((scores.test, test), (scores.val, straight.metrics[-1])):
        pred = split.score >= 0.5
        assert (pred == split.label).mean() == pytest.approx(metrics["acc"], abs=1e-12)
        assert max_acc_gap(pred, split.label, split.group).gap == pytest.approx(
            metrics["max_acc_gap"], abs=1e-12
        )
    resumed_test = json.loads((tmp_path / "resumed" / TEST_METRICS_FILE).read_text())
    assert resumed_test["acc"] == pytest.approx(test["acc"], abs=1e-9)

    # an adapter trained on other backbone weights is not resumed on these
    state_file = tmp_path / "ckpt" / STATE_FILE
    state = json.loads(state_file.read_text())
    assert state["backbone"].startswith("tiny:")
    state_file.write_text(json.dumps({**state, "backbone": "tiny:0000000000000000"}))
    with pytest.raises(
        FairsearchError, match=r"trained on backbone tiny:0{16}, resumed on tiny:[0-9a-f]{16}"
    ):
        run_trial(config, report=_Collect(), resume_from=tmp_path / "ckpt")


def _check_manifest(checkpoint: Path, scratch: Path) -> None:
    """A checkpoint is complete only with its manifest and every file it names at full size."""
    import shutil

    import pyarrow.fs

    fs = pyarrow.fs.LocalFileSystem()
    state = complete_checkpoint_state(fs, str(checkpoint))
    assert state is not None and state["epoch"] == 1 and len(state["history"]) == 1
    assert complete_checkpoint_state(fs, str(scratch / "missing")) is None
    for cut in ("trainable.pt", "optimizer.pt", MANIFEST_FILE):
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(checkpoint, scratch)
        data = (scratch / cut).read_bytes()
        (scratch / cut).write_bytes(data[: len(data) // 2])  # a copy cut short
        assert complete_checkpoint_state(fs, str(scratch)) is None, cut
    (scratch / MANIFEST_FILE).unlink()
    assert complete_checkpoint_state(fs, str(scratch)) is None


class _StopAfter:
    """Reports like ``inner`` and then interrupts the trial after ``epochs`` epochs (a killed worker)."""

    def __init__(self, inner: _Collect, epochs: float) -> None:
        self.inner, self.epochs = inner, epochs

    def __call__(self, metrics: dict[str, float], folder: Path) -> None:
        self.inner(metrics, folder)
        if metrics["epoch"] >= self.epochs:
            raise _Interrupted


class _Interrupted(Exception):
    pass


def test_stop_after_raises(tmp_path: Path) -> None:
    collect = _Collect()
    with pytest.raises(_Interrupted):
        run_trial(TrialConfig(epochs=3, **SMALL), report=_StopAfter(collect, epochs=1))
    assert len(collect.metrics) == 1


@pytest.mark.slow
def test_reports_within_an_epoch_train_the_same_model_and_resume_mid_epoch(tmp_path: Path) -> None:
    base = {"method": "fr", "params": {"lam": 0.5}, "epochs": 2, "lr": 2e-3, "grad_accum": 2, **SMALL}
    whole = _Collect()
    run_trial(TrialConfig(**base), report=whole)
    halves = _Collect()
    result = run_trial(TrialConfig(reports_per_epoch=2, **base), report=halves)
    assert [m["epoch"] for m in halves.metrics] == [0.5, 1.0, 1.5, 2.0] and result.epochs_done == 2.0
    # the same optimizer steps in the same order: at whole epochs, the same model and metrics
    for k in ("acc", "max_acc_gap", "loss", "auc"):
        assert [halves.metrics[i][k] for i in (1, 3)] == pytest.approx(
            [m[k] for m in whole.metrics], abs=1e-5
        )
    assert halves.metrics[0]["acc"] != pytest.approx(halves.metrics[1]["acc"], abs=1e-9) or (
        halves.metrics[0]["loss"] != pytest.approx(halves.metrics[1]["loss"], abs=1e-9)
    )  # the half-epoch report is a model of its own

    first = _Collect(keep=tmp_path / "ckpt")
    with pytest.raises(_Interrupted):
        run_trial(TrialConfig(reports_per_epoch=2, **base), report=_StopAfter(first, epochs=1.5))
    resumed = _Collect()
    run_trial(TrialConfig(reports_per_epoch=2, **base), report=resumed, resume_from=tmp_path / "ckpt")
    assert [m["epoch"] for m in resumed.metrics] == [2.0]  # the second half of epoch 2, nothing more
    for k in ("acc", "max_acc_gap", "loss", "train_loss"):
        assert resumed.metrics[0][k] == pytest.approx(halves.metrics[3][k], abs=1e-5), k

    with pytest.raises(FairsearchError, match="written with reports_per_epoch 2, resumed with 1"):
        run_trial(TrialConfig(**base), report=_Collect(), resume_from=tmp_path / "ckpt")


def test_more_reports_than_optimizer_steps_is_refused() -> None:
    # 160 images split 1200:2300:2300: 33 to train on, 3 batches of 16, 2 optimizer steps with grad_accum 2
    config = TrialConfig(reports_per_epoch=4, grad_accum=2, epochs=1, **SMALL)
    with pytest.raises(FairsearchError, match=r"reports_per_epoch: 4 is more than the 2 optimizer steps"):
        run_trial(config, report=_Collect())


@pytest.mark.slow
def test_vision_cache_gives_the_same_metrics_as_running_the_tower(tmp_path: Path) -> None:
    base = {"method": "gr", "params": {"w_max": 4.0}, "epochs": 1, **SMALL}
    cached, direct = _Collect(), _Collect()
    run_trial(TrialConfig(vision_cache=True, **base), report=cached)
    run_trial(TrialConfig(vision_cache=False, **base), report=direct)
    for key in ("acc", "max_acc_gap", "loss", "train_loss"):
        assert cached.metrics[0][key] == pytest.approx(direct.metrics[0][key], abs=1e-4), key


def test_non_finite_loss_stops_the_trial_and_says_where(monkeypatch: pytest.MonkeyPatch) -> None:
    fr = METHODS["fr"]
    calls = {"n": 0}

    def diverging(groups: TrainingGroups, params: Mapping[str, float]) -> Loss:
        real = fr.make_loss(groups, params)

        def loss(*args: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            value = real(*args)
            return value * float("nan") if calls["n"] == 3 else value

        return loss

    monkeypatch.setitem(METHODS, "fr", dataclasses.replace(fr, make_loss=diverging))  # type: ignore[arg-type]
    reports = _Collect()
    with pytest.raises(
        FairsearchError,
        match=r"loss is nan at epoch 1, step 3 \(method fr, lr 0.001, lam 0.3\): training diverged; lower lr or lam$",
    ):
        run_trial(TrialConfig(method="fr", params={"lam": 0.3}, epochs=1, **SMALL), report=reports)
    assert reports.metrics == []  # no report, no checkpoint of a diverged model


def test_bad_method_settings_fail_before_any_work() -> None:
    with pytest.raises(FairsearchError, match=r"^w_max: 0.5 must be >= 1$"):
        TrialConfig(method="gr", params={"w_max": 0.5}, **SMALL)


def test_missing_data_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FairsearchError, match=str(tmp_path / "nowhere")):
        run_trial(TrialConfig(data=str(tmp_path / "nowhere"), **SMALL), report=_Collect())


@pytest.mark.slow
def test_train_command_writes_metrics_and_checkpoint_and_resumes(tmp_path: Path) -> None:
    space = Path(__file__).parent.parent / "search_spaces" / "gr_lora.yaml"
    out = tmp_path / "run"
    sets = ["--set", "epochs=2", "synthetic_n=160", "n_boot=20", "lora_rank=4"]
    assert main(["train", "--space", str(space), *sets, "--out", str(out)]) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1.0, 2.0]
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 2 and state["config"]["method"] == "gr" and state["config"]["lora_rank"] == 4

    # resuming a finished run trains nothing more and reports nothing more
    assert main(["train", "--space", str(space), *sets, "--out", str(out), "--resume"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


class _Weights:
    """Stands in for the classifier: one trainable tensor."""

    def __init__(self) -> None:
        self.w = torch.zeros(2)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {"w": self.w}

    def load_trainable_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.w = state["w"].clone()


def test_selection_reports_the_best_model_so_far_and_keeps_its_weights(tmp_path: Path) -> None:
    model = _Weights()
    selection = trial_module._Selection("worst_group_acc")
    reported = []
    for epoch, value in enumerate([0.5, 0.7, float("nan"), 0.7, 0.6], start=1):
        model.w = torch.full((2,), float(epoch))  # training moved the weights on
        val = {"acc": 0.9, "worst_group_acc": value, "epoch": float(epoch), "train_loss": 1.0 / epoch}
        reported.append(selection.update({**val, "selected_epoch": float(epoch)}, model))  # type: ignore[arg-type]
        if epoch == 3:  # a checkpoint now holds epoch 2's weights beside its own
            selection.save(tmp_path / "selected.pt", 3.0)
    assert [r["selected_epoch"] for r in reported] == [
        1,
        2,
        2,
        2,
        2,
    ]  # NaN never wins, a tie keeps the earlier
    assert [r["epoch"] for r in reported] == [1, 2, 3, 4, 5] and reported[4]["train_loss"] == 0.2
    assert reported[4]["worst_group_acc"] == 0.7
    assert selection.restore(model, 5.0) and model.w.tolist() == [2.0, 2.0]  # type: ignore[arg-type]
    # a resumed trial takes the selection up from its checkpoint's last report and selected.pt
    again = trial_module._Selection("worst_group_acc")
    again.resume(reported[2], _Weights(), tmp_path / "selected.pt")  # type: ignore[arg-type]
    fresh = _Weights()
    assert again.restore(fresh, 5.0) and fresh.w.tolist() == [2.0, 2.0]  # type: ignore[arg-type]
    last = trial_module._Selection(None)  # select: last
    assert last.update({"worst_group_acc": 0.1, "epoch": 2.0, "selected_epoch": 2.0}, model)["epoch"] == 2.0  # type: ignore[arg-type]
    assert not last.restore(model, 2.0)  # type: ignore[arg-type]
    with pytest.raises(
        FairsearchError, match=r"^select: 'best' is not one of \['last', 'best_acc', 'best_worst_group'\]$"
    ):
        TrialConfig(select="best")


@pytest.mark.slow
def test_selected_model_is_the_best_report_s_and_resumes_exactly(tmp_path: Path) -> None:
    """Selection changes what is reported and tested, never how the trial trains: the run selecting by
    worst-group accuracy reports, at its end, the metrics of the best of the plain run's reports, and
    its last checkpoint holds that report's model; interrupted and resumed, it ends the same."""
    base = {"method": "vanilla", "epochs": 3, "lr": 1e-2, **SMALL}
    plain = _Collect(keep=tmp_path / "plain")
    run_trial(TrialConfig(**base), report=plain)  # type: ignore[arg-type]
    selecting = _Collect(keep=tmp_path / "selected")
    config = TrialConfig(select="best_worst_group", **base)  # type: ignore[arg-type]
    result = run_trial(config, report=selecting)
    values = [m["worst_group_acc"] for m in plain.metrics]
    best = values.index(max(values))  # the earliest of the best
    final = selecting.metrics[-1]
    assert final["selected_epoch"] == best + 1 and final["epoch"] == 3.0
    for key in ("acc", "worst_group_acc", "max_acc_gap", "auc", "loss"):
        assert final[key] == pytest.approx(plain.metrics[best][key], abs=1e-6), key
    assert [m["train_loss"] for m in selecting.metrics] == pytest.approx(
        [m["train_loss"] for m in plain.metrics]
    )
    arrays = read_scores_at(str(tmp_path / "selected"))
    assert arrays is not None
    val = TrialScores.from_arrays(arrays, "selected").val
    assert float(np.mean((val.score >= 0.5) == val.label)) == pytest.approx(final["acc"], abs=1e-9)
    assert result.val == final
    # stopped after epoch 2 and resumed: the same end
    first = _Collect(keep=tmp_path / "ckpt")
    with pytest.raises(_Interrupted):
        run_trial(config, report=_StopAfter(first, epochs=2))
    resumed = _Collect()
    run_trial(config, report=resumed, resume_from=tmp_path / "ckpt")
    for key in ("acc", "worst_group_acc", "selected_epoch", "epoch"):
        assert resumed.metrics[-1][key] == pytest.approx(final[key], abs=1e-6), key
    assert json.loads((tmp_path / "selected" / TEST_METRICS_FILE).read_text()) == pytest.approx(result.test)


def test_a_sweep_trial_stages_its_checkpoints_in_its_own_store_and_leaves_nothing_in_the_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    from ray import tune

    from fairsearch.search.tune_trials import tune_trainable
    from fairsearch.spec.space import OPTUNA_NUMBER
    from fairsearch.train.checkpoint import TrialStore

    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_temp))
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    reports: list[dict[str, float]] = []
    monkeypatch.setattr(tune, "report", reports.append)
    staged: list[tuple[Path, list[str]]] = []
    save = TrialStore.save

    def spy(store: TrialStore, folder: Path, report: int) -> str:
        staged.append((folder, sorted(p.name for p in folder.iterdir())))
        return save(store, folder, report)

    monkeypatch.setattr(TrialStore, "save", spy)
    store = tmp_path / "trials" / "trial-00007"
    for left in ("staging-0123456789ab", "resume-0123456789ab"):  # a process of this trial killed mid-save
        (store / left).mkdir(parents=True)
        (store / left / "trainable.pt").write_bytes(b"x" * 1000)

    tune_trainable({**TrialConfig(epochs=2, **SMALL).as_dict(), OPTUNA_NUMBER: 7}, str(tmp_path / "trials"))
    assert [r["report"] for r in reports] == [1, 2]
    assert [(folder.parent, folder.name[:8], "trainable.pt" in names) for folder, names in staged] == [
        (store, "staging-", True)
    ] * 2
    assert sorted(p.name[:14] for p in store.iterdir()) == ["report-000002-", "trained"]
    assert list(system_temp.iterdir()) == []
