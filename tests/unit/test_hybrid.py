"""Hybrid attention / state-space models (Granite-4.0-H, Nemotron-H, Jamba): Mamba state sizes by hand, the
cache split into attention K/V and per-sequence recurrent state, and the one-line refusals of what is not
modelled yet."""

import json
from pathlib import Path

import pytest

from memfit.core.choices import PhaseName, Runtime
from memfit.core.dtypes import DType
from memfit.core.errors import ConfigError, InvalidWorkload
from memfit.core.estimate import DELTA_NET_PATH_NOTE, MAMBA_PATH_NOTE, estimate
from memfit.core.families import spec_from_config
from memfit.core.kv_cache import kv_cache, mamba_state_bytes
from memfit.core.params import count_params
from memfit.core.spec import GatedDeltaNetSpec, Mamba1Spec, MambaSpec, ModelSource, ModelSpec
from memfit.core.ssm import mamba_decode_step, mamba_prefill_step
from memfit.core.workload import Inference, Parallelism, Training
from memfit.sources.resolve import load_model

CONFIGS = Path(__file__).parents[1] / "data" / "configs"


def _tiny(stem: str, **changes: object) -> ModelSpec:
    config = {**json.loads((CONFIGS / f"{stem}.json").read_text()), **changes}
    return spec_from_config(config, name=stem, source=ModelSource(kind="config", ref=stem))


def test_mamba_state_bytes_granite_4_h_small_shapes():
    """Granite-4.0-H-Small's mixer shapes (128 heads of 64, d_state 128, 1 group, 4 taps), 8 sequences."""
    # conv_dim = 128·64 + 2·1·128 = 8,448; conv state 8 × 8,448 × 4 taps × 2 B (bf16) = 540,672 B
    # SSM state 8 × 128 heads × 64 × 128 × 4 B (fp32 whatever the model dtype) = 33,554,432 B
    mamba = MambaSpec(num_heads=128, head_dim=64, d_state=128, n_groups=1, conv_kernel=4, chunk_size=256)
    assert mamba_state_bytes(mamba, batch=8, conv_dtype=DType.BF16) == (540_672, 33_554_432)


def test_mamba_state_bytes_nemotron_nano_shapes_fp32_model():
    """Nemotron-Nano-9B-v2's mixer shapes (128 heads of 80, d_state 128, 8 groups), one fp32 sequence."""
    # conv_dim = 128·80 + 2·8·128 = 12,288; conv 12,288 × 4 × 4 B = 196,608; SSM 128·80·128 × 4 B = 5,242,880
    mamba = MambaSpec(num_heads=128, head_dim=80, d_state=128, n_groups=8, conv_kernel=4, chunk_size=128)
    assert mamba_state_bytes(mamba, batch=1, conv_dtype=DType.FP32) == (196_608, 5_242_880)


def test_dense_granite_hybrid_with_zero_experts_per_token_maps_to_the_shared_mlp():
    """A dense Granite-4.0-H config (num_local_experts 0 beside num_experts_per_tok 0, as granite-4.0-h-micro
    publishes) maps every layer to the gated shared MLP; a MoE config still needs 1..num_experts per token."""
    spec = _tiny("tiny-granitemoehybrid", num_local_experts=0, num_experts_per_tok=0)
    # shared_intermediate_size 48, gated: gate, up and down on every one of the 4 layers
    mlps = {(type(layer.mlp).__name__, layer.mlp.intermediate_size) for layer in spec.layers}
    assert mlps == {("MlpSpec", 48)}
    with pytest.raises(ConfigError, match=r"num_experts_per_tok=0 must be in 1\.\.num_experts=4"):
        _tiny("tiny-granitemoehybrid", num_experts_per_tok=0)


def test_granite_hybrid_cache_has_attention_and_recurrent_state():
    """tiny-granitemoehybrid (layers M M A M), bf16, batch 2, 48 + 8 tokens: the one attention layer caches
    K and V per token, the three Mamba layers a fixed conv and SSM state each."""
    # attention: 2 KV heads × 16 head_dim × (K + V) × 2 B = 128 B per token; 48 + 8 − 1 = 55 tokens × 2
    # sequences = 14,080 B. conv: 2 × 192 × 4 × 2 B = 3,072 B per layer → 9,216; SSM: 2 × 8 × 16 × 16 × 4 B
    # = 16,384 B per layer → 49,152
    term = kv_cache(_tiny("tiny-granitemoehybrid"),
                    Inference(prompt_tokens=48, new_tokens=8, batch_size=2, dtype=DType.BF16))
    assert term.flat() == {"full_attention": 14_080, "conv_state": 9_216, "ssm_state": 49_152}


