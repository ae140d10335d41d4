"""Training mixtures: shares, seeded sampling, repeat caps, honest errors, output and provenance."""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curation.mixing import build_mixture, format_shares, plan_mixture, plot_shares
from curation.mixing.commands import register_mix
from curation.mixing.synthetic import synthetic_table, write_synthetic_manifest
from manifests import ManifestWriter, UserError, build_schema, make_id, open_manifest

WEIGHTS = {"photos": 0.3, "clips": 0.2, "docs": 0.2, "books": 0.2, "albums": 0.1}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("mix_inputs")
    a = write_synthetic_manifest(root / "a", {"photos": ("image", 3000), "clips": ("video", 600), "docs": ("document", 1500)}, shard_rows=1000)
    b = write_synthetic_manifest(root / "b", {"books": ("text", 4000), "albums": ("multi_image", 500)}, seed=1)
    return [str(a), str(b)]


def mixture(paths, **kw) -> dict:
    base = {"seed": 0, "total": 6000, "inputs": paths, "weights": WEIGHTS, "max_epochs": 3}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def read(path: Path) -> pa.Table:
    return open_manifest(path).table()


def samples_by_source(table: pa.Table) -> Counter:
    out: Counter = Counter()
    for s, r in zip(table.column("source").to_pylist(), table.column("repeat").to_pylist()):
        out[s] += r
    return out


# -- sampling -------------------------------------------------------------------------------------

def test_sample_shares_are_exact_and_upsampling_is_a_repeat_count(inputs, tmp_path):
    res = build_mixture(mixture(inputs, total=8000), tmp_path / "mix")
    table = read(res.path)
    got = samples_by_source(table)
    assert got == {name: round(share * 8000) for name, share in WEIGHTS.items()}
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "a row is written once, never copied"
    # albums (500 rows) must give 800 samples: every row once, 300 of them twice
    albums = [r for s, r in zip(table.column("source").to_pylist(), table.column("repeat").to_pylist()) if s == "albums"]
    assert sorted(Counter(albums).items()) == [(1, 200), (2, 300)]
    assert res.provenance["shares"]["source"]["albums"]["achieved_samples"] == pytest.approx(0.1)


def test_downsampling_draws_distinct_input_rows(inputs, tmp_path):
    res = build_mixture(mixture(inputs, total=2000, max_epochs=1), tmp_path / "mix")
    table = read(res.path)
    assert set(table.column("repeat").to_pylist()) == {1}
    in_ids = set()
    for p in inputs:
        in_ids |= set(read(Path(p)).column("id").to_pylist())
    ids = table.column("id").to_pylist()
    assert len(set(ids)) == len(ids) == 2000 and set(ids) <= in_ids


def test_same_seed_gives_an_identical_manifest(inputs, tmp_path):
    a = build_mixture(mixture(inputs), tmp_path / "a", overwrite=True)
    b = build_mixture(mixture(inputs), tmp_path / "b", overwrite=True)
    ma, mb = a.manifest(), b.manifest()
    assert [s["sha256"] for s in ma.info["shards"]] == [s["sha256"] for s in mb.info["shards"]]
    assert ma.info["extra"]["mixture"] == mb.info["extra"]["mixture"] | {"inputs": ma.info["extra"]["mixture"]["inputs"]}
    assert ma.table().equals(mb.table())


def test_another_seed_gives_another_order_with_the_same_shares(inputs, tmp_path):
    a = read(build_mixture(mixture(inputs), tmp_path / "a").path)
    b = read(build_mixture(mixture(inputs, seed=1), tmp_path / "b").path)
    assert a.column("id").to_pylist() != b.column("id").to_pylist()
    assert set(a.column("id").to_pylist()) != set(b.column("id").to_pylist()), "another draw, not just another order"
    assert samples_by_source(a) == samples_by_source(b)


def test_order_is_a_global_shuffle_in_streaming_shards(inputs, tmp_path):
    res = build_mixture(mixture(inputs, shard_rows=1000), tmp_path / "mix")
    m = res.manifest()
    rows = [s["rows"] for s in m.info["shards"]]
    assert all(r == 1000 for r in rows[:-1]) and 0 < rows[-1] <= 1000 and len(rows) > 3
    first = pa.parquet.read_table(m.shard_paths[0]) if hasattr(pa, "parquet") else None
    import pyarrow.parquet as pq

    first = pq.read_table(m.shard_paths[0])
    assert len(set(first.column("source").to_pylist())) == len(WEIGHTS), "the first shard mixes every source"
    sources = m.table(columns=["source"]).column("source").to_pylist()
    runs = sum(1 for x, y in zip(sources, sources[1:]) if x != y)
    assert runs > len(sources) / 3, "sources are interleaved, not concatenated"


