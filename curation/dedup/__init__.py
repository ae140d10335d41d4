"""Exact and near-duplicate detection and evaluation-set decontamination (see docs/dedup.md).

Two halves, matching the two halves of a curation job:

- map stage: :func:`signature_operators` add ``sig_*`` columns per batch;
- global stage: :func:`resolve_duplicates` turns those columns (plus
  ``against:`` manifests and ``decontaminate:`` eval sets) into clusters and
  drop decisions, partition by partition on disk.

Each method (exact, pHash, MinHash, video, semantic) is one module under
:mod:`curation.dedup.methods`, listed in its registry; the shared phases name none.

The building blocks are usable on their own: :func:`phash_images`,
:func:`minhash_signatures`, :func:`lsh_candidates`, :class:`UnionFind`.
"""
from curation.dedup.config import (
    DedupConfig,
    EvalSetConfig,
    ExactConfig,
    ImageConfig,
    TextConfig,
    VideoConfig,
    candidate_probability,
    lsh_params,
)
from curation.dedup.minhash import (
    band_keys,
    estimated_jaccard,
    jaccard_pairs,
    lsh_candidates,
    minhash_signatures,
    normalize_text,
    shingle_hashes,
    shingle_sets,
)
from curation.dedup.phash import chroma_moments, hamming, phash_images, phash_images_detail, phash_thumbs
from curation.dedup.resolve import RESULT_SCHEMA, resolve_duplicates, resolve_parts
from curation.dedup.signatures import (
    SIGNATURE_COLUMNS,
    MediaSignatures,
    TextSignatures,
    compute_signatures,
    signature_columns,
    signature_operators,
)
from curation.dedup.unionfind import UnionFind, connected_components
from curation.dedup.verify import compare as verify_thumbnails
from curation.dedup.verify import verify_thumb
from curation.dedup.video import align_sequences, video_distance, video_hashes

__all__ = [
    "DedupConfig",
    "EvalSetConfig",
    "ExactConfig",
    "ImageConfig",
    "MediaSignatures",
    "RESULT_SCHEMA",
    "SIGNATURE_COLUMNS",
    "TextConfig",
    "TextSignatures",
    "UnionFind",
    "VideoConfig",
    "align_sequences",
    "band_keys",
    "candidate_probability",
    "chroma_moments",
    "compute_signatures",
    "connected_components",
    "estimated_jaccard",
    "hamming",
    "jaccard_pairs",
    "lsh_candidates",
    "lsh_params",
    "minhash_signatures",
    "normalize_text",
    "phash_images",
    "phash_images_detail",
    "phash_thumbs",
    "resolve_duplicates",
    "resolve_parts",
    "shingle_hashes",
    "shingle_sets",
    "signature_columns",
    "signature_operators",
    "verify_thumb",
    "verify_thumbnails",
    "video_distance",
    "video_hashes",
]
