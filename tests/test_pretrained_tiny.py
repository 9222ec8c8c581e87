"""The shipped ``tiny-pretrained`` folder: it loads through the ordinary folder path, is what its README and
record say, ships with the package, and the script that made it reproduces its first steps."""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from setuptools.config.pyprojecttoml import read_configuration

from fairsearch.data.synthetic import PRETEXT_CLASSES, RECIPE, pretext_images, write_synthetic
from fairsearch.model import InputBuilder, build_classifier, load_backbone
from fairsearch.model.backbone import PRETRAINED_TINY_FOLDER, TINY_PRETRAINED, resolve_model_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    torch.set_num_threads(1)  # as the script's record was made; two threads stall on a shared machine


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pretrain_tiny", ROOT / "scripts" / "pretrain_tiny.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["pretrain_tiny"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    return json.loads((PRETRAINED_TINY_FOLDER / "pretraining.json").read_text())


def test_the_name_resolves_to_the_shipped_folder_and_loads_as_a_folder(
    tmp_path: Path, record: dict[str, Any]
) -> None:
    assert resolve_model_folder(TINY_PRETRAINED) == PRETRAINED_TINY_FOLDER
    pretrained, tiny = load_backbone(TINY_PRETRAINED), load_backbone("tiny")
    assert pretrained.name == "tiny-pretrained" and pretrained.fingerprint.startswith("tiny-pretrained:")
    saved = {k: v for k, v in pretrained.config.to_diff_dict().items() if k != "architectures"}
    assert saved == tiny.config.to_diff_dict()  # the tiny architecture
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Does this show glaucoma?"
    assert pretrained.tokenizer(text).input_ids == tiny.tokenizer(text).input_ids
    assert pretrained.image_processor.to_dict() == tiny.image_processor.to_dict()
    ours, theirs = pretrained.model.state_dict(), tiny.model.state_dict()
    assert ours.keys() == theirs.keys()
    changed = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert any(k.startswith("visual.") for k in changed) and any(
        k.startswith("language_model.") for k in changed
    )

    data = write_synthetic(tmp_path / "data", n=60, seed=0)
    images = [np.load(p)["slo_fundus"] for p in sorted((data / "Test").glob("*.npz"))[:3]]
    builder = InputBuilder(pretrained.tokenizer, pretrained.image_processor)
    classifier = build_classifier(pretrained, lora_rank=4, lora_alpha=8)
    with torch.no_grad():
        features = classifier.features(builder.collate(images))
        logits = classifier(builder.collate(images))
    assert features.shape == (3, 64) and features.dtype == torch.float32 and torch.isfinite(features).all()
    assert logits.shape == (3, 2)


def test_weights_readme_and_record_agree(script: ModuleType, record: dict[str, Any]) -> None:
    weights = (PRETRAINED_TINY_FOLDER / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == record["weights_sha256"]
    assert len(weights) < 4 * 2**20
    assert (PRETRAINED_TINY_FOLDER / "README.md").read_text() == script.readme(record)
    assert record["classes"] == list(PRETEXT_CLASSES)
    assert record["settings"] == json.loads(json.dumps(script.Settings().__dict__))  # the script's defaults
    assert record["val_accuracy"] > 2 / len(PRETEXT_CLASSES)  # it learnt its own task


def test_the_first_steps_of_the_script_reproduce(script: ModuleType, record: dict[str, Any]) -> None:
    steps = len(record["first_losses"])
    losses: list[float] = []

    def first(step: int, loss: float) -> bool:
        losses.append(loss)
        return step + 1 < steps

    script.pretrain(script.Settings(**record["settings"]), on_step=first)
    assert losses == pytest.approx(record["first_losses"], abs=2e-4)


def test_pretext_images_are_drawn_per_index_and_labelled_by_their_index() -> None:
    images, labels = pretext_images(np.arange(24), seed=3)
    alone, alone_labels = pretext_images([13, 2], seed=3)
    assert images.shape == (24, 112, 112) and images.dtype == np.uint8
    assert np.array_equal(alone, images[[13, 2]]) and alone_labels.tolist() == [1, 2]
    assert labels.tolist() == [i % 12 for i in range(24)] and len(PRETEXT_CLASSES) == 12
    assert not np.array_equal(pretext_images([0], seed=4)[0], images[:1])
    # a mosaic adds detail: the mean absolute difference of neighbouring retina pixels grows with it
    rows = images[:, 6:18, 40:72].astype(float)  # above the disc, inside the field
    detail = np.abs(np.diff(rows, axis=2)).mean(axis=(1, 2))
    assert detail[labels % 2 == 1].mean() > detail[labels % 2 == 0].mean() + 0.5
    # the disc (the brightest 2 % of the pixels) is left, centre or right as the label says
    flat = images.reshape(len(images), -1).astype(float)
    bright = flat >= np.percentile(flat, 98, axis=1, keepdims=True)
    x = (bright * np.tile(np.arange(112), 112)).sum(axis=1) / bright.sum(axis=1)
    nearest = np.argmin(np.abs(x[:, None] - (56 + 56 * np.array([-0.3, 0.0, 0.3]))[None]), axis=1)
    assert np.array_equal(nearest, labels // 4)
    assert RECIPE.split_sizes == (1200, 2300, 2300)  # the glaucoma set's recipe is left as it was


def test_the_package_data_ships_every_file_of_the_folder() -> None:
    # read as the build backend reads it
    patterns = read_configuration(ROOT / "pyproject.toml")["tool"]["setuptools"]["package-data"]["fairsearch"]
    package = ROOT / "fairsearch"
    files = [p.relative_to(package).as_posix() for p in PRETRAINED_TINY_FOLDER.iterdir()]
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= {
        Path(f).name for f in files
    }
    assert all(any(fnmatch.fnmatch(f, p) for p in patterns) for f in files), files
