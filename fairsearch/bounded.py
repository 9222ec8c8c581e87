"""Every file fairsearch reads back, read within a bound known before it is opened.

A results folder, a checkpoint, a data folder or a cache entry may hold a file cut short, damaged, or made
to harm: a ``scores.npz`` whose ``.npy`` header declares a multi-GiB array is a tiny file, and numpy
allocates what the header declares. So each kind of file has its bounds here, once, and the readers check
them before they load anything of the declared size:

- bytes: the file's size first, then at most ``limit + 1`` bytes read (:func:`read_bytes`, :func:`read_json`,
  locally or through a ``pyarrow.fs`` filesystem);
- ``.npz``: the names of its members, and each member's ``.npy`` header (dtype, shape, element count)
  against what the file may hold, before any array is read, always with ``allow_pickle=False``
  (:func:`load_npz`, :func:`load_npy`);
- Parquet: the file's size, then its footer (rows, columns, row groups, uncompressed bytes) before the
  table is read (:func:`check_parquet`).

A file over its bound raises :class:`~fairsearch.errors.FairsearchError` naming the file, what it holds or
declares, and what is allowed; a reader whose missing or damaged file is skipped with a warning skips an
over-bound one the same way.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from fairsearch.errors import FairsearchError

__all__ = [
    "DATA_ARRAY_MAX_BYTES",
    "DATA_CSV_MAX_BYTES",
    "DATA_NPZ_MAX_BYTES",
    "FEATURES_MAX_BYTES",
    "IMAGE_FILE_MAX_BYTES",
    "IMAGE_MAX_PIXELS",
    "JSON_MAX_BYTES",
    "MAX_GROUPS",
    "MAX_NAME_CHARS",
    "MAX_SPLIT_SAMPLES",
    "RESULTS_TABLE",
    "SCORES_MAX_BYTES",
    "STATE_MAX_BYTES",
    "TRAINABLE_MAX_BYTES",
    "ArraySpec",
    "TableBound",
    "check_npy",
    "check_parquet",
    "load_npy",
    "load_npz",
    "npy_header",
    "read_bytes",
    "read_json",
    "size_text",
]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

JSON_MAX_BYTES = 16 * MiB
"""A JSON record: a checkpoint's manifest, test metrics and report times, a sweep's space record and
confirmation plan, a vision cache entry's index, a model folder's ``config.json``. Each is a few KiB."""
STATE_MAX_BYTES = 64 * MiB
"""A checkpoint's ``state.json``: the trial's config, RNG states and one validation report per report so
far (a 1,000-report trial with 1,000 metrics a report is about 30 MB)."""
MAX_SPLIT_SAMPLES = 4_000_000
"""The most samples of one split a ``scores.npz`` or ``features.npz`` may hold (FairVLMed's largest
split has 7,000; the largest public medical image sets about 1,000,000)."""
MAX_GROUPS = 4096
"""The most group names a ``scores.npz`` may hold (an intersection of attributes has a few dozen)."""
MAX_NAME_CHARS = 256
"""The longest text (grouping or group name) a ``scores.npz`` may hold."""
SCORES_MAX_BYTES = 256 * MiB
"""A ``scores.npz``: six per-sample arrays of at most :data:`MAX_SPLIT_SAMPLES` (8 bytes each) and the
names: at most 192 MiB of arrays."""
FEATURES_MAX_BYTES = 1 * GiB
"""A ``features.npz`` (and each array in it, as float64): ``[N, hidden]`` of validation and test; a 72B
model (hidden 8,192) on FairVLMed's 3,000 evaluated images holds 98 MB of float32."""
TRAINABLE_MAX_BYTES = 8 * GiB
"""A checkpoint's ``trainable.pt`` (LoRA + head), read by ``fairsearch export``: rank 32 on the attention
of Qwen2.5-VL-7B is 81 MB of float32; rank 256 on a 72B model about 2 GiB."""
DATA_NPZ_MAX_BYTES = 256 * MiB
"""One sample's ``.npz`` of a data folder (a FairVLMed file is about 0.2 MB)."""
DATA_ARRAY_MAX_BYTES = 256 * MiB
"""The most bytes one array of a data folder's ``.npz`` may declare (an 8,192² RGBA uint8 image)."""
DATA_CSV_MAX_BYTES = 256 * MiB
"""A data folder's ``data_summary.csv`` (FairVLMed's is 5 MB for 10,000 samples); ``fairsearch predict``'s
``--groups`` CSV."""
IMAGE_FILE_MAX_BYTES = 256 * MiB
"""One PNG or JPEG file that ``fairsearch predict`` reads (a fundus photograph is a few MB)."""
IMAGE_MAX_PIXELS = 8192 * 8192
"""The most pixels a PNG or JPEG may declare in its header, checked before it is decoded (as
:data:`DATA_ARRAY_MAX_BYTES` bounds an ``.npz`` image: 8,192² RGBA uint8)."""


