"""CLIP / SigLIP: image embeddings (``emb_image``, float16) and DataComp's image-text ``clip_score``.

:class:`ImageEmbedder` is a model stage of its own (its own actor pool on Ray,
a GPU when there is one). For every row it embeds the first image (reduced
decode through ``media``: the JPEG draft stops at the model's input size) and,
when the row has a caption or turns, the text; ``score_clip`` is the cosine of
the two L2-normalised embeddings (DataComp's CLIP score, without the x100).
``emb_image`` is kept as float16 so that the aesthetic / NSFW heads and
semantic dedup reuse it without a second forward pass.

:class:`ClipScoreFilter` drops by a threshold the recipe sets: ``min`` (an
absolute cosine) and/or ``top_fraction`` (DataComp's "keep the top 30%",
resolved into a cutoff per source over every chunk after the map stage).

Determinism: preprocessing is numpy/PIL, text is padded to a fixed length, and
each worker uses ``num_cpus`` torch threads, so scores do not depend on the
engine; across batch sizes they agree to float32 rounding (GEMM blocking).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curation.enrich.base import EnrichConfig, Enricher
from curation.filters.common import STAGE_FILTER, check, drop_rows, set_column
from manifests.errors import RecipeError

EMB_IMAGE = "emb_image"
SCORE_CLIP = "score_clip"
EMB_TYPE = pa.list_(pa.float16())
#: private column: the uint8 model input cut in the CPU stage (ImagePixels) for the model stage
PIX = "_pix_embed"
STAGE_EMBED = "embed"


class EmbedConfig(EnrichConfig):
    """``enrich.embed``: the CLIP or SigLIP model whose embeddings the other operators reuse."""

    #: a model folder (transformers or open_clip format) or a hub id already in the HF cache
    model: str
    #: also embed captions/turns and write score_clip (image_text rows)
    score_text: bool = True
    #: longest text in tokens (default: the model's context length)
    max_text_tokens: Optional[int] = Field(None, ge=1, le=4096)

    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("model",)


class ImageEmbedder(Enricher):
    """Batched image (and text) embeddings; a failed image becomes a ledger row, the batch goes on."""

    Config = EmbedConfig
    section = "embed"
    stage = STAGE_EMBED
    kinds = ("images", "image_text")
    columns: ClassVar[dict[str, pa.DataType]] = {EMB_IMAGE: EMB_TYPE, SCORE_CLIP: pa.float32()}

    cfg: EmbedConfig

    @classmethod
    def check(cls, cfg: EmbedConfig, recipe: Any, field: str, gpus: int) -> None:
        super().check(cfg, recipe, field, gpus)
        from curation.enrich.models import describe_model

        info = describe_model(cfg.path(recipe, "model"), f"{field}.model")
        if info.format == "open_clip" and cfg.score_text and not any(
                (Path(info.path) / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")):
            raise RecipeError("this open_clip folder has no tokenizer files (tokenizer.json): add them, or set "
                              "score_text: false to embed images only", field=f"{field}.model")

    def before(self, shared: Any) -> list[Any]:
        """In a chain: the CPU half that cuts model inputs from the shared decode (one decode per image)."""
        return [ImagePixels(self.cfg, self.recipe, shared)]

    def setup(self) -> None:
        import torch

        from curation.enrich.device import resolve_device
        from curation.enrich.models import describe_model, load_model, preprocess_spec

        self.device = resolve_device(self.cfg.device)
        torch.set_num_threads(max(1, int(self.cfg.num_cpus)))
        self.info = describe_model(self.cfg.path(self.recipe, "model"), "enrich.embed.model")
        self.model, self.tokenizer = load_model(self.info, self.device)
        self.pp = preprocess_spec(self.info)
        self._mean = np.asarray(self.pp.mean, np.float32).reshape(3, 1, 1)
        self._std = np.asarray(self.pp.std, np.float32).reshape(3, 1, 1)
        limit = getattr(getattr(self.model.config, "text_config", None), "max_position_embeddings", None) or 77
        self.text_len = min(int(self.cfg.max_text_tokens or limit), int(limit))

    # -- pixels ---------------------------------------------------------------
    def pixels(self, ref: dict) -> np.ndarray:
        """One image decoded here (the operator used on its own, outside a chain): normalised float32 [3, H, W]."""
        import media as M
        from media.refs import ref_source

        max_side = None
        if ref.get("width") and ref.get("height"):
            short, long_ = sorted((int(ref["width"]), int(ref["height"])))
            max_side = decode_side(self.pp, long_ / max(1, short))
        _, img = M.decode_image(ref_source(ref), max_side=max_side, mode="RGB")
        return self.normalize(model_crop(img, self.pp))

    def normalize(self, crop: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] model input -> normalised float32 [3, H, W]."""
        arr = crop.astype(np.float32).transpose(2, 0, 1) / 255.0
        return (arr - self._mean) / self._std

    # -- model ----------------------------------------------------------------
    def _padded(self, n: int) -> int:
        """Rows of the forward pass for ``n`` inputs: always ``batch_size`` on CPU.

        A GEMM row's result depends only on that row for a fixed shape, so
        padding the last, short batch makes every score independent of where
        chunk and batch boundaries fall (exactly, not just to rounding).
        """
        return max(n, self.cfg.batch_size) if self.device == "cpu" else n

    def embed_images(self, batch: np.ndarray) -> np.ndarray:
        """L2-normalised image embeddings, float32 [n, d]."""
        import torch

        n = len(batch)
        rows = self._padded(n)
        if rows > n:
            batch = np.concatenate([batch, np.zeros((rows - n,) + batch.shape[1:], batch.dtype)])
        with torch.inference_mode():
            out = self.model.get_image_features(pixel_values=torch.from_numpy(batch).to(self.device))
            emb = getattr(out, "pooler_output", out)
            emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        return emb[:n].cpu().numpy()

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings, float32 [n, d] (fixed-length padding: batch-independent)."""
        import torch

        n = len(texts)
        texts = list(texts) + [""] * (self._padded(n) - n)
        tok = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.text_len,
                             return_tensors="pt")
        kwargs = {"input_ids": tok["input_ids"].to(self.device)}
        if "attention_mask" in tok and self.info.family == "clip":
            kwargs["attention_mask"] = tok["attention_mask"].to(self.device)
        with torch.inference_mode():
            out = self.model.get_text_features(**kwargs)
            emb = getattr(out, "pooler_output", out)
            emb = torch.nn.functional.normalize(emb.float(), dim=-1)
        return emb[:n].cpu().numpy()

    def __call__(self, table: pa.Table) -> pa.Table:
        n = table.num_rows
        media = table.column("media").to_pylist()
        texts = row_texts(table) if self.cfg.score_text else [None] * n
        dim = self.info.embed_dim
        emb = np.zeros((n, dim), np.float32)
        has = np.zeros(n, bool)
        score = np.full(n, np.nan, np.float32)
        failures: dict[int, tuple[str, str]] = {}
        rows = [(i, first_image(items)[1]) for i, items in enumerate(media)]
        rows = [(i, ref) for i, ref in rows if ref is not None]
        step = self.cfg.batch_size
        import media as M

        h, w = self.pp.size
        given = table.column(PIX).to_pylist() if PIX in table.column_names else None
        for start in range(0, len(rows), step):
            part = rows[start:start + step]
            arrays, at = [], []
            for i, ref in part:
                if given is not None:  # the model input the CPU stage cut from the shared decode
                    if given[i] is not None:
                        arrays.append(self.normalize(np.frombuffer(given[i], np.uint8).reshape(h, w, 3)))
                        at.append(i)
                    continue
                try:
                    arrays.append(self.pixels(ref))
                    at.append(i)
                except M.MediaError as exc:
                    failures[i] = (exc.reason, exc.detail)
                except OSError as exc:  # the file went away since the analyzer read it
                    failures[i] = ("unreadable", str(exc))
            if not arrays:
                continue
            idx = np.asarray(at)
            emb[idx] = self.embed_images(np.stack(arrays))
            has[idx] = True
            with_text = [i for i in at if texts[i]]
            if with_text:
                t = self.embed_texts([texts[i] for i in with_text])
                wt = np.asarray(with_text)
                score[wt] = np.einsum("nd,nd->n", emb[wt], t)
        if given is not None:
            table = table.drop_columns([PIX])
        table = set_column(table, EMB_IMAGE, embedding_array(emb, has))
        table = set_column(table, SCORE_CLIP, pa.array(score, pa.float32(), mask=np.isnan(score)))
        return drop_rows(table, failures, self.stage)


def first_image(items: Optional[list]) -> tuple[int, Optional[dict]]:
    """(index, reference) of a row's first raster image or document-image page; (-1, None) without one."""
    for j, m in enumerate(items or ()):
        if m.get("kind") in ("image", "page") and (m.get("format") or "").upper() != "PDF":
            return j, m
    return -1, None


