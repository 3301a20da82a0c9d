"""The trace's generate loop against transformers' own generate() on real CPU tensors (tiny configs): the same
cache layers, shapes and storages after prefill and at the last decode step."""

import pytest
from tests.helpers import requires_transformers

from memfit.core.choices import KvCache
from memfit.core.errors import EngineUnavailable
from memfit.core.workload import Inference

pytestmark = requires_transformers

GEMMA3 = {"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 256,
          "sliding_window": 16, "layer_types": ["sliding_attention", "full_attention"],
          "max_position_embeddings": 4096}
OPT = {"model_type": "opt", "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2,
       "num_attention_heads": 4, "vocab_size": 256, "max_position_embeddings": 256, "word_embed_proj_dim": 64}
FALCON_ALIBI = {"model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "vocab_size": 256, "alibi": True, "new_decoder_architecture": False, "multi_query": False}
PROMPT, NEW, BATCH = 40, 8, 2


def _model(config):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    data = dict(config)
    cfg = AutoConfig.for_model(data.pop("model_type"), **data)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager").eval()


def _cache_snapshots(model, run):
    """(type, tokens visible, tokens of storage) per cache layer, at the first and the last forward."""
    from memfit.trace.harness import cache_key

    seen = []
    key = cache_key()          # generate() passes the cache as `cache` from transformers 5.24, before that
                               # as `past_key_values`

    def snapshot(module, args, kwargs, output):
        layers = kwargs[key].layers
        seen.append([(type(layer).__name__, layer.keys.shape[2],
                      layer.keys.untyped_storage().nbytes() // (layer.keys[:, :, :1].numel()
                                                                * layer.keys.element_size()))
                     for layer in layers])

    handle = model.register_forward_hook(snapshot, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return seen[0], seen[-1]


def _generate(model, kv, prompt=PROMPT, new=NEW):
    import torch

    ids = torch.randint(0, 256, (BATCH, prompt))
    return _cache_snapshots(model, lambda: model.generate(
        ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
        cache_implementation="static" if kv is KvCache.STATIC else None))


def _harness(model, kv, fast_forward, prompt=PROMPT, new=NEW):
    from memfit.trace import harness

    workload = Inference(prompt_tokens=prompt, new_tokens=new, batch_size=BATCH, kv_cache=kv)
    return _cache_snapshots(model, lambda: harness.run_generate(model, workload, harness.NullProbe(), "cpu",
                                                                fast_forward=fast_forward))


@pytest.mark.parametrize("fast_forward", [False, True])
def test_sliding_window_cache_matches_generate(fast_forward):
    """Gemma 3 sliding layer (window 16): after prefill 15 visible tokens over the prompt's 40-token storage,
    at the last step 15 visible over a 16-token storage; the full layer grows to 40 + 8 - 1 = 47."""
    model = _model(GEMMA3)
    expected = ([("DynamicSlidingWindowLayer", 15, 40), ("DynamicLayer", 40, 40)],
                [("DynamicSlidingWindowLayer", 15, 16), ("DynamicLayer", 47, 47)])
    assert _generate(model, KvCache.DYNAMIC) == expected
    assert _harness(model, KvCache.DYNAMIC, fast_forward) == expected


def test_static_cache_matches_generate_and_takes_position_ids():
    """OPT with a static cache: generate() passes position_ids (OPT cannot derive them from the 4-D mask) and
    sizes the cache max_length - 1 = 40 + 8 - 1 = 47 tokens."""
    model = _model(OPT)
    expected = [("StaticLayer", 47, 47)] * 2
    assert _generate(model, KvCache.STATIC) == (expected, expected)
    assert _harness(model, KvCache.STATIC, True) == (expected, expected)


def test_alibi_with_static_cache_is_unavailable():
    """Falcon with alibi cannot generate with a static cache in transformers itself: a one-line refusal."""
    model = _model(FALCON_ALIBI)
    with pytest.raises((RuntimeError, ValueError)):
        _generate(model, KvCache.STATIC)
    with pytest.raises(EngineUnavailable, match="use kv_cache=dynamic"):
        _harness(model, KvCache.STATIC, True)


def test_static_sliding_window_cache_matches_generate():
    """Gemma 3 static cache, prompt 10 < window 16 < 10 + 12: the sliding layer holds the window (16 tokens),
    the full layer 10 + 12 - 1 = 21; fast-forward crosses the window, so it must advance the sliding
    layer's int counter as well (else the last step writes past the window)."""
    model = _model(GEMMA3)
    expected = [("StaticSlidingWindowLayer", 16, 16), ("StaticLayer", 21, 21)]
    assert _generate(model, KvCache.STATIC, 10, 12) == (expected, expected)
    assert _harness(model, KvCache.STATIC, True, 10, 12) == (expected, expected)
