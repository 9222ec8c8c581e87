"""fairsearch.model: tiny Qwen2.5-VL from config (never a download), inputs, LoRA + head, vision cache."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLModel, Qwen2_5_VLProcessor
from transformers.processing_utils import ProcessorMixin

from fairsearch.errors import FairsearchError
from fairsearch.model import (
    LORA_TARGET_MODULES,
    Backbone,
    InputBuilder,
    VisionCache,
    build_classifier,
    describe_trainable,
    last_token_pool,
    load_backbone,
    parameter_counts,
    qwen2_5_vl_7b_config,
)
from fairsearch.model.backbone import TINY_SEED
from fairsearch.model.configs import QWEN_SPECIAL_TOKENS
from fairsearch.model.tiny import tiny_image_processor, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> None:
    # On a shared 2-core machine two OpenMP threads stall behind other processes (a 15 ms vision
    # forward took 0.1-1.8 s with 2 threads, 15-30 ms with 1).
    torch.set_num_threads(1)


@pytest.fixture()
def backbone() -> Backbone:
    return load_backbone("tiny")


@pytest.fixture()
def builder(backbone: Backbone) -> InputBuilder:
    return InputBuilder(backbone.tokenizer, backbone.image_processor)


def fundus(seed: int, height: int = 112, width: int = 112) -> np.ndarray:
    """A random uint8 RGB image."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


class FakeSplit:
    """The `fairsearch.data.Split` interface the vision cache needs: len, image(i), fingerprint."""

    def __init__(self, images: list[np.ndarray], fingerprint: str) -> None:
        self.images = images
        self.fingerprint = fingerprint
        self.reads = 0

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> np.ndarray:
        self.reads += 1
        return self.images[i]


# --- the tiny model ---------------------------------------------------------------------------------------


def test_tiny_model_is_identical_across_builds_and_leaves_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = load_backbone("tiny")
    assert torch.equal(torch.rand(3), expected_next)  # the seeded build does not touch the caller's RNG
    second = load_backbone("tiny")
    one, two = first.model.state_dict(), second.model.state_dict()
    assert one.keys() == two.keys()
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert first.fingerprint == second.fingerprint
    assert first.tokenizer.backend_tokenizer.to_str() == second.tokenizer.backend_tokenizer.to_str()


@pytest.mark.slow
def test_tiny_model_is_identical_in_a_fresh_process(backbone: Backbone) -> None:
    code = "from fairsearch.model import load_backbone; print(load_backbone('tiny').fingerprint)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == backbone.fingerprint


