"""The inspection notebook runs headless against a manifest written by the writer."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO
from tests.manifest_fixtures import write_manifest


@pytest.mark.slow
def test_notebook_executes_headless(tmp_path: Path, monkeypatch):
    manifest = write_manifest(tmp_path / "m", tmp_path / "media")
    monkeypatch.setenv("SMOLCURATE_MANIFEST", str(manifest))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(REPO / "notebooks" / "inspect.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "Manifest" in html and "photos" in html
    assert any("image/png" in o.get("data", {}) for o in outputs), "the bar chart was not drawn"
