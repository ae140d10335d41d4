"""Dedup organized by method: the registry is the one place that lists methods, and the shared phases name none."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from curation.dedup import DedupConfig, signature_columns
from curation.dedup.methods import METHODS, candidate_groups, edge_kinds, exact_kinds, methods
from curation.dedup.methods.base import DedupMethod

DEDUP = Path(__file__).resolve().parents[1] / "curation" / "dedup"
#: modules of the shared phases: they may read the methods' declarations, never name a method
SHARED = ["resolve.py", "records.py", "buckets.py", "clusters.py", "layout.py", "keys.py", "pairjoin.py",
          "unionfind.py", "config.py", "blocks.py", "components.py"]


def test_registry_lists_every_method_module_once_with_its_recipe_key():
    assert list(METHODS) == ["exact", "image", "text", "video", "semantic"]
    ms = methods()
    assert [m.key for m in ms] == list(METHODS)
    assert all(isinstance(m, DedupMethod) for m in ms)
    modules = {p.stem for p in (DEDUP / "methods").glob("*.py")} - {"__init__", "base", "registry"}
    assert {v.rsplit(".", 1)[1] for v in METHODS.values()} == modules  # every method module is registered


def test_dedup_config_fields_come_from_the_registry_and_recipe_keys_are_unchanged():
    fields = list(DedupConfig.model_fields)
    assert fields == [*METHODS, "against", "decontaminate", "partitions"]
    for m in methods():
        assert DedupConfig.model_fields[m.key].annotation is (m.annotation or m.config)
    cfg = DedupConfig.model_validate({"exact": False, "image": {"max_distance": 4}, "text": {"threshold": 0.7},
                                      "video": {"frames": 6}, "semantic": {"enabled": True}})
    assert (cfg.exact.bytes, cfg.exact.pixels, cfg.exact.text) == (False, False, False)
    assert cfg.image.bands == 5 and cfg.video.frames == 6 and cfg.semantic.enabled
    with pytest.raises(ValueError):
        DedupConfig.model_validate({"fuzzy": {}})
    with pytest.raises(ValueError):
        DedupConfig.model_validate({"image": {"max_distanse": 3}})


def test_signature_fingerprint_is_stable():
    # the value stamped into existing manifests (extra.dedup_signature): changing it re-hashes every `against:`
    assert DedupConfig().signature_fingerprint() == "b1e697a9e0533cb2"
    assert DedupConfig.model_validate({"exact": False}).signature_fingerprint() == "971295755ff827c2"


#: stamps written before the crop-window pHashes were resampled from the verification thumbnail (phash.WINDOW_HASH)
_BEFORE_WINDOW_HASH = {"default": "5e590b4005448aab", "exact_off": "20d3a56274e1db56", "crops_off": "e7eb36629f2b3ceb"}


def test_a_stamp_from_before_the_window_hash_change_is_re_hashed(tmp_path, monkeypatch):
    """``sig_phash_win`` changed value (issue #12): an ``against:`` manifest stamped before it is re-hashed from
    its media, while a recipe that stores no window hashes (``crops: false``) still reads its stored signatures."""
    import pyarrow as pa

    import curation.dedup.external as ext
    from curation.dedup import phash
    from manifests.schema import build_schema, conform
    from manifests.writer import ManifestWriter

    cfg, crops_off = DedupConfig(), DedupConfig.model_validate({"image": {"crops": False}})
    assert cfg.signature_fingerprint() != _BEFORE_WINDOW_HASH["default"]
    assert DedupConfig.model_validate({"exact": False}).signature_fingerprint() != _BEFORE_WINDOW_HASH["exact_off"]
    assert crops_off.signature_fingerprint() == _BEFORE_WINDOW_HASH["crops_off"]
    now = cfg.signature_fingerprint()
    with monkeypatch.context() as m:  # the window hash is what moves the stamp, and only where windows are hashed
        m.setattr(phash, "WINDOW_HASH", phash.WINDOW_HASH + 1)
        assert cfg.signature_fingerprint() != now
        assert crops_off.signature_fingerprint() == _BEFORE_WINDOW_HASH["crops_off"]
    schema = build_schema(signature_columns())

    def committed(name: str, stamp: str):
        writer = ManifestWriter(tmp_path / name, schema)
        writer.write(conform(pa.table({"id": ["x"], "source": ["s"], "modality": ["image"]}), schema))
        writer.commit(sources={"s": {"read": 1}}, extra={"dedup_signature": stamp})
        return tmp_path / name

    hashed: list[int] = []

    def fake(table, config):
        hashed.append(table.num_rows)
        return table

    monkeypatch.setattr(ext, "compute_signatures", fake)
    list(ext._manifest_batches(committed("old", _BEFORE_WINDOW_HASH["default"]), cfg))
    assert hashed == [1]  # stale: re-hashed
    list(ext._manifest_batches(committed("old_nocrops", _BEFORE_WINDOW_HASH["crops_off"]), crops_off))
    assert hashed == [1]  # no window hashes in this recipe: the stored signatures still serve


def test_edge_kinds_are_owned_once_and_declare_their_bucket_rule():
    kinds = edge_kinds()
    assert sorted(kinds) == list(range(9))
    assert {kinds[k].match for k in exact_kinds()} == {"bytes", "pixels", "text"}
    for k, v in kinds.items():
        assert v.bucket in ("star", "pairs")
        assert (v.check is not None) == (v.bucket == "pairs"), k
    claimed = [k for g in candidate_groups() for k in g]
    assert len(claimed) == len(set(claimed))
    cfg = DedupConfig()
    later = {kinds[k].match for k in kinds if kinds[k].verify_later(cfg)}
    assert later == {"phash", "minhash"}
    assert not any(kinds[k].verify_later(DedupConfig.model_validate({"image": {"verify": False}}))
                   for k in kinds if kinds[k].match == "phash")


def test_shared_phases_name_no_method():
    pattern = re.compile(r"\b(K_(BYTES|PIXELS|TEXT|PHASH|VHASH|MINHASH|PIXEL_ITEM|PHASH_ITEM|SEMANTIC)|"
                         r"imageverify|textverify|semantic_edges|align_sequences|cfg\.(image|video|semantic)\b)")
    offenders = {}
    for name in SHARED:
        text = (DEDUP / name).read_text()
        if name == "layout.py":  # the kind numbers themselves live here
            text = re.sub(r"^K_BYTES, .*= range\(8\)$", "", text, flags=re.M)
        if name == "clusters.py":  # K_BYTES is only the default evidence of a duplicate with no edge
            text = text.replace("K_BYTES, NODE_SCHEMA", "NODE_SCHEMA").replace("NO_EDGE = K_BYTES", "")
        if name == "records.py":  # the match_text salt and eval min_words are shared inputs of several methods
            text = text.replace("cfg.image.match_text", "").replace("cfg.text.min_words", "")
        hits = sorted({m.group(0) for m in pattern.finditer(text)})
        if hits:
            offenders[name] = hits
    assert offenders == {}


def test_signature_columns_include_every_method_column():
    cols = signature_columns()
    for m in methods():
        for c in m.columns:
            assert c in cols
    assert {"sig_bytes", "sig_phash", "sig_minhash", "sig_vhash"} <= set(cols)
