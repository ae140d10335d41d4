"""The global half of dedup: from signature columns to clusters and drop decisions.

Memory stays bounded because no step holds every signature:

1. **Scatter.** Each input file is read batch by batch; every row emits
   bucket records (an exact hash, a pHash band, a MinHash band, ...) that are
   appended to one of ``partitions`` parquet files under ``workdir`` chosen by
   the bucket key. A small per-file node table (id, rank attributes) is written
   beside them.
2. **Buckets.** Partitions are processed one at a time (or in parallel through
   ``map_fn``). A bucket is complete inside its partition, so candidate pairs
   come from sorting that file alone. Perceptual candidates are verified there
   (their hashes ride in the records); exact buckets give edges directly;
   MinHash candidates are written out for step 3.
3. **Text verification.** MinHash candidates are checked by exact Jaccard of
   the n-gram sets (or the signature estimate) with an external join: edges
   are grouped by the file of one endpoint, its payload is attached, regrouped
   by the file of the other endpoint, and compared. One file's texts are in
   memory at a time.
4. **Clusters.** Union-find over the verified edges only; the representative of
   each cluster follows the documented rank; the answer lists only rows that
   are in a cluster or contaminated.

Every choice is made from ids and signatures, never from row positions or
partition numbers, so the result does not depend on how the input was split
or on ``partitions``. Each phase leaves a marker, so a killed job resumes
where it stopped and reaches the same result.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curation.dedup.config import DedupConfig, EvalSetConfig
from curation.dedup.external import CARRY, iter_source, write_source
from curation.dedup.minhash import (
    EMPTY,
    band_keys,
    estimated_jaccard,
    expand_pairs,
    jaccard_pairs,
    mix64,
    shingle_sets,
)
from curation.dedup.signatures import SIGNATURE_COLUMNS, row_text
from curation.dedup.unionfind import UnionFind
from manifests.errors import UserError

U64 = np.uint64
#: bump when the on-disk intermediate layout changes, so old work directories are not resumed from
RESOLVE_VERSION = 1

ROLE_NEW, ROLE_AGAINST, ROLE_EVAL = 0, 1, 2
K_BYTES, K_PIXELS, K_TEXT, K_PHASH, K_VHASH, K_MINHASH, K_PIXEL_ITEM, K_PHASH_ITEM = range(8)
KIND_NAMES = ("bytes", "pixels", "text", "phash", "vhash", "minhash", "pixels", "phash")
EXACT_KINDS = (K_BYTES, K_PIXELS, K_TEXT, K_PIXEL_ITEM)
PERCEPTUAL_KINDS = (K_PHASH, K_VHASH, K_PHASH_ITEM)
#: kinds compared for dedup; the *_ITEM kinds exist only to meet evaluation images one by one
DEDUP_KINDS = (K_BYTES, K_PIXELS, K_TEXT, K_PHASH, K_VHASH, K_MINHASH)
TEXT_MODALITIES = ("text", "document")
GREY_CHROMA = 0.1  # mean chroma magnitude below this: a greyscale rendition
PAIR_CHUNK = 2_000_000  # candidate pairs verified per numpy pass

RESULT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("dup_cluster", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)

RECORD_SCHEMA = pa.schema(
    [
        pa.field("key", pa.uint64()),
        pa.field("kind", pa.int8()),
        pa.field("node", pa.int64()),
        pa.field("idkey", pa.uint64()),
        pa.field("role", pa.int8()),
        pa.field("dedup", pa.bool_()),  # may form a dedup edge (else only meets eval rows)
        pa.field("seq", pa.list_(pa.uint64())),  # perceptual hashes to verify against
        pa.field("color", pa.list_(pa.float32())),  # chroma moments per hash (images)
        pa.field("flat", pa.uint64()),  # bit p set: frame p is flat (video)
    ]
)

EDGE_SCHEMA = pa.schema(
    [
        pa.field("a", pa.int64()),
        pa.field("b", pa.int64()),
        pa.field("kind", pa.int8()),
        pa.field("dist", pa.float32()),
        pa.field("contam", pa.bool_()),
    ]
)

NODE_SCHEMA = pa.schema(
    [
        pa.field("node", pa.int64()),
        pa.field("id", pa.string()),
        pa.field("role", pa.int8()),
        pa.field("set", pa.int16()),
        pa.field("area", pa.int64()),
        pa.field("nbytes", pa.int64()),
        pa.field("textlen", pa.int32()),
    ]
)

MapFn = Callable[[Callable[[int], Any], Sequence[int]], Iterable[Any]]


# ----------------------------------------------------------------------------- inputs


@dataclass
class _File:
    """One input file (or in-memory table) of signature rows and its global node range."""

    path: str | None
    table: pa.Table | None
    role: int
    set_index: int
    offset: int
    rows: int

    def batches(self, columns: Sequence[str], batch_size: int = 8192) -> Iterator[pa.Table]:
        if self.table is not None:
            cols = [c for c in columns if c in self.table.column_names]
            for b in self.table.select(cols).to_batches(max_chunksize=batch_size):
                yield pa.Table.from_batches([b])
            return
        pf = pq.ParquetFile(self.path)
        cols = [c for c in columns if c in pf.schema_arrow.names]
        for b in pf.iter_batches(batch_size=batch_size, columns=cols):
            yield pa.Table.from_batches([b])

    def take(self, local: np.ndarray, columns: Sequence[str]) -> pa.Table:
        """Rows at local positions, in the given order."""
        if self.table is not None:
            t = self.table
        else:
            pf = pq.ParquetFile(self.path)
            t = pf.read(columns=[c for c in columns if c in pf.schema_arrow.names])
        cols = [c for c in columns if c in t.column_names]
        return t.select(cols).take(pa.array(local, pa.int64()))


def _input_paths(signatures: Any) -> list[_File]:
    if isinstance(signatures, pa.Table):
        return [_File(None, signatures, ROLE_NEW, 0, 0, signatures.num_rows)]
    if isinstance(signatures, pads.FileSystemDataset):
        paths = sorted(signatures.files)
    elif isinstance(signatures, pads.Dataset):
        table = signatures.to_table(columns=[c for c in CARRY if c in signatures.schema.names])
        return [_File(None, table, ROLE_NEW, 0, 0, table.num_rows)]
    elif isinstance(signatures, (str, os.PathLike)):
        p = Path(signatures)
        paths = sorted(str(x) for x in p.rglob("*.parquet")) if p.is_dir() else [str(p)]
    else:
        paths = sorted(str(p) for p in signatures)
    files = []
    for path in paths:
        rows = pq.ParquetFile(path).metadata.num_rows
        files.append(_File(path, None, ROLE_NEW, 0, 0, rows))
    return files


def _fingerprint(files: list[_File], config: DedupConfig, against: list[str], evals: list[EvalSetConfig]) -> str:
    h = hashlib.sha256()
    h.update(f"resolve-v{RESOLVE_VERSION}".encode())
    h.update(config.model_dump_json().encode())
    h.update(json.dumps([str(a) for a in against]).encode())
    h.update(json.dumps([e.model_dump() for e in evals], sort_keys=True).encode())
    for f in files:
        if f.path:
            st = os.stat(f.path)
            h.update(f"{f.path}:{st.st_size}:{st.st_mtime_ns}".encode())
        else:
            assert f.table is not None
            h.update(json.dumps(f.table.column_names).encode())
            for chunk in f.table.column("id").chunks:
                for buf in chunk.buffers():
                    if buf is not None:
                        h.update(buf)
    return h.hexdigest()[:24]


# ----------------------------------------------------------------------------- record building


def _id_keys(ids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit keys of ids: the order every tie is broken by."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "big") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def _digest_keys(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 keys from the first 8 bytes of each digest, valid mask)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    keys = np.zeros(len(arr), dtype=np.uint64)
    if valid.any():
        vals = arr.filter(pa.array(valid)).to_pylist()
        keys[valid] = np.fromiter((int.from_bytes(v[:8], "big") for v in vals), dtype=np.uint64, count=len(vals))
    return keys, valid


def _list_keys(col: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """One key per row for a list<binary> column (the ordered list), and the valid mask."""
    vals = col.to_pylist()
    keys = np.zeros(len(vals), dtype=np.uint64)
    valid = np.zeros(len(vals), dtype=bool)
    for i, v in enumerate(vals):
        if v:
            blob = v[0] if len(v) == 1 else hashlib.blake2b(b"".join(v), digest_size=16).digest()
            keys[i] = int.from_bytes(blob[:8], "big")
            valid[i] = True
    return keys, valid


def _band_masks(bands: int) -> list[tuple[int, int]]:
    """(shift, width) of `bands` contiguous chunks covering 64 bits."""
    widths = [64 // bands + (1 if i < 64 % bands else 0) for i in range(bands)]
    out, shift = [], 64
    for w in widths:
        shift -= w
        out.append((shift, w))
    return out


def _chunks(h: np.ndarray, bands: int) -> np.ndarray:
    """``uint64[n, bands]`` band values of 64-bit hashes."""
    cols = []
    for shift, width in _band_masks(bands):
        mask = U64((1 << width) - 1)
        cols.append((h >> U64(shift)) & mask)
    return np.stack(cols, axis=1) if cols else np.zeros((h.size, 0), np.uint64)


def _key(kind: int, *parts: np.ndarray | int) -> np.ndarray:
    with np.errstate(over="ignore"):
        acc = np.asarray(U64(kind + 1) * U64(0x9E3779B97F4A7C15), dtype=np.uint64)
        for p in parts:
            acc = mix64(acc ^ np.asarray(p, dtype=np.uint64)) * U64(0xFF51AFD7ED558CCD)
        return mix64(acc)


class _Builder:
    """Turns batches of signature rows into bucket records."""

    def __init__(self, config: DedupConfig, with_eval: bool) -> None:
        self.config = config
        self.with_eval = with_eval
        self.img_bands = _band_masks(config.image.bands)  # noqa: F841 (documented layout)

    def flat_rows(self, t: pa.Table) -> np.ndarray:
        cfg = self.config.image
        detail = t.column("sig_detail").to_numpy(zero_copy_only=False) if "sig_detail" in t.column_names else None
        flat = np.zeros(t.num_rows, dtype=bool)
        if detail is not None:
            d = np.asarray(detail, dtype=np.float64)
            flat |= np.nan_to_num(d, nan=np.inf) < cfg.min_detail
        if "score_low_info" in t.column_names:
            low = np.asarray(t.column("score_low_info").to_numpy(zero_copy_only=False), dtype=np.float64)
            flat |= np.nan_to_num(low, nan=0.0) >= cfg.low_info_threshold
        return flat

    def records(self, t: pa.Table, nodes: np.ndarray, role: int) -> list[dict[str, np.ndarray | list]]:
        cfg = self.config
        n = t.num_rows
        out: list[dict] = []
        ids = t.column("id").to_pylist()
        idkey = _id_keys(ids)
        modality = np.asarray(t.column("modality").to_pylist(), dtype=object) if "modality" in t.column_names else np.full(n, "", object)
        is_text_mod = np.isin(modality.astype(str), TEXT_MODALITIES)
        textkey = np.zeros(n, np.uint64)
        has_text = np.zeros(n, bool)
        if "sig_text" in t.column_names:
            textkey, has_text = _digest_keys(t.column("sig_text"))
        # image_text rows keyed by their text too when `match_text` asks for it
        media_salt = np.where((modality == "image_text") & has_text, textkey, U64(0)) if cfg.image.match_text else np.zeros(n, np.uint64)
        dedup_role = role in (ROLE_NEW, ROLE_AGAINST)
        eval_role = role in (ROLE_NEW, ROLE_EVAL) and self.with_eval

        def emit(kind, keys, rows, dedup, seq=None, color=None, flat=None):
            if rows.size == 0:
                return
            out.append(
                {
                    "key": np.asarray(keys, dtype=np.uint64),
                    "kind": np.full(rows.size, kind, np.int8),
                    "node": nodes[rows],
                    "idkey": idkey[rows],
                    "role": np.full(rows.size, role, np.int8),
                    "dedup": np.asarray(dedup, dtype=bool) if not np.isscalar(dedup) else np.full(rows.size, dedup),
                    "seq": seq if seq is not None else [None] * rows.size,
                    "color": color if color is not None else [None] * rows.size,
                    "flat": np.asarray(flat if flat is not None else np.zeros(rows.size), dtype=np.uint64),
                }
            )

        exact = cfg.exact_cfg
        # -- exact keys (dedup between new and existing rows)
        if dedup_role:
            if exact.bytes and "sig_bytes" in t.column_names:
                k, v = _digest_keys(t.column("sig_bytes"))
                rows = np.flatnonzero(v)
                emit(K_BYTES, _key(K_BYTES, k[rows], media_salt[rows]), rows, True)
            if exact.pixels and "sig_pixels" in t.column_names:
                k, v = _list_keys(t.column("sig_pixels"))
                rows = np.flatnonzero(v)
                emit(K_PIXELS, _key(K_PIXELS, k[rows], media_salt[rows]), rows, True)
        # -- text keys: dedup among text/document rows; every row with text meets eval questions
        text_ok = has_text.copy()
        if role == ROLE_EVAL:
            texts = [row_text(a, b) for a, b in zip(_col(t, "text"), _col(t, "turns"))]
            words = np.fromiter((len(x.split()) for x in texts), dtype=np.int64, count=n)
            text_ok &= words >= cfg.text.min_words
        text_dedup = is_text_mod & dedup_role
        if "sig_text" in t.column_names:
            dd = text_ok & text_dedup & exact.text
            rows = np.flatnonzero(dd | (text_ok & eval_role))
            emit(K_TEXT, _key(K_TEXT, textkey[rows]), rows, dd[rows])
        if "sig_minhash" in t.column_names:
            col = t.column("sig_minhash").combine_chunks()
            valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool) & text_ok
            dd = valid & text_dedup & cfg.text.enabled
            rows = np.flatnonzero(dd | (valid & eval_role))
            if rows.size:
                sub = col.take(pa.array(rows))
                flat = np.asarray(sub.flatten().to_numpy(zero_copy_only=False), dtype=np.uint32)
                if flat.size != rows.size * cfg.text.num_perm:
                    raise UserError(
                        f"sig_minhash has {flat.size // max(rows.size, 1)} values per row, the recipe asks for "
                        f"num_perm={cfg.text.num_perm}; recompute the signatures",
                        field="dedup.text.num_perm",
                    )
                keys = band_keys(flat.reshape(rows.size, cfg.text.num_perm), cfg.text.bands, cfg.text.rows)
                b = cfg.text.bands
                rep = np.repeat(rows, b)
                emit(K_MINHASH, _key(K_MINHASH, keys.reshape(-1), np.tile(np.arange(b), rows.size)), rep, np.repeat(dd[rows], b))
        # -- perceptual image hashes
        if "sig_phash" in t.column_names:
            ph = t.column("sig_phash").to_pylist()
            colors = t.column("sig_color").to_pylist() if "sig_color" in t.column_names else [None] * n
            textlen = _col(t, "sig_textlen")
            flat = self.flat_rows(t)
            usable = np.array(
                [bool(h) and not flat[i] and not (modality[i] == "document" and (textlen[i] or 0) > 0) and modality[i] != "video" for i, h in enumerate(ph)],
                dtype=bool,
            )
            rows = np.flatnonzero(usable)
            if rows.size and dedup_role and cfg.image.enabled:
                first = np.array([ph[i][0] for i in rows], dtype=np.uint64)
                lens = np.array([len(ph[i]) for i in rows], dtype=np.uint64)
                ch = _chunks(first, cfg.image.bands)
                b = ch.shape[1]
                keys = _key(K_PHASH, ch.reshape(-1), np.tile(np.arange(b), rows.size), np.repeat(lens, b), np.repeat(media_salt[rows], b))
                rep = np.repeat(rows, b)
                emit(K_PHASH, keys, rep, True, seq=[ph[i] for i in rep], color=[colors[i] for i in rep])
            if rows.size and eval_role:
                # item by item: any image of a training row may be an eval image
                item_rows = np.concatenate([np.full(len(ph[i]), i) for i in rows])
                items = np.concatenate([np.asarray(ph[i], dtype=np.uint64) for i in rows])
                item_colors = [None if colors[i] is None else colors[i][3 * j : 3 * j + 3] for i in rows for j in range(len(ph[i]))]
                ch = _chunks(items, cfg.image.bands)
                b = ch.shape[1]
                keys = _key(K_PHASH_ITEM, ch.reshape(-1), np.tile(np.arange(b), items.size))
                rep = np.repeat(np.arange(items.size), b)
                emit(K_PHASH_ITEM, keys, item_rows[rep], False, seq=[[int(items[j])] for j in rep], color=[item_colors[j] for j in rep])
        if eval_role and "sig_pixels" in t.column_names:
            px = t.column("sig_pixels").to_pylist()
            pairs = [(i, v) for i, lst in enumerate(px) if lst for v in lst]
            if pairs:
                rows = np.array([i for i, _ in pairs], dtype=np.int64)
                keys = np.fromiter((int.from_bytes(v[:8], "big") for _, v in pairs), dtype=np.uint64, count=len(pairs))
                emit(K_PIXEL_ITEM, _key(K_PIXEL_ITEM, keys), rows, False)
        # -- videos: every (frame position, band) of non-flat frames
        if cfg.video.enabled and dedup_role and "sig_vhash" in t.column_names:
            vh = t.column("sig_vhash").to_pylist()
            vd = t.column("sig_vdetail").to_pylist() if "sig_vdetail" in t.column_names else [None] * n
            rec_rows, rec_keys, rec_seq, rec_flat = [], [], [], []
            masks = _band_masks(cfg.video.bands)
            for i, seq in enumerate(vh):
                if not seq:
                    continue
                det = np.asarray(vd[i] if vd[i] is not None else [np.inf] * len(seq), dtype=np.float64)
                flat_bits = det < cfg.image.min_detail
                if flat_bits.all():
                    continue
                arr = np.asarray(seq, dtype=np.uint64)
                pos = np.flatnonzero(~flat_bits)
                ch = _chunks(arr[pos], cfg.video.bands)
                nb = len(masks)
                keys = _key(K_VHASH, ch.reshape(-1), np.tile(np.arange(nb), pos.size), np.repeat(pos, nb), len(seq))
                fb = int(np.sum((1 << np.flatnonzero(flat_bits)).astype(np.uint64))) if flat_bits.any() else 0
                rec_rows.append(np.full(keys.size, i))
                rec_keys.append(keys)
                rec_seq.extend([seq] * keys.size)
                rec_flat.append(np.full(keys.size, fb, dtype=np.uint64))
            if rec_rows:
                emit(K_VHASH, np.concatenate(rec_keys), np.concatenate(rec_rows), True, seq=rec_seq, flat=np.concatenate(rec_flat))
        return out


def _col(t: pa.Table, name: str) -> list:
    return t.column(name).to_pylist() if name in t.column_names else [None] * t.num_rows


# ----------------------------------------------------------------------------- phase 1: scatter


class _Scatter:
    """Appends records to one parquet file per partition, flushing in row groups."""

    def __init__(self, directory: Path, partitions: int) -> None:
        self.dir = directory
        self.partitions = partitions
        self.buffers: list[list[pa.Table]] = [[] for _ in range(partitions)]
        self.sizes = [0] * partitions
        self.writers: list[pq.ParquetWriter | None] = [None] * partitions
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, rec: dict) -> None:
        table = pa.table(
            {
                "key": rec["key"],
                "kind": rec["kind"],
                "node": rec["node"],
                "idkey": rec["idkey"],
                "role": rec["role"],
                "dedup": rec["dedup"],
                "seq": pa.array(rec["seq"], pa.list_(pa.uint64())),
                "color": pa.array(rec["color"], pa.list_(pa.float32())),
                "flat": rec["flat"],
            },
            schema=RECORD_SCHEMA,
        )
        part = (rec["key"] % U64(self.partitions)).astype(np.int64)
        order = np.argsort(part, kind="stable")
        counts = np.bincount(part, minlength=self.partitions)
        table = table.take(pa.array(order))
        start = 0
        for p, c in enumerate(counts):
            if c:
                self.buffers[p].append(table.slice(start, int(c)))
                self.sizes[p] += int(c)
                start += int(c)
                if self.sizes[p] >= 200_000:
                    self._flush(p)

    def _flush(self, p: int) -> None:
        if not self.buffers[p]:
            return
        if self.writers[p] is None:
            self.writers[p] = pq.ParquetWriter(self.dir / f"part-{p:05d}.parquet.tmp", RECORD_SCHEMA)
        self.writers[p].write_table(pa.concat_tables(self.buffers[p]))
        self.buffers[p], self.sizes[p] = [], 0

    def close(self) -> None:
        for p in range(self.partitions):
            self._flush(p)
            if self.writers[p] is None:
                self.writers[p] = pq.ParquetWriter(self.dir / f"part-{p:05d}.parquet.tmp", RECORD_SCHEMA)
            self.writers[p].close()
            os.replace(self.dir / f"part-{p:05d}.parquet.tmp", self.dir / f"part-{p:05d}.parquet")


def _node_table(t: pa.Table, nodes: np.ndarray, role: int, set_index: int) -> pa.Table:
    n = t.num_rows
    area = t.column("sig_area") if "sig_area" in t.column_names else pa.nulls(n, pa.int64())
    textlen = t.column("sig_textlen") if "sig_textlen" in t.column_names else pa.nulls(n, pa.int32())
    nbytes = t.column("sig_nbytes") if "sig_nbytes" in t.column_names else pa.nulls(n, pa.int64())
    return pa.table(
        {
            "node": nodes,
            "id": t.column("id").cast(pa.string()),
            "role": np.full(n, role, np.int8),
            "set": np.full(n, set_index, np.int16),
            "area": pc.fill_null(area.cast(pa.int64()), 0),
            "nbytes": pc.fill_null(nbytes.cast(pa.int64()), 0),
            "textlen": pc.fill_null(textlen.cast(pa.int32()), 0),
        },
        schema=NODE_SCHEMA,
    )


# ----------------------------------------------------------------------------- phase 2: buckets


def _group_bounds(*cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, sizes) of runs of equal values across the given sorted columns."""
    n = cols[0].size
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
    for c in cols:
        change[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(change)
    sizes = np.diff(np.append(starts, n))
    return starts, sizes


def _pair_chunks(starts: np.ndarray, sizes: np.ndarray, limit: int = PAIR_CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """All within-group pairs, in chunks of about `limit` pairs; a huge group is cut by rows."""
    npairs = sizes * (sizes - 1) // 2
    i = 0
    while i < starts.size:
        if npairs[i] > limit:
            s, m = int(starts[i]), int(sizes[i])
            row = 0
            while row < m - 1:
                # rows row..end such that the pair count stays near the limit
                take, acc = 0, 0
                while row + take < m - 1 and acc + (m - 1 - row - take) <= max(limit, m):
                    acc += m - 1 - row - take
                    take += 1
                firsts = np.arange(row, row + take)
                partners = m - 1 - firsts
                p = np.repeat(s + firsts, partners)
                q = p + 1 + (np.arange(p.size) - np.repeat(np.cumsum(partners) - partners, partners))
                yield p, q
                row += take
            i += 1
            continue
        j, acc = i, 0
        while j < starts.size and npairs[j] <= limit and acc + npairs[j] <= limit:
            acc += npairs[j]
            j += 1
        j = max(j, i + 1)
        yield expand_pairs(starts[i:j], sizes[i:j])
        i = j


def _seq_matrix(col: pa.ChunkedArray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded ``uint64[n, length]`` matrix and lengths of a list<uint64> column, straight from Arrow buffers."""
    arr = col.combine_chunks()
    offsets = np.asarray(arr.offsets.to_numpy(), dtype=np.int64)
    lens = np.diff(offsets)
    lens[~np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = 0
    values = np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.uint64)
    mat = np.zeros((len(arr), max(length, 1)), dtype=np.uint64)
    rows = np.repeat(np.arange(len(arr)), lens)
    starts = np.repeat(offsets[:-1], lens)
    cols = np.arange(rows.size) - np.repeat(np.cumsum(lens) - lens, lens)
    mat[rows, cols] = values[starts + cols]
    return mat, lens


def _color_matrix(col: pa.ChunkedArray, length: int) -> np.ndarray:
    """``float32[n, length, 3]`` chroma moments (NaN where unknown) of a list<float32> column of triplets."""
    arr = col.combine_chunks()
    offsets = np.asarray(arr.offsets.to_numpy(), dtype=np.int64)
    lens = np.diff(offsets) // 3
    lens[~np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)] = 0
    lens = np.minimum(lens, length)
    values = np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.float32)
    mat = np.full((len(arr), max(length, 1), 3), np.nan, dtype=np.float32)
    rows = np.repeat(np.arange(len(arr)), lens)
    item = np.arange(rows.size) - np.repeat(np.cumsum(lens) - lens, lens)
    base = np.repeat(offsets[:-1], lens) + 3 * item
    for c in range(3):
        mat[rows, item, c] = values[base + c]
    return mat


def _verify_perceptual(kind: int, cfg: DedupConfig, seq: np.ndarray, lens: np.ndarray, color: np.ndarray | None,
                       flat: np.ndarray, p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(accepted mask, distance) for candidate pairs (p, q) of one partition's perceptual records."""
    same_len = lens[p] == lens[q]
    dist = np.bitwise_count(seq[p] ^ seq[q]).astype(np.int64)  # [pairs, L]
    pos = np.arange(seq.shape[1])[None, :]
    inside = pos < lens[p][:, None]
    if kind == K_VHASH:
        fa = ((flat[p][:, None] >> pos.astype(np.uint64)) & U64(1)).astype(bool)
        fb = ((flat[q][:, None] >> pos.astype(np.uint64)) & U64(1)).astype(bool)
        counted = inside & ~(fa & fb)
        match = counted & ~fa & ~fb & (dist <= cfg.video.max_distance)
        denom = counted.sum(axis=1)
        frac = np.where(denom > 0, match.sum(axis=1) / np.maximum(denom, 1), 0.0)
        ok = same_len & (denom > 0) & (frac >= cfg.video.frame_fraction)
        shown = np.where(counted & ~fa & ~fb, dist, 0).sum(axis=1) / np.maximum((counted & ~fa & ~fb).sum(axis=1), 1)
        return ok, shown.astype(np.float32)
    within = np.where(inside, dist <= cfg.image.max_distance, True).all(axis=1)
    ok = same_len & within
    if color is not None:
        ca, cb = color[p], color[q]
        grey = (ca[..., 2] < GREY_CHROMA) | (cb[..., 2] < GREY_CHROMA)
        cdist = np.hypot(ca[..., 0] - cb[..., 0], ca[..., 1] - cb[..., 1])
        known = ~np.isnan(cdist)
        color_ok = np.where(inside & known & ~grey, cdist <= cfg.image.max_chroma_distance, True).all(axis=1)
        ok &= color_ok
    shown = np.where(inside, dist, 0).max(axis=1)
    return ok, shown.astype(np.float32)


def _process_partition(path: Path, cfg: DedupConfig) -> tuple[pa.Table, pa.Table]:
    """Verified edges and MinHash candidate pairs of one partition file."""
    t = pq.read_table(path)
    empty = EDGE_SCHEMA.empty_table()
    if t.num_rows == 0:
        return empty, empty
    kind = t.column("kind").to_numpy()
    key = t.column("key").to_numpy()
    idkey = t.column("idkey").to_numpy()
    node = t.column("node").to_numpy()
    order = np.lexsort((node, idkey, key, kind))
    t = t.take(pa.array(order))
    kind, key, idkey, node = kind[order], key[order], idkey[order], node[order]
    role = t.column("role").to_numpy()
    dedup = t.column("dedup").to_numpy(zero_copy_only=False)
    edges: list[pa.Table] = []
    cands: list[pa.Table] = []

    def add(target, a, b, k, dist, contam):
        if a.size == 0:
            return
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        keep = lo != hi
        target.append(
            pa.table(
                {"a": lo[keep], "b": hi[keep], "kind": np.asarray(k, np.int8)[keep] if not np.isscalar(k) else np.full(keep.sum(), k, np.int8),
                 "dist": np.asarray(dist, np.float32)[keep] if not np.isscalar(dist) else np.full(keep.sum(), dist, np.float32),
                 "contam": np.asarray(contam, bool)[keep] if not np.isscalar(contam) else np.full(keep.sum(), contam)},
                schema=EDGE_SCHEMA,
            )
        )

    starts, sizes = _group_bounds(kind, key)
    gkind = kind[starts]
    is_d = dedup & (role != ROLE_EVAL)
    is_e = role == ROLE_EVAL
    is_new = role == ROLE_NEW
    group_of = np.repeat(np.arange(starts.size), sizes)

    # ---- exact and MinHash buckets: a star from the first dedup member (smallest id key)
    star = np.isin(gkind, (*EXACT_KINDS, K_MINHASH)) & (sizes > 1)
    if star.any():
        pos = np.flatnonzero(np.isin(group_of, np.flatnonzero(star)))
        g = group_of[pos]
        big = np.iinfo(np.int64).max
        first_d = np.full(starts.size, big)
        np.minimum.at(first_d, g[is_d[pos]], pos[is_d[pos]])
        first_e = np.full(starts.size, big)
        np.minimum.at(first_e, g[is_e[pos]], pos[is_e[pos]])
        # dedup edges
        sel = pos[is_d[pos] & (first_d[g] != pos) & (first_d[g] != big)]
        if sel.size:
            center = first_d[group_of[sel]]
            target = np.isin(kind[sel], EXACT_KINDS)
            add(edges, node[center[target]], node[sel[target]], kind[sel[target]], 0.0, False)
            add(cands, node[center[~target]], node[sel[~target]], kind[sel[~target]], 0.0, False)
        # contamination: every new row in a bucket with an eval row
        has_e = first_e != big
        sel = pos[is_new[pos] & has_e[g]]
        if sel.size:
            ex = np.isin(kind[sel], EXACT_KINDS)
            add(edges, node[sel[ex]], node[first_e[group_of[sel[ex]]]], kind[sel[ex]], 0.0, True)
            # MinHash: each new row against every eval row of the bucket (verified later)
            mh = sel[~ex]
            if mh.size:
                evals = pos[is_e[pos] & (kind[pos] == K_MINHASH)]
                eg = group_of[evals]
                order_e = np.argsort(eg, kind="stable")
                evals, eg = evals[order_e], eg[order_e]
                lo_i = np.searchsorted(eg, group_of[mh], side="left")
                hi_i = np.searchsorted(eg, group_of[mh], side="right")
                cnt = hi_i - lo_i
                a = np.repeat(mh, cnt)
                b = evals[np.repeat(lo_i, cnt) + (np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt))]
                add(cands, node[a], node[b], K_MINHASH, 0.0, True)

    # ---- perceptual buckets: every pair inside, verified here
    perc = np.isin(gkind, PERCEPTUAL_KINDS) & (sizes > 1)
    if perc.any():
        seq_col = t.column("seq")
        length = int(pc.max(pc.list_value_length(seq_col)).as_py() or 1)
        seq_mat, lens = _seq_matrix(seq_col, length)
        color_col = t.column("color")
        color_mat = _color_matrix(color_col, length) if color_col.null_count < t.num_rows else None
        flat = t.column("flat").to_numpy()
        pg = np.flatnonzero(perc)
        for p, q in _pair_chunks(starts[pg], sizes[pg]):
            dd = is_d[p] & is_d[q]
            ce = (is_new[p] & is_e[q]) | (is_e[p] & is_new[q])
            keep = dd | ce
            p, q, dd = p[keep], q[keep], dd[keep]
            if p.size == 0:
                continue
            for k in PERCEPTUAL_KINDS:
                m = kind[p] == k
                if not m.any():
                    continue
                ok, dist = _verify_perceptual(k, cfg, seq_mat, lens, color_mat, flat, p[m], q[m])
                pm, qm, ddm = p[m][ok], q[m][ok], dd[m][ok]
                add(edges, node[pm], node[qm], k, dist[ok], ~ddm)
    out_edges = pa.concat_tables(edges) if edges else empty
    out_cands = pa.concat_tables(cands) if cands else empty
    return _dedupe_edges(out_edges), _dedupe_edges(out_cands)


def _dedupe_edges(t: pa.Table) -> pa.Table:
    """One row per (a, b, contam): the strongest evidence (exact kinds first, then the smallest distance)."""
    if t.num_rows == 0:
        return t
    a, b = t.column("a").to_numpy(), t.column("b").to_numpy()
    k = t.column("kind").to_numpy()
    d = t.column("dist").to_numpy()
    c = t.column("contam").to_numpy(zero_copy_only=False)
    exact_first = (~np.isin(k, EXACT_KINDS)).astype(np.int8)
    order = np.lexsort((k, d, exact_first, c, b, a))
    a, b, c = a[order], b[order], c[order]
    keep = np.ones(a.size, dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (c[1:] != c[:-1])
    return t.take(pa.array(order[keep]))


# ----------------------------------------------------------------------------- phase 3: text verification


def _verify_text(cands: pa.Table, files: list[_File], cfg: DedupConfig, workdir: Path, map_fn: MapFn) -> pa.Table:
    """Keep MinHash candidates whose exact Jaccard (or signature estimate) reaches the threshold."""
    if cands.num_rows == 0:
        return EDGE_SCHEMA.empty_table()
    tcfg = cfg.text
    offsets = np.array([f.offset for f in files], dtype=np.int64)
    a = cands.column("a").to_numpy()
    b = cands.column("b").to_numpy()
    fa = np.searchsorted(offsets, a, side="right") - 1
    fb = np.searchsorted(offsets, b, side="right") - 1
    join = workdir / "join"
    if join.exists():
        shutil.rmtree(join)
    join.mkdir(parents=True)
    eidx = np.arange(a.size)

    def payload(f: _File, local: np.ndarray) -> list[np.ndarray]:
        if tcfg.verify:
            t = f.take(local, ["text", "turns"])
            texts = [row_text(x, y) for x, y in zip(_col(t, "text"), _col(t, "turns"))]
            return shingle_sets(texts, ngram=tcfg.ngram, unit=tcfg.unit, seed=tcfg.seed)
        t = f.take(local, ["sig_minhash"])
        mat = np.asarray(t.column("sig_minhash").combine_chunks().flatten().to_numpy(), dtype=np.uint64)
        return list(mat.reshape(len(local), -1))

    # pass 1: payload of `a`, written next to the file of `b`
    for fi in np.unique(fa):
        sel = np.flatnonzero(fa == fi)
        uniq, inv = np.unique(a[sel] - offsets[fi], return_inverse=True)
        pay = payload(files[fi], uniq)
        out = pa.table(
            {
                "e": eidx[sel],
                "fb": fb[sel],
                "pa": pa.array([pay[i] for i in inv], pa.list_(pa.uint64())),
            }
        )
        for gb in np.unique(fb[sel]):
            part = out.filter(pc.equal(out.column("fb"), int(gb)))
            pq.write_table(part, join / f"to-{gb:06d}-from-{fi:06d}.parquet")
    # pass 2: per file of `b`, compare
    sims = np.zeros(a.size, dtype=np.float64)
    for gb in np.unique(fb):
        parts = sorted(join.glob(f"to-{gb:06d}-from-*.parquet"))
        t = pa.concat_tables([pq.read_table(p) for p in parts])
        e = t.column("e").to_numpy()
        uniq, inv = np.unique(b[e] - offsets[gb], return_inverse=True)
        pay_b = payload(files[gb], uniq)
        pay_a = [np.asarray(x, dtype=np.uint64) for x in t.column("pa").to_pylist()]
        if tcfg.verify:
            sims[e] = jaccard_pairs(pay_a, [pay_b[i] for i in inv])
        else:
            sims[e] = estimated_jaccard(np.stack(pay_a), np.stack([pay_b[i] for i in inv]))
    shutil.rmtree(join, ignore_errors=True)
    ok = sims >= tcfg.threshold
    res = cands.filter(pa.array(ok))
    return res.set_column(res.schema.get_field_index("dist"), "dist", pa.array((1.0 - sims[ok]).astype(np.float32)))


# ----------------------------------------------------------------------------- driver


def _serial_map(fn: Callable[[int], Any], items: Sequence[int]) -> list[Any]:
    return [fn(i) for i in items]


def _done(workdir: Path, phase: str, fp: str) -> bool:
    marker = workdir / f"{phase}.done"
    return marker.is_file() and marker.read_text() == fp


def _mark(workdir: Path, phase: str, fp: str) -> None:
    tmp = workdir / f"{phase}.done.tmp"
    tmp.write_text(fp)
    os.replace(tmp, workdir / f"{phase}.done")


def resolve_duplicates(
    signatures: Any,
    config: DedupConfig | Mapping[str, Any] | None = None,
    against: Sequence[str | os.PathLike] | None = None,
    decontaminate: Sequence[str | EvalSetConfig | Mapping[str, Any]] | None = None,
    workdir: str | os.PathLike | None = None,
    map_fn: MapFn | None = None,
) -> pa.Table:
    """Clusters and drop decisions for signature rows.

    ``signatures``: a pyarrow Dataset, a list of parquet paths, a folder of
    parquet files, or a Table of rows carrying ``id``, ``modality`` and the
    ``sig_*`` columns (plus ``text``/``turns`` when text verification is on).
    ``against``/``decontaminate`` default to the config's lists. ``map_fn(fn,
    items)`` may run the per-partition work in parallel (e.g. Ray tasks); the
    result is the same either way.

    Returns ``id, dup_cluster, reason, detail`` for every row that is in a
    cluster (its representative included, with a null reason) or is
    contaminated; rows not listed are singletons.
    """
    cfg = config if isinstance(config, DedupConfig) else DedupConfig.model_validate(dict(config or {}))
    against_list = [str(a) for a in (cfg.against if against is None else against)]
    if decontaminate is None:
        evals = cfg.eval_sets
    else:
        evals = DedupConfig.model_validate({"decontaminate": list(decontaminate)}).eval_sets
    map_fn = map_fn or _serial_map
    if workdir is None:
        import tempfile

        tmp = tempfile.TemporaryDirectory(prefix="smolcurate-dedup-")
        work = Path(tmp.name)
    else:
        tmp = None
        work = Path(workdir)
        work.mkdir(parents=True, exist_ok=True)
    try:
        return _resolve(signatures, cfg, against_list, evals, work, map_fn)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _resolve(signatures: Any, cfg: DedupConfig, against: list[str], evals: list[EvalSetConfig], work: Path, map_fn: MapFn) -> pa.Table:
    files = _input_paths(signatures)
    fp = _fingerprint(files, cfg, against, evals)
    if not _done(work, "inputs", fp):
        for sub in ("sources", "buckets", "nodes", "edges", "join"):
            shutil.rmtree(work / sub, ignore_errors=True)
        for marker in work.glob("*.done"):
            marker.unlink()
        for k, path in enumerate(against):
            write_source(iter_source(path, cfg, field=f"dedup.against[{k}]"), work / "sources" / f"against-{k:03d}")
        for k, ev in enumerate(evals):
            write_source(iter_source(ev.path, cfg, field=f"decontaminate[{k}]", evalset=ev), work / "sources" / f"eval-{k:03d}")
        _mark(work, "inputs", fp)
    for k in range(len(against)):
        for p in sorted((work / "sources" / f"against-{k:03d}").glob("*.parquet")):
            files.append(_File(str(p), None, ROLE_AGAINST, k, 0, pq.ParquetFile(p).metadata.num_rows))
    for k in range(len(evals)):
        for p in sorted((work / "sources" / f"eval-{k:03d}").glob("*.parquet")):
            files.append(_File(str(p), None, ROLE_EVAL, k, 0, pq.ParquetFile(p).metadata.num_rows))
    offset = 0
    for f in files:
        f.offset = offset
        offset += f.rows

    with_eval = bool(evals)
    read_cols = [c for c in CARRY if c not in ("turns",)] + ["turns"]
    # phase 1: scatter
    if not _done(work, "scatter", fp):
        shutil.rmtree(work / "buckets", ignore_errors=True)
        shutil.rmtree(work / "nodes", ignore_errors=True)
        (work / "nodes").mkdir(parents=True)
        builder = _Builder(cfg, with_eval)
        scatter = _Scatter(work / "buckets", cfg.partitions)
        for fi, f in enumerate(files):
            start = f.offset
            node_parts = []
            cols = read_cols if f.role == ROLE_EVAL else [c for c in read_cols if c not in ("text", "turns")]
            for batch in f.batches(cols):
                if "id" not in batch.column_names:
                    raise UserError("signature rows need an `id` column", field="dedup")
                nodes = np.arange(start, start + batch.num_rows, dtype=np.int64)
                start += batch.num_rows
                for rec in builder.records(batch, nodes, f.role):
                    scatter.add(rec)
                node_parts.append(_node_table(batch, nodes, f.role, f.set_index))
            if node_parts:
                pq.write_table(pa.concat_tables(node_parts), work / "nodes" / f"f-{fi:06d}.parquet")
        scatter.close()
        _mark(work, "scatter", fp)

    # phase 2: buckets, partition by partition (resumable per partition)
    (work / "edges").mkdir(exist_ok=True)

    def run_partition(p: int) -> int:
        edge_path = work / "edges" / f"edges-{p:05d}.parquet"
        cand_path = work / "edges" / f"cands-{p:05d}.parquet"
        if edge_path.is_file() and cand_path.is_file() and _done(work, f"edges/p{p:05d}", fp):
            return p
        e, c = _process_partition(work / "buckets" / f"part-{p:05d}.parquet", cfg)
        pq.write_table(e, edge_path)
        pq.write_table(c, cand_path)
        _mark(work, f"edges/p{p:05d}", fp)
        return p

    list(map_fn(run_partition, list(range(cfg.partitions))))

    edges = _dedupe_edges(pa.concat_tables([pq.read_table(p) for p in sorted((work / "edges").glob("edges-*.parquet"))]))
    cands = _dedupe_edges(pa.concat_tables([pq.read_table(p) for p in sorted((work / "edges").glob("cands-*.parquet"))]))
    # phase 3: text verification
    if _done(work, "text", fp) and (work / "text-edges.parquet").is_file():
        text_edges = pq.read_table(work / "text-edges.parquet")
    else:
        text_edges = _verify_text(cands, files, cfg, work, map_fn)
        pq.write_table(text_edges, work / "text-edges.parquet")
        _mark(work, "text", fp)
    all_edges = _dedupe_edges(pa.concat_tables([edges, text_edges]))
    return _clusters(all_edges, work, evals)


# ----------------------------------------------------------------------------- phase 4: clusters


def _clusters(edges: pa.Table, work: Path, evals: list[EvalSetConfig]) -> pa.Table:
    a = edges.column("a").to_numpy()
    b = edges.column("b").to_numpy()
    kind = edges.column("kind").to_numpy()
    dist = edges.column("dist").to_numpy()
    contam = edges.column("contam").to_numpy(zero_copy_only=False)
    dd = ~contam
    uf = UnionFind()
    uf.union(a[dd], b[dd])
    keys, roots = uf.components()
    involved = np.unique(np.concatenate((keys, a[contam], b[contam])))
    # attributes of the involved nodes only, streamed from the per-file node tables
    parts = []
    for path in sorted((work / "nodes").glob("f-*.parquet")):
        t = pq.read_table(path)
        nodes = t.column("node").to_numpy()
        m = np.isin(nodes, involved, assume_unique=False)
        if m.any():
            parts.append(t.filter(pa.array(m)))
    if not parts:
        return RESULT_SCHEMA.empty_table()
    attrs = pa.concat_tables(parts).sort_by("node")
    anode = attrs.column("node").to_numpy()
    aid = np.asarray(attrs.column("id").to_pylist(), dtype=object)
    arole = attrs.column("role").to_numpy()
    aset = attrs.column("set").to_numpy()

    def idx(x: np.ndarray) -> np.ndarray:
        return np.searchsorted(anode, x)

    # contamination: new rows with a verified edge to an eval row
    contaminated: dict[int, tuple[str, str]] = {}
    if contam.any():
        ca, cb, ck, cdist = a[contam], b[contam], kind[contam], dist[contam]
        ra, rb = arole[idx(ca)], arole[idx(cb)]
        new = np.where(ra == ROLE_NEW, ca, cb)
        ev = np.where(ra == ROLE_NEW, cb, ca)
        evset = aset[idx(ev)]
        evid = aid[idx(ev)]
        # strongest evidence per row: exact kinds, then smallest distance, then eval id
        exact_first = (~np.isin(ck, EXACT_KINDS)).astype(np.int8)
        order = np.lexsort((evid.astype(str), cdist, exact_first, new))
        seen = set()
        for o in order:
            nn = int(new[o])
            if nn in seen:
                continue
            seen.add(nn)
            name = evals[int(evset[o])].label if evals else "eval"
            contaminated[nn] = (
                f"contaminated:{name}",
                _detail(None, KIND_NAMES[ck[o]], float(cdist[o]), str(evid[o]), ck[o]),
            )

    # clusters: representative by rank; existing (against) rows win, contaminated rows never represent
    rows_out: dict[int, list] = {}
    if keys.size:
        k_idx = idx(keys)
        role = arole[k_idx]
        ids = aid[k_idx].astype(str)
        area = attrs.column("area").to_numpy()[k_idx]
        textlen = attrs.column("textlen").to_numpy()[k_idx]
        nbytes = attrs.column("nbytes").to_numpy()[k_idx]
        bad = np.array([int(k) in contaminated for k in keys], dtype=bool)
        tab = pa.table(
            {
                "node": keys,
                "root": roots,
                "not_existing": (role != ROLE_AGAINST).astype(np.int8),
                "bad": bad.astype(np.int8),
                "area": area,
                "nbytes": nbytes,
                "textlen": textlen,
                "id": ids,
            }
        ).sort_by([("root", "ascending"), ("not_existing", "ascending"), ("bad", "ascending"),
                   ("area", "descending"), ("nbytes", "descending"), ("textlen", "descending"), ("id", "ascending")])
        root_s = tab.column("root").to_numpy()
        node_s = tab.column("node").to_numpy()
        id_s = np.asarray(tab.column("id").to_pylist(), dtype=object)
        starts, sizes = _group_bounds(root_s)
        rep_pos = np.repeat(starts, sizes)
        rep_node = node_s[rep_pos]
        rep_id = id_s[rep_pos]
        best = _best_match(a[dd], b[dd], kind[dd], dist[dd], aid, anode)
        is_new_s = arole[idx(node_s)] == ROLE_NEW
        for i in np.flatnonzero(is_new_s):
            nn = int(node_s[i])
            rep = str(rep_id[i])
            if nn in contaminated:
                reason, detail = contaminated[nn]
            elif int(rep_node[i]) == nn:
                reason, detail = None, None
            else:
                bk, bd, bn = best.get(nn, (K_BYTES, 0.0, rep))
                reason, detail = "duplicate", _detail(rep, KIND_NAMES[bk], bd, bn, bk)
            rows_out[nn] = [str(id_s[i]), rep, reason, detail]
    for nn, (reason, detail) in contaminated.items():
        if nn not in rows_out:
            rows_out[nn] = [str(aid[idx(np.array([nn]))[0]]), None, reason, detail]
    if not rows_out:
        return RESULT_SCHEMA.empty_table()
    vals = sorted(rows_out.values(), key=lambda r: r[0])
    return pa.table(
        {
            "id": pa.array([v[0] for v in vals], pa.string()),
            "dup_cluster": pa.array([v[1] for v in vals], pa.string()),
            "reason": pa.array([v[2] for v in vals], pa.string()),
            "detail": pa.array([v[3] for v in vals], pa.string()),
        },
        schema=RESULT_SCHEMA,
    )


def _best_match(a, b, kind, dist, aid, anode) -> dict[int, tuple[int, float, str]]:
    """Per node: its strongest verified match (kind, distance, neighbour id) -- what the ledger detail shows."""
    if a.size == 0:
        return {}
    node = np.concatenate((a, b))
    other = np.concatenate((b, a))
    k = np.concatenate((kind, kind))
    d = np.concatenate((dist, dist))
    oid = aid[np.searchsorted(anode, other)].astype(str)
    exact_first = (~np.isin(k, EXACT_KINDS)).astype(np.int8)
    order = np.lexsort((oid, d, exact_first, node))
    node, k, d, oid = node[order], k[order], d[order], oid[order]
    first = np.ones(node.size, dtype=bool)
    first[1:] = node[1:] != node[:-1]
    return {int(n): (int(kk), float(dd), str(o)) for n, kk, dd, o in zip(node[first], k[first], d[first], oid[first])}


def _detail(rep: str | None, match: str, dist: float, neighbour: str, kind: int) -> str:
    parts = {}
    if rep is not None:
        parts["rep"] = rep
    parts["match"] = match
    if kind == K_MINHASH:
        parts["jaccard"] = round(1.0 - dist, 4)
    elif kind in PERCEPTUAL_KINDS:
        parts["distance"] = round(dist, 2)
    parts["with"] = neighbour
    return json.dumps(parts, sort_keys=False)
