"""Refusals as the tests check them: exit 2, one short message naming what is wrong, no traceback, and
the folder byte-for-byte as it was. Shared by the bad-input table (``test_bad_input.py``) and the
damaged-state tables (``test_damaged_*.py``)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from fairsearch.cli import main

__all__ = ["MAX_MESSAGE", "refused", "snapshot"]

MAX_MESSAGE = 5000
"""A refusal is one short message: never a huge value, never thousands of lines."""


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under ``root`` with its kind, size, modification time and content hash."""
    tree: dict[str, tuple[Any, ...]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            tree[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            tree[rel] = ("dir", info.st_mtime_ns)
        else:
            tree[rel] = (
                "file",
                info.st_size,
                info.st_mtime_ns,
                hashlib.sha256(path.read_bytes()).hexdigest(),
            )
    return tree


def refused(capsys: pytest.CaptureFixture[str], root: Path, argv: list[str], fragment: str) -> str:
    """Runs ``fairsearch <argv>`` and checks: exit 2, ``fragment`` in stderr, no traceback, short
    message, ``root`` unchanged. Returns stderr."""
    capsys.readouterr()
    before = snapshot(root)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err[-MAX_MESSAGE:]
    assert fragment in err, err[-MAX_MESSAGE:]
    assert "Traceback" not in err
    assert len(err) < MAX_MESSAGE, err[:MAX_MESSAGE]
    assert snapshot(root) == before
    return err
