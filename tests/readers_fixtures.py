"""Datasets in the formats users already have, written with the ecosystem's own writers.

Used by tests/test_readers*.py, tests/realdata/test_readers_realdata.py and
benchmarks/bench_readers.py: ``datasets`` with ``Image`` features (save_to_disk
and to_parquet) for The Cauldron and OBELICS, ``json.dump`` for LLaVA, and
``tarfile`` in the img2dataset layout (and SmolVLM's document layout) for
WebDataset.
"""
from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path


def jpeg(img, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def cauldron_dataset(images: Sequence[Sequence[bytes | str | None]], texts: Sequence[list[dict]]):
    """A ``datasets.Dataset`` in The Cauldron's schema: images = Sequence(Image), texts = [{user, assistant, source}]."""
    import datasets

    features = datasets.Features({
        "images": datasets.Sequence(datasets.Image()),
        "texts": [{"user": datasets.Value("string"), "assistant": datasets.Value("string"),
                   "source": datasets.Value("string")}],
    })
    rows_images = [[{"bytes": x, "path": None} if isinstance(x, bytes) else {"bytes": None, "path": x} for x in imgs]
                   for imgs in images]
    rows_texts = [[{"user": t["user"], "assistant": t["assistant"], "source": t.get("source", "test")} for t in ts]
                  for ts in texts]
    return datasets.Dataset.from_dict({"images": rows_images, "texts": rows_texts}, features=features)


def obelics_dataset(images: Sequence[list], texts: Sequence[list]):
    """A ``datasets.Dataset`` with OBELICS-style aligned ``images`` (Image or None) and ``texts`` (str or None)."""
    import datasets

    features = datasets.Features({"images": datasets.Sequence(datasets.Image()),
                                  "texts": datasets.Sequence(datasets.Value("string"))})
    rows = [[None if x is None else {"bytes": x, "path": None} for x in imgs] for imgs in images]
    return datasets.Dataset.from_dict({"images": rows, "texts": list(texts)}, features=features)


def llava_json(path: Path, rows: list, *, lines: bool = False, indent: int | None = 2) -> Path:
    """A LLaVA annotation file: one JSON array (``json.dump``), or JSON Lines."""
    with open(path, "w") as fh:
        if lines:
            fh.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            json.dump(rows, fh, indent=indent)
    return path


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tf.addfile(info, io.BytesIO(data))


def img2dataset_shard(path: Path, samples: Iterable[tuple[str, bytes | None, str | None, dict | None]]) -> Path:
    """A shard in img2dataset's layout: ``{key}.jpg``, ``{key}.txt``, ``{key}.json`` per sample."""
    with tarfile.open(path, "w") as tf:
        for key, image, caption, meta in samples:
            if image is not None:
                _add(tf, f"{key}.jpg", image)
            if caption is not None:
                _add(tf, f"{key}.txt", caption.encode())
            if meta is not None:
                _add(tf, f"{key}.json", json.dumps(meta).encode())
    return path


def members_shard(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    """A shard with exactly these members, in order (names are written as given)."""
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            _add(tf, name, data)
    return path


def smolvlm_doc_shard(path: Path, docs: Iterable[tuple[str, list[str | bytes], str]]) -> Path:
    """SmolVLM's document layout: ``{id}.{i}.text.txt`` / ``{id}.{i}.image.jpeg`` parts and ``{id}.metadata.txt``."""
    with tarfile.open(path, "w") as tf:
        for doc_id, parts, metadata in docs:
            for i, part in enumerate(parts):
                if isinstance(part, bytes):
                    _add(tf, f"{doc_id}.{i}.image.jpeg", part)
                else:
                    _add(tf, f"{doc_id}.{i}.text.txt", part.encode())
            _add(tf, f"{doc_id}.metadata.txt", metadata.encode())
    return path
