"""``--format webdataset``: tar shards, one sample per manifest row, keyed by the row id.

Members of a sample: ``{id}.json`` (id, source, modality, turns, text, meta,
repeat), ``{id}.txt`` when the row has text, its image as ``{id}.{ext}`` (several
images: ``{id}.{i}.{ext}``) and its video as ``{id}.{ext}`` (``mp4``, ...), the
encoded bytes as they were. Members are written in row order with fixed
ownership and times, so the same manifest gives the same tar bytes.
"""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from curation.export.common import ExportRow
from curation.export.run import Exporter


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class WebDatasetExporter(Exporter):
    name = "webdataset"
    shard_ext = "tar"

    def write_shard(self, rows: list[ExportRow], path: Path) -> None:
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for r in rows:
                key = r.id
                if "." in key or "/" in key:
                    key = key.replace(".", "_").replace("/", "_")
                doc = {k: r.row.get(k) for k in ("id", "source", "modality", "text", "meta")}
                doc["turns"] = r.turns
                if "repeat" in r.row:
                    doc["repeat"] = int(r.row.get("repeat") or 1)
                _add(tar, f"{key}.json", json.dumps(doc, ensure_ascii=False).encode())
                if r.row.get("text"):
                    _add(tar, f"{key}.txt", r.row["text"].encode())
                imgs = r.images
                for i, m in enumerate(imgs):
                    _add(tar, f"{key}.{m.ext}" if len(imgs) == 1 else f"{key}.{i}.{m.ext}", m.data)
                for i, m in enumerate(r.videos):
                    _add(tar, f"{key}.{m.ext}" if len(r.videos) == 1 else f"{key}.{i}.{m.ext}", m.data)

    def shard_name(self, index: int, total: int) -> str:
        return f"shard-{index:06d}.tar"

    def usage(self, out: Path, shards: list[str]) -> str:
        last = len(shards) - 1
        return (
            "import webdataset as wds\n"
            f"ds = wds.WebDataset(\"{out}/shard-{{000000..{last:06d}}}.tar\", shardshuffle=False).decode(\"pil\")\n"
            "sample = next(iter(ds))   # {'__key__', 'json', 'txt', 'jpg' | 'png' | ...}"
        )
