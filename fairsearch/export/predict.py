"""``fairsearch predict``: an export's p(glaucoma) and decisions for a folder of images, as one Parquet file.

Everything is checked first: the export folder (its files, ``classifier.json``'s format, ``thresholds.json``),
``--out``, the images (:mod:`fairsearch.export.images`) and, for per-group thresholds, every image's group.
Then the export is loaded and scored by its own ``load.py`` (:mod:`fairsearch.export.standalone`: one scorer
for both), a batch at a time, and the table is written to a temporary file beside ``--out`` and renamed
over it. A refused or failed run writes nothing.

``--out`` holds one row per image, in the order of the sorted paths:

=================  ====================================================================================
``image``          the path relative to ``--data``
``split``          a FairVLMed folder's split (``train``, ``val``, ``test``); absent for a plain folder
``label``          a FairVLMed folder's label, 1 = glaucoma; absent for a plain folder
``group``          the image's group, with per-group thresholds only
``p_glaucoma``     the export's p(glaucoma), float64
``threshold``      the threshold applied: ``thresholds.json``'s one, or its group's
``decision``       1 (glaucoma) when ``p_glaucoma >= threshold``, else 0
=================  ====================================================================================
"""

from __future__ import annotations

import json
import logging
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors import SafetensorError

from fairsearch.bounded import JSON_MAX_BYTES, read_json
from fairsearch.errors import FairsearchError, clip_value
from fairsearch.export.images import PredictImages, find_images, groups_from_attributes, groups_from_csv
from fairsearch.export.standalone import (
    CLASSIFIER_FILE,
    EXPORT_FORMAT,
    HEAD_FILE,
    THRESHOLDS_FILE,
    GlaucomaClassifier,
)
from fairsearch.export.weights import BASE_FOLDER
from fairsearch.folders import check_writable_folder
from fairsearch.judge.thresholds import GROUP_THRESHOLDS, THRESHOLD
from fairsearch.output.results import write_parquet_atomic

__all__ = ["MAX_BATCH_SIZE", "Prediction", "format_prediction", "predict_folder", "read_rule"]

logger = logging.getLogger(__name__)

MAX_BATCH_SIZE = 4096
EXPORT_FILES = (
    CLASSIFIER_FILE,
    THRESHOLDS_FILE,
    HEAD_FILE,
    "adapter_config.json",
    "adapter_model.safetensors",
    "preprocessor_config.json",
    "tokenizer_config.json",
)
"""The files every export holds that ``load.py`` reads."""
RULE_KINDS = ("none", THRESHOLD, GROUP_THRESHOLDS)
METADATA_KEY = "fairsearch.predict"
"""The Parquet schema metadata key of what made the file: the export, its rule, the data."""


@dataclass(frozen=True)
class Rule:
    """An export's ``thresholds.json``, checked.

    Attributes:
        kind: ``none`` (the model's 0.5), ``threshold`` (one for all) or ``group_thresholds``.
        thresholds: ``{"all": t}``, or ``{group name: t}``.
        group_by: the grouping of per-group thresholds (``"ethnicity"``), else None.
        groups: its group names, in id order, else None.
        no_group: the key of images in no group (``"(no group)"``) when the thresholds have one, else None.
    """

    kind: str
    thresholds: dict[str, float]
    group_by: str | None
    groups: list[str] | None
    no_group: str | None


@dataclass(frozen=True, eq=False)
class Prediction:
    """What :func:`predict_folder` wrote: the table (as in ``--out``), the rule and where."""

    table: pd.DataFrame
    rule: Rule
    export: Path
    data: Path
    out: Path


def read_rule(export: Path) -> Rule:
    """Checks that ``export`` is a whole export of a known format and reads its ``thresholds.json``.

    Raises:
        FairsearchError: not a folder, not an export, a file missing, an unknown format, a damaged JSON.
    """
    if not export.is_dir():
        raise FairsearchError(f"{export}: no such folder (an export folder made by `fairsearch export`)")
    if not (export / CLASSIFIER_FILE).is_file():
        raise FairsearchError(
            f"{export}: not a fairsearch export (no {CLASSIFIER_FILE}); make one with "
            "`fairsearch export RESULTS --trial N --out FOLDER`"
        )
    spec = _json(export / CLASSIFIER_FILE)
    version = spec.get("format", 1)
    if version != EXPORT_FORMAT:
        raise FairsearchError(
            f"{export / CLASSIFIER_FILE}: export format {clip_value(version)}; this fairsearch reads format "
            f"{EXPORT_FORMAT}: use the fairsearch that made it, or export the trial again"
        )
    base = spec.get("base_model")
    if not isinstance(base, str) or not isinstance(spec.get("prompt"), str):
        raise FairsearchError(
            f"{export / CLASSIFIER_FILE}: no 'base_model' or 'prompt' text; the file is damaged"
        )
    needed = [*EXPORT_FILES, *([f"{BASE_FOLDER}/config.json"] if base == BASE_FOLDER else [])]
    missing = [name for name in needed if not (export / name).is_file()]
    if missing:
        raise FairsearchError(f"{export}: an incomplete export, missing {missing}; export the trial again")
    if base != BASE_FOLDER and base.startswith("/") and not Path(base).is_dir():
        raise FairsearchError(
            f"{export / CLASSIFIER_FILE}: its base model folder {clip_value(base)} is not on this machine; "
            "bring it along at that path"
        )
    return _rule(_json(export / THRESHOLDS_FILE), export / THRESHOLDS_FILE)