def test_tiny_config_matches_tokenizer(backbone: Backbone) -> None:
    config, tokenizer = backbone.config, backbone.tokenizer
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert config.vision_end_token_id == tokenizer.convert_tokens_to_ids("<|vision_end|>")
    assert len(tokenizer) <= config.text_config.vocab_size
    ids = [tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # after the learned vocabulary, in Qwen's order
    text = config.text_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (64, 2, 4)
    assert text.num_key_value_heads == 2
    head_dim = text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    vision = config.vision_config
    assert (vision.depth, vision.hidden_size, vision.patch_size, vision.spatial_merge_size) == (2, 64, 14, 2)
    assert vision.out_hidden_size == 64
    assert backbone.model.config._attn_implementation == "sdpa"
    assert backbone.dtype == torch.float32
    assert not hasattr(backbone.model, "lm_head")
    assert TINY_SEED == 20251203


# --- loading from a folder, and what a missing model says ------------------------------------------------


@pytest.mark.parametrize("layout", ["legacy", "current"])
def test_load_backbone_from_a_saved_folder(backbone: Backbone, tmp_path: Path, layout: str) -> None:
    full = Qwen2_5_VLForConditionalGeneration(backbone.config)
    full.model.load_state_dict(backbone.model.state_dict())
    full.save_pretrained(tmp_path)
    backbone.tokenizer.save_pretrained(tmp_path)
    backbone.image_processor.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    with safe_open(str(weights), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" in keys
    if layout == "legacy":  # what transformers writes, and what the hub's Qwen2.5-VL files hold
        assert any(k.startswith("model.layers.") for k in keys) and any(k.startswith("visual.") for k in keys)
    else:  # newer checkpoints: model.language_model.* and model.visual.*
        state = load_file(str(weights))
        current = [(r"^model\.(?!visual)", "model.language_model."), (r"^visual\.", "model.visual.")]
        renamed = {}
        for key, value in state.items():
            for pattern, replacement in current:
                key = re.sub(pattern, replacement, key)
            renamed[key] = value
        assert any(k.startswith("model.language_model.layers.") for k in renamed)
        save_file(renamed, str(weights), metadata={"format": "pt"})

    loaded = load_backbone(str(tmp_path))

    assert isinstance(loaded.model, Qwen2_5_VLModel) and not hasattr(loaded.model, "lm_head")
    expected, got = backbone.model.state_dict(), loaded.model.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert loaded.model.config._attn_implementation == "sdpa"
    assert loaded.dtype == torch.float32
    text = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Does this show glaucoma?"
    assert loaded.tokenizer(text).input_ids == backbone.tokenizer(text).input_ids
    assert loaded.image_processor.to_dict() == backbone.image_processor.to_dict()
    assert (
        loaded.fingerprint.startswith(f"{tmp_path}:")
        and loaded.fingerprint == load_backbone(str(tmp_path)).fingerprint
    )


def test_a_small_model_folder_remade_in_place_gets_a_new_fingerprint(
    backbone: Backbone, tmp_path: Path
) -> None:
    # e.g. scripts/pretrain_tiny.py run again with other settings: same names and sizes, other weights,
    # whose vision cache entries must not be reused
    full = Qwen2_5_VLForConditionalGeneration(backbone.config)
    full.model.load_state_dict(backbone.model.state_dict())
    full.save_pretrained(tmp_path)
    backbone.tokenizer.save_pretrained(tmp_path)
    backbone.image_processor.save_pretrained(tmp_path)
    size, before = (tmp_path / "model.safetensors").stat().st_size, load_backbone(str(tmp_path)).fingerprint
    with torch.no_grad():
        next(full.model.visual.parameters()).add_(0.01)
    full.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").stat().st_size == size
    assert load_backbone(str(tmp_path)).fingerprint != before


def test_missing_hub_model_says_where_it_looked_and_how_to_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    expected = (
        f"model 'Qwen/Qwen2.5-VL-7B-Instruct' is not in the local Hugging Face cache (looked in {tmp_path}/hub; "
        f"no folder 'Qwen/Qwen2.5-VL-7B-Instruct' either); fairsearch never downloads: on a machine with "
        f"internet access run `huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct`, then copy that "
        f"machine's ~/.cache/huggingface to this one, or set HF_HOME to the copied folder (the one holding hub/)"
    )
    with pytest.raises(FairsearchError, match=f"^{re.escape(expected)}$"):
        load_backbone("Qwen/Qwen2.5-VL-7B-Instruct")


def test_missing_or_empty_folder_messages(tmp_path: Path) -> None:
    fetch = (
        "fairsearch never downloads: make the folder on a machine with internet access with "
        "`huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct --local-dir DIR` and copy it here"
    )
    missing = tmp_path / "models" / "qwen" / "7b"
    with pytest.raises(FairsearchError) as err:
        load_backbone(str(missing))
    assert str(err.value) == (
        f"model folder '{missing}' does not exist (and '{missing}' is not 'tiny', 'tiny-pretrained' or a hub "
        f"id like 'Qwen/Qwen2.5-VL-7B-Instruct'); {fetch}"
    )
    with pytest.raises(FairsearchError) as err:
        load_backbone(str(tmp_path))
    assert str(err.value) == (
        f"model folder '{tmp_path}' has no config.json, so it is not a Hugging Face model folder; {fetch}"
    )


# --- inputs -------------------------------------------------------------------------------------------------


def test_input_token_rule(backbone: Backbone, builder: InputBuilder) -> None:
    tokenizer = backbone.tokenizer
    pixels, grid = builder.encode_image(fundus(0, 112, 96))
    assert grid.tolist() == [1, 8, 6]  # 112×96 is already a multiple of 28: 8×6 patches of 14
    assert pixels.shape == (48, 3 * 2 * 14 * 14) and pixels.dtype == torch.float32
    n_image = 1 * 8 * 6 // 2**2
    assert builder.num_image_tokens(112, 96) == n_image == 12

    batch = builder.text_inputs([grid])
    ids = batch["input_ids"][0].tolist()
    # The documented rule: chat template with one <|image_pad|>, repeated grid_t·grid_h·grid_w / merge².
    expanded = builder.prompt_text.replace("<|image_pad|>", "<|image_pad|>" * n_image)
    assert ids == tokenizer(expanded, add_special_tokens=False).input_ids
    assert builder.prompt_text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Does this fundus image show glaucoma? Answer yes or no."
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    tokens = tokenizer.convert_ids_to_tokens(ids)
    start = tokens.index("<|vision_start|>")
    assert tokens[start + 1 : start + 1 + n_image] == ["<|image_pad|>"] * n_image
    assert tokens[start + 1 + n_image] == "<|vision_end|>"
    assert tokens.count("<|image_pad|>") == n_image
    assert tokenizer.decode(ids[-3:]) == "<|im_start|>assistant\n"
    type_ids = batch["mm_token_type_ids"][0]
    assert type_ids.tolist() == [int(t == "<|image_pad|>") for t in tokens]
    assert batch["attention_mask"].tolist() == [[1] * len(ids)]
    assert batch["image_grid_thw"].tolist() == [[1, 8, 6]]


def test_image_size_sets_token_count(builder: InputBuilder, backbone: Backbone) -> None:
    assert builder.num_image_tokens(664, 512) == 432  # FairVLMed SLO fundus: 672×504 → 48×36 patches
    small = InputBuilder(backbone.tokenizer, backbone.image_processor, max_pixels=224 * 224)
    grid = small.encode_image(fundus(1, 664, 512))[1]
    assert grid.tolist() == [1, 18, 14]  # resized to 252×196 pixels, under 224·224
    assert small.num_image_tokens(664, 512) == 18 * 14 // 4 == 63
    assert small.image_settings != builder.image_settings
    processor_size = backbone.image_processor.size["longest_edge"]
    assert processor_size == 28 * 28 * 1280  # the shared processor is untouched


def test_collate_right_pads_and_accepts_grey_images(backbone: Backbone, builder: InputBuilder) -> None:
    images = [fundus(1, 112, 112), fundus(2, 168, 140)[:, :, 0], fundus(3, 56, 56)[:, :, :1]]
    batch = builder.collate(images)
    lengths = [len(builder.token_ids(g)) for g in batch["image_grid_thw"]]
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8], [1, 12, 10], [1, 4, 4]]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    for row, length in enumerate(lengths):
        assert batch["attention_mask"][row, :length].all() and not batch["attention_mask"][row, length:].any()
        assert (batch["input_ids"][row, length:] == backbone.tokenizer.pad_token_id).all()
    assert batch["mm_token_type_ids"].sum(1).tolist() == [16, 30, 4]
    assert batch["pixel_values"].shape == (64 + 120 + 16, 1176)
    with pytest.raises(ValueError, match="expected a uint8 image, got float32"):
        builder.encode_image(np.zeros((56, 56, 3), dtype=np.float32))


