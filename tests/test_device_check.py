"""``benchmarks/device_check.py``, the prepared script for a lent GPU, runs its checks and prints one table:
on the tiny model on the CPU (``--smoke``) here, as nothing in CI may need a GPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.py"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *argv], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=600
    )


def test_without_cuda_it_says_so_and_exits_2() -> None:
    proc = _run()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no CUDA device here; --smoke runs the checks on the CPU" in proc.stderr


@pytest.mark.slow
def test_the_smoke_run_prints_one_table_of_every_check() -> None:
    proc = _run("--smoke")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("check "))
    rows = [line.split() for line in lines[header + 2 :] if line.strip() and not line.endswith(" s")]
    assert [(r[0], r[1], r[2]) for r in rows] == [("memory", "model", "tiny")] * 2 + [
        ("timed", "step", "tiny")
    ]
    assert [" ".join(r[4:6]) for r in rows[:2]] == ["checkpointing off", "checkpointing on"]
    for row in rows[:2]:  # step s, tokens/s, peak and predicted GiB measured, the error a percentage
        assert float(row[6]) > 0 and float(row[8]) > 0 and float(row[9]) > 0
        assert re.fullmatch(r"[+-]\d+\.\d%", row[10]), row
    assert re.fullmatch(r"3 checks in \d+ s", lines[-1]), lines[-1]
