"""Grid files: what to train on, the settings every run shares, and the axes that vary.

A grid is YAML validated by pydantic with ``extra='forbid'`` at every level, so
a misspelt axis or field is a one-line :class:`RecipeError` naming it instead
of a silently ignored key. Expansion is the cartesian product of the axes,
times the seeds; every point is checked (patch grid divisible by r, widths
divisible by heads, ...) before any data is generated or any step is trained.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from manifests.config import load_yaml_file, validation_error
from manifests.errors import RecipeError

TASK_KINDS = ("read", "locate", "count", "colors", "caption", "manifest")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskSpec(_Strict):
    """Where the samples come from: a built-in generator or a manifest of image/video + text rows."""

    kind: Literal["read", "locate", "count", "colors", "caption", "manifest"]
    manifest: Optional[str] = Field(None, description="manifest directory (caption/manifest kinds), relative to the grid file")
    text: Optional[str] = Field(
        None, description="read: text source (.txt, .jsonl with a text field, or a text manifest); default: installed licence texts"
    )
    backgrounds: Optional[str] = Field(
        None, description="locate/count/colors: folder or manifest of real images used as backgrounds (colors also takes 'paper'); default: images shipped in installed packages"
    )
    media: Literal["image", "video"] = "image"
    train: int = Field(512, ge=1, description="training samples to generate (or at most to use from a manifest)")
    val: int = Field(64, ge=1, description="held-out samples for validation loss and greedy-decoding accuracy")
    width: int = Field(128, ge=16, description="generated image width in pixels")
    height: int = Field(128, ge=16, description="generated image height in pixels")
    regions: int = Field(2, ge=1, le=6, description="locate: the image is cut into regions x regions cells")
    max_count: int = Field(5, ge=1, le=20, description="count/colors: at most this many marked objects (colors: discs per image)")
    max_words: int = Field(2, ge=1, le=12, description="read: words per snippet (1..max_words)")
    max_chars: int = Field(16, ge=1, le=200, description="read: longest snippet in characters")
    font_size: tuple[int, int] = Field((14, 28), description="read: smallest and largest font size in pixels")
    frames: int = Field(6, ge=1, le=64, description="video tasks: frames (one word or one object per frame), at 1 fps")
    mark_px: Optional[tuple[int, int]] = Field(
        None, description="colors: smallest and largest disc radius in pixels (default: 15-30% of a cell)"
    )
    seed: int = 0

    @field_validator("font_size")
    @classmethod
    def _sizes(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 4 or v[1] < v[0]:
            raise ValueError("font_size must be [min, max] with 4 <= min <= max")
        return v

    @model_validator(mode="after")
    def _needs_manifest(self) -> "TaskSpec":
        if self.kind in ("caption", "manifest") and not self.manifest:
            raise ValueError(f"task kind {self.kind!r} needs a manifest path")
        if self.media == "video" and self.kind not in ("read", "count", "colors", "manifest"):
            raise ValueError(f"media: video is supported for read, count, colors and manifest tasks, not {self.kind!r}")
        return self


class RunSettings(_Strict):
    """Everything one training run depends on. Every field except ``seed`` can be a grid axis."""

    # tokenization (the things being ablated)
    strategy: str = Field("smolvlm-256m", description="tokenization preset the fields below override")
    tile: int = Field(64, ge=8, description="tile side in pixels (the encoder's input size)")
    patch: int = Field(8, ge=2, description="ViT patch size")
    longest_edge: int = Field(128, ge=8, description="images are resized so their longest edge is this, then split into tiles")
    pixel_shuffle: int = Field(2, ge=1, description="pixel-shuffle ratio r: visual tokens per tile = (tile/patch/r)^2")
    do_split: bool = True
    positional: Literal["learned", "string", "none"] = "learned"
    video_frames: int = Field(8, ge=1, description="most frames sampled from a video (1 fps)")
    frame_averaging: int = Field(1, ge=1, description="average this many consecutive frames into one frame's tokens")
    intro_outro: bool = Field(True, description="media intro/outro text around images and videos")
    system_prompt: bool = Field(False, description="SmolVLM's system prompt in front of every sample")
    loss: Literal["completion", "full"] = Field(
        "completion", description="training labels: the answer only (completion) or every text token (full); validation is always on the answer"
    )
    # model
    width: int = Field(128, ge=8, description="LM width")
    depth: int = Field(2, ge=1, description="LM blocks")
    heads: int = Field(4, ge=1)
    vision_width: int = Field(96, ge=8)
    vision_depth: int = Field(2, ge=1)
    vision_heads: int = Field(4, ge=1)
    vocab_size: int = Field(384, ge=300, description="BPE vocabulary trained on the task text (from-scratch LM only)")
    # optimisation
    steps: int = Field(300, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup: int = Field(20, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    checkpoint_every: int = Field(100, ge=1, description="steps between checkpoints (and at the end)")
    eval_every: int = Field(0, ge=0, description="steps between validation-loss points (0: only at the end)")
    eval_samples: int = Field(64, ge=1, description="held-out samples decoded greedily for accuracy")
    max_new_tokens: int = Field(24, ge=1)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    seed: int = 0

    def check(self) -> None:
        """Point-level consistency; raises RecipeError naming the field."""
        if self.tile % self.patch:
            raise RecipeError(f"tile {self.tile} is not a multiple of patch {self.patch}", field="patch")
        grid = self.tile // self.patch
        if grid % self.pixel_shuffle:
            raise RecipeError(
                f"r={self.pixel_shuffle} does not divide the {grid}x{grid} patch grid (tile {self.tile} / patch {self.patch})",
                field="pixel_shuffle",
            )
        if self.longest_edge < self.tile:
            raise RecipeError(f"longest_edge {self.longest_edge} is smaller than tile {self.tile}", field="longest_edge")
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise RecipeError(f"width {self.width} must split into {self.heads} heads of even size", field="width")
        if self.vision_width % self.vision_heads:
            raise RecipeError(f"vision_width {self.vision_width} is not divisible by vision_heads {self.vision_heads}", field="vision_width")
        if self.frame_averaging > self.video_frames:
            raise RecipeError(
                f"frame_averaging {self.frame_averaging} is larger than video_frames {self.video_frames}", field="frame_averaging"
            )


AXIS_NAMES = tuple(name for name in RunSettings.model_fields if name != "seed")

#: Short labels used in run names and tables.
SHORT = {
    "pixel_shuffle": "r",
    "do_split": "split",
    "positional": "pos",
    "longest_edge": "edge",
    "video_frames": "frames",
    "frame_averaging": "avg",
    "intro_outro": "intro",
    "vision_width": "vwidth",
    "vision_depth": "vdepth",
}

Axes = create_model(  # type: ignore[call-overload]
    "Axes",
    __config__=ConfigDict(extra="forbid"),
    **{name: (Optional[list[RunSettings.model_fields[name].annotation]], None) for name in AXIS_NAMES},  # type: ignore[misc]
)


def _task_shorthand(v: Any) -> Any:
    if isinstance(v, str):
        return {"kind": v} if v in TASK_KINDS else {"kind": "manifest", "manifest": v}
    return v


class Experiment(_Strict):
    """One family of runs inside a grid: its own task, base overrides, axes and seeds."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    task: Optional[TaskSpec] = None
    base: dict[str, Any] = Field(default_factory=dict, description="overrides of the grid's base settings")
    axes: Axes = Field(default_factory=Axes)  # type: ignore[valid-type]
    points: Optional[list[dict[str, Any]]] = Field(
        None, description="explicit grid points (axis -> value), instead of the cartesian product of axes: "
        "for arms that change two settings together, such as r=4 with more steps at equal compute"
    )
    seeds: Optional[list[int]] = None

    @field_validator("task", mode="before")
    @classmethod
    def _task_str(cls, v: Any) -> Any:
        return _task_shorthand(v)

    @model_validator(mode="after")
    def _points(self) -> "Experiment":
        if self.points is None:
            return self
        if any(v is not None for v in self.axes.model_dump().values()):
            raise ValueError(f"experiment {self.name!r}: use axes or points, not both")
        if not self.points:
            raise ValueError(f"experiment {self.name!r}: points needs at least one point")
        keys = list(self.points[0])
        for i, point in enumerate(self.points):
            unknown = [k for k in point if k not in AXIS_NAMES]
            if unknown:
                raise ValueError(f"experiment {self.name!r}: points[{i}]: unknown axis {unknown[0]!r}; axes are: {', '.join(AXIS_NAMES)}")
            if list(point) != keys:
                raise ValueError(f"experiment {self.name!r}: points[{i}] sets {sorted(point)}, points[0] sets {sorted(keys)}; every point sets the same fields")
        return self


