"""An export's model files, written with transformers' and peft's own writers.

- ``adapter_config.json`` + ``adapter_model.safetensors``: the LoRA adapter, by ``PeftModel.save_pretrained``
  (its ``base_model_name_or_path`` names the base model as ``classifier.json`` does);
- ``head.safetensors``: the classification head, ``weight`` [2, hidden] and ``bias`` [2], float32. PEFT's
  ``modules_to_save`` holds modules *inside* the wrapped model; fairsearch's head reads the pooled hidden
  state outside Qwen2_5_VLModel, so it is a file of its own;
- the tokenizer (with its chat template) and the image processor, its size bounds set to the ones the
  trial used (``max_pixels``), so that they alone decide the inputs;
- for the built-in tiny model, whose random weights exist nowhere else, ``base_model/``: the model folder
  itself (``Qwen2_5_VLModel.save_pretrained``, tokenizer, processor);
- ``classifier.json``: the base model, the prompt, how the score is read, for ``load.py``.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from fairsearch.bounded import TRAINABLE_MAX_BYTES, read_bytes
from fairsearch.errors import FairsearchError
from fairsearch.export.choice import TRAINABLE_FILE, ExportChoice
from fairsearch.export.standalone import CLASSIFIER_FILE, EXPORT_FORMAT, HEAD_FILE
from fairsearch.model import TINY, Backbone, GlaucomaClassifier, InputBuilder, build_classifier, load_backbone
from fairsearch.train.checkpoint import filesystem_of

__all__ = [
    "BASE_FOLDER",
    "CLASSIFIER_FILE",
    "HEAD_FILE",
    "ExportModel",
    "load_export_model",
    "write_model_files",
]

BASE_FOLDER = "base_model"
"""The tiny base model's folder inside an export."""


@dataclass
class ExportModel:
    """The run's classifier rebuilt on the CPU in float32, with what turns images into its inputs.

    Attributes:
        backbone: the base model, tokenizer and image processor.
        classifier: LoRA + head, the checkpoint's weights loaded.
        builder: the trial's input builder (its prompt and image size bounds).
        base: how ``classifier.json`` names the base model: ``base_model`` (in the export), a hub id, or a folder.
        hub_id: the base model's hub id, or None (the tiny model, a folder).
    """

    backbone: Backbone
    classifier: GlaucomaClassifier
    builder: InputBuilder
    base: str
    hub_id: str | None


def load_export_model(choice: ExportChoice) -> ExportModel:
    """Rebuilds the run's classifier from its config and ``trainable.pt`` (nothing written).

    Raises:
        FairsearchError: the base model is not on this machine, or the weights do not fit it.
    """
    config = choice.config
    backbone = load_backbone(config.model, device="cpu", dtype=torch.float32)
    builder = InputBuilder(backbone.tokenizer, backbone.image_processor, max_pixels=config.max_pixels)
    classifier = build_classifier(
        backbone,
        lora_rank=config.lora_rank,
        lora_alpha=config.lora_alpha if config.lora_alpha is not None else 2.0 * config.lora_rank,
        lora_dropout=config.lora_dropout,
    )
    path = f"{choice.checkpoint.rstrip('/')}/{TRAINABLE_FILE}"
    try:
        fs, located = filesystem_of(path)
        data = read_bytes(located, TRAINABLE_MAX_BYTES, fs)  # a local file or one on the sweep's storage
        classifier.load_trainable_state_dict(
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise FairsearchError(
            f"{path}: not the weights of this trial's classifier ({str(err)[:300]})"
        ) from None
    classifier.eval()
    if config.model == TINY:
        base, hub_id = BASE_FOLDER, None
    elif Path(config.model).expanduser().is_dir():
        base, hub_id = str(Path(config.model).expanduser().resolve()), None
    else:
        base, hub_id = config.model, config.model
    return ExportModel(backbone, classifier, builder, base, hub_id)


def write_model_files(model: ExportModel, folder: Path) -> None:
    """Writes the adapter, head, tokenizer, image processor, ``classifier.json`` and (tiny) ``base_model/``
    into ``folder``, an empty folder."""
    backbone, vlm = model.backbone, model.classifier.vlm
    processor = copy.deepcopy(backbone.image_processor)
    processor.size = {"shortest_edge": model.builder.min_pixels, "longest_edge": model.builder.max_pixels}
    if model.base == BASE_FOLDER:
        base = folder / BASE_FOLDER
        # the classifier's own base carries the adapter's layers now; the tiny model is built again, the
        # same weights in every process
        load_backbone(TINY, device="cpu", dtype=torch.float32).model.save_pretrained(base)
        backbone.tokenizer.save_pretrained(base)
        processor.save_pretrained(base)
    vlm.peft_config["default"].base_model_name_or_path = model.base
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        vlm.save_pretrained(str(folder), save_embedding_layers=False)
    (folder / "README.md").unlink(missing_ok=True)  # peft's own template card; the export writes its own
    head = {
        k: v.detach().to(torch.float32).cpu().contiguous()
        for k, v in model.classifier.head.state_dict().items()
    }
    save_file(head, folder / HEAD_FILE)
    backbone.tokenizer.save_pretrained(folder)
    processor.save_pretrained(folder)
    spec = {
        "format": EXPORT_FORMAT,
        "base_model": model.base,
        "prompt": model.builder.prompt,
        "score": "softmax(head(h))[1]: p(glaucoma); h = the base model with the adapter's final hidden "
        "state at the last non-padding token",
        "labels": {"0": "no glaucoma", "1": "glaucoma"},
        "head": HEAD_FILE,
        "dtype": "float32",
    }
    (folder / CLASSIFIER_FILE).write_text(json.dumps(spec, indent=1) + "\n")
