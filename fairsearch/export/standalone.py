"""Load a fairsearch export with transformers, peft and torch only, and score fundus images.

This file is copied into every export as ``load.py``; it never imports fairsearch. It builds each image's
inputs as fairsearch does: the chat template renders one user message (the image, then the question), the
single ``<|image_pad|>`` is repeated once per merged patch of the resized image
(``grid_t * grid_h * grid_w / merge_size**2``), ``mm_token_type_ids`` is 1 on those tokens, batches are
right-padded; the base model (no lm_head) with the LoRA adapter gives the last non-padding token's final
hidden state, the linear head of ``head.safetensors`` two logits, and p(glaucoma) is the softmax's second.

Use::

    python load.py EXPORT_FOLDER IMAGES.npy SCORES.npy   # uint8 [N, H, W, 3] or [N, H, W] -> float64 [N]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoTokenizer, Qwen2_5_VLModel, Qwen2VLImageProcessorPil

CLASSIFIER_FILE = "classifier.json"
THRESHOLDS_FILE = "thresholds.json"
HEAD_FILE = "head.safetensors"
EXPORT_FORMAT = 1
"""The version of an export's files, ``classifier.json``'s ``format``; a folder without it (written before
the key was) is format 1. Raised when a file changes meaning, so that readers refuse what they do not know."""
# Checkpoints written by transformers 4.52-4.57 name the vision tower model.visual.*; this maps them.
KEY_MAPPING = {r"^model\.visual\.": "visual."}


class GlaucomaClassifier:
    """An exported classifier: ``predict_proba(images)`` gives p(glaucoma), ``decide`` applies the
    export's thresholds.

    Args:
        folder: the export folder (``adapter_config.json``, ``head.safetensors``, ``classifier.json``, …).
        device: where to run; float32 weights.
    """

    def __init__(self, folder: str | Path, device: str = "cpu") -> None:
        self.folder = Path(folder)
        self.spec: dict[str, Any] = json.loads((self.folder / CLASSIFIER_FILE).read_text())
        self.thresholds: dict[str, Any] = json.loads((self.folder / THRESHOLDS_FILE).read_text())
        base = self.spec["base_model"]
        base_path = self.folder / base if (self.folder / base).is_dir() else base
        model = Qwen2_5_VLModel.from_pretrained(
            base_path, dtype=torch.float32, attn_implementation="sdpa", key_mapping=KEY_MAPPING
        )
        self.model = PeftModel.from_pretrained(model, self.folder).to(device).eval()
        head = load_file(self.folder / HEAD_FILE)
        self.head = torch.nn.Linear(head["weight"].shape[1], head["weight"].shape[0]).to(device).eval()
        self.head.load_state_dict(head)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.image_processor = Qwen2VLImageProcessorPil.from_pretrained(self.folder)
        self.device = torch.device(device)
        messages: list[dict[str, Any]] = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.spec["prompt"]}]}
        ]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        where = ids.index(self.image_token_id)
        self.prefix, self.suffix = ids[:where], ids[where + 1 :]
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.tokenizer.eos_token_id

    def inputs(self, images: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """The model inputs of a batch of uint8 images ([H, W, 3], or [H, W] grey)."""
        rgb = [np.repeat(im[:, :, None], 3, axis=2) if im.ndim == 2 else im for im in map(np.asarray, images)]
        pixels = self.image_processor(images=rgb, input_data_format="channels_last", return_tensors="pt")
        merge = int(self.image_processor.merge_size)
        rows = [
            [*self.prefix, *[self.image_token_id] * (int(t) * int(h) * int(w) // merge**2), *self.suffix]
            for t, h, w in pixels["image_grid_thw"].tolist()
        ]
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": ((input_ids == self.image_token_id) & attention_mask.bool()).long(),
            "pixel_values": pixels["pixel_values"],
            "image_grid_thw": pixels["image_grid_thw"],
        }

    @torch.no_grad()
    def predict_proba(self, images: Any, batch_size: int = 16) -> np.ndarray:
        """p(glaucoma) of each image: float64 [N]."""
        out = []
        for start in range(0, len(images), batch_size):
            batch = {
                k: v.to(self.device) for k, v in self.inputs(list(images[start : start + batch_size])).items()
            }
            hidden = self.model(**batch, use_cache=False).last_hidden_state
            mask = batch["attention_mask"]
            last = mask.shape[1] - 1 - mask.flip(1).argmax(dim=1)
            logits = self.head(hidden[torch.arange(hidden.shape[0]), last].float())
            out.append(torch.softmax(logits, dim=-1)[:, 1].cpu())
        return torch.cat(out).double().numpy()

    def threshold_of(self, n: int, groups: list[str] | None = None) -> np.ndarray:
        """Each of ``n`` images' threshold: float64 [n]; with per-group thresholds each image's group name
        is needed."""
        chosen = self.thresholds["thresholds"]
        if self.thresholds["kind"] != "group_thresholds":
            return np.full(n, float(chosen["all"]))
        if groups is None or len(groups) != n:
            raise ValueError(f"per-group thresholds need one group of {list(chosen)} per image")
        return np.array([float(chosen[g]) for g in groups], dtype=np.float64)

    def decide(self, p: np.ndarray, groups: list[str] | None = None) -> np.ndarray:
        """1 (glaucoma) where p ≥ the threshold; with per-group thresholds each image's group name is needed."""
        return (np.asarray(p) >= self.threshold_of(len(p), groups)).astype(np.int64)


if __name__ == "__main__":
    folder, images_path, scores_path = sys.argv[1:4]
    np.save(scores_path, GlaucomaClassifier(folder).predict_proba(np.load(images_path)))
