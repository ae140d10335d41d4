"""Open a manifest by path and expose it to pyarrow, polars, HF datasets, Ray Data and torch."""
from __future__ import annotations

import base64
import json
import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds

from manifests.errors import ManifestError
from manifests.fsutil import canonical_hash
from manifests.schema import FORMAT_VERSION, LEDGER_SCHEMA
from manifests.writer import FORMAT_NAME, MANIFEST_FILE

if TYPE_CHECKING:  # pragma: no cover
    import datasets
    import polars as pl
    import ray.data

    from manifests.torch_dataset import ManifestIterableDataset


def read_manifest_json(path: str | os.PathLike) -> dict[str, Any]:
    """Load and check manifest.json; the error names what is wrong with the directory."""
    root = Path(path)
    if not root.is_dir():
        raise ManifestError(f"{root} is not a manifest: no such directory")
    mfile = root / MANIFEST_FILE
    if not mfile.is_file():
        raise ManifestError(f"{root} is not a manifest: no {MANIFEST_FILE}")
    try:
        info = json.loads(mfile.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{mfile}: not valid JSON ({exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise ManifestError(f"{mfile}: format is not {FORMAT_NAME!r}")
    version = info.get("format_version")
    if not isinstance(version, int):
        raise ManifestError(f"{mfile}: format_version is missing or not an integer")
    if version > FORMAT_VERSION:
        raise ManifestError(
            f"{mfile}: format_version {version} is newer than this smolcurate supports ({FORMAT_VERSION}); upgrade smolcurate"
        )
    if version < 1:
        raise ManifestError(f"{mfile}: unknown format_version {version}")
    for key in ("shards", "ledger", "sources", "arrow_schema"):
        if key not in info:
            raise ManifestError(f"{mfile}: missing field {key!r}")
    return info


class Manifest:
    """A committed manifest directory. Cheap to open: nothing but manifest.json is read until asked."""

    def __init__(self, path: str | os.PathLike) -> None:
        from manifests import storage

        #: where the manifest lives: its URI on an object store (read through a verified local mirror), else the path
        self.uri = os.fspath(path) if storage.is_uri(path) else None
        if self.uri is not None:
            from manifests.remote import mirror

            path = mirror(self.uri)
        self.path = storage.local_path(path).resolve()  # file:///x is the local path /x
        self.info: dict[str, Any] = read_manifest_json(self.path)

    # -- basics ---------------------------------------------------------------
    @cached_property
    def schema(self) -> pa.Schema:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.info["arrow_schema"])))

    @cached_property
    def ledger_schema(self) -> pa.Schema:
        """The ledger's Arrow schema: recorded since ledger v2, the six v1 columns for older manifests."""
        raw = self.info.get("ledger_arrow_schema")
        if not raw:
            return LEDGER_SCHEMA
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(raw)))

    @property
    def ledger_version(self) -> int:
        return int(self.info.get("ledger_version", 1))

    @property
    def shard_paths(self) -> list[Path]:
        return [self.path / s["path"] for s in self.info["shards"]]

    @property
    def ledger_paths(self) -> list[Path]:
        return [self.path / s["path"] for s in self.info["ledger"]]

    @property
    def num_rows(self) -> int:
        return int(self.info["totals"]["rows"])

    @property
    def is_mixture(self) -> bool:
        return "mixture" in self.info.get("extra", {})

    def fingerprint(self) -> str:
        """Identity of the rows: equal for two manifests with the same shards, whatever their creation time."""
        return canonical_hash([(s["path"], s["sha256"]) for s in self.info["shards"] + self.info["ledger"]])

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        return f"Manifest({str(self.path)!r}, rows={self.num_rows}, dropped={self.info['totals']['dropped']})"

    def check_files(self, entries: list[dict[str, Any]]) -> list[str]:
        """Paths of shard entries, after checking each exists with its recorded size (cheap: stat only)."""
        files = []
        for entry in entries:
            p = self.path / entry["path"]
            if not p.is_file():
                raise ManifestError(f"{self.path}: {entry['path']} is missing")
            size = p.stat().st_size
            if size != entry["bytes"]:
                raise ManifestError(
                    f"{self.path}: {entry['path']} has {size} bytes, manifest.json says {entry['bytes']} (truncated or rewritten)"
                )
            files.append(str(p))
        return files

    # -- readers --------------------------------------------------------------
    def dataset(self) -> ds.Dataset:
        """The kept rows as a `pyarrow.dataset.Dataset` (lazy, column-prunable)."""
        return ds.dataset(self.check_files(self.info["shards"]), schema=self.schema, format="parquet")

    def table(self, columns: list[str] | None = None) -> pa.Table:
        return self.dataset().to_table(columns=columns)

    def lazy(self) -> "pl.LazyFrame":
        """The kept rows as a polars LazyFrame (the lazy twin of :meth:`to_polars`)."""
        import polars as pl

        files = self.check_files(self.info["shards"])
        if not files:
            return pl.from_arrow(self.schema.empty_table()).lazy()
        return pl.scan_parquet(files)

    def to_polars(self, columns: list[str] | None = None) -> "pl.DataFrame":
        lf = self.lazy()
        return (lf.select(columns) if columns else lf).collect()

    def to_pandas(self, *, signatures: bool = False):
        """The kept rows as a pandas DataFrame (``sig_*`` hashes only when asked: pandas cannot hold lists of fixed-size binary)."""
        table = self.table(columns=self.reader_columns(signatures))
        if signatures:
            table = table.cast(_pandas_safe(table.schema))
        return table.to_pandas()

    def reader_columns(self, signatures: bool = False) -> list[str]:
        """Columns the HF/Ray/torch readers hand out: ``sig_*`` dedup hashes only when asked."""
        return [n for n in self.schema.names if signatures or not n.startswith("sig_")]

    def to_hf(self, *, repeat: bool = True, signatures: bool = False, images: bool = True) -> "datasets.Dataset":
        """A `datasets.Dataset` over the Arrow table, without writing a cache copy.

        Like every reader: a mixture's rows appear ``repeat`` times (pass j holds the rows whose
        ``repeat`` exceeds j; ``repeat=False`` gives each row once), and the ``sig_*`` dedup
        hashes are left out unless ``signatures=True`` (fixed-size binary breaks torch/pandas
        formatting). ``images=True`` adds an ``images`` column, a sequence of ``datasets.Image``
        for the row's images and image pages that carry bytes or a path (not PDF pages or videos),
        so ``with_format("torch")`` yields tensors.
        """
        import datasets
        from datasets.table import InMemoryTable

        from manifests.hf import hf_features, image_column

        table = self.table(columns=self.reader_columns(signatures))
        if repeat:
            table = table.take(repeat_indices(table))
        features = None
        if images:
            table = table.append_column("images", image_column(table.column("media")))
            features = hf_features(table.schema)
        return datasets.Dataset(InMemoryTable(table), info=datasets.DatasetInfo(features=features))

    def to_ray(self, *, repeat: bool = True, signatures: bool = False) -> "ray.data.Dataset":
        """A `ray.data.Dataset`, one block per shard (Ray's 200-block default is wasteful for small manifests).

        ``repeat`` and ``signatures`` as in :meth:`to_hf`: with repeat, pass j is a lazy filter of
        the rows whose ``repeat`` exceeds j, and the passes are unioned in order.
        """
        import ray

        files = self.check_files(self.info["shards"])
        columns = self.reader_columns(signatures)
        schema = pa.schema([self.schema.field(n) for n in columns])
        if not files:
            return ray.data.from_arrow(schema.empty_table())
        ds_ = ray.data.read_parquet(files, columns=columns, schema=schema, override_num_blocks=len(files))
        passes = self.max_repeat() if repeat else 1
        if passes <= 1:
            return ds_
        extra = [ds_.map_batches(_RepeatPass(j), batch_format="pyarrow") for j in range(1, passes)]
        return ds_.union(*extra)

    def max_repeat(self) -> int:
        """The largest ``repeat`` of any row (1 without a repeat column): how many passes the readers make."""
        if "repeat" not in self.schema.names or not self.info["shards"]:
            return 1
        import pyarrow.compute as pc

        return max(1, int(pc.max(self.table(columns=["repeat"]).column("repeat")).as_py() or 1))

    def to_torch(self, **kwargs: Any) -> "ManifestIterableDataset":
        """A torch IterableDataset yielding decoded samples; shards are split across DataLoader workers."""
        from manifests.torch_dataset import ManifestIterableDataset

        return ManifestIterableDataset(self, **kwargs)

    def ledger(self) -> pa.Table:
        """Every dropped row with its stage, reason and detail; since ledger v2 also its media, text and scores."""
        files = self.check_files(self.info["ledger"])
        if not files:
            return self.ledger_schema.empty_table()
        return ds.dataset(files, schema=self.ledger_schema, format="parquet").to_table()

    # -- summaries and notebook views -------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What `smolcurate inspect --json` prints."""
        from manifests.views import summarize

        return summarize(self)

    def _repr_html_(self) -> str:
        from manifests.views import manifest_html

        return manifest_html(self)

    def show(self, n: int = 12, where: Any = None, *, sort: Any = None, sample: int | None = None, seed: int = 0,
             dropped: bool | str = False, quiet: bool = False):
        """Cards of ``n`` rows: ``where=`` a polars expression, ``sort="col"``/``"-col"``, ``sample=k`` (seeded),
        ``dropped=True`` (ledger rows, with why) or ``"both"`` (kept and dropped side by side); prints the match count."""
        from manifests.views import show

        return show(self, n=n, where=where, sort=sort, sample=sample, seed=seed, dropped=dropped, quiet=quiet)

    def clusters(self, n: int = 12, source: str | None = None):
        """Duplicate clusters side by side: the kept row, its twins, their match type and distance."""
        from manifests.views import clusters

        return clusters(self, n=n, source=source)

    def hist(self, score: str | list[str] | None = None, by: str = "source", bins: int = 30):
        """Histograms of a score for kept and dropped rows per ``by`` group, with the recipe's threshold lines."""
        from manifests.plots import hist

        return hist(self, score, by=by, bins=bins)

    def retune(self, filters: dict[str, Any] | None = None, sets: list[str] | tuple[str, ...] = ()):
        """What new thresholds would keep and drop, per source and reason, from stored scores (``.write(out)`` saves it).

        Needs the curation package (it re-runs the recipe's filter operators); no media is read.
        """
        from curation.retune import retune

        return retune(self, filters=filters, sets=sets)

    def loosening(self, examples: int = 6):
        """For every threshold that dropped rows: what loosening it to the dropped rows' scores brings back."""
        from manifests.loosen import loosening

        return loosening(self, examples=examples)


