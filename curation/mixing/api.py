"""Build a mixture: open and check the inputs, scan metadata, plan, then write and commit."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Union

from curation.mixing.config import Match, MixtureConfig, load_mixture, parse_mixture
from curation.mixing.features import as_list
from curation.mixing.plan import MixturePlan, make_plan
from curation.mixing.report import provenance
from curation.mixing.scan import InputManifest, scan_inputs
from curation.mixing.tokens import make_token_counter
from curation.mixing.write import REPEAT_COLUMN, auto_shard_rows, output_schema, write_mixture
from manifests.errors import ManifestError, RecipeError
from manifests.schema import FORMAT_VERSION, MODALITIES

ConfigLike = Union[MixtureConfig, dict, str, os.PathLike]
InputLike = Union[str, os.PathLike, Any]  # a path or an opened manifests.reader.Manifest


@dataclass
class MixtureResult:
    """What a build produced: the output folder (None for a dry run), the plan, and the provenance record."""

    path: Path | str | None  # a URI when written to an object store
    plan: MixturePlan
    provenance: dict[str, Any]

    def manifest(self):
        from manifests.reader import open_manifest

        if self.path is None:
            raise ValueError("a dry run wrote no manifest")
        return open_manifest(self.path)


def as_config(config: ConfigLike) -> MixtureConfig:
    if isinstance(config, MixtureConfig):
        return config
    if isinstance(config, dict):
        return parse_mixture(config)
    return load_mixture(config)


def open_inputs(cfg: MixtureConfig, inputs: Iterable[InputLike] | None = None) -> list[InputManifest]:
    """Open every input; a missing, corrupt or other-version manifest is an error naming `inputs[i]`."""
    from manifests.reader import Manifest, open_manifest

    if inputs is not None:
        specs: list[tuple[Any, list[str] | None]] = [(i, None) for i in inputs]
    else:
        specs = [(s.path, s.sources) for s in cfg.input_specs()]
    if not specs:
        raise RecipeError("no input manifests; list them under inputs:", field="inputs")
    opened: list[InputManifest] = []
    seen: dict[Path, int] = {}
    for i, (item, sources) in enumerate(specs):
        where = f"inputs[{i}]"
        if isinstance(item, Manifest):
            m = item
        else:
            try:
                m = open_manifest(item)
            except ManifestError as exc:
                raise RecipeError(str(exc), field=where) from None
        version = m.info.get("format_version")
        if version != FORMAT_VERSION:
            raise RecipeError(
                f"{m.path} has format_version {version}; this smolcurate mixes version {FORMAT_VERSION} only",
                field=f"{where}.format_version",
            )
        if REPEAT_COLUMN in m.schema.names:
            raise RecipeError(
                f"{m.path} is already a mixture (it has a {REPEAT_COLUMN!r} column); mix its inputs instead",
                field=where,
            )
        if m.path in seen:
            raise RecipeError(f"{m.path} is listed twice (also inputs[{seen[m.path]}])", field=where)
        seen[m.path] = i
        if sources is not None:
            unknown = sorted(set(sources) - set(m.info.get("sources", {})))
            if unknown:
                raise RecipeError(
                    f"unknown source {unknown[0]!r}; {m.path} holds: {', '.join(sorted(m.info['sources']))}",
                    field=f"{where}.sources",
                )
        opened.append(InputManifest(index=i, path=m.path, manifest=m, sources=sources))
    return opened


def known_sources(inputs: list[InputManifest]) -> list[str]:
    names: set[str] = set()
    for item in inputs:
        have = set(item.manifest.info.get("sources", {}))
        names |= have if item.sources is None else have & set(item.sources)
    return sorted(names)


def check_names(cfg: MixtureConfig, inputs: list[InputManifest]) -> None:
    """Every source, modality, category and column the mixture names must exist in the inputs."""
    sources = known_sources(inputs)
    columns = set().union(*(set(i.manifest.schema.names) for i in inputs))

    def bad_source(name: str, field: str) -> None:
        if name not in sources:
            raise RecipeError(f"unknown source {name!r}; the inputs hold: {', '.join(sources) or 'none'}", field=field)

    level = cfg.group_level
    shares_field = "weights" if cfg.weights is not None else "modality_weights"
    for name in cfg.shares:
        if level == "source":
            bad_source(name, f"{shares_field}.{name}")
        elif level == "modality" and name not in MODALITIES:
            raise RecipeError(
                f"unknown modality {name!r}; known: {', '.join(MODALITIES)} (or define categories:)",
                field=f"{shares_field}.{name}",
            )
        elif level == "category" and name not in (cfg.categories or {}):
            raise RecipeError(
                f"{name!r} is not defined under categories: ({', '.join(cfg.categories or {})})",
                field=f"{shares_field}.{name}",
            )

    def check_match(match: Match, field: str) -> None:
        for s in as_list(match.source):
            bad_source(s, f"{field}.source")
        for m in as_list(match.modality):
            if m not in MODALITIES:
                raise RecipeError(f"unknown modality {m!r}; known: {', '.join(MODALITIES)}", field=f"{field}.modality")
        for c in as_list(match.category):
            if c not in (cfg.categories or {}):
                raise RecipeError(f"unknown category {c!r}", field=f"{field}.category")
        for col in match.columns or {}:
            if col not in columns:
                raise RecipeError(f"no input has a column {col!r}", field=f"{field}.columns.{col}")

    for name, match in (cfg.categories or {}).items():
        check_match(match, f"categories.{name}")
    for i, rule in enumerate(cfg.rules):
        check_match(rule.match, f"rules[{i}].match")
    for i, name in enumerate(cfg.keep):
        bad_source(name, f"keep[{i}]")
    if isinstance(cfg.max_epochs, dict):
        for name in cfg.max_epochs:
            if name != "default":
                bad_source(name, f"max_epochs.{name}")


def plan_mixture(config: ConfigLike, *, inputs: Iterable[InputLike] | None = None) -> MixturePlan:
    """Decide every row's repeat count without writing anything (what `--dry-run` prints)."""
    cfg = as_config(config)
    opened = open_inputs(cfg, inputs)
    check_names(cfg, opened)
    counter = make_token_counter(cfg, opened)
    scan = scan_inputs(cfg, opened, counter, known_sources(opened))
    return make_plan(cfg, opened, scan)


