"""OCR of scans (curation.enrich.ocr): text, line boxes, provenance, modes, unreadable pages, recipe errors."""
from __future__ import annotations

import pyarrow as pa
import pytest

pytest.importorskip("rapidocr_onnxruntime")

from curation.engine.chunk import apply_operators
from curation.enrich.ocr import PageOcr, char_error_rate
from curation.filters import source_operators
from curation.readers import plan_source, read_chunk
from curation.recipe import parse_recipe
from curation.synth import text_page, write_image_pdf, write_text_pdf
from manifests.errors import RecipeError

TEXT = "Scanned pages carry no text layer. Optical character recognition reads them back."


def _curate(paths, document=None, filters=None) -> tuple[pa.Table, pa.Table]:
    recipe = parse_recipe({"sources": [{"name": "docs", "kind": "document", "path": [str(p) for p in paths]}],
                           "document": document, "filters": filters or {}})
    ops = source_operators(recipe, 0)
    kept, ledgers = [], []
    for spec in plan_source(recipe, 0).chunks:
        k, led = apply_operators(read_chunk(recipe, spec), ops)
        kept.append(k)
        ledgers.append(led)
    return pa.concat_tables(kept, promote_options="default"), pa.concat_tables(ledgers, promote_options="default")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scan")
    page = text_page(TEXT, size=(640, 260), font_size=26, margin=30)
    return write_image_pdf(folder / "scan.pdf", [page], dpi=100)


def test_char_error_rate():
    assert char_error_rate("kitten", "sitting") == pytest.approx(3 / 7)
    assert char_error_rate("a  b\nc", "a b c") == 0.0
    assert char_error_rate("TheLinn", "The Linn", ignore_space=True) == 0.0
    assert char_error_rate("", "") == 0.0 and char_error_rate("x", "") == 1.0


def test_ocr_reads_a_scanned_page_with_boxes_in_page_pixels(scan):
    kept, ledger = _curate([scan], {"ocr": "auto"})
    assert ledger.num_rows == 0
    row = kept.to_pylist()[0]
    assert char_error_rate(row["text"], TEXT) <= 0.10
    assert row["ocr"]["pages"] == [0] and row["ocr"]["mode"] == "auto" and "PP-OCRv4" in row["ocr"]["engine"]
    assert row["score_textless_pages"] == 0.0 and row["score_text_chars_per_page"] > 40
    assert row["score_ocr_confidence"] > 0.8
    page = row["media"][0]
    assert row["ocr_lines"] and all(ln["page"] == 0 for ln in row["ocr_lines"])
    for ln in row["ocr_lines"]:
        x0, y0, x1, y1 = ln["box"]
        assert 0 <= x0 < x1 <= page["width"] + 1 and 0 <= y0 < y1 <= page["height"] + 1
    # lines come top to bottom, and the first line sits near the top margin (30 px at 100 dpi)
    tops = [ln["box"][1] for ln in row["ocr_lines"]]
    assert tops == sorted(tops) and tops[0] < 60


def test_min_text_chars_filter_sees_ocr_text(scan):
    kept, ledger = _curate([scan], None, {"document": {"min_text_chars_per_page": 20}})
    assert kept.num_rows == 0 and ledger.column("reason").to_pylist() == ["min_text_chars_per_page"]
    kept, ledger = _curate([scan], {"ocr": "auto"}, {"document": {"min_text_chars_per_page": 20}})
    assert kept.num_rows == 1 and ledger.num_rows == 0


def test_auto_skips_text_layers_and_always_reads_them(tmp_path):
    pdf = write_text_pdf(tmp_path / "born.pdf", ["Born digital pages keep their own text layer unchanged."],
                         page_size=(360.0, 120.0), font_size=14.0)
    kept, _ = _curate([pdf], {"ocr": "auto"})
    row = kept.to_pylist()[0]
    assert row["ocr"] is None and row["ocr_lines"] is None
    layer = row["text"]
    kept, _ = _curate([pdf], {"ocr": "always", "dpi": 200})
    row = kept.to_pylist()[0]
    assert row["ocr"]["pages"] == [0]
    assert char_error_rate(row["text"], layer, ignore_space=True) <= 0.10


def test_never_and_no_section_leave_documents_alone(scan):
    for document in (None, {"ocr": "never"}):
        recipe = parse_recipe({"sources": [{"name": "d", "kind": "document", "path": str(scan)}], "document": document})
        assert not any(isinstance(op, PageOcr) for op in source_operators(recipe, 0))


