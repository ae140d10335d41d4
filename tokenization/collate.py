"""From manifest rows to training batches: SmolVLM's processor output, exactly, plus labels and packing.

``SmolVLMCollator(strategy, tokenizer)`` is a DataLoader ``collate_fn`` for rows
as ``Manifest.to_torch(decode="pil")`` yields them (``decode=False`` rows work
too: the collator then decodes the media references itself). Per row it

1. builds HF chat messages from ``turns`` (or a caption row's ``text``), with the
   images at their ``<image>`` placeholders or, without any, at the start of the
   first user turn (:mod:`tokenization.chat`);
2. renders them with the tokenizer's chat template (or ``chat_template``), as
   ``processor.apply_chat_template`` does, and remembers where assistant turns are;
3. splits every image with the strategy (the same tiles as ``SmolVLMImageProcessorPil``),
   samples and tiles video frames the way SmolVLM does, and expands each placeholder
   into the strategy's prompt block (``get_image_prompt_string`` / the video template);
4. tokenizes the expanded text once and labels only tokens inside assistant turns,
   never image, marker or padding tokens.

Unpacked batches equal ``SmolVLMProcessor(text=..., images=..., padding=True)``:
``input_ids``/``attention_mask`` padded on the tokenizer's side with its pad id,
``pixel_values`` [B, max tiles, 3, T, T] zero-padded, ``pixel_attention_mask`` [B, max tiles, T, T].
With ``packing`` the samples of a batch are packed into ``max_length`` sequences
(:mod:`tokenization.packing`) and ``position_ids``/``subsequence_ids`` are added.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from manifests.errors import UserError
from tokenization import packing as packing_mod
from tokenization import pixels
from tokenization.chat import SMOLVLM_CHAT_TEMPLATE, ChatRenderer, build_messages
from tokenization.strategy import Strategy, get_strategy

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
VIDEO_TOKEN = "<video>"
OVERLONG = ("drop", "truncate", "raise")
ON_ERROR = ("raise", "skip")


class SampleError(UserError):
    """A row that cannot become a correct sample; the message names the row id."""

    def __init__(self, row_id: Any, reason: str, message: str) -> None:
        super().__init__(f"row {row_id}: {message}")
        self.field = "row"
        self.row_id = row_id
        self.reason = reason
        self.detail = message


# --------------------------------------------------------------------------- tokenizer
@dataclass
class TokenizerSpec:
    """What the collator needs from a tokenizer, whatever form it came in."""

    tokenizer: Any  # tokenizers.Tokenizer with the strategy's special tokens
    pad_id: int
    padding_side: str
    chat_template: str | None
    variables: dict[str, Any]  # special tokens the template may read (bos_token, eos_token, ...)


def _snapshot_dir(path: Path) -> Path:
    """An HF cache repo folder (``models--org--name``) resolves to its ``refs/main`` snapshot."""
    if (path / "tokenizer.json").is_file() or not (path / "snapshots").is_dir():
        return path
    ref = path / "refs" / "main"
    if ref.is_file():
        snap = path / "snapshots" / ref.read_text().strip()
        if snap.is_dir():
            return snap
    snaps = sorted(p for p in (path / "snapshots").iterdir() if (p / "tokenizer.json").is_file())
    if not snaps:
        raise UserError(f"{path}: no snapshot with a tokenizer.json", field="tokenizer")
    return snaps[-1]


def _token_text(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return value.get("content")
    return value


def _dir_template(path: Path, config: Mapping[str, Any]) -> str | None:
    for name in ("chat_template.jinja",):
        if (path / name).is_file():
            return (path / name).read_text()
    if (path / "chat_template.json").is_file():
        got = json.loads((path / "chat_template.json").read_text()).get("chat_template")
        if got:
            return got
    tpl = config.get("chat_template")
    if isinstance(tpl, list):  # named templates: take "default"
        tpl = next((t["template"] for t in tpl if t.get("name") == "default"), tpl[0]["template"] if tpl else None)
    return tpl


def resolve_tokenizer(tokenizer: Any, strategy: Strategy) -> TokenizerSpec:
    """A ``tokenizers.Tokenizer``, a ``PreTrainedTokenizerFast`` or a local directory (HF snapshot included).

    The strategy's special tokens are added when the tokenizer lacks any of them
    (a copy; the input is left unchanged). Nothing is downloaded.
    """
    from tokenizers import Tokenizer

    variables: dict[str, Any] = {}
    template = None
    padding_side = "right"
    pad: str | None = None
    if isinstance(tokenizer, (str, os.PathLike)):
        path = Path(tokenizer)
        if not path.exists():
            raise UserError(f"{path}: no such tokenizer file or directory (nothing is downloaded)", field="tokenizer")
        if path.is_dir():
            path = _snapshot_dir(path)
            cfg_path = path / "tokenizer_config.json"
            config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
            if not (path / "tokenizer.json").is_file():
                raise UserError(f"{path}: no tokenizer.json (only fast tokenizers are supported)", field="tokenizer")
            base = Tokenizer.from_file(str(path / "tokenizer.json"))
            template = _dir_template(path, config)
            padding_side = config.get("padding_side", "right")
            for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
                if _token_text(config.get(key)):
                    variables[key] = _token_text(config.get(key))
            pad = variables.get("pad_token")
        else:
            from tokenization.base_tokenizer import load_tokenizer

            base = load_tokenizer(path)
    elif isinstance(tokenizer, Tokenizer):
        base = tokenizer
    elif hasattr(tokenizer, "backend_tokenizer"):  # transformers' PreTrainedTokenizerFast
        base = tokenizer.backend_tokenizer
        template = getattr(tokenizer, "chat_template", None)
        padding_side = getattr(tokenizer, "padding_side", "right")
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            value = getattr(tokenizer, key, None)
            if value:
                variables[key] = str(value)
        pad = variables.get("pad_token")
    else:
        raise UserError(
            f"expected a tokenizers.Tokenizer, a PreTrainedTokenizerFast or a directory, got {type(tokenizer).__name__}",
            field="tokenizer",
        )
    if any(base.token_to_id(t) is None for t in strategy.special_tokens()):
        base = strategy.build_tokenizer(base)
    if base.truncation is not None or base.padding is not None:
        # a tokenizer.json may carry truncation/padding settings; the processor disables them, and so do we
        # (on a copy): max_length is the collator's to apply, with its own policy
        base = Tokenizer.from_str(base.to_str())
        base.no_truncation()
        base.no_padding()
    pad_id = None
    for cand in ([pad] if pad else []) + ["<|endoftext|>", "<pad>", "<|pad|>", variables.get("eos_token")]:
        if cand and base.token_to_id(cand) is not None:
            pad_id = base.token_to_id(cand)
            break
    if pad_id is None:
        raise UserError("the tokenizer has no pad token (nor <|endoftext|>) to pad batches with", field="tokenizer")
    if padding_side not in ("left", "right"):
        raise UserError(f"padding_side must be left or right, got {padding_side!r}", field="padding_side")
    return TokenizerSpec(base, int(pad_id), padding_side, template, variables)


# --------------------------------------------------------------------------- one sample
@dataclass
class Sample:
    """One encoded row: token ids, labels and its tiles (in the order of the placeholders).

    Inside the collator's own ``__call__`` the image tiles are *pending* (``tiles`` None,
    ``parts`` holding the RGB images and their tile counts): they are split straight into
    the batch tensor, saving a copy. :meth:`SmolVLMCollator.encode` returns them made.
    """

    id: Any
    input_ids: np.ndarray  # int64 [n]
    labels: np.ndarray  # int64 [n]
    tiles: np.ndarray | None  # [tiles, 3, T, T] float32 (uint8 with pixel_dtype="uint8"); None while pending
    images: int  # encoder images: images + kept video frames
    image_tokens: int
    parts: list = field(default_factory=list)  # pending: (RGB image, tiles) pairs and made tile arrays, in order

    def __len__(self) -> int:
        return int(self.input_ids.size)

    @property
    def n_tiles(self) -> int:
        if self.tiles is not None:
            return int(self.tiles.shape[0])
        return sum(p.shape[0] if isinstance(p, np.ndarray) else p[1] for p in self.parts)


def _as_pil(img: Any) -> Image.Image:
    if isinstance(img, Image.Image):
        return img
    if isinstance(img, torch.Tensor):  # decode="tensor": uint8 CHW
        img = img.permute(1, 2, 0).numpy() if img.ndim == 3 and img.shape[0] in (1, 3, 4) else img.numpy()
    if isinstance(img, np.ndarray):
        return Image.fromarray(np.ascontiguousarray(img))
    raise TypeError(f"expected a PIL image, tensor or array, got {type(img).__name__}")


def _video_source(ref: Mapping[str, Any], spill: list[str]) -> str:
    """A path decoders can open: the file, or embedded / container bytes written to a temporary file once."""
    from media.refs import ref_source

    src = ref_source(ref)
    if not isinstance(src, bytes):
        return src
    fd, path = tempfile.mkstemp(prefix="smolcurate-video-", suffix="." + (ref.get("format") or "mp4").lower())
    with os.fdopen(fd, "wb") as fh:
        fh.write(src)
    spill.append(path)
    return path


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized tensor; inside a DataLoader worker it lives in shared memory already, as default_collate
    does, so handing the batch to the main process costs no copy of the (large) pixel tensors."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    elem = torch.empty(0, dtype=dtype)
    storage = elem._typed_storage()._new_shared(int(np.prod(shape)), device=elem.device)
    return elem.new(storage).resize_(*shape)


# --------------------------------------------------------------------------- the collator
class SmolVLMCollator:
    """``collate_fn`` that turns manifest rows into SmolVLM training batches (see the module docstring).

    Options:

    - ``max_length``: a sample longer than this is dropped and counted (``overlong="drop"``,
      the default), truncated at ``max_length`` when no image token is cut (``"truncate"``;
      a cut through an image block drops it instead), or raises (``"raise"``). With packing
      it is also the length of every packed sequence.
    - ``packing``: None, ``"greedy"`` or ``"knapsack"``; ``max_images_per_pack`` caps images
      (an image, or a video frame, counts one) per packed sequence.
    - ``on_error``: ``"raise"`` (default) raises one :class:`SampleError` naming the row id;
      ``"skip"`` logs the row id and reason, counts it in :attr:`counters` and leaves it out.
    - ``pixel_dtype``: ``"float32"`` (normalized, the processor's values) or ``"uint8"``
      (raw tiles, 4x smaller to ship; normalize on the device with :meth:`normalize`).
    - ``caption_prompt``: user text for caption rows (rows with ``text`` and no ``turns``).
    - ``keep_unlabelled``: a row without any assistant token (an image with no text) has
      nothing to learn from and would make an all-masked batch's loss NaN: by default it is
      dropped, logged and counted (``no_labels``); True keeps it.
    - ``add_generation_prompt``/``drop_last_assistant`` (``for_generation=True`` sets both):
      prompts for decoding, without the answer and without labels.
    - ``video_reader(ref, indices) -> uint8 [n, H, W, 3]``: where video frames come from
      (default: :func:`media.read_video_frames` on the reference); indices are frames of the
      file (a clip's offset included). Indices are on the file:
      a clip's are already shifted to its ``start_s``.
    - ``flat_pixels``: ``pixel_values`` as the real tiles only, [sum of tiles, 3, T, T] in
      placeholder order, with ``tiles_per_sample`` [B] instead of ``pixel_attention_mask``
      (nanoVLM's layout; no padded tiles, no per-pixel mask). Not the processor's layout.
    """

    def __init__(
        self,
        strategy: Strategy | str,
        tokenizer: Any,
        chat_template: str | None = None,
        max_length: int | None = None,
        packing: str | None = None,
        *,
        max_images_per_pack: int | None = None,
        overlong: str = "drop",
        on_error: str = "raise",
        pixel_dtype: str = "float32",
        caption_prompt: str = "",
        padding_side: str | None = None,
        for_generation: bool = False,
        video_reader: Callable[[Mapping[str, Any], np.ndarray], np.ndarray] | None = None,
        flat_pixels: bool = False,
        keep_unlabelled: bool = False,
    ) -> None:
        self.strategy = strategy if isinstance(strategy, Strategy) else get_strategy(strategy)
        spec = resolve_tokenizer(tokenizer, self.strategy)
        self.tokenizer = spec.tokenizer
        self.pad_id = spec.pad_id
        self.padding_side = padding_side or spec.padding_side
        if self.padding_side not in ("left", "right"):
            raise UserError(f"must be left or right, got {self.padding_side!r}", field="padding_side")
        self.chat_template = chat_template or spec.chat_template or SMOLVLM_CHAT_TEMPLATE
        self.renderer = ChatRenderer(self.chat_template, spec.variables)
        self.bos_token = spec.variables.get("bos_token")
        if max_length is not None and (isinstance(max_length, bool) or int(max_length) < 1):
            raise UserError(f"must be a positive integer, got {max_length!r}", field="max_length")
        self.max_length = None if max_length is None else int(max_length)
        if packing is not None and packing not in packing_mod.PACKERS:
            raise UserError(f"unknown packing {packing!r} (known: {', '.join(packing_mod.PACKERS)})", field="packing")
        if packing is not None and self.max_length is None:
            raise UserError("packing needs max_length (the length of each packed sequence)", field="max_length")
        self.packing = packing
        self.max_images_per_pack = max_images_per_pack
        if overlong not in OVERLONG:
            raise UserError(f"must be one of {', '.join(OVERLONG)}, got {overlong!r}", field="overlong")
        if on_error not in ON_ERROR:
            raise UserError(f"must be one of {', '.join(ON_ERROR)}, got {on_error!r}", field="on_error")
        if pixel_dtype not in ("float32", "uint8"):
            raise UserError(f"must be float32 or uint8, got {pixel_dtype!r}", field="pixel_dtype")
        self.overlong, self.on_error, self.pixel_dtype = overlong, on_error, pixel_dtype
        self.caption_prompt = caption_prompt
        self.for_generation = for_generation
        self.video_reader = video_reader
        self.flat_pixels = flat_pixels
        self.keep_unlabelled = keep_unlabelled
        tok = self.tokenizer
        self.image_token_id = tok.token_to_id(self.strategy.image_token)
        masked = {tok.token_to_id(t) for t in self.strategy.special_tokens()} | {self.pad_id}
        self._never_label = np.array(sorted(i for i in masked if i is not None), dtype=np.int64)
        self._blocks: dict[tuple[int, int], str] = {}
        #: rows skipped or dropped, by reason (``decode``, ``image_count``, ``overlong``, ...), and truncations.
        self.counters: Counter = Counter()
        #: packing statistics of the last packed batch (:class:`tokenization.packing.PackStats`).
        self.last_pack_stats: packing_mod.PackStats | None = None

    # -- rows -> samples ----------------------------------------------------------------
    def _image_block(self, rows: int, cols: int) -> str:
        key = (rows, cols)
        got = self._blocks.get(key)
        if got is None:
            got = self._blocks[key] = self.strategy.image_prompt(rows, cols)
        return got

    def _row_images(self, row: Mapping[str, Any]) -> list[Any]:
        """Decoded images of a row (``images`` from to_torch), else its non-video media references decoded here."""
        if "images" in row and row["images"] is not None:
            return list(row["images"])
        from media.refs import decode_image_ref

        return [decode_image_ref(ref) for ref in (row.get("media") or []) if ref and ref.get("kind") != "video"]

    def _video(self, ref: Mapping[str, Any]) -> tuple[np.ndarray, str, int]:
        """(tiles, prompt, kept frames) of one video reference, sampled the way SmolVLM samples."""
        from tokenization.video import frames_to_tiles, plan_video

        spill: list[str] = []
        where: list[str] = []

        def source() -> str:  # the file (or the spilled bytes) once, for the probe and the decode
            if not where:
                where.append(_video_source(ref, spill))
            return where[0]

        try:
            total, fps, duration = ref.get("frames"), ref.get("fps"), ref.get("duration")
            start_s, end_s = ref.get("start_s"), ref.get("end_s")
            if not fps or (not total and start_s is None):
                from media import probe_video

                meta = probe_video(source())
                fps = fps or meta["fps"]
                if start_s is None:
                    total, duration = meta["frames"], meta.get("duration")
            # a clip (start_s/end_s on the reference): SmolVLM's sampling runs within it, decoded at its offset
            first = int(round(float(start_s) * float(fps))) if start_s is not None else 0
            if start_s is not None and end_s is not None and (not total or not duration):
                total = int(round(float(end_s) * float(fps))) - first
                duration = float(end_s) - float(start_s)
            plan = plan_video(self.strategy, int(total), float(fps), duration or None)
            indices = first + np.asarray(plan.indices)
            if self.video_reader is not None:
                frames = self.video_reader(ref, indices)
            else:
                from media import read_video_frames

                frames = read_video_frames(source(), indices, rotation=ref.get("rotation"))
            if frames.shape[0] == 0:
                raise ValueError("no decodable frame")
            tiles = frames_to_tiles(self.strategy, frames, normalize=self.pixel_dtype == "float32")
            return tiles, plan.prompt, plan.frames
        finally:
            for p in spill:
                os.unlink(p)

    def encode(self, row: Mapping[str, Any], *, defer_pixels: bool = False) -> Sample:
        """One row -> one :class:`Sample`; raises :class:`SampleError` naming the row id on bad input.

        ``defer_pixels`` leaves the image tiles pending (see :class:`Sample`) for :meth:`collate`.
        """
        rid = row.get("id")
        st = self.strategy
        try:
            images = self._row_images(row)
        except Exception as exc:
            raise SampleError(rid, "decode", f"an image failed to decode: {exc}") from None
        if any(im is None for im in images):
            raise SampleError(rid, "decode", "an image failed to decode (None in images)")
        videos = [ref for ref in (row.get("media") or []) if ref and ref.get("kind") == "video"]
        turns = row.get("turns")
        if self.for_generation and turns:
            turns = list(turns)
            while turns and str(turns[-1].get("role", turns[-1].get("from"))).lower() in ("assistant", "gpt"):
                turns.pop()
        messages, n_img, n_vid = build_messages(
            turns, None if self.for_generation else row.get("text"), len(images), len(videos),
            image_token=st.image_token, video_token=VIDEO_TOKEN, system=st.system_text(),
            caption_prompt=self.caption_prompt,
        )
        if (n_img or n_vid) and (n_img != len(images) or n_vid != len(videos)):
            raise SampleError(
                rid, "image_count",
                f"the text has {n_img} {st.image_token} and {n_vid} {VIDEO_TOKEN} placeholder(s) but the row has "
                f"{len(images)} image(s) and {len(videos)} video(s)",
            )
        if self.for_generation:
            text, spans = self.renderer.render(messages, add_generation_prompt=True), []
        else:
            text, spans = self.renderer.render_with_spans(messages)
        # tiles and prompt blocks, in the order the placeholders appear
        pieces: list[str] = []
        shifts: list[tuple[int, int]] = []  # (rendered position after the marker, cumulative growth)
        tiles: list[Any] = []
        n_enc = 0
        pos, grow, i_img, i_vid = 0, 0, 0, 0
        tokens = (st.image_token, VIDEO_TOKEN)
        while True:
            nxt = [(text.find(t, pos), t) for t in tokens]
            nxt = [(p, t) for p, t in nxt if p >= 0]
            if not nxt:
                break
            at, marker = min(nxt)
            pieces.append(text[pos:at])
            if marker == st.image_token:
                if i_img >= len(images):
                    raise SampleError(rid, "image_count", f"the rendered text has more {marker} than the row's {len(images)} image(s)")
                try:
                    rgb = pixels.to_rgb(_as_pil(images[i_img]))  # forces the decode: failures belong to this row
                    plan = st.plan_image(*rgb.size)
                    if not defer_pixels:
                        tiles.append(st.split_image(rgb, normalize=self.pixel_dtype == "float32").tiles)
                except Exception as exc:
                    raise SampleError(rid, "decode", f"image {i_img} cannot be decoded or split: {exc}") from None
                if defer_pixels:
                    tiles.append((rgb, plan.tiles))
                block = self._image_block(plan.rows, plan.cols)
                n_enc += 1
                i_img += 1
            else:
                if i_vid >= len(videos):
                    raise SampleError(rid, "image_count", f"the rendered text has more {marker} than the row's videos")
                try:
                    vt, block, kept = self._video(videos[i_vid])
                except UserError as exc:
                    raise SampleError(rid, "decode", f"video {i_vid}: {exc}") from None
                except Exception as exc:
                    raise SampleError(rid, "decode", f"video {i_vid} failed to decode: {exc}") from None
                tiles.append(vt)
                n_enc += kept
                i_vid += 1
            pieces.append(block)
            pos = at + len(marker)
            grow += len(block) - len(marker)
            shifts.append((pos, grow))
        pieces.append(text[pos:])
        if i_img != len(images) or i_vid != len(videos):
            raise SampleError(
                rid, "image_count",
                f"the chat template wrote {i_img} image and {i_vid} video placeholder(s) for {len(images)} image(s) "
                f"and {len(videos)} video(s)",
            )
        expanded = "".join(pieces)
        add_special = not (self.bos_token and expanded.startswith(self.bos_token))
        enc = self.tokenizer.encode(expanded, add_special_tokens=add_special)
        ids = np.asarray(enc.ids, dtype=np.int64)
        labels = np.full(ids.size, IGNORE_INDEX, dtype=np.int64)
        if spans and ids.size:
            starts = np.fromiter((o[0] for o in enc.offsets), dtype=np.int64, count=ids.size)
            ends = np.fromiter((o[1] for o in enc.offsets), dtype=np.int64, count=ids.size)
            keep = np.zeros(ids.size, dtype=bool)
            mark_pos = np.array([p for p, _ in shifts], dtype=np.int64)
            mark_grow = np.array([g for _, g in shifts], dtype=np.int64)
            for a, b in spans:
                a2 = a + (int(mark_grow[np.searchsorted(mark_pos, a, side="right") - 1]) if mark_pos.size and a >= mark_pos[0] else 0)
                b2 = b + (int(mark_grow[np.searchsorted(mark_pos, b, side="right") - 1]) if mark_pos.size and b >= mark_pos[0] else 0)
                keep |= (starts >= a2) & (starts < b2) & (ends > starts)
            keep &= ~np.isin(ids, self._never_label)
            labels[keep] = ids[keep]
        if not self.for_generation and not self.keep_unlabelled and not (labels != IGNORE_INDEX).any():
            raise SampleError(rid, "no_labels", "no assistant turn to learn from (a caption row without text?)")
        n_image_tokens = int((ids == self.image_token_id).sum())
        if defer_pixels:
            sample = Sample(rid, ids, labels, None, n_enc, n_image_tokens, tiles)
        else:
            sample = Sample(rid, ids, labels, self._concat(tiles), n_enc, n_image_tokens)
        if n_image_tokens != sample.n_tiles * st.image_seq_len:
            raise SampleError(rid, "image_count", f"{n_image_tokens} {st.image_token} tokens for {sample.n_tiles} tiles")
        return self._fit(sample)

    def _concat(self, tiles: list[np.ndarray]) -> np.ndarray:
        if len(tiles) == 1:
            return tiles[0]
        if tiles:
            return np.concatenate(tiles)
        t = self.strategy.tile
        return np.zeros((0, 3, t, t), dtype=np.float32 if self.pixel_dtype == "float32" else np.uint8)

    def tiles(self, sample: Sample) -> np.ndarray:
        """The sample's tiles as one array (splitting pending images)."""
        if sample.tiles is not None:
            return sample.tiles
        norm = self.pixel_dtype == "float32"
        return self._concat([p if isinstance(p, np.ndarray) else self.strategy.split_image(p[0], normalize=norm).tiles
                             for p in sample.parts])

    def _fit(self, sample: Sample) -> Sample:
        """Apply ``max_length``: keep, truncate (never through an image block) or refuse."""
        L = self.max_length
        if L is None or len(sample) <= L:
            return sample
        if self.overlong == "truncate":
            cut_images = int((sample.input_ids[L:] == self.image_token_id).sum())
            if cut_images == 0:
                self.counters["truncated"] += 1
                return Sample(sample.id, sample.input_ids[:L], sample.labels[:L], sample.tiles, sample.images,
                              sample.image_tokens, sample.parts)
            raise SampleError(sample.id, "overlong", f"{len(sample)} tokens > max_length={L}, and truncating would cut an image block")
        raise SampleError(sample.id, "overlong", f"{len(sample)} tokens > max_length={L}")

    def encode_many(self, rows: Sequence[Mapping[str, Any]], *, defer_pixels: bool = False) -> list[Sample]:
        """:meth:`encode` over rows; bad rows raise, or (``on_error="skip"``, or an overlong row with
        ``overlong="drop"``) are logged by id and counted in :attr:`counters`."""
        out = []
        for row in rows:
            try:
                out.append(self.encode(row, defer_pixels=defer_pixels))
            except SampleError as exc:
                drop = (exc.reason == "overlong" and self.overlong == "drop") or exc.reason == "no_labels"
                if self.on_error == "raise" and not drop:
                    raise
                self.counters[exc.reason] += 1
                skipped = sum(v for k, v in self.counters.items() if k not in ("truncated", "rows"))
                log.warning("skipping row %s: %s (%s; %d skipped so far in this process)", exc.row_id, exc.detail,
                            exc.reason, skipped)
            self.counters["rows"] += 1
        return out

    # -- samples -> tensors -------------------------------------------------------------
    def collate(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        """Samples -> padded batch (or packed sequences when ``packing`` is set)."""
        if self.packing:
            return self._packed(samples)
        return self._padded(samples)

    def _pixels(self, groups: Sequence[Sequence[Sample]]) -> dict[str, torch.Tensor]:
        """pixel_values (+ mask) of groups of samples (one group per batch row, or per pack)."""
        t = self.strategy.tile
        counts = [sum(x.n_tiles for x in g) for g in groups]
        if self.flat_pixels:
            flat = [self.tiles(x) for g in groups for x in g if x.n_tiles]
            return {"pixel_values": torch.from_numpy(self._concat(flat)),
                    "tiles_per_sample": torch.tensor(counts, dtype=torch.int64)}
        width = max(counts) if counts else 0
        dtype = torch.float32 if self.pixel_dtype == "float32" else torch.uint8
        pv = _empty((len(groups), width, 3, t, t), dtype)
        mask = _empty((len(groups), width, t, t), torch.int64)
        dest = pv.numpy()
        norm = self.pixel_dtype == "float32"
        for b, g in enumerate(groups):
            j = 0
            for x in g:
                parts = [x.tiles] if x.tiles is not None else x.parts
                for p in parts:
                    if isinstance(p, np.ndarray):
                        n = p.shape[0]
                        dest[b, j : j + n] = p
                    else:  # a pending image: split straight into the batch
                        n = p[1]
                        self.strategy.split_image(p[0], normalize=norm, out=dest[b, j : j + n])
                    j += n
            pv[b, j:] = 0
            mask[b, :j] = 1
            mask[b, j:] = 0
        return {"pixel_values": pv, "pixel_attention_mask": mask}

    def _padded(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        B = len(samples)
        width = max((len(s) for s in samples), default=0)
        ids = np.full((B, width), self.pad_id, dtype=np.int64)
        labels = np.full((B, width), IGNORE_INDEX, dtype=np.int64)
        mask = np.zeros((B, width), dtype=np.int64)
        for b, s in enumerate(samples):
            n = len(s)
            sl = slice(width - n, width) if self.padding_side == "left" else slice(0, n)
            ids[b, sl], labels[b, sl], mask[b, sl] = s.input_ids, s.labels, 1
        out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if not self.for_generation:
            out["labels"] = torch.from_numpy(labels)
        if any(s.n_tiles for s in samples):  # as the processor: no pixel keys for a text-only batch
            out.update(self._pixels([[s] for s in samples]))
        return out

    def _packed(self, samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
        L = int(self.max_length)
        lens = np.array([len(s) for s in samples], dtype=np.int64)
        imgs = np.array([s.images for s in samples], dtype=np.int64)
        cap = self.max_images_per_pack
        if cap is not None:
            over = imgs > cap
            for s in (s for s, o in zip(samples, over) if o):
                msg = f"row {s.id}: {s.images} images > max_images_per_pack={cap}"
                if self.on_error == "raise":
                    raise SampleError(s.id, "too_many_images", msg)
                self.counters["too_many_images"] += 1
                log.warning("skipping %s", msg)
            if over.any():
                samples = [s for s, o in zip(samples, over) if not o]
                lens, imgs = lens[~over], imgs[~over]
        pack_ids = packing_mod.pack(self.packing, lens, L, imgs, cap)
        packs = packing_mod.groups(pack_ids)
        P = len(packs)
        ids = np.full((P, L), self.pad_id, dtype=np.int64)
        labels = np.full((P, L), IGNORE_INDEX, dtype=np.int64)
        mask = np.zeros((P, L), dtype=np.int64)
        pos = np.zeros((P, L), dtype=np.int64)
        seq = np.zeros((P, L), dtype=np.int64)
        groups: list[list[Sample]] = []
        for p, members in enumerate(packs):
            j = 0
            for i in members.tolist():
                s = samples[i]
                n = len(s)
                ids[p, j : j + n], labels[p, j : j + n] = s.input_ids, s.labels
                j += n
            mask[p, :j] = 1
            pos[p], seq[p] = packing_mod.layout(lens[members], L)
            groups.append([samples[i] for i in members.tolist()])
        self.last_pack_stats = packing_mod.pack_stats(lens, pack_ids, L, [s.image_tokens for s in samples])
        out = {
            "input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels), "position_ids": torch.from_numpy(pos),
            "subsequence_ids": torch.from_numpy(seq),
        }
        if any(s.n_tiles for s in samples):
            out.update(self._pixels(groups))
        return out

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        return self.collate(self.encode_many(rows, defer_pixels=True))

    # -- helpers -------------------------------------------------------------------------
    def normalize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """uint8 tiles -> the float32 values the processor gives (on whatever device they are)."""
        if pixel_values.dtype != torch.uint8:
            return pixel_values
        lut = torch.from_numpy(self.strategy._normalizer.lut).to(pixel_values.device)  # [3, 256]
        idx = pixel_values.long()
        shape = [1] * (idx.ndim - 3) + [3, 1, 1]
        offsets = (torch.arange(3, device=idx.device) * 256).view(shape)
        return lut.reshape(-1)[idx + offsets]

    def report(self) -> dict[str, Any]:
        """Counters (rows seen, skipped by reason, truncated) and the last packing statistics."""
        out: dict[str, Any] = dict(self.counters)
        if self.last_pack_stats is not None:
            out["packing"] = self.last_pack_stats.to_dict()
        return out
