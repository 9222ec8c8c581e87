"""A throwaway PostgreSQL server on loopback for the tests of the Optuna storage.

:class:`PostgresServer` runs Debian's ``postgresql`` binaries (``scripts/setup`` installs the package when
``initdb`` is missing): ``initdb`` into a temporary folder, ``pg_ctl start`` on a free 127.0.0.1 port with
its Unix socket in that folder, and ``pg_ctl stop`` plus removal of the folder at the end. PostgreSQL
refuses to run as root, so as root the server runs as the ``postgres`` user the Debian package creates (or
``nobody``); as anyone else it runs as that user. A server that cannot start raises :class:`RuntimeError`
naming the step and its output: the tests that need it fail, they are never skipped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from loopback import free_port

USER = "fairsearch"
"""The server's superuser, trusted without a password on loopback."""
START_TIMEOUT_S = 60


def find_bindir() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``: on ``PATH``, else the newest ``/usr/lib/postgresql/*/bin``
    (where Debian puts them).

    Raises:
        RuntimeError: no PostgreSQL server binaries on this machine.
    """
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(os.path.realpath(initdb)).parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL's initdb is neither on PATH nor under /usr/lib/postgresql/*/bin: install Debian's "
            "postgresql package (scripts/setup does, when run as root: apt-get install postgresql)"
        )
    return Path(found[-1]).parent


def _server_user() -> str | None:
    """Whom the server runs as: ``None`` (this process's user) unless this is root, which PostgreSQL
    refuses; then ``postgres`` (made by Debian's package), else ``nobody``."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user to run PostgreSQL as")


class PostgresServer:
    """One PostgreSQL server in a temporary folder, listening on 127.0.0.1 only.

    Use as a context manager; :meth:`create_database` gives each test a database of its own.

    Attributes:
        port: the TCP port on 127.0.0.1.
        base: the temporary folder (data, socket, log), removed on exit.
    """

    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.user = _server_user()
        self.base = Path(tempfile.mkdtemp(prefix="fairsearch-pg-"))
        self.port = 0
        self._databases = 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"  # util-linux; /usr/sbin may be off PATH
            command = [runuser, "-u", self.user, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, timeout=START_TIMEOUT_S, stdin=subprocess.DEVNULL
        )

    def _check(self, proc: subprocess.CompletedProcess[str], step: str) -> None:
        if proc.returncode != 0:
            log = self.base / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"PostgreSQL test server: {step} failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}{tail}"
            )

    def start(self) -> None:
        """``initdb``, then ``pg_ctl start`` on a free port (another port if that one was taken meanwhile).

        Raises:
            RuntimeError: a step failed; the message holds its output and the server's log.
        """
        if self.user is not None:
            shutil.chown(self.base, self.user)
        data = self.base / "data"
        self._check(
            self._run("initdb", "-D", str(data), "-U", USER, "--auth=trust", "--no-locale", "-E", "UTF8"),
            "initdb",
        )
        for attempt in range(3):
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            proc = self._run(
                "pg_ctl", "start", "-w", "-t", str(START_TIMEOUT_S), "-D", str(data), "-l",
                str(self.base / "server.log"), "-o", options,
            )  # fmt: skip
            if proc.returncode == 0:
                return
            if attempt == 2:
                self._check(proc, f"pg_ctl start on 127.0.0.1:{self.port}")

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        self._databases += 1
        name = f"test{self._databases}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stops the server (fast shutdown) and removes its folder."""
        try:
            if (self.base / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.base / "data"))
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
