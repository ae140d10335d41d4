"""End to end: a manifest through to_torch, a DataLoader and the collator into a tiny SmolVLM; the loss falls."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import tokenization
from manifests import ManifestWriter, build_schema, make_id, open_manifest
from tokenization.base_tokenizer import train_bpe
from tokenization.collate import SmolVLMCollator

transformers = pytest.importorskip("transformers")

ANSWERS = {"red": "a red square", "blue": "a blue circle"}


def tiny_model(col: SmolVLMCollator):
    """SmolVLM architecture (SigLIP-style encoder, pixel shuffle connector, Llama LM) from a local config."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    s = col.strategy
    cfg = SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=s.tile, patch_size=s.patch),
        text_config=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, vocab_size=col.tokenizer.get_vocab_size(),
                         max_position_embeddings=1024),
        scale_factor=s.pixel_shuffle, image_token_id=col.image_token_id, pad_token_id=col.pad_id,
    )
    torch.manual_seed(0)
    return SmolVLMForConditionalGeneration(cfg)


@pytest.fixture()
def colour_manifest(tmp_path: Path) -> Path:
    schema = build_schema({"repeat": pa.int32()})
    w = ManifestWriter(tmp_path / "m", schema)
    rows = []
    for i in range(16):
        colour = "red" if i % 2 == 0 else "blue"
        path = tmp_path / f"{i}.png"
        arr = np.zeros((30 + i, 50, 3), np.uint8)
        arr[..., 0 if colour == "red" else 2] = 200 + i
        Image.fromarray(arr).save(path)
        rows.append({"id": make_id("colours", str(i)), "source": "colours", "modality": "image_text", "repeat": 1,
                     "media": [{"uri": str(path), "kind": "image", "format": "PNG", "width": 50, "height": 30 + i}],
                     "turns": [{"role": "user", "content": "what shape is this?"}, {"role": "assistant", "content": ANSWERS[colour]}]})
    w.write(pa.Table.from_pylist(rows, schema=schema))
    w.commit(recipe={"seed": 0}, sources={"colours": {"read": 16}})
    return tmp_path / "m"


@pytest.mark.slow
def test_tiny_smolvlm_trains_on_collator_batches(colour_manifest):
    s = tokenization.get_strategy("smolvlm-256m", tile=64, patch=16, pixel_shuffle=2, longest_edge=128)
    base = train_bpe(list(ANSWERS.values()) * 20 + ["what shape is this?"] * 20, vocab_size=300)
    col = SmolVLMCollator(s, base, max_length=512)
    loader = DataLoader(open_manifest(colour_manifest).to_torch(decode="pil"), batch_size=8, collate_fn=col, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["pixel_values"].shape[2:] == (3, 64, 64)
    model = tiny_model(col)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(20):
        out = model(**batches[step % 2])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses


def test_packed_forward_equals_each_sample_alone(colour_manifest):
    """Packed sequences: position ids restart per sample and a block-causal mask keeps samples apart."""
    from tokenization.packing import block_causal_mask

    s = tokenization.get_strategy("smolvlm-256m", tile=64, patch=16, pixel_shuffle=2, longest_edge=128)
    base = train_bpe(list(ANSWERS.values()) * 20 + ["what shape is this?"] * 20, vocab_size=300)
    col = SmolVLMCollator(s, base, max_length=256, packing="knapsack", max_images_per_pack=6)
    rows = list(open_manifest(colour_manifest).to_torch(decode="pil"))
    batch = col(rows)
    assert batch["input_ids"].shape[0] < len(rows)  # several samples share a sequence
    model = tiny_model(col)
    plain = SmolVLMCollator(s, base)
    # the packed forward gives each sample the logits it gets alone
    model.eval()
    with torch.no_grad():
        mask4d = block_causal_mask(batch["subsequence_ids"])
        inputs = {k: batch[k] for k in ("input_ids", "pixel_values", "pixel_attention_mask", "position_ids")}
        packed = model(**inputs, attention_mask=mask4d).logits
        seq = batch["subsequence_ids"][0]
        first = (seq == 1).nonzero().flatten()
        sample_ids = batch["input_ids"][0, first]
        alone_row = next(r for r in rows if torch.equal(torch.from_numpy(plain.encode(r).input_ids), sample_ids))
        alone = model(**plain([alone_row])).logits[0]
    assert torch.allclose(packed[0, first], alone, atol=1e-4)