def test_recurrent_state_does_not_grow_with_the_context():
    """Ten times the prompt: the attention cache grows ten-fold, the Mamba state stays as it is."""
    spec = _tiny("tiny-granitemoehybrid")
    short = kv_cache(spec, Inference(prompt_tokens=100, batch_size=1, dtype=DType.BF16))
    long = kv_cache(spec, Inference(prompt_tokens=1000, batch_size=1, dtype=DType.BF16))
    assert long.bytes_of("ssm_state") == short.bytes_of("ssm_state") > 0
    assert long.bytes_of("conv_state") == short.bytes_of("conv_state") > 0
    assert long.bytes_of("full_attention") == 10 * short.bytes_of("full_attention")


def test_nemotron_mlp_and_moe_blocks_cache_nothing():
    """tiny-nemotron_h "M-M*-E": two Mamba blocks and one attention block hold cache; 3 blocks hold none."""
    # attention: 2 × 16 × 2 × 2 B = 128 B/token × 10 tokens = 1,280; conv 160 × 4 × 2 B = 1,280 × 2 layers;
    # SSM 8 × 12 × 16 × 4 B = 6,144 × 2 layers
    term = kv_cache(_tiny("tiny-nemotron_h"), Inference(prompt_tokens=10, batch_size=1, dtype=DType.BF16))
    assert term.flat() == {"conv_state": 2_560, "ssm_state": 12_288, "full_attention": 1_280}


def test_mamba_parameters_are_their_own_component():
    """The Mamba mixers' parameters sit under layers/mamba (30,296 per tiny-granitemoehybrid layer × 3)."""
    tree = count_params(_tiny("tiny-granitemoehybrid")).flat()
    assert tree["layers/mamba"] == 3 * 30_296
    assert tree["layers/mamba/conv1d"] == 3 * (192 * 4 + 192)


def test_estimate_names_the_modelled_mamba_path():
    """Every estimate of a Mamba model says which scan is modelled and that the CUDA kernels need less."""
    est = estimate(_tiny("tiny-nemotron_h"), Inference(prompt_tokens=64, new_tokens=4))
    assert any("mamba2_chunk_scan" in line and "far less" in line for line in est.assumptions)
    assert est.phase(PhaseName.PREFILL).memory.flat()["activations"] > 0


@pytest.mark.parametrize(("workload", "what"), [
    (Training(seq_len=64), "training"),
    (Inference(prompt_tokens=64, runtime=Runtime.VLLM), "runtime=vllm"),
    (Inference(prompt_tokens=64, runtime=Runtime.LLAMA_CPP), "runtime=llama.cpp"),
    (Inference(prompt_tokens=64, parallel=Parallelism(tp=2)), "splitting it over GPUs"),
], ids=["training", "vllm", "llama.cpp", "tp"])
def test_unmodelled_jobs_are_refused_in_one_line(workload, what):
    """What is not modelled for Mamba layers is refused with one line naming it, never answered wrongly."""
    with pytest.raises(InvalidWorkload, match=rf"^tiny-granitemoehybrid has Mamba .*; {what}.* is not "
                                              r"modelled yet$"):
        estimate(_tiny("tiny-granitemoehybrid"), workload)


def test_layer_types_must_match_the_layer_count():
    """A layer_types list of the wrong length is one ConfigError line."""
    with pytest.raises(ConfigError, match="'layer_types' has 3 entries for num_hidden_layers=4"):
        _tiny("tiny-granitemoehybrid", layer_types=["mamba", "attention", "mamba"])


def test_unknown_hybrid_pattern_character_is_refused():
    """Nemotron-H's pattern knows M, *, - and E only."""
    with pytest.raises(ConfigError, match=r"hybrid_override_pattern has unknown characters \['X'\]"):
        _tiny("tiny-nemotron_h", hybrid_override_pattern="M*X")


