"""An export's model card (``README.md``) and its per-group figures (``fairness.json``).

The figures are the exported classifier's on the sweep's test split, from the run's checkpointed test
scores (:data:`fairsearch.train.checkpoint.SCORES_FILE`) and the test split's attributes: accuracy and
predicted-positive rate at the exported thresholds, AUC of the scores, for every group of every attribute
(and the optimised grouping), each with its 95 % interval from :mod:`fairsearch.judge.metrics` and
:mod:`fairsearch.judge.intervals`. ``fairness.json`` holds one record per (metric, slice), as the Model Card
Toolkit writes its performance metrics: ``{metric, value, slice, confidence_interval: {lower_bound,
upper_bound}, n}``. Pure: no model library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fairsearch.export.choice import ExportChoice
from fairsearch.judge.fairness import Grouping
from fairsearch.judge.intervals import proportion_interval
from fairsearch.judge.metrics import GroupingMetrics, SplitMetrics, evaluate_split
from fairsearch.judge.thresholds import NO_GROUP, decisions_at
from fairsearch.methods import METHODS
from fairsearch.output.confirm import SEED_SUFFIXES
from fairsearch.output.tables import fmt_ci, fmt_pct, method_settings
from fairsearch.output.threshold_fronts import GROUPS_AT_INFERENCE, format_thresholds

__all__ = ["USAGE", "TestFigures", "fairness_records", "model_card", "test_figures", "thresholds_record"]

Interval = tuple[float, float] | None

USAGE = """\
import numpy as np
from load import GlaucomaClassifier  # load.py, beside this card: transformers, peft, torch, safetensors

classifier = GlaucomaClassifier(".")  # run from this folder
images = np.load("images.npy")  # uint8 [N, H, W, 3] fundus images (a list of uint8 arrays works too)
p_glaucoma = classifier.predict_proba(images)  # float64 [N]
np.save("scores.npy", p_glaucoma)
"""
"""The card's loading example; the export's test runs it as written, in a process without fairsearch."""
_DECIDE = {
    "none": "decisions = classifier.decide(p_glaucoma)  # 1 = glaucoma: p ≥ 0.5\n",
    "threshold": 'decisions = classifier.decide(p_glaucoma)  # 1 = glaucoma: p ≥ thresholds.json\'s "all"\n',
    "group_thresholds": (
        'groups = open("groups.txt").read().split("\\n")[:len(images)]  # each image\'s group name\n'
        "decisions = classifier.decide(p_glaucoma, groups)  # 1 = glaucoma: p ≥ its group's threshold\n"
    ),
}


@dataclass(frozen=True)
class TestFigures:
    """The exported classifier on the test split.

    Attributes:
        scores: metrics of the scores (their AUCs; accuracy at 0.5).
        decisions: metrics of the decisions at the exported thresholds (accuracy, predicted positives).
        positives: test images decided positive.
    """

    scores: SplitMetrics
    decisions: SplitMetrics
    positives: int


def decisions_of(choice: ExportChoice) -> np.ndarray:
    """The test split's 0/1 decisions at the exported thresholds (``[N]``)."""
    return decisions_at(choice.scores.test, choice.thresholds, choice.scores.group_names)


def test_figures(choice: ExportChoice, groupings: Mapping[str, Grouping]) -> TestFigures:
    """Every attribute's per-group figures on the test split (``groupings`` of its samples, in order)."""
    test, primary = choice.scores.test, choice.config.group_by
    scores = evaluate_split(test.score, test.label, groupings, primary=primary)
    decisions = decisions_of(choice)
    decided = evaluate_split(decisions.astype(np.float64), test.label, groupings, primary=primary, aucs=False)
    return TestFigures(scores, decided, int(decisions.sum()))


def _record(metric: str, value: float, where: str, ci: Interval, n: int) -> dict[str, Any]:
    interval = None if ci is None else {"lower_bound": ci[0], "upper_bound": ci[1]}
    return {"metric": metric, "value": value, "slice": where, "confidence_interval": interval, "n": n}


def _p_pos_ci(p_pos: float, n: int) -> Interval:
    low, high = proportion_interval(round(p_pos * n), n)
    return float(low), float(high)


