"""``format: webdataset``: tar shards given by path, folder, glob or brace range (``shard-{000000..000099}.tar``).

Members are grouped into samples by key (the member name up to the first dot
of its base name, as the ``webdataset`` library does), consecutive members
forming one sample:

- images from ``.jpg .jpeg .png .webp`` (several per sample as ``.0.jpg``,
  ``.1.jpg``, ... in that order), referenced in place
  (``tar://shard?offset=..&size=..#member``, see ``media.containers``): planning
  and reading touch tar headers and the small text members only;
- text from ``.txt`` / ``.caption``, or from the ``.json`` field named by
  ``text_column``; the whole ``.json`` goes to ``meta``, and its ``turns``
  (``[{role, content}]``) or ``conversations`` (``[{from, value}]``) become turns;
- SmolVLM's document layout, ``{id}.{i}.text.txt`` / ``{id}.{i}.image.jpeg`` /
  ``{id}.metadata.txt``: one interleaved document per id, texts and
  ``<image>`` placeholders in the order of ``i``.

The key of a sample is ``<shard path relative to the shards' folder>:<key>``.
Read-stage ledger reasons: ``truncated_shard`` (a shard cut short: the cut
sample, or its tail), ``missing_image``, ``duplicate_member`` (a member name
twice in one sample), ``multiple_images``, ``missing_text``, ``invalid_json``,
``invalid_utf8``. Members are never extracted: names with ``..`` or a leading
``/`` are only names.
"""
from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa

from curation.filters.common import MEDIA_LIST
from curation.readers.base import ChunkSpec, Fingerprint, Reader, SourceContext
from curation.readers.columns import TURNS
from curation.readers.rows import assemble
from curation.recipe import expand_braces
from media.containers import TarMember, TarScan, iter_members, scan_tar, tar_uri

IMAGE_EXTS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
_ROLES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant"}
TEXT_EXTS = ("txt", "caption")
_DOC_PART = re.compile(r"^(\d+)\.(text|image)\.([A-Za-z0-9]+)$")
_NUMBERED = re.compile(r"^(\d+)\.(jpg|jpeg|png|webp)$")  # several images of one sample: k.0.jpg, k.1.jpg


@dataclass(frozen=True)
class ShardSpec(ChunkSpec):
    shard: str
    label: str  # shard path relative to the shards' common folder (part of every key)
    start: int  # header offset of the chunk's first member
    stop: int  # header offset after the chunk's last member; -1: the end of the shard
    count: int  # samples (plus one for a cut tail that belongs to no sample)

    def inputs(self) -> int:
        return self.count


def expand_shards(patterns: list[str]) -> list[str]:
    """Shard paths for brace ranges, globs, folders (their ``*.tar``) and files, sorted per pattern, deduplicated."""
    from manifests import storage

    out: list[str] = []
    for pat in patterns:
        names = expand_braces(pat)
        if names != [pat]:
            out.extend(p for name in names for p in expand_shards([name]))
        elif storage.is_uri(pat):  # shards on an object store: listed, never downloaded (read by byte range)
            if glob.has_magic(pat):
                out.extend(p for p in storage.glob(pat))
            elif storage.isdir(pat):
                out.extend(storage.glob(storage.join(pat, "**", "*.tar")))
            elif storage.exists(pat):
                out.append(pat)
        elif glob.has_magic(pat):
            out.extend(sorted(p for p in glob.glob(pat, recursive=True) if os.path.isfile(p)))
        elif os.path.isdir(pat):
            out.extend(sorted(glob.glob(os.path.join(pat, "**", "*.tar"), recursive=True)))
        elif os.path.exists(pat):
            out.append(pat)
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def _common_root(shards: list[str]) -> str:
    """The folder (or URI prefix) every shard lives under: labels are relative to it."""
    from manifests.storage import common_prefix, is_uri

    if any(is_uri(p) for p in shards):
        return common_prefix(shards)
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in shards])


def _label(shard: str, root: str) -> str:
    from manifests.storage import is_uri, relative

    return relative(shard, root) if is_uri(shard) else os.path.relpath(os.path.abspath(shard), root)