def test_the_order_does_not_depend_on_the_spill_files(inputs, tmp_path, monkeypatch):
    """Rows are spilled by key range and shards cut in key order: with shards that straddle spill files (3 files,
    shards of 700 rows), and with spill files split again by key range (the bound on what gather holds, down to
    a few rows a file), the manifest's rows and shards are exactly those of a single spill file."""
    from curation.mixing import write

    one = None
    split = []
    default = write.SPILL_FILE_BYTES
    real_split = write._split
    monkeypatch.setattr(write, "_split", lambda *a: split.append(a[1]) or real_split(*a))
    # (spill files, the bytes above which a spill file is split again by key range: twice, at the smallest)
    for n_spill, file_bytes in ((1, default), (3, default), (128, default), (1, 200_000), (3, 100_000)):
        monkeypatch.setattr(write, "MAX_SPILL_FILES", n_spill)
        monkeypatch.setattr(write, "SPILL_FILE_BYTES", file_bytes)
        split.clear()
        res = build_mixture(mixture(inputs, shard_rows=700), tmp_path / f"s{n_spill}-{file_bytes}")
        assert bool(split) == (file_bytes < default), (n_spill, file_bytes)
        m = res.manifest()
        rows = [s["rows"] for s in m.info["shards"]]
        assert all(r == 700 for r in rows[:-1]) and 0 < rows[-1] <= 700 and sum(rows) == res.plan.rows_selected
        got = ([s["sha256"] for s in m.info["shards"]], m.table())
        if one is None:
            one = got
        assert got[0] == one[0] and got[1].equals(one[1])


def test_a_build_streams_the_scan_and_never_loads_a_column_per_row(inputs, tmp_path, monkeypatch):
    """The plan and the writer read the scan's spilled codes shard by shard and replay each group's decisions:
    no step of a build asks for a whole column of the scan or for every row's repeat count."""
    from curation.mixing import plan as plan_mod
    from curation.mixing import scan as scan_mod

    def refuse(*a, **k):
        raise AssertionError("a per-row array of the whole mixture was loaded")

    monkeypatch.setattr(scan_mod.ScanResult, "column", refuse)
    monkeypatch.setattr(plan_mod.MixturePlan, "repeat", property(refuse))
    for by in ({}, {"by": "tokens", "strategy": "smolvlm-256m", "total": 2_000_000}):
        res = build_mixture(mixture(inputs, max_epochs=4, **by), tmp_path / f"m{len(by)}")
        assert res.plan.samples == sum(res.manifest().table(columns=["repeat"]).column("repeat").to_pylist())


def test_repeat_cap_is_honored(inputs, tmp_path):
    # albums hold 500 rows; 0.1 of 6000 = 600 samples fits at max_epochs 2; clips: 600 rows -> 1200 at 0.2
    res = build_mixture(mixture(inputs, max_epochs={"default": 3, "albums": 2, "clips": 2}), tmp_path / "mix")
    table = read(res.path)
    reps = {}
    for s, r in zip(table.column("source").to_pylist(), table.column("repeat").to_pylist()):
        reps[s] = max(reps.get(s, 0), r)
    assert reps["albums"] <= 2 and reps["clips"] <= 2
    # a rule's max_epochs wins over the source's
    res = build_mixture(
        mixture(inputs, weights={"clips": 0.5, "books": 0.5}, total=2400, max_epochs=4,
                rules=[{"match": {"source": "clips", "duration": {"gt": 150}}, "max_epochs": 1}]),
        tmp_path / "mix2",
    )
    plan = res.plan
    long_clip = (plan.scan.source == plan.scan.source_names.index("clips")) & (plan.scan.cap == 1)
    assert long_clip.sum() > 100 and plan.repeat[long_clip].max() == 1
    assert plan.repeat.max() > 1


