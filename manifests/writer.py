"""Write a manifest: append Parquet shards with atomic renames, then commit manifest.json last.

A directory is a manifest only once manifest.json exists, and manifest.json is
replaced in one rename. Opening a writer on an existing manifest with
``overwrite=True`` first removes the old manifest.json, so a crash at any later
point leaves *no* manifest rather than a mix of old and new shards.
"""
from __future__ import annotations

import base64
import datetime as _dt
import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from manifests import storage
from manifests.errors import ManifestError
from manifests.fsutil import atomic_write, atomic_write_json, canonical_hash, sha256_file
from manifests.schema import CORE_SCHEMA, FORMAT_VERSION, LEDGER_VERSION, conform, ledger_schema, schema_to_json

MANIFEST_FILE = "manifest.json"
DATA_DIR = "data"
LEDGER_DIR = "dropped"
FORMAT_NAME = "smolcurate-manifest"
COMPRESSION = "zstd"


def tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("smolcurate")
    except Exception:  # pragma: no cover - running from a source tree without install
        return "0+unknown"


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    """One Parquet file, zstd, written to a temp name and renamed into place."""
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression=COMPRESSION, row_group_size=65536))


class ManifestWriter:
    """Append shards to a manifest directory and commit it.

    Shards are numbered by ``index`` when given (so a resumed job rewrites the
    same names) or in call order otherwise.
    """

    def __init__(self, out_dir: str | os.PathLike, schema: pa.Schema | None = None, *, overwrite: bool = False,
                 ledger: pa.Schema | None = None) -> None:
        self.schema = schema if schema is not None else CORE_SCHEMA
        #: v2 ledger: decision columns plus the row's core and extension columns (see schema.ledger_schema)
        self.ledger_schema = ledger if ledger is not None else ledger_schema(self.schema)
        self._data: dict[int, dict[str, Any]] = {}
        self._ledger: dict[int, dict[str, Any]] = {}
        self._committed = False
        #: the manifest's URI on an object store (None: a local directory); shards are written to a local
        #: scratch folder, uploaded to content-addressed keys and removed, manifest.json is put last
        self.remote: str | None = os.fspath(out_dir).rstrip("/") if storage.is_uri(out_dir) else None
        if self.remote is not None:
            self._open_remote(overwrite)
            return
        self.out = Path(out_dir)
        if self.out.exists() and not self.out.is_dir():
            raise ManifestError(f"{self.out} exists and is not a directory")
        manifest_file = self.out / MANIFEST_FILE
        if manifest_file.exists():
            if not overwrite:
                raise ManifestError(f"{self.out} already holds a manifest; pass overwrite=True (--overwrite) to replace it")
            manifest_file.unlink()
        for sub in (DATA_DIR, LEDGER_DIR):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
            for stale in (self.out / sub).glob("part-*.parquet"):
                stale.unlink()

    def _open_remote(self, overwrite: bool) -> None:
        import tempfile

        assert self.remote is not None
        storage.check_writable(self.remote)
        mf = storage.join(self.remote, MANIFEST_FILE)
        if storage.exists(mf):
            if not overwrite:
                raise ManifestError(f"{self.remote} already holds a manifest; pass overwrite=True (--overwrite) to replace it")
            storage.remove(mf)  # from here on the prefix is no manifest: never a mix of old and new shards
        self.out = Path(tempfile.mkdtemp(prefix="smolcurate-shards-"))

    # -- shards -------------------------------------------------------------
    def write(self, table: pa.Table, index: int | None = None) -> str | None:
        """Append kept rows as one shard; returns its relative path (None for an empty table)."""
        return self._write(conform(table, self.schema), self._data, DATA_DIR, index)

    def write_dropped(self, table: pa.Table, index: int | None = None) -> str | None:
        """Append ledger rows (id, source, stage, reason, detail, uri, then any row columns they kept) as one shard.

        Row columns the ledger schema does not hold (``sig_*``, private ``_`` columns) are left out;
        missing ones are null (a v1-style ledger table is still accepted).
        """
        keep = [n for n in table.column_names if self.ledger_schema.get_field_index(n) >= 0]
        return self._write(conform(table.select(keep), self.ledger_schema), self._ledger, LEDGER_DIR, index)

    def _write(self, table: pa.Table, registry: dict, sub: str, index: int | None) -> str | None:
        if self._committed:
            raise RuntimeError("writer already committed")
        if table.num_rows == 0:
            return None
        if index is None:
            index = max(registry, default=-1) + 1
        rel = f"{sub}/{shard_name(index)}"
        path = self.out / rel
        write_parquet_atomic(table, path)
        digest = sha256_file(path)
        nbytes = path.stat().st_size
        if self.remote is not None:
            # a unique key per content: a reader holding an older manifest.json never reads a shard rewritten under it
            rel = f"{sub}/{shard_name(index)[:-len('.parquet')]}-{digest[:16]}.parquet"
            storage.put_file(path, storage.join(self.remote, rel))
            path.unlink()
        registry[index] = {
            "path": rel,
            "rows": table.num_rows,
            "bytes": nbytes,
            "sha256": digest,
            "_table_summary": _summarize(table, sub),
        }
        return rel

    # -- commit -------------------------------------------------------------
    def commit(
        self,
        recipe: Mapping[str, Any] | None = None,
        sources: Mapping[str, Mapping[str, Any]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write manifest.json last, atomically. `sources[name]["read"]` must equal kept + dropped."""
        kept = Counter()
        dropped = Counter()
        for entry in self._data.values():
            kept.update(entry["_table_summary"]["sources"])
        for entry in self._ledger.values():
            dropped.update(entry["_table_summary"]["sources"])
        sources = dict(sources or {})
        names = sorted(set(kept) | set(dropped) | set(sources))
        source_info: dict[str, dict[str, Any]] = {}
        for name in names:
            given = dict(sources.get(name, {}))
            read = int(given.pop("read", kept[name] + dropped[name]))
            if read != kept[name] + dropped[name]:
                raise ManifestError(
                    f"source {name!r}: {read} rows read but {kept[name]} kept + {dropped[name]} dropped; "
                    "every input must be kept or in the ledger"
                )
            source_info[name] = {"read": read, "kept": kept[name], "dropped": dropped[name], **given}

        by_modality: Counter = Counter()
        by_source_modality: dict[str, Counter] = defaultdict(Counter)
        tokens: Counter = Counter()
        for entry in self._data.values():
            summ = entry["_table_summary"]
            by_modality.update(summ["modality"])
            for src, counts in summ["source_modality"].items():
                by_source_modality[src].update(counts)
            tokens.update(summ["tokens"])
        drops: Counter = Counter()
        for entry in self._ledger.values():
            drops.update(entry["_table_summary"]["drops"])

        recipe_obj = dict(recipe) if recipe is not None else None
        info = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "tool_version": tool_version(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "recipe": recipe_obj,
            "recipe_hash": canonical_hash(recipe_obj) if recipe_obj is not None else None,
            "sources": source_info,
            "totals": {
                "rows": sum(kept.values()),
                "dropped": sum(dropped.values()),
                "read": sum(v["read"] for v in source_info.values()),
                "by_modality": dict(sorted(by_modality.items())),
                "by_source_modality": {k: dict(sorted(v.items())) for k, v in sorted(by_source_modality.items())},
                "tokens": dict(sorted(tokens.items())),
            },
            "drops": [
                {"source": s, "stage": st, "reason": r, "count": n} for (s, st, r), n in sorted(drops.items())
            ],
            "schema": schema_to_json(self.schema),
            "arrow_schema": base64.b64encode(self.schema.serialize().to_pybytes()).decode(),
            "ledger_version": LEDGER_VERSION,
            "ledger_arrow_schema": base64.b64encode(self.ledger_schema.serialize().to_pybytes()).decode(),
            "shards": [_public(self._data[i]) for i in sorted(self._data)],
            "ledger": [_public(self._ledger[i]) for i in sorted(self._ledger)],
            "extra": dict(extra) if extra else {},
        }
        if self.remote is not None:
            # the commit point: one PUT, create-only (S3 If-None-Match), after every shard is uploaded
            storage.write_bytes(storage.join(self.remote, MANIFEST_FILE),
                                json.dumps(info, indent=2, sort_keys=False, default=str).encode(), create_only=True)
            self._committed = True
            self._collect_garbage(info)
            import shutil

            shutil.rmtree(self.out, ignore_errors=True)
            return self.remote  # type: ignore[return-value]
        atomic_write_json(self.out / MANIFEST_FILE, info)
        self._committed = True
        return self.out

    def _collect_garbage(self, info: Mapping[str, Any]) -> None:
        """Remove shard keys of older manifests under the prefix (after the commit, so a crash loses nothing)."""
        assert self.remote is not None
        live = {e["path"] for e in list(info["shards"]) + list(info["ledger"])}
        for sub in (DATA_DIR, LEDGER_DIR):
            for name in storage.list_names(storage.join(self.remote, sub)):
                if name.startswith("part-") and f"{sub}/{name}" not in live:
                    storage.remove(storage.join(self.remote, sub, name))


def _public(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.startswith("_")}


def _group_counts(table: pa.Table, keys: list[str]) -> Counter:
    # serial: these tables are one shard, and Arrow's threaded hash aggregate fails ("thread index N is out of
    # range") once a library in the process (Ray Data's Parquet reader) has resized Arrow's CPU pool
    grouped = table.select(keys).group_by(keys, use_threads=False).aggregate([([], "count_all")])
    cols = [grouped.column(k).to_pylist() for k in keys]
    return Counter(dict(zip(zip(*cols), grouped.column("count_all").to_pylist())))


def _summarize(table: pa.Table, sub: str) -> dict[str, Any]:
    """Counts recorded per shard (vectorized group-bys) so commit never re-reads data."""
    if sub == LEDGER_DIR:
        drops = _group_counts(table, ["source", "stage", "reason"])
        sources: Counter = Counter()
        for (s, _, _), n in drops.items():
            sources[s] += n
        return {"drops": drops, "sources": sources}
    pairs = _group_counts(table, ["source", "modality"])
    sm: dict[str, Counter] = defaultdict(Counter)
    modality: Counter = Counter()
    sources = Counter()
    for (s, m), n in pairs.items():
        sm[s][m] += n
        modality[m] += n
        sources[s] += n
    tokens: Counter = Counter()
    for name in table.column_names:
        if name == "tokens" or name.startswith("tokens_"):
            col = table.column(name)
            if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
                tokens[name] += int(pc.sum(col).as_py() or 0)
    return {"modality": modality, "source_modality": sm, "tokens": tokens, "sources": sources}
