"""``--format llava``: JSON Lines shards of LLaVA records, the media as files next to them.

Each line: ``{"id", "image": "images/.." | "images": [..] | "video": "videos/..",
"conversations": [{"from": "human"|"gpt"|"system", "value"}], "source", "modality",
"meta", "repeat"}``. Paths are relative to the export folder (LLaVA's
``image_folder``). Turns keep their ``<image>``/``<video>`` placeholders; a row
with media and none gets them at the start of its first user turn, and a caption
row becomes a human turn holding the placeholders and a gpt turn with the text.
"""
from __future__ import annotations

import json
from pathlib import Path

from curation.export.common import ROLE_FROM, ExportRow
from curation.export.run import Exporter

IMAGE, VIDEO = "<image>", "<video>"


def conversations(row: ExportRow) -> list[dict[str, str]]:
    turns = row.turns
    if not turns:
        turns = [{"role": "user", "content": ""}] + ([{"role": "assistant", "content": row.row["text"]}] if row.row.get("text") else [])
    placed = sum(t["content"].count(IMAGE) + t["content"].count(VIDEO) for t in turns)
    if not placed and (row.images or row.videos):
        first = next((i for i, t in enumerate(turns) if t["role"] == "user"), None)
        if first is None:
            turns.insert(0, {"role": "user", "content": ""})
            first = 0
        turns[first] = {**turns[first], "content": VIDEO * len(row.videos) + IMAGE * len(row.images) + turns[first]["content"]}
    return [{"from": ROLE_FROM.get(t["role"], t["role"]), "value": t["content"]} for t in turns]


class LlavaExporter(Exporter):
    name = "llava"
    shard_ext = "jsonl"

    def _write_media(self, rel: str, data: bytes) -> str:
        path = self.folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return rel

    def write_shard(self, rows: list[ExportRow], path: Path) -> None:
        with path.open("w") as fh:
            for r in rows:
                rec = {"id": r.id}
                sub = r.id[:2]
                imgs = [self._write_media(f"images/{sub}/{r.id}-{i}.{m.ext}", m.data) for i, m in enumerate(r.images)]
                if len(imgs) == 1:
                    rec["image"] = imgs[0]
                elif imgs:
                    rec["images"] = imgs
                vids = [self._write_media(f"videos/{sub}/{r.id}-{i}.{m.ext}", m.data) for i, m in enumerate(r.videos)]
                if vids:
                    rec["video"] = vids[0] if len(vids) == 1 else vids
                rec["conversations"] = conversations(r)
                for key in ("source", "modality", "meta"):
                    if r.row.get(key) is not None:
                        rec[key] = r.row[key]
                if "repeat" in r.row:
                    rec["repeat"] = int(r.row.get("repeat") or 1)
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def shard_name(self, index: int, total: int) -> str:
        return f"train-{index:05d}-of-{total:05d}.jsonl"

    def usage(self, out: Path, shards: list[str]) -> str:
        return (
            "import datasets\n"
            f"ds = datasets.load_dataset(\"json\", data_files=\"{out}/train-*.jsonl\", split=\"train\")\n"
            f"# image paths are relative to {out} (LLaVA's image_folder)"
        )
