"""Run notebooks/inspect.ipynb headless against a manifest, and render its outputs as one HTML page."""
from __future__ import annotations

import html
import shutil
import subprocess
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)


def execute(manifest: Path, monkeypatch) -> list[dict]:
    """Execute the notebook with SMOLCURATE_MANIFEST set; returns every code cell output (none may be an error)."""
    monkeypatch.setenv("SMOLCURATE_MANIFEST", str(manifest))
    nb = nbformat.read(REPO / "notebooks" / "inspect.ipynb", as_version=4)
    # run from another folder than notebooks/: the default path must not depend on the working directory
    with tempfile.TemporaryDirectory() as cwd:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": cwd}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, "\n".join("\n".join(e.get("traceback", [])) for e in errors)[-3000:]
    return outputs


def outputs_html(outputs: list[dict]) -> str:
    """The notebook's rich outputs as one HTML5 page (what a Jupyter front end draws)."""
    parts = []
    for o in outputs:
        data = o.get("data", {})
        if "text/html" in data:
            parts.append(f"<div class='out'>{data['text/html']}</div>")
        elif "image/png" in data:
            parts.append(f"<div class='out'><img src='data:image/png;base64,{data['image/png'].strip()}' alt='plot'/></div>")
        elif "text/plain" in data:
            parts.append(f"<pre>{html.escape(data['text/plain'])}</pre>")
        elif o.get("output_type") == "stream":
            parts.append(f"<pre>{html.escape(o.get('text', ''))}</pre>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'/><title>inspect.ipynb</title></head><body>"
            + "".join(parts) + "</body></html>")


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(page: Path, out: Path, size: tuple[int, int] = (1280, 2400)) -> Path:
    """A PNG of ``page`` rendered by headless Chromium (fresh profile, no network services)."""
    exe = chromium()
    assert exe is not None
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                        f"--screenshot={out}", page.resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
    assert out.is_file(), "chromium wrote no screenshot"
    return out


_RECTS_SCRIPT = """<script>
window.addEventListener('load', function () {
  var out = Array.prototype.map.call(document.images, function (i) {
    var r = i.getBoundingClientRect();
    return [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height, i.naturalWidth, i.getAttribute('alt') || ''];
  });
  var pre = document.createElement('pre');
  pre.id = 'sc-rects'; pre.style.display = 'none'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def image_regions(page: Path, work: Path, size: tuple[int, int] = (1280, 2400)) -> tuple[Path, list[dict]]:
    """Render ``page`` in Chromium: (a screenshot, every <img> with its box in screenshot pixels and natural width).

    A copy of the page gets a script that records each image's box into a hidden element (read back
    with --dump-dom), so the screenshot of that same copy can be checked pixel by pixel.
    """
    import json
    import re

    text = page.read_text(encoding="utf-8")
    probe = work / f"{page.stem}-probe.html"
    probe.write_text(text.replace("</body>", _RECTS_SCRIPT + "</body>", 1), encoding="utf-8")
    exe = chromium()
    assert exe is not None
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                              "--force-device-scale-factor=1", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                             check=True, capture_output=True, timeout=180, text=True).stdout
    found = re.search(r'<pre id="sc-rects"[^>]*>(.*?)</pre>', dom, re.S)
    assert found, "the probe script did not run"
    rects = [dict(zip(("x", "y", "w", "h", "natural", "alt"), r)) for r in json.loads(html.unescape(found.group(1)))]
    shot = work / f"{page.stem}.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}",
                        "--force-device-scale-factor=1", "--virtual-time-budget=10000", f"--screenshot={shot}", probe.as_uri()],
                       check=True, capture_output=True, timeout=180)
    return shot, rects


def drawn(shot: Path, rects: list[dict], size: tuple[int, int]) -> tuple[int, list[dict]]:
    """(images inside the screenshot whose pixels differ from the white page, those that do not)."""
    import numpy as np
    from PIL import Image

    pix = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    ok, blank = 0, []
    for r in rects:
        x0, y0, x1, y1 = int(r["x"]) + 1, int(r["y"]) + 1, int(r["x"] + r["w"]) - 1, int(r["y"] + r["h"]) - 1
        if r["w"] < 4 or r["h"] < 4 or y1 > min(size[1], pix.shape[0]) or x1 > pix.shape[1]:
            continue
        region = pix[y0:y1, x0:x1]
        if np.abs(255 - region).mean() > 8 or region.std() > 8:
            ok += 1
        else:
            blank.append(r)
    return ok, blank
