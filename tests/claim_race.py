"""Drivers that claim one study at the same moment, as separate processes (tests of fairsearch.search.study)."""

from __future__ import annotations

import subprocess
import sys

_DRIVER = """
import sys
from fairsearch.search.study import StudyClaimedError, claim_study
print("ready", flush=True)
sys.stdin.readline()
try:
    claim = claim_study(sys.argv[1], sys.argv[2])
except StudyClaimedError:
    print("refused", flush=True)
else:
    print(f"won {claim.generation}", flush=True)
    sys.stdin.readline()  # holds the claim until every driver has tried
"""


def race_for_claim(url: str, study_name: str, drivers: int) -> list[str]:
    """Starts ``drivers`` processes, lets them claim ``study_name`` in ``url`` at once when all have
    imported fairsearch, and returns their answers sorted: ``refused`` or ``won <generation>``."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _DRIVER, url, study_name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(drivers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n", proc.communicate()[1]
        for proc in procs:  # all at once
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        answers = [proc.stdout.readline().strip() for proc in procs if proc.stdout is not None]
        outputs = [proc.communicate(timeout=120) for proc in procs]  # closes stdin: the winner lets go
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(proc.returncode == 0 for proc in procs), [err[-2000:] for _, err in outputs]
    return sorted(answers)
