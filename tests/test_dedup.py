"""Dedup building blocks on small generated data: config, pHash, MinHash, LSH, union-find, operators."""
from __future__ import annotations

import io
import random

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pydantic import ValidationError

from curation.dedup import (
    DedupConfig,
    UnionFind,
    candidate_probability,
    chroma_moments,
    compute_signatures,
    connected_components,
    estimated_jaccard,
    hamming,
    jaccard_pairs,
    lsh_candidates,
    lsh_params,
    minhash_signatures,
    normalize_text,
    phash_images,
    phash_images_detail,
    shingle_sets,
    signature_columns,
    signature_operators,
)
from curation.dedup.minhash import EMPTY, expand_pairs
from curation.dedup.phash import color_thumb
from manifests.schema import MEDIA_TYPE, TURN_TYPE, build_schema, conform


# ----------------------------------------------------------------------------- helpers


def photo(seed: int, size=(320, 240)) -> Image.Image:
    """A smooth random 'photo': low-frequency structure pHash can see."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def words_text(rng: random.Random, n: int, vocab: int = 5000) -> str:
    return " ".join(f"w{rng.randrange(vocab)}" for _ in range(n))


def ref_shingles(text: str, n: int = 5) -> set[str]:
    """The documented tokenisation, written independently: lower(), split(), word n-grams."""
    w = text.lower().split()
    if not w:
        return set()
    if len(w) < n:
        return {" ".join(w)}
    return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


# ----------------------------------------------------------------------------- config


def test_config_defaults_and_derived_bands():
    cfg = DedupConfig()
    assert cfg.exact_cfg.bytes and cfg.exact_cfg.pixels and cfg.exact_cfg.text
    assert cfg.text.bands * cfg.text.rows <= cfg.text.num_perm
    # a pair exactly at the threshold is a candidate with high probability (verification removes the rest)
    assert candidate_probability(cfg.text.threshold, cfg.text.bands, cfg.text.rows) >= 0.995
    assert cfg.image.bands == cfg.image.max_distance + 1
    assert DedupConfig.model_validate({"exact": False}).exact_cfg.pixels is False
    low = DedupConfig.model_validate({"text": {"threshold": 0.5}}).text
    assert (low.bands, low.rows) == lsh_params(0.5, 128)
    pinned = DedupConfig.model_validate({"text": {"bands": 16}}).text
    assert (pinned.bands, pinned.rows) == (16, 8)


def test_config_rejects_unknown_and_bad_fields():
    with pytest.raises(ValidationError, match="extra"):
        DedupConfig.model_validate({"imag": {}})
    with pytest.raises(ValidationError):
        DedupConfig.model_validate({"text": {"threshold": 1.5}})
    with pytest.raises(ValidationError, match="exceeds"):
        DedupConfig.model_validate({"text": {"bands": 64, "rows": 4}})
    with pytest.raises(ValidationError, match="unique"):
        DedupConfig.model_validate({"decontaminate": ["a/mmbench", "b/mmbench"]})


def test_lsh_params_without_verification_balances_errors():
    b, r = lsh_params(0.8, 128, favour_recall=False)
    assert b * r <= 128
    assert candidate_probability(0.95, b, r) > 0.99 and candidate_probability(0.5, b, r) < 0.05


# ----------------------------------------------------------------------------- pHash


def test_phash_matches_imagehash_definition():
    imagehash = pytest.importorskip("imagehash")
    imgs = [photo(s) for s in range(12)]
    ours = phash_images(imgs)
    ref = np.array([int(str(imagehash.phash(im)), 16) for im in imgs], dtype=np.uint64)
    # same algorithm; the only difference is the reduce-before-Lanczos of big inputs
    assert (hamming(ours, ref) <= 2).all()
    assert (hamming(ours, ref) == 0).mean() >= 0.5


def test_phash_robust_to_resize_and_recompression_but_not_flip():
    base = photo(3, (640, 480))
    variants = [
        base,
        base.resize((320, 240), Image.Resampling.LANCZOS),
        Image.open(io.BytesIO(encode(base, "JPEG", quality=40))),
        Image.open(io.BytesIO(encode(base, "WEBP", quality=60))),
        base.convert("L"),
    ]
    h = phash_images(variants)
    assert (hamming(h[1:], h[0]) <= 4).all()
    flipped = phash_images([base.transpose(Image.Transpose.FLIP_LEFT_RIGHT), base.rotate(90, expand=True)])
    # documented limitation: pHash is not invariant to flips and rotations
    assert (hamming(flipped, h[0]) > 12).all()
    other = phash_images([photo(s, (640, 480)) for s in range(100, 110)])
    assert (hamming(other, h[0]) > 10).all()


def test_phash_inputs_and_failures(tmp_path):
    img = photo(5)
    p = tmp_path / "a.jpg"
    img.save(p, quality=95)
    h, detail, ok = phash_images_detail([img, np.asarray(img), str(p), encode(img), b"not an image"])
    assert ok.tolist() == [True, True, True, True, False]
    assert (hamming(h[:4], h[0]) <= 2).all()
    assert h[4] == 0 and detail[4] == 0


def test_flat_images_have_no_detail():
    flats = [Image.new("RGB", (200, 100), c) for c in ((0, 0, 0), (255, 0, 0), (30, 200, 90))]
    _, detail, ok = phash_images_detail(flats + [photo(1)])
    assert ok.all()
    assert (detail[:3] < 1.0).all() and detail[3] > 10


def test_chroma_separates_recoloured_drawings_not_grey_copies():
    base = photo(9)
    arr = np.asarray(base).astype(np.int16)
    recoloured = Image.fromarray(np.clip(arr[..., [2, 0, 1]], 0, 255).astype(np.uint8))
    grey = base.convert("L").convert("RGB")
    m = chroma_moments(np.stack([color_thumb(x) for x in (base, recoloured, grey)]))
    assert np.hypot(*(m[0, :2] - m[1, :2])) > 6
    assert m[2, 2] < 0.1 and m[0, 2] > 1


# ----------------------------------------------------------------------------- MinHash


def test_shingles_follow_the_documented_tokenisation():
    texts = ["The quick  brown fox jumps over the lazy dog", "Short text", "", None,
             "Ünïcode\u00a0words\u2003split   on\tall whitespace like str.split does too ok"]
    sets = shingle_sets(texts)
    for t, s in zip(texts, sets):
        assert s.size == len(ref_shingles(t or ""))


def test_signature_of_a_text_does_not_depend_on_its_batch():
    rng = random.Random(0)
    texts = [words_text(rng, n) for n in (3, 40, 400, 4000)]
    together = minhash_signatures(texts)
    alone = np.stack([minhash_signatures([t])[0] for t in texts])
    assert np.array_equal(together, alone)
    assert together.dtype == np.uint32 and together.shape == (4, 128)
    assert (minhash_signatures(["", None]) == EMPTY).all()


def test_minhash_estimates_jaccard():
    rng = random.Random(1)
    base = [f"w{rng.randrange(50000)}" for _ in range(600)]
    texts, exact = [], []
    for frac in (0.0, 0.05, 0.1, 0.2, 0.4, 0.7):
        words = list(base)
        for i in rng.sample(range(len(words)), int(frac * len(words))):
            words[i] = f"x{rng.randrange(50000)}"
        texts.append(" ".join(words))
    sig = minhash_signatures([" ".join(base)] + texts, num_perm=256)
    ref0 = ref_shingles(" ".join(base))
    for i, t in enumerate(texts):
        r = ref_shingles(t)
        exact.append(len(r & ref0) / len(r | ref0))
    est = estimated_jaccard(np.repeat(sig[:1], len(texts), axis=0), sig[1:])
    assert np.abs(est - np.array(exact)).max() < 0.1


def test_char_ngrams_and_seeds():
    a, b = minhash_signatures(["abcdefghij", "abcdefghiK"], ngram=3, unit="char")
    assert 0.4 < (a == b).mean() < 1.0
    s1 = minhash_signatures(["some words here and there again"], seed=1)
    s2 = minhash_signatures(["some words here and there again"], seed=2)
    assert not np.array_equal(s1, s2)
    with pytest.raises(ValueError):
        minhash_signatures(["x"], unit="byte")


def test_jaccard_pairs_exact():
    texts = ["a b c d e f g h", "a b c d e f g x", "completely different words in here now"]
    sets = shingle_sets(texts, ngram=2)
    j = jaccard_pairs([sets[0], sets[0]], [sets[1], sets[2]])
    r0, r1 = ref_shingles(texts[0], 2), ref_shingles(texts[1], 2)
    assert j[0] == pytest.approx(len(r0 & r1) / len(r0 | r1))
    assert j[1] == 0


def test_lsh_candidates_find_near_duplicates():
    rng = random.Random(2)
    docs = [words_text(rng, 300) for _ in range(40)]
    near = docs[5].split()
    near[10] = "changed"
    docs.append(" ".join(near))
    sig = minhash_signatures(docs)
    pairs = lsh_candidates(sig, 21, 6)
    assert [5, 40] in pairs.tolist()
    assert len(pairs) < 5  # random documents do not collide


def test_normalize_text():
    assert normalize_text("  Hello\u00a0WORLD\n\tﬁne ") == "hello world fine"


# ----------------------------------------------------------------------------- pairs / union-find


def test_expand_pairs():
    p, q = expand_pairs(np.array([0, 5, 9]), np.array([3, 1, 4]))
    got = sorted(zip(p.tolist(), q.tolist()))
    want = sorted([(0, 1), (0, 2), (1, 2)] + [(9 + i, 9 + j) for i in range(4) for j in range(i + 1, 4)])
    assert got == want


def test_connected_components_matches_reference():
    rng = np.random.default_rng(0)
    for n, m in ((50, 30), (500, 450), (2000, 3000)):
        u, v = rng.integers(0, n, m), rng.integers(0, n, m)
        labels = connected_components(u, v, n)
        # reference: naive union-find
        parent = list(range(n))

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for a, b in zip(u.tolist(), v.tolist()):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        ref = np.array([find(i) for i in range(n)])
        assert np.array_equal(labels, ref)


def test_blocks_keep_whole_files_and_the_order_rows_came_in(tmp_path, monkeypatch):
    from curation.dedup import blocks
    from curation.dedup.blocks import Blocks, block_starts

    # whole files per block, a block closed once it holds at least block_rows nodes
    files = [(0, 3), (3, 1), (4, 6), (10, 2), (12, 0), (12, 5)]
    assert block_starts(files, 4).tolist() == [0, 4, 10]
    assert block_starts(files, 100).tolist() == [0]
    monkeypatch.setattr(blocks, "BUFFER_ROWS", 4)  # several files per block
    b = Blocks(tmp_path / "b", np.array([0, 4, 10]), pa.schema([("k", pa.int64()), ("v", pa.int64())]))
    for lo in range(0, 17, 3):
        k = np.arange(lo, min(lo + 3, 17))[::-1].copy()
        b.add(pa.table({"k": k, "v": k * 10}), k)
    got = [b.read(j).column("k").to_pylist() for j in range(3)]
    assert got == [[2, 1, 0, 3], [5, 4, 8, 7, 6, 9], [11, 10, 14, 13, 12, 16, 15]]
    assert b.rows.tolist() == [4, 6, 7]
    assert b.runs(10) == [[0, 1], [2]] and b.runs(1) == [[0], [1], [2]] and b.runs(100) == [[0, 1, 2]]
    b.replace(1, pa.table({"k": [4], "v": [0]}))
    assert b.read(1).to_pylist() == [{"k": 4, "v": 0}] and b.read(2).num_rows == 7


def test_out_of_core_components_match_the_in_memory_labels(tmp_path, monkeypatch):
    """Large-star/small-star rounds over node blocks give every node in an edge the smallest node of its
    component, as connected_components does: random graphs, long chains (many rounds), self-loops, pairs
    given twice and in both orientations, one block or many, with write buffers that flush mid-step."""
    from curation.dedup import blocks
    from curation.dedup.blocks import Blocks
    from curation.dedup.components import star_components

    monkeypatch.setattr(blocks, "BUFFER_ROWS", 37)
    schema = pa.schema([("a", pa.int64()), ("b", pa.int64())])
    rng = np.random.default_rng(7)
    for trial in range(24):
        n = int(rng.integers(2, 300))
        if trial % 4 == 0:  # a chain through a random order of the nodes
            perm = rng.permutation(n)
            u, v = perm[:-1], perm[1:]
        else:
            m = int(rng.integers(0, 2 * n))
            u, v = rng.integers(0, n, m), rng.integers(0, n, m)
        u, v = np.concatenate((u, v[:5])), np.concatenate((v, u[:5]))  # some pairs again, reversed
        width = int(rng.integers(1, n + 1))
        edges = Blocks(tmp_path / f"e{trial}", np.arange(0, n, width, dtype=np.int64), schema)
        edges.add(pa.table({"a": u.astype(np.int64), "b": v.astype(np.int64)}), np.minimum(u, v))
        labels = star_components(edges, tmp_path / f"w{trial}")
        node = np.concatenate([labels.read(k).column("node").to_numpy() for k in range(len(labels))])
        label = np.concatenate([labels.read(k).column("label").to_numpy() for k in range(len(labels))])
        linked = u != v
        assert np.array_equal(node, np.unique(np.concatenate((u[linked], v[linked])))), trial
        assert np.array_equal(label, connected_components(u, v, n)[node]), trial


def test_union_find_on_sparse_keys():
    uf = UnionFind()
    uf.union([10**12, 7], [5, 10**12])
    uf.union(99, 100)
    assert uf.find([7, 5, 10**12, 100, 42]).tolist() == [5, 5, 5, 99, 42]
    uf.union(100, 5)
    assert uf.find([99]).tolist() == [5]
    keys, roots = uf.components()
    assert set(keys.tolist()) == {5, 7, 99, 100, 10**12}


# ----------------------------------------------------------------------------- operators


def rows_table(media: list, texts: list, modality: list) -> pa.Table:
    n = len(texts)
    return pa.table(
        {
            "id": [f"r{i:03d}" for i in range(n)],
            "source": ["gen"] * n,
            "modality": modality,
            "media": pa.array(media, pa.list_(MEDIA_TYPE)),
            "text": pa.array(texts, pa.string()),
            "turns": pa.nulls(n, pa.list_(TURN_TYPE)),
            "meta": pa.nulls(n, pa.string()),
        }
    )


def test_signature_operators_fill_declared_columns(tmp_path):
    img = photo(7)
    png = tmp_path / "a.png"
    img.save(png)
    bmp = tmp_path / "a.bmp"
    img.save(bmp)
    media = [
        [{"uri": str(png), "kind": "image"}],
        [{"uri": str(bmp), "kind": "image"}],
        [{"bytes": encode(img, "PNG"), "kind": "image"}],
        [{"uri": str(tmp_path / "missing.png"), "kind": "image"}],
        None,
    ]
    t = rows_table(media, [None, None, "caption", None, "Some text"], ["image", "image", "image_text", "image", "text"])
    ops = signature_operators({"text": {"num_perm": 64}})
    for op in ops:
        t = op(t)
    declared = signature_columns()
    assert set(declared) <= set(t.column_names)
    # the operators' output conforms to a manifest schema that declares their columns
    conform(t, build_schema(declared))
    pix = t.column("sig_pixels").to_pylist()
    assert pix[0] == pix[1] == pix[2] and pix[3] is None  # PNG and BMP decode to the same pixels
    b = t.column("sig_bytes").to_pylist()
    assert b[0] == b[2] and b[0] != b[1]  # embedded bytes hash like the file they came from
    assert t.column("sig_phash").to_pylist()[0] == t.column("sig_phash").to_pylist()[1]
    assert t.column("sig_minhash").to_pylist()[0] is None
    assert len(t.column("sig_minhash").to_pylist()[4]) == 64
    assert t.column("sig_area").to_pylist()[0] == 320 * 240


def test_text_signature_uses_turns():
    n = 2
    t = pa.table(
        {
            "id": ["a", "b"],
            "modality": ["text", "text"],
            "text": pa.array([None, "user says hello there\nassistant answers kindly"], pa.string()),
            "turns": pa.array(
                [[{"role": "user", "content": "user says hello there"}, {"role": "assistant", "content": "assistant answers kindly"}], None],
                pa.list_(TURN_TYPE),
            ),
        }
    )
    t = compute_signatures(t, DedupConfig())
    assert t.column("sig_text")[0] == t.column("sig_text")[1]
    assert t.column("sig_textlen").to_pylist()[0] > 0
    assert n == t.num_rows