def split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: the base name splits at its first dot."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower() if dot else ""


def group(members: list[TarMember]) -> list[tuple[str, list[TarMember]]]:
    """Consecutive members with the same key, in shard order."""
    out: list[tuple[str, list[TarMember]]] = []
    for m in members:
        key, _ = split_name(m.name)
        if out and out[-1][0] == key:
            out[-1][1].append(m)
        else:
            out.append((key, [m]))
    return out


class WebDatasetReader(Reader):
    name = "webdataset"
    spec_type = ShardSpec
    kinds = frozenset({"images", "image_text"})

    @classmethod
    def detect(cls, ctx: SourceContext) -> bool:
        shards = expand_shards(list(ctx.paths))
        return bool(shards) and all(p.lower().endswith(".tar") for p in shards)

    def plan(self, ctx: SourceContext) -> tuple[list[ChunkSpec], str, int]:
        shards = expand_shards(list(ctx.paths))
        if not shards:
            raise ctx.error("no tar shards found")
        root = _common_root(shards)
        fp = Fingerprint(ctx.kind, self.name)
        specs: list[ChunkSpec] = []
        pos0 = 0
        remaining = ctx.limit
        for shard in shards:
            fp.file(shard)
            if remaining is not None and remaining <= 0:
                break
            label = _label(shard, root)
            scan = scan_tar(shard)
            groups = group(scan.members)
            tail = 1 if scan.problem and (scan.cut_member is None or not groups
                                          or split_name(scan.cut_member)[0] != groups[-1][0]) else 0
            stop_at = -1  # the last chunk runs to the shard's end (and reports a cut tail)
            if remaining is not None and len(groups) >= remaining:
                groups, tail = groups[:remaining], 0
                stop_at = _next_header(scan.members, groups)
            for g0 in range(0, max(len(groups), tail), ctx.chunk):
                g1 = min(len(groups), g0 + ctx.chunk)
                start = groups[g0][1][0].header if g0 < len(groups) else scan.end
                last = g1 >= len(groups)
                stop = stop_at if last else groups[g1][1][0].header
                specs.append(ShardSpec(ctx.index, pos0 + g0, shard, label, start, stop, (g1 - g0) + (tail if last else 0)))
            n = len(groups) + tail
            pos0 += n
            if remaining is not None:
                remaining -= n
        if not specs:
            raise ctx.error("the shards hold no samples")
        return specs, fp.hexdigest(), pos0

    def read(self, ctx: SourceContext, spec: ShardSpec) -> pa.Table:
        scan, groups = _scan(spec)
        small = [m for _, ms in groups for m in ms if not _is_image(m.name)]
        data = {m.offset: d for m, d in iter_members(spec.shard, small)}
        rows = _new_rows()
        for key, members in groups:
            _sample(ctx, spec, key, members, data, rows)
        _tail(spec, scan, groups, rows)
        return _assemble(ctx, spec, rows)

    # the two methods below let the Ray engine isolate a sample whose reading kills its worker
    # (curation.engine.ray_engine); an input of a chunk is a sample (plus a cut tail), as ``inputs()`` counts them
    @staticmethod
    def narrow(spec: ShardSpec, lo: int, hi: int) -> ShardSpec:
        """The samples ``[lo, hi)`` of a chunk as a chunk of their own: their header offsets come from a scan of
        the chunk's tar headers (no member is read), so each part reads only its own members."""
        scan, groups = _scan(spec)
        hi = min(hi, spec.count)
        lo = min(lo, hi)

        def header(i: int) -> int:
            return groups[i][1][0].header if i < len(groups) else scan.end

        # the last part keeps the chunk's stop (a stop of -1 reports a cut shard); one that ends at the last whole
        # sample of a cut shard, before the tail, stops at the scan's end
        stop = spec.stop if hi >= spec.count else header(hi)
        return replace(spec, pos0=spec.pos0 + lo, start=header(lo), stop=stop, count=hi - lo)

    def unread(self, ctx: SourceContext, spec: ShardSpec, reason: str, detail: str) -> pa.Table:
        """The chunk's rows from its tar headers alone (no member is read), every one dropped at stage ``read``
        with ``reason``: the key, id, uri and position a read gives each sample, with no media, text or meta."""
        scan, groups = _scan(spec)
        rows = _new_rows()
        for key, _ in groups:
            _add(rows, f"{spec.label}:{key}", f"{spec.shard}#{key}", fail=(reason, detail))
        _tail(spec, scan, groups, rows, (reason, detail))
        return _assemble(ctx, spec, rows)


