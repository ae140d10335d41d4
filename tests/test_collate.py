"""SmolVLMCollator: identical to transformers' SmolVLMProcessor, completion-only labels, bad input, tokenizer forms."""
from __future__ import annotations

import io
import re
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tokenization
from manifests.errors import UserError
from tokenization.base_tokenizer import train_bpe
from tokenization.chat import SMOLVLM_CHAT_TEMPLATE, build_messages
from tokenization.collate import IGNORE_INDEX, SampleError, SmolVLMCollator

pytest.importorskip("transformers.models.smolvlm.image_processing_pil_smolvlm")
from transformers import PreTrainedTokenizerFast  # noqa: E402
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil  # noqa: E402
from transformers.models.smolvlm.processing_smolvlm import SmolVLMProcessor  # noqa: E402

PRESETS = tokenization.preset_names()
TEXTS = ["hello world, the cat sat on the mat.", "What is in the picture? A red cat.", "Describe the image in detail."]


class ImageOnlyProcessor(SmolVLMProcessor):
    """SmolVLMProcessor without its video processor (that one needs torchvision)."""

    @classmethod
    def get_attributes(cls):
        return ["image_processor", "tokenizer"]


@pytest.fixture(scope="module")
def base_tokenizer():
    return train_bpe(TEXTS * 40, vocab_size=420)


def make_processor(strategy, base, padding_side="right"):
    tok = strategy.build_tokenizer(base)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", padding_side=padding_side)
    fast.chat_template = SMOLVLM_CHAT_TEMPLATE
    ip = SmolVLMImageProcessorPil(
        size={"longest_edge": strategy.longest_edge}, max_image_size={"longest_edge": strategy.tile},
        do_image_splitting=strategy.do_split,
    )
    proc = ImageOnlyProcessor(ip, fast, None, image_seq_len=strategy.image_seq_len, chat_template=SMOLVLM_CHAT_TEMPLATE)
    proc.video_processor = types.SimpleNamespace(num_frames=None, fps=None)  # read by apply_chat_template only
    return proc, fast


