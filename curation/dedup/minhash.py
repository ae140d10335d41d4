"""MinHash signatures of text, computed for a whole batch with numpy.

Three steps, each a handful of array passes over the batch rather than a
Python loop per shingle or per hash:

1. **Shingles.** The batch is lower-cased, joined and viewed as one code-unit
   array (UTF-8 bytes for word n-grams, UTF-32 code points for character
   n-grams). A polynomial prefix hash over that array gives the hash of any
   span in O(1) (``(P[end] - P[start]) * B^-start`` in wrapping uint64
   arithmetic), so every word, then every word n-gram (a polynomial over the
   word hashes), or every character n-gram is hashed at once.
2. **One-permutation MinHash.** Instead of ``num_perm`` hash functions per
   shingle (``O(shingles x num_perm)``), each 64-bit shingle hash picks one of
   ``num_perm`` bins with its high bits and competes for the bin's minimum with
   its low bits (Li, Owen & Zhang 2012). Empty bins are filled by *optimal
   densification* (Shrivastava 2017): bin ``j`` probes the bins named by a fixed
   hash sequence of ``(j, attempt)`` -- the same for every document, so two
   documents agree on a filled bin with probability equal to their Jaccard
   similarity, as with classic MinHash. Cost: ``O(shingles)`` per batch.
3. **Bands.** Rows of each band are folded into one 64-bit bucket key.

Tokenisation (shared with the exact-Jaccard check and documented in
docs/dedup.md): text is lower-cased (``str.lower``); words are maximal runs of
characters other than ASCII whitespace; a document with fewer words than the
n-gram size has one shingle made of all its words. Character n-grams run over
the code points of the text with whitespace runs collapsed to one space.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Sequence

import numpy as np

U64 = np.uint64
EMPTY = np.uint32(0xFFFFFFFF)  # an empty bin; real values are capped one below it

_B = U64(0x100000001B3)  # odd polynomial base: invertible mod 2**64
_B_INV = U64(pow(0x100000001B3, -1, 2**64))
_GRAM = U64(0x9E3779B97F4A7C15)

_SEP = "\x1e"

#: _LOW_BYTES[k] keeps the k lowest bytes of a little-endian uint64 load
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [0xFFFFFFFFFFFFFFFF], dtype=np.uint64)

_POW = np.ones(1, dtype=np.uint64)
_IPOW = np.ones(1, dtype=np.uint64)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads polynomial hashes over all 64 bits (wrapping uint64).

    Computed in place on one copy with one scratch array: on millions of values, fresh temporaries per
    step cost more (page faults) than the arithmetic.
    """
    x = np.array(x, dtype=np.uint64)
    tmp = np.empty_like(x)
    with np.errstate(over="ignore"):
        for shift, mult in ((30, U64(0xBF58476D1CE4E5B9)), (27, U64(0x94D049BB133111EB)), (31, None)):
            np.right_shift(x, U64(shift), out=tmp)
            np.bitwise_xor(x, tmp, out=x)
            if mult is not None:
                np.multiply(x, mult, out=x)
    return x if x.ndim else x[()]


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """B**i and B**-i for i < n, cached and grown geometrically across batches."""
    global _POW, _IPOW
    if _POW.size < n:
        size = max(n, 2 * _POW.size, 1 << 16)
        with np.errstate(over="ignore"):
            p = np.full(size, _B, dtype=np.uint64)
            p[0] = 1
            _POW = np.cumprod(p, dtype=np.uint64)
            p = np.full(size, _B_INV, dtype=np.uint64)
            p[0] = 1
            _IPOW = np.cumprod(p, dtype=np.uint64)
    return _POW[:n], _IPOW[:n]


def normalize_text(text: str) -> str:
    """The text an exact-text hash sees: NFKC, case-folded, whitespace runs collapsed, trimmed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _span_hashes(units: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hashes of the spans units[starts:ends] (same spans -> same hash, wherever they sit)."""
    pw, ipw = _powers(units.size + 1)
    with np.errstate(over="ignore"):
        vals = units.astype(np.uint64)
        vals += U64(1)
        vals *= pw[: units.size]
        prefix = np.empty(units.size + 1, dtype=np.uint64)
        prefix[0] = 0
        np.cumsum(vals, out=prefix[1:])
        h = (prefix[ends] - prefix[starts]) * ipw[starts]
        h ^= (ends - starts).astype(np.uint64) << U64(56)
    return mix64(h)


