"""Hugging Face models: small random-weight models from configs (the `hf:MODEL_TYPE` spec), and
pruned models that reload.

A pruned model's widths differ per layer, which a config cannot say. The cut records them
in the config under `hwprune` (each cut tensor's shape and each changed size attribute, by
module path), so `save_pretrained` writes them into config.json; `load_pretrained(dir)`
builds the model from its config, gives those tensors and attributes their saved sizes and
loads the weights. Nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn

from .errors import InputError, ModelLoadError
from .surgery.widths import resize

# A small model per type: (config fields, model class, example input). Sizes keep heads of 8
# or 16 channels and MLPs of odd width so that cuts are visible, and run in well under a second.
_TEXT = {"vocab_size": 128, "max_position_embeddings": 64}
_ENCODER = _TEXT | {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}
_DECODER = _TEXT | {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                    "intermediate_size": 48, "use_cache": False}


@dataclasses.dataclass(frozen=True)
class SmallModel:
    fields: dict
    model_class: str = "AutoModel"
    inputs: str = "ids"  # ids: (1, 12) token ids; pixels: (1, 3, S, S); features: (1, mels, frames)


SMALL: dict = {
    "bert": SmallModel(_ENCODER),
    "roberta": SmallModel(_ENCODER | {"max_position_embeddings": 72}),
    "albert": SmallModel(_ENCODER | {"embedding_size": 16}),
    "distilbert": SmallModel(_TEXT | {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 37}),
    "gpt2": SmallModel(_TEXT | {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 37, "n_positions": 64,
                                "use_cache": False}),
    "llama": SmallModel(_DECODER),
    "mistral": SmallModel(_DECODER | {"sliding_window": None}),
    "qwen2": SmallModel(_DECODER),
    "t5": SmallModel(_TEXT | {"d_model": 32, "d_kv": 8, "num_heads": 4, "d_ff": 37, "num_layers": 2,
                              "use_cache": False}, "T5EncoderModel"),
    "vit": SmallModel({"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "intermediate_size": 37}, inputs="pixels"),
    "clip": SmallModel({"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "intermediate_size": 37}, "CLIPVisionModel", "pixels"),
    "whisper": SmallModel({"num_mel_bins": 16, "max_source_positions": 16, "d_model": 32, "encoder_layers": 2,
                           "encoder_attention_heads": 4, "encoder_ffn_dim": 37, "decoder_layers": 1,
                           "decoder_attention_heads": 4, "decoder_ffn_dim": 37, "vocab_size": 128,
                           "max_target_positions": 16}, "WhisperEncoder", "features"),
}
_CONFIG_OF = {"CLIPVisionModel": "CLIPVisionConfig", "WhisperEncoder": "WhisperConfig"}


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ModelLoadError("hf: specs need the transformers package: pip install transformers") from e
    transformers.logging.set_verbosity_error()
    return transformers


def small_model(model_type: str, seed: int = 0) -> tuple[nn.Module, tuple]:
    """A small random-weight model of a Hugging Face model type, with example inputs (hf:TYPE)."""
    tf = _transformers()
    spec = SMALL.get(model_type)
    if spec is None:
        raise ModelLoadError(
            f"hf:{model_type}: no small configuration for this model type; known: {', '.join(sorted(SMALL))}. "
            "For another type write a factory spec (package.module:factory) that builds it from a config")
    cfg_cls = getattr(tf, _CONFIG_OF[spec.model_class]) if spec.model_class in _CONFIG_OF else None
    config = cfg_cls(**spec.fields) if cfg_cls else tf.AutoConfig.for_model(model_type, **spec.fields)
    config._attn_implementation = "sdpa"
    torch.manual_seed(seed)
    cls = _model_class(tf, spec.model_class, config.model_type)
    model = (cls.from_config(config) if spec.model_class == "AutoModel" else cls(config)).eval()
    return model, _inputs(spec, config)


def _model_class(tf, name: str, model_type: str):
    """A transformers class by name: exported at the top level, or in the model type's module
    (WhisperEncoder is not exported)."""
    cls = getattr(tf, name, None)
    if cls is None:
        import importlib
        try:
            cls = getattr(importlib.import_module(f"transformers.models.{model_type}.modeling_{model_type}"), name, None)
        except ImportError:
            cls = None
    return cls


def _inputs(spec: SmallModel, config) -> tuple:
    g = torch.Generator().manual_seed(0)
    if spec.inputs == "pixels":
        s = config.image_size
        return (torch.randn(1, 3, s, s, generator=g),)
    if spec.inputs == "features":
        return (torch.randn(1, config.num_mel_bins, 2 * config.max_source_positions, generator=g),)
    return (torch.randint(1, config.vocab_size, (1, 12), generator=g),)


def load_pretrained(path, model_class: str | None = None) -> nn.Module:
    """The slim model that `save_pretrained(path)` wrote, rebuilt with its per-layer widths.

    model_class: a transformers class name; default the config's `architectures[0]`."""
    tf = _transformers()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no config.json here: give the directory that save_pretrained wrote")
    raw = json.loads((path / "config.json").read_text())
    name = model_class or (raw.get("architectures") or [None])[0]
    cls = _model_class(tf, name, raw.get("model_type", "")) if name else None
    if cls is None:
        raise ModelLoadError(f"{path}: config.json names no model class I can build ({name!r}): "
                             "pass model_class='...' (a transformers class name)")
    widths = raw.get("hwprune") or {}

    class Resized(cls):  # transformers' own loader (key renames, tied weights) into the saved widths
        def post_init(self):
            super().post_init()
            if type(self) is Resized:
                resize(self, widths)

    Resized.__name__, Resized.__qualname__, Resized.__module__ = cls.__name__, cls.__qualname__, cls.__module__
    model = Resized.from_pretrained(path)
    model.__class__ = cls
    with torch.no_grad():  # own, aligned memory instead of the file's mapping: BLAS then takes the
        for t in {id(t): t for t in [*model.parameters(), *model.buffers()]}.values():  # same path
            t.data = t.data.clone()
    return model.eval()


