"""One trial, top to bottom: data → model → fit → evaluate → report and checkpoint, once per epoch
(or ``reports_per_epoch`` times).

``run_trial`` knows nothing of Optuna or Ray: it takes a ``report(metrics, checkpoint_dir)`` function
(Ray Tune's in a sweep, a folder writer for ``fairsearch train``) and an optional checkpoint folder to
resume from. A resumed trial continues exactly where it stopped: the data order of an epoch depends only
on (seed, epoch), and the checkpoint holds the LoRA adapter, the head, the optimizer, the learning-rate
schedule and the RNG states.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from transformers import get_cosine_schedule_with_warmup

from fairsearch.bounded import STATE_MAX_BYTES, read_json
from fairsearch.data import ATTRIBUTE_VALUES, ATTRIBUTES, Split, builtin_synthetic, load_fairvlmed
from fairsearch.errors import FairsearchError
from fairsearch.judge.fairness import Grouping, encode_groups
from fairsearch.judge.metrics import evaluate_split
from fairsearch.judge.thresholds import SplitScores, TrialScores
from fairsearch.methods import Loss, StatefulLoss, TrainingGroups
from fairsearch.model import (
    Backbone,
    GlaucomaClassifier,
    InputBuilder,
    VisionCache,
    build_classifier,
    load_backbone,
    parameter_counts,
)
from fairsearch.spec.config import SELECTIONS, TrialConfig, check_reports_per_epoch, steps_per_epoch
from fairsearch.train.checkpoint import (
    FEATURES_FILE,
    SCORES_FILE,
    STATE_FILE,
    TEST_METRICS_FILE,
    write_manifest,
)

logger = logging.getLogger(__name__)

Report = Callable[[dict[str, float], Path], None]

SELECTED_FILE = "selected.pt"
"""In a checkpoint whose ``select`` picked an earlier report: that report's trainable weights."""

METHOD_STATE_FILE = "method_state.pt"
"""In a checkpoint: the state of a method's loss that learns as it goes (group DRO's group weights)."""


@dataclass
class TrialTimes:
    """Where a trial's wall time went, in seconds."""

    setup: float = 0.0
    train: float = 0.0
    evaluate: float = 0.0
    checkpoint: float = 0.0
    total: float = 0.0
    train_samples: int = 0

    @property
    def samples_per_s(self) -> float:
        """Training samples per second of training-step time."""
        return self.train_samples / self.train if self.train > 0 else 0.0


@dataclass
class TrialResult:
    """What a finished trial returns: its last validation and test metrics and its timing."""

    val: dict[str, float]
    test: dict[str, float]
    times: TrialTimes
    trainable_params: int
    total_params: int
    epochs_done: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


class SplitFeeder:
    """Batches of one split as model inputs, with image embeddings from the vision cache when enabled."""

    def __init__(
        self, split: Split, backbone: Backbone, builder: InputBuilder, cache: VisionCache | None
    ) -> None:
        self.split = split
        self.builder = builder
        self.embeddings = cache.embeddings(backbone, builder, split) if cache is not None else None

    def __len__(self) -> int:
        return len(self.split)

    def batch(
        self, indices: torch.Tensor, device: torch.device
    ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor] | None]:
        """Model inputs for the samples ``indices`` (and their cached image embeddings, if any)."""
        idx = [int(i) for i in indices]
        if self.embeddings is not None:
            inputs = self.builder.text_inputs(self.embeddings.grids(idx))
            return {k: v.to(device) for k, v in inputs.items()}, [e.to(device) for e in self.embeddings[idx]]
        inputs = self.builder.collate([self.split.image(i) for i in idx])
        return {k: v.to(device) for k, v in inputs.items()}, None


def load_splits(config: TrialConfig) -> dict[str, Split]:
    """The data a config names: a FairVLMed folder, or the built-in synthetic set."""
    if config.data is not None:
        return load_fairvlmed(config.data)
    root = builtin_synthetic(seed=0) if config.synthetic_n is None else builtin_synthetic(config.synthetic_n)
    return load_fairvlmed(root)


