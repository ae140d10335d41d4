"""The pieces under the readers: content keys, JSON boundary scans, tar scans, the registry, video rows."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curation.readers import jsonparse as J
from curation.readers.keys import array_hash, hex_keys, table_hash
from media.containers import read_member, scan_tar
from tests.readers_fixtures import llava_json, members_shard


def test_content_hash_depends_on_values_only():
    rng = np.random.default_rng(0)
    blobs = [rng.bytes(int(n)) for n in rng.integers(0, 5000, 300)] + [b"", b"x" * (3 << 20)]
    arr = pa.array(blobs, pa.binary())
    h = array_hash(arr)
    assert len(set(h.tolist())) == len(set(blobs))  # distinct values, distinct hashes
    assert (array_hash(arr.slice(7)) == h[7:]).all()  # offsets do not matter
    assert (array_hash(pa.chunked_array([arr.slice(0, 100), arr.slice(100)])) == h).all()
    assert (array_hash(arr.cast(pa.large_binary())) == h).all()
    # a row hashes the same whichever other (null) fields or columns its chunk's inferred type has
    a = pa.Table.from_pylist([{"x": 1, "s": {"k": "v"}}, {"x": 2.5, "s": {"k": "w", "extra": [1, 2]}}])
    b = pa.Table.from_pylist([{"x": 1, "s": {"k": "v"}}])
    assert table_hash(a)[0] == table_hash(b)[0]
    # order of list elements counts; the column name counts
    assert array_hash(pa.array([[1, 2], [2, 1]]))[0] != array_hash(pa.array([[1, 2], [2, 1]]))[1]
    assert table_hash(pa.table({"a": [1]}))[0] != table_hash(pa.table({"b": [1]}))[0]
    keys = hex_keys(np.array([0, 2**64 - 1], np.uint64))
    assert keys.to_pylist() == ["sha:0000000000000000", "sha:ffffffffffffffff"]


def test_json_array_scan_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(J, "BLOCK", 5)  # state carried over many tiny blocks
    objs = [{"id": i, "v": 'tricky \\" , ] } [ { "' + "\\" * (i % 3), "n": [i, {"a": "]"}]} for i in range(7)]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(objs, indent=1))
    seps, n = J.array_separators(str(path))
    assert n == 7
    raw = path.read_bytes()
    parsed = J.parse_range(raw[seps[2] + 1 : seps[6]], True)
    assert parsed.table.column("id").to_pylist() == [2, 3, 4, 5] and not parsed.failed
    assert parsed.table.column("v").to_pylist()[1] == objs[3]["v"]
    (tmp_path / "e.json").write_text("  [ \n ] ")
    assert J.array_separators(str(tmp_path / "e.json"))[1] == 0


def test_bad_json_elements_cost_only_themselves():
    parsed = J.parse_range(b'{"a": 1}, 7, {"a": }, "s", {"a": 2, "b": "x"}', True)
    assert parsed.index.tolist() == [0, 4] and parsed.table.to_pylist() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]
    assert [(k, r) for k, r, _, _ in parsed.failed] == [(1, "invalid_json"), (2, "invalid_json"), (3, "invalid_json")]
    lines = J.parse_range(b'{"a": 1}\n\n{"a": "\xff"}\n{"a": [1]}\n', False)
    assert [r for _, r, _, _ in lines.failed] == ["invalid_utf8"] and lines.index.tolist() == [0, 3]


def test_tar_scan_reads_names_only(tmp_path):
    shard = members_shard(tmp_path / "s.tar", [("../../up.jpg", b"\xff\xd8data"), ("/etc/abs.txt", b"abs"),
                                               ("k." + "x" * 120 + ".txt", b"long name")])
    scan = scan_tar(str(shard))
    assert scan.members[0].name == "../../up.jpg" and scan.problem is None
    assert len(scan.members[2].name) > 100  # GNU/PAX long names
    m = scan.members[0]
    assert read_member(str(shard), m.offset, m.size) == b"\xff\xd8data"
    assert not (tmp_path.parent.parent / "up.jpg").exists()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.read_bytes()[: scan.members[1].offset + 1])
    c = scan_tar(str(cut))
    assert [x.name for x in c.members] == ["../../up.jpg"] and c.cut_member == "/etc/abs.txt"
    assert c.problem.startswith("truncated")


def test_registry_names_every_format_and_recipe_rejects_others():
    from curation.readers import READERS, reader_class
    from curation.recipe import parse_recipe
    from manifests.errors import RecipeError

    assert {"files", "jsonl", "parquet", "hf", "cauldron", "llava", "webdataset", "obelics"} <= set(READERS)
    for name in READERS:
        cls = reader_class(name)
        assert cls.name == name and cls.kinds
    with pytest.raises(RecipeError, match=r"sources\.0\.format|sources\[0\]\.format"):
        parse_recipe({"sources": [{"name": "x", "kind": "images", "path": ".", "format": "tfrecord"}]}, check_paths=False)


def test_llava_video_rows(tmp_path):
    from curation.engine import run_job
    from curation.recipe import load_recipe
    from curation.synth import moving_frames, write_video

    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.mp4", moving_frames(12, (64, 48)), fps=6)
    llava_json(tmp_path / "video.json", [
        {"id": "v0", "video": "a.mp4", "conversations": [{"from": "human", "value": "<video>\nWhat moves?"},
                                                         {"from": "gpt", "value": "A shape."}]},
        {"id": "v1", "video": "gone.mp4", "conversations": [{"from": "human", "value": "?"}, {"from": "gpt", "value": "x"}]},
    ])
    (tmp_path / "r.yaml").write_text("sources:\n  - {name: vids, kind: video, path: video.json, format: llava, "
                                     "video_root: videos}\n")
    out = tmp_path / "out"
    res = run_job(load_recipe(tmp_path / "r.yaml"), out, engine="local", quiet=True)
    assert res.sources["vids"]["read"] == 2 and res.sources["vids"]["kept"] == 1
    import pyarrow.dataset as pads

    row = pads.dataset(out / "data").to_table().to_pylist()[0]
    assert row["modality"] == "video" and row["media"][0]["kind"] == "video" and row["media"][0]["frames"] == 12
    assert row["turns"][0]["content"] == "<video>\nWhat moves?"
    led = pads.dataset(out / "dropped").to_table().to_pylist()
    assert [(r["stage"], r["reason"]) for r in led] == [("decode", "missing")]


def test_parquet_ranges_stream_large_row_groups(tmp_path):
    import pyarrow.parquet as pq

    from curation.readers.tabular import TableFile, read_table_range

    t = pa.table({"i": np.arange(10_000)})
    pq.write_table(t, tmp_path / "one_group.parquet", row_group_size=10_000)
    got = read_table_range(TableFile(str(tmp_path / "one_group.parquet"), "parquet"), 4321, 128)
    assert got.column("i").to_pylist() == list(range(4321, 4449))
    assert Path(tmp_path / "one_group.parquet").is_file()


def test_validate_checks_the_shards_tar_members_live_in(tmp_path):
    from curation.engine import run_job
    from curation.recipe import load_recipe
    from curation.synth import photo_like
    from manifests import validate
    from tests.readers_fixtures import img2dataset_shard, jpeg

    img2dataset_shard(tmp_path / "s.tar", [(f"{i:03d}", jpeg(photo_like(i, (64, 48))), f"caption {i}", None)
                                           for i in range(3)])
    (tmp_path / "r.yaml").write_text("sources:\n  - {name: w, kind: image_text, path: s.tar}\n")
    out = tmp_path / "out"
    assert run_job(load_recipe(tmp_path / "r.yaml"), out, engine="local", quiet=True).sources["w"]["kept"] == 3
    assert validate(out, check_media=True)["ok"]
    (tmp_path / "s.tar").unlink()
    from manifests import ManifestError

    with pytest.raises(ManifestError, match="s.tar"):
        validate(out, check_media=True)


def test_webdataset_numbered_images_and_json_turns(tmp_path):
    """Several images per sample (k.0.jpg, k.1.jpg) and turns in the .json, as smolcurate export writes them."""
    from curation.readers import SourceContext, read_source
    from curation.recipe import Source
    from curation.synth import photo_like
    from tests.readers_fixtures import jpeg

    turns = [{"role": "user", "content": "<image><image>Same?"}, {"role": "assistant", "content": "No."}]
    members_shard(tmp_path / "e.tar", [
        ("r1.json", json.dumps({"id": "r1", "turns": turns}).encode()),
        ("r1.0.jpg", jpeg(photo_like(1, (40, 30)))), ("r1.1.jpg", jpeg(photo_like(2, (40, 30)))),
        ("r2.jpg", jpeg(photo_like(3, (40, 30)))), ("r2.1.jpg", jpeg(photo_like(4, (40, 30)))),
    ])
    src = Source(name="e", kind="image_text", path=str(tmp_path / "e.tar"))
    t = pa.concat_tables(list(read_source(SourceContext(0, src, (str(tmp_path / "e.tar"),), None, None))))
    rows = t.to_pylist()
    assert [len(r["media"]) for r in rows] == [2, 0]
    assert rows[0]["turns"] == turns and rows[0]["media"][0]["uri"].endswith("#r1.0.jpg")
    assert rows[1]["_drop_reason"] == "multiple_images"


def test_webdataset_limit_and_chunks_cover_every_sample_once(tmp_path):
    from curation.readers import SourceContext, plan_context, read_spec
    from curation.recipe import Source
    from tests.readers_fixtures import img2dataset_shard

    for s in range(2):
        img2dataset_shard(tmp_path / f"{s}.tar", [(f"{s}{i:03d}", b"\xff\xd8x", f"c{s}{i}", None) for i in range(7)])
    for limit, chunk in ((None, 3), (9, 2), (7, 7), (1, 5)):
        src = Source(name="w", kind="image_text", path=str(tmp_path / "*.tar"), chunk_size=chunk, limit=limit)
        ctx = SourceContext(0, src, (str(tmp_path / "*.tar"),), None, None)
        plan = plan_context(ctx)
        rows = [r for spec in plan.chunks for r in read_spec(ctx, spec).to_pylist()]
        want = [f"c{s}{i}" for s in range(2) for i in range(7)][:limit]
        assert [r["text"] for r in rows] == want and plan.inputs == len(want)
        assert [r["_pos"] for r in rows] == list(range(len(want)))


@pytest.mark.parametrize("lines", [False, True])
def test_json_chunks_and_limit_cover_every_element_once(tmp_path, lines):
    from curation.readers import SourceContext, plan_context, read_spec
    from curation.recipe import Source

    rows = [{"id": f"r{i}", "image": f"{i}.jpg", "conversations": [{"from": "human", "value": f"q{i}"},
                                                                   {"from": "gpt", "value": "a"}]} for i in range(11)]
    path = llava_json(tmp_path / ("a.jsonl" if lines else "a.json"), rows, lines=lines)
    for limit, chunk in ((None, 4), (5, 2), (11, 20)):
        src = Source(name="l", kind="image_text", path=str(path), chunk_size=chunk, limit=limit)
        ctx = SourceContext(0, src, (str(path),), None, None)
        plan = plan_context(ctx)
        assert plan.format == "llava"
        got = [r for spec in plan.chunks for r in read_spec(ctx, spec).to_pylist()]
        want = rows[:limit]
        assert [r["_key"] for r in got] == [f"id:{r['id']}" for r in want]
        assert [r["_uri"].rsplit("/", 1)[1] for r in got][:2] == (["a.jsonl:1", "a.jsonl:2"] if lines else ["a.json[0]", "a.json[1]"])
