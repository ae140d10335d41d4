"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""
from __future__ import annotations


class UserError(Exception):
    """Bad input, recipe, argument or manifest: reported as one line, exit code 2."""

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class ManifestError(UserError):
    """A manifest directory is missing, corrupt, or of an unknown format version."""


class RecipeError(UserError):
    """A recipe, mixture or grid file names an unknown key, wrong type or missing path."""