def test_inputs_equal_qwen2_5_vl_processor(
    backbone: Backbone, builder: InputBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Qwen2_5_VLProcessor's constructor checks its video-processor class, which needs torchvision; its
    # own expansion and tokenisation code runs without it once that one check is bypassed.
    monkeypatch.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda self, name, arg: None)
    processor = Qwen2_5_VLProcessor(
        image_processor=tiny_image_processor(), tokenizer=backbone.tokenizer, video_processor=None
    )
    images = [fundus(4, 112, 96), fundus(5, 150, 120)]
    expected = processor(images=images, text=[builder.prompt_text] * 2, padding=True, return_tensors="pt")
    got = builder.collate(images)
    assert set(got) == set(expected) - {"pixel_values_videos", "video_grid_thw"}
    for key, value in got.items():
        assert torch.equal(value, expected[key]), key


# --- LoRA + head --------------------------------------------------------------------------------------------


def test_lora_only_in_llm_attention(backbone: Backbone) -> None:
    rank = 4
    classifier = build_classifier(backbone, lora_rank=rank, lora_alpha=8)
    adapted = {
        name.removeprefix("vlm.base_model.model.")
        for name, module in classifier.named_modules()
        if hasattr(module, "lora_A") and len(module.lora_A)
    }
    assert adapted == {f"language_model.layers.{i}.self_attn.{p}" for i in range(2) for p in ATTENTION}
    assert not any("visual" in name for name, _ in classifier.named_parameters() if "lora" in name)
    trainable = {name for name, p in classifier.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in classifier.named_parameters() if "lora_" in n} | {
        "head.weight",
        "head.bias",
    }
    assert not any(p.requires_grad for p in backbone.model.visual.parameters())
    # q, o: 64→64; k, v: 64→2·16 = 32. Each adapter holds r·(in + out).
    per_layer = rank * ((64 + 64) * 2 + (64 + 32) * 2)
    assert parameter_counts(classifier)[0] == 2 * per_layer + 64 * 2 + 2
    assert re.fullmatch(LORA_TARGET_MODULES, "language_model.layers.11.self_attn.v_proj")
    assert not re.fullmatch(LORA_TARGET_MODULES, "visual.blocks.0.mlp.up_proj")
    with pytest.raises(ValueError, match="already carries LoRA adapters"):
        build_classifier(backbone, lora_rank=rank, lora_alpha=8)