def fairness_records(figures: TestFigures) -> list[dict[str, Any]]:
    """One record per (metric, slice): overall, each grouping (its gap and worst group), each group."""
    s, d = figures.scores, figures.decisions
    positives = figures.positives
    records = [_record("accuracy", d.acc, "overall", d.acc_ci, d.n)]
    if s.auc is not None:
        records.append(_record("auc", s.auc, "overall", s.auc_ci, s.n))
    records.append(
        _record("predicted_positive_rate", positives / d.n, "overall", _p_pos_ci(positives / d.n, d.n), d.n)
    )
    for name, grouping in d.groupings.items():
        n = sum(m.n for m in grouping.groups)
        records.append(_record("max_acc_gap", grouping.max_acc_gap, name, grouping.max_acc_gap_ci, n))
        if grouping.worst_group_acc is not None:
            records.append(
                _record(
                    "worst_group_accuracy", grouping.worst_group_acc, name, grouping.worst_group_acc_ci, n
                )
            )
        aucs = {m.name: m for m in s.groupings[name].groups}
        for m in grouping.groups:
            where = f"{name}={m.name}"
            records.append(_record("accuracy", m.acc, where, m.acc_ci, m.n))
            if aucs[m.name].auc is not None:
                records.append(_record("auc", float(aucs[m.name].auc), where, aucs[m.name].auc_ci, m.n))  # type: ignore[arg-type]
            records.append(_record("predicted_positive_rate", m.p_pos, where, _p_pos_ci(m.p_pos, m.n), m.n))
    return records


def thresholds_record(choice: ExportChoice) -> dict[str, Any]:
    """``thresholds.json``: the rule, the thresholds (by group name for per-group ones) and their source."""
    source = "the trained model's own rule (argmax of the head's two logits)"
    if choice.threshold_row is not None:
        source = (
            f"the {choice.kind} row of trial {choice.number} on the thresholded fronts of pareto.parquet, "
            "chosen on validation"
        )
    gap_limit = None if choice.threshold_row is None else choice.threshold_row.get("gap_limit")
    return {
        "kind": choice.kind,
        "rule": "glaucoma (1) when p(glaucoma) >= threshold",
        "thresholds": choice.thresholds,
        "group_by": choice.scores.group_by if choice.kind == "group_thresholds" else None,
        "groups": list(choice.scores.group_names) if choice.kind == "group_thresholds" else None,
        "no_group": NO_GROUP if NO_GROUP in choice.thresholds else None,
        "gap_limit": None if gap_limit is None or pd.isna(gap_limit) else float(gap_limit),
        "source": source,
    }


def _ci(value: float | None, ci: Interval) -> str:
    if value is None:
        return "-"
    return fmt_pct(value) if ci is None else f"{fmt_pct(value)} [{fmt_pct(ci[0])}, {fmt_pct(ci[1])}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _grouping_section(decided: GroupingMetrics, scored: GroupingMetrics) -> list[str]:
    aucs = {m.name: m for m in scored.groups}
    rows = [
        [m.name, str(m.n), _ci(m.acc, m.acc_ci), _ci(aucs[m.name].auc, aucs[m.name].auc_ci),
         _ci(m.p_pos, _p_pos_ci(m.p_pos, m.n))]
        for m in decided.groups
    ]  # fmt: skip
    lines = [f"**{decided.name}**", ""]
    lines += _table(["group", "n", "accuracy", "AUC", "predicted positive"], rows)
    worst = f", worst group {decided.worst_group} {_ci(decided.worst_group_acc, decided.worst_group_acc_ci)}"
    lines += [
        "",
        f"MaxAccGap {_ci(decided.max_acc_gap, decided.max_acc_gap_ci)}{worst if decided.worst_group else ''}",
        "",
    ]
    return lines


def _metadata(
    choice: ExportChoice, figures: TestFigures, base_hub_id: str | None, name: str
) -> dict[str, Any]:
    d, s, primary = figures.decisions, figures.scores, choice.config.group_by
    g = d.groupings[primary]
    metrics = [{"type": "accuracy", "name": "test accuracy", "value": round(d.acc, 6)}]
    if s.auc is not None:
        metrics.append({"type": "roc_auc", "name": "test AUC", "value": round(s.auc, 6)})
    metrics.append(
        {"type": "max_acc_gap", "name": f"test MaxAccGap ({primary})", "value": round(g.max_acc_gap, 6)}
    )
    if g.worst_group_acc is not None:
        metrics.append({"type": "worst_group_accuracy", "name": f"test worst-group accuracy ({primary})",
                        "value": round(g.worst_group_acc, 6)})  # fmt: skip
    meta: dict[str, Any] = {"library_name": "peft"}
    if base_hub_id is not None:
        meta |= {"base_model": base_hub_id, "base_model_relation": "adapter"}
    dataset = choice.config.data or "fairsearch built-in synthetic fundus set"
    meta |= {
        "pipeline_tag": "image-classification",
        "tags": ["fairsearch", "lora", "qwen2_5_vl", "glaucoma", "fairness"],
        "model-index": [{"name": name, "results": [{
            "task": {"type": "image-classification", "name": "glaucoma detection"},
            "dataset": {"name": str(dataset), "type": "fundus", "split": "test"},
            "metrics": metrics,
        }]}],
    }  # fmt: skip
    return meta


