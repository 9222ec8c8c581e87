"""First Ray Client connections to fresh heads: how often does the head's server die as it starts, and
does ``GRPC_ENABLE_FORK_SUPPORT=0`` on the head, or the sweep's retry, remove the failure?

Run from the repository root (about 15 s a connection on 2 idle CPU cores)::

    .venv/bin/python benchmarks/ray_client_connect.py --runs 25

For each setting, ``--runs`` times: a one-machine cluster is started as ``tests/test_cluster_failures.py``
starts one (a head without CPUs that serves Ray Client on a free port, one node of 2 CPUs), a driver
process joins it with ``fairsearch.search.sweep.start_ray("ray://…")`` as ``fairsearch run --address ray://…``
does, runs one task, and leaves; the cluster is shut down. The settings:

- ``ray-defaults``: the nodes start with Ray's defaults (gRPC's fork handlers on);
- ``no-fork-handlers``: the nodes start with ``GRPC_ENABLE_FORK_SUPPORT=0``, as ``cluster/`` starts
  its heads.

Per setting it prints: the connections, how many of them met the server dying as it started on their
first try (ray-project/ray#63202; the sweep's retry warning counts them), how many joined in the end, and
the seconds a connection took (median, and the most). ``--out`` keeps each driver's output.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

from ray.cluster_utils import Cluster

from fairsearch.search.sweep import RAY_CLIENT_SERVER_DIED

SETTINGS = {"ray-defaults": {}, "no-fork-handlers": {"GRPC_ENABLE_FORK_SUPPORT": "0"}}
DRIVER = """
import logging, sys, ray
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from fairsearch.search.sweep import start_ray
start_ray(sys.argv[1])
assert ray.get(ray.remote(lambda: 1).remote()) == 1
ray.shutdown()
"""
RETRY_WARNING = "connecting again"
"""What ``start_ray`` logs each time it tries again."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connect_once(node_env: dict[str, str], log: Path | None) -> tuple[bool, bool, int, float]:
    """One fresh cluster whose nodes start with ``node_env``, and one driver (with this process's own
    environment); returns (joined, the server died on the first try, retries, seconds the driver took)."""
    port = _free_port()
    with mock.patch.dict(os.environ, node_env):  # the nodes inherit it
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False, "ray_client_server_port": port},
        )
    try:
        with mock.patch.dict(os.environ, node_env):  # the nodes inherit it
            cluster.add_node(num_cpus=2)
            cluster.wait_for_nodes()
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER, f"ray://127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        seconds = time.monotonic() - started
    finally:
        cluster.shutdown()
    output = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(output)
    retries = output.count(RETRY_WARNING)
    died_first = retries > 0 or any(sign in output for sign in RAY_CLIENT_SERVER_DIED)
    return proc.returncode == 0, died_first, retries, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=25, help="connections per setting")
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--out", type=Path, help="keep each driver's output here")
    args = parser.parse_args()
    os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="rcc", dir="/tmp"))  # short socket paths
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.settings:
        outcomes = []
        for i in range(args.runs):
            log = args.out / f"{name}-{i}.log" if args.out else None
            joined, died_first, retries, seconds = connect_once(SETTINGS[name], log)
            outcomes.append((joined, died_first, seconds))
            state = "joined" if joined else "FAILED"
            print(
                f"{name} {i}: {state}, died first {died_first}, {retries} retries, {seconds:.1f} s",
                flush=True,
            )
        times = [s for _, _, s in outcomes]
        died_n = sum(d for _, d, _ in outcomes)
        joined_n = sum(j for j, _, _ in outcomes)
        rows.append((name, len(outcomes), died_n, joined_n, statistics.median(times), max(times)))
    print(
        "\n| nodes start with | connections | server died on the first try | joined in the end | s (median, max) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, n, died_count, joined_count, median, most in rows:
        print(f"| {name} | {n} | {died_count} | {joined_count} | {median:.1f}, {most:.1f} |")


if __name__ == "__main__":
    main()