def test_a_page_ocr_cannot_read_goes_to_the_ledger(tmp_path):
    from PIL import Image

    blank = write_image_pdf(tmp_path / "blank.pdf", [Image.new("RGB", (400, 300), "white")])
    kept, ledger = _curate([blank], {"ocr": "auto"})
    assert kept.num_rows == 0
    led = ledger.to_pylist()[0]
    assert (led["stage"], led["reason"]) == ("ocr", "ocr_no_text") and "page(s) 0" in led["detail"]
    kept, ledger = _curate([blank], {"ocr": "auto", "drop_unreadable": False})
    assert kept.num_rows == 1 and kept.to_pylist()[0]["ocr"]["empty_pages"] == [0]


def test_document_images_without_sidecar_text_are_read(tmp_path):
    text_page(TEXT, size=(640, 260), font_size=26, margin=30).save(tmp_path / "page.png")
    text_page("Other words entirely", size=(400, 120), font_size=26, margin=20).save(tmp_path / "side.png")
    (tmp_path / "side.txt").write_text("the sidecar transcription of this page")
    kept, ledger = _curate([tmp_path / "page.png", tmp_path / "side.png"], {"ocr": "auto"})
    rows = {r["media"][0]["uri"].rsplit("/", 1)[-1]: r for r in kept.to_pylist()}
    assert char_error_rate(rows["page.png"]["text"], TEXT) <= 0.10 and rows["page.png"]["ocr"]["dpi"] is None
    assert rows["side.png"]["text"] == "the sidecar transcription of this page" and rows["side.png"]["ocr"] is None


def test_recipe_errors(tmp_path, scan):
    base = {"sources": [{"name": "d", "kind": "document", "path": str(scan)}]}
    with pytest.raises(RecipeError, match="document"):
        parse_recipe({**base, "document": {"ocr": "sometimes"}})
    with pytest.raises(RecipeError, match="document"):
        parse_recipe({**base, "document": {"ocr": "auto", "dpi": 5}})
    recipe = parse_recipe({**base, "document": {"ocr": "auto"}})
    with pytest.raises(RecipeError, match="top-level `document:`"):
        PageOcr.check(recipe.document, recipe, "enrich.ocr")


def test_notebook_card_draws_the_ocr_boxes_on_the_page(scan, tmp_path, monkeypatch):
    import base64
    import io
    import re

    import numpy as np
    from PIL import Image

    from manifests.cards import card_html

    monkeypatch.setenv("SMOLCURATE_THUMB_CACHE", "")
    kept, _ = _curate([scan], {"ocr": "auto"})
    row = kept.to_pylist()[0]
    html = card_html(row)
    assert "OCR p1" in html and f"{len(row['ocr_lines'])} lines" in html

    def reds(page_html: str) -> int:
        uri = re.search(r"src='data:image/jpeg;base64,([^']+)'", page_html).group(1)
        a = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB")).astype(int)
        return int(((a[..., 0] > 150) & (a[..., 1] < 100) & (a[..., 2] < 100)).sum())

    assert reds(html) > 50  # the boxes are drawn in red on the page thumbnail
    assert reds(card_html({**row, "ocr_lines": None, "ocr": None})) == 0


def test_each_page_is_rendered_once(scan, tmp_path):
    """The analyzer's check render is left to OCR for the pages OCR reads: one render per page, and page 0 scored."""
    from media import counters

    born = write_text_pdf(tmp_path / "born.pdf", ["A text layer, so OCR leaves this page alone."],
                          page_size=(300.0, 100.0))
    for paths, document, renders in (([scan], {"ocr": "auto"}, 1), ([scan], None, 1), ([born], {"ocr": "auto"}, 1),
                                     ([scan, born], {"ocr": "always", "max_pages": 1}, 2)):
        counters.reset()
        kept, _ = _curate(paths, document)
        assert counters.snapshot().get("decode.pdf", 0) == renders, (paths, document)
        assert all(r["score_low_info"] is not None and r["score_low_info"] < 0.9 for r in kept.to_pylist())


def test_ocr_with_dedup_keeps_media_signatures_in_the_decoding_stage(scan, tmp_path):
    """OCR is its own stage: page hashes are computed before it, from the one shared decode."""
    from curation.engine import run_job
    from media import counters

    recipe = parse_recipe({"sources": [{"name": "d", "kind": "document", "path": str(scan)}],
                           "document": {"ocr": "auto"}, "dedup": {"exact": True}})
    names = [type(op).__name__ for op in source_operators(recipe, 0)]
    assert names.index("MediaSignatures") < names.index("PageOcr") < names.index("TextSignatures")
    counters.reset()
    run_job(recipe, tmp_path / "m", engine="local", quiet=True)
    # one read and one 256-px render in the decoding stage (check + page hash), one read and render by OCR
    assert counters.snapshot() == {"decode.pdf": 2, "read.pdf": 2}
