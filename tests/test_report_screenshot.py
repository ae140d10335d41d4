"""Headless Chromium renders the report and the notebook's HTML: the thumbnails must actually draw."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebook_run import chromium, drawn, execute, image_regions, outputs_html

pytestmark = [pytest.mark.slow, pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium)")]
SIZE = (1280, 3000)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from curation.demo import run_demo

    out = tmp_path_factory.mktemp("shot-demo")
    run_demo(out, engine="local", quiet=True)
    return out


def _check(page: Path, work: Path, at_least: int) -> None:
    shot, rects = image_regions(page, work, SIZE)
    broken = [r for r in rects if not r["natural"]]
    assert not broken, f"images that did not decode: {broken[:3]}"
    ok, blank = drawn(shot, rects, SIZE)
    assert ok >= at_least, f"only {ok} images drew in {shot}"
    assert not blank, f"blank image regions in {shot}: {blank[:3]}"


def test_report_thumbnails_draw(demo, tmp_path):
    from manifests import open_manifest
    from manifests.report import write_report

    page = write_report(open_manifest(demo / "manifest"), tmp_path / "report.html")
    _check(page, tmp_path, at_least=8)


def test_notebook_html_thumbnails_draw(demo, tmp_path, monkeypatch):
    outputs = execute(demo / "manifest", monkeypatch)
    page = tmp_path / "notebook.html"
    page.write_text(outputs_html(outputs), encoding="utf-8")
    _check(page, tmp_path, at_least=8)