def test_training_reduces_loss_on_a_fixed_batch(backbone: Backbone, builder: InputBuilder) -> None:
    torch.manual_seed(0)
    classifier = build_classifier(backbone, lora_rank=8, lora_alpha=16)
    batch = builder.collate([fundus(i, 56, 56) for i in range(8)])
    labels = torch.tensor([0, 1] * 4)
    optimizer = torch.optim.AdamW([p for p in classifier.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(classifier(batch), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    lora_b = [p for n, p in classifier.named_parameters() if "lora_B" in n]
    assert all(p.abs().sum() > 0 for p in lora_b)  # gradients reached the adapters, not only the head


def test_last_token_pool_picks_last_real_token() -> None:
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert torch.equal(last_token_pool(hidden, right), torch.stack([hidden[0, 2], hidden[1, 4]]))
    left = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    assert torch.equal(last_token_pool(hidden, left), torch.stack([hidden[0, 4], hidden[1, 4]]))


def test_padding_changes_nothing(backbone: Backbone, builder: InputBuilder) -> None:
    classifier = build_classifier(backbone, lora_rank=4, lora_alpha=8).eval()
    small, large = fundus(6, 56, 84), fundus(7, 140, 112)
    with torch.no_grad():
        alone = classifier(builder.collate([small]))
        padded = builder.collate([small, large])
        assert padded["attention_mask"][0].sum() < padded["attention_mask"].shape[1]  # small is padded
        together = classifier(padded)
    torch.testing.assert_close(together[:1], alone, atol=1e-5, rtol=1e-5)


def test_mm_token_type_ids_and_no_cache_reach_the_model(backbone: Backbone, builder: InputBuilder) -> None:
    classifier = build_classifier(backbone, lora_rank=4, lora_alpha=8)
    seen: dict[str, object] = {}
    backbone.model.register_forward_pre_hook(lambda m, args, kwargs: seen.update(kwargs), with_kwargs=True)
    batch = builder.collate([fundus(8)])
    logits = classifier(batch)
    assert logits.shape == (1, 2) and logits.dtype == torch.float32
    assert torch.equal(seen["mm_token_type_ids"], batch["mm_token_type_ids"])
    assert seen["use_cache"] is False
    # With mm_token_type_ids the model computed 3-D (M-RoPE) positions: image tokens share a temporal index.
    positions, _ = backbone.model.get_rope_index(
        batch["input_ids"],
        batch["mm_token_type_ids"],
        batch["image_grid_thw"],
        attention_mask=batch["attention_mask"],
    )
    image = batch["mm_token_type_ids"][0].bool()
    assert positions[0, 0, image].unique().numel() == 1 and positions[1, 0, image].unique().numel() == 4


def test_trainable_state_round_trip(backbone: Backbone, builder: InputBuilder) -> None:
    torch.manual_seed(1)
    classifier = build_classifier(backbone, lora_rank=4, lora_alpha=8)
    batch = builder.collate([fundus(i, 56, 84) for i in range(4)])
    optimizer = torch.optim.AdamW([p for p in classifier.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        torch.nn.functional.cross_entropy(classifier(batch), torch.tensor([0, 1, 0, 1])).backward()
        optimizer.step()
        optimizer.zero_grad()
    classifier.eval()
    with torch.no_grad():
        expected = classifier(batch)
    state = classifier.trainable_state_dict()
    assert set(state) == {k for k in state if k.startswith(("lora.", "head."))} and len(state) == 16 + 2

    torch.manual_seed(2)
    fresh = build_classifier(load_backbone("tiny"), lora_rank=4, lora_alpha=8).eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(batch), expected)
    fresh.load_trainable_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(batch), expected)

    other = build_classifier(load_backbone("tiny"), lora_rank=8, lora_alpha=8)
    with pytest.raises(ValueError, match="does not fit this classifier"):
        other.load_trainable_state_dict(state)


# --- the paper's 7B architecture on the meta device --------------------------------------------------------


def test_qwen2_5_vl_7b_lora_r32_trainable_share() -> None:
    config = qwen2_5_vl_7b_config()
    with torch.device("meta"):
        with_lm_head = parameter_counts(Qwen2_5_VLForConditionalGeneration(config))[1]
        model = Qwen2_5_VLModel(config)
    assert with_lm_head == 8_292_166_656
    base = parameter_counts(model)[1]
    assert base == 7_747_169_280 == with_lm_head - 152064 * 3584
    backbone = Backbone(model, tiny_tokenizer(), tiny_image_processor(), "qwen2.5-vl-7b", "meta")
    classifier = build_classifier(backbone, lora_rank=32, lora_alpha=64)
    trainable, total = parameter_counts(classifier)
    lora = trainable - (3584 * 2 + 2)
    assert lora == 20_185_088 == 28 * 32 * ((3584 + 3584) * 2 + (3584 + 512) * 2)
    assert total == base + trainable
    assert round(100 * lora / with_lm_head, 3) == 0.243  # the paper's "0.24 %"
    assert round(100 * lora / base, 3) == 0.261
    assert describe_trainable(classifier) == "trainable 20,192,258 of 7,767,361,538 parameters (0.2600 %)"


# --- the vision cache ---------------------------------------------------------------------------------------


def test_vision_cache_same_logits_and_no_vision_tower_on_reuse(
    backbone: Backbone, builder: InputBuilder, tmp_path: Path
) -> None:
    classifier = build_classifier(backbone, lora_rank=4, lora_alpha=8).eval()
    calls = []
    backbone.model.visual.register_forward_hook(lambda *_: calls.append(1))
    split = FakeSplit([fundus(10, 112, 112), fundus(11, 84, 140), fundus(12, 56, 56), fundus(13)], "split-a")

    cached = VisionCache(tmp_path).embeddings(backbone, builder, split, batch_size=3)
    assert len(calls) == 2 and len(cached) == 4  # ceil(4 / 3) vision-tower calls
    indices = [3, 1, 2]
    batch = builder.collate([split.images[i] for i in indices])
    assert torch.equal(cached.grids(indices), batch["image_grid_thw"])
    assert torch.equal(torch.stack([cached.grid(i) for i in indices]), batch["image_grid_thw"])
    embeds = cached[indices]
    assert [e.shape for e in embeds] == [(16, 64), (15, 64), (4, 64)]
    with torch.no_grad():
        direct = classifier(batch)
        n_calls = len(calls)
        via_cache = classifier(builder.text_inputs(cached.grids(indices)), image_embeds=embeds)
    assert len(calls) == n_calls  # image_embeds skip the vision tower
    torch.testing.assert_close(via_cache, direct, atol=1e-5, rtol=1e-4)

    reads, n_calls = split.reads, len(calls)
    again = VisionCache(tmp_path).embeddings(backbone, builder, split)
    assert len(calls) == n_calls and split.reads == reads  # reused: no vision tower, no image reads
    assert again.folder == cached.folder
    assert all(torch.equal(a, b) for a, b in zip(again[indices], embeds, strict=True))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_vision_cache_key_and_bfloat16_storage(backbone: Backbone, tmp_path: Path) -> None:
    builder = InputBuilder(backbone.tokenizer, backbone.image_processor)
    split = FakeSplit([fundus(20), fundus(21, 56, 84)], "split-b")
    cache = VisionCache(tmp_path)
    key = cache.key(backbone, builder, split)
    smaller = InputBuilder(backbone.tokenizer, backbone.image_processor, max_pixels=56 * 56)
    assert cache.key(backbone, smaller, split) != key
    assert cache.key(backbone, builder, FakeSplit(split.images, "split-c")) != key
    assert cache.key(load_backbone("tiny"), builder, split) == key  # same model in another trial

    bf16 = load_backbone("tiny", dtype=torch.bfloat16)
    assert cache.key(bf16, builder, split) != key
    stored = cache.embeddings(bf16, builder, split)
    batch = builder.collate(split.images)
    with torch.inference_mode():
        expected = bf16.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output
    got = stored[[0, 1]]
    assert all(g.dtype == torch.bfloat16 and torch.equal(g, e) for g, e in zip(got, expected, strict=True))


# --- the GPU benchmark, in its CPU smoke mode ---------------------------------------------------------------


def test_gpu_step_benchmark_runs_in_tiny_mode() -> None:
    spec = importlib.util.spec_from_file_location("gpu_step", ROOT / "benchmarks" / "gpu_step.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--tiny", "--device", "cpu", "--height", "112", "--width", "112", "--batch-size", "2"]
    result = module.main([*args, "--steps", "2", "--warmup", "1", "--peak-tflops", "1"])
    assert result["image_tokens_per_sample"] == 16 and result["tokens_per_step"] == 2 * result["seq_len"]
    assert result["step_s_median"] > 0 and 0 < result["mfu_needed"] < result["mfu_6nt"] * 10
    assert result["trainable"] == 2 * 32 * ((64 + 64) * 2 + (64 + 32) * 2) + 130


def test_a_damaged_vision_cache_entry_is_refused_from_its_headers(backbone: Backbone, tmp_path: Path) -> None:
    builder = InputBuilder(backbone.tokenizer, backbone.image_processor)
    split = FakeSplit([fundus(30), fundus(31)], "split-d")
    entry = VisionCache(tmp_path).embeddings(backbone, builder, split).folder
    header = {"descr": "<i8", "fortran_order": False, "shape": (1 << 40,)}
    with open(entry / "offsets.npy", "wb") as f:  # a tiny file declaring 8 TiB of offsets
        np.lib.format.write_array_header_2_0(f, header)
    with pytest.raises(
        FairsearchError,
        match=r"vision cache entry .* is damaged \(.*offsets.npy: array 'offsets' declares shape \(1099511627776,\).*; delete it",
    ):
        VisionCache(tmp_path).embeddings(backbone, builder, split)
