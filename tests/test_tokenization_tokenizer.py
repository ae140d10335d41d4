"""Base tokenizer (load / train / save) and learned vs string positional tokens."""
from __future__ import annotations

import pyarrow as pa
import pytest

import tokenization
from manifests.errors import UserError
from tokenization.base_tokenizer import load_tokenizer, manifest_texts, resolve_tokenizer, save_tokenizer, train_bpe
from tokenization.counting import Counter, pretoken_count

CORPUS = [
    "A photo of a cat sitting on a red sofa next to the window.",
    "The chart shows revenue growth of 12% between 2019 and 2023.",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software.",
    "Question: what colour is the bus? Answer: yellow.",
] * 50


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(CORPUS, vocab_size=400, min_frequency=2)


def test_trained_bpe_is_byte_level(bpe):
    assert 300 <= bpe.get_vocab_size() <= 400
    enc = bpe.encode("naïve café 🙂", add_special_tokens=False)
    assert bpe.decode(enc.ids) == "naïve café 🙂"  # any text round-trips through bytes
    assert bpe.token_to_id("<end_of_utterance>") is not None


def test_learned_markers_are_single_ids(bpe):
    s = tokenization.get_strategy("smolvlm-256m", positional="learned")
    tok = s.build_tokenizer(bpe)
    assert bpe.token_to_id("<row_1_col_1>") is None  # the base is left untouched
    n = s.max_grid_side
    markers = [f"<row_{r}_col_{c}>" for r in range(1, n + 1) for c in range(1, n + 1)]
    ids = set()
    for t in markers + ["<global-img>", "<fake_token_around_image>", "<image>"]:
        enc = tok.encode(t, add_special_tokens=False).ids
        assert len(enc) == 1 and enc[0] == tok.token_to_id(t)
        ids.add(enc[0])
    assert len(ids) == len(markers) + 3
    # a grid beyond 6x6 gets its markers too when the strategy can produce it
    big = s.replace(longest_edge=4096)
    assert big.max_grid_side == 8
    assert len(big.build_tokenizer(bpe).encode("<row_8_col_7>", add_special_tokens=False).ids) == 1


def test_string_markers_are_several_pieces(bpe):
    s = tokenization.get_strategy("smolvlm-256m", positional="string")
    tok = s.build_tokenizer(bpe)
    for t in ["<row_1_col_1>", "<row_4_col_3>", "<global-img>"]:
        assert len(tok.encode(t, add_special_tokens=False).ids) > 3
    for t in ["<fake_token_around_image>", "<image>"]:  # these stay one id in every style
        assert len(tok.encode(t, add_special_tokens=False).ids) == 1


def test_exact_sequence_lengths(bpe):
    s = tokenization.get_strategy("smolvlm-256m")
    exact = s.sequence_lengths(3, 4, tokenizer=bpe)
    assert exact["learned"] == len(s.build_tokenizer(bpe).encode(s.image_prompt(3, 4), add_special_tokens=False).ids)
    string = s.replace(positional="string")
    assert exact["string"] == len(string.build_tokenizer(bpe).encode(string.image_prompt(3, 4), add_special_tokens=False).ids)
    assert exact["none"] < exact["learned"] < exact["string"]
    assert Counter(s, bpe).exact and not Counter(s).exact


def test_pretoken_estimate():
    assert pretoken_count("<row_1_col_2>") == 9
    assert pretoken_count("<global-img>") == 5
    assert pretoken_count("\n\n") == 1


def test_save_and_load(tmp_path, bpe):
    path = save_tokenizer(bpe, tmp_path / "out")
    assert path == tmp_path / "out" / "tokenizer.json"
    again = load_tokenizer(path)
    assert again.encode("the cat").ids == bpe.encode("the cat").ids
    assert load_tokenizer(tmp_path / "out").get_vocab_size() == bpe.get_vocab_size()


def test_bad_tokenizer_files(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"model": {"type": "BPE", "vocab": 5}')
    with pytest.raises(UserError, match="not a valid tokenizer.json") as err:
        load_tokenizer(bad)
    assert err.value.field == "tokenizer"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(UserError, match="no such file"):
        load_tokenizer(tmp_path / "missing" / "tok.json")
    with pytest.raises(UserError, match="at least 300"):
        train_bpe(CORPUS, vocab_size=50)


def test_resolve_trains_once_and_reuses(tmp_path):
    table = pa.table({"text": ["hello world"] * 20 + [None], "turns": [[{"role": "user", "content": "what is this?"}]] * 21})
    assert sorted(set(manifest_texts(table))) == ["hello world", "what is this?"]
    tok = resolve_tokenizer(None, table, tmp_path, vocab_size=300)
    assert (tmp_path / "tokenizer.json").is_file()
    again = resolve_tokenizer(None, pa.table({"text": ["something else entirely"]}), tmp_path)
    assert again.get_vocab() == tok.get_vocab()  # loaded from the saved file, not retrained
    with pytest.raises(UserError):
        resolve_tokenizer(None, None)


@pytest.mark.parametrize("style", ["learned", "string", "none"])
def test_piecewise_counts_are_exact_with_a_tokenizer(bpe, style):
    s = tokenization.get_strategy("smolvlm-256m", positional=style, image_intro_text="Here is a picture:\n")
    counter = Counter(s, bpe)
    table = counter.image_table()
    for r, c in [(0, 0), (1, 1), (1, 4), (3, 2), (4, 4)]:
        whole = len(counter.tokenizer.encode(s.image_prompt(r, c), add_special_tokens=False).ids)
        assert counter.block_tokens(r, c) == whole == table[r, c]
