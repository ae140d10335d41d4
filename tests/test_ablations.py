"""The ablation runner: grid validation, the model's token accounting, the loss mask, decoding, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ablations.backbones import Backbones, build_model
from ablations.data import IGNORE_INDEX, RunData, TaskSource, base_tokenizer
from ablations.grid import RunSettings, TaskSpec, expand, parse_grid, parse_overrides
from ablations.metrics import edit_distance, score_answers
from ablations.model import completion_loss
from ablations.runner import AblationOptions, run_grid
from ablations.tasks import generate_task
from manifests.cli import main as cli_main
from manifests.errors import RecipeError, UserError
from manifests.schema import CORE_SCHEMA
from manifests.writer import ManifestWriter

ONE_THREAD = AblationOptions(threads=1)  # the suite shares 2 cores; one thread per run avoids OpenMP oversubscription
TINY_MODEL = {
    "tile": 32, "patch": 8, "longest_edge": 64, "width": 32, "depth": 1, "heads": 2,
    "vision_width": 32, "vision_depth": 1, "vision_heads": 2, "batch_size": 4, "vocab_size": 300,
    "eval_samples": 4, "max_new_tokens": 6, "precision": "fp32",
}


def micro_grid(tmp_path: Path, axes: dict, steps: int = 4, task: dict | None = None, **base) -> Path:
    grid = {
        "name": "micro",
        "task": task or {"kind": "locate", "train": 16, "val": 4, "width": 64, "height": 64},
        "base": {**TINY_MODEL, "steps": steps, "checkpoint_every": 2, **base},
        "axes": axes,
        "seeds": [0],
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.fixture(scope="module")
def locate_source(tmp_path_factory) -> TaskSource:
    root = tmp_path_factory.mktemp("task")
    spec = TaskSpec(kind="locate", train=12, val=4, width=64, height=64)
    return TaskSource.from_manifest(generate_task(spec, root, root / "data"), 12, 4)


def run_data(source: TaskSource, tmp: Path, **settings) -> RunData:
    s = RunSettings(**{**TINY_MODEL, **settings})
    return RunData(source, s, base_tokenizer(source, s.vocab_size, tmp))


# --------------------------------------------------------------------------- grid validation
def test_unknown_axis_is_a_one_line_error(tmp_path, capsys):
    path = micro_grid(tmp_path, {"pixel_shufle": [2, 4]})
    assert cli_main(["ablate", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown axis 'pixel_shufle'" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_r_not_dividing_patch_grid_fails_before_training(tmp_path, capsys):
    # tile 32 / patch 8 = 4x4 patches: r=3 cannot fold it
    path = micro_grid(tmp_path, {"pixel_shuffle": [2, 3]})
    assert cli_main(["ablate", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "r=3 does not divide the 4x4 patch grid" in err
    assert not (tmp_path / "out" / "runs").exists()


def test_unknown_field_and_bad_value_name_the_field():
    with pytest.raises(RecipeError, match="base.widht"):
        parse_grid({"task": "locate", "base": {"widht": 3}})
    with pytest.raises(RecipeError, match="axes.positional"):
        parse_grid({"task": "locate", "axes": {"positional": ["learnt"]}})
    with pytest.raises(RecipeError, match="task"):
        parse_grid({"task": {"kind": "caption"}})  # caption needs a manifest


def test_expansion_errors_name_the_section_of_the_bad_value():
    grid = parse_grid({"task": "locate", "axes": {"tile": [64, 4]}})  # Axes checks types; ge=8 is checked per point
    with pytest.raises(RecipeError, match=r"^axes\.tile: .*greater than or equal to 8"):
        expand(grid)
    grid = parse_grid({"task": "locate", "experiments": [{"name": "a", "base": {"lr": -1}}]})
    with pytest.raises(RecipeError, match=r"^experiments\.a\.base\.lr: "):
        expand(grid)
    grid = parse_grid({"task": "locate"})
    with pytest.raises(RecipeError, match=r"^--set task\.train: "):
        expand(grid, parse_overrides(["task.train=0"]))
    with pytest.raises(RecipeError, match=r"^--set task: task kind 'caption' needs a manifest path$"):
        expand(grid, parse_overrides(["task.kind=caption"]))


def test_backgrounds_from_a_folder_skip_unreadable_files(tmp_path):
    from PIL import Image

    from ablations.sources import load_backgrounds

    Image.new("RGB", (40, 30), (10, 20, 30)).save(tmp_path / "ok.png")
    Image.new("L", (20, 20), 128).save(tmp_path / "grey.jpg")
    Image.new("RGB", (2048, 64), (200, 0, 0)).save(tmp_path / "wide.png")  # capped at 1024 on the long side
    (tmp_path / "broken.png").write_bytes(b"not a png")
    images, desc = load_backgrounds(str(tmp_path), tmp_path / "elsewhere")
    assert sorted((im.size, im.mode) for im in images) == [((20, 20), "RGB"), ((40, 30), "RGB"), ((1024, 32), "RGB")]
    assert "(4)" in desc
    with pytest.raises(RecipeError, match="task.backgrounds"):
        load_backgrounds(str(tmp_path / "missing"), tmp_path)


def test_backgrounds_from_a_manifest_stop_at_the_limit(tmp_path):
    import io

    import pyarrow as pa
    from PIL import Image

    from ablations.sources import load_backgrounds

    def png(w: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (w, 16), (w, 0, 0)).save(buf, format="PNG")
        return buf.getvalue()

    def ref(data: bytes, kind: str = "image") -> dict:
        return {"uri": None, "bytes": data, "kind": kind, "format": "PNG"}

    # row 0: an undecodable image (skipped); row 1: a video first, then an image; rows 2..: one image each
    media = [[ref(b"garbage")], [ref(b"", "video"), ref(png(20))]] + [[ref(png(21 + i))] for i in range(5)]
    w = ManifestWriter(tmp_path / "m", CORE_SCHEMA)
    w.write(pa.table({"id": [f"r{i}" for i in range(len(media))], "source": ["s"] * len(media),
                      "modality": ["image"] * len(media), "media": media},
                     schema=pa.schema([CORE_SCHEMA.field(n) for n in ("id", "source", "modality", "media")])))
    w.commit()
    images, desc = load_backgrounds("m", tmp_path, limit=3)
    assert [im.width for im in images] == [20, 21, 22]
    assert desc.endswith("(3)")


def test_unknown_device_fails_before_generating_data(tmp_path, capsys):
    path = micro_grid(tmp_path, {"pixel_shuffle": [2]})
    assert cli_main(["ablate", str(path), "--out", str(tmp_path / "out"), "--device", "tpu"]) == 2
    assert "--device: unknown device 'tpu'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_manifest_without_usable_rows_is_rejected(tmp_path):
    m = tmp_path / "texts"
    w = ManifestWriter(m, CORE_SCHEMA)
    import pyarrow as pa

    w.write(pa.table({"id": ["a", "b"], "source": ["s", "s"], "modality": ["text", "text"], "text": ["hi", "yo"]}))
    w.commit()
    with pytest.raises(UserError, match="no usable rows"):
        TaskSource.from_manifest(m, 10, 2)
    path = micro_grid(tmp_path, {}, task={"kind": "manifest", "manifest": "texts"})
    with pytest.raises(UserError, match="no usable rows"):
        run_grid(path, tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()


def test_expand_is_cartesian_times_seeds_with_stable_ids():
    grid = parse_grid({"task": "count", "axes": {"pixel_shuffle": [2, 4], "do_split": [True, False]}, "seeds": [0, 1]})
    points = expand(grid)
    assert len(points) == 8
    assert len({p.run_id for p in points}) == 8
    assert len({p.point_id for p in points}) == 4  # seeds share a point
    assert [p.run_id for p in expand(grid)] == [p.run_id for p in points]


# --------------------------------------------------------------------------- model and data
@pytest.mark.parametrize("do_split,r", [(True, 2), (True, 4), (False, 2)])
def test_visual_tokens_match_the_strategy(locate_source, tmp_path, do_split, r):
    data = run_data(locate_source, tmp_path, do_split=do_split, pixel_shuffle=r)
    sample = data.train.samples[0]
    image = locate_source.image(sample)
    plan = data.strategy.plan_image(*image.size)
    enc = data.train.encoded[0]
    assert int((enc.input_ids == data.image_token_id).sum()) == plan.image_tokens
    model = build_model(data.settings, data.tokenizer.get_vocab_size(), data.image_token_id, Backbones())
    tokens = model.encode_images(data.train.batch([0]).to(torch.device("cpu")).pixels)
    assert tokens.shape[0] * tokens.shape[1] == plan.image_tokens
    assert tokens.shape[1] == data.strategy.image_seq_len == (32 // 8 // r) ** 2
    assert data.stats["visual_tokens"] == plan.image_tokens  # generated images all have one size


def test_learned_markers_are_single_trainable_ids_and_strings_are_longer(locate_source, tmp_path):
    learned = run_data(locate_source, tmp_path, positional="learned")
    string = run_data(locate_source, tmp_path, positional="string")
    none = run_data(locate_source, tmp_path, positional="none")
    markers = ["<row_1_col_1>", "<row_2_col_2>", "<global-img>"]
    ids = [learned.tokenizer.encode(m, add_special_tokens=False).ids for m in markers]
    assert all(len(i) == 1 for i in ids)
    assert all(len(string.tokenizer.encode(m, add_special_tokens=False).ids) > 3 for m in markers)
    assert learned.stats["seq_len"] < string.stats["seq_len"]
    assert none.stats["seq_len"] < learned.stats["seq_len"]

    model = build_model(learned.settings, learned.tokenizer.get_vocab_size(), learned.image_token_id, Backbones())
    batch = learned.train.batch([0, 1]).to(torch.device("cpu"))
    loss, _ = model(batch.input_ids, batch.pixels, batch.labels)
    loss.backward()
    grad = model.lm.get_input_embeddings().weight.grad
    for (i,) in ids:
        assert float(grad[i].abs().sum()) > 0, "marker embedding got no gradient"
        assert not (batch.labels == i).any(), "markers are inputs only"


def test_completion_only_loss_ignores_prompt_tokens(locate_source, tmp_path):
    data = run_data(locate_source, tmp_path)
    enc = data.train.encoded[0]
    answer_ids = data.tokenizer.encode(" " + data.train.samples[0].answer + "<end_of_utterance>", add_special_tokens=False).ids
    assert (enc.labels[: enc.prompt_len] == IGNORE_INDEX).all()
    assert enc.labels[enc.prompt_len:].tolist() == answer_ids
    # the loss, and its gradient, see the answer positions only
    batch = data.train.batch([0, 1, 2])
    logits = torch.randn(*batch.input_ids.shape, data.tokenizer.get_vocab_size(), requires_grad=True)
    loss = completion_loss(logits, batch.labels)
    loss.backward()
    target = batch.labels[:, 1:]
    labelled = target != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[:, :-1][labelled], target[labelled])
    assert torch.allclose(loss, manual)
    grad_rows = logits.grad[:, :-1].abs().sum(-1)
    assert (grad_rows[~labelled] == 0).all() and (grad_rows[labelled] > 0).all()


def test_greedy_decoding_with_cache_and_left_padding_matches_full_recompute(locate_source, tmp_path):
    torch.manual_seed(0)
    data = run_data(locate_source, tmp_path)
    model = build_model(data.settings, data.tokenizer.get_vocab_size(), data.image_token_id, Backbones()).eval()
    batch = data.val.batch([0, 1, 2], for_generation=True).to(torch.device("cpu"))
    got = model.generate(batch.input_ids, batch.attention_mask, batch.pixels, 5, frozenset())
    for row in range(3):
        enc = data.val.encoded[row]
        ids = torch.from_numpy(enc.input_ids[: enc.prompt_len])[None]
        pixels = data.val.batch([row]).to(torch.device("cpu")).pixels
        out = []
        for _ in range(5):
            _, logits = model(ids, pixels)
            nxt = int(logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        assert got[row] == out


def test_edit_distance_and_scores():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "abc") == 0
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = "".join(rng.choice(list("ab "), size=rng.integers(0, 7)))
        b = "".join(rng.choice(list("ab "), size=rng.integers(0, 7)))
        assert edit_distance(a, b) == edit_distance(b, a)
    s = score_answers(["row 1 col 2", "row  1 col 1"], ["row 1 col 2", "row 1 col 2"])
    assert s["exact_match"] == 0.5 and s["char_accuracy"] == pytest.approx((1 + 10 / 11) / 2)


def test_generated_tasks_are_deterministic_and_consistent(tmp_path):
    spec = TaskSpec(kind="count", train=6, val=2, width=64, height=64, seed=3)
    a = generate_task(spec, tmp_path, tmp_path / "a")
    b = generate_task(spec, tmp_path, tmp_path / "b")
    from manifests.reader import open_manifest

    ta, tb = open_manifest(a).table(), open_manifest(b).table()
    assert ta.column("text").to_pylist() == tb.column("text").to_pylist()
    assert ta.column("media").to_pylist() == tb.column("media").to_pylist()
    metas = [json.loads(m) for m in ta.column("meta").to_pylist()]
    assert [m["split"] for m in metas] == ["train"] * 6 + ["val"] * 2
    assert [str(m["count"]) for m in metas] == ta.column("text").to_pylist()


@pytest.mark.parametrize("media", ["image", "video"])
def test_colors_task_answers_the_colours_drawn(tmp_path, media):
    from ablations.tasks import PALETTE
    from manifests.reader import open_manifest

    spec = TaskSpec(kind="colors", media=media, backgrounds="paper", train=6, val=2, width=64, height=32 if media == "image" else 64,
                    max_count=3, frames=3, mark_px=(3, 5) if media == "image" else (12, 20), seed=1)
    t = open_manifest(generate_task(spec, tmp_path, tmp_path / "d")).table()
    for text, meta, media_refs in zip(t.column("text").to_pylist(), t.column("meta").to_pylist(), t.column("media").to_pylist()):
        names = text.split(" ")
        assert set(names) <= set(PALETTE) and len(names) == json.loads(meta)["discs"]
        if media == "image":
            assert 1 <= len(names) <= 3 and media_refs[0]["bytes"]
        else:
            assert media_refs[0]["frames"] == len(names) <= 3  # one disc, one colour per frame
    if media == "image":  # the discs' pixels carry the named colours, left to right
        import io

        from PIL import Image

        arr = np.asarray(Image.open(io.BytesIO(t.column("media").to_pylist()[0][0]["bytes"])).convert("RGB")).astype(int)
        first = t.column("text").to_pylist()[0].split(" ")[0]
        dist = np.abs(arr - np.array(PALETTE[first])).sum(-1)
        assert (dist < 90).sum() >= 9


# --------------------------------------------------------------------------- end to end
def test_micro_grid_end_to_end_and_resume(tmp_path, capsys):
    path = micro_grid(tmp_path, {"positional": ["learned", "none"]})
    out = tmp_path / "out"
    assert cli_main(["ablate", str(path), "--out", str(out), "--quiet", "--threads", "1"]) == 0
    import polars as pl

    results = pl.read_parquet(out / "results.parquet")
    assert results.height == 2 and set(results["axis.positional"]) == {"learned", "none"}
    for col in ("val_loss_mean", "exact_match_mean", "char_accuracy_mean", "visual_tokens_mean", "seq_len_mean",
                "samples_per_s_mean", "peak_rss_mb_mean", "wall_s_mean"):
        assert results[col].is_not_null().all(), col
    assert (out / "loss_curves.png").stat().st_size > 1000
    assert (out / "accuracy_vs_visual_tokens.png").stat().st_size > 1000
    assert "| positional |" in (out / "results.md").read_text()
    runs = sorted((out / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        for name in ("config.json", "tokenizer.json", "checkpoint.pt", "result.json", "predictions.jsonl"):
            assert (run / name).is_file(), name
        assert len(json.loads((run / "result.json").read_text())["loss_curve"]) == 4
    stamps = {r: (r / "result.json").stat().st_mtime_ns for r in runs}
    ckpts = {r: (r / "checkpoint.pt").stat().st_mtime_ns for r in runs}
    # second invocation: both runs are finished, nothing is retrained
    assert cli_main(["ablate", str(path), "--out", str(out), "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "step" not in err.replace("steps", "")
    assert {r: (r / "result.json").stat().st_mtime_ns for r in runs} == stamps
    assert {r: (r / "checkpoint.pt").stat().st_mtime_ns for r in runs} == ckpts


def test_interrupted_run_continues_from_its_checkpoint(tmp_path):
    path = micro_grid(tmp_path, {}, steps=6)
    out = tmp_path / "out"

    class Interrupt(Exception):
        pass

    def stop_at_step_5(msg: str) -> None:
        if "step 5/6" in msg:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_grid(path, out, ONE_THREAD, progress=stop_at_step_5)
    (run,) = list((out / "runs").iterdir())
    assert not (run / "result.json").exists()
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert state["step"] == 4  # checkpoint_every 2: the last one before the interruption
    seen: list[str] = []
    run_grid(path, out, ONE_THREAD, progress=seen.append)
    assert any("resuming at step 4/6" in m for m in seen)
    result = json.loads((run / "result.json").read_text())
    steps = [s for s, _ in result["loss_curve"]]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert result["loss_curve"][:4] == [list(x) for x in state["curve"]]


def test_video_task_with_frame_averaging(tmp_path):
    task = {"kind": "count", "media": "video", "frames": 4, "train": 8, "val": 2, "width": 64, "height": 64}
    path = micro_grid(tmp_path, {"frame_averaging": [1, 2]}, steps=2, task=task, tile=32, video_frames=4)
    out = run_grid(path, tmp_path / "out", ONE_THREAD)
    import polars as pl

    res = pl.read_parquet(out / "results.parquet").sort("axis.frame_averaging")
    tokens = res["visual_tokens_mean"].to_list()
    assert tokens == [4 * 4, 2 * 4]  # 4 frames of (32/8/2)^2 = 4 tokens, averaged in pairs


def test_manifest_rows_use_turns_text_and_skip_unusable(tmp_path):
    import io

    import pyarrow as pa
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, format="PNG")
    img = {"bytes": buf.getvalue(), "kind": "image", "format": "PNG"}
    rows = {
        "id": [f"r{i}" for i in range(6)],
        "source": ["s"] * 6,
        "modality": ["image_text", "text", "image_text", "image_text", "image_text", "image_text"],
        "media": [[img], None, [img], [{"uri": "/nowhere.txt", "kind": "document"}, img], [img], []],
        "text": [None, "only text", "a red box", None, "   ", "no media"],
        "turns": [
            [{"role": "user", "content": "<image>What colour?"}, {"role": "assistant", "content": "red"}],
            None, None,
            [{"role": "assistant", "content": "second item is the image"}],
            None, None,
        ],
    }
    schema = pa.schema([CORE_SCHEMA.field(n) for n in rows])
    w = ManifestWriter(tmp_path / "m", CORE_SCHEMA)
    w.write(pa.table(rows, schema=schema))
    w.commit()
    src = TaskSource.from_manifest(tmp_path / "m", 10, 1)
    got = {s.id: (s.question, s.answer) for s in src.train + src.val}
    assert got == {
        "r0": ("What colour?", "red"),
        "r2": ("Describe the image.", "a red box"),
        "r3": ("Describe the image.", "second item is the image"),
    }
    assert src.info["usable"] == 3 and len(src.val) == 1


def test_video_embedded_as_bytes_is_decoded(tmp_path):
    import pyarrow as pa
    from PIL import Image

    from ablations.tasks import write_video

    frames = [Image.new("RGB", (64, 64), (40 * i, 0, 0)) for i in range(4)]
    write_video(frames, tmp_path / "clip.mp4")
    ref = {"bytes": (tmp_path / "clip.mp4").read_bytes(), "kind": "video", "format": "mp4"}
    rows = {"id": ["a", "b"], "source": ["s", "s"], "modality": ["video", "video"], "media": [[ref], [ref]],
            "text": ["dark to red", "dark to red"], "meta": ['{"split": "train"}', '{"split": "val"}']}
    w = ManifestWriter(tmp_path / "m", CORE_SCHEMA)
    w.write(pa.table(rows, schema=pa.schema([CORE_SCHEMA.field(n) for n in rows])))
    w.commit()
    src = TaskSource.from_manifest(tmp_path / "m", 4, 4)
    data = run_data(src, tmp_path, video_frames=4)  # 4 s at 1 fps: every frame, one 32 px tile each
    assert data.train.encoded[0].tiles == 4
    assert data.stats["visual_tokens"] == 4 * (32 // 8 // 2) ** 2
