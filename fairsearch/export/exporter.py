"""``fairsearch export``: one run of a sweep as a folder that plain transformers + peft load.

Everything is read and checked first (the run and its thresholds, :mod:`fairsearch.export.choice`;
``--out``; the test split against the run's scores; the base model and the weights), then the export is
built in a temporary folder beside ``--out`` and renamed into place: a refused or failed export writes
nothing. The folder:

==============================  ===========================================================================
``adapter_config.json``,        the LoRA adapter in PEFT's format (:mod:`fairsearch.export.weights`)
``adapter_model.safetensors``
``head.safetensors``            the linear head on the last token's hidden state
tokenizer and processor files   the base model's, the image size bounds the trial used
``base_model/``                 the built-in tiny model only: the base model itself
``classifier.json``             base model, prompt, how the score is read
``thresholds.json``             the decision rule: one threshold, or one per group with the group names
``README.md``                   the model card (:mod:`fairsearch.export.card`)
``fairness.json``               the card's per-group figures, one record per metric and slice
``load.py``                     the loader, without fairsearch (:mod:`fairsearch.export.standalone`)
==============================  ===========================================================================
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from importlib import resources
from pathlib import Path

import numpy as np

from fairsearch.errors import FairsearchError
from fairsearch.export.card import fairness_records, model_card, test_figures, thresholds_record
from fairsearch.export.choice import choose_export
from fairsearch.export.standalone import THRESHOLDS_FILE
from fairsearch.export.weights import load_export_model, write_model_files
from fairsearch.folders import check_writable_folder
from fairsearch.train.trial import groupings_for, load_splits

__all__ = ["FAIRNESS_FILE", "LOADER_FILE", "THRESHOLDS_FILE", "export_run"]

logger = logging.getLogger(__name__)

FAIRNESS_FILE = "fairness.json"
LOADER_FILE = "load.py"


def check_out(out: Path) -> None:
    """Refuses an ``--out`` that is a file, a non-empty folder, or in a folder this user cannot write."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise FairsearchError(f"--out {out}: it is a file; give a new or empty folder")
    if out.is_dir() and any(out.iterdir()):
        raise FairsearchError(f"--out {out}: the folder is not empty; give a new or empty folder")
    check_writable_folder(out, f"--out {out}")


def export_run(
    folder: str | Path, trial: int, out: str | Path, *, seed: int | None = None, thresholds: str = "none"
) -> Path:
    """Exports trial ``trial`` of the sweep in ``folder`` (its run with ``seed``) to ``out``.

    Args:
        folder: ``results/<name>``.
        trial: the trial number.
        out: a new or empty folder.
        seed: a seed of the trial's runs (its own or a confirmation run's); None: its own run.
        thresholds: ``none``, ``single`` or ``group``.

    Returns:
        ``out``.

    Raises:
        FairsearchError: anything refused; nothing is written then.
    """
    out = Path(out)
    check_out(out)
    choice = choose_export(folder, trial, seed, thresholds)
    test = load_splits(choice.config)["test"]
    groupings = groupings_for(test, choice.config.group_by, choice.config.exclude_unknown)
    primary = groupings[choice.config.group_by]
    if not (
        np.array_equal(test.labels, choice.scores.test.label)
        and np.array_equal(primary.ids, choice.scores.test.group)
    ):
        raise FairsearchError(
            f"the test split of {choice.config.data or 'the built-in synthetic set'} is not the one trial {trial} "
            f"was tested on ({len(test)} images here, {len(choice.scores.test.label)} in its scores, or other "
            "labels or groups): the data changed since the sweep"
        )
    figures = test_figures(choice, groupings)
    model = load_export_model(choice)
    card = model_card(
        choice, figures, base=_base_text(model.base, model.hub_id), base_hub_id=model.hub_id,
        prompt=model.builder.prompt, front_sizes=choice.front_sizes,
    )  # fmt: skip
    staging = out.parent / f".{out.name}.export-{uuid.uuid4().hex[:12]}"
    try:
        staging.mkdir(parents=True)
        write_model_files(model, staging)
        (staging / THRESHOLDS_FILE).write_text(json.dumps(thresholds_record(choice), indent=1) + "\n")
        records = {
            "split": "test",
            "thresholds": choice.kind,
            "performance_metrics": fairness_records(figures),
        }
        (staging / FAIRNESS_FILE).write_text(json.dumps(records, indent=1) + "\n")
        (staging / "README.md").write_text(card)
        loader = resources.files("fairsearch.export").joinpath("standalone.py").read_text()
        (staging / LOADER_FILE).write_text(loader)
        if out.is_dir():
            out.rmdir()  # empty, checked above; the rename puts the export in its place
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("exported trial %d (seed %d, thresholds %s) to %s", trial, choice.seed, choice.kind, out)
    return out


def _base_text(base: str, hub_id: str | None) -> str:
    if hub_id is not None:
        return f"`{hub_id}` (Hugging Face hub)"
    if base == "base_model":
        return "fairsearch's built-in tiny random Qwen2.5-VL (its weights are in `base_model/`)"
    return f"the Qwen2.5-VL in the folder `{base}` (not copied: bring it along)"
