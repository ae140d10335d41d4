"""Training mixtures: combine curated manifests by sample or token shares into one streaming manifest.

Python API::

    from curation.mixing import build_mixture, plot_shares
    result = build_mixture("mixture.yaml", "out/mix")
    plot_shares(result.manifest())

`smolcurate mix MIXTURE.yaml --out DIR` is the same step on the command line;
a curation recipe embeds :class:`MixtureConfig` under ``mixture:``.
"""
from curation.mixing.api import MixtureResult, build_mixture, plan_mixture
from curation.mixing.config import Match, MixtureConfig, Range, Rule, load_mixture, parse_mixture
from curation.mixing.presets import list_presets, load_preset
from curation.mixing.report import format_shares, plot_shares, shares_dict

__all__ = [
    "Match",
    "MixtureConfig",
    "MixtureResult",
    "Range",
    "Rule",
    "build_mixture",
    "format_shares",
    "list_presets",
    "load_mixture",
    "load_preset",
    "parse_mixture",
    "plan_mixture",
    "plot_shares",
    "shares_dict",
]
