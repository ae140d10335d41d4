"""Bad mixture input: each error is one line that names the field."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from curation.mixing import build_mixture, load_mixture, parse_mixture, plan_mixture
from curation.mixing.synthetic import write_synthetic_manifest
from manifests import RecipeError, UserError


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("mix_cfg")
    return str(write_synthetic_manifest(root / "a", {"photos": ("image", 200), "books": ("text", 200)}))


def base(small: str, **kw) -> dict:
    cfg = {"seed": 0, "total": 100, "inputs": [small], "weights": {"photos": 0.5, "books": 0.5}}
    cfg.update(kw)
    return cfg


def field_of(exc: pytest.ExceptionInfo) -> str:
    return exc.value.field or ""


def test_weights_not_summing_to_one(small):
    with pytest.raises(RecipeError) as err:
        parse_mixture(base(small, weights={"photos": 0.5, "books": 0.4}))
    assert field_of(err) == "weights" and "sum to 0.9, not 1" in str(err.value)
    with pytest.raises(RecipeError) as err:
        parse_mixture(base(small, weights=None, modality_weights={"image": 0.7, "text": 0.7}))
    assert field_of(err) == "modality_weights"
    with pytest.raises(RecipeError) as err:
        parse_mixture(base(small, weights={"photos": -0.5, "books": 1.5}))
    assert "photos" in str(err.value)


def test_unknown_source(small):
    with pytest.raises(UserError) as err:
        plan_mixture(base(small, weights={"photos": 0.5, "pets": 0.5}))
    assert str(err.value) == "weights.pets: unknown source 'pets'; the inputs hold: books, photos"
    with pytest.raises(UserError, match=r"^rules\[0\]\.match\.source: unknown source 'pets'"):
        plan_mixture(base(small, rules=[{"match": {"source": "pets"}, "weight": 0.5}]))
    with pytest.raises(UserError, match=r"^keep\[0\]: unknown source"):
        plan_mixture(base(small, keep=["pets"]))
    with pytest.raises(UserError, match=r"^max_epochs\.pets: unknown source"):
        plan_mixture(base(small, max_epochs={"pets": 2}))
    with pytest.raises(UserError, match=r"^modality_weights\.pictures: unknown modality 'pictures'"):
        plan_mixture(base(small, weights=None, modality_weights={"pictures": 1.0}))


def test_manifest_of_another_format_version(small, tmp_path):
    import shutil

    other = tmp_path / "v2"
    shutil.copytree(small, other)
    info = json.loads((other / "manifest.json").read_text())
    info["format_version"] = 2
    (other / "manifest.json").write_text(json.dumps(info))
    with pytest.raises(UserError) as err:
        plan_mixture(base(small, inputs=[small, str(other)]))
    assert str(err.value).startswith("inputs[1]") and "format_version 2" in str(err.value)
    with pytest.raises(UserError, match=r"^inputs\[0\]: .*not a manifest"):
        plan_mixture(base(small, inputs=[str(tmp_path / "missing")]))


def test_token_share_without_a_strategy(small):
    with pytest.raises(RecipeError) as err:
        plan_mixture(base(small, by="tokens"))
    assert field_of(err) == "strategy" and "tokenization strategy" in str(err.value)
    with pytest.raises(RecipeError, match="^strategy: "):
        plan_mixture(base(small, by="tokens", strategy="smolvlm-9000b"))
    with pytest.raises(RecipeError, match="^strategy"):  # a token rule needs it too
        plan_mixture(base(small, rules=[{"match": {"tokens": {"gt": 100}}, "weight": 0.5}]))


def test_other_bad_fields_are_named(small, tmp_path):
    cases = [
        (base(small, weightz={"photos": 1.0}), "weightz"),
        (base(small, by="pixels"), "by"),
        (base(small, total=-5), "total"),
        (base(small, max_epochs=0), "max_epochs"),
        (base(small, modality_weights={"image": 1.0}), "mixture"),  # both weights and modality_weights
        (base(small, weights=None), "mixture"),
        (base(small, rules=[{"match": {"duration": {"under": 60}}, "weight": 0.5}]), "rules[0].match.duration.under"),
        (base(small, rules=[{"match": {}, "weight": 0.5}]), "rules[0].match"),
        (base(small, rules=[{"match": {"source": "photos"}, "weight": -1}]), "rules[0].weight"),
        (base(small, preset="smolvlm-9000"), "preset"),
    ]
    for cfg, field in cases:
        with pytest.raises(RecipeError) as err:
            parse_mixture(cfg)
        assert field_of(err) == field or str(err.value).startswith(field), (field, str(err.value))
        assert "\n" not in str(err.value)


def test_yaml_file_paths_resolve_against_the_file(small, tmp_path):
    rel = Path(small).relative_to(Path(small).parent.parent)
    spec = Path(small).parent.parent / "mix.yaml"
    spec.write_text(f"seed: 1\ntotal: 100\ninputs: [{rel}]\nweights: {{photos: 0.5, books: 0.5}}\n")
    cfg = load_mixture(spec)
    assert cfg.input_specs()[0].path == str(Path(small).resolve())
    # a file:// URI is the local path it names, not a folder called "file:" beside the YAML
    spec.write_text(f"seed: 1\ntotal: 100\ninputs: [{Path(small).resolve().as_uri()}]\nweights: {{photos: 0.5, books: 0.5}}\n")
    cfg = load_mixture(spec)
    assert cfg.input_specs()[0].path == str(Path(small).resolve())
    assert plan_mixture(cfg).rows_selected == 100
    as_dict = {"seed": 1, "total": 100, "inputs": [Path(small).resolve().as_uri()], "weights": {"photos": 0.5, "books": 0.5}}
    assert plan_mixture(as_dict).rows_selected == 100  # open_manifest takes the URI as it is
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_mixture(bad)
    with pytest.raises(RecipeError, match="mixture file not found"):
        load_mixture(tmp_path / "none.yaml")


def test_a_mixture_is_not_an_input(small, tmp_path):
    res = build_mixture(base(small), tmp_path / "mix")
    with pytest.raises(UserError, match=r"^inputs\[0\]: .*already a mixture"):
        plan_mixture(base(small, inputs=[str(res.path)]))
    with pytest.raises(UserError, match=r"listed twice"):
        plan_mixture(base(small, inputs=[small, small]))


def test_strategy_and_tokenizer_errors_name_the_mixture_field(small, tmp_path):
    with pytest.raises(RecipeError) as err:
        plan_mixture(base(small, by="tokens", strategy={"name": "smolvlm-256m", "tile": -1}))
    assert field_of(err) == "strategy.tile" and str(err.value).startswith("strategy.tile: must be")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("not json")
    with pytest.raises(RecipeError) as err:
        plan_mixture(base(small, by="tokens", strategy="smolvlm-256m", tokenizer=str(bad)))
    assert field_of(err) == "tokenizer" and "not a valid tokenizer.json" in str(err.value)


def test_a_damaged_input_shard_is_one_line(small, tmp_path):
    import shutil

    from manifests import ManifestError

    copy = tmp_path / "copy"
    shutil.copytree(small, copy)
    shard = sorted((copy / "data").glob("*.parquet"))[0]
    shard.write_bytes(b"\0" * shard.stat().st_size)  # same size, so only the Parquet reader notices
    with pytest.raises(ManifestError, match="not a readable Parquet shard"):
        plan_mixture(base(small, inputs=[str(copy)]))
    shard.unlink()
    with pytest.raises(ManifestError, match="is missing"):
        plan_mixture(base(small, inputs=[str(copy)]))
