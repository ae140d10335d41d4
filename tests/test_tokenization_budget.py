"""Token budgets from manifest metadata: per-row numbers agree with the single-item plans."""
from __future__ import annotations

import logging
import math

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

import tokenization
from manifests.reader import open_manifest
from manifests.schema import MEDIA_TYPE, TURN_TYPE
from tests.manifest_fixtures import write_manifest
from tokenization.base_tokenizer import train_bpe

SCHEMA = pa.schema([("media", pa.list_(MEDIA_TYPE)), ("text", pa.string()), ("turns", pa.list_(TURN_TYPE))])


def img(w, h, kind="image"):
    return {"kind": kind, "width": w, "height": h}


def vid(w, h, duration, fps, frames):
    return {"kind": "video", "width": w, "height": h, "duration": duration, "fps": fps, "frames": frames}


ROWS = [
    {"media": [img(1920, 1080)], "text": "a cat", "turns": None},
    {"media": [img(640, 427), img(100, 100)], "text": None, "turns": [{"role": "user", "content": "compare"}, {"role": "assistant", "content": "they differ"}]},
    {"media": [img(1700, 2200, "page"), img(1700, 2200, "page"), img(2200, 1700, "page")], "text": "x" * 1001, "turns": None},
    {"media": [vid(1280, 720, 30.0, 25.0, 750)], "text": "what happens?", "turns": None},
    {"media": [vid(640, 360, 600.0, 30.0, 18000)], "text": None, "turns": None},
    {"media": None, "text": "just text, héllo", "turns": None},
    {"media": [], "text": "", "turns": []},
]


@pytest.fixture
def table():
    return pa.Table.from_pylist(ROWS, schema=SCHEMA)


def expected_visual(s, row, tokenizer=None):
    total = 0
    for m in row["media"] or []:
        if m["kind"] == "video":
            total += s.plan_video(m["frames"], m["fps"], m["duration"]).seq_len if tokenizer is None else \
                tokenization.counting.Counter(s, tokenizer).count(s.plan_video(m["frames"], m["fps"], m["duration"]).prompt)
        else:
            p = s.plan_image(m["width"], m["height"])
            total += s.sequence_length(p.rows, p.cols, tokenizer)
    return total


@pytest.mark.parametrize("preset", ["smolvlm-256m", "smolvlm-2.2b"])
@pytest.mark.parametrize("overrides", [{}, {"positional": "string"}, {"positional": "none", "do_split": False},
                                       {"frame_averaging": 4, "media_intro": False}, {"video_max_frames": 8, "video_fps": 2}])
def test_visual_tokens_equal_single_item_plans(table, preset, overrides):
    s = tokenization.get_strategy(preset, **overrides)
    out = tokenization.token_counts(table, s)
    assert out.column_names == ["tokens_visual", "tokens_text", "tokens"]
    assert all(out.schema.field(c).type == pa.int64() for c in out.column_names)
    assert out.column("tokens_visual").to_pylist() == [expected_visual(s, r) for r in ROWS]
    tv, tt, t = (out.column(c).to_numpy() for c in out.column_names)
    assert np.array_equal(t, tv + tt)


def test_text_estimate(table):
    s = tokenization.get_strategy("smolvlm-256m")
    text = tokenization.token_counts(table, s).column("tokens_text").to_pylist()
    bpt, over = s.text_bytes_per_token, s.turn_overhead_tokens
    assert text[0] == math.ceil(5 / bpt)
    assert text[1] == math.ceil(7 / bpt) + math.ceil(11 / bpt) + 2 * over
    assert text[2] == math.ceil(1001 / bpt)
    assert text[5] == math.ceil(len("just text, héllo".encode()) / bpt)  # bytes, not characters
    assert text[6] == 0
    sys_on = s.replace(system_prompt=True)
    with_sys = tokenization.token_counts(table, sys_on).column("tokens_text").to_pylist()
    extra = tokenization.counting.Counter(sys_on).count(sys_on.system_prompt_text) + over
    assert [b - a for a, b in zip(text, with_sys)] == [extra] * len(ROWS)


def test_exact_counts_with_a_tokenizer(table):
    bpe = train_bpe(["a cat compare they differ what happens? just text, héllo"] * 20, vocab_size=300)
    s = tokenization.get_strategy("smolvlm-2.2b")
    out = tokenization.token_counts(table, s, tokenizer=bpe)
    tok = s.build_tokenizer(bpe)
    n = lambda t: len(tok.encode(t, add_special_tokens=False).ids)  # noqa: E731
    text = out.column("tokens_text").to_pylist()
    assert text[0] == n("a cat")
    assert text[1] == n("compare") + n("they differ") + 2 * s.turn_overhead_tokens
    assert text[5] == n("just text, héllo")
    assert out.column("tokens_visual").to_pylist() == [expected_visual(s, r, bpe) for r in ROWS]


