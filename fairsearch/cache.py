"""Where fairsearch keeps what it derives once and reuses: ``$FAIRSEARCH_CACHE``, else
``~/.cache/fairsearch`` (the built-in synthetic set under ``synthetic/``, image embeddings under
``vision/``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(sub: str) -> Path:
    """``$FAIRSEARCH_CACHE/<sub>``, else ``~/.cache/fairsearch/<sub>``."""
    base = os.environ.get("FAIRSEARCH_CACHE") or "~/.cache/fairsearch"
    return Path(base).expanduser() / sub
