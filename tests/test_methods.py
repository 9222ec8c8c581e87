"""The methods beyond the paper's four, each against a reference computed by hand: group DRO's weights
and loss step by step, group-balanced sampling's and JTT's draws, JTT's error set; and each resumes a
trial exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fairsearch.errors import FairsearchError
from fairsearch.methods import METHODS, StatefulLoss, TrainingGroups
from fairsearch.methods.balanced import balanced_order
from fairsearch.methods.group_dro import GroupDROLoss
from fairsearch.spec.config import TrialConfig
from fairsearch.train.trial import METHOD_STATE_FILE, run_trial

CPU = torch.device("cpu")
SMALL = {"synthetic_n": 160, "batch_size": 16, "n_boot": 20, "eval_batch_size": 40}


def _ce(logit: list[float], label: int) -> float:
    top = max(logit)
    return -(logit[label] - top - math.log(sum(math.exp(v - top) for v in logit)))


def test_group_dro_weights_and_loss_step_by_step() -> None:
    """Three groups, the third absent from training: q starts uniform over the two present, then each
    batch moves q by exp(η · each group's mean loss) and the loss is Σ q·ℓ with the moved q."""
    loss = METHODS["group_dro"].make_loss(TrainingGroups(np.array([5, 2, 0]), CPU), {"eta": 0.5})
    assert isinstance(loss, GroupDROLoss) and isinstance(loss, StatefulLoss)
    assert loss.q.tolist() == [0.5, 0.5, 0.0]
    logits = [[2.0, 0.0], [0.0, 1.0], [2.0, -1.0], [3.0, -1.0]]
    labels, groups = [0, 0, 1, 1], [0, 0, 1, -1]  # the last sample is in no group: left out
    q = [0.5, 0.5, 0.0]
    for _ in range(2):  # the same batch twice: q keeps moving towards group 1, which does worse
        ell = [(_ce(logits[0], 0) + _ce(logits[1], 0)) / 2, _ce(logits[2], 1), 0.0]
        q = [qi * math.exp(0.5 * li) for qi, li in zip(q, ell, strict=True)]
        q = [qi / sum(q) for qi in q]
        got = loss(torch.tensor(logits, dtype=torch.float64), torch.tensor(labels), torch.tensor(groups))
        assert got.item() == pytest.approx(sum(qi * li for qi, li in zip(q, ell, strict=True)), rel=1e-12)
        assert loss.q.tolist() == pytest.approx(q, rel=1e-12)
    assert q[1] > 0.5  # the worse group gained weight
    # the weights are constants of the step: the gradient is Σ q_g ∇ℓ_g
    x = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    loss(x, torch.tensor(labels), torch.tensor(groups)).backward()
    assert x.grad is not None and x.grad[3].abs().sum() == 0  # the ungrouped sample gets none


def test_group_dro_at_eta_zero_is_the_mean_of_the_group_means_and_its_state_round_trips() -> None:
    loss = GroupDROLoss([3, 1], eta=0.0, device=CPU)
    logits, labels, groups = (
        torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]]),
        torch.tensor([0, 0, 1, 0]),
        torch.tensor([0, 0, 0, 1]),
    )
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert loss(logits, labels, groups).item() == pytest.approx(
        0.5 * ce[:3].mean().item() + 0.5 * ce[3].item()
    )
    moving = GroupDROLoss([3, 1], eta=1.0, device=CPU)
    moving(logits, labels, groups)
    other = GroupDROLoss([3, 1], eta=1.0, device=CPU)
    other.load_state_dict(moving.state_dict())
    assert other.q.tolist() == moving.q.tolist() != [0.5, 0.5]
    with pytest.raises(ValueError, match="group DRO weights for 2 groups, this trial has 3"):
        GroupDROLoss([1, 1, 1], eta=1.0, device=CPU).load_state_dict(moving.state_dict())


