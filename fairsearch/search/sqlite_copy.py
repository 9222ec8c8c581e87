"""A SQLite database read as it would be after a crash's rollback, without touching it.

A driver killed while Optuna wrote leaves a journal beside its SQLite file (``-journal``, or ``-wal``
in WAL mode); the next connection that may write rolls it back, and a read-only one cannot open the
file at all. The checks that a sweep makes before it writes anything read the database through
:func:`settled`: the file itself when there is no journal, else a copy of the file and its journal in
a temporary folder, rolled back there.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["settled"]

JOURNAL_SUFFIXES = ("-journal", "-wal", "-shm")


@contextlib.contextmanager
def settled(path: Path) -> Iterator[tuple[Path, bool]]:
    """``(database to read, whether it is a copy)``: ``path`` itself when no journal lies beside it (open
    it read-only), else a copy with its journal (open it as usual: its rollback happens in the copy)."""
    journals = [p for p in (path.with_name(path.name + s) for s in JOURNAL_SUFFIXES) if p.exists()]
    if not journals:
        yield path, False
        return
    with tempfile.TemporaryDirectory(prefix="fairsearch-db-check-") as folder:
        for source in (path, *journals):
            shutil.copyfile(source, Path(folder) / source.name)
        yield Path(folder) / path.name, True
