"""Array helpers shared by the dedup and mixing passes."""
from __future__ import annotations

import numpy as np

__all__ = ["group_order"]


def group_order(label: np.ndarray, groups: int) -> np.ndarray:
    """The stable order that groups rows by ``label`` (0 <= label < ``groups``).

    Why not a plain ``argsort``: numpy's stable sort is a radix sort for integers of 16 bits or fewer,
    2-3x faster than its merge sort on the int64 labels the scatters compute (partition, block or spill
    file of every record).
    """
    if groups <= 1 << 8:
        return np.argsort(label.astype(np.uint8), kind="stable")
    if groups <= 1 << 16:
        return np.argsort(label.astype(np.uint16), kind="stable")
    return np.argsort(label, kind="stable")
