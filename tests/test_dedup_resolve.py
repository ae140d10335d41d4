"""The global resolve stage on generated data: clusters, representatives, flat images, against, decontamination, resume."""
from __future__ import annotations

import io
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.dedup import DedupConfig, compute_signatures, resolve_duplicates
from curation.dedup import resolve as resolve_mod
from manifests.schema import MEDIA_TYPE, TURN_TYPE


def photo(seed: int, size=(320, 240)) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def words(rng: random.Random, n: int) -> list[str]:
    return [f"w{rng.randrange(20000)}" for _ in range(n)]


def table(rows: list[dict]) -> pa.Table:
    n = len(rows)
    return pa.table(
        {
            "id": [r["id"] for r in rows],
            "source": [r.get("source", "gen") for r in rows],
            "modality": [r["modality"] for r in rows],
            "media": pa.array([r.get("media") for r in rows], pa.list_(MEDIA_TYPE)),
            "text": pa.array([r.get("text") for r in rows], pa.string()),
            "turns": pa.nulls(n, pa.list_(TURN_TYPE)),
        }
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Images with exact, re-encoded, resized, flat and recoloured variants, and near-duplicate texts."""
    d = tmp_path_factory.mktemp("corpus")
    rows: list[dict] = []

    def img(rid: str, im: Image.Image, name: str, **kw):
        path = d / name
        im.save(path, **kw)
        rows.append({"id": rid, "modality": "image", "media": [{"uri": str(path), "kind": "image", "width": im.width, "height": im.height}]})

    a = photo(1, (640, 480))
    img("a-big", a, "a.png")
    img("a-copy", a, "a-copy.png")  # byte-identical
    img("a-bmp", a, "a.bmp")  # same pixels, other format
    img("a-small", a.resize((320, 240), Image.Resampling.LANCZOS), "a-small.jpg", quality=70)
    img("a-flip", a.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "a-flip.png")  # pHash cannot see flips
    b = photo(2)
    img("b", b, "b.jpg", quality=90)
    img("b-webp", b, "b.webp", quality=80)
    for k in range(8):
        img(f"distinct-{k}", photo(100 + k), f"d{k}.png")
    # flat images: different colours share a pHash but must not cluster; identical ones are exact duplicates
    for k, c in enumerate([(0, 0, 0), (255, 255, 255), (200, 30, 30), (30, 200, 30)]):
        img(f"flat-{k}", Image.new("RGB", (300, 200), c), f"flat{k}.png")
    img("flat-0-again", Image.new("RGB", (300, 200), (0, 0, 0)), "flat0b.png")
    # a drawing recoloured: same grey structure, different colour
    arr = np.asarray(photo(3)).astype(np.int16)
    img("paint-red", Image.fromarray(arr.astype(np.uint8)), "red.png")
    img("paint-blue", Image.fromarray(np.clip(arr[..., [2, 1, 0]], 0, 255).astype(np.uint8)), "blue.png")
    # texts
    rng = random.Random(0)
    base = words(rng, 400)
    near = list(base)
    for i in rng.sample(range(400), 4):
        near[i] = "edited"
    rows.append({"id": "t-base", "modality": "text", "text": " ".join(base)})
    rows.append({"id": "t-near", "modality": "text", "text": " ".join(near)})
    rows.append({"id": "t-exact", "modality": "text", "text": " ".join(base).upper()})
    rows.append({"id": "t-longer", "modality": "text", "text": " ".join(base + ["tail"])})
    for k in range(6):
        rows.append({"id": f"t-other-{k}", "modality": "text", "text": " ".join(words(rng, 300))})
    # an image_text pair whose caption equals a text row: captions never dedup text rows
    rows.append({"id": "caption", "modality": "image_text", "text": " ".join(base),
                 "media": [{"uri": str(d / "d0.png"), "kind": "image"}]})
    t = compute_signatures(table(rows), DedupConfig())
    return d, t


def clusters(res: pa.Table) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in res.to_pylist():
        if r["dup_cluster"]:
            out.setdefault(r["dup_cluster"], set()).add(r["id"])
    return out


def cluster_of(res: pa.Table, rid: str) -> set[str]:
    for members in clusters(res).values():
        if rid in members:
            return members
    return {rid}


def test_clusters_and_representatives(corpus, tmp_path):
    _, t = corpus
    res = resolve_duplicates(t, DedupConfig(), workdir=tmp_path / "w")
    assert res.schema.names == ["id", "dup_cluster", "reason", "detail"]
    a = cluster_of(res, "a-big")
    assert a == {"a-big", "a-copy", "a-bmp", "a-small"}
    assert "a-flip" not in a
    assert cluster_of(res, "b") == {"b", "b-webp"}
    assert cluster_of(res, "distinct-0") == {"distinct-0", "caption"}  # same image: the media decide
    for k in range(1, 8):
        assert cluster_of(res, f"distinct-{k}") == {f"distinct-{k}"}
    # flat images: only the identical pair
    assert cluster_of(res, "flat-0") == {"flat-0", "flat-0-again"}
    for k in (1, 2, 3):
        assert cluster_of(res, f"flat-{k}") == {f"flat-{k}"}
    assert cluster_of(res, "paint-red") == {"paint-red"}
    # text: exact (normalised case) and near duplicates together; an image_text caption never joins them
    assert cluster_of(res, "t-base") == {"t-base", "t-near", "t-exact", "t-longer"}
    rows = {r["id"]: r for r in res.to_pylist()}
    # representative: highest resolution, then largest file, then longest text, then smallest id
    assert rows["a-small"]["dup_cluster"] in ("a-big", "a-copy", "a-bmp")
    rep = rows["a-small"]["dup_cluster"]
    assert rows[rep]["reason"] is None
    assert rows["t-near"]["dup_cluster"] == "t-longer"
    dropped = [r for r in rows.values() if r["reason"] == "duplicate"]
    assert {r["dup_cluster"] for r in dropped} <= {r["id"] for r in rows.values() if r["reason"] is None}
    detail = json.loads(rows["a-small"]["detail"])
    assert detail["rep"] == rep and detail["match"] == "phash" and detail["distance"] <= 6
    assert json.loads(rows["t-near"]["detail"])["match"] in ("minhash", "text")


def test_result_does_not_depend_on_partitions_or_file_split(corpus, tmp_path):
    _, t = corpus
    one = resolve_duplicates(t, DedupConfig(partitions=1), workdir=tmp_path / "one")
    # reversed row order, three files, many partitions
    rev = t.take(pa.array(np.arange(t.num_rows)[::-1]))
    paths = []
    for i, (lo, hi) in enumerate(((0, 7), (7, 20), (20, rev.num_rows))):
        p = tmp_path / f"part-{i}.parquet"
        pq.write_table(rev.slice(lo, hi - lo), p)
        paths.append(str(p))
    many = resolve_duplicates(paths, DedupConfig(partitions=13), workdir=tmp_path / "many")
    assert one.equals(many)


def test_the_answer_is_written_per_input_file_each_with_its_own_rows_only(corpus, tmp_path, monkeypatch):
    """resolve_parts: one part per file with rows in the answer, each sorted by id and holding that file's rows;
    together they are resolve_duplicates' table; a kill while the parts are written resumes to the same parts."""
    from curation.dedup import clusters as clusters_mod
    from curation.dedup import resolve_parts

    _, t = corpus
    cfg = DedupConfig(partitions=5)
    whole = resolve_duplicates(t, cfg, workdir=tmp_path / "whole")
    assert whole.num_rows > 0
    paths = []
    for i, (lo, hi) in enumerate(((0, 9), (9, 10), (10, 22), (22, t.num_rows))):
        p = tmp_path / f"in-{i}.parquet"
        pq.write_table(t.slice(lo, hi - lo), p)
        paths.append(str(p))
    real = clusters_mod.atomic_write
    writes = []

    def killed_after_one(path, write):
        if writes:
            raise KeyboardInterrupt("killed")
        writes.append(path)
        return real(path, write)

    monkeypatch.setattr(clusters_mod, "atomic_write", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        resolve_parts(paths, tmp_path / "w", config=cfg)
    monkeypatch.setattr(clusters_mod, "atomic_write", real)
    parts = resolve_parts(paths, tmp_path / "w", config=cfg)
    assert len(parts) >= 2 and set(parts) <= set(range(len(paths)))
    seen = []
    for fi, path in sorted(parts.items()):
        part = pq.read_table(path)
        ids = part.column("id").to_pylist()
        assert ids == sorted(ids) and set(ids) <= set(pq.read_table(paths[fi]).column("id").to_pylist())
        seen.append(part)
    together = pa.concat_tables(seen)
    assert together.sort_by("id").equals(whole)
    assert resolve_duplicates(paths, cfg, workdir=tmp_path / "w").equals(whole)


def test_the_answer_does_not_depend_on_the_node_blocks(corpus, tmp_path, monkeypatch):
    """Phases 3 and 4 work block by block on disk (candidates verified per run of blocks, components,
    representatives, matches, parts): a block per input file, its candidates a batch of their own, with buffers
    that flush every few rows, gives the same answer as one block, with dedup against an existing manifest and
    decontamination in the same job."""
    from curation.dedup import blocks

    d, t = corpus
    ids = t.column("id").to_pylist()
    existing = t.filter(pa.array([i in ("a-small", "t-near") for i in ids]))
    ex_path = tmp_path / "existing.parquet"
    pq.write_table(existing, ex_path)
    evdir = tmp_path / "evalset"
    evdir.mkdir()
    photo(2).resize((200, 150)).save(evdir / "q1.png")  # a near copy of "b"
    paths = []
    for i, (lo, hi) in enumerate(((0, 3), (3, 4), (4, 11), (11, 17), (17, t.num_rows))):
        p = tmp_path / f"in-{i}.parquet"
        pq.write_table(t.slice(lo, hi - lo), p)
        paths.append(str(p))
    cfg = DedupConfig(partitions=3, against=[str(ex_path)], decontaminate=[str(evdir)])
    one = resolve_duplicates(paths, cfg, workdir=tmp_path / "one")
    assert {"duplicate", "contaminated:evalset", None} <= set(one.column("reason").to_pylist())
    monkeypatch.setattr(blocks, "BLOCK_ROWS", 1)
    monkeypatch.setattr(blocks, "BUFFER_ROWS", 3)
    monkeypatch.setattr(resolve_mod, "CANDIDATE_ROWS", 1)  # each block's candidates verified on their own
    many = resolve_duplicates(paths, cfg, workdir=tmp_path / "many")
    assert one.equals(many)
    stats = [json.loads((tmp_path / w / "image-verify.json").read_text()) for w in ("one", "many")]
    assert stats[0]["candidates"] == stats[1]["candidates"] > 0  # summed over the batches
    assert stats[0]["verified"] == stats[1]["verified"]


def test_unverified_text_uses_the_signature_estimate_across_files(corpus, tmp_path):
    _, t = corpus
    text = t.filter(pa.array([i.startswith("t-") for i in t.column("id").to_pylist()]))
    paths = []
    for i, (lo, hi) in enumerate(((0, 2), (2, text.num_rows))):  # near copies meet across files
        p = tmp_path / f"text-{i}.parquet"
        pq.write_table(text.slice(lo, hi - lo), p)
        paths.append(str(p))
    cfg = DedupConfig(exact=False, image={"enabled": False}, video={"enabled": False}, text={"verify": False})
    res = resolve_duplicates(paths, cfg, workdir=tmp_path / "w")
    assert cluster_of(res, "t-base") == {"t-base", "t-near", "t-exact", "t-longer"}
    details = [json.loads(r["detail"]) for r in res.to_pylist() if r["reason"] == "duplicate"]
    assert details and all(d["match"] == "minhash" and 0.8 <= d["jaccard"] <= 1.0 for d in details)
    for k in range(6):
        assert cluster_of(res, f"t-other-{k}") == {f"t-other-{k}"}


def test_against_drops_new_copies_only(corpus, tmp_path):
    _, t = corpus
    existing = t.filter(pa.array([i in ("a-small", "t-near", "distinct-3") for i in t.column("id").to_pylist()]))
    new = t.filter(pa.array([i in ("a-big", "a-copy", "t-base", "b", "distinct-4") for i in t.column("id").to_pylist()]))
    ex_path = tmp_path / "existing.parquet"
    pq.write_table(existing, ex_path)
    res = resolve_duplicates(new, DedupConfig(against=[str(ex_path)]), workdir=tmp_path / "w")
    rows = {r["id"]: r for r in res.to_pylist()}
    assert set(rows) == {"a-big", "a-copy", "t-base"}  # existing rows are never reported
    assert {r["reason"] for r in rows.values()} == {"duplicate"}
    assert rows["a-big"]["dup_cluster"] == "a-small" and rows["t-base"]["dup_cluster"] == "t-near"


def test_decontamination_names_the_eval_set(corpus, tmp_path):
    d, t = corpus
    evdir = tmp_path / "mmbench"
    evdir.mkdir()
    photo(2).resize((200, 150)).save(evdir / "q1.png")  # near copy of "b"
    Image.open(d / "d5.png").save(evdir / "q2.png")  # pixel copy of distinct-5
    Image.new("RGB", (300, 200), (255, 255, 255)).save(evdir / "blank.png")  # flat: matches only exactly
    base_text = t.filter(pa.array([i == "t-base" for i in t.column("id").to_pylist()])).column("text")[0].as_py()
    q = pa.table({"question": [base_text, "what colour is the car"], "image": [None, None], "question_id": [1, 2]})
    qpath = tmp_path / "vqa_eval.parquet"
    pq.write_table(q, qpath)
    cfg = DedupConfig(exact=False, image={"enabled": False}, text={"enabled": False}, video={"enabled": False},
                      decontaminate=[str(evdir), {"path": str(qpath), "name": "vqa"}])
    res = resolve_duplicates(t, cfg, workdir=tmp_path / "w")
    rows = {r["id"]: r for r in res.to_pylist()}
    assert rows["b"]["reason"] == "contaminated:mmbench"
    assert rows["b-webp"]["reason"] == "contaminated:mmbench"
    assert rows["distinct-5"]["reason"] == "contaminated:mmbench"
    assert json.loads(rows["distinct-5"]["detail"]) == {"match": "pixels", "with": "mmbench:q2.png"}
    assert rows["flat-1"]["reason"] == "contaminated:mmbench"  # identical pixels
    assert "flat-2" not in rows
    for rid in ("t-base", "t-exact", "t-near", "t-longer"):
        assert rows[rid]["reason"] == "contaminated:vqa"
    assert "caption" in rows  # a caption copying an eval question is contaminated too
    assert not any(r["dup_cluster"] for r in rows.values())  # dedup itself was off


def test_resume_after_a_crash_reaches_the_same_result(corpus, tmp_path, monkeypatch):
    _, t = corpus
    cfg = DedupConfig(partitions=6)
    clean = resolve_duplicates(t, cfg, workdir=tmp_path / "clean")
    calls = []
    real = resolve_mod._process_partition

    def crashing(path, c):
        calls.append(path.name)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return real(path, c)

    monkeypatch.setattr(resolve_mod, "_process_partition", crashing)
    with pytest.raises(KeyboardInterrupt):
        resolve_duplicates(t, cfg, workdir=tmp_path / "w")
    calls.clear()
    monkeypatch.setattr(resolve_mod, "_process_partition", lambda p, c: (calls.append(p.name), real(p, c))[1])
    again = resolve_duplicates(t, cfg, workdir=tmp_path / "w")
    assert again.equals(clean)
    assert len(calls) == 3  # the three partitions finished before the crash were not redone


@pytest.mark.parametrize("dedupe_name", ["dedupe_edges", "dedupe_by_kind"])
def test_partition_tables_deduplicated_keep_each_pair_once(tmp_path, monkeypatch, dedupe_name):
    """The same pair in many partitions (several LSH bands), with other kinds and distances: deduplicating the
    partitions' tables together keeps each pair once (per phase group for candidates)."""
    from curation.dedup import buckets
    from curation.dedup.layout import EDGE_SCHEMA
    from curation.dedup.shared import SharedArea

    dedupe = getattr(buckets, dedupe_name)
    rng = np.random.default_rng(7)
    area = SharedArea(tmp_path)
    names, tables = [], []
    for p in range(9):
        n = int(rng.integers(0, 60))  # an empty partition too, most likely
        a = rng.integers(0, 12, n)
        t = pa.table(
            {
                "a": a.astype(np.int64),
                "b": (a + rng.integers(1, 6, n)).astype(np.int64),
                "kind": rng.choice([0, 1, 3, 5, 7], n).astype(np.int8),
                "dist": rng.choice([0.0, 0.1, 0.25, 0.5], n).astype(np.float32),
                "contam": rng.random(n) < 0.3,
            },
            schema=EDGE_SCHEMA,
        )
        names.append(f"edges/e-{p}.parquet")
        tables.append(t)
        area.write_table(names[-1], t)
    stepwise = dedupe(pa.concat_tables([area.read_table(n) for n in names]))
    # every (a, b, contam) of the input exactly once
    keys = lambda t: list(zip(*(t.column(c).to_pylist() for c in ("a", "b", "contam"))))  # noqa: E731
    want = set(keys(pa.concat_tables(tables)))
    if dedupe_name == "dedupe_by_kind":  # once per phase group (and once among the kinds no phase claims)
        assert len(keys(stepwise)) >= len(want)
    else:
        assert len(keys(stepwise)) == len(want)
    assert set(keys(stepwise)) == want


def test_match_text_keeps_same_image_with_other_caption(tmp_path):
    p = tmp_path / "x.png"
    photo(4).save(p)
    rows = [
        {"id": "q1", "modality": "image_text", "text": "what is in the picture", "media": [{"uri": str(p), "kind": "image"}]},
        {"id": "q2", "modality": "image_text", "text": "how many objects are there", "media": [{"uri": str(p), "kind": "image"}]},
        {"id": "q3", "modality": "image_text", "text": "What is in the  picture", "media": [{"uri": str(p), "kind": "image"}]},
    ]
    t = compute_signatures(table(rows), DedupConfig())
    assert len(clusters(resolve_duplicates(t, DedupConfig(), workdir=tmp_path / "a"))) == 1
    res = resolve_duplicates(t, DedupConfig(image={"match_text": True}), workdir=tmp_path / "b")
    assert list(clusters(res).values()) == [{"q1", "q3"}]


def test_empty_input(tmp_path):
    t = compute_signatures(table([]), DedupConfig())
    res = resolve_duplicates(t, DedupConfig(), workdir=tmp_path / "w")
    assert res.num_rows == 0 and res.schema.names == ["id", "dup_cluster", "reason", "detail"]


def test_bad_paths_are_user_errors(corpus, tmp_path):
    from manifests.errors import UserError

    _, t = corpus
    with pytest.raises(UserError, match="against"):
        resolve_duplicates(t, DedupConfig(against=[str(tmp_path / "nope")]), workdir=tmp_path / "w")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UserError, match="decontaminate"):
        resolve_duplicates(t, DedupConfig(decontaminate=[str(tmp_path / "x.txt")]), workdir=tmp_path / "w2")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match=r"decontaminate\[0\]: .*broken.parquet: cannot be read"):
        resolve_duplicates(t, DedupConfig(decontaminate=[str(tmp_path / "broken.parquet")]), workdir=tmp_path / "w3")