def groupings_for(split: Split, primary: str, exclude_unknown: bool) -> dict[str, Grouping]:
    """Every single-attribute grouping, plus the primary one when it is an intersection."""
    names = list(dict.fromkeys([*ATTRIBUTES, primary]))
    return {
        name: encode_groups(split.attributes, name, ATTRIBUTE_VALUES, exclude_unknown=exclude_unknown)
        for name in names
    }


def _check_groups_trained(
    splits: Mapping[str, Split], groupings: Mapping[str, Mapping[str, Grouping]], primary: str
) -> None:
    train = groupings["train"][primary].counts()
    for name in ("val", "test"):
        counts = groupings[name][primary].counts()
        missing = [groupings[name][primary].names[g] for g in np.flatnonzero((counts > 0) & (train == 0))]
        if missing:
            raise FairsearchError(
                f"group_by {primary!r}: groups {missing} have {name} samples but no training samples in "
                f"{splits['train'].paths[0].parent if splits['train'].paths else 'the training split'}; "
                f"choose another grouping or set exclude_unknown"
            )


def run_trial(
    config: TrialConfig,
    *,
    report: Report,
    resume_from: Path | None = None,
    staging: Path | None = None,
    device: str | torch.device | None = None,
    cache_root: Path | None = None,
    progress: bool = False,
) -> TrialResult:
    """Fine-tunes one configuration and reports validation metrics and a checkpoint after every epoch
    (every ``1 / config.reports_per_epoch`` of one).

    Args:
        config: the trial's settings.
        report: called after each epoch (or part) with the flat validation metrics (plus ``epoch``, ``loss``,
            ``train_loss``) and a folder holding the checkpoint; the folder is removed afterwards. The
            test split is evaluated once, for the last report: only that checkpoint holds its metrics.
        resume_from: a checkpoint folder written by an earlier call; training continues after its epoch.
        staging: the folder each checkpoint is written into before ``report`` is called, emptied and made
            anew for each (a sweep's is in the trial's own store, ``fairsearch train``'s in its ``--out``);
            None: a new folder in the system's temp folder each time.
        device: where to train; default CUDA when available.
        cache_root: the vision cache's folder (default: the cache's own, shared by the node's trials).
        progress: show a progress bar (``fairsearch train``).

    Returns:
        The last epoch's metrics and where the time went.

    Raises:
        FairsearchError: bad settings, bad data, or a loss that is not finite.
    """
    t_start = time.perf_counter()
    times = TrialTimes()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    _seed_everything(config.seed)

    splits = load_splits(config)
    groupings = {
        name: groupings_for(s, config.group_by, config.exclude_unknown) for name, s in splits.items()
    }
    _check_groups_trained(splits, groupings, config.group_by)
    backbone = load_backbone(config.model, device=dev)
    builder = InputBuilder(backbone.tokenizer, backbone.image_processor, max_pixels=config.max_pixels)
    cache = VisionCache(cache_root) if config.vision_cache else None
    feeders = {name: SplitFeeder(split, backbone, builder, cache) for name, split in splits.items()}

    torch.manual_seed(config.seed)
    model = build_classifier(
        backbone,
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha if config.lora_alpha is not None else 2.0 * config.lora_rank,
        lora_dropout=config.lora_dropout,
        gradient_checkpointing=config.gradient_checkpointing,
    )
    trainable, total = parameter_counts(model)  # build_classifier has logged them

    train_grouping = groupings["train"][config.group_by]
    train_groups = torch.as_tensor(train_grouping.ids)
    training = TrainingGroups(train_grouping.counts(), dev, train_grouping.ids)
    loss_fn = config.method_spec.make_loss(training, config.method_params)
    draw_order = config.method_spec.draw_order
    before_epoch = config.method_spec.before_epoch

    def epoch_order(epoch: int) -> torch.Tensor:
        """The training samples of an epoch in their order, fixed by (seed, epoch)."""
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        if draw_order is None:
            return torch.randperm(len(feeders["train"]), generator=generator)
        return draw_order(training, config.method_params, generator, loss_fn)

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.lr, weight_decay=config.weight_decay
    )
    n_train = len(feeders["train"])
    check_reports_per_epoch(n_train, config.batch_size, config.grad_accum, config.reports_per_epoch)
    epoch_steps = steps_per_epoch(n_train, config.batch_size, config.grad_accum)
    restart = config.method_spec.restart
    restart_at = restart(config.method_params) if restart is not None else None
    initial = _snapshot(model) if restart_at is not None else None  # the new model's weights, before any
    if restart_at is None:
        total_steps = epoch_steps * config.epochs
        schedule = get_cosine_schedule_with_warmup(
            optimizer, int(config.warmup_ratio * total_steps), total_steps
        )
    else:  # each stage its own warm-up and decay
        stages = (epoch_steps * restart_at, epoch_steps * (config.epochs - restart_at))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: stage_lr_factor(step, stages, config.warmup_ratio)
        )

    history: list[dict[str, float]] = []  # one validation report per part of an epoch trained
    selection = _Selection(SELECTIONS[config.select])
    if resume_from is not None:
        history = _load_checkpoint(resume_from, model, optimizer, schedule, config, loss_fn)
        logger.info("resumed from %s after epoch %s", resume_from, history[-1]["epoch"] if history else 0)
        if history:
            selection.resume(history[-1], model, resume_from / SELECTED_FILE)
    times.setup = time.perf_counter() - t_start

    labels = {name: torch.as_tensor(s.labels) for name, s in splits.items()}
    val: dict[str, float] = history[-1] if history else {}
    test: dict[str, float] = {}
    parts = config.reports_per_epoch
    for done in range(len(history), config.epochs * parts):
        epoch, part = divmod(done, parts)
        if part == 0 and before_epoch is not None:

            def train_correct() -> np.ndarray:
                _, prob, _ = _evaluate(
                    model, feeders["train"], labels["train"], groupings["train"], config, dev
                )
                return (prob >= 0.5) == splits["train"].labels.astype(bool)

            before_epoch(loss_fn, epoch, config.method_params, train_correct)
        if part == 0 and epoch == restart_at and initial is not None:
            model.load_trainable_state_dict(initial)
            optimizer.state.clear()  # AdamW's moments and step counts: a fresh optimizer's
            selection = _Selection(SELECTIONS[config.select])  # the first stage's models are not candidates
            logger.info("epoch %d: training starts over as a new model (%s)", epoch, config.method)
        t0 = time.perf_counter()
        train_loss, trained = _train_part(
            model,
            feeders["train"],
            labels["train"],
            train_groups,
            optimizer,
            schedule,
            config,
            loss_fn,
            epoch_order(epoch),
            epoch,
            part,
            dev,
            progress,
        )
        times.train += time.perf_counter() - t0
        times.train_samples += trained

        t0 = time.perf_counter()
        progress_epochs = epoch + (part + 1) / parts
        last = done == config.epochs * parts - 1
        keep = last and config.refit_last_layer  # the final model's features, for the last-layer refit
        val, val_prob, val_x = _evaluate(
            model, feeders["val"], labels["val"], groupings["val"], config, dev, keep
        )
        val.update(epoch=float(progress_epochs), train_loss=train_loss, selected_epoch=float(progress_epochs))
        reported = selection.update(val, model)  # the selected model's metrics, this epoch's progress
        scores, features = None, {}
        if last:  # the test split once, at the report that ends the trial
            if selection.restore(model, progress_epochs):  # an earlier report was selected: its model
                _, val_prob, val_x = _evaluate(
                    model, feeders["val"], labels["val"], groupings["val"], config, dev, keep
                )
                logger.info("selected the model of epoch %g (%s)", reported["selected_epoch"], config.select)
            test, test_prob, test_x = _evaluate(
                model, feeders["test"], labels["test"], groupings["test"], config, dev, keep
            )
            scores = _trial_scores(splits, groupings, config.group_by, {"val": val_prob, "test": test_prob})
            if val_x is not None and test_x is not None:
                features = {"val_features": val_x, "test_features": test_x}
        times.evaluate += time.perf_counter() - t0
        history.append(reported)
        logger.info(
            "epoch %s/%d: train loss %.4f, val acc %.4f, val MaxAccGap(%s) %.4f",
            f"{progress_epochs:g}",
            config.epochs,
            train_loss,
            val["acc"],
            config.group_by,
            val["max_acc_gap"],
        )

        t0 = time.perf_counter()
        folder = _staging_folder(staging)
        try:
            _save_checkpoint(
                folder,
                model,
                optimizer,
                schedule,
                progress_epochs,
                history,
                test,
                config,
                scores,
                loss_fn,
                features,
            )
            if not test:  # mid-trial: an earlier selected model waits beside the current one
                selection.save(folder / SELECTED_FILE, progress_epochs)
            times.checkpoint += time.perf_counter() - t0
            report(reported, folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    times.total = time.perf_counter() - t_start
    final = history[-1] if history else {}
    return TrialResult(
        final, test, times, trainable, total, epochs_done=float(final.get("epoch", 0.0)), history=history
    )


def _staging_folder(staging: Path | None) -> Path:
    """An empty folder to write a checkpoint into: ``staging`` emptied (a killed writer may have left
    files there), or a new one in the system's temp folder."""
    if staging is None:
        return Path(tempfile.mkdtemp(prefix="fairsearch-ckpt-"))
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def stage_lr_factor(step: int, stages: tuple[int, ...], warmup_ratio: float) -> float:
    """The learning rate's factor at optimizer ``step`` of a trial trained in ``stages`` (their steps), each
    stage a new model with its own schedule: a linear warm-up over ``warmup_ratio`` of the stage, then a
    cosine decay to 0 at its end (``transformers.get_cosine_schedule_with_warmup``'s, stage by stage)."""
    length = stages[-1]
    for i, length in enumerate(stages):  # the stage the step falls in (the last for any step beyond)
        if step < length or i == len(stages) - 1:
            break
        step -= length
    warmup = int(warmup_ratio * length)
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, length - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


class _Selection:
    """Which report stands for the trial (``select``): the model with the best validation ``key`` so far
    (the earliest on ties; NaN never wins), or with ``key`` ``None`` always the latest.

    Every report carries the selected model's validation metrics with this report's ``epoch`` and
    ``train_loss``, and ``selected_epoch`` saying whose they are. The selected model's trainable weights
    are copied (to the CPU) when it is selected, so that training on does not lose them.
    """

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.metrics: dict[str, float] | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, val: dict[str, float], model: GlaucomaClassifier) -> dict[str, float]:
        """Takes this report's metrics; returns what to report."""
        best = self.metrics
        if self.key is None or best is None or _better(val.get(self.key), best.get(self.key)):
            self.metrics = val
            if self.key is not None:
                self.state = _snapshot(model)
            return val
        return {**best, "epoch": val["epoch"], "train_loss": val["train_loss"]}

    def restore(self, model: GlaucomaClassifier, epoch: float) -> bool:
        """Loads the selected weights into ``model`` when they are not those of ``epoch``; returns whether."""
        if self.state is None or self.metrics is None or self.metrics["selected_epoch"] == epoch:
            return False
        model.load_trainable_state_dict(self.state)
        return True

    def save(self, path: Path, epoch: float) -> None:
        """Writes the selected weights beside the checkpoint of ``epoch`` when they are not its own."""
        if self.state is not None and self.metrics is not None and self.metrics["selected_epoch"] != epoch:
            torch.save(self.state, path)

    def resume(self, last: dict[str, float], model: GlaucomaClassifier, path: Path) -> None:
        """Takes up the selection of a checkpoint whose last report is ``last`` (its weights loaded)."""
        if self.key is None:
            return
        self.metrics = dict(last)
        if last.get("selected_epoch", last["epoch"]) == last["epoch"]:
            self.state = _snapshot(model)
        else:
            self.state = torch.load(path, map_location="cpu", weights_only=True)