@dataclass(frozen=True)
class TableBound:
    """What a Parquet file may hold, as its footer declares it.

    Attributes:
        max_bytes: the file's size.
        max_rows: rows over all row groups.
        max_columns: columns (leaf fields).
        max_cells: rows × columns, what pandas allocates a slot for.
        max_row_groups: row groups (each has its own metadata in the footer).
        max_uncompressed_bytes: the row groups' uncompressed size, summed.
    """

    max_bytes: int
    max_rows: int
    max_columns: int
    max_cells: int
    max_row_groups: int
    max_uncompressed_bytes: int


RESULTS_TABLE = TableBound(
    max_bytes=256 * MiB,
    max_rows=1_000_000,
    max_columns=20_000,
    max_cells=200_000_000,
    max_row_groups=10_000,
    max_uncompressed_bytes=2 * GiB,
)
"""``trials.parquet``, ``pareto.parquet`` and ``confirm.parquet``: one row per trial (a space allows
100,000) or front member, a few hundred columns (the metrics of each group)."""


@dataclass(frozen=True)
class ArraySpec:
    """What one array of an ``.npz`` may be, checked from its ``.npy`` header.

    Attributes:
        kinds: the allowed ``dtype.kind`` letters (``"f"`` float, ``"iu"`` integers, ``"U"`` text).
        ndim: its number of dimensions.
        max_elements: the most elements it may have.
        max_itemsize: the most bytes one element may take.
    """

    kinds: str
    ndim: int
    max_elements: int
    max_itemsize: int = 8


def size_text(n: int) -> str:
    """``n`` bytes as ``"256 MiB"``, ``"12 bytes"``."""
    for unit, scale in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{n} bytes"


def _too_large(source: str | Path, found: str, allowed: str) -> FairsearchError:
    return FairsearchError(
        f"{source}: {found}, over fairsearch's bound of {allowed} for this file; it is damaged or not "
        "fairsearch's, and is not read"
    )


def read_bytes(path: str | Path, limit: int, fs: Any = None) -> bytes:
    """A file's bytes, refused when it holds more than ``limit``; at most ``limit + 1`` bytes are read.

    Args:
        path: a local path, or a path on ``fs``.
        limit: the most bytes the file may hold.
        fs: a ``pyarrow.fs.FileSystem`` (S3, GCS, local); ``None`` for a local path.

    Raises:
        FairsearchError: the file holds more than ``limit`` bytes.
        OSError: it cannot be read (missing, a folder, no permission).
    """
    if fs is None:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(limit + 1) if size <= limit else b""
    else:
        size = fs.get_file_info(str(path)).size or 0
        data = b""
        if size <= limit:
            with fs.open_input_stream(str(path)) as f:
                data = f.read(limit + 1)
    if size > limit or len(data) > limit:
        raise _too_large(path, f"{max(size, len(data)):,} bytes", size_text(limit))
    return bytes(data)


