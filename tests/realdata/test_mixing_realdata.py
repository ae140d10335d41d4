"""A token-weighted mixture of manifests made by `curate` from ../shared/realdata."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

WEIGHTS = {"docs": 0.3, "pairs": 0.15, "photos": 0.25, "licenses": 0.2, "clips": 0.1}


@pytest.fixture(scope="module")
def curated(realdata: Path, tmp_path_factory) -> list[Path]:
    """Two curated manifests (as two curation runs would give), on the in-process engine."""
    from curation.engine.job import run_job
    from curation.recipe import load_recipe

    root = tmp_path_factory.mktemp("mix_realdata")
    recipes = {
        "visual": f"""\
seed: 0
sources:
  - {{name: photos, kind: images, path: {realdata}/images}}
  - {{name: pairs, kind: image_text, path: {realdata}/pairs/gcompris/captions.jsonl, image_column: image, text_column: text, limit: 120}}
  - {{name: clips, kind: video, path: {realdata}/videos}}
tokens: {{strategy: smolvlm-256m}}
""",
        "textual": f"""\
seed: 0
sources:
  - {{name: licenses, kind: text, path: {realdata}/documents/spdx/licenses.jsonl, text_column: text, limit: 250}}
  - {{name: docs, kind: document, path: {realdata}/documents/pypdf-samples, limit: 12}}
tokens: {{strategy: smolvlm-256m}}
""",
    }
    outs = []
    for name, body in recipes.items():
        (root / f"{name}.yaml").write_text(body)
        out = root / name
        run_job(load_recipe(root / f"{name}.yaml"), out, engine="local", quiet=True)
        outs.append(out)
    return outs


def test_token_shares_within_one_percent_on_curated_realdata(curated, tmp_path, capsys):
    import numpy as np
    import yaml

    from curation.mixing.commands import register_mix
    from manifests.reader import open_manifest
    from manifests.validate import validate
    from tokenization.budget import token_counts
    from tokenization.strategy import get_strategy

    spec = tmp_path / "mix.yaml"
    spec.write_text(yaml.safe_dump({
        "seed": 0, "by": "tokens", "strategy": "smolvlm-256m", "total": 800_000,
        "inputs": [str(p) for p in curated], "weights": WEIGHTS, "max_epochs": 50,
    }))
    parser = argparse.ArgumentParser(prog="smolcurate")
    register_mix(parser.add_subparsers())
    args = parser.parse_args(["mix", str(spec), "--out", str(tmp_path / "mix")])
    assert args.func(args) == 0
    assert "by source: (requested)" in capsys.readouterr().out

    m = open_manifest(tmp_path / "mix")
    validate(m.path, check_media=True)
    mix = m.info["extra"]["mixture"]
    for name, want in WEIGHTS.items():
        row = mix["shares"]["source"][name]
        assert row["requested_tokens"] == want
        assert abs(row["achieved_tokens"] - want) <= 0.01, (name, row)
    # the token counts behind the shares are the budget of the rows written, times their repeat counts
    table = m.table()
    counts = token_counts(table, get_strategy("smolvlm-256m")).column("tokens").to_numpy()
    repeat = table.column("repeat").to_numpy()
    assert int((counts * repeat).sum()) == mix["total"]["tokens"]
    assert abs(mix["total"]["tokens"] - 800_000) / 800_000 < 0.01
    sources = np.array(table.column("source").to_pylist())
    for name in WEIGHTS:
        got = (counts * repeat)[sources == name].sum() / (counts * repeat).sum()
        assert abs(got - WEIGHTS[name]) <= 0.01
    assert (repeat >= 1).all() and repeat.max() <= 50
