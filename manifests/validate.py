"""Check a manifest end to end: format, shard checksums and schemas, the ledger invariant, media paths."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests.errors import ManifestError
from manifests.fsutil import sha256_file
from manifests.reader import Manifest


def validate(path: str | os.PathLike, *, check_media: bool = True) -> dict[str, Any]:
    """Raise ManifestError naming the first problem; return a short report when the manifest is sound."""
    m = Manifest(path)
    kept = _check_entries(m, m.info["shards"], m.schema, "shard")
    dropped = _check_entries(m, m.info["ledger"], m.ledger_schema, "ledger shard")

    for name, src in sorted(m.info["sources"].items()):
        k, d = kept.get(name, 0), dropped.get(name, 0)
        if src.get("kept") != k or src.get("dropped") != d:
            raise ManifestError(
                f"source {name!r}: manifest.json records {src.get('kept')} kept / {src.get('dropped')} dropped, "
                f"shards hold {k} kept / {d} dropped"
            )
        if src.get("read") != k + d:
            raise ManifestError(
                f"source {name!r}: ledger invariant broken: {src.get('read')} read != {k} kept + {d} dropped"
            )
    for name in sorted(set(kept) | set(dropped)):
        if name not in m.info["sources"]:
            raise ManifestError(f"source {name!r} has rows but no entry in manifest.json sources")

    missing = _missing_media(m) if check_media else []
    if missing:
        raise ManifestError(f"media path does not resolve: {missing[0]} ({len(missing)} missing in all)")
    return {
        "path": str(m.path),
        "rows": sum(kept.values()),
        "dropped": sum(dropped.values()),
        "shards": len(m.info["shards"]),
        "ledger_shards": len(m.info["ledger"]),
        "media_checked": check_media,
        "ok": True,
    }


def _check_entries(m: Manifest, entries: list[dict], schema: pa.Schema, what: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    m.check_files(entries)  # exists, and has the size manifest.json recorded
    for entry in entries:
        rel = entry["path"]
        p = m.path / rel
        if sha256_file(p) != entry["sha256"]:
            raise ManifestError(f"{what} {rel} checksum differs from manifest.json")
        try:
            table = pq.read_table(p, columns=["source"])
            file_schema = pq.read_schema(p)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ManifestError(f"{what} {rel} is not readable Parquet ({exc})") from None
        if not file_schema.remove_metadata().equals(schema.remove_metadata()):
            raise ManifestError(f"{what} {rel} schema differs from the manifest schema")
        if table.num_rows != entry["rows"]:
            raise ManifestError(f"{what} {rel} has {table.num_rows} rows, manifest.json says {entry['rows']}")
        grouped = table.group_by("source", use_threads=False).aggregate([([], "count_all")])  # see writer._group_counts
        for s, n in zip(grouped.column("source").to_pylist(), grouped.column("count_all").to_pylist()):
            counts[s] = counts.get(s, 0) + n
    return counts


def _missing_media(m: Manifest) -> list[str]:
    """Local media paths (not embedded, not remote) that do not exist."""
    if not m.info["shards"]:
        return []
    media = m.dataset().to_table(columns=["media"]).column("media")
    flat = pc.list_flatten(media)
    if len(flat) == 0:
        return []
    uris = pc.struct_field(flat, "uri")
    has_bytes = pc.is_valid(pc.struct_field(flat, "bytes"))
    need = pc.and_(pc.is_valid(uris), pc.invert(has_bytes))
    unique = pc.unique(pc.filter(uris, need)).to_pylist()
    from media.containers import container_path, container_scheme

    missing = []
    seen: set[str] = set()
    for uri in sorted(unique):
        parsed = urlparse(uri)
        if container_scheme(uri) is not None:  # a tar member or Parquet cell: its shard or file must exist
            local = container_path(uri)
            if local in seen:
                continue
            seen.add(local)
            from manifests import storage

            if storage.is_uri(local):  # a shard on an object store: one HEAD per shard
                if not storage.exists(local):
                    missing.append(uri)
                continue
        elif parsed.scheme not in ("", "file") and len(parsed.scheme) > 1:
            continue  # remote URIs are not checked
        else:
            local = parsed.path if parsed.scheme == "file" else uri
        if not Path(local).exists():
            missing.append(uri)
    return missing