def test_impossible_request_names_the_source_and_the_shortfall(inputs, tmp_path):
    with pytest.raises(UserError) as err:
        build_mixture(mixture(inputs, total=20000, max_epochs=2), tmp_path / "mix")
    msg = str(err.value)
    # albums: 0.1 * 20000 = 2000 samples from 500 rows x 2 epochs = 1000 -> short by 1000
    assert "source 'albums' falls short" in msg and "short by 1,000 samples" in msg
    assert msg.startswith("weights.")
    assert not (tmp_path / "mix" / "manifest.json").exists()
    res = build_mixture(mixture(inputs, total=20000, max_epochs=2, allow_shortfall=True), tmp_path / "mix")
    albums = res.provenance["shares"]["source"]["albums"]
    assert albums["samples"] == 1000 and albums["requested_samples"] == 0.1
    assert albums["achieved_samples"] < 0.1
    assert "shortfall: albums" in format_shares(res.manifest())


def test_token_shares_land_within_one_percent(inputs, tmp_path):
    res = build_mixture(
        mixture(inputs, by="tokens", strategy="smolvlm-256m", total=4_000_000, max_epochs=4), tmp_path / "mix"
    )
    shares = res.provenance["shares"]["source"]
    for name, want in WEIGHTS.items():
        assert shares[name]["requested_tokens"] == want
        assert abs(shares[name]["achieved_tokens"] - want) < 0.01, name
    assert abs(res.plan.tokens - 4_000_000) / 4_000_000 < 0.01
    # the recorded tokens agree with the tokenization budget of the written rows
    from tokenization.budget import token_counts
    from tokenization.strategy import get_strategy

    table = read(res.path)
    counts = token_counts(table, get_strategy("smolvlm-256m")).column("tokens").to_numpy()
    assert int((counts * table.column("repeat").to_numpy()).sum()) == res.plan.tokens


def test_total_defaults_to_the_largest_the_caps_allow(inputs, tmp_path):
    res = build_mixture(mixture(inputs, total=None, max_epochs=1), tmp_path / "mix", dry_run=True)
    # clips (600 rows at 20%) bind before albums (500 rows at 10%): 3000 samples in all
    assert res.plan.samples == 3000 and res.path is None
    clips = next(g for g in res.provenance["groups"] if g["name"] == "clips")
    assert clips["achieved"] == clips["capacity"] == 600
    res = build_mixture(mixture(inputs, total=None, max_epochs={"default": 1, "clips": 3}), tmp_path / "mix", dry_run=True)
    assert res.plan.samples == 5000  # now albums bind


def test_total_in_the_other_unit_is_converted(inputs, tmp_path):
    plan = plan_mixture(mixture(inputs, by="tokens", strategy="smolvlm-256m", total=3000, total_unit="samples"))
    assert abs(plan.samples - 3000) / 3000 < 0.1
    plan = plan_mixture(mixture(inputs, strategy="smolvlm-256m", total=2_000_000, total_unit="tokens"))
    assert abs(plan.tokens - 2_000_000) / 2_000_000 < 0.1


# -- rules as data --------------------------------------------------------------------------------

def test_halving_short_clips_draws_fewer_of_them(tmp_path):
    rng = np.random.default_rng(0)
    short = synthetic_table("clips", "video", 1000, rng)
    long = synthetic_table("clips", "video", 1000, rng, start=1000)

    def set_duration(t: pa.Table, seconds: float) -> pa.Table:
        rows = t.to_pylist()
        for r in rows:
            r["media"][0]["duration"] = seconds
        return pa.Table.from_pylist(rows, schema=t.schema)

    w = ManifestWriter(tmp_path / "clips", build_schema())
    w.write(set_duration(short, 30.0))
    w.write(set_duration(long, 120.0))
    w.commit()
    base = {"seed": 0, "total": 500, "inputs": [str(tmp_path / "clips")], "modality_weights": {"video": 1.0}}
    plain = plan_mixture(base)
    halved = plan_mixture({**base, "rules": [{"match": {"duration": {"le": 60}}, "weight": 0.5}]})
    is_short = np.arange(2000) < 1000
    n_plain = int((plain.repeat[is_short] > 0).sum())
    n_halved = int((halved.repeat[is_short] > 0).sum())
    assert 200 < n_plain < 300  # half of the draw, by chance
    assert n_halved < n_plain - 40 and 120 < n_halved < 220  # about one third with weight 0.5
    assert halved.samples == 500


