"""One LoRA training step at the real sizes (Qwen2.5-VL-3B, 7B) with random weights, and the memory model's
prediction of its peak beside the measured one.

Each size runs in a child process of its own: it builds the architecture from its config
(``fairsearch.model.configs``) with random weights directly in the weight dtype (no download, no fp32
copy first), builds the classifier as a trial does (``build_classifier``: LoRA on q/k/v/o, r = 32 by
default, last-token head, optional gradient checkpointing), feeds one batch of FairVLMed-size images
(664×512 → 432 image tokens) as the vision cache does (precomputed image embeddings; the vision tower's
weights are loaded but do not run), and takes one AdamW step, timed.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``. On the CPU the child's peak resident set: the
kernel's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs`` once the libraries are
imported) minus the resident set at that moment (``VmRSS``), so it counts the model, the step and
everything they allocate, and nothing of Python's and the libraries' own start-up. glibc's mmap
threshold is fixed (``MALLOC_MMAP_THRESHOLD_``) so that a freed tensor goes back to the kernel instead of
staying in the heap: the high-water mark then follows the tensors alive, as a GPU's allocator counts them.

Predicted: ``fairsearch.model.memory.trial_memory`` on the same numbers (weights, LoRA + AdamW,
activations, backward workspace; the evaluation and cache-fill transients are left out, as this step
has neither). Before a size runs on the CPU, its prediction is compared with the memory this machine has
free (less 1 GiB) and with ``--max-memory`` (10 GiB by default, for a machine shared with others): a size
above either is skipped and the reason printed (7B in bf16 is 14.4 GiB of weights alone).

Examples::

    .venv/bin/python benchmarks/real_size_step.py                         # 3B then 7B on the CPU, bf16, batch 1
    .venv/bin/python benchmarks/real_size_step.py --sizes 3b --gradient-checkpointing both
    .venv/bin/python benchmarks/real_size_step.py --sizes tiny --batch-size 16 --dtype float32
    .venv/bin/python benchmarks/real_size_step.py --device cuda --batch-size 8   # on a GPU
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fairsearch.model.memory import Architecture, TrialShape, gib, trial_memory  # noqa: E402

SIZES = ("tiny", "3b", "7b")
DTYPES = {"bfloat16": 2, "float32": 4}
FAIRVLMED_HEIGHT, FAIRVLMED_WIDTH = 664, 512
MARGIN_BYTES = 1 << 30
"""Free memory a size's prediction must leave on this machine before it is run."""
MMAP_THRESHOLD = 1 << 16


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=["3b", "7b"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--dtype", choices=list(DTYPES), default="bfloat16", help="weight dtype")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rank", type=int, default=32, help="LoRA rank")
    parser.add_argument(
        "--gradient-checkpointing", choices=["off", "on", "both"], default="off", help="'both': one run each"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the child")
    parser.add_argument(
        "--max-memory",
        type=float,
        default=10.0,
        metavar="GIB",
        help="skip a size whose predicted peak is above this (default 10: a machine shared with others)",
    )
    parser.add_argument("--force", action="store_true", help="run a size even if it looks too large")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------------ child
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(
    size: str, device: str, dtype: str, batch_size: int, rank: int, checkpointing: bool
) -> dict[str, Any]:
    """Builds the model of ``size`` and takes one training step; returns what was measured. Run it in a
    process of its own: on the CPU it reads and resets that process's memory high-water mark."""
    import numpy as np
    import torch

    from fairsearch.model import (
        InputBuilder,
        build_classifier,
        parameter_counts,
        qwen2_5_vl_3b_config,
        qwen2_5_vl_7b_config,
        random_backbone,
    )
    from fairsearch.model.backbone import TINY_SEED, token_id
    from fairsearch.model.configs import QWEN_SPECIAL_TOKENS, tiny_config
    from fairsearch.model.tiny import tiny_tokenizer

    weight_dtype = getattr(torch, dtype)
    dev = torch.device(device)
    tokenizer = tiny_tokenizer()  # the real architectures get the tiny tokenizer's special-token ids
    ids = {t: token_id(tokenizer, t) for t in QWEN_SPECIAL_TOKENS}
    config = {"tiny": tiny_config, "3b": qwen2_5_vl_3b_config, "7b": qwen2_5_vl_7b_config}[size](ids)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # the high-water mark restarts from here
        base = _status_kib("VmRSS") * 1024
    start = time.perf_counter()
    backbone = random_backbone(
        config,
        tokenizer=tokenizer,
        name=f"qwen2.5-vl-{size}-random",
        seed=TINY_SEED,
        device=dev,
        dtype=weight_dtype,
        build_on_device=True,
    )
    build_s = time.perf_counter() - start
    weights = (torch.cuda.memory_allocated(dev) if dev.type == "cuda" else _status_kib("VmRSS") * 1024) - base

    builder = InputBuilder(backbone.tokenizer, backbone.image_processor)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (FAIRVLMED_HEIGHT, FAIRVLMED_WIDTH, 3), dtype=np.uint8)
    _, grid = builder.encode_image(image)
    batch = {k: v.to(dev) for k, v in builder.text_inputs([grid] * batch_size).items()}
    n_image = int(builder.num_image_tokens(FAIRVLMED_HEIGHT, FAIRVLMED_WIDTH))
    out_hidden = Architecture.from_config(config.to_dict()).out_hidden
    generator = torch.Generator().manual_seed(0)
    embeds = [
        torch.randn(n_image, out_hidden, generator=generator).to(dev, weight_dtype) for _ in range(batch_size)
    ]
    labels = torch.tensor([i % 2 for i in range(batch_size)], device=dev)

    torch.manual_seed(0)
    classifier = build_classifier(
        backbone, lora_rank=rank, lora_alpha=2.0 * rank, gradient_checkpointing=checkpointing
    )
    trainable, total = parameter_counts(classifier)
    optimizer = torch.optim.AdamW([p for p in classifier.parameters() if p.requires_grad], lr=1e-4)

    start = time.perf_counter()
    logits = classifier(batch, image_embeds=embeds)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    step_s = time.perf_counter() - start
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = _status_kib("VmHWM") * 1024 - base
    return {
        "size": size,
        "device": device,
        "dtype": dtype,
        "batch_size": batch_size,
        "rank": rank,
        "gradient_checkpointing": checkpointing,
        "tokens_per_sample": int(batch["input_ids"].shape[1]),
        "image_tokens": n_image,
        "trainable": trainable,
        "total_parameters": total,
        "weights_bytes": weights,
        "peak_bytes": peak,
        "build_s": build_s,
        "step_s": step_s,
        "loss": float(loss.detach()),
        "config": config.to_dict(),
    }