def _json(path: Path) -> dict[str, Any]:
    try:
        value = read_json(path, JSON_MAX_BYTES)
    except (OSError, ValueError) as err:
        raise FairsearchError(
            f"{path}: cannot read it ({clip_value(str(err))}); export the trial again"
        ) from None
    if not isinstance(value, dict):
        raise FairsearchError(f"{path}: not a JSON object; the file is damaged")
    return value


def _rule(record: dict[str, Any], path: Path) -> Rule:
    kind, thresholds = record.get("kind"), record.get("thresholds")
    if kind not in RULE_KINDS:
        raise FairsearchError(f"{path}: kind {clip_value(kind)} is not one of {list(RULE_KINDS)}")
    if not (
        isinstance(thresholds, dict)
        and thresholds
        and all(
            isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t)
            for t in thresholds.values()
        )
    ):
        raise FairsearchError(f"{path}: 'thresholds' is not an object of numbers; the file is damaged")
    chosen = {str(k): float(v) for k, v in thresholds.items()}
    if kind != GROUP_THRESHOLDS:
        if "all" not in chosen:
            raise FairsearchError(f"{path}: kind {kind!r} without the threshold 'all'; the file is damaged")
        return Rule(kind, chosen, None, None, None)
    group_by, groups, no_group = record.get("group_by"), record.get("groups"), record.get("no_group")
    if not (
        isinstance(group_by, str)
        and isinstance(groups, list)
        and all(isinstance(g, str) for g in groups)
        and set(groups) <= set(chosen)
        and (no_group is None or no_group in chosen)
    ):
        raise FairsearchError(
            f"{path}: per-group thresholds without 'group_by', or 'groups' and 'no_group' not among the "
            "thresholds' keys; the file is damaged"
        )
    return Rule(kind, chosen, group_by, groups, no_group)


def check_out(out: Path, force: bool) -> None:
    """Refuses an ``--out`` that is a folder, in a folder that does not exist or cannot be written, or that
    exists without ``--force``."""
    if out.is_dir():
        raise FairsearchError(f"--out {out}: a folder; give a file name, e.g. {out / 'predictions.parquet'}")
    if not out.parent.is_dir():
        raise FairsearchError(f"--out {out}: no folder {out.parent}; create it first")
    if (out.exists() or out.is_symlink()) and not force:
        raise FairsearchError(f"--out {out}: the file exists; give a new name, or --force to replace it")
    check_writable_folder(out.parent, f"--out {out}")


def predict_folder(
    export: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    groups: str | Path | None = None,
    split: str = "test",
    batch_size: int = 16,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
) -> Prediction:
    """Scores every image of ``data`` with the export in ``export`` and writes the table to ``out``.

    Args:
        export: a folder made by ``fairsearch export``.
        data: a FairVLMed folder, or a folder of PNG, JPEG and ``.npz`` files.
        out: the Parquet file to write; its folder must exist.
        groups: a CSV of ``image,group`` (per-group thresholds only; wins over a FairVLMed folder's attributes).
        split: a FairVLMed folder's split to score: ``train``, ``val``, ``test`` or ``all``.
        batch_size: images scored at once.
        device: ``cpu``, ``cuda``, ``cuda:1``…; ``auto``: ``cuda`` when there is one.
        force: replace an existing ``out``.
        progress: show a progress bar on a terminal's stderr.

    Returns:
        What was written.

    Raises:
        FairsearchError: anything refused; nothing is written then.
    """
    export, out = Path(export).expanduser(), Path(out).expanduser()
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise FairsearchError(f"--batch-size {batch_size}: must be an integer from 1 to {MAX_BATCH_SIZE}")
    rule = read_rule(export)
    check_out(out, force)
    if groups is not None and rule.kind != GROUP_THRESHOLDS:
        raise FairsearchError(
            f"--groups {groups}: the export's thresholds.json is of kind {rule.kind!r}, one threshold for every "
            "image; groups are only read for per-group thresholds"
        )
    images = find_images(data, split)
    names = _group_names(rule, images, groups)
    classifier = _load(export, _device(device))
    p = _score(classifier, images, batch_size, progress)
    threshold = classifier.threshold_of(len(p), names)
    table = pd.DataFrame({"image": images.names})
    if images.split is not None and images.label is not None:
        table["split"] = images.split
        table["label"] = images.label.astype(np.int64)
    if names is not None:
        table["group"] = names
    table["p_glaucoma"] = p
    table["threshold"] = threshold
    table["decision"] = classifier.decide(p, names)
    made = {"export": str(export.resolve()), "data": str(images.root.resolve()), "thresholds": rule.kind}
    write_parquet_atomic(table, out, {METADATA_KEY: json.dumps(made | {"group_by": rule.group_by})})
    logger.info("wrote %d predictions to %s", len(table), out)
    return Prediction(table, rule, export, images.root, out)