def test_balanced_sampling_draws_every_group_equally_often_from_its_generator_alone() -> None:
    ids = np.array([0] * 90 + [1] * 9 + [-1])  # a 90:9 split and one sample in no group
    groups = TrainingGroups(np.array([90, 9]), CPU, ids)
    order = balanced_order(groups, {}, torch.Generator().manual_seed(3))
    assert order.shape == (100,) and order.min() >= 0 and order.max() < 100
    again = balanced_order(groups, {}, torch.Generator().manual_seed(3))
    assert torch.equal(order, again)
    draws = torch.cat([balanced_order(groups, {}, torch.Generator().manual_seed(s)) for s in range(200)])
    shares = np.bincount(np.where(ids[draws.numpy()] < 0, 2, ids[draws.numpy()]), minlength=3) / len(draws)
    assert shares == pytest.approx([1 / 3, 1 / 3, 1 / 3], abs=0.01)  # 20,000 draws: σ ≈ 0.003
    with pytest.raises(ValueError, match="needs the training samples' group ids"):
        balanced_order(TrainingGroups(np.array([1]), CPU), {}, torch.Generator())


def test_eta_is_checked_where_it_enters() -> None:
    with pytest.raises(FairsearchError, match=r"^eta: -0.1 must be >= 0$"):
        TrialConfig.from_dict({"method": "group_dro", "eta": -0.1})


