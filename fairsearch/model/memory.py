"""How much memory one trial needs: pure arithmetic on a Qwen2.5-VL architecture's numbers.

No model library is imported: the architecture is read from a config's plain numbers
(:meth:`Architecture.from_config`, the dict of ``config.json`` or ``Qwen2_5_VLConfig.to_dict()``), and the
trial's shape (batch, tokens per sample, LoRA rank, gradient checkpointing) is given as numbers too.

What a trial keeps on its device, and what the estimate counts:

- **base weights**: the whole Qwen2_5_VLModel (vision tower + LLM, no lm_head) in the weight dtype (bf16 on
  a GPU, fp32 on a CPU: ``fairsearch.model.backbone.default_dtype``);
- **LoRA + optimizer**: the adapters on q/k/v/o of every LLM layer and the 2-way head, in fp32 (peft keeps
  adapters in fp32 beside bf16 weights), with their fp32 gradients and AdamW's two fp32 moments: 16 bytes
  per trainable parameter;
- **activations**: what autograd saves for the backward pass, per token and layer (counted with
  ``torch.autograd.graph.saved_tensors_hooks`` on Qwen2.5-VL in fp32 and bf16, see `saved_per_token_layer`),
  times batch × tokens × layers; with gradient checkpointing only each layer's input, plus one layer's
  activations recomputed during the backward pass;
- **backward workspace**: the gradients in flight while one layer's backward runs, of the size of that
  layer's activations;
- **evaluation**: the no-grad forward of an ``eval_batch_size`` batch, whose largest per-layer
  intermediates are alive at once (it does not add to training: the two never overlap);
- **vision cache fill**: the frozen vision tower's no-grad forward over 16 images at a time, once, when
  the first trial of a node computes the cache (embeddings then live on disk, memory-mapped, and only a
  batch's rows reach the device).

The peak is the base weights, LoRA + optimizer, and the largest of (activations + workspace, evaluation,
cache fill). Checked against measured peaks in ``benchmarks/real_size_step.py`` and ``tests/test_memory.py``.
Attention here never holds a tokens² matrix: PyTorch's SDPA runs flash or memory-efficient kernels on
these shapes (on the CPU too); a backend that falls back to the math kernel needs more.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FP32_BYTES",
    "VISION_CACHE_BATCH",
    "Architecture",
    "MemoryEstimate",
    "TrialShape",
    "saved_per_token_layer",
    "trial_memory",
]

FP32_BYTES = 4
"""Bytes of a float32: LoRA adapters, the head, their gradients and AdamW's moments are all fp32."""
ADAMW_BYTES_PER_PARAMETER = 4 * FP32_BYTES
"""Weight, gradient, exp_avg and exp_avg_sq of each trainable parameter."""
VISION_CACHE_BATCH = 16
"""Images per vision-tower call when the cache is filled (``VisionCache.embeddings``' default)."""
NUM_CLASSES = 2


