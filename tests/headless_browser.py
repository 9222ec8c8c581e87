"""A page rendered by a real headless Chromium (Debian's ``chromium``, installed by ``scripts/setup``),
driven over the Chrome DevTools Protocol on a pipe (``--remote-debugging-pipe``): no port is opened, no
network is reached, and nothing beyond the standard library is needed.

:func:`render` loads a local HTML file, waits for the load event and for every image to decode, and
returns what each ``<img>`` became and every error the page logged: ``console.error``/``console.assert``
calls, uncaught exceptions, and the browser's own error entries (a resource that failed to load, a
broken image).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser")
_IMAGES = """(async () => {
  const images = [...document.images];
  await Promise.all(images.map((img) => img.decode().catch(() => null)));
  return images.map((img) => ({
    complete: img.complete,
    width: img.naturalWidth,
    height: img.naturalHeight,
    alt: img.alt,
    groups: img.dataset.groups === undefined ? null : JSON.parse(img.dataset.groups),
  }));
})()"""
"""Every image once decoded (or failed): its natural size, alt text and ``data-groups`` (a JSON list)."""


@dataclass(frozen=True)
class Rendered:
    """What the browser made of a page.

    Attributes:
        images: per ``<img>``, in page order: ``complete``, ``width`` and ``height`` (natural; 0 when it
            did not load), ``alt``, and ``groups`` (its ``data-groups``, or None).
        errors: every error the page logged, as text.
    """

    images: list[dict[str, Any]]
    errors: list[str]


def chromium() -> str:
    """The Chromium executable.

    Raises:
        RuntimeError: none is installed (``scripts/setup`` installs Debian's ``chromium`` as root).
    """
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError(
        "no chromium on PATH: the report's browser test needs it; run scripts/setup as root, or "
        "apt-get install chromium"
    )


class _Pipe:
    """DevTools messages (JSON, each ended by a NUL byte) to and from a Chromium process."""

    def __init__(self, write_fd: int, read_fd: int, deadline: float) -> None:
        self.write_fd, self.read_fd, self.deadline = write_fd, read_fd, deadline
        self.buffer = b""
        self.events: list[dict[str, Any]] = []
        self.last_id = 0

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self.read_fd, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self.buffer += chunk
        message, _, self.buffer = self.buffer.partition(b"\0")
        return json.loads(message)  # type: ignore[no-any-return]

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self.last_id += 1
        message: dict[str, Any] = {"id": self.last_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") != self.last_id:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            else:
                return reply["result"]

    def wait_for(self, event: str) -> None:
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._receive())


def _errors(events: list[dict[str, Any]]) -> list[str]:
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(
                "console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            found.append(
                "exception: " + str(details.get("exception", {}).get("description", details["text"]))
            )
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            found.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())
    return found


def render(page: Path, timeout: float = 90.0) -> Rendered:
    """Load ``page`` (a local HTML file) in headless Chromium and report its images and errors.

    Raises:
        RuntimeError: Chromium is missing, or failed.
        TimeoutError: the page did not load within ``timeout`` seconds.
    """
    executable = chromium()
    commands_in, commands_out = os.pipe()  # the browser reads commands on its fd 3
    replies_in, replies_out = os.pipe()  # and writes replies and events on its fd 4
    # bash (dash takes single-digit fds only) moves its two ends onto fds 3 and 4, then becomes Chromium;
    # from fds of 10 and up, so that neither end is one of 3 and 4 while the other is being moved there
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_in, replies_out)]
    for fd in (commands_in, replies_out):
        os.close(fd)
    redirect = f'exec "$0" "$@" 3<&{high[0]} 4>&{high[1]} {high[0]}<&- {high[1]}>&-'
    with (
        tempfile.TemporaryDirectory(prefix="fairsearch-chromium-") as profile,
        tempfile.TemporaryFile() as log,
    ):
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
                 "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]  # fmt: skip
        process = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", "-c", redirect, executable, *flags],
            pass_fds=tuple(high),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        for fd in high:
            os.close(fd)
        pipe = _Pipe(commands_out, replies_in, time.monotonic() + timeout)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired")
            images = pipe.call(
                "Runtime.evaluate",
                {"expression": _IMAGES, "awaitPromise": True, "returnByValue": True},
                session=session,
            )["result"]["value"]
            with contextlib.suppress(RuntimeError):  # it may close the pipe before it answers
                pipe.call("Browser.close")
        except (OSError, RuntimeError, TimeoutError) as err:
            log.seek(0)
            raise type(err)(
                f"{err}; chromium's stderr ends: {log.read()[-2000:].decode(errors='replace')}"
            ) from err
        finally:
            os.close(commands_out)
            os.close(replies_in)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return Rendered(images, _errors(pipe.events))
