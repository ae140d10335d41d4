"""What every export format shares: reading rows, embedding media, sharding, the dataset card, skipped rows.

An exporter turns manifest rows into one format's shards. This module streams
the rows (Parquet batches, one shard of the manifest at a time), reads each
media reference's encoded bytes once (files, embedded bytes and container
members as they are, without re-encoding; PDF pages rendered to PNG at their
recorded dpi), and writes the output into a temporary folder that replaces
``--out`` only when everything is written. A row whose media cannot be read is
left out and listed, with the reason, in ``skipped.jsonl``: never a silent drop.

Mixtures: the ``repeat`` column is **kept as a column** (one output row per
manifest row, media stored once). A trainer that honours it repeats the row;
one that does not sees every row once. The dataset card says so.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pyarrow.parquet as pq

from manifests.errors import UserError

#: manifest ``format`` values -> file extensions in the export
EXTENSIONS = {"JPEG": "jpg", "JPG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff",
              "MP4": "mp4", "MOV": "mov", "WEBM": "webm", "MKV": "mkv", "AVI": "avi"}
ROLE_FROM = {"user": "human", "assistant": "gpt", "system": "system"}


@dataclass
class Media:
    """One media reference's encoded bytes, ready to embed."""

    kind: str  # image | page | video
    data: bytes
    ext: str  # file extension without the dot


@dataclass
class ExportRow:
    """A manifest row with its media read."""

    row: dict[str, Any]
    media: list[Media]

    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def images(self) -> list[Media]:
        return [m for m in self.media if m.kind != "video"]

    @property
    def videos(self) -> list[Media]:
        return [m for m in self.media if m.kind == "video"]

    @property
    def turns(self) -> list[dict[str, str]]:
        return [{"role": t.get("role") or "user", "content": t.get("content") or ""} for t in (self.row.get("turns") or [])]


@dataclass
class ExportResult:
    """What an export wrote."""

    out: Path | str  # a URI when exported to an object store
    format: str
    rows: int
    shards: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        extra = f", {skipped} skipped ({', '.join(f'{k}: {v}' for k, v in sorted(self.skipped.items()))}; see skipped.jsonl)" if skipped else ""
        return f"exported {self.rows} rows as {self.format} to {self.out} in {len(self.shards)} shard(s){extra}"


def _ext(ref: Mapping[str, Any], data: bytes) -> str:
    fmt = (ref.get("format") or "").upper()
    if fmt in EXTENSIONS:
        return EXTENSIONS[fmt]
    if ref.get("kind") == "video":
        return "mp4"
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return EXTENSIONS.get((im.format or "PNG").upper(), "png")
    except Exception:
        return "bin"


def read_media(ref: Mapping[str, Any]) -> Media:
    """The encoded bytes of one reference (raises on a file that is missing or unreadable)."""
    from media.refs import decode_image_ref, ref_source

    kind = ref.get("kind") or "image"
    if kind == "page" and (ref.get("format") or "PDF").upper() == "PDF":
        buf = io.BytesIO()
        decode_image_ref(ref).save(buf, format="PNG")
        return Media("page", buf.getvalue(), "png")
    src = ref_source(ref)
    data = src if isinstance(src, bytes) else Path(src).read_bytes()
    return Media(kind, data, _ext(ref, data))


def iter_rows(manifest: Any, batch_rows: int = 256) -> Iterator[dict[str, Any]]:
    """Rows of a manifest in order, streamed by Parquet batch."""
    for path in manifest.shard_paths:
        for batch in pq.ParquetFile(str(path)).iter_batches(batch_size=batch_rows):
            yield from batch.to_pylist()


def cauldron_pairs(turns: Sequence[Mapping[str, str]], text: str | None) -> list[dict[str, str]]:
    """Turns as The Cauldron's ``{user, assistant}`` pairs; a caption row is one pair with an empty user side.

    Consecutive turns of one side are joined with a newline; a system turn opens the first user side.
    """
    if not turns:
        return [{"user": "", "assistant": text}] if text else []
    pairs: list[dict[str, str]] = []
    user: list[str] = []
    assistant: list[str] = []
    for t in turns:
        role = t["role"]
        if role == "assistant":
            assistant.append(t["content"])
            continue
        if assistant:
            pairs.append({"user": "\n".join(user), "assistant": "\n".join(assistant)})
            user, assistant = [], []
        user.append(t["content"])
    if user or assistant:
        pairs.append({"user": "\n".join(user), "assistant": "\n".join(assistant)})
    return pairs


