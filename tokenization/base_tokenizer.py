"""The base text tokenizer: load a tokenizer.json or hub id, or train a small byte-level BPE offline.

The strategy's special tokens are added on top of it by
:func:`tokenization.positional.with_strategy_tokens`; this module only provides
the text model underneath. Training on the manifest's own text is the offline
default so ablations never need the network.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from manifests.errors import UserError
from manifests.fsutil import atomic_write

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")

#: kept as single tokens in the trained vocabulary (chat turns and padding).
BASE_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<end_of_utterance>")


def load_tokenizer(spec: str | os.PathLike) -> Tokenizer:
    """A tokenizer from a ``tokenizer.json`` file, a directory holding one, or a hub id (needs the network).

    A file that does not parse raises UserError naming it.
    """
    path = Path(spec)
    if path.is_dir():
        path = path / "tokenizer.json"
        if not path.is_file():
            raise UserError(f"no tokenizer.json in {spec}", field="tokenizer")
    if path.is_file():
        try:
            return Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception with the serde message
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UserError(f"{path} is not a valid tokenizer.json: {msg}", field="tokenizer") from None
    spec = str(spec)
    if not _HUB_ID.match(spec) or spec.endswith(".json"):
        raise UserError(f"{spec}: no such file", field="tokenizer")
    try:  # a hub id such as HuggingFaceTB/SmolVLM-256M-Instruct
        return Tokenizer.from_pretrained(spec)
    except Exception as exc:
        raise UserError(f"cannot load {spec!r} from the hub: {str(exc).splitlines()[0] if str(exc) else exc}", field="tokenizer") from None


def train_bpe(texts: Iterable[str], *, vocab_size: int = 8192, min_frequency: int = 2) -> Tokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenizer, single digits) trained on `texts`."""
    if vocab_size < 300:
        raise UserError(f"must be at least 300 (256 bytes + specials + merges), got {vocab_size}", field="vocab_size")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(BASE_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_nonempty(texts), trainer=trainer)
    return tok


def _nonempty(texts: Iterable[str]) -> Iterator[str]:
    for t in texts:
        if t:
            yield t


def manifest_texts(data: Any, limit: int | None = None) -> Iterator[str]:
    """The ``text`` and turn ``content`` strings of a manifest directory or Arrow table, streamed by batch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(data, (str, os.PathLike)):
        from manifests.reader import open_manifest

        m = open_manifest(data)
        cols = [c for c in ("text", "turns") if m.schema.get_field_index(c) >= 0]
        batches = m.dataset().to_batches(columns=cols)
    elif isinstance(data, pa.Table):
        batches = data.select([c for c in ("text", "turns") if c in data.column_names]).to_batches()
    else:
        raise UserError(f"expected a manifest directory or an Arrow table, got {type(data).__name__}", field="data")
    seen = 0
    for batch in batches:
        names = batch.schema.names
        parts = []
        if "text" in names:
            parts.append(batch.column(names.index("text")))
        if "turns" in names:
            parts.append(pc.struct_field(pc.list_flatten(batch.column(names.index("turns"))), "content"))
        for arr in parts:
            for t in arr.drop_null().to_pylist():
                yield t
                seen += 1
                if limit is not None and seen >= limit:
                    return


def train_from_manifest(
    data: Any, out_path: str | os.PathLike | None = None, *, vocab_size: int = 8192, min_frequency: int = 2
) -> Tokenizer:
    """Train :func:`train_bpe` on a manifest's text and save it to `out_path` (a file or a directory)."""
    tok = train_bpe(manifest_texts(data), vocab_size=vocab_size, min_frequency=min_frequency)
    if out_path is not None:
        save_tokenizer(tok, out_path)
    return tok


def save_tokenizer(tok: Tokenizer, out_path: str | os.PathLike) -> Path:
    """Write tokenizer.json (into `out_path` when it is a directory) and return the file path."""
    path = Path(out_path)
    if path.is_dir() or not path.suffix:
        path = path / "tokenizer.json"
    atomic_write(path, lambda tmp: tok.save(str(tmp)))
    return path


def resolve_tokenizer(spec: str | os.PathLike | None, manifest: Any = None, out_dir: str | os.PathLike | None = None,
                      *, vocab_size: int = 8192) -> Tokenizer:
    """What the CLI and the ablation runner call: load `spec`, or (spec None) reuse/train one next to the results.

    Without `spec`, ``out_dir/tokenizer.json`` is loaded when it exists, else a BPE
    is trained on `manifest` and saved there.
    """
    if spec:
        return load_tokenizer(spec)
    if manifest is None:
        raise UserError("no tokenizer given and no manifest to train one on", field="tokenizer")
    if out_dir is not None:
        cached = Path(out_dir) / "tokenizer.json"
        if cached.is_file():
            return load_tokenizer(cached)
    tok = train_from_manifest(manifest, vocab_size=vocab_size)
    if out_dir is not None:
        path = save_tokenizer(tok, out_dir)
        log.info("trained a %d-token BPE on %s, saved to %s", tok.get_vocab_size(), manifest, path)
    return tok
