"""Formats users already have (Cauldron, LLaVA, WebDataset, OBELICS), curated end to end on both engines.

Data is written with the ecosystem's own writers (tests/readers_fixtures.py):
every input must end up a manifest row or a ledger row with its stage and
reason, ids must be the same on every run and engine.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.dataset as pads
import pytest

from curation.engine import run_job
from curation.recipe import load_recipe
from curation.synth import photo_like
from manifests import open_manifest, validate
from manifests.cli import main as cli_main
from tests.readers_fixtures import (
    cauldron_dataset,
    img2dataset_shard,
    jpeg,
    llava_json,
    members_shard,
    obelics_dataset,
    smolvlm_doc_shard,
)

pytest.importorskip("datasets")


def _rows(out: Path) -> list[dict]:
    return pads.dataset(out / "data", format="parquet").to_table().to_pylist()


def _ledger(out: Path) -> list[dict]:
    d = out / "dropped"
    return pads.dataset(d, format="parquet").to_table().to_pylist() if d.is_dir() and any(d.iterdir()) else []


def _recipe(root: Path, sources: str) -> Path:
    p = root / "recipe.yaml"
    p.write_text("seed: 0\nfilters: {image: {min_side: 16, max_low_info: null}}\nsources:\n" + sources)
    return p


def _curate(recipe: Path, out: Path, engine: str = "local") -> dict:
    res = run_job(load_recipe(recipe), out, engine=engine, workers=1, quiet=True)
    info = validate(out, check_media=True)
    assert info["ok"], info
    m = open_manifest(out)
    for name, src in m.info["sources"].items():
        assert src["read"] == src["kept"] + src["dropped"], name  # nothing lost
    return res.sources


def _reasons(out: Path, source: str) -> dict[str, tuple[str, str]]:
    return {r["uri"]: (r["stage"], r["reason"]) for r in _ledger(out) if r["source"] == source}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("formats")
    imgs = [jpeg(photo_like(i, (96, 72))) for i in range(8)]
    (root / "images").mkdir()
    for i, b in enumerate(imgs):
        (root / "images" / f"{i}.jpg").write_bytes(b)

    # The Cauldron: embedded bytes, multi-turn, a placed <image>, and three bad rows
    ds = cauldron_dataset(
        [[imgs[0]], [imgs[1], imgs[2]], [imgs[3]], [imgs[4]], [b"not an image at all"], [imgs[5]]],
        [
            [{"user": "What is shown?", "assistant": "A photo-like picture."}],
            [{"user": "Compare the two.", "assistant": "They differ."}, {"user": "Which is brighter?", "assistant": "The first."}],
            [{"user": "Look: <image> what colour dominates?", "assistant": "Blue."}],
            [],  # empty texts
            [{"user": "Describe.", "assistant": "Broken."}],  # undecodable embedded image
            [{"user": "<image><image> two?", "assistant": "One."}],  # two placeholders, one image
        ],
    )
    ds.save_to_disk(str(root / "cauldron_saved"))
    ds.to_parquet(str(root / "cauldron.parquet"))

    # LLaVA: a JSON array with a bad element, a count mismatch and a missing image
    rows = [
        {"id": "l0", "image": "0.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat is this?"},
                                                         {"from": "gpt", "value": "A synthetic photo."}]},
        {"id": "l1", "image": "1.jpg", "conversations": [{"from": "human", "value": "Describe it."},
                                                         {"from": "gpt", "value": "Shapes and colours."}]},
        42,
        {"id": "l2", "image": "2.jpg", "conversations": [{"from": "human", "value": "<image> <image> two?"},
                                                         {"from": "gpt", "value": "no"}]},
        {"id": "l3", "image": "missing.jpg", "conversations": [{"from": "human", "value": "<image>?"},
                                                               {"from": "gpt", "value": "gone"}]},
        {"id": "l4", "images": ["3.jpg", "4.jpg"], "conversations": [
            {"from": "system", "value": "be brief"}, {"from": "human", "value": "<image> vs <image>"},
            {"from": "gpt", "value": "same style"}]},
    ]
    llava_json(root / "llava.json", rows)
    llava_json(root / "llava.jsonl", [r for r in rows if isinstance(r, dict)], lines=True)

    # WebDataset: two img2dataset shards (a brace range), then a shard with every bad case
    (root / "wds").mkdir()
    img2dataset_shard(root / "wds" / "shard-000000.tar", [
        (f"{i:09d}", imgs[i], f"caption number {i}", {"url": f"http://x/{i}.jpg", "caption": f"json caption {i}"})
        for i in range(3)])
    img2dataset_shard(root / "wds" / "shard-000001.tar", [
        (f"{i:09d}", imgs[i], f"caption number {i}", {"url": f"http://x/{i}.jpg"}) for i in range(3, 6)])
    bad = members_shard(root / "bad.tar", [
        ("a.jpg", imgs[0]), ("a.txt", b"fine sample"),
        ("noimg.txt", b"a caption without its image"),
        ("dup.jpg", imgs[1]), ("dup.jpg", imgs[2]), ("dup.txt", b"twice"),
        ("../escape.jpg", imgs[3]), ("../escape.txt", b"a name with dots"),
        ("/abs/path.jpg", imgs[4]), ("/abs/path.txt", b"an absolute name"),
        ("z.jpg", imgs[5]), ("z.txt", b"the last sample, cut short"),
    ])
    from media.containers import scan_tar

    last = scan_tar(str(bad)).members[-1]
    assert last.name == "z.txt"
    (root / "cut.tar").write_bytes(bad.read_bytes()[: last.offset + 5])  # z.txt cut short, no end marker
    docs = smolvlm_doc_shard(root / "docs.tar", [
        ("doc1", ["First paragraph of the document.", imgs[6], "A paragraph after the figure."], '{"url": "a"}'),
        ("doc2", [imgs[7], "Caption-like text under a leading image."], '{"url": "b"}'),
    ])
    assert docs.is_file()

    # OBELICS: aligned lists with None gaps, saved as Parquet with datasets
    ob = obelics_dataset([[None, imgs[0], None], [imgs[1], None], [None, None]],
                         [["Intro text.", None, "Outro text."], [None, "Text after an image."], [None, None]])
    ob.to_parquet(str(root / "obelics.parquet"))
    return root


SOURCES = """\
  - {name: cauldron_disk, kind: image_text, path: cauldron_saved}
  - {name: cauldron_pq, kind: image_text, path: cauldron.parquet, chunk_size: 4}
  - {name: llava, kind: image_text, path: llava.json, image_root: images, chunk_size: 2}
  - {name: llava_lines, kind: image_text, path: llava.jsonl, image_root: images, format: llava}
  - {name: wds, kind: image_text, path: "wds/shard-{000000..000001}.tar", chunk_size: 2}
  - {name: wds_json, kind: image_text, path: "wds/*.tar", format: webdataset, text_column: caption}
  - {name: wds_bad, kind: image_text, path: cut.tar, chunk_size: 2}
  - {name: docs, kind: image_text, path: docs.tar}
  - {name: obelics, kind: image_text, path: obelics.parquet}
