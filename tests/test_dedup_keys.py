"""The bucket keys of dedup records, vectorized over Arrow buffers, against per-value references."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.dedup.keys import digest_keys, first8, id_keys, list_keys
from curation.dedup.records import labels


def _values(rng: np.random.Generator, n: int) -> list[bytes | None]:
    out: list[bytes | None] = []
    for _ in range(n):
        k = int(rng.integers(0, 30))
        out.append(None if k == 29 else rng.integers(0, 256, size=k, dtype=np.uint8).tobytes())
    return out


@pytest.mark.parametrize("typ", [pa.binary(), pa.large_binary()])
def test_first8_is_the_big_endian_prefix_of_every_value(typ: pa.DataType) -> None:
    vals = _values(np.random.default_rng(0), 2_000)
    arr = pa.array(vals, typ)
    want = [int.from_bytes(v[:8], "big") if v else 0 for v in vals]
    assert first8(arr).tolist() == want
    # a slice and a chunked column read the right rows
    assert first8(arr.slice(17, 300)).tolist() == want[17:317]
    assert first8(pa.chunked_array([arr.slice(0, 5), arr.slice(5, 995)])).tolist() == want[:1000]
    keys, valid = digest_keys(arr)
    assert valid.tolist() == [v is not None for v in vals]
    assert keys.tolist() == [w if v is not None else 0 for v, w in zip(vals, want)]


def test_id_keys_depend_on_every_byte_and_its_place() -> None:
    ids = [f"r{i}" for i in range(300_000)] + ["ab", "ba", "", "a" * 8, "a" * 9, "é/ü", "x\u0000y", "x\u0000", "aaaaaaaabbbbbbbb", "bbbbbbbbaaaaaaaa"]
    keys = id_keys(pa.array(ids))
    assert len(set(keys.tolist())) == len(ids)  # no collision among near-identical ids
    # the same id gives the same key wherever it sits (a slice, another chunk, a large_string)
    again = id_keys(pa.chunked_array([pa.array(ids[-10:][:3]), pa.array(ids[-7:])]))
    assert again.tolist() == keys[-10:].tolist()
    assert id_keys(pa.array(ids[-10:], pa.large_string())).tolist() == keys[-10:].tolist()
    assert id_keys(pa.array(ids).slice(7, 3)).tolist() == keys[7:10].tolist()
    from curation.dedup import keys as keys_module

    at = keys_module._ID_CHUNK - 2  # ids on both sides of a chunk boundary
    assert at + 4 < len(ids)
    assert id_keys(pa.array(ids[at:at + 4])).tolist() == keys[at:at + 4].tolist()
    # stable across runs and machines: a key is part of the resolve layout (RESOLVE_VERSION)
    assert id_keys(pa.array(["r0"]))[0] == id_keys(pa.array(["r0"]))[0]
    assert id_keys(pa.array([], pa.string())).size == 0


def test_list_keys_equal_lists_meet_and_order_counts() -> None:
    a, b, c = b"\x01" * 16, b"\x02" * 16, b"\x03\x04" * 8
    col = pa.chunked_array([pa.array([[a], [a, b], [b, a], None, [], [a, b], [a, b, c], [c]], pa.list_(pa.binary()))])
    keys, valid = list_keys(col)
    assert valid.tolist() == [True, True, True, False, False, True, True, True]
    assert keys[0] == int.from_bytes(a[:8], "big") and keys[7] == int.from_bytes(c[:8], "big")  # one image: its digest
    assert keys[1] == keys[5]  # the same images in the same order meet
    assert len({keys[0], keys[1], keys[2], keys[6], keys[7]}) == 5  # another order or another image does not
    sliced, _ = list_keys(pa.chunked_array([col.chunk(0).slice(5, 3)]))
    assert sliced.tolist() == keys[5:].tolist()


def test_labels_read_a_string_column_through_its_dictionary() -> None:
    col = pa.chunked_array([pa.array(["text", None, "image_text"]), pa.array(["text"])])
    assert labels(col).tolist() == ["text", "", "image_text", "text"]
    assert labels(pa.chunked_array([pa.array([], pa.string())])).tolist() == []