def read_json(path: str | Path, limit: int = JSON_MAX_BYTES, fs: Any = None) -> Any:
    """A JSON file's value, read with :func:`read_bytes`.

    Raises:
        FairsearchError: the file holds more than ``limit`` bytes.
        ValueError: it is not UTF-8 JSON, or nested too deeply to parse.
        OSError: it cannot be read.
    """
    data = read_bytes(path, limit, fs)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def npy_header(fp: IO[bytes]) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The shape and dtype of the ``.npy`` data at ``fp``, from its header (magic and dict); nothing of
    the array is read.

    Raises:
        ValueError: not a ``.npy`` header.
    """
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    else:  # 2.0 and 3.0 share the 4-byte header length; 3.0 only allows UTF-8 field names
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    return tuple(int(n) for n in shape), dtype


def check_npy(
    source: str | Path, key: str, shape: tuple[int, ...], dtype: np.dtype[Any], spec: ArraySpec
) -> None:
    """Refuses an array whose header does not match ``spec``.

    Raises:
        FairsearchError: an object dtype (it needs pickle), another kind, another number of dimensions,
            or more elements or bytes an element than ``spec`` allows.
    """
    elements = int(np.prod(shape, dtype=object))  # a Python int: a declared shape may overflow int64
    if dtype.hasobject:
        raise FairsearchError(
            f"{source}: array {key!r} is an object array ({dtype}), which needs pickle to load; "
            "fairsearch reads .npz files with allow_pickle=False"
        )
    if dtype.kind not in spec.kinds or len(shape) != spec.ndim:
        raise FairsearchError(
            f"{source}: array {key!r} is {dtype} of shape {shape}; expected {spec.ndim}-D of dtype kind "
            f"{' or '.join(repr(k) for k in spec.kinds)}"
        )
    if elements > spec.max_elements or dtype.itemsize > spec.max_itemsize:
        raise _too_large(
            source,
            f"array {key!r} declares shape {shape} of {dtype}",
            f"{spec.max_elements:,} elements of at most {spec.max_itemsize} bytes",
        )


def load_npz(data: bytes, source: str | Path, arrays: Mapping[str, ArraySpec]) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file's bytes, each member's header checked against ``arrays`` before any
    is read.

    Args:
        data: the file's bytes (read with :func:`read_bytes`, so bounded).
        source: the file, for messages.
        arrays: the arrays the file may hold, by name; a file may lack some of them (its reader says
            which it needs).

    Raises:
        FairsearchError: a member that is not one of ``arrays``, or an array beyond its spec.
        zipfile.BadZipFile, ValueError, EOFError, OSError: a damaged file.
    """
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = zf.infolist()
        names = [m.filename.removesuffix(".npy") for m in members]
        unexpected = [n for n, m in zip(names, members, strict=True) if n not in arrays or m.filename == n]
        if unexpected or len(set(names)) != len(names):
            raise FairsearchError(
                f"{source}: holds {sorted(unexpected or names)[:8]}; expected only arrays named "
                f"{sorted(arrays)}"
            )
        for name in names:
            with zf.open(f"{name}.npy") as fp:
                check_npy(source, name, *npy_header(fp), arrays[name])
        out = {}
        for name in names:
            with zf.open(f"{name}.npy") as fp:
                out[name] = np.asarray(np.lib.format.read_array(fp, allow_pickle=False))
    return out


def load_npy(path: str | Path, spec: ArraySpec, shape: tuple[int | None, ...] = ()) -> np.ndarray:
    """One ``.npy`` file's array, its header checked against ``spec`` (and, where given, each dimension
    of ``shape`` that is not None) before it is read.

    Raises:
        FairsearchError: the array is beyond ``spec`` or of another shape.
        ValueError, OSError: a damaged or missing file.
    """
    with open(path, "rb") as fp:
        found, dtype = npy_header(fp)
        check_npy(path, Path(path).stem, found, dtype, spec)
        if shape and (
            len(found) != len(shape)
            or any(w is not None and w != n for w, n in zip(shape, found, strict=True))
        ):
            raise FairsearchError(f"{path}: shape {found}, expected {shape} (None: any)")
        fp.seek(0)
        return np.asarray(np.lib.format.read_array(fp, allow_pickle=False))


def check_parquet(f: IO[bytes], source: str | Path, bound: TableBound = RESULTS_TABLE) -> None:
    """Checks an open Parquet file's size and what its footer declares against ``bound``; reads the
    footer only, and leaves ``f`` at its start.

    Raises:
        FairsearchError: the file or what it declares is over ``bound``.
        pyarrow.ArrowException, OSError: the footer is damaged.
    """
    import pyarrow.parquet as pq

    size = os.fstat(f.fileno()).st_size
    if size > bound.max_bytes:
        raise _too_large(source, f"{size:,} bytes", size_text(bound.max_bytes))
    meta = pq.read_metadata(f)
    f.seek(0)
    found = {
        "rows": (meta.num_rows, bound.max_rows),
        "columns": (meta.num_columns, bound.max_columns),
        "cells": (meta.num_rows * meta.num_columns, bound.max_cells),
        "row groups": (meta.num_row_groups, bound.max_row_groups),
    }
    over = [f"{n:,} {what} (at most {most:,})" for what, (n, most) in found.items() if n > most]
    if not over:
        raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if raw > bound.max_uncompressed_bytes:
            over = [f"{size_text(raw)} uncompressed (at most {size_text(bound.max_uncompressed_bytes)})"]
    if over:
        raise FairsearchError(
            f"{source}: its footer declares {', '.join(over)}; over fairsearch's bounds for this file, "
            "so it is damaged or not fairsearch's, and is not read"
        )
