"""Hybrid attention / state-space models (Granite-4.0-H, Nemotron-H): Mamba state sizes by hand, the cache
split into attention K/V and per-sequence recurrent state, and the one-line refusals of what is not
modelled yet."""

import json
from pathlib import Path

import pytest

from memfit.core.choices import PhaseName, Runtime
from memfit.core.dtypes import DType
from memfit.core.errors import ConfigError, InvalidWorkload
from memfit.core.estimate import estimate
from memfit.core.families import spec_from_config
from memfit.core.kv_cache import kv_cache, mamba_state_bytes
from memfit.core.params import count_params
from memfit.core.spec import MambaSpec, ModelSource, ModelSpec
from memfit.core.workload import Inference, Parallelism, Training

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
