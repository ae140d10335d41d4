"""OCR on the real corpus: born-digital pages against their text layer (CER), and scans that a person can read."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("rapidocr_onnxruntime")

import media as M
from curation.engine.chunk import apply_operators
from curation.enrich.ocr import PageOcr, char_error_rate
from curation.filters import source_operators
from curation.readers import plan_source, read_chunk
from curation.recipe import parse_recipe

#: clean English born-digital pages (single column, short enough for a loaded CI machine)
BORN_DIGITAL = [
    "pypdf-samples/002-trivial-libre-office-writer/002-trivial-libre-office-writer.pdf",
    "pypdf-samples/011-google-doc-document/google-doc-document.pdf",
    "pypdf-samples/021-pdfa/crazyones-pdfa.pdf",
]
#: scans without a text layer, with words on them
SCANS = ["ocrmypdf/c03-29.pdf", "ocrmypdf/2400dpi.pdf", "ocrmypdf/linn.pdf", "ocrmypdf/multipage.pdf"]


@pytest.fixture(scope="module")
def ocr():
    op = PageOcr({"ocr": "always"})
    op.setup()
    return op


@pytest.mark.parametrize("rel", BORN_DIGITAL)
def test_ocr_matches_the_text_layer_of_born_digital_pages(realdata, ocr, rel):
    path = realdata / "documents" / rel
    layer = M.pdf_pages(path)[0].text
    img = M.render_pdf_page(path, 0, dpi=ocr.cfg.dpi)
    hyp = "\n".join(text for _, text, _ in ocr.recognise(np.asarray(img)))
    cer = char_error_rate(hyp, layer)
    cer_ns = char_error_rate(hyp, layer, ignore_space=True)
    print(f"{rel}: CER {cer:.3f} (spaces ignored {cer_ns:.3f}) over {len(layer)} characters")
    assert cer <= 0.10


def test_scanned_pdfs_get_readable_text(realdata):
    paths = [str(realdata / "documents" / rel) for rel in SCANS]
    recipe = parse_recipe({"sources": [{"name": "scans", "kind": "document", "path": paths}],
                           "document": {"ocr": "auto", "max_pages": 2}})
    ops = source_operators(recipe, 0)
    kept, ledger = [], []
    for spec in plan_source(recipe, 0).chunks:
        k, led = apply_operators(read_chunk(recipe, spec), ops)
        kept.append(k)
        ledger.append(led)
    rows = pa.concat_tables(kept, promote_options="default").to_pylist()
    assert pa.concat_tables(ledger, promote_options="default").num_rows == 0
    assert len(rows) == len(SCANS)
    for row in rows:
        name = row["media"][0]["uri"].rsplit("/", 1)[-1]
        words = [w for w in row["text"].split() if sum(c.isalpha() for c in w) >= 3]
        print(f"{name}: {len(row['text'])} characters, {len(words)} words, confidence {row['score_ocr_confidence']:.2f}")
        assert len(words) >= 3, name
        assert row["ocr"]["pages"] and row["score_ocr_confidence"] > 0.7
        assert row["ocr_lines"]
    by_name = {r["media"][0]["uri"].rsplit("/", 1)[-1]: r for r in rows}
    assert "Watson" in by_name["c03-29.pdf"]["text"]  # Huckleberry Finn, chapter III
    assert by_name["multipage.pdf"]["ocr"]["pages"] == [0, 1]  # max_pages caps the work per document