def test_keep_puts_a_source_in_whole(inputs, tmp_path):
    cfg = mixture(inputs, weights=None, modality_weights={"image": 0.5, "text": 0.3, "document": 0.2},
                  total=6000, keep=["albums"], max_epochs=1)
    plan = plan_mixture(cfg)
    albums = plan.scan.source == plan.scan.source_names.index("albums")
    assert albums.sum() == 500 and (plan.repeat[albums] == 1).all()
    image = next(g for g in plan.groups if g.name == "image")
    assert image.samples == 3000 and image.kept_mass == 500
    with pytest.raises(UserError, match=r"keep: rows kept at 100% in modality 'image' hold 500 samples, more than its target of 300"):
        plan_mixture({**cfg, "total": 600})


def test_rules_on_meta_and_extension_columns(tmp_path):
    rows = [
        {"id": make_id("s", str(i)), "source": "s", "modality": "text", "text": "x" * 10,
         "meta": json.dumps({"subset": "math" if i % 4 == 0 else "chat"}), "score_q": float(i % 10)}
        for i in range(400)
    ]
    w = ManifestWriter(tmp_path / "m", build_schema({"score_q": pa.float32()}))
    w.write(pa.Table.from_pylist(rows))
    w.commit()
    cfg = {"seed": 0, "inputs": [str(tmp_path / "m")], "modality_weights": {"math": 0.5, "chat": 0.5},
           "categories": {"math": {"meta": {"subset": "math"}}, "chat": {"modality": "text"}},
           "rules": [{"match": {"columns": {"score_q": {"lt": 5}}}, "weight": 0.0}]}
    plan = plan_mixture(cfg)
    # math rows (i % 4 == 0) score 0, 2, 4, 6, 8 alike: 40 of 100 pass score >= 5 and bind the total at 80
    assert plan.samples == 80
    picked = np.flatnonzero(plan.repeat)
    assert all(rows[i]["score_q"] >= 5 for i in picked)
    assert sum(json.loads(rows[i]["meta"])["subset"] == "math" for i in picked) == 40
    assert plan.scan.rule_rows == [200]


def test_inputs_can_be_restricted_to_some_sources(inputs, tmp_path):
    cfg = mixture(inputs, inputs=[{"path": inputs[0], "sources": ["photos"]}, inputs[1]],
                  weights={"photos": 0.5, "books": 0.5}, total=1000)
    plan = plan_mixture(cfg)
    assert set(np.unique(plan.scan.source[plan.repeat > 0])) == {
        plan.scan.source_names.index("photos"), plan.scan.source_names.index("books")
    }
    with pytest.raises(UserError, match=r"^weights\.docs: unknown source 'docs'"):
        plan_mixture({**cfg, "weights": {"docs": 0.5, "books": 0.5}})


def test_recorded_token_columns_of_the_same_strategy_are_reused(tmp_path):
    from tokenization.strategy import get_strategy

    rng = np.random.default_rng(0)
    t = synthetic_table("books", "text", 300, rng)
    t = t.append_column("tokens", pa.array(np.full(300, 1000), pa.int64()))
    w = ManifestWriter(tmp_path / "m", build_schema({"tokens": pa.int64()}))
    w.write(t)
    w.commit(extra={"tokenization": get_strategy("smolvlm-256m").to_dict()})
    cfg = {"by": "tokens", "strategy": "smolvlm-256m", "total": 50_000, "inputs": [str(tmp_path / "m")], "weights": {"books": 1.0}}
    plan = plan_mixture(cfg)
    assert (plan.scan.tokens == 1000).all() and plan.samples == 50
    other = plan_mixture({**cfg, "strategy": "smolvlm-2.2b"})  # another strategy: counted afresh
    assert not (other.scan.tokens == 1000).all()


# -- output and provenance ------------------------------------------------------------------------

def test_output_keeps_the_schema_and_records_provenance(inputs, tmp_path):
    res = build_mixture(mixture(inputs, preset=None), tmp_path / "mix")
    m = res.manifest()
    in_schema = open_manifest(inputs[0]).schema
    assert m.schema.names == in_schema.names + ["repeat"]
    for f in in_schema:
        assert m.schema.field(f.name).type == f.type
    mix = m.info["extra"]["mixture"]
    assert mix["kind"] == "smolcurate-mixture" and mix["seed"] == 0 and mix["by"] == "samples"
    assert [i["path"] for i in mix["inputs"]] == [str(Path(p).resolve()) for p in inputs]
    for item, p in zip(mix["inputs"], inputs):
        assert item["fingerprint"] == open_manifest(p).fingerprint() and len(item["manifest_sha256"]) == 64
    assert set(mix["shares"]) == {"source", "modality"}
    assert mix["shares"]["source"]["photos"]["requested_samples"] == 0.3
    assert mix["total"]["samples"] == 6000 == sum(r["samples"] for r in mix["shares"]["source"].values())
    assert m.info["recipe_hash"] and m.info["recipe"]["mixture"]["weights"] == WEIGHTS


