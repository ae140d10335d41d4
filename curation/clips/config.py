"""Recipe field ``sources[i].clips``: how a video source is cut into clips."""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TranscodeConfig(BaseModel):
    """Write every kept clip as its own file with PyAV (off by default: clips reference the source video)."""

    model_config = ConfigDict(extra="forbid")
    #: folder the clip files go to (relative to the recipe); one sub-folder per source
    dir: str
    #: PyAV encoder name (``mpeg4`` is in every FFmpeg build; ``libx264`` or ``h264`` where available)
    codec: str = "mpeg4"
    #: longer side of the written clips (null: the source size)
    max_side: Optional[int] = Field(None, ge=16)
    #: encoder bit rate in bits/s
    bit_rate: int = Field(2_000_000, ge=10_000)


class ClipConfig(BaseModel):
    """``clips:`` on a video source. Cut at scene changes (PySceneDetect's content detector) or at a fixed stride."""

    model_config = ConfigDict(extra="forbid")
    #: scenes: at content changes; stride: every ``stride_s`` seconds
    method: Literal["scenes", "stride"] = "scenes"
    #: content detector threshold on the mean |change| of hue, saturation and value (0-255); PySceneDetect's default
    threshold: float = Field(27.0, gt=0, le=255)
    #: a cut needs at least this many frames since the previous one (PySceneDetect's min_scene_len)
    min_scene_frames: int = Field(15, ge=1)
    #: stride method: clip length in seconds
    stride_s: float = Field(10.0, gt=0)
    #: clips shorter than this go to the ledger (reason ``min_clip_s``); a clip of no whole frame always does
    min_s: float = Field(0.5, ge=0)
    #: longer scenes are split into equal parts no longer than this
    max_s: Optional[float] = Field(60.0, gt=0)
    #: width frames are scanned at (the scan decodes every frame once)
    scan_width: int = Field(256, ge=32, le=1920)
    #: a gap between consecutive frame timestamps longer than this (seconds) is a timestamp jump: ledger
    max_timestamp_gap_s: float = Field(1.0, gt=0)
    transcode: Optional[TranscodeConfig] = None

    @model_validator(mode="after")
    def _lengths(self) -> "ClipConfig":
        import importlib.util

        if self.max_s is not None and self.max_s < self.min_s:
            raise ValueError(f"max_s ({self.max_s}) is below min_s ({self.min_s})")
        if importlib.util.find_spec("cv2") is None:  # the scan's colour conversions
            raise ValueError("cutting clips needs OpenCV: pip install 'smolcurate[scenes]'")
        return self
