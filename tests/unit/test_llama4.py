"""Llama 4 (llama4_text, llama4): interleaved dense / MoE layers, chunked attention on RoPE layers cached as a
window of the chunk, dense-dispatch experts, and the one-line refusals (images, LoRA on the router)."""

import json
from pathlib import Path

import pytest

from memfit.core.choices import KvCache, Method, QkNorm
from memfit.core.errors import ConfigError, InvalidWorkload
from memfit.core.estimate import estimate
from memfit.core.families import spec_from_config
from memfit.core.kv_cache import kv_cache_at
from memfit.core.spec import MlpSpec, ModelSource, ModelSpec, MoeSpec
from memfit.core.transients import Step, dense_dispatch_bytes, seen_kv, sliding_masked
from memfit.core.workload import Inference, Lora, Training
from memfit.sources.resolve import load_model

CONFIGS = Path(__file__).parents[1] / "data" / "configs"
TINY = "tiny-llama4_text-interleaved"


def _tiny(stem: str = TINY, **changes: object) -> ModelSpec:
    config = {**json.loads((CONFIGS / f"{stem}.json").read_text()), **changes}
    return spec_from_config(config, name=stem, source=ModelSource(kind="config", ref=stem))


def test_rope_layers_are_chunked_and_nope_layers_global():
    """no_rope_layers [1, 1, 1, 0]: layers 0-2 rotate, take the L2 QK norm and see a 128-token chunk;
    layer 3 is a global NoPE layer without QK norm."""
    layers = _tiny().layers
    assert [layer.attention.sliding_window for layer in layers] == [128, 128, 128, None]
    assert [layer.attention.chunked for layer in layers] == [True, True, True, False]
    assert [layer.attention.rotary for layer in layers] == [True, True, True, False]
    assert [layer.attention.qk_norm for layer in layers] == [QkNorm.L2] * 3 + [QkNorm.NONE]


def test_interleave_step_two_alternates_dense_and_moe_layers():
    """interleave_moe_layer_step 2: layers 1 and 3 are MoE (4 experts of 96, one shared expert of 96, run
    densely, an nn.Linear router); layers 0 and 2 a SwiGLU MLP of intermediate_size_mlp 160."""
    layers = _tiny().layers
    assert [layer.is_moe for layer in layers] == [False, True, False, True]
    moe = layers[1].mlp
    assert isinstance(moe, MoeSpec)
    assert (moe.num_experts, moe.top_k, moe.expert.intermediate_size) == (4, 1, 96)
    assert moe.shared_expert == MlpSpec(intermediate_size=96, gated=True)
    assert moe.dense_dispatch
    assert moe.router_is_linear
    assert moe.routed_rows == 4
    assert layers[0].mlp == MlpSpec(intermediate_size=160, gated=True)


def test_moe_layers_list_wins_over_the_interleave_step():
    """An explicit moe_layers list decides which layers are sparse."""
    assert [layer.is_moe for layer in _tiny(moe_layers=[0, 3]).layers] == [True, False, False, True]


def test_default_nope_interval_is_every_fourth_layer():
    """Without no_rope_layers (or with an empty list) every 4th layer is NoPE, as Llama4TextConfig does."""
    spec = _tiny(no_rope_layers=[], num_hidden_layers=8)
    windows = [layer.attention.sliding_window for layer in spec.layers]
    assert windows == [128, 128, 128, None] * 2


@pytest.mark.parametrize(("changes", "match"), [
    ({"attention_chunk_size": None}, "'attention_chunk_size' is missing but layers are chunked"),
    ({"no_rope_layers": [1, 2, 1, 0]}, "'no_rope_layers' must list integers in 0..1"),
    ({"no_rope_layers": [1, 1]}, "'no_rope_layers' has 2 entries for num_hidden_layers=4"),
    ({"moe_layers": [-1]}, "'moe_layers' must list integers"),
    ({"layer_types": ["sliding_attention"] * 4}, "'layer_types' must give 'chunked_attention'"),
])
def test_malformed_llama4_fields_are_refused(changes: dict[str, object], match: str):
    """A malformed Llama 4 field is one ConfigError line naming it."""
    with pytest.raises(ConfigError, match=match):
        _tiny(**changes)


def test_dense_dispatch_working_set_by_hand():
    """Four experts see all 512 tokens (b 2 × s 256) of a 64-wide model with 96-wide experts, bf16."""
    # hidden = 512·64·2 = 65,536 B; repeated and scaled rows 4 × 65,536 = 262,144 each
    # gate_up 4·512·192·2 = 786,432; act(gate) and product 4·512·96·2 = 393,216 each
    # moments: repeat + scaled 524,288; scaled + gate_up + act + product 1,835,008;
    #          scaled + down output (262,144) + gate_up + product 1,703,936 → peak 1,835,008
    # after the experts: the scaled rows and the output, 524,288
    moe = _tiny().layers[1].mlp
    assert isinstance(moe, MoeSpec)
    assert dense_dispatch_bytes(moe, hidden=65_536, inter=512 * 2) == (1_835_008, 524_288)