def decode_side(pp: Any, aspect: float = 2.0) -> int:
    """Longer side of the decode a model input is cut from: its short side reaches the model's side.

    For CLIP's resize-short-side-then-crop that is ``side * aspect``; the shared
    decode (which fixes one size for every image of a chunk) uses aspect 2, so
    only images more than twice as long as wide are upscaled a little.
    """
    h, w = pp.size
    if pp.shortest_edge is None:
        return max(h, w)
    return max(max(h, w), math.ceil(pp.shortest_edge * aspect) + 1)


def model_crop(img: Any, pp: Any) -> np.ndarray:
    """The model's input cut from an RGB image: uint8 [H, W, 3] (resize + centre crop, or resize)."""
    from PIL import Image

    h, w = pp.size
    if pp.shortest_edge is not None:
        iw, ih = img.size
        scale = pp.shortest_edge / min(iw, ih)
        nw, nh = max(w, round(iw * scale)), max(h, round(ih * scale))
        img = img.resize((nw, nh), resample=Image.Resampling(pp.resample))
        left, top = (nw - w) // 2, (nh - h) // 2
        img = img.crop((left, top, left + w, top + h))
    else:
        img = img.resize((w, h), resample=Image.Resampling(pp.resample))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


class ImagePixels(Enricher):
    """The CPU half of ``embed``: cuts each row's model input from the chain's shared decode.

    Runs in the fused CPU stage before the model stage, so every image is
    decoded once (with the analyzers and dedup signatures) and only the
    uint8 model input (``_pix_embed``, H*W*3 bytes) travels to the model's
    actors. An image the shared decode could not use is dropped here at stage
    ``embed`` with the decoder's reason.
    """

    Config = EmbedConfig
    section = "embed_pixels"
    stage = STAGE_EMBED
    own_stage = False
    kinds = ("images", "image_text")

    cfg: EmbedConfig

    def __init__(self, cfg: EmbedConfig, recipe: Any, shared: Any = None) -> None:
        super().__init__(cfg, recipe)
        self.shared = shared

    def setup(self) -> None:
        from curation.enrich.models import describe_model, preprocess_spec
        from media.decoded import DecodeNeeds, with_needs

        self.pp = preprocess_spec(describe_model(self.cfg.path(self.recipe, "model"), "enrich.embed.model"))
        self.shared = with_needs(self.shared, DecodeNeeds(rgb_side=decode_side(self.pp)))

    def __call__(self, table: pa.Table) -> pa.Table:
        media = table.column("media").to_pylist()
        pos = table.column("_pos").to_pylist() if "_pos" in table.column_names else [None] * table.num_rows
        out: list[Optional[bytes]] = [None] * table.num_rows
        failures: dict[int, tuple[str, str]] = {}
        for i, items in enumerate(media):
            j, ref = first_image(items)
            if ref is None:
                continue
            got = self.shared.get(pos[i], j, ref)
            if got.error is not None or got.rgb is None:
                err = got.error
                failures[i] = (err.reason, err.detail) if err is not None else ("undecodable", "no RGB decode")
                continue
            out[i] = model_crop(got.rgb, self.pp).tobytes()
        table = set_column(table, PIX, pa.array(out, pa.binary()))
        return drop_rows(table, failures, self.stage)


