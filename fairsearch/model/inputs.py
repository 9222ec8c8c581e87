"""Prompt + fundus image → Qwen2.5-VL inputs, without torchvision (so without Qwen2_5_VLProcessor).

The rule Qwen2_5_VLProcessor follows, done by hand: render the chat template for one user message holding
the image and the question (the template writes ``<|vision_start|><|image_pad|><|vision_end|>`` for the
image), then repeat ``<|image_pad|>`` ``grid_t * grid_h * grid_w / merge_size**2`` times, where the grid
is the image's patch grid after Qwen's ``smart_resize`` (both sides multiples of patch·merge = 28 pixels,
area within [min_pixels, max_pixels]). ``mm_token_type_ids`` is 1 at those image tokens and 0 elsewhere;
the Qwen2.5-VL model needs it to give image tokens their 3-D (M-RoPE) positions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase, Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from fairsearch.model.backbone import token_id

__all__ = ["DEFAULT_PROMPT", "IMAGE_TOKEN", "InputBuilder"]

#: The question asked about every image.
DEFAULT_PROMPT = "Does this fundus image show glaucoma? Answer yes or no."
#: The placeholder token the image's embeddings replace.
IMAGE_TOKEN = "<|image_pad|>"


class InputBuilder:
    """Builds Qwen2.5-VL classifier inputs: one image + one question per sample, right-padded batches.

    Args:
        tokenizer: The model's tokenizer (with Qwen's special tokens and chat template).
        image_processor: Qwen2-VL's PIL image processor; it is not modified.
        prompt: The user's question, placed after the image.
        max_pixels: Largest image area after resizing (pixels); None keeps the processor's (the tiny
            one's 28·28·1280 = 1,003,520; Qwen2.5-VL-7B ships 12,845,056). It sets the number of image
            tokens, so the cost of every step: a 664×512 fundus image gives 432 tokens under either
            default, 112×112 gives 16.
        min_pixels: Smallest image area after resizing; None keeps the processor's (56·56).

    Raises:
        ValueError: The tokenizer lacks ``<|image_pad|>``, the chat template does not place exactly one
            image, or min_pixels > max_pixels.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Qwen2VLImageProcessorPil,
        *,
        prompt: str = DEFAULT_PROMPT,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.prompt = prompt
        size = dict(image_processor.size)
        self.max_pixels = int(max_pixels if max_pixels is not None else size["longest_edge"])
        self.min_pixels = int(min_pixels if min_pixels is not None else size["shortest_edge"])
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} > max_pixels {self.max_pixels}")
        self.patch_size = int(image_processor.patch_size)
        self.merge_size = int(image_processor.merge_size)

        self.image_token_id = token_id(tokenizer, IMAGE_TOKEN)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad)

        messages: list[dict[str, Any]] = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        ]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if not isinstance(rendered, str):
            raise TypeError(f"apply_chat_template(tokenize=False) gave {type(rendered).__name__}, not str")
        #: The prompt as the chat template renders it, with one ``<|image_pad|>``.
        self.prompt_text = rendered
        ids = list(tokenizer(self.prompt_text, add_special_tokens=False)["input_ids"])
        where = [i for i, token in enumerate(ids) if token == self.image_token_id]
        if len(where) != 1:
            raise ValueError(f"the chat template places {len(where)} {IMAGE_TOKEN} tokens, expected 1")
        self._prefix = ids[: where[0]]
        self._suffix = ids[where[0] + 1 :]

    @property
    def image_settings(self) -> dict[str, Any]:
        """Everything that decides the pixels the vision tower sees (for cache keys); JSON-serialisable."""
        settings = self.image_processor.to_dict()
        settings["size"] = {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}
        return json.loads(json.dumps(settings, sort_keys=True, default=str))

    def num_image_tokens(self, height: int, width: int) -> int:
        """Image tokens for an image of this size: grid_h·grid_w / merge² after smart_resize.

        Args:
            height: Image height in pixels.
            width: Image width in pixels.

        Returns:
            The number of ``<|image_pad|>`` tokens (= rows of its vision embeddings).
        """
        factor = self.patch_size * self.merge_size
        h, w = smart_resize(height, width, factor, min_pixels=self.min_pixels, max_pixels=self.max_pixels)
        return (h // self.patch_size) * (w // self.patch_size) // self.merge_size**2

    def sequence_length(self, height: int, width: int) -> int:
        """Tokens of one sample whose image has this size: the prompt's plus `num_image_tokens`."""
        return len(self._prefix) + self.num_image_tokens(height, width) + len(self._suffix)

    def encode_image(self, image: np.ndarray) -> tuple[Tensor, Tensor]:
        """Resize, normalise and patchify one image.

        Args:
            image: uint8 [H, W, 3] (RGB), [H, W] or [H, W, 1] (grey, repeated to RGB).

        Returns:
            pixel_values float32 [grid_h·grid_w, 3·2·14·14] and grid_thw int64 [3] = (1, grid_h, grid_w).

        Raises:
            ValueError: Not a uint8 image of one of those shapes.
        """
        rgb = _as_rgb(image)
        out = self.image_processor(
            images=[rgb],
            size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            input_data_format="channels_last",
            return_tensors="pt",
        )
        return out["pixel_values"], out["image_grid_thw"][0]

    def token_ids(self, grid_thw: Tensor | Sequence[int]) -> list[int]:
        """The token ids of one sample whose image has this grid (no padding).

        Args:
            grid_thw: (grid_t, grid_h, grid_w) of the image.

        Returns:
            Chat-template ids with ``<|image_pad|>`` repeated grid_t·grid_h·grid_w / merge² times.
        """
        t, h, w = (int(x) for x in grid_thw)
        n_image = t * h * w // self.merge_size**2
        return [*self._prefix, *([self.image_token_id] * n_image), *self._suffix]

    def text_inputs(self, grid_thw: Sequence[Tensor] | Tensor) -> dict[str, Tensor]:
        """Token-side inputs for a batch of images with these grids (right padding).

        Args:
            grid_thw: One (t, h, w) grid per sample: a list of [3] tensors or a [B, 3] tensor.

        Returns:
            ``input_ids`` int64 [B, L], ``attention_mask`` int64 [B, L] (0 on padding),
            ``mm_token_type_ids`` int64 [B, L] (1 on image tokens), ``image_grid_thw`` int64 [B, 3].
        """
        grids = torch.stack([torch.as_tensor(g, dtype=torch.long) for g in grid_thw]).reshape(-1, 3)
        sequences = [self.token_ids(g) for g in grids]
        length = max(len(s) for s in sequences)
        input_ids = torch.full((len(sequences), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
            attention_mask[row, : len(sequence)] = 1
        mm_token_type_ids = ((input_ids == self.image_token_id) & attention_mask.bool()).long()
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "mm_token_type_ids": mm_token_type_ids,
            "image_grid_thw": grids,
        }

    def collate(self, images: Sequence[np.ndarray]) -> dict[str, Tensor]:
        """Full model inputs for a batch of images (the path without the vision cache).

        Args:
            images: B images, see `encode_image`.

        Returns:
            The `text_inputs` keys plus ``pixel_values`` float32 [Σ patches, 1176] (images in order).
        """
        encoded = [self.encode_image(image) for image in images]
        batch = self.text_inputs([grid for _, grid in encoded])
        batch["pixel_values"] = torch.cat([pixels for pixels, _ in encoded])
        return batch


def _as_rgb(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"expected an image of shape [H, W], [H, W, 1] or [H, W, 3], got {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return array