@pytest.mark.ray
def test_ray_map_gives_the_same_result(corpus, tmp_path, ray_session):
    from curation.dedup.parallel import ray_map

    _, t = corpus
    local = resolve_duplicates(t, DedupConfig(partitions=4), workdir=tmp_path / "local")
    on_ray = resolve_duplicates(t, DedupConfig(partitions=4), workdir=tmp_path / "ray", map_fn=ray_map)
    assert local.equals(on_ray)


def test_saved_hf_dataset_and_image_folder_sources(corpus, tmp_path):
    """Eval sets saved with datasets.save_to_disk (Image feature) and image folders used as `against:`."""
    datasets = pytest.importorskip("datasets")
    d, t = corpus
    buf = io.BytesIO()
    photo(2).resize((240, 180)).save(buf, format="PNG")  # a copy of "b"
    ds = datasets.Dataset.from_dict(
        {"image": [{"bytes": buf.getvalue(), "path": None}, None], "question": ["what is shown here in this photo", None]},
        features=datasets.Features({"image": datasets.Image(), "question": datasets.Value("string")}),
    )
    saved = tmp_path / "mathvista_local"
    datasets.DatasetDict({"testmini": ds}).save_to_disk(str(saved))
    folder = tmp_path / "old_images"
    folder.mkdir()
    Image.open(d / "d6.png").save(folder / "x.png")
    cfg = DedupConfig(against=[str(folder)], decontaminate=[{"path": str(saved), "split": "testmini"}])
    res = resolve_duplicates(t, cfg, workdir=tmp_path / "w")
    rows = {r["id"]: r for r in res.to_pylist()}
    assert rows["b"]["reason"] == "contaminated:mathvista_local"
    assert rows["distinct-6"]["reason"] == "duplicate" and rows["distinct-6"]["dup_cluster"] == "old_images:x.png"
    from manifests.errors import UserError

    with pytest.raises(UserError, match="no split 'val'"):
        resolve_duplicates(t, DedupConfig(decontaminate=[{"path": str(saved), "split": "val"}]), workdir=tmp_path / "w2")


