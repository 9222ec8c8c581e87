"""The checks a lent GPU is for, in one run of at most 8 minutes, printed as one table.

1. One LoRA step of Qwen2.5-VL-7B (random bf16 weights, r = 32, batch 8, FairVLMed-size images, the vision
   cache), with and without gradient checkpointing, and of 3B without: the step's time, its peak
   (``torch.cuda.max_memory_allocated``) and the memory model's prediction of it with the error
   (``real_size_step.py``, each in a process of its own).
2. The paper's 7B step timed over 10 steps after 3 untimed (``gpu_step.py``), from the vision cache, and
   with ``--pixels`` also with the vision tower running: step time, tokens/s, peak memory, MFU.

Run it through ``benchmarks/device_check.sh`` (the 8-minute limit, the environment). ``--smoke`` runs the
same checks on the tiny model on the CPU, so the script itself is tested where no GPU is
(``tests/test_benchmarks.py``); it is never run on a GPU in CI.

    benchmarks/device_check.sh                 # on the GPU machine
    .venv/bin/python benchmarks/device_check.py --smoke
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gpu_step
import real_size_step

from fairsearch.model.memory import gib
from fairsearch.output.tables import aligned_rows

COLUMNS = [
    "check",
    "model",
    "batch",
    "setting",
    "step s",
    "tokens/s",
    "peak GiB",
    "predicted GiB",
    "error",
    "trainable",
    "MFU (4NT+attn)",
]


def _size_rows(args: argparse.Namespace) -> list[list[str]]:
    """Step 1: the real sizes and the memory model."""
    common = ["--device", args.device, "--dtype", args.dtype, "--batch-size", str(args.batch_size)]
    runs = (
        [(["--sizes", "tiny"], "both")]
        if args.smoke
        else [(["--sizes", "7b"], "both"), (["--sizes", "3b"], "off")]
    )
    rows = []
    for sizes, checkpointing in runs:
        for result in real_size_step.main(
            [*sizes, *common, "--gradient-checkpointing", checkpointing, "--force"]
        ):
            tokens = result["tokens_per_sample"] * result["batch_size"]
            rows.append(
                [
                    "memory model",
                    result["size"],
                    str(result["batch_size"]),
                    "checkpointing " + ("on" if result["gradient_checkpointing"] else "off"),
                    f"{result['step_s']:.2f}",
                    f"{tokens / result['step_s']:,.0f}",
                    f"{gib(result['peak_bytes']):.2f}",
                    f"{gib(result['predicted']['step peak']):.2f}",
                    f"{100 * result['error']:+.1f}%",
                    f"{100 * result['trainable'] / result['total_parameters']:.3f}%",
                    "",
                ]
            )
    return rows


def _step_rows(args: argparse.Namespace) -> list[list[str]]:
    """Step 2: the paper's step timed."""
    visions = ["cached", "pixels"] if args.pixels else ["cached"]
    rows = []
    for vision in visions:
        argv = ["--vision", vision, "--batch-size", str(args.batch_size), "--device", args.device]
        argv += ["--tiny", "--steps", "2", "--warmup", "1"] if args.smoke else []
        result: dict[str, Any] = gpu_step.main(argv)
        peak = result.get("peak_mem_gib")
        mfu = result.get("mfu_needed")
        rows.append(
            [
                "timed step",
                str(result["model"]),
                str(result["batch_size"]),
                f"vision {vision}",
                f"{result['step_s_median']:.3f}",
                f"{result['tokens_per_s']:,.0f}",
                "" if peak is None else f"{peak:.2f}",
                "",
                "",
                f"{100 * result['trainable'] / result['total']:.3f}%",
                "" if mfu is None else f"{100 * mfu:.1f}%",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--smoke", action="store_true", help="the tiny model on the CPU: the script's own test"
    )
    parser.add_argument(
        "--pixels", action="store_true", help="also time the step with the vision tower running"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default: 8 (2 with --smoke)")
    args = parser.parse_args(argv)
    args.device = "cpu" if args.smoke else "cuda"
    args.dtype = "float32" if args.smoke else "bfloat16"
    args.batch_size = args.batch_size or (2 if args.smoke else 8)
    if not args.smoke:
        import torch

        if not torch.cuda.is_available():
            print("device_check: no CUDA device here; --smoke runs the checks on the CPU", file=sys.stderr)
            return 2
        print(
            f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
        )
    started = time.monotonic()
    rows = _size_rows(args) + _step_rows(args)
    print()
    print("\n".join(aligned_rows(COLUMNS, rows)))
    print(f"\n{len(rows)} checks in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raise SystemExit(main())
