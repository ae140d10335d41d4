"""`smolcurate tokens` on synthetic files and a small manifest."""
from __future__ import annotations

import json

import pytest
from PIL import Image

import tokenization
from manifests.cli import main
from tests.manifest_fixtures import write_manifest
from tokenization.commands import histogram


def run(capsys, *argv):
    rc = main(["tokens", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    Image.new("RGB", (1920, 1080), "red").save(d / "wide.png")
    Image.new("RGBA", (300, 900), (0, 0, 0, 0)).save(d / "tall.png")
    (d / "notes.txt").write_text("not media")
    return d


def test_plans_images_as_json(capsys, images):
    rc, out, _ = run(capsys, images, "--preset", "smolvlm-2.2b", "--set", "positional=none", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["strategy"]["positional"] == "none" and d["strategy"]["tile"] == 384
    by = {f["path"].rsplit("/", 1)[-1]: f for f in d["files"]}
    assert set(by) == {"wide.png", "tall.png"}  # the folder was walked, the .txt skipped
    s = tokenization.get_strategy("smolvlm-2.2b", positional="none")
    for name, (w, h) in {"wide.png": (1920, 1080), "tall.png": (300, 900)}.items():
        p = s.plan_image(w, h)
        f = by[name]
        assert (f["rows"], f["cols"], f["tiles"], f["visual_tokens"], f["seq_len"]) == (p.rows, p.cols, p.tiles, p.image_tokens, p.seq_len)
        assert tuple(f["resized"]) == p.resized and tuple(f["size"]) == p.size
        assert f["prompt_chars"] == len(s.image_prompt(p.rows, p.cols))


def test_plans_images_as_text(capsys, images):
    rc, out, _ = run(capsys, images / "wide.png")
    assert rc == 0
    assert "image 1920x1080 -> resized 2048x1152, 2048x1536, 3x4 grid, 13 tiles, 832 image tokens" in out
    assert "<image>*64" in out  # long prompts are shown compacted


def test_bad_inputs_exit_2(capsys, images, tmp_path):
    rc, _, err = run(capsys, images, "--preset", "smolvlm-9b")
    assert rc == 2 and err.strip().count("\n") == 0 and "unknown preset" in err
    rc, _, err = run(capsys, images, "--set", "pixel_shuffle=5")
    assert rc == 2 and "pixel_shuffle" in err
    rc, _, err = run(capsys)
    assert rc == 2
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    rc, out, err = run(capsys, broken, images / "wide.png")
    assert rc == 2 and "broken.jpg" in err and "wide.png" in out  # the good file is still planned
    bad_tok = tmp_path / "tok.json"
    bad_tok.write_text("{")
    rc, _, err = run(capsys, images, "--tokenizer", bad_tok)
    assert rc == 2 and "not a valid tokenizer.json" in err
    rc, out, err = run(capsys, images, "--train-tokenizer", tmp_path / "tok-out")
    assert rc == 2 and out == "" and err.strip() == "smolcurate: error: --train-tokenizer: needs --manifest to train on"
    assert not (tmp_path / "tok-out").exists()


def test_manifest_totals_and_histogram(capsys, tmp_path):
    m = write_manifest(tmp_path / "m", tmp_path / "media")
    rc, out, _ = run(capsys, "--manifest", m, "--json")
    assert rc == 0
    d = json.loads(out)
    counts = tokenization.token_counts(m, tokenization.get_strategy("smolvlm-256m"))
    assert d["rows"] == counts.num_rows == 5
    assert d["totals"]["tokens"] == sum(counts.column("tokens").to_pylist())
    assert sum(v["rows"] for v in d["by_modality"].values()) == 5
    assert sum(b["rows"] for b in d["histogram"]) == 5
    rc, out, _ = run(capsys, "--manifest", m)
    assert rc == 0 and "tokens per row" in out and "image_text" in out


def test_manifest_with_trained_tokenizer(capsys, tmp_path):
    m = write_manifest(tmp_path / "m", tmp_path / "media")
    rc, out, err = run(capsys, "--manifest", m, "--train-tokenizer", tmp_path / "tok", "--vocab-size", "300", "--json")
    assert rc == 0 and (tmp_path / "tok" / "tokenizer.json").is_file()
    assert json.loads(out)["exact"] is True and "trained" in err
    rc, out, _ = run(capsys, "--manifest", m, "--tokenizer", tmp_path / "tok" / "tokenizer.json", "--json")
    assert rc == 0 and json.loads(out)["exact"] is True


def test_histogram_buckets():
    h = histogram([0, 1, 2, 3, 4, 1000])
    assert [(b["lo"], b["hi"], b["rows"]) for b in h if b["rows"]] == [(0, 1, 1), (1, 2, 1), (2, 4, 2), (4, 8, 1), (512, 1024, 1)]
    assert sum(b["rows"] for b in h) == 6
