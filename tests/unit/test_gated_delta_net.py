"""Gated DeltaNet (Qwen3-Next) working sets and the output-gated attention block, against hand-derived
bytes at the Qwen3-Next-80B-A3B shapes (16 key heads and 32 value heads of 128, 4 conv taps, hidden 2048;
attention 16 heads of 256, 2 KV heads) and a tiny mixer."""

import pytest

from memfit.core.gated_delta_net import (
    _chunk_rule_moments,
    _gated_norm_bytes,
    delta_net_decode_step,
    delta_net_prefill_step,
)
from memfit.core.result import Term
from memfit.core.spec import GatedDeltaNetSpec
from memfit.core.transients import _output_gated

MIXER_80B = GatedDeltaNetSpec(num_key_heads=16, num_value_heads=32, key_head_dim=128, value_head_dim=128,
                              conv_kernel=4)
HIDDEN_80B = 2048
BF16 = 2


def test_chunk_rule_peaks_at_the_output_copy_for_a_1000_token_prompt():
    """One sequence, 1,000 tokens: 16 chunks of 64 (padded to 1,024), peak at the output buffer's copy."""
    # Q = V = 32·1,024·128·4 = 16,777,216; S = 32·1,024·4 = 131,072; LL = 32·1,024·64·4 = 8,388,608;
    # ST = 32·128·128·4 = 2,097,152; one chunk's (32, 64, 128) fp32 = 1,048,576; chunk decay 16·32·4 = 2,048
    # base = 3Q + 2V + 3S = 84,279,296; held = base + 3LL + 2Q + 2V = 176,553,984
    moments = _chunk_rule_moments(MIXER_80B, b=1, s=1000, dt=BF16)
    assert moments["decay_qk"] == 176_553_984 + 16_777_216 + 131_072                 # + Q + S
    assert moments["chunk_loop"] == 176_553_984 + 2 * 1_048_576 + 3 * 2_097_152 + 2_048
    assert moments["output"] == 176_553_984 + 2 * 1_048_576 + 16_777_216 + 2_048     # 195,430,400
    assert max(moments.values()) == moments["output"]


def test_chunk_rule_pads_a_short_prompt_to_one_chunk():
    """Ten tokens still fill one 64-token chunk: every padded tensor has 64 positions."""
    # tiny: 4 value heads, dk 8, dv 12; Q = 4·64·8·4 = 8,192; V = 4·64·12·4 = 12,288; S = 1,024;
    # LL = 4·64·64·4 = 65,536; base = 3·8,192 + 2·12,288 + 3·1,024 = 52,224; intra = base + 4LL = 314,368
    tiny = GatedDeltaNetSpec(num_key_heads=2, num_value_heads=4, key_head_dim=8, value_head_dim=12,
                             conv_kernel=4)
    assert _chunk_rule_moments(tiny, b=1, s=10, dt=BF16)["intra_chunk"] == 314_368


def test_prefill_step_at_80b_shapes():
    """The mixer's live set over a 1,000-token prompt, as measured on real CPU tensors less the 4 KiB
    (64, 64) bool mask: 265,510,400 bytes."""
    # normed 1,000·2,048·2 = 4,096,000; in_proj 1,000·(12,288 + 64)·2 = 24,704,000;
    # split copies: z 1,000·4,096·2 = 8,192,000, b and a 1,000·64·2 = 128,000;
    # beside the rule: conv output 1,000·8,192·2 = 16,384,000, q and k repeated 2·1,000·32·128·2 =
    # 16,384,000, β and g 1,000·32·(2 + 4) = 192,000; the rule's output moment 195,430,400
    # (live storages of Qwen3NextGatedDeltaNet on real bf16 CPU tensors: 265,514,496 with the mask and
    # 512-byte rounding, less the layer's cached conv and recurrent state)
    term = delta_net_prefill_step(MIXER_80B, b=1, s=1000, hidden=1000 * HIDDEN_80B * BF16, dt=BF16)
    assert term.nbytes == 265_510_400
    assert term.flat()["delta_rule_output"] == 16_384_000 + 16_384_000 + 192_000 + 195_430_400


def test_decode_step_at_80b_shapes():
    """One decode step of one sequence: three fp32 states dominate (live storages on CPU: exact)."""
    # normed 4,096; in_proj 12,352·2 = 24,704; z 8,192 + b, a 2·512 (64 B each, one block) = 9,216;
    # conv output 8,192·2 = 16,384; q, k repeated 2·32·128·2 = 16,384; β, g 512 each;
    # fp32 q, k, v 3·16,384 + β, g 2·512 = 50,176; output, kv_mem, δ 3·16,384 = 49,152;
    # states 3·2,097,152 = 6,291,456 → state update 6,424,576
    term = delta_net_decode_step(MIXER_80B, b=1, hidden=HIDDEN_80B * BF16, dt=BF16)
    assert term.flat()["state_update"] == 6_424_576
    assert term.nbytes == 4_096 + 24_704 + 9_216 + 6_424_576


@pytest.mark.parametrize(("dt", "expected"), [(2, 40_960_000), (4, 49_152_000)], ids=["bf16", "fp32"])
def test_gated_norm_upcasts_only_half_precision(dt, expected):
    """Qwen3NextRMSNormGated over 1,000 tokens × 4,096 values: bf16 peaks at silu(z.float()) beside the
    weight product and the fp32 gated product; fp32 holds three fp32 temporaries."""
    # X = 4,096,000; bf16: X·(2 + 4 + 4) = 40,960,000; fp32: 3·X·4 = 49,152,000
    assert _gated_norm_bytes(MIXER_80B, tokens=1000, dt=dt) == expected


def test_output_gated_attention_peaks_at_q_norm():
    """16 heads of 256 over 1,000 tokens: q_norm's fp32 temporaries beside q_proj's output and the gate
    copy outweigh a small kernel set; the layer's not-yet-cached K/V come off that moment."""
    # q = 1,000·16·256 = 4,096,000 elements; normed 4,096,000 B; q_proj 2q·2 = 16,384,000;
    # gate copy 8,192,000; two fp32 q-sized 32,768,000 less K/V 2·1,000·2·256·2 = 2,048,000
    kernel = Term.group("attention", [Term(name="normed", nbytes=4_096_000)])
    term = _output_gated(kernel, q=4_096_000, hidden=4_096_000, dt=BF16, unallocated=2_048_000)
    assert term.nbytes == 4_096_000 + 16_384_000 + 8_192_000 + 30_720_000
    assert "q_norm_fp32" in {child.name for child in term.children}