def run_child(run: dict[str, Any], threads: int | None = None) -> dict[str, Any]:
    """Runs `measure` for one setting in a fresh Python process; returns its result."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD), "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(run)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the {run['size']} step failed: {proc.stderr.strip()[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------------------------------------ parent
def predicted(result: dict[str, Any]) -> dict[str, int]:
    """The memory model's components for a measured run (the step's: no evaluation, no cache fill)."""
    arch = Architecture.from_config(result["config"])
    estimate = trial_memory(arch, _shape(result))
    return {
        "base weights": estimate.base_weights,
        "LoRA + head + AdamW": estimate.lora_and_optimizer,
        "activations": estimate.activations,
        "backward workspace": estimate.workspace,
        "step peak": estimate.base_weights + estimate.lora_and_optimizer + estimate.training_step,
    }


def _shape(run: dict[str, Any]) -> TrialShape:
    return TrialShape(
        batch_size=run["batch_size"],
        tokens_per_sample=run["tokens_per_sample"],
        lora_rank=run["rank"],
        gradient_checkpointing=run["gradient_checkpointing"],
        weight_bytes=DTYPES[run["dtype"]],
    )


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _config_of(size: str) -> dict[str, Any]:
    from fairsearch.model import qwen2_5_vl_3b_config, qwen2_5_vl_7b_config
    from fairsearch.model.backbone import tiny_backbone

    if size == "tiny":
        return dict(tiny_backbone().config.to_dict())
    return dict({"3b": qwen2_5_vl_3b_config, "7b": qwen2_5_vl_7b_config}[size]().to_dict())


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.child:
        run = json.loads(args.child)
        if run["device"] == "cpu":
            # a tiny step first: what a first step imports lazily, compiles on a fresh checkout and sets up in
            # the allocator is start-up, not the step's; the measured step's high-water mark starts after it
            measure("tiny", "cpu", "float32", 1, run["rank"], run["checkpointing"])
            gc.collect()
        print(json.dumps(measure(**run)))
        return []
    checkpointing = {"off": [False], "on": [True], "both": [False, True]}[args.gradient_checkpointing]
    results = []
    print(
        f"one LoRA step (r = {args.rank}) on {args.device}, {args.dtype} weights, batch {args.batch_size}, "
        f"one {FAIRVLMED_HEIGHT}x{FAIRVLMED_WIDTH} image per sample, vision cache"
    )
    header = (
        f"{'size':5} {'ckpt':4} {'params':>14} {'trainable':>12} {'share':>8} {'tokens':>6} "
        f"{'peak GiB':>9} {'predicted':>9} {'error':>7} {'weights GiB':>11} {'step s':>7}"
    )
    print(header)
    for size in args.sizes:
        for checkpoint in checkpointing:
            run = {
                "size": size,
                "device": args.device,
                "dtype": args.dtype,
                "batch_size": args.batch_size,
                "rank": args.rank,
                "checkpointing": checkpoint,
            }
            if args.device == "cpu" and not args.force:
                guess = {
                    **run,
                    "gradient_checkpointing": checkpoint,
                    "tokens_per_sample": 470,
                    "config": _config_of(size),
                }
                need = predicted(guess)["step peak"]
                free = _available_bytes() - MARGIN_BYTES
                cap = min(free, int(args.max_memory * 2**30))
                if need > cap:
                    why = (
                        f"the {gib(free):.1f} GiB available here less a 1 GiB margin"
                        if cap == free
                        else f"--max-memory {args.max_memory:g} GiB"
                    )
                    print(
                        f"{size:5} {'on' if checkpoint else 'off':4} skipped: predicted {gib(need):.1f} GiB > {why} "
                        "(--force runs it anyway)"
                    )
                    continue
            result = run_child(run, args.threads)
            pred = predicted(result)
            result["predicted"] = pred
            error = pred["step peak"] / result["peak_bytes"] - 1
            result["error"] = error
            results.append(result)
            print(
                f"{size:5} {'on' if checkpoint else 'off':4} {result['total_parameters']:>14,} {result['trainable']:>12,} "
                f"{100 * result['trainable'] / result['total_parameters']:>7.3f}% {result['tokens_per_sample']:>6} "
                f"{gib(result['peak_bytes']):>9.2f} {gib(pred['step peak']):>9.2f} {100 * error:>+6.1f}% "
                f"{gib(result['weights_bytes']):>11.2f} {result['step_s']:>7.1f}",
                flush=True,
            )
            for label, value in pred.items():
                print(f"      predicted {label:22} {gib(value):8.3f} GiB")
    return results


if __name__ == "__main__":
    main()
