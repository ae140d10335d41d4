"""A small vision-language model for ablations: ViT -> pixel shuffle -> linear -> decoder-only LM.

The shape follows SmolVLM/Idefics3 at toy scale: every image tile (and every
video frame) is encoded on its own by a ViT, its patch grid is folded by the
tokenization package's ``pixel_shuffle`` (r x r neighbours -> one token with
r^2 times the channels), projected to the LM width, and written into the text
sequence at the ``<image>`` placeholder positions. The LM is a pre-norm
decoder with rotary positions, so any sequence length works and the positional
tokens (``<row_1_col_1>`` ...) carry the only explicit 2-D layout signal.
"""
from __future__ import annotations

import inspect
import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from tokenization import pixel_shuffle

IGNORE_INDEX = -100


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of a from-scratch model; a pretrained backbone overrides its half."""

    vocab_size: int
    image_token_id: int
    tile: int = 64
    patch: int = 8
    pixel_shuffle: int = 2
    vision_width: int = 96
    vision_depth: int = 2
    vision_heads: int = 4
    width: int = 128
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    rope_theta: float = 10000.0
    tie_embeddings: bool = True

    @property
    def grid(self) -> int:
        return self.tile // self.patch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- vision
class _ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(att.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class VisionEncoder(nn.Module):
    """Patch embedding plus bidirectional transformer blocks; returns one feature per patch, row-major."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.width = cfg.vision_width
        self.patch_embed = nn.Conv2d(3, cfg.vision_width, kernel_size=cfg.patch, stride=cfg.patch)
        self.pos = nn.Parameter(torch.randn(1, cfg.grid * cfg.grid, cfg.vision_width) * 0.02)
        self.blocks = nn.ModuleList(_ViTBlock(cfg.vision_width, cfg.vision_heads, cfg.mlp_ratio) for _ in range(cfg.vision_depth))
        self.norm = nn.LayerNorm(cfg.vision_width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class PretrainedVision(nn.Module):
    """A local transformers vision tower (SigLIP, CLIP, ...) behind the same interface as :class:`VisionEncoder`."""

    def __init__(self, model: nn.Module, image_size: int, tile: int) -> None:
        super().__init__()
        self.model = model
        cfg = model.config
        self.width = int(cfg.hidden_size)
        self.interpolate = tile != image_size

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate else {}
        out = self.model(pixel_values=pixels, **kwargs)
        hidden = out.last_hidden_state
        n = hidden.shape[1]
        side = math.isqrt(n)
        if side * side != n:  # a CLS token in front (CLIP-style towers): drop it, keep the patch grid
            hidden = hidden[:, 1:]
        return hidden


# --------------------------------------------------------------------------- language model
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x * self.weight).to(dtype)


