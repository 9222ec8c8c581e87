"""A throwaway MLflow tracking server on loopback for the tests of ``tracking: {mlflow: URI}``: the real
``mlflow server`` with a SQLite backend store and served artifacts in a temporary folder.

:class:`MlflowServer` starts it on a free 127.0.0.1 port in its own process group (the ``mlflow`` command
starts the web server as a child) and waits for ``/health``. A server that cannot start raises
:class:`RuntimeError` with its log: the tests fail, never skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from loopback import free_port

START_TIMEOUT_S = 120


class MlflowServer:
    """``mlflow server`` on 127.0.0.1; a context manager.

    Attributes:
        uri: ``http://127.0.0.1:PORT``, once started.
    """

    def __init__(self) -> None:
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._folder = Path(tempfile.mkdtemp(prefix="mlflow-server-"))
        self._log = self._folder / "server.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        mlflow = Path(sys.executable).with_name("mlflow")
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(
                [
                    str(mlflow),
                    "server",
                    "--backend-store-uri",
                    f"sqlite:///{self._folder / 'mlflow.db'}",
                    "--artifacts-destination",
                    str(self._folder / "artifacts"),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "MLFLOW_TRACKING_URI": ""},
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        log_text = self._log.read_text(errors="replace")[-3000:]
        self.stop()
        raise RuntimeError(f"mlflow server did not start on 127.0.0.1:{self.port}:\n{log_text}")

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
