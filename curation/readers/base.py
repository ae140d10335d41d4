"""The reader protocol: plan a source into typed chunk specs, read one spec into manifest rows.

A format is one :class:`Reader` subclass in its own module, named in
``curation.readers.registry``. The engine, the id fix-ups at finalize,
``dedup.against`` and ``decontaminate`` all call readers through
``curation.readers`` (``plan_source``/``read_chunk``/``read_source``), so a new
format works everywhere once it is registered.

Specs are frozen dataclasses of JSON values (they cross to Ray actors as JSON):
:func:`encode_spec` / :func:`decode_spec` tag them with the reader name. A
reader's ``read`` returns the columns of :data:`BASE_SCHEMA` in input order,
with inputs that cannot be read marked dropped at stage ``read`` (see
:mod:`curation.readers.rows`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa

from curation.filters.common import MEDIA_LIST
from curation.recipe import Recipe, Source
from manifests.errors import RecipeError
from manifests.schema import TURN_TYPE

PRIVATE_POS = "_pos"
PRIVATE_KEY = "_key"
PRIVATE_URI = "_uri"

BASE_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("modality", pa.string()), ("media", MEDIA_LIST),
    ("text", pa.string()), ("turns", pa.list_(TURN_TYPE)), ("meta", pa.string()),
    (PRIVATE_POS, pa.int64()), (PRIVATE_KEY, pa.string()), (PRIVATE_URI, pa.string()),
])


@dataclass(frozen=True)
class SourceContext:
    """Everything a reader needs about one source, parsed once at the edge (paths absolute)."""

    index: int
    source: Source
    paths: tuple[str, ...]
    image_root: str | None
    video_root: str | None
    base_dir: str | None = None

    @classmethod
    def of(cls, recipe: Recipe, index: int) -> SourceContext:
        src = recipe.sources[index]
        return cls(
            index=index, source=src, paths=tuple(recipe.resolve(p) for p in src.paths),
            image_root=recipe.resolve(src.image_root) if src.image_root else None,
            video_root=recipe.resolve(src.video_root) if src.video_root else None,
            base_dir=recipe.base_dir,
        )

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def kind(self) -> str:
        return self.source.kind

    @property
    def modality(self) -> str:
        return self.source.modality

    @property
    def chunk(self) -> int:
        return self.source.chunk

    @property
    def limit(self) -> int | None:
        return self.source.limit

    def field(self, name: str) -> str:
        """``sources[i].name``: how errors name a recipe field of this source."""
        return f"sources[{self.index}].{name}"

    def error(self, message: str, name: str = "path") -> RecipeError:
        return RecipeError(message, field=self.field(name))

    def resolve(self, path: str) -> str:
        p = os.path.expanduser(path)
        if not os.path.isabs(p) and self.base_dir:
            p = os.path.join(self.base_dir, p)
        return os.path.normpath(p)


@dataclass(frozen=True)
class ChunkSpec:
    """One unit of work: a slice of a source's inputs. Subclasses add where the slice lies."""

    source: int
    pos0: int  # ordinal of the chunk's first input within its source (ordering only, never identity)

    def inputs(self) -> int:
        """Inputs this chunk covers (files, rows, lines or samples): the unit of progress."""
        raise NotImplementedError


@dataclass
class SourcePlan:
    """A source cut into chunk specs (JSON-able dicts, see encode_spec) plus a fingerprint of its inputs."""

    index: int
    name: str
    kind: str
    fingerprint: str
    inputs: int
    chunks: list[dict] = field(default_factory=list)
    format: str = ""


class Fingerprint:
    """What a plan depends on: input names, sizes and mtimes (a changed input re-runs the job)."""

    def __init__(self, kind: str, fmt: str) -> None:
        self._h = hashlib.sha256(f"{kind}\0{fmt}\n".encode())

    def file(self, path: str, label: str | None = None) -> None:
        from manifests.storage import is_uri, version_tag

        if is_uri(path):  # an object: its size and ETag (generation) stand for size and mtime
            self._h.update(f"{label or path}\0{version_tag(path)}\n".encode())
            return
        try:
            st = os.stat(path)
            self._h.update(f"{label or path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError as exc:
            self._h.update(f"{label or path}\0error:{exc.errno}\n".encode())

    def text(self, s: str) -> None:
        self._h.update(s.encode("utf-8", "surrogatepass") + b"\n")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class Reader:
    """One format. Subclasses set ``name``, ``spec_type`` and ``kinds`` and implement plan/read."""

    #: the ``format:`` name in recipes and the registry
    name: ClassVar[str] = ""
    #: the ChunkSpec subclass this reader plans and reads
    spec_type: ClassVar[type[ChunkSpec]] = ChunkSpec
    #: source kinds this format can hold
    kinds: ClassVar[frozenset[str]] = frozenset()
    #: True when two inputs of a source can never share a key (file paths): finalize skips its repeat scan
    unique_keys: ClassVar[bool] = False

    @classmethod
    def detect(cls, ctx: SourceContext) -> bool:
        """For ``format: auto``: True when the paths are unambiguously in this format."""
        return False

    def plan(self, ctx: SourceContext) -> tuple[list[ChunkSpec], str, int]:
        """(chunk specs, fingerprint of the inputs, inputs planned); RecipeError for an unreadable source."""
        raise NotImplementedError

    def read(self, ctx: SourceContext, spec: ChunkSpec) -> pa.Table:
        """Rows of one spec in BASE_SCHEMA, input order, unreadable inputs marked dropped at stage read."""
        raise NotImplementedError


def encode_spec(reader: str, spec: ChunkSpec) -> dict:
    """A spec as the JSON-able dict the engines carry: its fields plus ``type`` (the reader name)."""
    return {"type": reader, **dataclasses.asdict(spec)}


def decode_spec(spec_type: type[ChunkSpec], data: dict) -> ChunkSpec:
    names = {f.name for f in dataclasses.fields(spec_type)}
    return spec_type(**{k: _tuples(v) for k, v in data.items() if k in names})


def _tuples(v: Any) -> Any:
    """JSON lists back to tuples, so decoded specs are hashable and compare equal to planned ones."""
    if isinstance(v, list):
        return tuple(_tuples(x) for x in v)
    return v