def row_texts(table: pa.Table) -> list[Optional[str]]:
    """The caption of each row: ``text``, else the turns' contents joined by newlines (None when empty)."""
    n = table.num_rows
    text = table.column("text").to_pylist() if "text" in table.column_names else [None] * n
    if "turns" in table.column_names:
        turns = table.column("turns").to_pylist()
        text = [t if t else ("\n".join(x["content"] or "" for x in (tu or ())) or None) for t, tu in zip(text, turns)]
    return [t if t and t.strip() else None for t in text]


def embedding_array(emb: np.ndarray, valid: np.ndarray) -> pa.Array:
    """float32 [n, d] rows as a list<float16> column, null where ``valid`` is false."""
    n, d = emb.shape
    flat = pa.array(emb[valid].astype(np.float16).reshape(-1), pa.float16())
    counts = np.where(valid, d, 0)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat, mask=pa.array(~valid))


def embeddings(table: pa.Table, column: str = EMB_IMAGE) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [n, d] L2-renormalised embeddings, valid mask) of a list<float16> column (zeros where null)."""
    col = table.column(column).combine_chunks()
    valid = col.is_valid().to_numpy(zero_copy_only=False).astype(bool)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    d = int(lengths[valid][0]) if valid.any() else 0
    out = np.zeros((len(col), d), np.float32)
    if d:
        flat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32)
        out[valid] = flat.reshape(-1, d)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)
    return out, valid


# --------------------------------------------------------------------------- clip_score


class ClipScoreConfig(EnrichConfig):
    """``enrich.clip_score``: DataComp's CLIP-score filter over ``score_clip`` (needs ``enrich.embed``)."""

    #: drop rows whose cosine is below this
    min: Optional[float] = Field(None, ge=-1, le=1)
    #: keep this fraction of each source's scored rows, the highest scores (ties at the cutoff kept)
    top_fraction: Optional[float] = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one(self) -> "ClipScoreConfig":
        if self.min is None and self.top_fraction is None:
            raise ValueError("set min and/or top_fraction")
        return self


