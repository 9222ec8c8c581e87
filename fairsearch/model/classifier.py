"""Qwen2.5-VL as a glaucoma classifier: frozen backbone, LoRA on the LLM's attention, last-token head.

As in Gu et al. (2025): the vision encoder and the LLM are frozen, LoRA adapts the LLM's q/k/v/o
projections (r = 32 gives 0.24 % of Qwen2.5-VL-7B's 8.29 B parameters), and a linear head reads the
hidden state of the last non-padding token (first-token pooling collapses).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import Tensor, nn
from transformers.modeling_outputs import BaseModelOutputWithPooling

from fairsearch.model.backbone import Backbone

__all__ = [
    "LORA_TARGET_MODULES",
    "GlaucomaClassifier",
    "LoraSettings",
    "build_classifier",
    "describe_trainable",
    "last_token_pool",
    "parameter_counts",
]

logger = logging.getLogger(__name__)

#: Anchored so that LoRA lands only in the LLM's attention: the vision tower's blocks use the same
#: MLP names (gate_proj, up_proj, down_proj), and names like "all-linear" would reach them too.
LORA_TARGET_MODULES = r".*language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"
#: Logit 0 = no glaucoma, logit 1 = glaucoma.
NUM_CLASSES = 2


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA hyperparameters a classifier was built with.

    Attributes:
        rank: r, the rank of each update BA.
        alpha: Scale numerator: the update is (alpha / r)·BA.
        dropout: Dropout on the adapter's input during training.
    """

    rank: int
    alpha: float
    dropout: float = 0.0


def build_classifier(
    backbone: Backbone,
    *,
    lora_rank: int,
    lora_alpha: float,
    lora_dropout: float = 0.0,
    gradient_checkpointing: bool = False,
) -> GlaucomaClassifier:
    """Freeze the backbone, add LoRA to the LLM's attention and a trainable 2-way head.

    The backbone's model is modified in place (peft injects the adapters into it): build one classifier
    per loaded backbone.

    Args:
        backbone: From `load_backbone` (or built on the meta device to count parameters).
        lora_rank: LoRA rank r ≥ 1.
        lora_alpha: LoRA alpha > 0.
        lora_dropout: In [0, 1).
        gradient_checkpointing: Keep only each layer's input for the backward pass and recompute the
            rest there (transformers' ``activation_checkpointing_enable``, non-reentrant): the LLM's
            activations shrink from ~(3·intermediate + 10·hidden) to one hidden per token and layer
            (`fairsearch.model.memory`), for one more forward pass per step. Same gradients.

    Returns:
        The classifier, on the backbone's device, in train mode; only LoRA and head weights train.

    Raises:
        ValueError: Bad LoRA values, or the backbone already carries adapters.
    """
    if lora_rank < 1 or lora_alpha <= 0 or not 0.0 <= lora_dropout < 1.0:
        raise ValueError(
            f"need lora_rank >= 1, lora_alpha > 0, 0 <= lora_dropout < 1; "
            f"got {lora_rank}, {lora_alpha}, {lora_dropout}"
        )
    model = backbone.model
    if any(isinstance(module, BaseTunerLayer) for module in model.modules()):
        raise ValueError("this backbone already carries LoRA adapters: load a fresh backbone per classifier")
    model.requires_grad_(False)
    lora = LoraSettings(rank=lora_rank, alpha=float(lora_alpha), dropout=float(lora_dropout))
    peft_config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft annotates int; scaling is alpha / r
        lora_dropout=lora.dropout,
        target_modules=LORA_TARGET_MODULES,
        bias="none",
    )
    with warnings.catch_warnings():
        # peft 0.21 calls a transformers 5 method that warns of its own rename; nothing for us to change.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, peft_config)
    if gradient_checkpointing:
        model.activation_checkpointing_enable()
    hidden_size = int(backbone.config.get_text_config().hidden_size)
    head = nn.Linear(hidden_size, NUM_CLASSES, device=backbone.device, dtype=torch.float32)
    classifier = GlaucomaClassifier(peft_model, head, lora=lora, backbone_fingerprint=backbone.fingerprint)
    classifier.train()
    logger.info("classifier: %s", describe_trainable(classifier))
    return classifier


