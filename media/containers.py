"""Media inside containers: members of tar shards and bytes in Parquet cells, read in place.

A manifest media reference names a member of a container in its ``uri``:

- ``tar:///abs/shard-000.tar?offset=1536&size=40213#000000001.jpg``: the member's
  data starts at byte ``offset`` of the shard and is ``size`` bytes long; the
  fragment is the member name, for people (the reader never uses it as a path);
- ``parquet:///abs/file.parquet?row=17&column=images&item=0``: the ``bytes`` of
  the ``item``-th element of a list cell (or the cell itself) at ``row``.

Nothing is ever extracted to disk: a tar member is one ``pread`` of ``size``
bytes, so a member named ``../../etc/passwd`` or ``/abs/x`` is only a name. Tar
headers are scanned with the standard library (GNU/PAX long names included);
a shard cut short yields the members that are whole plus the name of the cut
one.
"""
from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qs, quote, unquote, urlsplit

from media.files import MediaError, _os_error

TAR_SCHEME = "tar"
PARQUET_SCHEME = "parquet"


@dataclass(frozen=True)
class TarMember:
    """A regular file inside a tar shard: its name and where its data lies."""

    name: str
    offset: int  # byte offset of the data in the shard
    size: int
    header: int  # byte offset of the member's (first) header: where a reader can start


@dataclass(frozen=True)
class TarScan:
    """Members of (part of) a shard, in order, and what stopped the scan early, if anything."""

    members: list[TarMember]
    end: int  # byte offset after the last whole member
    problem: str | None = None  # e.g. "truncated: member 000003.jpg needs 5120 bytes, 100 left"
    cut_member: str | None = None  # the member whose header or data was cut


_BLOCK = 512
_PLAIN = (b"0", b"\0", b"7")  # regular file types
_SKIP = (b"1", b"2", b"3", b"4", b"5", b"6")  # links, devices, folders, FIFOs: not members to read