@pytest.mark.parametrize("stamped", [False, True])
def test_against_a_committed_manifest(corpus, tmp_path, stamped, monkeypatch):
    """An existing manifest: re-hashed from its media, or read from its stored signatures when stamped."""
    from curation.dedup import signature_columns
    from manifests.schema import build_schema, conform
    from manifests.writer import ManifestWriter

    _, t = corpus
    old = t.filter(pa.array([i in ("a-small", "t-near") for i in t.column("id").to_pylist()]))
    schema = build_schema(signature_columns())
    writer = ManifestWriter(tmp_path / "old", schema)
    writer.write(conform(old.select([c for c in old.column_names if schema.get_field_index(c) >= 0]), schema))
    cfg = DedupConfig()
    extra = {"dedup_signature": cfg.signature_fingerprint()} if stamped else None
    writer.commit(sources={"gen": {"read": old.num_rows}}, extra=extra)
    new = t.filter(pa.array([i in ("a-big", "t-base", "b") for i in t.column("id").to_pylist()]))
    if stamped:  # nothing may be re-hashed
        import curation.dedup.external as ext

        monkeypatch.setattr(ext, "compute_signatures", lambda *a, **k: pytest.fail("re-hashed a stamped manifest"))
    res = resolve_duplicates(new, DedupConfig(against=[str(tmp_path / "old")]), workdir=tmp_path / "w")
    rows = {r["id"]: r for r in res.to_pylist()}
    assert rows["a-big"]["dup_cluster"] == "a-small" and rows["t-base"]["dup_cluster"] == "t-near"
    assert set(rows) == {"a-big", "t-base"}