class GlaucomaClassifier(nn.Module):
    """Qwen2.5-VL + LoRA + a linear head on the last non-padding token's hidden state.

    Args:
        vlm: The peft-wrapped Qwen2_5_VLModel.
        head: Linear(hidden, 2), float32.
        lora: The LoRA settings (recorded in checkpoints).
        backbone_fingerprint: `Backbone.fingerprint` (recorded in checkpoints).
    """

    def __init__(self, vlm: PeftModel, head: nn.Linear, *, lora: LoraSettings, backbone_fingerprint: str):
        super().__init__()
        self.vlm = vlm
        self.head = head
        self.lora = lora
        self.backbone_fingerprint = backbone_fingerprint

    @property
    def device(self) -> torch.device:
        """Device of the head (and the model)."""
        return self.head.weight.device

    def forward(self, batch: Mapping[str, Tensor], image_embeds: Sequence[Tensor] | None = None) -> Tensor:
        """Logits for a batch of (image, prompt) samples: the head on :meth:`features`.

        Returns:
            float32 logits [B, 2].
        """
        return self.head(self.features(batch, image_embeds))

    def features(self, batch: Mapping[str, Tensor], image_embeds: Sequence[Tensor] | None = None) -> Tensor:
        """The last non-padding token's final hidden state of each sample: what the head reads.

        Args:
            batch: From `InputBuilder.collate` (or `InputBuilder.text_inputs` with `image_embeds`):
                ``input_ids`` [B, L], ``attention_mask`` [B, L], ``mm_token_type_ids`` [B, L],
                ``image_grid_thw`` [B, 3], and ``pixel_values`` [Σ patches, 1176] unless `image_embeds`
                is given. Moved to the model's device here.
            image_embeds: Precomputed vision-tower outputs, one [tokens_i, hidden] tensor per image in batch
                order (from `VisionCache`): the vision tower is then skipped.

        Returns:
            float32 features [B, hidden].
        """
        device = self.device
        kwargs: dict[str, object] = {
            name: batch[name].to(device) for name in ("input_ids", "attention_mask", "mm_token_type_ids")
        }
        kwargs["image_grid_thw"] = batch["image_grid_thw"].to(device)
        if image_embeds is not None:
            pooled = tuple(e.to(device, non_blocking=True) for e in image_embeds)
            # A tuple of per-image tensors, as Qwen2_5_VLModel.get_image_features returns it.
            encoded = BaseModelOutputWithPooling(pooler_output=pooled)  # type: ignore[arg-type]
            kwargs["mm_encoder_outputs"] = {"image": encoded}
        else:
            kwargs["pixel_values"] = batch["pixel_values"].to(device)
        outputs = self.vlm(**kwargs, use_cache=False)
        pooled_hidden = last_token_pool(outputs.last_hidden_state, kwargs["attention_mask"])  # type: ignore[arg-type]
        return pooled_hidden.float()

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The LoRA adapter weights (``lora.*``) and the head (``head.*``), detached, on the CPU."""
        state = {f"lora.{k}": v for k, v in get_peft_model_state_dict(self.vlm).items()}
        state.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        return {k: v.detach().cpu().contiguous() for k, v in state.items()}

    def load_trainable_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Set LoRA and head weights from `trainable_state_dict()` output.

        Args:
            state: Keys and shapes exactly as `trainable_state_dict()` gives them.

        Raises:
            ValueError: Missing, extra or differently shaped entries (another rank, another model).
        """
        expected = {k: v.shape for k, v in self.trainable_state_dict().items()}
        got = {k: v.shape for k, v in state.items()}
        if expected != got:
            missing = sorted(set(expected) - set(got))
            extra = sorted(set(got) - set(expected))
            shaped = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
            raise ValueError(
                f"trainable state does not fit this classifier: missing {missing[:3]}, "
                f"unexpected {extra[:3]}, other shapes {shaped[:3]}"
            )
        lora = {k.removeprefix("lora."): v for k, v in state.items() if k.startswith("lora.")}
        result = set_peft_model_state_dict(self.vlm, lora)
        if unexpected := getattr(result, "unexpected_keys", None):
            raise ValueError(f"LoRA weights not used: {sorted(unexpected)[:3]}")
        self.head.load_state_dict(
            {k.removeprefix("head."): v for k, v in state.items() if k.startswith("head.")}
        )


def last_token_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """The hidden state at each row's last non-padding position (right or left padding).

    Args:
        hidden: [B, L, H] hidden states.
        attention_mask: [B, L], 1 on real tokens.

    Returns:
        [B, H].
    """
    length = attention_mask.shape[1]
    last = length - 1 - attention_mask.flip(1).to(torch.long).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """Trainable and total parameters (shared parameters counted once; works on the meta device).

    Args:
        model: Any module.

    Returns:
        (trainable, total).
    """
    trainable = total = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total


def describe_trainable(model: nn.Module) -> str:
    """One line such as ``trainable 20,192,258 of 7,747,176,450 parameters (0.2606 %)``.

    Args:
        model: Any module.

    Returns:
        The line.
    """
    trainable, total = parameter_counts(model)
    share = 100.0 * trainable / total if total else 0.0
    return f"trainable {trainable:,} of {total:,} parameters ({share:.4f} %)"
