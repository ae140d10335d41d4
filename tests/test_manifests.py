"""Manifest format: round trips, readers agree, validate catches corruption, atomic commits."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from manifests import ManifestError, ManifestWriter, make_id, open_manifest, validate
from manifests.cli import main as cli_main
from tests.manifest_fixtures import sample_rows, write_manifest


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    return write_manifest(tmp_path / "m", tmp_path / "media")


def test_round_trip_every_modality(manifest: Path, tmp_path: Path):
    m = open_manifest(manifest)
    got = {r["id"]: r for r in m.table().to_pylist()}
    want = sample_rows(tmp_path / "media")
    assert len(got) == len(want) == 5
    for row in want:
        back = got[row["id"]]
        for key, value in row.items():
            if key == "media":
                for a, b in zip(value, back["media"]):
                    for k, v in a.items():
                        assert b[k] == v, (row["modality"], k)
            else:
                assert back[key] == value, (row["modality"], key)
    assert set(m.info["totals"]["by_modality"]) == {"image", "image_text", "document", "text", "video"}
    assert m.info["sources"]["photos"] == {"read": 2, "kept": 1, "dropped": 1}


def test_ids_are_stable_and_keyed():
    assert make_id("a", "x.png") == make_id("a", "x.png")
    assert make_id("a", "x.png") != make_id("b", "x.png")
    assert make_id("a", "x.png") != make_id("a", "y.png")


def test_all_readers_see_the_same_rows(manifest: Path, ray_session):
    m = open_manifest(manifest)
    ids_arrow = sorted(m.dataset().to_table(columns=["id"]).column("id").to_pylist())
    ids_polars = sorted(m.lazy().select("id").collect()["id"].to_list())
    ids_hf = sorted(m.to_hf()["id"])
    ids_ray = sorted(r["id"] for r in m.to_ray().select_columns(["id"]).take_all())
    ids_torch = sorted(s["id"] for s in m.to_torch(decode=False))
    assert ids_arrow == ids_polars == ids_hf == ids_ray == ids_torch
    assert len(ids_arrow) == 5


def test_polars_and_hf_keep_nested_media(manifest: Path):
    m = open_manifest(manifest)
    df = m.to_polars()
    pairs = df.filter(pl.col("modality") == "image_text")
    assert pairs["media"].list.len().to_list() == [3]
    hf = m.to_hf()
    row = [r for r in hf if r["modality"] == "image_text"][0]
    assert row["media"][2]["bytes"] is not None and row["turns"][1]["content"] == "red"


def test_writer_rejects_undeclared_columns(tmp_path: Path):
    w = ManifestWriter(tmp_path / "m")
    with pytest.raises(ValueError, match="score_x"):
        w.write(pa.Table.from_pylist([{"id": "1", "source": "s", "modality": "text", "score_x": 1.0}]))


def test_commit_refuses_to_lose_rows(tmp_path: Path):
    w = ManifestWriter(tmp_path / "m")
    w.write(pa.Table.from_pylist([{"id": "1", "source": "s", "modality": "text", "text": "x"}]))
    with pytest.raises(ManifestError, match="every input must be kept or in the ledger"):
        w.commit(sources={"s": {"read": 3}})
    assert not (tmp_path / "m" / "manifest.json").exists()


def test_existing_manifest_needs_overwrite(manifest: Path):
    with pytest.raises(ManifestError, match="already holds a manifest"):
        ManifestWriter(manifest)


def test_validate_passes_and_inspect_json(manifest: Path, capsys):
    assert validate(manifest)["ok"]
    assert cli_main(["inspect", str(manifest), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] == 5 and out["dropped"] == 1
    assert out["sources"]["photos"]["drops"] == {"read/corrupt": 1}
    assert out["by_modality"]["video"] == 1
    assert out["tokens"]["tokens"] == 64 + 200 + 80 + 6 + 192
    assert cli_main(["inspect", str(manifest)]) == 0
    assert "photos" in capsys.readouterr().out


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _corrupt_missing(m: Path):
    (m / "data" / "part-00001.parquet").unlink()


def _corrupt_truncated(m: Path):
    p = m / "data" / "part-00000.parquet"
    p.write_bytes(p.read_bytes()[:-100])


def _corrupt_checksum(m: Path):
    p = m / "data" / "part-00000.parquet"
    data = bytearray(p.read_bytes())
    data[10] ^= 0xFF
    p.write_bytes(bytes(data))


def _edit_json(m: Path, fn):
    info = json.loads((m / "manifest.json").read_text())
    fn(info)
    (m / "manifest.json").write_text(json.dumps(info))


def _corrupt_newer(m: Path):
    _edit_json(m, lambda i: i.update(format_version=99))


def _corrupt_ledger(m: Path):
    _edit_json(m, lambda i: i["sources"]["photos"].update(read=7))


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (_corrupt_missing, "part-00001.parquet is missing"),
        (_corrupt_truncated, "truncated"),
        (_corrupt_checksum, "checksum differs"),
        (_corrupt_newer, "format_version 99 is newer"),
        (_corrupt_ledger, "ledger invariant broken"),
    ],
)
def test_validate_catches_corruption_and_modifies_nothing(manifest: Path, corrupt, message, capsys):
    corrupt(manifest)
    before = _snapshot(manifest)
    with pytest.raises(ManifestError, match=message):
        validate(manifest)
    assert cli_main(["validate", str(manifest)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.split()[0] in err
    assert _snapshot(manifest) == before


def test_validate_catches_missing_media(manifest: Path, tmp_path: Path):
    (tmp_path / "media" / "b.png").unlink()
    with pytest.raises(ManifestError, match="media path does not resolve: .*b.png"):
        validate(manifest)
    assert validate(manifest, check_media=False)["ok"]


def test_not_a_manifest(tmp_path: Path, capsys):
    with pytest.raises(ManifestError, match="is not a manifest"):
        open_manifest(tmp_path)
    assert cli_main(["inspect", str(tmp_path / "nope")]) == 2
    assert "not a manifest" in capsys.readouterr().err


def test_debug_shows_traceback(tmp_path: Path):
    with pytest.raises(ManifestError):
        cli_main(["--debug", "inspect", str(tmp_path)])


def test_usage_error_is_one_line(capsys):
    assert cli_main(["inspect"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, pyarrow as pa
    from manifests import ManifestWriter
    out, n = sys.argv[1], int(sys.argv[2])
    w = ManifestWriter(out, overwrite=True)
    for i in range(n):
        rows = [{"id": f"{i}-{j}", "source": "s", "modality": "text", "text": "v2 " * 50} for j in range(200)]
        w.write(pa.Table.from_pylist(rows))
    w.commit(sources={"s": {"read": n * 200}})
    print("committed", flush=True)
    """
)


@pytest.mark.slow
def test_sigkill_leaves_previous_manifest_or_none(tmp_path: Path):
    out = tmp_path / "m"
    script = tmp_path / "w.py"
    script.write_text(KILL_SCRIPT)
    subprocess.run([sys.executable, str(script), str(out), "3"], check=True, capture_output=True)
    first = open_manifest(out).fingerprint()
    outcomes = set()
    for delay in (0.4, 0.8, 1.2, 1.6, 2.5):
        proc = subprocess.Popen([sys.executable, str(script), str(out), "40"], stdout=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        try:
            report = validate(out)
        except ManifestError as exc:
            assert "is not a manifest" in str(exc)
            outcomes.add("none")
        else:
            fp = open_manifest(out).fingerprint()
            outcomes.add("previous" if fp == first else "new")
            assert report["rows"] in (600, 8000)
        # reset to the previous manifest for the next round
        subprocess.run([sys.executable, str(script), str(out), "3"], check=True, capture_output=True)
    assert outcomes <= {"none", "previous", "new"} and outcomes


def test_shards_respect_the_umask(manifest: Path):
    mask = os.umask(0)
    os.umask(mask)
    mode = (manifest / "manifest.json").stat().st_mode & 0o777
    assert mode == 0o666 & ~mask