def test_polars_inputs_and_slices(table):
    s = tokenization.get_strategy("idefics3")
    ref = tokenization.token_counts(table, s)
    df = pl.from_arrow(table)
    for data in (df, df.lazy()):
        out = tokenization.token_counts(data, s)
        assert isinstance(out, pl.DataFrame)
        assert out["tokens"].to_list() == ref.column("tokens").to_pylist()
    sliced = tokenization.token_counts(table.slice(1, 4), s)
    assert sliced.column("tokens").to_pylist() == ref.column("tokens").to_pylist()[1:5]
    chunked = pa.concat_tables([table.slice(0, 3), table.slice(3)])
    assert tokenization.token_counts(chunked, s).column("tokens").to_pylist() == ref.column("tokens").to_pylist()
    added = tokenization.add_tokens_column(df.lazy(), s)
    assert added.columns == ["media", "text", "turns", "tokens_visual", "tokens_text", "tokens"]


def test_missing_sizes_count_as_one_tile_and_warn(caplog):
    s = tokenization.get_strategy("smolvlm-256m")
    t = pa.Table.from_pylist([{"media": [{"kind": "image", "width": None, "height": 10}], "text": None, "turns": None}], schema=SCHEMA)
    with caplog.at_level(logging.WARNING):
        out = tokenization.token_counts(t, s)
    assert out.column("tokens_visual").to_pylist() == [s.sequence_length(0, 0)]
    assert "lack a usable size" in caplog.text


def test_empty_and_text_only_tables():
    s = tokenization.get_strategy("smolvlm-256m")
    empty = tokenization.token_counts(SCHEMA.empty_table(), s)
    assert empty.num_rows == 0 and empty.column_names == ["tokens_visual", "tokens_text", "tokens"]
    only = tokenization.token_counts(pa.table({"text": ["abcd", None]}), s)
    assert only.column("tokens").to_pylist() == [1, 0]


def test_add_tokens_column_to_a_manifest(tmp_path):
    src = write_manifest(tmp_path / "m", tmp_path / "media")
    s = tokenization.get_strategy("smolvlm-256m")
    table = tokenization.add_tokens_column(src, s, out_dir=tmp_path / "out")
    assert table.column_names.count("tokens") == 1  # the fixture's own `tokens` column was replaced
    out = open_manifest(tmp_path / "out")
    got = out.table()
    assert got.num_rows == open_manifest(src).num_rows
    for c in ("tokens_visual", "tokens_text", "tokens"):
        assert got.schema.field(c).type == pa.int64()
    assert got.column("tokens").to_pylist() == tokenization.token_counts(src, s).column("tokens").to_pylist()
    assert out.ledger().num_rows == open_manifest(src).ledger().num_rows
    assert out.info["extra"]["tokenization"] == s.to_dict()
    pairs = got.filter(pa.compute.equal(got.column("modality"), "image_text"))
    sizes = [(48, 32), (20, 60), (16, 16)]
    assert pairs.column("tokens_visual").to_pylist() == [sum(s.plan_image(w, h).seq_len for w, h in sizes)]
    with pytest.raises(tokenization.strategy.UserError):
        tokenization.add_tokens_column(got, s, out_dir=tmp_path / "again")


def test_long_videos_count_like_their_plans():
    s = tokenization.get_strategy("smolvlm-256m")
    vids = [(5.0, 25.0), (3599.0, 30.0), (36001.0, 25.0), (90061.0, 24.0), (200000.0, 1.0)]
    t = pa.Table.from_pylist(
        [{"media": [vid(64, 48, d, f, int(d * f))], "text": None, "turns": None} for d, f in vids], schema=SCHEMA
    )
    got = tokenization.token_counts(t, s).column("tokens_visual").to_pylist()
    assert got == [s.plan_video(int(d * f), f, d).seq_len for d, f in vids]


def test_manifest_records_the_tokenizer_fingerprint(tmp_path):
    src = write_manifest(tmp_path / "m", tmp_path / "media")
    s = tokenization.get_strategy("idefics3")
    bpe = train_bpe(["a caption with some words"] * 10, vocab_size=300)
    tokenization.add_tokens_column(src, s, bpe, out_dir=tmp_path / "exact")
    recorded = open_manifest(tmp_path / "exact").info["extra"]["tokenization"]
    assert recorded != s.to_dict() and len(recorded.pop("tokenizer")) == 16 and recorded == s.to_dict()
