"""The inspection notebook runs headless against a curated manifest, a hand-written one and a mixture."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.manifest_fixtures import write_manifest
from tests.notebook_run import execute


def _pngs(outputs: list[dict]) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


def _html(outputs: list[dict]) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in outputs)


@pytest.mark.slow
def test_notebook_executes_headless(tmp_path: Path, monkeypatch):
    outputs = execute(write_manifest(tmp_path / "m", tmp_path / "media"), monkeypatch)
    html = _html(outputs)
    assert "Manifest" in html and "photos" in html and "<img" in html
    assert "dropped: read/corrupt" in html, "the ledger rows with their reason"
    assert _pngs(outputs) == 2, "the score histograms and the kept/dropped bar chart"


@pytest.mark.slow
def test_notebook_on_the_demo_shows_drops_loosening_and_duplicates(tmp_path: Path, monkeypatch):
    from curation.demo import run_demo

    run_demo(tmp_path / "demo", engine="local", quiet=True)
    outputs = execute(tmp_path / "demo" / "manifest", monkeypatch)
    html = _html(outputs)
    assert "dropped: filter/min_side" in html and "sc-fail" in html, "why, with the failing score highlighted"
    assert "What loosening each threshold would bring back" in html and "comes back" in html
    assert "duplicate clusters" in html and "distance" in html, "which rows were duplicates of which"
    assert "rows matched" in "".join(o.get("text", "") for o in outputs)
    assert _pngs(outputs) == 2


@pytest.mark.slow
def test_notebook_plots_mixture_shares(tmp_path: Path, monkeypatch):
    from curation.mixing import build_mixture

    src = write_manifest(tmp_path / "m", tmp_path / "media")
    mix = build_mixture(
        {"seed": 0, "by": "samples", "total": 10, "inputs": [str(src)], "max_epochs": 5,
         "modality_weights": {"image": 0.2, "image_text": 0.2, "document": 0.2, "text": 0.2, "video": 0.2}},
        tmp_path / "mix",
    )
    outputs = execute(mix.path, monkeypatch)
    assert _pngs(outputs) == 2, "the kept/dropped chart and the requested-vs-achieved shares chart"
