"""Episode arrays in zarr v3 format, encoded and decoded in this process.

An episode of the built-in task holds seven arrays of a few hundred bytes each; zarr-python
spends about 3.5 ms of metadata handling and event-loop round trips on each array it creates
or reads, more than ten times what encoding and storing the bytes costs, and that made the
store the bottleneck between an actor and the trainer. The writer and the trainer's reader
therefore handle one layout themselves: a regular chunk grid along the first axis (one chunk
across every other axis), '/'-separated chunk keys, and the codecs bytes (little endian) →
blosc → crc32c. What they write is plain zarr v3: `zarr.open_group` reads it, `ript store
verify` decodes it with zarr, and the tests check both decoders agree. Arrays in any other
layout are left to zarr (`decode` returns None).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import google_crc32c
import numpy as np
from numcodecs import blosc

METADATA = "zarr.json"
DTYPES = ("uint8", "int32", "int64", "float32", "float64")
SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


def group_metadata(attributes: dict[str, Any] | None = None) -> bytes:
    """A zarr v3 group's `zarr.json`."""
    return _json({"attributes": attributes or {}, "zarr_format": 3, "node_type": "group"})


@dataclass(frozen=True)
class Blosc:
    """The blosc settings of an array: cname ('lz4', 'zstd', ...), clevel 0..9, shuffle ('shuffle', 'bitshuffle',
    'noshuffle'; bit-shuffling suits uint8 images, byte-shuffling numbers)."""

    cname: str = "lz4"
    clevel: int = 5
    shuffle: str = "shuffle"

    def __post_init__(self) -> None:
        if self.cname not in blosc.list_compressors():
            raise ValueError(f"unknown blosc compressor {self.cname!r}; choose one of {blosc.list_compressors()}")
        if not 0 <= self.clevel <= 9:
            raise ValueError(f"blosc clevel must be in 0..9, got {self.clevel}")
        if self.shuffle not in SHUFFLES:
            raise ValueError(f"blosc shuffle must be one of {sorted(SHUFFLES)}, got {self.shuffle!r}")

    def codecs(self, itemsize: int) -> list[dict[str, Any]]:
        """The array's codec list, as zarr writes it (single bytes have no endianness)."""
        config = {"typesize": itemsize, "cname": self.cname, "clevel": self.clevel, "shuffle": self.shuffle}
        return [
            {"name": "bytes"} if itemsize == 1 else {"name": "bytes", "configuration": {"endian": "little"}},
            {"name": "blosc", "configuration": {**config, "blocksize": 0}},
            {"name": "crc32c"},
        ]

    def encode(self, chunk: np.ndarray) -> bytes:
        """One chunk's stored bytes: compressed little-endian data, then its CRC32C."""
        data = np.ascontiguousarray(chunk, chunk.dtype.newbyteorder("<"))
        packed = blosc.compress(data, self.cname.encode(), self.clevel, SHUFFLES[self.shuffle], 0, data.dtype.itemsize)
        return packed + np.uint32(google_crc32c.value(packed)).astype("<u4").tobytes()


class ArrayStream:
    """One array written in blocks along its first axis (`rows_per_chunk` rows per chunk).

    `append` returns the objects (key relative to the array's folder -> bytes) the block adds or
    rewrites: the chunks it touches, the partial last chunk again with its new rows, and the
    metadata with the new shape. Only that partial chunk's rows stay in memory."""

    def __init__(self, codec: Blosc, rows_per_chunk: int):
        if rows_per_chunk < 1:
            raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}")
        self.codec, self.rows_per_chunk = codec, rows_per_chunk
        self.rows = 0
        self._tail: np.ndarray | None = None  # rows of the last, partial chunk

    def append(self, block: np.ndarray) -> dict[str, bytes]:
        if block.ndim == 0 or block.dtype.name not in DTYPES:
            raise ValueError(f"arrays are {DTYPES} with at least one axis, got {block.dtype.name} {block.shape}")
        if self._tail is not None and (block.dtype != self._tail.dtype or block.shape[1:] != self._tail.shape[1:]):
            raise ValueError(f"block {block.dtype} {block.shape[1:]} does not extend {self._tail.dtype} rows")
        data = block if self._tail is None or not len(self._tail) else np.concatenate([self._tail, block])
        first = self.rows // self.rows_per_chunk
        self.rows += len(block)
        objects = {}
        for i in range(-(-len(data) // self.rows_per_chunk)):
            rows = data[i * self.rows_per_chunk : (i + 1) * self.rows_per_chunk]
            padded = np.zeros((self.rows_per_chunk, *data.shape[1:]), data.dtype)
            padded[: len(rows)] = rows  # zarr stores edge chunks whole, padded with the fill value
            objects[_chunk_key(first + i, data.ndim)] = self.codec.encode(padded)
        self._tail = data[(len(data) // self.rows_per_chunk) * self.rows_per_chunk :].copy()
        shape = [self.rows, *data.shape[1:]]
        objects[METADATA] = _json(
            {
                "shape": shape,
                "data_type": data.dtype.name,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [self.rows_per_chunk, *shape[1:]]}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": 0.0 if data.dtype.kind == "f" else 0,
                "codecs": self.codec.codecs(data.dtype.itemsize),
                "attributes": {},
                "zarr_format": 3,
                "node_type": "array",
                "storage_transformers": [],
            }
        )
        return objects


def decode(metadata: dict[str, Any], get: Callable[[str], bytes | None]) -> np.ndarray | None:
    """Read a whole array from its parsed `zarr.json` and `get(key relative to its folder)` (None: absent, read as
    the fill value); None when the layout is not the one handled here. Raises ValueError on a damaged chunk."""
    try:
        shape = [int(n) for n in metadata["shape"]]
        chunks = [int(n) for n in metadata["chunk_grid"]["configuration"]["chunk_shape"]]
        codecs = metadata["codecs"]
        handled = (
            metadata.get("node_type") == "array"
            and metadata.get("zarr_format") == 3
            and metadata["data_type"] in DTYPES
            and metadata["chunk_grid"]["name"] == "regular"
            and metadata["chunk_key_encoding"] == {"name": "default", "configuration": {"separator": "/"}}
            and not metadata.get("storage_transformers")
            and len(shape) >= 1
            and chunks[1:] == shape[1:]
            and [c["name"] for c in codecs] == ["bytes", "blosc", "crc32c"]
            and codecs[0].get("configuration", {"endian": "little"})["endian"] == "little"
            and metadata["fill_value"] in (0, 0.0)
        )
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if not handled:
        return None
    dtype = np.dtype(metadata["data_type"]).newbyteorder("<")
    out = np.zeros(shape, dtype)
    step = chunks[0]
    for i in range(-(-shape[0] // step)):
        key = _chunk_key(i, len(shape))
        stored = get(key)
        if stored is None:
            continue
        packed, checksum = stored[:-4], stored[-4:]
        if np.uint32(google_crc32c.value(packed)).astype("<u4").tobytes() != checksum:
            raise ValueError(f"chunk {key} fails its CRC32C")
        try:
            chunk = np.frombuffer(blosc.decompress(packed), dtype).reshape(chunks)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"chunk {key} does not decompress to {chunks} {dtype.name}: {exc}") from exc
        rows = out[i * step : (i + 1) * step]
        rows[...] = chunk[: len(rows)]
    return out


def _chunk_key(index: int, ndim: int) -> str:
    return "c/" + "/".join([str(index), *["0"] * (ndim - 1)])


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()  # no indent: the C encoder, ten times faster on the group attributes