def test_falcon_h1_layers_keep_attention_and_mamba_state_side_by_side():
    """tiny-falcon_h1 (2 layers, each attention beside a Mamba mixer), bf16, one sequence of 10 tokens."""
    # per layer: K + V 2 KV heads × 16 × 2 × 2 B × 10 tokens = 1,280; conv 128 × 4 taps × 2 B = 1,024;
    # SSM 6 × 16 × 16 × 4 B = 6,144; × 2 layers
    term = kv_cache(_tiny("tiny-falcon_h1"), Inference(prompt_tokens=10, batch_size=1, dtype=DType.BF16))
    assert term.flat() == {"full_attention": 2_560, "conv_state": 2_048, "ssm_state": 12_288}


def test_falcon_h1_mup_vector_buffers():
    """Each Falcon-H1 layer holds an fp32 mup_vector over in_proj's 96 + 128 + 6 = 230 outputs (920 B)."""
    est = estimate(_tiny("tiny-falcon_h1"), Inference(prompt_tokens=10, dtype=DType.BF16))
    # 2 layers × 920 B, and the rotary inv_freq: 16 / 2 fp32 = 32 B
    assert est.phase(PhaseName.LOAD).memory.flat()["weights/buffers"] == 2 * 920 + 32


def test_falcon_h1_gated_norm_names_the_decode_shape_bug():
    """With mamba_rms_norm, the spec says transformers 5.17's batch > 1 decode broadcasts the Mamba output."""
    assert any("(batch, batch, hidden)" in line
               for line in _tiny("tiny-falcon_h1", mamba_rms_norm=True).assumptions)
    assert _tiny("tiny-falcon_h1").assumptions == ()


JAMBA_MIXER = Mamba1Spec(d_inner=8192, d_state=16, conv_kernel=4, dt_rank=256)
"""Jamba-v0.1 / AI21-Jamba-1.5-Mini's mixer: expand 2 × hidden 4096, d_state 16, d_conv 4, dt_rank 256."""


def test_jamba_layer_pattern_from_periods_and_offsets():
    """Jamba-v0.1: attention where i % 8 == 4, MoE where i % 2 == 1, Mamba-1 mixers elsewhere."""
    spec = load_model("Jamba-v0.1")
    assert [i for i, layer in enumerate(spec.layers) if layer.attention is not None] == [4, 12, 20, 28]
    assert [i for i, layer in enumerate(spec.layers) if layer.is_moe] == list(range(1, 32, 2))
    assert all(layer.mamba == JAMBA_MIXER for layer in spec.layers if layer.attention is None)
    assert all(att.rotary is False for att in spec.attention_specs)   # JambaAttention has no positions


def test_jamba_mixer_parameters_at_jamba_v0_1_shapes():
    """28 Mamba-1 mixers of 105,308,448 parameters each, per component as JambaMambaMixer builds them."""
    # in_proj 4096·16384 = 67,108,864; conv1d 8192·4 + 8192 = 40,960; x_proj 8192·(256 + 2·16) = 2,359,296;
    # dt_proj 256·8192 + 8192 = 2,105,344; A_log 8192·16 = 131,072; D 8,192; dt/B/C norms 256 + 16 + 16 =
    # 288; out_proj 8192·4096 = 33,554,432 → 105,308,448
    tree = count_params(load_model("Jamba-v0.1")).flat()
    assert tree["layers/mamba"] == 28 * 105_308_448
    assert tree["layers/mamba/x_proj"] == 28 * 2_359_296
    assert tree["layers/mamba/A_log"] == 28 * 131_072


def test_jamba_state_is_per_channel():
    """Mamba-1 keeps d_inner conv channels and a (d_inner, d_state) fp32 state per sequence, 8 sequences."""
    # conv 8 × 8192 × 4 taps × 2 B = 524,288; SSM 8 × 8192 × 16 × 4 B = 4,194,304
    assert mamba_state_bytes(JAMBA_MIXER, batch=8, conv_dtype=DType.BF16) == (524_288, 4_194_304)


def test_jamba_cache_splits_attention_and_state():
    """Jamba-v0.1, bf16, one sequence of 1,000 + 1 tokens: 4 attention layers cache K/V, 28 a fixed state."""
    # attention 4 layers × 8 KV heads × 128 × (K + V) × 2 B × 1,000 tokens = 16,384,000;
    # conv 28 × 65,536 = 1,835,008; SSM 28 × 524,288 = 14,680,064
    term = kv_cache(load_model("Jamba-v0.1"), Inference(prompt_tokens=1000, new_tokens=1, dtype=DType.BF16))
    assert term.flat() == {"conv_state": 1_835_008, "ssm_state": 14_680_064, "full_attention": 16_384_000}


