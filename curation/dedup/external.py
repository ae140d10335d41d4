"""Rows from outside the job: existing manifests (`against:`) and evaluation sets (`decontaminate:`).

Everything is turned into manifest-shaped batches (``id, modality, media,
text, turns``) with signature columns (rows of a folder or a plain dataset get
readable ids, ``<set name>:<relative path or row id>``, which is what a ledger
``detail`` then names), so the resolve stage treats a folder of
eval images, a parquet file of VQA questions, a saved Hugging Face dataset
and an existing manifest the same way. Nothing is fetched from a hub: a
dataset is read from local files only.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curation.dedup.config import DedupConfig, EvalSetConfig
from curation.dedup.signatures import SIGNATURE_COLUMNS, compute_signatures
from manifests.errors import UserError
from manifests.fsutil import atomic_write
from media import IMAGE_EXTENSIONS
from manifests.schema import MEDIA_TYPE, TURN_TYPE

IMAGE_COLUMNS = ("image", "images", "img", "picture", "decoded_image", "image_bytes")
TEXT_COLUMNS = ("question", "query", "problem", "prompt", "text", "instruction", "caption")
ID_COLUMNS = ("id", "question_id", "qid", "pid", "index", "idx", "sample_id")
BATCH = 256

#: what a signature row carries (the resolve stage reads these plus ``text``/``turns`` to verify)
CARRY = ("id", "modality", "text", "turns", "score_low_info", *SIGNATURE_COLUMNS)


def _is_manifest(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


def _hf_saved(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file())


def iter_source(path: str | os.PathLike, config: DedupConfig, *, field: str, evalset: EvalSetConfig | None = None) -> Iterator[pa.Table]:
    """Batches of signature rows for one `against:` or `decontaminate:` entry."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{p}: no such file or directory", field=field)
    try:
        yield from _source_batches(p, config, field, evalset)
    except (pa.ArrowException, OSError) as exc:  # a corrupt parquet file or saved dataset: one line, not a traceback
        raise UserError(f"{p}: cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})", field=field) from exc


def _source_batches(p: Path, config: DedupConfig, field: str, evalset: EvalSetConfig | None) -> Iterator[pa.Table]:
    label = evalset.label if evalset else p.name
    if _is_manifest(p):
        yield from _manifest_batches(p, config)
    elif _hf_saved(p):
        yield from _table_batches(_hf_table(p, evalset, field), config, label, p, evalset, field)
    elif p.is_file() and p.suffix == ".parquet" or (p.is_dir() and any(p.rglob("*.parquet"))):
        dataset = pads.dataset(str(p), format="parquet")
        yield from _dataset_batches(dataset, config, label, p, evalset, field)
    elif p.is_dir():
        yield from _folder_batches(p, config, label)
    elif p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS:
        yield from _folder_batches(p, config, label)
    else:
        raise UserError(f"{p}: not a manifest, parquet file, saved dataset or image folder", field=field)


def _manifest_batches(path: Path, config: DedupConfig) -> Iterator[pa.Table]:
    from manifests.reader import open_manifest

    man = open_manifest(path)
    names = set(man.schema.names)
    have = all(c in names for c in SIGNATURE_COLUMNS)
    stamped = (man.info.get("extra") or {}).get("dedup_signature") == config.signature_fingerprint()
    if have and stamped:
        cols = [c for c in CARRY if c in names]
        for batch in man.dataset().to_batches(columns=cols, batch_size=4096):
            yield pa.Table.from_batches([batch])
        return
    cols = [c for c in ("id", "modality", "media", "text", "turns", "score_low_info") if c in names]
    for batch in man.dataset().to_batches(columns=cols, batch_size=BATCH):
        yield _keep(compute_signatures(pa.Table.from_batches([batch]), config))


def _keep(table: pa.Table) -> pa.Table:
    return table.select([c for c in CARRY if c in table.column_names])


def _folder_batches(root: Path, config: DedupConfig, label: str) -> Iterator[pa.Table]:
    files = [root] if root.is_file() else sorted(
        f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
    )
    for i in range(0, len(files), BATCH):
        chunk = files[i : i + BATCH]
        rel = [str(f.relative_to(root)) if root.is_dir() else f.name for f in chunk]
        table = pa.table(
            {
                "id": pa.array([f"{label}:{r}" for r in rel], pa.string()),
                "modality": pa.array(["image"] * len(chunk), pa.string()),
                "media": pa.array([[{"uri": str(f.resolve()), "kind": "image"}] for f in chunk], pa.list_(MEDIA_TYPE)),
                "text": pa.nulls(len(chunk), pa.string()),
                "turns": pa.nulls(len(chunk), pa.list_(TURN_TYPE)),
            }
        )
        yield _keep(compute_signatures(table, config))


