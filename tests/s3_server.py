"""A throwaway S3 server on loopback for the tests of ``--storage s3://``: moto's server mode.

:class:`S3Server` runs ``python -m moto.server`` on a free 127.0.0.1 port and gives the environment a
sweep needs to reach it through the standard AWS settings (``AWS_ENDPOINT_URL``, keys, region), which
pyarrow's S3 filesystem, and so Ray Tune and fairsearch, read. ``auth=True`` starts one that checks
credentials (moto's ``INITIAL_NO_AUTH_ACTION_COUNT=0``): every request with made-up keys is denied.
A server that cannot start raises :class:`RuntimeError` with its log: the tests fail, never skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loopback import free_port

START_TIMEOUT_S = 60


class S3Server:
    """moto's S3 server on 127.0.0.1; a context manager.

    Attributes:
        port: its port, once started.
        endpoint: ``http://127.0.0.1:PORT``.
    """

    def __init__(self, *, auth: bool = False) -> None:
        self.auth = auth
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with the AWS settings that reach this server."""
        return {
            **(os.environ if base is None else base),
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "fairsearch-test",
            "AWS_SECRET_ACCESS_KEY": "fairsearch-test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata lookups: loopback only
        }

    def start(self) -> None:
        self.port = free_port()
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"} if self.auth else dict(os.environ)
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"moto's S3 server did not start on 127.0.0.1:{self.port}:\n{self._log.read_text()[-3000:]}"
        )

    def _client(self) -> Any:
        import boto3

        env = self.env({})
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )

    def create_bucket(self, name: str) -> None:
        self._client().create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` in ``bucket``."""
        found: list[str] = []
        for page in self._client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [o["Key"] for o in page.get("Contents", [])]
        return found

    def get(self, bucket: str, key: str) -> bytes:
        """The bytes of one object."""
        return bytes(self._client().get_object(Bucket=bucket, Key=key)["Body"].read())

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
