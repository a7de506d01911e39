"""slim(in_place=True): the model given is cut a tensor at a time instead of copied. The oracle is
the copying path itself, which is mask-equivalence verified: the same cut, the same tensors, the same
report, and the in-place result verified against reference outputs taken before the cut."""
import copy
import warnings

import pytest
import torch
from torch import nn

import hwprune
from hwprune import memory
from hwprune.errors import InputError, VerificationError


def tiny_llama():
    """A Llama of 3 decoder layers at hidden 64, with grouped-query attention."""
    import transformers
    transformers.logging.set_verbosity_error()
    config = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=8,
                                      num_key_value_heads=2, intermediate_size=88, vocab_size=96,
                                      max_position_embeddings=32, use_cache=False, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval(), (torch.randint(1, 96, (1, 10)),)


def tiny_llama_tied():
    model, x = tiny_llama()
    model.lm_head.weight = model.model.embed_tokens.weight  # one tensor under two names
    return model, x


def tiny_llama_bf16():
    """In bf16 the oracle computes in float32 (hwprune.graph.masked.float32_compute), or bf16's
    rounding alone would exceed its tolerance."""
    model, x = tiny_llama()
    return model.to(torch.bfloat16), x


def conv_net():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(24, 5)).eval()
    return model, (torch.randn(2, 3, 16, 16),)


CASES = [
    pytest.param(tiny_llama, {"ratio": 0.3}, id="llama-ratio"),
    pytest.param(tiny_llama, {"ratio": 0.5, "importance": "l1"}, id="llama-ratio-l1"),
    pytest.param(tiny_llama_tied, {"ratio": 0.3}, id="llama-tied-embeddings"),
    pytest.param(tiny_llama_bf16, {"ratio": 0.3}, id="llama-bf16"),
    pytest.param(conv_net, {"params": 0.6}, id="convnet-params-budget"),
    pytest.param(tiny_llama, {"params": 0.9}, id="llama-params-budget"),  # priced on dynamo's name scopes
    pytest.param(tiny_llama_bf16, {"flops": 0.7}, id="llama-bf16-flops-budget"),  # priced from the trace
    pytest.param(conv_net, {"ratio": 0.5, "compensate": True}, id="convnet-compensated"),
]


@pytest.mark.parametrize("build, budget", CASES)
def test_in_place_cuts_as_the_copy_does(build, budget, monkeypatch):
    from hwprune.graph import masked
    monkeypatch.setattr(masked, "SLAB_ELEMENTS", 64 * 24)  # half weights read in several slabs, as an 8B's are
    model, x = build()
    copied, want = hwprune.slim(copy.deepcopy(model), x, in_place=False, **budget)
    given = copy.deepcopy(model)
    slim, got = hwprune.slim(given, x, in_place=True, **budget)
    assert slim is given  # the model given is the one cut
    assert got["memory"]["in_place"] is True and want["memory"]["in_place"] is False
    assert got["verify"]["passed"] and got["verify"]["mode"] == want["verify"]["mode"]
    assert got["kept"] == want["kept"] and got["params"] == want["params"]
    assert got["params"]["after"] < got["params"]["before"]
    a, b = copied.state_dict(), slim.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert getattr(getattr(copied, "config", None), "hwprune", None) == getattr(getattr(slim, "config", None),
                                                                                "hwprune", None)
    with torch.no_grad():  # the copy's outputs are the in-place model's (the copy is mask-equivalent)
        torch.testing.assert_close(_logits(slim(*x)), _logits(copied(*x)))
    assert all(t.dtype == u.dtype for t, u in zip(slim.parameters(), model.parameters()))  # dtypes kept


def test_tied_weights_stay_one_tensor():
    model, x = tiny_llama_tied()
    slim, _ = hwprune.slim(model, x, ratio=0.3, in_place=True)
    assert slim.lm_head.weight is slim.model.embed_tokens.weight


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


class FixedView(nn.Module):
    """A size written in forward (16) that does not follow a cut of the first layer's outputs."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)).reshape(-1, 16))


def test_the_copy_repairs_what_in_place_can_only_report():
    x = (torch.randn(3, 8),)
    torch.manual_seed(0)
    slim, report = hwprune.slim(FixedView().eval(), x, ratio=0.5, in_place=False)
    assert report["params"]["after"] == report["params"]["before"]  # frozen by the repair, nothing cut
    with pytest.raises(VerificationError, match=r"cut in place \(in_place\).*in_place=False"):
        hwprune.slim(FixedView().eval(), x, ratio=0.5, in_place=True)


@pytest.mark.parametrize("available, in_place", [(10**12, False), (10**3, True), (None, False)])
def test_none_chooses_by_the_memory_available(monkeypatch, available, in_place):
    monkeypatch.setattr(memory, "available_bytes", lambda: available)
    model, x = conv_net()
    before = copy.deepcopy(model.state_dict())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        slim, report = hwprune.slim(model, x, ratio=0.5)
    assert report["memory"]["in_place"] is in_place and (slim is model) is in_place
    assert report["memory"]["weights_bytes"] == sum(t.numel() * 4 for t in before.values() if t.is_floating_point()) \
        + sum(t.numel() * t.element_size() for t in before.values() if not t.is_floating_point())
    said = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert bool(said) is in_place
    if in_place:
        assert "cuts the model it was given in place" in str(said[0].message)
    else:
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # left as it was


@pytest.mark.parametrize("value", ["yes", 1.5])
def test_in_place_must_be_a_bool_or_none(value):
    model, x = conv_net()
    with pytest.raises(InputError, match=rf"in_place {value!r}: give True .*False .*None"):
        hwprune.slim(model, x, ratio=0.5, in_place=value)


@pytest.mark.parametrize("flags, named", [(["--target", "cpu"], "--target"), (["--html", "r.html"], "--html")])
def test_cli_in_place_on_refuses_flags_that_read_the_original(tmp_path, monkeypatch, capsys, flags, named):
    from hwprune.cli.main import main
    monkeypatch.chdir(tmp_path)
    assert main(["slim", "hf:llama", "--ratio", "0.3", "--in-place", "on", *flags]) == 2
    err = capsys.readouterr().err
    assert f"--in-place on with {named}" in err and "--in-place off" in err
    assert not list(tmp_path.iterdir())  # refused before anything was loaded or written
