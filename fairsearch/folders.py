"""Where a command will write: one check, shared by ``run``, ``train``, ``report`` and ``data synth``; and
the one way a small file is replaced so that a reader never sees a part of it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from fairsearch.errors import FairsearchError

__all__ = ["check_writable_folder", "write_atomic"]


def check_writable_folder(folder: Path, where: str) -> None:
    """Refuses a folder to write in that is a file, lies under a file, or whose nearest existing folder
    this user cannot write in; creates nothing.

    Args:
        folder: the folder that will be written in (it need not exist yet).
        where: how the message names it, e.g. ``--results`` or ``--out runs/x``.

    Raises:
        FairsearchError: ``--results: a_file is a file, not a folder`` or ``…: cannot write in /srv``.
    """
    for path in (folder, *folder.parents):
        if path.exists() and not path.is_dir():
            raise FairsearchError(f"{where}: {path} is a file, not a folder")
        if path.is_dir():
            if not os.access(path, os.W_OK | os.X_OK):
                raise FairsearchError(f"{where}: cannot write in {path}")
            return


def write_atomic(path: Path, data: bytes) -> None:
    """Replaces ``path`` with ``data``: readers see the old file or the new one, never a part (the mode is
    an ordinary write's)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