def _group_names(rule: Rule, images: PredictImages, groups: str | Path | None) -> list[str] | None:
    """Each image's group name for per-group thresholds, else None."""
    if rule.kind != GROUP_THRESHOLDS or rule.group_by is None or rule.groups is None:
        return None
    allowed = [*rule.groups, *([rule.no_group] if rule.no_group else [])]
    if groups is not None:
        return groups_from_csv(groups, images, allowed)
    if images.attributes is None:
        raise FairsearchError(
            f"the export's thresholds are one per {rule.group_by!r} group ({clip_value(rule.groups)}), and "
            f"--data {images.root} is a folder of images without attributes: give each image's group with "
            "--groups GROUPS.csv (columns image,group)"
        )
    return groups_from_attributes(images, rule.group_by, rule.groups, rule.no_group)


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError:
        raise FairsearchError(
            f"--device {clip_value(device)}: not a torch device (cpu, cuda, cuda:1…)"
        ) from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FairsearchError(f"--device {clip_value(device)}: this machine has no CUDA device")
    return device


def _load(export: Path, device: str) -> GlaucomaClassifier:
    try:
        with warnings.catch_warnings():  # peft asks a deprecated transformers property while it wraps
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return GlaucomaClassifier(export, device=device)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as err:
        raise FairsearchError(
            f"{export}: transformers and peft cannot load this export ({clip_value(str(err), 300)})"
        ) from None


def _score(
    classifier: GlaucomaClassifier, images: PredictImages, batch_size: int, progress: bool
) -> np.ndarray:
    """p(glaucoma) of every image, ``batch_size`` images read and scored at a time: float64 [N]."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(file=sys.stderr)
    out = []
    with Progress(console=console, disable=not (progress and console.is_terminal), transient=True) as bar:
        task = bar.add_task("scoring", total=len(images))
        for start in range(0, len(images), batch_size):
            batch = [images.image(i) for i in range(start, min(start + batch_size, len(images)))]
            out.append(classifier.predict_proba(batch, batch_size=len(batch)))
            bar.advance(task, len(batch))
    return np.concatenate(out)


def format_prediction(result: Prediction) -> str:
    """What ``fairsearch predict`` prints: images, rule, decisions per group, accuracy against labels."""
    table, rule = result.table, result.rule
    positive = int(table["decision"].sum())
    if rule.kind == GROUP_THRESHOLDS:
        how = f"a threshold per {rule.group_by} group"
    elif rule.kind == THRESHOLD:
        how = f"threshold {rule.thresholds['all']:.4g}"
    else:
        how = f"the model's own threshold {rule.thresholds['all']:.4g}"
    lines = [
        f"{len(table)} images of {result.data} scored by {result.export} ({how}): "
        f"{positive} glaucoma, {len(table) - positive} not"
    ]
    if "group" in table:
        counts: pd.DataFrame = table.groupby("group", sort=False)["decision"].agg(["size", "sum"])
        for name, row in counts.iterrows():
            lines.append(
                f"  {name}: {int(row['size'])} images, threshold {rule.thresholds[str(name)]:.4g}, "
                f"{int(row['sum'])} glaucoma"
            )
    if "label" in table:
        accuracy = float((table["decision"] == table["label"]).mean())
        lines.append(f"accuracy against the folder's labels: {accuracy:.1%}")
    lines.append(f"predictions in {result.out}")
    return "\n".join(lines)