class Finding(_Strict):
    """A claim of the paper tested by a paired comparison of two points of one experiment, seed by seed."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    claim: str = Field(description="the paper's finding, in words")
    experiment: str
    metric: str = Field(description="a results metric (exact_match, char_accuracy, val_loss, mean_train_loss, ...)")
    direction: Literal["higher", "lower"] = Field(description="the side of arm - baseline the paper predicts for metric")
    arm: dict[str, Any] = Field(description="axis values of the arm the paper favours")
    baseline: dict[str, Any] = Field(description="axis values of the arm it is compared with")
    why: str = Field("", description="why the design gives the finding room to show")
    otherwise: str = Field("", description="when it does not reproduce: what this scale cannot show, and what scale would")
    learned: Optional[dict[str, float]] = Field(
        None,
        description="{metric: minimum}: the task counts as learned when at least one arm's mean reaches it; "
        "otherwise the verdict is inconclusive (a difference between two arms at chance is noise, whatever its interval)",
    )


class Grid(_Strict):
    """A grid file: one task with axes, or several named experiments (one-factor-at-a-time ablations)."""

    name: str = "grid"
    description: str = ""
    task: Optional[TaskSpec] = None
    base: RunSettings = Field(default_factory=RunSettings)
    axes: Axes = Field(default_factory=Axes)  # type: ignore[valid-type]
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    experiments: list[Experiment] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list, description="paired comparisons written to findings.md")
    jobs: Union[int, str] = Field(
        1, description="runs trained at once, one process each (auto: one per core on CPU); --jobs overrides"
    )

    @field_validator("jobs", mode="before")
    @classmethod
    def _jobs(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError(f"jobs is a positive number or auto, not {v!r}")

    @field_validator("task", mode="before")
    @classmethod
    def _task_str(cls, v: Any) -> Any:
        return _task_shorthand(v)

    @model_validator(mode="after")
    def _shape(self) -> "Grid":
        if self.experiments:
            if any(v is not None for v in self.axes.model_dump().values()):
                raise ValueError("put axes inside each experiment when a grid has experiments")
            names = [e.name for e in self.experiments]
            if len(set(names)) != len(names):
                raise ValueError("experiment names must be unique")
            for e in self.experiments:
                if e.task is None and self.task is None:
                    raise ValueError(f"experiment {e.name!r} has no task and the grid names none")
        elif self.task is None:
            raise ValueError("a grid needs a task (read, locate, count, colors, caption or a manifest path)")
        if len({f.name for f in self.findings}) != len(self.findings):
            raise ValueError("finding names must be unique")
        return self

    def experiment_list(self) -> list[Experiment]:
        """The experiments to run; a grid without any is one experiment named after the grid."""
        if self.experiments:
            return self.experiments
        return [Experiment(name=_slug(self.name), task=self.task, axes=self.axes, seeds=self.seeds)]

    def check_findings(self, points: Sequence["RunPoint"]) -> None:
        """Every finding names an experiment, a known metric, and arms that each match exactly one point of it."""
        from ablations.report import METRICS

        names = {e.name for e in self.experiment_list()}
        for i, f in enumerate(self.findings):
            where = f"findings[{i}]"
            if f.experiment not in names:
                raise RecipeError(f"unknown experiment {f.experiment!r}; experiments are: {', '.join(sorted(names))}",
                                  field=f"{where}.experiment")
            if f.metric not in METRICS:
                raise RecipeError(f"unknown metric {f.metric!r}; metrics are: {', '.join(METRICS)}", field=f"{where}.metric")
            mine = [p for p in points if p.experiment == f.experiment]
            found = {}
            for side in ("arm", "baseline"):
                values = getattr(f, side)
                ids = {p.point_id for p in mine if all(p.axis_values.get(k, _MISSING) == v for k, v in values.items())}
                if len(ids) != 1:
                    raise RecipeError(f"{values} matches {len(ids)} points of experiment {f.experiment!r}; it must match one",
                                      field=f"{where}.{side}")
                found[side] = ids.pop()
            if found["arm"] == found["baseline"]:
                raise RecipeError("arm and baseline are the same point", field=f"{where}.arm")


_MISSING = object()


def _slug(name: str) -> str:
    slug = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name).strip("-.")
    return slug or "grid"


class RunPoint(BaseModel):
    """One run: its experiment and task, its settings, the axis values that name it, and a stable id."""

    experiment: str
    task: TaskSpec
    settings: RunSettings
    axis_values: dict[str, Any]
    run_id: str
    point_id: str  # equal for runs that differ only by seed


def load_grid(path: str | Path) -> tuple[Grid, Path]:
    """Parse and validate a grid file; returns the grid and the folder relative paths resolve against."""
    path = Path(path)
    raw = load_yaml_file(path, "grid")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a grid is a YAML mapping with task, base, axes and seeds")
    return parse_grid(raw, source=str(path)), path.resolve().parent


def parse_grid(raw: dict[str, Any], source: str = "grid") -> Grid:
    """Validate a grid mapping, turning pydantic's report into one line that names the field."""
    try:
        return Grid.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden" and len(err["loc"]) >= 2 and err["loc"][-2] == "axes":
            raise RecipeError(
                f"{source}: unknown axis {err['loc'][-1]!r}; axes are: {', '.join(AXIS_NAMES)}", field=loc
            ) from None
        raise validation_error(exc) from None