"""


@pytest.fixture(scope="module")
def curated(corpus, tmp_path_factory):
    recipe = _recipe(corpus, SOURCES)
    out = tmp_path_factory.mktemp("out") / "m"
    counts = _curate(recipe, out)
    return corpus, out, counts


def test_formats_are_detected_and_planned(corpus):
    from curation.readers import plan_source

    recipe = load_recipe(_recipe(corpus, SOURCES))
    formats = [plan_source(recipe, i).format for i in range(len(recipe.sources))]
    assert formats == ["cauldron", "cauldron", "llava", "llava", "webdataset", "webdataset", "webdataset",
                       "webdataset", "obelics"]


def test_cauldron_rows_become_turns_with_placed_images(curated):
    _, out, counts = curated
    for name in ("cauldron_disk", "cauldron_pq"):
        assert counts[name]["read"] == 6 and counts[name]["kept"] == 3, counts[name]
        rows = sorted((r for r in _rows(out) if r["source"] == name), key=lambda r: r["turns"][0]["content"])
        by_first = {r["turns"][0]["content"]: r for r in rows}
        one = by_first["<image>What is shown?"]
        assert [t["role"] for t in one["turns"]] == ["user", "assistant"]
        assert one["media"][0]["bytes"] is not None and one["media"][0]["uri"] is None  # embedded stays embedded
        two = by_first["<image><image>Compare the two."]
        assert [t["content"] for t in two["turns"]] == ["<image><image>Compare the two.", "They differ.",
                                                        "Which is brighter?", "The first."]
        assert len(two["media"]) == 2
        assert "Look: <image> what colour dominates?" in by_first  # a placed placeholder is left where it is
        reasons = sorted(v for v in _reasons(out, name).values())
        assert reasons == [("decode", "undecodable"), ("read", "empty_texts"), ("read", "image_count_mismatch")]


def test_llava_array_and_lines(curated):
    corpus, out, counts = curated
    assert counts["llava"]["read"] == 6 and counts["llava"]["kept"] == 3
    rows = {json.loads(r["meta"] or "{}").get("id") or r["turns"][0]["content"]: r for r in _rows(out) if r["source"] == "llava"}
    r0 = next(r for r in _rows(out) if r["source"] == "llava" and r["media"][0]["uri"].endswith("/0.jpg"))
    assert r0["turns"] == [{"role": "user", "content": "<image>\nWhat is this?"}, {"role": "assistant", "content": "A synthetic photo."}]
    r1 = next(r for r in _rows(out) if r["source"] == "llava" and r["media"][0]["uri"].endswith("/1.jpg"))
    assert r1["turns"][0]["content"] == "<image>Describe it."  # no placeholder: the image goes first
    r4 = next(r for r in _rows(out) if r["source"] == "llava" and len(r["media"]) == 2)
    assert [t["role"] for t in r4["turns"]] == ["system", "user", "assistant"]
    assert r4["media"][0]["uri"] == str(corpus / "images" / "3.jpg")
    assert rows
    reasons = _reasons(out, "llava")
    assert reasons[f"{corpus / 'llava.json'}[2]"] == ("read", "invalid_json")
    assert reasons[f"{corpus / 'llava.json'}[3]"] == ("read", "image_count_mismatch")
    assert reasons[f"{corpus / 'llava.json'}[4]"] == ("decode", "missing")
    assert counts["llava_lines"]["read"] == 5 and counts["llava_lines"]["kept"] == 3


def test_llava_ids_come_from_the_id_field(curated):
    from manifests.schema import make_id

    _, out, _ = curated
    ids = {r["id"] for r in _rows(out) if r["source"] == "llava"}
    assert ids == {make_id("llava", f"id:{k}") for k in ("l0", "l1", "l4")}


def test_webdataset_shards_by_brace_range_and_json_field(curated):
    _, out, counts = curated
    assert counts["wds"]["read"] == 6 and counts["wds"]["kept"] == 6
    rows = [r for r in _rows(out) if r["source"] == "wds"]
    assert sorted(r["text"] for r in rows) == [f"caption number {i}" for i in range(6)]
    ref = rows[0]["media"][0]
    assert ref["uri"].startswith("tar://") and ref["bytes"] is None and ref["width"] == 96
    meta = json.loads(rows[0]["meta"])
    assert meta["url"].startswith("http://x/")
    js = {r["text"] for r in _rows(out) if r["source"] == "wds_json"}
    assert {"json caption 0", "json caption 1", "json caption 2"} <= js  # text from the .json field
    assert "caption number 3" in js  # no such field: the .txt


def test_webdataset_bad_members_are_ledgered_and_never_extracted(curated):
    corpus, out, counts = curated
    assert counts["wds_bad"]["read"] == 6
    reasons = {uri.rsplit("#", 1)[1]: v for uri, v in _reasons(out, "wds_bad").items()}
    assert reasons == {"noimg": ("read", "missing_image"), "dup": ("read", "duplicate_member"),
                       "z": ("read", "truncated_shard")}
    kept = {r["text"] for r in _rows(out) if r["source"] == "wds_bad"}
    assert kept == {"fine sample", "a name with dots", "an absolute name"}
    assert not (corpus.parent / "escape.jpg").exists() and not Path("/abs/path.jpg").exists()
    assert not any(p.name.endswith(".jpg") for p in out.rglob("*"))  # nothing extracted into --out


def test_smolvlm_document_layout_is_interleaved(curated):
    _, out, counts = curated
    assert counts["docs"]["read"] == 2 and counts["docs"]["kept"] == 2
    rows = {json.loads(r["meta"])["metadata"]: r for r in _rows(out) if r["source"] == "docs"}
    d1 = rows['{"url": "a"}']
    assert d1["text"] == "First paragraph of the document.\n\n<image>\n\nA paragraph after the figure."
    assert len(d1["media"]) == 1 and ".1.image.jpeg" in d1["media"][0]["uri"]
    assert rows['{"url": "b"}']["text"].startswith("<image>\n\n")


def test_obelics_documents_keep_their_order(curated):
    _, out, counts = curated
    assert counts["obelics"]["read"] == 3 and counts["obelics"]["kept"] == 2
    texts = sorted(r["text"] for r in _rows(out) if r["source"] == "obelics")
    assert texts == ["<image>\n\nText after an image.", "Intro text.\n\n<image>\n\nOutro text."]
    assert list(_reasons(out, "obelics").values()) == [("read", "empty_document")]


def test_ids_are_stable_across_runs_chunkings_and_engines(corpus, curated, tmp_path, ray_session):
    _, out, _ = curated
    first = sorted((r["source"], r["id"]) for r in _rows(out))
    again = tmp_path / "again"
    _curate(_recipe(corpus, SOURCES.replace("chunk_size: 2", "chunk_size: 1")), again)
    assert sorted((r["source"], r["id"]) for r in _rows(again)) == first
    on_ray = tmp_path / "ray"
    _curate(_recipe(corpus, SOURCES), on_ray, engine="ray")
    a, b = pads.dataset(out / "data").to_table(), pads.dataset(on_ray / "data").to_table()
    assert a.equals(b)  # the same manifest, row for row
    assert sorted((r["id"], r["reason"]) for r in _ledger(out)) == sorted((r["id"], r["reason"]) for r in _ledger(on_ray))


def test_container_refs_resolve_through_one_resolver(curated):
    from media.refs import ref_location, ref_source, thumbnail

    corpus, out, _ = curated
    row = next(r for r in _rows(out) if r["source"] == "wds")
    ref = row["media"][0]
    data = ref_source(ref)
    assert isinstance(data, bytes) and data[:2] == b"\xff\xd8"
    assert ref_location(ref) == str(corpus / "wds" / "shard-000000.tar")
    assert thumbnail(ref, 32).size[0] <= 32
    from media.containers import parquet_uri

    cell = {"uri": parquet_uri(str(corpus / "cauldron.parquet"), 1, "images", 1), "kind": "image"}
    assert ref_source(cell)[:2] == b"\xff\xd8"


def test_torch_reader_and_tokens_read_tar_members(curated):
    from manifests.torch_dataset import ManifestIterableDataset

    _, out, _ = curated
    ds = ManifestIterableDataset(open_manifest(out))
    sample = next(s for s in ds if s["source"] == "wds")
    assert sample["images"][0].size == (96, 72)


def test_unknown_format_and_missing_column_are_one_line_exit_2(corpus, capsys):
    bad = corpus / "bad_format.yaml"
    bad.write_text("sources:\n  - {name: x, kind: image_text, path: llava.json, format: llavaa}\n")
    assert cli_main(["curate", str(bad), "--out", str(corpus / "o1"), "--engine", "local", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sources[0].format" in err and "llavaa" in err and "Traceback" not in err
    missing = corpus / "missing_col.yaml"
    missing.write_text("sources:\n  - {name: x, kind: image_text, path: cauldron.parquet, format: cauldron, "
                       "image_column: pictures}\n")
    assert cli_main(["curate", str(missing), "--out", str(corpus / "o2"), "--engine", "local", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sources[0].image_column" in err and "pictures" in err


def test_decontaminate_against_a_cauldron_set_and_a_shard(corpus, tmp_path):
    """Eval sets in the new formats go through the same readers."""
    recipe = _recipe(corpus, "  - {name: wds, kind: image_text, path: \"wds/shard-{000000..000001}.tar\"}\n")
    text = recipe.read_text() + "decontaminate: [cauldron_saved, wds/shard-000001.tar]\n"
    recipe.write_text(text)
    out = tmp_path / "dc"
    _curate(recipe, out)
    reasons = [r["reason"] for r in _ledger(out)]
    # every image of the shards is in one of the two sets (images 0-3 and 5 in the Cauldron rows, 3-5 in the shard)
    assert len(reasons) == 6 and set(reasons) == {"contaminated:cauldron_saved", "contaminated:shard-000001.tar"}
