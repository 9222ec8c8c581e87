"""Safe, lazy reading of one ``.npz`` file: key by key, ``allow_pickle=False``, headers before data.

:func:`open_npz` refuses a file over :data:`~fairsearch.bounded.DATA_NPZ_MAX_BYTES` and turns every
low-level failure (a corrupt or truncated zip, a bad ``.npy`` header) into one
:class:`~fairsearch.errors.FairsearchError` naming the file; :meth:`NpzReader.read` refuses object arrays,
which would need pickle, and an array whose header declares more than
:data:`~fairsearch.bounded.DATA_ARRAY_MAX_BYTES`, with a message instead of loading them.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fairsearch.bounded import DATA_ARRAY_MAX_BYTES, DATA_NPZ_MAX_BYTES, npy_header, size_text
from fairsearch.errors import FairsearchError

__all__ = ["IMAGE_KEYS", "NpzReader", "image_key", "open_npz", "read_image"]

IMAGE_KEYS: tuple[str, ...] = ("slo_fundus", "fundus_slo")
"""Names FairVLMed versions give the SLO fundus image."""


class NpzReader:
    """An open ``.npz`` read key by key with ``allow_pickle=False``; header checks read no array data."""

    def __init__(self, zf: zipfile.ZipFile, path: Path) -> None:
        self.zf = zf
        self.path = path
        self.keys = [n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")]

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
        """Shape and dtype of ``key`` from its ``.npy`` header."""
        with self.zf.open(key + ".npy") as fp:
            return npy_header(fp)

    def crc(self, key: str) -> int:
        """CRC-32 of ``key``'s stored ``.npy`` bytes, from the zip directory (nothing is read)."""
        return self.zf.getinfo(key + ".npy").CRC

    def read(self, key: str) -> np.ndarray:
        """The array under ``key``; refuses object arrays (they need pickle) and arrays whose header
        declares more than :data:`~fairsearch.bounded.DATA_ARRAY_MAX_BYTES`."""
        shape, dtype = self.header(key)
        if dtype.hasobject:
            raise FairsearchError(
                f"{self.path}: key {key!r} holds an object array ({dtype}) that needs pickle to load; "
                "fairsearch reads .npz files with allow_pickle=False and never runs pickled data — "
                "re-save that key as a plain numeric or string array"
            )
        declared = int(np.prod(shape, dtype=object)) * dtype.itemsize  # a Python int: never overflows
        if declared > DATA_ARRAY_MAX_BYTES:
            raise FairsearchError(
                f"{self.path}: key {key!r} declares shape {shape} of {dtype} ({size_text(declared)}), over "
                f"the {size_text(DATA_ARRAY_MAX_BYTES)} fairsearch reads of one array; the file is damaged "
                "or not a FairVLMed sample"
            )
        with self.zf.open(key + ".npy") as fp:
            return np.asarray(np.lib.format.read_array(fp, allow_pickle=False))

    def scalar(self, key: str) -> Any:
        """The one value stored under ``key`` as a Python scalar (``str`` for text); its shape is
        checked from the header, before it is read."""
        shape, _ = self.header(key)
        if int(np.prod(shape, dtype=object)) != 1:
            raise FairsearchError(f"{self.path}: key {key!r} should hold one value, found shape {shape}")
        array = self.read(key)
        value = array.reshape(-1)[0].item()
        return value.decode() if isinstance(value, bytes) else value


@contextmanager
def open_npz(path: Path) -> Iterator[NpzReader]:
    """Open ``path`` as an npz; a file over :data:`~fairsearch.bounded.DATA_NPZ_MAX_BYTES`, and any
    low-level read failure, becomes one :class:`FairsearchError`."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # opening it below says why it cannot be read
    if size > DATA_NPZ_MAX_BYTES:
        raise FairsearchError(
            f"{path}: {size_text(size)}, over the {size_text(DATA_NPZ_MAX_BYTES)} fairsearch reads of one "
            "sample's .npz; the file is damaged or not a FairVLMed sample"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            yield NpzReader(zf, path)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, NotImplementedError) as exc:
        raise FairsearchError(
            f"{path}: cannot read this .npz file, it looks corrupt or truncated "
            f"({type(exc).__name__}: {exc}); re-download or re-export it"
        ) from exc


def image_key(npz: NpzReader) -> str:
    """The image key of ``npz`` with its shape checked from the header (no pixels read)."""
    key = next((k for k in IMAGE_KEYS if k in npz.keys), None)
    if key is None:
        raise FairsearchError(
            f"{npz.path}: no image key: expected 'slo_fundus' or 'fundus_slo'; the file has keys {sorted(npz.keys)}"
        )
    shape, dtype = npz.header(key)
    _check_image_shape(npz.path, key, shape)
    if dtype.hasobject or dtype.kind not in "biuf":
        raise FairsearchError(
            f"{npz.path}: key {key!r} has dtype {dtype}; expected a numeric image (uint8 or float)"
        )
    return key


def _check_image_shape(path: Path, key: str, shape: tuple[int, ...]) -> None:
    """Raise unless ``shape`` is ``[H, W]``, ``[H, W, C]`` or ``[C, H, W]`` with ``C`` in 1, 3, 4."""
    ok = len(shape) == 2 or (len(shape) == 3 and (shape[-1] in (1, 3, 4) or shape[0] in (1, 3)))
    if not ok or min(shape, default=0) == 0:
        raise FairsearchError(
            f"{path}: key {key!r} has shape {shape} (rank {len(shape)}); expected a one-channel image "
            "[H, W] or a colour image [H, W, 3]"
        )


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Scale any numeric image to uint8: [0, 1] floats ×255, 16-bit /257, other ranges by their maximum."""
    if image.dtype == np.uint8:
        return image
    values = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.dtype.kind in "fb" and low >= 0.0 and high <= 1.0:
        values = values * 255.0
    elif image.dtype == np.uint16 and high > 255:
        values = values / 257.0
    elif low < 0.0:
        values = (values - low) * (255.0 / max(high - low, 1e-12))
    elif high > 255.0:
        values = values * (255.0 / high)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def read_image(path: Path) -> np.ndarray:
    """Read the image of one FairVLMed ``.npz`` as uint8 ``[H, W, 3]``.

    Args:
        path: The ``.npz`` file.

    Returns:
        uint8 ``[H, W, 3]``: one channel repeated into RGB, channels-first moved last, alpha dropped.

    Raises:
        FairsearchError: If the file cannot be read or holds no usable image.
    """
    with open_npz(path) as npz:
        key = image_key(npz)
        image = npz.read(key)
    if image.ndim == 3 and image.shape[-1] not in (1, 3, 4):
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 2:
        image = image[:, :, None]
    image = _to_uint8(image[:, :, :3])
    return np.ascontiguousarray(np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image)
