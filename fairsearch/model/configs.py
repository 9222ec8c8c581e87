"""Qwen2.5-VL configurations built by hand: the built-in tiny model and the 3B and 7B architectures.

None needs a download. The tiny one is what tests and the synthetic demo train; the 3B and 7B ones are the
architectures of ``Qwen/Qwen2.5-VL-3B-Instruct`` and ``Qwen/Qwen2.5-VL-7B-Instruct`` (their ``config.json``
numbers), used to count parameters on the meta device, to check the memory model
(:mod:`fairsearch.model.memory`) and to benchmark a training step with random weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import Qwen2_5_VLConfig

__all__ = ["QWEN_SPECIAL_TOKENS", "qwen2_5_vl_3b_config", "qwen2_5_vl_7b_config", "tiny_config"]

#: Qwen2's special tokens in the order (and so the relative ids) of the real tokenizer, 151643 onwards.
QWEN_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

#: Size of the tiny model's embedding table; the tiny tokenizer's ids all lie below it.
TINY_VOCAB_SIZE = 512


def _config(
    text_config: dict[str, Any],
    vision_config: dict[str, Any],
    token_ids: Mapping[str, int],
    tie_word_embeddings: bool = False,
) -> Qwen2_5_VLConfig:
    config = Qwen2_5_VLConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=token_ids["<|image_pad|>"],
        video_token_id=token_ids["<|video_pad|>"],
        vision_start_token_id=token_ids["<|vision_start|>"],
        vision_end_token_id=token_ids["<|vision_end|>"],
        tie_word_embeddings=tie_word_embeddings,
    )
    config._attn_implementation = "sdpa"
    return config


def tiny_config(token_ids: Mapping[str, int]) -> Qwen2_5_VLConfig:
    """The built-in tiny Qwen2.5-VL: text hidden 64, 2 layers; vision depth 2, patch 14, merge 2.

    Args:
        token_ids: Id of every token in `QWEN_SPECIAL_TOKENS` in the tokenizer the model is used with;
            the config's image/video/vision-start/vision-end ids are taken from it.

    Returns:
        The configuration (SDPA attention, float32).
    """
    text_config: dict[str, Any] = {
        "vocab_size": TINY_VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        # M-RoPE: (temporal, height, width) sections of the rotary half-dimension; they sum to
        # head_dim / 2 = 64 / 4 / 2 = 8.
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]},
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
    }
    vision_config: dict[str, Any] = {
        "depth": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_heads": 4,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 64,
        "window_size": 56,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
    }
    return _config(text_config, vision_config, token_ids)


def _special_token_ids(token_ids: Mapping[str, int] | None) -> dict[str, int]:
    """The given ids, or those of the real Qwen2 tokenizer (151643 onwards)."""
    if token_ids is not None:
        return dict(token_ids)
    return {token: 151643 + i for i, token in enumerate(QWEN_SPECIAL_TOKENS)}


#: The vision tower of Qwen2.5-VL 3B, 7B and 32B (72B's too), but for its output width.
_QWEN2_5_VL_VISION: dict[str, Any] = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_channels": 3,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
}


def qwen2_5_vl_3b_config(token_ids: Mapping[str, int] | None = None) -> Qwen2_5_VLConfig:
    """The architecture of ``Qwen/Qwen2.5-VL-3B-Instruct`` (numbers from its ``config.json``).

    The LLM is narrower and deeper than 7B's (hidden 2048, 36 layers, 16 heads, 2 KV heads, tied
    embeddings); the vision tower is 7B's but for its output width (2048).

    Args:
        token_ids: Special-token ids to use instead of the real tokenizer's (151643 onwards).

    Returns:
        The configuration (SDPA attention). Qwen2_5_VLModel on it has 3,754,622,976 parameters (the
        embedding table is tied to lm_head, which Qwen2_5_VLModel leaves out anyway).
    """
    ids = _special_token_ids(token_ids)
    text_config: dict[str, Any] = {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128000,
        "max_window_layers": 70,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
        "use_sliding_window": False,
        "sliding_window": 32768,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }
    vision_config = {**_QWEN2_5_VL_VISION, "out_hidden_size": 2048}
    return _config(text_config, vision_config, ids, tie_word_embeddings=True)


def qwen2_5_vl_7b_config(token_ids: Mapping[str, int] | None = None) -> Qwen2_5_VLConfig:
    """The architecture of ``Qwen/Qwen2.5-VL-7B-Instruct`` (numbers from its ``config.json``).

    Args:
        token_ids: Special-token ids to use instead of the real tokenizer's (151643 onwards), e.g. those
            of the tiny tokenizer when a benchmark feeds the 7B architecture with tiny-tokenizer inputs.

    Returns:
        The configuration (SDPA attention). Qwen2_5_VLForConditionalGeneration on it has
        8,292,166,656 parameters; Qwen2_5_VLModel (no lm_head) 7,747,169,280.
    """
    ids = _special_token_ids(token_ids)
    text_config: dict[str, Any] = {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 128000,
        "max_window_layers": 28,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
        "use_sliding_window": False,
        "sliding_window": 32768,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
    }
    vision_config = {**_QWEN2_5_VL_VISION, "out_hidden_size": 3584}
    return _config(text_config, vision_config, ids)
