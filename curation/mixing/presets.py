"""SmolVLM's published stage mixtures, shipped as YAML data next to this module."""
from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from manifests.errors import RecipeError

_PACKAGE = "curation.mixing"
_FOLDER = "presets"


def _files() -> dict[str, Any]:
    root = resources.files(_PACKAGE).joinpath(_FOLDER)
    return {p.name.removesuffix(".yaml"): p for p in root.iterdir() if p.name.endswith(".yaml")}


def list_presets() -> dict[str, str]:
    """Preset name -> one-line description."""
    out = {}
    for name, path in sorted(_files().items()):
        data = yaml.safe_load(path.read_text())
        out[name] = " ".join(str(data.get("description", "")).split())
    return out


def preset_text(name: str) -> str:
    """The preset file as shipped, for `smolcurate mix --show-preset`."""
    files = _files()
    if name not in files:
        raise RecipeError(f"unknown preset {name!r}; known: {', '.join(sorted(files))}", field="preset")
    return files[name].read_text()


def load_preset(name: str) -> dict[str, Any]:
    """The preset's mixture fields (without its description), to be overridden by the user's."""
    data = yaml.safe_load(preset_text(name))
    data.pop("description", None)
    return data