def test_jamba_decode_update_holds_five_fp32_states():
    """One decode step of a Jamba mixer, one bf16 sequence: the recurrent update's fp32 (d, N) temporaries."""
    # state 8192 × 16 = 131,072 elements; dA, its argument, dB, dB·x, state·dA (then the new state): 5 × 4 B ×
    # 131,072 = 2,621,440, + 3 (b, d) bf16 columns of 16,384 = 2,670,592 (the conv window, 8192 × (4 + 1 + 2)
    # × 2 B + 16,384 = 131,072, is smaller); A = −exp(A_log) fp32 8192 × 16 × 4 = 524,288
    step = mamba_decode_step(JAMBA_MIXER, b=1, hidden=8192, dt=2)
    assert step.flat() == {"normed": 8192, "in_proj": 32_768, "a_matrix": 524_288, "state_update": 2_670_592}


def test_jamba_prefill_scan_keeps_three_fp32_products():
    """A 1,000-token bf16 prefill: discrete_A, discrete_B and deltaB_u (b, d, s, N) fp32 dominate the scan."""
    # X = 8192 × 1,000: bf16 16,384,000, fp32 32,768,000; P = X × 16 × 4 B = 524,288,000.
    # Kept into the scan: normed B, C 2 × 1,000 × 16 × 2 = 64,000, dt_proj's output and softplus(dt + bias)
    # (bf16: the bias is cast to dt's dtype) 2 × 16,384,000 → 32,832,000. At the D skip: + 3·P
    # 1,572,864,000 + 1,000 per-token outputs of 16,384 B 16,384,000 + the last fp32 state 8192 × 16 × 4 =
    # 524,288 + their stack 16,384,000 + x·D and the sum 2 × 32,768,000 → 1,704,524,288
    step = mamba_prefill_step(JAMBA_MIXER, b=1, s=1000, hidden=8_192_000, dt=2)
    assert step.flat()["scan_output"] == 1_704_524_288
    assert step.flat()["in_proj"] == 1000 * 16384 * 2


def test_jamba_offset_must_be_below_its_period():
    """JambaConfig.validate_architecture's rule, as one ConfigError line."""
    with pytest.raises(ConfigError, match="attn_layer_offset=8 must be smaller than attn_layer_period=8"):
        _tiny("tiny-jamba", attn_layer_offset=8, attn_layer_period=8)


@pytest.mark.parametrize("workload", [Training(seq_len=64), Inference(prompt_tokens=64, runtime=Runtime.VLLM),
                                      Inference(prompt_tokens=64, runtime=Runtime.LLAMA_CPP),
                                      Inference(prompt_tokens=64, parallel=Parallelism(tp=2))],
                         ids=["training", "vllm", "llama.cpp", "tp"])
def test_jamba_unmodelled_jobs_are_refused_like_mamba_2(workload):
    """Jamba's Mamba-1 layers get the same one-line refusal as the Mamba-2 hybrids."""
    with pytest.raises(InvalidWorkload, match=r"^tiny-jamba has Mamba .* is not modelled yet$"):
        estimate(_tiny("tiny-jamba"), workload)


QWEN3_NEXT_DEFAULTS = {"model_type": "qwen3_next", "hidden_size": 2048, "num_hidden_layers": 48,
                       "num_attention_heads": 16, "vocab_size": 151936}
"""Qwen3NextConfig() with only the required fields stated: the Qwen3-Next-80B-A3B shapes."""
QWEN3_NEXT_SOURCE = ModelSource(kind="config", ref="defaults")


def test_qwen3_next_every_fourth_layer_is_full_attention():
    """Without layer_types, (i + 1) % full_attention_interval == 0 is full attention (interval 4)."""
    spec = spec_from_config(QWEN3_NEXT_DEFAULTS, name="qwen3-next", source=QWEN3_NEXT_SOURCE)
    assert [i for i, layer in enumerate(spec.layers) if layer.attention is not None] == list(range(3, 48, 4))
    assert all(isinstance(layer.mamba, GatedDeltaNetSpec) for layer in spec.layers if layer.attention is None)
    assert all(layer.is_moe for layer in spec.layers)