class ClipScoreFilter(Enricher):
    """Thresholds on ``score_clip``: ``min`` per chunk, ``top_fraction`` as a per-source cutoff after the map stage."""

    Config = ClipScoreConfig
    section = "clip_score"
    SCORE = SCORE_CLIP
    stage = STAGE_FILTER
    own_stage = False
    kinds = ("image_text",)

    cfg: ClipScoreConfig

    @classmethod
    def check(cls, cfg: ClipScoreConfig, recipe: Any, field: str, gpus: int) -> None:
        super().check(cfg, recipe, field, gpus)
        emb = recipe.enrich.get("embed")
        if emb is None or not emb.score_text:
            raise RecipeError("needs an enrich.embed section (with score_text: true) to compute score_clip", field=field)

    @classmethod
    def thresholds(cls, cfg: ClipScoreConfig) -> list[dict[str, Any]]:
        return [{"key": "clip_score", "column": SCORE_CLIP, "op": ">=", "value": cfg.min}] if cfg.min is not None else []

    def __call__(self, table: pa.Table) -> pa.Table:
        return check(table, SCORE_CLIP, ">=", self.cfg.min, self.stage, "clip_score")

    # -- global cutoff (curation.engine.cutoffs) -----------------------------
    def global_cutoff(self) -> Optional[dict[str, str]]:
        return {"column": SCORE_CLIP} if self.cfg.top_fraction is not None else None

    def keep(self, n: int) -> Optional[int]:
        """How many of ``n`` scored rows ``top_fraction`` keeps (at least one); the engine finds the cutoff score."""
        if self.cfg.top_fraction is None:
            return None
        return max(1, math.ceil(self.cfg.top_fraction * n))

    def apply_cutoff(self, table: pa.Table, cut: float) -> pa.Table:
        return check(table, SCORE_CLIP, ">=", cut, self.stage, "clip_score_top_fraction")
