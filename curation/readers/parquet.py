"""``format: parquet``: Parquet files (a file, a folder of them, or a glob), columns mapped by the recipe."""
from __future__ import annotations

from curation.readers.table import GenericTable


class ParquetReader(GenericTable):
    name = "parquet"
    formats = frozenset({"parquet"})