def dataset_card(result: ExportResult, manifest: Any, usage: str, configs: str = "") -> str:
    """A short README.md: what the export holds, where it came from, the repeat policy and how to load it."""
    info = manifest.info
    counts: dict[str, int] = {}
    for row in iter_rows_meta(manifest):
        counts[row] = counts.get(row, 0) + 1
    lines = []
    if configs:
        lines += ["---", configs.strip(), "---", ""]
    lines += [
        f"# {Path(str(manifest.path)).name} ({result.format})",
        "",
        f"Exported by smolcurate from the manifest `{manifest.path}` (fingerprint `{manifest.fingerprint()}`, "
        f"format version {info.get('format_version', '?')}).",
        "",
        f"- rows: {result.rows} in {len(result.shards)} shard(s); media embedded",
        f"- sources: {', '.join(_source_names(info.get('sources'))) or 'n/a'}",
        f"- manifest rows by modality: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}",
    ]
    if "repeat" in manifest.schema.names:
        lines.append("- mixture: the `repeat` column is kept (one row per manifest row, media stored once); "
                     "repeat each row `repeat` times per epoch to train on the mixture's shares")
    if result.skipped:
        lines.append(f"- skipped: {sum(result.skipped.values())} row(s), listed with reasons in `skipped.jsonl`")
    lines += [f"- {n}" for n in result.notes]
    lines += ["", "## Load", "", "```python", usage.strip(), "```", ""]
    return "\n".join(lines)


def _source_names(sources: Any) -> list[str]:
    if isinstance(sources, Mapping):
        return sorted(str(k) for k in sources)
    if isinstance(sources, list):
        return sorted(str(s.get("name", "?")) if isinstance(s, Mapping) else str(s) for s in sources)
    return []


def iter_rows_meta(manifest: Any) -> Iterator[str]:
    for path in manifest.shard_paths:
        for batch in pq.ParquetFile(str(path)).iter_batches(columns=["modality"]):
            yield from (m or "?" for m in batch.column(0).to_pylist())


class Staging:
    """A temporary folder next to ``out`` that replaces it on :meth:`commit` (refusing a non-empty ``out``).

    ``out`` may be an object-store URI: the export is built in a local scratch
    folder and uploaded on commit, ``README.md`` (the dataset card) last, then
    objects of an overwritten export that the new one does not have are deleted.
    """

    def __init__(self, out: str | os.PathLike, overwrite: bool) -> None:
        from manifests import storage

        self.remote = storage.is_uri(out)
        if self.remote:
            self.target: Path | str = os.fspath(out).rstrip("/")
            storage.check_writable(self.target)  # bucket, credentials and write access, before any work
            self.old = storage.find(self.target)
            if self.old and not overwrite:
                raise UserError(f"{self.target} exists and is not empty (pass --overwrite to replace it)", field="--out")
            self.tmp = Path(tempfile.mkdtemp(prefix="smolcurate-export-"))
            return
        self.out = self.target = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())) and not overwrite:
            raise UserError(f"{self.out} exists and is not empty (pass --overwrite to replace it)", field="--out")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.tmp-", dir=self.out.parent))

    def commit(self) -> None:
        if self.remote:
            self._upload()
            return
        if self.out.exists():
            shutil.rmtree(self.out) if self.out.is_dir() else self.out.unlink()
        os.replace(self.tmp, self.out)

    def _upload(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from manifests import storage

        assert isinstance(self.target, str)
        files = sorted(p for p in self.tmp.rglob("*") if p.is_file())
        card = [p for p in files if p.relative_to(self.tmp).as_posix() == "README.md"]
        uri = {p: storage.join(self.target, *p.relative_to(self.tmp).parts) for p in files}
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda p: storage.put_file(p, uri[p]), [p for p in files if p not in card]))
        for p in card:
            storage.put_file(p, uri[p])
        new = set(uri.values())
        for stale in self.old:
            if stale not in new:
                storage.remove(stale)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_skipped(folder: Path, skipped: list[dict[str, Any]]) -> None:
    if skipped:
        with (folder / "skipped.jsonl").open("w") as fh:
            for item in skipped:
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
