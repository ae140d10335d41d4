"""From a manifest to training batches under one tokenization strategy.

Two layers, so a grid pays for decoding once:

- :class:`TaskSource` reads a manifest once per grid: it keeps the usable rows
  (a decodable image or video plus an answer), splits them into train and
  validation, and caches decoded media.
- :class:`RunData` applies one run's strategy and tokenizer through
  :class:`tokenization.collate.SmolVLMCollator` (the one way batches are built:
  splitting, prompts, frame sampling/averaging, special tokens, completion-only
  labels) and collates batches: right-padded for training, left-padded prompts
  for greedy decoding; tiles stay uint8 and flat until the device normalizes them.

The chat layout is SmolVLM's: ``<|im_start|>User:{media}{question}<end_of_utterance>\\nAssistant:``
followed by `` {answer}<end_of_utterance>``; only the latter is labelled.
"""
from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl
import torch
from PIL import Image
from tokenizers import Tokenizer

import tokenization
from ablations.grid import RunSettings
from manifests.errors import UserError
from tokenization.base_tokenizer import BASE_SPECIAL_TOKENS, load_tokenizer, save_tokenizer, train_bpe
from tokenization.collate import IGNORE_INDEX, Sample, SmolVLMCollator

log = logging.getLogger(__name__)

PAD_TOKEN = "<|endoftext|>"
START_TOKEN = "<|im_start|>"
EOU_TOKEN = "<end_of_utterance>"
DEFAULT_QUESTIONS = {"image": "Describe the image.", "video": "Describe the video."}
VISUAL_KINDS = ("image", "page", "video")
#: decoded images and encoded uint8 tiles are cached in memory up to this many bytes each; beyond the budget
#: they are recomputed per batch. SMOLCURATE_ABLATE_CACHE_GB raises it on big machines.
CACHE_BYTES = int(float(os.environ.get("SMOLCURATE_ABLATE_CACHE_GB", "4")) * (1 << 30))