def _snapshot(model: GlaucomaClassifier) -> dict[str, torch.Tensor]:
    """A copy of the model's trainable weights that training on does not change."""
    return {k: v.clone() for k, v in model.trainable_state_dict().items()}  # already detached, on the CPU


def _better(value: float | None, best: float | None) -> bool:
    """``value`` beats ``best`` (NaN or missing loses to any number, ties keep ``best``)."""
    if value is None or math.isnan(value):
        return False
    return best is None or math.isnan(best) or value > best


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _batches(n: int, batch_size: int, order: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    idx = order if order is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield idx[start : start + batch_size]


def _part_bounds(n_batches: int, grad_accum: int, parts: int) -> list[int]:
    """Batch indices where each of ``parts`` shares of an epoch starts (and the last one ends): equal
    shares of its optimizer steps, so that a part never ends inside a gradient accumulation."""
    steps = math.ceil(n_batches / grad_accum)
    return [min((i * steps) // parts * grad_accum, n_batches) for i in range(parts + 1)]


def _train_part(
    model: GlaucomaClassifier,
    feeder: SplitFeeder,
    labels: torch.Tensor,
    groups: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    config: TrialConfig,
    loss_fn: Loss,
    order: torch.Tensor,
    epoch: int,
    part: int,
    device: torch.device,
    progress: bool,
) -> tuple[float, int]:
    """One of ``config.reports_per_epoch`` shares of an epoch, the training samples ``order`` (as many
    as the split holds; fixed by (seed, epoch)); returns the mean loss and the number of samples."""
    model.train()
    batches = list(_batches(len(order), config.batch_size, order))
    bounds = _part_bounds(len(batches), config.grad_accum, config.reports_per_epoch)
    start, end = bounds[part], bounds[part + 1]
    total, count = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    label = f"epoch {epoch + 1}/{config.epochs}"
    if config.reports_per_epoch > 1:
        label += f", part {part + 1}/{config.reports_per_epoch}"
    bar = _progress_bar(end - start, label) if progress else None
    for step in range(start, end):
        idx = batches[step]
        inputs, embeds = feeder.batch(idx, device)
        logits = model(inputs, image_embeds=embeds)
        loss = loss_fn(logits, labels[idx].to(device), groups[idx].to(device))
        value = loss.item()  # one wait for the device per step, for the check and the running mean
        if not math.isfinite(value):
            settings = {"lr": config.lr, **config.method_params}
            raise FairsearchError(
                f"loss is {value} at epoch {epoch + 1}, step {step + 1} (method {config.method}, "
                + ", ".join(f"{k} {v}" for k, v in settings.items())
                + f"): training diverged; lower {' or '.join(settings)}"
            )
        (loss / config.grad_accum).backward()
        if (step + 1) % config.grad_accum == 0 or step + 1 == len(batches):
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
        total += value * len(idx)
        count += len(idx)
        if bar is not None:
            bar.advance(f"loss {total / count:.4f}")
    if bar is not None:
        bar.close()
    return total / max(count, 1), count


@torch.no_grad()
def _evaluate(
    model: GlaucomaClassifier,
    feeder: SplitFeeder,
    labels: torch.Tensor,
    groupings: Mapping[str, Grouping],
    config: TrialConfig,
    device: torch.device,
    keep_features: bool = False,
) -> tuple[dict[str, float], np.ndarray, np.ndarray | None]:
    """Flat metrics of one split (``fairsearch.judge.fairness`` keys) plus the mean cross-entropy ``loss``,
    each sample's p(positive) that they were measured from, and with ``keep_features`` the last-token
    features the head read (float32 ``[N, hidden]``; else ``None``)."""
    model.eval()
    probs, losses, kept = [], [], []
    for idx in _batches(len(feeder), config.eval_batch_size):
        inputs, embeds = feeder.batch(idx, device)
        features = model.features(inputs, image_embeds=embeds)
        logits = model.head(features).float()
        if keep_features:
            kept.append(features.cpu())
        losses.append(
            torch.nn.functional.cross_entropy(logits, labels[idx].to(device), reduction="sum").item()
        )
        probs.append(torch.softmax(logits, dim=-1)[:, 1].cpu())
    prob = torch.cat(probs).numpy()
    metrics = evaluate_split(
        prob, labels.numpy(), groupings, primary=config.group_by, n_boot=config.n_boot, seed=config.seed
    ).flat()
    metrics["loss"] = sum(losses) / len(feeder)
    return metrics, prob, torch.cat(kept).numpy().astype(np.float32) if keep_features else None


def _save_checkpoint(
    folder: Path,
    model: GlaucomaClassifier,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    epoch: float,
    history: list[dict[str, float]],
    test: Mapping[str, float],
    config: TrialConfig,
    scores: TrialScores | None = None,
    loss_fn: Loss | None = None,
    features: Mapping[str, np.ndarray] | None = None,
) -> None:
    torch.save(model.trainable_state_dict(), folder / "trainable.pt")
    if isinstance(loss_fn, StatefulLoss):  # a loss that learns as it goes (group DRO's weights)
        torch.save(loss_fn.state_dict(), folder / METHOD_STATE_FILE)
    torch.save(
        {"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, folder / "optimizer.pt"
    )
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    torch.save(rng, folder / "rng.pt")
    kind, keys, pos, has_gauss, gauss = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    state = {
        "epoch": epoch,
        "history": history,
        "config": config.as_dict(),
        "backbone": model.backbone_fingerprint,
        "rng": {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]},
    }
    (folder / STATE_FILE).write_text(json.dumps(state, default=str))
    if test:
        (folder / TEST_METRICS_FILE).write_text(json.dumps(dict(test)))
    if scores is not None:
        scores.save(folder / SCORES_FILE)
    if features:
        np.savez(folder / FEATURES_FILE, allow_pickle=False, **features)
    write_manifest(folder)


def _trial_scores(
    splits: Mapping[str, Split],
    groupings: Mapping[str, Mapping[str, Grouping]],
    group_by: str,
    probs: Mapping[str, np.ndarray],
) -> TrialScores:
    """The validation and test scores for the checkpoint's ``scores.npz``, grouped as the objective is."""
    per_split = {
        name: SplitScores(
            prob.astype(np.float64), splits[name].labels.astype(np.int64), groupings[name][group_by].ids
        )
        for name, prob in probs.items()
    }
    return TrialScores(group_by, groupings["val"][group_by].names, per_split["val"], per_split["test"])


def _load_checkpoint(
    folder: Path,
    model: GlaucomaClassifier,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    config: TrialConfig,
    loss_fn: Loss | None = None,
) -> list[dict[str, float]]:
    """Loads a checkpoint into the model, optimizer and schedule; returns its report history (one entry
    per part of an epoch trained, so its length is where training goes on)."""
    try:
        state = read_json(folder / STATE_FILE, STATE_MAX_BYTES)
        saved_parts = int(state["config"].get("reports_per_epoch", 1))
        # refused before any weights or optimizer state are read (a 7B adapter's AdamW state is large)
        if state.get("backbone") != model.backbone_fingerprint:
            raise FairsearchError(
                f"{folder}: trained on backbone {state.get('backbone')}, resumed on "
                f"{model.backbone_fingerprint} (another model, revision or weights file)"
            )
        if saved_parts != config.reports_per_epoch:
            raise FairsearchError(
                f"{folder}: written with reports_per_epoch {saved_parts}, resumed with {config.reports_per_epoch}"
            )
        model.load_trainable_state_dict(
            torch.load(folder / "trainable.pt", map_location="cpu", weights_only=True)
        )
        opt = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
        rng = torch.load(folder / "rng.pt", map_location="cpu", weights_only=True)
        if isinstance(loss_fn, StatefulLoss):
            loss_fn.load_state_dict(
                torch.load(folder / METHOD_STATE_FILE, map_location="cpu", weights_only=True)
            )
    except (OSError, ValueError, KeyError, RuntimeError, AttributeError) as err:
        raise FairsearchError(f"{folder}: not a fairsearch checkpoint ({err})") from None
    optimizer.load_state_dict(opt["optimizer"])
    schedule.load_state_dict(opt["schedule"])
    version, internal, gauss = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["rng"]["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(rng["cuda"]))
    return list(state["history"])


class _progress_bar:
    """A rich progress bar for one epoch (``fairsearch train``)."""

    def __init__(self, total: int, description: str) -> None:
        from rich.progress import Progress

        self._progress = Progress(transient=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, status: str) -> None:
        self._progress.update(self._task, advance=1, description=status)

    def close(self) -> None:
        self._progress.stop()
