"""The export driver: stream rows, read their media once, hand shards to the format's exporter, commit."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from curation.export.common import ExportResult, ExportRow, Staging, dataset_card, iter_rows, read_media, write_skipped
from manifests.errors import UserError

log = logging.getLogger(__name__)


class Exporter:
    """Base of a format: ``write_shard`` writes rows to one provisional shard, ``shard_name`` names it at the end."""

    name = ""
    shard_ext = ""
    supports_video = True

    def __init__(self, folder: Path, manifest: Any) -> None:
        self.folder = folder
        self.manifest = manifest

    def skip_reason(self, row: ExportRow) -> tuple[str, str] | None:
        if row.videos and not self.supports_video:
            return "video_not_supported", f"{self.name} holds images only; export videos as llava or webdataset"
        return None

    def write_shard(self, rows: list[ExportRow], path: Path) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def shard_name(self, index: int, total: int) -> str:
        return f"data/train-{index:05d}-of-{total:05d}.{self.shard_ext}"

    def usage(self, out: Path, shards: list[str]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def card_configs(self) -> str:
        return ""


def export_manifest(
    manifest: str | os.PathLike | Any, fmt: str, out: str | os.PathLike, *, shard_rows: int = 2000,
    overwrite: bool = False,
) -> ExportResult:
    """Write ``manifest`` as ``fmt`` into ``out`` (replaced atomically); unreadable media skip the row, listed."""
    from curation.export import exporter_class
    from manifests.reader import Manifest, open_manifest

    cls = exporter_class(fmt)
    if shard_rows < 1:
        raise UserError(f"must be a positive number of rows, got {shard_rows}", field="--shard-rows")
    m = manifest if isinstance(manifest, Manifest) else open_manifest(manifest)
    stage = Staging(out, overwrite)
    try:
        exp = cls(stage.tmp, m)
        provisional: list[Path] = []
        skipped: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        buf: list[ExportRow] = []
        written = 0

        def flush() -> None:
            nonlocal buf, written
            if buf:
                path = stage.tmp / f".shard-{len(provisional):05d}.{exp.shard_ext}"
                exp.write_shard(buf, path)
                provisional.append(path)
                written += len(buf)
                buf = []

        for row in iter_rows(m):
            try:
                er = ExportRow(row, [read_media(ref) for ref in (row.get("media") or []) if ref])
            except Exception as exc:  # missing file, unreadable container member, unrenderable page
                reason, detail = "unreadable_media", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            else:
                got = exp.skip_reason(er)
                if got is None:
                    buf.append(er)
                    if len(buf) >= shard_rows:
                        flush()
                    continue
                reason, detail = got
            counts[reason] = counts.get(reason, 0) + 1
            skipped.append({"id": row.get("id"), "source": row.get("source"), "reason": reason, "detail": detail})
            log.info("export: skipping %s (%s: %s)", row.get("id"), reason, detail)
        flush()
        names = []
        for i, path in enumerate(provisional):
            name = exp.shard_name(i, len(provisional))
            (stage.tmp / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, stage.tmp / name)
            names.append(name)
        result = ExportResult(stage.target, fmt, written, names, counts)
        write_skipped(stage.tmp, skipped)
        card = dataset_card(result, m, exp.usage(stage.target, names), exp.card_configs())
        (stage.tmp / "README.md").write_text(card)
        stage.commit()
    except BaseException:
        stage.abort()
        raise
    return result
