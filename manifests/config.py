"""Loading YAML config files (recipes, mixtures, grids) and turning validation errors into one line.

Every config file of the toolkit is a YAML mapping validated by a pydantic
model with unknown keys forbidden. A user who gets it wrong sees one line that
names the field, e.g. ``sources[2].path: no files match 'docs/*.pdf'``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from manifests.errors import RecipeError

# pydantic puts validator kinds and union branch types into error locations; they are not fields
_NOT_FIELDS = ("function-", "union[", "list[", "dict[", "tagged-union[")
_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


def load_yaml_file(path: str | os.PathLike, what: str = "config") -> Any:
    """Parse a YAML file; a missing file or a syntax error is a one-line RecipeError."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: {what} file not found")
    try:
        return yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = [s.strip() for s in str(exc).strip().splitlines()[:3]]
        raise RecipeError(f"{p}: not valid YAML ({' '.join(first)})") from None


def field_path(loc: tuple[Any, ...]) -> str:
    """``('sources', 2, 'path')`` -> ``sources[2].path``, skipping pydantic's non-field parts."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part)
        if text.startswith(_NOT_FIELDS) or text in _TYPE_NAMES or text[:1].isupper():
            continue
        out += f".{text}" if out else text
    return out


def validation_error(exc: ValidationError, default_field: str | None = None) -> RecipeError:
    """The first pydantic error as a one-line RecipeError naming its field (`default_field` for whole-model errors)."""
    err = exc.errors()[0]
    where = field_path(tuple(err.get("loc", ()))) or default_field
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key"
    if exc.error_count() > 1:
        msg += f" (and {exc.error_count() - 1} more)"
    return RecipeError(msg, field=where or None)