def _whitespace(units: np.ndarray, unicode: bool) -> np.ndarray:
    """Bytes str.split() would split on: ASCII \t-\r, \x1c-\x20, and the UTF-8 forms of Unicode spaces."""
    ws = (units <= 32) & ~((units < 9) | ((units > 13) & (units < 28)))
    if unicode:  # valid UTF-8 continuation bytes are >= 0x80, so these patterns never start mid-character
        lead = np.flatnonzero((units >= 0xC2) & (units <= 0xE3))
        lead = lead[lead + 2 < units.size]
        b0, b1, b2 = units[lead], units[lead + 1], units[lead + 2]
        two = (b0 == 0xC2) & ((b1 == 0x85) | (b1 == 0xA0))  # U+0085, U+00A0
        three = (
            ((b0 == 0xE1) & (b1 == 0x9A) & (b2 == 0x80))  # U+1680
            | ((b0 == 0xE2) & (b1 == 0x80) & (((b2 >= 0x80) & (b2 <= 0x8A)) | (b2 == 0xA8) | (b2 == 0xA9) | (b2 == 0xAF)))
            | ((b0 == 0xE2) & (b1 == 0x81) & (b2 == 0x9F))  # U+205F
            | ((b0 == 0xE3) & (b1 == 0x80) & (b2 == 0x80))  # U+3000
        )
        for k in range(2):
            ws[lead[two] + k] = True
        for k in range(3):
            ws[lead[three] + k] = True
    return ws


