"""`smolcurate report`: one self-contained, valid HTML5 file with counts, drops with pictures, histograms, duplicates."""
from __future__ import annotations

import re
from pathlib import Path

import html5lib
import pytest

from manifests import open_manifest
from manifests.cli import main as cli_main
from manifests.report import report_html
from tests.manifest_fixtures import write_manifest


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from curation.demo import run_demo

    out = tmp_path_factory.mktemp("report-demo")
    run_demo(out, engine="local", quiet=True)
    return out


def _parse(text: str):
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(text)


def test_report_is_valid_self_contained_html5(demo, tmp_path, capsys):
    out = tmp_path / "r" / "report.html"
    assert cli_main(["report", str(demo / "manifest"), "--out", str(out)]) == 0
    assert "report:" in capsys.readouterr().out
    text = out.read_text()
    doc = _parse(text)  # strict: any parse error raises
    assert text.startswith("<!DOCTYPE html>")
    srcs = [e.get("src") for e in doc.iter("img")]
    assert srcs and all(s.startswith("data:image/") for s in srcs), "every picture is inline"
    assert not list(doc.iter("script")) and not re.search(r"(src|href)=['\"]https?:", text), "no script, no network"
    assert sum(s.startswith("data:image/jpeg") for s in srcs) >= 10, "thumbnails are small JPEGs"
    ids = {e.get("id") for e in doc.iter() if e.get("id")}
    assert {"counts", "drops", "loosen", "scores", "dups", "tokens"} <= ids
    for needle in ("filter/min_side", "decode/truncated", "dedup/duplicate", "brings back", "duplicate clusters",
                   "tokens_visual", "sc-fail"):
        assert needle in text, needle


def test_report_of_a_mixture_shows_requested_against_achieved(demo, tmp_path):
    text = report_html(open_manifest(demo / "mixture"))
    _parse(text)
    assert "Mixture: requested against achieved" in text and "requested tokens" in text
    assert "40.0%" in text, "the docs weight the demo recipe requests"


def test_report_of_a_bare_manifest_and_errors(tmp_path, capsys):
    m = write_manifest(tmp_path / "m", tmp_path / "media")
    _parse(report_html(open_manifest(m)))
    assert cli_main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "x.html")]) == 2
    assert "not a manifest" in capsys.readouterr().err