def test_qwen3_next_mixer_and_gated_attention_parameters_at_80b_shapes():
    """36 gated DeltaNet mixers and 12 output-gated attention blocks, as transformers builds them."""
    # DeltaNet: key_dim 16·128 = 2,048, value_dim 32·128 = 4,096, conv_dim 8,192. in_proj_qkvz
    # 2048·(2·2048 + 2·4096) = 25,165,824; in_proj_ba 2048·64 = 131,072; conv1d 8192·4 = 32,768; dt_bias,
    # A_log 32 each; gated norm 128; out_proj 4096·2048 = 8,388,608 → 33,718,464 per layer.
    # Attention (16 heads of 256, 2 KV): q_proj 2048·2·4096 = 16,777,216; k, v 2048·512 = 1,048,576 each;
    # o_proj 4096·2048 = 8,388,608; q/k norms 256 each → 27,263,488 per layer
    spec = spec_from_config(QWEN3_NEXT_DEFAULTS, name="qwen3-next", source=QWEN3_NEXT_SOURCE)
    tree = count_params(spec).flat()
    assert tree["layers/mamba"] == 36 * 33_718_464
    assert tree["layers/mamba/in_proj_qkvz"] == 36 * 25_165_824
    assert tree["layers/attention"] == 12 * 27_263_488
    assert tree["layers/attention/q_proj"] == 12 * 16_777_216


@pytest.mark.parametrize("workload", [Training(seq_len=64), Inference(prompt_tokens=64, runtime=Runtime.VLLM),
                                      Inference(prompt_tokens=64, runtime=Runtime.LLAMA_CPP),
                                      Inference(prompt_tokens=64, parallel=Parallelism(tp=2))],
                         ids=["training", "vllm", "llama.cpp", "tp"])
def test_qwen3_next_unmodelled_jobs_are_refused_like_mamba_2(workload):
    """Its gated DeltaNet layers get the Mamba hybrids' one-line refusal outside transformers inference."""
    with pytest.raises(InvalidWorkload, match=r"^tiny-qwen3_next has Mamba \(state-space\) or gated DeltaNet "
                                              r"layers: .* is not modelled yet$"):
        estimate(_tiny("tiny-qwen3_next"), workload)


def test_qwen3_next_inference_names_the_torch_path():
    """A transformers inference estimate carries the DeltaNet torch-path assumption, not the Mamba one."""
    est = estimate(_tiny("tiny-qwen3_next"), Inference(prompt_tokens=64, new_tokens=4))
    assert DELTA_NET_PATH_NOTE in est.assumptions
    assert MAMBA_PATH_NOTE not in est.assumptions


def test_qwen3_next_value_heads_must_be_a_multiple_of_key_heads():
    """fix_query_key_value_ordering splits the value heads evenly over the key heads."""
    with pytest.raises(ConfigError, match="linear_num_key_heads=3 does not divide linear_num_value_heads=4"):
        _tiny("tiny-qwen3_next", linear_num_key_heads=3)


def test_qwen3_next_cache_splits_attention_and_delta_net_state():
    """tiny-qwen3_next (D A D A), bf16, batch 2, 48 + 8 tokens: the attention layers cache K/V per token,
    the gated DeltaNet layers a conv state (q, k, v channels) and an fp32 (value heads, key dim, value dim)
    recurrent state."""
    # attention: 2 KV heads × 16 × (K + V) × 2 B = 128 B/token; 55 tokens × 2 sequences = 14,080 × 2 layers.
    # conv: 2 × conv_dim (2·16 + 48 = 80) × 4 taps × 2 B = 1,280 × 2 layers; recurrent: 2 × 4 value heads ×
    # 8 × 12 × 4 B = 3,072 × 2 layers
    term = kv_cache(_tiny("tiny-qwen3_next"),
                    Inference(prompt_tokens=48, new_tokens=8, batch_size=2, dtype=DType.BF16))
    assert term.flat() == {"conv_state": 2_560, "ssm_state": 6_144, "full_attention": 28_160}


def test_qwen3_next_state_bytes_at_80b_shapes():
    """One bf16 sequence of Qwen3-Next-80B-A3B's mixer (16 key heads, 32 value heads, 128 each, 4 taps)."""
    # conv_dim 2·2048 + 4096 = 8,192; conv 8,192 × 4 × 2 B = 65,536;
    # recurrent 32 × 128 × 128 × 4 B = 2,097,152
    mixer = GatedDeltaNetSpec(num_key_heads=16, num_value_heads=32, key_head_dim=128, value_head_dim=128,
                              conv_kernel=4)
    assert mamba_state_bytes(mixer, batch=1, conv_dtype=DType.BF16) == (65_536, 2_097_152)