def _byte_span_hashes(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Hashes of byte spans read 8 bytes at a time: work proportional to the words, not the bytes.

    The first 8 bytes of every span come from one unaligned uint64 load (bytes
    past the span masked off); the further 8-byte chunks of longer spans are
    mixed with their position and summed per span, all in one vectorized pass.
    """
    n = starts.size
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    padded = np.concatenate((buf, np.zeros((-buf.size) % 8 + 8, dtype=np.uint8)))
    # a uint64 view with a one-byte stride: element i is the 8 bytes starting at byte i (unaligned loads)
    windows = np.lib.stride_tricks.as_strided(padded.view("<u8"), shape=(buf.size + 1,), strides=(1,))
    lengths = ends - starts
    with np.errstate(over="ignore"):
        # bytes past the span are masked off by a 9-entry table of low-byte masks
        h = mix64(windows[starts] & _LOW_BYTES[np.minimum(lengths, 8)])
        # the rest of every longer span at once: each further 8-byte chunk is mixed with its
        # position and the chunks of one span are summed (np.add.reduceat, wrapping)
        idx = np.flatnonzero(lengths > 8)
        if idx.size:
            extra = (lengths[idx] - 1) // 8  # chunks after the first
            owner = np.repeat(np.arange(idx.size), extra)
            k = 1 + np.arange(owner.size) - np.repeat(np.cumsum(extra) - extra, extra)
            rest = lengths[idx][owner] - 8 * k
            chunk = windows[starts[idx][owner] + 8 * k] & _LOW_BYTES[np.minimum(rest, 8)]
            mixed = mix64(chunk ^ (k.astype(np.uint64) * _GRAM))
            folded = np.add.reduceat(mixed, np.cumsum(extra) - extra)
            h[idx] = mix64((h[idx] * _GRAM) ^ folded)
        h ^= lengths.astype(np.uint64) << U64(56)
    return mix64(h)


def _word_spans(units: np.ndarray, ws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    word = ~ws
    edges = np.flatnonzero(word[1:] != word[:-1]) + 1
    if word.size and word[0]:
        edges = np.concatenate(([0], edges))
    if word.size and word[-1]:
        edges = np.concatenate((edges, [word.size]))
    return edges[0::2], edges[1::2]


def shingle_hashes(
    texts: Sequence[str | None], ngram: int = 5, unit: str = "word", seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(uint64 shingle hashes, int64 document index) for every shingle of a batch of texts.

    Duplicated shingles within a document are kept (MinHash ignores them).
    """
    n_docs = len(texts)
    if n_docs == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    if unit == "word":
        # documents are joined by \x1e (whitespace to str.split, so it never glues two words) and
        # found again by position; ASCII texts are lower-cased by a byte table over the whole batch,
        # the rest by str.lower() (Unicode rules) with Unicode whitespace turned into spaces
        encoded = []
        any_unicode = False
        for t in texts:
            if not t:
                encoded.append(b"")
                continue
            if t.isascii():
                encoded.append((t.replace(_SEP, " ") if _SEP in t else t).encode("ascii"))
                continue
            any_unicode = True
            low = t.lower()
            encoded.append((low.replace(_SEP, " ") if _SEP in low else low).encode("utf-8", "surrogatepass"))
        units = np.frombuffer(b"\x1e".join(encoded).lower(), dtype=np.uint8)
        ws = _whitespace(units, any_unicode)
        seps = np.flatnonzero(units == 0x1E)
        doc_start = np.concatenate(([0], seps + 1))
        lengths = np.concatenate((seps, [units.size])) - doc_start
    elif unit == "char":
        collapsed = [" ".join(t.lower().split()) if t else "" for t in texts]
        lengths = np.fromiter((len(t) for t in collapsed), dtype=np.int64, count=n_docs)
        units = np.frombuffer("\n".join(collapsed).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ws = units == 10
        doc_start = np.concatenate(([0], np.cumsum(lengths + 1)[:-1]))
    else:
        raise ValueError(f"unit must be 'word' or 'char', not {unit!r}")
    seed_key = mix64(np.uint64(seed) + _GRAM)
    if units.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)

    if unit == "char":
        # every window of `ngram` code points inside one document (shorter docs: the whole doc)
        n = ngram
        win_docs = np.maximum(lengths - n + 1, 0)
        short = (lengths > 0) & (lengths < n)
        counts = win_docs + short
        doc_of = np.repeat(np.arange(n_docs), counts)
        first = np.repeat(doc_start, counts)
        offset = np.arange(doc_of.size) - np.repeat(np.cumsum(counts) - counts, counts)
        starts = first + offset
        ends = np.minimum(starts + n, np.repeat(doc_start + lengths, counts))
        h = _span_hashes(units, starts, ends)
        with np.errstate(over="ignore"):
            return mix64(h ^ seed_key), doc_of.astype(np.int64)

    starts, ends = _word_spans(units, ws)
    words = _byte_span_hashes(units, starts, ends)
    per_doc = np.diff(np.concatenate((np.searchsorted(starts, doc_start), [starts.size])))
    wdoc = np.repeat(np.arange(n_docs, dtype=np.int64), per_doc)
    n = ngram
    W = words.size
    with np.errstate(over="ignore"):
        # a polynomial over the (well mixed) word hashes, started from the seed: its high bits pick
        # the MinHash bin and its low bits compete in it, so no final mixing pass is needed
        if W >= n:
            g = words[: W - n + 1] + seed_key
            for k in range(1, n):
                g *= _GRAM
                g += words[k : W - n + 1 + k]
            gdoc = wdoc[: W - n + 1]
            inside = wdoc[n - 1 :] == gdoc
            g, gdoc = g[inside], gdoc[inside]
        else:
            g, gdoc = np.zeros(0, np.uint64), np.zeros(0, np.int64)
        # documents with 1..n-1 words: one shingle of all their words
        nwords = np.bincount(wdoc, minlength=n_docs)
        short_docs = np.flatnonzero((nwords > 0) & (nwords < n))
        if short_docs.size:
            first_word = np.searchsorted(wdoc, short_docs, side="left")
            acc = words[first_word] + seed_key
            for k in range(1, n - 1):
                take = k < nwords[short_docs]
                nxt = words[np.minimum(first_word + k, W - 1)]
                acc = np.where(take, acc * _GRAM + nxt, acc)
            # a short document's shingle must differ from an n-gram with the same first words
            g = np.concatenate((g, mix64(acc ^ nwords[short_docs].astype(np.uint64))))
            gdoc = np.concatenate((gdoc, short_docs))
        return g, gdoc.astype(np.int64)


@lru_cache(maxsize=16)
def _probe_table(num_perm: int, seed: int, attempts: int) -> np.ndarray:
    """``int64[num_perm, attempts]``: the bins empty bin j probes, in order -- the same for every document."""
    salt = mix64(np.uint64(seed) ^ U64(0xD1B54A32D192ED03))
    j = np.arange(num_perm, dtype=np.uint64)[:, None]
    t = np.arange(1, attempts + 1, dtype=np.uint64)[None, :]
    with np.errstate(over="ignore"):
        key = mix64(j * U64(0x9E3779B97F4A7C15) + t * U64(0xC2B2AE3D27D4EB4F) + salt)
    return (key % U64(num_perm)).astype(np.int64)


def _densify(sig: np.ndarray, seed: int) -> np.ndarray:
    """Fill empty bins by optimal densification; rows that are entirely empty stay empty."""
    n_docs, num_perm = sig.shape
    filled = sig != EMPTY
    has_any = filled.any(axis=1)
    rows, cols = np.nonzero(~filled & has_any[:, None])
    if rows.size == 0:
        return sig
    out = sig.copy()
    block = 32
    table = _probe_table(num_perm, seed, 64 * num_perm)
    for first in range(0, table.shape[1], block):
        probes = table[cols, first : first + block]  # [empty, block]
        hit = filled[rows[:, None], probes]
        found = hit.any(axis=1)
        which = probes[np.arange(rows.size), hit.argmax(axis=1)]
        out[rows[found], cols[found]] = sig[rows[found], which[found]]
        rows, cols = rows[~found], cols[~found]
        if rows.size == 0:
            return out
    # astronomically unlikely (64 * num_perm misses); keep it deterministic anyway
    out[rows, cols] = np.where(filled, sig, EMPTY).min(axis=1)[rows]
    return out


def minhash_from_shingles(
    hashes: np.ndarray, doc: np.ndarray, n_docs: int, num_perm: int = 128, seed: int = 1
) -> np.ndarray:
    """One-permutation MinHash ``uint32[n_docs, num_perm]`` from shingle hashes; empty docs are all EMPTY."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    if num_perm & (num_perm - 1) == 0:  # a power of two: the top bits are the bin
        bins = (hashes >> U64(64 - max(num_perm.bit_length() - 1, 0))) if num_perm > 1 else np.zeros_like(hashes)
    else:
        with np.errstate(over="ignore"):
            bins = ((hashes >> U64(32)) * U64(num_perm)) >> U64(32)
    vals = np.minimum((hashes & U64(0xFFFFFFFF)).astype(np.uint32), np.uint32(0xFFFFFFFE))
    flat = np.full(n_docs * num_perm, EMPTY, dtype=np.uint32)
    index = np.asarray(doc, dtype=np.int64) * num_perm + bins.astype(np.int64)
    np.minimum.at(flat, index, vals)
    return _densify(flat.reshape(n_docs, num_perm), seed)


#: texts hashed per numpy pass: ~1 MB keeps the working arrays cache-sized (15% faster than one big pass)
CHUNK_CHARS = 1 << 20


def minhash_signatures(
    texts: Sequence[str | None], num_perm: int = 128, ngram: int = 5, seed: int = 1, unit: str = "word"
) -> np.ndarray:
    """MinHash signatures ``uint32[len(texts), num_perm]`` of a batch; rows of empty texts are all EMPTY.

    A document's signature does not depend on the other documents of the batch.
    """
    n = len(texts)
    out = np.empty((n, num_perm), dtype=np.uint32)
    start = 0
    while start < n:
        end, size = start, 0
        while end < n and (end == start or size + len(texts[end] or "") <= CHUNK_CHARS):
            size += len(texts[end] or "")
            end += 1
        chunk = texts[start:end]
        h, d = shingle_hashes(chunk, ngram=ngram, unit=unit, seed=seed)
        out[start:end] = minhash_from_shingles(h, d, len(chunk), num_perm=num_perm, seed=seed)
        start = end
    return out


SET_BITS = 44  # bits of a shingle hash kept in the sets exact Jaccard runs on (collisions ~1e-5 per 10k x 10k pair)
_DOC_BITS = 64 - SET_BITS


def shingle_sets(texts: Sequence[str | None], ngram: int = 5, unit: str = "word", seed: int = 1) -> list[np.ndarray]:
    """Sorted unique shingle hashes (44-bit) per text: the sets exact Jaccard is computed on.

    The document index rides in the top 20 bits of one uint64 sort key, so a
    single ``np.sort`` groups and orders every document's shingles.
    """
    n = len(texts)
    step = (1 << _DOC_BITS) - 1
    if n > step:
        out: list[np.ndarray] = []
        for lo in range(0, n, step):
            out.extend(shingle_sets(texts[lo : lo + step], ngram=ngram, unit=unit, seed=seed))
        return out
    h, d = shingle_hashes(texts, ngram=ngram, unit=unit, seed=seed)
    mask = U64((1 << SET_BITS) - 1)
    key = np.sort((d.astype(np.uint64) << U64(SET_BITS)) | (h & mask))
    keep = np.ones(key.size, dtype=bool)
    keep[1:] = key[1:] != key[:-1]
    key = key[keep]
    bounds = np.searchsorted(key >> U64(SET_BITS), np.arange(n + 1, dtype=np.uint64))
    vals = key & mask
    return [vals[bounds[i] : bounds[i + 1]] for i in range(n)]


def jaccard_pairs(sets_a: Sequence[np.ndarray], sets_b: Sequence[np.ndarray]) -> np.ndarray:
    """Exact Jaccard similarity of each (sets_a[i], sets_b[i]) pair of sorted unique hash arrays.

    One binary-search pass per pair (``searchsorted`` of the smaller set into
    the larger, all in C): a loop per candidate pair, never per shingle. It beat
    a single sort over all pairs' elements by 10x on the SPDX candidates.
    """
    n = len(sets_a)
    out = np.zeros(n, dtype=np.float64)
    for i, (x, y) in enumerate(zip(sets_a, sets_b)):
        if x.size == 0 or y.size == 0:
            continue
        if x.size > y.size:
            x, y = y, x
        pos = np.searchsorted(y, x)
        pos[pos == y.size] = 0
        inter = int(np.count_nonzero(y[pos] == x))
        out[i] = inter / (x.size + y.size - inter)
    return out


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fraction of equal MinHash bins between row-aligned signature arrays."""
    a = np.atleast_2d(a)
    b = np.atleast_2d(b)
    return (a == b).mean(axis=1)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``uint64[n, bands]`` bucket keys: band i folds rows ``i*rows .. (i+1)*rows-1`` (band index mixed in)."""
    sig = np.asarray(signatures, dtype=np.uint64)
    n = sig.shape[0]
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands*rows = {bands * rows} exceeds the signature length {sig.shape[1]}")
    block = sig[:, : bands * rows].reshape(n, bands, rows)
    with np.errstate(over="ignore"):
        acc = np.broadcast_to(np.arange(bands, dtype=np.uint64) * U64(0xA24BAED4963EE407), (n, bands)).copy()
        for k in range(rows):
            acc = mix64(acc ^ block[:, :, k]) if k == rows - 1 else acc * _GRAM + block[:, :, k]
    return acc


def lsh_candidates(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """Candidate pairs ``int64[m, 2]`` (i < j, unique) of rows sharing at least one band bucket.

    In-memory helper for small batches, tests and notebooks; :func:`resolve_duplicates`
    does the same per hash partition on disk. Empty signatures never match.
    """
    sig = np.asarray(signatures)
    valid = ~(sig == EMPTY).all(axis=1)
    idx = np.flatnonzero(valid)
    keys = band_keys(sig[idx], bands, rows)
    pairs = []
    for b in range(bands):
        pairs.append(bucket_pairs(keys[:, b], idx))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    allp = np.concatenate(pairs)
    return np.unique(allp, axis=0) if allp.size else np.zeros((0, 2), dtype=np.int64)


def bucket_pairs(keys: np.ndarray, members: np.ndarray) -> np.ndarray:
    """All pairs (i < j) of `members` that share a key, vectorized over buckets."""
    order = np.argsort(keys, kind="stable")
    k, m = keys[order], members[order]
    starts = np.flatnonzero(np.concatenate(([True], k[1:] != k[:-1])))
    sizes = np.diff(np.concatenate((starts, [k.size])))
    multi = sizes > 1
    starts, sizes = starts[multi], sizes[multi]
    if starts.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    first, second = expand_pairs(starts, sizes)
    a, b = m[first], m[second]
    return np.stack((np.minimum(a, b), np.maximum(a, b)), axis=1).astype(np.int64)


def expand_pairs(starts: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (p, q), p < q, of every pair inside each group ``[start, start+size)``, without a Python loop."""
    starts = np.asarray(starts, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    # one row per (group, first element): the first element pairs with the rest of its group
    firsts_per_group = np.maximum(sizes - 1, 0)
    g = np.repeat(np.arange(sizes.size), firsts_per_group)
    i = np.arange(g.size) - np.repeat(np.cumsum(firsts_per_group) - firsts_per_group, firsts_per_group)
    partners = sizes[g] - 1 - i
    p = np.repeat(starts[g] + i, partners)
    offs = np.arange(p.size) - np.repeat(np.cumsum(partners) - partners, partners)
    q = p + 1 + offs
    return p, q
