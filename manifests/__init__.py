"""On-disk manifest format: Parquet shards, manifest.json, and a ledger of dropped rows."""
from manifests.errors import ManifestError, RecipeError, UserError
from manifests.schema import (
    CORE_SCHEMA,
    FORMAT_VERSION,
    LEDGER_SCHEMA,
    MEDIA_TYPE,
    MODALITIES,
    build_schema,
    conform,
    make_id,
)

__all__ = [
    "CORE_SCHEMA",
    "FORMAT_VERSION",
    "LEDGER_SCHEMA",
    "MEDIA_TYPE",
    "MODALITIES",
    "ManifestError",
    "RecipeError",
    "UserError",
    "build_schema",
    "conform",
    "make_id",
]

try:  # the writer/reader are imported lazily-safe: they only need pyarrow/polars
    from manifests.reader import Manifest, open_manifest  # noqa: F401
    from manifests.validate import validate  # noqa: F401
    from manifests.writer import ManifestWriter  # noqa: F401

    __all__ += ["Manifest", "ManifestWriter", "open_manifest", "validate"]
except ImportError:  # pragma: no cover - during bootstrap before those modules exist
    pass
