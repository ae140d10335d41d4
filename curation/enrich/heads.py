"""Aesthetic and NSFW scores: small linear / MLP heads over ``emb_image``, as LAION's predictors are.

A head is a file of weights: a torch state dict (``.pt``/``.pth``/``.bin``),
``.safetensors`` or ``.npz``, holding one or more linear layers
(``weight [out, in]`` + ``bias``). Layers run in the order of their key
prefixes (``layers.0``, ``layers.2``, ...; a single ``weight``/``bias`` pair is
a linear head). LAION's aesthetic predictor v2 (``sac+logos+ava1-l14-linearMSE.pth``)
is such an MLP without activations between its layers (its dropouts do nothing
at inference), v1 is a single linear layer; both take the L2-normalised CLIP
ViT-L/14 embedding. ``activation`` puts ReLU/GELU between layers for other
heads; ``output: sigmoid`` turns a logit into a probability (an NSFW head).

The heads run as numpy matmuls in the fused CPU stage after the embedding
stage: no second forward pass, no model stage of their own.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import numpy as np
import pyarrow as pa
from pydantic import Field

from curation.enrich.base import EnrichConfig, Enricher
from curation.enrich.clip import EMB_IMAGE, embeddings
from curation.filters.common import STAGE_FILTER, check, set_column
from manifests.errors import RecipeError


class HeadConfig(EnrichConfig):
    """``enrich.aesthetic`` / ``enrich.nsfw``: a head file over ``enrich.embed``'s embeddings and its thresholds."""

    #: weights file (.pt, .pth, .bin, .safetensors, .npz)
    head: str
    activation: Literal["none", "relu", "gelu"] = "none"
    output: Literal["raw", "sigmoid"] = "raw"
    #: drop rows scoring below / above these (null: score only)
    min: Optional[float] = None
    max: Optional[float] = None
    #: renormalise embeddings to unit length before the head (LAION's heads expect it)
    normalize: bool = True
    batch_size: int = Field(4096, ge=1, le=1 << 20)

    PATH_FIELDS: ClassVar[tuple[str, ...]] = ("head",)


def load_head(path: str, field: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(weight [out, in] float32, bias [out])] in layer order; RecipeError for a missing or unusable file."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{path!r} does not exist" if not p.exists() else f"{path!r} is not a file", field=field)
    try:
        if p.suffix == ".npz":
            with np.load(p) as z:
                state = {k: np.asarray(z[k]) for k in z.files}
        elif p.suffix == ".safetensors":
            from safetensors.numpy import load_file

            state = dict(load_file(str(p)))
        else:
            import torch

            raw = torch.load(p, map_location="cpu", weights_only=True)
            if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
                raw = raw["state_dict"]
            state = {k: v.detach().float().numpy() for k, v in raw.items() if hasattr(v, "detach")}
    except RecipeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable weights file is a bad recipe field
        raise RecipeError(f"{path!r} is not a weights file ({type(exc).__name__}: {exc})", field=field) from None
    layers: dict[str, dict[str, np.ndarray]] = {}
    for key, value in state.items():
        prefix, _, kind = key.rpartition(".") if "." in key else ("", "", key)
        if kind in ("weight", "bias"):
            layers.setdefault(prefix, {})[kind] = np.asarray(value, np.float32)

    def order(prefix: str) -> tuple:
        return tuple(int(x) if x.isdigit() else x for x in re.split(r"[._]", prefix) if x) if prefix else ()

    out = []
    for prefix in sorted(layers, key=order):
        w, b = layers[prefix].get("weight"), layers[prefix].get("bias")
        if w is None or w.ndim != 2:
            continue
        out.append((w, b if b is not None else np.zeros(w.shape[0], np.float32)))
    if not out:
        raise RecipeError(f"{path!r} holds no linear layers (weight [out, in] + bias)", field=field)
    for (w1, _), (w2, _) in zip(out, out[1:]):
        if w2.shape[1] != w1.shape[0]:
            raise RecipeError(f"{path!r}: layer sizes do not chain ({w1.shape} then {w2.shape})", field=field)
    if out[-1][0].shape[0] != 1:
        raise RecipeError(f"{path!r}: the last layer has {out[-1][0].shape[0]} outputs, a score head has 1", field=field)
    return out