def test_inspect_prints_requested_and_achieved_shares(inputs, tmp_path, capsys):
    from manifests.cli import main

    res = build_mixture(mixture(inputs, by="tokens", strategy="smolvlm-256m", total=2_000_000, max_epochs=4), tmp_path / "mix")
    assert main(["inspect", str(res.path)]) == 0
    out = capsys.readouterr().out
    assert "mixture shares" in out and "tokens 30.0% -> 30." in out


def test_torch_loader_honors_repeat_counts(inputs, tmp_path):
    res = build_mixture(mixture(inputs, total=1200, weights={"albums": 1.0}, max_epochs=3), tmp_path / "mix")
    seen = Counter(row["id"] for row in res.manifest().to_torch(decode=False))
    assert sum(seen.values()) == 1200
    table = read(res.path)
    assert dict(zip(table.column("id").to_pylist(), table.column("repeat").to_pylist())) == dict(seen)


def test_plot_shares_draws_requested_against_achieved(inputs, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    res = build_mixture(mixture(inputs, by="tokens", strategy="smolvlm-256m", total=2_000_000, max_epochs=4), tmp_path / "mix")
    fig = plot_shares(res.manifest())
    ax = fig.axes[0]
    bars = [p for p in ax.patches]
    assert len(bars) == 3 * len(WEIGHTS)  # requested, achieved samples, achieved tokens
    heights = {(c.get_label()): [b.get_height() for b in c] for c in ax.containers}
    assert heights["requested (tokens)"] == pytest.approx([100 * WEIGHTS[n] for n in res.provenance["shares"]["source"]])
    fig2 = plot_shares(str(res.path), level="modality")
    assert "modality" in fig2.axes[0].get_title()


def test_presets_match_the_published_shares(inputs, tmp_path):
    from curation.mixing import list_presets, load_preset

    assert set(list_presets()) >= {"smolvlm-vision-256m", "smolvlm-vision-2.2b", "smolvlm2-video-256m", "smolvlm2-video-2.2b"}
    video = load_preset("smolvlm2-video-256m")
    assert video["modality_weights"] == {"image": 0.338, "video": 0.331, "text": 0.215, "multi-image": 0.116}
    assert load_preset("smolvlm2-video-2.2b")["modality_weights"]["multi-image"] == 0.123
    assert load_preset("smolvlm-vision-256m")["modality_weights"]["documents"] == 0.41
    assert video["rules"][0]["weight"] == 0.5 and video["rules"][0]["match"]["duration"] == {"le": 60}
    plan = plan_mixture({"preset": "smolvlm2-video-256m", "inputs": inputs, "total": 2000, "max_epochs": 3})
    got = {g.name: g.samples for g in plan.groups}
    assert got == {"image": 676, "video": 662, "text": 430, "multi-image": 232}
    cats = plan.scan.category_names
    albums = plan.scan.source == plan.scan.source_names.index("albums")
    assert (plan.scan.category[albums] == cats.index("multi-image")).all()


# -- command line ---------------------------------------------------------------------------------

def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="smolcurate")
    register_mix(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_builds_a_mixture_from_a_yaml_file(inputs, tmp_path, capsys):
    import yaml

    spec = tmp_path / "mix.yaml"
    spec.write_text(yaml.safe_dump(mixture(inputs, total=3000)))
    assert _cli(["mix", str(spec), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "by source: (requested)" in out and "wrote" in out
    assert open_manifest(tmp_path / "out").info["extra"]["mixture"]["total"]["samples"] == 3000
    assert _cli(["mix", str(spec), "--dry-run", "--seed", "3", "--total", "1000"]) == 0
    assert "dry run" in capsys.readouterr().out
    assert _cli(["mix", "--list-presets"]) == 0 and "smolvlm2-video-256m" in capsys.readouterr().out
    with pytest.raises(UserError, match="--out"):
        _cli(["mix", str(spec)])