@dataclass(frozen=True)
class Architecture:
    """The numbers of a Qwen2.5-VL configuration that decide its memory.

    Attributes:
        vocab_size: rows of the token embedding table.
        hidden_size: the LLM's hidden width h.
        intermediate_size: the LLM's MLP width i.
        num_layers: LLM decoder layers.
        num_heads: attention (query) heads.
        num_kv_heads: key/value heads (grouped-query attention).
        vision_depth: vision-tower blocks.
        vision_hidden: the vision tower's width.
        vision_intermediate: the vision tower's MLP width.
        out_hidden: width of the merged image tokens (= hidden_size).
        patch_size: pixels per patch side (14).
        temporal_patch_size: frames per patch (2; a still image is repeated).
        merge_size: patches merged per image-token side (2).
        in_channels: image channels (3).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    out_hidden: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    in_channels: int = 3

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Architecture:
        """Reads a Qwen2.5-VL config dict: ``config.json`` (text settings under ``text_config`` or, as
        transformers 4 wrote them, at the top level) or ``Qwen2_5_VLConfig.to_dict()``.

        Raises:
            ValueError: a number is missing or not a positive integer.
        """
        text = config.get("text_config") or config
        vision = config.get("vision_config") or {}

        def number(block: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
            value = block.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}{key}: {value!r} is not a positive integer")
            return value

        return cls(
            vocab_size=number(text, "vocab_size", "text_config."),
            hidden_size=number(text, "hidden_size", "text_config."),
            intermediate_size=number(text, "intermediate_size", "text_config."),
            num_layers=number(text, "num_hidden_layers", "text_config."),
            num_heads=number(text, "num_attention_heads", "text_config."),
            num_kv_heads=number(
                text, "num_key_value_heads", "text_config.", default=text.get("num_attention_heads")
            ),
            vision_depth=number(vision, "depth", "vision_config."),
            vision_hidden=number(vision, "hidden_size", "vision_config."),
            vision_intermediate=number(vision, "intermediate_size", "vision_config."),
            out_hidden=number(vision, "out_hidden_size", "vision_config."),
            patch_size=number(vision, "patch_size", "vision_config.", 14),
            temporal_patch_size=number(vision, "temporal_patch_size", "vision_config.", 2),
            merge_size=number(vision, "spatial_merge_size", "vision_config.", 2),
            in_channels=number(vision, "in_channels", "vision_config.", 3),
        )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    @property
    def kv_dim(self) -> int:
        """Width of the keys (and of the values): kv heads × head width."""
        return self.num_kv_heads * self.head_dim

    @property
    def llm_parameters(self) -> int:
        """Parameters of the LLM without lm_head: embeddings, decoder layers, final norm."""
        h, kv, i = self.hidden_size, self.kv_dim, self.intermediate_size
        attention = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v with bias; o without
        layer = attention + 3 * h * i + 2 * h  # gate, up, down; two RMSNorms
        return self.vocab_size * h + self.num_layers * layer + h

    @property
    def vision_parameters(self) -> int:
        """Parameters of the vision tower: patch embedding, blocks, the patch merger."""
        d, i = self.vision_hidden, self.vision_intermediate
        patch = self.in_channels * self.temporal_patch_size * self.patch_size**2 * d
        block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * (d * i + i) + (i * d + d)
        merged = d * self.merge_size**2
        merger = d + (merged * merged + merged) + (merged * self.out_hidden + self.out_hidden)
        return patch + self.vision_depth * block + merger

    @property
    def parameters(self) -> int:
        """All parameters of Qwen2_5_VLModel (what a trial loads)."""
        return self.llm_parameters + self.vision_parameters

    def trainable_parameters(self, lora_rank: int) -> int:
        """LoRA r on q/k/v/o of every LLM layer (A: r × in, B: out × r) plus the 2-way head."""
        h, kv = self.hidden_size, self.kv_dim
        per_layer = lora_rank * ((h + h) + 2 * (h + kv) + (h + h))
        return self.num_layers * per_layer + h * NUM_CLASSES + NUM_CLASSES

    def image_tokens(self, patches: int) -> int:
        """Image tokens of an image of ``patches`` patches (grid_h × grid_w): patches / merge²."""
        return patches // self.merge_size**2


@dataclass(frozen=True)
class TrialShape:
    """The settings of one trial that decide its memory.

    Attributes:
        batch_size: samples per training forward pass.
        tokens_per_sample: sequence length: the image tokens plus the prompt's.
        lora_rank: LoRA r.
        gradient_checkpointing: recompute each LLM layer's activations in the backward pass.
        weight_bytes: bytes per weight: 2 (bf16, on a GPU) or 4 (fp32, on a CPU).
        eval_batch_size: samples per evaluation forward pass (no gradients).
        patches_per_image: the image's patch grid, grid_h × grid_w (vision-tower tokens); 0 leaves the
            cache fill out (the vision cache is off: the vision tower then runs in every step, which this
            estimate does not cover).
    """

    batch_size: int
    tokens_per_sample: int
    lora_rank: int
    gradient_checkpointing: bool = False
    weight_bytes: int = 2
    eval_batch_size: int = 1
    patches_per_image: int = 0


def saved_per_token_layer(arch: Architecture, lora_rank: int, weight_bytes: int) -> int:
    """Bytes autograd saves per token in one LLM decoder layer for the backward pass (no checkpointing).

    Counted on Qwen2.5-VL in transformers 5.23 + peft 0.21 with ``saved_tensors_hooks`` (unique storages,
    parameters left out), on shapes that separate each term:

    - the MLP: gate output, SiLU(gate) and up output, 3·i in the weight dtype;
    - attention: queries and SDPA's output (2·h), keys and values (2·kv) in the weight dtype, SDPA's
      log-sum-exp (one fp32 per head);
    - RMSNorm: one fp32 reciprocal RMS per norm (2);
    - LoRA: each adapter's r-wide A output in fp32 (4·r);
    - the hidden-width inputs of LoRA and of the norms: in fp32 weights 3·h, shared; in bf16, peft casts
      the input of each of the four adapters to fp32 (4·h) and each RMSNorm upcasts its input (2·h).
    """
    h, kv, i = arch.hidden_size, arch.kv_dim, arch.intermediate_size
    in_weight_dtype = (3 * i + 2 * h + 2 * kv) * weight_bytes
    fp32 = arch.num_heads + 2 + 4 * lora_rank
    fp32 += 3 * h if weight_bytes == FP32_BYTES else 6 * h
    return in_weight_dtype + fp32 * FP32_BYTES


@dataclass(frozen=True)
class MemoryEstimate:
    """One trial's memory on its device, by component, in bytes (see the module's docstring).

    Attributes:
        base_weights: the frozen Qwen2_5_VLModel.
        lora_and_optimizer: LoRA + head weights, gradients and AdamW moments.
        activations: saved for the backward pass of one training step.
        workspace: gradients in flight in one layer's backward (and, with checkpointing, its recompute).
        evaluation: one no-grad evaluation batch.
        vision_cache_fill: the vision tower's forward over a batch of images, when filling the cache.
        trainable: trainable parameters.
        tokens: tokens of one training batch (batch × tokens per sample).
    """

    base_weights: int
    lora_and_optimizer: int
    activations: int
    workspace: int
    evaluation: int
    vision_cache_fill: int
    trainable: int
    tokens: int

    @property
    def training_step(self) -> int:
        """Activations + workspace: what a training step adds to the weights."""
        return self.activations + self.workspace

    @property
    def total(self) -> int:
        """The peak: weights, LoRA + optimizer, and the largest transient (step, evaluation, cache fill)."""
        transient = max(self.training_step, self.evaluation, self.vision_cache_fill)
        return self.base_weights + self.lora_and_optimizer + transient

    def components(self) -> dict[str, int]:
        """Each component by its label, in bytes, then ``total``."""
        return {
            "base weights": self.base_weights,
            "LoRA + head + AdamW": self.lora_and_optimizer,
            "activations": self.activations,
            "backward workspace": self.workspace,
            "evaluation (no grad)": self.evaluation,
            "vision cache fill": self.vision_cache_fill,
            "total (peak)": self.total,
        }


def trial_memory(arch: Architecture, shape: TrialShape) -> MemoryEstimate:
    """The memory one trial of this shape needs on its device.

    Args:
        arch: the model's numbers.
        shape: the trial's.

    Returns:
        The estimate by component; ``total`` is the peak.
    """
    w = shape.weight_bytes
    h, i = arch.hidden_size, arch.intermediate_size
    tokens = shape.batch_size * shape.tokens_per_sample
    per_layer = saved_per_token_layer(arch, shape.lora_rank, w)
    # Before the layers: the input embeddings (weight dtype) and the final norm's fp32 input and output.
    outside = tokens * (h * w + 2 * h * FP32_BYTES)
    if shape.gradient_checkpointing:
        # Each layer keeps only its input; one layer's activations come back during its backward pass.
        activations = tokens * h * w * arch.num_layers + outside
        workspace = 2 * tokens * per_layer
    else:
        activations = tokens * per_layer * arch.num_layers + outside
        workspace = tokens * per_layer
    trainable = arch.trainable_parameters(shape.lora_rank)
    eval_tokens = shape.eval_batch_size * shape.tokens_per_sample
    # The widest moment of a no-grad layer: the residual stream, gate, up and their product.
    evaluation = eval_tokens * (3 * i * w + 4 * h * FP32_BYTES)
    fill = 0
    if shape.patches_per_image:
        patches = VISION_CACHE_BATCH * shape.patches_per_image
        d, vi = arch.vision_hidden, arch.vision_intermediate
        pixels = arch.in_channels * arch.temporal_patch_size * arch.patch_size**2 * FP32_BYTES
        fill = patches * (pixels + (4 * d + 3 * vi) * w + 2 * d * FP32_BYTES)
    return MemoryEstimate(
        base_weights=arch.parameters * w,
        lora_and_optimizer=trainable * ADAMW_BYTES_PER_PARAMETER,
        activations=activations,
        workspace=workspace,
        evaluation=evaluation,
        vision_cache_fill=fill,
        trainable=trainable,
        tokens=tokens,
    )


def gib(n_bytes: float) -> float:
    """Bytes in GiB."""
    return n_bytes / 2**30


def trials_that_fit(estimate: MemoryEstimate, gpu_bytes: float) -> int:
    """How many trials of this estimate one GPU of ``gpu_bytes`` holds side by side (0: not even one)."""
    return max(math.floor(gpu_bytes / estimate.total), 0) if estimate.total else 0
