"""Rows from outside the job: existing manifests (`against:`) and evaluation sets (`decontaminate:`).

Everything is turned into manifest-shaped batches (``id, modality, media,
text, turns``) with signature columns (rows of a folder or a plain dataset get
readable ids, ``<set name>:<relative path or row id>``, which is what a ledger
``detail`` then names), so the resolve stage treats a folder of eval images, a
parquet file of VQA questions, a saved Hugging Face dataset, a Cauldron
dataset, a LLaVA file, WebDataset shards and an existing manifest the same way.
Except for manifests (read with their stored signatures when they match), every
set is read by the job's own readers (``curation.readers.read_source``): the
column choice below only decides the reader source. Nothing is fetched from a
hub: a dataset is read from local files only.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curation.dedup.config import DedupConfig, EvalSetConfig
from curation.dedup.signatures import SIGNATURE_COLUMNS, compute_signatures
from curation.readers.table import table_schema
from curation.readers.tabular import TableFile, _hf_arrow_files
from manifests.errors import RecipeError, UserError
from manifests.fsutil import atomic_write
from media import IMAGE_EXTENSIONS

IMAGE_COLUMNS = ("image", "images", "img", "picture", "decoded_image", "image_bytes")
TEXT_COLUMNS = ("question", "query", "problem", "prompt", "text", "instruction", "caption")
ID_COLUMNS = ("id", "question_id", "qid", "pid", "index", "idx", "sample_id")
BATCH = 256

#: what a signature row carries (the resolve stage reads these plus ``text``/``turns`` to verify)
CARRY = ("id", "modality", "text", "turns", "score_low_info", *SIGNATURE_COLUMNS)


def _is_manifest(path: Path) -> bool:
    return path.is_dir() and (path / "manifest.json").is_file()


def _hf_saved(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()
                              or (path / "state.json").is_file())


def iter_source(path: str | os.PathLike, config: DedupConfig, *, field: str, evalset: EvalSetConfig | None = None) -> Iterator[pa.Table]:
    """Batches of signature rows for one `against:` or `decontaminate:` entry (a local path or a URI)."""
    from manifests import storage

    if storage.is_uri(path):
        yield from _remote_source(os.fspath(path).rstrip("/"), config, field, evalset)
        return
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{p}: no such file or directory", field=field)
    try:
        if _is_manifest(p):
            yield from _manifest_batches(p, config)
        else:
            yield from _reader_batches(p, config, field, evalset)
    except RecipeError as exc:  # what the reader could not plan, named by this entry rather than a source field
        msg = str(exc)[len(exc.field) + 2:] if exc.field else str(exc)
        raise UserError(f"{p}: {msg}", field=field) from None
    except (pa.ArrowException, OSError) as exc:  # a corrupt parquet file or saved dataset: one line, not a traceback
        raise UserError(f"{p}: cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})", field=field) from exc


def _remote_source(uri: str, config: DedupConfig, field: str, evalset: EvalSetConfig | None) -> Iterator[pa.Table]:
    """A set on an object store: a manifest through its verified mirror (cached), anything else (a Parquet
    or JSON Lines file, tar shards, an image folder, a saved dataset) downloaded into a scratch folder for
    the read, under its own name, so ids and ledger details are those of the same set on disk."""
    import shutil
    import tempfile

    from manifests import storage
    from manifests.errors import ManifestError
    from manifests.remote import mirror

    if storage.exists(storage.join(uri, "manifest.json")):
        try:
            local = mirror(uri)
        except ManifestError as exc:
            raise UserError(str(exc), field=field) from None
        yield from iter_source(local, config, field=field, evalset=evalset)
        return
    name = uri.rsplit("/", 1)[-1]
    meta = storage.info(uri)
    objects = [uri] if meta is not None and meta.get("type") != "directory" else storage.find(uri)
    if not objects:
        raise UserError(f"{uri}: no such object or prefix", field=field)
    scratch = Path(tempfile.mkdtemp(prefix="smolcurate-external-"))
    try:
        local = scratch / name
        for obj in objects:
            storage.get_file(obj, local if obj == uri else local.joinpath(*storage.relative(obj, uri).split("/")))
        yield from iter_source(local, config, field=field, evalset=evalset)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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


def _table_schema(p: Path, split: str | None, field: str) -> pa.Schema | None:
    """The schema of a Parquet file (or the first of a folder) or of a saved dataset; None for other inputs."""
    if p.is_file() and p.suffix == ".parquet":
        return pq.read_schema(p)
    if p.is_dir() and not _hf_saved(p):
        first = next(iter(sorted(p.rglob("*.parquet"))), None)
        return pq.read_schema(first) if first is not None else None
    if _hf_saved(p):
        files = _hf_arrow_files(str(p), _split(p, split, field))
        return table_schema(TableFile(files[0], "hf")) if files else None
    return None


def _split(p: Path, split: str | None, field: str) -> str | None:
    """The split of a saved DatasetDict to read: the named one, else the only one."""
    dd = p / "dataset_dict.json"
    if not dd.is_file():
        return split
    import json

    splits = json.loads(dd.read_text()).get("splits", [])
    if split is None:
        if len(splits) != 1:
            raise UserError(f"{p}: a dataset with splits {sorted(splits)}; name one with `split:`", field=field)
        return splits[0]
    if split not in splits:
        raise UserError(f"{p}: no split {split!r} (has {sorted(splits)})", field=field)
    return split


def _eval_source(p: Path, evalset: EvalSetConfig | None, field: str):
    """A reader source for an external set: its kind and columns picked from what the set holds."""
    from curation.recipe import Source

    split = _split(p, evalset.split if evalset else None, field) if p.is_dir() else None
    schema = _table_schema(p, split, field)
    if schema is not None and {"id", "modality", "media"} <= set(schema.names):
        return None, schema  # manifest-shaped parquet (e.g. a shard): read as it is
    if schema is not None:
        image_col, text_col, id_col = _pick_columns(schema, evalset, p, field)
        kind = "image_text" if image_col else "text"
        fmt = "auto"
        if image_col is None and text_col is None:
            raise UserError(f"{p}: found neither an image column nor a question column among {schema.names}", field=field)
        src = Source(name="external", kind=kind, path=str(p), format=fmt, split=split, image_column=image_col,
                     text_column=text_col, id_column=id_col)
        return src, schema
    if p.is_file() and p.suffix.lower() == ".tar" or (p.is_dir() and any(p.glob("*.tar"))):
        return Source(name="external", kind="image_text", path=str(p), format="webdataset",
                      text_column=evalset.text_column if evalset else None), None
    if p.is_file() and p.suffix.lower() in (".json", ".jsonl"):
        return Source(name="external", kind="image_text", path=str(p), format="auto", image_column="image",
                      text_column=evalset.text_column if evalset and evalset.text_column else "question",
                      id_column="id"), None
    if p.is_dir() or (p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
        return Source(name="external", kind="images", path=str(p), format="files"), None
    raise UserError(f"{p}: not a manifest, parquet file, saved dataset, tar shard, LLaVA file or image folder", field=field)


def _reader_batches(p: Path, config: DedupConfig, field: str, evalset: EvalSetConfig | None) -> Iterator[pa.Table]:
    """An external set read through the same readers as a job's sources, then signed."""
    from curation.readers import PRIVATE_KEY, SourceContext, read_source

    label = evalset.label if evalset else p.name
    src, _ = _eval_source(p, evalset, field)
    if src is None:  # manifest-shaped parquet
        dataset = pads.dataset(str(p), format="parquet")
        cols = [c for c in ("id", "modality", "media", "text", "turns", "score_low_info") if c in dataset.schema.names]
        for batch in dataset.to_batches(columns=cols, batch_size=BATCH):
            yield _keep(compute_signatures(pa.Table.from_batches([batch]), config))
        return
    ctx = SourceContext(index=0, source=src, paths=(str(p),), image_root=None, video_root=None)
    for table in read_source(ctx):
        if table.num_rows == 0:
            continue
        # every row of an eval set counts, read-stage problems included (a row without a question still has its image)
        keys = table.column(PRIVATE_KEY)
        short = pc.replace_substring_regex(keys, r"^(id|sha|raw):", "") if src.kind != "images" else keys
        if src.kind != "images" and src.id_column is None:
            short = keys
        ids = pc.binary_join_element_wise(pa.scalar(label + ":"), short, "")
        text = table.column("text")
        has_media = pc.greater(pc.list_value_length(table.column("media")), 0)
        has_text = pc.or_(pc.is_valid(text), pc.is_valid(table.column("turns")))
        modality = pc.if_else(pc.and_(has_media, has_text), pa.scalar("image_text"),
                              pc.if_else(has_media, pa.scalar("image"), pa.scalar("text")))
        out = pa.table({"id": ids, "modality": modality, "media": table.column("media"), "text": text,
                        "turns": table.column("turns")})
        yield _keep(compute_signatures(out, config))


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
    return image_col, text_col, id_col


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