def run_head(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, activation: str, output: str) -> np.ndarray:
    """Scores [n] for embeddings [n, d].

    float64 matmuls rounded to float32 at the end: BLAS blocking differs with
    the thread count (Ray workers run one thread), and float64 keeps those
    differences far below what float32 can show, so both engines agree.
    """
    x = np.asarray(x, np.float64)
    for j, (w, b) in enumerate(layers):
        x = x @ w.T.astype(np.float64) + b.astype(np.float64)
        if j < len(layers) - 1:
            if activation == "relu":
                x = np.maximum(x, 0)
            elif activation == "gelu":
                x = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    s = x[:, 0]
    if output == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-s))
    return s.astype(np.float32)


class _HeadScore(Enricher):
    """A head over ``emb_image``: writes ``score_<section>``, drops by ``min`` / ``max``."""

    Config = HeadConfig
    stage = STAGE_FILTER
    own_stage = False
    kinds = ("images", "image_text")
    SCORE: ClassVar[str] = ""

    cfg: HeadConfig

    @classmethod
    def check(cls, cfg: HeadConfig, recipe: Any, field: str, gpus: int) -> None:
        super().check(cfg, recipe, field, gpus)
        emb = recipe.enrich.get("embed")
        if emb is None:
            raise RecipeError("needs an enrich.embed section (the head scores its image embeddings)", field=field)
        layers = load_head(cfg.path(recipe, "head"), f"{field}.head")
        from curation.enrich.models import describe_model

        info = describe_model(emb.path(recipe, "model"), "enrich.embed.model")
        if layers[0][0].shape[1] != info.embed_dim:
            raise RecipeError(f"the head takes {layers[0][0].shape[1]}-d embeddings but enrich.embed.model embeds "
                              f"{info.embed_dim}-d", field=f"{field}.head")

    @classmethod
    def thresholds(cls, cfg: HeadConfig) -> list[dict[str, Any]]:
        out = []
        if cfg.min is not None:
            out.append({"key": f"min_{cls.section}", "column": cls.SCORE, "op": ">=", "value": cfg.min})
        if cfg.max is not None:
            out.append({"key": f"max_{cls.section}", "column": cls.SCORE, "op": "<=", "value": cfg.max})
        return out

    def setup(self) -> None:
        self.layers = load_head(self.cfg.path(self.recipe, "head"), f"enrich.{self.section}.head")

    def __call__(self, table: pa.Table) -> pa.Table:
        if EMB_IMAGE not in table.column_names:  # no row of this batch reached the embedding stage
            return set_column(table, self.SCORE, pa.nulls(table.num_rows, pa.float32()))
        emb, valid = embeddings(table)
        score = np.full(table.num_rows, np.nan, np.float32)
        if valid.any():
            x = emb[valid] if self.cfg.normalize else _raw(table)[valid]
            score[valid] = run_head(self.layers, x, self.cfg.activation, self.cfg.output)
        table = set_column(table, self.SCORE, pa.array(score, pa.float32(), mask=np.isnan(score)))
        table = check(table, self.SCORE, ">=", self.cfg.min, self.stage, f"min_{self.section}")
        return check(table, self.SCORE, "<=", self.cfg.max, self.stage, f"max_{self.section}")


def _raw(table: pa.Table) -> np.ndarray:
    import pyarrow.compute as pc

    col = table.column(EMB_IMAGE).combine_chunks()
    valid = col.is_valid().to_numpy(zero_copy_only=False).astype(bool)
    d = int(pc.list_value_length(col).to_numpy(zero_copy_only=False)[valid][0])
    out = np.zeros((len(col), d), np.float32)
    out[valid] = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, d)
    return out


class AestheticScore(_HeadScore):
    """LAION-style aesthetic predictor: ``score_aesthetic`` (v2 scale: about 1-10)."""

    section = "aesthetic"
    SCORE = "score_aesthetic"
    columns: ClassVar[dict[str, pa.DataType]] = {"score_aesthetic": pa.float32()}


class NsfwScore(_HeadScore):
    """NSFW head: ``score_nsfw`` (a probability with ``output: sigmoid``); drop with ``max``."""

    section = "nsfw"
    SCORE = "score_nsfw"
    columns: ClassVar[dict[str, pa.DataType]] = {"score_nsfw": pa.float32()}
