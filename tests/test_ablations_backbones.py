"""--vision / --lm: local transformers backbones replace the from-scratch halves (tiny random ones, saved here)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from ablations.runner import AblationOptions, plan, run_grid
from manifests.errors import RecipeError, UserError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backbones(tmp_path_factory) -> tuple[Path, Path]:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    vision = SiglipVisionModel(SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                  num_attention_heads=2, image_size=32, patch_size=8))
    vision.save_pretrained(root / "vision")
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512))
    lm.save_pretrained(root / "lm")
    # a byte-level tokenizer of exactly 256 entries stands in for the LM's own
    vocab = {chr(i) if chr(i).isprintable() else f"<0x{i:02X}>": i for i in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.save(str(root / "lm" / "tokenizer.json"))
    return root / "vision", root / "lm"


def _grid(tmp_path: Path, **base) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "task": {"kind": "locate", "train": 8, "val": 2, "width": 64, "height": 64},
        "base": {"tile": 32, "patch": 8, "longest_edge": 64, "steps": 2, "batch_size": 2, "vocab_size": 300,
                 "eval_samples": 2, "max_new_tokens": 3, "precision": "fp32", "checkpoint_every": 2, **base},
    }))
    return path


def test_pretrained_vision_and_lm_train_end_to_end(backbones, tmp_path):
    vision, lm = backbones
    opts = AblationOptions(vision=str(vision), lm=str(lm), freeze_lm=True, threads=1)
    out = run_grid(_grid(tmp_path), tmp_path / "out", opts)
    (run,) = (out / "runs").iterdir()
    result = json.loads((run / "result.json").read_text())
    assert result["metrics"]["visual_tokens"] == 5 * 4  # 2x2 tiles + global, (32/8/2)^2 tokens each
    tok = json.loads((run / "tokenizer.json").read_text())
    added = {t["content"] for t in tok["added_tokens"]}
    assert {"<row_1_col_1>", "<image>", "<end_of_utterance>"} <= added
    state = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    emb = state["lm.model.model.embed_tokens.weight"]
    assert emb.shape[0] == result["data"]["vocab_size"] > 256  # resized for the added tokens
    from transformers import LlamaForCausalLM

    from transformers import SiglipVisionModel

    fresh = LlamaForCausalLM.from_pretrained(str(lm))
    # --freeze-lm: the LM's own weights and embedding rows are untouched...
    assert torch.equal(emb[:256], fresh.model.embed_tokens.weight)
    q = "lm.model.model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(state[q], fresh.model.layers[0].self_attn.q_proj.weight)
    # ...while the pretrained vision tower trains
    saved = SiglipVisionModel.from_pretrained(str(vision)).get_input_embeddings().weight
    (key,) = [k for k in state if k.startswith("vision.") and k.endswith("patch_embedding.weight")]
    assert state[key].shape == saved.shape and not torch.equal(state[key], saved)


def test_patch_mismatch_with_vision_backbone_is_rejected(backbones, tmp_path):
    vision, _ = backbones
    with pytest.raises(RecipeError, match="patch 16 differs from the --vision model's patch size 8"):
        plan(_grid(tmp_path, patch=16), AblationOptions(vision=str(vision)))
    with pytest.raises(UserError, match="not a folder"):
        plan(_grid(tmp_path), AblationOptions(lm=str(tmp_path / "nope")))