def _octal(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # base-256 (GNU) for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big") if field[:1] == b"\x80" else -1
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def _scan_plain(fh, start: int, stop: int | None, size: int) -> TarScan | None:
    """The fast path: ustar/v7 headers parsed directly, one 512-byte read per member (data is skipped).

    Returns None at the first header it does not handle itself (GNU long names,
    PAX records): the caller then rescans with ``tarfile``.
    """
    members: list[TarMember] = []
    pos = start
    while stop is None or pos < stop:
        fh.seek(pos)
        block = fh.read(_BLOCK)
        if len(block) < _BLOCK:
            if not block:
                problem = "truncated: no end-of-archive marker after the last member"
            else:
                problem = f"truncated: a partial header of {len(block)} bytes at byte {pos}"
            return TarScan(members, pos, problem)
        if block.count(0) == _BLOCK:
            return TarScan(members, pos, None)
        try:
            stored = _octal(block[148:156])
            mtype = block[156:157]
            msize = _octal(block[124:136])
        except ValueError:
            return None
        if stored != sum(block) - sum(block[148:156]) + 8 * 32 or msize < 0:
            return None  # not a header tarfile would accept either: let it produce the message
        if mtype not in _PLAIN and mtype not in _SKIP:
            return None
        name = block[:100].split(b"\0", 1)[0]
        if block[257:262] == b"ustar" and block[345:500].strip(b"\0"):
            name = block[345:500].split(b"\0", 1)[0] + b"/" + name
        data = pos + _BLOCK
        if mtype in _PLAIN:
            text = name.decode("utf-8", "surrogateescape")
            if data + msize > size:
                problem = f"truncated: member {text} needs {msize} bytes, {max(0, size - data)} left"
                return TarScan(members, pos, problem, text)
            members.append(TarMember(text, data, msize, pos))
        pos = data + (msize + _BLOCK - 1) // _BLOCK * _BLOCK
    return TarScan(members, pos, None)


def scan_tar(path: str, start: int = 0, stop: int | None = None) -> TarScan:
    """Regular members whose header starts in [start, stop), without reading their data.

    ``start`` must be a header boundary (0, or a ``TarMember.header`` from an
    earlier scan). Directories, links and other non-files are skipped. Plain
    ustar headers are parsed directly; long names and PAX headers go through
    ``tarfile``.
    """
    size = _size(path)
    if size > 0:
        with _open(path) as fh:
            fast = _scan_plain(fh, start, stop, size)
        if fast is not None:
            return fast
    members: list[TarMember] = []
    end = start
    problem = cut = None
    with _open(path) as fh:
        fh.seek(start)
        try:
            tf = tarfile.open(fileobj=fh, mode="r:", ignore_zeros=False)  # noqa: SIM115 - fh is closed by the with
        except tarfile.ReadError as exc:
            if start == 0 and size == 0:
                return TarScan([], 0, "empty: zero bytes")
            return TarScan([], start, f"not a tar: {exc}")
        header = start
        while True:
            if stop is not None and header >= stop:
                break
            try:
                info = tf.next()
            except (tarfile.ReadError, EOFError, OSError) as exc:
                problem = f"truncated: {exc}" if "unexpected end" in str(exc) or isinstance(exc, EOFError) \
                    else f"corrupt header at byte {header}: {exc}"
                break
            if info is None:
                problem = _tail_problem(fh, end, size)
                break
            if info.offset_data + info.size > size:
                problem = f"truncated: member {info.name} needs {info.size} bytes, {max(0, size - info.offset_data)} left"
                cut = info.name
                break
            if info.isreg():
                members.append(TarMember(info.name, info.offset_data, info.size, info.offset))
            end = tf.offset
            header = tf.offset
        tf.members = []  # tarfile keeps every TarInfo; release them
    return TarScan(members, end, problem, cut)


def _is_store(path: str) -> bool:
    from manifests.storage import is_uri

    return is_uri(path)


def _size(path: str) -> int:
    if _is_store(path):
        from manifests.storage import info

        meta = info(path)
        if meta is None:
            raise MediaError("missing", f"{path}: no such object")
        return int(meta["size"])
    try:
        return os.path.getsize(path)
    except OSError as exc:
        raise _os_error(exc, path) from None


def _open(path: str):
    """The shard as a seekable file: a local file, or an object read by HTTP ranges (never downloaded whole)."""
    if _is_store(path):
        from manifests.errors import UserError
        from manifests.storage import StoreUnavailable, open_range

        try:
            return open_range(path)
        except StoreUnavailable:
            raise  # the store is down, not the input bad: the chunk fails and the rerun resumes
        except UserError as exc:
            raise MediaError("unreadable", str(exc)) from None
    try:
        return open(path, "rb")
    except OSError as exc:
        raise _os_error(exc, path) from None


def _tail_problem(fh, end: int, size: int) -> str | None:
    """Why the bytes after the last whole member are not a proper end-of-archive, if they are not."""
    fh.seek(end)
    tail = fh.read(min(size - end, 1 << 16))
    if size - end == 0:
        return "truncated: no end-of-archive marker after the last member"
    if tail.strip(b"\0"):
        return f"truncated: a partial header of {len(tail.rstrip(chr(0).encode()))} bytes at byte {end}"
    return None


def read_member(path: str, offset: int, size: int) -> bytes:
    """The data of one tar member (one positioned read); MediaError when the shard is shorter."""
    with _open(path) as fh:
        fh.seek(offset)
        data = fh.read(size)
    if len(data) < size:
        raise MediaError("truncated", f"{path}: member at byte {offset} needs {size} bytes, {len(data)} read")
    if size == 0:
        raise MediaError("zero_bytes", f"{path}: member at byte {offset} is empty")
    return data


def iter_members(path: str, members: list[TarMember]) -> Iterator[tuple[TarMember, bytes]]:
    """(member, data) for members in shard order, from one open file."""
    if not members:
        return
    with _open(path) as fh:
        for m in members:
            fh.seek(m.offset)
            data = fh.read(m.size)
            yield m, data


# --------------------------------------------------------------------------- URIs


def _where(path: str) -> str:
    # a shard on an object store is quoted whole (tar://s3%3A%2F%2Fbucket%2Fkey?...), a local one as an absolute path
    return quote(path, safe="") if _is_store(path) else quote(os.path.abspath(path))


def tar_uri(shard: str, member: str, offset: int, size: int) -> str:
    return f"{TAR_SCHEME}://{_where(shard)}?offset={offset}&size={size}#{quote(member, safe='/')}"


def parquet_uri(path: str, row: int, column: str, item: int | None = None) -> str:
    q = f"row={row}&column={quote(column, safe='')}" + (f"&item={item}" if item is not None else "")
    return f"{PARQUET_SCHEME}://{_where(path)}?{q}"


def container_scheme(uri: str) -> str | None:
    """``tar`` or ``parquet`` for a container reference, None for a plain path or other URI."""
    head = uri[:10]
    if head.startswith(TAR_SCHEME + "://"):
        return TAR_SCHEME
    if head.startswith(PARQUET_SCHEME + "://"):
        return PARQUET_SCHEME
    return None


def container_path(uri: str) -> str:
    """The shard or Parquet file a container reference points into (a local path or an object-store URI)."""
    parts = urlsplit(uri)
    return unquote(parts.netloc + parts.path)


def read_container(uri: str) -> bytes:
    """The bytes a container reference names (MediaError with a ledger reason otherwise)."""
    parts = urlsplit(uri)
    path = unquote(parts.netloc + parts.path)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    try:
        if parts.scheme == TAR_SCHEME:
            return read_member(path, int(q["offset"]), int(q["size"]))
        if parts.scheme == PARQUET_SCHEME:
            return read_cell(path, int(q["row"]), unquote(q["column"]), int(q["item"]) if "item" in q else None)
    except (KeyError, ValueError):
        raise MediaError("unreadable", f"{uri}: malformed container reference") from None
    raise MediaError("unreadable", f"{uri}: not a container reference")


@lru_cache(maxsize=4)
def _row_group_column(path: str, mtime_ns: int, group: int, column: str):
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).read_row_group(group, columns=[column]).column(0).combine_chunks()


def read_cell(path: str, row: int, column: str, item: int | None) -> bytes:
    """Embedded bytes of one Parquet cell: an HF ``Image`` struct, raw binary, or one element of a list of them.

    Only the row group holding ``row`` is read (and kept for the next few calls,
    since consumers walk rows in order).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        st = os.stat(path)
        md = pq.ParquetFile(path).metadata
    except OSError as exc:
        raise _os_error(exc, path) from None
    except pa.ArrowException as exc:
        raise MediaError("unreadable", f"{path}: {exc}") from None
    base = 0
    for g in range(md.num_row_groups):
        n = md.row_group(g).num_rows
        if row < base + n:
            break
        base += n
    else:
        raise MediaError("missing", f"{path}: no row {row}")
    try:
        col = _row_group_column(path, st.st_mtime_ns, g, column)
    except (KeyError, pa.ArrowException) as exc:
        raise MediaError("missing", f"{path}: no column {column!r} ({exc})") from None
    value = col[row - base]
    if item is not None:
        value = value.values[item] if value.is_valid and item < len(value.values) else None
    if value is not None and pa.types.is_struct(value.type):
        value = value["bytes"] if value.is_valid else None
    data = value.as_py() if value is not None else None
    if not data:
        raise MediaError("zero_bytes" if data == b"" else "missing", f"{path}: row {row} {column}[{item}] holds no bytes")
    return bytes(data)
