"""Cutting video sources into clips: one manifest row per clip, located by ``start_s``/``end_s`` on its video.

The cut happens when a chunk is read (:func:`curation.clips.expand.expand_clips`),
so every later operator (analyzer, filters, frame hashes, token counts) sees
clip rows, and the ledger accounts for every clip as for any other row.
"""
from curation.clips.config import ClipConfig
from curation.clips.plan import Clip, plan_clips

__all__ = ["ClipConfig", "Clip", "plan_clips"]
