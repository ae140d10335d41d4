"""Opening a manifest that lives on an object store: a verified local mirror of its shards.

``open_manifest("s3://bucket/prefix")`` reads ``manifest.json`` first (the
commit point: a prefix without it is no manifest), then downloads the shards it
lists, in parallel, into a cache folder named by the hash of that
``manifest.json`` (``$SMOLCURATE_CACHE``, default ``~/.cache/smolcurate``). A
mirror counts as complete only once every shard matched its recorded sha256
and the local ``manifest.json`` was written last, so a killed download is
redone, never half-used. Every reader (pyarrow, polars, datasets, torch, Ray on
one node), ``validate`` and ``inspect`` then work on the mirror unchanged.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from manifests import storage
from manifests.errors import ManifestError
from manifests.fsutil import atomic_write, sha256_file

MANIFEST_FILE = "manifest.json"
COMPLETE = ".complete"


def cache_root() -> Path:
    return Path(os.environ.get("SMOLCURATE_CACHE") or Path.home() / ".cache" / "smolcurate") / "manifests"


def mirror(uri: str, *, threads: int = 8) -> Path:
    """The local folder mirroring the manifest at ``uri`` (downloaded on first use; raises ManifestError)."""
    uri = uri.rstrip("/")
    raw = storage.read_bytes(storage.join(uri, MANIFEST_FILE))
    if raw is None:
        raise ManifestError(f"{uri} is not a manifest: no {MANIFEST_FILE}")
    try:
        info = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{uri}/{MANIFEST_FILE}: not valid JSON ({exc})") from None
    entries = list(info.get("shards") or []) + list(info.get("ledger") or []) if isinstance(info, dict) else []
    key = hashlib.sha256(uri.encode() + b"\0" + raw).hexdigest()[:24]
    local = cache_root() / key
    if (local / COMPLETE).is_file() and (local / MANIFEST_FILE).is_file():
        return local
    local.mkdir(parents=True, exist_ok=True)

    def fetch(entry: dict) -> bool:
        rel = str(entry["path"])
        if rel.startswith("/") or ".." in Path(rel).parts:
            raise ManifestError(f"{uri}/{MANIFEST_FILE}: shard path {rel!r} leaves the manifest")
        target = local / rel
        if not (target.is_file() and target.stat().st_size == entry.get("bytes") and sha256_file(target) == entry.get("sha256")):
            src = storage.join(uri, rel)
            if not storage.exists(src):
                raise ManifestError(f"{uri}: {rel} is missing")
            storage.get_file(src, target)
        return sha256_file(target) == entry.get("sha256")

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        verified = all(list(pool.map(fetch, entries)))
    atomic_write(local / MANIFEST_FILE, lambda p: p.write_bytes(raw))
    if verified:  # a shard that does not match stays for validate to report, and the next open downloads again
        atomic_write(local / COMPLETE, lambda p: p.write_text(uri))
    return local
