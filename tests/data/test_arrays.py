"""The in-process zarr v3 encoder and decoder agree with zarr itself, byte for byte where both write."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.core.buffer import cpu

from ript_robot.data.arrays import DTYPES, ArrayStream, Blosc, decode


@st.composite
def streamed_arrays(draw: st.DrawFn) -> tuple[np.ndarray, list[int], int, Blosc]:
    dtype = draw(st.sampled_from(DTYPES))
    rows = draw(st.integers(1, 40))
    trailing = draw(st.lists(st.integers(1, 4), max_size=3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = (rng.random((rows, *trailing)) * 200 - (0 if dtype == "uint8" else 100)).astype(dtype)
    if draw(st.booleans()):  # runs of the fill value, which zarr leaves unwritten
        data[: rows // 2] = 0
    cuts = sorted(draw(st.sets(st.integers(1, rows - 1), max_size=4))) if rows > 1 else []
    codec = Blosc(
        draw(st.sampled_from(["lz4", "zstd"])),
        draw(st.integers(0, 9)),
        draw(st.sampled_from(["shuffle", "bitshuffle", "noshuffle"])),
    )
    return data, cuts, draw(st.integers(1, 16)), codec


def _zarr_objects(data: np.ndarray, cuts: list[int], rows_per_chunk: int, codec: Blosc) -> dict[str, bytes]:
    store = zarr.storage.MemoryStore()
    blocks = np.split(data, cuts)
    array = zarr.create_array(
        store,
        data=blocks[0],
        chunks=(rows_per_chunk, *data.shape[1:]),
        compressors=[BloscCodec(cname=codec.cname, clevel=codec.clevel, shuffle=codec.shuffle), Crc32cCodec()],
    )
    for block in blocks[1:]:
        array.append(block, axis=0)

    async def objects() -> dict[str, bytes]:
        keys = [key async for key in store.list()]
        return {key: (await store.get(key, cpu.buffer_prototype)).to_bytes() for key in keys}

    return asyncio.run(objects())


@settings(max_examples=60, deadline=None)
@given(streamed_arrays())
def test_streamed_arrays_match_what_zarr_writes_and_read_back_both_ways(case: tuple) -> None:
    data, cuts, rows_per_chunk, codec = case
    stream = ArrayStream(codec, rows_per_chunk)
    ours: dict[str, bytes] = {}
    for block in np.split(data, cuts):
        ours.update(stream.append(block))
    theirs = _zarr_objects(data, cuts, rows_per_chunk, codec)
    assert json.loads(ours["zarr.json"]) == json.loads(theirs["zarr.json"])
    for key in (theirs.keys() & ours.keys()) - {"zarr.json"}:  # the metadata differs in whitespace only
        assert ours[key] == theirs[key], key
    assert theirs.keys() <= ours.keys()  # zarr skips all-fill chunks; writing them too is still valid zarr
    store = zarr.storage.MemoryStore()
    for key, value in ours.items():
        asyncio.run(store.set(key, cpu.Buffer.from_bytes(value)))
    np.testing.assert_array_equal(zarr.open_array(store, mode="r")[...], data)
    for objects in (ours, theirs):
        decoded = decode(json.loads(objects["zarr.json"]), objects.get)
        assert decoded is not None and decoded.dtype == data.dtype
        np.testing.assert_array_equal(decoded, data)


def test_a_damaged_chunk_is_named_and_other_layouts_are_left_to_zarr() -> None:
    stream = ArrayStream(Blosc(), 4)
    objects = stream.append(np.arange(10, dtype=np.float32).reshape(5, 2))
    metadata = json.loads(objects["zarr.json"])
    flipped = dict(
        objects, **{"c/1/0": objects["c/1/0"][:-5] + bytes([objects["c/1/0"][-5] ^ 1]) + objects["c/1/0"][-4:]}
    )
    with pytest.raises(ValueError, match="chunk c/1/0 fails its CRC32C"):
        decode(metadata, flipped.get)
    assert decode({**metadata, "codecs": metadata["codecs"][:1]}, objects.get) is None  # uncompressed
    assert decode({**metadata, "chunk_grid": {"name": "rectilinear"}}, objects.get) is None
    assert decode({**metadata, "data_type": "complex64"}, objects.get) is None
    with pytest.raises(ValueError, match="does not extend"):
        stream.append(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match=r"clevel must be in 0\.\.9"):
        Blosc(clevel=12)