def _pandas_safe(schema: pa.Schema) -> pa.Schema:
    """``fixed_size_binary`` (also inside lists) as plain ``binary``, which pandas converts."""
    def fix(t: pa.DataType) -> pa.DataType:
        if pa.types.is_fixed_size_binary(t):
            return pa.binary()
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return pa.list_(fix(t.value_type))
        return t

    return pa.schema([pa.field(f.name, fix(f.type), f.nullable) for f in schema])


def repeat_indices(table: pa.Table) -> pa.Array:
    """Row indices that yield each row ``repeat`` times, pass by pass (pass j: rows whose repeat exceeds j).

    The order every reader uses, so the copies of one row land in different passes (and batches).
    """
    import numpy as np

    n = table.num_rows
    if "repeat" not in table.column_names or n == 0:
        return pa.array(np.arange(n, dtype=np.int64))
    rep = np.nan_to_num(table.column("repeat").to_numpy(zero_copy_only=False).astype(np.float64), nan=1.0)
    rep = np.maximum(rep, 1).astype(np.int64)
    idx = np.arange(n, dtype=np.int64)
    return pa.array(np.concatenate([idx[rep > j] for j in range(int(rep.max()))]))


class _RepeatPass:
    """Ray map_batches: keep the rows of one batch whose ``repeat`` exceeds the pass number."""

    def __init__(self, j: int) -> None:
        self.j = j

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pyarrow.compute as pc

        rep = pc.fill_null(batch.column("repeat"), 1)
        return batch.filter(pc.greater(rep, self.j))


def open_manifest(path: str | os.PathLike) -> Manifest:
    """Open a committed manifest directory (raises ManifestError naming what is wrong)."""
    return Manifest(path)