def _scan(spec: ShardSpec) -> tuple[TarScan, list[tuple[str, list[TarMember]]]]:
    """The chunk's tar headers (no member data read) and its samples' member groups."""
    scan = scan_tar(spec.shard, spec.start, None if spec.stop < 0 else spec.stop)
    return scan, group(scan.members)


def _new_rows() -> dict[str, list]:
    return {k: [] for k in ("key", "uri", "media", "text", "turns", "meta", "reason", "detail")}


def _tail(spec: ShardSpec, scan: TarScan, groups: list, rows: dict, fail: tuple[str, str] | None = None) -> None:
    """A shard cut short, in the chunk that runs to its end: the cut sample marked, or its tail as a row of its own
    (``fail`` overrides the ``truncated_shard`` reason, for an unread chunk)."""
    if not (scan.problem and spec.stop < 0):
        return
    cut_key = split_name(scan.cut_member)[0] if scan.cut_member else None
    reason, detail = fail or ("truncated_shard", f"{spec.shard}: {scan.problem}")
    if groups and cut_key == groups[-1][0]:
        rows["reason"][-1], rows["detail"][-1] = reason, detail
    else:
        name = cut_key or f"<tail@{scan.end}>"
        _add(rows, f"{spec.label}:{name}", f"{spec.shard}#{name}", fail=(reason, detail))


def _assemble(ctx: SourceContext, spec: ShardSpec, rows: dict) -> pa.Table:
    n = len(rows["key"])
    return assemble(ctx, rows["key"], rows["uri"], spec.pos0 + np.arange(n), media=pa.array(rows["media"], MEDIA_LIST),
                    text=pa.array(rows["text"], pa.string()), turns=pa.array(rows["turns"], TURNS),
                    meta=pa.array(rows["meta"], pa.string()),
                    fail_reason=rows["reason"], fail_detail=rows["detail"])


def _next_header(members: list[TarMember], groups: list) -> int:
    """Header offset of the first member after the kept groups (-1 when they run to the end)."""
    if not groups:
        return -1
    last = groups[-1][1][-1]
    for m in members:
        if m.header > last.header:
            return m.header
    return -1


def _is_image(name: str) -> bool:
    ext = split_name(name)[1]
    m = _DOC_PART.match(ext)
    return (m.group(2) == "image") if m else (ext in IMAGE_EXTS or _NUMBERED.match(ext) is not None)


def _add(rows: dict, key: str, uri: str, media=None, text=None, meta=None, fail=None, turns=None) -> None:
    rows["key"].append(key)
    rows["uri"].append(uri)
    rows["media"].append(media or [])
    rows["text"].append(text)
    rows["turns"].append(turns)
    rows["meta"].append(meta)
    rows["reason"].append(fail[0] if fail else None)
    rows["detail"].append(fail[1] if fail else None)


def _decode(raw: bytes, what: str) -> tuple[str | None, tuple[str, str] | None]:
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return None, ("invalid_utf8", f"{what}: {exc}")


def _ref(shard: str, m: TarMember, ext: str) -> dict:
    return {"uri": tar_uri(shard, m.name, m.offset, m.size), "kind": "image",
            "format": IMAGE_EXTS.get(ext.rsplit(".", 1)[-1])}


