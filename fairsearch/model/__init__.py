"""Qwen2.5-VL as a LoRA-tuned glaucoma classifier: loading, inputs, LoRA + last-token head, vision cache.

Knows nothing about losses or trials. Typical use::

    backbone = load_backbone("tiny")                      # or "Qwen/Qwen2.5-VL-7B-Instruct", or a folder
    builder = InputBuilder(backbone.tokenizer, backbone.image_processor, max_pixels=...)
    classifier = build_classifier(backbone, lora_rank=32, lora_alpha=64)
    logits = classifier(builder.collate(images))          # [B, 2]

    cached = VisionCache().embeddings(backbone, builder, split)   # vision tower runs once per split
    logits = classifier(builder.text_inputs(cached.grids(idx)), image_embeds=cached[idx])
"""

from fairsearch.model.backbone import (
    TINY,
    Backbone,
    ModelParts,
    default_dtype,
    load_backbone,
    load_model_parts,
    random_backbone,
)
from fairsearch.model.classifier import (
    LORA_TARGET_MODULES,
    GlaucomaClassifier,
    LoraSettings,
    build_classifier,
    describe_trainable,
    last_token_pool,
    parameter_counts,
)
from fairsearch.model.configs import qwen2_5_vl_3b_config, qwen2_5_vl_7b_config, tiny_config
from fairsearch.model.inputs import DEFAULT_PROMPT, IMAGE_TOKEN, InputBuilder
from fairsearch.model.vision_cache import ImageSplit, SplitEmbeddings, VisionCache, default_cache_root

__all__ = [
    "DEFAULT_PROMPT",
    "IMAGE_TOKEN",
    "LORA_TARGET_MODULES",
    "TINY",
    "Backbone",
    "GlaucomaClassifier",
    "ImageSplit",
    "InputBuilder",
    "LoraSettings",
    "ModelParts",
    "SplitEmbeddings",
    "VisionCache",
    "build_classifier",
    "default_cache_root",
    "default_dtype",
    "describe_trainable",
    "last_token_pool",
    "load_backbone",
    "load_model_parts",
    "parameter_counts",
    "qwen2_5_vl_3b_config",
    "qwen2_5_vl_7b_config",
    "random_backbone",
    "tiny_config",
]
