"""Time one LoRA training step of the paper's setup: Qwen2.5-VL-7B, r = 32, batch 8, FairVLMed-size images.

The 7B architecture is built from its config with random weights directly on the GPU in bf16 (no
download; the numbers of a step do not depend on the weights' values). Images are random uint8 arrays of
FairVLMed's SLO fundus size (664×512), resized by Qwen's smart_resize under ``--max-pixels`` (432 image
tokens each at the default), so the token count is the paper's. Each step is forward + backward + AdamW
over the LoRA and head weights; ``--vision pixels`` runs the frozen vision tower in every step, ``--vision
cached`` feeds precomputed image embeddings as fairsearch's vision cache does.

Examples::

    python benchmarks/gpu_step.py                          # 7B on cuda, bf16, batch 8
    python benchmarks/gpu_step.py --vision cached --steps 20
    python benchmarks/gpu_step.py --tiny --device cpu      # smoke mode: the tiny model on the CPU

Reported: step time (mean and median), samples/s, tokens/s, peak GPU memory, and model FLOPs utilisation
against ``--peak-tflops`` (H100 SXM bf16 dense: 989). MFU is given two ways: the usual 6·N·T (N = the LLM's
non-embedding parameters, T = tokens per step: 2·N·T forward + 4·N·T backward), which over-counts here
because the frozen base computes no weight gradients; and the FLOPs the step needs, 4·N·T (forward +
activation gradients) + attention (≈ 3 × 4·L·d per token per layer, forward + backward) + the vision
tower's forward 2·N_vision per patch when it runs. LoRA's own FLOPs (< 0.3 % of N) are left out.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fairsearch.model import (
    InputBuilder,
    build_classifier,
    load_backbone,
    parameter_counts,
    qwen2_5_vl_7b_config,
    random_backbone,
)
from fairsearch.model.backbone import Backbone, token_id
from fairsearch.model.configs import QWEN_SPECIAL_TOKENS
from fairsearch.model.tiny import tiny_tokenizer

logger = logging.getLogger("gpu_step")

H100_BF16_DENSE_TFLOPS = 989.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the built-in tiny model (smoke mode)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=32, help="LoRA rank")
    parser.add_argument("--alpha", type=float, default=64.0, help="LoRA alpha")
    parser.add_argument("--height", type=int, default=664, help="image height (FairVLMed SLO: 664)")
    parser.add_argument("--width", type=int, default=512, help="image width (FairVLMed SLO: 512)")
    parser.add_argument("--max-pixels", type=int, default=None, help="default: the processor's")
    parser.add_argument("--vision", choices=["pixels", "cached"], default="pixels")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--peak-tflops", type=float, default=None, help="default: 989 on cuda")
    return parser.parse_args(argv)


def build_backbone(tiny: bool, device: torch.device) -> Backbone:
    if tiny:
        return load_backbone("tiny", device=device)
    tokenizer = tiny_tokenizer()  # the 7B config is given the tiny tokenizer's special-token ids
    config = qwen2_5_vl_7b_config({t: token_id(tokenizer, t) for t in QWEN_SPECIAL_TOKENS})
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return random_backbone(
        config,
        tokenizer=tokenizer,
        name="qwen2.5-vl-7b-random",
        device=device,
        dtype=dtype,
        build_on_device=True,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and log its numbers.

    Args:
        argv: Command-line arguments (None: sys.argv).

    Returns:
        The numbers: step_s_mean, step_s_median, samples_per_s, tokens_per_step, peak_mem_gib (cuda),
        mfu_6nt and mfu_needed (when a peak is known), and the counts behind them.
    """
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    peak_tflops = args.peak_tflops or (H100_BF16_DENSE_TFLOPS if device.type == "cuda" else None)
    start = time.monotonic()
    backbone = build_backbone(args.tiny, device)
    logger.info(
        "built %s on %s in %.1f s (%s)", backbone.name, device, time.monotonic() - start, backbone.dtype
    )

    builder = InputBuilder(backbone.tokenizer, backbone.image_processor, max_pixels=args.max_pixels)
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(args.batch_size)
    ]
    batch = {k: v.to(device) for k, v in builder.collate(images).items()}
    labels = torch.tensor([i % 2 for i in range(args.batch_size)], device=device)
    image_embeds: list[Tensor] | None = None
    if args.vision == "cached":
        with torch.inference_mode():
            outputs = backbone.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
        image_embeds = [e.clone() for e in outputs.pooler_output]

    llm = backbone.model.language_model
    n_llm = sum(p.numel() for p in llm.parameters()) - llm.embed_tokens.weight.numel()
    n_vision = sum(p.numel() for p in backbone.model.visual.parameters())
    classifier = build_classifier(backbone, lora_rank=args.rank, lora_alpha=args.alpha)
    trainable, total = parameter_counts(classifier)
    optimizer = torch.optim.AdamW([p for p in classifier.parameters() if p.requires_grad], lr=1e-4)

    def step() -> float:
        logits = classifier(batch, image_embeds)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    for _ in range(args.warmup):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)

    seq_len = int(batch["input_ids"].shape[1])
    tokens = int(batch["attention_mask"].sum())
    patches = int(batch["image_grid_thw"].prod(-1).sum())
    text_config = backbone.config.get_text_config()
    attention = 3 * 4 * seq_len * text_config.hidden_size * text_config.num_hidden_layers * tokens
    flops_6nt = 6 * n_llm * tokens
    flops_needed = 4 * n_llm * tokens + attention + (2 * n_vision * patches if image_embeds is None else 0)
    mean, median = statistics.mean(times), statistics.median(times)
    result: dict[str, Any] = {
        "model": backbone.name,
        "device": str(device),
        "dtype": str(backbone.dtype),
        "batch_size": args.batch_size,
        "vision": args.vision,
        "seq_len": seq_len,
        "image_tokens_per_sample": int(batch["mm_token_type_ids"][0].sum()),
        "tokens_per_step": tokens,
        "trainable": trainable,
        "total": total,
        "n_llm_non_embedding": n_llm,
        "n_vision": n_vision,
        "step_s_mean": mean,
        "step_s_median": median,
        "samples_per_s": args.batch_size / median,
        "tokens_per_s": tokens / median,
    }
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if peak_tflops:
        result["mfu_6nt"] = flops_6nt / median / (peak_tflops * 1e12)
        result["mfu_needed"] = flops_needed / median / (peak_tflops * 1e12)
    _report(result, peak_tflops)
    return result


