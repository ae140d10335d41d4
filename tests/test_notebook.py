"""The inspection notebook runs headless against a curated-style manifest and against a mixture."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO
from tests.manifest_fixtures import write_manifest


def _execute(manifest: Path, monkeypatch) -> list[dict]:
    monkeypatch.setenv("SMOLCURATE_MANIFEST", str(manifest))
    nb = nbformat.read(REPO / "notebooks" / "inspect.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    return outputs


def _pngs(outputs: list[dict]) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
def test_notebook_executes_headless(tmp_path: Path, monkeypatch):
    outputs = _execute(write_manifest(tmp_path / "m", tmp_path / "media"), monkeypatch)
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "Manifest" in html and "photos" in html and "<img" in html
    assert _pngs(outputs) == 1, "the kept/dropped bar chart"


@pytest.mark.slow
def test_notebook_plots_mixture_shares(tmp_path: Path, monkeypatch):
    from curation.mixing import build_mixture

    src = write_manifest(tmp_path / "m", tmp_path / "media")
    mix = build_mixture(
        {"seed": 0, "by": "samples", "total": 10, "inputs": [str(src)], "max_epochs": 5,
         "modality_weights": {"image": 0.2, "image_text": 0.2, "document": 0.2, "text": 0.2, "video": 0.2}},
        tmp_path / "mix",
    )
    outputs = _execute(mix.path, monkeypatch)
    assert _pngs(outputs) == 2, "the kept/dropped chart and the requested-vs-achieved shares chart"