class _Collect:
    def __init__(self, stop_after: int | None = None, keep: Path | None = None) -> None:
        self.metrics: list[dict[str, float]] = []
        self.stop_after, self.keep = stop_after, keep

    def __call__(self, metrics: dict[str, float], folder: Path) -> None:
        import shutil

        self.metrics.append(dict(metrics))
        if self.keep is not None:
            shutil.rmtree(self.keep, ignore_errors=True)
            shutil.copytree(folder, self.keep)
        if self.stop_after is not None and len(self.metrics) >= self.stop_after:
            raise KeyboardInterrupt


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "params"),
    [("group_dro", {"eta": 0.5}), ("balanced", {}), ("jtt", {"jtt_epochs": 1, "jtt_up": 5.0})],
)
def test_a_resumed_trial_of_a_new_method_matches_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str, params: dict[str, float]
) -> None:
    """The method's state (DRO's weights) and its epoch order (balanced draws) survive a checkpoint."""
    monkeypatch.setenv("FAIRSEARCH_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    config = TrialConfig(method=method, params=params, epochs=2, lr=2e-3, **SMALL)
    straight = _Collect()
    run_trial(config, report=straight)
    first = _Collect(stop_after=1, keep=tmp_path / "ckpt")
    with pytest.raises(KeyboardInterrupt):
        run_trial(config, report=first)
    assert (tmp_path / "ckpt" / METHOD_STATE_FILE).exists() == (method in ("group_dro", "jtt"))
    resumed = _Collect()
    run_trial(config, report=resumed, resume_from=tmp_path / "ckpt")
    assert [m["epoch"] for m in resumed.metrics] == [2.0]
    for key in ("acc", "max_acc_gap", "loss", "train_loss"):
        assert resumed.metrics[0][key] == pytest.approx(straight.metrics[1][key], abs=1e-5), key
    assert json.loads((tmp_path / "ckpt" / "state.json").read_text())["config"]["method"] == method


def test_jtt_takes_the_error_set_before_epoch_t_and_then_draws_it_jtt_up_times_as_often() -> None:
    params = {"jtt_epochs": 2, "jtt_up": 9.0}
    method = METHODS["jtt"]
    assert not method.uses_groups and method.before_epoch is not None and method.draw_order is not None
    training = TrainingGroups(np.array([95, 5]), CPU, np.array([0] * 95 + [1] * 5))
    loss = method.make_loss(training, params)
    correct = np.ones(100, dtype=bool)
    correct[[3, 50, 97]] = False  # the first stage gets three samples wrong
    calls = []

    def train_correct() -> np.ndarray:
        calls.append(1)
        return correct

    for epoch in (0, 1):  # stage 1: plain epochs, nothing evaluated
        method.before_epoch(loss, epoch, params, train_correct)
        order = method.draw_order(training, params, torch.Generator().manual_seed(epoch), loss)
        assert sorted(order.tolist()) == list(range(100))
    assert calls == []
    method.before_epoch(loss, 2, params, train_correct)
    method.before_epoch(loss, 3, params, train_correct)  # taken once, kept after
    assert calls == [1] and np.flatnonzero(loss.errors).tolist() == [3, 50, 97]
    draws = torch.cat(
        [method.draw_order(training, params, torch.Generator().manual_seed(s), loss) for s in range(300)]
    )
    share = float(np.isin(draws.numpy(), [3, 50, 97]).mean())
    assert share == pytest.approx(27 / (27 + 97), abs=0.01)  # 3·9 / (3·9 + 97·1), from 30,000 draws
    # no group label reaches the loss: it is plain cross-entropy whatever the groups say
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert loss(logits, labels, torch.tensor([0, 1])).item() == pytest.approx(plain.item())
    again = method.make_loss(training, params)
    again.load_state_dict(loss.state_dict())
    assert np.array_equal(again.errors, loss.errors)
    fresh = method.make_loss(training, params)
    fresh.load_state_dict(method.make_loss(training, params).state_dict())
    assert fresh.errors is None


@pytest.mark.parametrize("stages", [(10, 10), (6, 14), (20,)])
@pytest.mark.parametrize("warmup_ratio", [0.0, 0.1, 0.3])
def test_each_stage_has_transformers_cosine_schedule_of_its_own(
    stages: tuple[int, ...], warmup_ratio: float
) -> None:
    from transformers import get_cosine_schedule_with_warmup

    from fairsearch.train.trial import stage_lr_factor

    expected = []
    for length in stages:  # a new optimizer and schedule per stage, as a new model would have
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        schedule = get_cosine_schedule_with_warmup(optimizer, int(warmup_ratio * length), length)
        for _ in range(length):
            expected.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step()
    got = [stage_lr_factor(step, stages, warmup_ratio) for step in range(sum(stages))]
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
def test_jtt_s_second_stage_trains_a_new_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At epoch T the weights are the trial's initial ones again, the optimizer holds no state, the
    learning rate starts its second warm-up, and no first-stage model is selected."""
    import fairsearch.train.trial as trial_module

    monkeypatch.setenv("FAIRSEARCH_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    config = TrialConfig(
        method="jtt",
        params={"jtt_epochs": 1, "jtt_up": 5.0},
        epochs=3,
        lr=2e-3,
        warmup_ratio=0.5,  # every stage of 2 or more steps starts at a learning rate of 0
        select="best_worst_group",
        **SMALL,
    )
    seen: dict[int, tuple[dict[str, torch.Tensor], int, float]] = {}
    train_part = trial_module._train_part

    def watch(
        *args: Any,
    ) -> Any:  # (model, feeder, labels, groups, optimizer, schedule, config, loss, order, epoch, …)
        model, optimizer, epoch = args[0], args[4], args[9]
        weights = {k: v.clone() for k, v in model.trainable_state_dict().items()}
        seen[epoch] = (weights, len(optimizer.state), optimizer.param_groups[0]["lr"])
        return train_part(*args)

    monkeypatch.setattr(trial_module, "_train_part", watch)
    collect = _Collect()
    run_trial(config, report=collect)
    assert sorted(seen) == [0, 1, 2]
    initial = seen[0][0]
    weights, optimizer_state, lr = seen[1]
    assert all(torch.equal(weights[k], initial[k]) for k in initial)  # the new model: the initial weights
    assert optimizer_state == 0 and lr == 0.0  # a fresh optimizer, at the start of its own warm-up
    assert seen[0][1] == 0 and seen[2][1] > 0  # (the first stage's was fresh too; the second's fills)
    assert not all(torch.equal(seen[2][0][k], initial[k]) for k in initial)  # and it trains on
    assert [m["selected_epoch"] >= 2.0 for m in collect.metrics[1:]] == [True, True]


def test_jtt_s_first_stage_must_end_before_the_trial_does() -> None:
    with pytest.raises(FairsearchError, match=r"^jtt_epochs: 4 must be < epochs \(4\)$"):
        TrialConfig.from_dict({"method": "jtt", "jtt_epochs": 4, "epochs": 4})
    assert TrialConfig.from_dict({"method": "vanilla", "epochs": 1}).epochs == 1  # another method's default


def test_the_tables_say_when_a_method_trains_without_group_labels() -> None:
    from fairsearch.output.tables import method_settings

    row = {"param/method": "jtt", "param/jtt_epochs": 1, "param/jtt_up": 5.0, "param/lam": 0.3}
    assert method_settings(row) == "jtt_epochs=1 jtt_up=5.0 (no group labels)"
    assert method_settings({"param/method": "group_dro", "param/eta": 0.01}) == "eta=0.01"
