"""Attention models: whole heads and MLP neurons cut at 0.5 each, mask-equivalent (inside
hwprune.slim), and Hugging Face models that reload with identical outputs.

Hugging Face models are small random-weight models from configs (hwprune.hf.SMALL, the same
ones `hf:TYPE` gives); torchvision's ViT, Swin and MaxViT are full size.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import hwprune
from hwprune import load_pretrained
from hwprune.hf import group_kinds, small_model, widths_by_kind

HF_TYPES = ["bert", "distilbert", "roberta", "albert", "gpt2", "llama", "mistral", "qwen2", "t5", "vit", "clip",
            "whisper"]
GQA = {"llama", "mistral", "qwen2"}


def _leaves(out) -> list:
    return [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _cut_heads_and_neurons(model, x, heads=0.5, neurons=0.5):
    a = hwprune.analyze(model, x)
    kinds = group_kinds(a)
    assert "heads" in kinds.values(), a.explain()
    assert "neurons" in kinds.values(), a.explain()
    slim, report = hwprune.slim(a, widths=widths_by_kind(a, heads=heads, neurons=neurons))
    assert report["verify"]["passed"] and report["verify"]["max_rel_err"] <= 1e-4, report["verify"]
    after = {g["id"]: g["width_after"] for g in report["groups"]}
    for g in a.groups:  # every head and neuron group lost what was asked (none was frozen by the cut)
        if g.id in kinds and g.width >= 2:
            assert after[g.id] == g.width - int(g.width * (heads if kinds[g.id] == "heads" else neurons)), (
                g.members[:2], g.width, after[g.id], report["groups"][g.id]["frozen"])
    return slim, report, kinds


@pytest.mark.zoo
@pytest.mark.parametrize("model_type", HF_TYPES)
def test_hf_heads_and_neurons_cut_and_reload(model_type, tmp_path):
    model, x = small_model(model_type)
    slim, report, kinds = _cut_heads_and_neurons(model, x)
    assert isinstance(slim, type(model))
    if model_type in ("albert", "t5"):  # one layer shared by every use (ALBERT), one position bias (T5)
        assert sum(k == "heads" for k in kinds.values()) == 1
    assert report["params"]["after"] < report["params"]["before"]

    slim.save_pretrained(tmp_path)
    again = load_pretrained(tmp_path)
    assert type(again) is type(model)
    with torch.inference_mode():
        want, got = _leaves(slim(*x)), _leaves(again(*x))
    assert len(want) == len(got) and all(torch.equal(a, b) for a, b in zip(want, got))


@pytest.mark.zoo
@pytest.mark.parametrize("model_type", sorted(GQA))
def test_grouped_query_attention_keeps_its_ratio(model_type):
    """A kv head goes with the query heads that read it: every layer keeps Hq/Hkv."""
    model, x = small_model(model_type)
    slim, _, _ = _cut_heads_and_neurons(model, x)
    ratio = model.config.num_attention_heads // model.config.num_key_value_heads
    for layer in slim.layers:
        att = layer.self_attn
        hq, hkv = att.q_proj.out_features // att.head_dim, att.k_proj.out_features // att.head_dim
        assert hkv == model.config.num_key_value_heads // 2 and hq == ratio * hkv


# vision transformers at full size. heads: "cut", or the file:line that the freeze must name.
# torchvision's Swin and MaxViT compute the heads' width from the input width; their cutters
# turn them into subclasses that read it from the qkv weight (surgery/torchvision_attention.py)
VISION = [
    ("torchvision:vit_b_16", "cut"),
    ("torchvision:swin_t", "cut"),
    ("torchvision:maxvit_t", "cut"),
    ("timm:vit_tiny_patch16_224", "cut"),
    ("timm:swin_tiny_patch4_window7_224", "cut"),
]


@pytest.mark.zoo
@pytest.mark.parametrize("spec,heads", VISION, ids=[v[0] for v in VISION])
def test_vision_transformer_heads_and_neurons(spec, heads):
    from hwprune.load import load_spec
    from zoo_util import realistic
    torch.manual_seed(0)
    loaded = load_spec(spec)
    model, x = loaded.module, loaded.example_inputs
    realistic(model, x)
    a = hwprune.analyze(model, x)
    kinds = group_kinds(a)
    slim, report = hwprune.slim(a, widths=widths_by_kind(a, heads=0.5, neurons=0.5))
    assert report["verify"]["passed"] and report["verify"]["max_rel_err"] <= 1e-4, report["verify"]
    groups = {g["id"]: g for g in report["groups"]}
    neurons = [groups[i] for i, k in kinds.items() if k == "neurons"]
    head_groups = [groups[i] for i, k in kinds.items() if k == "heads"]
    assert neurons and all(g["width_after"] == g["width_before"] - g["width_before"] // 2 for g in neurons)
    assert head_groups
    if heads == "cut":
        assert all(g["width_after"] == g["width_before"] - g["width_before"] // 2 for g in head_groups), head_groups
    else:  # frozen, and the report names the line
        assert all(g["width_after"] == g["width_before"] and heads in g["frozen"] for g in head_groups), head_groups


def test_per_layer_widths_are_in_the_saved_config(tmp_path):
    model, x = small_model("bert")
    a = hwprune.analyze(model, x)
    widths = widths_by_kind(a, heads=0.5, neurons=0.0)
    first = min(g for g, k in group_kinds(a).items() if k == "heads")
    widths[first] = a.groups[first].width  # layer 0 keeps its heads, layer 1 loses half
    slim, _ = hwprune.slim(a, widths=widths)
    heads = [layer.attention.self.num_attention_heads for layer in slim.encoder.layer]
    assert heads == [4, 2]
    slim.save_pretrained(tmp_path)
    assert [layer.attention.self.num_attention_heads for layer in load_pretrained(tmp_path).encoder.layer] == [4, 2]


def test_load_pretrained_names_a_directory_without_config(tmp_path):
    with pytest.raises(hwprune.ModelLoadError, match="no config.json"):
        load_pretrained(tmp_path)


def test_hf_spec_builds_a_small_model():
    from hwprune.load import load_spec
    loaded = load_spec("hf:bert")
    assert loaded.family == "hf" and loaded.module.config.hidden_size == 32
    with pytest.raises(hwprune.ModelLoadError, match="no small configuration"):
        load_spec("hf:nonexistent-type")


class LiteralHeads(nn.Module):
    """Head count and size written into forward: the pass cannot change them."""

    def __init__(self, d=32):
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 4, 8).permute(2, 0, 3, 1, 4).unbind(0)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, 32))


def test_literal_head_count_in_forward_freezes_the_heads_and_names_the_line():
    slim, report = hwprune.slim(LiteralHeads().eval(), (torch.randn(1, 5, 32),), ratio=0.5)
    heads = [g for g in report["groups"] if any(m.startswith("qkv.weight:0") for m in g["members"])]
    assert heads and all(g["width_after"] == g["width_before"] for g in heads)
    assert any("test_transformers.py:" in (g["frozen"] or "") for g in heads), heads


@pytest.mark.zoo
@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_prune_hidden_is_checked_by_fidelity_keeps_ties_and_reloads(model_type, tmp_path):
    """--prune-hidden cuts the embedding and residual width too; the norms over it change, so the
    report says the check was output fidelity. The LM head stays tied to the input embedding."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from hwprune.hf import SMALL
    config = AutoConfig.for_model(model_type, **SMALL[model_type].fields, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    x = (torch.randint(1, 128, (1, 12)),)
    slim, report = hwprune.slim(model, x, ratio=0.5, prune_hidden=True)
    assert report["verify"]["mode"].startswith("output fidelity") and report["config"]["prune_hidden"]
    hidden = slim.get_input_embeddings().weight
    assert hidden.shape[1] == model.get_input_embeddings().weight.shape[1] // 2
    assert slim.get_output_embeddings().weight is hidden
    slim.save_pretrained(tmp_path)
    again = load_pretrained(tmp_path)
    assert again.get_output_embeddings().weight is again.get_input_embeddings().weight
    with torch.inference_mode():
        assert torch.equal(slim(*x).logits, again(*x).logits)


def test_without_prune_hidden_the_hidden_size_stays_and_is_mask_equivalent():
    model, x = small_model("llama")
    _, report = hwprune.slim(model, x, ratio=0.5)
    assert report["verify"]["mode"] == "mask equivalence"
    assert any("mean over this dim" in (g["frozen"] or "") for g in report["groups"])