def _rope(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [B, 1, L, head_dim] for integer positions [B, L]."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    ang = positions.float()[..., None] * inv
    ang = torch.cat([ang, ang], dim=-1)[:, None]
    return ang.cos(), ang.sin()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class _LMBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.norm2 = RMSNorm(dim)
        hidden = int(dim * mlp_ratio * 2 / 3)
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if cache is not None:
            k = torch.cat([cache[0], k], dim=2)
            v = torch.cat([cache[1], v], dim=2)
        if mask is None:
            att = F.scaled_dot_product_attention(q, k, v, is_causal=n > 1)
        else:
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out(att.transpose(1, 2).reshape(b, n, d))
        gate, up = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        x = x + self.down(F.silu(gate) * up)
        return x, (k, v)


class DecoderLM(nn.Module):
    """A small causal LM (RMSNorm, rotary positions, SwiGLU) that reads embeddings, so images can be spliced in."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.width = cfg.width
        self.theta = cfg.rope_theta
        self.head_dim = cfg.width // cfg.heads
        self.embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.blocks = nn.ModuleList(_LMBlock(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = RMSNorm(cfg.width)
        self.head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed

    def forward(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: list | None = None,
    ) -> tuple[torch.Tensor, list]:
        cos, sin = _rope(positions, self.head_dim, self.theta)
        cos, sin = cos.to(embeds.dtype), sin.to(embeds.dtype)
        x = embeds
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cos, sin, mask, None if cache is None else cache[i])
            new_cache.append(kv)
        return self.head(self.norm(x)), new_cache


class PretrainedLM(nn.Module):
    """A local transformers causal LM behind the same interface as :class:`DecoderLM`.

    transformers renamed ``past_key_values`` to ``cache`` (5.x); the keyword is
    picked from the model's own signature so both generations work.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.width = int(model.config.hidden_size)
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def forward(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: Any = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        out = self.model(
            inputs_embeds=embeds,
            position_ids=positions,
            attention_mask=attention_mask,
            use_cache=True,
            **{self._cache_kw: cache},
        )
        return out.logits, getattr(out, self._cache_kw, None)


# --------------------------------------------------------------------------- the VLM
class TinyVLM(nn.Module):
    """Vision encoder + pixel-shuffle connector + decoder LM over interleaved text and image tokens."""

    def __init__(self, cfg: ModelConfig, vision: nn.Module | None = None, lm: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = vision if vision is not None else VisionEncoder(cfg)
        self.lm = lm if lm is not None else DecoderLM(cfg)
        r = cfg.pixel_shuffle
        self.connector = nn.Linear(self.vision.width * r * r, self.lm.width, bias=False)
        self._init_own()

    def _init_own(self) -> None:
        modules = [self.connector]
        if isinstance(self.vision, VisionEncoder):
            modules.append(self.vision)
        if isinstance(self.lm, DecoderLM):
            modules.append(self.lm)
        for root in modules:
            for m in root.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    nn.init.normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Embedding):
                    nn.init.normal_(m.weight, std=0.02)

    # -- image path -----------------------------------------------------------
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, T, T] tiles (or video frames, already averaged) -> [N, S, width] visual tokens, S = (T/patch/r)^2."""
        feats = self.vision(pixels)
        return self.connector(pixel_shuffle(feats, self.cfg.pixel_shuffle))

    def embed(self, input_ids: torch.Tensor, pixels: torch.Tensor | None) -> torch.Tensor:
        """Text embeddings with every ``<image>`` position overwritten by a visual token, in order."""
        table = self.lm.get_input_embeddings()
        embeds = table(input_ids)
        slots = input_ids == self.cfg.image_token_id
        n_slots = int(slots.sum().item())
        if pixels is None or pixels.numel() == 0:
            if n_slots:
                raise ValueError(f"{n_slots} <image> tokens but no pixels")
            return embeds
        visual = self.encode_images(pixels).to(embeds.dtype)
        if visual.shape[0] * visual.shape[1] != n_slots:
            raise ValueError(
                f"{n_slots} <image> tokens in the text but the encoder produced {visual.shape[0]} x {visual.shape[1]} visual tokens"
            )
        return embeds.masked_scatter(slots[..., None], visual.reshape(-1, embeds.shape[-1]))

    # -- training -------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        pixels: torch.Tensor | None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Right-padded batch -> (completion-only loss, logits). Labels are -100 outside the answers."""
        embeds = self.embed(input_ids, pixels)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        logits, _ = self._lm(embeds, positions, None, None, None)
        loss = None
        if labels is not None:
            loss = completion_loss(logits, labels)
        return loss, logits

    def _lm(self, embeds, positions, mask, cache, attention_mask):
        if isinstance(self.lm, PretrainedLM):
            return self.lm(embeds, positions, cache=cache, attention_mask=attention_mask)
        return self.lm(embeds, positions, mask, cache)

    # -- decoding -------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixels: torch.Tensor | None,
        max_new_tokens: int,
        stop_ids: set[int] | frozenset[int],
    ) -> list[list[int]]:
        """Greedy decoding of a left-padded batch with a key/value cache; stops at any of ``stop_ids``."""
        b, n = input_ids.shape
        device = input_ids.device
        embeds = self.embed(input_ids, pixels)
        keep = attention_mask.bool()
        positions = (keep.long().cumsum(-1) - 1).clamp_min(0)
        causal = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        mask = (causal[None] & keep[:, None, :])[:, None]
        mask = mask | torch.eye(n, dtype=torch.bool, device=device)  # padded rows attend to themselves: no NaN
        logits, cache = self._lm(embeds, positions, mask, None, keep.long())
        next_pos = positions[:, -1] + 1
        out = torch.zeros(b, 0, dtype=torch.long, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        stop = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
        table = self.lm.get_input_embeddings()
        for _ in range(max_new_tokens):
            nxt = logits[:, -1].float().argmax(-1)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done = done | torch.isin(nxt, stop)
            if bool(done.all()):
                break
            keep = torch.cat([keep, torch.ones(b, 1, dtype=torch.bool, device=device)], dim=1)
            step_mask = keep[:, None, None, :]
            logits, cache = self._lm(table(nxt[:, None]), next_pos[:, None], step_mask, cache, keep.long())
            next_pos = next_pos + 1
        result = []
        stop_set = set(int(s) for s in stop_ids)
        for row in out.tolist():
            cut = next((i for i, t in enumerate(row) if t in stop_set), len(row))
            result.append(row[:cut])
        return result


def completion_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy over labelled (answer) positions only; prompt and image positions carry -100."""
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shift_labels = labels[:, 1:].reshape(-1)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
