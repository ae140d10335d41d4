"""What a dedup method declares, so that the shared phases never name one.

A method is a module under :mod:`curation.dedup.methods` that exposes ``METHOD``,
a :class:`DedupMethod`, and is listed once in :mod:`curation.dedup.methods.registry`.
The shared code reads only these declarations:

- :mod:`curation.dedup.config` builds ``DedupConfig`` from every method's
  recipe key and config model (``dedup.<key>:``);
- ``signature_fingerprint`` is the union of each method's ``fingerprint``;
- :mod:`curation.dedup.records` (scatter) calls each method's ``records``
  hook, which turns its signature columns into bucket records (candidate
  generation: exact digests, LSH bands, frame bands);
- :mod:`curation.dedup.resolve` runs each method's ``resolve`` phase (the
  verification of its candidates, or its own edge search) under its marker;
- :mod:`curation.dedup.clusters` names an edge in the ledger detail from the
  ``kinds`` a method owns (``match`` and the distance key).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import pyarrow as pa
from pydantic import BaseModel

if TYPE_CHECKING:  # pragma: no cover
    from curation.dedup.config import DedupConfig
    from curation.dedup.layout import MapFn


@dataclass(frozen=True)
class EdgeKind:
    """One kind of bucket record and edge a method produces, and how the bucket phase treats it.

    - ``match``, ``detail_key``, ``shown_as``: its ledger naming (``match`` and the distance key);
    - ``exact``: evidence of an identical copy (shown before any near match, ranks first);
    - ``bucket``: ``star`` (every member of a bucket joins its first member: digests, LSH bands)
      or ``pairs`` (every pair of a bucket is checked by ``check`` against the hashes in the records);
    - ``check(cfg, seq, lens, color, flat, p, q) -> (accepted, distance)`` for ``pairs`` buckets;
    - ``verify_later(cfg)``: matches are candidates for the method's resolve phase, not edges yet.
    """

    match: str
    #: key of the distance in the ledger detail (``distance``, ``jaccard``, ``cosine``), None: not shown
    detail_key: str | None = None
    #: ``similarity``: shown as ``1 - dist``; ``distance``: as stored
    shown_as: str = "distance"
    exact: bool = False
    bucket: str = "star"
    check: Callable[..., Any] | None = None
    verify_later: Callable[[Any], bool] = lambda cfg: False

    def detail(self, dist: float) -> dict[str, float]:
        if self.detail_key is None:
            return {}
        value = 1.0 - dist if self.shown_as == "similarity" else dist
        return {self.detail_key: round(value, 4 if self.shown_as == "similarity" else 2)}


@dataclass
class RecordContext:
    """One batch of signature rows as the scatter phase sees it, shared by every method's ``records`` hook.

    ``emit(kind, keys, rows, dedup, seq=None, color=None, flat=None)`` appends
    bucket records (``RECORD_SCHEMA``) for the batch rows ``rows``.
    """

    table: pa.Table
    config: "DedupConfig"
    role: int
    emit: Callable[..., None]
    modality: Any  # str numpy array, one per row ("" where unknown)
    is_text_mod: Any  # bool: text or document rows (text dedup applies to them)
    textkey: Any  # uint64 key of sig_text per row (0 where none)
    has_text: Any  # bool: sig_text present
    #: uint64 salt of media keys: the text key of image_text rows when ``image.match_text`` asks for it
    media_salt: Any
    #: bool per row: its text may be compared (an eval question needs at least ``text.min_words`` words)
    text_ok: Any
    dedup_role: bool  # new or against rows: may form dedup edges
    eval_role: bool  # new rows with eval sets present, or eval rows: may meet eval rows

    @property
    def n(self) -> int:
        return self.table.num_rows

    def has(self, column: str) -> bool:
        return column in self.table.column_names


@dataclass(frozen=True)
class ResolveContext:
    """What a method's resolve phase gets: its candidate pairs and the resolve stage's inputs."""

    cands: pa.Table  # candidate edges of this method's kinds (EDGE_SCHEMA), from the bucket phase
    files: Sequence[Any]  # the SigFiles (node offsets, roles, batches(columns))
    config: "DedupConfig"
    work: Path
    map_fn: "MapFn"
    #: where files read or written by ``map_fn`` tasks go (curation.dedup.shared); None: ``work``
    shared: Any = None
    #: the candidates come in batches (runs of node blocks, each pair in one): this is the batch's number
    batch: int = 0


@dataclass(frozen=True)
class ResolvePhase:
    """A method's own step of the resolve stage, resumable under ``marker``, its edges kept in ``output``.

    ``run`` returns its verified edges as one table or as an iterable of tables (taken one at a time, so a
    phase with many edges need not hold them all)."""

    marker: str
    output: str
    run: Callable[[ResolveContext], "pa.Table | Iterable[pa.Table]"]
    #: candidate edge kinds it verifies (taken out of the bucket phase's candidates); () for none
    candidate_kinds: tuple[int, ...] = ()
    #: runs only when this returns True (default: always, so an empty candidate set still leaves its marker)
    active: Callable[["DedupConfig"], bool] = lambda cfg: True


@dataclass(frozen=True)
class DedupMethod:
    """The declarations of one dedup method (see the module docstring)."""

    #: recipe key under ``dedup:`` (``exact``, ``image``, ``text``, ``video``, ``semantic``)
    key: str
    config: type[BaseModel]
    #: pydantic field annotation; default: ``config``
    annotation: Any = None
    #: edge kinds this method owns -> their ledger naming
    kinds: Mapping[int, EdgeKind] = field(default_factory=dict)
    #: this method's part of the signature fingerprint (None: its signatures are not stored)
    fingerprint: Callable[["DedupConfig"], Any] | None = None
    #: its own map-stage signature operator ``(config, shared_decode) -> Operator | None``, appended after the
    #: shared media and text operators of curation.dedup.signatures (which compute the built-in methods'
    #: columns from the one shared decode); None: it reads columns that exist already
    operator: Callable[["DedupConfig", Any], Any] | None = None
    #: the columns that operator adds (declared in the manifest schema with the other signature columns)
    columns: Mapping[str, pa.DataType] = field(default_factory=dict)
    #: candidate generation: bucket records of one batch (scatter phase); None: no records
    records: Callable[[RecordContext], None] | None = None
    resolve: ResolvePhase | None = None
    description: str = ""
