"""``format: hf``: a ``datasets.save_to_disk`` folder (or a DatasetDict split), or ``hub:`` datasets."""
from __future__ import annotations

from curation.readers.table import GenericTable


class HfReader(GenericTable):
    name = "hf"
    formats = frozenset({"hf"})