def build_mixture(
    config: ConfigLike,
    out: str | os.PathLike,
    *,
    inputs: Iterable[InputLike] | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
) -> MixtureResult:
    """Build a mixture manifest at `out` from a MixtureConfig, a dict or a mixture YAML path.

    `inputs` (paths or opened manifests) replaces the config's `inputs:`, which is
    how a curation recipe mixes what it just curated.
    """
    from manifests.writer import ManifestWriter

    plan = plan_mixture(config, inputs=inputs)
    shard_rows = plan.config.shard_rows or auto_shard_rows(plan)
    record = provenance(plan, shard_rows)
    if dry_run:
        return MixtureResult(path=None, plan=plan, provenance=record)
    schema = output_schema(plan)
    writer = ManifestWriter(out, schema, overwrite=overwrite)
    write_mixture(plan, writer, shard_rows)
    source_rows = _source_rows(plan)
    path = writer.commit(
        recipe={"mixture": record["config"]},
        sources={name: {"available": n} for name, n in source_rows.items()},
        extra={"mixture": record},
    )
    from manifests.storage import is_uri

    return MixtureResult(path=path if is_uri(path) else Path(path), plan=plan, provenance=record)  # a URI stays one


def _source_rows(plan: MixturePlan) -> dict[str, int]:
    return {name: int(plan.scan.source_rows[i]) for i, name in enumerate(plan.scan.source_names)}
