"""A torch IterableDataset over a manifest: decoded samples, shards split across DataLoader workers."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

if TYPE_CHECKING:  # pragma: no cover
    from manifests.reader import Manifest

DECODE_MODES = (False, "pil", "tensor")


class ManifestIterableDataset(IterableDataset):
    """Yields one dict per row: the row's columns plus ``images`` (list) and, for videos, ``frames``.

    With several DataLoader workers, each worker reads whole shards (shard i goes
    to worker i mod n); when there are fewer shards than workers the rows are
    striped instead, so no worker sits idle and no row is read twice. Rows with a
    ``repeat`` column (mixtures) are yielded that many times, one copy per pass over the data.
    """

    def __init__(
        self,
        manifest: "Manifest",
        decode: bool | str = "pil",
        video_frames: int = 8,
        columns: list[str] | None = None,
        honor_repeat: bool = True,
        batch_rows: int = 256,
    ) -> None:
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
        self.files = [str(p) for p in manifest.shard_paths]
        self.decode = decode
        self.video_frames = video_frames
        # the sig_* dedup hashes stay out unless asked for by name, as in to_hf()/to_ray()
        self.columns = columns if columns is not None else manifest.reader_columns()
        self.honor_repeat = honor_repeat
        self.batch_rows = batch_rows

    def _assignment(self) -> tuple[list[str], int, int]:
        info = get_worker_info()
        if info is None or info.num_workers == 1:
            return self.files, 0, 1
        if len(self.files) >= info.num_workers:
            return self.files[info.id :: info.num_workers], 0, 1
        return self.files, info.id, info.num_workers

    def __iter__(self) -> Iterator[dict[str, Any]]:
        files, stripe, stride = self._assignment()
        passes = self._max_repeat(files) if self.honor_repeat else 1
        for j in range(passes):
            # pass j yields the rows whose repeat count exceeds j, so copies of one row land in
            # different passes (and different batches) instead of back to back
            row_index = 0
            for path in files:
                for batch in pq.ParquetFile(path).iter_batches(batch_size=self.batch_rows, columns=self.columns):
                    for row in batch.to_pylist():
                        mine = row_index % stride == stripe
                        row_index += 1
                        if not mine or (j > 0 and int(row.get("repeat") or 1) <= j):
                            continue
                        yield self._decode_row(row) if self.decode else row

    def _max_repeat(self, files: list[str]) -> int:
        best = 1
        for path in files:
            pf = pq.ParquetFile(path)
            if "repeat" not in pf.schema_arrow.names:
                return 1
            col = pf.read(columns=["repeat"]).column("repeat")
            best = max(best, int(pc.max(col).as_py() or 1))
        return best

    def _decode_row(self, row: dict[str, Any]) -> dict[str, Any]:
        from media.refs import decode_image_ref, decode_video_ref

        images, frames = [], None
        for ref in row.get("media") or []:
            if ref.get("kind") == "video":
                frames = decode_video_ref(ref, self.video_frames)
                if self.decode == "tensor":
                    frames = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
            else:
                img = decode_image_ref(ref)
                images.append(_to_tensor(img) if self.decode == "tensor" else img)
        out = dict(row)
        out["images"] = images
        if frames is not None:
            out["frames"] = frames
        return out


    @staticmethod
    def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
        """A DataLoader ``collate_fn`` for these rows (``default_collate`` fails on None and ragged lists).

        Per key: numbers without None become a tensor; tensors of one shape are stacked; anything
        else (strings, None, media lists, images of different sizes) stays a list of the batch's values.
        """
        return collate_rows(batch)

    def loader(self, batch_size: int = 8, **kwargs: Any) -> torch.utils.data.DataLoader:
        """A DataLoader over this dataset with :meth:`collate` (``num_workers`` etc. pass through)."""
        return torch.utils.data.DataLoader(self, batch_size=batch_size, collate_fn=collate_rows, **kwargs)


def collate_rows(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """See :meth:`ManifestIterableDataset.collate`."""
    out: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for row in batch for k in row))
    for key in keys:
        values = [row.get(key) for row in batch]
        if values and all(isinstance(v, bool) for v in values):
            out[key] = torch.tensor(values, dtype=torch.bool)
        elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor(values, dtype=torch.int64)
        elif values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = torch.tensor(values, dtype=torch.float64)
        elif values and all(isinstance(v, torch.Tensor) for v in values) and len({tuple(v.shape) for v in values}) == 1:
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out


def ray_collate(batch: dict[str, np.ndarray]) -> dict[str, Any]:
    """``collate_fn`` for Ray's ``iter_torch_batches`` over :meth:`Manifest.to_ray`.

    Ray's default turns every column into a tensor, which fails on ids, text and media; this keeps
    numeric columns without nulls as tensors and hands the others on as lists.
    """
    out: dict[str, Any] = {}
    for key, arr in batch.items():
        a = np.asarray(arr)
        if a.dtype.kind in "biuf":
            out[key] = torch.from_numpy(np.array(a))  # a copy: Ray's batches are read-only
        elif a.dtype.kind == "O" and len(a) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in a):
            out[key] = torch.as_tensor(a.astype(np.float64))
        else:
            out[key] = list(a)
    return out


def _to_tensor(img) -> torch.Tensor:
    """uint8 CHW tensor (normalization is the tokenization strategy's job)."""
    arr = np.asarray(img.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)