def _error_under(exc: ValidationError, section: str) -> RecipeError:
    """:func:`validation_error`'s one line with its field placed under the grid section the bad value came from."""
    err = validation_error(exc)
    if not err.field:
        return RecipeError(str(err), field=section)
    return RecipeError(str(err).removeprefix(f"{err.field}: "), field=f"{section}.{err.field}")


def settings_hash(settings: RunSettings, task: TaskSpec) -> str:
    """Short hash of everything a run depends on: a changed setting or task makes a new run, never a stale resume."""
    blob = json.dumps({"settings": settings.model_dump(mode="json"), "task": task.model_dump(mode="json")}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def short_label(name: str, value: Any) -> str:
    """Compact ``axis=value`` used in run ids and plot labels: ``r2``, ``split0``, ``learned``."""
    short = SHORT.get(name, name)
    if isinstance(value, bool):
        return f"{short}{'1' if value else '0'}"
    if name == "positional":
        return str(value)
    return f"{short}{value}"


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``--set key=value`` strings -> a mapping; values are YAML scalars (``2``, ``true``, ``1e-3``, ``[14, 20]``)."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise RecipeError(f"expected key=value, got {item!r}", field="--set")
        name = key[5:] if key.startswith("task.") else key
        known = TaskSpec.model_fields if key.startswith("task.") else RunSettings.model_fields
        if name not in known or name == "seed":
            raise RecipeError(f"unknown setting {key!r}", field="--set")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[key] = value
    return out


def expand(grid: Grid, overrides: dict[str, Any] | None = None) -> list[RunPoint]:
    """Every run of the grid (per experiment: axes x seeds), each checked; the order is stable across invocations.

    ``overrides`` (from ``--set``) apply on top of the grid's and each
    experiment's base (``task.``-prefixed keys on top of each task); the axes
    still vary their own fields.
    """
    points: list[RunPoint] = []
    prefix = bool(grid.experiments)
    base = grid.base.model_dump()
    overrides = overrides or {}
    set_base = {k: v for k, v in overrides.items() if not k.startswith("task.")}
    set_task = {k[5:]: v for k, v in overrides.items() if k.startswith("task.")}
    for exp in grid.experiment_list():
        where_exp = f"experiments.{exp.name}." if prefix else ""
        axes = {k: v for k, v in exp.axes.model_dump().items() if v is not None}
        for name, values in axes.items():
            if not values:
                raise RecipeError("an axis needs at least one value", field=f"{where_exp}axes.{name}")
            if len(set(map(repr, values))) != len(values):
                raise RecipeError("repeated value", field=f"{where_exp}axes.{name}")
        seeds = exp.seeds if exp.seeds is not None else grid.seeds
        if not seeds or len(set(seeds)) != len(seeds):
            raise RecipeError("seeds must be a non-empty list without repeats", field=f"{where_exp}seeds")
        if "seed" in exp.base:
            raise RecipeError("set seeds with `seeds`, not in base", field=f"{where_exp}base.seed")
        task = exp.task or grid.task
        assert task is not None  # guaranteed by Grid._shape
        if set_task:
            try:
                task = TaskSpec.model_validate({**task.model_dump(), **set_task})
            except ValidationError as exc:
                raise _error_under(exc, "--set task") from None
        if exp.points is not None:
            names = list(exp.points[0])
            combos: Any = [tuple(p[n] for n in names) for p in exp.points]
            if len(set(map(repr, combos))) != len(combos):
                raise RecipeError("repeated point", field=f"{where_exp}points")
        else:
            names = list(axes)
            combos = itertools.product(*(axes[n] for n in names)) if names else [()]
        for combo in combos:
            values = dict(zip(names, combo))
            for seed in seeds:
                try:
                    settings = RunSettings.model_validate({**base, **exp.base, **set_base, **values, "seed": seed})
                except ValidationError as exc:
                    top = exc.errors()[0]["loc"][:1]
                    raise _error_under(exc, f"{where_exp}{('points' if exp.points is not None else 'axes') if top and top[0] in values else 'base'}") from None
                try:
                    settings.check()
                except RecipeError as exc:
                    at = ", ".join(f"{k}={v}" for k, v in values.items()) or "base"
                    raise RecipeError(f"{where_exp}grid point [{at}]: {exc}") from None
                label = "-".join(short_label(n, values[n]) for n in names) or "base"
                if prefix:
                    label = f"{exp.name}-{label}"
                point_settings = settings.model_copy(update={"seed": 0})
                points.append(
                    RunPoint(
                        experiment=exp.name,
                        task=task,
                        settings=settings,
                        axis_values=values,
                        run_id=f"{label}-s{seed}-{settings_hash(settings, task)}",
                        point_id=f"{label}-{settings_hash(point_settings, task)}",
                    )
                )
    if len({p.run_id for p in points}) != len(points):
        raise RecipeError("two runs of the grid have identical settings; remove the duplicate axis value or experiment")
    return points