class _BoundedCache:
    """Keeps entries until a byte budget is spent, then stops storing (no eviction churn)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self._store: dict[Any, Any] = {}

    def get(self, key: Any) -> Any:
        return self._store.get(key)

    def put(self, key: Any, value: Any, nbytes: int) -> None:
        if key not in self._store and self.used + nbytes <= self.max_bytes:
            self._store[key] = value
            self.used += nbytes


@dataclass
class RawSample:
    """One usable manifest row: its first visual media reference, the question and the answer."""

    id: str
    kind: str  # image | video
    ref: dict[str, Any]
    question: str
    answer: str


# --------------------------------------------------------------------------- the task, once per grid
class TaskSource:
    """Usable rows of a manifest, split into train / validation, with decoded media cached."""

    def __init__(self, path: Path, train: list[RawSample], val: list[RawSample], info: dict[str, Any], max_side: int | None) -> None:
        self.path = path
        self.train = train
        self.val = val
        self.info = info
        self.max_side = max_side
        self._images = _BoundedCache(CACHE_BYTES)
        self._frames = _BoundedCache(CACHE_BYTES)
        self._spill: Path | None = None

    @classmethod
    def from_manifest(cls, path: str | Path, n_train: int, n_val: int, max_side: int | None = None) -> "TaskSource":
        """Select usable rows with one polars query; UserError when none are usable."""
        from manifests.reader import open_manifest

        m = open_manifest(path)
        needed = {"id", "media"}
        missing = needed - set(m.schema.names)
        if missing:
            raise UserError(f"manifest {m.path} lacks column(s) {sorted(missing)}", field="task.manifest")
        cols = [c for c in ("id", "modality", "media", "text", "turns", "meta") if c in m.schema.names]
        lf = m.lazy().select(cols)
        role = pl.element().struct.field("role")
        content = pl.element().struct.field("content")
        exprs = [
            pl.col("media").list.len().fill_null(0).alias("_n_media"),
            pl.col("media").list.eval(pl.element().struct.field("kind").is_in(list(VISUAL_KINDS))).list.any().alias("_visual"),
        ]
        if "turns" in cols:
            exprs += [
                pl.col("turns").list.eval(content.filter(role == "user")).list.first().alias("_q"),
                pl.col("turns").list.eval(content.filter(role == "assistant")).list.first().alias("_a"),
            ]
        else:
            exprs += [pl.lit(None, pl.String).alias("_q"), pl.lit(None, pl.String).alias("_a")]
        exprs.append(pl.col("meta").str.json_path_match("$.split").alias("_split") if "meta" in cols else pl.lit(None, pl.String).alias("_split"))
        text = pl.col("text") if "text" in cols else pl.lit(None, pl.String)
        df = (
            lf.with_columns(exprs)
            .with_columns(pl.coalesce(pl.col("_a"), text).str.strip_chars().alias("_answer"))
            .filter(
                (pl.col("_n_media") > 0)
                & pl.col("_visual").fill_null(False)
                & pl.col("_answer").is_not_null()
                & (pl.col("_answer").str.len_chars() > 0)
            )
            .select("id", "media", "_q", "_answer", "_split")
            .collect()
        )
        total = m.num_rows
        if df.height == 0:
            raise UserError(
                f"manifest {m.path} has no usable rows: each row needs an image, page or video in `media` "
                f"and an answer (`text` or an assistant turn); {total} rows, none qualify",
                field="task.manifest",
            )
        rows = _to_samples(df)
        train, val = _split(rows, df["_split"].to_list(), n_train, n_val)
        if not train or not val:
            raise UserError(
                f"manifest {m.path} has {len(rows)} usable rows: not enough for a training and a validation split",
                field="task.manifest",
            )
        info = {"manifest": str(m.path), "rows": total, "usable": len(rows), "train": len(train), "val": len(val),
                "sources": m.info.get("extra", {}).get("ablation_task", {}).get("sources", {})}
        return cls(Path(m.path), train, val, info, max_side)

    def image(self, sample: RawSample) -> Image.Image:
        """The decoded RGB image (cached), reduced to ``max_side`` when it is larger (resizing happens later anyway)."""
        got = self._images.get(sample.id)
        if got is None:
            from media.refs import decode_image_ref

            got = decode_image_ref(sample.ref, max_side=self.max_side)
            self._images.put(sample.id, got, got.width * got.height * 3)
        return got

    def video_frames(self, sample: RawSample, indices: Sequence[int]) -> np.ndarray:
        """uint8 [n, H, W, 3] frames at ``indices`` of the video file (a clip's are shifted to its start by the collator)."""
        key = (sample.id, tuple(int(i) for i in indices))
        got = self._frames.get(key)
        if got is None:
            from media import read_video_frames

            got = read_video_frames(self._video_path(sample), np.asarray(indices), rotation=sample.ref.get("rotation"))
            self._frames.put(key, got, got.nbytes)
        return got

    def video_meta(self, sample: RawSample) -> tuple[int, float, float | None]:
        """(frames, fps, duration) from the manifest, probing the file only when the row lacks them."""
        ref = sample.ref
        if ref.get("frames") and ref.get("fps"):
            return int(ref["frames"]), float(ref["fps"]), ref.get("duration")
        from media import probe_video

        meta = probe_video(self._video_path(sample))
        sample.ref = {**ref, **{k: meta[k] for k in ("frames", "fps", "duration", "rotation")}}
        return int(meta["frames"]), float(meta["fps"]), meta.get("duration")

    def _video_path(self, sample: RawSample) -> str:
        """Video decoders read files: a video embedded as bytes is spilled to a temporary file once."""
        uri = sample.ref.get("uri")
        if uri:
            return uri[7:] if uri.startswith("file://") else uri
        data = sample.ref.get("bytes")
        if data is None:
            raise UserError(f"row {sample.id}: video reference has neither uri nor bytes", field="media")
        if self._spill is None:
            import atexit
            import shutil
            import tempfile

            self._spill = Path(tempfile.mkdtemp(prefix="smolcurate-ablate-"))
            atexit.register(shutil.rmtree, self._spill, True)
        path = self._spill / f"{sample.id}.{(sample.ref.get('format') or 'mp4').lower()}"
        if not path.is_file():
            path.write_bytes(bytes(data))
        sample.ref = {**sample.ref, "uri": str(path), "bytes": None}
        return str(path)

    def texts(self) -> list[str]:
        """Training text the base tokenizer learns from (train split only, so validation stays unseen)."""
        out = []
        for s in self.train:
            out += [s.question, s.answer]
        return out


def _to_samples(df: pl.DataFrame) -> list[RawSample]:
    out = []
    for rid, media, q, a in zip(df["id"], df["media"], df["_q"], df["_answer"]):
        ref = next(m for m in media if m and m.get("kind") in VISUAL_KINDS)
        k = "video" if ref["kind"] == "video" else "image"
        question = (q or "").replace("<image>", "").replace("<video>", "").strip() or DEFAULT_QUESTIONS[k]
        out.append(RawSample(id=rid, kind=k, ref=ref, question=question, answer=a))
    return out


def _split(rows: list[RawSample], splits: list[str | None], n_train: int, n_val: int) -> tuple[list[RawSample], list[RawSample]]:
    """Honour a ``meta.split`` of train/val when rows carry one; otherwise a stable hash of the id decides."""
    marked = [s for s in splits if s in ("train", "val", "validation", "test")]
    if marked and any(s != "train" for s in marked):
        train = [r for r, s in zip(rows, splits) if s not in ("val", "validation", "test")]
        val = [r for r, s in zip(rows, splits) if s in ("val", "validation", "test")]
        return train[:n_train], val[:n_val]
    order = sorted(range(len(rows)), key=lambda i: hashlib.blake2b(rows[i].id.encode(), digest_size=8).digest())
    n_val = min(n_val, max(1, len(rows) // 5)) if len(rows) > 1 else 0
    val = [rows[i] for i in order[:n_val]]
    train = [rows[i] for i in order[n_val : n_val + n_train]]
    return train, val


# --------------------------------------------------------------------------- one run
def strategy_for(s: RunSettings, patch: int | None = None) -> tokenization.Strategy:
    """The tokenization strategy of a run: the preset with the run's axes applied."""
    return tokenization.get_strategy(
        s.strategy,
        tile=s.tile,
        patch=patch or s.patch,
        longest_edge=s.longest_edge,
        pixel_shuffle=s.pixel_shuffle,
        do_split=s.do_split,
        positional=s.positional,
        video_max_frames=s.video_frames,
        video_longest_edge=s.tile,
        frame_averaging=s.frame_averaging,
        media_intro=s.intro_outro,
        media_outro=s.intro_outro,
        system_prompt=s.system_prompt,
    )


def base_tokenizer(source: TaskSource, vocab_size: int, cache_dir: Path) -> Tokenizer:
    """A byte-level BPE trained on the task's training text, shared by every run of a grid with this vocabulary size."""
    path = cache_dir / f"bpe-{vocab_size}.json"
    if path.is_file():
        return load_tokenizer(path)
    tok = train_bpe(source.texts(), vocab_size=vocab_size, min_frequency=2)
    save_tokenizer(tok, path)
    return tok


def ensure_chat_tokens(tok: Tokenizer) -> Tokenizer:
    """Pretrained tokenizers may lack SmolVLM's chat markers; add the missing ones as special tokens."""
    from tokenizers import AddedToken

    missing = [t for t in BASE_SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    return tok


@dataclass
class Encoded:
    """One sample under a run's strategy: token ids, labels and where its tiles come from."""

    input_ids: np.ndarray  # prompt + answer
    labels: np.ndarray
    prompt_len: int
    tiles: int
    answer: str


@dataclass
class Batch:
    """Collated tensors. ``pixels`` stay uint8 until :meth:`to` moves them and normalizes on the device."""

    input_ids: torch.Tensor
    labels: torch.Tensor | None
    attention_mask: torch.Tensor
    pixels: torch.Tensor  # uint8 [tiles, 3, T, T] before .to(), float32 normalized after
    answers: list[str] = field(default_factory=list)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def to(self, device: torch.device) -> "Batch":
        """Tensors on ``device``; tiles normalized there as ``(v/255 - mean) / std`` (4x less to copy than float)."""
        nb = device.type == "cuda"
        pix = self.pixels.to(device, non_blocking=nb)
        if pix.dtype == torch.uint8:
            mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=device).view(1, 3, 1, 1)
            pix = (pix.float() / 255.0 - mean) / std
        return Batch(
            self.input_ids.to(device, non_blocking=nb),
            None if self.labels is None else self.labels.to(device, non_blocking=nb),
            self.attention_mask.to(device, non_blocking=nb),
            pix,
            self.answers,
            self.mean,
            self.std,
        )


class SampleSet:
    """Encoded samples of one split (through the run's SmolVLMCollator); uint8 tiles cached within the byte budget."""

    def __init__(self, data: "RunData", samples: list[RawSample], full_loss: bool = False) -> None:
        self.data = data
        self.samples: list[RawSample] = []
        self.encoded: list[Encoded] = []
        self._pixels = _BoundedCache(CACHE_BYTES)
        self.failed = 0

        def encode_or_none(s: RawSample) -> Sample | None:
            try:
                return data.encode(s)
            except Exception as exc:  # an undecodable row is skipped, never fatal: counted and logged
                log.warning("skipping %s: %s", s.id, exc)
                return None

        workers = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)))
        if workers > 1 and len(samples) > 16:
            with ThreadPoolExecutor(max_workers=workers) as pool:  # PIL resizes and video decoding release the GIL
                encoded = list(pool.map(encode_or_none, samples))
        else:
            encoded = [encode_or_none(s) for s in samples]
        for raw, enc in zip(samples, encoded):
            if enc is None:
                self.failed += 1
                continue
            labelled = np.flatnonzero(enc.labels != IGNORE_INDEX)
            prompt_len = int(labelled[0]) if labelled.size else len(enc)
            labels = enc.labels
            if full_loss:  # loss=full: every text token is a label (image tokens, markers and padding never are)
                labels = np.where(np.isin(enc.input_ids, data.collator._never_label), IGNORE_INDEX, enc.input_ids)
            self.samples.append(raw)
            self.encoded.append(Encoded(enc.input_ids, labels, prompt_len, int(enc.tiles.shape[0]), raw.answer))
            self._pixels.put(len(self.samples) - 1, enc.tiles, enc.tiles.nbytes)

    def __len__(self) -> int:
        return len(self.encoded)

    def pixels(self, i: int) -> np.ndarray:
        """uint8 tiles of sample ``i``."""
        got = self._pixels.get(i)
        if got is None:
            got = self.data.encode(self.samples[i]).tiles
        return got

    def batch(self, indices: Sequence[int] | np.ndarray, for_generation: bool = False) -> Batch:
        """Collate samples with the run's collator: right-padded for training, left-padded prompts for generation."""
        items = [self.encoded[int(i)] for i in indices]
        tiles = [self.pixels(int(i)) for i in indices]
        if for_generation:
            col = self.data.generation_collator
            parts = [Sample(None, e.input_ids[: e.prompt_len], e.labels[: e.prompt_len], t, 1, 0) for e, t in zip(items, tiles)]
        else:
            col = self.data.collator
            parts = [Sample(None, e.input_ids, e.labels, t, 1, 0) for e, t in zip(items, tiles)]
        out = col.collate(parts)
        st = self.data.strategy
        pixels = out.get("pixel_values")
        if pixels is None:
            pixels = torch.zeros((0, 3, st.tile, st.tile), dtype=torch.uint8)
        return Batch(out["input_ids"], None if for_generation else out["labels"], out["attention_mask"], pixels,
                     [e.answer for e in items], tuple(st.image_mean), tuple(st.image_std))


