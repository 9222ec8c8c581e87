"""The built-in tiny Qwen2.5-VL tokenizer and image processor, built offline and deterministically.

The tokenizer is a byte-level BPE trained with `tokenizers` on a fixed corpus (a few milliseconds, so it
is rebuilt rather than cached) and carries Qwen's special tokens after its learned vocabulary, as the real
Qwen2 tokenizer does. Every process builds exactly the same one.
"""

from __future__ import annotations

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast, Qwen2VLImageProcessorPil

from fairsearch.model.configs import QWEN_SPECIAL_TOKENS, TINY_VOCAB_SIZE

__all__ = ["QWEN2_5_VL_CHAT_TEMPLATE", "tiny_image_processor", "tiny_tokenizer"]

#: The chat template of Qwen2.5-VL-Instruct (its ``chat_template.json``), used by the tiny tokenizer and as a
#: fallback for a tokenizer that ships without one.
QWEN2_5_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Text the BPE merges are learned from: the chat scaffolding, the prompt and words of the task.
_CORPUS = (
    "system\nYou are a helpful assistant.\nuser\nassistant\n",
    "Does this fundus image show glaucoma? Answer yes or no.",
    "yes no Yes No glaucoma normal fundus image retina optic disc cup cup-to-disc ratio nerve rim",
    "Is there glaucoma in this scanning laser ophthalmoscopy (SLO) fundus photograph of the eye?",
    "The patient is a 63 year old woman. The optic nerve head shows cupping and thinning of the rim.",
    "Picture 1: Video 1: answer question show does this the a an of in is are there",
)

#: Learned vocabulary size (bytes + merges); the special tokens follow it.
_BPE_VOCAB_SIZE = 448


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """Build the tiny byte-level BPE tokenizer with Qwen's special tokens and chat template.

    Returns:
        A fast tokenizer: ``<|endoftext|>`` pads, ``<|im_end|>`` ends; all ids < the tiny vocabulary size.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_CORPUS) * 4, trainer)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    if tokenizer.get_vocab_size() > TINY_VOCAB_SIZE:  # pragma: no cover - a recipe change would trip this
        raise RuntimeError(f"tiny tokenizer has {tokenizer.get_vocab_size()} ids > {TINY_VOCAB_SIZE}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="right",
        chat_template=QWEN2_5_VL_CHAT_TEMPLATE,
        model_max_length=32768,
    )


def tiny_image_processor() -> Qwen2VLImageProcessorPil:
    """Qwen2-VL's PIL image processor with the real model's defaults (patch 14, merge 2, CLIP mean/std).

    Returns:
        The processor; ``InputBuilder(max_pixels=...)`` bounds the image size per use.
    """
    return Qwen2VLImageProcessorPil(
        patch_size=14, merge_size=2, temporal_patch_size=2, min_pixels=56 * 56, max_pixels=28 * 28 * 1280
    )
