"""Speed of one trial on the built-in tiny model, measured in one run.

Prints: training samples/s; the ratio of training-epoch time with the vision cache to without; and the
share of a trial's wall time spent in training and evaluation steps (the rest is start-up, data and
model loading, and checkpointing).

    .venv/bin/python benchmarks/trial_speed.py                 # defaults: 2400 images, 2 epochs
    .venv/bin/python benchmarks/trial_speed.py --n 1200 --epochs 3 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from fairsearch.spec.config import TrialConfig
from fairsearch.train.trial import TrialResult, run_trial


def _trial(config: TrialConfig, cache: Path) -> tuple[TrialResult, float]:
    start = time.perf_counter()
    result = run_trial(config, report=lambda metrics, folder: None, cache_root=cache)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=2400, help="synthetic images in all splits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a Ray trial gets its CPUs)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("FAIRSEARCH_CACHE", tempfile.mkdtemp(prefix="fairsearch-bench-"))
    cache = Path(tempfile.mkdtemp(prefix="fairsearch-vision-"))
    base = {
        "method": "hybrid",
        "lam": 0.5,
        "w_max": 10.0,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
    }
    base["synthetic_n"] = args.n

    first, first_wall = _trial(
        TrialConfig.from_dict({**base, "vision_cache": True}), cache
    )  # fills the cache
    warm, warm_wall = _trial(
        TrialConfig.from_dict({**base, "vision_cache": True}), cache
    )  # what every later trial sees
    cold, cold_wall = _trial(TrialConfig.from_dict({**base, "vision_cache": False}), cache)

    epoch_cached = warm.times.train / args.epochs
    epoch_direct = cold.times.train / args.epochs
    steps = warm.times.train + warm.times.evaluate
    print(f"tiny Qwen2.5-VL, {args.n} synthetic images, batch {args.batch_size}, {args.threads} thread(s)")
    print(f"{'':34}{'first trial':>14}{'later trials':>14}{'no cache':>12}")
    for label, key in (
        ("setup (data, model, cache) s", "setup"),
        ("training s", "train"),
        ("evaluation s", "evaluate"),
    ):
        row = [getattr(r.times, key) for r in (first, warm, cold)]
        print(f"{label:34}{row[0]:>14.2f}{row[1]:>14.2f}{row[2]:>12.2f}")
    print(f"{'wall s':34}{first_wall:>14.2f}{warm_wall:>14.2f}{cold_wall:>12.2f}")
    print(
        f"training samples/s (cache): {warm.times.samples_per_s:.0f}; without cache: {cold.times.samples_per_s:.0f}"
    )
    print(
        f"epoch time with cache / without: {epoch_cached:.2f} s / {epoch_direct:.2f} s = {epoch_cached / epoch_direct:.2f}"
    )
    print(f"share of a later trial's wall time in training + evaluation steps: {steps / warm_wall:.0%}")
    print(
        f"validation acc {warm.val['acc']:.3f}, MaxAccGap {warm.val['max_acc_gap']:.3f} after {args.epochs} epochs"
    )


if __name__ == "__main__":
    main()