def _sample(ctx: SourceContext, spec: ShardSpec, key: str, members: list[TarMember], data: dict, rows: dict) -> None:
    """One row for one key (a plain sample or a SmolVLM document)."""
    rkey = f"{spec.label}:{key}"
    uri = f"{spec.shard}#{key}"
    names = [m.name for m in members]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        _add(rows, rkey, uri, fail=("duplicate_member", f"{uri}: {dup[0]} appears {names.count(dup[0])} times"))
        return
    by_ext = {split_name(m.name)[1]: m for m in members}
    if any(_DOC_PART.match(e) for e in by_ext):
        _document(spec, rkey, uri, by_ext, data, rows)
        return
    images = [(e, m) for e, m in by_ext.items() if e in IMAGE_EXTS]
    numbered = sorted((int(mm.group(1)), e, m) for e, m in by_ext.items() if (mm := _NUMBERED.match(e)))
    if not images and not numbered:
        _add(rows, rkey, uri, fail=("missing_image", f"{uri}: no {'/'.join(IMAGE_EXTS)} member"))
        return
    if len(images) > 1 or (images and numbered):
        names_ = [m.name for _, m in images] + [m.name for _, _, m in numbered]
        _add(rows, rkey, uri, fail=("multiple_images", f"{uri}: {', '.join(names_)} (number several images k.0.jpg, k.1.jpg)"))
        return
    if numbered:
        images = [(e, m) for _, e, m in numbered]
    meta = None
    text = None
    turns = None
    fail = None
    if "json" in by_ext:
        raw, fail = _decode(data[by_ext["json"].offset], by_ext["json"].name)
        if raw is not None:
            try:
                obj = json.loads(raw)
                meta = raw if isinstance(obj, dict) else json.dumps({"json": obj})
                field = ctx.source.text_column
                if field and isinstance(obj, dict) and isinstance(obj.get(field), str):
                    text = obj[field]
                turns = _json_turns(obj)
            except json.JSONDecodeError as exc:
                fail = ("invalid_json", f"{by_ext['json'].name}: {exc.msg} at column {exc.colno}")
    if text is None and fail is None:
        for ext in TEXT_EXTS:
            if ext in by_ext:
                text, fail = _decode(data[by_ext[ext].offset], by_ext[ext].name)
                break
    if fail is None and ctx.kind == "image_text" and text is None and turns is None:
        fail = ("missing_text", f"{uri}: no .txt/.caption member" + (f" and no {ctx.source.text_column!r} in .json"
                                                                     if ctx.source.text_column else ""))
    _add(rows, rkey, uri, media=[_ref(spec.shard, m, e) for e, m in images], text=text, turns=turns, meta=meta, fail=fail)


def _json_turns(obj) -> list[dict] | None:
    """``turns`` ([{role, content}]) or ``conversations`` ([{from, value}]) of a sample's .json, if it has them."""
    if not isinstance(obj, dict):
        return None
    raw = obj.get("turns") or obj.get("conversations")
    if not isinstance(raw, list):
        return None
    out = []
    for t in raw:
        if isinstance(t, dict):
            role = str(t.get("role", t.get("from", "user")))
            content = t.get("content", t.get("value"))
            out.append({"role": _ROLES.get(role, role), "content": None if content is None else str(content)})
    return out or None


def _document(spec: ShardSpec, rkey: str, uri: str, by_ext: dict, data: dict, rows: dict) -> None:
    """SmolVLM's document layout: parts ``{i}.text.txt`` / ``{i}.image.<ext>`` in order of ``i``."""
    parts = sorted(((int(mm.group(1)), mm.group(2), e, m) for e, m in by_ext.items() if (mm := _DOC_PART.match(e))),
                   key=lambda p: (p[0], p[1] != "text"))
    pieces: list[str] = []
    media: list[dict] = []
    for _, what, ext, m in parts:
        if what == "image":
            media.append(_ref(spec.shard, m, ext))
            pieces.append("<image>")
        else:
            text, fail = _decode(data[m.offset], m.name)
            if fail:
                _add(rows, rkey, uri, fail=fail)
                return
            pieces.append(text)
    meta = None
    if "metadata.txt" in by_ext:
        raw, fail = _decode(data[by_ext["metadata.txt"].offset], by_ext["metadata.txt"].name)
        meta = json.dumps({"metadata": raw}, ensure_ascii=False) if raw is not None else None
    _add(rows, rkey, uri, media=media, text="\n\n".join(pieces), meta=meta)
