"""The `dedup:` recipe section and the `decontaminate:` list, as pydantic models.

The curation engine embeds :class:`DedupConfig` as the recipe's ``dedup:``
section. Its per-method fields (``exact``, ``image``, ``text``, ``video``,
``semantic``) are not written here: each dedup method declares its recipe key
and config model (:mod:`curation.dedup.methods`) and the model below is built
from the registry, in registry order, followed by the shared fields
(``against``, ``decontaminate``, ``partitions``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from curation.dedup.methods.exact import ExactConfig
from curation.dedup.methods.minhash import TextConfig, candidate_probability, lsh_params
from curation.dedup.methods.phash import ImageConfig
from curation.dedup.methods.registry import methods
from curation.dedup.methods.semantic import SemanticConfig
from curation.dedup.methods.video import VideoConfig
from manifests.fsutil import canonical_hash

__all__ = ["DedupConfig", "EvalSetConfig", "ExactConfig", "ImageConfig", "SemanticConfig", "TextConfig",
           "VideoConfig", "candidate_probability", "lsh_params"]

_STRICT = ConfigDict(extra="forbid")


class EvalSetConfig(BaseModel):
    """One evaluation set to decontaminate against."""

    model_config = _STRICT
    path: str
    name: str | None = None  # ledger reason is contaminated:<name>; default the file or folder name
    image_column: str | None = None  # default: first of image, images, img, picture, decoded_image
    text_column: str | None = None  # default: first of question, query, problem, prompt, text, instruction
    split: str | None = None  # for a saved DatasetDict

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        p = Path(self.path.rstrip("/"))
        return p.stem if p.suffix in (".parquet", ".arrow", ".jsonl") else p.name


class _DedupBase(BaseModel):
    """The recipe's ``dedup:`` section (plus ``decontaminate:``, which the recipe keeps at top level).

    The per-method fields come from :mod:`curation.dedup.methods.registry`; see
    :data:`DedupConfig`.
    """

    model_config = _STRICT

    @field_validator("decontaminate", mode="after", check_fields=False)
    @classmethod
    def _evalsets(cls, v: list) -> list[EvalSetConfig]:
        out = [EvalSetConfig(path=x) if isinstance(x, str) else x for x in v]
        names = [e.label for e in out]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"evaluation set names must be unique (give `name:`): {dup}")
        return out

    @property
    def exact_cfg(self) -> ExactConfig:
        return self.exact  # type: ignore[attr-defined]

    @property
    def eval_sets(self) -> list[EvalSetConfig]:
        return [e if isinstance(e, EvalSetConfig) else EvalSetConfig(path=e) for e in self.decontaminate]  # type: ignore[attr-defined]

    def signature_fingerprint(self) -> str:
        """Identity of the signature columns: manifests with the same value can be matched without rehashing."""
        key: dict[str, Any] = {
            "v": 3,  # 3: XXH3-128 digests, pHash from the shared decode's reduction (media.decoded)
            "evals": bool(self.decontaminate),  # type: ignore[attr-defined]  # eval sets make the operators hash more
        }
        for m in methods():
            if m.fingerprint is not None:
                key[m.key] = m.fingerprint(self)
        return canonical_hash(key)[:16]


def _fields() -> dict[str, Any]:
    out: dict[str, Any] = {m.key: (m.annotation or m.config, Field(default_factory=m.config)) for m in methods()}
    out.update(
        #: existing manifests or parquet files: new samples duplicating them are dropped, never them
        against=(list[str], []),
        decontaminate=(list[Union[str, EvalSetConfig]], []),
        #: hash partitions of the band buckets; only memory and speed depend on it, never the result.
        #: null: from the inputs, at least 32 and about 2M bucket records per partition (curation.dedup.resolve)
        partitions=(Optional[int], Field(None, ge=1, le=4096)),
    )
    return out


#: the ``dedup:`` section: one field per registered method (``exact``, ``image``, ``text``, ``video``,
#: ``semantic``) then ``against``, ``decontaminate`` and ``partitions``
DedupConfig = create_model("DedupConfig", __base__=_DedupBase, __module__=__name__, **_fields())