# ---- which groups are heads, neurons or the hidden size ------------------------------------------

def group_kinds(analysis) -> dict:
    """{group id: "heads" | "neurons"}: a group whose channels a head split carries is heads; any
    other prunable group is neurons (MLP intermediate, conv channels)."""
    from .graph.heads import head_labels
    heads = head_labels(analysis.graph)
    return {g.id: "heads" if heads[g.labels].any() else "neurons" for g in analysis.groups if g.frozen is None}


def widths_by_kind(analysis, heads: float = 0.0, neurons: float = 0.0) -> dict:
    """Per-group widths that remove `heads` of each attention layer's heads and `neurons` of each
    other prunable group's channels (each rounded down, at least one kept): for slim(widths=)."""
    for what, r in (("heads", heads), ("neurons", neurons)):
        if not 0.0 <= r < 1.0:
            raise InputError(f"{what} ratio {r!r} is outside [0, 1): give the fraction to remove")
    ratio = {"heads": heads, "neurons": neurons}
    kinds = group_kinds(analysis)
    return {g.id: g.width - min(int(g.width * ratio[kinds[g.id]]), g.width - 1)
            for g in analysis.groups if g.id in kinds}


def slim_heads_neurons(model, example_inputs=None, *, heads: float = 0.0, neurons: float = 0.0,
                       importance: str = "l2", seed: int = 0):
    """hwprune.slim with separate ratios: `heads` of every attention layer's heads (a kv head with
    its query heads under GQA) and `neurons` of every other prunable group (MLP intermediate
    widths). model: a module with its example inputs, or an Analysis. Returns (slim, report)."""
    from .api import Analysis, analyze, slim
    a = model if isinstance(model, Analysis) else analyze(model, example_inputs)
    return slim(a, widths=widths_by_kind(a, heads=heads, neurons=neurons), importance=importance, seed=seed)
