"""Scores and hashes of the real corpus, computed through the curation operators.

`record()` wrote ``decode_baseline.json`` with the code as it was *before* the
shared decode (issue #12: commit 538cfcc; caption rows re-keyed by image path
afterwards, through their blake2b file hashes); ``test_media_realdata.py`` recomputes the same
values with today's code and compares them within the tolerances of
docs/media.md. Run as a script to print the current values as JSON.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

#: the three corpora: images (every raster format), WebP captions, document scans and PDFs, videos
SOURCES = [
    {"name": "images", "kind": "images", "path": "images"},
    {"name": "pairs", "kind": "image_text", "path": "pairs/gcompris/captions.jsonl", "image_column": "image",
     "text_column": "text"},
    {"name": "docs", "kind": "document", "path": "documents/ocrmypdf/*.p*"},
    {"name": "videos", "kind": "video", "path": "videos"},
]

#: dedup configurations: "full" (exact on: pixel hashes, pHash from the full decode), "reduced" (pHash only)
DEDUP = {"full": {"exact": True, "image": {}, "video": {}}, "reduced": {"exact": False, "image": {}, "video": {}}}

SCORE_KEYS = ("score_min_side", "score_max_side", "score_megapixels", "score_low_info", "score_sharpness",
              "score_motion", "score_pages")
SIG_KEYS = ("sig_bytes", "sig_pixels", "sig_phash", "sig_detail", "sig_color", "sig_vhash", "sig_vdetail", "sig_area")


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def compute(realdata: Path, mode: str) -> dict[str, dict[str, Any]]:
    """{source/_key: {column: value}} with every analyzer score (no threshold applied) and signature."""
    import pyarrow as pa

    from curation.dedup import signature_operators
    from curation.filters import source_operators
    from curation.filters.common import ThresholdFilter
    from curation.operators import split_decided
    from curation.readers import plan_source, read_chunk
    from curation.recipe import parse_recipe

    recipe = parse_recipe({"sources": [dict(s, chunk_size=10_000) for s in SOURCES], "dedup": DEDUP[mode]},
                          base_dir=str(realdata))
    out: dict[str, dict[str, Any]] = {}
    base = Path(realdata)
    for i, src in enumerate(recipe.sources):
        # analyzers and signatures, without the threshold filters (every decodable input gets a value)
        ops = [op for op in source_operators(recipe, i) if not isinstance(op, ThresholdFilter)
               and type(op).__name__ not in ("TextQuality", "TextSignatures")]
        for op in ops:
            op.setup()
        for spec in plan_source(recipe, i).chunks:
            table, _ = split_decided(read_chunk(recipe, spec))
            for op in ops:
                table, _ = split_decided(op(table))
            cols = [c for c in ("_key", "media") + SCORE_KEYS + SIG_KEYS if c in table.column_names]
            for row in table.select(cols).to_pylist():
                media = row.pop("media") or []
                # files are keyed by their path under the source; caption rows by their image's path
                # (row keys of tables are content hashes, whose definition belongs to the readers)
                rel = row.pop("_key")
                if src.kind == "image_text" and media:
                    rel = os.path.relpath(media[0]["uri"].removeprefix("file://"), base / "pairs" / "gcompris")
                out[f"{src.name}/{rel}"] = {k: _jsonable(v) for k, v in row.items() if v is not None}
    return out


def record(realdata: Path) -> dict[str, Any]:
    return {mode: compute(realdata, mode) for mode in DEDUP}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "shared" / "realdata"
    json.dump(record(root), sys.stdout, indent=0, sort_keys=True)
