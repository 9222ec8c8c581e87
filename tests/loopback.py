"""The loopback address the tests' servers (PostgreSQL, moto's S3, MLflow) listen on, and a free port."""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on :data:`HOST` when asked (the server started next binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
