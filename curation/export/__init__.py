"""``smolcurate export``: a manifest out to the formats training code reads, media embedded.

One module per format, one line per format in :data:`EXPORTERS`:

- ``cauldron``: Parquet shards in The Cauldron's layout (``images``: a list of HF
  ``Image`` with the encoded bytes; ``texts``: ``{user, assistant, source}`` pairs),
  loadable with ``datasets.load_dataset("parquet", data_files=...)``;
- ``llava``: JSON Lines shards of ``{id, image | images | video, conversations}``
  with the media as files under ``images/`` and ``videos/`` (LLaVA's layout);
- ``webdataset``: tar shards, one sample per row (``.json`` with the row,
  ``.txt`` with its text, the media as members), for the ``webdataset`` library.

See docs/training.md.
"""
from __future__ import annotations

import importlib

from curation.export.run import ExportResult, export_manifest

#: format name -> "module:Class"
EXPORTERS: dict[str, str] = {
    "cauldron": "curation.export.cauldron:CauldronExporter",
    "llava": "curation.export.llava:LlavaExporter",
    "webdataset": "curation.export.webdataset:WebDatasetExporter",
}


def exporter_class(name: str):
    """The exporter class registered under ``name`` (UserError naming the known ones otherwise)."""
    from manifests.errors import UserError

    if name not in EXPORTERS:
        raise UserError(f"unknown export format {name!r} (known: {', '.join(EXPORTERS)})", field="--format")
    module, cls = EXPORTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["EXPORTERS", "ExportResult", "export_manifest", "exporter_class"]
