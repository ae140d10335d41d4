"""``--format cauldron``: Parquet shards in The Cauldron's layout, images as HF ``Image`` cells with their bytes.

Columns: ``id``, ``source``, ``modality``, ``images`` (list of ``Image``: ``{bytes, path}``),
``texts`` (list of ``{user, assistant, source}``), ``meta`` and, for a mixture, ``repeat``.
The HF features are stored in the Parquet metadata, so ``datasets`` decodes the
images to PIL. ``<image>`` placeholders in the turns are kept as they are; a
caption row (``text``, no turns) is one pair with an empty user side. Videos are
not part of this layout: video rows are skipped (listed in ``skipped.jsonl``).
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.export.common import ExportRow, cauldron_pairs
from curation.export.run import Exporter


def features(with_repeat: bool):
    import datasets

    f = {
        "id": datasets.Value("string"),
        "source": datasets.Value("string"),
        "modality": datasets.Value("string"),
        "images": [datasets.Image()],
        "texts": [{"user": datasets.Value("string"), "assistant": datasets.Value("string"), "source": datasets.Value("string")}],
        "meta": datasets.Value("string"),
    }
    if with_repeat:
        f["repeat"] = datasets.Value("int32")
    return datasets.Features(f)


class CauldronExporter(Exporter):
    name = "cauldron"
    shard_ext = "parquet"
    supports_video = False

    def __init__(self, folder, manifest) -> None:
        super().__init__(folder, manifest)
        self.with_repeat = "repeat" in manifest.schema.names
        self.schema = features(self.with_repeat).arrow_schema

    def write_shard(self, rows: list[ExportRow], path: Path) -> None:
        cols = {
            "id": [r.id for r in rows],
            "source": [r.row.get("source") for r in rows],
            "modality": [r.row.get("modality") for r in rows],
            "images": [[{"bytes": m.data, "path": f"{r.id}-{i}.{m.ext}"} for i, m in enumerate(r.images)] for r in rows],
            "texts": [[{**p, "source": r.row.get("source")} for p in cauldron_pairs(r.turns, r.row.get("text"))] for r in rows],
            "meta": [r.row.get("meta") for r in rows],
        }
        if self.with_repeat:
            cols["repeat"] = [int(r.row.get("repeat") or 1) for r in rows]
        pq.write_table(pa.Table.from_pydict(cols, schema=self.schema), path, row_group_size=256)

    def card_configs(self) -> str:
        return "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet"

    def usage(self, out: Path, shards: list[str]) -> str:
        return (
            "import datasets\n"
            f"ds = datasets.load_dataset(\"parquet\", data_files=\"{out}/data/train-*.parquet\", split=\"train\")\n"
            "ds[0][\"images\"][0]   # a PIL image; ds[0][\"texts\"]: [{user, assistant, source}]"
        )
