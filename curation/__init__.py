"""Curation: read image, image-text, document, text and video sources, score and filter them, write manifests.

Entry points: ``smolcurate curate`` / ``smolcurate demo`` (see docs/curation.md),
:func:`curation.recipe.load_recipe` and :func:`curation.engine.run_job`. Other
packages plug in as operators (:mod:`curation.operators`): dedup signatures,
token counts.
"""