def noise(w, h, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(arr).convert(mode)


def sample_rows(seed=0):
    ims = [noise(700, 300, seed), noise(100, 100, seed + 1), noise(50, 80, seed + 2), noise(1200, 90, seed + 3, "RGBA")]
    return [
        {"id": "two-images", "images": [ims[0], ims[1]],
         "turns": [{"role": "user", "content": "What is in the picture?"}, {"role": "assistant", "content": "A red cat."}]},
        {"id": "placeholder", "images": [ims[2]],
         "turns": [{"role": "user", "content": "hello <image> world"}, {"role": "assistant", "content": "the mat"},
                   {"role": "user", "content": "And?"}, {"role": "assistant", "content": "the cat"}]},
        {"id": "text-only", "images": [], "text": "hello world"},
        {"id": "caption", "images": [ims[3]], "text": "a cat sat on the mat"},
    ]


def reference(proc, rows, strip_markers=False):
    """What a user of transformers gets: apply_chat_template on the same messages, then the processor."""
    texts = []
    for r in rows:
        msgs, _, _ = build_messages(r.get("turns"), r.get("text"), len(r["images"]), 0)
        texts.append(proc.apply_chat_template(msgs))
    images = [r["images"] for r in rows] if any(r["images"] for r in rows) else None
    if not strip_markers:
        return proc(text=texts, images=images, padding=True, return_tensors="pt")
    # positional style "none": the processor's own expansion with the row/col and global markers removed
    out = proc.image_processor(images=images, return_tensors="pt", return_row_col_info=True)
    expanded = []
    for text, rows_, cols_ in zip(texts, out["rows"], out["cols"]):
        parts = text.split("<image>")
        s = parts[0]
        for k, rest in enumerate(parts[1:]):
            from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

            block = get_image_prompt_string(rows_[k], cols_[k], proc.image_seq_len, "<fake_token_around_image>", "<image>", "<global-img>")
            s += re.sub(r"<row_\d+_col_\d+>|<global-img>", "", block) + rest
        expanded.append(s)
    enc = proc.tokenizer(expanded, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "pixel_values": out["pixel_values"], "pixel_attention_mask": out["pixel_attention_mask"]}


def assert_equal_batches(got, ref):
    for k in ref.keys():
        if k in ("rows", "cols"):
            continue
        a, b = got[k], ref[k]
        assert a.shape == b.shape, (k, a.shape, b.shape)
        assert a.dtype == b.dtype, (k, a.dtype, b.dtype)
        assert torch.equal(a, b), (k, (a.double() - b.double()).abs().max())


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("style", ["learned", "string", "none"])
def test_parity_with_processor_every_preset_and_style(preset, style, base_tokenizer):
    s = tokenization.get_strategy(preset, positional=style)
    proc, fast = make_processor(s, base_tokenizer)
    rows = sample_rows(hash((preset, style)) % 100)
    got = SmolVLMCollator(s, fast)(rows)
    assert_equal_batches(got, reference(proc, rows, strip_markers=style == "none"))
    assert set(got) == {"input_ids", "attention_mask", "labels", "pixel_values", "pixel_attention_mask"}
    assert (got["attention_mask"].sum(1) < got["input_ids"].shape[1]).any(), "the batch is padded"


@pytest.mark.parametrize("do_split", [True, False])
def test_parity_left_padding_and_no_split(do_split, base_tokenizer):
    s = tokenization.get_strategy("smolvlm-256m", do_split=do_split)
    proc, fast = make_processor(s, base_tokenizer, padding_side="left")
    rows = sample_rows(7)
    got = SmolVLMCollator(s, fast)(rows)
    assert_equal_batches(got, reference(proc, rows))
    assert got["attention_mask"][:, -1].all() and not got["attention_mask"][:, 0].all()


def test_text_only_batch_has_no_pixels_like_the_processor(base_tokenizer):
    s = tokenization.get_strategy("smolvlm-256m")
    proc, fast = make_processor(s, base_tokenizer)
    rows = [{"id": "t1", "images": [], "text": "hello world"}, {"id": "t2", "images": [], "text": "the cat"}]
    got = SmolVLMCollator(s, fast)(rows)
    ref = reference(proc, rows)
    assert set(ref) == {"input_ids", "attention_mask"}
    assert_equal_batches(got, ref)


def test_labels_are_assistant_tokens_only(base_tokenizer):
    s = tokenization.get_strategy("smolvlm-256m")
    col = SmolVLMCollator(s, base_tokenizer)
    rows = sample_rows(3)
    batch = col(rows)
    tok = col.tokenizer
    decoded = []
    for ids, lab in zip(batch["input_ids"], batch["labels"]):
        decoded.append(tok.decode(ids[lab != IGNORE_INDEX].tolist(), skip_special_tokens=False))
    assert decoded[0] == " A red cat.<end_of_utterance>\n"
    assert decoded[1] == " the mat<end_of_utterance>\n the cat<end_of_utterance>\n"
    assert decoded[2] == " hello world<end_of_utterance>\n"
    assert decoded[3] == " a cat sat on the mat<end_of_utterance>\n"
    never = {tok.token_to_id(t) for t in s.special_tokens()} | {col.pad_id}
    labelled = set(batch["labels"][batch["labels"] != IGNORE_INDEX].tolist())
    assert not labelled & never
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_system_prompt_and_custom_template(base_tokenizer):
    s = tokenization.get_strategy("smolvlm-256m", system_prompt=True, system_prompt_text="Be brief.")
    tpl = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% else %}<image>{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    col = SmolVLMCollator(s, base_tokenizer, chat_template=tpl)
    row = {"id": "r", "images": [noise(30, 20)], "turns": [{"role": "user", "content": "What?"}, {"role": "assistant", "content": "A cat."}]}
    sample = col.encode(row)
    text = col.tokenizer.decode(sample.input_ids.tolist(), skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n<fake_token_around_image>")
    assert col.tokenizer.decode(sample.labels[sample.labels != IGNORE_INDEX].tolist(), skip_special_tokens=False) == "A cat.<|im_end|>\n"


def test_tokenizer_forms_give_the_same_batch(base_tokenizer, tmp_path):
    s = tokenization.get_strategy("smolvlm-256m")
    _, fast = make_processor(s, base_tokenizer)
    rows = sample_rows(5)
    want = SmolVLMCollator(s, fast)(rows)
    # a saved directory (tokenizer.json + tokenizer_config.json with the chat template)
    fast.save_pretrained(tmp_path / "saved")
    # an HF cache repo folder: models--org--name/{refs/main, snapshots/<hash>/}
    repo = tmp_path / "hub" / "models--org--tiny"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in (tmp_path / "saved").iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    for form in (base_tokenizer, s.build_tokenizer(base_tokenizer), tmp_path / "saved", str(snap), repo):
        got = SmolVLMCollator(s, form)(rows)
        assert_equal_batches(got, want)
    with pytest.raises(UserError, match="no such tokenizer"):
        SmolVLMCollator(s, tmp_path / "missing")


def test_image_count_mismatch_names_the_row(base_tokenizer):
    s = tokenization.get_strategy("smolvlm-256m")
    col = SmolVLMCollator(s, base_tokenizer)
    bad = {"id": "row-42", "images": [noise(20, 20)], "turns": [{"role": "user", "content": "<image> and <image>"}, {"role": "assistant", "content": "x"}]}
    with pytest.raises(SampleError, match="row row-42: .*2 <image>.*1 image"):
        col([bad])
    skip = SmolVLMCollator(s, base_tokenizer, on_error="skip")
    good = sample_rows(1)[0]
    batch = skip([bad, good])
    assert batch["input_ids"].shape[0] == 1 and skip.counters["image_count"] == 1


def test_undecodable_image_at_batch_time(base_tokenizer):
    s = tokenization.get_strategy("smolvlm-256m")
    broken = {"id": "broken", "media": [{"uri": None, "bytes": b"not an image", "kind": "image", "format": "PNG"}], "text": "x"}
    with pytest.raises(SampleError, match="row broken: an image failed to decode"):
        SmolVLMCollator(s, base_tokenizer)([broken])
    col = SmolVLMCollator(s, base_tokenizer, on_error="skip")
    buf = io.BytesIO()
    noise(40, 30).save(buf, format="PNG")
    ok = {"id": "ok", "media": [{"uri": None, "bytes": buf.getvalue(), "kind": "image", "format": "PNG"}], "text": "the cat"}
    batch = col([broken, ok, {**broken, "id": "none-image", "images": [None]}])
    assert batch["input_ids"].shape[0] == 1 and col.counters["decode"] == 2
    assert batch["pixel_values"].shape[1] == s.plan_image(40, 30).tiles


def test_overlong_samples(base_tokenizer):
    s = tokenization.get_strategy("smolvlm-256m", do_split=False)  # 1 tile: 64 image tokens + 3 markers
    rows = [{"id": "long", "images": [noise(30, 30)], "text": "the cat sat on the mat " * 20},
            {"id": "short", "images": [], "text": "hi"}]
    drop = SmolVLMCollator(s, base_tokenizer, max_length=100)
    batch = drop(rows)
    assert batch["input_ids"].shape[0] == 1 and drop.counters["overlong"] == 1
    trunc = SmolVLMCollator(s, base_tokenizer, max_length=100, overlong="truncate")
    batch = trunc(rows)
    assert batch["input_ids"].shape == (2, 100) and trunc.counters["truncated"] == 1
    assert int((batch["input_ids"][0] == trunc.image_token_id).sum()) == 64
    with pytest.raises(SampleError, match="row long: .* > max_length=50, and truncating would cut an image"):
        SmolVLMCollator(s, base_tokenizer, max_length=50, overlong="truncate")(rows)
    with pytest.raises(SampleError, match="row long: .* > max_length=100"):
        SmolVLMCollator(s, base_tokenizer, max_length=100, overlong="raise")(rows)


def test_bad_options(base_tokenizer):
    s = tokenization.get_strategy("smolvlm-256m")
    for kwargs, field in [({"packing": "greedy"}, "max_length"), ({"packing": "best", "max_length": 10}, "packing"),
                          ({"overlong": "cut"}, "overlong"), ({"max_length": 0}, "max_length")]:
        with pytest.raises(UserError) as e:
            SmolVLMCollator(s, base_tokenizer, **kwargs)
        assert e.value.field == field


def test_uint8_pixels_normalize_to_the_float_values(base_tokenizer):
    s = tokenization.get_strategy("smolvlm-2.2b")
    rows = sample_rows(2)
    f = SmolVLMCollator(s, base_tokenizer)(rows)
    col = SmolVLMCollator(s, base_tokenizer, pixel_dtype="uint8")
    u = col(rows)
    assert u["pixel_values"].dtype == torch.uint8
    real = u["pixel_attention_mask"][:, :, 0, 0].bool()
    assert torch.equal(col.normalize(u["pixel_values"])[real], f["pixel_values"][real])


def test_generation_prompts(base_tokenizer):
    s = tokenization.get_strategy("smolvlm-256m")
    col = SmolVLMCollator(s, base_tokenizer, for_generation=True, padding_side="left")
    batch = col(sample_rows(1)[:2])
    assert "labels" not in batch
    text = col.tokenizer.decode(batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist(), skip_special_tokens=False)
    assert text.endswith("What is in the picture?<end_of_utterance>\nAssistant:")


def _video(path: Path, frames: int = 30, rate: int = 10) -> Path:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            arr = np.full((48, 64, 3), i * 8 % 255, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("averaging", [1, 2])
def test_video_rows_follow_smolvlm_prompt_and_sampling(base_tokenizer, tmp_path, averaging):
    s = tokenization.get_strategy("smolvlm-256m", frame_averaging=averaging)
    vid = _video(tmp_path / "v.mp4")
    row = {"id": "vid", "images": [], "media": [{"uri": str(vid), "kind": "video", "frames": 30, "fps": 10.0, "duration": 3.0}],
           "turns": [{"role": "user", "content": "What happens?"}, {"role": "assistant", "content": "the cat"}]}
    col = SmolVLMCollator(s, base_tokenizer)
    batch = col([row])
    plan = s.plan_video(30, 10.0, 3.0)
    assert batch["pixel_values"].shape[1] == plan.frames == -(-3 // averaging)
    text = col.tokenizer.decode(batch["input_ids"][0].tolist(), skip_special_tokens=False)
    assert text == f"<|im_start|>User: {plan.prompt}What happens?<end_of_utterance>\nAssistant: the cat<end_of_utterance>\n"
    # embedded bytes decode too
    emb = {**row, "media": [{"uri": None, "bytes": vid.read_bytes(), "kind": "video", "format": "mp4"}]}
    assert torch.equal(col([emb])["input_ids"], batch["input_ids"])


def test_rows_without_assistant_tokens_are_dropped_and_counted(base_tokenizer):
    s = tokenization.get_strategy("smolvlm-256m", do_split=False)
    rows = [{"id": "bare-image", "images": [noise(20, 20)]}, {"id": "cap", "images": [noise(20, 20)], "text": "the cat"}]
    col = SmolVLMCollator(s, base_tokenizer)
    batch = col(rows)
    assert batch["input_ids"].shape[0] == 1 and col.counters["no_labels"] == 1
    keep = SmolVLMCollator(s, base_tokenizer, keep_unlabelled=True)
    assert keep(rows)["input_ids"].shape[0] == 2


def test_video_clip_references_sample_within_the_clip(base_tokenizer, tmp_path):
    s = tokenization.get_strategy("smolvlm-256m")
    vid = _video(tmp_path / "v.mp4", frames=40, rate=10)
    asked = []

    def reader(ref, indices):
        asked.append(indices.tolist())
        from media import read_video_frames

        return read_video_frames(ref["uri"], indices)

    col = SmolVLMCollator(s, base_tokenizer, video_reader=reader)
    clip = {"uri": str(vid), "kind": "video", "fps": 10.0, "start_s": 1.0, "end_s": 2.5}
    row = {"id": "clip", "media": [clip], "turns": [{"role": "user", "content": "?"}, {"role": "assistant", "content": "the cat"}]}
    batch = col([row])
    plan = s.plan_video(15, 10.0, 1.5)
    assert asked == [(10 + np.asarray(plan.indices)).tolist()]
    assert batch["pixel_values"].shape[1] == plan.frames
    text = col.tokenizer.decode(batch["input_ids"][0].tolist(), skip_special_tokens=False)
    assert plan.prompt in text  # timestamps relative to the clip's start, as the model sees the clip


def test_tokenizer_truncation_settings_do_not_cut_samples(base_tokenizer):
    from tokenizers import Tokenizer

    s = tokenization.get_strategy("smolvlm-256m", do_split=False)
    tok = Tokenizer.from_str(base_tokenizer.to_str())
    tok.enable_truncation(16)
    rows = [{"id": "r", "images": [noise(20, 20)], "text": "the cat sat on the mat"}]
    got = SmolVLMCollator(s, tok)(rows)
    want = SmolVLMCollator(s, base_tokenizer)(rows)
    assert torch.equal(got["input_ids"], want["input_ids"]) and got["input_ids"].shape[1] > 64
    assert tok.truncation is not None  # the caller's tokenizer is left as it was