def _hf_table(path: Path, evalset: EvalSetConfig | None, field: str) -> pa.Table:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        split = evalset.split if evalset and evalset.split else None
        if split is None:
            if len(loaded) != 1:
                raise UserError(f"{path}: a dataset with splits {sorted(loaded)}; name one with `split:`", field=field)
            split = next(iter(loaded))
        if split not in loaded:
            raise UserError(f"{path}: no split {split!r} (has {sorted(loaded)})", field=field)
        loaded = loaded[split]
    return loaded.data.table


def _dataset_batches(dataset: pads.Dataset, config, label, path, evalset, field) -> Iterator[pa.Table]:
    names = set(dataset.schema.names)
    if {"id", "modality", "media"} <= names:  # manifest-shaped parquet (e.g. a shard)
        cols = [c for c in ("id", "modality", "media", "text", "turns", "score_low_info") if c in names]
        for batch in dataset.to_batches(columns=cols, batch_size=BATCH):
            yield _keep(compute_signatures(pa.Table.from_batches([batch]), config))
        return
    image_col, text_col, id_col = _pick_columns(dataset.schema, evalset, path, field)
    cols = [c for c in (image_col, text_col, id_col) if c]
    base = path.parent if path.is_file() else path
    offset = 0
    for batch in dataset.to_batches(columns=cols, batch_size=BATCH):
        yield _convert(pa.Table.from_batches([batch]), image_col, text_col, id_col, label, base, offset, config)
        offset += batch.num_rows


def _table_batches(table: pa.Table, config, label, path, evalset, field) -> Iterator[pa.Table]:
    image_col, text_col, id_col = _pick_columns(table.schema, evalset, path, field)
    offset = 0
    for batch in table.to_batches(max_chunksize=BATCH):
        t = pa.Table.from_batches([batch])
        yield _convert(t, image_col, text_col, id_col, label, path, offset, config)
        offset += batch.num_rows


def _pick_columns(schema: pa.Schema, evalset: EvalSetConfig | None, path: Path, field: str):
    names = schema.names
    lower = {n.lower(): n for n in names}

    def pick(explicit: str | None, candidates: tuple[str, ...], what: str) -> str | None:
        if explicit:
            if explicit not in names:
                raise UserError(f"{path}: no column {explicit!r} (has {names})", field=f"{field}.{what}")
            return explicit
        return next((lower[c] for c in candidates if c in lower), None)

    image_col = pick(evalset.image_column if evalset else None, IMAGE_COLUMNS, "image_column")
    text_col = pick(evalset.text_column if evalset else None, TEXT_COLUMNS, "text_column")
    id_col = next((lower[c] for c in ID_COLUMNS if c in lower), None)
    if image_col is None and text_col is None:
        raise UserError(f"{path}: found neither an image column nor a question column among {names}", field=field)
    return image_col, text_col, id_col


def _media_items(value: Any, base: Path) -> list[dict[str, Any]]:
    """Media references from a dataset cell: HF Image struct, raw bytes, a path, or a list of those."""
    if value is None:
        return []
    if isinstance(value, list):
        out: list[dict[str, Any]] = []
        for v in value:
            out.extend(_media_items(v, base))
        return out
    if isinstance(value, dict):
        data, p = value.get("bytes"), value.get("path")
        if data:
            return [{"bytes": bytes(data), "kind": "image"}]
        return _media_items(p, base) if p else []
    if isinstance(value, (bytes, bytearray)):
        return [{"bytes": bytes(value), "kind": "image"}] if value else []
    if isinstance(value, str) and value:
        p = Path(value)
        p = p if p.is_absolute() else base / p
        return [{"uri": str(p), "kind": "image"}]
    return []


def _convert(table: pa.Table, image_col, text_col, id_col, label: str, base: Path, offset: int, config) -> pa.Table:
    n = table.num_rows
    images = table.column(image_col).to_pylist() if image_col else [None] * n
    texts = table.column(text_col).to_pylist() if text_col else [None] * n
    keys = [str(v) for v in table.column(id_col).to_pylist()] if id_col else [str(offset + i) for i in range(n)]
    media = [_media_items(v, base) for v in images]
    texts = [t if isinstance(t, str) else (None if t is None else str(t)) for t in texts]
    modality = ["image_text" if m and t else ("image" if m else "text") for m, t in zip(media, texts)]
    out = pa.table(
        {
            "id": pa.array([f"{label}:{k}" for k in keys], pa.string()),
            "modality": pa.array(modality, pa.string()),
            "media": pa.array(media, pa.list_(MEDIA_TYPE)),
            "text": pa.array(texts, pa.string()),
            "turns": pa.nulls(n, pa.list_(TURN_TYPE)),
        }
    )
    return _keep(compute_signatures(out, config))


def write_source(batches: Iterator[pa.Table], out_dir: Path) -> list[Path]:
    """Materialise signature rows as parquet parts (the resolve stage reads them back partition by partition)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for i, table in enumerate(batches):
        if table.num_rows == 0:
            continue
        path = out_dir / f"part-{i:05d}.parquet"
        atomic_write(path, lambda p, t=table: pq.write_table(t, p))
        paths.append(path)
    return paths