def _front_lines(choice: ExportChoice, front_sizes: Mapping[str, int]) -> list[str]:
    if choice.fronts.empty:
        return [
            f"Trial {choice.number} is on no front of `pareto.parquet`: other trials dominate it on validation.",
            "",
        ]
    rows = [
        [str(r["front"]), str(r.get("kind") if pd.notna(r.get("kind")) else "trained"), format_thresholds(r),
         fmt_ci(r, "val/acc"), fmt_ci(r, "val/max_acc_gap"), fmt_ci(r, "test/acc"), fmt_ci(r, "test/max_acc_gap"),
         f"{front_sizes.get(str(r['front']), 0)}"]
        for _, r in choice.fronts.iterrows()
    ]  # fmt: skip
    lines = [f"Trial {choice.number}'s rows on the fronts of `pareto.parquet` (in %, 95 % intervals):", ""]
    return lines + _table(["front", "kind", "thresholds", "val acc", "val MaxAccGap", "test acc", "test MaxAccGap", "front size"], rows) + [""]  # fmt: skip


def _confirmation_lines(choice: ExportChoice) -> list[str]:
    c = choice.confirmed
    lines = []
    if choice.confirmation:
        lines.append(f"This export is trial {choice.number}'s confirmation run with seed {choice.seed}.")
    if c is None:
        return [
            *lines,
            f"Trial {choice.number} has no row on a confirmed front: its figures are of one seed, and a front "
            "picked from single-seed validation estimates favours lucky draws (`confirm: {seeds: K}`).",
            "",
        ]
    lines += [f"Trained with {int(c['n_seeds'])} seeds ({c['seeds']}); means over the seeds with 95 % across-seed "
              "t-intervals, in %:", ""]  # fmt: skip
    rows = []
    for metric in ("acc", "max_acc_gap", "worst_group_acc", "auc"):
        cells = [metric]
        for split in ("val", "test"):
            key = f"{split}/{metric}"
            low, high = c.get(key + SEED_SUFFIXES[0]), c.get(key + SEED_SUFFIXES[1])
            ci = None if low is None or pd.isna(low) else (float(low), float(high))
            cells.append(_ci(None if pd.isna(c.get(key)) else float(c[key]), ci))
        rows.append(cells)
    lines += _table(["metric", "validation", "test"], rows)
    shift = ", ".join(
        f"{m} {100 * float(c[f'shift/{m}']):+.1f}"
        for m in ("acc", "max_acc_gap")
        if pd.notna(c.get(f"shift/{m}"))
    )
    return [*lines, "", f"Validation → test shift of the means (points): {shift}.", ""]


