"""``format: jsonl``: JSON Lines (and plain JSON arrays of objects), columns mapped by the recipe."""
from __future__ import annotations

from curation.readers.table import GenericTable


class JsonlReader(GenericTable):
    name = "jsonl"
    formats = frozenset({"jsonl", "json"})
