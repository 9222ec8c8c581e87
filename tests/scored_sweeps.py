"""A small sweep whose completed trials saved their scores (``scores.npz``), for the threshold fronts'
tests: results files, the ``pareto`` command and the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fairsearch.judge.fairness import Grouping
from fairsearch.judge.metrics import evaluate_split
from fairsearch.judge.thresholds import SplitScores, TrialScores
from fairsearch.output.results import TrialRecord
from fairsearch.train.checkpoint import SCORES_FILE

GROUP_NAMES = ("Non-Hispanic", "Hispanic", "unknown")
METHODS = ("vanilla", "hybrid", "vanilla", "hybrid", "vanilla")


def _split(rng: np.random.Generator, n: int, bias: float) -> SplitScores:
    """Scores of a model that leans towards 'negative' on the minority (group 1) by ``bias``."""
    group = rng.choice(3, size=n, p=[0.8, 0.15, 0.05])
    label = (rng.random(n) < 0.4).astype(np.int64)
    logit = 2.5 * (2 * label - 1) + rng.normal(0, 1.5, n) - bias * (group == 1)
    return SplitScores(np.round(1 / (1 + np.exp(-logit)), 3), label, group.astype(np.int64))


def split_metrics(scores: TrialScores, split: SplitScores) -> dict[str, float]:
    """The trained model's flat metrics at threshold 0.5, as the trial reports them."""
    grouping = Grouping(scores.group_by, split.group, scores.group_names)
    return evaluate_split(
        split.score, split.label, {scores.group_by: grouping}, primary=scores.group_by
    ).flat()


def write_scored_sweep(
    root: Path, seed: int = 0
) -> tuple[list[TrialRecord], dict[str, dict[str, float]], dict[str, TrialScores]]:
    """Five completed trials (three vanilla, two hybrid) with scores in their checkpoint folders under
    ``root``, and one failed trial.

    Returns:
        ``(records, test metrics by trial id, scores by trial id)``.
    """
    rng = np.random.default_rng(seed)
    records, test, by_trial = [], {}, {}
    for number, method in enumerate(METHODS):
        bias = 1.2 - 0.3 * number
        scores = TrialScores("ethnicity", GROUP_NAMES, _split(rng, 300, bias), _split(rng, 300, bias))
        checkpoint = root / f"ckpt{number}"
        checkpoint.mkdir(parents=True)
        scores.save(checkpoint / SCORES_FILE)
        trial_id = f"t{number}"
        params: dict[str, object] = {"method": method, "lora_rank": 4}
        if method == "hybrid":
            params |= {"lam": 0.2, "w_max": 3.0}
        records.append(
            TrialRecord(trial_id, number, "completed", params, split_metrics(scores, scores.val), 3.0, 10.0,
                        None, str(checkpoint), 1_700_000_000.0 + number)
        )  # fmt: skip
        test[trial_id], by_trial[trial_id] = split_metrics(scores, scores.test), scores
    records.append(TrialRecord("t9", 9, "failed", {"method": "vanilla"}, error="boom"))
    return records, test, by_trial