def model_card(
    choice: ExportChoice,
    figures: TestFigures,
    *,
    base: str,
    base_hub_id: str | None,
    prompt: str,
    front_sizes: Mapping[str, int],
) -> str:
    """The export's ``README.md``: Hub metadata, use, thresholds, per-group table, front, confirmation,
    training and limits.

    Args:
        choice: what is exported.
        figures: its test figures.
        base: how the card names the base model (a hub id, a folder, or the export's ``base_model/``).
        base_hub_id: the base model's hub id, for the metadata; None for a folder or the tiny model.
        prompt: the question asked with every image.
        front_sizes: rows of each front of ``pareto.parquet``.
    """
    cfg, d, primary = choice.config, figures.decisions, choice.config.group_by
    seed_part = f"-seed-{choice.seed}" if choice.confirmation else ""
    name = f"fairsearch-{choice.folder.name}-trial-{choice.number}{seed_part}"
    meta = yaml.safe_dump(_metadata(choice, figures, base_hub_id, name), sort_keys=False, allow_unicode=True)
    params = {f"param/{k}": v for k, v in cfg.method_params.items()}
    settings = method_settings({"param/method": cfg.method, **params})
    rule = "p(glaucoma) ≥ 0.5, the trained model's own rule"
    if choice.threshold_row is not None:
        rule = f"{choice.kind}, p(glaucoma) ≥ {format_thresholds(choice.threshold_row)}"
        if len(choice.other_rows):
            others = "; ".join(format_thresholds(r) for _, r in choice.other_rows.iterrows())
            met = " meeting the sweep's constraints" if choice.constraints else ""
            rule += (
                f" (the most accurate on validation of the trial's {len(choice.other_rows) + 1} rows of this "
                f"kind{met}; the others: {others})"
            )
    data = (
        f"the Harvard-FairVLMed folder `{cfg.data}`"
        if cfg.data
        else f"fairsearch's built-in synthetic fundus set ({cfg.synthetic_n or 'default size'}, seed 0)"
    )
    out = ["---", meta.rstrip(), "---", "", f"# {name}", ""]
    out += [
        f"A glaucoma classifier from the fairsearch sweep `{choice.folder.name}`, trial {choice.number} "
        f"(seed {choice.seed}): {base} with a LoRA adapter (PEFT format: `adapter_config.json`, "
        "`adapter_model.safetensors`) on the language model's attention, and a linear head "
        "(`head.safetensors`: `weight` [2, hidden], `bias` [2]) on the final hidden state of the last "
        "non-padding token; p(glaucoma) is the softmax of its two logits' second. "
        f"Decision: {rule} (`thresholds.json`).",
        "",
        "## Use",
        "",
        "Needs transformers, peft, torch, safetensors and numpy, not fairsearch. From this folder:",
        "",
        "```python",
        USAGE + _DECIDE[choice.kind].rstrip(),
        "```",
        "",
        "`load.py` builds each image's inputs as fairsearch does: the chat template renders one user message "
        f'(the image, then "{prompt}"; `classifier.json`), its one `<|image_pad|>` is repeated once per '
        "merged patch of the resized image, `mm_token_type_ids` marks those tokens, and batches are padded "
        "on the right. `python load.py . images.npy scores.npy` does the same from the shell.",
        "",
        f"## Test split, per group ({d.n} images)",
        "",
        "Accuracy and predicted-positive rate at the exported thresholds, AUC of the scores; in %, with 95 % "
        "intervals. The same figures are in `fairness.json`.",
        "",
        f"Overall: accuracy {_ci(d.acc, d.acc_ci)}, AUC {_ci(figures.scores.auc, figures.scores.auc_ci)}.",
        "",
    ]
    for grouping_name, grouping in d.groupings.items():
        out += _grouping_section(grouping, figures.scores.groupings[grouping_name])
    out += ["## Where it sits on the front", "", *_front_lines(choice, front_sizes)]
    out += ["## Confirmation", "", *_confirmation_lines(choice)]
    method = METHODS[cfg.method]
    alpha = cfg.lora_alpha if cfg.lora_alpha is not None else 2.0 * cfg.lora_rank
    selected = (
        f"the model of epoch {choice.selected_epoch:g}" if cfg.select != "last" else "the last epoch's model"
    )
    out += [
        "## Training",
        "",
        f"- data: {data}; train, validation and test splits; groups of `{primary}` optimised",
        f"- method: {cfg.method} ({method.summary}); {settings if settings != '-' else 'no method settings'}",
        f"- LoRA r {cfg.lora_rank}, alpha {alpha:g}, dropout {cfg.lora_dropout:g} on q/k/v/o of every language-model "
        f"layer; vision tower and language model frozen; lr {cfg.lr:g}, {cfg.epochs} epochs, batch {cfg.batch_size}, "
        f"seed {choice.seed}; select `{cfg.select}`: {selected}",
        f"- base model: {base}",
        "",
        "## Limits",
        "",
        f"- {GROUPS_AT_INFERENCE}",
        "- Intervals are 95 % ones for this one model on this test split: exact Clopper–Pearson per accuracy and "
        "predicted-positive rate, MOVER for MaxAccGap, DeLong ∪ Newcombe for AUC. They hold the test split's "
        "sampling noise only: not the choice of this trial among a sweep's (validation-selected), nor a new "
        "seed's run (the confirmation's across-seed intervals speak to that), nor data from elsewhere.",
        "- Thresholds were chosen on the validation split; a population with other group sizes or disease "
        "rates shifts them.",
        "- A research artefact of a hyperparameter search, not a medical device.",
        "",
    ]
    return "\n".join(out)