def test_a_chunked_layer_sees_its_window_after_the_prompt():
    """Decoding over 259 cached tokens, a 128-token chunked layer attends to 127 cached + 1 new keys, masked
    (kv 128 ≥ chunk); the prompt's own forward sees all 256 keys; a global layer always sees all."""
    chunked, full = _tiny().layers[0].attention, _tiny().layers[3].attention
    decode = Step(query_tokens=1, kv_tokens=259, masked=False)
    prefill = Step(query_tokens=256, kv_tokens=256, masked=False)
    assert (seen_kv(chunked, decode), seen_kv(chunked, prefill), seen_kv(full, decode)) == (128, 256, 259)
    assert sliding_masked(chunked, decode)
    assert sliding_masked(chunked, prefill)
    assert not sliding_masked(chunked, Step(query_tokens=100, kv_tokens=100, masked=False))


def test_scout_cache_keeps_a_chunk_on_chunked_layers():
    """Llama-4-Scout at 10,000 tokens after decoding: 36 chunked layers keep 8,192, 12 NoPE ones all."""
    # per token and layer: K and V × 8 KV heads × 128 × 2 B (bf16) = 4,096 B
    # chunked 36 × 8,192 × 4,096 = 1,207,959,552; global 12 × 10,000 × 4,096 = 491,520,000
    spec = load_model("Llama-4-Scout-17B-16E", offline=True)
    cache = kv_cache_at(spec, Inference(prompt_tokens=10_000), tokens=10_000, after_decode=True)
    assert cache.flat() == {"sliding": 1_207_959_552, "full_attention": 491_520_000}
    assert cache.nbytes == 1_699_479_552


def test_maverick_alternates_dense_and_128_expert_layers():
    """Llama-4-Maverick: 24 MoE layers of 128 experts (odd layers), 24 dense; no QK norm."""
    spec = load_model("Llama-4-Maverick-17B-128E", offline=True)
    assert [layer.is_moe for layer in spec.layers] == [False, True] * 24
    assert {layer.attention.qk_norm for layer in spec.layers} == {QkNorm.NONE}


def test_images_on_llama4_are_refused_in_one_line():
    """The causal LM class builds no vision tower: --images is refused, naming why."""
    spec = load_model("Llama-4-Scout-17B-16E", offline=True)
    with pytest.raises(InvalidWorkload, match=r"^images=1 on Llama-4-Scout-17B-16E: Llama 4 loads through "
                                              r"AutoModelForCausalLM as Llama4ForCausalLM.*drop --images$"):
        estimate(spec, Inference(prompt_tokens=64, images=1))


def test_lora_on_the_router_is_refused_and_other_targets_run():
    """all-linear would wrap Llama4Router, whose tuple output peft cannot run; attention targets run."""
    spec = _tiny()
    refusal = r"LoRA on the router of .* fails in peft.*e\.g\. q_proj,k_proj"
    with pytest.raises(InvalidWorkload, match=refusal):
        estimate(spec, Training(seq_len=64, method=Method.LORA, lora=Lora(rank=4, alpha=8)))
    lora = Lora(rank=4, alpha=8, targets=("q_proj", "v_proj"))
    assert estimate(spec, Training(seq_len=64, method=Method.LORA, lora=lora)).peak.allocated_bytes > 0


def test_llama4_text_config_fills_the_text_defaults():
    """A llama4 config whose text_config omits sizes gets the defaults: 48 layers, 5,120 wide, 16 experts."""
    spec = spec_from_config({"model_type": "llama4", "text_config": {}}, name="bare",
                            source=ModelSource(kind="config", ref="bare"))
    assert (spec.num_layers, spec.hidden_size, spec.family) == (48, 5120, "llama4")
    assert spec.layers[0].mlp.num_experts == 16


def test_static_cache_generation_is_refused_on_chunked_attention():
    """generate() with a static cache cannot build Llama 4's chunked masks in transformers 5.17; a scoring
    forward (no new tokens) and the dynamic cache are estimated."""
    spec = _tiny()
    with pytest.raises(InvalidWorkload, match=r"^kv_cache=static fails in transformers 5\.17 generate\(\)"):
        estimate(spec, Inference(prompt_tokens=64, new_tokens=4, kv_cache=KvCache.STATIC))
    assert estimate(spec, Inference(prompt_tokens=64, kv_cache=KvCache.STATIC)).peak.allocated_bytes > 0
    assert estimate(spec, Inference(prompt_tokens=64, new_tokens=4)).peak.allocated_bytes > 0


def test_legacy_integer_flag_becomes_the_bool_it_meant():
    """Scout's published `attn_temperature_tuning: 4` (saved by transformers 4.51) reaches transformers 5.17's
    strict Llama4TextConfig as True; other fields and other model types are untouched."""
    from memfit.trace.meta import legacy_fields

    fields = {"text_config": {"attn_temperature_tuning": 4, "floor_scale": 8192}}
    assert legacy_fields("llama4", fields) == {"text_config": {"attn_temperature_tuning": True,
                                                               "floor_scale": 8192}}
    assert fields["text_config"]["attn_temperature_tuning"] == 4
    assert legacy_fields("llama4_text", {"attn_temperature_tuning": 0}) == {"attn_temperature_tuning": False}
    assert legacy_fields("llama", {"attn_temperature_tuning": 4}) == {"attn_temperature_tuning": 4}