#: the runner's chat layout: ``<|im_start|>User:{media}{question}<end_of_utterance>\nAssistant: {answer}<end_of_utterance>``
#: (SmolVLM's, with one ``<|im_start|>`` per prompt turn and nothing after the answer's end of utterance).
ABLATION_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] != 'assistant' %}<|im_start|>{% endif %}{{ m['role'] | capitalize }}"
    "{% if m['content'][0]['type'] in ('image', 'video') %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% elif p['type'] == 'image' %}{{ '<image>' }}"
    "{% else %}{{ '<video>' }}{% endif %}{% endfor %}<end_of_utterance>{% if m['role'] != 'assistant' %}{{ '\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


class RunData:
    """A task seen through one run's strategy and tokenizer; samples and batches come from a SmolVLMCollator."""

    def __init__(self, source: TaskSource, settings: RunSettings, tokenizer: Tokenizer, patch: int | None = None) -> None:
        self.source = source
        self.settings = settings
        self.strategy = strategy_for(settings, patch)
        self.tokenizer = ensure_chat_tokens(self.strategy.build_tokenizer(tokenizer))
        tok = self.tokenizer
        common = dict(chat_template=ABLATION_CHAT_TEMPLATE, pixel_dtype="uint8", flat_pixels=True,
                      video_reader=self._read_frames)
        self.collator = SmolVLMCollator(self.strategy, tok, **common)
        self.generation_collator = SmolVLMCollator(self.strategy, tok, padding_side="left", for_generation=True, **common)
        self.image_token_id = tok.token_to_id(self.strategy.image_token)
        self.pad_id = tok.token_to_id(PAD_TOKEN)
        self.stop_ids = frozenset(i for i in (tok.token_to_id(EOU_TOKEN), self.pad_id) if i is not None)
        self._by_id: dict[str, RawSample] = {}
        self.train = SampleSet(self, source.train, full_loss=settings.loss == "full")  # validation: answer tokens only
        self.val = SampleSet(self, source.val)
        if len(self.train) == 0 or len(self.val) == 0:
            raise UserError(
                f"no decodable samples left in the {'training' if len(self.train) == 0 else 'validation'} split "
                f"of {source.path} ({self.train.failed + self.val.failed} failed to decode)",
                field="task.manifest",
            )
        both = self.train.encoded + self.val.encoded
        self.stats = {
            "visual_tokens": float(np.mean([e.tiles for e in both])) * self.strategy.image_seq_len,
            "seq_len": float(np.mean([len(e.input_ids) for e in both])),
            "prompt_len": float(np.mean([e.prompt_len for e in both])),
        }

    # -- samples ---------------------------------------------------------------
    def row(self, sample: RawSample) -> dict[str, Any]:
        """The manifest-like row the collator encodes: decoded image (cached by the source) or the video reference."""
        turns = [{"role": "user", "content": sample.question}, {"role": "assistant", "content": sample.answer}]
        if sample.kind == "image":
            return {"id": sample.id, "images": [self.source.image(sample)], "turns": turns}
        total, fps, duration = self.source.video_meta(sample)
        self._by_id[sample.id] = sample
        ref = {**sample.ref, "frames": total, "fps": fps, "duration": duration, "sample_id": sample.id}
        return {"id": sample.id, "images": [], "media": [ref], "turns": turns}

    def _read_frames(self, ref: dict[str, Any], indices: np.ndarray) -> np.ndarray:
        return self.source.video_frames(self._by_id[ref["sample_id"]], indices)

    def encode(self, sample: RawSample) -> Sample:
        """One sample through the collator: ids, completion-only labels, uint8 tiles."""
        return self.collator.encode(self.row(sample))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    def describe(self) -> dict[str, Any]:
        return {
            **self.source.info,
            "strategy": self.strategy.to_dict(),
            "vocab_size": self.tokenizer.get_vocab_size(),
            "skipped_undecodable": self.train.failed + self.val.failed,
            **{k: round(v, 2) for k, v in self.stats.items()},
        }

    def save_tokenizer(self, run_dir: Path) -> None:
        save_tokenizer(self.tokenizer, run_dir / "tokenizer.json")
