"""Bucket records: what every signature row contributes to the hash partitions (phase 1 of resolve)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dedup.config import DedupConfig
from curation.dedup.layout import (
    K_BYTES, K_MINHASH, K_PHASH, K_PHASH_ITEM, K_PIXEL_ITEM, K_PIXELS, K_TEXT, K_VHASH, NODE_SCHEMA,
    RECORD_SCHEMA, ROLE_AGAINST, ROLE_EVAL, ROLE_NEW, TEXT_MODALITIES, U64,
)
from curation.dedup.minhash import band_keys, mix64
from curation.dedup.signatures import row_text
from manifests.errors import UserError


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


class RecordBuilder:
    """Turns batches of signature rows into bucket records."""

    def __init__(self, config: DedupConfig, with_eval: bool) -> None:
        self.config = config
        self.with_eval = with_eval

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
                    "seq": seq if seq is not None else pa.nulls(rows.size, pa.list_(pa.uint64())),
                    "color": color if color is not None else pa.nulls(rows.size, pa.list_(pa.float32())),
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
            texts = [row_text(a, b) for a, b in zip(column_values(t, "text"), column_values(t, "turns"))]
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
            ph_col = t.column("sig_phash").combine_chunks()
            lens = np.asarray(pc.fill_null(pc.list_value_length(ph_col), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
            offsets = np.asarray(ph_col.offsets.to_numpy(), dtype=np.int64)
            values = np.asarray(ph_col.values.to_numpy(zero_copy_only=False), dtype=np.uint64)
            color_col = t.column("sig_color").combine_chunks() if "sig_color" in t.column_names else None
            textlen = np.asarray(pc.fill_null(t.column("sig_textlen"), 0).to_numpy(zero_copy_only=False)) if "sig_textlen" in t.column_names else np.zeros(n)
            mod = modality.astype(str)
            usable = (lens > 0) & ~self.flat_rows(t) & (mod != "video") & ~((mod == "document") & (textlen > 0))
            rows = np.flatnonzero(usable)
            if rows.size and dedup_role and cfg.image.enabled:
                first = values[offsets[rows]]
                ch = _chunks(first, cfg.image.bands)
                b = ch.shape[1]
                keys = _key(K_PHASH, ch.reshape(-1), np.tile(np.arange(b), rows.size),
                            np.repeat(lens[rows].astype(np.uint64), b), np.repeat(media_salt[rows], b))
                rep = pa.array(np.repeat(rows, b))
                emit(K_PHASH, keys, np.repeat(rows, b), True, seq=ph_col.take(rep),
                     color=color_col.take(rep) if color_col is not None else None)
                if cfg.image.crops and "sig_phash_win" in t.column_names:
                    self._window_records(t, rows[lens[rows] == 1], media_salt, color_col, emit)
            if rows.size and eval_role:
                # item by item: any image of a training row may be an eval image
                per = lens[rows]
                item_rows = np.repeat(rows, per)
                j = np.arange(item_rows.size) - np.repeat(np.cumsum(per) - per, per)
                items = values[offsets[item_rows] + j]
                item_color = np.full((items.size, 3), np.nan, dtype=np.float32)
                if color_col is not None:
                    coff = np.asarray(color_col.offsets.to_numpy(), dtype=np.int64)
                    cvals = np.asarray(color_col.values.to_numpy(zero_copy_only=False), dtype=np.float32)
                    ok = (coff[item_rows + 1] - coff[item_rows]) == 3 * lens[item_rows]
                    base = coff[item_rows[ok]] + 3 * j[ok]
                    item_color[ok] = np.stack([cvals[base + c] for c in range(3)], axis=1)
                ch = _chunks(items, cfg.image.bands)
                b = ch.shape[1]
                keys = _key(K_PHASH_ITEM, ch.reshape(-1), np.tile(np.arange(b), items.size))
                rep = np.repeat(np.arange(items.size), b)
                m = rep.size
                seq = pa.ListArray.from_arrays(pa.array(np.arange(m + 1, dtype=np.int32)), pa.array(items[rep]))
                color = pa.ListArray.from_arrays(pa.array(np.arange(m + 1, dtype=np.int32) * 3), pa.array(item_color[rep].reshape(-1)))
                emit(K_PHASH_ITEM, keys, item_rows[rep], False, seq=seq, color=color)
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
            rec_rows, rec_keys, rec_flat = [], [], []
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
                # each frame's bands at its own position and the next one: copies whose samples are
                # offset by up to one position (trimmed, retimed) still meet; the alignment verifies
                reps = 2 if cfg.video.align else 1
                band = np.tile(ch.reshape(-1), reps)
                idx = np.tile(np.arange(nb), reps * pos.size)
                at = np.concatenate([np.repeat(pos + r, nb) for r in range(reps)])
                keys = np.unique(_key(K_VHASH, band, idx, at))
                fb = int(np.sum((1 << np.flatnonzero(flat_bits)).astype(np.uint64))) if flat_bits.any() else 0
                rec_rows.append(np.full(keys.size, i))
                rec_keys.append(keys)
                rec_flat.append(np.full(keys.size, fb, dtype=np.uint64))
            if rec_rows:
                vrows = np.concatenate(rec_rows)
                seq = t.column("sig_vhash").combine_chunks().take(pa.array(vrows))
                emit(K_VHASH, np.concatenate(rec_keys), vrows, True, seq=seq, flat=np.concatenate(rec_flat))
        return out


    def _window_records(self, t: pa.Table, rows: np.ndarray, media_salt: np.ndarray, color_col, emit) -> None:
        """pHash band records of the crop windows of single-image rows, in the same buckets as whole-image hashes.

        They carry the window's hash as their sequence, so a crop of up to 10%
        meets its original (a window of the original, or one of its own windows,
        lands within the distance); verification then aligns the two.
        """
        win_col = t.column("sig_phash_win").combine_chunks()
        wlen = np.asarray(pc.fill_null(pc.list_value_length(win_col), 0).to_numpy(zero_copy_only=False), dtype=np.int64)
        rows = rows[wlen[rows] > 0]
        if rows.size == 0:
            return
        woff = np.asarray(win_col.offsets.to_numpy(), dtype=np.int64)
        wval = np.asarray(win_col.values.to_numpy(zero_copy_only=False), dtype=np.uint64)
        per = wlen[rows]
        owner = np.repeat(rows, per)
        j = np.arange(owner.size) - np.repeat(np.cumsum(per) - per, per)
        hashes = wval[woff[owner] + j]
        ch = _chunks(hashes, self.config.image.bands)
        b = ch.shape[1]
        keys = _key(K_PHASH, ch.reshape(-1), np.tile(np.arange(b), hashes.size), np.ones(hashes.size * b, np.uint64),
                    np.repeat(media_salt[owner], b))
        rep = np.repeat(np.arange(hashes.size), b)
        seq = pa.ListArray.from_arrays(pa.array(np.arange(rep.size + 1, dtype=np.int32)), pa.array(hashes[rep]))
        color = color_col.take(pa.array(owner[rep])) if color_col is not None else None
        emit(K_PHASH, keys, owner[rep], True, seq=seq, color=color)


def column_values(t: pa.Table, name: str) -> list:
    return t.column(name).to_pylist() if name in t.column_names else [None] * t.num_rows


# ----------------------------------------------------------------------------- phase 1: scatter


class Scatter:
    """Appends records to one parquet file per partition, flushing in row groups."""

    #: records held in memory across all partitions before they are written (~50 MB)
    BUFFER_RECORDS = 500_000

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
                "seq": rec["seq"].cast(pa.list_(pa.uint64())),
                "color": rec["color"].cast(pa.list_(pa.float32())),
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
        if sum(self.sizes) >= self.BUFFER_RECORDS:  # bounded memory: one row group per partition
            for p in range(self.partitions):
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


def node_table(t: pa.Table, nodes: np.ndarray, role: int, set_index: int) -> pa.Table:
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