def _report(result: dict[str, Any], peak_tflops: float | None) -> None:
    logger.info(
        "%s on %s (%s), batch %d, vision %s: %d tokens/sample (%d image), %d tokens/step",
        result["model"],
        result["device"],
        result["dtype"],
        result["batch_size"],
        result["vision"],
        result["seq_len"],
        result["image_tokens_per_sample"],
        result["tokens_per_step"],
    )
    logger.info(
        "trainable %s of %s parameters (%.4f %%); LLM non-embedding N = %s, vision %s",
        f"{result['trainable']:,}",
        f"{result['total']:,}",
        100 * result["trainable"] / result["total"],
        f"{result['n_llm_non_embedding']:,}",
        f"{result['n_vision']:,}",
    )
    logger.info(
        "step %.1f ms (mean %.1f ms), %.2f samples/s, %.0f tokens/s",
        1e3 * result["step_s_median"],
        1e3 * result["step_s_mean"],
        result["samples_per_s"],
        result["tokens_per_s"],
    )
    if "peak_mem_gib" in result:
        logger.info("peak GPU memory %.2f GiB", result["peak_mem_gib"])
    if peak_tflops:
        logger.info(
            "MFU vs %.0f TFLOP/s: %.1f %% by 6·N·T, %.1f %% by the FLOPs the step needs (4·N·T + attention%s)",
            peak_tflops,
            100 * result["mfu_6nt"],
            100 * result["mfu_needed"],
            " + vision forward" if result["vision"] == "pixels" else "",
        )
    else:
        logger.info("MFU: n/a (no peak known for %s; pass --peak-tflops)", result["device"])


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    main()
